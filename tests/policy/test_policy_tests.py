"""`gateway policy test` runs legal's cases; a bundle whose tests fail cannot be activated."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.cli import app
from gateway.policy.active import PolicyTestsFailed
from gateway.policy.bundle import load_bundle
from gateway.policy.evaluate import evaluate_model
from gateway.policy.policy_tests import run_policy_tests
from gateway.runtime import Runtime
from gateway.settings import Settings
from tests.conftest import REPO


def _broken_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "policies"
    shutil.copytree(REPO / "policies", folder)
    case = folder / "tests" / "permissive_test.yaml"
    text = case.read_text()
    assert "decision: allow" in text
    case.write_text(text.replace("decision: allow", "decision: deny", 1))
    return folder


def test_seed_cases_all_pass_and_cover_the_required_ground() -> None:
    bundle = load_bundle(REPO / "policies")
    results = run_policy_tests(bundle)
    assert len(results) >= 30 and all(r.passed for r in results), [
        (r.name, r.failures) for r in results if not r.passed
    ]
    models = {bundle.files[f] for f in bundle.files if f.startswith("tests/")}
    text = "\n".join(models)
    for needle in (
        "annual_revenue_usd: 1000000",
        "stability_enterprise_agreement",
        "train_other_model",
        "example/unverified-model",
        "base",
        "hosted_service",
    ):
        assert needle in text or needle == "base"


def test_cli_reports_pass_and_fail(tmp_path: Path) -> None:
    ok = CliRunner().invoke(app, ["policy", "test", str(REPO / "policies")])
    assert ok.exit_code == 0 and " 0 failed" in ok.stdout and "PASS" in ok.stdout
    assert "content cases not run: pass --content" in ok.stdout
    bad = CliRunner().invoke(app, ["policy", "test", str(_broken_copy(tmp_path))])
    assert bad.exit_code == 1 and "FAIL" in bad.stdout and "1 failed" in bad.stdout
    assert "decision is allow, expected deny" in bad.stdout


def test_bundle_with_failing_tests_is_not_activated(
    tmp_path: Path,
    runtime_factory: Callable[..., Runtime],
    settings_factory: Callable[..., Settings],
) -> None:
    with pytest.raises(PolicyTestsFailed, match="expected deny"):
        runtime_factory(settings_factory(policy_dir=_broken_copy(tmp_path)))


def test_derivative_of_a_non_commercial_base_is_never_commercial() -> None:
    bundle = load_bundle(REPO / "policies")
    rich_facts = {
        "annual_revenue_usd": 1,
        "stability_registered": True,
        "bfl_commercial_licence": "x",
        "brand_owner": "acme",
    }
    for model_id, entry in bundle.models.models.items():
        chain = bundle.models.chain(model_id)
        if entry.base is None:
            continue
        base_verdict = evaluate_model(bundle, chain[-1], "commercial", rich_facts)
        if base_verdict.decision == "deny":
            verdict = evaluate_model(bundle, model_id, "commercial", rich_facts)
            assert verdict.decision == "deny", model_id
            assert verdict.rights["licence"]["chain"][-1] == bundle.models.models[chain[-1]].licence
