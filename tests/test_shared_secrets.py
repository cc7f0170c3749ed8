"""Pinned shared secrets on one node: listing them, and rotating one on purpose."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable

import pytest
from typer.testing import CliRunner

from gateway.cli import app
from gateway.runtime import Runtime
from gateway.settings import Settings
from gateway.shared_secrets import SecretMismatch
from tests.conftest import REPO


def _env(runtime: Runtime) -> dict[str, str]:
    return {
        "GATEWAY_DATA_DIR": str(runtime.settings.data_dir),
        "GATEWAY_DATABASE_URL": runtime.settings.resolved_database_url,
        "GATEWAY_POLICY_DIR": str(REPO / "policies"),
    }


def test_rotate_the_watermark_key(
    runtime: Runtime,
    runtime_factory: Callable[..., Runtime],
    settings_factory: Callable[..., Settings],
) -> None:
    env = _env(runtime)
    listed = CliRunner().invoke(app, ["replicas", "secrets"], env=env)
    assert listed.exit_code == 0, listed.output
    names = [line.split()[0] for line in listed.stdout.splitlines()]
    assert names == ["c2pa_certificate", "console_secret", "watermark_key"]

    new_key = base64.b64encode(os.urandom(32)).decode()
    with pytest.raises(SecretMismatch, match="GATEWAY_WATERMARK_KEY"):
        runtime_factory(settings_factory(watermark_key=new_key))
    bad = CliRunner().invoke(app, ["replicas", "reset-secret", "pepper"], env=env)
    assert bad.exit_code == 2 and "watermark_key" in bad.output
    reset = CliRunner().invoke(app, ["replicas", "reset-secret", "watermark_key"], env=env)
    assert reset.exit_code == 0 and "forgot the pinned watermark_key" in reset.stdout
    runtime_factory(settings_factory(watermark_key=new_key))  # starts, and pins the new one
    after = CliRunner().invoke(app, ["replicas", "secrets"], env=env).stdout.splitlines()
    before = listed.stdout.splitlines()
    assert after[:2] == before[:2] and after[2].split()[1] != before[2].split()[1]
    with pytest.raises(SecretMismatch, match="GATEWAY_WATERMARK_KEY"):  # the old one now
        runtime_factory(settings_factory())
