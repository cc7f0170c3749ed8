"""Signed export bundles: written from a real trail, verified offline, and tampered with.

Tampering comes in two strengths: a careless edit (the manifest's hashes catch it) and a
forger who also rewrites the manifest ("resealed"), who must be caught by the signature, the
inclusion proofs, or the cross-check of each record against its proven events.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select, text
from typer.testing import CliRunner

from gateway.audit.bundle import BundleError, BundleReport, verify_bundle, write_bundle
from gateway.audit.decisions import Opening, close_decision, open_decision
from gateway.audit.search import DecisionFilters
from gateway.audit.verify import verify_trail
from gateway.cli import app
from gateway.db.engine import unit_of_work
from gateway.db.models import AuditCheckpoint, AuditEvent
from gateway.runtime import Runtime
from gateway.settings import Settings
from tests.conftest import REPO

IMAGE = "ab" * 32
FILES = {
    "records.jsonl",
    "events.jsonl",
    "proofs.jsonl",
    "checkpoint.json",
    "public_key.txt",
    "manifest.json",
}


def _open(runtime: Runtime, user: str, model: str = "demo-tiny") -> str:
    with unit_of_work(runtime.sessions) as session:
        session.execute(
            text(
                "INSERT INTO tenants (id, name, facts, created_at) SELECT 't1', "
                "'t1', '{}', CURRENT_TIMESTAMP WHERE NOT EXISTS "
                "(SELECT 1 FROM tenants WHERE id = 't1')"
            )
        )
        opening = Opening(
            tenant_id="t1",
            key_id="k",
            instance_id="i",
            user=user,
            model_id=model,
            licence_id="apache-2.0",
            intended_use="research",
            policy_version="0" * 64,
            request={"prompt": f"a lighthouse for {user}"},
        )
        return open_decision(session, runtime.audit, opening).id


def _decide(runtime: Runtime, user: str, outcome: str = "allowed", model: str = "demo-tiny") -> str:
    decision_id = _open(runtime, user, model)
    with unit_of_work(runtime.sessions) as session:
        runtime.audit.append(session, "test", {"noise": user})  # not a decision's event
    images = [{"sha256": IMAGE, "action": "delivered"}] if outcome == "allowed" else []
    with unit_of_work(runtime.sessions) as session:
        close_decision(
            session,
            runtime.audit,
            decision_id,
            outcome=outcome,
            http_status=200 if outcome == "allowed" else 400,
            error_code=None if outcome == "allowed" else "content_policy",
            record={"prompt": {"text": f"a lighthouse for {user}"}, "images": images},
        )
    return decision_id


def _bundle(
    runtime: Runtime,
    path: Path,
    filters: DecisionFilters | None = None,
    fmt: str = "jsonl",
    batch: int = 1000,
) -> BundleReport:
    with path.open("wb") as out:
        return write_bundle(
            out, runtime.sessions, runtime.audit, filters or DecisionFilters(), fmt=fmt, batch=batch
        )


def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def _rewrite(path: Path, name: str, edit: Callable[[bytes], bytes], *, reseal: bool = True) -> Path:
    """A copy of the bundle with one file edited (and the manifest redone, if ``reseal``)."""
    members = _members(path)
    members[name] = edit(members[name])
    if reseal:
        manifest = json.loads(members["manifest.json"])
        for member in manifest["files"]:
            manifest["files"][member] = hashlib.sha256(members[member]).hexdigest()
        members["manifest.json"] = json.dumps(manifest).encode()
    out = path.with_name(f"tampered-{name}-{reseal}.zip")
    with zipfile.ZipFile(out, "w") as zf:
        for member, data in members.items():
            zf.writestr(member, data)
    return out


def _lines(data: bytes) -> list[dict[str, object]]:
    return [json.loads(line) for line in data.decode().splitlines()]


def _dump(lines: list[dict[str, object]]) -> bytes:
    return b"".join(json.dumps(x, separators=(",", ":")).encode() + b"\n" for x in lines)


@pytest.fixture
def decided(runtime: Runtime) -> list[str]:
    """Three closed decisions (one refused) and one still open, with unrelated events between."""
    ids = [_decide(runtime, "ann"), _decide(runtime, "ben", "prompt_blocked")]
    ids.append(_decide(runtime, "cat", model="other-model"))
    ids.append(_open(runtime, "dan"))
    return ids


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_round_trip_verifies(
    runtime: Runtime, decided: list[str], tmp_path: Path, fmt: str
) -> None:
    path = tmp_path / "bundle.zip"
    written = _bundle(runtime, path, fmt=fmt)
    assert written.ok and written.decisions == 4 and written.events == 7
    assert written.fresh_checkpoint  # checkpoint_every is 1000: none covered the trail yet
    report = verify_bundle(path)
    assert report.ok, report.summary
    assert report.decisions == 4 and report.events == 7
    assert report.checkpoint_size == written.checkpoint_size == 10  # 7 decision + 3 noise
    assert report.summary.startswith(
        "bundle verified: 4 decisions, 7 events proven against checkpoint 10 (root "
    )
    assert report.key_id == runtime.audit.signer.key_id and report.key_id in report.summary

    members = _members(path)
    assert set(members) == FILES - {"records.jsonl"} | {f"records.{fmt}"}
    with runtime.sessions() as session:
        stored = {e.seq: e for e in session.scalars(select(AuditEvent))}
        cp = session.get(AuditCheckpoint, 10)
    assert cp is not None and json.loads(members["checkpoint.json"])["signature"] == cp.signature
    events = _lines(members["events.jsonl"])
    assert [e["seq"] for e in events] == [1, 3, 4, 6, 7, 9, 10]  # the noise is left out
    for e in events:
        row = stored[int(str(e["seq"]))]
        assert e == {
            "seq": row.seq,
            "payload": row.payload,  # verbatim
            "chain_hash": row.chain_hash,
            "prev_hash": row.prev_hash,
        }
    proofs = _lines(members["proofs.jsonl"])
    assert [(p["leaf_index"], p["tree_size"]) for p in proofs][:2] == [(0, 10), (2, 10)]
    assert members["public_key.txt"].decode().strip() == runtime.audit.signer.public_key_b64
    manifest = json.loads(members["manifest.json"])
    assert manifest["counts"] == {"decisions": 4, "events": 7}
    assert manifest["policy_versions"] == ["0" * 64]
    assert manifest["records"] == {"file": f"records.{fmt}", "format": fmt}
    assert manifest["tool"]["name"] == "governed-image-gateway" and manifest["tool"]["version"]
    assert manifest["created_at"].endswith("Z") and manifest["filters"]["outcome"] is None
    assert set(manifest["files"]) == set(members) - {"manifest.json"}

    key = runtime.audit.signer.public_key_b64
    assert verify_bundle(path, expect_key=key).ok
    other = "A" * 43 + "="
    wrong = verify_bundle(path, expect_key=other)
    assert not wrong.ok and wrong.failure is not None
    assert wrong.failure.startswith("public_key.txt: the bundle's key")
    with unit_of_work(runtime.sessions) as session:  # the fresh checkpoint fits the trail
        assert verify_trail(session, key).ok


def test_reuses_a_covering_checkpoint_and_streams_in_batches(
    runtime: Runtime, decided: list[str], tmp_path: Path
) -> None:
    with unit_of_work(runtime.sessions) as session:
        made = runtime.audit.checkpoint(session)
    assert made is not None and made.size == 10
    small, large = tmp_path / "small.zip", tmp_path / "large.zip"
    first = _bundle(runtime, small, batch=2)
    assert not first.fresh_checkpoint and first.checkpoint_size == 10
    assert _bundle(runtime, large).checkpoint_size == 10
    a, b = _members(small), _members(large)
    for name in ("records.jsonl", "events.jsonl", "proofs.jsonl", "checkpoint.json"):
        assert a[name] == b[name], name
    assert verify_bundle(small).ok
    _decide(runtime, "eve")
    later = _bundle(runtime, tmp_path / "later.zip")
    assert later.fresh_checkpoint and later.checkpoint_size == 13 and later.decisions == 5
    assert verify_bundle(tmp_path / "later.zip").ok


def test_a_filtered_export_proves_only_the_selected_decisions(
    runtime: Runtime, decided: list[str], tmp_path: Path
) -> None:
    path = tmp_path / "blocked.zip"
    written = _bundle(runtime, path, DecisionFilters(outcome="prompt_blocked"))
    assert written.decisions == 1 and written.events == 2
    report = verify_bundle(path)
    assert report.ok and report.summary.startswith("bundle verified: 1 decisions, 2 events")
    members = _members(path)
    payloads = [json.loads(str(e["payload"])) for e in _lines(members["events.jsonl"])]
    assert {p["decision_id"] for p in payloads} == {decided[1]}
    assert [p["kind"] for p in payloads] == ["received", "decided"]
    assert json.loads(members["manifest.json"])["filters"]["outcome"] == "prompt_blocked"
    # a forger slipping another decision's proven events in is caught: no record claims them
    everything = tmp_path / "all.zip"
    _bundle(runtime, everything)
    full = _members(everything)
    extra = _lines(full["events.jsonl"])[0], _lines(full["proofs.jsonl"])[0]
    smuggled = _rewrite(path, "events.jsonl", lambda d: _dump([extra[0]]) + d)
    smuggled = _rewrite(smuggled, "proofs.jsonl", lambda d: _dump([extra[1]]) + d)
    failure = verify_bundle(smuggled).failure
    assert failure == "events.jsonl: event seq 1 belongs to no record", failure


def _flip_outcome(data: bytes) -> bytes:
    return data.replace(b'"outcome":"prompt_blocked"', b'"outcome":"allowed"', 1)


def _flip_payload(data: bytes) -> bytes:
    return data.replace(b"demo-tiny", b"demo-tinx", 1)  # one byte of the first event


def _flip_proof(data: bytes) -> bytes:
    lines = _lines(data)
    first = str(lines[0]["proof"][0])  # type: ignore[index]
    lines[0]["proof"][0] = ("0" if first[0] != "0" else "1") + first[1:]  # type: ignore[index]
    return _dump(lines)


def _flip_signature(data: bytes) -> bytes:
    cp = json.loads(data)
    cp["signature"] = ("A" if cp["signature"][0] != "A" else "B") + cp["signature"][1:]
    return json.dumps(cp).encode()


def _drop_first(data: bytes) -> bytes:
    return b"".join(data.splitlines(keepends=True)[1:])


@pytest.mark.parametrize(
    ("name", "edit", "reseal", "expected"),
    [
        ("records.jsonl", _flip_outcome, False, "records.jsonl: its sha256 does not match"),
        (
            "records.jsonl",
            _flip_outcome,
            True,
            "records.jsonl record 2 ({ben}): outcome 'allowed' differs from its event's "
            "(seq 6) 'prompt_blocked'",
        ),
        ("events.jsonl", _flip_payload, False, "events.jsonl: its sha256 does not match"),
        (
            "events.jsonl",
            _flip_payload,
            True,
            "events.jsonl line 1 (seq 1): its payload does not hash to the proven leaf",
        ),
        (
            "proofs.jsonl",
            _flip_proof,
            True,
            "proofs.jsonl line 1 (seq 1): the proof does not lead to the root",
        ),
        ("checkpoint.json", _flip_signature, False, "checkpoint.json: its sha256 does not"),
        ("checkpoint.json", _flip_signature, True, "checkpoint.json size 10: bad signature"),
        (
            "events.jsonl",
            _drop_first,
            True,
            "proofs.jsonl line 1: it is for leaf 0 of 10, not seq 3",  # lines out of step
        ),
    ],
)
def test_tampering_is_named(
    runtime: Runtime,
    decided: list[str],
    tmp_path: Path,
    name: str,
    edit: Callable[[bytes], bytes],
    reseal: bool,
    expected: str,
) -> None:
    path = tmp_path / "bundle.zip"
    _bundle(runtime, path)
    report = verify_bundle(_rewrite(path, name, edit, reseal=reseal))
    assert not report.ok and report.failure is not None
    assert report.failure.startswith(expected.format(ben=decided[1])), report.failure
    assert report.summary.startswith("bundle INVALID: ")


def test_a_forger_who_recomputes_the_hashes_still_fails_the_proof(
    runtime: Runtime, decided: list[str], tmp_path: Path
) -> None:
    """Edit a payload and redo its chain hash and the proof's leaf hash: the root disagrees."""
    from gateway.audit.events import chain_hash, leaf_hash

    path = tmp_path / "bundle.zip"
    _bundle(runtime, path)
    events = _lines(_members(path)["events.jsonl"])
    payload = str(events[0]["payload"]).replace("demo-tiny", "demo-tinx")
    events[0]["payload"] = payload
    events[0]["chain_hash"] = chain_hash(1, str(events[0]["prev_hash"]), payload)
    forged = _rewrite(path, "events.jsonl", lambda _: _dump(events))

    def relabel(data: bytes) -> bytes:
        proofs = _lines(data)
        proofs[0]["leaf_hash"] = leaf_hash(payload).hex()
        return _dump(proofs)

    report = verify_bundle(_rewrite(forged, "proofs.jsonl", relabel))
    assert report.failure == "proofs.jsonl line 1 (seq 1): the proof does not lead to the root"
    # dropping an event and its proof (and fixing the counts) leaves a record unproven
    dropped = _rewrite(path, "events.jsonl", _drop_first)
    dropped = _rewrite(dropped, "proofs.jsonl", _drop_first)
    report = verify_bundle(dropped)
    assert report.failure is not None
    assert report.failure == (
        f"records.jsonl record 1 ({decided[0]}): its received event (seq 1) is not in events.jsonl"
    )


