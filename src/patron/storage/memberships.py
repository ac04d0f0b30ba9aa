"""Paid memberships, their payments and history, the store-credit ledger and co-op dividends.

All of it is money (integer minor units with a currency), kept apart from the points ledger.
``membership_events``, ``membership_payments`` and ``store_credit_entries`` are append-only: a
balance is the sum of its entries, never a column updated in place.

The tables live on the shared ``metadata``; migration ``0011_memberships`` creates them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Connection,
    ForeignKeyConstraint,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    bindparam,
    func,
    insert,
    or_,
    select,
    update,
)

from patron.storage.tables import ID, UTCDateTime, event_lines, events, metadata

memberships = Table(
    "memberships",
    metadata,
    Column("merchant_id", ID, nullable=False),
    Column("id", ID, nullable=False),
    Column("member_id", ID, nullable=False),
    Column("program_id", ID, nullable=False),
    Column("plan_id", String(100), nullable=False),
    Column("interval", String(20), nullable=False),  # lifetime | year | month
    Column("fee", BigInteger, nullable=False),  # minor units per period, as agreed at the start
    Column("currency", String(3), nullable=False),
    Column("grace_days", Integer, nullable=False),
    Column("state", String(20), nullable=False),  # as last recorded; reads derive it as of any time
    Column("started_at", UTCDateTime(), nullable=False),
    Column("trial_ends_at", UTCDateTime()),
    Column("anchor_at", UTCDateTime()),  # start of the first paid period
    Column("periods_paid", Integer, nullable=False),
    Column("paid_through", UTCDateTime()),  # null: unpaid, or lifetime
    Column("cancelled_at", UTCDateTime()),
    Column("external_id", String(200)),  # e.g. a Stripe subscription id
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("merchant_id", "id"),
    UniqueConstraint("merchant_id", "external_id"),
    Index(None, "merchant_id", "program_id", "state"),
    Index(None, "merchant_id", "member_id", "plan_id"),
    ForeignKeyConstraint(["merchant_id", "member_id"], ["members.merchant_id", "members.id"]),
    ForeignKeyConstraint(["merchant_id", "program_id"], ["programs.merchant_id", "programs.id"]),
)

membership_events = Table(
    "membership_events",
    metadata,
    Column("merchant_id", ID, nullable=False),
    Column("id", ID, nullable=False),
    Column("membership_id", ID, nullable=False),
    Column("member_id", ID, nullable=False),
    Column("kind", String(30), nullable=False),  # started | payment | cancelled | state
    Column("from_state", String(20)),
    Column("to_state", String(20), nullable=False),
    Column("at", UTCDateTime(), nullable=False),  # when it took effect
    Column("detail", JSON, nullable=False),
    Column("recorded_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("merchant_id", "id"),
    UniqueConstraint("merchant_id", "membership_id", "kind", "to_state", "at"),
    ForeignKeyConstraint(["merchant_id", "membership_id"], ["memberships.merchant_id", "memberships.id"]),
)

membership_payments = Table(
    "membership_payments",
    metadata,
    Column("merchant_id", ID, nullable=False),
    Column("id", ID, nullable=False),
    Column("membership_id", ID, nullable=False),
    Column("member_id", ID, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("paid_at", UTCDateTime(), nullable=False),
    Column("period", Integer, nullable=False),
    Column("period_start", UTCDateTime(), nullable=False),
    Column("period_end", UTCDateTime()),  # null: lifetime
    Column("external_ref", String(200), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("merchant_id", "id"),
    UniqueConstraint("merchant_id", "external_ref"),
    UniqueConstraint("merchant_id", "membership_id", "period"),
    ForeignKeyConstraint(["merchant_id", "membership_id"], ["memberships.merchant_id", "memberships.id"]),
)

store_credit_entries = Table(
    "store_credit_entries",
    metadata,
    Column("merchant_id", ID, nullable=False),
    Column("id", ID, nullable=False),
    Column("member_id", ID, nullable=False),
    Column("program_id", ID, nullable=False),
    Column("amount", BigInteger, nullable=False),  # + credit, - debit; never zero
    Column("currency", String(3), nullable=False),
    Column("kind", String(30), nullable=False),  # dividend | adjustment | spend
    Column("reason", Text, nullable=False),
    Column("source_ref", String(200)),  # what caused it, unique: a dividend run, an idempotency key
    Column("occurred_at", UTCDateTime(), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("merchant_id", "id"),
    UniqueConstraint("merchant_id", "source_ref"),
    Index(None, "merchant_id", "member_id", "occurred_at"),
    ForeignKeyConstraint(["merchant_id", "member_id"], ["members.merchant_id", "members.id"]),
)

dividend_runs = Table(
    "dividend_runs",
    metadata,
    Column("merchant_id", ID, nullable=False),
    Column("id", ID, nullable=False),
    Column("program_id", ID, nullable=False),
    Column("year", Integer, nullable=False),
    Column("percent", String(20), nullable=False),  # a decimal, as set
    Column("min_spend", BigInteger, nullable=False),
    Column("full_price_only", Boolean, nullable=False),
    Column("plans", JSON, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("period_start", UTCDateTime(), nullable=False),
    Column("period_end", UTCDateTime(), nullable=False),  # the year's close: when credits take effect
    Column("as_of", UTCDateTime(), nullable=False),  # refunds recorded by then count
    Column("members_paid", Integer, nullable=False),
    Column("total", BigInteger, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("merchant_id", "id"),
    UniqueConstraint("merchant_id", "program_id", "year"),
    ForeignKeyConstraint(["merchant_id", "program_id"], ["programs.merchant_id", "programs.id"]),
)

dividend_payouts = Table(
    "dividend_payouts",
    metadata,
    Column("merchant_id", ID, nullable=False),
    Column("run_id", ID, nullable=False),
    Column("member_id", ID, nullable=False),
    Column("eligible_spend", BigInteger, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("credit_id", ID, nullable=False),
    PrimaryKeyConstraint("merchant_id", "run_id", "member_id"),
    Index(None, "merchant_id", "member_id"),
    ForeignKeyConstraint(["merchant_id", "run_id"], ["dividend_runs.merchant_id", "dividend_runs.id"]),
    ForeignKeyConstraint(["merchant_id", "member_id"], ["members.merchant_id", "members.id"]),
)


def _one(conn: Connection, stmt: Any) -> dict[str, Any] | None:
    row = conn.execute(stmt).mappings().first()
    return dict(row) if row else None


# memberships ------------------------------------------------------------------------------------


def get_membership(
    conn: Connection, merchant_id: str, membership_id: str, *, lock: bool = False
) -> dict[str, Any] | None:
    stmt = select(memberships).where(
        memberships.c.merchant_id == merchant_id, memberships.c.id == membership_id
    )
    if lock and conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    return _one(conn, stmt)


def lock_member(conn: Connection, merchant_id: str, member_id: str) -> None:
    """Hold the member's row to the end of the transaction (PostgreSQL; SQLite has one writer),
    so that two requests cannot both start a membership of the same plan."""
    if conn.dialect.name == "postgresql":
        from patron.storage.tables import members

        conn.execute(
            select(members.c.id)
            .where(members.c.merchant_id == merchant_id, members.c.id == member_id)
            .with_for_update()
        )


def membership_by_plan(
    conn: Connection, merchant_id: str, member_id: str, plan_id: str
) -> dict[str, Any] | None:
    return _one(
        conn,
        select(memberships)
        .where(
            memberships.c.merchant_id == merchant_id,
            memberships.c.member_id == member_id,
            memberships.c.plan_id == plan_id,
        )
        .order_by(memberships.c.created_at.desc(), memberships.c.id.desc())
        .limit(1),
    )


def membership_by_external_id(conn: Connection, merchant_id: str, external_id: str) -> dict[str, Any] | None:
    return _one(
        conn,
        select(memberships).where(
            memberships.c.merchant_id == merchant_id, memberships.c.external_id == external_id
        ),
    )


def memberships_of(conn: Connection, merchant_id: str, member_id: str) -> list[dict[str, Any]]:
    stmt = (
        select(memberships)
        .where(memberships.c.merchant_id == merchant_id, memberships.c.member_id == member_id)
        .order_by(memberships.c.created_at, memberships.c.id)
    )
    return [dict(r) for r in conn.execute(stmt).mappings()]


def memberships_of_program(
    conn: Connection, merchant_id: str, program_id: str, *, plans: tuple[str, ...] | None = None
) -> list[dict[str, Any]]:
    stmt = select(memberships).where(
        memberships.c.merchant_id == merchant_id, memberships.c.program_id == program_id
    )
    if plans is not None:
        stmt = stmt.where(memberships.c.plan_id.in_(plans))
    stmt = stmt.order_by(memberships.c.id)
    return [dict(r) for r in conn.execute(stmt).mappings()]


def insert_membership(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(insert(memberships), values)


def update_membership(conn: Connection, merchant_id: str, membership_id: str, **values: Any) -> None:
    conn.execute(
        update(memberships)
        .where(memberships.c.merchant_id == merchant_id, memberships.c.id == membership_id)
        .values(**values)
    )


def insert_events(conn: Connection, rows: list[dict[str, Any]]) -> None:
    if rows:
        conn.execute(insert(membership_events), rows)


def events_of(conn: Connection, merchant_id: str, membership_ids: list[str]) -> list[dict[str, Any]]:
    if not membership_ids:
        return []
    stmt = (
        select(membership_events)
        .where(
            membership_events.c.merchant_id == merchant_id,
            membership_events.c.membership_id.in_(membership_ids),
        )
        .order_by(membership_events.c.at, membership_events.c.id)
    )
    return [dict(r) for r in conn.execute(stmt).mappings()]


def recorded_states(
    conn: Connection, merchant_id: str, membership_ids: list[str]
) -> set[tuple[str, str, datetime]]:
    """(membership, to_state, at) of the changes already written down (by the job, a payment,
    a start or a cancellation)."""
    if not membership_ids:
        return set()
    stmt = select(
        membership_events.c.membership_id, membership_events.c.to_state, membership_events.c.at
    ).where(
        membership_events.c.merchant_id == merchant_id,
        membership_events.c.membership_id.in_(membership_ids),
    )
    return {(str(m), str(s), at) for m, s, at in conn.execute(stmt)}


def insert_payment(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(insert(membership_payments), values)


def payment_by_ref(conn: Connection, merchant_id: str, external_ref: str) -> dict[str, Any] | None:
    return _one(
        conn,
        select(membership_payments).where(
            membership_payments.c.merchant_id == merchant_id,
            membership_payments.c.external_ref == external_ref,
        ),
    )


def payments_of(conn: Connection, merchant_id: str, membership_id: str) -> list[dict[str, Any]]:
    stmt = (
        select(membership_payments)
        .where(
            membership_payments.c.merchant_id == merchant_id,
            membership_payments.c.membership_id == membership_id,
        )
        .order_by(membership_payments.c.period)
    )
    return [dict(r) for r in conn.execute(stmt).mappings()]


# store credit -----------------------------------------------------------------------------------


def insert_credits(conn: Connection, rows: list[dict[str, Any]]) -> None:
    if rows:
        conn.execute(insert(store_credit_entries), rows)


def credit_balance(
    conn: Connection, merchant_id: str, member_id: str, *, as_of: datetime | None = None, lock: bool = False
) -> dict[str, int]:
    """The member's store credit per currency: the sum of its entries (up to ``as_of``)."""
    if lock:
        lock_member(conn, merchant_id, member_id)
    stmt = (
        select(store_credit_entries.c.currency, func.sum(store_credit_entries.c.amount))
        .where(
            store_credit_entries.c.merchant_id == merchant_id,
            store_credit_entries.c.member_id == member_id,
        )
        .group_by(store_credit_entries.c.currency)
    )
    if as_of is not None:
        stmt = stmt.where(store_credit_entries.c.occurred_at <= as_of)
    return {str(c): int(total or 0) for c, total in conn.execute(stmt)}


