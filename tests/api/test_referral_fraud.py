"""Referral fraud checks, the review queue and referral milestones (SPEC §8.1-8.2)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from patron.domain import referrals as rules
from tests.conftest import Api, bean_rewards, purchase

MUG = [{"id": "l1", "sku": "MUG", "category": "merch", "quantity": 2, "unit_price": 1500}]  # 30 points


def referral_program(api: Api, **settings: Any) -> str:
    return api.program(bean_rewards(referrals={"referrer_points": 500, "referee_points": 250, **settings}))


def code_of(api: Api, member_id: str) -> str:
    return str(api.get(f"/v1/members/{member_id}").json()["referral_code"])


def refer(api: Api, program: str, referrer: str, email: str, **fields: Any) -> str:
    return api.member(program, email=email, referral_code=code_of(api, referrer), **fields)


def queue(api: Api, program: str) -> list[dict[str, Any]]:
    r = api.get(f"/v1/programs/{program}/referrals/review")
    assert r.status_code == 200, r.text
    return list(r.json()["data"])


def assert_in_review(
    api: Api, program: str, referrer: str, referee: str, out: dict[str, Any], reason: str
) -> None:
    assert out["referral"]["status"] == "review" and out["referral"]["reason"] == reason
    assert out["member"]["points"]["available"] == out["points"]  # no welcome bonus
    assert api.points(referrer)["available"] == 0
    held = queue(api, program)
    assert [(r["referee_id"], r["reason"]) for r in held] == [(referee, reason)]
    assert api.get(f"/v1/members/{referrer}/referrals").json()["completed"] == 0


def test_same_mailbox_is_a_self_referral(api: Api) -> None:
    program = referral_program(api)
    referrer = api.member(program, email="Jane.Doe@gmail.com")
    referee = refer(api, program, referrer, "janedoe+again@googlemail.com")
    out = api.event(purchase(referee, "o-1", MUG))
    assert_in_review(api, program, referrer, referee, out, "self_referral_email")


def test_same_payment_fingerprint_is_a_self_referral(api: Api) -> None:
    program = referral_program(api)
    referrer = api.member(program, email="old@example.com")
    visit = {"type": "visit", "attributes": {"payment_fingerprint": "card-42"}}
    api.event({"id": "v-1", "member_id": referrer, **visit, "occurred_at": "2026-02-01T10:00:00Z"})
    referee = refer(api, program, referrer, "new@example.com")
    api.event({"id": "v-2", "member_id": referee, **visit, "occurred_at": "2026-02-02T10:00:00Z"})
    out = api.event(purchase(referee, "o-1", MUG))
    assert_in_review(api, program, referrer, referee, out, "self_referral_payment")


def test_the_qualifying_purchase_own_fingerprint_counts(api: Api) -> None:
    program = referral_program(api)
    referrer = api.member(program, email="old@example.com")
    visit = {"type": "visit", "attributes": {"payment_fingerprint": "card-7"}}
    api.event({"id": "v-1", "member_id": referrer, **visit, "occurred_at": "2026-02-01T10:00:00Z"})
    referee = refer(api, program, referrer, "new@example.com")
    out = api.event(purchase(referee, "o-1", MUG, attributes={"payment_fingerprint": "card-7"}))
    assert_in_review(api, program, referrer, referee, out, "self_referral_payment")


def test_a_referee_who_was_already_a_customer_is_held(api: Api) -> None:
    program = referral_program(api, max_days_to_first_purchase=0)
    referrer = api.member(program, email="old@example.com")
    referee = refer(api, program, referrer, "new@example.com")
    body = purchase(referee, "o-1", MUG)
    del body["occurred_at"]  # now: after enrolment, more than 0 days later
    out = api.event(body)
    assert_in_review(api, program, referrer, referee, out, "existing_customer")


def test_within_the_first_purchase_window_completes(api: Api) -> None:
    program = referral_program(api, max_days_to_first_purchase=30)
    referrer = api.member(program, email="old@example.com")
    referee = refer(api, program, referrer, "new@example.com")
    body = purchase(referee, "o-1", MUG)
    del body["occurred_at"]
    assert api.event(body)["referral"]["status"] == "completed"
    assert api.points(referrer)["available"] == 500 and queue(api, program) == []


def test_velocity_limit_holds_the_referral_over_it(api: Api) -> None:
    program = referral_program(api, max_per_week=2)
    referrer = api.member(program, email="old@example.com")
    referees = [refer(api, program, referrer, f"new{i}@example.com") for i in range(4)]
    days = ["2026-03-01", "2026-03-03", "2026-03-05", "2026-03-09"]
    outs = [
        api.event(purchase(m, f"o-{i}", MUG, occurred_at=f"{day}T10:00:00Z"))
        for i, (m, day) in enumerate(zip(referees, days, strict=True))
    ]
    assert [o["referral"]["status"] for o in outs] == ["completed", "completed", "review", "completed"]
    assert outs[2]["referral"]["reason"] == "velocity"  # 3 in a week; the 4th is 8 days after the 1st
    assert api.points(referrer)["available"] == 3 * 500
    assert api.points(referees[2])["available"] == 30
    assert [r["referee_id"] for r in queue(api, program)] == [referees[2]]


@pytest.mark.parametrize(
    "placed_by",
    [
        {"customer_email": "ADVOCATE@example.com"},  # checked out with the advocate's own email
        {"device_id": "iphone-42"},  # from the phone the advocate orders with
        {"shipping_address": "12 Oak Street, Springfield"},  # shipped to the advocate
    ],
)
def test_an_order_the_advocate_placed_is_held(api: Api, placed_by: dict[str, str]) -> None:
    program = referral_program(api)
    referrer = api.member(
        program, email="advocate@example.com", attributes={"address": "12 oak street springfield"}
    )
    api.event(purchase(referrer, "own-1", MUG, attributes={"device_id": "iphone-42"}))
    referee = refer(api, program, referrer, "friend@example.com")
    out = api.event(purchase(referee, "o-1", MUG, attributes=placed_by))
    assert out["referral"]["status"] == "review" and out["referral"]["reason"] == "advocate_placed_order"
    assert api.points(referrer)["available"] == 30  # only the advocate's own purchase
    assert [r["reason"] for r in queue(api, program)] == ["advocate_placed_order"]


def test_an_order_from_the_friend_own_device_completes(api: Api) -> None:
    program = referral_program(api)
    referrer = api.member(program, email="advocate2@example.com")
    api.event(purchase(referrer, "own-2", MUG, attributes={"device_id": "iphone-42"}))
    referee = refer(api, program, referrer, "friend2@example.com")
    out = api.event(purchase(referee, "o-2", MUG, attributes={"device_id": "pixel-7"}))
    assert out["referral"]["status"] == "completed"


def test_velocity_from_one_address_holds_the_referral_over_it(api: Api) -> None:
    """Three advocates each refer someone at one flat within a week: the third is held."""
    program = referral_program(api, max_per_week=2)
    outs = []
    for i in range(3):
        referrer = api.member(program, email=f"adv{i}@example.com")
        referee = refer(
            api, program, referrer, f"flat{i}@example.com", attributes={"address": "Flat 2, 9 Mill Lane"}
        )
        outs.append(api.event(purchase(referee, f"f-{i}", MUG, occurred_at=f"2026-03-0{i + 1}T10:00:00Z")))
    assert [o["referral"]["status"] for o in outs] == ["completed", "completed", "review"]
    assert outs[2]["referral"]["reason"] == "velocity_address"


def held_referral(api: Api, **settings: Any) -> tuple[str, str, str]:
    program = referral_program(api, **settings)
    referrer = api.member(program, email="jo@example.com")
    referee = refer(api, program, referrer, "Jo+2@Example.com")
    assert api.event(purchase(referee, "o-1", MUG))["referral"]["status"] == "review"
    return program, referrer, referee


def test_approving_credits_both_exactly_once(api: Api) -> None:
    program, referrer, referee = held_referral(api)
    r = api.post(f"/v1/referrals/{referee}/approve")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "completed" and r.json()["referee_points"] == 250
    assert api.points(referee)["available"] == 280 and api.points(referrer)["available"] == 500
    again = api.post(f"/v1/referrals/{referee}/approve")
    assert again.status_code == 409, again.text
    assert api.post(f"/v1/referrals/{referee}/reject").status_code == 409
    assert api.points(referee)["available"] == 280 and api.points(referrer)["available"] == 500
    assert queue(api, program) == []
    assert api.get(f"/v1/members/{referrer}/referrals").json()["completed"] == 1
    # an approved referral is revoked by a full refund like any other
    out = api.event({"id": "c-1", "type": "cancel", "member_id": referee, "refers_to": "o-1"})
    assert out["referral"]["revoked"] is True
    assert api.points(referee)["available"] == 0 and api.points(referrer)["available"] == 0
    assert api.get("/v1/verify").json() == {"ok": True, "problems": []}


def test_rejecting_credits_nobody(api: Api) -> None:
    program, referrer, referee = held_referral(api)
    r = api.post(f"/v1/referrals/{referee}/reject")
    assert r.status_code == 200, r.text and r.json()["status"] == "rejected"
    assert api.post(f"/v1/referrals/{referee}/reject").status_code == 409
    assert api.post(f"/v1/referrals/{referee}/approve").status_code == 409
    api.event(purchase(referee, "o-2", MUG, occurred_at="2026-03-02T10:00:00Z"))
    assert api.points(referee)["available"] == 60 and api.points(referrer)["available"] == 0
    assert queue(api, program) == []


def test_review_needs_a_referral_in_this_merchant(api: Api, other_api: Api) -> None:
    _, _, referee = held_referral(api)
    assert other_api.post(f"/v1/referrals/{referee}/approve").status_code == 404
    assert other_api.get("/v1/programs/prg_nope/referrals/review").status_code == 404
    assert api.post(f"/v1/referrals/{referee}/approve").status_code == 200


def test_a_refund_while_in_review_leaves_nothing_to_approve(api: Api) -> None:
    _, referrer, referee = held_referral(api)
    api.event({"id": "c-1", "type": "cancel", "member_id": referee, "refers_to": "o-1"})
    assert api.post(f"/v1/referrals/{referee}/approve").status_code == 409
    assert api.points(referrer)["available"] == 0


def test_a_referral_milestone_is_credited_once_at_the_nth_completion(api: Api) -> None:
    program = referral_program(api, milestones=[{"count": 2, "points": 1000}])
    referrer = api.member(program, email="old@example.com")
    referees = [refer(api, program, referrer, f"new{i}@example.com") for i in range(4)]
    first = api.event(purchase(referees[0], "o-0", MUG))
    assert "milestones" not in first["referral"] and api.points(referrer)["available"] == 500
    second = api.event(purchase(referees[1], "o-1", MUG))
    assert second["referral"]["milestones"] == [{"count": 2, "points": 1000}]
    assert api.points(referrer)["available"] == 2 * 500 + 1000
    # a revoked referral keeps the milestone; reaching 2 completions again does not credit it again
    api.event({"id": "c-0", "type": "cancel", "member_id": referees[0], "refers_to": "o-0"})
    assert api.points(referrer)["available"] == 500 + 1000
    again = api.event(purchase(referees[2], "o-2", MUG))
    assert "milestones" not in again["referral"]
    api.event(purchase(referees[3], "o-3", MUG))
    assert api.points(referrer)["available"] == 3 * 500 + 1000
    assert api.get("/v1/verify").json() == {"ok": True, "problems": []}


def test_an_approval_can_reach_a_milestone(api: Api) -> None:
    program = referral_program(api, milestones=[{"count": 1, "points": 1000}])
    referrer = api.member(program, email="jo@example.com")
    referee = refer(api, program, referrer, "jo+1@example.com")
    assert api.event(purchase(referee, "o-1", MUG))["referral"]["status"] == "review"
    assert api.points(referrer)["available"] == 0
    assert api.post(f"/v1/referrals/{referee}/approve").json()["milestones"] == [{"count": 1, "points": 1000}]
    assert api.points(referrer)["available"] == 1500


def test_milestone_counts_must_be_distinct(api: Api) -> None:
    body = bean_rewards(referrals={"referrer_points": 5, "milestones": [{"count": 2, "points": 1}] * 2})
    assert api.post("/v1/programs", body).status_code == 422


def test_the_rules_themselves() -> None:
    at = datetime(2026, 3, 8, tzinfo=UTC)
    jo = rules.Party(email="jo@example.com", phone="+14155550123")
    other = rules.Party(email="al@example.com", phone="+14155550123")
    assert rules.self_referral(jo, other) == rules.SELF_PHONE
    assert rules.self_referral(jo, rules.Party(email="al@example.com", phone=None)) is None
    assert rules.email_identity("J.O+x@GoogleMail.com") == "jo@gmail.com"
    assert rules.email_identity("j.o@example.com") == "j.o@example.com"
    week = [datetime(2026, 3, d, tzinfo=UTC) for d in (2, 3, 7)]
    assert rules.too_fast(week, at, 3) and not rules.too_fast(week, at, 4)
    assert not rules.too_fast(week, at, None)
    assert rules.milestones_due([(5, 10), (1, 2), (3, 4)], 3, [1]) == [(3, 4)]
