"""POST /v1/images/generations: the OpenAI Images API, governed."""

from __future__ import annotations

import asyncio
import base64
import time

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from gateway.api.deps import Requester, RuntimeDep
from gateway.api.responses import AUTHENTICATED, WITH_BODY, errors
from gateway.api.schemas import ImageData, ImageGenerationBody, ImagesResponse
from gateway.domain import Principal
from gateway.pipeline.cancellation import CLIENT_DISCONNECTED, Cancellation
from gateway.pipeline.generate import GenerationPipeline
from gateway.pipeline.request import GenerationRequest
from gateway.runtime import Runtime

router = APIRouter(tags=["images"])

_ERRORS = errors(*AUTHENTICATED, *WITH_BODY, 404, 429, 503)


@router.post("/v1/images/generations", response_model=ImagesResponse, responses=_ERRORS)
async def generate_images(
    body: ImageGenerationBody, principal: Requester, runtime: RuntimeDep, http: Request
) -> ImagesResponse:
    """The pipeline runs on a worker thread while this task watches the connection: a client
    that disconnects while its job waits for the generator cancels the job (recorded as
    ``cancelled``), so it neither runs nor holds a place in the 429 bound."""
    cancellation = Cancellation()
    watcher = asyncio.create_task(_watch_disconnect(http, cancellation))
    try:
        return await run_in_threadpool(_generate, body, principal, runtime, cancellation)
    finally:
        watcher.cancel()


async def _watch_disconnect(http: Request, cancellation: Cancellation) -> None:
    """The body has been read, so the next ASGI message is ``http.disconnect``: it comes when
    the client closes the connection (or once the response is sent, after this is cancelled)."""
    while (await http.receive())["type"] != "http.disconnect":
        pass
    cancellation.cancel(CLIENT_DISCONNECTED)


def _generate(
    body: ImageGenerationBody,
    principal: Principal,
    runtime: Runtime,
    cancellation: Cancellation,
) -> ImagesResponse:
    request = GenerationRequest(
        model=body.model,
        prompt=body.prompt,
        n=body.n,
        size=body.size,
        response_format=body.response_format,
        user=body.user,
        negative_prompt=body.negative_prompt,
        seed=body.seed,
        steps=body.steps,
        intended_use=body.governance.intended_use if body.governance else None,
        output_format=body.output_format,
    )
    result = GenerationPipeline.of(runtime).generate(principal, request, cancellation)
    data: list[ImageData] = []
    for image in result.images:
        if image.png is None:
            data.append(
                ImageData(
                    finish_reason="CONTENT_FILTERED",
                    error={
                        "code": "output_filtered",
                        "action": image.action,
                        "categories": image.categories,
                        "message": "this image was withheld by the image safety policy",
                    },
                )
            )
            continue
        encoded = base64.b64encode(image.png).decode("ascii")
        if body.response_format == "url":
            url = f"data:{image.mime};base64,{encoded}"
            data.append(ImageData(url=url, finish_reason="SUCCESS"))
        else:
            data.append(ImageData(b64_json=encoded, finish_reason="SUCCESS"))
    return ImagesResponse(created=int(time.time()), data=data, governance=result.governance)
