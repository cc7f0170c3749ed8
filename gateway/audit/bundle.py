"""Signed export bundles: exported decisions, their audit events and proofs, in one zip.

``write_bundle``: the records (the plain CSV/JSON Lines export), each decision's ``received``
and ``decided`` events as stored, a signed checkpoint covering them (signed fresh when the
latest is too small), RFC 6962 inclusion proofs, the public key, and a manifest of SHA-256s.
``verify_bundle`` needs no database. The manifest is unsigned: its hashes catch accidents;
forgery is caught by the signature, the proofs, and checking each record against the facts
its proven events state (ids, tenant, model, use, policy, outcome, http status, images).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import zlib
from array import array
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from itertools import zip_longest
from pathlib import Path
from typing import IO, Any
from zipfile import ZIP_DEFLATED, BadZipFile, ZipFile

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gateway.audit.events import AuditLog, chain_hash, checkpoint_json, checkpoint_note, leaf_hash
from gateway.audit.export import iter_row_batches
from gateway.audit.export_format import COLUMNS, Row, csv_chunks, jsonl_chunks
from gateway.audit.merkle import inclusion_proof, root_of, tree_levels, verify_inclusion
from gateway.audit.search import DecisionFilters, iso_utc
from gateway.audit.signing import key_id_of, verify_signature
from gateway.db.engine import unit_of_work
from gateway.db.models import AuditCheckpoint, AuditEvent

BUNDLE_FORMAT = "gateway-audit-bundle/v1"
EVENTS, PROOFS, CHECKPOINT = "events.jsonl", "proofs.jsonl", "checkpoint.json"
KEY, MANIFEST = "public_key.txt", "manifest.json"
RECORD_FILES = {"csv": "records.csv", "jsonl": "records.jsonl"}
Writer = Callable[[bytes], None]
_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_AT = {name: COLUMNS.index(name) for name in ("received_seq", "decided_seq", "policy_version")}
# the record columns each proven event states (the prompts are only committed to, by HMAC)
_IDS = ("decision_id", "tenant_id")
FACTS = {
    "received": (*_IDS, "model_id", "intended_use", "policy_version"),
    "decided": (*_IDS, "outcome", "http_status", "error_code", "image_sha256s"),
}


class BundleError(Exception):
    """The trail cannot back a bundle (empty, gapped, or not matching its checkpoint)."""


@dataclass(frozen=True)
class BundleReport:
    ok: bool
    decisions: int = 0
    events: int = 0
    checkpoint_size: int | None = None
    merkle_root: str | None = None
    key_id: str | None = None
    failure: str | None = None  # "<file> <record or line>: <reason>"
    fresh_checkpoint: bool = False  # written: a checkpoint was signed for this bundle

    @property
    def summary(self) -> str:
        if not self.ok:
            return f"bundle INVALID: {self.failure}"
        return (
            f"bundle verified: {self.decisions} decisions, {self.events} events proven against "
            f"checkpoint {self.checkpoint_size} (root {(self.merkle_root or '')[:16]}…), "
            f"key {self.key_id}"
        )


def write_bundle(
    out: IO[bytes],
    sessions: sessionmaker[Session],
    log: AuditLog,
    filters: DecisionFilters,
    *,
    fmt: str = "jsonl",
    batch: int = 1000,
    progress: Callable[[int], None] | None = None,
) -> BundleReport:
    """Write the bundle of every decision matching ``filters`` to ``out`` (a zip)."""
    if fmt not in RECORD_FILES:
        raise ValueError(f"a bundle's records are csv or jsonl, got {fmt!r}")
    hashes: dict[str, str] = {}
    chosen = asdict(filters).items()
    wanted: array[int] = array("q")
    versions: set[str] = set()
    decisions = 0

    def tee(batches: Iterable[list[Row]]) -> Iterator[list[Row]]:
        nonlocal decisions
        for rows in batches:
            for row in rows:
                wanted.extend(row[_AT[k]] for k in ("received_seq", "decided_seq") if row[_AT[k]])
                versions.add(row[_AT["policy_version"]])
            decisions += len(rows)
            yield rows

    with ZipFile(out, "w", ZIP_DEFLATED, compresslevel=1) as zf:  # hex hashes: level 1 is enough
        rows = tee(iter_row_batches(sessions, filters, batch=batch, progress=progress))
        chunks = csv_chunks(rows) if fmt == "csv" else jsonl_chunks(rows)
        with _member(zf, RECORD_FILES[fmt], hashes) as write:
            for chunk in chunks:
                write(chunk)
        seqs = sorted(wanted)
        cp, fresh = _covering_checkpoint(sessions, log, seqs[-1] if seqs else 0)
        with _member(zf, EVENTS, hashes) as write:
            leaves = _stream_events(sessions, cp.size, seqs, write, batch) if seqs else []
        levels = tree_levels(leaves) if seqs else [[]]
        if seqs and root_of(levels).hex() != cp.merkle_root:
            raise BundleError(f"the trail does not match signed checkpoint {cp.size}: verify it")
        with _member(zf, PROOFS, hashes) as write:
            for seq in seqs:
                proof = [p.hex() for p in inclusion_proof(levels, seq - 1)]
                leaf, i = levels[0][seq - 1].hex(), seq - 1
                write(_line(seq=seq, leaf_index=i, tree_size=cp.size, leaf_hash=leaf, proof=proof))
        with _member(zf, CHECKPOINT, hashes) as write:
            write(json.dumps(checkpoint_json(cp), indent=2).encode() + b"\n")
        with _member(zf, KEY, hashes) as write:
            write(log.signer.public_key_b64.encode() + b"\n")
        manifest = {
            "format": BUNDLE_FORMAT,
            "created_at": iso_utc(datetime.now(UTC)),
            "tool": {"name": "governed-image-gateway", "version": _version()},
            "records": {"file": RECORD_FILES[fmt], "format": fmt},
            "counts": {"decisions": decisions, "events": len(seqs)},
            "filters": {k: iso_utc(v) if isinstance(v, datetime) else v for k, v in chosen},
            "policy_versions": sorted(versions),
            "checkpoint": {"size": cp.size, "merkle_root": cp.merkle_root, "key_id": cp.key_id},
            "files": hashes,
        }
        zf.writestr(MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return BundleReport(True, decisions, len(seqs), cp.size, cp.merkle_root, cp.key_id, None, fresh)


@contextmanager
def _member(zf: ZipFile, name: str, hashes: dict[str, str]) -> Iterator[Writer]:
    digest, buffer = hashlib.sha256(), bytearray()  # one compress call per MiB, not per line
    with zf.open(name, "w", force_zip64=True) as member:

        def write(data: bytes | None = None) -> None:
            buffer.extend(data or b"")
            if data is None or len(buffer) >= 1 << 20:
                digest.update(buffer)
                member.write(buffer)
                buffer.clear()

        yield write
        write(None)
    hashes[name] = digest.hexdigest()


def _version() -> str:
    try:
        return version("governed-image-gateway")
    except PackageNotFoundError:
        return "unknown"


def _line(**fields: object) -> bytes:
    return (_ENCODE(fields) + "\n").encode()


def _covering_checkpoint(
    sessions: sessionmaker[Session], log: AuditLog, needed: int
) -> tuple[AuditCheckpoint, bool]:
    """The latest checkpoint if it covers seq ``needed`` with our key, else a fresh one."""
    with unit_of_work(sessions) as session:
        latest = session.scalars(
            select(AuditCheckpoint).order_by(AuditCheckpoint.size.desc()).limit(1)
        ).first()
        made = None
        if latest is None or latest.size < needed or latest.key_id != log.signer.key_id:
            made = log.checkpoint(session)
    cp = made or latest
    if cp is None:
        raise BundleError("the audit trail is empty: there is nothing to prove")
    if cp.size < needed or cp.key_id != log.signer.key_id:
        raise BundleError(f"no checkpoint with key {log.signer.key_id} covers seq {needed} yet")
    return cp, made is not None


def _stream_events(
    sessions: sessionmaker[Session], size: int, seqs: list[int], write: Writer, batch: int
) -> list[bytes]:
    """Leaf hashes of events 1..size, writing the wanted ones (``seqs``, sorted) as stored."""
    leaves: list[bytes] = []
    at, e = 0, AuditEvent
    while len(leaves) < size:
        with unit_of_work(sessions) as session:
            rows = session.execute(
                select(e.seq, e.payload, e.chain_hash, e.prev_hash)
                .where(e.seq > len(leaves), e.seq <= size)
                .order_by(e.seq)
                .limit(batch)
            ).all()
        for seq, payload, chained, prev in rows:
            if seq != len(leaves) + 1:
                raise BundleError(f"the trail has no event {len(leaves) + 1}: verify it")
            leaves.append(leaf_hash(payload))
            if at < len(seqs) and seqs[at] == seq:
                write(_line(seq=seq, payload=payload, chain_hash=chained, prev_hash=prev))
                at += 1
        if not rows:
            raise BundleError(f"the trail has no event {len(leaves) + 1}: verify it")
    return leaves


class _Fail(Exception):
    """A failed check; the message names the file and the record or line."""


def verify_bundle(path: Path | str, expect_key: str | None = None) -> BundleReport:
    """Check a bundle offline (no database); the first failure names its file and record."""
    try:
        with ZipFile(path) as zf:
            return _verify(zf, expect_key)
    except _Fail as exc:
        return BundleReport(False, failure=str(exc))
    except (BadZipFile, OSError, UnicodeDecodeError, csv.Error, zlib.error) as exc:
        return BundleReport(False, failure=f"{Path(path).name}: unreadable ({exc})")


def _verify(zf: ZipFile, expect_key: str | None) -> BundleReport:
    names = zf.namelist()
    manifest = _json(zf.read(MANIFEST) if MANIFEST in names else b"", MANIFEST)
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise _Fail(f"{MANIFEST}: not a {BUNDLE_FORMAT} manifest")
    files = _dict(manifest.get("files"))
    records_file = str(_dict(manifest.get("records")).get("file"))
    needed = {records_file, EVENTS, PROOFS, CHECKPOINT, KEY}
    if records_file not in RECORD_FILES.values() or not needed <= set(files):
        raise _Fail(f"{MANIFEST}: records, events, proofs, checkpoint or key not listed")
    if len(set(names)) != len(names) or set(names) != {*files, MANIFEST}:
        raise _Fail(f"{MANIFEST}: it lists {sorted(files)} but the zip holds {sorted(names)}")
    for name, expected in files.items():
        digest = hashlib.sha256()
        with zf.open(name) as member:
            while chunk := member.read(1 << 20):
                digest.update(chunk)
        if digest.hexdigest() != expected:
            raise _Fail(f"{name}: its sha256 does not match the manifest (file changed)")
    key = zf.read(KEY).decode("ascii", "replace").strip()
    try:
        key_id = key_id_of(key)
    except ValueError:
        raise _Fail(f"{KEY}: not a base64 public key") from None
    if expect_key is not None and expect_key.strip() != key:
        raise _Fail(f"{KEY}: the bundle's key {key_id} is not the expected key")
    size, root = _checkpoint(_json(zf.read(CHECKPOINT), CHECKPOINT), key, key_id)
    facts = _check_events(zf, size, root)
    events = len(facts)
    decisions, versions = _check_records(zf, records_file, facts)
    if versions != manifest.get("policy_versions"):
        raise _Fail(f"{MANIFEST}: policy_versions do not match the records' {versions}")
    if manifest.get("counts") != {"decisions": decisions, "events": events}:
        raise _Fail(f"{MANIFEST}: counts do not match {decisions} decisions, {events} events")
    return BundleReport(True, decisions, events, size, root.hex(), key_id)


def _json(data: bytes | str, where: str) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        raise _Fail(f"{where}: not JSON") from None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _checkpoint(cp: Any, key: str, key_id: str) -> tuple[int, bytes]:
    try:
        size, root, head = int(cp["size"]), bytes.fromhex(cp["merkle_root"]), str(cp["chain_head"])
        note, signature, signed_by = str(cp["note"]), str(cp["signature"]), cp["key_id"]
    except (KeyError, TypeError, ValueError):
        raise _Fail(f"{CHECKPOINT}: missing or malformed fields") from None
    if note != checkpoint_note(size, root, head):
        raise _Fail(f"{CHECKPOINT} size {size}: its note does not match its fields")
    if signed_by != key_id or not verify_signature(key, note.encode(), signature):
        raise _Fail(f"{CHECKPOINT} size {size}: bad signature for key {key_id}")
    return size, root


def _facts(payload: dict[str, Any]) -> dict[str, str]:
    """The record columns a received or decided event's payload states, as text."""
    body, kind = _dict(payload.get("body")), str(payload.get("kind"))
    images = [_dict(i).get("sha256") for i in _dict(body.get("record")).get("images") or []]
    values = {
        **body,
        **{k: payload.get(k) for k in _IDS},
        "image_sha256s": list(filter(None, images)),
    }
    return {"kind": kind, **{k: _text(values.get(k)) for k in FACTS[kind]}}


