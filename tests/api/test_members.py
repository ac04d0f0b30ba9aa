"""Members over the API: enrolment, identifiers, lookup, status, export and erasure."""

from __future__ import annotations

import json
from typing import Any

from patron.domain.identity import luhn_valid
from tests.conftest import Api, purchase

COFFEE = [{"id": "l1", "sku": "LATTE", "category": "coffee", "quantity": 1, "unit_price": 500}]


def test_enrol_returns_identifiers_and_empty_balances(api: Api) -> None:
    program = api.program()
    r = api.post("/v1/members", {"program_id": program, "email": "Ann@Example.com", "name": "Ann Lee"})
    assert r.status_code == 201
    m = r.json()
    assert m["program_id"] == program
    assert m["status"] == "active"
    assert luhn_valid(m["card_number"])
    assert len(m["card_number"]) == 16
    assert len(m["referral_code"]) == 8
    assert m["points"] == {
        "available": 0,
        "pending": 0,
        "reserved": 0,
        "debt": 0,
        "lifetime_earned": 0,
        "expired": 0,
        "redeemed": 0,
    }
    assert m["tier"]["id"] == "member"


def test_duplicates_are_409_whatever_the_spelling(api: Api) -> None:
    program = api.program()
    api.member(program, email="ann@example.com", phone="+14155550123", external_id="c-1")
    for fields in (
        {"email": "ANN@example.COM"},
        {"phone": "+1 (415) 555-0123"},
        {"external_id": "c-1"},
    ):
        r = api.post("/v1/members", {"program_id": program, **fields})
        assert r.status_code == 409, fields
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["type"].endswith("/duplicate-member")
    # the same person may join another program of the merchant
    other = api.program()
    assert api.post("/v1/members", {"program_id": other, "email": "ann@example.com"}).status_code == 201


def test_lookup_by_every_identifier(api: Api) -> None:
    program = api.program()
    mid = api.member(program, email="Bob@Example.com", phone="+442071838750", external_id="crm-9")
    card = api.get(f"/v1/members/{mid}").json()["card_number"]
    for params in (
        {"email": "bob@EXAMPLE.com"},
        {"phone": "+44 20 7183 8750"},
        {"card_number": card},
        {"external_id": "crm-9"},
    ):
        r = api.get("/v1/members", params=params)
        assert r.status_code == 200
        assert [m["id"] for m in r.json()["data"]] == [mid], params
    assert api.get("/v1/members", params={"email": "nobody@example.com"}).json()["data"] == []


def test_referral_code_links_referee_and_unknown_code_is_422(api: Api) -> None:
    program = api.program()
    referrer = api.member(program, email="a@example.com")
    code = api.get(f"/v1/members/{referrer}").json()["referral_code"]
    r = api.post("/v1/members", {"program_id": program, "email": "b@example.com", "referral_code": code})
    assert r.status_code == 201
    assert r.json()["referred_by"] == referrer
    r = api.post(
        "/v1/members", {"program_id": program, "email": "c@example.com", "referral_code": "NOPE1234"}
    )
    assert r.status_code == 422
    assert api.get("/v1/members", params={"email": "c@example.com"}).json()["data"] == []


def test_suspended_member_cannot_earn_until_reactivated(api: Api) -> None:
    program = api.program()
    mid = api.member(program, email="s@example.com")
    assert api.patch(f"/v1/members/{mid}", {"status": "suspended"}).json()["status"] == "suspended"
    r = api.post("/v1/events", purchase(mid, "o-1", COFFEE))
    assert r.status_code == 409
    assert r.json()["type"].endswith("/member-inactive")
    assert api.points(mid)["available"] == 0
    api.patch(f"/v1/members/{mid}", {"status": "active"})
    assert api.event(purchase(mid, "o-1", COFFEE))["points"] == 10


def test_update_profile_and_closed_is_final(api: Api) -> None:
    program = api.program()
    mid = api.member(program, email="u@example.com")
    api.member(program, email="taken@example.com")
    r = api.patch(f"/v1/members/{mid}", {"name": "Una", "phone": "+14155550199"})
    assert r.status_code == 200
    assert r.json()["name"] == "Una"
    assert r.json()["phone"] == "+14155550199"
    assert api.patch(f"/v1/members/{mid}", {"email": "TAKEN@example.com"}).status_code == 409
    assert api.patch(f"/v1/members/{mid}", {"status": "closed"}).status_code == 200
    assert api.patch(f"/v1/members/{mid}", {"status": "active"}).status_code == 409


def test_export_holds_everything_and_erase_keeps_the_books(api: Api) -> None:
    program = api.program()
    mid = api.member(program, email="gdpr@example.com", name="Greta", phone="+14155550111")
    api.event(purchase(mid, "o-1", COFFEE))
    export = api.get(f"/v1/members/{mid}/export").json()
    assert export["member"]["email"] == "gdpr@example.com"
    assert [e["external_id"] for e in export["events"]] == ["o-1"]
    assert sum(p["amount"] for p in export["postings"]) == 0  # both sides of every journal
    before = api.points(mid)
    erased = api.post(f"/v1/members/{mid}/erase").json()
    assert erased["email"] is None
    assert erased["name"] is None
    assert erased["phone"] is None
    assert erased["status"] == "closed"
    assert erased["erased_at"]
    assert erased["points"] == before
    assert api.get("/v1/members", params={"email": "gdpr@example.com"}).json()["data"] == []
    assert api.get("/v1/verify").json() == {"ok": True, "problems": []}


def test_erasure_forgets_the_person_in_every_answer_kept_for_replays(api: Api) -> None:
    """Replays of the enrolment's Idempotency-Key, of the purchase's event id, and the business
    events other systems read no longer say who the member was."""
    program = api.program()
    enrol = {
        "program_id": program,
        "email": "forget@example.com",
        "name": "Forget Me",
        "phone": "+14155550112",
    }
    key = {"Idempotency-Key": "enrol-forget"}
    mid = api.post("/v1/members", enrol, headers=key).json()["id"]
    api.event(purchase(mid, "f-1", COFFEE))
    assert api.post(f"/v1/members/{mid}/erase").status_code == 200

    def said(value: Any) -> bool:
        text = json.dumps(value)
        return "forget@example.com" in text or "Forget Me" in text or "+14155550112" in text

    replay = api.post("/v1/members", enrol, headers=key)
    assert replay.headers.get("Idempotent-Replayed") == "true" and not said(replay.json())
    assert replay.json()["id"] == mid and replay.json()["email"] is None
    assert not said(api.get("/v1/events/f-1").json())
    assert not said(api.post("/v1/events", purchase(mid, "f-1", COFFEE)).json())  # the event's replay
    events = api.get("/v1/outbox-events", params={"member_id": mid, "limit": 100}).json()["data"]
    assert events and not said(events)
    assert api.get("/v1/verify").json()["ok"] is True


def test_the_balance_read_is_the_members_points_and_404_elsewhere(api: Api, other_api: Api) -> None:
    program = api.program()
    mid = api.member(program, email="bal@example.com")
    api.event(purchase(mid, "bal-1", [{"id": "l1", "category": "coffee", "quantity": 1, "unit_price": 450}]))
    r = api.get(f"/v1/members/{mid}/balance")
    assert r.status_code == 200, r.text
    assert r.json() == {"member_id": mid, "points": api.points(mid)}
    assert r.json()["points"]["available"] == 9
    assert other_api.get(f"/v1/members/{mid}/balance").status_code == 404
    assert api.get("/v1/members/mem_nope/balance").status_code == 404
