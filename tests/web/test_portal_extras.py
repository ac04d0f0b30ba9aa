"""The portal's extra pages as a member uses them: tickets, referral link, punch cards, surveys,
email preferences, download my data, and the wallet passes."""

from __future__ import annotations

import io
import json
import re
import zipfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from patron.services import notifications, surveys, tickets
from patron.services.clock import utcnow
from patron.services.events import record_event
from patron.services.members import MemberCreate, enrol
from patron.services.programs import create_program
from tests.conftest import bean_rewards
from tests.web.conftest import build_shop, csrf_of, unique
from tests.web.test_portal import link_for

WALLET_VARS = (
    "PATRON_APPLE_PASS_CERT",
    "PATRON_APPLE_PASS_KEY",
    "PATRON_APPLE_PASS_KEY_PASSWORD",
    "PATRON_APPLE_WWDR_CERT",
    "PATRON_APPLE_PASS_TYPE_ID",
    "PATRON_APPLE_TEAM_ID",
    "PATRON_GOOGLE_WALLET_ISSUER_ID",
    "PATRON_GOOGLE_WALLET_KEY_FILE",
    "PATRON_GOOGLE_WALLET_CLASS_ID",
)


@pytest.fixture(autouse=True)
def _no_wallet_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in WALLET_VARS:
        monkeypatch.delenv(name, raising=False)


def signed_in(client: TestClient, engine: Engine, shop: dict[str, Any], member: str = "ann") -> None:
    r = client.get(link_for(engine, shop, member))
    assert r.status_code == 303


def test_home_links_to_every_extra_page(
    browser_client: TestClient, shop: dict[str, Any], engine: Engine
) -> None:
    signed_in(browser_client, engine, shop)
    home = browser_client.get("/portal").text
    for path in ("/portal/tickets", "/portal/punch-cards", "/portal/referral", "/portal/surveys",
                 "/portal/preferences", "/portal/card"):  # fmt: skip
        assert f'href="{path}"' in home, path
        assert browser_client.get(path).status_code == 200, path
    assert "Apple Wallet" not in home and "Google Wallet" not in home  # not configured: no buttons


def test_every_extra_page_needs_a_member_session(browser_client: TestClient) -> None:
    for path in ("/portal/tickets", "/portal/referral", "/portal/punch-cards", "/portal/surveys",
                 "/portal/preferences", "/portal/my-data.json", "/portal/wallet.pkpass"):  # fmt: skip
        r = browser_client.get(path)
        assert r.status_code == 401 and "sign-in link" in r.text, path


def test_tickets_show_a_qr_code_until_used(
    browser_client: TestClient, shop: dict[str, Any], engine: Engine
) -> None:
    with engine.begin() as conn:
        event = tickets.create_event(
            conn,
            merchant_id=shop["merchant_id"],
            program_id=shop["program_id"],
            name="Latte art night",
            place="Downtown",
            starts_at=utcnow() + timedelta(days=7),
            capacity=10,
            audience=[],
            price=0,
            waitlist=False,
        )
        ticket = tickets.rsvp(
            conn, merchant_id=shop["merchant_id"], event_id=event["id"], member_id=shop["ann"]["id"]
        )
    signed_in(browser_client, engine, shop)
    page = browser_client.get("/portal/tickets").text
    assert "Latte art night" in page and "Show this QR code at the door." in page
    assert ticket["code"] in page and "QR code of your ticket for Latte art night" in page
    with engine.begin() as conn:
        tickets.check_in(conn, merchant_id=shop["merchant_id"], code=ticket["code"])
    used = browser_client.get("/portal/tickets").text
    assert "Used: checked in" in used and ticket["code"] not in used

    bob = TestClient(browser_client.app, follow_redirects=False)
    signed_in(bob, engine, shop, "bob")
    assert "You have no tickets yet." in bob.get("/portal/tickets").text


def test_referral_page_has_the_code_link_and_qr(
    browser_client: TestClient, shop: dict[str, Any], engine: Engine
) -> None:
    signed_in(browser_client, engine, shop)
    code = shop["ann"]["referral_code"]
    page = browser_client.get("/portal/referral").text
    assert f'id="referral-code">{code}<' in page
    assert f'value="http://testserver/portal/join?ref={code}"' in page
    assert "QR code of your invitation link" in page
    assert "you get 500 points and they get 250 points" in page
    assert "No completed referrals yet." in page
    landing = TestClient(browser_client.app).get(f"/portal/join?ref={code}")
    assert landing.status_code == 200 and f'id="join-code">{code}<' in landing.text