def credits_of(
    conn: Connection, merchant_id: str, member_id: str, *, as_of: datetime | None = None
) -> list[dict[str, Any]]:
    stmt = (
        select(store_credit_entries)
        .where(
            store_credit_entries.c.merchant_id == merchant_id,
            store_credit_entries.c.member_id == member_id,
        )
        .order_by(store_credit_entries.c.occurred_at.desc(), store_credit_entries.c.id.desc())
    )
    if as_of is not None:
        stmt = stmt.where(store_credit_entries.c.occurred_at <= as_of)
    return [dict(r) for r in conn.execute(stmt).mappings()]


def get_run(conn: Connection, merchant_id: str, program_id: str, year: int) -> dict[str, Any] | None:
    return _one(
        conn,
        select(dividend_runs).where(
            dividend_runs.c.merchant_id == merchant_id,
            dividend_runs.c.program_id == program_id,
            dividend_runs.c.year == year,
        ),
    )


def insert_run(conn: Connection, run: dict[str, Any], payouts: list[dict[str, Any]]) -> None:
    conn.execute(insert(dividend_runs), run)
    if payouts:
        conn.execute(insert(dividend_payouts), payouts)


def payouts_of(conn: Connection, merchant_id: str, run_id: str) -> list[dict[str, Any]]:
    stmt = (
        select(dividend_payouts)
        .where(dividend_payouts.c.merchant_id == merchant_id, dividend_payouts.c.run_id == run_id)
        .order_by(dividend_payouts.c.member_id)
    )
    return [dict(r) for r in conn.execute(stmt).mappings()]


