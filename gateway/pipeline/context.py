"""One request as it moves through the governed steps (the order is in :mod:`.generate`).

Each step is a small function over a :class:`RequestContext`: it reads what earlier steps
settled (the policy version, the model entry, the intended use, the shape) and adds its own
part to ``record``, the dict the decision is closed with. A step ends the request by raising
:class:`Denied` (an outcome the policy chose) or ``StageFailure`` (a stage that failed: fail
closed); :class:`gateway.pipeline.generate.GenerationPipeline` records either.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from gateway.audit.decisions import Outcome
from gateway.domain import Principal
from gateway.errors import GatewayError
from gateway.pipeline.cancellation import Cancellation
from gateway.pipeline.request import GenerationRequest
from gateway.policy.active import Enforcement
from gateway.policy.bundle import PolicyBundle
from gateway.policy.schema import ModelEntry


class Denied(Exception):
    """The request ends here with this outcome and error (recorded, then answered)."""

    def __init__(self, outcome: Outcome, error: GatewayError) -> None:
        super().__init__(error.message)
        self.outcome: Outcome = outcome
        self.error = error


@dataclass(frozen=True)
class Shape:
    """What the generator is asked for, with every default resolved."""

    width: int
    height: int
    steps: int
    seed: int


@dataclass(frozen=True)
class RequestContext:
    enf: Enforcement  # one policy version for the whole request
    principal: Principal
    req: GenerationRequest
    entry: ModelEntry  # the model's registry entry in that version
    use: str  # the intended use, resolved
    shape: Shape
    decision_id: str
    cancellation: Cancellation  # set when the client disconnects
    record: dict[str, Any]  # the decision's record: each step adds its part

    @property
    def bundle(self) -> PolicyBundle:
        return self.enf.bundle

    @property
    def timings(self) -> dict[str, float]:
        timings: dict[str, float] = self.record["timings_ms"]
        return timings

    def judged_by(self, stage: str) -> None:
        """``record["classifiers"]``: sha256 of every artefact of the stages that judged it."""
        artefacts = self.enf.stages.get(stage)
        self.record.setdefault("classifiers", {}).update(artefacts.sha256 if artefacts else {})


def ms_since(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 2)
