"""Travel award bookings, their tickets, and passengers' consents. Points move in the ledger.

``travel_consents`` is one row per (passenger, booker) standing consent. ``travel_consent_codes``
are single-use codes: :func:`use_code` marks one used with a conditional UPDATE, so that of two
bookings presenting the same code at once only one can use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    ForeignKeyConstraint,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    UniqueConstraint,
    delete,
    exists,
    insert,
    or_,
    select,
    update,
)

from patron.storage.tables import ID, UTCDateTime, members, metadata, postings

travel_consents = Table(
    "travel_consents",
    metadata,
    Column("merchant_id", ID, nullable=False),
    Column("passenger_id", ID, nullable=False),
    Column("booker_id", ID, nullable=False),
    Column("granted_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("merchant_id", "passenger_id", "booker_id"),
    # Two foreign keys to members: named by hand, the naming convention would give both one name.
    ForeignKeyConstraint(
        ["merchant_id", "passenger_id"],
        ["members.merchant_id", "members.id"],
        name="fk_travel_consents_merchant_id_passenger_id_members",
    ),
    ForeignKeyConstraint(
        ["merchant_id", "booker_id"],
        ["members.merchant_id", "members.id"],
        name="fk_travel_consents_merchant_id_booker_id_members",
    ),
)

travel_consent_codes = Table(
    "travel_consent_codes",
    metadata,
    Column("merchant_id", ID, nullable=False),
    Column("code", String(20), nullable=False),
    Column("passenger_id", ID, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
    Column("used_at", UTCDateTime(), nullable=True),
    Column("booking_id", ID, nullable=True),
    PrimaryKeyConstraint("merchant_id", "code"),
    Index(None, "merchant_id", "passenger_id"),
    ForeignKeyConstraint(["merchant_id", "passenger_id"], ["members.merchant_id", "members.id"]),
)

bookings = Table(
    "bookings",
    metadata,
    Column("merchant_id", ID, nullable=False),
    Column("id", ID, nullable=False),
    Column("member_id", ID, nullable=False),
    Column("program_id", ID, nullable=False),
    Column("route", String(7), nullable=False),
    Column("cabin", String(1), nullable=False),
    Column("points_per_passenger", BigInteger, nullable=False),
    Column("points", BigInteger, nullable=False),
    Column("status", String(20), nullable=False),
    Column("journal_id", ID, nullable=False),
    Column("cancel_journal_id", ID, nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("cancelled_at", UTCDateTime(), nullable=True),
    PrimaryKeyConstraint("merchant_id", "id"),
    Index(None, "merchant_id", "member_id", "created_at"),
    ForeignKeyConstraint(["merchant_id", "member_id"], ["members.merchant_id", "members.id"]),
)

booking_tickets = Table(
    "booking_tickets",
    metadata,
    Column("merchant_id", ID, nullable=False),
    Column("id", ID, nullable=False),
    Column("booking_id", ID, nullable=False),
    Column("seq", Integer, nullable=False),
    Column("passenger_id", ID, nullable=False),
    Column("passenger_name", String(200), nullable=False),
    Column("code", String(20), nullable=False),
    Column("status", String(20), nullable=False),
    PrimaryKeyConstraint("merchant_id", "id"),
    UniqueConstraint("merchant_id", "code"),
    UniqueConstraint("merchant_id", "booking_id", "passenger_id"),
    Index(None, "merchant_id", "passenger_id"),
    ForeignKeyConstraint(["merchant_id", "booking_id"], ["bookings.merchant_id", "bookings.id"]),
    ForeignKeyConstraint(["merchant_id", "passenger_id"], ["members.merchant_id", "members.id"]),
)


# -- consents ---------------------------------------------------------------------------------


def members_by_id(conn: Connection, merchant_id: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    stmt = select(members.c.id, members.c.program_id, members.c.status, members.c.name).where(
        members.c.merchant_id == merchant_id, members.c.id.in_(list(ids))
    )
    return {r["id"]: dict(r) for r in conn.execute(stmt).mappings()}


def consenting(conn: Connection, merchant_id: str, booker_id: str, passenger_ids: Sequence[str]) -> set[str]:
    """Which of ``passenger_ids`` have a standing consent for ``booker_id``."""
    stmt = select(travel_consents.c.passenger_id).where(
        travel_consents.c.merchant_id == merchant_id,
        travel_consents.c.booker_id == booker_id,
        travel_consents.c.passenger_id.in_(list(passenger_ids)),
    )
    return {r[0] for r in conn.execute(stmt)}


def get_consent(
    conn: Connection, merchant_id: str, passenger_id: str, booker_id: str
) -> dict[str, Any] | None:
    stmt = select(travel_consents).where(
        travel_consents.c.merchant_id == merchant_id,
        travel_consents.c.passenger_id == passenger_id,
        travel_consents.c.booker_id == booker_id,
    )
    row = conn.execute(stmt).mappings().first()
    return dict(row) if row else None


def insert_consent(
    conn: Connection, merchant_id: str, passenger_id: str, booker_id: str, at: datetime
) -> None:
    conn.execute(
        insert(travel_consents),
        {"merchant_id": merchant_id, "passenger_id": passenger_id, "booker_id": booker_id, "granted_at": at},
    )


def delete_consent(conn: Connection, merchant_id: str, passenger_id: str, booker_id: str) -> bool:
    result = conn.execute(
        delete(travel_consents).where(
            travel_consents.c.merchant_id == merchant_id,
            travel_consents.c.passenger_id == passenger_id,
            travel_consents.c.booker_id == booker_id,
        )
    )
    return result.rowcount > 0


def consents_of(conn: Connection, merchant_id: str, passenger_id: str) -> list[dict[str, Any]]:
    stmt = (
        select(travel_consents)
        .where(travel_consents.c.merchant_id == merchant_id, travel_consents.c.passenger_id == passenger_id)
        .order_by(travel_consents.c.granted_at, travel_consents.c.booker_id)
    )
    return [dict(r) for r in conn.execute(stmt).mappings()]


def insert_code(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(insert(travel_consent_codes), values)


def get_code(conn: Connection, merchant_id: str, code: str) -> dict[str, Any] | None:
    stmt = select(travel_consent_codes).where(
        travel_consent_codes.c.merchant_id == merchant_id, travel_consent_codes.c.code == code
    )
    row = conn.execute(stmt).mappings().first()
    return dict(row) if row else None


def use_code(conn: Connection, merchant_id: str, code: str, *, booking_id: str, at: datetime) -> bool:
    """Mark an unused code used by ``booking_id``. False if another booking used it first."""
    result = conn.execute(
        update(travel_consent_codes)
        .where(
            travel_consent_codes.c.merchant_id == merchant_id,
            travel_consent_codes.c.code == code,
            travel_consent_codes.c.used_at.is_(None),
        )
        .values(used_at=at, booking_id=booking_id)
    )
    return result.rowcount == 1


# -- bookings ---------------------------------------------------------------------------------


def insert_booking(conn: Connection, values: dict[str, Any], tickets: list[dict[str, Any]]) -> None:
    conn.execute(insert(bookings), values)
    conn.execute(insert(booking_tickets), tickets)


def ticket_code_taken(conn: Connection, merchant_id: str, code: str) -> bool:
    stmt = select(booking_tickets.c.id).where(
        booking_tickets.c.merchant_id == merchant_id, booking_tickets.c.code == code
    )
    return conn.execute(stmt).first() is not None


def get_booking(conn: Connection, merchant_id: str, booking_id: str) -> dict[str, Any] | None:
    stmt = select(bookings).where(bookings.c.merchant_id == merchant_id, bookings.c.id == booking_id)
    row = conn.execute(stmt).mappings().first()
    return dict(row) if row else None


def tickets_of(conn: Connection, merchant_id: str, booking_ids: Sequence[str]) -> list[dict[str, Any]]:
    stmt = (
        select(booking_tickets)
        .where(
            booking_tickets.c.merchant_id == merchant_id, booking_tickets.c.booking_id.in_(list(booking_ids))
        )
        .order_by(booking_tickets.c.booking_id, booking_tickets.c.seq)
    )
    return [dict(r) for r in conn.execute(stmt).mappings()]


def bookings_of(conn: Connection, merchant_id: str, member_id: str, limit: int = 100) -> list[dict[str, Any]]:
    """Bookings the member made or travels on, newest first."""
    travels = exists().where(
        booking_tickets.c.merchant_id == bookings.c.merchant_id,
        booking_tickets.c.booking_id == bookings.c.id,
        booking_tickets.c.passenger_id == member_id,
    )
    stmt = (
        select(bookings)
        .where(bookings.c.merchant_id == merchant_id, or_(bookings.c.member_id == member_id, travels))
        .order_by(bookings.c.created_at.desc(), bookings.c.id.desc())
        .limit(limit)
    )
    return [dict(r) for r in conn.execute(stmt).mappings()]


def paid_from(conn: Connection, merchant_id: str, journal_id: str) -> list[tuple[str, int]]:
    """(lot id, points) a booking's journal took from ``available``."""
    stmt = (
        select(postings.c.lot_id, postings.c.amount)
        .where(
            postings.c.merchant_id == merchant_id,
            postings.c.journal_id == journal_id,
            postings.c.account == "available",
        )
        .order_by(postings.c.id)
    )
    return [(str(lot), -int(amount)) for lot, amount in conn.execute(stmt)]


def cancel_booking(
    conn: Connection, merchant_id: str, booking_id: str, *, journal_id: str, at: datetime
) -> bool:
    """Mark a booked booking cancelled and void its tickets. False if it was not ``booked``."""
    result = conn.execute(
        update(bookings)
        .where(
            bookings.c.merchant_id == merchant_id,
            bookings.c.id == booking_id,
            bookings.c.status == "booked",
        )
        .values(status="cancelled", cancel_journal_id=journal_id, cancelled_at=at)
    )
    if result.rowcount != 1:
        return False
    conn.execute(
        update(booking_tickets)
        .where(booking_tickets.c.merchant_id == merchant_id, booking_tickets.c.booking_id == booking_id)
        .values(status="void")
    )
    return True
