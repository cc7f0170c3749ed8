"""How the console shows values: compact times, people and tenants by name."""

from __future__ import annotations

from datetime import UTC, datetime


def compact_time(value: object) -> str:
    """``2026-11-30T19:33:36.123456+00:00`` -> ``2026-11-30 19:33:36`` (UTC); '—' if empty."""
    if value is None or value == "":
        return "—"
    if isinstance(value, datetime):
        when = value
    else:
        try:
            when = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return str(value)
    if when.tzinfo is not None:
        when = when.astimezone(UTC)
    return when.strftime("%Y-%m-%d %H:%M:%S")
