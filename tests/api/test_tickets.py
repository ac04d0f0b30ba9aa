"""Members-only events: create, RSVP (free and paid), waitlist, cancel, QR codes, check-in at the
door, capacity under concurrent RSVPs, tenancy and bad input."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine

from patron.services import tickets as tickets_service
from patron.services.jobs import run_job
from tests.conftest import Api, bean_rewards


def soon(days: int = 7) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat()


def new_event(api: Api, program: str, expect: int = 201, **fields: Any) -> dict[str, Any]:
    body = {"name": "Tasting night", "starts_at": soon(), "place": "Main St roastery", "capacity": 2}
    r = api.post(f"/v1/programs/{program}/ticketed-events", {**body, **fields})
    assert r.status_code == expect, r.text
    return dict(r.json())


def funded(api: Api, program: str, points: int, email: str) -> str:
    member = api.member(program, email=email)
    r = api.post(f"/v1/members/{member}/adjustments", {"points": points, "reason": "welcome"})
    assert r.status_code == 201, r.text
    return member


def rsvp(api: Api, event_id: str, member: str, expect: int = 201) -> dict[str, Any]:
    r = api.post(f"/v1/ticketed-events/{event_id}/rsvp", {"member_id": member})
    assert r.status_code == expect, r.text
    return dict(r.json())


def test_free_event_ticket_qr_and_check_in_once(api: Api) -> None:
    program = api.program()
    event = new_event(api, program)
    assert event["status"] == "scheduled" and event["seats_left"] == 2 and event["price"] == 0
    assert api.get(f"/v1/ticketed-events/{event['id']}").json()["name"] == "Tasting night"
    listed = api.get(f"/v1/programs/{program}/ticketed-events").json()["data"]
    assert [e["id"] for e in listed] == [event["id"]]

    member = api.member(program, email="a@example.com")
    ticket = rsvp(api, event["id"], member)
    assert ticket["status"] == "issued" and ticket["points"] == 0 and len(ticket["code"]) == 16
    assert api.points(member)["available"] == 0
    assert api.get(f"/v1/ticketed-events/{event['id']}").json()["seats_left"] == 1

    qr = api.get(f"/v1/tickets/{ticket['id']}/qr.svg")
    assert qr.status_code == 200
    assert qr.headers["content-type"].startswith("image/svg+xml")
    assert "<svg" in qr.text and "</svg>" in qr.text

    first = api.post("/v1/tickets/check-in", {"code": ticket["code"].lower()})
    assert first.status_code == 200, first.text
    assert first.json()["status"] == "checked_in" and first.json()["event"]["id"] == event["id"]
    when = first.json()["checked_in_at"]
    again = api.post("/v1/tickets/check-in", {"code": ticket["code"]})
    assert again.status_code == 409
    problem = again.json()
    assert problem["type"].endswith("/already-checked-in")
    assert datetime.fromisoformat(when).isoformat() in problem["detail"]
    assert api.post(f"/v1/tickets/{ticket['id']}/cancel").status_code == 409  # used: cannot cancel
    assert rsvp(api, event["id"], member, expect=409)  # one ticket per member
    assert api.get(f"/v1/tickets/{ticket['id']}").json()["status"] == "checked_in"


def test_paid_tickets_move_points_through_the_ledger_and_the_waitlist_pays_on_promotion(api: Api) -> None:
    program = api.program()
    event = new_event(api, program, name="Barista class", capacity=1, price=120)
    a = funded(api, program, 300, "a@example.com")
    b = funded(api, program, 200, "b@example.com")
    c = funded(api, program, 150, "c@example.com")

    ticket_a = rsvp(api, event["id"], a)
    assert ticket_a["status"] == "issued" and ticket_a["points"] == 120
    pts = api.points(a)
    assert (pts["available"], pts["reserved"], pts["redeemed"]) == (180, 0, 120)
    ledger = api.get(f"/v1/members/{a}/ledger").json()["data"]
    spent = [row for row in ledger if row["account"] == "reserved" and row["points"] < 0]
    assert spent and spent[0]["type"] == "redemption" and "Barista class" in spent[0]["reason"]
    held = [row for row in ledger if row["account"] == "available" and row["points"] == -120]
    assert held and "Barista class" in held[0]["reason"]

    ticket_b = rsvp(api, event["id"], b)
    ticket_c = rsvp(api, event["id"], c)
    assert (ticket_b["status"], ticket_c["status"]) == ("waitlisted", "waitlisted")
    pts = api.points(b)
    assert (pts["available"], pts["reserved"], pts["redeemed"]) == (80, 120, 0)

    poor = funded(api, program, 50, "poor@example.com")
    short = rsvp(api, event["id"], poor, expect=409)
    assert short["type"].endswith("/insufficient-points")
    assert api.points(poor)["available"] == 50

    done = api.post(f"/v1/tickets/{ticket_a['id']}/cancel")
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "cancelled"
    assert done.json()["promoted"]["id"] == ticket_b["id"]
    pts = api.points(a)
    assert (pts["available"], pts["reserved"], pts["redeemed"]) == (300, 0, 0)
    ledger = api.get(f"/v1/members/{a}/ledger").json()["data"]
    assert any("cancelled: points returned" in (row["reason"] or "") for row in ledger)
    pts = api.points(b)
    assert (pts["available"], pts["reserved"], pts["redeemed"]) == (80, 0, 120)
    assert api.get(f"/v1/tickets/{ticket_b['id']}").json()["status"] == "issued"
    assert (
        api.post("/v1/tickets/check-in", {"code": ticket_a["code"]})
        .json()["type"]
        .endswith("/ticket-cancelled")
    )

    # a waitlisted member who cancels gets the held points back and keeps nobody waiting
    off = api.post(f"/v1/tickets/{ticket_c['id']}/cancel")
    assert off.status_code == 200 and off.json()["promoted"] is None
    pts = api.points(c)
    assert (pts["available"], pts["reserved"], pts["redeemed"]) == (150, 0, 0)
    assert api.post(f"/v1/tickets/{ticket_c['id']}/cancel").json()["type"].endswith("/ticket-cancelled")
    assert api.get("/v1/verify").json()["ok"] is True


def test_the_waitlist_is_promoted_in_order(api: Api) -> None:
    program = api.program()
    event = new_event(api, program, capacity=1)
    members = [api.member(program, email=f"w{n}@example.com") for n in range(4)]
    tickets = [rsvp(api, event["id"], m) for m in members]
    assert [t["status"] for t in tickets] == ["issued", "waitlisted", "waitlisted", "waitlisted"]
    assert (
        api.post("/v1/tickets/check-in", {"code": tickets[1]["code"]})
        .json()["type"]
        .endswith("/ticket-waitlisted")
    )
    for n in range(3):
        done = api.post(f"/v1/tickets/{tickets[n]['id']}/cancel").json()
        assert done["promoted"]["id"] == tickets[n + 1]["id"]
    seen = api.get(f"/v1/ticketed-events/{event['id']}").json()
    assert (seen["seats_taken"], seen["seats_left"], seen["waitlisted"]) == (1, 0, 0)
    listing = api.get(f"/v1/ticketed-events/{event['id']}/tickets").json()["data"]
    assert [t["status"] for t in listing] == ["cancelled", "cancelled", "cancelled", "issued"]
    for n, member in enumerate(members):  # each told of the ticket they got, with its code
        issued = api.get("/v1/outbox-events", params={"member_id": member, "type": "ticket.issued"}).json()
        assert [e["data"]["code"] for e in issued["data"]] == [tickets[n]["code"]]


def test_once_the_event_has_started_a_ticket_cannot_be_cancelled(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A no-show gets no refund, and the waitlist is not charged for an event under way."""
    program = api.program()
    event = new_event(api, program, capacity=1)
    first, second = (api.member(program, email=f"s{n}@example.com") for n in range(2))
    issued, waiting = rsvp(api, event["id"], first), rsvp(api, event["id"], second)
    started = datetime.fromisoformat(event["starts_at"]) + timedelta(minutes=1)
    monkeypatch.setattr(tickets_service, "utcnow", lambda: started)
    late = api.post(f"/v1/tickets/{issued['id']}/cancel")
    assert late.status_code == 409 and late.json()["type"].endswith("/event-closed")
    listing = api.get(f"/v1/ticketed-events/{event['id']}/tickets").json()["data"]
    assert {t["id"]: t["status"] for t in listing} == {issued["id"]: "issued", waiting["id"]: "waitlisted"}


