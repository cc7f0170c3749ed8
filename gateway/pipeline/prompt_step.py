"""Step 3: the prompt classifier on the prompt and the negative prompt, then the content policy.

A classifier stage whose artefacts failed their pins refuses up front (``StageFailure``); a
blocked category in either text ends the request (:class:`Denied`, 400) before any generator
runs. Both texts' assessments go into the record.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from gateway.domain import Assessment, Direction
from gateway.errors import GatewayError
from gateway.pipeline.context import Denied, RequestContext, ms_since
from gateway.pipeline.stages import StageFailure, run_stage
from gateway.policy.active import Enforcement
from gateway.policy.content import judge_text


def require_stages(enf: Enforcement) -> None:
    """Every classifier stage of this policy version has its artefacts, as pinned."""
    for stage, artefacts in enf.stages.items():
        if not artefacts.available:
            raise StageFailure(stage, f"unavailable: {artefacts.reason}")


def screen_prompts(ctx: RequestContext, executor: ThreadPoolExecutor, timeout: float) -> Assessment:
    """The prompt's assessment (the negative prompt's goes into the record too)."""
    req, enf, record = ctx.req, ctx.enf, ctx.record
    require_stages(enf)
    texts = [req.prompt] + ([req.negative_prompt] if req.negative_prompt else [])
    t0 = time.perf_counter()
    scores = run_stage(
        executor, "prompt_classifier", lambda: enf.prompt_classifier.classify(texts), timeout
    )
    ctx.timings["prompt_classifier"] = ms_since(t0)
    ctx.judged_by("prompt_classifier")
    if len(scores) != len(texts):
        raise StageFailure("prompt_classifier", "returned the wrong number of results")
    content = ctx.bundle.content
    prompt_a = judge_text(content, scores[0], Direction.PROMPT)
    record["prompt"] = {
        "text": req.prompt,
        "normalised": scores[0].normalised,
        "assessment": prompt_a.to_json(),
    }
    blocked = list(prompt_a.details.get("blocked_categories", []))
    if req.negative_prompt:
        neg_a = judge_text(content, scores[1], Direction.NEGATIVE_PROMPT)
        record["negative_prompt"] = {
            "text": req.negative_prompt,
            "normalised": scores[1].normalised,
            "assessment": neg_a.to_json(),
        }
        blocked += [c for c in neg_a.details.get("blocked_categories", []) if c not in blocked]
    if blocked:
        raise Denied(
            "prompt_blocked",
            GatewayError(
                400,
                "content_policy_violation",
                "the prompt was refused by the content policy: " + ", ".join(blocked),
                param="prompt",
                extra={"categories": blocked},
            ),
        )
    return prompt_a
