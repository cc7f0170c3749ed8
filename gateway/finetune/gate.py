"""Before any training: may this base be fine-tuned, for this intended use of the result?

The adapter's registry entry is planned first (its licence and use restrictions follow the
declared rights of the training images), then judged exactly as serving will judge it: the
policy bundle *with that entry added* is evaluated for the intended use through the whole
chain (adapter → base → ...). A non-commercial base therefore refuses a commercial adapter,
and ``unknown`` image rights give the adapter a research-only licence.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from gateway.domain import LicenceDecision, LicenceReason
from gateway.generation.onboard import OnboardError, with_model
from gateway.policy.bundle import PolicyBundle, PolicyError, parse_bundle
from gateway.policy.evaluate import evaluate_model

Rights = Literal["owned", "licensed", "public_domain", "unknown"]
RIGHTS: tuple[str, ...] = get_args(Rights)
UNKNOWN_RIGHTS_LICENCE = "training-images-rights-unknown"
# pins are unknown before training; the sha256 of no bytes stands in while the gate judges
_PLACEHOLDER_PIN = {
    "pytorch_lora_weights.safetensors": (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
}

_RIGHTS_TEXT = {
    "owned": "the training images are declared owned by the operator",
    "licensed": "the training images are used under a licence; outputs only as it allows",
    "public_domain": "the training images are declared public domain",
    "unknown": "the rights in the training images are unknown: research only until cleared",
}


class FinetuneRefused(Exception):
    """The licence gate said no; ``reasons`` name the licence clauses."""

    def __init__(self, message: str, reasons: list[LicenceReason]) -> None:
        super().__init__(message)
        self.reasons = reasons

    @property
    def clause(self) -> str | None:
        return self.reasons[0].clause if self.reasons else None


class FinetuneInvalid(ValueError):
    """Not a licence matter: the request itself cannot be planned (``param`` names why)."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class Plan:
    """The adapter's planned entry and the draft files it needs besides models.yaml."""

    entry: dict[str, Any]
    extra_files: dict[str, str]
    verdict: LicenceDecision


def adapter_licence(bundle: PolicyBundle, base: str, rights: str) -> str:
    """The adapter's own licence: research-only for unknown rights, else the base's (a
    fine-tune is a derivative: OpenRAIL §4(a), Stability §V, FLUX §2(a) carry the licence)."""
    if rights == "unknown":
        return UNKNOWN_RIGHTS_LICENCE
    return bundle.models.models[base].licence


def rights_restriction(name: str, rights: str, note: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ref": f"{name}-training-set",
        "clause": f"training-set manifest (rights: {rights})",
        "items": [_RIGHTS_TEXT[rights]],
        "applies_to": ["model", "outputs"],
    }
    if note:
        out["note"] = note
    return out


def plan_entry(
    bundle: PolicyBundle,
    policy_dir: Path,
    *,
    name: str,
    base: str,
    rights: str,
    rights_note: str | None,
    source_path: str,
) -> tuple[dict[str, Any], dict[str, str]]:
    """The models.yaml entry (pins still to fill) and any licence file the draft must add."""
    if rights not in RIGHTS:
        raise FinetuneInvalid(f"rights must be one of {', '.join(RIGHTS)}", "rights")
    base_entry = bundle.models.models[base]
    licence = adapter_licence(bundle, base, rights)
    extra: dict[str, str] = {}
    if licence not in bundle.licences:
        path = policy_dir / "licences" / f"{licence}.yaml"
        if not path.is_file():
            raise FinetuneInvalid(
                f"licence file {path} is missing ({rights} rights need it)", "rights"
            )
        extra[f"licences/{licence}.yaml"] = path.read_text(encoding="utf-8")
    entry: dict[str, Any] = {
        "licence": licence,
        "base": base,
        "use_restrictions": [rights_restriction(name, rights, rights_note)],
        "description": f"LoRA adapter fine-tuned on {base} (training images: {rights}).",
        "source": {"kind": "lora", "path": source_path},
        "pins": dict(_PLACEHOLDER_PIN),
        "sizes": list(base_entry.sizes),
        "steps": base_entry.steps.model_dump(),
    }
    options = base_entry.options.model_dump(exclude_defaults=True)
    if options:
        entry["options"] = options
    return entry, extra


def files_with(
    files: Mapping[str, str], name: str, entry: dict[str, Any], extra: Mapping[str, str]
) -> dict[str, str]:
    """The policy files with the adapter's entry (and any licence file it needs) added."""
    return {
        **files,
        **extra,
        "models.yaml": with_model(files["models.yaml"], name, entry),
    }


def check_finetune(
    bundle: PolicyBundle,
    policy_dir: Path,
    *,
    name: str,
    base: str,
    rights: str,
    rights_note: str | None,
    intended_use: str,
    facts: Mapping[str, Any],
    source_path: str,
) -> Plan:
    """Raise :class:`FinetuneRefused` unless the chain permits the adapter and its use."""
    if base not in bundle.models.models:
        raise FinetuneInvalid(f"base model {base!r} is not registered", "base")
    if name in bundle.models.models:
        raise FinetuneInvalid(f"model id {name!r} is already registered; choose another", "name")
    if bundle.models.models[base].source.kind == "lora":
        raise FinetuneInvalid(f"{base} is itself a LoRA adapter; fine-tune its base", "base")
    for mid in bundle.models.chain(base):
        licence = bundle.licences[bundle.models.models[mid].licence]
        if licence.derivatives is None:
            reason = LicenceReason(
                "derivatives_not_covered",
                f"licence {licence.name} of {mid} does not say whether derivatives (fine-tunes) "
                "may be made; unknown counts as denied",
                licence.id,
                None,
            )
            raise FinetuneRefused(reason.message, [reason])
    entry, extra = plan_entry(
        bundle,
        policy_dir,
        name=name,
        base=base,
        rights=rights,
        rights_note=rights_note,
        source_path=source_path,
    )
    try:
        planned = parse_bundle(files_with(bundle.files, name, entry, extra))
    except (PolicyError, OnboardError) as exc:
        raise FinetuneInvalid(f"the adapter's entry would not validate: {exc}", "name") from None
    verdict = evaluate_model(planned, name, intended_use, facts)
    if not verdict.allowed:
        first = verdict.reasons[0]
        where = f" ({first.licence} {first.clause})" if first.clause else f" ({first.licence})"
        raise FinetuneRefused(
            f"fine-tuning {base} for intended use {intended_use!r} is refused: "
            f"{first.message}{where}",
            list(verdict.reasons),
        )
    return Plan(entry, extra, verdict)
