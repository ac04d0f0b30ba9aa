"""Follow-up cases, their timeline, and what the at-risk job found about each member.

* ``cases`` holds each case's current state. ``open_ref`` is the case's source reference while
  the case is not resolved and NULL once it is: the unique constraint on it allows at most one
  unresolved case per member, source and reference, on SQLite and PostgreSQL alike (NULLs never
  collide), without a partial index.
* ``case_events`` is the append-only timeline: rows are inserted, never updated or deleted.
* ``member_risk`` holds one row per member and job time (``as_of``) where the member was at risk,
  and one row when a member at risk stops being so (``at_risk`` false). A member's latest row
  therefore says whether they are at risk now.

The tables live on the shared ``metadata``; migration ``0011_surveys_cases`` creates them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Float,
    ForeignKeyConstraint,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    func,
    insert,
    or_,
    select,
    update,
)

from patron.storage.tables import ID, UTCDateTime, events, members, metadata

cases = Table(
    "cases",
    metadata,
    Column("merchant_id", ID, nullable=False),
    Column("id", ID, nullable=False),
    Column("program_id", ID, nullable=False),
    Column("member_id", ID, nullable=False),
    Column("source", String(20), nullable=False),  # at_risk | survey | manual
    Column("source_ref", String(200)),
    Column("open_ref", String(200)),  # = source_ref while unresolved, else NULL
    Column("status", String(20), nullable=False),  # open | assigned | contacted | resolved
    Column("assignee", ID),  # a console user (users.id) or NULL
    Column("summary", Text, nullable=False),
    Column("opened_at", UTCDateTime(), nullable=False),
    Column("contacted_at", UTCDateTime()),
    Column("contact_channel", String(50)),
    Column("resolved_at", UTCDateTime()),
    Column("resolution", Text),
    Column("updated_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("merchant_id", "id"),
    UniqueConstraint("merchant_id", "member_id", "source", "open_ref"),
    Index(None, "merchant_id", "opened_at"),
    Index(None, "merchant_id", "status", "opened_at"),
    Index(None, "merchant_id", "assignee", "opened_at"),
    ForeignKeyConstraint(["merchant_id", "member_id"], ["members.merchant_id", "members.id"]),
    ForeignKeyConstraint(["merchant_id", "assignee"], ["users.merchant_id", "users.id"]),
)

case_events = Table(
    "case_events",
    metadata,
    Column("merchant_id", ID, nullable=False),
    Column("id", ID, nullable=False),
    Column("case_id", ID, nullable=False),
    Column("action", String(20), nullable=False),  # opened | assigned | commented | ...
    Column("actor", String(100), nullable=False),  # api_key:<id>, user:<id>, job:at-risk, survey:<id>
    Column("text", Text),
    Column("assignee", ID),  # for ``assigned``
    Column("channel", String(50)),  # for ``contacted``
    Column("at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("merchant_id", "id"),
    Index(None, "merchant_id", "case_id", "at"),
    ForeignKeyConstraint(["merchant_id", "case_id"], ["cases.merchant_id", "cases.id"]),
)

member_risk = Table(
    "member_risk",
    metadata,
    Column("merchant_id", ID, nullable=False),
    Column("member_id", ID, nullable=False),
    Column("as_of", UTCDateTime(), nullable=False),
    Column("program_id", ID, nullable=False),
    Column("method", String(20), nullable=False),  # recency | bgnbd
    Column("purchases", BigInteger, nullable=False),
    Column("last_purchase_at", UTCDateTime()),
    Column("recency_days", Integer),
    Column("p_alive", Float),
    Column("at_risk", Boolean, nullable=False),
    Column("case_id", ID),
    Column("created_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("merchant_id", "member_id", "as_of"),
    Index(None, "merchant_id", "program_id", "as_of"),
    ForeignKeyConstraint(["merchant_id", "member_id"], ["members.merchant_id", "members.id"]),
)


# --- cases ----------------------------------------------------------------------------------------


def insert_case(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(insert(cases), values)


def get_case(
    conn: Connection, merchant_id: str, case_id: str, *, lock: bool = False
) -> dict[str, Any] | None:
    stmt = select(cases).where(cases.c.merchant_id == merchant_id, cases.c.id == case_id)
    if lock and conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    row = conn.execute(stmt).mappings().first()
    return dict(row) if row else None


def unresolved_case(
    conn: Connection, merchant_id: str, member_id: str, source: str, source_ref: str
) -> dict[str, Any] | None:
    stmt = select(cases).where(
        cases.c.merchant_id == merchant_id,
        cases.c.member_id == member_id,
        cases.c.source == source,
        cases.c.open_ref == source_ref,
    )
    row = conn.execute(stmt).mappings().first()
    return dict(row) if row else None


def unresolved_by_member(conn: Connection, merchant_id: str, source: str, source_ref: str) -> dict[str, str]:
    """Member id -> id of their unresolved case of ``source`` and ``source_ref``."""
    stmt = select(cases.c.member_id, cases.c.id).where(
        cases.c.merchant_id == merchant_id, cases.c.source == source, cases.c.open_ref == source_ref
    )
    return {str(m): str(c) for m, c in conn.execute(stmt)}


def unresolved_of_source(
    conn: Connection, merchant_id: str, source: str, member_ids: list[str]
) -> dict[str, dict[str, str]]:
    """Member id -> ``{"id", "status"}`` of an unresolved case of ``source``, for ``member_ids``."""
    if not member_ids:
        return {}
    stmt = select(cases.c.member_id, cases.c.id, cases.c.status).where(
        cases.c.merchant_id == merchant_id,
        cases.c.source == source,
        cases.c.open_ref.is_not(None),
        cases.c.member_id.in_(member_ids),
    )
    return {str(m): {"id": str(c), "status": str(s)} for m, c, s in conn.execute(stmt)}


def update_case(conn: Connection, merchant_id: str, case_id: str, **values: Any) -> None:
    conn.execute(
        update(cases).where(cases.c.merchant_id == merchant_id, cases.c.id == case_id).values(**values)
    )


def list_cases(
    conn: Connection,
    merchant_id: str,
    *,
    status: str | None,
    assignee: str | None,
    member_id: str | None,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Cases newest first (by ``opened_at``, then id), after the cursor position ``after``."""
    c = cases.c
    stmt = select(cases).where(c.merchant_id == merchant_id)
    if status is not None:
        stmt = stmt.where(c.status == status)
    if assignee is not None:
        stmt = stmt.where(c.assignee == assignee)
    if member_id is not None:
        stmt = stmt.where(c.member_id == member_id)
    if after is not None:
        at, case_id = after
        stmt = stmt.where(or_(c.opened_at < at, and_(c.opened_at == at, c.id < case_id)))
    stmt = stmt.order_by(c.opened_at.desc(), c.id.desc()).limit(limit)
    return [dict(r) for r in conn.execute(stmt).mappings()]


