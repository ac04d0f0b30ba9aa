"""The engine against a model small enough to trust, driven by Hypothesis: random sequences of
enrol, earn, refund, adjust, reserve, redeem, cancel, settle-again, expire and requalify, and after
every step each member's balances, lots, tier and ledger agree with the model, and the books
balance (``ledger.verify``).

The model (plain Python, no database):

* a purchase of ``q`` units at ``d`` dollars earns ``q * d`` points (1 point per dollar, merch
  lines); it repays debt first, the rest is a lot that expires 12 calendar months after the event;
* a refund of ``r`` units takes back ``r * d`` points: the purchase's own lot first, then the other
  lots soonest-expiring first, the shortfall becoming debt;
* an adjustment credits like an earning (counted in ``lifetime_earned``) or debits the lots
  soonest-expiring first, refused when it would overdraw;
* a reservation moves a reward's cost from the soonest-expiring lots to reserved; redeeming makes it
  redeemed, cancelling gives each lot back what it gave; a settled one cannot be settled again;
* ``expire-points`` as of T moves what is left of every lot expiring by T to expired; running it
  again for T changes nothing; ``requalify-tiers`` twice records nothing the second time;
* the tier's qualifying value is the calendar year's purchases net of their refunds, and the level
  is at least what that value reaches and at most what the best of this year and last year reached.

Time: the model's clock starts three years ago and moves forward on every step, so that events,
adjustments and job runs happen at distinct, increasing instants (reservations happen now).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import Engine

from patron.domain.errors import Conflict, InsufficientPoints
from patron.domain.expiry import add_months
from patron.domain.ledger import Account, Balances
from patron.services import events, ledger, members, merchants, programs, redemptions
from patron.services.jobs import run_job
from patron.services.members import MemberCreate
from patron.services.programs import program_at
from patron.services.tiers import tier_state
from patron.storage import ledger as ledger_repo
from tests.conftest import bean_rewards
from tests.reliability.conftest import assert_books_balance

REWARDS = {"small": 30, "big": 170}
LEVELS = [("member", 0), ("silver", 20000), ("gold", 50000)]
PROGRAM = bean_rewards(
    rewards=[{"id": r, "name": r.title(), "cost": c} for r, c in REWARDS.items()],
    tiers={
        "metric": "qualifying_spend",
        "period": "calendar_year",
        "downgrade": "recompute",
        "levels": [{"id": i, "name": i.title(), "threshold": th} for i, th in LEVELS],
    },
)


def reach(value: int) -> int:
    """The index of the highest level ``value`` reaches."""
    return max(i for i, (_, th) in enumerate(LEVELS) if value >= th)


@dataclass
class Purchase:
    id: str
    member: str
    at: datetime
    units: int
    dollars: int
    refunded: int = 0


@dataclass
class Hold:
    id: str
    member: str
    points: int
    lots: list[tuple[datetime, int]]  # (lot's earned_at, points taken)
    status: str = "reserved"


@dataclass
class Model:
    """One member's figures and lots; lots are keyed by their ``earned_at`` (distinct instants)."""

    lots: dict[datetime, int] = field(default_factory=dict)  # earned_at -> points left in available
    reserved: int = 0
    debt: int = 0
    lifetime: int = 0
    expired: int = 0
    redeemed: int = 0
    spend: dict[int, int] = field(default_factory=dict)  # year -> qualifying spend, net of refunds
    peak: dict[int, int] = field(default_factory=dict)  # year -> the highest that value reached

    @property
    def available(self) -> int:
        return sum(self.lots.values())

    def balances(self) -> Balances:
        return Balances(
            available=self.available,
            reserved=self.reserved,
            debt=self.debt,
            lifetime_earned=self.lifetime,
            expired=self.expired,
            redeemed=self.redeemed,
        )

    def spending_order(self) -> list[datetime]:
        # every lot expires 12 months after it was earned: soonest-expiring is oldest first
        return sorted(at for at, left in self.lots.items() if left > 0)

    def credit(self, points: int, at: datetime) -> None:
        repay = min(points, self.debt)
        self.debt -= repay
        if points - repay:
            self.lots[at] = points - repay

    def draw(
        self, points: int, first: list[datetime] | None = None
    ) -> tuple[list[tuple[datetime, int]], int]:
        """Take ``points`` from the lots (``first`` before the rest): what was taken, and the
        shortfall."""
        order = [a for a in first or [] if self.lots.get(a, 0) > 0]
        order += [a for a in self.spending_order() if a not in order]
        taken, left = [], points
        for at in order:
            take = min(self.lots[at], left)
            if take:
                self.lots[at] -= take
                taken.append((at, take))
                left -= take
        self.lots = {a: p for a, p in self.lots.items() if p > 0}
        return taken, left

    def count_spend(self, year: int, amount: int) -> None:
        self.spend[year] = self.spend.get(year, 0) + amount
        self.peak[year] = max(self.peak.get(year, 0), self.spend[year])


