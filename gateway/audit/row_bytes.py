"""The fast check of a decision row: rebuild the events it implies and compare their bytes.

From a ``decisions`` row and its ``personal_data`` rows (values and salts), the bodies the
writer hashed are rebuilt exactly as :mod:`gateway.audit.decisions` builds them, each
personal value replaced by its HMAC under its stored salt, and serialised canonically. When
each event's stored payload holds exactly those bytes, every column the event commits to is
proven at once: strictly (``1``, ``1.0`` and ``true`` differ) and with no JSON parsed.
Anything else (an erased decision, an event written before ``created_at`` and ``closed_at``
were committed, another event kind, a mismatch) answers False, and :mod:`gateway.audit.rows`
checks the row field by field, which also names what differs.
"""

from __future__ import annotations

from typing import Any

from gateway.audit.canonical import canonical_json
from gateway.audit.decisions import (
    DECIDED_PERSONAL,
    RECEIVED_PERSONAL,
    Opening,
    decided_body,
    received_body,
)
from gateway.audit.personal import commitment


def _split(kind: str, paths: tuple[str, ...]) -> tuple[tuple[str, tuple[str, ...], str], ...]:
    """Each path as (its ``personal_data`` field name, its parents, its leaf)."""
    return tuple((f"{kind}.{p}", tuple(p.split(".")[:-1]), p.split(".")[-1]) for p in paths)


_RECEIVED = _split("received", RECEIVED_PERSONAL)
_DECIDED = _split("decided", DECIDED_PERSONAL)


def rebuilt(d: Any, events: list[Any], personal: dict[str, tuple[str, str]]) -> bool:
    """True when row ``d`` and ``personal`` give the payload of each of ``events`` (by seq)."""
    kinds = [e.kind for e in events]
    if kinds != ["received"] and kinds != ["received", "decided"]:
        return False
    used: set[str] = set()
    tail = ',"tenant_id":' + _quoted(d.tenant_id) + "}"
    for e in events:
        if e.kind == "received":
            opening = Opening(
                d.tenant_id,
                d.key_id,
                d.instance_id,
                d.user,
                d.model_id,
                d.licence_id,
                d.intended_use,
                d.policy_version,
                d.request,
            )
            body = received_body(opening, d.created_at)
            paths = _RECEIVED
        else:
            if d.closed_at is None:
                return False
            body = decided_body(d.outcome, d.http_status, d.error_code, d.record, d.closed_at)
            paths = _DECIDED
        hashed = _committed(body, paths, personal, used)
        if hashed is None or e.tenant_id != d.tenant_id:
            return False
        head = (
            '{"body":'
            + canonical_json(hashed)
            + ',"decision_id":'
            + _quoted(d.id)
            + ',"kind":"'
            + e.kind
            + '","occurred_at":'
        )
        if not (e.payload.startswith(head) and e.payload.endswith(tail)):
            return False
    return used == personal.keys()


def _committed(
    body: dict[str, Any],
    paths: tuple[tuple[str, tuple[str, ...], str], ...],
    personal: dict[str, tuple[str, str]],
    used: set[str],
) -> dict[str, Any] | None:
    """``body`` with each personal value replaced by its HMAC under its stored salt.

    None when a value has no ``personal_data`` row, or a row holds another value.
    """
    out = dict(body)
    for name, parents, leaf in paths:
        node: Any = out
        for part in parents:
            child = node.get(part) if isinstance(node, dict) else None
            if isinstance(child, dict):
                child = node[part] = dict(child)  # copy on the way down, never in place
            node = child
        if not isinstance(node, dict) or not isinstance(node.get(leaf), str):
            continue
        stored = personal.get(name)
        if stored is None or stored[0] != node[leaf]:
            return None
        try:
            node[leaf] = {"hmac": commitment(stored[1], stored[0])}
        except ValueError:  # a salt that is not hex
            return None
        used.add(name)
    return out


def _quoted(text: str) -> str:
    """``canonical_json(text)``, without the encoder's overhead for plain ids."""
    if text.replace("_", "").replace("-", "").isalnum():
        return '"' + text + '"'
    return canonical_json(text)
