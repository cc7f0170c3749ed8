"""Logging for a running gateway: JSON lines or text, secrets scrubbed, library noise quiet.

``configure_logging`` is called once, by ``gateway serve``, before anything heavy is imported.

Invariants:
- With ``json``, every line the process writes to stdout or stderr is one JSON object with
  ``time``, ``level``, ``logger`` and ``message``, plus ``request_id`` and ``decision_id``
  when the code that logged ran inside a request or a decision (``request_id_var``,
  ``decision_id_var``). Python warnings are logged too, and whatever a library writes
  straight to the file descriptors (progress bars, C++ runtimes) is caught on a pipe and
  wrapped, one object per line, by ``StreamCapture``.
- No line holds an API key, a bearer token or a console cookie: ``scrub`` rewrites them in
  every message, including captured output. Prompts are never logged by the gateway; an
  exception is logged as its type and frames, without its message (it may quote a prompt).
- Libraries log at WARNING and above only; their Python warnings, and known start-up chatter,
  go to DEBUG (``GATEWAY_LOG_LEVEL=debug`` shows them).
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import sys
import threading
import traceback
import warnings
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal, TextIO

request_id_var: ContextVar[str | None] = ContextVar("gateway_request_id", default=None)
decision_id_var: ContextVar[str | None] = ContextVar("gateway_decision_id", default=None)

LogFormat = Literal["json", "text"]
_GATEWAY_DIR = str(Path(__file__).resolve().parent.parent)

_SECRETS = (
    (re.compile(r"\b(gk_[A-Za-z0-9]+_)[A-Za-z0-9_\-]+"), r"\1[redacted]"),  # API keys
    (re.compile(r"(?i)\b(bearer\s+)\S+"), r"\1[redacted]"),
    (re.compile(r"\bgAAAAA[A-Za-z0-9_\-=]{16,}"), "[redacted]"),  # Fernet: console cookies
    (re.compile(r"(?i)(gw_console=)[^;\s]+"), r"\1[redacted]"),
)

# (logger name prefix, message prefix): start-up chatter that is not worth an operator's look
_CHATTER = (
    ("diffusers", "Cannot initialize model with low cpu memory usage"),
    ("uvicorn.error", "Started server process"),
    ("uvicorn.error", "Waiting for application"),
    ("uvicorn.error", "Application startup complete"),
    ("uvicorn.error", "Uvicorn running on"),
    ("uvicorn.error", "Finished server process"),
    ("uvicorn.error", "Waiting for application shutdown"),
    ("uvicorn.error", "Application shutdown complete"),
)
_DEPRECATIONS = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)
_OWN = ("gateway", "uvicorn", "py.warnings", "stdout", "stderr")


def scrub(text: str) -> str:
    """``text`` with API keys, bearer tokens and console cookies replaced by ``[redacted]``."""
    for pattern, repl in _SECRETS:
        text = pattern.sub(repl, text)
    return text


def resolve_format(setting: str, stream: IO[str] | None = None) -> LogFormat:
    """``auto`` means text on a terminal and JSON otherwise (a container, a file, a pipe)."""
    if setting in ("json", "text"):
        return setting  # type: ignore[return-value]
    out = stream if stream is not None else sys.stderr
    return "text" if out.isatty() else "json"


def _exception(record: logging.LogRecord) -> str | None:
    if not record.exc_info or record.exc_info[0] is None:
        return None
    exc_type, exc, tb = record.exc_info
    frames = "".join(traceback.format_tb(tb)).rstrip()
    if getattr(record, "full_exception", False) and exc is not None:  # start-up failures
        return scrub("".join(traceback.format_exception(exc_type, exc, tb)).rstrip())
    return f"{exc_type.__name__} (message not logged)\n{frames}"


class JsonFormatter(logging.Formatter):
    """One JSON object per record; see the module docstring for the fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": scrub(record.getMessage()),
        }
        for key, var in (("request_id", request_id_var), ("decision_id", decision_id_var)):
            value = getattr(record, key, None) or var.get()
            if value:
                out[key] = value
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update({k: v for k, v in fields.items() if k not in out})
        exc = _exception(record)
        if exc:
            out["exception"] = exc
        return json.dumps(out, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self, *, with_time: bool = True) -> None:
        fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s" if with_time else "%(message)s"
        super().__init__(fmt)

    def format(self, record: logging.LogRecord) -> str:
        ids = [
            f"{key}={value}"
            for key, var in (("request", request_id_var), ("decision", decision_id_var))
            if (value := getattr(record, f"{key}_id", None) or var.get())
        ]
        saved = record.exc_info, record.exc_text
        record.exc_info, record.exc_text = None, None
        try:
            text = scrub(super().format(record))
        finally:
            record.exc_info, record.exc_text = saved
        exc = _exception(record)
        return text + (f" [{' '.join(ids)}]" if ids else "") + (f"\n{exc}" if exc else "")


