"""Two-phase redemption: reserve, redeem or cancel, codes at the till, limits, stock, tiers."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Api, bean_rewards, purchase

REWARDS: list[dict[str, Any]] = [
    {
        "id": "free-coffee",
        "name": "Free coffee",
        "type": "free_product",
        "cost": 100,
        "settings": {"sku": "LATTE"},
    },
    {"id": "five-off", "name": "$5 off", "type": "fixed_discount", "cost": 250, "settings": {"amount": 500}},
    {
        "id": "tenpc",
        "name": "10% off",
        "type": "percent_discount",
        "cost": 150,
        "settings": {"percent": 10, "max_amount": 2000},
    },
    {"id": "mug", "name": "Mug", "type": "physical_gift", "cost": 50, "stock": 1},
    {
        "id": "monthly",
        "name": "Pastry",
        "type": "free_product",
        "cost": 10,
        "limit": {"count": 1, "per": "month"},
    },
    {
        "id": "gold-only",
        "name": "Lounge",
        "type": "partner_perk",
        "cost": 10,
        "tiers": ["gold"],
        "settings": {"partner": "Lounge Co"},
    },
    {
        "id": "future",
        "name": "Soon",
        "type": "free_shipping",
        "cost": 10,
        "valid_from": "2099-01-01T00:00:00Z",
    },
]


def funded(api: Api, points: int = 300, **program: Any) -> str:
    member = api.member(api.program(bean_rewards(rewards=REWARDS, **program)), email="r@example.com")
    assert (
        api.post(f"/v1/members/{member}/adjustments", {"points": points, "reason": "welcome"}).status_code
        == 201
    )
    return member


def test_reserve_then_redeem_is_final(api: Api) -> None:
    member = funded(api)
    r = api.post(f"/v1/members/{member}/redemptions", {"reward_id": "free-coffee"})
    assert r.status_code == 201
    red = r.json()
    assert red["status"] == "reserved" and red["points"] == 100 and len(red["code"]) == 12
    assert red["grants"] == {"kind": "free_product", "name": "Free coffee", "sku": "LATTE"}
    pts = api.points(member)
    assert (pts["available"], pts["reserved"], pts["redeemed"]) == (200, 100, 0)
    done = api.post(f"/v1/redemptions/{red['id']}/redeem")
    assert done.status_code == 200 and done.json()["status"] == "redeemed"
    pts = api.points(member)
    assert (pts["available"], pts["reserved"], pts["redeemed"]) == (200, 0, 100)
    again = api.post(f"/v1/redemptions/{red['id']}/redeem")
    assert again.status_code == 409 and again.json()["type"].endswith("/redemption-redeemed")
    cancel = api.post(f"/v1/redemptions/{red['id']}/cancel")
    assert cancel.status_code == 409
    assert api.points(member)["redeemed"] == 100
    assert api.get("/v1/verify").json()["ok"] is True


def test_cancel_returns_exactly_what_was_reserved_to_the_same_lots(api: Api) -> None:
    member = funded(api)
    before = api.get(f"/v1/members/{member}/ledger").json()["data"]
    red = api.post(f"/v1/members/{member}/redemptions", {"reward_id": "five-off"}).json()
    assert red["grants"] == {"kind": "fixed_discount", "name": "$5 off", "amount": 500, "currency": "USD"}
    r = api.post(f"/v1/redemptions/{red['id']}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    pts = api.points(member)
    assert (pts["available"], pts["reserved"], pts["redeemed"]) == (300, 0, 0)
    after = api.get(f"/v1/members/{member}/ledger").json()["data"]
    moved = [row for row in after if row not in before]
    assert {row["type"] for row in moved} == {"reservation", "cancellation"}
    assert {row["lot_id"] for row in moved} == {before[0]["lot_id"]}
    assert {row["expires_at"] for row in moved} == {before[0]["expires_at"]}
    r = api.post(f"/v1/redemptions/{red['id']}/redeem")
    assert r.status_code == 409 and r.json()["type"].endswith("/redemption-cancelled")


def test_points_a_refund_took_while_reserved_repay_the_debt_when_they_come_back(api: Api) -> None:
    """A purchase's points are reserved, then the purchase is refunded (debt policy): the member
    owes them. Cancelling the reservation gives them back to repay that debt first, not as
    spendable points beside it."""
    program = api.program(bean_rewards(rewards=REWARDS, return_policy="debt"))
    member = api.member(program, email="owes@example.com")
    line = {"id": "l1", "sku": "BEANS", "category": "retail", "quantity": 1, "unit_price": 25000}
    api.event(purchase(member, "o-1", [line]))
    assert api.points(member)["available"] == 250
    red = api.post(f"/v1/members/{member}/redemptions", {"reward_id": "free-coffee"}).json()
    api.event(
        {"id": "r-1", "type": "refund", "member_id": member, "refers_to": "o-1", "items": [{"id": "l1"}]}
    )
    pts = api.points(member)
    assert (pts["available"], pts["reserved"], pts["debt"]) == (0, 100, 100)
    assert api.post(f"/v1/redemptions/{red['id']}/cancel").json()["status"] == "cancelled"
    pts = api.points(member)
    assert (pts["available"], pts["reserved"], pts["debt"]) == (0, 0, 0)
    again = api.post(f"/v1/members/{member}/redemptions", {"reward_id": "free-coffee"})
    assert again.status_code == 409 and again.json()["type"].endswith("/insufficient-points")
    assert api.get("/v1/verify").json()["ok"] is True


def test_insufficient_points_is_409_and_writes_nothing(api: Api) -> None:
    member = funded(api, points=120)
    r = api.post(f"/v1/members/{member}/redemptions", {"reward_id": "five-off"})
    assert r.status_code == 409 and r.json()["type"].endswith("/insufficient-points")
    assert api.points(member)["available"] == 120
    assert api.get(f"/v1/members/{member}/redemptions").json()["data"] == []


def test_code_at_the_till_validates_and_consumes_once(api: Api) -> None:
    member = funded(api)
    red = api.post(f"/v1/members/{member}/redemptions", {"reward_id": "tenpc"}).json()
    v = api.get(f"/v1/codes/{red['code'].lower()}").json()
    assert v["valid"] is True and v["member"]["id"] == member
    assert v["redemption"]["grants"]["percent"] == 10
    assert api.post(f"/v1/codes/{red['code']}/redeem").json()["status"] == "redeemed"
    v = api.get(f"/v1/codes/{red['code']}").json()
    assert v["valid"] is False and v["reason"]["type"] == "redemption-redeemed"
    assert api.post(f"/v1/codes/{red['code']}/redeem").status_code == 409
    assert api.get("/v1/codes/NOSUCHCODE00").status_code == 404


def test_codes_of_another_merchant_do_not_exist(api: Api, other_api: Api) -> None:
    member = funded(api)
    red = api.post(f"/v1/members/{member}/redemptions", {"reward_id": "free-coffee"}).json()
    assert other_api.get(f"/v1/codes/{red['code']}").status_code == 404
    assert other_api.post(f"/v1/codes/{red['code']}/redeem").status_code == 404
    assert other_api.post(f"/v1/redemptions/{red['id']}/redeem").status_code == 404
    assert api.points(member)["reserved"] == 100


def test_stock_limits_tiers_and_windows_each_say_why(api: Api) -> None:
    member = funded(api)
    assert api.post(f"/v1/members/{member}/redemptions", {"reward_id": "mug"}).status_code == 201
    cases = {
        "mug": "/out-of-stock",
        "gold-only": "/reward-not-in-tier",
        "future": "/reward-unavailable",
    }
    for reward, suffix in cases.items():
        r = api.post(f"/v1/members/{member}/redemptions", {"reward_id": reward})
        assert r.status_code == 409 and r.json()["type"].endswith(suffix), reward
    assert api.post(f"/v1/members/{member}/redemptions", {"reward_id": "monthly"}).status_code == 201
    r = api.post(f"/v1/members/{member}/redemptions", {"reward_id": "monthly"})
    assert r.status_code == 409 and r.json()["type"].endswith("/limit-reached")
    r = api.post(f"/v1/members/{member}/redemptions", {"reward_id": "nope"})
    assert r.status_code == 422 and r.json()["type"].endswith("/unknown-reward")
    pts = api.points(member)
    assert (pts["available"], pts["reserved"]) == (240, 60)


def test_catalogue_shows_what_the_member_can_redeem(api: Api) -> None:
    member = funded(api, points=120)
    items = {r["reward_id"]: r for r in api.get(f"/v1/members/{member}/rewards").json()["data"]}
    assert items["free-coffee"]["redeemable"] is True
    assert items["five-off"]["redeemable"] is False
    assert items["five-off"]["reason"]["type"] == "insufficient-points"
    assert items["gold-only"]["reason"]["type"] == "reward-not-in-tier"
    assert "future" in items and items["future"]["redeemable"] is False


def test_suspended_members_cannot_redeem(api: Api) -> None:
    member = funded(api)
    api.patch(f"/v1/members/{member}", {"status": "suspended"})
    r = api.post(f"/v1/members/{member}/redemptions", {"reward_id": "free-coffee"})
    assert r.status_code == 409 and r.json()["type"].endswith("/member-inactive")


def test_pay_with_points_is_capped_and_the_rest_of_the_order_earns(api: Api) -> None:
    payment = {"points": 100, "per_amount": 100, "max_percent": 50}
    member = funded(api, points=3000, points_payment=payment)
    r = api.post(f"/v1/members/{member}/redemptions", {"points": 1500, "order_amount": 2000})
    assert r.status_code == 409 and r.json()["type"].endswith("/points-payment-refused")
    assert r.json()["max_points"] == 1000
    red = api.post(f"/v1/members/{member}/redemptions", {"points": 800, "order_amount": 2000}).json()
    assert red["grants"] == {
        "kind": "points_payment",
        "name": "Paid with points",
        "amount": 800,
        "currency": "USD",
    }
    assert api.post(f"/v1/codes/{red['code']}/redeem").json()["status"] == "redeemed"
    # the till sends the purchase with the points' value as a discount: only the rest earns
    items = [
        {"id": "l1", "sku": "BEANS", "category": "beans", "quantity": 1, "unit_price": 2000, "discount": 800}
    ]
    assert api.event(purchase(member, "o-1", items))["points"] == 12
    pts = api.points(member)
    assert (pts["available"], pts["redeemed"]) == (3000 - 800 + 12, 800)
    r = api.post(f"/v1/members/{member}/redemptions", {"points": 5000, "order_amount": 20000})
    assert r.status_code == 409 and r.json()["type"].endswith("/insufficient-points")


def test_several_rewards_in_one_order_are_all_or_none(api: Api) -> None:
    member = funded(api, points=300)
    both = api.post(f"/v1/members/{member}/redemptions", {"reward_ids": ["free-coffee", "tenpc"]})
    assert both.status_code == 201 and both.json()["points"] == 250
    assert [r["reward_id"] for r in both.json()["data"]] == ["free-coffee", "tenpc"]
    too_many = api.post(f"/v1/members/{member}/redemptions", {"reward_ids": ["free-coffee", "free-coffee"]})
    assert too_many.status_code == 409
    pts = api.points(member)
    assert (pts["available"], pts["reserved"]) == (50, 250)  # the refused pair reserved nothing


def test_physical_gift_fulfilment(api: Api) -> None:
    member = funded(api)
    red = api.post(f"/v1/members/{member}/redemptions", {"reward_id": "mug"}).json()
    assert api.post(f"/v1/redemptions/{red['id']}/fulfilment", {"status": "shipped"}).status_code == 409
    assert api.post(f"/v1/redemptions/{red['id']}/redeem").json()["fulfilment_status"] == "ordered"
    assert api.post(f"/v1/redemptions/{red['id']}/fulfilment", {"status": "delivered"}).status_code == 409
    assert (
        api.post(f"/v1/redemptions/{red['id']}/fulfilment", {"status": "shipped"}).json()["fulfilment_status"]
        == "shipped"
    )
    assert (
        api.post(f"/v1/redemptions/{red['id']}/fulfilment", {"status": "delivered"}).json()[
            "fulfilment_status"
        ]
        == "delivered"
    )
    coffee = api.post(f"/v1/members/{member}/redemptions", {"reward_id": "free-coffee"}).json()
    api.post(f"/v1/redemptions/{coffee['id']}/redeem")
    assert api.post(f"/v1/redemptions/{coffee['id']}/fulfilment", {"status": "shipped"}).status_code == 409


KINDS = [
    ("fixed_discount", {"amount": 500}),
    ("percent_discount", {"percent": 15, "max_amount": 1000}),
    ("free_product", {"sku": "LATTE"}),
    ("free_shipping", {}),
    ("store_credit", {"amount": 1000}),
    ("event_ticket", {"event": "tasting-night"}),
    ("travel_award", {"route": "JFK-LHR", "cabin": "J"}),
    ("partner_perk", {"partner": "Cinema Co", "description": "Two tickets"}),
    ("physical_gift", {"sku": "MUG"}),
]


@pytest.mark.parametrize(("kind", "settings"), KINDS, ids=[k for k, _ in KINDS])
def test_every_reward_kind_reserves_validates_and_redeems(
    api: Api, kind: str, settings: dict[str, Any]
) -> None:
    reward = {"id": "r", "name": f"A {kind}", "type": kind, "cost": 40, "settings": settings}
    member = api.member(api.program(bean_rewards(rewards=[reward])), email="kind@example.com")
    api.post(f"/v1/members/{member}/adjustments", {"points": 100, "reason": "gift"})
    red = api.post(f"/v1/members/{member}/redemptions", {"reward_id": "r"}).json()
    assert red["grants"]["kind"] == kind
    assert {k: red["grants"][k] for k in settings} == settings
    check = api.get(f"/v1/codes/{red['code']}").json()
    assert check["valid"] is True and check["redemption"]["grants"] == red["grants"]
    assert api.post(f"/v1/codes/{red['code']}/redeem").json()["status"] == "redeemed"
    assert api.points(member)["redeemed"] == 40


def test_reward_settings_are_validated_per_kind(api: Api) -> None:
    for reward in (
        {"id": "r", "name": "X", "type": "percent_discount", "cost": 10, "settings": {"percent": 150}},
        {"id": "r", "name": "X", "type": "fixed_discount", "cost": 10, "settings": {}},
        {"id": "r", "name": "X", "type": "free_shipping", "cost": 10, "settings": {"amount": 5}},
        {"id": "r", "name": "X", "type": "teleport", "cost": 10},
    ):
        r = api.post("/v1/programs", bean_rewards(rewards=[reward]))
        assert r.status_code == 422, reward