def test_a_completed_referral_is_counted(
    browser_client: TestClient, shop: dict[str, Any], engine: Engine
) -> None:
    tag = unique("ref")
    with engine.begin() as conn:
        friend = enrol(
            conn,
            merchant_id=shop["merchant_id"],
            data=MemberCreate(
                program_id=shop["program_id"],
                name="Cy Friend",
                email=f"cy-{tag}@example.com",
                referral_code=shop["ann"]["referral_code"],
            ),
        )
        record_event(
            conn,
            merchant_id=shop["merchant_id"],
            body={
                "id": f"first-{tag}",
                "type": "purchase",
                "member_id": friend["id"],
                "currency": "USD",
                "items": [{"id": "l1", "unit_price": 2500}],
            },
        )
    signed_in(browser_client, engine, shop)
    page = browser_client.get("/portal/referral").text
    assert "1 friend has joined and made a first purchase." in page


def test_punch_card_progress(browser_client: TestClient, engine: Engine) -> None:
    shop = build_shop(engine)
    tag = unique("pc")
    body = bean_rewards(
        name="Stamp Club",
        earning_rules=[
            {"id": "base", "type": "spend", "points": 1, "per_amount": 100, "name": "Base"},
            {
                "id": "card",
                "type": "punch_card",
                "punches": 5,
                "reward_id": "free-coffee",
                "name": "Coffee card",
            },
        ],
        tiers=None,
    )
    with engine.begin() as conn:
        program = create_program(conn, merchant_id=shop["merchant_id"], body=body)
        member = enrol(
            conn,
            merchant_id=shop["merchant_id"],
            data=MemberCreate(program_id=program["id"], name="Di Stamp", email=f"di-{tag}@example.com"),
        )
        for day in (1, 2):
            record_event(
                conn,
                merchant_id=shop["merchant_id"],
                body={
                    "id": f"v-{tag}-{day}",
                    "type": "visit",
                    "member_id": member["id"],
                    "occurred_at": (utcnow() - timedelta(days=day)).isoformat(),
                },
            )
    signed_in(browser_client, engine, {**shop, "di": member}, "di")
    page = browser_client.get("/portal/punch-cards").text
    assert "Coffee card" in page and "2 of 5 stamps" in page
    assert "3 more stamps to your next Free coffee." in page
    assert page.count('class="punch punched"') == 2
    other = TestClient(browser_client.app, follow_redirects=False)
    signed_in(other, engine, shop)
    assert "This program has no punch cards." in other.get("/portal/punch-cards").text


