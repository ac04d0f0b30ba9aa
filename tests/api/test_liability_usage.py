"""Liability and breakage, and usage metering per location."""

from __future__ import annotations

from tests.conftest import Api, bean_rewards, purchase

MUG = [{"id": "l1", "sku": "MUG", "category": "merch", "quantity": 1, "unit_price": 10000}]  # 100 points


def test_liability_values_outstanding_points_net_of_breakage(api: Api) -> None:
    rewards = [{"id": "coffee", "name": "Coffee", "cost": 50}]
    program = api.program(bean_rewards(tiers=None, rewards=rewards))
    member = api.member(program, email="l@example.com")
    api.event(purchase(member, "o-1", MUG, occurred_at="2026-03-01T10:00:00Z"))  # 100 points
    red = api.post(f"/v1/members/{member}/redemptions", {"reward_id": "coffee"}).json()
    api.post(f"/v1/redemptions/{red['id']}/redeem")
    r = api.get(f"/v1/programs/{program}/analytics/liability", params={"cost_per_point": 0.5})
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["outstanding"], out["redeemed_12_months"], out["expired_12_months"]) == (50, 50, 0)
    assert out["breakage_rate"] == 0 and out["liability"] == 25
    assert api.get(f"/v1/programs/{program}/analytics/liability").status_code == 422  # no cost known
    with_payment = api.program(bean_rewards(tiers=None, points_payment={"points": 100, "per_amount": 100}))
    assert api.get(f"/v1/programs/{with_payment}/analytics/liability").json()["cost_per_point"] == 1.0


def test_usage_counts_earns_and_redemptions_per_location(api: Api) -> None:
    rewards = [{"id": "coffee", "name": "Coffee", "cost": 50}]
    program = api.program(bean_rewards(tiers=None, rewards=rewards))
    member = api.member(program, email="u@example.com")
    api.event(purchase(member, "o-1", MUG, occurred_at="2026-03-01T10:00:00Z", location_id="north"))
    api.event(purchase(member, "o-2", MUG, occurred_at="2026-03-05T10:00:00Z", location_id="north"))
    api.event(purchase(member, "o-3", MUG, occurred_at="2026-03-07T10:00:00Z", location_id="south"))
    api.event(purchase(member, "o-4", MUG, occurred_at="2026-04-07T10:00:00Z", location_id="south"))
    out = api.get(f"/v1/programs/{program}/analytics/usage", params={"month": "2026-03"}).json()
    assert out["locations"] == [
        {"location_id": "north", "earns": 2, "redemptions": 0},
        {"location_id": "south", "earns": 1, "redemptions": 0},
    ]
    assert out["earns"] == 3
    red = api.post(
        f"/v1/members/{member}/redemptions", {"reward_id": "coffee", "location_id": "north"}
    ).json()
    api.post(f"/v1/redemptions/{red['id']}/redeem")
    now = api.get(f"/v1/programs/{program}/analytics/usage").json()
    assert {"location_id": "north", "earns": 0, "redemptions": 1} in now["locations"]
    assert now["enrolments"] == 1
    assert api.get(f"/v1/programs/{program}/analytics/usage", params={"month": "2026-13"}).status_code == 422