def test_a_full_event_without_waitlist_is_409_event_full(api: Api) -> None:
    program = api.program()
    event = new_event(api, program, capacity=1, waitlist=False)
    rsvp(api, event["id"], api.member(program, email="in@example.com"))
    late = api.member(program, email="late@example.com")
    problem = rsvp(api, event["id"], late, expect=409)
    assert problem["type"].endswith("/event-full")
    assert len(api.get(f"/v1/ticketed-events/{event['id']}/tickets").json()["data"]) == 1


@pytest.mark.parametrize("waitlist", [False, True])
def test_concurrent_rsvps_never_exceed_capacity(api: Api, waitlist: bool) -> None:
    program = api.program()
    event = new_event(api, program, capacity=3, waitlist=waitlist, price=10)
    members = [funded(api, program, 10, f"race{n}@example.com") for n in range(12)]

    def go(member: str) -> int:
        r = api.post(f"/v1/ticketed-events/{event['id']}/rsvp", {"member_id": member})
        return int(r.status_code)

    with ThreadPoolExecutor(max_workers=8) as pool:
        codes = list(pool.map(go, members))
    assert codes.count(201) == (12 if waitlist else 3)
    assert codes.count(409) == (0 if waitlist else 9)
    seen = api.get(f"/v1/ticketed-events/{event['id']}").json()
    assert seen["seats_taken"] == 3 and seen["waitlisted"] == (9 if waitlist else 0)
    redeemed = sum(api.points(m)["redeemed"] for m in members)
    assert redeemed == 30
    assert api.get("/v1/verify").json()["ok"] is True


