"""A member's tickets with their events, newest event first: the portal's list of tickets."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, and_, select

from patron.storage.tickets import ticketed_events, tickets


def tickets_of_member(conn: Connection, merchant_id: str, member_id: str) -> list[dict[str, Any]]:
    t, e = tickets, ticketed_events
    stmt = (
        select(
            t.c.id,
            t.c.code,
            t.c.status,
            t.c.points,
            t.c.checked_in_at,
            t.c.event_id,
            e.c.name.label("event_name"),
            e.c.place,
            e.c.starts_at,
            e.c.status.label("event_status"),
        )
        .join(e, and_(e.c.merchant_id == t.c.merchant_id, e.c.id == t.c.event_id))
        .where(t.c.merchant_id == merchant_id, t.c.member_id == member_id)
        .order_by(e.c.starts_at.desc(), t.c.id)
    )
    return [dict(r) for r in conn.execute(stmt).mappings()]
