"""Airline miles (distance with a status bonus, revenue-based, status miles and segments as tier
currencies) and visit programs (one visit a day per location, punch cards)."""

from __future__ import annotations

import math
from typing import Any

import airportsdata

from tests.conftest import Api, bean_rewards

AIRLINE_TIERS = {
    "metric": "status_miles",
    "period": "calendar_year",
    "downgrade": "one_level",
    "levels": [
        {"id": "blue", "name": "Blue", "threshold": 0},
        {"id": "silver", "name": "Silver", "threshold": 5000},
        {"id": "gold", "name": "Gold", "threshold": 25000, "multiplier": "2"},
    ],
}


def _miles(origin: str, destination: str) -> float:
    """Great-circle statute miles on a sphere of 3,958.8 miles, from the airport data package."""
    airports = airportsdata.load("IATA")
    a, b = airports[origin], airports[destination]
    p1, p2 = math.radians(a["lat"]), math.radians(b["lat"])
    dp, dl = p2 - p1, math.radians(b["lon"] - a["lon"])
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 3958.8 * math.asin(math.sqrt(h))


def flight(member_id: str, event_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": event_id,
        "type": "flight",
        "member_id": member_id,
        "occurred_at": "2026-03-01T10:00:00Z",
        "origin": "JFK",
        "destination": "LHR",
        "fare_class": "Y",
        "fare": 80000,
        "currency": "USD",
        **fields,
    }


def airline(api: Api, **rule: Any) -> str:
    body = bean_rewards(
        name="Sky Miles",
        earning_rules=[
            {"id": "miles", "type": "distance", "percent_by_fare_class": {"Y": 100, "J": 150}, **rule}
        ],
        tiers=AIRLINE_TIERS,
        rewards=[],
    )
    return api.program(body)


def test_jfk_to_lhr_earns_the_distance_the_airport_data_gives(api: Api) -> None:
    mid = api.member(airline(api), email="jfk@example.com")
    out = api.event(flight(mid, "ba-1"))
    assert out["points"] == math.floor(_miles("JFK", "LHR")) == out["status_miles"]
    business = api.event(flight(mid, "ba-2", fare_class="J", origin="LHR", destination="JFK"))
    assert business["points"] == math.floor(_miles("LHR", "JFK") * 150 / 100)


def test_status_bonus_adds_award_miles_but_never_status_miles(api: Api) -> None:
    program = airline(api, tier_bonus=True)
    mid = api.member(program, email="gold@example.com")
    base = math.floor(_miles("JFK", "LHR"))
    for i in range(8):  # 8 transatlantic legs: past the gold threshold of 25,000 status miles
        api.event(flight(mid, f"leg-{i}", occurred_at=f"2026-03-{i + 2:02d}T10:00:00Z"))
    tier = api.get(f"/v1/members/{mid}/tier").json()
    assert tier["current"]["id"] == "gold"
    assert tier["qualifying"] == {**tier["qualifying"], "metric": "status_miles", "value": 8 * base}
    gold_leg = api.event(flight(mid, "leg-gold", occurred_at="2026-04-01T10:00:00Z"))
    assert gold_leg["status_miles"] == base
    assert gold_leg["points"] == 2 * base  # tier multiplier 2: the status bonus doubles award miles
    assert {r["rule_id"]: r["points"] for r in gold_leg["rules"]} == {"miles": base, "tier:gold": base}
    tier = api.get(f"/v1/members/{mid}/tier").json()
    assert tier["qualifying"]["value"] == 9 * base  # the bonus never counts towards status


def test_a_cancelled_flight_takes_back_its_status_miles_and_segment(api: Api) -> None:
    body = bean_rewards(
        earning_rules=[{"id": "miles", "type": "distance", "percent_by_fare_class": {"Y": 100}}],
        tiers={
            **AIRLINE_TIERS,
            "metric": "segments",
            "levels": [
                {"id": "blue", "name": "Blue", "threshold": 0},
                {"id": "silver", "name": "Silver", "threshold": 2},
            ],
        },
        rewards=[],
    )
    mid = api.member(api.program(body), email="seg@example.com")
    api.event(flight(mid, "s1"))
    api.event(flight(mid, "s2", occurred_at="2026-03-02T10:00:00Z"))
    assert api.get(f"/v1/members/{mid}/tier").json()["current"]["id"] == "silver"
    out = api.event(
        {
            "id": "s2-x",
            "type": "cancel",
            "member_id": mid,
            "refers_to": "s2",
            "occurred_at": "2026-03-03T10:00:00Z",
        }
    )
    assert out["points"] == -math.floor(_miles("JFK", "LHR"))
    tier = api.get(f"/v1/members/{mid}/tier").json()
    assert tier["qualifying"]["value"] == 1
    assert api.points(mid)["available"] == math.floor(_miles("JFK", "LHR"))


