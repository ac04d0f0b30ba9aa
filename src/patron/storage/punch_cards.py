"""Punch cards: one row per punch (or its reversal), append-only; a card's progress is a sum."""

from __future__ import annotations

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
    and_,
    func,
    insert,
    select,
)

from patron.storage.tables import ID, UTCDateTime, metadata

punches = Table(
    "punches",
    metadata,
    Column("merchant_id", ID, nullable=False),
    Column("id", ID, nullable=False),
    Column("member_id", ID, nullable=False),
    Column("rule_id", String(100), nullable=False),
    Column("event_id", ID, nullable=False),  # the visit or purchase (or the reversal) that punched
    Column("location_id", String(100)),
    Column("delta", Integer, nullable=False),  # +1 a punch, -1 a reversed punch
    Column("total", BigInteger, nullable=False),  # the member's punches on this card after this row
    Column("redemption_id", ID),  # the reward this punch filled the card with, if it did
    Column("occurred_at", UTCDateTime(), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("merchant_id", "id"),
    Index(None, "merchant_id", "member_id", "rule_id", "occurred_at"),
    Index(None, "merchant_id", "event_id"),
    ForeignKeyConstraint(["merchant_id", "member_id"], ["members.merchant_id", "members.id"]),
)


def total(conn: Connection, merchant_id: str, member_id: str, rule_id: str) -> int:
    stmt = select(func.coalesce(func.sum(punches.c.delta), 0)).where(
        punches.c.merchant_id == merchant_id,
        punches.c.member_id == member_id,
        punches.c.rule_id == rule_id,
    )
    return int(conn.execute(stmt).scalar_one())


def punched_between(
    conn: Connection,
    merchant_id: str,
    member_id: str,
    rule_id: str,
    location_id: str | None,
    start: datetime | None,
    end: datetime | None,
) -> int:
    """Net punches of ``rule_id`` in ``[start, end)`` at ``location_id``."""
    cond = [
        punches.c.merchant_id == merchant_id,
        punches.c.member_id == member_id,
        punches.c.rule_id == rule_id,
        punches.c.location_id == location_id if location_id is not None else punches.c.location_id.is_(None),
    ]
    if start is not None:
        cond.append(punches.c.occurred_at >= start)
    if end is not None:
        cond.append(punches.c.occurred_at < end)
    stmt = select(func.coalesce(func.sum(punches.c.delta), 0)).where(and_(*cond))
    return int(conn.execute(stmt).scalar_one())


def of_event(conn: Connection, merchant_id: str, event_id: str) -> list[dict[str, Any]]:
    stmt = select(punches).where(punches.c.merchant_id == merchant_id, punches.c.event_id == event_id)
    return [dict(r) for r in conn.execute(stmt).mappings()]


def insert_punch(conn: Connection, row: dict[str, Any]) -> None:
    conn.execute(insert(punches), row)


def of_member(conn: Connection, merchant_id: str, member_id: str) -> dict[str, dict[str, int]]:
    """Per rule: net punches and cards filled."""
    stmt = (
        select(
            punches.c.rule_id,
            func.coalesce(func.sum(punches.c.delta), 0),
            func.count(punches.c.redemption_id),
        )
        .where(punches.c.merchant_id == merchant_id, punches.c.member_id == member_id)
        .group_by(punches.c.rule_id)
    )
    return {r: {"punches": int(n), "cards": int(c)} for r, n, c in conn.execute(stmt)}
