"""Events and their per-line, per-rule attribution; qualification rows for tiers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Connection, and_, bindparam, func, select, union_all

from patron.domain.ledger import Balances
from patron.storage.db import driver_rows, execute_driver, insert_rows, is_postgres, pipelined
from patron.storage.ledger import BALANCE_COLUMNS
from patron.storage.tables import (
    UTCDateTime,
    event_lines,
    event_rules,
    events,
    member_balances,
    members,
    program_versions,
    qualifications,
    tier_assignments,
    tier_checkpoints,
)
from patron.storage.tiers import (
    ASSIGNMENTS_OF,
    CHECKPOINT_OF,
    assignments_of,
    checkpoint_of,
    latest_checkpoint,
)

# Built once: the statements every event runs (building a statement costs more than running it).
_GET_EVENT = select(events).where(
    events.c.merchant_id == bindparam("merchant_id"), events.c.external_id == bindparam("external_id")
)
_LATEST_VERSION = (
    select(func.max(program_versions.c.version))
    .where(
        program_versions.c.merchant_id == members.c.merchant_id,
        program_versions.c.program_id == members.c.program_id,
    )
    .scalar_subquery()
)
_MEMBER_FOR_EVENT = (
    select(
        members,
        *[member_balances.c[c].label("balance_" + c) for c in BALANCE_COLUMNS],
        _LATEST_VERSION.label("program_latest_version"),
    )
    .join(
        member_balances,
        and_(
            member_balances.c.merchant_id == members.c.merchant_id,
            member_balances.c.member_id == members.c.id,
        ),
    )
    .where(members.c.merchant_id == bindparam("merchant_id"), members.c.id == bindparam("member_id"))
    .with_for_update(of=member_balances)  # PostgreSQL; SQLite's single writer already serialises
)
_MEMBER_COLUMNS = tuple(c.name for c in members.c)


def get_event(conn: Connection, merchant_id: str, external_id: str) -> dict[str, Any] | None:
    row = (
        conn.execute(_GET_EVENT, {"merchant_id": merchant_id, "external_id": external_id}).mappings().first()
    )
    return dict(row) if row else None


_EVENT_COLUMNS = [c.name for c in events.c]
_ASSIGNMENT_COLUMNS = [c.name for c in tier_assignments.c]
_CHECKPOINT_COLUMNS = [c.name for c in tier_checkpoints.c]


def event_inputs(
    conn: Connection,
    merchant_id: str,
    member_id: str,
    external_id: str | None,
    *,
    column: str | None,
    assignments: bool,
    key: str = "",
    as_of: datetime | None = None,
) -> tuple[
    dict[str, Any] | None,
    list[tuple[datetime, datetime, int, str]],
    list[dict[str, Any]],
    dict[str, Any] | None,
]:
    """What applying an event to a member (whose balances are locked) reads: the event already
    recorded under ``external_id`` (a replay; not looked up for None), the member's
    qualification rows with a value in ``column`` from their tier checkpoint under ``key`` at
    ``as_of`` on (as :func:`qualification_rows_since_checkpoint` reads them; none when
    ``column`` is None), with ``assignments`` their tier assignments (as
    ``storage.tiers.assignments_of`` reads them), and the checkpoint (None without one, or
    without ``column``). One round trip on PostgreSQL (psycopg's pipeline: four queries sent at
    once)."""
    at = as_of or datetime.now(UTC)
    params = {"merchant_id": merchant_id, "member_id": member_id, "external_id": external_id}
    if not is_postgres(conn):
        return (
            get_event(conn, merchant_id, external_id) if external_id is not None else None,
            qualification_rows_since_checkpoint(conn, merchant_id, member_id, column, key, at)
            if column
            else [],
            assignments_of(conn, merchant_id, member_id) if assignments else [],
            checkpoint_of(conn, merchant_id, member_id, key, at) if column else None,
        )
    assert column is None or column in qualifications.c
    chosen = _since({**params, "key": key, "as_of": at})
    with pipelined(conn):
        found = execute_driver(conn, _GET_EVENT, params) if external_id is not None else None
        rows = execute_driver(conn, _since_checkpoint_stmt(column), chosen) if column else None
        given = execute_driver(conn, ASSIGNMENTS_OF, params) if assignments else None
        checkpoint = execute_driver(conn, CHECKPOINT_OF, chosen) if column else None
    existing = driver_rows(conn, events, _EVENT_COLUMNS, found.fetchall()) if found is not None else []
    quals = []
    if rows is not None:
        utc, dialect = UTCDateTime().process_result_value, conn.dialect
        quals = cast(
            list[tuple[datetime, datetime, int, str]],  # both times are NOT NULL
            [(utc(r[0], dialect), utc(r[1], dialect), int(r[2]), str(r[3])) for r in rows.fetchall() if r[2]],
        )  # times as the column type reads them (aware UTC), without a dict a row: members read thousands
    held = (
        driver_rows(conn, tier_assignments, _ASSIGNMENT_COLUMNS, given.fetchall())
        if given is not None
        else []
    )
    stored = (
        driver_rows(conn, tier_checkpoints, _CHECKPOINT_COLUMNS, checkpoint.fetchall())
        if checkpoint is not None
        else []
    )
    return (existing[0] if existing else None), quals, held, (stored[0] if stored else None)


def member_for_event(
    conn: Connection, merchant_id: str, member_id: str
) -> tuple[dict[str, Any], Balances, int | None] | None:
    """The member (as ``storage.members.get_member`` reads it), their cached balances, locked for
    the rest of the transaction, and the latest version number of their program, in one round
    trip; None when the merchant has no such member."""
    params = {"merchant_id": merchant_id, "member_id": member_id}
    if is_postgres(conn):
        row = execute_driver(conn, _MEMBER_FOR_EVENT, params).fetchone()
        if row is None:
            return None
        n = len(_MEMBER_COLUMNS)
        member = driver_rows(conn, members, list(_MEMBER_COLUMNS), [row[:n]])[0]
        balances = Balances(**dict(zip(BALANCE_COLUMNS, row[n:-1], strict=True)))
        latest = row[-1]
    else:
        found = conn.execute(_MEMBER_FOR_EVENT, params).first()
        if found is None:
            return None
        m = found._mapping
        member = {name: m[name] for name in _MEMBER_COLUMNS}
        balances = Balances(**{c: m["balance_" + c] for c in BALANCE_COLUMNS})
        latest = m["program_latest_version"]
    return member, balances, None if latest is None else int(latest)


def insert_event(
    conn: Connection,
    *,
    row: dict[str, Any],
    lines: list[dict[str, Any]],
    rules: list[dict[str, Any]],
) -> None:
    insert_rows(conn, events, row)
    if lines:
        insert_rows(
            conn,
            event_lines,
            [{"merchant_id": row["merchant_id"], "event_id": row["id"], **ln} for ln in lines],
        )
    if rules:
        insert_rows(
            conn,
            event_rules,
            [{"merchant_id": row["merchant_id"], "event_id": row["id"], **r} for r in rules],
        )


def insert_qualification(conn: Connection, *, merchant_id: str, event_id: str, **values: Any) -> None:
    insert_rows(conn, qualifications, dict(merchant_id=merchant_id, event_id=event_id, **values))


def lines_of(conn: Connection, merchant_id: str, event_id: str) -> list[dict[str, Any]]:
    stmt = select(event_lines).where(
        event_lines.c.merchant_id == merchant_id, event_lines.c.event_id == event_id
    )
    return [dict(r) for r in conn.execute(stmt).mappings()]


def reversed_before(conn: Connection, merchant_id: str, event_id: str) -> bool:
    """Whether a refund or cancel of ``event_id`` was recorded."""
    stmt = select(events.c.id).where(events.c.merchant_id == merchant_id, events.c.refers_to == event_id)
    return conn.execute(stmt.limit(1)).first() is not None


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


_QUALIFICATION_ROWS: dict[str, Any] = {}


def qualification_rows(
    conn: Connection, merchant_id: str, member_id: str, column: str
) -> list[tuple[datetime, datetime, int, str]]:
    """(period_at, recorded_at, value, event id) of the member's rows with a value in ``column``."""
    rows = conn.execute(_qualification_stmt(column), {"merchant_id": merchant_id, "member_id": member_id})
    return [(a, b, int(v), str(e)) for a, b, v, e in rows if v]


