"""Segments, cohorts, favourites, KPIs and tier thresholds over the API, on hand-made histories
whose answers are worked out in each test; and the errors an analyst can cause."""

from __future__ import annotations

from typing import Any

from tests.conftest import Api, bean_rewards, purchase

PLAIN = bean_rewards(tiers=None)  # 1 point per 100, coffee 2x; no tier multipliers


def _item(
    amount: int, line: str = "l1", category: str = "food", sku: str = "SOUP", qty: int = 1
) -> dict[str, Any]:
    return {"id": line, "sku": sku, "category": category, "quantity": qty, "unit_price": amount}


def _buy(api: Api, member: str, event_id: str, day: str, *items: dict[str, Any], **extra: Any) -> None:
    api.event(purchase(member, event_id, list(items), occurred_at=f"{day}T10:00:00Z", **extra))


def test_rfm_scores_and_segments_on_a_hand_made_history(api: Api) -> None:
    program = api.program(PLAIN)
    ids = {name: api.member(program, external_id=name) for name in "ABCDEF"}
    # Last purchase (recency to 2026-07-01 00:00), purchases (frequency) of 100.00 each (monetary):
    history = {
        "A": ["2026-06-30"],  # 0 days, 1 purchase
        "B": ["2026-04-10", "2026-05-10", "2026-06-10", "2026-06-20"],  # 10 days, 4
        "C": ["2026-03-01", "2026-04-01", "2026-05-31"],  # 30 days, 3
        "D": ["2026-02-01", "2026-04-30"],  # 61 days, 2
        "E": ["2026-01-05", "2026-01-10", "2026-01-15", "2026-01-20", "2026-01-31"],  # 150 days, 5
    }
    for name, days in history.items():
        for n, day in enumerate(days):
            _buy(api, ids[name], f"{name}-{n}", day, _item(10000))
    _buy(api, ids["F"], "F-0", "2025-12-31", _item(10000))  # before the window: not scored
    r = api.get(f"/v1/programs/{program}/analytics/rfm", params={"from": "2026-01-01", "to": "2026-06-30"})
    assert r.status_code == 200, r.text
    out = r.json()
    got = {
        m["external_id"]: (
            m["recency_days"],
            m["frequency"],
            m["monetary"],
            m["r"],
            m["f"],
            m["m"],
            m["segment"],
        )
        for m in out["members"]
    }
    # Five distinct values per dimension: quintile scores 1..5 (recency: the most recent scores 5).
    assert got == {
        "A": (0, 1, 10000, 5, 1, 1, "promising"),  # recent but one purchase
        "B": (10, 4, 40000, 4, 4, 4, "champions"),
        "C": (30, 3, 30000, 3, 3, 3, "loyal"),
        "D": (61, 2, 20000, 2, 2, 2, "hibernating"),
        "E": (150, 5, 50000, 1, 5, 5, "at_risk"),  # the best customer, gone quiet
    }
    assert out["members_scored"] == 5
    assert out["segments"] == {
        "champions": 1,
        "loyal": 1,
        "promising": 1,
        "need_attention": 0,
        "at_risk": 1,
        "hibernating": 1,
        "lost": 0,
    }
    chart = api.get(
        f"/v1/programs/{program}/analytics/rfm/chart", params={"from": "2026-01-01", "to": "2026-06-30"}
    )
    assert chart.status_code == 200 and chart.headers["content-type"].startswith("image/svg+xml")
    assert "<svg" in chart.text and "at risk" in chart.text


def test_refunds_lower_monetary_value(api: Api) -> None:
    program = api.program(PLAIN)
    member = api.member(program, external_id="R")
    _buy(api, member, "o-1", "2026-03-01", _item(6000, "l1"), _item(4000, "l2"))
    api.event(
        {
            "id": "rf-1",
            "type": "refund",
            "member_id": member,
            "refers_to": "o-1",
            "occurred_at": "2026-03-02T10:00:00Z",
            "items": [{"id": "l2", "quantity": 1}],
        }
    )
    out = api.get(
        f"/v1/programs/{program}/analytics/rfm", params={"from": "2026-03-01", "to": "2026-03-31"}
    ).json()
    assert [(m["frequency"], m["monetary"]) for m in out["members"]] == [(1, 6000)]


