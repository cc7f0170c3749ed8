"""The quarantine stores on their own: the database table (capped) and an fsspec URL."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

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