def insert_case_event(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(insert(case_events), values)


def timeline(conn: Connection, merchant_id: str, case_id: str) -> list[dict[str, Any]]:
    stmt = (
        select(case_events)
        .where(case_events.c.merchant_id == merchant_id, case_events.c.case_id == case_id)
        .order_by(case_events.c.at, case_events.c.id)
    )
    return [dict(r) for r in conn.execute(stmt).mappings()]


# --- at risk --------------------------------------------------------------------------------------


def purchase_stats(
    conn: Connection,
    *,
    merchant_id: str,
    program_id: str,
    as_of: datetime,
    min_purchases: int,
    last_before: datetime | None = None,
    member_ids: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Per active member of the program: purchases recorded before ``as_of`` and the last one's
    time, for members with at least ``min_purchases`` (and, with ``last_before``, whose last
    purchase is before it). One aggregate query over the events."""
    e = events.c
    purchases = func.count().label("purchases")
    last = func.max(e.occurred_at).label("last_purchase_at")
    stmt = (
        select(e.member_id, purchases, last)
        .join(members, and_(members.c.merchant_id == e.merchant_id, members.c.id == e.member_id))
        .where(
            e.merchant_id == merchant_id,
            e.program_id == program_id,
            e.type == "purchase",
            e.refers_to.is_(None),
            e.occurred_at < as_of,
            members.c.status == "active",
        )
        .group_by(e.member_id)
        .having(func.count() >= min_purchases)
        .order_by(e.member_id)
    )
    if last_before is not None:
        stmt = stmt.having(func.max(e.occurred_at) < last_before)
    if member_ids is not None:
        stmt = stmt.where(e.member_id.in_(member_ids))
    return [
        {"member_id": str(m), "purchases": int(n), "last_purchase_at": last_at}
        for m, n, last_at in conn.execute(stmt)
    ]


def count_scanned(
    conn: Connection, *, merchant_id: str, program_id: str, as_of: datetime, min_purchases: int
) -> int:
    """How many active members of the program have at least ``min_purchases`` before ``as_of``."""
    e = events.c
    per_member = (
        select(e.member_id)
        .join(members, and_(members.c.merchant_id == e.merchant_id, members.c.id == e.member_id))
        .where(
            e.merchant_id == merchant_id,
            e.program_id == program_id,
            e.type == "purchase",
            e.refers_to.is_(None),
            e.occurred_at < as_of,
            members.c.status == "active",
        )
        .group_by(e.member_id)
        .having(func.count() >= min_purchases)
        .subquery()
    )
    return int(conn.execute(select(func.count()).select_from(per_member)).scalar() or 0)


def _latest_rows(merchant_id: str, program_id: str, before: datetime | None) -> Any:
    r = member_risk.c
    latest = select(r.member_id, func.max(r.as_of).label("as_of")).where(
        r.merchant_id == merchant_id, r.program_id == program_id
    )
    if before is not None:
        latest = latest.where(r.as_of < before)
    latest_sq = latest.group_by(r.member_id).subquery("latest")
    return (
        select(member_risk)
        .join(latest_sq, and_(latest_sq.c.member_id == r.member_id, latest_sq.c.as_of == r.as_of))
        .where(r.merchant_id == merchant_id)
    )


def at_risk_before(conn: Connection, *, merchant_id: str, program_id: str, as_of: datetime) -> set[str]:
    """Members whose latest row before ``as_of`` says they were at risk."""
    stmt = _latest_rows(merchant_id, program_id, as_of).where(member_risk.c.at_risk.is_(True))
    return {str(row["member_id"]) for row in conn.execute(stmt).mappings()}


def rows_at(conn: Connection, *, merchant_id: str, program_id: str, as_of: datetime) -> set[str]:
    r = member_risk.c
    stmt = select(r.member_id).where(
        r.merchant_id == merchant_id, r.program_id == program_id, r.as_of == as_of
    )
    return {str(m) for m in conn.execute(stmt).scalars()}


def insert_risk(conn: Connection, rows: list[dict[str, Any]]) -> None:
    if rows:
        conn.execute(insert(member_risk), rows)


def current_at_risk(
    conn: Connection, *, merchant_id: str, program_id: str, limit: int
) -> list[dict[str, Any]]:
    """Members whose latest row says they are at risk, longest since a purchase first."""
    r = member_risk.c
    stmt = (
        _latest_rows(merchant_id, program_id, None)
        .where(r.at_risk.is_(True))
        .order_by(r.recency_days.desc(), r.member_id)
        .limit(limit)
    )
    return [dict(row) for row in conn.execute(stmt).mappings()]