def test_answer_nps_and_cli_through_the_portal(
    browser_client: TestClient, shop: dict[str, Any], engine: Engine
) -> None:
    signed_in(browser_client, engine, shop)
    page = browser_client.get("/portal/surveys").text
    csrf = csrf_of(page)
    assert browser_client.post("/portal/surveys/nps", data={"score": "9"}).status_code == 403

    missing = browser_client.post("/portal/surveys/nps", data={"csrf_token": csrf, "comment": "Nice"})
    assert missing.status_code == 422
    assert (
        'id="score-error">Choose a score from 0 to 10.<' in missing.text
        and ">Nice</textarea>" in missing.text
    )
    out_of_range = browser_client.post("/portal/surveys/nps", data={"csrf_token": csrf, "score": "11"})
    assert out_of_range.status_code == 422
    for digit in ("²", "①", "٣"):  # digits to str.isdigit(), not numbers
        assert (
            browser_client.post("/portal/surveys/nps", data={"csrf_token": csrf, "score": digit}).status_code
            == 422
        )

    r = browser_client.post(
        "/portal/surveys/nps", data={"csrf_token": csrf, "score": "9", "comment": "Great"}
    )
    assert r.status_code == 303
    assert "Thank you! Your answer is saved." in browser_client.get(r.headers["location"]).text

    bad = browser_client.post(
        "/portal/surveys/cli", data={"csrf_token": csrf, "recommend": "5", "buy_again": "7"}
    )
    assert bad.status_code == 422
    assert 'id="buy_again-error">Choose an answer from 1 to 6.<' in bad.text
    assert 'id="try_other-error">' in bad.text and 'id="recommend-error"' not in bad.text
    assert 'name="recommend" value="5" checked' in bad.text  # what was chosen stays chosen
    r = browser_client.post(
        "/portal/surveys/cli",
        data={"csrf_token": csrf, "recommend": "5", "buy_again": "6", "try_other": "4"},
    )
    assert r.status_code == 303

    with engine.begin() as conn:
        answers = surveys.member_responses(conn, merchant_id=shop["merchant_id"], member_id=shop["ann"]["id"])
    assert {(a["kind"], a["channel"]) for a in answers} == {("nps", "portal"), ("cli", "portal")}
    nps = next(a for a in answers if a["kind"] == "nps")
    cli = next(a for a in answers if a["kind"] == "cli")
    assert nps["score"] == 9 and nps["comment"] == "Great"
    assert (cli["recommend"], cli["buy_again"], cli["try_other"]) == (5, 6, 4)
    again = browser_client.get("/portal/surveys").text
    assert "recommend score 9 of 10" in again and "loyalty answers 5, 6, 4 of 6" in again

    nps_id = re.search(
        r'surveys/nps" novalidate>\s*<input[^>]*>\s*<input type="hidden" name="form_id" value="([^"]+)"',
        again,
    )
    assert nps_id
    twice = {"csrf_token": csrf, "score": "10", "form_id": nps_id.group(1)}
    for _ in range(2):  # sent twice: answered once
        assert browser_client.post("/portal/surveys/nps", data=twice).status_code == 303
    with engine.begin() as conn:
        answers = surveys.member_responses(conn, merchant_id=shop["merchant_id"], member_id=shop["ann"]["id"])
    assert sorted(a["score"] for a in answers if a["kind"] == "nps") == [9, 10]


def test_choose_emails_and_unsubscribe(
    browser_client: TestClient, shop: dict[str, Any], engine: Engine
) -> None:
    def prefs() -> dict[str, Any]:
        with engine.begin() as conn:
            return notifications.get_preferences(
                conn, merchant_id=shop["merchant_id"], member_id=shop["ann"]["id"]
            )

    signed_in(browser_client, engine, shop)
    page = browser_client.get("/portal/preferences").text
    assert 'id="msg-win_back" name="messages" value="win_back" checked' in page
    csrf = csrf_of(page)
    assert browser_client.post("/portal/preferences", data={"messages": ["expiry"]}).status_code == 403
    r = browser_client.post(
        "/portal/preferences", data={"csrf_token": csrf, "messages": ["expiry", "points_earned"]}
    )
    assert r.status_code == 303
    saved = browser_client.get(r.headers["location"]).text
    assert "Your choices are saved." in saved
    assert 'value="win_back" checked' not in saved and 'value="expiry" checked' in saved
    messages = prefs()["messages"]
    assert messages["expiry"] and messages["points_earned"] and not messages["win_back"]

    r = browser_client.post("/portal/preferences/unsubscribe", data={"csrf_token": csrf})
    assert r.status_code == 303
    page = browser_client.get(r.headers["location"]).text
    assert "You will get no more emails from us." in page and 'id="unsubscribed"' in page
    assert prefs()["subscribed"] is False
    r = browser_client.post("/portal/preferences/subscribe", data={"csrf_token": csrf})
    assert r.status_code == 303 and prefs()["subscribed"] is True
    assert prefs()["messages"]["expiry"] and not prefs()["messages"]["win_back"]  # choices kept


def test_download_my_data(browser_client: TestClient, shop: dict[str, Any], engine: Engine) -> None:
    signed_in(browser_client, engine, shop)
    assert 'href="/portal/my-data.json"' in browser_client.get("/portal/preferences").text
    r = browser_client.get("/portal/my-data.json")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    assert "attachment" in r.headers["content-disposition"]
    data = json.loads(r.content)
    assert data["member"]["id"] == shop["ann"]["id"] and data["member"]["name"] == "Ann Lee"
    assert data["member"]["points"]["available"] == 300
    assert any(e["type"] == "purchase" for e in data["events"])
    assert sum(p["amount"] for p in data["postings"] if p["account"].endswith("available")) == 300
    assert shop["bob"]["id"] not in r.text


