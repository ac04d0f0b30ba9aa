"""Referrals, one per referee: completed, revoked, waiting for review, or rejected."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, func, insert, select, update

from patron.storage.tables import events, members, referrals


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


def completed_since(conn: Connection, merchant_id: str, referrer_id: str, since: datetime) -> list[datetime]:
    """When the referrer's completed referrals qualified, from ``since`` on."""
    stmt = select(referrals.c.completed_at).where(
        referrals.c.merchant_id == merchant_id,
        referrals.c.referrer_id == referrer_id,
        referrals.c.status == "completed",
        referrals.c.completed_at > since,
    )
    return [r[0] for r in conn.execute(stmt)]


def completed_at_addresses(conn: Connection, merchant_id: str, since: datetime) -> list[tuple[datetime, Any]]:
    """(completed_at, referee attributes) of referrals completed from ``since`` on, any advocate."""
    stmt = (
        select(referrals.c.completed_at, members.c.attributes)
        .join(
            members,
            and_(members.c.merchant_id == referrals.c.merchant_id, members.c.id == referrals.c.referee_id),
        )
        .where(
            referrals.c.merchant_id == merchant_id,
            referrals.c.status == "completed",
            referrals.c.completed_at > since,
        )
    )
    return [(r[0], r[1]) for r in conn.execute(stmt)]


def order_marks(conn: Connection, merchant_id: str, member_id: str) -> tuple[set[str], set[str], set[str]]:
    """What the member's stored events say about who placed them, in one pass over their bodies:
    payment fingerprints, device ids and IP addresses, and shipping addresses."""
    stmt = select(events.c.body).where(events.c.merchant_id == merchant_id, events.c.member_id == member_id)
    prints, devices, addresses = set(), set(), set()
    for (body,) in conn.execute(stmt):
        attrs = body.get("attributes") if isinstance(body, dict) else None
        if not isinstance(attrs, dict):
            continue
        if isinstance(attrs.get("payment_fingerprint"), str) and attrs["payment_fingerprint"]:
            prints.add(attrs["payment_fingerprint"])
        for key in ("device_id", "ip_address"):
            if isinstance(attrs.get(key), str) and attrs[key]:
                devices.add(f"{key}:{attrs[key]}")
        if isinstance(attrs.get("shipping_address"), str):
            addresses.add(attrs["shipping_address"])
    return prints, devices, addresses


def count_completed(conn: Connection, merchant_id: str, referrer_id: str) -> int:
    stmt = select(func.count()).where(
        referrals.c.merchant_id == merchant_id,
        referrals.c.referrer_id == referrer_id,
        referrals.c.status == "completed",
    )
    return int(conn.execute(stmt).scalar() or 0)


def milestone_counts(conn: Connection, merchant_id: str, referrer_id: str) -> list[int]:
    """The referral milestones (by count) already credited to the referrer."""
    stmt = select(referrals.c.milestones).where(
        referrals.c.merchant_id == merchant_id,
        referrals.c.referrer_id == referrer_id,
        referrals.c.milestones.is_not(None),
    )
    return [int(m["count"]) for row in conn.execute(stmt) for m in (row[0] or [])]


def set_review(
    conn: Connection, merchant_id: str, referee_id: str, *, status: str, at: datetime, values: dict[str, Any]
) -> bool:
    """Move a referral out of review; False if it was no longer waiting for review."""
    result = conn.execute(
        update(referrals)
        .where(
            referrals.c.merchant_id == merchant_id,
            referrals.c.referee_id == referee_id,
            referrals.c.status == "review",
        )
        .values(status=status, reviewed_at=at, **values)
    )
    return result.rowcount == 1


def add_milestones(
    conn: Connection, merchant_id: str, referee_id: str, credited: list[dict[str, int]]
) -> None:
    conn.execute(
        update(referrals)
        .where(referrals.c.merchant_id == merchant_id, referrals.c.referee_id == referee_id)
        .values(milestones=credited)
    )


def in_review(conn: Connection, merchant_id: str, program_id: str) -> list[dict[str, Any]]:
    """The program's referrals waiting for review, oldest first."""
    stmt = (
        select(referrals)
        .join(
            members,
            (members.c.merchant_id == referrals.c.merchant_id) & (members.c.id == referrals.c.referee_id),
        )
        .where(
            referrals.c.merchant_id == merchant_id,
            members.c.program_id == program_id,
            referrals.c.status == "review",
        )
        .order_by(referrals.c.completed_at, referrals.c.referee_id)
    )
    return [dict(r) for r in conn.execute(stmt).mappings()]
