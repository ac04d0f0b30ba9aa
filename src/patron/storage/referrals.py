"""Referrals completed (and revoked), one per referee."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from patron.storage.tables import events, referrals


def of_referee(conn: Connection, merchant_id: str, referee_id: str) -> dict[str, Any] | None:
    stmt = select(referrals).where(
        referrals.c.merchant_id == merchant_id, referrals.c.referee_id == referee_id
    )
    row = conn.execute(stmt).mappings().first()
    return dict(row) if row else None


def by_event(conn: Connection, merchant_id: str, event_id: str) -> dict[str, Any] | None:
    stmt = select(referrals).where(referrals.c.merchant_id == merchant_id, referrals.c.event_id == event_id)
    row = conn.execute(stmt).mappings().first()
    return dict(row) if row else None


def of_referrer(conn: Connection, merchant_id: str, referrer_id: str) -> list[dict[str, Any]]:
    stmt = (
        select(referrals)
        .where(referrals.c.merchant_id == merchant_id, referrals.c.referrer_id == referrer_id)
        .order_by(referrals.c.completed_at)
    )
    return [dict(r) for r in conn.execute(stmt).mappings()]


def insert_referral(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(insert(referrals), values)


def revoke(conn: Connection, merchant_id: str, referee_id: str, at: datetime) -> None:
    conn.execute(
        update(referrals)
        .where(referrals.c.merchant_id == merchant_id, referrals.c.referee_id == referee_id)
        .values(status="revoked", revoked_at=at)
    )


def prior_purchases(conn: Connection, merchant_id: str, member_id: str) -> int:
    stmt = select(func.count()).where(
        events.c.merchant_id == merchant_id, events.c.member_id == member_id, events.c.type == "purchase"
    )
    return int(conn.execute(stmt).scalar() or 0)
