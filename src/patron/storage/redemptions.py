"""Redemptions: the state of each reservation. The points themselves move in the ledger."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, func, insert, select, update

from patron.storage.tables import postings, programs, redemptions


def insert_redemption(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(insert(redemptions), values)


def get(conn: Connection, merchant_id: str, redemption_id: str) -> dict[str, Any] | None:
    stmt = select(redemptions).where(
        redemptions.c.merchant_id == merchant_id, redemptions.c.id == redemption_id
    )
    row = conn.execute(stmt).mappings().first()
    return dict(row) if row else None


def by_code(conn: Connection, merchant_id: str, code: str) -> dict[str, Any] | None:
    stmt = select(redemptions).where(redemptions.c.merchant_id == merchant_id, redemptions.c.code == code)
    row = conn.execute(stmt).mappings().first()
    return dict(row) if row else None


def code_taken(conn: Connection, merchant_id: str, code: str) -> bool:
    return by_code(conn, merchant_id, code) is not None


def of_member(conn: Connection, merchant_id: str, member_id: str, limit: int = 100) -> list[dict[str, Any]]:
    stmt = (
        select(redemptions)
        .where(redemptions.c.merchant_id == merchant_id, redemptions.c.member_id == member_id)
        .order_by(redemptions.c.reserved_at.desc(), redemptions.c.id.desc())
        .limit(limit)
    )
    return [dict(r) for r in conn.execute(stmt).mappings()]


def count_live(
    conn: Connection,
    merchant_id: str,
    program_id: str,
    reward_id: str,
    *,
    member_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> int:
    """Reservations and redemptions of a reward that still count (not cancelled or lapsed)."""
    stmt = select(func.count()).where(
        redemptions.c.merchant_id == merchant_id,
        redemptions.c.program_id == program_id,
        redemptions.c.reward_id == reward_id,
        redemptions.c.status.in_(("reserved", "redeemed")),
    )
    if member_id is not None:
        stmt = stmt.where(redemptions.c.member_id == member_id)
    if since is not None:
        stmt = stmt.where(redemptions.c.reserved_at >= since)
    if until is not None:
        stmt = stmt.where(redemptions.c.reserved_at < until)
    return int(conn.execute(stmt).scalar() or 0)


def lock_program(conn: Connection, merchant_id: str, program_id: str) -> None:
    """Serialise stock checks of one program's rewards (PostgreSQL; SQLite has one writer)."""
    if conn.dialect.name == "postgresql":
        conn.execute(
            select(programs.c.id)
            .where(programs.c.merchant_id == merchant_id, programs.c.id == program_id)
            .with_for_update()
        )


def held(conn: Connection, merchant_id: str, journal_id: str) -> list[tuple[str, int]]:
    """(lot id, points) a reservation journal moved into ``reserved``, in the order it drew them
    (the spending order: soonest to expire first)."""
    stmt = (
        select(postings.c.lot_id, postings.c.amount)
        .where(
            and_(postings.c.merchant_id == merchant_id, postings.c.journal_id == journal_id),
            postings.c.account == "reserved",
        )
        .order_by(postings.c.id)
    )
    return [(str(lot), int(p)) for lot, p in conn.execute(stmt)]


def settle(
    conn: Connection,
    merchant_id: str,
    redemption_id: str,
    *,
    status: str,
    journal_id: str | None,
    at: datetime,
) -> None:
    conn.execute(
        update(redemptions)
        .where(redemptions.c.merchant_id == merchant_id, redemptions.c.id == redemption_id)
        .values(status=status, settle_journal_id=journal_id, settled_at=at)
    )


def lapsed(conn: Connection, *, as_of: datetime, merchant_id: str | None, limit: int) -> list[dict[str, Any]]:
    stmt = (
        select(redemptions)
        .where(redemptions.c.status == "reserved", redemptions.c.expires_at <= as_of)
        .order_by(redemptions.c.member_id, redemptions.c.id)
        .limit(limit)
    )
    if merchant_id is not None:
        stmt = stmt.where(redemptions.c.merchant_id == merchant_id)
    return [dict(r) for r in conn.execute(stmt).mappings()]


def set_fulfilment(conn: Connection, merchant_id: str, redemption_id: str, status: str) -> None:
    conn.execute(
        update(redemptions)
        .where(redemptions.c.merchant_id == merchant_id, redemptions.c.id == redemption_id)
        .values(fulfilment_status=status)
    )
