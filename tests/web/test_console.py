"""The admin console through the real app: sign-in, lockout, sessions, CSRF, tenancy, pages."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from patron.services import users
from patron.services.clock import utcnow
from patron.services.members import MemberCreate, enrol, get_member, member_view
from patron.services.merchants import create_merchant
from patron.services.programs import create_program
from tests.conftest import bean_rewards
from tests.web.conftest import PASSWORD, csrf_of, sign_in

GENERIC = "Email or password is incorrect"


def available(engine: Engine, merchant_id: str, member_id: str) -> int:
    with engine.begin() as conn:
        member = get_member(conn, merchant_id=merchant_id, member_id=member_id)
        return int(member_view(conn, merchant_id=merchant_id, member=member)["points"]["available"])


def test_pages_need_a_session(browser_client: TestClient, shop: dict[str, Any]) -> None:
    for path in ("/admin", "/admin/members", f"/admin/members/{shop['ann']['id']}", "/pos"):
        r = browser_client.get(path)
        assert r.status_code == 303, path
        assert r.headers["location"].startswith("/admin/login?next=")


def test_login_page_is_accessible_html(browser_client: TestClient) -> None:
    r = browser_client.get("/admin/login")
    assert r.status_code == 200
    assert '<html lang="en">' in r.text
    assert '<label for="email">' in r.text and '<label for="password">' in r.text
    assert "<h1>" in r.text
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie


def test_wrong_password_and_unknown_email_fail_alike(
    browser_client: TestClient, shop: dict[str, Any]
) -> None:
    wrong = sign_in(browser_client, shop["owner"], "not the password")
    unknown = sign_in(browser_client, "nobody@example.com", "not the password")
    for r in (wrong, unknown):
        assert r.status_code == 401
        assert GENERIC in r.text
        assert "locked" not in r.text.lower() and "no user" not in r.text.lower()
        assert "patron_staff" not in r.headers.get("set-cookie", "")

    def error_of(html: str) -> str:
        found = re.search(r'role="alert"[^>]*>([^<]*)<', html)
        assert found
        return found.group(1)

    assert error_of(wrong.text) == error_of(unknown.text) == GENERIC


def test_sign_in_sets_a_strict_cookie_and_opens_the_dashboard(
    browser_client: TestClient, shop: dict[str, Any]
) -> None:
    r = sign_in(browser_client, shop["owner"].upper())  # emails compare case-insensitively
    assert r.status_code == 303 and r.headers["location"] == "/admin"
    cookie = r.headers["set-cookie"]
    assert "patron_staff=" in cookie
    assert "HttpOnly" in cookie and "samesite=lax" in cookie.lower()
    page = browser_client.get("/admin")
    assert page.status_code == 200
    assert '<svg class="chart"' in page.text and "Points issued and redeemed per month" in page.text
    assert "Tier population" in page.text and "Silver" in page.text
    assert "Liability" in page.text


def test_sign_in_returns_to_the_page_asked_for_but_never_to_another_site(
    browser_client: TestClient, shop: dict[str, Any]
) -> None:
    r = sign_in(browser_client, shop["owner"], next_url="/admin/members?q=ann")
    assert r.headers["location"] == "/admin/members?q=ann"
    browser_client.cookies.clear()
    r = sign_in(browser_client, shop["owner"], next_url="//evil.example/")
    assert r.headers["location"] == "/admin"


def test_lockout_after_repeated_failures(
    browser_client: TestClient, shop: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for _ in range(users.LOCK_AFTER):
        assert sign_in(browser_client, shop["owner"], "guess guess guess").status_code == 401
    locked = sign_in(browser_client, shop["owner"])  # the right password, but locked: same answer
    assert locked.status_code == 401 and GENERIC in locked.text
    later = utcnow() + users.LOCK_FOR + timedelta(seconds=1)
    monkeypatch.setattr(users, "utcnow", lambda: later)
    assert sign_in(browser_client, shop["owner"]).status_code == 303


def test_a_success_resets_the_failure_count(browser_client: TestClient, shop: dict[str, Any]) -> None:
    for _ in range(users.LOCK_AFTER - 1):
        sign_in(browser_client, shop["owner"], "guess guess guess")
    assert sign_in(browser_client, shop["owner"]).status_code == 303
    browser_client.cookies.clear()
    for _ in range(users.LOCK_AFTER - 1):
        sign_in(browser_client, shop["owner"], "guess guess guess")
    assert sign_in(browser_client, shop["owner"]).status_code == 303


def test_failed_sign_in_is_slowed(
    browser_client: TestClient, shop: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from patron.web import admin

    monkeypatch.setattr(admin, "FAILURE_DELAY", 0.3)
    started = time.perf_counter()
    sign_in(browser_client, shop["owner"], "guess guess guess")
    assert time.perf_counter() - started >= 0.3


def test_login_without_csrf_is_refused(browser_client: TestClient, shop: dict[str, Any]) -> None:
    browser_client.get("/admin/login")
    r = browser_client.post("/admin/login", data={"email": shop["owner"], "password": PASSWORD})
    assert r.status_code == 403
    r = browser_client.post(
        "/admin/login", data={"email": shop["owner"], "password": PASSWORD, "csrf_token": "x" * 32}
    )
    assert r.status_code == 403


def test_adjust_without_csrf_is_refused_and_writes_nothing(
    browser_client: TestClient, shop: dict[str, Any], engine: Engine
) -> None:
    sign_in(browser_client, shop["owner"])
    ann = shop["ann"]["id"]
    before = available(engine, shop["merchant_id"], ann)
    for data in (
        {"points": "50", "reason": "goodwill"},
        {"points": "50", "reason": "goodwill", "csrf_token": "no"},
    ):
        r = browser_client.post(f"/admin/members/{ann}/adjust", data=data)
        assert r.status_code == 403
    assert available(engine, shop["merchant_id"], ann) == before


def test_adjust_points_and_see_the_new_balance(
    browser_client: TestClient, shop: dict[str, Any], engine: Engine
) -> None:
    sign_in(browser_client, shop["owner"])
    ann = shop["ann"]["id"]
    page = browser_client.get(f"/admin/members/{ann}")
    assert page.status_code == 200
    assert 'id="available-points">300<' in page.text
    r = browser_client.post(
        f"/admin/members/{ann}/adjust",
        data={"points": "-50", "reason": "Coffee was cold", "csrf_token": csrf_of(page.text)},
    )
    assert r.status_code == 303
    page = browser_client.get(r.headers["location"])
    assert 'id="available-points">250<' in page.text
    assert "Points adjusted by -50." in page.text and "Coffee was cold" in page.text
    assert available(engine, shop["merchant_id"], ann) == 250


def test_an_adjustment_submitted_twice_adjusts_once(
    browser_client: TestClient, shop: dict[str, Any], engine: Engine
) -> None:
    sign_in(browser_client, shop["owner"])
    ann = shop["ann"]["id"]
    page = browser_client.get(f"/admin/members/{ann}").text
    form_id = re.search(r'name="form_id" value="([^"]+)"', page)
    assert form_id
    data = {"points": "50", "reason": "goodwill", "csrf_token": csrf_of(page), "form_id": form_id.group(1)}
    places = {
        browser_client.post(f"/admin/members/{ann}/adjust", data=data).headers["location"] for _ in range(3)
    }
    assert places == {f"/admin/members/{ann}?adjusted=50"}
    assert available(engine, shop["merchant_id"], ann) == 350
    fresh = re.search(r'name="form_id" value="([^"]+)"', browser_client.get(f"/admin/members/{ann}").text)
    assert fresh and fresh.group(1) != form_id.group(1)  # the next form adjusts again
    browser_client.post(f"/admin/members/{ann}/adjust", data={**data, "form_id": fresh.group(1)})
    assert available(engine, shop["merchant_id"], ann) == 400


@pytest.mark.parametrize(
    ("points", "reason", "field", "message"),
    [
        ("abc", "why", "points", "Enter a whole number of points"),
        ("0", "why", "points", "other than 0"),
        ("10", "  ", "reason", "Say why"),
        ("-5000", "too much", "points", "does not have that many available points"),
        ("9223372036854775807", "a typo", "points", "at most 1,000,000,000 points"),
        ("9" * 30, "a typo", "points", "at most 1,000,000,000 points"),
    ],
)
def test_adjust_errors_are_shown_beside_the_field(
    browser_client: TestClient, shop: dict[str, Any], points: str, reason: str, field: str, message: str
) -> None:
    sign_in(browser_client, shop["owner"])
    ann = shop["ann"]["id"]
    page = browser_client.get(f"/admin/members/{ann}")
    r = browser_client.post(
        f"/admin/members/{ann}/adjust",
        data={"points": points, "reason": reason, "csrf_token": csrf_of(page.text)},
    )
    assert r.status_code == 422
    found = re.search(rf'<p class="field-error" id="adj-{field}-error">([^<]*)</p>', r.text)
    assert found and message in found.group(1)
    assert f'aria-describedby="adj-{field}-error"' in r.text
    assert f'value="{points}"' in r.text  # what was typed is kept


def test_another_merchants_member_is_404(
    browser_client: TestClient, shop: dict[str, Any], engine: Engine
) -> None:
    with engine.begin() as conn:
        other, _ = create_merchant(conn, name="Elsewhere")
        program = create_program(conn, merchant_id=other["id"], body=bean_rewards())
        stranger = enrol(
            conn, merchant_id=other["id"], data=MemberCreate(program_id=program["id"], name="Zed")
        )
    sign_in(browser_client, shop["owner"])
    page = browser_client.get(f"/admin/members/{stranger['id']}")
    assert page.status_code == 404 and "Zed" not in page.text
    assert browser_client.get("/admin/members/mem_nope").status_code == 404
    csrf = csrf_of(browser_client.get("/admin").text)
    r = browser_client.post(
        f"/admin/members/{stranger['id']}/adjust", data={"points": "5", "reason": "x", "csrf_token": csrf}
    )
    assert r.status_code == 404
    assert available(engine, other["id"], stranger["id"]) == 0
    assert "0 results" in browser_client.get("/admin/members", params={"q": "Zed"}).text


@pytest.mark.parametrize(
    ("query", "expect"),
    [("ann", "Ann Lee"), ("LEE", "Ann Lee"), ("+1 415 555 0123", "Ann Lee"), ("bob-", "Bob Stone")],
)
def test_search_by_name_email_phone(
    browser_client: TestClient, shop: dict[str, Any], query: str, expect: str
) -> None:
    sign_in(browser_client, shop["owner"])
    r = browser_client.get("/admin/members", params={"q": query})
    assert r.status_code == 200
    assert expect in r.text


def test_search_by_card_number(browser_client: TestClient, shop: dict[str, Any]) -> None:
    sign_in(browser_client, shop["owner"])
    r = browser_client.get("/admin/members", params={"q": shop["bob"]["card_number"]})
    assert "Bob Stone" in r.text and "Ann Lee" not in r.text


def test_member_page_explains_tier_lots_and_history(browser_client: TestClient, shop: dict[str, Any]) -> None:
    sign_in(browser_client, shop["owner"])
    r = browser_client.get(f"/admin/members/{shop['ann']['id']}")
    text = r.text
    assert "<strong>Silver</strong>" in text
    assert re.search(r"Spend \$200\.00 more by \d{1,2} Dec \d{4} to reach Gold\.", text)
    assert "purchase order-" in text  # the ledger reason and the event id per line
    assert "Lots" in text and "Redemptions" in text


def test_staff_use_the_till_not_the_console(browser_client: TestClient, shop: dict[str, Any]) -> None:
    r = sign_in(browser_client, shop["staff"])
    assert r.headers["location"] == "/pos"
    assert browser_client.get("/admin").headers["location"] == "/pos"
    assert browser_client.get("/pos").status_code == 200


def test_sign_out_ends_the_session(browser_client: TestClient, shop: dict[str, Any]) -> None:
    sign_in(browser_client, shop["owner"])
    token = browser_client.cookies.get("patron_staff")
    page = browser_client.get("/admin/logout")
    assert page.status_code == 200
    assert browser_client.post("/admin/logout", data={}).status_code == 403
    r = browser_client.post("/admin/logout", data={"csrf_token": csrf_of(page.text)})
    assert r.status_code == 303
    browser_client.cookies.set("patron_staff", token or "")  # even a kept cookie no longer works
    assert browser_client.get("/admin").status_code == 303


def test_expired_session_signs_out(
    browser_client: TestClient, shop: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    sign_in(browser_client, shop["owner"])
    later = utcnow() + users.SESSION_TTL["user"] + timedelta(seconds=1)
    monkeypatch.setattr(users, "utcnow", lambda: later)
    assert browser_client.get("/admin").status_code == 303
