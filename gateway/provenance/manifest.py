"""The C2PA manifest of one delivered image (a plain dict for ``c2pa.Builder``).

Assertions, all *created* by this claim generator:

* ``c2pa.actions`` (written by the SDK as ``c2pa.actions.v2``): ``c2pa.created`` with
  digitalSourceType ``trainedAlgorithmicMedia`` and the model as ``softwareAgent``;
* ``cawg.training-mining`` (CAWG training-and-data-mining 1.1), from the licence's rights:
  ``may_train_other_models`` true gives ``allowed`` for AI training, generative training and
  data mining (``constrained``, naming the licence, when derivatives inherit the licence's use
  restrictions); false gives ``notAllowed``. Inference on the image is ``allowed``;
* :data:`GATEWAY_ASSERTION`: decision id, image index, policy version, model id, weights
  sha256 and lineage, licence, intended use and the rights object;
* ``c2pa.soft-binding`` (when the image carries the watermark): algorithm
  :data:`SOFT_BINDING_ALG`, value the base64 of the 8 payload bytes.
"""

from __future__ import annotations

import base64
from typing import Any

from gateway.provenance import DIGITAL_SOURCE_TYPE, Provenance

GATEWAY_ASSERTION = "org.governed-image-gateway.decision"
SOFT_BINDING_ALG = "org.governed-image-gateway.watermark.stdm.v1"
TRAINING_MINING = "cawg.training-mining"
CLAIM_GENERATOR = {"name": "governed-image-gateway", "version": "0.1.0"}
CREATED_LABELS = ["c2pa.actions", TRAINING_MINING, GATEWAY_ASSERTION, "c2pa.soft-binding"]


def training_mining(rights: dict[str, Any]) -> dict[str, Any]:
    """The CAWG entries for these output rights (``constraint_info`` spelling, as the SDK)."""
    licence = rights.get("licence") or {}
    if not rights.get("may_train_other_models", False):
        use: dict[str, Any] = {"use": "notAllowed"}
    elif rights.get("derivatives_inherit_restrictions") or rights.get("use_restrictions"):
        use = {
            "use": "constrained",
            "constraint_info": "models trained on this image inherit the use restrictions of "
            f"licence {licence.get('id', 'unknown')}",
        }
    else:
        use = {"use": "allowed"}
    return {
        "entries": {
            "cawg.ai_generative_training": use,
            "cawg.ai_training": use,
            "cawg.data_mining": use,
            "cawg.ai_inference": {"use": "allowed"},
        }
    }


def gateway_assertion(provenance: Provenance, index: int) -> dict[str, Any]:
    return {
        "decision_id": provenance.decision_id,
        "image_index": index,
        "policy_version": provenance.policy_version,
        "model": {
            "id": provenance.model_id,
            "weights_sha256": provenance.weights_sha256,
            "lineage": provenance.lineage or [provenance.model_id],
        },
        "licence": provenance.licence_id,
        "intended_use": provenance.intended_use,
        "rights": provenance.rights,
    }


def build_manifest(
    provenance: Provenance, index: int, watermark_payload: str | None
) -> dict[str, Any]:
    assertions: list[dict[str, Any]] = [
        {
            "label": "c2pa.actions",
            "data": {
                "actions": [
                    {
                        "action": "c2pa.created",
                        "digitalSourceType": DIGITAL_SOURCE_TYPE,
                        "softwareAgent": {"name": provenance.model_id},
                    }
                ]
            },
        },
        {"label": TRAINING_MINING, "data": training_mining(provenance.rights)},
        {"label": GATEWAY_ASSERTION, "data": gateway_assertion(provenance, index)},
    ]
    if watermark_payload is not None:
        value = base64.b64encode(bytes.fromhex(watermark_payload)).decode("ascii")
        assertions.append(
            {
                "label": "c2pa.soft-binding",
                "data": {
                    "alg": SOFT_BINDING_ALG,
                    "blocks": [{"scope": {}, "value": value}],
                    "pad": [],
                },
            }
        )
    return {
        "claim_generator_info": [CLAIM_GENERATOR],
        "title": f"{provenance.decision_id}-{index}",
        "assertions": assertions,
    }
