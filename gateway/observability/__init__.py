"""What an operator watches: logs (``logs``), request lines (``access``), start-up progress."""
