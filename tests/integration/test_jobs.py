"""Scheduled jobs: pending release and expiry, recorded at the time they take effect, idempotent."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine

from patron.domain.errors import InvalidInput
from patron.services import events, ledger, members, merchants, programs
from patron.services.jobs import run_job
from patron.services.members import MemberCreate
from tests.conftest import bean_rewards, purchase

MUG = [{"id": "l1", "sku": "MUG", "category": "merch", "quantity": 1, "unit_price": 1000}]


def shop(engine: Engine, **program: object) -> tuple[str, str]:
    with engine.begin() as conn:
        merchant, _ = merchants.create_merchant(conn, name="Jobs Co")
        prog = programs.create_program(
            conn, merchant_id=merchant["id"], body=bean_rewards(tiers=None, **program)
        )
        member = members.enrol(
            conn, merchant_id=merchant["id"], data=MemberCreate(program_id=prog["id"], email="j@example.com")
        )
    return merchant["id"], member["id"]


def balances(engine: Engine, merchant_id: str, member_id: str, as_of: datetime | None = None):  # type: ignore[no-untyped-def]
    with engine.begin() as conn:
        return ledger.balances(conn, merchant_id=merchant_id, member_id=member_id, as_of=as_of)


def t(s: str) -> datetime:
    return datetime.fromisoformat(s).replace(tzinfo=UTC)


def test_expiry_takes_what_is_left_of_each_lot_at_its_expiry_time(engine: Engine) -> None:
    merchant_id, member_id = shop(engine, expiry={"months": 12})
    with engine.begin() as conn:
        events.record_event(
            conn,
            merchant_id=merchant_id,
            body=purchase(member_id, "o-1", MUG, occurred_at="2025-01-10T09:00:00Z"),
        )
        events.record_event(
            conn,
            merchant_id=merchant_id,
            body=purchase(member_id, "o-2", MUG, occurred_at="2025-06-10T09:00:00Z"),
        )
        # spending draws the soonest-expiring lot first: 4 of o-1's 10 points
        ledger.adjust(
            conn,
            merchant_id=merchant_id,
            member_id=member_id,
            points=-4,
            reason="counter",
            occurred_at=t("2025-03-01T00:00:00"),
        )
    first = run_job(engine, "expire-points", as_of=t("2026-02-01T00:00:00"), merchant_id=merchant_id)
    assert (first.lots, first.points) == (1, 6)
    again = run_job(engine, "expire-points", as_of=t("2026-02-01T00:00:00"), merchant_id=merchant_id)
    assert (again.lots, again.points) == (0, 0)
    b = balances(engine, merchant_id, member_id)
    assert (b.available, b.expired, b.lifetime_earned) == (10, 6, 16)
    # recorded at the lot's expiry time: a read just before it still shows the points
    assert balances(engine, merchant_id, member_id, t("2026-01-10T08:59:59")).available == 16
    assert balances(engine, merchant_id, member_id, t("2026-01-10T09:00:00")).available == 10
    later = run_job(engine, "expire-points", as_of=t("2026-07-01T00:00:00"), merchant_id=merchant_id)
    assert later.points == 10
    with engine.begin() as conn:
        assert ledger.verify(conn, merchant_id=merchant_id) == []
        types = [
            r["type"] for r in ledger.ledger_page(conn, merchant_id=merchant_id, member_id=member_id)["data"]
        ]
    assert types.count("expiry") == 2


def test_release_pending_moves_points_when_the_pending_period_ends(engine: Engine) -> None:
    merchant_id, member_id = shop(engine, pending_days=30)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        events.record_event(
            conn, merchant_id=merchant_id, body=purchase(member_id, "o-1", MUG, occurred_at=now.isoformat())
        )
    assert (
        balances(engine, merchant_id, member_id).pending,
        balances(engine, merchant_id, member_id).available,
    ) == (10, 0)
    assert run_job(engine, "release-pending", as_of=now, merchant_id=merchant_id).points == 0  # not due yet
    result = run_job(engine, "release-pending", as_of=now.replace(year=now.year + 1), merchant_id=merchant_id)
    assert result.points == 10
    b = balances(engine, merchant_id, member_id)
    assert (b.pending, b.available) == (0, 10)
    assert (
        run_job(
            engine, "release-pending", as_of=now.replace(year=now.year + 1), merchant_id=merchant_id
        ).points
        == 0
    )


def test_unknown_job_names_are_refused(engine: Engine) -> None:
    with pytest.raises(InvalidInput, match="not available yet"):
        run_job(engine, "dividends", as_of=t("2026-01-01T00:00:00"))
    with pytest.raises(InvalidInput, match="unknown job"):
        run_job(engine, "explode", as_of=t("2026-01-01T00:00:00"))


def test_lapsed_reservations_give_their_points_back(engine: Engine) -> None:
    from datetime import timedelta

    from patron.services import redemptions

    rewards = [{"id": "coffee", "name": "Coffee", "cost": 100}]
    merchant_id, member_id = shop(engine, rewards=rewards, reservation_ttl_minutes=5)
    with engine.begin() as conn:
        ledger.adjust(conn, merchant_id=merchant_id, member_id=member_id, points=150, reason="gift")
        red = redemptions.reserve(conn, merchant_id=merchant_id, member_id=member_id, reward_id="coffee")
    assert run_job(engine, "lapse-reservations", as_of=red["reserved_at"], merchant_id=merchant_id).lots == 0
    later = red["expires_at"] + timedelta(minutes=1)
    assert run_job(engine, "lapse-reservations", as_of=later, merchant_id=merchant_id).lots == 1
    assert run_job(engine, "lapse-reservations", as_of=later, merchant_id=merchant_id).lots == 0
    b = balances(engine, merchant_id, member_id)
    assert (b.available, b.reserved, b.redeemed) == (150, 0, 0)
    with engine.begin() as conn:
        assert redemptions.get(conn, merchant_id=merchant_id, redemption_id=red["id"])["status"] == "expired"
        assert ledger.verify(conn, merchant_id=merchant_id) == []
