"""Decision search, cursor pagination and exports, through the real app, models and database."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, select, update
from typer.testing import CliRunner

from gateway.audit.export import export_chunks
from gateway.audit.export_format import COLUMNS
from gateway.audit.report import aggregate, policy_approvals, write_pdf_report
from gateway.audit.search import (
    DecisionFilters,
    iso_utc,
    iter_decision_batches,
    iter_decisions,
)
from gateway.auth.names import load_names
from gateway.cli import app as cli_app
from gateway.db.models import AuditEvent, Decision
from gateway.domain import Role
from gateway.runtime import Runtime
from tests.conftest import KeyFactory, auth

BODY = {"model": "demo-tiny", "prompt": "a lighthouse at dusk", "size": "64x64", "steps": 2}
REFUSED = {**BODY, "prompt": "explicit porn"}
DENIED = {**BODY, "model": "stabilityai/sdxl-turbo", "size": "512x512", "steps": 1}


def _post(client: TestClient, key: str, body: dict[str, Any], status: int) -> str:
    r = client.post("/v1/images/generations", json=body, headers=auth(key))
    assert r.status_code == status, r.text
    data = r.json()
    return str(data["governance"]["decision_id"] if status == 200 else data["error"]["decision_id"])


def seed(client: TestClient, make_key: KeyFactory) -> dict[str, list[str]]:
    """acme: 2 allowed, 2 prompt-blocked, 1 licence-denied; globex: 1 allowed."""
    acme = make_key(Role.REQUESTER, tenant="acme", label="Acme web app")
    globex = make_key(Role.REQUESTER, tenant="globex")
    return {
        "allowed": [
            _post(client, acme, {**BODY, "user": "u-1"}, 200),
            _post(client, acme, {**BODY, "user": "u-2", "n": 2}, 200),
        ],
        "prompt_blocked": [
            _post(client, acme, {**REFUSED, "user": "u-2"}, 400),
            _post(client, acme, REFUSED, 400),
        ],
        "licence_denied": [_post(client, acme, DENIED, 403)],
        "globex": [_post(client, globex, BODY, 200)],
    }


def _ids(client: TestClient, key: str, **params: Any) -> list[str]:
    r = client.get("/v1/audit/decisions", params=params, headers=auth(key))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list"
    return [d["id"] for d in body["data"]]


def test_search_filters_and_tenant_isolation(client: TestClient, make_key: KeyFactory) -> None:
    ids = seed(client, make_key)
    acme = ids["allowed"] + ids["prompt_blocked"] + ids["licence_denied"]
    auditor = make_key(Role.AUDITOR, tenant="acme")

    assert _ids(client, auditor) == acme[::-1]  # newest first, own tenant only
    assert set(_ids(client, auditor, outcome="prompt_blocked")) == set(ids["prompt_blocked"])
    assert set(_ids(client, auditor, category="sexual")) == set(ids["prompt_blocked"])
    assert _ids(client, auditor, category="violence") == []
    assert set(_ids(client, auditor, user="u-2")) == {ids["allowed"][1], ids["prompt_blocked"][0]}
    assert _ids(client, auditor, model="stabilityai/sdxl-turbo") == ids["licence_denied"]
    assert len(_ids(client, auditor, licence="apache-2.0")) == 4
    assert len(_ids(client, auditor, intended_use="commercial")) == 5
    assert _ids(client, auditor, intended_use="research") == []
    hour_ago = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    assert len(_ids(client, auditor, since=hour_ago)) == 5
    assert _ids(client, auditor, until=hour_ago) == []
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    assert _ids(client, auditor, since=tomorrow) == []
    assert len(_ids(client, auditor, until=tomorrow)) == 5
    params = {"limit": 1, "outcome": "prompt_blocked"}
    full = client.get("/v1/audit/decisions", params=params, headers=auth(auditor)).json()
    assert full["data"][0]["id"] == ids["prompt_blocked"][1]
    assert full["data"][0]["request"]["prompt"] == "explicit porn"  # decision_json rows
    assert full["next_cursor"]

    # another tenant's auditor sees none of acme's decisions, and may not ask for them
    other = make_key(Role.AUDITOR, tenant="globex")
    assert _ids(client, other) == ids["globex"]
    denied = client.get("/v1/audit/decisions", params={"tenant": "acme"}, headers=auth(other))
    assert denied.status_code == 403 and denied.json()["error"]["param"] == "tenant"
    assert _ids(client, auditor, tenant="acme") == acme[::-1]  # naming its own is fine

    admin = make_key(Role.ADMIN, tenant="ops")
    assert set(_ids(client, admin)) == set(acme + ids["globex"])
    assert _ids(client, admin, tenant="acme") == acme[::-1]
    tenant_id = client.get(f"/v1/audit/decisions/{ids['globex'][0]}", headers=auth(admin))
    assert _ids(client, admin, tenant=tenant_id.json()["tenant_id"]) == ids["globex"]

    requester = make_key(Role.REQUESTER, tenant="acme")
    r = client.get("/v1/audit/decisions", headers=auth(requester))
    assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_role"


def test_invalid_filters_are_422_naming_the_param(client: TestClient, make_key: KeyFactory) -> None:
    admin = make_key(Role.ADMIN, tenant="ops")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"since": "last tuesday"}, "since"),
        ({"until": "2026-13-01"}, "until"),
        ({"since": "2026-02-01", "until": "2026-01-01"}, "until"),
        ({"outcome": "fine"}, "outcome"),
        ({"category": "rude"}, "category"),
        ({"intended_use": "fun"}, "intended_use"),
        ({"limit": 0}, "limit"),
        ({"limit": 501}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": "WzEsMl0"}, "cursor"),  # base64 of [1,2]: well-formed, not ours
        ({"tenant": "no-such-tenant"}, "tenant"),
        # PostgreSQL text cannot hold NUL: refused by the schema, never a 500 from the database
        ({"tenant": "ac\x00me"}, "tenant"),
        ({"model": "demo\x00tiny"}, "model"),
        ({"licence": "\x00"}, "licence"),
        ({"user": "a\x00"}, "user"),
    ]
    for params, param in cases:
        r = client.get("/v1/audit/decisions", params=params, headers=auth(admin))
        assert r.status_code == 422, (params, r.text)
        assert r.json()["error"]["param"] == param, (params, r.text)
    r = client.get("/v1/audit/export", params={"format": "xlsx"}, headers=auth(admin))
    assert r.status_code == 422 and r.json()["error"]["param"] == "format"
    r = client.get("/v1/audit/export", params={"outcome": "fine"}, headers=auth(admin))
    assert r.status_code == 422 and r.json()["error"]["param"] == "outcome"


def test_cursor_walks_every_row_exactly_once(
    client: TestClient, make_key: KeyFactory, runtime: Runtime
) -> None:
    requester = make_key(Role.REQUESTER, tenant="acme")
    made = [_post(client, requester, DENIED, 403) for _ in range(7)]
    # ties on created_at must be broken by id, not lost or repeated
    tie = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    with runtime.sessions.begin() as session:
        session.execute(update(Decision).where(Decision.id.in_(made[2:6])).values(created_at=tie))
    auditor = make_key(Role.AUDITOR, tenant="acme")
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        body = client.get("/v1/audit/decisions", params=params, headers=auth(auditor)).json()
        seen += [d["id"] for d in body["data"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 4
    assert sorted(seen) == sorted(made) and len(seen) == len(set(seen))
    with runtime.sessions() as session:
        rows = session.execute(select(Decision.created_at, Decision.id)).all()
    assert seen == [i for _, i in sorted(rows, reverse=True)]


def test_iter_decisions_streams_in_keyset_batches(
    client: TestClient, make_key: KeyFactory, runtime: Runtime
) -> None:
    requester = make_key(Role.REQUESTER, tenant="acme")
    made = [_post(client, requester, DENIED, 403) for _ in range(5)]
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "FROM decisions" in statement:
            statements.append(statement)

    event.listen(runtime.engine, "before_cursor_execute", record)
    try:
        with runtime.sessions() as session:
            stream = iter_decisions(session, DecisionFilters(), batch=2)
            first = next(stream)
            assert first.id == made[0] and len(statements) == 1  # lazy: one batch read
            rest = [d.id for d in stream]
        assert [first.id, *rest] == made  # oldest first, every row once
        assert len(statements) == 3  # batches of 2, 2, 1: keyset, never OFFSET
        keyset = "(decisions.created_at, decisions.id) >"
        assert keyset not in statements[0] and all(keyset in s for s in statements[1:])
    finally:
        event.remove(runtime.engine, "before_cursor_execute", record)
    batches = list(iter_decision_batches(runtime.sessions, DecisionFilters(), batch=2))
    assert [len(b) for b in batches] == [2, 2, 1]
    assert [d.id for b in batches for d in b] == made
    small = b"".join(export_chunks("jsonl", runtime.sessions, DecisionFilters(), batch=2))
    large = b"".join(export_chunks("jsonl", runtime.sessions, DecisionFilters()))
    assert small == large and len(small.splitlines()) == 5


def _export(client: TestClient, key: str, fmt: str, **params: Any) -> bytes:
    r = client.get("/v1/audit/export", params={"format": fmt, **params}, headers=auth(key))
    assert r.status_code == 200, r.text
    disposition = r.headers["content-disposition"]
    assert disposition.startswith("attachment; filename=") and disposition.endswith(f'.{fmt}"')
    return r.content


def _csv_rows(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8"))))


def test_exports_csv_jsonl_and_pdf(
    client: TestClient, make_key: KeyFactory, runtime: Runtime
) -> None:
    ids = seed(client, make_key)
    acme = ids["allowed"] + ids["prompt_blocked"] + ids["licence_denied"]
    auditor = make_key(Role.AUDITOR, tenant="acme")

    rows = _csv_rows(_export(client, auditor, "csv"))
    assert [r["decision_id"] for r in rows] == acme  # oldest first, own tenant only
    assert tuple(rows[0]) == COLUMNS
    by_id = {r["decision_id"]: r for r in rows}
    with runtime.sessions() as session:
        events = session.execute(
            select(AuditEvent.decision_id, AuditEvent.kind, AuditEvent.seq).where(
                AuditEvent.decision_id.in_(acme)
            )
        ).all()
    for decision_id, kind, seq in events:
        if kind in ("received", "decided"):
            assert by_id[decision_id][f"{kind}_seq"] == str(seq)
    refused = by_id[ids["prompt_blocked"][0]]
    assert refused["outcome"] == "prompt_blocked" and refused["http_status"] == "400"
    assert refused["prompt"] == "explicit porn" and refused["user"] == "u-2"
    # people and tenants by name beside their ids
    assert refused["tenant_name"] == "acme" and refused["tenant_id"].startswith("ten_")
    assert refused["key_label"] == "Acme web app" and refused["key_id"]
    assert "sexual" in refused["flagged_categories"].split(";")
    assert json.loads(refused["category_scores"])["sexual"] > 0.5
    assert refused["image_sha256s"] == ""
    allowed = by_id[ids["allowed"][1]]
    record = client.get(f"/v1/audit/decisions/{allowed['decision_id']}", headers=auth(auditor))
    assert allowed["image_sha256s"].split(";") == [i["sha256"] for i in record.json()["images"]]
    assert allowed["weights_sha256"] == record.json()["model"]["weights_sha256"]
    assert allowed["policy_version"] == record.json()["policy_version"]
    assert json.loads(allowed["rights"])["commercial_use"] == "allowed"
    assert allowed["licence_id"] == "apache-2.0" and allowed["intended_use"] == "commercial"
    assert by_id[ids["licence_denied"][0]]["licence_decision"] == "deny"

    lines = _export(client, auditor, "jsonl").decode().splitlines()
    parsed = [json.loads(line) for line in lines]
    assert [p["decision_id"] for p in parsed] == acme
    assert "sexual" in parsed[2]["flagged_categories"]
    assert parsed[2]["tenant_name"] == "acme" and parsed[2]["key_label"] == "Acme web app"
    assert len(parsed[1]["image_sha256s"]) == 2
    assert isinstance(parsed[0]["rights"], dict) and isinstance(parsed[0]["received_seq"], int)

    only = _csv_rows(_export(client, auditor, "csv", outcome="prompt_blocked"))
    assert [r["decision_id"] for r in only] == ids["prompt_blocked"]

    pdf = _export(client, auditor, "pdf")
    assert pdf[:5] == b"%PDF-" and b"%%EOF" in pdf[-1024:]
    assert b"Image generation governance: audit report" in pdf  # the document's title
    admin = make_key(Role.ADMIN, tenant="ops")
    everything = _csv_rows(_export(client, admin, "csv"))
    assert len(everything) == 6


def test_report_aggregates_and_prints_verification(
    client: TestClient, make_key: KeyFactory, runtime: Runtime
) -> None:
    ids = seed(client, make_key)
    with runtime.sessions() as session:
        decisions = list(iter_decisions(session, DecisionFilters()))
    totals = aggregate(decisions, refused_cap=2)
    assert totals.total == 6
    assert totals.by_outcome["allowed"] == 3 and totals.by_outcome["prompt_blocked"] == 2
    assert totals.by_category["sexual"] == 2
    assert totals.by_model["stabilityai/sdxl-turbo"] == 1
    assert totals.refused_total == 3 and len(totals.refused) == 2  # capped
    assert {r[0] for r in totals.refused} <= set(ids["prompt_blocked"] + ids["licence_denied"])
    assert len(totals.versions) == 1
    with runtime.sessions() as session:  # the report names who approved each version
        approvals = policy_approvals(session, load_names(session))
    assert approvals == {runtime.bundle.version: "v1, system:seed"}
    out = io.BytesIO()
    verification = {
        "ok": True,
        "summary": "12 events intact",
        "checkpoint": {"size": 12, "merkle_root": "ab" * 32, "key_id": "k1", "created_at": "x"},
    }
    write_pdf_report(
        out, iter(decisions), period=(None, None), verification=verification, title="Q4 report"
    )
    assert out.getvalue()[:5] == b"%PDF-" and b"Q4 report" in out.getvalue()
    empty = io.BytesIO()
    write_pdf_report(empty, [], period=(datetime(2026, 1, 1, tzinfo=UTC), None), verification=None)
    assert empty.getvalue()[:5] == b"%PDF-"


@pytest.fixture
def cli_env(runtime: Runtime) -> Iterator[dict[str, str]]:
    settings = runtime.settings
    yield {
        "GATEWAY_DATA_DIR": str(settings.data_dir),
        "GATEWAY_DATABASE_URL": settings.resolved_database_url,
        "GATEWAY_MODEL_DIR": str(settings.resolved_model_dir),
        "GATEWAY_POLICY_DIR": str(settings.policy_dir),
    }


def test_cli_export_writes_the_same_rows_as_http(
    client: TestClient, make_key: KeyFactory, cli_env: dict[str, str], tmp_path: Path
) -> None:
    ids = seed(client, make_key)
    admin = make_key(Role.ADMIN, tenant="ops")
    runner = CliRunner()
    for fmt in ("csv", "jsonl"):
        out = tmp_path / f"export.{fmt}"
        args = ["audit", "export", "--format", fmt, "--output", str(out), "--tenant", "acme"]
        result = runner.invoke(cli_app, args, env=cli_env)
        assert result.exit_code == 0, result.output
        assert "exported 5 decision(s)" in result.stderr
        assert out.read_bytes() == _export(client, admin, fmt, tenant="acme")
    out = tmp_path / "blocked.csv"
    args = ["audit", "export", "--format", "csv", "--output", str(out), "--outcome"]
    result = runner.invoke(cli_app, [*args, "prompt_blocked", "--category", "sexual"], env=cli_env)
    assert result.exit_code == 0, result.output
    assert [r["decision_id"] for r in _csv_rows(out.read_bytes())] == ids["prompt_blocked"]

    pdf = tmp_path / "report.pdf"
    args = ["audit", "export", "--format", "pdf", "--output", str(pdf), "--title", "CLI report"]
    result = runner.invoke(cli_app, args, env=cli_env)
    assert result.exit_code == 0, result.output
    assert pdf.read_bytes()[:5] == b"%PDF-" and b"CLI report" in pdf.read_bytes()

    bad = runner.invoke(cli_app, [*args[:6], "--use", "fun"], env=cli_env)
    assert bad.exit_code != 0 and "--use" in bad.output, bad.output
    assert not (tmp_path / "report.pdf.partial").exists()


def test_export_reads_every_image_of_a_record_past_the_packed_paths(
    client: TestClient, make_key: KeyFactory, runtime: Runtime
) -> None:
    decision_id = _post(client, make_key(Role.REQUESTER, tenant="acme"), DENIED, 403)
    images = [{"index": i, "action": "allow", "sha256": f"{i:064x}"} for i in range(6)]
    with runtime.sessions.begin() as session:
        record = dict(session.get_one(Decision, decision_id).record or {})
        session.execute(
            update(Decision)
            .where(Decision.id == decision_id)
            .values(record={**record, "images": images})
        )
    (line,) = b"".join(export_chunks("jsonl", runtime.sessions, DecisionFilters())).splitlines()
    row = json.loads(line)
    assert row["image_sha256s"] == [i["sha256"] for i in images]
    assert row["licence_decision"] == "deny" and row["decided_seq"] > row["received_seq"]


def test_csv_lines_match_the_csv_module() -> None:
    from gateway.audit.export_format import _csv_row, csv_chunks

    plain = ["x", "", "a,b", 'say "hi"', "two\nlines", "cr\rhere", "naïve ✓", " padded "]
    objects: list[Any] = [None, {}, {"a": 1}, {"k": 'q"uote', "n": [1, 2]}, {"s": "x\ny"}]
    lists = ("flagged_categories", "image_sha256s", "image_actions")
    rows = []
    for i in range(len(plain) * len(objects)):
        text = plain[i % len(plain)]
        row: dict[str, Any] = {c: text for c in COLUMNS}
        row.update({c: [text, "b"][: i % 3] for c in lists})
        row["category_scores"] = objects[i % len(objects)]
        row["rights"] = objects[(i + 1) % len(objects)]
        row.update(http_status=200, error_code=None, received_seq=i, decided_seq=None)
        rows.append(tuple(row[c] for c in COLUMNS))
    assert all(len(r) == len(COLUMNS) for r in rows)
    expected = io.StringIO()
    writer = csv.writer(expected, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    writer.writerows(map(_csv_row, rows))
    assert b"".join(csv_chunks([rows[:7], rows[7:]])) == expected.getvalue().encode("utf-8")


def test_an_abandoned_export_leaves_the_database_usable(
    client: TestClient, make_key: KeyFactory, runtime: Runtime
) -> None:
    requester = make_key(Role.REQUESTER, tenant="acme")
    made = [_post(client, requester, DENIED, 403) for _ in range(4)]
    whole = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    with runtime.sessions.begin() as session:  # a time without microseconds, and an erasure
        session.execute(update(Decision).where(Decision.id == made[0]).values(created_at=whole))
        session.execute(
            update(Decision)
            .where(Decision.id == made[1])
            .values(erased_at=whole + timedelta(microseconds=120))
        )
    for _ in range(3):  # more than once: the connection goes back to the pool clean
        chunks = export_chunks("csv", runtime.sessions, DecisionFilters(), batch=1)
        assert next(chunks).startswith(b"decision_id,") and next(chunks)
        chunks.close()  # the client went away mid-export
    rows = [
        json.loads(x)
        for x in b"".join(export_chunks("jsonl", runtime.sessions, DecisionFilters())).splitlines()
    ]
    assert [r["decision_id"] for r in rows] == made
    assert rows[0]["created_at"] == "2026-01-02T03:04:05Z"
    assert rows[1]["erased_at"] == "2026-01-02T03:04:05.000120Z"
    with runtime.sessions() as session:
        times = session.execute(select(Decision.created_at).order_by(Decision.created_at)).all()
    assert [r["created_at"] for r in rows] == [iso_utc(t) for (t,) in times]
