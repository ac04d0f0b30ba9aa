"""Households, their members and their audit trail; and the pooled transfer journal.

The tables live on the shared ``metadata``; migration ``0011_households`` creates them.

``household_members`` holds each member's current or last membership: its primary key
``(merchant_id, member_id)`` is what makes "a member is in at most one household at a time" hold
under concurrent joins. The history (every join, leave, removal and change) is the append-only
``household_events``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Connection,
    ForeignKeyConstraint,
    Index,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    insert,
    select,
    update,
)

from patron.domain.ledger import Journal, Lot, balances_from_postings
from patron.storage.ids import new_id
from patron.storage.ledger import BALANCE_COLUMNS
from patron.storage.tables import ID, UTCDateTime, journals, lots, member_balances, metadata, postings

households = Table(
    "households",
    metadata,
    Column("merchant_id", ID, nullable=False),
    Column("id", ID, nullable=False),
    Column("program_id", ID, nullable=False),
    Column("head_member_id", ID, nullable=False),
    Column("name", String(200), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("dissolved_at", UTCDateTime()),  # when the last member (the head) left
    PrimaryKeyConstraint("merchant_id", "id"),
    Index(None, "merchant_id", "program_id"),
    ForeignKeyConstraint(["merchant_id", "program_id"], ["programs.merchant_id", "programs.id"]),
    ForeignKeyConstraint(["merchant_id", "head_member_id"], ["members.merchant_id", "members.id"]),
)

household_members = Table(
    "household_members",
    metadata,
    Column("merchant_id", ID, nullable=False),
    Column("member_id", ID, nullable=False),
    Column("household_id", ID, nullable=False),
    Column("role", String(20), nullable=False),  # head | adult | member
    Column("can_spend", Boolean, nullable=False),
    Column("joined_at", UTCDateTime(), nullable=False),
    Column("left_at", UTCDateTime()),  # set when they leave; the cooldown counts from it
    PrimaryKeyConstraint("merchant_id", "member_id"),
    Index(None, "merchant_id", "household_id"),
    ForeignKeyConstraint(["merchant_id", "member_id"], ["members.merchant_id", "members.id"]),
    ForeignKeyConstraint(["merchant_id", "household_id"], ["households.merchant_id", "households.id"]),
)

household_events = Table(
    "household_events",
    metadata,
    Column("merchant_id", ID, nullable=False),
    Column("id", ID, nullable=False),
    Column("household_id", ID, nullable=False),
    Column("member_id", ID, nullable=False),  # whom it concerns
    Column("kind", String(30), nullable=False),
    Column("actor", String(100), nullable=False),
    Column("reason", Text, nullable=False),
    Column("details", JSON, nullable=False),
    Column("occurred_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("merchant_id", "id"),
    Index(None, "merchant_id", "household_id", "id"),
    Index(None, "merchant_id", "member_id"),
    ForeignKeyConstraint(["merchant_id", "household_id"], ["households.merchant_id", "households.id"]),
    ForeignKeyConstraint(["merchant_id", "member_id"], ["members.merchant_id", "members.id"]),
)


def insert_household(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(insert(households), values)


def get_household(
    conn: Connection, merchant_id: str, household_id: str, *, lock: bool = False
) -> dict[str, Any] | None:
    """The household; with ``lock``, its row stays locked to the end of the transaction
    (PostgreSQL; SQLite's single writer already serialises), so that its size cannot go stale."""
    stmt = select(households).where(households.c.merchant_id == merchant_id, households.c.id == household_id)
    if lock and conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    row = conn.execute(stmt).mappings().first()
    return dict(row) if row else None


def update_household(conn: Connection, merchant_id: str, household_id: str, **values: Any) -> None:
    conn.execute(
        update(households)
        .where(households.c.merchant_id == merchant_id, households.c.id == household_id)
        .values(**values)
    )


def membership_of(conn: Connection, merchant_id: str, member_id: str) -> dict[str, Any] | None:
    """The member's current or last membership."""
    stmt = select(household_members).where(
        household_members.c.merchant_id == merchant_id, household_members.c.member_id == member_id
    )
    row = conn.execute(stmt).mappings().first()
    return dict(row) if row else None


def current_members(conn: Connection, merchant_id: str, household_id: str) -> list[dict[str, Any]]:
    """Who is in the household now, in the order they joined."""
    stmt = (
        select(household_members)
        .where(
            household_members.c.merchant_id == merchant_id,
            household_members.c.household_id == household_id,
            household_members.c.left_at.is_(None),
        )
        .order_by(household_members.c.joined_at, household_members.c.member_id)
    )
    return [dict(r) for r in conn.execute(stmt).mappings()]


def join(
    conn: Connection,
    *,
    merchant_id: str,
    member_id: str,
    household_id: str,
    role: str,
    can_spend: bool,
    at: datetime,
    previous_left_at: datetime | None,
) -> bool:
    """Record that the member joined. A first membership is an insert (two racing joins: one
    fails on the primary key); a later one replaces the last, and only if it is still the one that
    was checked (``previous_left_at``). Returns False if someone else changed it meanwhile."""
    values = {
        "household_id": household_id,
        "role": role,
        "can_spend": can_spend,
        "joined_at": at,
        "left_at": None,
    }
    if previous_left_at is None:
        conn.execute(
            insert(household_members), {"merchant_id": merchant_id, "member_id": member_id, **values}
        )
        return True
    result = conn.execute(
        update(household_members)
        .where(
            household_members.c.merchant_id == merchant_id,
            household_members.c.member_id == member_id,
            household_members.c.left_at == previous_left_at,
        )
        .values(**values)
    )
    return result.rowcount == 1


def update_membership(conn: Connection, merchant_id: str, member_id: str, **values: Any) -> None:
    conn.execute(
        update(household_members)
        .where(
            household_members.c.merchant_id == merchant_id,
            household_members.c.member_id == member_id,
            household_members.c.left_at.is_(None),
        )
        .values(**values)
    )


def insert_event(conn: Connection, values: dict[str, Any]) -> dict[str, Any]:
    row = {"id": new_id("hev"), **values}
    conn.execute(insert(household_events), row)
    return row


def events_of(
    conn: Connection, merchant_id: str, household_id: str, *, limit: int, after: str | None
) -> list[dict[str, Any]]:
    """The audit trail in the order it was recorded (ids are time-ordered), ``limit + 1`` rows
    after the id ``after``, to tell if there are more."""
    stmt = (
        select(household_events)
        .where(household_events.c.merchant_id == merchant_id, household_events.c.household_id == household_id)
        .order_by(household_events.c.id)
        .limit(limit + 1)
    )
    if after is not None:
        stmt = stmt.where(household_events.c.id > after)
    return [dict(r) for r in conn.execute(stmt).mappings()]


def write_transfer(
    conn: Connection,
    journal: Journal,
    *,
    owners: Sequence[str],
    new_lots: Sequence[Lot],
    merchant_id: str,
    member_id: str,
    program_id: str,
    program_version: int,
    occurred_at: datetime,
    created_at: datetime,
) -> str:
    """Append a journal whose postings move points between members (``owners[i]`` owns
    ``journal.postings[i]``), the receiving member's ``new_lots``, and update every member's
    cached balances, as :func:`patron.storage.ledger.write_journal` does for one member. The
    journal row names ``member_id``, the member it was made for."""
    if len(owners) != len(journal.postings):
        raise ValueError("one owner per posting")
    journal_id = new_id("jrn")
    conn.execute(
        insert(journals),
        {
            "merchant_id": merchant_id,
            "id": journal_id,
            "member_id": member_id,
            "program_id": program_id,
            "program_version": program_version,
            "kind": str(journal.kind),
            "reason": journal.reason,
            "event_id": None,
            "occurred_at": occurred_at,
            "created_at": created_at,
        },
    )
    if new_lots:
        conn.execute(
            insert(lots),
            [
                {
                    "merchant_id": merchant_id,
                    "id": lot.id,
                    "member_id": member_id,
                    "journal_id": journal_id,
                    "points": lot.remaining,
                    "earned_at": lot.earned_at,
                    "available_from": lot.available_from,
                    "expires_at": lot.expires_at,
                }
                for lot in new_lots
            ],
        )
    conn.execute(
        insert(postings),
        [
            {
                "merchant_id": merchant_id,
                "id": new_id("pst"),
                "journal_id": journal_id,
                "member_id": owner,
                "account": str(p.account),
                "amount": p.amount,
                "lot_id": p.lot_id,
                "occurred_at": occurred_at,
            }
            for owner, p in zip(owners, journal.postings, strict=True)
        ],
    )
    per_member: dict[str, list[Any]] = defaultdict(list)
    for owner, p in zip(owners, journal.postings, strict=True):
        per_member[owner].append(p)
    for owner in sorted(per_member):
        delta = balances_from_postings(per_member[owner])
        changes = {c: member_balances.c[c] + getattr(delta, c) for c in BALANCE_COLUMNS if getattr(delta, c)}
        if changes:
            conn.execute(
                update(member_balances)
                .where(member_balances.c.merchant_id == merchant_id, member_balances.c.member_id == owner)
                .values(**changes)
            )
    return journal_id
