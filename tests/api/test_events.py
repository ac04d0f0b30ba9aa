"""Earning and returns over the API: the contract's arithmetic, replays, debt, as_of reads."""

from __future__ import annotations

from typing import Any

from tests.conftest import Api, bean_rewards, purchase

LATTES_AND_MUG = [
    {"id": "l1", "sku": "LATTE", "category": "coffee", "quantity": 2, "unit_price": 450},
    {"id": "l2", "sku": "MUG", "category": "merch", "quantity": 1, "unit_price": 1500},
]


def ledger(api: Api, member: str, **params: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    cursor = None
    while True:
        q = {"limit": 3, **params, **({"cursor": cursor} if cursor else {})}
        page = api.get(f"/v1/members/{member}/ledger", params=q).json()
        rows += page["data"]
        if not page["has_more"]:
            return rows
        cursor = page["next_cursor"]


def per_account(rows: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rows:
        out[r["account"]] = out.get(r["account"], 0) + r["points"]
    return out


def test_replay_returns_first_result_and_writes_nothing(api: Api) -> None:
    mid = api.member(api.program(), email="r@example.com")
    body = purchase(mid, "order-1", LATTES_AND_MUG)
    first = api.event(body)
    again = api.post("/v1/events", body)
    assert again.status_code == 200
    assert again.json() == first
    assert len(ledger(api, mid)) == 1
    assert api.points(mid)["available"] == 33
    changed = purchase(mid, "order-1", LATTES_AND_MUG[:1])
    r = api.post("/v1/events", changed)
    assert r.status_code == 409
    assert r.json()["type"].endswith("/idempotency-conflict")
    assert api.points(mid)["available"] == 33


def test_partial_refunds_reverse_exactly_what_the_lines_earned(api: Api) -> None:
    mid = api.member(api.program(), email="p@example.com")
    items = [{"id": "a", "sku": "BEANS", "category": "coffee", "quantity": 3, "unit_price": 1333}]
    earned = api.event(purchase(mid, "o-1", items))["points"]  # 3*1333=3999 -> 39.99*2 = 79.98 -> 79
    assert earned == 79
    taken = []
    for n in range(3):
        r = api.event(
            {
                "id": f"rf-{n}",
                "type": "refund",
                "member_id": mid,
                "refers_to": "o-1",
                "items": [{"id": "a", "quantity": 1}],
            }
        )
        taken.append(-r["points"])
    assert taken == [26, 26, 27]  # floor(79/3) twice, the last unit takes what is left
    assert api.points(mid)["available"] == 0
    assert api.points(mid)["lifetime_earned"] == 0
    r = api.post(
        "/v1/events",
        {
            "id": "rf-9",
            "type": "refund",
            "member_id": mid,
            "refers_to": "o-1",
            "items": [{"id": "a", "quantity": 1}],
        },
    )
    assert r.status_code == 422
    assert r.json()["type"].endswith("/refund-exceeds-purchase")


def test_refund_by_amount_is_proportional_and_cancel_takes_the_rest(api: Api) -> None:
    mid = api.member(api.program(), email="amt@example.com")
    assert api.event(purchase(mid, "o-1", LATTES_AND_MUG))["points"] == 33
    r = api.event({"id": "rf-1", "type": "refund", "member_id": mid, "refers_to": "o-1", "amount": 1200})
    assert r["points"] == -16  # floor(33 * 1200 / 2400)
    c = api.event({"id": "c-1", "type": "cancel", "member_id": mid, "refers_to": "o-1"})
    assert c["points"] == -17
    assert api.points(mid)["available"] == 0
    assert api.points(mid)["lifetime_earned"] == 0
    again = api.post("/v1/events", {"id": "c-2", "type": "cancel", "member_id": mid, "refers_to": "o-1"})
    assert again.status_code == 409


def test_a_refund_dated_before_its_purchase_takes_effect_when_the_purchase_did(api: Api) -> None:
    """Two systems' clocks disagree: the refund says it came first. It is recorded at the
    purchase's time, so no balance between the two instants shows points taken back before they
    were earned."""
    mid = api.member(api.program(), email="early@example.com")
    api.event(purchase(mid, "o-1", LATTES_AND_MUG, occurred_at="2026-03-01T10:00:00Z"))
    early = {"id": "rf-1", "type": "refund", "member_id": mid, "refers_to": "o-1", "amount": 1200}
    r = api.event({**early, "occurred_at": "2026-01-15T09:00:00Z"})
    assert r["points"] == -16 and r["occurred_at"] == "2026-03-01T10:00:00+00:00"
    for at in ("2026-02-01T00:00:00Z", "2026-03-01T10:00:00Z", "2026-04-01T00:00:00Z"):
        points = api.get(f"/v1/members/{mid}", params={"as_of": at}).json()["points"]
        assert points["available"] >= 0 and points["lifetime_earned"] >= 0, (at, points)
    assert (
        api.get(f"/v1/members/{mid}", params={"as_of": "2026-02-01T00:00:00Z"}).json()["points"][
            "lifetime_earned"
        ]
        == 0
    )
    assert api.points(mid)["available"] == 33 - 16
    assert (
        api.post("/v1/events", {**early, "occurred_at": "2026-01-15T09:00:00Z"}).status_code == 200
    )  # a replay


def test_refund_beyond_the_balance_becomes_debt_repaid_by_later_earnings(api: Api) -> None:
    program = api.program()
    mid = api.member(program, email="debt@example.com")
    api.event(purchase(mid, "o-1", LATTES_AND_MUG))  # 33
    api.post(f"/v1/members/{mid}/adjustments", {"points": -30, "reason": "spent at the counter"})
    api.event({"id": "c-1", "type": "cancel", "member_id": mid, "refers_to": "o-1"})
    pts = api.points(mid)
    assert pts["available"] == 0
    assert pts["debt"] == 30
    later = [{"id": "x", "sku": "MUG", "category": "merch", "quantity": 1, "unit_price": 5000}]
    api.event(purchase(mid, "o-2", later, occurred_at="2026-03-02T10:00:00Z"))  # 50 points
    pts = api.points(mid)
    assert pts["debt"] == 0
    assert pts["available"] == 20
    assert per_account(ledger(api, mid)) == {"available": 20, "debt": 0}


def test_write_off_policy_never_creates_debt(api: Api) -> None:
    mid = api.member(api.program(bean_rewards(return_policy="write_off")), email="wo@example.com")
    api.event(purchase(mid, "o-1", LATTES_AND_MUG))
    api.post(f"/v1/members/{mid}/adjustments", {"points": -30, "reason": "redeemed"})
    api.event({"id": "c-1", "type": "cancel", "member_id": mid, "refers_to": "o-1"})
    pts = api.points(mid)
    assert pts["available"] == 0
    assert pts["debt"] == 0
    assert api.get("/v1/verify").json()["ok"] is True


def test_ledger_sums_per_account_to_the_balances_and_pages_cover_everything(api: Api) -> None:
    mid = api.member(api.program(), email="l@example.com")
    for n in range(5):
        api.event(purchase(mid, f"o-{n}", LATTES_AND_MUG, occurred_at=f"2026-03-0{n + 1}T10:00:00Z"))
    api.event(
        {
            "id": "rf",
            "type": "refund",
            "member_id": mid,
            "refers_to": "o-2",
            "items": [{"id": "l2", "quantity": 1}],
        }
    )
    rows = ledger(api, mid)
    assert len({r["id"] for r in rows}) == len(rows) == 6
    assert [r["occurred_at"] for r in rows] == sorted((r["occurred_at"] for r in rows), reverse=True)
    pts = api.points(mid)
    assert per_account(rows) == {"available": pts["available"]}
    assert pts["available"] == 5 * 33 - 15
    assert rows[0]["type"] == "refund"
    assert rows[0]["event_id"] == "rf"


def test_as_of_reads_show_the_past(api: Api) -> None:
    mid = api.member(api.program(), email="t@example.com")
    api.event(purchase(mid, "o-1", LATTES_AND_MUG, occurred_at="2026-02-01T10:00:00Z"))
    api.event(purchase(mid, "o-2", LATTES_AND_MUG, occurred_at="2026-04-01T10:00:00Z"))
    assert api.points(mid, as_of="2026-01-31T00:00:00Z")["available"] == 0
    assert api.points(mid, as_of="2026-03-01T00:00:00+01:00")["available"] == 33
    assert api.points(mid)["available"] == 66
    assert len(ledger(api, mid, as_of="2026-03-01T00:00:00Z")) == 1
    assert api.get(f"/v1/members/{mid}", params={"as_of": "2026-03-01T00:00:00"}).status_code == 422


def test_tier_upgrades_at_once_and_its_multiplier_applies_from_the_next_event(api: Api) -> None:
    mid = api.member(api.program(), email="gold@example.com")
    big = [{"id": "a", "sku": "MACHINE", "category": "gear", "quantity": 1, "unit_price": 50000}]
    api.event(purchase(mid, "o-1", big, occurred_at="2026-02-01T10:00:00Z"))
    tier = api.get(f"/v1/members/{mid}/tier").json()
    assert tier["current"]["id"] == "gold"
    assert tier["current"]["since"].startswith("2026-02-01T10:00:00")
    assert tier["qualifying"]["value"] == 50000
    assert tier["next"] is None
    out = api.event(purchase(mid, "o-2", LATTES_AND_MUG, occurred_at="2026-02-02T10:00:00Z"))
    assert out["points"] == 49  # floor(33 * 1.5)
    assert {"rule_id": "tier:gold", "points": 16} in out["rules"]
    before = api.get(f"/v1/members/{mid}/tier", params={"as_of": "2026-01-15T00:00:00Z"}).json()
    assert before["current"]["id"] == "member"
    assert before["next"] == {
        "id": "silver",
        "name": "Silver",
        "remaining": 20000,
    }


def test_visits_actions_and_unknown_types(api: Api) -> None:
    body = bean_rewards(
        earning_rules=[
            {"id": "base", "type": "spend", "points": 1, "per_amount": 100},
            {"id": "visit", "type": "visit", "points": 5},
            {
                "id": "review",
                "type": "action",
                "action": "review",
                "points": 25,
                "limit": {"count": 1, "per": "month"},
            },
        ]
    )
    mid = api.member(api.program(body), email="v@example.com")
    assert api.event({"id": "v1", "type": "visit", "member_id": mid})["points"] == 5
    first = api.event(
        {"id": "rv1", "type": "review", "member_id": mid, "occurred_at": "2026-05-02T10:00:00Z"}
    )
    second = api.event(
        {"id": "rv2", "type": "review", "member_id": mid, "occurred_at": "2026-05-20T10:00:00Z"}
    )
    third = api.event(
        {"id": "rv3", "type": "review", "member_id": mid, "occurred_at": "2026-06-01T10:00:00Z"}
    )
    assert (first["points"], second["points"], third["points"]) == (25, 0, 25)
    r = api.post("/v1/events", {"id": "x1", "type": "tweet", "member_id": mid})
    assert r.status_code == 422
    assert "tweet" in r.json()["detail"]


def test_flight_miles_by_great_circle_distance(api: Api) -> None:
    body = bean_rewards(
        earning_rules=[
            {"id": "base", "type": "spend", "points": 1, "per_amount": 100},
            {"id": "miles", "type": "distance", "percent_by_fare_class": {"Y": 100, "J": 150}},
        ],
        tiers=None,
    )
    mid = api.member(api.program(body), email="fly@example.com")
    flight = {
        "id": "f1",
        "type": "flight",
        "member_id": mid,
        "occurred_at": "2026-03-01T10:00:00Z",
        "origin": "JFK",
        "destination": "LHR",
        "fare_class": "J",
        "fare": 250000,
        "currency": "USD",
    }
    out = api.event(flight)
    assert 5150 <= out["points"] <= 5200  # ~3,450 statute miles * 150%, and the fare earns nothing
    r = api.post("/v1/events", {**flight, "id": "f2", "origin": "ZZZ"})
    assert r.status_code == 422


def test_program_versions_apply_from_their_effective_time(api: Api) -> None:
    program = api.program()
    mid = api.member(program, email="ver@example.com")
    richer = bean_rewards(earning_rules=[{"id": "base", "type": "spend", "points": 3, "per_amount": 100}])
    r = api.put(f"/v1/programs/{program}", richer, params={"effective_from": "2026-06-01T00:00:00Z"})
    assert r.status_code == 200
    old = api.event(purchase(mid, "o-old", LATTES_AND_MUG, occurred_at="2026-05-31T23:00:00Z"))
    new = api.event(purchase(mid, "o-new", LATTES_AND_MUG, occurred_at="2026-06-01T01:00:00Z"))
    assert (old["points"], old["program_version"]) == (33, 1)
    assert (new["points"], new["program_version"]) == (72, 2)
    versions = api.get(f"/v1/programs/{program}/versions").json()["data"]
    assert [v["version"] for v in versions] == [1, 2]
    assert {r["program_version"] for r in ledger(api, mid)} == {1, 2}


def test_calculate_writes_nothing_and_says_what_is_near(api: Api) -> None:
    mid = api.member(api.program(), email="calc@example.com")
    body = {"type": "purchase", "member_id": mid, "items": LATTES_AND_MUG}
    r = api.post("/v1/events/calculate", body)
    assert r.status_code == 200
    out = r.json()
    assert out["points"] == 33
    assert {"kind": "tier", "tier_id": "silver", "metric": "qualifying_spend", "remaining": 17600} in out[
        "near"
    ]
    assert {"kind": "reward", "reward_id": "free-coffee", "points_needed": 67} in out["near"]
    assert api.points(mid)["available"] == 0
    assert ledger(api, mid) == []


def test_an_item_called_shipping_keeps_its_price_beside_the_shipping_fee(api: Api) -> None:
    mid = api.member(
        api.program(bean_rewards(tiers=None, earning_base={"shipping": True})), email="s@example.com"
    )
    body = purchase(mid, "ship-1", [{"id": "shipping", "quantity": 1, "unit_price": 10000}], shipping=500)
    out = api.event(body)
    assert out["qualifying_amount"] == 10500 and out["points"] == 105
    assert [(ln["id"], ln["amount"]) for ln in out["lines"]] == [("shipping", 10000), ("shipping~1", 500)]


def test_calculate_counts_towards_a_tier_only_what_recording_would(api: Api) -> None:
    tiers = {
        "metric": "visits",
        "levels": [
            {"id": "member", "name": "Member", "threshold": 0},
            {"id": "regular", "name": "Regular", "threshold": 5},
        ],
    }
    rules = [{"id": "review", "type": "action", "action": "review", "points": 20}]
    mid = api.member(api.program(bean_rewards(tiers=tiers, earning_rules=rules)), email="visits@example.com")
    near = api.post("/v1/events/calculate", {"type": "review", "member_id": mid}).json()["near"]
    assert {
        "kind": "tier",
        "tier_id": "regular",
        "metric": "visits",
        "remaining": 5,
    } in near  # a review is no visit
    api.event({"id": "rv-1", "type": "review", "member_id": mid})
    assert api.get(f"/v1/members/{mid}/tier").json()["qualifying"]["value"] == 0


def test_calculate_says_what_recording_would_do(api: Api) -> None:
    """Held pending, the points are not spendable after the event; a future time or a member who
    cannot earn is refused as recording them would be."""
    held = api.member(api.program(bean_rewards(pending_days=14)), email="held@example.com")
    body = {"type": "purchase", "member_id": held, "items": LATTES_AND_MUG}
    out = api.post("/v1/events/calculate", body).json()
    assert out["points"] == 33 and out["available_after"] == 0
    assert {"kind": "reward", "reward_id": "free-coffee", "points_needed": 100} in out["near"]
    recorded = api.event({**purchase(held, "h-1", LATTES_AND_MUG), "occurred_at": None})
    assert recorded["member"]["points"]["available"] == out["available_after"]
    future = api.post("/v1/events/calculate", {**body, "occurred_at": "2099-01-01T00:00:00Z"})
    assert future.status_code == 422
    assert api.patch(f"/v1/members/{held}", {"status": "suspended"}).status_code == 200
    assert api.post("/v1/events/calculate", body).status_code == 409


def test_pending_points_are_released_when_the_period_has_passed(api: Api) -> None:
    mid = api.member(api.program(bean_rewards(pending_days=14)), email="pend@example.com")
    api.event(purchase(mid, "o-1", LATTES_AND_MUG, occurred_at="2026-03-01T10:00:00Z"))
    during = api.points(mid, as_of="2026-03-05T00:00:00Z")
    assert (during["pending"], during["available"]) == (33, 0)
    assert api.points(mid, as_of="2026-03-16T00:00:00Z")["available"] == 33
    assert api.points(mid)["pending"] == 0


def test_purchases_cancelled_in_full_do_not_count_towards_a_purchase_milestone(api: Api) -> None:
    stones = [
        {"id": "third", "name": "Third purchase", "type": "purchase_count", "threshold": 3, "points": 500}
    ]
    mid = api.member(api.program(bean_rewards(milestones=stones)), email="loop@example.com")
    for n in range(3):  # buy and cancel, three times over
        out = api.event(purchase(mid, f"o-{n}", LATTES_AND_MUG, occurred_at=f"2026-03-0{n + 1}T10:00:00Z"))
        assert out["milestones"] == []
        api.event({"id": f"c-{n}", "type": "cancel", "member_id": mid, "refers_to": f"o-{n}"})
    assert api.points(mid)["available"] == 0
    half = {"id": "r-3", "type": "refund", "member_id": mid, "refers_to": "o-3", "amount": 100}
    for n in (3, 4):
        api.event(purchase(mid, f"o-{n}", LATTES_AND_MUG, occurred_at=f"2026-03-0{n + 1}T10:00:00Z"))
    api.event(half)  # a partial refund leaves the purchase counted
    out = api.event(purchase(mid, "o-5", LATTES_AND_MUG, occurred_at="2026-03-06T10:00:00Z"))
    assert [m["milestone_id"] for m in out["milestones"]] == ["third"]


def test_an_event_that_repays_debt_and_reaches_a_milestone_leaves_no_negative_debt(api: Api) -> None:
    stones = [
        {"id": "first", "name": "First purchase", "type": "purchase_count", "threshold": 2, "points": 50}
    ]
    mid = api.member(api.program(bean_rewards(milestones=stones)), email="ms@example.com")
    api.event(purchase(mid, "o-1", LATTES_AND_MUG))  # 33
    api.post(f"/v1/members/{mid}/adjustments", {"points": -33, "reason": "spent"})
    api.event({"id": "r-1", "type": "refund", "member_id": mid, "refers_to": "o-1", "amount": 1200})
    assert api.points(mid)["debt"] == 16  # a part returned: o-1 still counts as a purchase
    out = api.event(purchase(mid, "o-2", LATTES_AND_MUG, occurred_at="2026-03-02T10:00:00Z"))
    assert [m["milestone_id"] for m in out["milestones"]] == ["first"]
    assert out["member"]["points"]["debt"] == 0 and out["member"]["points"]["available"] == 33 - 16 + 50
    assert api.points(mid) == out["member"]["points"]
    assert api.get("/v1/verify").json() == {"ok": True, "problems": []}
