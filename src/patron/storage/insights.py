"""Read-only, set-based queries for segments, cohorts, favourites, extra KPIs and simulation input.

Every figure is one SQL statement over the program's rows; Python only shapes the result.
Local calendar months use the same time-zone technique as ``storage/analytics.py``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Select,
    and_,
    case,
    distinct,
    func,
    or_,
    select,
    text,
)
from sqlalchemy.sql.elements import ColumnElement

from patron.storage.analytics import _local_day
from patron.storage.tables import (
    event_lines,
    event_rules,
    events,
    members,
    postings,
    qualifications,
    redemptions,
    tier_assignments,
)


def _local_month(conn: Connection, column: Any, timezone: str, until: datetime) -> ColumnElement[Any]:
    day = _local_day(conn, column, timezone, until)
    if conn.dialect.name == "postgresql":
        return func.to_char(day, "YYYY-MM")
    return func.strftime("%Y-%m", day)


def _purchases(
    merchant_id: str, program_id: str, start: datetime, end: datetime, location_id: str | None, name: str
) -> Any:
    """Purchases in ``[start, end)`` with their value: eligible line amounts less what refunds
    and cancels recorded before ``end`` took back."""
    e = events.c
    gross = (
        select(
            e.id, e.member_id, e.occurred_at, func.coalesce(func.sum(event_lines.c.amount), 0).label("gross")
        )
        .select_from(
            events.outerjoin(
                event_lines, and_(event_lines.c.merchant_id == e.merchant_id, event_lines.c.event_id == e.id)
            )
        )
        .where(
            e.merchant_id == merchant_id,
            e.program_id == program_id,
            e.type == "purchase",
            e.refers_to.is_(None),
            e.occurred_at >= start,
            e.occurred_at < end,
        )
        .group_by(e.id, e.member_id, e.occurred_at)
    )
    if location_id is not None:
        gross = gross.where(e.location_id == location_id)
    g = gross.subquery(f"{name}_gross")
    r = events.alias(f"{name}_r")
    back = (
        select(r.c.refers_to.label("event_id"), func.sum(event_lines.c.amount).label("back"))
        .select_from(
            r.join(
                event_lines,
                and_(event_lines.c.merchant_id == r.c.merchant_id, event_lines.c.event_id == r.c.id),
            )
        )
        .where(
            r.c.merchant_id == merchant_id,
            r.c.program_id == program_id,
            r.c.refers_to.is_not(None),
            r.c.occurred_at < end,
        )
        .group_by(r.c.refers_to)
        .subquery(f"{name}_back")
    )
    return (
        select(
            g.c.id,
            g.c.member_id,
            g.c.occurred_at,
            (g.c.gross - func.coalesce(back.c.back, 0)).label("value"),
        )
        .select_from(g.outerjoin(back, back.c.event_id == g.c.id))
        .subquery(f"{name}_purchases")
    )


def _per_member(
    merchant_id: str,
    program_id: str,
    start: datetime,
    end: datetime,
    location_id: str | None,
    name: str = "w",
) -> Any:
    p = _purchases(merchant_id, program_id, start, end, location_id, name)
    return (
        select(
            p.c.member_id,
            func.count().label("purchases"),
            func.sum(p.c.value).label("revenue"),
            func.max(p.c.occurred_at).label("last_at"),
        )
        .group_by(p.c.member_id)
        .subquery(f"{name}_per_member")
    )


def rfm_inputs(
    conn: Connection, *, merchant_id: str, program_id: str, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    """Per purchasing member in ``[start, end)``: last purchase time, purchases and net value."""
    pm = _per_member(merchant_id, program_id, start, end, None)
    stmt = (
        select(pm.c.member_id, members.c.external_id, pm.c.last_at, pm.c.purchases, pm.c.revenue)
        .join(members, and_(members.c.merchant_id == merchant_id, members.c.id == pm.c.member_id))
        .where(members.c.erased_at.is_(None))
        .order_by(pm.c.member_id)
    )
    return [
        {
            "member_id": str(m),
            "external_id": x,
            "last_at": _aware(last),
            "frequency": int(n),
            "monetary": int(v or 0),
        }
        for m, x, last, n, v in conn.execute(stmt)
    ]


def _aware(value: Any) -> datetime:
    from datetime import UTC

    parsed: datetime = datetime.fromisoformat(value) if isinstance(value, str) else value
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def cohorts(
    conn: Connection, *, merchant_id: str, program_id: str, start: datetime, end: datetime, timezone: str
) -> tuple[dict[str, int], dict[tuple[str, str], int]]:
    """Members enrolled in ``[start, end)`` by local enrolment month, and how many of each
    cohort purchased in each local month before ``end``."""
    m = members.c
    cohort = _local_month(conn, m.enrolled_at, timezone, end)
    enrolled = (
        m.merchant_id == merchant_id,
        m.program_id == program_id,
        m.enrolled_at >= start,
        m.enrolled_at < end,
        m.erased_at.is_(None),
    )
    sizes = {
        str(c): int(n)
        for c, n in conn.execute(select(cohort.label("c"), func.count()).where(*enrolled).group_by(cohort))
    }
    month = _local_month(conn, events.c.occurred_at, timezone, end)
    active = (
        select(m.id.label("member_id"), cohort.label("cohort"), month.label("month"))
        .join(events, and_(events.c.merchant_id == m.merchant_id, events.c.member_id == m.id))
        .where(
            *enrolled,
            events.c.type == "purchase",
            events.c.refers_to.is_(None),
            events.c.occurred_at < end,
        )
        .subquery("active")
    )
    activity = {
        (str(c), str(mo)): int(n)
        for c, mo, n in conn.execute(
            select(active.c.cohort, active.c.month, func.count(distinct(active.c.member_id))).group_by(
                active.c.cohort, active.c.month
            )
        )
    }
    return sizes, activity


_ITEMS = {
    "postgresql": (
        "SELECT e.id AS event_id, e.member_id, i.item->>'id' AS line_id, i.item->>'category' AS category, "
        "i.item->>'sku' AS sku FROM events e CROSS JOIN LATERAL "
        "json_array_elements(CAST(e.body AS json)->'items') AS i(item)"
    ),
    "sqlite": (
        "SELECT e.id AS event_id, e.member_id, json_extract(i.value, '$.id') AS line_id, "
        "json_extract(i.value, '$.category') AS category, json_extract(i.value, '$.sku') AS sku "
        "FROM events e, json_each(e.body, '$.items') AS i"
    ),
}


def favourites(
    conn: Connection, *, merchant_id: str, program_id: str, member_id: str | None, by: str, limit: int
) -> list[dict[str, Any]]:
    """Per member, the categories (``by="category"``) or SKUs (``by="sku"``) of their purchase
    lines ranked by eligible amount net of refunds (then units), the best first, at most
    ``limit`` each. Lines without a category (or SKU) are left out."""
    if by not in ("category", "sku"):
        raise ValueError(by)
    items = _ITEMS["postgresql" if conn.dialect.name == "postgresql" else "sqlite"]
    member_filter = "AND e.member_id = :member_id" if member_id is not None else ""
    sql = f"""
    WITH items AS (
        {items}
        WHERE e.merchant_id = :merchant_id AND e.program_id = :program_id AND e.type = 'purchase'
          AND e.refers_to IS NULL {member_filter}
    ),
    bought AS (
        SELECT i.member_id, i.{by} AS name, i.event_id, i.line_id, l.amount, l.quantity
        FROM items i JOIN event_lines l
          ON l.merchant_id = :merchant_id AND l.event_id = i.event_id AND l.line_id = i.line_id
        WHERE i.{by} IS NOT NULL
    ),
    returned AS (
        SELECT r.refers_to AS event_id, rl.line_id, SUM(rl.amount) AS amount, SUM(rl.quantity) AS quantity
        FROM events r JOIN event_lines rl ON rl.merchant_id = r.merchant_id AND rl.event_id = r.id
        WHERE r.merchant_id = :merchant_id AND r.program_id = :program_id AND r.refers_to IS NOT NULL
        GROUP BY r.refers_to, rl.line_id
    ),
    totals AS (
        SELECT b.member_id, b.name, SUM(b.amount - COALESCE(rt.amount, 0)) AS amount,
               SUM(b.quantity - COALESCE(rt.quantity, 0)) AS quantity, COUNT(DISTINCT b.event_id) AS purchases
        FROM bought b LEFT JOIN returned rt ON rt.event_id = b.event_id AND rt.line_id = b.line_id
        GROUP BY b.member_id, b.name
    ),
    ranked AS (
        SELECT t.*, ROW_NUMBER() OVER (
            PARTITION BY t.member_id ORDER BY t.amount DESC, t.quantity DESC, t.name) AS rank
        FROM totals t WHERE t.quantity > 0 OR t.amount > 0
    )
    SELECT member_id, name, amount, quantity, purchases, rank FROM ranked WHERE rank <= :limit
    ORDER BY member_id, rank
    """
    params: dict[str, Any] = {"merchant_id": merchant_id, "program_id": program_id, "limit": limit}
    if member_id is not None:
        params["member_id"] = member_id
    return [
        {
            "member_id": str(r.member_id),
            "name": str(r.name),
            "amount": int(r.amount),
            "quantity": int(r.quantity),
            "purchases": int(r.purchases),
            "rank": int(r.rank),
        }
        for r in conn.execute(text(sql), params)
    ]


def activity_kpis(
    conn: Connection,
    *,
    merchant_id: str,
    program_id: str,
    start: datetime,
    end: datetime,
    previous_start: datetime,
    location_id: str | None,
) -> dict[str, int]:
    """Purchase figures of the window ``[start, end)`` and of the window before it
    (``[previous_start, start)``), with what the earlier window's purchasers did in this one."""
    cur = _per_member(merchant_id, program_id, start, end, location_id)
    row = (
        conn.execute(
            select(
                func.count().label("purchasers"),
                func.coalesce(func.sum(cur.c.purchases), 0).label("purchases"),
                func.coalesce(func.sum(case((cur.c.purchases > 1, 1), else_=0)), 0).label("repeaters"),
                func.coalesce(func.sum(cur.c.revenue), 0).label("revenue"),
            )
        )
        .mappings()
        .one()
    )
    prev = _per_member(merchant_id, program_id, previous_start, start, location_id, "p")
    cur2 = _per_member(merchant_id, program_id, start, end, location_id, "c")
    before = (
        conn.execute(
            select(
                func.count().label("previous_purchasers"),
                func.coalesce(func.sum(prev.c.revenue), 0).label("previous_revenue"),
                func.coalesce(func.sum(case((cur2.c.purchases > 0, 1), else_=0)), 0).label("retained"),
                func.coalesce(func.sum(cur2.c.revenue), 0).label("retained_revenue"),
            ).select_from(prev.outerjoin(cur2, cur2.c.member_id == prev.c.member_id))
        )
        .mappings()
        .one()
    )
    return {k: int(v) for k, v in {**row, **before}.items()}