def test_revenue_based_miles_follow_the_tier_held_when_flying(api: Api) -> None:
    body = bean_rewards(
        earning_rules=[
            {"id": "rev", "type": "revenue", "miles_by_tier": {"default": 5, "gold": 11}, "per_amount": 100}
        ],
        tiers={
            "metric": "qualifying_spend",
            "levels": [
                {"id": "member", "name": "Member", "threshold": 0},
                {"id": "gold", "name": "Gold", "threshold": 50000},
            ],
        },
        rewards=[],
    )
    program = api.program(body)
    mid = api.member(program, email="rev@example.com")
    assert api.event(flight(mid, "r1", fare=80000))["points"] == 4000  # 800.00 * 5: no rate for member
    api.event(
        {
            "id": "shop",
            "type": "purchase",
            "member_id": mid,
            "occurred_at": "2026-03-01T11:00:00Z",
            "currency": "USD",
            "items": [{"id": "l", "quantity": 1, "unit_price": 60000}],
        }
    )
    assert api.get(f"/v1/members/{mid}/tier").json()["current"]["id"] == "gold"
    assert api.event(flight(mid, "r2", fare=80050, occurred_at="2026-03-02T10:00:00Z"))["points"] == 8805
    bad = bean_rewards(earning_rules=[{"id": "rev", "type": "revenue", "miles_by_tier": {"platinum": 9}}])
    r = api.post("/v1/programs", bad)
    assert r.status_code == 422 and "platinum" in r.text


def test_flights_with_unknown_or_identical_airports_are_refused(api: Api) -> None:
    mid = api.member(airline(api), email="bad@example.com")
    for fields in ({"origin": "QQQ"}, {"destination": "LHR", "origin": "LHR"}):
        r = api.post("/v1/events", flight(mid, "bad", **fields))
        assert r.status_code == 422, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
    assert api.get(f"/v1/members/{mid}/ledger").json()["data"] == []


COFFEE_CARD = bean_rewards(
    earning_rules=[
        {"id": "visit", "type": "visit", "points": 10, "min_spend": 300},
        {
            "id": "card",
            "type": "punch_card",
            "punches": 3,
            "reward_id": "free-coffee",
            "min_spend": 300,
            "valid_days": 3650,
        },
    ],
    tiers=None,
)


def visit(
    member_id: str, event_id: str, day: int, amount: int = 450, location: str = "soho"
) -> dict[str, Any]:
    return {
        "id": event_id,
        "type": "visit",
        "member_id": member_id,
        "occurred_at": f"2026-05-{day:02d}T09:00:00Z",
        "amount": amount,
        "location_id": location,
    }


def test_one_visit_a_day_per_location_earns(api: Api) -> None:
    mid = api.member(api.program(COFFEE_CARD), email="daily@example.com")
    assert api.event(visit(mid, "v1", 1))["points"] == 10
    assert api.event(visit(mid, "v2", 1))["points"] == 0  # same day, same shop
    assert api.event(visit(mid, "v3", 1, location="mayfair"))["points"] == 10
    assert api.event(visit(mid, "v4", 2))["points"] == 10
    assert api.event(visit(mid, "v5", 3, amount=200))["points"] == 0  # under the minimum spend
    assert api.points(mid)["available"] == 30


