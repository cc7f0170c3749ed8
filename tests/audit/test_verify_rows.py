"""Verify covers every stored copy: each cell of each audit table, edited in turn, is caught.

Decisions are made through the HTTP API with a unique marker in the prompt, the negative
prompt and the user. With the append-only triggers dropped (as the table owner can), every
cell that holds a marker or a decision id is edited in turn and restored; verify must fail
and name the decision each time. Rows are deleted in turn too, and every cell of every
signed checkpoint is edited. An erasure keeps the trail verifiable.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from reportlab.platypus import Paragraph  # type: ignore[import-untyped]
from reportlab.platypus import Table as RlTable
from sqlalchemy import Table, delete, func, insert, select, text, update
from typer.testing import CliRunner

from gateway.app import create_app
from gateway.audit.report import _verification_section
from gateway.audit.report_layout import Styles
from gateway.audit.verify import VerifyReport, verify_trail
from gateway.auth.keys import create_key
from gateway.cli import app
from gateway.db.engine import unit_of_work
from gateway.db.models import AuditCheckpoint, AuditEvent, Decision, PersonalData
from gateway.domain import Role
from gateway.runtime import Runtime
from gateway.settings import Settings
from tests.conftest import REPO, auth
from tests.console.conftest import signed_in

AUDIT_TABLES: dict[str, Table] = {
    "decisions": Decision.__table__,  # type: ignore[dict-item]
    "personal_data": PersonalData.__table__,  # type: ignore[dict-item]
    "audit_events": AuditEvent.__table__,  # type: ignore[dict-item]
    "audit_checkpoints": AuditCheckpoint.__table__,  # type: ignore[dict-item]
}


class Trail:
    def __init__(self, runtime: Runtime, client: TestClient, key: str) -> None:
        self.runtime, self.client, self.key = runtime, client, key
        self.markers: dict[str, str] = {}  # decision id -> its marker

    def decide(self, prompt: str, user: str | None = None, **extra: Any) -> str:
        marker = "mk" + uuid.uuid4().hex[:12]
        body = {
            "model": "demo-tiny",
            "prompt": f"{prompt} {marker}",
            "negative_prompt": f"blurry {marker}",
            "size": "64x64",
            "steps": 1,
            "user": user or f"user-{marker}",
            **extra,
        }
        r = self.client.post("/v1/images/generations", json=body, headers=auth(self.key))
        decision_id = str(r.json().get("governance", {}).get("decision_id") or "")
        if not decision_id:
            decision_id = str(r.json()["error"]["decision_id"])
        self.markers[decision_id] = marker
        return decision_id

    def verify(self) -> VerifyReport:
        with unit_of_work(self.runtime.sessions) as session:
            return verify_trail(session, self.runtime.audit.signer.public_key_b64)


@pytest.fixture
def trail(
    runtime_factory: Callable[..., Runtime], settings_factory: Callable[..., Settings]
) -> Trail:
    runtime = runtime_factory(settings_factory(checkpoint_every=3))
    with unit_of_work(runtime.sessions) as session:
        key = create_key(
            session, tenant="acme", roles=[Role.REQUESTER, Role.AUDITOR, Role.ADMIN]
        ).secret
    made = Trail(runtime, TestClient(create_app(runtime.settings, runtime)), key)
    made.decide("a lighthouse at dusk")
    made.decide("a soldier executing prisoners, war photography")  # blocked
    made.decide("a red bicycle in the rain", user="shared-user")
    return made


def _drop_guards(runtime: Runtime) -> None:
    with runtime.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            for table in ("audit_events", "audit_checkpoints"):
                conn.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
        else:
            for table in ("audit_events", "audit_checkpoints"):
                for what in ("update", "delete"):
                    conn.execute(text(f"DROP TRIGGER {table}_no_{what}"))


def _key(table: Table, row: Any) -> dict[str, Any]:
    return {c.name: getattr(row, c.name) for c in table.primary_key.columns}


def _where(table: Table, key: dict[str, Any]) -> list[Any]:
    return [table.c[name] == value for name, value in key.items()]


def _cells(runtime: Runtime, table: Table, needles: list[str]) -> Iterator[tuple[Any, str, Any]]:
    """(row, column, value) of every cell whose text holds one of ``needles``."""
    with runtime.engine.connect() as conn:
        rows = conn.execute(select(table)).all()
    for row in rows:
        for column in table.columns:
            value = getattr(row, column.name)
            shown = json.dumps(value) if isinstance(value, dict | list) else str(value)
            if any(n in shown for n in needles):
                yield row, column.name, value


def _changed(value: Any, needles: list[str]) -> Any:
    if isinstance(value, dict | list):
        return json.loads(_changed(json.dumps(value), needles))
    for needle in needles:
        value = value.replace(needle, needle[:-2] + "ZZ")
    return value


def _owner(trail: Trail, row: Any, column: str, value: Any) -> str:
    shown = json.dumps(value) if isinstance(value, dict | list) else str(value)
    for decision_id, marker in trail.markers.items():
        if decision_id in shown or marker in shown:
            return decision_id
    raise AssertionError(f"no decision owns {column}={value!r}")


def _names(report: VerifyReport) -> set[str | None]:
    return {e.decision_id for e in report.row_errors} | {report.first_bad_decision_id}


@pytest.mark.parametrize("table_name", ["decisions", "personal_data", "audit_events"])
def test_every_marked_cell_edited_is_caught_and_named(trail: Trail, table_name: str) -> None:
    assert trail.verify().ok, trail.verify().summary
    _drop_guards(trail.runtime)
    table = AUDIT_TABLES[table_name]
    needles = [*trail.markers, *trail.markers.values()]
    cells = list(_cells(trail.runtime, table, needles))
    assert len(cells) >= len(trail.markers) * 2, cells
    for row, column, value in cells:
        owner = _owner(trail, row, column, value)
        key = _where(table, _key(table, row))
        with trail.runtime.engine.begin() as conn:
            conn.execute(update(table).where(*key).values({column: _changed(value, needles)}))
        report = trail.verify()
        assert not report.ok, f"{table_name}.{column} edited: {report.summary}"
        assert owner in _names(report), (table_name, column, report.to_json())
        new_key = _where(table, _key(table, row) | {column: _changed(value, needles)})
        with trail.runtime.engine.begin() as conn:
            restored = update(table).values({column: value})
            in_key = column in _key(table, row)
            conn.execute(restored.where(*(new_key if in_key else key)))
    report = trail.verify()
    assert report.ok, report.summary


def test_every_checkpoint_cell_edited_is_caught(trail: Trail) -> None:
    _drop_guards(trail.runtime)
    table = AUDIT_TABLES["audit_checkpoints"]
    with trail.runtime.engine.connect() as conn:
        rows = conn.execute(select(table)).all()
    assert len(rows) >= 2
    for row in rows:
        for column in table.columns:
            if column.name == "created_at":  # not signed: see docs/audit.md
                continue
            value = getattr(row, column.name)
            if isinstance(value, int):
                new: Any = value + 1
            else:  # flip the last hex or base64 character
                new = value[:-2] + ("0" if value[-2] != "0" else "1") + value[-1]
            with trail.runtime.engine.begin() as conn:
                conn.execute(update(table).where(table.c.size == row.size).values({column: new}))
            report = trail.verify()
            assert not report.ok, f"checkpoint {row.size} {column.name} edited: {report.summary}"
            assert report.first_bad_seq is not None
            where = row.size + 1 if column.name == "size" else row.size
            with trail.runtime.engine.begin() as conn:
                conn.execute(update(table).where(table.c.size == where).values({column: value}))
    assert trail.verify().ok


@pytest.mark.parametrize("table_name", ["decisions", "personal_data", "audit_events"])
def test_every_row_deleted_is_caught_and_named(trail: Trail, table_name: str) -> None:
    _drop_guards(trail.runtime)
    table = AUDIT_TABLES[table_name]
    owner_of = table.c.id if table_name == "decisions" else table.c.decision_id
    with trail.runtime.engine.connect() as conn:
        owned = conn.execute(select(table, owner_of.label("owner")).where(owner_of.is_not(None)))
        owned_rows = owned.all()
    assert owned_rows
    for row in owned_rows:
        owner = row.owner
        values = {c.name: getattr(row, c.name) for c in table.columns}
        with trail.runtime.engine.begin() as conn:
            conn.execute(delete(table).where(*_where(table, _key(table, row))))
        report = trail.verify()
        assert not report.ok and owner in _names(report), (table_name, values, report.to_json())
        with trail.runtime.engine.begin() as conn:
            conn.execute(insert(table).values(values))
    assert trail.verify().ok


def test_erasure_keeps_rows_verified_and_http_and_cli_report_findings(trail: Trail) -> None:
    runtime, client, key = trail.runtime, trail.client, trail.key
    erased = trail.decide("a blue kite on a beach", user="shared-user")
    env = {
        "GATEWAY_DATA_DIR": str(runtime.settings.data_dir),
        "GATEWAY_DATABASE_URL": runtime.settings.resolved_database_url,
        "GATEWAY_POLICY_DIR": str(REPO / "policies"),
    }
    done = CliRunner().invoke(app, ["audit", "erase", "--user", "shared-user"], env=env)
    assert done.exit_code == 0 and "erased 2 decision(s)" in done.stdout
    with runtime.engine.connect() as conn:
        left = conn.execute(
            select(PersonalData.field).where(PersonalData.decision_id == erased)
        ).all()
    assert left == []
    report = client.get("/v1/audit/verify", headers=auth(key)).json()
    assert report["ok"] is True and report["rows_checked"] == 4, report
    assert report["row_errors"] == [] and "4 decision rows match" in report["summary"]
    cli = CliRunner().invoke(app, ["audit", "verify", "--json"], env=env)
    assert cli.exit_code == 0 and json.loads(cli.stdout)["rows_checked"] == 4

    # an erased decision's readable copy rewritten: named, over HTTP and on the command line
    decisions = AUDIT_TABLES["decisions"]
    with runtime.engine.begin() as conn:
        request = conn.execute(select(decisions.c.request).where(decisions.c.id == erased))
        rewritten = {**request.scalar_one(), "prompt": "rewritten"}
        conn.execute(update(decisions).where(decisions.c.id == erased).values(request=rewritten))
    report = client.get("/v1/audit/verify", headers=auth(key)).json()
    assert report["ok"] is False and report["row_error_count"] == 1
    assert {
        "decision_id": erased,
        "table": "decisions",
        "field": "decisions.request.prompt",
        "reason": report["row_errors"][0]["reason"],
    } in report["row_errors"]
    cli = CliRunner().invoke(app, ["audit", "verify"], env=env)
    assert cli.exit_code == 1 and "DO NOT MATCH" in cli.stdout and erased in cli.stdout
    assert "decisions.request.prompt" in cli.stdout
    app_ = create_app(runtime.settings, runtime)
    with TestClient(app_, base_url="https://testserver") as console:
        page = signed_in(console, key).get("/console/audit/verify", params={"run": "true"})
    assert "BROKEN" in page.text and 'id="row-errors"' in page.text
    assert erased in page.text and "decisions.request.prompt" in page.text


def test_exports_state_each_row_verified_and_the_checkpoint(trail: Trail, tmp_path: Path) -> None:
    runtime, client, key = trail.runtime, trail.client, trail.key
    tampered, kept = list(trail.markers)[:2]

    def export(fmt: str) -> list[dict[str, Any]]:
        r = client.get("/v1/audit/export", params={"format": fmt}, headers=auth(key))
        assert r.status_code == 200
        if fmt == "jsonl":
            return [json.loads(line) for line in r.text.splitlines()]
        return list(csv.DictReader(io.StringIO(r.text)))

    with runtime.engine.connect() as conn:
        anchor = conn.execute(select(func.max(AuditCheckpoint.size))).scalar_one()
    clean = export("jsonl")
    assert len(clean) == 3 and all(row["verified"] is True for row in clean), clean
    assert {row["verified_checkpoint"] for row in clean} == {anchor}
    assert {row["verification_error"] for row in clean} == {None}

    personal = AUDIT_TABLES["personal_data"]
    with runtime.engine.begin() as conn:
        conn.execute(
            update(personal)
            .where(
                personal.c.decision_id == tampered, personal.c.field == "decided.record.prompt.text"
            )
            .values(value="rewritten")
        )
    for fmt in ("jsonl", "csv"):
        rows = {row["decision_id"]: row for row in export(fmt)}
        assert str(rows[kept]["verified"]).lower() == "true"
        assert str(rows[tampered]["verified"]).lower() == "false"
        assert rows[tampered]["verification_error"].startswith(
            "personal_data[decided.record.prompt.text].value: does not open"
        ), rows[tampered]
        assert str(rows[tampered]["verified_checkpoint"]) == str(anchor)

    env = {
        "GATEWAY_DATA_DIR": str(runtime.settings.data_dir),
        "GATEWAY_DATABASE_URL": runtime.settings.resolved_database_url,
        "GATEWAY_POLICY_DIR": str(REPO / "policies"),
    }
    out = tmp_path / "export.csv"
    done = CliRunner().invoke(
        app, ["audit", "export", "--format", "csv", "--output", str(out)], env=env
    )
    assert done.exit_code == 0, done.output
    rows = {row["decision_id"]: row for row in csv.DictReader(out.open(encoding="utf-8"))}
    assert rows[kept]["verified"] == "true" and rows[tampered]["verified"] == "false"
    args = ["audit", "export", "--format", "jsonl", "--output", str(out), "--no-verify"]
    assert CliRunner().invoke(app, args, env=env).exit_code == 0
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert {(x["verified"], x["verification_error"]) for x in lines} == {
        (False, "not verified: skipped on request")
    }


def test_pdf_verification_section_lists_row_mismatches(trail: Trail) -> None:
    with trail.runtime.engine.begin() as conn:
        conn.execute(text("UPDATE decisions SET model_id = 'other-model'"))
    report = trail.verify().to_json()
    assert report["ok"] is False and report["row_error_count"] == 3
    section = _verification_section(Styles(), report)
    shown = " ".join(_texts(section))
    assert "FAILED" in shown and "3 checked against their events; 3 mismatches" in shown
    assert "decisions.model_id" in shown and all(d in shown for d in trail.markers)


def _texts(flowables: list[Any]) -> Iterator[str]:
    for f in flowables:
        if isinstance(f, Paragraph):
            yield f.text
        elif isinstance(f, RlTable):
            for row in f._cellvalues:
                yield from _texts(list(row))