def test_erasure_keeps_the_bundle_verifiable(
    runtime: Runtime, decided: list[str], tmp_path: Path
) -> None:
    from gateway.audit.erase import erase_user

    with unit_of_work(runtime.sessions) as session:
        assert erase_user(session, runtime.audit, "ann") == [decided[0]]
    path = tmp_path / "erased.zip"
    assert _bundle(runtime, path).checkpoint_size == 11  # the erasure event is covered too
    report = verify_bundle(path)
    assert report.ok and report.decisions == 4, report.summary
    records = _lines(_members(path)["records.jsonl"])
    assert records[0]["prompt"] == "[erased]" and records[0]["user"] is None
    assert b"a lighthouse for ann" not in b"".join(_members(path).values())


def test_unreadable_and_empty(runtime: Runtime, tmp_path: Path) -> None:
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"not a zip")
    report = verify_bundle(junk)
    assert not report.ok and report.failure is not None
    assert report.failure.startswith("junk.zip: unreadable")
    with pytest.raises(BundleError, match="the audit trail is empty"):
        _bundle(runtime, tmp_path / "empty.zip")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("manifest.json", "{}")
    (tmp_path / "bare.zip").write_bytes(buffer.getvalue())
    assert verify_bundle(tmp_path / "bare.zip").failure == (
        "manifest.json: not a gateway-audit-bundle/v1 manifest"
    )


