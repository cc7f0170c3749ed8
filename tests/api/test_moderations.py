"""POST /v1/moderations and `gateway moderate`: one code path with generation."""

from __future__ import annotations

import base64
import csv
import io
import json
from pathlib import Path

from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from gateway.cli import app
from gateway.domain import CATEGORIES, Role
from tests.conftest import REPO, KeyFactory, auth

UNSAFE = "a n4k3d woman, explicit porn"
SAFE = "a bowl of fruit on a wooden table"


def test_text_moderation_matches_the_generation_decision(
    client: TestClient, make_key: KeyFactory
) -> None:
    key = make_key(Role.REQUESTER)
    r = client.post("/v1/moderations", json={"input": [SAFE, UNSAFE]}, headers=auth(key))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"].startswith("modr-") and len(body["results"]) == 2
    safe, unsafe = body["results"]
    assert set(safe["categories"]) == set(CATEGORIES) == set(unsafe["category_scores"])
    assert safe["flagged"] is False and not any(safe["categories"].values())
    assert unsafe["flagged"] is True and unsafe["categories"]["sexual"] is True
    assert unsafe["category_severities"]["sexual"] == "high"
    for prompt, result in ((SAFE, safe), (UNSAFE, unsafe)):
        gen = client.post(
            "/v1/images/generations",
            headers=auth(key),
            json={"model": "demo-tiny", "prompt": prompt, "size": "64x64", "steps": 1},
        )
        assert (gen.status_code == 400) == result["flagged"]
    single = client.post("/v1/moderations", json={"input": UNSAFE}, headers=auth(key)).json()
    assert single["results"][0] == unsafe


def test_image_moderation_with_data_url(client: TestClient, make_key: KeyFactory) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (30, 120, 200)).save(buffer, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    r = client.post(
        "/v1/moderations",
        headers=auth(make_key()),
        json={
            "input": [
                {"type": "image_url", "image_url": {"url": url}},
                {"type": "text", "text": SAFE},
            ]
        },
    )
    assert r.status_code == 200, r.text
    image, text = r.json()["results"]
    assert image["category_applied_input_types"] == {"image": True}
    assert image["flagged"] is False and image["category_scores"]["sexual"] < 0.5
    assert text["category_applied_input_types"] == {"text": True}


def test_bad_moderation_input(client: TestClient, make_key: KeyFactory) -> None:
    key = make_key()
    for body, param in (
        ({"input": []}, "input"),
        (
            {"input": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]},
            "input.0.image_url.url",
        ),
        (
            {"input": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
            "input.0.image_url.url",
        ),
    ):
        r = client.post("/v1/moderations", json=body, headers=auth(key))
        assert r.status_code == 422, r.text
        assert r.json()["error"]["param"] == param
    assert client.post("/v1/moderations", json={"input": 3}, headers=auth(key)).status_code == 422
    assert client.post("/v1/moderations", json={"input": "x"}).status_code == 401


def test_cli_moderate_streams_jsonl_in_order(
    tmp_path: Path, client: TestClient, make_key: KeyFactory
) -> None:
    rows = [SAFE, UNSAFE, "", 'a "quoted", comma, prompt\nover two lines', SAFE] * 60
    source = tmp_path / "in.csv"
    with source.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "prompt"])
        writer.writerows([i, p] for i, p in enumerate(rows))
    out = tmp_path / "out.jsonl"
    env = {"GATEWAY_POLICY_DIR": str(REPO / "policies")}
    result = CliRunner().invoke(
        app, ["moderate", str(source), "--column", "prompt", "--output", str(out)], env=env
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == len(rows)
    assert [x["flagged"] for x in lines] == [p == UNSAFE for p in rows]
    api = client.post("/v1/moderations", json={"input": rows[:5]}, headers=auth(make_key())).json()[
        "results"
    ]
    for mine, theirs in zip(lines[:5], api, strict=True):
        theirs.pop("category_applied_input_types")
        assert mine == theirs
    missing = CliRunner().invoke(app, ["moderate", str(source), "--column", "text"], env=env)
    assert missing.exit_code != 0 and "column 'text' not found" in missing.output
