"""Events and their per-line, per-rule attribution; qualification rows for tiers."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, func, insert, select

from patron.storage.tables import event_lines, event_rules, events, qualifications


def get_event(conn: Connection, merchant_id: str, external_id: str) -> dict[str, Any] | None:
    row = (
        conn.execute(
            select(events).where(events.c.merchant_id == merchant_id, events.c.external_id == external_id)
        )
        .mappings()
        .first()
    )
    return dict(row) if row else None


def insert_event(
    conn: Connection,
    *,
    row: dict[str, Any],
    lines: list[dict[str, Any]],
    rules: list[dict[str, Any]],
) -> None:
    conn.execute(insert(events), row)
    if lines:
        conn.execute(
            insert(event_lines),
            [{"merchant_id": row["merchant_id"], "event_id": row["id"], **ln} for ln in lines],
        )
    if rules:
        conn.execute(
            insert(event_rules),
            [{"merchant_id": row["merchant_id"], "event_id": row["id"], **r} for r in rules],
        )


def insert_qualification(conn: Connection, *, merchant_id: str, event_id: str, **values: Any) -> None:
    conn.execute(insert(qualifications), dict(merchant_id=merchant_id, event_id=event_id, **values))


def lines_of(conn: Connection, merchant_id: str, event_id: str) -> list[dict[str, Any]]:
    stmt = select(event_lines).where(
        event_lines.c.merchant_id == merchant_id, event_lines.c.event_id == event_id
    )
    return [dict(r) for r in conn.execute(stmt).mappings()]


def reversed_lines(conn: Connection, merchant_id: str, event_id: str) -> list[dict[str, Any]]:
    """What reversals (refunds, cancels) of ``event_id`` already took back, per line."""
    stmt = (
        select(
            event_lines.c.line_id,
            func.sum(event_lines.c.quantity).label("quantity"),
            func.sum(event_lines.c.points).label("points"),
            func.sum(event_lines.c.amount).label("amount"),
        )
        .join(
            events,
            and_(
                events.c.merchant_id == event_lines.c.merchant_id,
                events.c.id == event_lines.c.event_id,
            ),
        )
        .where(events.c.merchant_id == merchant_id, events.c.refers_to == event_id)
        .group_by(event_lines.c.line_id)
    )
    return [dict(r) for r in conn.execute(stmt).mappings()]


def qualification_rows(
    conn: Connection, merchant_id: str, member_id: str, column: str
) -> list[tuple[datetime, datetime, int, str]]:
    """(period_at, recorded_at, value, event id) of the member's rows with a value in ``column``."""
    stmt = (
        select(
            qualifications.c.period_at,
            qualifications.c.recorded_at,
            qualifications.c[column],
            qualifications.c.event_id,
        )
        .where(qualifications.c.merchant_id == merchant_id, qualifications.c.member_id == member_id)
        .order_by(qualifications.c.recorded_at)
    )
    return [(a, b, int(v), str(e)) for a, b, v, e in conn.execute(stmt) if v]


def action_count(
    conn: Connection,
    merchant_id: str,
    member_id: str,
    rule_id: str,
    start: datetime | None,
    end: datetime | None,
    *,
    location_id: str | None = None,
) -> int:
    """How many of the member's events earned from ``rule_id`` in ``[start, end)`` (at
    ``location_id`` when given)."""
    stmt = (
        select(func.count())
        .select_from(event_rules)
        .join(
            events,
            and_(
                events.c.merchant_id == event_rules.c.merchant_id,
                events.c.id == event_rules.c.event_id,
            ),
        )
        .where(
            events.c.merchant_id == merchant_id,
            events.c.member_id == member_id,
            event_rules.c.rule_id == rule_id,
            event_rules.c.points > 0,
        )
    )
    if start is not None:
        stmt = stmt.where(events.c.occurred_at >= start)
    if end is not None:
        stmt = stmt.where(events.c.occurred_at < end)
    if location_id is not None:
        stmt = stmt.where(events.c.location_id == location_id)
    return int(conn.execute(stmt).scalar() or 0)


def earned_between(
    conn: Connection, merchant_id: str, member_id: str, start: datetime | None, end: datetime | None
) -> int:
    """Points the member earned (before reversals) from events in ``[start, end)``."""
    stmt = select(func.coalesce(func.sum(events.c.points), 0)).where(
        events.c.merchant_id == merchant_id,
        events.c.member_id == member_id,
        events.c.refers_to.is_(None),
    )
    if start is not None:
        stmt = stmt.where(events.c.occurred_at >= start)
    if end is not None:
        stmt = stmt.where(events.c.occurred_at < end)
    return int(conn.execute(stmt).scalar() or 0)


def external_ids(conn: Connection, merchant_id: str, ids: set[str]) -> dict[str, str]:
    stmt = select(events.c.id, events.c.external_id).where(
        events.c.merchant_id == merchant_id, events.c.id.in_(ids)
    )
    return {str(row[0]): str(row[1]) for row in conn.execute(stmt)}


def events_of_member(conn: Connection, merchant_id: str, member_id: str) -> list[dict[str, Any]]:
    stmt = (
        select(
            events.c.external_id,
            events.c.type,
            events.c.occurred_at,
            events.c.received_at,
            events.c.points,
            events.c.body,
        )
        .where(events.c.merchant_id == merchant_id, events.c.member_id == member_id)
        .order_by(events.c.occurred_at, events.c.id)
    )
    return [dict(r) for r in conn.execute(stmt).mappings()]