def credited_total(conn: Connection, merchant_id: str, run_id: str) -> int:
    """What the run's payouts wrote to the store-credit ledger (for reconciliation)."""
    stmt = select(func.coalesce(func.sum(store_credit_entries.c.amount), 0)).where(
        store_credit_entries.c.merchant_id == merchant_id,
        store_credit_entries.c.source_ref.like(f"dividend:{run_id}:%"),
    )
    return int(conn.execute(stmt).scalar() or 0)


def year_lines(
    conn: Connection,
    merchant_id: str,
    program_id: str,
    *,
    start: datetime,
    end: datetime,
    as_of: datetime,
) -> list[tuple[str, str, str, int, int]]:
    """Purchase lines of the program's purchases in ``[start, end)`` received by ``as_of``, each
    with what refunds recorded by ``as_of`` took back of it: ``(member, event, line, amount,
    refunded)``, in one query."""
    refund = events.alias("refund")
    refund_line = event_lines.alias("refund_line")
    refunded = (
        select(
            refund.c.refers_to.label("event_id"),
            refund_line.c.line_id.label("line_id"),
            func.sum(refund_line.c.amount).label("amount"),
        )
        .join(
            refund_line,
            and_(refund_line.c.merchant_id == refund.c.merchant_id, refund_line.c.event_id == refund.c.id),
        )
        .where(
            refund.c.merchant_id == merchant_id,
            refund.c.program_id == program_id,
            refund.c.type.in_(("refund", "cancel")),
            refund.c.received_at <= as_of,
            refund.c.occurred_at <= as_of,
        )
        .group_by(refund.c.refers_to, refund_line.c.line_id)
        .subquery()
    )
    stmt = (
        select(
            events.c.member_id,
            events.c.id,
            event_lines.c.line_id,
            event_lines.c.amount,
            func.coalesce(refunded.c.amount, 0),
        )
        .join(
            event_lines,
            and_(event_lines.c.merchant_id == events.c.merchant_id, event_lines.c.event_id == events.c.id),
        )
        .outerjoin(
            refunded,
            and_(refunded.c.event_id == events.c.id, refunded.c.line_id == event_lines.c.line_id),
        )
        .where(
            events.c.merchant_id == merchant_id,
            events.c.program_id == program_id,
            events.c.type == "purchase",
            events.c.occurred_at >= start,
            events.c.occurred_at < end,
            events.c.received_at <= as_of,
        )
        .order_by(events.c.member_id, events.c.id, event_lines.c.line_id)
    )
    return [(str(m), str(e), str(ln), int(a), int(r)) for m, e, ln, a, r in conn.execute(stmt)]


