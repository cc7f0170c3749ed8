"""The official `openai` package, unmodified, against a real uvicorn-served gateway."""

from __future__ import annotations

import base64
import io
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
import uvicorn
from PIL import Image

from gateway.app import create_app
from gateway.domain import Role
from gateway.runtime import Runtime
from tests.conftest import KeyFactory


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server_url(runtime: Runtime) -> Iterator[str]:
    port = _free_port()
    config = uvicorn.Config(
        create_app(runtime.settings, runtime), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def test_openai_client_generates_a_png(server_url: str, make_key: KeyFactory) -> None:
    client = openai.OpenAI(api_key=make_key(Role.REQUESTER), base_url=f"{server_url}/v1")
    raw = client.images.with_raw_response.generate(
        model="demo-tiny",
        prompt="a lighthouse at dusk",
        size="64x64",
        response_format="b64_json",
    )
    result = raw.parse()
    assert result.data is not None
    png = base64.b64decode(result.data[0].b64_json or "")
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.size == (64, 64)
    governance = raw.http_response.json()["governance"]
    assert governance["decision"] == "allowed"
    assert governance["model"]["licence"] == "apache-2.0"
    assert {"decision_id", "policy_version", "prompt_assessment", "images", "rights"} <= set(
        governance
    )


def test_openai_client_sees_refusals_as_errors(server_url: str, make_key: KeyFactory) -> None:
    client = openai.OpenAI(
        api_key=make_key(Role.REQUESTER), base_url=f"{server_url}/v1", max_retries=0
    )
    with pytest.raises(openai.BadRequestError) as refused:
        client.images.generate(model="demo-tiny", prompt="explicit porn scene", size="64x64")
    assert refused.value.code == "content_policy_violation"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(
            api_key="gk_wrong_key", base_url=f"{server_url}/v1", max_retries=0
        ).images.generate(model="demo-tiny", prompt="a cat")
    assert httpx.get(f"{server_url}/healthz").status_code == 200
