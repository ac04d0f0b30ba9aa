"""The member portal: one-time sign-in links, the home page, rewards, sign-out."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from patron.services import members, portal, users
from patron.services.clock import utcnow
from patron.services.merchants import create_merchant
from tests.web.conftest import csrf_of


def link_for(engine: Engine, shop: dict[str, Any], member: str = "ann") -> str:
    with engine.begin() as conn:
        link = portal.create_login_link(
            conn, merchant_id=shop["merchant_id"], member_id=shop[member]["id"], base_url="http://testserver"
        )
    url = str(link["url"])
    assert re.fullmatch(r"http://testserver/portal/login/[A-Za-z0-9_-]{40,}", url)
    return url.removeprefix("http://testserver")


def test_a_login_link_signs_in_once(
    browser_client: TestClient, web_app: Any, shop: dict[str, Any], engine: Engine
) -> None:
    path = link_for(engine, shop)
    r = browser_client.get(path)
    assert r.status_code == 303 and r.headers["location"] == "/portal"
    cookie = r.headers["set-cookie"]
    assert "patron_member=" in cookie and "HttpOnly" in cookie and "samesite=lax" in cookie.lower()
    assert "Path=/portal" in cookie
    home = browser_client.get("/portal")
    assert home.status_code == 200 and "Ann Lee" in home.text
    with TestClient(web_app, follow_redirects=False) as other:
        again = other.get(path)
        assert again.status_code == 410
        assert "already used" in again.text
        assert other.get("/portal").status_code == 401


def test_an_expired_link_shows_a_clear_page(
    browser_client: TestClient, shop: dict[str, Any], engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = link_for(engine, shop)
    later = utcnow() + portal.LINK_TTL + timedelta(seconds=1)
    monkeypatch.setattr(portal, "utcnow", lambda: later)
    r = browser_client.get(path)
    assert r.status_code == 410 and "has expired" in r.text
    assert "patron_member" not in r.headers.get("set-cookie", "")


def test_an_unknown_link_is_404(browser_client: TestClient) -> None:
    r = browser_client.get("/portal/login/not-a-real-token")
    assert r.status_code == 404 and "not valid" in r.text


def test_a_session_ends_when_the_member_is_erased(
    browser_client: TestClient, shop: dict[str, Any], engine: Engine
) -> None:
    assert browser_client.get(link_for(engine, shop)).status_code == 303
    assert browser_client.get("/portal").status_code == 200
    with engine.begin() as conn:
        members.erase(conn, merchant_id=shop["merchant_id"], member_id=shop["ann"]["id"])
    for path in ("/portal", "/portal/my-data.json", "/portal/surveys"):
        assert browser_client.get(path).status_code == 401, path


def test_no_session_no_portal(browser_client: TestClient) -> None:
    r = browser_client.get("/portal")
    assert r.status_code == 401 and "sign-in link" in r.text
    browser_client.cookies.set("patron_member", "forged", path="/portal")
    assert browser_client.get("/portal").status_code == 401


def test_a_staff_session_does_not_open_the_portal(
    browser_client: TestClient, shop: dict[str, Any], engine: Engine
) -> None:
    with engine.begin() as conn:
        token, _ = users.start_session(conn, merchant_id=shop["merchant_id"], kind="user", subject_id="usr_x")
    browser_client.cookies.set("patron_member", token, path="/portal")
    assert browser_client.get("/portal").status_code == 401


def test_home_shows_card_balance_tier_history_rewards_and_referral(
    browser_client: TestClient, shop: dict[str, Any], engine: Engine
) -> None:
    browser_client.get(link_for(engine, shop))
    text = browser_client.get("/portal").text
    ann = shop["ann"]
    assert f'id="card-number">{ann["card_number"]}<' in text
    assert '<svg role="img" class="qr"' in text  # the card number as a QR code
    assert 'id="balance">300<' in text
    assert re.search(r"300 points expire on \d{1,2} \w{3} \d{4}", text)
    assert re.search(r"Spend \$200\.00 more by \d{1,2} Dec \d{4} to reach Gold\.", text)
    assert "Purchase of $300.00 at downtown" in text and "+300" in text
    assert "Free coffee" in text and "Get it" in text
    assert ann["referral_code"] in text and "you get 500 points" in text


def test_reserve_a_reward_and_see_its_code(
    browser_client: TestClient, shop: dict[str, Any], engine: Engine
) -> None:
    browser_client.get(link_for(engine, shop))
    home = browser_client.get("/portal").text
    assert browser_client.post("/portal/rewards/free-coffee", data={}).status_code == 403
    r = browser_client.post("/portal/rewards/free-coffee", data={"csrf_token": csrf_of(home)})
    assert r.status_code == 303
    page = browser_client.get(r.headers["location"]).text
    code = re.search(r'id="reserved-code">([A-Z0-9]+)<', page)
    assert code and len(code.group(1)) == 12
    assert 'id="balance">200<' in page
    assert "Reserved Free coffee" in page


def test_a_double_tap_on_get_it_reserves_once(
    browser_client: TestClient, shop: dict[str, Any], engine: Engine
) -> None:
    browser_client.get(link_for(engine, shop))
    home = browser_client.get("/portal").text
    form_id = re.search(
        r'rewards/free-coffee">\s*<input[^>]*>\s*<input type="hidden" name="form_id" value="([^"]+)"', home
    )
    assert form_id
    data = {"csrf_token": csrf_of(home), "form_id": form_id.group(1)}
    places = {
        browser_client.post("/portal/rewards/free-coffee", data=data).headers["location"] for _ in range(3)
    }
    assert len(places) == 1  # the same reservation each time
    assert 'id="balance">200<' in browser_client.get(places.pop()).text  # 300 less one coffee


def test_not_enough_points_is_explained(
    browser_client: TestClient, shop: dict[str, Any], engine: Engine
) -> None:
    browser_client.get(link_for(engine, shop, "bob"))
    home = browser_client.get("/portal").text
    assert "100 more points needed" in home
    r = browser_client.post("/portal/rewards/free-coffee", data={"csrf_token": csrf_of(home)})
    assert r.status_code == 409 and "You do not have enough points" in r.text


def test_printable_card(browser_client: TestClient, shop: dict[str, Any], engine: Engine) -> None:
    browser_client.get(link_for(engine, shop))
    r = browser_client.get("/portal/card")
    assert r.status_code == 200
    assert shop["ann"]["card_number"] in r.text and 'class="qr"' in r.text


def test_sign_out(browser_client: TestClient, shop: dict[str, Any], engine: Engine) -> None:
    browser_client.get(link_for(engine, shop))
    page = browser_client.get("/portal/logout")
    r = browser_client.post("/portal/logout", data={"csrf_token": csrf_of(page.text)})
    assert r.status_code == 200 and "signed out" in r.text
    assert browser_client.get("/portal").status_code == 401


def test_links_only_for_members_of_the_merchant(shop: dict[str, Any], engine: Engine) -> None:
    from patron.domain.errors import NotFound

    with engine.begin() as conn:
        other, _ = create_merchant(conn, name="Elsewhere")
        with pytest.raises(NotFound):
            portal.create_login_link(
                conn, merchant_id=other["id"], member_id=shop["ann"]["id"], base_url="http://x"
            )
        assert portal.find_member_merchant(conn, member_id=shop["ann"]["id"]) == shop["merchant_id"]
