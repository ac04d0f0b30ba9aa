"""Property: expiry never takes more than what is left unspent of each lot, and the books balance."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select

from patron.services import events, ledger, members, merchants, programs
from patron.services.jobs import run_job
from patron.services.members import MemberCreate
from patron.storage.tables import lots, postings
from tests.conftest import bean_rewards

START = datetime(2024, 1, 1, tzinfo=UTC)
steps = st.lists(
    st.tuples(st.sampled_from(["earn", "spend"]), st.integers(1, 400), st.integers(100, 5000)),
    min_size=1,
    max_size=12,
)


@settings(max_examples=12, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=steps, run_after_days=st.integers(0, 900))
def test_expiry_takes_only_unspent_points(
    engine: Engine, history: list[tuple[str, int, int]], run_after_days: int
) -> None:
    with engine.begin() as conn:
        merchant, _ = merchants.create_merchant(conn, name="Prop Co")
        m = merchant["id"]
        program = programs.create_program(
            conn, merchant_id=m, body=bean_rewards(tiers=None, expiry={"months": 6})
        )
        member = members.enrol(
            conn, merchant_id=m, data=MemberCreate(program_id=program["id"], email="p@example.com")
        )["id"]
    at = START
    for n, (kind, days, amount) in enumerate(history):
        at += timedelta(days=days % 60)
        with engine.begin() as conn:
            if kind == "earn":
                body = {
                    "id": f"e{n}",
                    "type": "purchase",
                    "member_id": member,
                    "occurred_at": at.isoformat(),
                    "items": [{"id": "l", "quantity": 1, "unit_price": amount}],
                }
                events.record_event(conn, merchant_id=m, body=body)
            else:
                available = ledger.balances(conn, merchant_id=m, member_id=member, as_of=None).available
                if available:
                    ledger.adjust(
                        conn,
                        merchant_id=m,
                        member_id=member,
                        points=-min(available, amount // 100),
                        reason="spend",
                        occurred_at=at,
                    )
    before = {}
    with engine.begin() as conn:
        rows = conn.execute(
            select(postings.c.lot_id, func.sum(postings.c.amount))
            .where(
                postings.c.merchant_id == m, postings.c.account == "available", postings.c.lot_id.is_not(None)
            )
            .group_by(postings.c.lot_id)
        ).all()
        before = {lot: int(left) for lot, left in rows}
    run_job(engine, "expire-points", as_of=START + timedelta(days=run_after_days), merchant_id=m)
    with engine.begin() as conn:
        expired = dict(
            conn.execute(
                select(postings.c.lot_id, func.sum(postings.c.amount))
                .where(postings.c.merchant_id == m, postings.c.account == "program:expired")
                .group_by(postings.c.lot_id)
            ).all()
        )
        for lot, points in expired.items():
            assert 0 < points <= before[lot]
        due = (
            conn.execute(
                select(lots.c.id).where(
                    lots.c.merchant_id == m, lots.c.expires_at <= START + timedelta(days=run_after_days)
                )
            )
            .scalars()
            .all()
        )
        assert set(expired) == {lot for lot in due if before.get(lot, 0) > 0}
        b = ledger.balances(conn, merchant_id=m, member_id=member, as_of=None)
        assert b.available >= 0
        assert ledger.verify(conn, merchant_id=m) == []