_SINCE_CHECKPOINT: dict[str, Any] = {}
_NO_CHECKPOINT = datetime.min.replace(tzinfo=UTC)  # a period start before every row


def qualification_rows_since_checkpoint(
    conn: Connection, merchant_id: str, member_id: str, column: str, key: str, as_of: datetime
) -> list[tuple[datetime, datetime, int, str]]:
    """As :func:`qualification_rows`, but from the member's tier checkpoint that
    ``storage.tiers.checkpoint_of`` finds (under ``key``, holding at ``as_of``) on: the rows of
    its period and later, and earlier rows recorded after it saw them (rows that make it void);
    every row when there is none."""
    params = _since({"merchant_id": merchant_id, "member_id": member_id, "key": key, "as_of": as_of})
    rows = conn.execute(_since_checkpoint_stmt(column), params)
    return [(a, b, int(v), str(e)) for a, b, v, e in rows if v]


def _since(params: dict[str, Any]) -> dict[str, Any]:
    return {**params, "no_checkpoint": _NO_CHECKPOINT}


def _since_checkpoint_stmt(column: str) -> Any:
    stmt = _SINCE_CHECKPOINT.get(column)
    if stmt is None:
        q, cp = qualifications.c, tier_checkpoints.c

        def checkpoint(name: str) -> Any:  # of the row CHECKPOINT_OF chooses
            return latest_checkpoint(cp[name]).scalar_subquery()

        start = func.coalesce(checkpoint("period_start"), bindparam("no_checkpoint", type_=UTCDateTime()))
        of_member = (q.merchant_id == bindparam("merchant_id"), q.member_id == bindparam("member_id"))
        cols = (q.period_at, q.recorded_at, q[column], q.event_id)
        recent = select(*cols).where(*of_member, q.period_at >= start)
        late = select(*cols).where(
            *of_member, q.period_at < checkpoint("period_start"), q.recorded_at > checkpoint("seen_upto")
        )
        both = union_all(recent, late).subquery()
        stmt = _SINCE_CHECKPOINT[column] = select(both).order_by(both.c.recorded_at, both.c.event_id)
    return stmt


def _qualification_stmt(column: str) -> Any:
    """The member's rows of ``column``, oldest recorded first (built once per column)."""
    stmt = _QUALIFICATION_ROWS.get(column)
    if stmt is None:
        stmt = _QUALIFICATION_ROWS[column] = (
            select(
                qualifications.c.period_at,
                qualifications.c.recorded_at,
                qualifications.c[column],
                qualifications.c.event_id,
            )
            .where(
                qualifications.c.merchant_id == bindparam("merchant_id"),
                qualifications.c.member_id == bindparam("member_id"),
            )
            .order_by(qualifications.c.recorded_at, qualifications.c.event_id)
        )
    return stmt


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
    ``location_id`` when given), not counting those cancelled since (a cancelled visit leaves the
    day's visit to earn again)."""
    canceller = events.alias("canceller")
    cancelled = select(canceller.c.refers_to).where(
        canceller.c.merchant_id == merchant_id,
        canceller.c.member_id == member_id,
        canceller.c.type == "cancel",
        canceller.c.refers_to.is_not(None),
    )
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
            events.c.id.not_in(cancelled),
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
