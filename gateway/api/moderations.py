"""POST /v1/moderations: OpenAI-compatible moderation of text and images."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from gateway.api.deps import Requester, RuntimeDep
from gateway.api.responses import AUTHENTICATED, WITH_BODY, errors
from gateway.errors import GatewayError
from gateway.pipeline.image_input import ImageLimits, decode_data_urls
from gateway.pipeline.moderation import moderate_images, moderate_texts
from gateway.pipeline.stages import StageFailure, run_stage

router = APIRouter(tags=["moderations"])

MAX_ITEMS = 256
Text = Annotated[str, Field(max_length=32_000)]
_ITEMS: dict[str, Any] = {"minItems": 1, "maxItems": MAX_ITEMS}  # checked below, naming `input`


class ImageURL(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    url: str = Field(
        max_length=30_000_000,
        json_schema_extra={"pattern": "^data:image/[^,]*;base64,"},  # checked when decoded
        description="a data:image/...;base64 URL (the gateway fetches nothing); PNG, JPEG, "
        "WebP or GIF",
    )


class ImagePart(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["image_url"]
    image_url: ImageURL


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["text"]
    text: Text


class ModerationBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    input: (
        Text
        | Annotated[list[Text], Field(json_schema_extra=_ITEMS)]
        | Annotated[list[TextPart | ImagePart], Field(json_schema_extra=_ITEMS)]
    ) = Field(description="a string, a list of strings, or OpenAI's list of text / image_url parts")
    model: str | None = Field(default=None, max_length=200, description="accepted, ignored")


@router.post("/v1/moderations", responses=errors(*AUTHENTICATED, *WITH_BODY, 503))
def moderations(body: ModerationBody, principal: Requester, runtime: RuntimeDep) -> dict[str, Any]:
    items = body.input if isinstance(body.input, list) else [body.input]
    if not items or len(items) > MAX_ITEMS:
        raise GatewayError(
            422, "invalid_request", f"input must hold 1 to {MAX_ITEMS} items", param="input"
        )
    texts: list[tuple[int, str]] = []
    urls: list[tuple[int, str]] = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            texts.append((i, item))
        elif isinstance(item, TextPart):
            texts.append((i, item.text))
        else:
            urls.append((i, item.image_url.url))
    decoded = decode_data_urls(
        [(f"input.{i}.image_url.url", url) for i, url in urls],
        ImageLimits.from_settings(runtime.settings),
    )
    images: list[tuple[int, Image.Image]] = [
        (i, image) for (i, _), image in zip(urls, decoded, strict=True)
    ]
    enf = runtime.policy.current()  # one policy version for the whole request
    policy = enf.bundle.content
    timeout = runtime.settings.stage_timeout_s
    results: list[dict[str, Any]] = [{} for _ in items]
    try:
        if texts:
            out = run_stage(
                runtime.executor,
                "prompt_classifier",
                lambda: moderate_texts(enf.prompt_classifier, policy, [t for _, t in texts]),
                timeout,
            )
            for (i, _), result in zip(texts, out, strict=True):
                results[i] = {**result, "category_applied_input_types": {"text": True}}
        if images:
            out = run_stage(
                runtime.executor,
                "image_classifier",
                lambda: moderate_images(enf.image_classifier, policy, [im for _, im in images]),
                timeout,
            )
            for (i, _), result in zip(images, out, strict=True):
                results[i] = {**result, "category_applied_input_types": {"image": True}}
    except StageFailure as failure:
        raise GatewayError(
            503, "safety_system_unavailable", f"the {failure.stage} stage failed: {failure.message}"
        ) from failure
    return {
        "id": "modr-" + uuid.uuid4().hex,
        "model": "gateway-moderation",
        "policy_version": enf.bundle.version,
        # sha256 of every classifier artefact that judged this input
        "classifiers": {
            name: sha
            for stage, used in (("prompt_classifier", texts), ("image_classifier", images))
            if used and stage in enf.stages
            for name, sha in enf.stages[stage].sha256.items()
        },
        "results": results,
    }