def _utc(d: datetime) -> datetime:
    return d.astimezone(UTC) if d.tzinfo else d.replace(tzinfo=UTC)


class EngineAgainstModel(RuleBasedStateMachine):
    engine: Engine
    db_url: str
    members = Bundle("members")

    def __init__(self) -> None:
        super().__init__()
        now = datetime.now(UTC).replace(second=0, microsecond=0)
        self.clock = now - timedelta(days=3 * 365)
        self.limit = now - timedelta(days=1)
        self.models: dict[str, Model] = {}
        self.purchases: list[Purchase] = []
        self.holds: list[Hold] = []
        self.n = 0
        with self.engine.begin() as conn:
            merchant, _ = merchants.create_merchant(conn, name="Model Co")
            self.merchant = merchant["id"]
            self.program = programs.create_program(conn, merchant_id=self.merchant, body=PROGRAM)["id"]

    # ------------------------------------------------------------------ helpers

    def tick(self, days: int) -> datetime:
        """Move the clock forward: at least a minute, so that every step has its own instant."""
        step = timedelta(days=days, minutes=1)
        self.clock = (
            self.clock + step if self.clock + step < self.limit else self.clock + timedelta(minutes=1)
        )
        return self.clock

    def next_id(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}-{self.n}"

    # ------------------------------------------------------------------ rules

    @initialize(target=members)
    def first_member(self) -> str:
        return self.enrol_member()

    @precondition(lambda self: len(self.models) < 3)
    @rule(target=members)
    def enrol(self) -> str:
        return self.enrol_member()

    def enrol_member(self) -> str:
        with self.engine.begin() as conn:
            member = members.enrol(
                conn,
                merchant_id=self.merchant,
                data=MemberCreate(program_id=self.program, email=f"{self.next_id('m')}@example.com"),
            )
        self.models[member["id"]] = Model()
        return str(member["id"])

    @rule(member=members, units=st.integers(1, 3), dollars=st.integers(1, 150), days=st.integers(0, 20))
    def earn(self, member: str, units: int, dollars: int, days: int) -> None:
        at = self.tick(days)
        event_id = self.next_id("order")
        body = {
            "id": event_id,
            "type": "purchase",
            "member_id": member,
            "occurred_at": at.isoformat(),
            "currency": "USD",
            "items": [
                {
                    "id": "l1",
                    "sku": "MUG",
                    "category": "merch",
                    "quantity": units,
                    "unit_price": 100 * dollars,
                }
            ],
        }
        with self.engine.begin() as conn:
            result, created = events.record_event(conn, merchant_id=self.merchant, body=body)
        assert created and result["points"] == units * dollars
        model = self.models[member]
        model.credit(units * dollars, at)
        model.lifetime += units * dollars
        model.count_spend(at.year, units * dollars * 100)
        self.purchases.append(Purchase(event_id, member, at, units, dollars))

    @precondition(lambda self: any(p.refunded < p.units for p in self.purchases))
    @rule(data=st.data(), days=st.integers(0, 20))
    def refund(self, data: st.DataObject, days: int) -> None:
        purchase = data.draw(st.sampled_from([p for p in self.purchases if p.refunded < p.units]))
        units = data.draw(st.integers(1, purchase.units - purchase.refunded))
        at = self.tick(days)
        body = {
            "id": self.next_id("refund"),
            "type": "refund",
            "member_id": purchase.member,
            "refers_to": purchase.id,
            "occurred_at": at.isoformat(),
            "items": [{"id": "l1", "quantity": units}],
        }
        with self.engine.begin() as conn:
            result, _ = events.record_event(conn, merchant_id=self.merchant, body=body)
        points = units * purchase.dollars
        assert result["points"] == -points
        model = self.models[purchase.member]
        _, shortfall = model.draw(points, first=[purchase.at])
        model.debt += shortfall
        model.lifetime -= points
        model.count_spend(purchase.at.year, -points * 100)
        purchase.refunded += units

    @rule(member=members, points=st.integers(-300, 300).filter(bool), days=st.integers(0, 20))
    def adjust(self, member: str, points: int, days: int) -> None:
        at = self.tick(days)
        model = self.models[member]
        try:
            with self.engine.begin() as conn:
                ledger.adjust(
                    conn,
                    merchant_id=self.merchant,
                    member_id=member,
                    points=points,
                    reason="model",
                    occurred_at=at,
                )
        except InsufficientPoints:
            assert -points > model.available, (points, model.available)
            return
        if points > 0:
            model.credit(points, at)
            model.lifetime += points
        else:
            assert -points <= model.available
            model.draw(-points)

    @rule(member=members, reward=st.sampled_from(sorted(REWARDS)))
    def reserve(self, member: str, reward: str) -> None:
        model = self.models[member]
        try:
            with self.engine.begin() as conn:
                made = redemptions.reserve(
                    conn, merchant_id=self.merchant, member_id=member, reward_id=reward
                )
        except InsufficientPoints:
            assert model.available < REWARDS[reward], (reward, model.available)
            return
        assert made["points"] == REWARDS[reward]
        taken, shortfall = model.draw(REWARDS[reward])
        assert shortfall == 0, "the engine reserved points the model does not have"
        model.reserved += REWARDS[reward]
        self.holds.append(Hold(made["id"], member, REWARDS[reward], taken))

    @precondition(lambda self: any(h.status == "reserved" for h in self.holds))
    @rule(data=st.data(), redeem=st.booleans())
    def settle(self, data: st.DataObject, redeem: bool) -> None:
        hold = data.draw(st.sampled_from([h for h in self.holds if h.status == "reserved"]))
        with self.engine.begin() as conn:
            if redeem:
                done = redemptions.redeem(conn, merchant_id=self.merchant, redemption_id=hold.id)
            else:
                done = redemptions.cancel(conn, merchant_id=self.merchant, redemption_id=hold.id)
        hold.status = done["status"]
        assert hold.status == ("redeemed" if redeem else "cancelled")
        model = self.models[hold.member]
        model.reserved -= hold.points
        if redeem:
            model.redeemed += hold.points
        else:  # back to the same lots, repaying a debt first (from the soonest to expire)
            for at, points in hold.lots:
                repay = min(points, model.debt)
                model.debt -= repay
                if points - repay:
                    model.lots[at] = model.lots.get(at, 0) + points - repay

    @precondition(lambda self: any(h.status != "reserved" for h in self.holds))
    @rule(data=st.data(), redeem=st.booleans())
    def settle_again(self, data: st.DataObject, redeem: bool) -> None:
        hold = data.draw(st.sampled_from([h for h in self.holds if h.status != "reserved"]))
        settle = redemptions.redeem if redeem else redemptions.cancel
        with pytest.raises(Conflict), self.engine.begin() as conn:
            settle(conn, merchant_id=self.merchant, redemption_id=hold.id)

    @rule(days=st.integers(0, 60))
    def expire(self, days: int) -> None:
        at = self.tick(days)
        first = run_job(self.engine, "expire-points", as_of=at, merchant_id=self.merchant)
        expected = 0
        for model in self.models.values():
            for earned_at in list(model.lots):
                if add_months(earned_at, 12) <= at:
                    expected += model.lots[earned_at]
                    model.expired += model.lots.pop(earned_at)
        assert first.points == expected
        again = run_job(self.engine, "expire-points", as_of=at, merchant_id=self.merchant)
        assert (again.lots, again.points) == (0, 0)

    @rule(days=st.integers(0, 60))
    def requalify(self, days: int) -> None:
        at = self.tick(days)
        run_job(self.engine, "requalify-tiers", as_of=at, merchant_id=self.merchant)
        again = run_job(self.engine, "requalify-tiers", as_of=at, merchant_id=self.merchant)
        assert again.lots == 0, "a second requalification for the same time recorded changes again"

    # ------------------------------------------------------------------ the check

    @invariant()
    def engine_agrees_with_model(self) -> None:
        with self.engine.begin() as conn:
            assert ledger.verify(conn, merchant_id=self.merchant) == []
            program, _ = program_at(conn, merchant_id=self.merchant, program_id=self.program, at=self.clock)
            for member_id, model in self.models.items():
                got = ledger.balances(conn, merchant_id=self.merchant, member_id=member_id, as_of=None)
                assert got == model.balances(), member_id
                lots = ledger_repo.lot_balances(conn, self.merchant, member_id, Account.AVAILABLE)
                assert {_utc(lot.earned_at): lot.remaining for lot in lots} == model.lots
                for lot in lots:
                    assert lot.expires_at is not None
                    assert _utc(lot.expires_at) == add_months(_utc(lot.earned_at), 12)
                page = ledger.ledger_page(conn, merchant_id=self.merchant, member_id=member_id, limit=500)
                assert not page["has_more"]
                per_account: dict[str, int] = {}
                for row in page["data"]:
                    per_account[row["account"]] = per_account.get(row["account"], 0) + row["points"]
                for account in ("available", "reserved", "debt"):
                    assert per_account.get(account, 0) == getattr(got, account), account
                member = members.get_member(conn, merchant_id=self.merchant, member_id=member_id)
                state = tier_state(
                    conn, merchant_id=self.merchant, member=member, program=program, as_of=self.clock
                )
                assert state is not None and state.level is not None
                year = self.clock.year
                assert state.value == model.spend.get(year, 0)
                level = [i for i, _ in LEVELS].index(state.level.id)
                best = max(model.peak.get(year, 0), model.peak.get(year - 1, 0))
                assert reach(model.spend.get(year, 0)) <= level <= reach(best), (
                    level,
                    model.spend,
                    model.peak,
                )

    def teardown(self) -> None:
        if hasattr(self, "merchant"):
            with self.engine.begin() as conn:
                assert ledger.verify(conn, merchant_id=self.merchant) == []


