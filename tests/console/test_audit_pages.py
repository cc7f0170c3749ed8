"""Auditor pages over real decisions: search, filters, pages, one decision, verify, exports."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest
from fastapi.testclient import TestClient

from gateway.domain import Role
from tests.conftest import KeyFactory, auth
from tests.console.conftest import BODY, signed_in

ROW_ID = re.compile(r'href="/console/audit/decisions/(dec_[0-9a-f]+)"')


@pytest.fixture
def decisions(console: TestClient, make_key: KeyFactory) -> dict[str, str]:
    """One allowed and one prompt-blocked decision of tenant acme; one of tenant other."""
    key = make_key(Role.REQUESTER)
    ok = console.post("/v1/images/generations", json={**BODY, "seed": 1}, headers=auth(key))
    assert ok.status_code == 200, ok.text
    blocked = console.post(
        "/v1/images/generations",
        json={**BODY, "prompt": "a n.a.k.3.d woman, full body"},
        headers=auth(key),
    )
    assert blocked.status_code == 400
    other_key = make_key(Role.REQUESTER, tenant="other")
    other = console.post("/v1/images/generations", json=BODY, headers=auth(other_key))
    assert other.status_code == 200
    return {
        "allowed": ok.json()["governance"]["decision_id"],
        "blocked": blocked.json()["error"]["decision_id"],
        "other": other.json()["governance"]["decision_id"],
        "policy": ok.json()["governance"]["policy_version"],
    }


def _ids(html: str) -> list[str]:
    return ROW_ID.findall(html)


def test_search_filters_and_pages(
    console: TestClient, make_key: KeyFactory, decisions: dict[str, str]
) -> None:
    signed_in(console, make_key(Role.AUDITOR))
    page = console.get("/console/audit/decisions")
    assert page.status_code == 200
    assert _ids(page.text) == [decisions["blocked"], decisions["allowed"]]  # newest first
    assert decisions["other"] not in page.text  # another tenant's

    only = console.get("/console/audit/decisions", params={"outcome": "prompt_blocked"})
    assert _ids(only.text) == [decisions["blocked"]]
    flagged = console.get("/console/audit/decisions", params={"category": "sexual"})
    assert _ids(flagged.text) == [decisions["blocked"]]

    first = console.get("/console/audit/decisions", params={"limit": 1})
    assert _ids(first.text) == [decisions["blocked"]]
    next_href = re.search(r'href="([^"]+)" rel="next"', first.text)
    assert next_href
    second = console.get(next_href.group(1).replace("&amp;", "&"))
    assert _ids(second.text) == [decisions["allowed"]]
    assert 'rel="next"' not in second.text

    bad = console.get("/console/audit/decisions", params={"since": "yesterday"})
    assert bad.status_code == 422 and "since must be an ISO 8601" in bad.text
    nul = console.get("/console/audit/decisions", params={"model": "demo\x00tiny"})
    assert nul.status_code == 422 and "must not contain NUL" in nul.text
    assert "since: since" not in bad.text

    # a prompt column, compact times, model and licence filters as choices
    assert '<td class="prompt-cell" title="a lighthouse at dusk">a lighthouse at dusk</td>' in (
        page.text
    )
    assert re.search(
        r'<time datetime="[^"]+" title="[^"]+">\d{4}-\d\d-\d\d \d\d:\d\d:\d\d</time>', page.text
    )
    for name, option in (("model", "demo-tiny"), ("licence", "apache-2.0")):
        select = re.search(rf'<select name="{name}">(.*?)</select>', page.text, re.S)
        assert select and f"<option>{option}</option>" in select.group(1), name
    by_model = console.get("/console/audit/decisions", params={"model": "demo-tiny"})
    assert set(_ids(by_model.text)) == {decisions["blocked"], decisions["allowed"]}
    bad_cursor = console.get("/console/audit/decisions", params={"cursor": "nope"})
    assert bad_cursor.status_code == 422 and "cursor is not valid" in bad_cursor.text


def test_admin_sees_every_tenant_and_filters_by_one(
    console: TestClient, make_key: KeyFactory, decisions: dict[str, str]
) -> None:
    signed_in(console, make_key(Role.ADMIN, tenant="ops"))
    every = console.get("/console/audit/decisions")
    assert set(_ids(every.text)) == {decisions["allowed"], decisions["blocked"], decisions["other"]}
    one = console.get("/console/audit/decisions", params={"tenant": "other"})
    assert _ids(one.text) == [decisions["other"]]
    assert "<td>other</td>" in one.text and "ten_" not in one.text.split('id="decisions"')[1]


def test_auditor_cannot_read_another_tenant(
    console: TestClient, make_key: KeyFactory, decisions: dict[str, str]
) -> None:
    signed_in(console, make_key(Role.AUDITOR))
    r = console.get(f"/console/audit/decisions/{decisions['other']}")
    assert r.status_code == 404
    r = console.get("/console/audit/decisions", params={"tenant": "other"})
    assert r.status_code == 422 and "only admins" in r.text
    r = console.get("/console/audit/export", params={"format": "csv", "tenant": "other"})
    assert r.status_code == 403


def test_one_decision_shows_prompt_scores_licence_rights_and_policy(
    console: TestClient, make_key: KeyFactory, decisions: dict[str, str]
) -> None:
    signed_in(console, make_key(Role.AUDITOR))
    r = console.get(f"/console/audit/decisions/{decisions['blocked']}")
    assert r.status_code == 200
    assert "a n.a.k.3.d woman, full body" in r.text
    assert "content.sexual.terms:naked" in r.text
    assert 'class="flagged"><td>sexual</td>' in r.text
    assert decisions["policy"] in r.text
    assert '<a href="/console/policies/versions/1">version 1</a>' in r.text
    r = console.get(f"/console/audit/decisions/{decisions['allowed']}")
    assert "a lighthouse at dusk" in r.text and "apache-2.0" in r.text
    # licence and rights as sentences with their clauses: no field names, no Python values
    licence = re.search(r'<ul class="sentences" id="licence">(.*?)</ul>', r.text, re.S)
    rights = re.search(r'<ul class="sentences" id="rights">(.*?)</ul>', r.text, re.S)
    assert licence and rights
    assert "Licence apache-2.0 allows commercial use." in licence.group(1)
    assert "Outputs may be used commercially (apache-2.0 §4" in rights.group(1)
    assert "Outputs may be used to train other models (apache-2.0 §" in rights.group(1)
    for text in (licence.group(1), rights.group(1)):
        assert not re.search(r"\b[a-z]+_[a-z_]+\b|\bTrue\b|\bFalse\b", text), text
    assert "<script" not in r.text


def test_prompts_are_escaped(console: TestClient, make_key: KeyFactory) -> None:
    key = make_key(Role.REQUESTER, Role.AUDITOR)
    body = {**BODY, "prompt": "<script>alert(1)</script> a red barn"}
    r = console.post("/v1/images/generations", json=body, headers=auth(key))
    decision_id = (
        r.json().get("governance", {}).get("decision_id") or r.json()["error"]["decision_id"]
    )
    signed_in(console, key)
    page = console.get(f"/console/audit/decisions/{decision_id}")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "<script>alert" not in page.text


def test_verify_the_trail(
    console: TestClient, make_key: KeyFactory, decisions: dict[str, str]
) -> None:
    signed_in(console, make_key(Role.AUDITOR))
    assert "Verify now" in console.get("/console/audit/verify").text
    r = console.get("/console/audit/verify", params={"run": "true"})
    assert r.status_code == 200
    assert "Intact" in r.text and "audit trail intact: " in r.text


def test_downloads_csv_jsonl_and_pdf(
    console: TestClient, make_key: KeyFactory, decisions: dict[str, str]
) -> None:
    signed_in(console, make_key(Role.AUDITOR))
    r = console.get("/console/audit/export", params={"format": "csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert {row["decision_id"] for row in rows} == {decisions["allowed"], decisions["blocked"]}
    r = console.get("/console/audit/export", params={"format": "jsonl", "outcome": "allowed"})
    lines = [json.loads(line) for line in r.text.splitlines()]
    assert [line["decision_id"] for line in lines] == [decisions["allowed"]]
    r = console.get("/console/audit/export", params={"format": "pdf"})
    assert r.status_code == 200 and r.content.startswith(b"%PDF")
    r = console.get("/console/audit/export", params={"format": "xml"})
    assert r.status_code == 422
