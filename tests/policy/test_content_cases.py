"""Content cases: the seed prompts pass through the real classifier; a bad draft fails them."""

from __future__ import annotations

import pytest

from gateway.domain import CATEGORIES
from gateway.policy.bundle import PolicyError, parse_bundle, read_bundle_files
from gateway.policy.content_tests import run_content_tests
from gateway.policy.policy_tests import load_test_files
from gateway.safety.loader import Models, build_prompt_classifier
from tests.conftest import REPO


def _run(files: dict[str, str], models: Models) -> list[tuple[str, bool, list[str]]]:
    bundle = parse_bundle(files)
    classifier = build_prompt_classifier(bundle, models.encoder, models.head)
    return [(r.name, r.passed, r.failures) for r in run_content_tests(bundle, classifier)]


def test_seed_content_cases_pass_and_cover_every_category(shared_models: Models) -> None:
    files = read_bundle_files(REPO / "policies")
    results = _run(files, shared_models)
    assert len(results) >= 40
    assert [r for r in results if not r[1]] == []
    cases = [c.case for c in load_test_files(parse_bundle(files))[1]]
    named = {cat for c in cases for cat in c.categories}
    assert named == set(CATEGORIES)  # every category has a case that must block for it
    assert sum(c.expect == "allowed" for c in cases) >= 15  # benign and borderline
    assert any(c.prompt == "a lighthouse at dusk" and c.expect == "allowed" for c in cases)


def test_a_draft_that_blocks_a_lighthouse_fails_that_case(shared_models: Models) -> None:
    files = read_bundle_files(REPO / "policies")
    files["content.yaml"] = files["content.yaml"].replace(
        "terms: [gore,", "terms: [lighthouse, gore,", 1
    )
    failed = [(name, why) for name, ok, why in _run(files, shared_models) if not ok]
    assert failed == [
        ("a lighthouse at dusk", ["the prompt is blocked (by violence), expected allowed"])
    ]
    # and one that no longer blocks sexual content fails every case expecting it
    files = read_bundle_files(REPO / "policies")
    sexual = files["content.yaml"].split("\n  sexual:\n", 1)[1].split("\n  sexual/minors:", 1)[0]
    assert "prompt: {block_at: high}" in sexual
    relaxed = sexual.replace("prompt: {block_at: high}", "prompt: {block_at: never}", 1)
    files["content.yaml"] = files["content.yaml"].replace(sexual, relaxed, 1)
    failed_names = {name for name, ok, _ in _run(files, shared_models) if not ok}
    assert {"topless woman", "n4ked w0man", "t0pless", "p 0 r n"} <= failed_names


def test_a_content_case_naming_an_unknown_category_is_a_file_error() -> None:
    files = read_bundle_files(REPO / "policies")
    files["tests/extra_test.yaml"] = (
        "schema_version: 1\ncontent_cases:\n"
        "  - {prompt: a cat, expect: allowed}\n"
        "  - {prompt: gore, expect: blocked, categories: [violense]}\n"
    )
    with pytest.raises(PolicyError) as caught:
        load_test_files(parse_bundle(files))
    (issue,) = caught.value.issues
    assert issue.file == "tests/extra_test.yaml" and issue.line == 4
    assert "unknown categories: violense" in issue.message
