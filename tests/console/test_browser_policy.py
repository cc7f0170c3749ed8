"""A policy change in a real browser, from draft to enforcement, with four eyes.

An editor drafts from the active version, breaks a threshold and sees the error under its
line, fixes it, runs the tests, replays past traffic and reads what would change, submits,
is refused when approving their own draft; another person approves; the next request is
judged by the new version.
"""

from __future__ import annotations

import re

import httpx
from playwright.sync_api import Browser, expect

from gateway.domain import Role
from gateway.policy.workflow import PolicyService
from gateway.runtime import Runtime
from tests.conftest import KeyFactory, auth
from tests.console.conftest import BODY as LIGHTHOUSE
from tests.console.live import sign_in

# a prompt only the draft blocks: blocking "a lighthouse at dusk" would fail the content cases
BODY = {**LIGHTHOUSE, "prompt": "a pagoda at dusk"}
VIOLENCE_PROMPT = re.compile(
    r"(\n  violence:\n(?:    .*\n)*?      prompt: )\{low: [0-9.]+, medium: [0-9.]+, high: [0-9.]+\}"
)


def _with_violence_prompt(text: str, thresholds: str) -> tuple[str, int]:
    """content.yaml with violence's prompt thresholds replaced; and that line's number."""
    match = VIOLENCE_PROMPT.search(text)
    assert match, "violence prompt thresholds not found in content.yaml"
    changed = text[: match.end(1)] + thresholds + text[match.end() :]
    return changed, text[: match.end(1)].count("\n") + 1


def test_editor_drafts_tests_replays_submits_and_another_person_approves(
    browser: Browser, live: str, runtime: Runtime, make_key: KeyFactory
) -> None:
    requester = make_key(Role.REQUESTER)
    auditor = make_key(Role.AUDITOR)
    api = httpx.Client(base_url=live, timeout=120)
    before = api.post("/v1/images/generations", json=BODY, headers=auth(requester))
    assert before.status_code == 200, before.text
    old_version = before.json()["governance"]["policy_version"]
    decision_id = before.json()["governance"]["decision_id"]

    # the editor works for the tenant whose traffic the replay lists (policy is global, but a
    # non-admin sees only their own tenant's decisions)
    editor_key = make_key(Role.LEGAL_EDITOR, Role.LEGAL_APPROVER)
    context = browser.new_context()
    page = context.new_page()
    sign_in(page, live, editor_key)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Policies").click()
    expect(page.locator("#active h2")).to_contain_text("version 1")

    # a draft from the active version, opened on content.yaml
    page.get_by_label("Note").fill("stricter violence threshold for prompts")
    page.get_by_role("button", name="New draft").click()
    expect(page).to_have_url(re.compile(r"/console/policies/drafts/\d+/edit$"))
    draft_id = int(re.findall(r"/drafts/(\d+)/edit", page.url)[0])
    editor = page.locator("textarea#content")
    original = editor.input_value()

    # a broken edit: the error shows under the edited line
    broken, line = _with_violence_prompt(original, "{low: 0.50, medium: 0.75, high: 1.5}")
    editor.fill(broken)
    page.get_by_role("button", name="Save and validate").click()
    expect(page.locator("#validity")).to_contain_text("does not validate")
    error = page.locator(f"#L{line} .line-error")
    expect(error).to_have_count(1)
    expect(error).to_contain_text("violence.thresholds.prompt.high")
    expect(error).to_contain_text("less than or equal to 1")
    expect(page.locator(".line-error")).to_have_count(1)

    # fixed, and "pagoda" added to violence's terms: the draft would block the earlier prompt
    assert "terms: [gore," in original
    fixed = original.replace("terms: [gore,", "terms: [pagoda, gore,", 1)
    page.locator("textarea#content").fill(fixed)
    page.get_by_role("button", name="Save and validate").click()
    expect(page.locator("#validity")).to_have_text("The draft validates.")
    expect(page.locator(".line-error")).to_have_count(0)

    # the draft's policy tests
    page.get_by_role("button", name="Run the policy tests").click()
    summary = page.locator("#test-summary")
    expect(summary).to_contain_text("cases pass")
    expect(summary).to_contain_text("42 content")
    expect(summary).not_to_contain_text("fail")
    assert page.locator("#cases tbody tr.passed").count() > 0
    expect(page.locator("#cases tbody tr.failed")).to_have_count(0)

    # replay past traffic: the earlier request would now be blocked
    page.get_by_role("link", name=f"version {draft_id}").click()
    page.get_by_label("Replay the last").fill("100")
    page.get_by_role("button", name="Replay").click()
    expect(page.locator("#replay-summary")).to_contain_text("1 would turn out differently")
    change = page.locator("#changes tbody tr")
    expect(change).to_have_count(1)
    expect(change).to_contain_text(decision_id)
    expect(change.locator("td").nth(1)).to_have_text("allowed")
    expect(change.locator("td").nth(2)).to_have_text("prompt_blocked")
    expect(change).to_contain_text("violence")

    # submit, then try to approve one's own draft
    page.get_by_role("link", name=f"version {draft_id}").click()
    page.get_by_role("button", name="Submit for approval").click()
    expect(page.get_by_role("status")).to_contain_text("Submitted for review")
    expect(page.locator("#version-facts")).to_contain_text("in_review")
    page.get_by_role("button", name="Approve").click()
    expect(page.locator("#action-error")).to_contain_text("different person")
    expect(page.locator("#version-facts")).to_contain_text("in_review")
    assert PolicyService(runtime).version(draft_id)["status"] == "in_review"
    page.get_by_role("button", name="Sign out").click()
    context.close()

    # a second person approves
    context = browser.new_context()
    page = context.new_page()
    sign_in(page, live, make_key(Role.LEGAL_APPROVER, tenant="legal"))
    page.goto(f"{live}/console/policies")
    page.locator("#versions").get_by_role("link", name=str(draft_id), exact=True).click()
    expect(page.locator("#review")).to_be_visible()
    expect(page.get_by_role("button", name="Submit for approval")).to_have_count(0)
    page.get_by_role("button", name="Approve").click()
    expect(page.get_by_role("status")).to_contain_text("Approved and published")
    facts = page.locator("#version-facts")
    expect(facts).to_contain_text("published")
    new_version = facts.locator("code").first.inner_text()
    assert len(new_version) == 64 and new_version != old_version
    page.goto(f"{live}/console/policies")
    expect(page.locator("#active h2")).to_contain_text(f"version {draft_id}")
    context.close()

    # the next request is judged by the new version
    after = api.post("/v1/images/generations", json=BODY, headers=auth(requester))
    assert after.status_code == 400, after.text
    error_body = after.json()["error"]
    assert error_body["code"] == "content_policy_violation"
    assert "violence" in error_body["categories"]
    recorded = api.get(f"/v1/audit/decisions/{error_body['decision_id']}", headers=auth(auditor))
    assert recorded.json()["policy_version"] == new_version
    api.close()