def _env(settings: Settings) -> dict[str, str]:
    return {
        "GATEWAY_DATA_DIR": str(settings.data_dir),
        "GATEWAY_DATABASE_URL": settings.resolved_database_url,
        "GATEWAY_POLICY_DIR": str(REPO / "policies"),
    }


def test_cli_export_bundle_and_verify_bundle(
    runtime: Runtime, decided: list[str], tmp_path: Path
) -> None:
    env, runner = _env(runtime.settings), CliRunner()
    for fmt in ("jsonl", "csv"):
        out = tmp_path / f"bundle-{fmt}.zip"
        args = ["audit", "export", "--format", fmt, "--output", str(out), "--bundle"]
        result = runner.invoke(app, [*args, "--outcome", "allowed"], env=env)
        assert result.exit_code == 0, result.output
        assert "exported 2 decision(s)" in result.stderr
        assert "bundle: 4 events proven against checkpoint 10" in result.stderr
        assert not out.with_name(out.name + ".partial").exists()
        checked = runner.invoke(app, ["audit", "verify-bundle", str(out)])
        assert checked.exit_code == 0, checked.output
        assert checked.stdout.startswith("bundle verified: 2 decisions, 4 events proven")
    pub = runtime.settings.data_dir / "audit-signing-key.pub"
    verify = ["audit", "verify-bundle", str(out), "--expect-key"]
    assert runner.invoke(app, [*verify, str(pub)]).exit_code == 0
    wrong = runner.invoke(app, [*verify, "A" * 43 + "="])
    assert wrong.exit_code == 1 and "bundle INVALID: public_key.txt" in wrong.stdout
    as_json = runner.invoke(app, ["audit", "verify-bundle", str(out), "--json"])
    assert json.loads(as_json.stdout)["ok"] is True

    tampered = _rewrite(out, "records.csv", lambda d: d.replace(b"allowed", b"alloweD", 1))
    bad = runner.invoke(app, ["audit", "verify-bundle", str(tampered)])
    assert bad.exit_code == 1
    assert bad.stdout.startswith("bundle INVALID: records.csv record 1 ("), bad.stdout
    assert "outcome 'alloweD' differs" in bad.stdout

    pdf = ["audit", "export", "--format", "pdf", "--output", str(tmp_path / "x"), "--bundle"]
    refused = runner.invoke(app, pdf, env=env)
    assert refused.exit_code != 0 and "--format" in refused.output
    stdout = ["audit", "export", "--format", "csv", "--output", "-", "--bundle"]
    refused = runner.invoke(app, stdout, env=env)
    assert refused.exit_code != 0 and "--output" in refused.output