def _run(engine: Engine, db_url: str, examples: int, steps: int) -> None:
    machine = type("Machine", (EngineAgainstModel,), {"engine": engine, "db_url": db_url})
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=examples,
            stateful_step_count=steps,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
    assert_books_balance(engine, db_url)


def test_the_engine_agrees_with_the_model(engine: Engine, db_url: str) -> None:
    _run(engine, db_url, examples=int(os.environ.get("PATRON_STATEFUL_EXAMPLES", "8")), steps=30)


@pytest.mark.slow
def test_the_engine_agrees_with_the_model_over_long_runs(engine: Engine, db_url: str) -> None:
    _run(engine, db_url, examples=int(os.environ.get("PATRON_STATEFUL_LONG_EXAMPLES", "10")), steps=40)


def test_points_given_back_to_an_expired_lot_expire_again(engine: Engine, db_url: str) -> None:
    with engine.begin() as conn:
        merchant, _ = merchants.create_merchant(conn, name="Expired Twice")
        m = merchant["id"]
        program = programs.create_program(conn, merchant_id=m, body=PROGRAM)["id"]
        member = members.enrol(
            conn, merchant_id=m, data=MemberCreate(program_id=program, email="e@example.com")
        )
        line = [{"id": "l1", "sku": "MUG", "category": "merch", "quantity": 1, "unit_price": 10000}]
        body = {
            "id": "o-1",
            "type": "purchase",
            "member_id": member["id"],
            "occurred_at": "2024-01-10T10:00:00Z",
        }
        events.record_event(conn, merchant_id=m, body={**body, "currency": "USD", "items": line})
        held = redemptions.reserve(conn, merchant_id=m, member_id=member["id"], reward_id="small")
    # the lot expires while 30 of its points are reserved: the other 70 go
    assert (
        run_job(engine, "expire-points", as_of=datetime(2025, 6, 1, tzinfo=UTC), merchant_id=m).points == 70
    )
    with engine.begin() as conn:
        redemptions.cancel(conn, merchant_id=m, redemption_id=held["id"])  # 30 back to the expired lot
    try:
        again = run_job(engine, "expire-points", as_of=datetime(2025, 7, 1, tzinfo=UTC), merchant_id=m)
    finally:
        assert_books_balance(engine, db_url, m)
    assert again.points == 30
    with engine.begin() as conn:
        b = ledger.balances(conn, merchant_id=m, member_id=member["id"], as_of=None)
        assert (b.available, b.expired) == (0, 100)