def test_wallet_urls_are_404_when_not_configured(
    browser_client: TestClient, shop: dict[str, Any], engine: Engine
) -> None:
    signed_in(browser_client, engine, shop)
    apple = browser_client.get("/portal/wallet.pkpass")
    assert apple.status_code == 404 and "Apple Wallet is not available" in apple.text
    google = browser_client.get("/portal/wallet/google")
    assert google.status_code == 404 and "Google Wallet is not available" in google.text


def test_apple_wallet_pass_when_configured(
    browser_client: TestClient,
    shop: dict[str, Any],
    engine: Engine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.unit.test_wallet import make_apple_files

    for name, value in make_apple_files(tmp_path).items():
        monkeypatch.setenv(name, value)
    signed_in(browser_client, engine, shop)
    home = browser_client.get("/portal").text
    assert 'href="/portal/wallet.pkpass"' in home and "Add to Apple Wallet" in home
    assert "Google Wallet" not in home
    r = browser_client.get("/portal/wallet.pkpass")
    assert r.status_code == 200 and r.headers["content-type"] == "application/vnd.apple.pkpass"
    assert f'filename="{shop["ann"]["card_number"]}.pkpass"' in r.headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(r.content)) as z:
        p = json.loads(z.read("pass.json"))
        assert {"manifest.json", "signature"} <= set(z.namelist())
    assert p["barcodes"][0]["message"] == shop["ann"]["card_number"]
    assert p["storeCard"]["primaryFields"][0]["value"] == 300
    assert p["serialNumber"] == shop["ann"]["id"]

    monkeypatch.setenv("PATRON_APPLE_PASS_KEY", str(tmp_path / "gone.key"))
    broken = browser_client.get("/portal/wallet.pkpass")
    assert broken.status_code == 503 and "not working right now" in broken.text


def test_google_wallet_link_when_configured(
    browser_client: TestClient,
    shop: dict[str, Any],
    engine: Engine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.unit.test_wallet import decode_jwt, make_google_file

    env, public = make_google_file(tmp_path)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    signed_in(browser_client, engine, shop, "bob")
    home = browser_client.get("/portal").text
    assert 'href="/portal/wallet/google"' in home and "Apple Wallet" not in home
    r = browser_client.get("/portal/wallet/google")
    assert r.status_code == 303
    location = r.headers["location"]
    assert location.startswith("https://pay.google.com/gp/v/save/")
    claims = decode_jwt(location.rsplit("/", 1)[1], public)
    (obj,) = claims["payload"]["loyaltyObjects"]
    assert obj["accountId"] == shop["bob"]["card_number"] and obj["accountName"] == "Bob Stone"
    assert obj["loyaltyPoints"]["balance"] == {"int": 0}
    assert claims["origins"] == ["http://testserver"]


def test_without_the_cryptography_package_no_wallet_is_offered(
    browser_client: TestClient,
    shop: dict[str, Any],
    engine: Engine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from patron.services import wallet

    monkeypatch.setenv("PATRON_GOOGLE_WALLET_ISSUER_ID", "123")
    monkeypatch.setenv("PATRON_GOOGLE_WALLET_KEY_FILE", str(tmp_path / "key.json"))
    signed_in(browser_client, engine, shop)
    assert "Save to Google Wallet" in browser_client.get("/portal").text
    monkeypatch.setattr(wallet, "crypto_available", lambda: False)
    assert "Save to Google Wallet" not in browser_client.get("/portal").text
    assert browser_client.get("/portal/wallet/google").status_code == 404


def test_printable_card_fits_a_card_and_prints(
    browser_client: TestClient, shop: dict[str, Any], engine: Engine
) -> None:
    signed_in(browser_client, engine, shop)
    page = browser_client.get("/portal/card").text
    assert re.search(r'class="print-card"', page) and shop["ann"]["card_number"] in page
    css = browser_client.get("/static/patron.css").text
    assert "width: 85.6mm" in css and "@media print" in css