def membership_kpis(
    conn: Connection, *, merchant_id: str, program_id: str, start: datetime, end: datetime
) -> dict[str, int]:
    """New members in the window, those of them who were referred, and members who redeemed."""
    m = members.c
    row = (
        conn.execute(
            select(
                func.count().label("new_members"),
                func.coalesce(func.sum(case((m.referred_by.is_not(None), 1), else_=0)), 0).label("referred"),
            ).where(
                m.merchant_id == merchant_id,
                m.program_id == program_id,
                m.enrolled_at >= start,
                m.enrolled_at < end,
            )
        )
        .mappings()
        .one()
    )
    redeemers = conn.execute(
        select(func.count(distinct(redemptions.c.member_id))).where(
            redemptions.c.merchant_id == merchant_id,
            redemptions.c.program_id == program_id,
            redemptions.c.status == "redeemed",
            redemptions.c.settled_at >= start,
            redemptions.c.settled_at < end,
        )
    ).scalar()
    return {
        "new_members": int(row["new_members"]),
        "referred": int(row["referred"]),
        "redeemers": int(redeemers or 0),
    }


def member_spend(
    conn: Connection, *, merchant_id: str, program_id: str, start: datetime, end: datetime
) -> list[int]:
    """Each member's net qualifying spend over ``[start, end)`` (members with none left out),
    ascending: the distribution tier thresholds are suggested from."""
    q = qualifications.c
    per = (
        select(func.sum(q.spend).label("spend"))
        .join(members, and_(members.c.merchant_id == q.merchant_id, members.c.id == q.member_id))
        .where(
            q.merchant_id == merchant_id,
            members.c.program_id == program_id,
            q.period_at >= start,
            q.period_at < end,
            q.recorded_at < end,
        )
        .group_by(q.member_id)
        .subquery()
    )
    stmt: Select[Any] = select(per.c.spend).where(per.c.spend > 0).order_by(per.c.spend)
    return [int(v) for (v,) in conn.execute(stmt)]