def test_the_third_punch_issues_the_reward_which_redeems_at_the_till(api: Api) -> None:
    mid = api.member(api.program(COFFEE_CARD), email="punch@example.com")
    first = api.event(visit(mid, "p1", 1))
    assert first["punch_cards"] == [{"rule_id": "card", "punches": 1, "required": 3}]
    assert "punch_cards" not in api.event(visit(mid, "p1b", 1))  # once a day at one shop
    assert "punch_cards" not in api.event(visit(mid, "p1c", 1, amount=100))
    api.event(visit(mid, "p2", 2))
    cards = api.get(f"/v1/members/{mid}/punch-cards").json()["data"]
    assert cards == [
        {
            "rule_id": "card",
            "reward_id": "free-coffee",
            "required": 3,
            "punches": 2,
            "remaining": 1,
            "cards_filled": 0,
        }
    ]
    third = api.event(visit(mid, "p3", 3))
    card = third["punch_cards"][0]
    assert (card["punches"], card["reward"]["reward_id"]) == (0, "free-coffee")
    before = api.points(mid)
    r = api.get(f"/v1/codes/{card['reward']['code']}")  # what the till sees
    assert r.status_code == 200 and r.json()["valid"], r.text
    assert (r.json()["redemption"]["reward_id"], r.json()["redemption"]["points"]) == ("free-coffee", 0)
    done = api.post(f"/v1/redemptions/{card['reward']['redemption_id']}/redeem")
    assert done.status_code == 200 and done.json()["status"] == "redeemed"
    assert api.points(mid) == before  # the reward cost no points
    again = api.post(f"/v1/redemptions/{card['reward']['redemption_id']}/redeem")
    assert again.status_code == 409
    cards = api.get(f"/v1/members/{mid}/punch-cards").json()["data"]
    assert (cards[0]["punches"], cards[0]["cards_filled"]) == (0, 1)


def test_a_cancelled_visit_takes_its_punch_back(api: Api) -> None:
    mid = api.member(api.program(COFFEE_CARD), email="unpunch@example.com")
    api.event(visit(mid, "c1", 1))
    api.event(visit(mid, "c2", 2))
    api.event(
        {
            "id": "c2-x",
            "type": "cancel",
            "member_id": mid,
            "refers_to": "c2",
            "occurred_at": "2026-05-02T12:00:00Z",
        }
    )
    cards = api.get(f"/v1/members/{mid}/punch-cards").json()["data"]
    assert cards[0]["punches"] == 1
    assert api.points(mid)["available"] == 10


def test_a_visit_cancelled_the_next_day_leaves_that_days_punch_alone(api: Api) -> None:
    mid = api.member(api.program(COFFEE_CARD), email="nextday@example.com")
    api.event(visit(mid, "d1", 4))
    cancel = {"id": "d1-x", "type": "cancel", "member_id": mid, "refers_to": "d1"}
    api.event({**cancel, "occurred_at": "2026-05-05T08:00:00Z"})  # taken back on the 5th
    first = api.event(visit(mid, "d2", 5))
    assert first["points"] == 10 and first["punch_cards"][0]["punches"] == 1
    second = api.event(visit(mid, "d3", 5))  # once a day all the same
    assert second["points"] == 0 and "punch_cards" not in second
    assert api.get(f"/v1/members/{mid}/punch-cards").json()["data"][0]["punches"] == 1


def test_a_cancelled_visit_leaves_the_days_visit_to_earn_again(api: Api) -> None:
    mid = api.member(api.program(COFFEE_CARD), email="again@example.com")
    assert api.event(visit(mid, "a1", 6))["points"] == 10
    api.event({"id": "a1-x", "type": "cancel", "member_id": mid, "refers_to": "a1"})
    assert api.event(visit(mid, "a2", 6))["points"] == 10  # the till recorded it on the wrong card
    assert api.event(visit(mid, "a3", 6))["points"] == 0  # still once a day
    assert api.points(mid)["available"] == 10


def test_a_visit_that_only_punched_a_card_can_be_cancelled_once(api: Api) -> None:
    card_only = {**COFFEE_CARD, "earning_rules": [COFFEE_CARD["earning_rules"][1]]}
    mid = api.member(api.program(card_only), email="cardonly@example.com")
    assert api.event(visit(mid, "p1", 4))["points"] == 0
    cancel = {"id": "p1-x", "type": "cancel", "member_id": mid, "refers_to": "p1"}
    assert api.post("/v1/events", cancel).status_code == 201
    assert api.get(f"/v1/members/{mid}/punch-cards").json()["data"][0]["punches"] == 0
    again = api.post("/v1/events", {**cancel, "id": "p1-y"})
    assert again.status_code == 409 and "already fully reversed" in again.json()["detail"]


def test_a_punch_card_needs_a_reward_of_the_program(api: Api) -> None:
    body = bean_rewards(
        earning_rules=[{"id": "card", "type": "punch_card", "punches": 5, "reward_id": "no-such"}]
    )
    r = api.post("/v1/programs", body)
    assert r.status_code == 422 and "no-such" in r.text
