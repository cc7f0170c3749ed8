"""Shared fixtures: real models loaded once, a fresh database per test (SQLite and PostgreSQL).

PostgreSQL tests run when GATEWAY_TEST_DATABASE_URL names a server (CI always sets it and
fails if it is unreachable); each test gets its own freshly created database there.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from gateway.app import create_app
from gateway.auth.keys import create_key
from gateway.db.engine import unit_of_work
from gateway.domain import Role
from gateway.generation.batching import Batcher
from gateway.generation.demo_tiny import build_demo_tiny
from gateway.runtime import Models, Runtime, build_runtime, load_models
from gateway.settings import Settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent
PG_URL = os.environ.get("GATEWAY_TEST_DATABASE_URL")
DATABASES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if PG_URL:
        return
    skip = pytest.mark.skip(reason="GATEWAY_TEST_DATABASE_URL is not set")
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("shared-data")  # the ONNX export of MiniLM is cached here


@pytest.fixture(scope="session")
def shared_models(shared_data_dir: Path) -> Models:
    models = load_models(Settings(policy_dir=REPO / "policies", data_dir=shared_data_dir))
    assert not models.problems, models.problems
    return models


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """demo-tiny is built here once (by the same code `gateway serve` runs) and shared."""
    directory = tmp_path_factory.mktemp("models")
    build_demo_tiny(directory / "demo-tiny")
    return directory


def _pg_database() -> Iterator[str]:
    assert PG_URL is not None
    name = "gw_test_" + uuid.uuid4().hex[:12]
    admin = create_engine(
        PG_URL.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    base, _, _ = PG_URL.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'gateway.db'}"
    else:
        yield from _pg_database()


@pytest.fixture
def settings_factory(tmp_path: Path, database_url: str, model_dir: Path) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "data_dir": tmp_path / "data",
            "database_url": database_url,
            "model_dir": model_dir,
            "policy_dir": REPO / "policies",
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def runtime_factory(
    settings_factory: Callable[..., Settings], shared_models: Models
) -> Iterator[Callable[..., Runtime]]:
    made: list[Runtime] = []

    def make(
        settings: Settings | None = None,
        models: Models | None = None,
        *,
        warm: bool = True,
        **parts: Any,
    ) -> Runtime:
        runtime = build_runtime(settings or settings_factory(), models or shared_models, **parts)
        made.append(runtime)
        if warm:  # /readyz says not ready until the models' warm-up (on their threads) is done
            assert runtime.models.wait_warm(300)
        return runtime

    yield make
    for runtime in made:
        runtime.close()


@pytest.fixture
def runtime(runtime_factory: Callable[..., Runtime]) -> Runtime:
    return runtime_factory()


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(runtime.settings, runtime)) as c:
        yield c


KeyFactory = Callable[..., str]


@pytest.fixture
def make_key(runtime: Runtime) -> KeyFactory:
    def make(*roles: Role, tenant: str = "acme", **kwargs: Any) -> str:
        with unit_of_work(runtime.sessions) as session:
            return create_key(
                session, tenant=tenant, roles=roles or (Role.REQUESTER,), **kwargs
            ).secret

    return make


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def hold_owner(batcher: Batcher, release_after_s: float = 60) -> threading.Event:
    """Occupy ``batcher``'s owner thread until the returned event is set (or the time runs
    out), so that jobs submitted meanwhile wait together."""
    release, busy = threading.Event(), threading.Event()

    def occupy() -> None:
        busy.set()
        release.wait(release_after_s)

    batcher.call(occupy)
    assert busy.wait(60)
    return release
