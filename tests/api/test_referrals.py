"""Referrals as the contract says: the referee's first purchase credits both; a full refund of
that purchase takes both back."""

from __future__ import annotations

from tests.conftest import Api, bean_rewards, purchase

MUG = [{"id": "l1", "sku": "MUG", "category": "merch", "quantity": 2, "unit_price": 1500}]


def enrolled_pair(api: Api, **referrals: int) -> tuple[str, str]:
    program = api.program(
        bean_rewards(referrals={"referrer_points": 500, "referee_points": 250, **referrals})
    )
    referrer = api.member(program, email="old@example.com")
    code = api.get(f"/v1/members/{referrer}").json()["referral_code"]
    referee = api.member(program, email="new@example.com", referral_code=code)
    return referrer, referee


def test_first_purchase_credits_both_once(api: Api) -> None:
    referrer, referee = enrolled_pair(api)
    first = api.event(purchase(referee, "o-1", MUG))
    assert first["points"] == 30 and first["referral"]["referee_points"] == 250
    assert first["member"]["points"]["available"] == 280
    assert api.points(referrer)["available"] == 500
    api.event(purchase(referee, "o-2", MUG, occurred_at="2026-03-02T10:00:00Z"))
    assert api.points(referrer)["available"] == 500  # only the first purchase counts
    assert api.points(referee)["available"] == 310
    info = api.get(f"/v1/members/{referrer}/referrals").json()
    assert info["completed"] == 1 and info["referrals"][0]["referee_id"] == referee


def test_a_full_refund_of_that_purchase_takes_both_back(api: Api) -> None:
    referrer, referee = enrolled_pair(api)
    api.event(purchase(referee, "o-1", MUG))
    api.event(
        {
            "id": "r-1",
            "type": "refund",
            "member_id": referee,
            "refers_to": "o-1",
            "items": [{"id": "l1", "quantity": 1}],
        }
    )
    assert api.points(referrer)["available"] == 500  # a partial refund keeps the referral
    out = api.event(
        {
            "id": "r-2",
            "type": "refund",
            "member_id": referee,
            "refers_to": "o-1",
            "items": [{"id": "l1", "quantity": 1}],
        }
    )
    assert out["referral"]["revoked"] is True
    assert api.points(referee)["available"] == 0
    assert api.points(referrer)["available"] == 0
    assert api.get(f"/v1/members/{referrer}/referrals").json()["completed"] == 0
    assert api.get("/v1/verify").json() == {"ok": True, "problems": []}


def test_a_referrer_who_spent_the_bonus_owes_it_as_debt(api: Api) -> None:
    referrer, referee = enrolled_pair(api)
    api.event(purchase(referee, "o-1", MUG))
    api.post(f"/v1/members/{referrer}/adjustments", {"points": -400, "reason": "redeemed"})
    api.event({"id": "c-1", "type": "cancel", "member_id": referee, "refers_to": "o-1"})
    pts = api.points(referrer)
    assert (pts["available"], pts["debt"]) == (0, 400)


def test_minimum_spend_makes_the_first_qualifying_purchase_count(api: Api) -> None:
    referrer, referee = enrolled_pair(api, min_spend=5000)
    small = api.event(purchase(referee, "o-1", MUG))
    assert small["referral"] is None and api.points(referrer)["available"] == 0
    big = [{"id": "l1", "sku": "GRINDER", "category": "gear", "quantity": 1, "unit_price": 6000}]
    assert api.event(purchase(referee, "o-2", big, occurred_at="2026-03-02T10:00:00Z"))["referral"]
    assert api.points(referrer)["available"] == 500
