"""Field by field: open an event's commitments and name where a stored value differs.

:func:`open_committed` replaces each ``{"hmac": ...}`` in an event body by the value the
decision row must hold (its ``personal_data`` value, or the erased form when the decision was
erased after the event), reporting commitments that do not open. :func:`compare` reports each
path where a stored JSON value differs from the committed one, strictly (``1``, ``1.0`` and
``true`` are three values).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from gateway.audit.erase import ERASED
from gateway.audit.personal import commitment

Bad = Callable[[str, str, str], None]  # (table, field, reason)


class _Any:
    """Stands for a value that cannot be known (its personal data row is missing)."""


_UNKNOWN = _Any()


def open_committed(
    value: Any,
    kind: str,
    seq: int,
    personal: dict[str, tuple[str, str]],
    erased_after: int | None,
    used: set[str],
    bad: Bad,
    path: str = "",
) -> Any:
    """``value`` with each commitment replaced by the value the decision row must hold."""
    if isinstance(value, dict):
        committed = value.get("hmac")
        if len(value) == 1 and isinstance(committed, str):
            name = f"{kind}.{path}"
            used.add(name)
            stored = personal.get(name)
            if stored is not None:
                text, salt = stored
                try:
                    opens = commitment(salt, text) == committed
                except ValueError:
                    opens = False
                if not opens:
                    bad(
                        "personal_data",
                        f"personal_data[{name}].value",
                        f"does not open its commitment in the {kind} event (seq {seq})",
                    )
                return text
            if erased_after is not None and erased_after > seq:
                return None if path == "user" else ERASED
            bad(
                "personal_data",
                f"personal_data[{name}]",
                f"row missing, but the decision was not erased after its {kind} event (seq {seq})",
            )
            return _UNKNOWN
        return {
            k: open_committed(
                v, kind, seq, personal, erased_after, used, bad, f"{path}.{k}" if path else k
            )
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [
            open_committed(v, kind, seq, personal, erased_after, used, bad, f"{path}.{i}")
            for i, v in enumerate(value)
        ]
    return value


def compare(bad: Bad, field: str, expected: Any, stored: Any, kind: str, seq: int) -> None:
    if _same(expected, stored):
        return
    for path in _differences(expected, stored, field):
        table = path.split(".", 1)[0]
        bad(table, path, f"differs from the {kind} event (seq {seq})")


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON values: 1, 1.0 and true are three different values here."""
    if a is _UNKNOWN:
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(v, b[k]) for k, v in a.items())
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _differences(expected: Any, stored: Any, path: str) -> Iterator[str]:
    """The dotted paths where ``stored`` differs from ``expected`` (at most a few)."""
    if _same(expected, stored):
        return
    if isinstance(expected, dict) and isinstance(stored, dict):
        for key in sorted(expected.keys() | stored.keys(), key=str):
            if key not in expected or key not in stored:
                yield f"{path}.{key}"
            else:
                yield from _differences(expected[key], stored[key], f"{path}.{key}")
        return
    if isinstance(expected, list) and isinstance(stored, list) and len(expected) == len(stored):
        for i, (x, y) in enumerate(zip(expected, stored, strict=True)):
            yield from _differences(x, y, f"{path}.{i}")
        return
    yield path
