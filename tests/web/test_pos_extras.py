"""The till's extras: record a purchase with an amount, and check a ticket in at the door."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from patron.services import tickets
from patron.services.clock import utcnow
from patron.web.pos import parse_amount
from tests.web.conftest import build_shop, csrf_of, sign_in
from tests.web.test_pos import points


def purchase_form(client: TestClient, member_id: str) -> dict[str, str]:
    page = client.get("/pos", params={"member": member_id}).text
    found = re.search(r'name="purchase_id" value="([^"]+)"', page)
    assert found and 'id="pos-amount"' in page
    return {"csrf_token": csrf_of(page), "purchase_id": found.group(1)}


def test_record_a_purchase_once_per_form(
    browser_client: TestClient, shop: dict[str, Any], engine: Engine
) -> None:
    sign_in(browser_client, shop["staff"])
    bob = shop["bob"]["id"]
    form = {**purchase_form(browser_client, bob), "amount": "12.50"}
    for _ in range(2):  # a double tap replays the same event
        r = browser_client.post(f"/pos/members/{bob}/purchase", data=form)
        assert r.status_code == 303
    page = browser_client.get(r.headers["location"]).text
    assert "Purchase of $12.50 recorded: +12 points." in page
    assert 'id="pos-balance">12<' in page
    assert points(engine, shop, "bob")["available"] == 12
    with engine.begin() as conn:
        from patron.services.events import get_event

        event = get_event(
            conn, merchant_id=shop["merchant_id"], event_id=f"pos-purchase-{form['purchase_id']}"
        )
    assert event["type"] == "purchase"


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        ("", "Type the amount paid, like 12.50."),
        ("twelve", "Type the amount paid, like 12.50."),
        ("0", "The amount must be more than zero."),
        ("-5", "The amount must be more than zero."),
        ("1.999", "Use at most 2 decimals for USD."),
    ],
)
def test_a_bad_amount_is_explained_beside_the_field(
    browser_client: TestClient, shop: dict[str, Any], engine: Engine, amount: str, message: str
) -> None:
    sign_in(browser_client, shop["staff"])
    bob = shop["bob"]["id"]
    form = {**purchase_form(browser_client, bob), "amount": amount}
    r = browser_client.post(f"/pos/members/{bob}/purchase", data=form)
    assert r.status_code == 422
    assert f'id="pos-amount-error">{message}<' in r.text
    assert 'aria-describedby="pos-amount-error"' in r.text
    assert f'name="amount" value="{amount}"' in r.text  # what was typed stays
    assert points(engine, shop, "bob")["available"] == 0


def test_amounts_in_minor_units() -> None:
    assert parse_amount("12.50", "USD") == 1250
    assert parse_amount("12,5", "EUR") == 1250
    assert parse_amount(" 1 200 ", "JPY") == 1200
    assert parse_amount("7", "USD") == 700
    assert parse_amount("1,200", "USD") == 120000  # a thousands separator, not a decimal comma
    assert parse_amount("1,200.50", "USD") == 120050


def test_purchase_needs_csrf_and_the_merchants_own_member(
    browser_client: TestClient, shop: dict[str, Any], engine: Engine
) -> None:
    other = build_shop(engine)
    sign_in(browser_client, shop["staff"])
    form = purchase_form(browser_client, shop["bob"]["id"])
    r = browser_client.post(f"/pos/members/{shop['bob']['id']}/purchase", data={"amount": "5"})
    assert r.status_code == 403
    theirs = other["ann"]["id"]
    r = browser_client.post(f"/pos/members/{theirs}/purchase", data={**form, "amount": "5"})
    assert r.status_code == 404 and "There is nothing here" in r.text
    assert points(engine, other)["available"] == 300


def _ticket(engine: Engine, shop: dict[str, Any], name: str = "Cupping class") -> dict[str, Any]:
    with engine.begin() as conn:
        event = tickets.create_event(
            conn,
            merchant_id=shop["merchant_id"],
            program_id=shop["program_id"],
            name=name,
            place="Roastery",
            starts_at=utcnow() + timedelta(days=3),
            capacity=5,
            audience=[],
            price=0,
            waitlist=False,
        )
        return tickets.rsvp(
            conn, merchant_id=shop["merchant_id"], event_id=event["id"], member_id=shop["ann"]["id"]
        )


def test_check_in_a_ticket_exactly_once(
    browser_client: TestClient, shop: dict[str, Any], engine: Engine
) -> None:
    ticket = _ticket(engine, shop)
    sign_in(browser_client, shop["staff"])
    csrf = csrf_of(browser_client.get("/pos").text)
    r = browser_client.post(
        "/pos/tickets/check-in", data={"ticket_code": ticket["code"].lower(), "csrf_token": csrf}
    )
    assert r.status_code == 200
    assert "Checked in: Ann Lee" in r.text and "Cupping class" in r.text
    with engine.begin() as conn:
        stored = tickets.get_ticket(conn, merchant_id=shop["merchant_id"], ticket_id=ticket["id"])
    assert stored["status"] == "checked_in"
    again = browser_client.post(
        "/pos/tickets/check-in", data={"ticket_code": ticket["code"], "csrf_token": csrf}
    )
    assert again.status_code == 409
    assert re.search(
        r"This ticket was already checked in at \d{1,2} \w{3} \d{4}, \d\d:\d\d UTC\.", again.text
    )
    assert "Checked in: Ann Lee" not in again.text


def test_ticket_check_in_errors(browser_client: TestClient, shop: dict[str, Any], engine: Engine) -> None:
    other = build_shop(engine)
    theirs = _ticket(engine, other, "Their event")
    sign_in(browser_client, shop["staff"])
    csrf = csrf_of(browser_client.get("/pos").text)
    empty = browser_client.post("/pos/tickets/check-in", data={"ticket_code": " ", "csrf_token": csrf})
    assert (
        empty.status_code == 422
        and 'id="pos-ticket-error">Type or scan the code on the ticket.<' in empty.text
    )
    unknown = browser_client.post(
        "/pos/tickets/check-in", data={"ticket_code": theirs["code"], "csrf_token": csrf}
    )
    assert unknown.status_code == 404 and f"No ticket has the code {theirs['code']}." in unknown.text
    with engine.begin() as conn:
        assert (
            tickets.get_ticket(conn, merchant_id=other["merchant_id"], ticket_id=theirs["id"])["status"]
            == "issued"
        )
    assert (
        browser_client.post("/pos/tickets/check-in", data={"ticket_code": theirs["code"]}).status_code == 403
    )

    mine = _ticket(engine, shop, "Cancelled later")
    with engine.begin() as conn:
        tickets.cancel(conn, merchant_id=shop["merchant_id"], ticket_id=mine["id"])
    r = browser_client.post("/pos/tickets/check-in", data={"ticket_code": mine["code"], "csrf_token": csrf})
    assert r.status_code == 409 and "this ticket was cancelled" in r.text
