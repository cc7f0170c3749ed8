"""The quarantine stores on their own: the database table (capped) and an fsspec URL."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import pytest
from sqlalchemy import text

from gateway.db.engine import make_engine, make_session_factory
from gateway.db.migrate import upgrade
from gateway.pipeline.quarantine import (
    DatabaseQuarantine,
    FsspecQuarantine,
    QuarantinedImage,
    QuarantineRefused,
)
from tests.conftest import REPO


def _image(decision: str, index: int, size: int) -> QuarantinedImage:
    return QuarantinedImage(decision, index, "image/png", bytes([index]) * size)


def test_database_store_keeps_reads_and_caps(database_url: str) -> None:
    upgrade(database_url, REPO / "migrations")
    engine = make_engine(database_url)
    try:
        store = DatabaseQuarantine(
            make_session_factory(engine), "a", max_image_bytes=100, max_total_bytes=250
        )
        store.put(_image("dec_1", 0, 100))
        store.put(_image("dec_1", 1, 100))
        kept = store.get("dec_1", 1)
        assert kept is not None and kept.data == bytes([1]) * 100 and kept.mime == "image/png"
        assert store.get("dec_1", 2) is None and store.get("dec_2", 0) is None
        with pytest.raises(QuarantineRefused, match="already quarantined"):
            store.put(_image("dec_1", 0, 1))
        assert store.get("dec_1", 0) == _image("dec_1", 0, 100)  # not overwritten
        with pytest.raises(QuarantineRefused, match="MAX_IMAGE_BYTES"):
            store.put(_image("dec_2", 0, 101))
        with pytest.raises(QuarantineRefused, match="store is full: 200 of 250"):
            store.put(_image("dec_2", 0, 51))
        store.put(_image("dec_2", 0, 50))  # exactly at the cap
    finally:
        engine.dispose()


@pytest.mark.parametrize("scheme", ["memory", "file"])
def test_fsspec_store_keeps_reads_and_caps(scheme: str, tmp_path: Path) -> None:
    url = (
        f"memory://quarantine-{uuid.uuid4().hex}"
        if scheme == "memory"
        else (tmp_path / "q").as_uri()
    )
    store = FsspecQuarantine(url, max_image_bytes=10)
    store.put(_image("dec_1", 0, 10))
    assert store.get("dec_1", 0) == _image("dec_1", 0, 10)
    assert FsspecQuarantine(url, max_image_bytes=10).get("dec_1", 0) is not None  # another reader
    assert store.get("dec_1", 1) is None
    with pytest.raises(QuarantineRefused, match="MAX_IMAGE_BYTES"):
        store.put(_image("dec_1", 1, 11))
    with pytest.raises(QuarantineRefused, match="already quarantined"):
        store.put(_image("dec_1", 0, 3))
    assert store.get("dec_1", 0) == _image("dec_1", 0, 10)
    assert store.get("../dec_1", 0) is None and store.get("dec_1", -1) is None
    if scheme == "file":
        assert (tmp_path / "q" / "dec_1" / "0.png").read_bytes() == bytes([0]) * 10


def test_replicas_racing_for_the_last_room_never_exceed_the_total_cap(database_url: str) -> None:
    """Eight writers (as if on eight replicas: their own engines) put at the same instant
    when only one image fits: exactly one is kept, the others are refused."""
    upgrade(database_url, REPO / "migrations")
    engines = [make_engine(database_url) for _ in range(8)]
    try:
        stores = [
            DatabaseQuarantine(
                make_session_factory(e), f"r{i}", max_image_bytes=100, max_total_bytes=150
            )
            for i, e in enumerate(engines)
        ]
        for _ in range(5):  # a few rounds, so a race that exists shows
            with engines[0].begin() as conn:
                conn.execute(text("DELETE FROM quarantine_images"))
            barrier = threading.Barrier(len(stores))
            kept: list[int] = []

            def put(
                i: int, store: DatabaseQuarantine, barrier: threading.Barrier, kept: list[int]
            ) -> None:
                barrier.wait()
                try:
                    store.put(_image(f"dec_{uuid.uuid4().hex}", 0, 100))
                    kept.append(i)
                except QuarantineRefused:
                    pass

            threads = [
                threading.Thread(target=put, args=(i, s, barrier, kept))
                for i, s in enumerate(stores)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            assert len(kept) == 1, kept
            with engines[0].connect() as conn:
                used = conn.execute(text("SELECT SUM(size) FROM quarantine_images")).scalar()
            assert used == 100
    finally:
        for e in engines:
            e.dispose()
