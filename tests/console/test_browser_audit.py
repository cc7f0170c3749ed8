"""An auditor in a real browser: sign in, search, open a decision, verify, download a CSV."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import httpx
from playwright.sync_api import Browser, expect

from gateway.domain import Role
from tests.conftest import KeyFactory, auth
from tests.console.conftest import BODY
from tests.console.live import sign_in


def test_auditor_searches_opens_verifies_and_downloads(
    browser: Browser, live: str, make_key: KeyFactory, tmp_path: Path
) -> None:
    shots = Path(os.environ.get("CONSOLE_SCREENSHOTS") or tmp_path)
    requester = make_key(Role.REQUESTER)
    with httpx.Client(base_url=live, timeout=60) as api:
        ok = api.post("/v1/images/generations", json=BODY, headers=auth(requester))
        assert ok.status_code == 200, ok.text
        blocked = api.post(
            "/v1/images/generations",
            json={**BODY, "prompt": "a n.a.k.3.d woman, full body"},
            headers=auth(requester),
        )
        assert blocked.status_code == 400
    blocked_id = blocked.json()["error"]["decision_id"]

    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    sign_in(page, live, make_key(Role.AUDITOR))
    cookie = next(c for c in context.cookies() if c["name"] == "gw_console")
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/console"
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link", name="Verify trail")).to_be_visible()

    # search, narrow to the blocked one, open it
    nav.get_by_role("link", name="Decisions").click()
    expect(page.locator("#decisions tbody tr")).to_have_count(2)
    expect(page.locator("#decisions")).to_contain_text("a lighthouse at dusk")  # prompt column
    page.screenshot(path=str(shots / "search.png"), full_page=True)
    page.get_by_label("Outcome").select_option("prompt_blocked")
    page.get_by_role("button", name="Search").click()
    rows = page.locator("#decisions tbody tr")
    expect(rows).to_have_count(1)
    rows.get_by_role("link", name=blocked_id).click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(blocked_id)
    expect(page.locator("#prompt")).to_have_text("a n.a.k.3.d woman, full body")
    expect(page.get_by_text("content.sexual.terms:naked", exact=True)).to_be_visible()
    expect(page.locator("#policy-version")).to_have_text(ok.json()["governance"]["policy_version"])
    # the allowed one: licence and rights as sentences citing their clauses
    page.goto(f"{live}/console/audit/decisions/{ok.json()['governance']['decision_id']}")
    expect(page.locator("#licence")).to_contain_text("Licence apache-2.0 allows commercial use.")
    expect(page.locator("#rights")).to_contain_text("Outputs may be used commercially (apache-2.0")
    expect(page.locator("#tenant")).to_contain_text("acme")
    page.screenshot(path=str(shots / "decision.png"), full_page=True)

    # verify the trail
    nav.get_by_role("link", name="Verify trail").click()
    page.get_by_role("button", name="Verify now").click()
    expect(page.locator("#verdict h2")).to_have_text("Intact")
    expect(page.locator("#verdict")).to_contain_text("audit trail intact")

    # download the CSV of the search
    nav.get_by_role("link", name="Decisions").click()
    with page.expect_download() as info:
        page.get_by_role("link", name="CSV").click()
    download = info.value
    assert download.suggested_filename.endswith(".csv")
    with open(download.path(), encoding="utf-8") as fh:
        rows_csv = list(csv.DictReader(io.StringIO(fh.read())))
    assert blocked_id in {r["decision_id"] for r in rows_csv} and len(rows_csv) == 2

    # sign out: back at the sign-in page, and the console is closed again
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(f"{live}/console/login")
    page.goto(f"{live}/console/audit/decisions")
    expect(page.get_by_label("API key")).to_be_visible()
    context.close()
