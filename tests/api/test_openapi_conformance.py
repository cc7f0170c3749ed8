"""Schemathesis, every check, against the app on a real database: the OpenAPI document is
what the server does.

The engine (the same one ``schemathesis run`` drives: examples, coverage and fuzzing phases,
positive and negative data) runs in process against the ASGI app, once with an admin key and
once with a requester key. Nothing is excluded. The one adjustment: ``positive_data_acceptance``
also admits 422, because some refusals depend on server state the schema cannot state (an
unknown tenant or foreign cursor, ``until`` before ``since``, a size the chosen model lacks, image
bytes that are not an image); ``semantic_rejection_only`` then fails any such 422 whose ``param``
is not one of those, so a schema-valid value refused for its shape still fails the run.
Figures are printed (``-s``) and are part of any failure message.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
import schemathesis
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import events, from_schema
from schemathesis.engine.statistic import Statistic

from gateway.app import create_app
from gateway.domain import Role
from gateway.runtime import Runtime
from tests.conftest import KeyFactory

MAX_EXAMPLES = {Role.ADMIN: 12, Role.REQUESTER: 3}

SEMANTIC: dict[str, str] = {
    "GET /v1/audit/decisions": r"until|cursor|tenant",
    "GET /v1/audit/export": r"until|tenant",
    "POST /v1/images/generations": r"size|steps",
    "POST /v1/moderations": r"input\.\d+\.image_url\.url",
    "POST /v1/provenance/verify": r"image",  # bytes that are not a PNG/JPEG/WebP/GIF image
    "POST /v1/admin/keys": r"allowed_uses",
    "POST /v1/fine_tuning/jobs": r"training_file",  # a folder that is not on the server
}
"""Per operation, the params a schema-valid request may still be refused (422) for."""
SEMANTIC_CODES = {"policy_invalid"}  # replaying a draft whose content does not validate


@schemathesis.check
def semantic_rejection_only(ctx: Any, response: Any, case: Any) -> bool | None:
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code != 422:
        return None
    error = response.json().get("error", {})
    allowed = SEMANTIC.get(f"{case.method.upper()} {case.operation.path}")
    if error.get("code") in SEMANTIC_CODES:
        return None
    if allowed is None or not re.fullmatch(allowed, str(error.get("param"))):
        raise AssertionError(
            f"schema-valid request refused for its shape: {error}; sent {case.body!r} "
            f"({meta.phase.name}, {meta.generation.mode})"
        )
    return None


def _run(app: Any, key: str, role: Role) -> tuple[Statistic, list[str]]:
    config = SchemathesisConfig.from_dict(
        {
            "headers": {"Authorization": f"Bearer {key}"},
            "seed": 20260101,
            "generation": {"max-examples": MAX_EXAMPLES[role], "mode": "all"},
            "checks": {
                "positive_data_acceptance": {
                    "expected-statuses": ["2xx", "3xx", "401", "403", "404", "409", "422", "429"]
                }
            },
            "phases": {"stateful": {"enabled": False}},
        }
    )
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
    stat = Statistic()
    problems: list[str] = []
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            stat.on_scenario_finished(event.recorder)
        elif isinstance(event, events.NonFatalError | events.FatalError):
            problems.append(f"engine error: {event}")
    for label, groups in stat.failures.items():
        for group in groups.values():
            status = group.response.status_code if group.response else None
            body = group.response.content[:300] if group.response else b""
            for failure in group.failures:
                problems.append(f"{label}: {failure.title} ({status} {body!r})")
    return stat, problems


def test_schemathesis_finds_nothing(
    runtime: Runtime, make_key: KeyFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    app = create_app(runtime.settings, runtime)
    lines: list[str] = []
    problems: list[str] = []
    for role in (Role.ADMIN, Role.REQUESTER):
        key = make_key(role, tenant="ops" if role is Role.ADMIN else "acme")
        started = time.monotonic()
        stat, found = _run(app, key, role)
        problems += found
        lines.append(
            f"schemathesis[{role.value}]: {stat.total_cases} cases, "
            f"{len(stat.tested_operations)} operations, {len(found)} failures, "
            f"{time.monotonic() - started:.0f}s"
        )
        assert stat.total_cases > 0 and stat.tested_operations
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    assert not problems, "\n".join(lines + problems)