def test_cohort_retention_by_enrolment_month(api: Api) -> None:
    program = api.program(PLAIN)
    m1 = api.member(program, external_id="m1", enrolled_at="2026-01-05T09:00:00Z")
    m2 = api.member(program, external_id="m2", enrolled_at="2026-01-20T09:00:00Z")
    api.member(program, external_id="m4", enrolled_at="2026-01-25T09:00:00Z")  # never buys
    m3 = api.member(program, external_id="m3", enrolled_at="2026-02-03T09:00:00Z")
    api.member(program, external_id="late", enrolled_at="2026-04-03T09:00:00Z")  # after the window
    _buy(api, m1, "a", "2026-01-06", _item(1000))
    _buy(api, m1, "b", "2026-01-07", _item(1000))  # twice in a month: one active member
    _buy(api, m1, "c", "2026-03-10", _item(1000))
    _buy(api, m2, "d", "2026-02-10", _item(1000))
    _buy(api, m3, "e", "2026-02-11", _item(1000))
    _buy(api, m3, "f", "2026-03-11", _item(1000))
    r = api.get(
        f"/v1/programs/{program}/analytics/cohorts", params={"from": "2026-01-01", "to": "2026-03-31"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["cohorts"] == [
        # January: 3 members; m1 in Jan, m2 in Feb, m1 in Mar -> 1/3 each month
        {"month": "2026-01", "size": 3, "active": [1, 1, 1], "retention": [0.3333, 0.3333, 0.3333]},
        # February: m3 in Feb and Mar
        {"month": "2026-02", "size": 1, "active": [1, 1], "retention": [1.0, 1.0]},
    ]
    chart = api.get(
        f"/v1/programs/{program}/analytics/cohorts/chart", params={"from": "2026-01-01", "to": "2026-03-31"}
    )
    assert chart.status_code == 200 and "2026-02" in chart.text


def test_favourite_category_and_product_net_of_refunds(api: Api) -> None:
    program = api.program(PLAIN)
    member = api.member(program, external_id="fav")
    latte = _item(500, "c1", category="coffee", sku="LATTE", qty=3)  # 15.00
    croissant = _item(1200, "p1", category="pastry", sku="CROISSANT")  # 12.00
    _buy(api, member, "o-1", "2026-05-01", latte, croissant)
    _buy(api, member, "o-2", "2026-05-02", croissant)
    out = api.get(f"/v1/members/{member}/favourites").json()
    assert out["favourite_category"] == "pastry"  # 24.00 of pastry against 15.00 of coffee
    assert out["categories"] == [
        {"name": "pastry", "amount": 2400, "quantity": 2, "purchases": 2},
        {"name": "coffee", "amount": 1500, "quantity": 3, "purchases": 1},
    ]
    assert out["brand"] is None and "brand" in out["brand_note"]
    api.event(
        {
            "id": "rf",
            "type": "refund",
            "member_id": member,
            "refers_to": "o-2",
            "occurred_at": "2026-05-03T10:00:00Z",
            "items": [{"id": "p1", "quantity": 1}],
        }
    )
    out = api.get(f"/v1/members/{member}/favourites").json()
    assert (out["favourite_category"], out["favourite_sku"]) == ("coffee", "LATTE")  # 15.00 > 12.00
    assert api.get("/v1/members/mem_nope/favourites").status_code == 404


def test_kpis_worked_out_by_hand(api: Api) -> None:
    program = api.program(PLAIN)
    x = api.member(program, external_id="x", enrolled_at="2026-01-01T00:00:00Z")
    y = api.member(program, external_id="y", enrolled_at="2026-01-01T00:00:00Z")
    code = api.get(f"/v1/members/{x}").json()["referral_code"]
    z = api.member(program, external_id="z", enrolled_at="2026-03-03T00:00:00Z", referral_code=code)
    # The previous window (29 Jan - 28 Feb, as long as March): x spends 100.00, y 200.00.
    _buy(api, x, "x-feb", "2026-02-10", _item(10000))
    _buy(api, y, "y-feb", "2026-02-12", _item(20000))
    # March: x buys twice (100.00, and 300.00 at "north"); z buys 2 x 100.00 and returns one.
    _buy(api, x, "x-mar-1", "2026-03-05", _item(10000))
    _buy(api, x, "x-mar-2", "2026-03-20", _item(30000), location_id="north")
    _buy(api, z, "z-mar", "2026-03-10", _item(10000, "l1"), _item(10000, "l2"))
    api.event(
        {
            "id": "z-rf",
            "type": "refund",
            "member_id": z,
            "refers_to": "z-mar",
            "occurred_at": "2026-03-15T10:00:00Z",
            "items": [{"id": "l2", "quantity": 1}],
        }
    )
    params = {
        "from": "2026-03-01",
        "to": "2026-03-31",
        "cost_per_point": 1,
        "store_orders": 10,
        "store_revenue": 150000,
    }
    r = api.get(f"/v1/programs/{program}/analytics/kpis/extended", params=params)
    assert r.status_code == 200, r.text
    k = r.json()
    # a store that took less than its members spent is a typo, not a negative non-member AOV
    low = api.get(f"/v1/programs/{program}/analytics/kpis/extended", params={**params, "store_revenue": 1000})
    assert low.status_code == 422 and "store_revenue" in low.json()["detail"]
    # 3 purchases by 2 members (x twice): frequency 1.5, repeat rate 1/2.
    assert (k["purchases"], k["purchasing_members"]) == (3, 2)
    assert k["purchase_frequency"] == 1.5 and k["repeat_purchase_rate"] == 0.5
    # Value net of the refund: 100 + 300 + (200 - 100) = 500.00 over 3 orders.
    assert k["member_revenue"] == 50000 and k["aov_members"] == 16666.6667
    # Non-members: (1500.00 - 500.00) / (10 - 3) orders; members made 3 of the 10 orders.
    assert k["aov_non_members"] == 14285.7143 and k["enrolment_rate"] == 0.3
    # x and y bought in February; only x came back: retention 1/2. x's 400.00 against the
    # 300.00 x and y spent in February: net revenue retention 4/3.
    assert (k["previous_purchasers"], k["retained_purchasers"]) == (2, 1)
    assert k["retention_rate"] == 0.5 and k["churn_rate"] == 0.5
    assert k["net_revenue_retention"] == 1.3333
    # z, the only new member, was referred.
    assert (k["new_members"], k["referred_members"], k["referral_rate"]) == (1, 1, 1.0)
    # Points: x 100 + 300, z 200 - 100 = 500 issued; nothing redeemed or expired.
    assert (k["points_issued"], k["points_redeemed"]) == (500, 0)
    assert k["redemption_rate"] == 0.0 and k["breakage_rate"] is None
    # Cost 500 x 1; incremental revenue (16666.6667 - 14285.7143) x 3 = 7142.86 -> 7143.
    assert (k["programme_cost"], k["incremental_revenue"]) == (500, 7143)
    assert k["roi"] == round((7143 - 500) / 500, 4)
    north = api.get(
        f"/v1/programs/{program}/analytics/kpis/extended",
        params={"from": "2026-03-01", "to": "2026-03-31", "location_id": "north"},
    ).json()
    assert (north["purchases"], north["member_revenue"], north["aov_non_members"], north["roi"]) == (
        1,
        30000,
        None,
        None,
    )


def test_tier_thresholds_from_a_known_distribution(api: Api) -> None:
    program = api.program()  # tiers: silver at 200.00, gold at 500.00
    for k in range(1, 11):  # ten members spending 10.00, 20.00, ... 100.00
        member = api.member(program, external_id=f"t{k}")
        _buy(api, member, f"t-{k}", "2026-02-01", _item(1000 * k))
    r = api.get(
        f"/v1/programs/{program}/analytics/tier-thresholds",
        params={"shares": "0.3,0.1", "from": "2026-01-01", "to": "2026-12-31"},
    )
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["members"] == 10
    # The top 30% are the members with 80.00, 90.00, 100.00; the top 10% the one with 100.00.
    assert [(s["threshold"], s["members_reaching"], s["share_reaching"]) for s in out["suggestions"]] == [
        (8000, 3, 0.3),
        (10000, 1, 0.1),
    ]
    assert [(s["tier_id"], s["current_threshold"]) for s in out["suggestions"]] == [
        ("silver", 20000),
        ("gold", 50000),
    ]
    bad = api.get(f"/v1/programs/{program}/analytics/tier-thresholds", params={"shares": "0.1,0.3"})
    assert bad.status_code == 422 and "decrease" in bad.json()["detail"]
    assert (
        api.get(f"/v1/programs/{program}/analytics/tier-thresholds", params={"shares": "x"}).status_code
        == 422
    )


def test_a_period_without_data_is_a_clear_422(api: Api) -> None:
    program = api.program(PLAIN)
    member = api.member(program, external_id="q")
    _buy(api, member, "o-1", "2026-05-01", _item(1000))
    window = {"from": "2025-01-01", "to": "2025-01-31"}
    for path in ("rfm", "cohorts", "kpis/extended", "tier-thresholds", "rfm/chart"):
        r = api.get(f"/v1/programs/{program}/analytics/{path}", params=window)
        assert r.status_code == 422, (path, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        problem = r.json()
        assert problem["type"].endswith("no-data") and "2025-01-01" in problem["detail"], problem
    sim = api.post(
        f"/v1/programs/{program}/simulations", {"program": PLAIN, "from": "2025-01-01", "to": "2025-01-31"}
    )
    assert sim.status_code == 422 and "nothing to simulate" in sim.json()["detail"]


def test_bad_input_and_other_merchants(api: Api, other_api: Api) -> None:
    program = api.program(PLAIN)
    base = f"/v1/programs/{program}/analytics"
    assert api.get(f"{base}/rfm", params={"from": "2026-02-30"}).status_code == 422
    assert api.get(f"{base}/rfm", params={"from": "2026-03-02", "to": "2026-03-01"}).status_code == 422
    assert api.get(f"{base}/kpis/extended", params={"cost_per_point": "nan"}).status_code == 422
    assert other_api.get(f"{base}/rfm").status_code == 404
    assert other_api.get(f"{base}/cohorts").status_code == 404
    r = api.post(
        f"/v1/programs/{program}/simulations",
        {"program": {"name": "x"}, "from": "2026-01-01", "to": "2026-01-31"},
    )
    assert r.status_code == 422 and r.json()["errors"], r.text
    r = api.post(f"/v1/programs/{program}/simulations", {"program": PLAIN, "from": "2026-01-01"})
    assert r.status_code == 422
    other = other_api.post(
        f"/v1/programs/{program}/simulations", {"program": PLAIN, "from": "2026-01-01", "to": "2026-01-31"}
    )
    assert other.status_code == 404


def test_simulation_over_the_api_side_by_side(api: Api) -> None:
    program = api.program(PLAIN)
    ann = api.member(program, external_id="ann", enrolled_at="2026-01-01T00:00:00Z")
    bob = api.member(program, external_id="bob", enrolled_at="2026-01-01T00:00:00Z")
    _buy(api, ann, "a-1", "2026-04-02", _item(12300, category="coffee"))  # 123 x 2 = 246
    _buy(api, bob, "b-1", "2026-04-03", _item(4550))  # 45.50 -> 45
    _buy(api, bob, "b-2", "2026-05-03", _item(9900))  # after the period
    draft = bean_rewards(
        tiers=None, earning_rules=[{"id": "base", "type": "spend", "points": 2, "per_amount": 100}]
    )
    body = {
        "program": draft,
        "from": "2026-04-01",
        "to": "2026-04-30",
        "cost_per_point": 0.5,
        "include_members": True,
    }
    r = api.post(f"/v1/programs/{program}/simulations", body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["ledger"] == {"points_issued": 291, "points_reversed": 0}
    # Draft: no coffee bonus, 2 points per 1.00: Ann 246 -> 246, Bob 45 -> 91 (4550 x 2 / 100).
    assert (out["live"]["points_issued"], out["draft"]["points_issued"]) == (291, 337)
    assert (out["live"]["cost"], out["draft"]["cost"]) == (146, 168)  # 145.5 and 168.5, rounded half even
    assert out["members_points"] == sorted(
        [{"member_id": ann, "live": 246, "draft": 246}, {"member_id": bob, "live": 45, "draft": 91}],
        key=lambda m: str(m["member_id"]),
    )
    assert [(m["external_id"], m["difference"]) for m in out["most_affected"]] == [("bob", 46)]
    assert api.get(f"/v1/members/{bob}").json()["points"]["available"] == 45 + 99  # nothing written


def test_quintiles_ties_and_thresholds_are_pure_rules() -> None:
    from patron.analytics.segments import quintile_scores, segment_of, suggest_thresholds

    # Equal values share a score: three members tied at the bottom all score 1.
    assert quintile_scores([5, 5, 5, 9, 10]) == [1, 1, 1, 4, 5]
    # Three members: 1 + 5 * worse // 3 with 2, 1 and 0 worse than them (a shorter recency is better).
    assert quintile_scores([0, 10, 30], higher_is_better=False) == [4, 2, 1]
    assert [segment_of(5, 5, 5), segment_of(1, 1, 1), segment_of(3, 1, 2), segment_of(2, 4, 3)] == [
        "champions",
        "lost",
        "need_attention",
        "at_risk",
    ]
    # Ties at a threshold: four members at 50.00 all reach it, and thresholds keep increasing.
    assert suggest_thresholds([100, 5000, 5000, 5000, 5000], [0.2, 0.1]) == [5000, 5001]
    assert suggest_thresholds([], [0.5]) == []


def test_rules_and_rewards_can_target_the_segments_job_computed(api: Api, engine: Any) -> None:
    from datetime import UTC, datetime

    from patron.services.jobs import run_job

    body = bean_rewards(
        tiers=None,
        earning_rules=[
            {"id": "base", "type": "spend", "points": 1, "per_amount": 100},
            {"id": "come-back", "type": "order", "points": 50, "segments": ["at_risk"]},
        ],
        rewards=[
            {
                "id": "vip-gift",
                "name": "VIP gift",
                "type": "free_product",
                "cost": 100,
                "segments": ["champions"],
            }
        ],
    )
    program = api.program(body)
    ids = {name: api.member(program, external_id=f"seg-{name}") for name in "ABCDE"}
    history = {  # as in the RFM test: B a champion, C loyal, E at risk
        "A": ["2026-06-30"],
        "B": ["2026-04-10", "2026-05-10", "2026-06-10", "2026-06-20"],
        "C": ["2026-03-01", "2026-04-01", "2026-05-31"],
        "D": ["2026-02-01", "2026-04-30"],
        "E": ["2026-01-05", "2026-01-10", "2026-01-15", "2026-01-20", "2026-01-31"],
    }
    for name, days in history.items():
        for n, day in enumerate(days):
            _buy(api, ids[name], f"seg-{name}-{n}", day, _item(10000))
    order = purchase(ids["E"], "dry", [_item(1000)], occurred_at="2026-07-01T09:00:00Z")
    before = api.post("/v1/events/calculate", order)
    assert before.status_code == 200 and before.json()["points"] == 10  # no segments yet: no bonus
    as_of = datetime(2026, 7, 1, 12, tzinfo=UTC)
    first = run_job(engine, "segments", as_of=as_of, merchant_id=api.merchant_id)
    again = run_job(engine, "segments", as_of=as_of, merchant_id=api.merchant_id)
    assert (first.members, first.lots, first.points) == (1, 5, 5)
    assert (again.members, again.lots, again.points) == (1, 0, 5)  # the same day again changes nothing
    at_risk = api.event(purchase(ids["E"], "seg-E-after", [_item(1000)], occurred_at="2026-07-02T09:00:00Z"))
    assert at_risk["points"] == 60 and {r["rule_id"] for r in at_risk["rules"]} == {"base", "come-back"}
    champion = api.event(purchase(ids["B"], "seg-B-after", [_item(1000)], occurred_at="2026-07-02T09:00:00Z"))
    assert champion["points"] == 10
    assert api.post(f"/v1/members/{ids['B']}/redemptions", {"reward_id": "vip-gift"}).status_code == 201
    refused = api.post(f"/v1/members/{ids['C']}/redemptions", {"reward_id": "vip-gift"})
    assert refused.status_code == 409 and refused.json()["type"].endswith("reward-not-in-segment")
    bad = api.post(
        "/v1/programs",
        bean_rewards(earning_rules=[{"id": "x", "type": "order", "points": 1, "segments": ["vips"]}]),
    )
    assert bad.status_code == 422
