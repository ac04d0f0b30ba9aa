"""Travel award bookings: passengers authorised by consent or code, points from the booker only,
refusals that name the passenger and write nothing, cancellation, tenancy, and racing bookings."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from patron.api.app import create_app
from patron.config import Settings
from patron.domain.errors import InsufficientPoints
from patron.services import bookings, clock, ledger, members, merchants, programs
from patron.services.members import MemberCreate
from patron.services.merchants import create_merchant
from tests.conftest import Api, bean_rewards


@pytest.fixture(scope="module")
def booking_client(engine: Engine, db_url: str) -> Iterator[TestClient]:
    """The real app, a client of its own for this module."""
    app = create_app(Settings(database_url=db_url), engine=engine)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def _api(client: TestClient, engine: Engine, name: str) -> Api:
    with engine.begin() as conn:
        merchant, key = create_merchant(conn, name=name)
    return Api(client, merchant["id"], key)


@pytest.fixture
def bapi(booking_client: TestClient, engine: Engine) -> Api:
    return _api(booking_client, engine, "Air Co")


@pytest.fixture
def other_bapi(booking_client: TestClient, engine: Engine) -> Api:
    return _api(booking_client, engine, "Other Air Co")


class Family:
    def __init__(self, api: Api, program: str, booker: str, ann: str, ben: str) -> None:
        self.api, self.program, self.booker, self.ann, self.ben = api, program, booker, ann, ben


def fund(api: Api, member: str, points: int) -> None:
    r = api.post(f"/v1/members/{member}/adjustments", {"points": points, "reason": "welcome"})
    assert r.status_code == 201, r.text


def family(api: Api, points: int = 1000) -> Family:
    program = api.program(bean_rewards(tiers=None))
    booker = api.member(program, email="bo@example.com", name="Bo Booker")
    ann = api.member(program, email="ann@example.com", name="Ann Passenger")
    ben = api.member(program, email="ben@example.com", name="Ben Passenger")
    fund(api, booker, points)
    return Family(api, program, booker, ann, ben)


def consent(api: Api, passenger: str, booker: str) -> None:
    r = api.post(f"/v1/members/{passenger}/travel-consents", {"booker_id": booker})
    assert r.status_code in (200, 201), r.text


def code_of(api: Api, passenger: str) -> str:
    r = api.post(f"/v1/members/{passenger}/travel-consents/code")
    assert r.status_code == 201, r.text
    return str(r.json()["code"])


def booking(passengers: list[str], points: int = 200, **extra: Any) -> dict[str, Any]:
    return {
        "route": "JFK-LHR",
        "cabin": "J",
        "points_per_passenger": points,
        "passengers": passengers,
        **extra,
    }


def verified(api: Api) -> bool:
    return bool(api.get("/v1/verify").json()["ok"])


def test_booking_for_self_and_two_authorised_passengers(bapi: Api) -> None:
    f = family(bapi)
    fund(bapi, f.ann, 50)
    consent(bapi, f.ann, f.booker)
    code = code_of(bapi, f.ben)
    r = bapi.post(
        f"/v1/members/{f.booker}/bookings", booking([f.booker, f.ann, f.ben], consent_codes={f.ben: code})
    )
    assert r.status_code == 201, r.text
    b = r.json()
    assert (b["status"], b["points"], b["origin"], b["destination"], b["cabin"]) == (
        "booked",
        600,
        "JFK",
        "LHR",
        "J",
    )
    assert [(t["passenger_id"], t["passenger_name"], t["status"]) for t in b["tickets"]] == [
        (f.booker, "Bo Booker", "issued"),
        (f.ann, "Ann Passenger", "issued"),
        (f.ben, "Ben Passenger", "issued"),
    ]
    assert len({t["code"] for t in b["tickets"]}) == 3
    assert bapi.points(f.booker)["available"] == 400
    assert bapi.points(f.booker)["redeemed"] == 600
    assert bapi.points(f.ann)["available"] == 50  # passengers pay nothing
    assert bapi.points(f.ben)["available"] == 0
    entries = bapi.get(f"/v1/members/{f.booker}/ledger").json()["data"]
    assert any(e["points"] == -600 and b["id"] in (e["reason"] or "") for e in entries)
    assert verified(bapi)
    assert bapi.get(f"/v1/bookings/{b['id']}").json() == b
    for member in (f.booker, f.ann, f.ben):  # the booker's and each passenger's list
        assert [x["id"] for x in bapi.get(f"/v1/members/{member}/bookings").json()["data"]] == [b["id"]]


def test_refused_passengers_are_named_with_why_and_nothing_is_written(bapi: Api, other_bapi: Api) -> None:
    f = family(bapi)
    closed = bapi.member(f.program, email="c@example.com", name="Cy Closed")
    suspended = bapi.member(f.program, email="s@example.com", name="Sue Suspended")
    for member in (closed, suspended):
        consent(bapi, member, f.booker)
    assert bapi.patch(f"/v1/members/{closed}", {"status": "closed"}).status_code == 200
    assert bapi.patch(f"/v1/members/{suspended}", {"status": "suspended"}).status_code == 200
    elsewhere = bapi.member(bapi.program(bean_rewards(name="Other", tiers=None)), email="e@example.com")
    foreign = other_bapi.member(other_bapi.program(bean_rewards(tiers=None)), email="f@example.com")
    ben_code = code_of(bapi, f.ben)
    passengers = [f.booker, f.ann, "mem_nobody", closed, suspended, elsewhere, foreign]
    r = bapi.post(f"/v1/members/{f.booker}/bookings", booking(passengers, points=10))
    assert r.status_code == 422, r.text
    problem = r.json()
    assert problem["type"].endswith("/passenger-not-allowed")
    assert {e["loc"]: e["msg"] for e in problem["errors"]} == {
        f"passengers.{f.ann}": f"has not authorised {f.booker}",
        "passengers.mem_nobody": "unknown member",
        f"passengers.{closed}": "member is closed",
        f"passengers.{suspended}": "member is suspended",
        f"passengers.{elsewhere}": "unknown member",
        f"passengers.{foreign}": "unknown member",
    }
    assert f"passengers.{f.ann}: has not authorised {f.booker}" in problem["detail"]
    # one good code with one refused passenger: refused, and the code is not used up
    r = bapi.post(
        f"/v1/members/{f.booker}/bookings", booking([f.ben, f.ann], consent_codes={f.ben: ben_code})
    )
    assert r.status_code == 422, r.text
    assert [e["loc"] for e in r.json()["errors"]] == [f"passengers.{f.ann}"]
    assert bapi.points(f.booker)["available"] == 1000
    assert bapi.get(f"/v1/members/{f.booker}/bookings").json()["data"] == []
    r = bapi.post(f"/v1/members/{f.booker}/bookings", booking([f.ben], consent_codes={f.ben: ben_code}))
    assert r.status_code == 201, r.text
    assert verified(bapi)


def test_a_consent_code_is_single_use(bapi: Api) -> None:
    f = family(bapi)
    code = code_of(bapi, f.ann)
    first = bapi.post(f"/v1/members/{f.booker}/bookings", booking([f.ann], consent_codes={f.ann: code}))
    assert first.status_code == 201, first.text
    again = bapi.post(f"/v1/members/{f.booker}/bookings", booking([f.ann], consent_codes={f.ann: code}))
    assert again.status_code == 422
    assert again.json()["errors"] == [{"loc": f"passengers.{f.ann}", "msg": "consent code was already used"}]
    wrong = bapi.post(f"/v1/members/{f.booker}/bookings", booking([f.ben], consent_codes={f.ben: code}))
    assert wrong.json()["errors"] == [{"loc": f"passengers.{f.ben}", "msg": "consent code is not valid"}]
    assert bapi.points(f.booker)["available"] == 800


def test_a_consent_code_expires_after_24_hours(bapi: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    f = family(bapi)
    issued = clock.utcnow()
    r = bapi.post(f"/v1/members/{f.ann}/travel-consents/code")
    code = r.json()["code"]
    assert (
        timedelta(hours=24) <= datetime.fromisoformat(r.json()["expires_at"]) - issued < timedelta(hours=25)
    )
    late_code = code_of(bapi, f.ben)
    monkeypatch.setattr(bookings, "utcnow", lambda: issued + timedelta(hours=23, minutes=59))
    ok = bapi.post(f"/v1/members/{f.booker}/bookings", booking([f.ann], consent_codes={f.ann: code}))
    assert ok.status_code == 201, ok.text
    monkeypatch.setattr(bookings, "utcnow", lambda: issued + timedelta(hours=24, seconds=5))
    late = bapi.post(f"/v1/members/{f.booker}/bookings", booking([f.ben], consent_codes={f.ben: late_code}))
    assert late.status_code == 422
    assert late.json()["errors"] == [{"loc": f"passengers.{f.ben}", "msg": "consent code has expired"}]


def test_too_few_points_is_409_and_writes_nothing(bapi: Api) -> None:
    f = family(bapi, points=300)
    consent(bapi, f.ann, f.booker)
    fund(bapi, f.ann, 5000)  # a rich passenger does not pay for the booker
    r = bapi.post(f"/v1/members/{f.booker}/bookings", booking([f.booker, f.ann]))
    assert r.status_code == 409
    assert r.json()["type"].endswith("/insufficient-points")
    assert bapi.points(f.booker)["available"] == 300
    assert bapi.points(f.ann)["available"] == 5000
    assert bapi.get(f"/v1/members/{f.booker}/bookings").json()["data"] == []


def test_cancel_returns_the_points_to_their_lots_and_voids_tickets_once(bapi: Api) -> None:
    f = family(bapi, points=300)
    fund(bapi, f.booker, 300)  # two lots: the booking draws from both
    consent(bapi, f.ann, f.booker)
    b = bapi.post(f"/v1/members/{f.booker}/bookings", booking([f.booker, f.ann], points=250)).json()
    assert bapi.points(f.booker)["available"] == 100
    r = bapi.post(f"/v1/bookings/{b['id']}/cancel")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "cancelled"
    assert {t["status"] for t in r.json()["tickets"]} == {"void"}
    points = bapi.points(f.booker)
    assert (points["available"], points["redeemed"]) == (600, 0)
    entries = bapi.get(f"/v1/members/{f.booker}/ledger").json()["data"]
    back = [e for e in entries if e["type"] == "cancellation"]
    taken = [e for e in entries if e["type"] == "redemption"]
    assert sorted((e["lot_id"], e["points"]) for e in back) == sorted(
        (e["lot_id"], -e["points"]) for e in taken
    )
    again = bapi.post(f"/v1/bookings/{b['id']}/cancel")
    assert again.status_code == 409
    assert again.json()["type"].endswith("/booking-cancelled")
    assert bapi.points(f.booker)["available"] == 600
    assert verified(bapi)


def test_consents_can_be_listed_and_revoked(bapi: Api) -> None:
    f = family(bapi)
    r = bapi.post(f"/v1/members/{f.ann}/travel-consents", {"booker_id": f.booker})
    assert r.status_code == 201
    assert bapi.post(f"/v1/members/{f.ann}/travel-consents", {"booker_id": f.booker}).status_code == 200
    listed = bapi.get(f"/v1/members/{f.ann}/travel-consents").json()["data"]
    assert [c["booker_id"] for c in listed] == [f.booker]
    assert bapi.delete(f"/v1/members/{f.ann}/travel-consents/{f.booker}").status_code == 200
    r = bapi.post(f"/v1/members/{f.booker}/bookings", booking([f.ann]))
    assert r.status_code == 422
    bad = bapi.post(f"/v1/members/{f.ann}/travel-consents", {"booker_id": "mem_nobody"})
    assert bad.status_code == 422


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"route": "JFK-JFK"}, "route"),
        ({"route": "JFK+LHR"}, "route"),
        ({"cabin": "Q"}, "cabin"),
    ],
)
def test_a_malformed_booking_is_422(bapi: Api, change: dict[str, Any], field: str) -> None:
    f = family(bapi)
    r = bapi.post(f"/v1/members/{f.booker}/bookings", {**booking([f.booker]), **change})
    assert r.status_code == 422, r.text
    assert r.json().get("field") == field
    assert bapi.points(f.booker)["available"] == 1000


def test_the_same_passenger_twice_is_422(bapi: Api) -> None:
    f = family(bapi)
    r = bapi.post(f"/v1/members/{f.booker}/bookings", booking([f.booker, f.booker]))
    assert r.status_code == 422
    assert r.json()["type"].endswith("/invalid-booking")


def test_another_merchant_sees_404(bapi: Api, other_bapi: Api) -> None:
    f = family(bapi)
    b = bapi.post(f"/v1/members/{f.booker}/bookings", booking([f.booker])).json()
    assert other_bapi.get(f"/v1/bookings/{b['id']}").status_code == 404
    assert other_bapi.post(f"/v1/bookings/{b['id']}/cancel").status_code == 404
    assert other_bapi.get(f"/v1/members/{f.booker}/bookings").status_code == 404
    assert other_bapi.post(f"/v1/members/{f.booker}/bookings", booking([f.booker])).status_code == 404
    assert other_bapi.post(f"/v1/members/{f.ann}/travel-consents/code").status_code == 404
    assert other_bapi.post(f"/v1/members/{f.ann}/travel-consents", {"booker_id": f.booker}).status_code == 404
    assert bapi.get(f"/v1/bookings/{b['id']}").json()["status"] == "booked"
    assert bapi.points(f.booker)["available"] == 800


def test_racing_bookings_never_overdraw_the_booker(engine: Engine) -> None:
    with engine.begin() as conn:
        merchant, _ = merchants.create_merchant(conn, name="Race Air")
        mid = merchant["id"]
        program = programs.create_program(conn, merchant_id=mid, body=bean_rewards(tiers=None))
        booker = members.enrol(
            conn,
            merchant_id=mid,
            data=MemberCreate(program_id=program["id"], email="r@example.com", name="R"),
        )["id"]
        ledger.adjust(conn, merchant_id=mid, member_id=booker, points=1000, reason="gift")

    def attempt(_: int) -> bool:
        try:
            with engine.begin() as conn:
                bookings.book(
                    conn,
                    merchant_id=mid,
                    booker_id=booker,
                    route="JFK-LHR",
                    cabin="Y",
                    points_per_passenger=300,
                    passengers=[booker],
                )
            return True
        except InsufficientPoints:
            return False

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(attempt, range(12)))
    assert results.count(True) == 3
    with engine.begin() as conn:
        b = ledger.balances(conn, merchant_id=mid, member_id=booker, as_of=None)
        assert (b.available, b.redeemed) == (100, 900)
        assert len(bookings.of_member(conn, merchant_id=mid, member_id=booker)) == 3
        assert ledger.verify(conn, merchant_id=mid) == []


def test_the_household_pool_can_pay_for_an_award_booking(bapi: Api) -> None:
    program = bapi.program(bean_rewards(tiers=None, households={"max_members": 4, "cooldown_days": 30}))
    head = bapi.member(program, email="head@example.com", name="Hana Head")
    partner = bapi.member(program, email="partner@example.com", name="Pat Partner")
    fund(bapi, head, 100)
    fund(bapi, partner, 500)
    r = bapi.post("/v1/households", {"program_id": program, "head_member_id": head, "name": "Heads"})
    assert r.status_code == 201, r.text
    household = r.json()["id"]
    r = bapi.post(f"/v1/households/{household}/members", {"member_id": partner, "role": "adult"})
    assert r.status_code == 201, r.text
    alone = bapi.post(f"/v1/members/{head}/bookings", booking([head], points=400))
    assert alone.status_code == 409 and alone.json()["type"].endswith("insufficient-points")
    pooled = bapi.post(f"/v1/members/{head}/bookings", booking([head], points=400, use_household_pool=True))
    assert pooled.status_code == 201, pooled.text
    assert bapi.points(head)["available"] == 0 and bapi.points(head)["redeemed"] == 400
    assert bapi.points(partner)["available"] == 200  # 300 moved to the booker from the pool
    too_much = bapi.post(f"/v1/members/{head}/bookings", booking([head], points=500, use_household_pool=True))
    assert too_much.status_code == 409 and bapi.points(partner)["available"] == 200  # nothing moved
    assert verified(bapi)


def test_points_a_cancelled_booking_gives_back_repay_a_debt_first(bapi: Api) -> None:
    """The booking spent a purchase's points, then the purchase was refunded: the member owes
    them. Cancelling the booking repays that debt before anything becomes spendable again."""
    program = bapi.program(bean_rewards(tiers=None))
    bo = bapi.member(program, email="owes@example.com", name="Bo")
    line = {"id": "l1", "quantity": 1, "unit_price": 100000}
    bapi.event({"id": "buy", "type": "purchase", "member_id": bo, "currency": "USD", "items": [line]})
    assert bapi.points(bo)["available"] == 1000
    made = bapi.post(f"/v1/members/{bo}/bookings", booking([bo], points=1000))
    assert made.status_code == 201, made.text
    bapi.event({"id": "ret", "type": "refund", "member_id": bo, "refers_to": "buy", "items": [{"id": "l1"}]})
    assert (bapi.points(bo)["available"], bapi.points(bo)["debt"]) == (0, 1000)
    assert bapi.post(f"/v1/bookings/{made.json()['id']}/cancel").status_code == 200
    assert (bapi.points(bo)["available"], bapi.points(bo)["debt"]) == (0, 0)
    assert verified(bapi)
