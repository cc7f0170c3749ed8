"""Legal pages through the real PolicyService: drafts, inline validation, tests, replay, review."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from gateway.domain import Role
from gateway.policy.workflow import PolicyService
from gateway.runtime import Runtime
from tests.conftest import KeyFactory
from tests.console.conftest import csrf_of, signed_in

THRESHOLD = re.compile(
    r"^(\s*prompt: \{low: )([0-9.]+)(, medium: [0-9.]+, high: )([0-9.]+)\}$", re.M
)


def _new_draft(console: TestClient, note: str = "tighten") -> int:
    page = console.get("/console/policies")
    assert page.status_code == 200
    r = console.post(
        "/console/policies/drafts",
        data={"csrf_token": csrf_of(page.text), "base_version": "1", "note": note},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    found = re.fullmatch(r"/console/policies/drafts/(\d+)/edit", r.headers["location"])
    assert found
    return int(found.group(1))


def _save(console: TestClient, draft: int, file: str, content: str) -> str:
    edit = console.get(f"/console/policies/drafts/{draft}/edit", params={"file": file})
    r = console.post(
        f"/console/policies/drafts/{draft}/edit",
        data={"csrf_token": csrf_of(edit.text), "file": file, "content": content},
    )
    assert r.status_code == 200, r.text
    return r.text


def _post(console: TestClient, path: str, page_path: str, **data: str) -> tuple[int, str]:
    token = csrf_of(console.get(page_path).text)
    r = console.post(path, data={"csrf_token": token, **data})
    return r.status_code, r.text


def test_overview_lists_the_active_version_and_diffs(
    console: TestClient, make_key: KeyFactory
) -> None:
    signed_in(console, make_key(Role.LEGAL_EDITOR))
    page = console.get("/console/policies")
    assert "In force: " in page.text and "version 1" in page.text
    assert 'id="new-draft"' in page.text
    draft = _new_draft(console)
    diff = console.get("/console/policies/diff", params={"a": 1, "b": draft})
    assert "The two versions have the same files." in diff.text
    file_page = console.get("/console/policies/versions/1/files/content.yaml")
    assert file_page.status_code == 200 and "schema_version: 1" in file_page.text
    assert console.get("/console/policies/versions/1/files/nope.yaml").status_code == 404
    assert console.get("/console/policies/versions/999").status_code == 404


def test_editing_shows_validation_errors_at_their_line_and_saves_lf(
    console: TestClient, runtime: Runtime, make_key: KeyFactory
) -> None:
    signed_in(console, make_key(Role.LEGAL_EDITOR))
    draft = _new_draft(console)
    edit = console.get(f"/console/policies/drafts/{draft}/edit")
    assert edit.status_code == 200 and "The draft validates." in edit.text
    original = PolicyService(runtime).version(draft)["files"]["content.yaml"]
    match = THRESHOLD.search(original)
    assert match
    line = original[: match.start(4)].count("\n") + 1
    broken = original[: match.start(4)] + "1.5" + original[match.end(4) :]
    html = _save(console, draft, "content.yaml", broken.replace("\n", "\r\n"))
    assert "The draft does not validate" in html
    bad = re.search(rf'<li id="L{line}" class="bad">(.*?)</li>', html, re.S)
    assert bad, f"no error under line {line}"
    assert f"line {line}: categories." in bad.group(1)
    assert "less than or equal to 1" in bad.group(1)
    listed = re.search(r'<ul class="error" id="error-list">(.*?)</ul>', html, re.S)
    assert listed and f'<a href="#L{line}" data-jump="{line}" class="jump">line {line}</a>' in (
        listed.group(1)
    )
    saved = PolicyService(runtime).version(draft)["files"]["content.yaml"]
    assert "\r" not in saved and saved == broken

    fixed = original[: match.start(4)] + "0.9" + original[match.end(4) :]
    html = _save(console, draft, "content.yaml", fixed)
    assert "The draft validates." in html and 'class="bad"' not in html
    assert 'id="error-list"' not in html
    diff = console.get("/console/policies/diff", params={"a": 1, "b": draft})
    assert '<span class="add">+' in diff.text and "high: 0.9}" in diff.text
    body = re.search(r'<pre class="diff">(.*?)</pre>', diff.text, re.S)
    assert body and "\n" not in body.group(1)  # one block per line: no blank lines between
    spans = re.findall(r'<span class="(\w+)">', body.group(1))
    assert spans[:2] == ["meta", "meta"] and spans[2] == "hunk"


def test_saving_without_the_csrf_token_changes_nothing(
    console: TestClient, runtime: Runtime, make_key: KeyFactory
) -> None:
    signed_in(console, make_key(Role.LEGAL_EDITOR))
    draft = _new_draft(console)
    before = PolicyService(runtime).version(draft)["files"]
    r = console.post(
        f"/console/policies/drafts/{draft}/edit",
        data={"file": "content.yaml", "content": "schema_version: 1\n"},
    )
    assert r.status_code == 403 and "security token" in r.text
    r = console.post(
        f"/console/policies/drafts/{draft}/edit",
        data={"csrf_token": "guess", "file": "content.yaml", "content": "x: 1\n"},
    )
    assert r.status_code == 403
    assert PolicyService(runtime).version(draft)["files"] == before
    for action in ("submit", "test", "replay"):
        r = console.post(f"/console/policies/drafts/{draft}/{action}", data={})
        assert r.status_code == 403, action


def test_tests_replay_submit_four_eyes_and_approval(
    console: TestClient, runtime: Runtime, make_key: KeyFactory
) -> None:
    author = make_key(Role.LEGAL_EDITOR, Role.LEGAL_APPROVER)
    signed_in(console, author)
    draft = _new_draft(console)
    version_path = f"/console/policies/versions/{draft}"

    status, html = _post(console, f"/console/policies/drafts/{draft}/test", version_path)
    assert status == 200 and 'id="cases"' in html
    assert re.search(r"(\d+) of \1 cases pass", html)

    status, html = _post(
        console, f"/console/policies/drafts/{draft}/replay", version_path, limit="50"
    )
    assert status == 200 and "would turn out differently" in html
    status, html = _post(
        console, f"/console/policies/drafts/{draft}/replay", version_path, limit="zero"
    )
    assert status == 422 and "whole number" in html

    status, html = _post(console, f"/console/policies/drafts/{draft}/submit", version_path)
    assert status == 200 and "Submitted for review" in html and "in_review" in html

    # its own author may not approve it; the refusal redirects (post-redirect-get)
    token = csrf_of(console.get(version_path).text)
    r = console.post(
        f"/console/policies/drafts/{draft}/approve",
        data={"csrf_token": token},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == f"{version_path}?refused=1"
    page = console.get(r.headers["location"])
    assert page.status_code == 200
    assert 'id="action-error"' in page.text and "different person" in page.text
    again = console.get(r.headers["location"])  # shown once: a reload does not repeat it
    assert 'id="action-error"' not in again.text
    assert PolicyService(runtime).version(draft)["status"] == "in_review"
    # the approver's review page shows the tests and the replay; the author's does not
    assert 'id="review-tests"' in page.text  # the author is also an approver

    console.cookies.clear()
    signed_in(console, make_key(Role.LEGAL_APPROVER))
    review = console.get(version_path).text
    tests = re.search(r'<p id="review-tests" class="notice">\s*(\d+) of \1 cases pass', review)
    assert tests and int(tests.group(1)) > 100, review
    assert "licence" in review and "content)" in review
    assert 'id="review-replay"' in review and "would turn out differently" in review
    assert 'id="run-tests"' in review
    overview = console.get("/console/policies").text
    assert 'id="review-queue"' in overview and f"Version {draft}</a>: tighten" in overview
    status, html = _post(
        console, f"/console/policies/drafts/{draft}/reject", version_path, reason="  "
    )
    assert status == 200 and "needs a reason" in html and 'id="action-error"' in html
    status, html = _post(console, f"/console/policies/drafts/{draft}/approve", version_path)
    assert status == 200 and "Approved and published" in html
    assert PolicyService(runtime).active()["id"] == draft
    page = console.get("/console/policies")
    assert f'In force: <a href="/console/policies/versions/{draft}">' in page.text


def test_reject_with_a_reason(console: TestClient, runtime: Runtime, make_key: KeyFactory) -> None:
    signed_in(console, make_key(Role.LEGAL_EDITOR))
    draft = _new_draft(console)
    version_path = f"/console/policies/versions/{draft}"
    _post(console, f"/console/policies/drafts/{draft}/submit", version_path)
    console.cookies.clear()
    signed_in(console, make_key(Role.LEGAL_APPROVER))
    status, html = _post(
        console,
        f"/console/policies/drafts/{draft}/reject",
        version_path,
        reason="threshold too strict",
    )
    assert status == 200 and "Rejected." in html and "threshold too strict" in html
    assert PolicyService(runtime).version(draft)["status"] == "rejected"


@pytest.mark.parametrize(
    ("roles", "action"),
    [
        ((Role.LEGAL_APPROVER,), "create"),
        ((Role.AUDITOR,), "create"),
        ((Role.LEGAL_EDITOR,), "approve"),
        ((Role.LEGAL_APPROVER,), "edit"),
        ((Role.AUDITOR,), "replay"),
    ],
)
def test_actions_need_their_role(
    console: TestClient, make_key: KeyFactory, roles: tuple[Role, ...], action: str
) -> None:
    signed_in(console, make_key(Role.LEGAL_EDITOR))
    draft = _new_draft(console)
    console.cookies.clear()
    signed_in(console, make_key(*roles))
    token = csrf_of(console.get("/console/policies").text)
    path = {
        "create": "/console/policies/drafts",
        "approve": f"/console/policies/drafts/{draft}/approve",
        "edit": f"/console/policies/drafts/{draft}/edit",
        "replay": f"/console/policies/drafts/{draft}/replay",
    }[action]
    r = console.post(path, data={"csrf_token": token, "file": "x.yaml", "content": ""})
    assert r.status_code == 403 and "needs the" in r.text
    page = console.get(f"/console/policies/versions/{draft}")
    assert page.status_code == 200
    assert ("Submit for approval" in page.text) == (Role.LEGAL_EDITOR in roles)


def test_submitting_an_invalid_draft_is_refused_with_its_errors(
    console: TestClient, runtime: Runtime, make_key: KeyFactory
) -> None:
    signed_in(console, make_key(Role.LEGAL_EDITOR))
    draft = _new_draft(console)
    original = PolicyService(runtime).version(draft)["files"]["content.yaml"]
    match = THRESHOLD.search(original)
    assert match
    line = original[: match.start(4)].count("\n") + 1
    _save(
        console, draft, "content.yaml", original[: match.start(4)] + "7" + original[match.end(4) :]
    )
    version_path = f"/console/policies/versions/{draft}"
    status, html = _post(console, f"/console/policies/drafts/{draft}/submit", version_path)
    assert status == 200 and "does not validate" in html
    details = re.search(r'<ul class="error" id="action-details">(.*?)</ul>', html, re.S)
    assert details and f"content.yaml:{line}: categories." in details.group(1)
    assert PolicyService(runtime).version(draft)["status"] == "draft"
