"""Tiers over the API: a member's year, assignments as floors, history, preview of new rules."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Api, bean_rewards, purchase


def buy(api: Api, member: str, event_id: str, amount: int, at: str) -> dict[str, Any]:
    items = [{"id": "l1", "sku": "BEANS", "category": "beans", "quantity": 1, "unit_price": amount}]
    return api.event(purchase(member, event_id, items, occurred_at=at))


def tier(api: Api, member: str, at: str | None = None) -> dict[str, Any]:
    r = api.get(f"/v1/members/{member}/tier", params={"as_of": at} if at else {})
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_a_members_year_climb_redeem_return_keep_and_drop(api: Api) -> None:
    """Ann joins in 2025, climbs to Gold in May, spends her points (no demotion: tiers never read
    the balance), returns part of an order in the autumn (no demotion mid-period), keeps Gold
    through 2026 because she reached it in 2025, and drops one level on 1 January 2027."""
    member = api.member(
        api.program(bean_rewards(tiers={**bean_rewards()["tiers"], "downgrade": "one_level"}))
    )
    buy(api, member, "o1", 15000, "2025-02-01T10:00:00Z")
    assert tier(api, member, "2025-02-02T00:00:00Z")["current"]["id"] == "member"
    buy(api, member, "o2", 40000, "2025-05-01T10:00:00Z")
    now = tier(api, member, "2025-05-02T00:00:00Z")
    assert now["current"]["id"] == "gold" and now["current"]["since"].startswith("2025-05-01T10:00")
    assert now["current"]["benefits"]["multiplier"] == "1.5"
    api.post(f"/v1/members/{member}/adjustments", {"points": -500, "reason": "redeemed at the counter"})
    assert tier(api, member)["current"]["id"] == "gold"
    api.event(
        {
            "id": "r1",
            "type": "refund",
            "member_id": member,
            "refers_to": "o2",
            "amount": 20000,
            "occurred_at": "2025-10-01T10:00:00Z",
        }
    )
    assert tier(api, member, "2025-12-31T23:00:00Z")["current"]["id"] == "gold"
    assert tier(api, member, "2026-06-30T00:00:00Z")["current"]["id"] == "gold"
    dropped = tier(api, member, "2027-01-02T00:00:00Z")
    assert dropped["current"]["id"] == "silver"
    assert dropped["current"]["since"].startswith("2027-01-01T00:00:00")
    history = api.get(f"/v1/members/{member}/tier/history", params={"as_of": "2027-01-02T00:00:00Z"}).json()[
        "data"
    ]
    assert [(h["to"], h["cause"], h["event_id"]) for h in history] == [
        ("gold", "event", "o2"),
        ("silver", "period_end", None),
    ]


@pytest.mark.parametrize(
    ("policy", "expected"), [("one_level", "silver"), ("recompute", "member"), ("none", "gold")]
)
def test_downgrade_policies_at_period_end(api: Api, policy: str, expected: str) -> None:
    tiers = {**bean_rewards()["tiers"], "downgrade": policy}
    member = api.member(api.program(bean_rewards(tiers=tiers)))
    buy(api, member, "o1", 60000, "2025-03-01T10:00:00Z")
    buy(api, member, "o2", 1000, "2026-03-01T10:00:00Z")
    assert tier(api, member, "2026-12-31T00:00:00Z")["current"]["id"] == "gold"
    assert tier(api, member, "2027-01-01T00:00:01Z")["current"]["id"] == expected


def test_grace_period_delays_the_downgrade(api: Api) -> None:
    tiers = {**bean_rewards()["tiers"], "downgrade": "recompute", "grace_days": 30}
    member = api.member(api.program(bean_rewards(tiers=tiers)))
    buy(api, member, "o1", 60000, "2024-03-01T10:00:00Z")
    assert tier(api, member, "2026-01-15T00:00:00Z")["current"]["id"] == "gold"
    assert tier(api, member, "2026-02-01T00:00:00Z")["current"]["id"] == "member"


def test_keep_and_next_say_what_is_needed(api: Api) -> None:
    member = api.member(api.program())
    buy(api, member, "o1", 25000, "2026-02-01T10:00:00Z")
    t = tier(api, member, "2026-02-02T00:00:00Z")
    assert t["current"]["id"] == "silver"
    assert t["next"] == {"id": "gold", "name": "Gold", "remaining": 25000}
    assert t["keep"]["remaining"] == 0 and t["keep"]["by"].startswith("2027-01-01")
    assert t["qualifying"] == {
        "metric": "qualifying_spend",
        "value": 25000,
        "period_start": "2026-01-01T00:00:00Z".replace("Z", "+00:00"),
        "period_end": "2027-01-01T00:00:00Z".replace("Z", "+00:00"),
    }


def test_status_points_never_read_the_balance(api: Api) -> None:
    tiers = {
        "metric": "status_points",
        "levels": [
            {"id": "base", "name": "Base", "threshold": 0},
            {"id": "vip", "name": "VIP", "threshold": 100},
        ],
    }
    member = api.member(api.program(bean_rewards(tiers=tiers)))
    buy(api, member, "o1", 12000, "2026-02-01T10:00:00Z")
    api.post(f"/v1/members/{member}/adjustments", {"points": -120, "reason": "spent"})
    assert api.points(member)["available"] == 0
    assert tier(api, member)["current"]["id"] == "vip"


def test_manual_and_invite_only_tiers_are_floors(api: Api) -> None:
    tiers = {**bean_rewards()["tiers"]}
    tiers["levels"] = [
        *tiers["levels"],
        {"id": "black", "name": "Black", "threshold": 10**9, "invite_only": True},
    ]
    member = api.member(api.program(bean_rewards(tiers=tiers)))
    buy(api, member, "o1", 2 * 10**9, "2026-02-01T10:00:00Z")
    assert tier(api, member)["current"]["id"] == "gold"  # invite-only is never reached by spending
    r = api.post(f"/v1/members/{member}/tier", {"tier_id": "black", "reason": "founder's friend"})
    assert r.status_code == 201
    assert tier(api, member)["current"]["id"] == "black"
    assert api.post(f"/v1/members/{member}/tier", {"tier_id": "nope", "reason": "x"}).status_code == 422
    assert api.delete(f"/v1/members/{member}/tier").status_code == 200
    # ending the floor never revokes mid-period: the policy places her at the period's end
    assert tier(api, member)["current"]["id"] == "black"
    assert tier(api, member, "2027-01-01T00:00:01Z")["current"]["id"] == "gold"
    assert api.delete(f"/v1/members/{member}/tier").status_code == 404


def test_preview_says_who_would_move_before_publishing(api: Api) -> None:
    program = api.program()
    rich, poor = api.member(program), api.member(program)
    now_iso = "2026-11-01T10:00:00Z"
    buy(api, rich, "o1", 30000, now_iso)
    buy(api, poor, "o2", 5000, now_iso)
    proposed = bean_rewards()
    proposed["tiers"] = {
        **proposed["tiers"],
        "levels": [
            {"id": "member", "name": "Member", "threshold": 0},
            {"id": "silver", "name": "Silver", "threshold": 4000},
            {"id": "gold", "name": "Gold", "threshold": 25000},
        ],
    }
    r = api.post(f"/v1/programs/{program}/tiers/preview", proposed)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["members"] == 2 and out["counts"] == {"up": 2, "down": 0, "same": 0}
    assert {(m["member_id"], m["from"], m["to"]) for m in out["moves"]} == {
        (rich, "silver", "gold"),
        (poor, "member", "silver"),
    }
    assert api.get(f"/v1/programs/{program}").json()["version"] == 1  # nothing published


@pytest.mark.parametrize(
    "levels_or_tiers",
    [
        {"levels": [{"id": "a", "name": "A", "threshold": 100}, {"id": "b", "name": "B", "threshold": 0}]},
        {"levels": [{"id": "a", "name": "A", "threshold": 0}, {"id": "b", "name": "B", "threshold": 0}]},
        {"metric": "karma", "levels": [{"id": "a", "name": "A", "threshold": 0}]},
        {"period": "fortnight", "levels": [{"id": "a", "name": "A", "threshold": 0}]},
        {"grace_days": 400, "levels": [{"id": "a", "name": "A", "threshold": 0}]},
    ],
    ids=["out of order", "overlap", "unknown metric", "unknown period", "grace longer than a period"],
)
def test_bad_tier_definitions_are_422(api: Api, levels_or_tiers: dict[str, Any]) -> None:
    r = api.post("/v1/programs", bean_rewards(tiers=levels_or_tiers))
    assert r.status_code == 422
    assert r.json()["errors"]


def test_anniversary_year_resets_on_the_enrolment_date(api: Api) -> None:
    tiers = {**bean_rewards()["tiers"], "period": "anniversary", "downgrade": "recompute"}
    program = api.program(bean_rewards(tiers=tiers))
    r = api.post(
        "/v1/members",
        {"program_id": program, "email": "anna@example.com", "enrolled_at": "2025-04-15T12:00:00Z"},
    )
    member = r.json()["id"]
    buy(api, member, "o1", 55000, "2025-06-01T10:00:00Z")
    t = tier(api, member, "2025-07-01T00:00:00Z")
    assert t["current"]["id"] == "gold"
    assert t["qualifying"]["period_start"].startswith("2025-04-15") and t["qualifying"][
        "period_end"
    ].startswith("2026-04-15")
    assert tier(api, member, "2027-04-14T00:00:00Z")["current"]["id"] == "gold"  # held through the next year
    assert tier(api, member, "2027-04-16T00:00:00Z")["current"]["id"] == "member"


def test_rolling_twelve_months_holds_a_level_for_twelve_months_from_reaching_it(api: Api) -> None:
    tiers = {**bean_rewards()["tiers"], "period": "rolling_12_months"}
    member = api.member(api.program(bean_rewards(tiers=tiers)))
    buy(api, member, "o1", 30000, "2025-03-01T10:00:00Z")
    buy(api, member, "o2", 25000, "2025-05-01T10:00:00Z")
    assert tier(api, member, "2025-05-02T00:00:00Z")["current"]["id"] == "gold"
    # o1 leaves the window on 2026-03-01, but gold, reached on 2025-05-01, is held for 12 months
    assert tier(api, member, "2026-04-30T00:00:00Z")["current"]["id"] == "gold"
    # a year without spending: the window is empty and nothing was reached in it
    assert tier(api, member, "2026-05-02T00:00:00Z")["current"]["id"] == "member"
    buy(api, member, "o3", 21000, "2026-06-01T10:00:00Z")
    assert tier(api, member, "2026-06-02T00:00:00Z")["current"]["id"] == "silver"
