"""Concurrent writers: nothing lost, nothing counted twice. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import Engine

from patron.domain.errors import InsufficientPoints
from patron.services import events, ledger, members, merchants, programs
from patron.services.members import MemberCreate
from tests.conftest import bean_rewards, purchase

LINE = {"id": "l1", "sku": "MUG", "category": "merch", "quantity": 1, "unit_price": 1000}


def setup(engine: Engine) -> tuple[str, str]:
    with engine.begin() as conn:
        merchant, _ = merchants.create_merchant(conn, name="Race Co")
        program = programs.create_program(conn, merchant_id=merchant["id"], body=bean_rewards(tiers=None))
        member = members.enrol(
            conn,
            merchant_id=merchant["id"],
            data=MemberCreate(program_id=program["id"], email="race@example.com"),
        )
    return merchant["id"], member["id"]


def record(engine: Engine, merchant_id: str, body: dict[str, Any]) -> bool:
    with engine.begin() as conn:
        _, created = events.record_event(conn, merchant_id=merchant_id, body=body)
    return created


def test_many_concurrent_events_for_one_member_lose_nothing(engine: Engine) -> None:
    merchant_id, member_id = setup(engine)
    bodies = [purchase(member_id, f"race-{n}", [LINE]) for n in range(40)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        created = list(pool.map(lambda b: record(engine, merchant_id, b), bodies))
    assert all(created)
    with engine.begin() as conn:
        b = ledger.balances(conn, merchant_id=merchant_id, member_id=member_id, as_of=None)
        assert b.available == 40 * 10
        assert b.lifetime_earned == 400
        assert ledger.verify(conn, merchant_id=merchant_id) == []
        page = ledger.ledger_page(conn, merchant_id=merchant_id, member_id=member_id, limit=500)
        assert len(page["data"]) == 40


def test_the_same_event_delivered_concurrently_credits_once(engine: Engine) -> None:
    merchant_id, member_id = setup(engine)
    body = purchase(member_id, "dup-1", [LINE])
    with ThreadPoolExecutor(max_workers=6) as pool:
        created = list(pool.map(lambda _: record(engine, merchant_id, body), range(12)))
    assert created.count(True) == 1
    with engine.begin() as conn:
        assert ledger.balances(conn, merchant_id=merchant_id, member_id=member_id, as_of=None).available == 10


def test_racing_debits_never_overdraw(engine: Engine) -> None:
    merchant_id, member_id = setup(engine)
    with engine.begin() as conn:
        ledger.adjust(conn, merchant_id=merchant_id, member_id=member_id, points=100, reason="gift")

    def debit(_: int) -> bool:
        try:
            with engine.begin() as conn:
                ledger.adjust(conn, merchant_id=merchant_id, member_id=member_id, points=-30, reason="till")
            return True
        except InsufficientPoints:
            return False

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(debit, range(6)))
    assert results.count(True) == 3
    with engine.begin() as conn:
        assert ledger.balances(conn, merchant_id=merchant_id, member_id=member_id, as_of=None).available == 10
        assert ledger.verify(conn, merchant_id=merchant_id) == []


def test_concurrent_redemptions_against_points_for_a_few_exactly_that_few_succeed(engine: Engine) -> None:
    from patron.services import redemptions

    with engine.begin() as conn:
        merchant, _ = merchants.create_merchant(conn, name="Race Rewards")
        m = merchant["id"]
        body = bean_rewards(tiers=None, rewards=[{"id": "coffee", "name": "Coffee", "cost": 100}])
        program = programs.create_program(conn, merchant_id=m, body=body)
        member = members.enrol(
            conn, merchant_id=m, data=MemberCreate(program_id=program["id"], email="r@example.com")
        )
        ledger.adjust(conn, merchant_id=m, member_id=member["id"], points=300, reason="gift")

    def reserve(_: int) -> bool:
        try:
            with engine.begin() as conn:
                redemptions.reserve(conn, merchant_id=m, member_id=member["id"], reward_id="coffee")
            return True
        except InsufficientPoints:
            return False

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(reserve, range(20)))
    assert results.count(True) == 3
    with engine.begin() as conn:
        b = ledger.balances(conn, merchant_id=m, member_id=member["id"], as_of=None)
        assert (b.available, b.reserved) == (0, 300)
        assert ledger.verify(conn, merchant_id=m) == []
