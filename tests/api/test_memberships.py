"""Paid membership over the API: a trial that converts, renewals due, grace and lapse with the
plan's tier granted and then gone, payments that reconcile with the fees, cancellation, store
credit, the provider-facing service calls, tenancy and bad input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine

from patron.domain.memberships import MembershipConflict, add_months
from patron.services import memberships as service
from patron.services.jobs import run_job
from tests.conftest import Api, bean_rewards

PLANS: list[dict[str, Any]] = [
    {
        "id": "plus",
        "name": "Plus",
        "fee": 999,
        "currency": "USD",
        "interval": "month",
        "trial_days": 14,
        "grace_days": 7,
        "tier": "gold",
        "benefits": ["free shipping"],
    },
    {
        "id": "life",
        "name": "Lifetime",
        "fee": 25000,
        "currency": "USD",
        "interval": "lifetime",
        "tier": "gold",
    },
]


def program_body(period: str = "rolling_12_months", **changes: Any) -> dict[str, Any]:
    body = bean_rewards(**{"membership_plans": PLANS, **changes})
    body["tiers"]["period"] = period
    return body


def at(value: str | datetime) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


def iso(value: datetime) -> str:
    return value.isoformat()


def tier_of(api: Api, member: str, when: datetime | None = None) -> str | None:
    params = {"as_of": iso(when)} if when else {}
    r = api.get(f"/v1/members/{member}", params=params)
    assert r.status_code == 200, r.text
    tier = r.json()["tier"]
    return tier["id"] if tier else None


def memberships(api: Api, member: str, when: datetime | None = None) -> list[dict[str, Any]]:
    params = {"as_of": iso(when)} if when else {}
    r = api.get(f"/v1/members/{member}/memberships", params=params)
    assert r.status_code == 200, r.text
    return list(r.json()["data"])


def pay(api: Api, membership: str, ref: str, paid_at: datetime, amount: int = 999, expect: int = 201) -> Any:
    r = api.post(
        f"/v1/memberships/{membership}/payments",
        {"amount": amount, "currency": "USD", "paid_at": iso(paid_at), "external_ref": ref},
    )
    assert r.status_code == expect, r.text
    return r.json()


@pytest.mark.parametrize("period", ["rolling_12_months", "calendar_year", "anniversary"])
def test_trial_converts_then_falls_due_and_lapses_with_the_tier_granted_then_gone(
    api: Api, engine: Engine, period: str
) -> None:
    """A plan's tier is a floor while the membership is in force, whatever the tier period: it
    is not a level the member reached, so it is gone the moment the membership lapses."""
    program = api.program(program_body(period))
    member = api.member(program, email="trial@example.com")
    assert tier_of(api, member) == "member"

    r = api.post(f"/v1/members/{member}/memberships", {"plan_id": "plus", "trial": True})
    assert r.status_code == 201, r.text
    trial = r.json()
    started = at(trial["started_at"])
    assert trial["state"] == "trialing" and trial["plan"]["id"] == "plus"
    assert at(trial["trial_ends_at"]) == started + timedelta(days=14)
    assert trial["tier"] == "gold" and trial["benefits"] == ["free shipping"]
    assert trial["fees"]["charged"] == 0
    assert tier_of(api, member) == "gold"
    # unpaid, the trial's end is a renewal due: past due, then lapsed after the grace days
    assert memberships(api, member, started + timedelta(days=15))[0]["state"] == "past_due"
    assert tier_of(api, member, started + timedelta(days=15)) == "member"

    paid_at = datetime.now(UTC)
    active = pay(api, trial["id"], "inv-1", paid_at)
    assert active["state"] == "active"
    through = at(active["paid_through"])
    assert through == add_months(paid_at, 1)
    assert active["fees"] == {"currency": "USD", "fee": 999, "periods_paid": 1, "charged": 999}

    assert memberships(api, member, through - timedelta(seconds=1))[0]["state"] == "active"
    assert tier_of(api, member, through - timedelta(seconds=1)) == "gold"
    due = memberships(api, member, through + timedelta(days=1))[0]
    assert due["state"] == "past_due" and at(due["lapses_at"]) == through + timedelta(days=7)
    assert due["tier"] is None and due["benefits"] == []
    assert tier_of(api, member, through + timedelta(days=1)) == "member"
    assert memberships(api, member, through + timedelta(days=7))[0]["state"] == "lapsed"
    assert tier_of(api, member, through + timedelta(days=8)) == "member"
    tier = api.get(f"/v1/members/{member}/tier", params={"as_of": iso(through - timedelta(days=1))}).json()
    assert tier["current"]["id"] == "gold"

    # the job writes the history down at the instants the changes took effect, once
    end = through + timedelta(days=8)
    first = run_job(engine, "memberships", as_of=end, merchant_id=api.merchant_id)
    assert (first.members, first.lots) == (1, 2)
    again = run_job(engine, "memberships", as_of=end, merchant_id=api.merchant_id)
    assert (again.members, again.lots, again.points) == (0, 0, 0)
    seen = api.get(f"/v1/memberships/{trial['id']}", params={"as_of": iso(end)}).json()
    moves = [(h["kind"], h["to"], at(h["at"])) for h in seen["history"]]
    assert moves[0][:2] == ("started", "trialing")
    assert moves[1][:2] == ("payment", "active")
    assert moves[2:] == [("state", "past_due", through), ("state", "lapsed", through + timedelta(days=7))]


def test_payments_renew_by_calendar_month_and_reconcile_with_the_fees(api: Api) -> None:
    program = api.program(program_body())
    member = api.member(program, email="monthly@example.com")
    start = (datetime.now(UTC) - timedelta(days=33)).replace(microsecond=0)
    # without a trial the first payment comes with the start; a wrong fee writes nothing
    bad = api.post(f"/v1/members/{member}/memberships", {"plan_id": "plus", "started_at": iso(start)})
    assert bad.status_code == 422 and bad.json()["detail"].startswith(
        "plan 'plus' starts with its first payment"
    )
    wrong = api.post(
        f"/v1/members/{member}/memberships",
        {
            "plan_id": "plus",
            "started_at": iso(start),
            "payment": {"amount": 500, "currency": "USD", "paid_at": iso(start), "external_ref": "m-1"},
        },
    )
    assert wrong.status_code == 422 and wrong.json()["type"].endswith("/payment-mismatch")
    euro = api.post(
        f"/v1/members/{member}/memberships",
        {
            "plan_id": "plus",
            "started_at": iso(start),
            "payment": {"amount": 999, "currency": "EUR", "paid_at": iso(start), "external_ref": "m-1"},
        },
    )
    assert euro.status_code == 422 and euro.json()["type"].endswith("/payment-mismatch")
    unknown = api.post(f"/v1/members/{member}/memberships", {"plan_id": "gold-club", "trial": True})
    assert unknown.status_code == 422 and unknown.json()["type"].endswith("/unknown-plan")
    no_trial = api.post(f"/v1/members/{member}/memberships", {"plan_id": "life", "trial": True})
    assert no_trial.status_code == 422 and no_trial.json()["detail"] == "plan 'life' has no trial"
    assert memberships(api, member) == []

    r = api.post(
        f"/v1/members/{member}/memberships",
        {
            "plan_id": "plus",
            "started_at": iso(start),
            "payment": {"amount": 999, "currency": "USD", "paid_at": iso(start), "external_ref": "m-1"},
        },
    )
    assert r.status_code == 201, r.text
    membership = r.json()
    assert membership["state"] == "past_due"  # one month paid, that month is over, within grace
    replayed = api.post(
        f"/v1/members/{member}/memberships",
        {
            "plan_id": "plus",
            "started_at": iso(start),
            "payment": {"amount": 999, "currency": "USD", "paid_at": iso(start), "external_ref": "m-1"},
        },
    )
    assert replayed.json()["id"] == membership["id"] and len(memberships(api, member)) == 1
    again = api.post(f"/v1/members/{member}/memberships", {"plan_id": "plus", "trial": True})
    assert again.status_code == 409 and again.json()["type"].endswith("/membership-conflict")

    late = add_months(start, 1) + timedelta(days=1)
    assert pay(api, membership["id"], "m-2", late)["state"] == "active"
    renewed = pay(api, membership["id"], "m-3", datetime.now(UTC))  # the next month in advance
    assert renewed["state"] == "active"
    assert at(renewed["paid_through"]) == add_months(start, 3)
    assert at(renewed["current_period"]["start"]) == add_months(start, 2)

    # the same payment again is a replay; the same reference for another payment is refused
    paid_at = at(api.get(f"/v1/memberships/{membership['id']}").json()["payments"][2]["paid_at"])
    replay = pay(api, membership["id"], "m-3", paid_at, expect=200)
    assert replay["fees"]["periods_paid"] == 3
    clash = pay(api, membership["id"], "m-3", paid_at - timedelta(hours=1), expect=409)
    assert clash["type"].endswith("/idempotency-conflict")
    future = pay(api, membership["id"], "m-4", datetime.now(UTC) + timedelta(days=2), expect=422)
    assert future["detail"] == "paid_at cannot be in the future"

    seen = api.get(f"/v1/memberships/{membership['id']}").json()
    assert [p["external_ref"] for p in seen["payments"]] == ["m-1", "m-2", "m-3"]
    renewals = api.get("/v1/outbox-events", params={"member_id": member, "type": "membership.renewed"})
    assert [e["data"]["amount"] for e in renewals.json()["data"]] == [999, 999]
    assert (
        sum(p["amount"] for p in seen["payments"])
        == seen["fees"]["charged"]
        == seen["fees"]["paid"]
        == 3 * 999
    )
    assert [at(p["period_end"]) for p in seen["payments"]] == [add_months(start, k) for k in (1, 2, 3)]
    # each paid period granted the tier for its own time; the late one from its payment
    assert tier_of(api, member, start + timedelta(days=1)) == "gold"
    assert tier_of(api, member, late - timedelta(hours=12)) == "member"
    assert tier_of(api, member, late + timedelta(hours=1)) == "gold"
    assert tier_of(api, member, add_months(start, 3) - timedelta(hours=1)) == "gold"


def test_cancel_keeps_the_paid_period_and_a_lifetime_plan_never_lapses(api: Api) -> None:
    program = api.program(program_body())
    member = api.member(program, email="cancel@example.com")
    trial = api.post(f"/v1/members/{member}/memberships", {"plan_id": "plus", "trial": True}).json()
    paid = pay(api, trial["id"], "c-1", datetime.now(UTC))
    done = api.post(f"/v1/memberships/{trial['id']}/cancel")
    assert done.status_code == 200, done.text
    view = done.json()
    assert view["state"] == "cancelled" and view["next_payment_due"] is None
    assert view["access_ends_at"] == paid["paid_through"] and view["tier"] == "gold"
    assert tier_of(api, member) == "gold"
    assert tier_of(api, member, at(paid["paid_through"]) + timedelta(seconds=1)) == "member"
    assert api.post(f"/v1/memberships/{trial['id']}/cancel").status_code == 409
    earlier = iso(datetime.now(UTC) - timedelta(minutes=1))  # would move the cancellation back
    assert api.post(f"/v1/memberships/{trial['id']}/cancel", {"at": earlier}).status_code == 409
    history = api.get(f"/v1/memberships/{trial['id']}").json()["history"]
    assert [h["kind"] for h in history].count("cancelled") == 1
    late = pay(api, trial["id"], "c-2", datetime.now(UTC), expect=409)
    assert late["type"].endswith("/membership-conflict")
    # after a cancellation a new membership of the plan can start
    restart = api.post(f"/v1/members/{member}/memberships", {"plan_id": "plus", "trial": True})
    assert restart.status_code == 409  # the cancelled one still runs to the end of its period

    life_member = api.member(program, email="life@example.com")
    since = datetime(2020, 2, 29, 12, tzinfo=UTC)
    r = api.post(
        f"/v1/members/{life_member}/memberships",
        {
            "plan_id": "life",
            "started_at": iso(since),
            "payment": {"amount": 25000, "currency": "USD", "paid_at": iso(since), "external_ref": "life-1"},
        },
    )
    assert r.status_code == 201, r.text
    life = r.json()
    assert life["state"] == "active" and life["paid_through"] is None and life["lapses_at"] is None
    far = datetime(2060, 1, 1, tzinfo=UTC)
    assert memberships(api, life_member, far)[0]["state"] == "active"
    assert tier_of(api, life_member, far) == "gold"
    twice = pay(api, life["id"], "life-2", datetime.now(UTC), amount=25000, expect=409)
    assert "already paid" in twice["detail"]
    assert api.post(f"/v1/memberships/{life['id']}/cancel").json()["state"] == "cancelled"
    assert tier_of(api, life_member) == "member"


def test_ending_manual_assignments_keeps_the_tier_a_membership_pays_for(api: Api) -> None:
    program = api.program(program_body())
    member = api.member(program, email="plus@example.com")
    body = {"amount": 999, "currency": "USD", "paid_at": iso(datetime.now(UTC)), "external_ref": "m-1"}
    assert (
        api.post(f"/v1/members/{member}/memberships", {"plan_id": "plus", "payment": body}).status_code == 201
    )
    assert tier_of(api, member) == "gold"
    with_silver = api.post(f"/v1/members/{member}/tier", {"tier_id": "silver", "reason": "a week's goodwill"})
    assert with_silver.status_code in (200, 201), with_silver.text
    ended = api.client.delete(f"/v1/members/{member}/tier", headers=api.headers())
    assert ended.status_code == 200 and ended.json() == {"ended": 1}
    assert tier_of(api, member) == "gold"  # still paid for
    assert api.client.delete(f"/v1/members/{member}/tier", headers=api.headers()).status_code == 404


def test_a_payment_sent_with_an_offset_is_the_same_period_as_in_utc(api: Api) -> None:
    """A checkout in Tokyo sends its local time: the period it pays is counted from the same
    instant whatever the offset, so the answer, a later read and the tier all agree."""
    program = api.program(program_body())
    member = api.member(program, email="tokyo@example.com")
    body = {"amount": 999, "currency": "USD", "paid_at": "2026-10-01T08:00:00+09:00", "external_ref": "t-1"}
    made = api.post(f"/v1/members/{member}/memberships", {"plan_id": "plus", "payment": body})
    assert made.status_code == 201, made.text
    read = api.get(f"/v1/memberships/{made.json()['id']}").json()
    assert made.json()["paid_through"] == read["paid_through"] == read["payments"][0]["period_end"]
    assert at(read["paid_through"]) == datetime(2026, 10, 30, 23, tzinfo=UTC)  # a month from 09-30T23:00Z
    inside = at(read["paid_through"]) - timedelta(hours=1)
    assert tier_of(api, member, inside) == "gold" and memberships(api, member, inside)[0]["state"] == "active"


def test_provider_calls_find_the_membership_by_subscription_id_and_are_idempotent(
    api: Api, engine: Engine
) -> None:
    program = api.program(program_body())
    member = api.member(program, email="stripe@example.com")
    r = api.post(
        f"/v1/members/{member}/memberships", {"plan_id": "plus", "trial": True, "external_id": "sub_123"}
    )
    assert r.status_code == 201, r.text
    when = datetime.now(UTC)
    with engine.begin() as conn:
        view, created = service.payment_received(
            conn,
            merchant_id=api.merchant_id,
            external_id="sub_123",
            amount=999,
            currency="USD",
            paid_at=when,
            external_ref="in_1",
        )
    assert created and view["state"] == "active"
    with engine.begin() as conn:
        view, created = service.payment_received(
            conn,
            merchant_id=api.merchant_id,
            external_id="sub_123",
            amount=999,
            currency="USD",
            paid_at=when,
            external_ref="in_1",
        )
    assert not created and view["fees"]["periods_paid"] == 1
    for _ in range(2):
        with engine.begin() as conn:
            view = service.subscription_cancelled(conn, merchant_id=api.merchant_id, external_id="sub_123")
        assert view["state"] == "cancelled"
    history = api.get(f"/v1/memberships/{r.json()['id']}").json()["history"]
    assert [h["kind"] for h in history] == ["started", "payment", "cancelled"]


def test_a_renewal_the_provider_collects_after_the_grace_days_renews(api: Api, engine: Engine) -> None:
    """Stripe charges a renewal an hour or more after the period ends, and retries for days: a
    plan without grace days must not lose its subscribers at every renewal."""
    monthly = {**PLANS[0], "id": "monthly", "trial_days": 0, "grace_days": 0}
    program = api.program(program_body(membership_plans=[*PLANS, monthly]))
    member = api.member(program, email="renews@example.com")
    first = datetime.now(UTC) - timedelta(days=40)  # the period it paid ended ten days ago
    body = {"amount": 999, "currency": "USD", "paid_at": iso(first), "external_ref": "in_1"}
    made = api.post(
        f"/v1/members/{member}/memberships",
        {"plan_id": "monthly", "started_at": iso(first), "payment": body, "external_id": "sub_9"},
    )
    assert made.status_code == 201, made.text
    assert memberships(api, member)[0]["state"] == "lapsed"
    manual = pay(api, made.json()["id"], "in_x", datetime.now(UTC), expect=409)  # by hand: final
    assert manual["type"].endswith("/membership-conflict")
    with engine.begin() as conn:
        view, created = service.payment_received(
            conn,
            merchant_id=api.merchant_id,
            external_id="sub_9",
            amount=999,
            currency="USD",
            paid_at=datetime.now(UTC) - timedelta(minutes=5),
            external_ref="in_2",
        )
    assert created and view["state"] == "active" and view["fees"]["periods_paid"] == 2
    assert at(view["paid_through"]) == add_months(first, 2)  # the next period in turn
    assert tier_of(api, member) == "gold"
    with engine.begin() as conn:
        service.subscription_cancelled(conn, merchant_id=api.merchant_id, external_id="sub_9")
    late = {"amount": 999, "currency": "USD", "paid_at": datetime.now(UTC), "external_ref": "in_3"}
    with pytest.raises(MembershipConflict), engine.begin() as conn:  # a cancelled one stays cancelled
        service.payment_received(conn, merchant_id=api.merchant_id, external_id="sub_9", **late)


def test_store_credit_is_money_and_never_goes_negative(api: Api) -> None:
    program = api.program(program_body())
    member = api.member(program, email="credit@example.com")
    empty = api.get(f"/v1/members/{member}/store-credit").json()
    assert empty["balances"] == [] and empty["entries"] == []
    r = api.post(
        f"/v1/members/{member}/store-credit", {"amount": 1500, "currency": "USD", "reason": "goodwill"}
    )
    assert r.status_code == 201, r.text
    spent = api.post(
        f"/v1/members/{member}/store-credit", {"amount": -600, "currency": "USD", "reason": "order 7"}
    )
    assert spent.json()["balances"] == [{"currency": "USD", "amount": 900}]
    short = api.post(f"/v1/members/{member}/store-credit", {"amount": -901, "currency": "USD", "reason": "x"})
    assert short.status_code == 409 and short.json()["type"].endswith("/insufficient-store-credit")
    seen = api.get(f"/v1/members/{member}/store-credit").json()
    assert [e["amount"] for e in seen["entries"]] == [-600, 1500]
    assert api.points(member)["available"] == 0  # store credit is not points


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"membership_plans": [{**PLANS[0], "tier": "platinum"}]}, "grants tier 'platinum'"),
        ({"membership_plans": [PLANS[0], PLANS[0]]}, "duplicate membership plan id"),
        ({"dividends": {"percent": "2", "plans": ["nope"]}}, "unknown membership plan"),
        ({"membership_plans": [{**PLANS[0], "interval": "week"}]}, "interval"),
        ({"dividends": {"percent": "-1"}}, "percent"),
    ],
)
def test_bad_settings_are_refused(api: Api, changes: dict[str, Any], words: str) -> None:
    r = api.post("/v1/programs", program_body(**changes))
    assert r.status_code == 422, r.text
    assert words in r.text


def test_other_merchants_memberships_are_not_found(api: Api, other_api: Api) -> None:
    program = api.program(program_body())
    member = api.member(program, email="mine@example.com")
    mine = api.post(f"/v1/members/{member}/memberships", {"plan_id": "plus", "trial": True}).json()
    assert other_api.get(f"/v1/memberships/{mine['id']}").status_code == 404
    assert other_api.post(f"/v1/memberships/{mine['id']}/cancel").status_code == 404
    assert other_api.get(f"/v1/members/{member}/memberships").status_code == 404
    assert other_api.get(f"/v1/members/{member}/store-credit").status_code == 404
    assert api.get(f"/v1/memberships/{mine['id']}").json()["state"] == "trialing"


def test_a_membership_started_on_the_31st_renews_on_month_ends_without_drifting() -> None:
    from patron.domain.memberships import Interval, period_boundary

    anchor = datetime(2027, 1, 31, 9, tzinfo=UTC)
    ends = [period_boundary(anchor, Interval.MONTH, k).date().isoformat() for k in range(1, 5)]
    assert ends == ["2027-02-28", "2027-03-31", "2027-04-30", "2027-05-31"]
    leap = datetime(2028, 2, 29, tzinfo=UTC)
    assert period_boundary(leap, Interval.YEAR, 1) == datetime(2029, 2, 28, tzinfo=UTC)
    assert period_boundary(leap, Interval.YEAR, 4) == datetime(2032, 2, 29, tzinfo=UTC)


def test_a_membership_recorded_after_the_fact_gets_its_history_written(api: Api, engine: Engine) -> None:
    program = api.program(program_body())
    member = api.member(program, email="late@example.com")
    r = api.post(
        f"/v1/members/{member}/memberships",
        {"plan_id": "plus", "trial": True, "started_at": "2026-01-10T00:00:00+00:00"},
    )
    assert r.status_code == 201, r.text
    membership = r.json()["id"]
    pay(api, membership, "late-1", at("2026-01-20T00:00:00+00:00"))
    done = run_job(engine, "memberships", as_of=at("2026-03-01T00:00:00+00:00"), merchant_id=api.merchant_id)
    assert (done.members, done.lots) == (1, 2)
    seen = api.get(f"/v1/memberships/{membership}", params={"as_of": "2026-03-01T00:00:00+00:00"}).json()
    moves = [(h["kind"], h["to"], h["at"][:10]) for h in seen["history"]]
    assert moves[-2:] == [("state", "past_due", "2026-02-20"), ("state", "lapsed", "2026-02-27")]
