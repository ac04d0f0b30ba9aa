"""The till: look members up, record visits, redeem at the counter, validate and consume codes."""

from __future__ import annotations

import re
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from patron.services import redemptions
from patron.services.members import get_member, member_view
from tests.web.conftest import build_shop, csrf_of, sign_in


def points(engine: Engine, shop: dict[str, Any], who: str = "ann") -> dict[str, int]:
    with engine.begin() as conn:
        m = get_member(conn, merchant_id=shop["merchant_id"], member_id=shop[who]["id"])
        return dict(member_view(conn, merchant_id=shop["merchant_id"], member=m)["points"])


def test_look_up_by_phone_or_card(browser_client: TestClient, shop: dict[str, Any]) -> None:
    sign_in(browser_client, shop["staff"])
    for q in ("+1 415 555 0123", "14155550123", shop["ann"]["card_number"]):
        r = browser_client.get("/pos", params={"q": q})
        assert r.status_code == 200
        assert 'id="pos-member-name">Ann Lee<' in r.text, q
        assert 'id="pos-balance">300<' in r.text
    r = browser_client.get("/pos", params={"q": "+14155550199"})
    assert "No member has this card number or phone number." in r.text


def test_record_a_visit_once_per_form(
    browser_client: TestClient, shop: dict[str, Any], engine: Engine
) -> None:
    sign_in(browser_client, shop["staff"])
    ann = shop["ann"]["id"]
    page = browser_client.get("/pos", params={"member": ann}).text
    visit_id = re.search(r'name="visit_id" value="([^"]+)"', page)
    assert visit_id
    form = {"csrf_token": csrf_of(page), "visit_id": visit_id.group(1)}
    for _ in range(2):  # a double tap replays the same event
        r = browser_client.post(f"/pos/members/{ann}/visit", data=form)
        assert r.status_code == 303
    page = browser_client.get(r.headers["location"]).text
    assert "Visit recorded." in page
    with engine.begin() as conn:
        from patron.services.events import get_event

        assert get_event(conn, merchant_id=shop["merchant_id"], event_id=f"pos-visit-{visit_id.group(1)}")
    assert browser_client.post(f"/pos/members/{ann}/visit", data={"visit_id": "x"}).status_code == 403


def test_validate_and_consume_a_code_once(
    browser_client: TestClient, shop: dict[str, Any], engine: Engine
) -> None:
    with engine.begin() as conn:
        held = redemptions.reserve(
            conn, merchant_id=shop["merchant_id"], member_id=shop["ann"]["id"], reward_id="free-coffee"
        )
    sign_in(browser_client, shop["staff"])
    csrf = csrf_of(browser_client.get("/pos").text)
    r = browser_client.post("/pos/codes/check", data={"code": held["code"].lower(), "csrf_token": csrf})
    assert r.status_code == 200
    assert "Valid: Free coffee" in r.text and "Ann Lee" in r.text
    r = browser_client.post("/pos/codes/redeem", data={"code": held["code"], "csrf_token": csrf})
    assert r.status_code == 200 and f"Code {held['code']} used: hand over Free coffee to Ann Lee." in r.text
    assert points(engine, shop)["redeemed"] == 100
    again = browser_client.post("/pos/codes/redeem", data={"code": held["code"], "csrf_token": csrf})
    assert again.status_code == 409 and "already redeemed" in again.text
    check = browser_client.post("/pos/codes/check", data={"code": held["code"], "csrf_token": csrf})
    assert "Cannot be used" in check.text
    assert points(engine, shop)["redeemed"] == 100
    unknown = browser_client.post("/pos/codes/check", data={"code": "NOPE", "csrf_token": csrf})
    assert unknown.status_code == 404 and "No reward has the code NOPE." in unknown.text
    assert browser_client.post("/pos/codes/redeem", data={"code": held["code"]}).status_code == 403


def test_another_merchants_code_is_unknown(
    browser_client: TestClient, shop: dict[str, Any], engine: Engine
) -> None:
    other = build_shop(engine)
    with engine.begin() as conn:
        held = redemptions.reserve(
            conn, merchant_id=other["merchant_id"], member_id=other["ann"]["id"], reward_id="free-coffee"
        )
    sign_in(browser_client, shop["staff"])
    csrf = csrf_of(browser_client.get("/pos").text)
    r = browser_client.post("/pos/codes/redeem", data={"code": held["code"], "csrf_token": csrf})
    assert r.status_code == 404
    assert browser_client.get("/pos", params={"member": other["ann"]["id"]}).status_code == 404


def test_redeem_a_reward_at_the_till(
    browser_client: TestClient, shop: dict[str, Any], engine: Engine
) -> None:
    sign_in(browser_client, shop["staff"])
    ann = shop["ann"]["id"]
    csrf = csrf_of(browser_client.get("/pos", params={"member": ann}).text)
    r = browser_client.post(f"/pos/members/{ann}/rewards/free-coffee", data={"csrf_token": csrf})
    assert r.status_code == 303
    page = browser_client.get(r.headers["location"]).text
    assert "Reward redeemed for 100 points." in page and 'id="pos-balance">200<' in page
    bob = shop["bob"]["id"]
    r = browser_client.post(f"/pos/members/{bob}/rewards/free-coffee", data={"csrf_token": csrf})
    assert r.status_code == 409


def test_a_double_tap_on_redeem_now_redeems_once(
    browser_client: TestClient, shop: dict[str, Any], engine: Engine
) -> None:
    sign_in(browser_client, shop["staff"])
    ann = shop["ann"]["id"]
    page = browser_client.get("/pos", params={"member": ann}).text
    form_id = re.search(
        r'rewards/free-coffee">\s*<input[^>]*>\s*<input type="hidden" name="form_id" value="([^"]+)"', page
    )
    assert form_id
    data = {"csrf_token": csrf_of(page), "form_id": form_id.group(1)}
    for _ in range(3):
        r = browser_client.post(f"/pos/members/{ann}/rewards/free-coffee", data=data)
        assert r.status_code == 303 and r.headers["location"].endswith("&redeemed=100")
    assert (points(engine, shop)["available"], points(engine, shop)["redeemed"]) == (200, 100)