class NoiseFilter(logging.Filter):
    """Demotes library warnings and known chatter to DEBUG, then applies ``threshold``."""

    def __init__(self, threshold: int) -> None:
        super().__init__()
        self.threshold = threshold

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage() if record.levelno < logging.ERROR else ""
        if any(record.name.startswith(n) and msg.startswith(m) for n, m in _CHATTER):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return record.levelno >= self.threshold


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """Python warnings as log records: the gateway's own at WARNING, libraries' and every
    deprecation notice at DEBUG."""
    own = filename.startswith(_GATEWAY_DIR) and not issubclass(category, _DEPRECATIONS)
    logging.getLogger("py.warnings").log(
        logging.WARNING if own else logging.DEBUG,
        "%s: %s (%s:%d)",
        category.__name__,
        message,
        filename,
        lineno,
    )


def quiet_libraries() -> None:
    """Route transformers/diffusers logging through ours, hide progress bars and ORT chatter."""
    for name in ("transformers", "diffusers"):
        try:
            lib = __import__(f"{name}.utils.logging", fromlist=["logging"])
        except ImportError:  # pragma: no cover - both are dependencies
            continue
        lib.disable_default_handler()
        lib.enable_propagation()
        lib.set_verbosity_warning()
        lib.disable_progress_bar()
    try:
        from huggingface_hub import disable_progress_bars

        disable_progress_bars()
    except ImportError:  # pragma: no cover
        pass
    try:
        import onnxruntime

        onnxruntime.set_default_logger_severity(3)  # errors only from the C++ runtime
    except ImportError:  # pragma: no cover
        pass


class StreamCapture:
    """Points file descriptors 1 and 2 at a pipe and logs each line written to them.

    Catches what bypasses ``logging``: ``print``, tqdm bars, C++ libraries. The log handler
    itself writes to ``sink``, a duplicate of the original stderr, so it is not captured.
    """

    def __init__(self) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        self.sink_fd = os.dup(2)
        self.sink: TextIO = io.TextIOWrapper(
            os.fdopen(self.sink_fd, "wb", buffering=0), encoding="utf-8", line_buffering=True
        )
        self._saved = (os.dup(1), os.dup(2))
        read_fd, write_fd = os.pipe()
        os.dup2(write_fd, 1)
        os.dup2(write_fd, 2)
        os.close(write_fd)
        self._reader = threading.Thread(
            target=self._pump, args=(read_fd,), name="log-capture", daemon=True
        )
        self._reader.start()

    def _pump(self, read_fd: int) -> None:
        log = logging.getLogger("stderr")
        with os.fdopen(read_fd, "rb") as pipe:
            for raw in pipe:
                for part in re.split(r"[\r\n]+", raw.decode("utf-8", "replace")):
                    if part.strip():
                        log.info("%s", part.rstrip())

    def close(self) -> None:
        """Restore the descriptors; the reader ends when the pipe's last writer closes."""
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(self._saved[0], 1)
        os.dup2(self._saved[1], 2)
        for fd in self._saved:
            os.close(fd)
        self._reader.join(timeout=2)


def configure_logging(fmt: LogFormat, level: str = "info") -> StreamCapture | None:
    """Install the handler on the root logger; returns the capture (JSON) to close at exit."""
    threshold = logging.getLevelNamesMapping()[level.upper()]
    capture = StreamCapture() if fmt == "json" else None
    handler: logging.Handler
    if capture is not None:
        handler = logging.StreamHandler(capture.sink)
        handler.setFormatter(JsonFormatter())
    elif sys.stderr.isatty():
        from rich.console import Console
        from rich.logging import RichHandler

        handler = RichHandler(console=Console(stderr=True), show_path=False, markup=False)
        handler.setFormatter(TextFormatter(with_time=False))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(TextFormatter())
    handler.addFilter(NoiseFilter(threshold))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    debug = threshold <= logging.DEBUG
    root.setLevel(logging.DEBUG if debug else logging.WARNING)  # libraries: warnings and up
    for name in _OWN:
        logging.getLogger(name).setLevel(logging.DEBUG if debug else logging.INFO)
    logging.getLogger("py.warnings").setLevel(logging.DEBUG)
    logging.captureWarnings(False)
    warnings.showwarning = _show_warning
    warnings.simplefilter("default")
    quiet_libraries()
    return capture
