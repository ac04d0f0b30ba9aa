"""The portal's extra pages and the till's ticket check-in in a real browser (Chromium, driven by
Playwright) against a real server, as in ``test_browser.py``; screenshots go to the same folder."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from tests.web.browser_support import chromium, web_server
from tests.web.test_browser import ARTIFACTS, CHROMIUM, PASSWORD, _no_sideways_scroll, _shot

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason="browser tests need Chromium at /usr/bin/chromium"),
    pytest.mark.xdist_group("browser"),
]


def _seed(url: str) -> dict[str, Any]:
    from argon2 import PasswordHasher

    from patron.services import portal, tickets, users
    from patron.services.clock import utcnow
    from patron.services.demo import build_demo
    from patron.storage.db import make_engine, migrate

    engine = make_engine(url)
    migrate(engine)
    cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(users, "_hasher", lambda: cheap)
        with engine.begin() as conn:
            demo = build_demo(conn, members=20)
            mid = demo["merchant_id"]
            users.create_user(
                conn, merchant_id=mid, email="till@demo.example", password=PASSWORD, role="staff"
            )
            member = portal.member_home(conn, merchant_id=mid, member_id=demo["sample_member"])["member"]
            event = tickets.create_event(
                conn,
                merchant_id=mid,
                program_id=member["program_id"],
                name="Latte art night",
                place="Downtown",
                starts_at=utcnow() + timedelta(days=5),
                capacity=20,
                audience=[],
                price=0,
                waitlist=False,
            )
            ticket = tickets.rsvp(conn, merchant_id=mid, event_id=event["id"], member_id=member["id"])
            link = portal.create_login_link(
                conn, merchant_id=mid, member_id=member["id"], base_url="http://placeholder"
            )
    engine.dispose()
    return {
        **demo,
        "member": member,
        "ticket": ticket,
        "login_path": link["url"].removeprefix("http://placeholder"),
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    url = f"sqlite:///{tmp_path_factory.mktemp('browser-extras') / 'patron.db'}"
    seeded = _seed(url)
    with web_server(url, drop_env=("PATRON_APPLE_", "PATRON_GOOGLE_WALLET_")) as base:
        yield {**seeded, "base": base}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


def test_a_member_on_a_phone_shares_the_referral_link_and_prints_the_card(
    server: dict[str, Any], browser: Any
) -> None:
    from playwright.sync_api import expect

    member = server["member"]
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.goto(server["base"] + server["login_path"])
    expect(page).to_have_url(server["base"] + "/portal")
    more = page.get_by_role("navigation", name="More")
    expect(more).to_be_visible()
    more.scroll_into_view_if_needed()
    _shot(page, "portal-more-390", full_page=False)

    more.get_by_role("link", name="Invite a friend").click()
    expect(page).to_have_url(server["base"] + "/portal/referral")
    expect(page.locator("#referral-code")).to_have_text(member["referral_code"])
    link = page.get_by_label("Your invitation link")
    expect(link).to_have_value(f"{server['base']}/portal/join?ref={member['referral_code']}")
    qr = page.locator(".share-qr svg")
    expect(qr).to_be_visible()
    box = qr.bounding_box()
    assert box and box["width"] >= 120  # big enough for a phone camera
    _no_sideways_scroll(page, 390)
    _shot(page, "portal-referral-390")

    page.goto(link.input_value())  # what the friend sees
    expect(page.locator("#join-code")).to_have_text(member["referral_code"])
    _no_sideways_scroll(page, 390)

    page.goto(server["base"] + "/portal/tickets")
    expect(page.get_by_role("heading", name="Latte art night")).to_be_visible()
    expect(page.locator(".ticket-qr svg")).to_be_visible()
    _no_sideways_scroll(page, 390)
    _shot(page, "portal-tickets-390")

    page.goto(server["base"] + "/portal/surveys")
    page.get_by_role("button", name="Send").first.click()
    expect(page.locator("#score-error")).to_have_text("Choose a score from 0 to 10.")
    page.locator("label.scale-option", has_text="9").first.click()
    page.get_by_role("button", name="Send").first.click()
    expect(page.locator("#survey-thanks")).to_be_visible()
    _no_sideways_scroll(page, 390)
    _shot(page, "portal-surveys-390")

    page.goto(server["base"] + "/portal/preferences")
    _no_sideways_scroll(page, 390)
    _shot(page, "portal-preferences-390")

    page.goto(server["base"] + "/portal")
    page.get_by_role("navigation", name="More").get_by_role("link", name="Printable card").click()
    expect(page).to_have_url(server["base"] + "/portal/card")
    card = page.locator(".print-card")
    expect(card.locator(".card-number")).to_have_text(member["card_number"])
    expect(card.locator("svg.qr")).to_be_visible()
    _no_sideways_scroll(page, 390)
    _shot(page, "portal-printable-card-390")
    page.emulate_media(media="print")
    expect(page.get_by_role("button", name="Print")).to_be_hidden()
    expect(card).to_be_visible()
    card_box = card.bounding_box()
    assert card_box and 300 <= card_box["width"] <= 340  # 85.6 mm at 96 dpi is about 324 px
    _shot(page, "portal-printable-card-print")
    context.close()


def test_staff_check_a_ticket_in_at_the_till(server: dict[str, Any], browser: Any) -> None:
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1024, "height": 768}, has_touch=True)
    page = context.new_page()
    page.goto(server["base"] + "/pos")
    page.get_by_label("Email").fill("till@demo.example")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(server["base"] + "/pos")

    code = server["ticket"]["code"]
    page.get_by_label("Ticket code").fill(code.lower())
    button = page.get_by_role("button", name="Check in")
    box = button.bounding_box()
    assert box and box["height"] >= 56  # a big touch target
    button.click()
    expect(page.locator("#ticket-result")).to_contain_text(f"Checked in: {server['member']['name']}")
    expect(page.locator("#ticket-result")).to_contain_text("Latte art night")
    _no_sideways_scroll(page, 1024)
    _shot(page, "pos-ticket-checked-in")

    page.get_by_label("Ticket code").fill(code)
    page.get_by_role("button", name="Check in").click()
    expect(page.locator("#pos-error")).to_contain_text("already checked in")
    _shot(page, "pos-ticket-again")

    page.get_by_label("Card number or phone (with country code)").fill(server["member"]["card_number"])
    page.get_by_role("button", name="Find").click()
    before = int(page.locator("#pos-balance").inner_text().replace(",", ""))
    page.get_by_label("Purchase amount (USD)").fill("abc")
    page.get_by_role("button", name="Record purchase").click()
    expect(page.locator("#pos-amount-error")).to_have_text("Type the amount paid, like 12.50.")
    page.get_by_label("Purchase amount (USD)").fill("8.40")
    page.get_by_role("button", name="Record purchase").click()
    expect(page.locator("#pos-notice")).to_contain_text("Purchase of $8.40 recorded")
    after = int(page.locator("#pos-balance").inner_text().replace(",", ""))
    assert after > before
    _shot(page, "pos-purchase-recorded")
    context.close()
    assert ARTIFACTS.exists()
