"""Ticketed events and their tickets. Points of paid tickets move in the ledger, never here.

The tables live on the shared ``metadata``; migration ``0006_tickets`` creates them.
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
    func,
    insert,
    select,
    update,
)

from patron.storage.tables import ID, UTCDateTime, metadata

ticketed_events = Table(
    "ticketed_events",
    metadata,
    Column("merchant_id", ID, nullable=False),
    Column("id", ID, nullable=False),
    Column("program_id", ID, nullable=False),
    Column("name", String(200), nullable=False),
    Column("place", Text, nullable=False),
    Column("starts_at", UTCDateTime(), nullable=False),
    Column("capacity", Integer, nullable=False),
    Column("audience", JSON, nullable=False),  # tier ids; empty = every member
    Column("price", BigInteger, nullable=False),  # points; 0 = free
    Column("waitlist", Boolean, nullable=False),
    Column("status", String(20), nullable=False),  # scheduled | cancelled
    Column("created_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("merchant_id", "id"),
    Index(None, "merchant_id", "program_id", "starts_at"),
    ForeignKeyConstraint(["merchant_id", "program_id"], ["programs.merchant_id", "programs.id"]),
)

tickets = Table(
    "tickets",
    metadata,
    Column("merchant_id", ID, nullable=False),
    Column("id", ID, nullable=False),
    Column("event_id", ID, nullable=False),
    Column("member_id", ID, nullable=False),
    Column("code", String(40), nullable=False),
    Column("status", String(20), nullable=False),  # issued | waitlisted | checked_in | cancelled
    Column("points", BigInteger, nullable=False),
    Column("reserve_journal_id", ID),
    Column("redeem_journal_id", ID),
    Column("return_journal_id", ID),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("issued_at", UTCDateTime()),
    Column("checked_in_at", UTCDateTime()),
    Column("cancelled_at", UTCDateTime()),
    PrimaryKeyConstraint("merchant_id", "id"),
    UniqueConstraint("merchant_id", "code"),
    Index(None, "merchant_id", "event_id", "status", "created_at"),
    Index(None, "merchant_id", "member_id"),
    ForeignKeyConstraint(["merchant_id", "event_id"], ["ticketed_events.merchant_id", "ticketed_events.id"]),
    ForeignKeyConstraint(["merchant_id", "member_id"], ["members.merchant_id", "members.id"]),
)


def insert_event(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(insert(ticketed_events), values)


def get_event(
    conn: Connection, merchant_id: str, event_id: str, *, lock: bool = False
) -> dict[str, Any] | None:
    """The event; with ``lock``, its row stays locked to the end of the transaction (PostgreSQL;
    SQLite's single writer already serialises), so seat counts taken after it cannot go stale."""
    stmt = select(ticketed_events).where(
        ticketed_events.c.merchant_id == merchant_id, ticketed_events.c.id == event_id
    )
    if lock and conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    row = conn.execute(stmt).mappings().first()
    return dict(row) if row else None


def events_of_program(conn: Connection, merchant_id: str, program_id: str) -> list[dict[str, Any]]:
    stmt = (
        select(ticketed_events)
        .where(ticketed_events.c.merchant_id == merchant_id, ticketed_events.c.program_id == program_id)
        .order_by(ticketed_events.c.starts_at, ticketed_events.c.id)
    )
    return [dict(r) for r in conn.execute(stmt).mappings()]


def counts(conn: Connection, merchant_id: str, event_id: str) -> dict[str, int]:
    """How many tickets of the event are in each status."""
    stmt = (
        select(tickets.c.status, func.count())
        .where(tickets.c.merchant_id == merchant_id, tickets.c.event_id == event_id)
        .group_by(tickets.c.status)
    )
    return {str(status): int(n) for status, n in conn.execute(stmt)}


def live_ticket_of(
    conn: Connection, merchant_id: str, event_id: str, member_id: str, statuses: tuple[str, ...]
) -> dict[str, Any] | None:
    stmt = select(tickets).where(
        tickets.c.merchant_id == merchant_id,
        tickets.c.event_id == event_id,
        tickets.c.member_id == member_id,
        tickets.c.status.in_(statuses),
    )
    row = conn.execute(stmt).mappings().first()
    return dict(row) if row else None


def waitlisted_of_started(
    conn: Connection, *, as_of: datetime, merchant_id: str | None, limit: int
) -> list[dict[str, Any]]:
    """Tickets still on the waitlist of events that started by ``as_of`` (of one merchant or all)."""
    e, t = ticketed_events, tickets
    stmt = (
        select(t)
        .join(e, (e.c.merchant_id == t.c.merchant_id) & (e.c.id == t.c.event_id))
        .where(t.c.status == "waitlisted", e.c.starts_at <= as_of)
        .order_by(t.c.merchant_id, t.c.id)
        .limit(limit)
    )
    if merchant_id is not None:
        stmt = stmt.where(t.c.merchant_id == merchant_id)
    return [dict(r) for r in conn.execute(stmt).mappings()]


def first_waitlisted(conn: Connection, merchant_id: str, event_id: str) -> dict[str, Any] | None:
    """The member who joined the waitlist first (ids are time-ordered and break ties)."""
    stmt = (
        select(tickets)
        .where(
            tickets.c.merchant_id == merchant_id,
            tickets.c.event_id == event_id,
            tickets.c.status == "waitlisted",
        )
        .order_by(tickets.c.created_at, tickets.c.id)
        .limit(1)
    )
    row = conn.execute(stmt).mappings().first()
    return dict(row) if row else None


def insert_ticket(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(insert(tickets), values)


def get_ticket(conn: Connection, merchant_id: str, ticket_id: str) -> dict[str, Any] | None:
    stmt = select(tickets).where(tickets.c.merchant_id == merchant_id, tickets.c.id == ticket_id)
    row = conn.execute(stmt).mappings().first()
    return dict(row) if row else None


def ticket_by_code(conn: Connection, merchant_id: str, code: str) -> dict[str, Any] | None:
    stmt = select(tickets).where(tickets.c.merchant_id == merchant_id, tickets.c.code == code)
    row = conn.execute(stmt).mappings().first()
    return dict(row) if row else None


def tickets_of_event(conn: Connection, merchant_id: str, event_id: str) -> list[dict[str, Any]]:
    stmt = (
        select(tickets)
        .where(tickets.c.merchant_id == merchant_id, tickets.c.event_id == event_id)
        .order_by(tickets.c.created_at, tickets.c.id)
    )
    return [dict(r) for r in conn.execute(stmt).mappings()]


def update_ticket(conn: Connection, merchant_id: str, ticket_id: str, **values: Any) -> None:
    conn.execute(
        update(tickets)
        .where(tickets.c.merchant_id == merchant_id, tickets.c.id == ticket_id)
        .values(**values)
    )


def mark_checked_in(conn: Connection, merchant_id: str, ticket_id: str, at: datetime) -> bool:
    """Issued -> checked in, atomically: of two racing check-ins exactly one changes the row."""
    result = conn.execute(
        update(tickets)
        .where(
            tickets.c.merchant_id == merchant_id,
            tickets.c.id == ticket_id,
            tickets.c.status == "issued",
        )
        .values(status="checked_in", checked_in_at=at)
    )
    return result.rowcount == 1