def test_tiers_and_scopes(api: Api) -> None:
    program = api.program()
    gold_only = new_event(api, program, audience=["gold"])
    member = api.member(program, email="m@example.com")
    assert rsvp(api, gold_only["id"], member, expect=409)["type"].endswith("/not-in-audience")
    open_event = new_event(api, program)

    pos = api.post("/v1/api-keys", {"name": "door", "scopes": ["pos"]}).json()["api_key"]
    read = api.post("/v1/api-keys", {"name": "analyst", "scopes": ["read"]}).json()["api_key"]
    as_read = Api(api.client, api.merchant_id, read)
    as_pos = Api(api.client, api.merchant_id, pos)
    assert (
        as_read.post(f"/v1/ticketed-events/{open_event['id']}/rsvp", {"member_id": member}).status_code == 403
    )
    body = {"name": "x", "starts_at": soon(), "place": "y", "capacity": 5}
    assert as_pos.post(f"/v1/programs/{program}/ticketed-events", body).status_code == 403
    ticket = rsvp(as_pos, open_event["id"], member)
    assert as_pos.post("/v1/tickets/check-in", {"code": ticket["code"]}).status_code == 200
    assert as_read.post("/v1/tickets/check-in", {"code": ticket["code"]}).status_code == 403
    # an Idempotency-Key a till used does not hand a read key the stored answer (and its code)
    other = api.member(program, email="o@example.com")
    path, key = f"/v1/ticketed-events/{open_event['id']}/rsvp", {"Idempotency-Key": "door-1"}
    assert as_pos.post(path, {"member_id": other}, headers=key).status_code == 201
    replay = as_read.post(path, {"member_id": other}, headers=key)
    assert replay.status_code == 403 and "code" not in replay.json()


def test_another_merchants_events_and_tickets_are_404(api: Api, other_api: Api) -> None:
    program = api.program()
    event = new_event(api, program)
    ticket = rsvp(api, event["id"], api.member(program, email="mine@example.com"))
    theirs_program = other_api.program()
    theirs = other_api.member(theirs_program, email="theirs@example.com")

    assert other_api.get(f"/v1/ticketed-events/{event['id']}").status_code == 404
    assert other_api.get(f"/v1/programs/{program}/ticketed-events").status_code == 404
    assert other_api.post(f"/v1/ticketed-events/{event['id']}/rsvp", {"member_id": theirs}).status_code == 404
    assert api.post(f"/v1/ticketed-events/{event['id']}/rsvp", {"member_id": theirs}).status_code == 404
    assert other_api.get(f"/v1/tickets/{ticket['id']}").status_code == 404
    assert other_api.get(f"/v1/tickets/{ticket['id']}/qr.svg").status_code == 404
    assert other_api.post(f"/v1/tickets/{ticket['id']}/cancel").status_code == 404
    check = other_api.post("/v1/tickets/check-in", {"code": ticket["code"]})
    assert check.status_code == 404 and check.json()["type"].endswith("/not-found")
    body = {"name": "x", "starts_at": soon(), "place": "y", "capacity": 5}
    assert other_api.post(f"/v1/programs/{program}/ticketed-events", body).status_code == 404
    assert api.get(f"/v1/tickets/{ticket['id']}").json()["status"] == "issued"  # untouched