def _text(value: Any) -> str:
    if value is None:
        return ""
    return ";".join(map(str, value)) if isinstance(value, list) else str(value)


def _digest(facts: dict[str, str]) -> bytes:
    return hashlib.sha256(_ENCODE(list(facts.values())).encode()).digest()[:16]


def _lines(zf: ZipFile, name: str) -> Iterator[tuple[int, Any]]:
    with io.BufferedReader(zf.open(name), 1 << 20) as member:  # type: ignore[type-var]
        for number, line in enumerate(member, 1):
            yield number, _json(line, f"{name} line {number}")


def _check_events(zf: ZipFile, size: int, root: bytes) -> dict[int, bytes]:
    """Every event's hashes and proof; the digest of each one's facts, by seq."""
    facts: dict[int, bytes] = {}
    last = 0
    for left, right in zip_longest(_lines(zf, EVENTS), _lines(zf, PROOFS)):
        if left is None or right is None:
            raise _Fail(f"{PROOFS}: {len(facts)} events but a different number of proofs")
        (n, ev), (_, pr) = left, right
        where = f"{EVENTS} line {n} (seq {_dict(ev).get('seq')})"
        try:
            seq, payload = int(ev["seq"]), ev["payload"]
            prev, stored = ev["prev_hash"], ev["chain_hash"]
            leaf, path = leaf_hash(payload), [bytes.fromhex(p) for p in pr["proof"]]
            index, tree, proven_leaf = int(pr["leaf_index"]), int(pr["tree_size"]), pr["leaf_hash"]
            if pr["seq"] != seq or index != seq - 1 or tree != size:
                raise _Fail(f"{PROOFS} line {n}: it is for leaf {index} of {tree}, not seq {seq}")
            if proven_leaf != leaf.hex():
                raise _Fail(f"{where}: its payload does not hash to the proven leaf (changed)")
            inner, chained = _dict(json.loads(payload)), chain_hash(seq, prev, payload) == stored
        except (KeyError, TypeError, ValueError, AttributeError):
            raise _Fail(f"{where}: malformed event, payload or proof") from None
        if not verify_inclusion(leaf, index, tree, path, root):
            raise _Fail(f"{PROOFS} line {n} (seq {seq}): the proof does not lead to the root")
        if not chained:
            raise _Fail(f"{where}: its chain_hash does not recompute from its payload")
        if seq <= last or inner.get("seq") != seq:
            raise _Fail(f"{where}: out of order, or its payload is another seq")
        if not isinstance(inner.get("decision_id"), str) or str(inner.get("kind")) not in FACTS:
            raise _Fail(f"{where}: not a decision's received or decided event")
        facts[seq], last = _digest(_facts(inner)), seq
    return facts


