"""Read-only, set-based queries for analytics: purchase days for CLV, and a program's KPIs.

Local calendar days: on PostgreSQL ``timezone(zone, occurred_at)`` gives the local time. SQLite
has no time zones, so the zone's UTC offset at each instant is spelt out as a ``CASE`` over the
instants where the offset changes (from 1970 on, computed once per zone from ``zoneinfo``), and
``date(occurred_at, '+N seconds')`` shifts the stored UTC time by it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Date, and_, case, cast, func, literal, or_, select, true, type_coerce
from sqlalchemy.sql.elements import ColumnElement

from patron.domain.ledger import Account
from patron.storage.tables import event_lines, events, members, postings, qualifications

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class PurchaseDay:
    member_id: str
    external_id: str | None
    day: date
    value: int  # minor units, net of what refunds and cancels before ``until`` took back


def purchase_days(
    conn: Connection, *, merchant_id: str, program_id: str, until: datetime, timezone: str
) -> list[PurchaseDay]:
    """Each member's purchase days before ``until``, in the local calendar of ``timezone``, with
    the day's value: the sum of its purchases' line amounts (the eligible amounts, as for
    qualifying spend) less what refunds and cancels recorded before ``until`` took back.

    A purchase wholly taken back by then is no purchase at all; a refund recorded at or after
    ``until`` is ignored (it was not known at that time). Ordered by member, then day.
    """
    e = events.c
    purchase_id = func.coalesce(e.refers_to, e.id)
    is_reversal = e.refers_to.is_not(None)
    is_purchase = and_(e.refers_to.is_(None), e.type == "purchase")
    amount = func.coalesce(event_lines.c.amount, 0)
    # One pass over the program's events: each purchase with the reversals that refer to it.
    per_purchase = (
        select(
            func.max(case((is_purchase, e.member_id))).label("member_id"),
            func.max(case((is_purchase, e.occurred_at))).label("occurred_at"),
            func.sum(case((is_reversal, 0), else_=amount)).label("gross"),
            func.sum(case((is_reversal, amount), else_=0)).label("returned"),
            func.max(case((is_reversal, 1), else_=0)).label("reversed"),
        )
        .select_from(
            events.outerjoin(
                event_lines,
                and_(event_lines.c.merchant_id == e.merchant_id, event_lines.c.event_id == e.id),
            )
        )
        .where(
            e.merchant_id == merchant_id,
            e.program_id == program_id,
            e.occurred_at < until,
            or_(is_purchase, is_reversal),
        )
        .group_by(purchase_id)
        .subquery("per_purchase")
    )
    net = per_purchase.c.gross - per_purchase.c.returned
    kept = (
        select(
            per_purchase.c.member_id,
            _local_day(conn, per_purchase.c.occurred_at, timezone, until).label("day"),
            net.label("value"),
        )
        .where(
            per_purchase.c.member_id.is_not(None),  # a reversal of something other than a purchase
            or_(per_purchase.c.reversed == 0, net > 0),
        )
        .subquery("kept")
    )
    stmt = (
        select(kept.c.member_id, members.c.external_id, kept.c.day, func.sum(kept.c.value).label("value"))
        .join(members, and_(members.c.merchant_id == merchant_id, members.c.id == kept.c.member_id))
        .group_by(kept.c.member_id, members.c.external_id, kept.c.day)
        .order_by(kept.c.member_id, kept.c.day)
    )
    return [PurchaseDay(str(m), x, _as_date(d), int(v or 0)) for m, x, d, v in conn.execute(stmt)]


def _as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def _local_day(conn: Connection, column: Any, timezone: str, until: datetime) -> ColumnElement[Any]:
    """The local calendar date of a UTC ``column`` in ``timezone``."""
    if conn.dialect.name == "postgresql":
        return cast(func.timezone(timezone, column), Date)
    changes = _offset_changes(timezone, until.date())
    first = literal(f"{changes[0][1]:+d} seconds")
    if len(changes) == 1:
        shift: ColumnElement[Any] = first
    else:  # newest first: most rows match an early branch
        shift = case(
            *[(column >= start, literal(f"{offset:+d} seconds")) for start, offset in reversed(changes[1:])],
            else_=first,
        )
    return type_coerce(func.date(column, shift), Date)


@lru_cache(maxsize=64)
def _offset_changes(timezone: str, until: date) -> tuple[tuple[datetime, int], ...]:
    """``(from, offset in seconds)`` for each UTC offset ``timezone`` has had from 1970 to just
    after ``until``: the first from 1970, each later one from the second it took effect."""
    zone = ZoneInfo(timezone)

    def offset(second: int) -> int:
        local = (_EPOCH + timedelta(seconds=second)).astimezone(zone)
        delta = local.utcoffset()
        return int(delta.total_seconds()) if delta is not None else 0

    end = int((datetime.combine(until, time(), UTC) + timedelta(days=2) - _EPOCH).total_seconds())
    step = 86_400  # offsets change at most about twice a year, never twice in one day
    changes = [(0, offset(0))]
    second = 0
    while second < end:
        after = second + step
        if offset(after) != changes[-1][1]:
            lo, hi = second, after  # offset(lo) is the old one, offset(hi) the new one
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if offset(mid) == changes[-1][1] else (lo, mid)
            changes.append((hi, offset(hi)))
        second = after
    return tuple((_EPOCH + timedelta(seconds=s), o) for s, o in changes)


def kpis(
    conn: Connection, *, merchant_id: str, program_id: str, start: datetime, end: datetime
) -> dict[str, Any]:
    """Headline figures of a program for the window ``[start, end)``: membership, activity,
    purchases, qualifying spend, and points issued, redeemed and expired in the window, with the
    outstanding balances at ``end``."""
    in_window = and_(events.c.occurred_at >= start, events.c.occurred_at < end)
    m = members.c
    enrolled = (
        select(
            func.count().label("members"),
            func.coalesce(func.sum(case((m.enrolled_at >= start, 1), else_=0)), 0).label("new"),
        )
        .where(
            m.merchant_id == merchant_id,
            m.program_id == program_id,
            m.enrolled_at < end,
            or_(m.erased_at.is_(None), m.erased_at >= end),
        )
        .subquery()
    )
    per_member = (
        select(
            events.c.member_id,
            func.sum(case((events.c.type == "purchase", 1), else_=0)).label("purchases"),
        )
        .where(
            events.c.merchant_id == merchant_id,
            events.c.program_id == program_id,
            events.c.refers_to.is_(None),
            in_window,
        )
        .group_by(events.c.member_id)
        .subquery()
    )
    activity = select(
        func.count().label("active"),
        func.coalesce(func.sum(per_member.c.purchases), 0).label("purchases"),
        func.coalesce(func.sum(case((per_member.c.purchases > 0, 1), else_=0)), 0).label("purchasers"),
        func.coalesce(func.sum(case((per_member.c.purchases > 1, 1), else_=0)), 0).label("repeaters"),
    ).subquery()
    program_members = and_(
        m.merchant_id == merchant_id, m.program_id == program_id, m.id == qualifications.c.member_id
    )
    spend = (
        select(func.coalesce(func.sum(qualifications.c.spend), 0).label("spend"))
        .join(members, program_members)
        .where(
            qualifications.c.merchant_id == merchant_id,
            qualifications.c.recorded_at >= start,
            qualifications.c.recorded_at < end,
        )
        .subquery()
    )
    one_row_each = enrolled.join(activity, true()).join(spend, true())
    row = conn.execute(select(enrolled, activity, spend).select_from(one_row_each)).mappings().one()
    purchasers = int(row["purchasers"])
    return {
        "members": int(row["members"]),
        "new_members": int(row["new"]),
        "active_members": int(row["active"]),
        "purchases": int(row["purchases"]),
        "purchasing_members": purchasers,
        "repeat_purchase_rate": int(row["repeaters"]) / purchasers if purchasers else None,
        "qualifying_spend": int(row["spend"]),
        "points": _points(conn, merchant_id=merchant_id, program_id=program_id, start=start, end=end),
    }


def _points(
    conn: Connection, *, merchant_id: str, program_id: str, start: datetime, end: datetime
) -> dict[str, int]:
    a, when = postings.c.account, postings.c.occurred_at
    in_window = and_(when >= start, when < end)

    def total(condition: ColumnElement[bool], sign: int = 1) -> ColumnElement[Any]:
        return func.coalesce(func.sum(case((condition, postings.c.amount * sign), else_=0)), 0)

    held = (Account.AVAILABLE, Account.PENDING, Account.RESERVED)
    stmt = (
        select(
            total(and_(a == str(Account.ISSUED), in_window), -1).label("issued"),
            total(and_(a == str(Account.ADJUSTMENTS), in_window), -1).label("adjusted"),
            total(and_(a == str(Account.REDEEMED), in_window)).label("redeemed"),
            total(and_(a == str(Account.EXPIRED), in_window)).label("expired"),
            total(a.in_([str(h) for h in held])).label("outstanding"),
            total(a == str(Account.DEBT), -1).label("debt"),
        )
        .select_from(postings)
        .join(
            members,
            and_(
                members.c.merchant_id == postings.c.merchant_id,
                members.c.id == postings.c.member_id,
                members.c.program_id == program_id,
            ),
        )
        .where(postings.c.merchant_id == merchant_id, when < end)
    )
    row = conn.execute(stmt).mappings().one()
    return {k: int(v) for k, v in row.items()}


def liability(
    conn: Connection, *, merchant_id: str, program_id: str, as_of: datetime, since: datetime
) -> dict[str, int]:
    """Points members hold at ``as_of`` (available, pending, reserved), their debt, and what was
    redeemed and expired in ``[since, as_of)`` (for the breakage rate)."""
    a, when = postings.c.account, postings.c.occurred_at

    def total(condition: ColumnElement[bool], sign: int = 1) -> ColumnElement[Any]:
        return func.coalesce(func.sum(case((condition, postings.c.amount * sign), else_=0)), 0)

    held = [str(h) for h in (Account.AVAILABLE, Account.PENDING, Account.RESERVED)]
    recent = when >= since
    row = (
        conn.execute(
            select(
                total(a.in_(held)).label("outstanding"),
                total(a == str(Account.RESERVED)).label("reserved"),
                total(a == str(Account.DEBT), -1).label("debt"),
                total(and_(a == str(Account.REDEEMED), recent)).label("redeemed"),
                total(and_(a == str(Account.EXPIRED), recent)).label("expired"),
            )
            .select_from(postings)
            .join(
                members,
                and_(
                    members.c.merchant_id == postings.c.merchant_id,
                    members.c.id == postings.c.member_id,
                    members.c.program_id == program_id,
                ),
            )
            .where(postings.c.merchant_id == merchant_id, when <= as_of)
        )
        .mappings()
        .one()
    )
    return {k: int(v) for k, v in row.items()}


def usage(
    conn: Connection, *, merchant_id: str, program_id: str, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    """ "Loyalty visits" per location in ``[start, end)``: earning events and redemptions (the
    location they were made at, or none)."""
    from patron.storage.tables import redemptions

    earns = (
        select(events.c.location_id, func.count().label("earns"))
        .where(
            events.c.merchant_id == merchant_id,
            events.c.program_id == program_id,
            events.c.refers_to.is_(None),
            events.c.points > 0,
            events.c.occurred_at >= start,
            events.c.occurred_at < end,
        )
        .group_by(events.c.location_id)
    )
    redeemed = (
        select(redemptions.c.location_id, func.count().label("redemptions"))
        .where(
            redemptions.c.merchant_id == merchant_id,
            redemptions.c.program_id == program_id,
            redemptions.c.status == "redeemed",
            redemptions.c.settled_at >= start,
            redemptions.c.settled_at < end,
        )
        .group_by(redemptions.c.location_id)
    )
    out: dict[str | None, dict[str, Any]] = {}
    for location, n in conn.execute(earns):
        out.setdefault(location, {"location_id": location, "earns": 0, "redemptions": 0})["earns"] = int(n)
    for location, n in conn.execute(redeemed):
        out.setdefault(location, {"location_id": location, "earns": 0, "redemptions": 0})["redemptions"] = (
            int(n)
        )
    return sorted(out.values(), key=lambda r: (r["location_id"] is None, r["location_id"] or ""))
