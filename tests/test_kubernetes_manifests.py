"""docker/kubernetes/: every manifest passes `kubernetes-validate --strict` (offline schemas),
and the checks themselves reject a broken manifest."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from typer.testing import CliRunner

from gateway.cli import app

REPO = Path(__file__).resolve().parent.parent
K8S = REPO / "docker" / "kubernetes"
VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]


def _manifests() -> list[Path]:
    return sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")


def _load(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def _validate(doc: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(doc, version, strict=True)


def _by_kind(kind: str, variant: str = "cpu") -> dict[str, Any]:
    folders = [K8S / "common", K8S / variant]
    docs = [d for folder in folders for p in folder.glob("*.yaml") for d in _load(p)]
    found = [d for d in docs if d.get("kind") == kind]
    assert len(found) == 1, kind
    return found[0]


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_validates_strictly(version: str) -> None:
    paths = _manifests()
    assert len(paths) >= 9
    for path in paths:
        for doc in _load(path):
            _validate(doc, version)


def test_the_cli_validator_passes_them_and_fails_a_broken_copy(tmp_path: Path) -> None:
    cli = [sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet"]
    ok = subprocess.run([*cli, *map(str, _manifests())], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    broken = _by_kind("Deployment")
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}  # a typo
    bad = tmp_path / "deployment.yaml"
    bad.write_text(yaml.safe_dump(broken), encoding="utf-8")
    failed = subprocess.run([*cli, str(bad)], capture_output=True, text=True)
    assert failed.returncode != 0 and "readinessProbes" in failed.stdout + failed.stderr


@pytest.mark.parametrize(
    "path, value",
    [
        (("spec", "replicas"), "two"),  # wrong type
        (("spec", "template", "spec", "securityContext", "runAsNonRot"), True),  # unknown field
        (("spec", "template", "spec", "containers"), [{"image": "x"}]),  # container needs a name
    ],
)
def test_a_broken_deployment_is_rejected(path: tuple[str, ...], value: object) -> None:
    doc = copy.deepcopy(_by_kind("Deployment"))
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(doc, VERSIONS[-1])


def test_kustomizations_list_every_manifest_once() -> None:
    listed: set[Path] = set()
    for variant in ("cpu", "gpu"):
        for folder in (K8S / variant, K8S / "common"):
            spec = yaml.safe_load((folder / "kustomization.yaml").read_text(encoding="utf-8"))
            for entry in spec["resources"]:
                target = (folder / entry).resolve()
                assert target.exists(), target
                if target.is_file():
                    listed.add(target)
    assert listed == {p.resolve() for p in _manifests()}


@pytest.mark.parametrize("variant", ["cpu", "gpu"])
def test_deployment_probes_security_and_resources(variant: str) -> None:
    pod = _by_kind("Deployment", variant)["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300  # model load
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/var/lib/gateway", "/tmp"} <= mounts  # where the app writes
    gpus = container["resources"]["limits"].get("nvidia.com/gpu")
    assert (gpus == "1") == (variant == "gpu")


def test_hpa_pdb_and_migration_job() -> None:
    hpa = _by_kind("HorizontalPodAutoscaler")
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == "gateway_generation_queue_depth"
    assert _by_kind("PodDisruptionBudget")["spec"]["minAvailable"] == 1
    job = _by_kind("Job")
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command == ["gateway", "db", "upgrade"]
    assert CliRunner().invoke(app, ["db", "upgrade", "--help"]).exit_code == 0
    names = {
        e
        for kind in ("ConfigMap", "Secret")
        for e in (_by_kind(kind).get("data") or _by_kind(kind).get("stringData") or {})
    }
    assert {"GATEWAY_DATABASE_URL", "GATEWAY_AUDIT_SIGNING_KEY", "GATEWAY_LOG_FORMAT"} <= names
    # every secret replicas must share (gateway/shared_secrets.py), or the second one refuses
    assert {"GATEWAY_CONSOLE_SECRET", "GATEWAY_WATERMARK_KEY", "GATEWAY_C2PA_CERT_CHAIN"} <= names
