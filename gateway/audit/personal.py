"""Personal data (prompt texts, user ids) kept outside the hashed audit bytes.

An event stores, in place of each personal value, ``{"hmac": HMAC-SHA256(salt, value)}``;
the value and its salt live in ``personal_data``. Deleting those rows erases the person's
data and leaves the chain verifiable (the commitment no longer opens to anything).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Any

from sqlalchemy.orm import Session

from gateway.db.models import PersonalData


def commitment(salt_hex: str, value: str) -> str:
    return hmac.digest(bytes.fromhex(salt_hex), value.encode("utf-8"), hashlib.sha256).hex()


def commit_personal(
    session: Session, decision_id: str, prefix: str, body: dict[str, Any], paths: tuple[str, ...]
) -> dict[str, Any]:
    """Copy of ``body`` with the string at each dotted path replaced by its commitment."""
    out, rows = personal_commitments(decision_id, prefix, body, paths)
    session.add_all(PersonalData(**row) for row in rows)
    return out


def personal_commitments(
    decision_id: str, prefix: str, body: dict[str, Any], paths: tuple[str, ...]
) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """``body`` with personal values replaced by commitments, and the ``personal_data`` rows.

    ``body`` is left as it was: only the dicts on the way to a replaced value are copied.
    """
    out = dict(body)
    rows: list[dict[str, str]] = []
    for path in paths:
        *parents, leaf = path.split(".")
        node: Any = out
        for part in parents:
            child = node.get(part) if isinstance(node, dict) else None
            if isinstance(child, dict):
                child = node[part] = dict(child)  # copy on the way down, never in place
            node = child
        if not isinstance(node, dict) or not isinstance(node.get(leaf), str):
            continue
        value: str = node[leaf]
        salt = os.urandom(16).hex()
        rows.append(
            {"decision_id": decision_id, "field": f"{prefix}.{path}", "value": value, "salt": salt}
        )
        node[leaf] = {"hmac": commitment(salt, value)}
    return out, rows
