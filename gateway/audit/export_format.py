"""Encoding export rows: the columns, CSV (RFC 4180, CRLF) and JSON Lines, chunk by chunk.

``export.py`` reads the rows; this module only turns batches of them into bytes.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from typing import Any

COLUMNS: tuple[str, ...] = (
    "decision_id",
    "created_at",
    "closed_at",
    "tenant_id",
    "tenant_name",
    "user",
    "key_id",
    "key_label",
    "status",
    "outcome",
    "http_status",
    "error_code",
    "prompt",
    "normalised_prompt",
    "flagged_categories",
    "category_scores",
    "model_id",
    "weights_sha256",
    "licence_id",
    "licence_decision",
    "intended_use",
    "rights",
    "policy_version",
    "image_sha256s",
    "image_actions",
    "received_seq",
    "decided_seq",
    "erased_at",
    # filled in by export_verify.py as the export streams
    "verified",
    "verified_checkpoint",
    "verification_error",
)

Row = tuple[Any, ...]


def row_json(row: Row) -> dict[str, Any]:
    return dict(zip(COLUMNS, row, strict=True))


def csv_chunks(batches: Iterable[list[Row]]) -> Iterator[bytes]:
    """A header, then one UTF-8 chunk per batch. Lists are ';'-joined, objects are JSON."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    yield _drain(buffer)
    for rows in batches:
        yield "".join([_csv_line(row, writer, buffer) for row in rows]).encode("utf-8")


def jsonl_chunks(batches: Iterable[list[Row]]) -> Iterator[bytes]:
    """One JSON object per line, one UTF-8 chunk per batch."""
    for rows in batches:
        yield "".join(_json(row_json(row)) + "\n" for row in rows).encode("utf-8")


_LIST_AT = tuple(COLUMNS.index(c) for c in ("flagged_categories", "image_sha256s", "image_actions"))
_OBJECT_AT = tuple(COLUMNS.index(c) for c in ("category_scores", "rights"))
_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


_VERIFIED_AT = COLUMNS.index("verified")


def _csv_row(row: Row) -> list[Any]:
    cells = list(row)  # None is written as an empty cell
    verified = cells[_VERIFIED_AT]
    if verified is not None:
        cells[_VERIFIED_AT] = "true" if verified else "false"
    for i in _LIST_AT:
        cells[i] = ";".join(cells[i])
    for i in _OBJECT_AT:
        if cells[i] is not None:
            cells[i] = _json(cells[i])
    return cells


_SEPARATORS = len(COLUMNS) - 1


def _csv_line(row: Row, writer: Any, buffer: io.StringIO) -> str:
    """``writer.writerow(_csv_row(row))``'s text, several times faster when nothing but the
    JSON cells needs quoting (the usual row); any other row is left to ``writer``.

    csv's minimal quoting: a cell holding the delimiter, a quote, CR or LF is quoted, its
    quotes doubled. JSON text never holds a raw CR or LF, so the JSON cells are quoted here
    and the line is checked: if it has exactly the commas and quotes they account for, and
    no CR or LF, no other cell needed quoting.
    """
    cells = _csv_row(row)
    commas = quotes = 0
    for i in _OBJECT_AT:
        cell = cells[i]
        if cell is not None and ('"' in cell or "," in cell):
            commas += cell.count(",")
            cell = '"' + cell.replace('"', '""') + '"'
            quotes += cell.count('"')
            cells[i] = cell
    line = ",".join(["" if c is None else str(c) for c in cells])
    if (
        line.count(",") == _SEPARATORS + commas
        and line.count('"') == quotes
        and "\n" not in line
        and "\r" not in line
    ):
        return line + "\r\n"
    writer.writerow(_csv_row(row))
    return _drain(buffer).decode("utf-8")


def _drain(buffer: io.StringIO) -> bytes:
    data = buffer.getvalue().encode("utf-8")
    buffer.seek(0)
    buffer.truncate()
    return data