# --- simulation input -------------------------------------------------------------------------


def period_events(
    conn: Connection, *, merchant_id: str, program_id: str, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    """The program's events in ``[start, end)`` in the order they occurred (then received)."""
    e = events.c
    stmt = (
        select(e.id, e.member_id, e.type, e.occurred_at, e.refers_to, e.program_version, e.points, e.body)
        .where(
            e.merchant_id == merchant_id,
            e.program_id == program_id,
            e.occurred_at >= start,
            e.occurred_at < end,
        )
        .order_by(e.occurred_at, e.received_at, e.id)
    )
    return [dict(r) for r in conn.execute(stmt).mappings()]


def originals(
    conn: Connection, *, merchant_id: str, ids: list[str], before: datetime
) -> tuple[dict[str, dict[str, Any]], dict[str, list[dict[str, Any]]], dict[str, list[dict[str, Any]]]]:
    """Events from before the period that reversals in it refer to: the events, their recorded
    lines, and the lines of their reversals recorded before ``before``."""
    if not ids:
        return {}, {}, {}
    e = events.c
    found = {
        str(r["id"]): dict(r)
        for r in conn.execute(
            select(e.id, e.type, e.occurred_at, e.result).where(e.merchant_id == merchant_id, e.id.in_(ids))
        ).mappings()
    }
    lines: dict[str, list[dict[str, Any]]] = {}
    for r in conn.execute(
        select(event_lines).where(event_lines.c.merchant_id == merchant_id, event_lines.c.event_id.in_(ids))
    ).mappings():
        lines.setdefault(str(r["event_id"]), []).append(dict(r))
    back: dict[str, list[dict[str, Any]]] = {}
    stmt = (
        select(
            e.refers_to,
            event_lines.c.line_id,
            func.sum(event_lines.c.quantity).label("quantity"),
            func.sum(event_lines.c.points).label("points"),
            func.sum(event_lines.c.amount).label("amount"),
        )
        .join(event_lines, and_(event_lines.c.merchant_id == e.merchant_id, event_lines.c.event_id == e.id))
        .where(e.merchant_id == merchant_id, e.refers_to.in_(ids), e.occurred_at < before)
        .group_by(e.refers_to, event_lines.c.line_id)
    )
    for r in conn.execute(stmt).mappings():
        back.setdefault(str(r["refers_to"]), []).append(dict(r))
    return found, lines, back


def program_members(
    conn: Connection, *, merchant_id: str, program_id: str, before: datetime
) -> list[dict[str, Any]]:
    """Members enrolled before ``before`` (or with events before it): the simulation's population.
    Erased members are kept: their events are part of the ledger's history."""
    m = members.c
    stmt = (
        select(m.id, m.external_id, m.enrolled_at)
        .where(
            m.merchant_id == merchant_id,
            m.program_id == program_id,
            or_(
                m.enrolled_at < before,
                m.id.in_(
                    select(events.c.member_id).where(
                        events.c.merchant_id == merchant_id,
                        events.c.program_id == program_id,
                        events.c.occurred_at < before,
                    )
                ),
            ),
        )
        .order_by(m.id)
    )
    return [dict(r) for r in conn.execute(stmt).mappings()]


def prior_rows(
    conn: Connection, *, merchant_id: str, program_id: str, before: datetime
) -> list[dict[str, Any]]:
    """Qualification rows recorded before ``before`` for the program's members (all metrics)."""
    q = qualifications.c
    stmt = (
        select(
            q.member_id,
            q.period_at,
            q.recorded_at,
            q.spend,
            q.status_points,
            q.visits,
            q.status_miles,
            q.segments,
        )
        .join(members, and_(members.c.merchant_id == q.merchant_id, members.c.id == q.member_id))
        .where(q.merchant_id == merchant_id, members.c.program_id == program_id, q.recorded_at < before)
        .order_by(q.member_id, q.recorded_at)
    )
    return [dict(r) for r in conn.execute(stmt).mappings()]


def prior_assignments(conn: Connection, *, merchant_id: str, program_id: str) -> list[dict[str, Any]]:
    t = tier_assignments.c
    stmt = (
        select(t.member_id, t.tier_id, t.starts_at, t.ends_at, t.reason)
        .join(members, and_(members.c.merchant_id == t.merchant_id, members.c.id == t.member_id))
        .where(t.merchant_id == merchant_id, members.c.program_id == program_id)
    )
    return [dict(r) for r in conn.execute(stmt).mappings()]


def prior_earnings(
    conn: Connection, *, merchant_id: str, program_id: str, before: datetime
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Earning events before ``before`` (for per-member caps) and the rule awards they carried
    (for action frequency limits)."""
    e = events.c
    earned = select(e.member_id, e.occurred_at, e.points).where(
        e.merchant_id == merchant_id,
        e.program_id == program_id,
        e.refers_to.is_(None),
        e.occurred_at < before,
        e.points != 0,
    )
    awards = (
        select(e.member_id, e.occurred_at, event_rules.c.rule_id, e.location_id)
        .join(event_rules, and_(event_rules.c.merchant_id == e.merchant_id, event_rules.c.event_id == e.id))
        .where(
            e.merchant_id == merchant_id,
            e.program_id == program_id,
            e.occurred_at < before,
            event_rules.c.points > 0,
        )
    )
    return [dict(r) for r in conn.execute(earned).mappings()], [
        dict(r) for r in conn.execute(awards).mappings()
    ]


def outstanding_at(conn: Connection, *, merchant_id: str, program_id: str, at: datetime) -> int:
    """Points members held (available, pending, reserved) at ``at``."""
    held = ("available", "pending", "reserved")
    stmt = (
        select(func.coalesce(func.sum(postings.c.amount), 0))
        .join(
            members,
            and_(
                members.c.merchant_id == postings.c.merchant_id,
                members.c.id == postings.c.member_id,
                members.c.program_id == program_id,
            ),
        )
        .where(
            postings.c.merchant_id == merchant_id, postings.c.occurred_at < at, postings.c.account.in_(held)
        )
    )
    return int(conn.execute(stmt).scalar() or 0)
