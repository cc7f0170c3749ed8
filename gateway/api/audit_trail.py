"""GET /v1/audit/verify and POST /v1/audit/checkpoints: the trail's integrity, for auditors."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from gateway.api.deps import Admin, Auditor, RuntimeDep
from gateway.api.responses import AUTHENTICATED, errors
from gateway.audit.events import SigningKeyRetired, checkpoint_json
from gateway.audit.verify import verify_trail
from gateway.db.engine import unit_of_work
from gateway.errors import GatewayError

router = APIRouter(tags=["audit"], responses=errors(*AUTHENTICATED))


@router.get("/v1/audit/verify", responses=errors(422))
def verify(
    _: Auditor, runtime: RuntimeDep, from_last_checkpoint: bool = False, rows: bool = True
) -> dict[str, Any]:
    """The chain, the signed checkpoints and (``rows``) every decision row against its events.

    ``row_errors`` lists the first 1,000 mismatches (``row_error_count`` counts them all), each
    naming the decision, the table and the field; ``ok`` is false when there is any.
    Checkpoints are accepted when signed by any key registered in ``audit_keys``;
    ``signing_keys`` names the keys that signed them, ``public_key`` this replica's.
    """
    with unit_of_work(runtime.sessions) as session:
        report = verify_trail(  # every registered key (docs/audit.md)
            session, None, from_last_checkpoint=from_last_checkpoint, rows=rows
        )
    return {**report.to_json(), "public_key": runtime.audit.signer.public_key_b64}


@router.post("/v1/audit/checkpoints", responses=errors(409))
def checkpoint(_: Admin, runtime: RuntimeDep) -> dict[str, Any]:
    with unit_of_work(runtime.sessions) as session:
        try:
            made = runtime.audit.checkpoint(session)
        except SigningKeyRetired as exc:
            raise GatewayError(409, "signing_key_retired", str(exc)) from None
        return {"created": made is not None, **(checkpoint_json(made) if made else {})}