def discounted_lines(
    conn: Connection, merchant_id: str, program_id: str, *, start: datetime, end: datetime, as_of: datetime
) -> set[tuple[str, str]]:
    """(event, line) of the year's purchase lines that carried a discount, read from the bodies
    as received (the line table keeps only the amount after discount)."""
    stmt = select(events.c.id, events.c.body).where(
        events.c.merchant_id == merchant_id,
        events.c.program_id == program_id,
        events.c.type == "purchase",
        events.c.occurred_at >= start,
        events.c.occurred_at < end,
        events.c.received_at <= as_of,
    )
    out: set[tuple[str, str]] = set()
    for event_id, body in conn.execute(stmt).yield_per(1000):
        for item in (body or {}).get("items") or []:
            if isinstance(item, dict) and int(item.get("discount") or 0) > 0:
                out.add((str(event_id), str(item.get("id"))))
    return out


def live_memberships(
    conn: Connection,
    *,
    states: tuple[str, ...],
    merchant_id: str | None,
    after: tuple[str, str] | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Memberships in ``states`` (of one merchant or all), in key order after ``after``."""
    stmt = select(memberships).where(memberships.c.state.in_(states))
    if merchant_id is not None:
        stmt = stmt.where(memberships.c.merchant_id == merchant_id)
    if after is not None:
        stmt = stmt.where(
            or_(
                memberships.c.merchant_id > after[0],
                and_(memberships.c.merchant_id == after[0], memberships.c.id > after[1]),
            )
        )
    stmt = stmt.order_by(memberships.c.merchant_id, memberships.c.id).limit(limit)
    return [dict(r) for r in conn.execute(stmt).mappings()]


def set_states(conn: Connection, rows: list[dict[str, Any]], *, now: datetime) -> None:
    """Record each membership's latest state (``merchant_id``, ``id``, ``state``), in one statement."""
    if not rows:
        return
    conn.execute(
        update(memberships)
        .where(memberships.c.merchant_id == bindparam("m"), memberships.c.id == bindparam("i"))
        .values(state=bindparam("s"), updated_at=now),
        [{"m": r["merchant_id"], "i": r["id"], "s": r["state"]} for r in rows],
    )


def end_assignments(conn: Connection, merchant_id: str, assignment_ids: list[str], at: datetime) -> None:
    """End the given tier assignments (a membership's grants) at ``at``, if they run past it."""
    from patron.storage.tables import tier_assignments

    if not assignment_ids:
        return
    conn.execute(
        update(tier_assignments)
        .where(
            tier_assignments.c.merchant_id == merchant_id,
            tier_assignments.c.id.in_(assignment_ids),
            or_(tier_assignments.c.ends_at.is_(None), tier_assignments.c.ends_at > at),
        )
        .values(ends_at=at)
    )
