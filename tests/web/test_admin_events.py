"""Members-only events in the console: create one (a bad form comes back with the messages beside
the fields), see seats taken and the guest list, check a ticket in at the door exactly once; another
merchant's event is the same 404."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from patron.services import tickets
from patron.services.clock import utcnow
from tests.web.conftest import build_shop, csrf_of, sign_in


def _create(client: TestClient, **fields: Any) -> Any:
    page = client.get("/admin/events")
    assert page.status_code == 200
    data = {"csrf_token": csrf_of(page.text), **fields}
    return client.post("/admin/events", data=data)


def _later(days: int = 7) -> str:
    return (
        (utcnow() + timedelta(days=days)).astimezone(ZoneInfo("America/New_York")).strftime("%Y-%m-%dT19:00")
    )


def test_an_owner_creates_an_event_and_a_bad_form_keeps_what_was_typed(
    browser_client: TestClient, shop: dict[str, Any]
) -> None:
    sign_in(browser_client, shop["owner"])
    r = _create(
        browser_client, name="", place="Roastery", starts_at="2001-01-01T10:00", capacity="zero", price="-5"
    )
    assert r.status_code == 422
    assert 'id="ev-name-error"' in r.text and 'id="ev-capacity-error">Enter a whole number' in r.text
    assert 'id="ev-price-error">Enter a number from 0' in r.text
    assert 'value="Roastery"' in r.text  # what was typed stays
    r = _create(
        browser_client,
        name="Old times",
        place="Roastery",
        starts_at="2001-01-01T10:00",
        capacity="5",
        price="0",
    )
    assert r.status_code == 422 and 'id="ev-starts_at-error">Choose a time in the future.' in r.text
    assert "Old times</a>" not in r.text  # nothing was created

    r = _create(
        browser_client,
        name="Tasting evening",
        place="Roastery",
        starts_at=_later(),
        capacity="2",
        price="0",
        audience="gold",
        waitlist="on",
    )
    assert r.status_code == 303
    page = browser_client.get(r.headers["location"])
    assert "Event created." in page.text
    row = re.search(r"Tasting evening</a>.*?</tr>", page.text, re.S)
    assert row and "0 of 2" in row.group(0) and "free" in row.group(0)


def test_the_guest_list_and_checking_a_ticket_in_once_at_the_door(
    browser_client: TestClient, shop: dict[str, Any], engine: Engine
) -> None:
    mid = shop["merchant_id"]
    with engine.begin() as conn:
        event = tickets.create_event(
            conn,
            merchant_id=mid,
            program_id=shop["program_id"],
            name="Latte art class",
            place="Downtown",
            starts_at=utcnow() + timedelta(days=3),
            capacity=10,
            audience=[],
            price=0,
            waitlist=True,
        )
        ann = tickets.rsvp(conn, merchant_id=mid, event_id=event["id"], member_id=shop["ann"]["id"])
        bob = tickets.rsvp(conn, merchant_id=mid, event_id=event["id"], member_id=shop["bob"]["id"])
        tickets.cancel(conn, merchant_id=mid, ticket_id=bob["id"])
    sign_in(browser_client, shop["owner"])
    listing = browser_client.get("/admin/events").text
    assert "Latte art class" in listing and "1 of 10" in listing
    url = f"/admin/events/{event['id']}"
    page = browser_client.get(url)
    assert page.status_code == 200
    assert "Ann Lee" in page.text and "Bob Stone" in page.text and "cancelled" in page.text
    csrf = csrf_of(page.text)

    r = browser_client.post(f"{url}/check-in", data={"code": "NOPE-NOPE", "csrf_token": csrf})
    assert (
        r.status_code == 422 and 'id="ticket-code-error"' in r.text and "No ticket for this event" in r.text
    )
    r = browser_client.post(f"{url}/check-in", data={"code": bob["code"], "csrf_token": csrf})
    assert r.status_code == 409 and "This ticket was cancelled" in r.text
    r = browser_client.post(f"{url}/check-in", data={"code": ann["code"].lower(), "csrf_token": csrf})
    assert r.status_code == 200
    assert f"Checked in: Ann Lee (ticket {ann['code']})" in r.text
    assert 'id="checked-in-count">1<' in r.text
    r = browser_client.post(f"{url}/check-in", data={"code": ann["code"], "csrf_token": csrf})
    assert r.status_code == 409 and "already checked in" in r.text
    r = browser_client.post(f"{url}/check-in", data={"code": ann["code"]})
    assert r.status_code == 403


def test_another_merchants_event_is_not_found(
    browser_client: TestClient, shop: dict[str, Any], engine: Engine
) -> None:
    other = build_shop(engine)
    with engine.begin() as conn:
        theirs = tickets.create_event(
            conn,
            merchant_id=other["merchant_id"],
            program_id=other["program_id"],
            name="Their party",
            place="Elsewhere",
            starts_at=utcnow() + timedelta(days=3),
            capacity=10,
            audience=[],
            price=0,
            waitlist=False,
        )
        ticket = tickets.rsvp(
            conn, merchant_id=other["merchant_id"], event_id=theirs["id"], member_id=other["ann"]["id"]
        )
    sign_in(browser_client, shop["owner"])
    page = browser_client.get("/admin/events")
    assert "Their party" not in page.text
    r = browser_client.get(f"/admin/events/{theirs['id']}")
    assert r.status_code == 404 and "Their party" not in r.text
    r = browser_client.post(
        f"/admin/events/{theirs['id']}/check-in",
        data={"code": ticket["code"], "csrf_token": csrf_of(page.text)},
    )
    assert r.status_code == 404
    r = browser_client.get(f"/admin/events?program={other['program_id']}")
    assert r.status_code == 404