def test_bad_input_is_a_problem_and_writes_nothing(api: Api) -> None:
    program = api.program()
    member = api.member(program, email="b@example.com")
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()

    cases = [
        ({"starts_at": past}, 422, "/event-in-past"),
        ({"capacity": 0}, 422, "/validation-error"),
        ({"capacity": -3}, 422, "/validation-error"),
        ({"capacity": "many"}, 422, "/validation-error"),
        ({"starts_at": "2030-01-01T10:00:00"}, 422, "/validation-error"),  # naive time
        ({"audience": ["platinum"]}, 422, "/unknown-tier"),
        ({"price": -1}, 422, "/validation-error"),
        ({"surprise": True}, 422, "/validation-error"),
    ]
    for fields, status, kind in cases:
        problem = new_event(api, program, expect=status, **fields)
        assert problem["type"].endswith(kind), (fields, problem)
        assert problem["status"] == status and problem["detail"]
    assert api.get(f"/v1/programs/{program}/ticketed-events").json()["data"] == []
    assert api.post("/v1/programs/prg_nope/ticketed-events", {"name": "x"}).status_code == 422
    body = {"name": "x", "starts_at": soon(), "place": "y", "capacity": 5}
    assert api.post("/v1/programs/prg_nope/ticketed-events", body).status_code == 404

    unknown = api.post("/v1/ticketed-events/tev_nope/rsvp", {"member_id": member})
    assert unknown.status_code == 404 and unknown.json()["type"].endswith("/not-found")
    event = new_event(api, program)
    assert rsvp(api, event["id"], "mem_nope", expect=404)["type"].endswith("/not-found")
    assert api.post(f"/v1/ticketed-events/{event['id']}/rsvp", {}).status_code == 422
    assert api.post("/v1/tickets/check-in", {"code": "NOPE-NOPE"}).status_code == 404
    assert api.post("/v1/tickets/check-in", {"code": ""}).status_code == 422
    assert api.get("/v1/tickets/tkt_nope/qr.svg").status_code == 404
    assert api.post("/v1/tickets/tkt_nope/cancel").status_code == 404
    elsewhere = api.member(api.program(bean_rewards(name="Other")), email="x@example.com")
    assert rsvp(api, event["id"], elsewhere, expect=422)["type"].endswith("/wrong-program")
    assert api.get(f"/v1/ticketed-events/{event['id']}/tickets").json()["data"] == []


def test_a_waitlist_place_gives_its_points_back_once_the_event_has_started(api: Api, engine: Engine) -> None:
    program = api.program()
    event = new_event(api, program, capacity=1, price=100)
    first, second = (api.member(program, email=f"wl{n}@example.com") for n in range(2))
    for member in (first, second):
        api.post(f"/v1/members/{member}/adjustments", {"points": 300, "reason": "welcome"})
    rsvp(api, event["id"], first)
    waiting = rsvp(api, event["id"], second)
    assert waiting["status"] == "waitlisted" and api.points(second)["reserved"] == 100
    started = datetime.fromisoformat(event["starts_at"]) + timedelta(hours=1)
    before = run_job(
        engine, "lapse-reservations", as_of=started - timedelta(hours=2), merchant_id=api.merchant_id
    )
    assert before.lots == 0 and api.points(second)["reserved"] == 100  # not started yet: still waiting
    done = run_job(engine, "lapse-reservations", as_of=started, merchant_id=api.merchant_id)
    assert done.lots == 1
    assert (api.points(second)["available"], api.points(second)["reserved"]) == (300, 0)
    assert api.points(first)["redeemed"] == 100  # the seat taken is untouched
    listing = {
        t["id"]: t["status"] for t in api.get(f"/v1/ticketed-events/{event['id']}/tickets").json()["data"]
    }
    assert listing[waiting["id"]] == "cancelled"
    again = run_job(engine, "lapse-reservations", as_of=started, merchant_id=api.merchant_id)
    assert again.lots == 0 and api.get("/v1/verify").json()["ok"] is True
