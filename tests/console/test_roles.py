"""Roles work as in the API: navigation shows only what a key may use, the rest is a 403 page."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from gateway.domain import Role
from tests.conftest import KeyFactory
from tests.console.conftest import signed_in

AUDIT_PAGES = ("/console/audit/decisions", "/console/audit/verify", "/console/audit/export")
POLICY_PAGES = ("/console/policies",)
ALL = AUDIT_PAGES + POLICY_PAGES
NAV = re.compile(r'<nav aria-label="Main">(.*?)</nav>', re.S)


def _nav(html: str) -> set[str]:
    found = NAV.search(html)
    assert found
    return set(re.findall(r">([^<]+)</a>", found.group(1)))


@pytest.mark.parametrize(
    ("roles", "nav", "allowed", "forbidden"),
    [
        ((Role.REQUESTER,), set(), (), ALL),
        ((Role.AUDITOR,), {"Decisions", "Verify trail", "Policies"}, ALL, ()),
        ((Role.LEGAL_EDITOR,), {"Policies"}, POLICY_PAGES, AUDIT_PAGES),
        ((Role.LEGAL_APPROVER,), {"Policies"}, POLICY_PAGES, AUDIT_PAGES),
        ((Role.ADMIN,), {"Decisions", "Verify trail", "Policies"}, ALL, ()),
    ],
)
def test_pages_and_navigation_follow_roles(
    console: TestClient,
    make_key: KeyFactory,
    roles: tuple[Role, ...],
    nav: set[str],
    allowed: tuple[str, ...],
    forbidden: tuple[str, ...],
) -> None:
    signed_in(console, make_key(*roles))
    home = console.get("/console")
    assert home.status_code == 200
    assert _nav(home.text) == nav
    for path in allowed:
        assert console.get(path).status_code == 200, path
    for path in forbidden:
        r = console.get(path)
        assert r.status_code == 403, path
        assert "needs the" in r.text and "<html" in r.text  # the HTML 403 page
        assert r.headers["x-frame-options"] == "DENY"


def test_malformed_addresses_get_an_html_error_page(
    console: TestClient, make_key: KeyFactory
) -> None:
    signed_in(console, make_key(Role.ADMIN))
    r = console.get("/console/policies/versions/abc")
    assert r.status_code == 422 and "<html" in r.text and "version_id" in r.text
    assert r.headers["x-frame-options"] == "DENY"
