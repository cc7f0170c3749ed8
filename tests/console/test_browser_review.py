"""The draft editor and the approver's review page in a real browser (Chromium).

The editor: an error far down a file is listed above the editor; its link (and its gutter
marker) moves the caret to that line and scrolls it into view. The review page: a draft in
review shows its approver the policy tests (licence and content cases) and a replay of recent
decisions; "run tests" lists every case; a refused approval lands on the version page (not the
POST URL); a second person approves. Screenshots go to ``$CONSOLE_SCREENSHOTS`` (or the
test's temporary folder).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import httpx
from playwright.sync_api import Browser, Page, expect

from gateway.domain import Role
from gateway.policy.workflow import PolicyService
from gateway.runtime import Runtime
from tests.conftest import KeyFactory, auth
from tests.console.live import sign_in

SHELL = re.compile(r"(\n  shocking:\n(?:    .*\n)*?      prompt: )\{low: [0-9.]+,")


def _shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("CONSOLE_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _caret_line(page: Page) -> int:
    line = page.locator("textarea#content").evaluate(
        "a => a.value.substring(0, a.selectionStart).split('\\n').length"
    )
    return int(line)


def _visible_in_editor(page: Page, line: int) -> bool:
    """Whether line ``line``'s number in the gutter lies inside the editor's visible box."""
    box = page.locator("#code-editor").bounding_box()
    row = page.locator(f"#L{line}").bounding_box()
    assert box and row
    return box["y"] <= row["y"] and row["y"] + row["height"] <= box["y"] + box["height"]


def test_an_error_marker_jumps_to_its_line(
    browser: Browser, live: str, make_key: KeyFactory, tmp_path: Path
) -> None:
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    sign_in(page, live, make_key(Role.LEGAL_EDITOR))
    page.goto(f"{live}/console/policies")
    page.get_by_role("button", name="New draft").click()
    expect(page).to_have_url(re.compile(r"/console/policies/drafts/\d+/edit$"))
    editor = page.locator("textarea#content")
    original = editor.input_value()
    match = SHELL.search(original)
    assert match, "shocking's prompt thresholds not found"
    line = original[: match.end(1)].count("\n") + 1
    assert line > 60  # far below the first screenful
    editor.fill(original[: match.end(1)] + "{low: 7," + original[match.end() :])
    page.get_by_role("button", name="Save and validate").click()
    expect(page.locator("#validity")).to_contain_text("does not validate")

    # line numbers for every line; one marked line, with its message inline
    expect(page.locator("#gutter li")).to_have_count(len(original.split("\n")))
    expect(page.locator("#gutter li.bad")).to_have_count(1)
    expect(page.locator(f"#L{line}.bad .line-error")).to_contain_text(
        "shocking.thresholds.prompt.low"
    )
    expect(page.locator(f'.bl.bad[data-line="{line}"] .inline-error')).to_contain_text(
        "less than or equal to 1"
    )
    editor.evaluate("a => { a.scrollTop = 0; a.setSelectionRange(0, 0); }")
    assert not _visible_in_editor(page, line)

    # the listed error jumps to its line: caret on it, scrolled into view
    page.locator("#error-list").get_by_role("link", name=f"line {line}").click()
    expect(editor).to_be_focused()
    assert _caret_line(page) == line
    assert _visible_in_editor(page, line)
    selected = editor.evaluate("a => a.value.substring(a.selectionStart, a.selectionEnd)")
    assert "low: 7," in selected
    page.screenshot(path=str(_shots(tmp_path) / "editor-jump.png"), full_page=True)

    # so does the marker in the gutter, after scrolling away
    editor.evaluate("a => { a.scrollTop = 0; a.setSelectionRange(0, 0); }")
    page.locator(f"#L{line} a.marker").click()
    assert _caret_line(page) == line and _visible_in_editor(page, line)

    # typing a new line keeps the numbers in step and says the markers are stale
    editor.press("End")
    editor.press("Enter")
    expect(page.locator("#gutter li")).to_have_count(len(original.split("\n")) + 1)
    expect(page.locator("#stale-note")).to_be_visible()


def test_the_approver_reviews_tests_and_replay_then_approves(
    browser: Browser, live: str, runtime: Runtime, make_key: KeyFactory, tmp_path: Path
) -> None:
    requester, author = make_key(Role.REQUESTER), make_key(Role.LEGAL_EDITOR, Role.LEGAL_APPROVER)
    api = httpx.Client(base_url=live, timeout=120)
    body = {"model": "demo-tiny", "prompt": "a pagoda at dusk", "size": "64x64", "steps": 2}
    before = api.post("/v1/images/generations", json=body, headers=auth(requester))
    assert before.status_code == 200, before.text
    decision_id = before.json()["governance"]["decision_id"]
    files = api.get("/v1/policies/versions/1", headers=auth(author)).json()["files"]
    content = files["content.yaml"].replace("terms: [gore,", "terms: [pagoda, gore,", 1)
    r = api.post(
        "/v1/policies/drafts",
        json={"files": {"content.yaml": content}, "note": "block pagodas (review test)"},
        headers=auth(author),
    )
    draft_id = r.json()["draft_id"]
    assert api.post(f"/v1/policies/drafts/{draft_id}/submit", headers=auth(author)).is_success

    # the author, also an approver, may not approve it: refused, and back on a GET page
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    sign_in(page, live, author)
    page.goto(f"{live}/console/policies/versions/{draft_id}")
    page.get_by_role("button", name="Approve").click()
    expect(page.locator("#action-error")).to_contain_text("different person")
    assert page.url.endswith(f"/console/policies/versions/{draft_id}?refused=1")
    page.reload()
    expect(page.locator("#action-error")).to_have_count(0)
    page.context.close()

    # another approver: the queue on the policies page leads to the review
    page = browser.new_context(viewport={"width": 1280, "height": 1100}).new_page()
    sign_in(page, live, make_key(Role.LEGAL_APPROVER, Role.AUDITOR))
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Policies").click()
    queue = page.locator("#review-queue")
    expect(queue).to_contain_text("Awaiting review (1)")
    expect(queue).to_contain_text("block pagodas (review test)")
    expect(page.locator("#versions tr.awaiting")).to_have_count(1)
    queue.get_by_role("link", name="review it").click()
    tests = page.locator("#review-tests")
    expect(tests).to_contain_text("cases pass")
    expect(tests).to_contain_text("42 content")
    expect(tests).not_to_contain_text("fail")
    expect(page.locator("#review-replay")).to_contain_text("1 would turn out differently")
    change = page.locator("#review-changes tbody tr")
    expect(change).to_have_count(1)
    expect(change).to_contain_text(decision_id)
    expect(change).to_contain_text("pagoda")
    page.screenshot(path=str(_shots(tmp_path) / "review-page.png"), full_page=True)

    # run tests: every case, licence and content
    page.get_by_role("button", name="Run tests (every case)").click()
    expect(page.locator("#test-summary")).to_contain_text("42 content")
    content_rows = page.locator("#cases tbody tr", has_text="a lighthouse at dusk")
    expect(content_rows).to_have_count(1)
    expect(content_rows).to_contain_text("allowed")
    page.go_back()

    page.get_by_role("button", name="Approve").click()
    expect(page.get_by_role("status")).to_contain_text("Approved and published")
    assert PolicyService(runtime).active()["id"] == draft_id
    page.goto(f"{live}/console/policies")
    expect(page.locator("#review-queue")).to_have_count(0)
    api.close()