def _records(zf: ZipFile, name: str) -> Iterator[tuple[int, Any]]:
    if name.endswith(".jsonl"):
        return _lines(zf, name)
    return enumerate(csv.DictReader(io.TextIOWrapper(zf.open(name), "utf-8", newline="")), 1)


def _check_records(zf: ZipFile, name: str, facts: dict[int, bytes]) -> tuple[int, list[str]]:
    """Each record against its proven events (each claimed once); count and policy versions."""
    count, versions = 0, set()
    for n, record in _records(zf, name):
        if not isinstance(record, dict):
            raise _Fail(f"{name} record {n}: not an object")
        where = f"{name} record {n} ({record.get('decision_id')})"
        versions.add(str(record.get("policy_version")))
        for kind in FACTS:
            raw = record.get(f"{kind}_seq")
            if raw in (None, "") and kind == "decided" and record.get("status") == "open":
                continue
            try:
                seq = int(str(raw))
            except (TypeError, ValueError):
                raise _Fail(f"{where}: no {kind} event ({kind}_seq is {raw!r})") from None
            digest = facts.pop(seq, None)
            if digest is None:
                raise _Fail(f"{where}: its {kind} event (seq {seq}) is not in {EVENTS}")
            stated = {"kind": kind, **{k: _text(record.get(k)) for k in FACTS[kind]}}
            if _digest(stated) != digest:
                raise _Fail(f"{where}: {_difference(zf, seq, stated)}")
        count += 1
    if facts:
        raise _Fail(f"{EVENTS}: event seq {min(facts)} belongs to no record")
    return count, sorted(versions)


def _difference(zf: ZipFile, seq: int, record: dict[str, str]) -> str:
    """Which field of a record disagrees with its proven event (re-reads events.jsonl)."""
    for _, ev in _lines(zf, EVENTS):
        if ev.get("seq") == seq:
            stated = _facts(json.loads(ev["payload"]))
            for key, value in record.items():
                if stated.get(key) != value:
                    return f"{key} {value!r} differs from its event's (seq {seq}) {stated[key]!r}"
    return f"does not match its event (seq {seq})"
