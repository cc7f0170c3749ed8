"""The seed bundle is valid; broken bundles are refused with file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.policy.bundle import PolicyError, bundle_version, parse_bundle, read_bundle_files
from tests.conftest import REPO


@pytest.fixture
def files() -> dict[str, str]:
    return read_bundle_files(REPO / "policies")


def _error(files: dict[str, str]) -> PolicyError:
    with pytest.raises(PolicyError) as exc:
        parse_bundle(files)
    return exc.value


def test_seed_bundle_is_valid(files: dict[str, str]) -> None:
    bundle = parse_bundle(files)
    assert bundle.version == bundle_version(files)
    assert "demo-tiny" in bundle.models.models
    for entry in bundle.models.models.values():
        assert entry.licence in bundle.licences


def test_version_changes_with_any_byte(files: dict[str, str]) -> None:
    changed = {**files, "uses.yaml": files["uses.yaml"] + "\n"}
    assert bundle_version(changed) != bundle_version(files)


def test_unknown_key_names_file_line_and_path(files: dict[str, str]) -> None:
    text = files["models.yaml"].replace('    sizes: ["32x32"', '    sizez: ["32x32"', 1)
    err = _error({**files, "models.yaml": text})
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "sizez" in t)
    issues = {(i.file, i.line, i.path) for i in err.issues}
    assert ("models.yaml", line, "models.demo-tiny.sizez") in issues


def test_model_with_unknown_licence(files: dict[str, str]) -> None:
    text = files["models.yaml"].replace("licence: apache-2.0", "licence: made-up", 1)
    err = _error({**files, "models.yaml": text})
    assert any("made-up" in i.message and i.path == "models.demo-tiny.licence" for i in err.issues)


def test_missing_category_and_bad_yaml(files: dict[str, str]) -> None:
    err = _error(
        {**files, "content.yaml": files["content.yaml"].replace("  shocking:", "  shock:")}
    )
    assert any("shock" in i.message for i in err.issues)
    err = _error({**files, "uses.yaml": "schema_version: 1\ndefault: [unclosed\n"})
    assert err.issues[0].file == "uses.yaml" and err.issues[0].line is not None


def test_missing_file(files: dict[str, str]) -> None:
    del files["uses.yaml"]
    assert _error(files).issues[0].message == "required file is missing"


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="does not exist"):
        read_bundle_files(tmp_path / "nope")
