"""Set-based ledger moves for scheduled jobs: a batch of members' due lots, their journals and
postings and the balance cache, in one statement on PostgreSQL (the lots never reach Python).

Journal and posting ids are derived from the lot and the number of postings it holds in the
source account (``jrn_exp_<hash of lot and count>``, computed alike in SQL and in :func:`_name`):
two runs that see a lot in the same state name their journal alike, so a racing run fails on the
primary key instead of moving points twice, while points given back to a lot after it expired (a
cancelled reservation) get a journal of their own when they expire in turn. A second run for the
same time finds nothing due.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, bindparam, func, literal, select, text, tuple_, update

from patron.storage.ids import Ids, new_id
from patron.storage.ledger import BALANCE_COLUMNS
from patron.storage.tables import journals, lots, member_balances, postings


def members_holding(
    conn: Connection,
    *,
    account: str,
    limit: int,
    after: tuple[str, str] | None,
    merchant_id: str | None = None,
    lock: bool = False,
) -> list[tuple[str, str]]:
    """The next ``limit`` (merchant_id, member_id) with points in ``account``, in key order.

    Walks the balance cache by its primary key, so a run over a million members reads each once.
    With ``lock`` (PostgreSQL) their balance rows are locked in key order, as a debit locks them:
    for one merchant as they are read, in the same statement; across merchants afterwards, one
    merchant at a time (:func:`lock_members`: one shard per ``SELECT ... FOR UPDATE`` on Citus).
    """
    column = member_balances.c[account]
    stmt = select(member_balances.c.merchant_id, member_balances.c.member_id).where(column > 0)
    if merchant_id is not None:
        stmt = stmt.where(member_balances.c.merchant_id == merchant_id)
    if after is not None:
        stmt = stmt.where(tuple_(member_balances.c.merchant_id, member_balances.c.member_id) > tuple_(*after))
    stmt = stmt.order_by(member_balances.c.merchant_id, member_balances.c.member_id).limit(limit)
    if lock and conn.dialect.name == "postgresql" and merchant_id is None:
        pairs = [(str(m), str(mem)) for m, mem in conn.execute(stmt)]
        lock_members(conn, pairs)
        return pairs
    if lock and conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import aggregate_order_by

        # locked in key order below, one row per merchant above (a string, not thousands of rows)
        batch = stmt.with_for_update().subquery()
        ids = func.string_agg(batch.c.member_id, aggregate_order_by(literal(_SEP), batch.c.member_id))
        agg = select(batch.c.merchant_id, ids).group_by(batch.c.merchant_id).order_by(batch.c.merchant_id)
        return [(str(m), mem) for m, joined in conn.execute(agg) for mem in joined.split(_SEP)]
    return [(str(m), str(mem)) for m, mem in conn.execute(stmt)]


#: joins ids into one string parameter or column on PostgreSQL (``string_to_array``): an array of
#: thousands of strings costs more to send through the driver than the statement does to run
_SEP = "\x1f"


def _among(conn: Connection, column: Any, values: list[str]) -> Any:
    """``column IN values``; on PostgreSQL one array parameter (``= ANY(%s)``) rather than
    hundreds of expanded bind parameters to render and plan each batch."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy import String, any_
        from sqlalchemy.dialects.postgresql import ARRAY

        return column == any_(bindparam(None, values, type_=ARRAY(String)))
    return column.in_(values)


def lock_members(conn: Connection, pairs: list[tuple[str, str]]) -> None:
    """Lock the members' balance rows in key order (PostgreSQL), as a debit does, in one query."""
    if conn.dialect.name != "postgresql" or not pairs:
        return
    by_merchant: dict[str, list[str]] = {}
    for merchant_id, member_id in sorted(pairs):
        by_merchant.setdefault(merchant_id, []).append(member_id)
    for merchant_id, ids in by_merchant.items():
        conn.execute(
            select(member_balances.c.member_id)
            .where(
                member_balances.c.merchant_id == merchant_id, _among(conn, member_balances.c.member_id, ids)
            )
            .order_by(member_balances.c.member_id)
            .with_for_update()
        ).all()


def due_lots(
    conn: Connection, *, account: str, due_column: str, as_of: datetime, members: list[tuple[str, str]]
) -> list[dict[str, Any]]:
    """Lots of ``members`` due by ``as_of`` with what they still hold in ``account``."""
    if not members:
        return []
    remaining = func.sum(postings.c.amount).label("remaining")
    origin = journals.alias("origin")
    stmt = (
        select(
            lots.c.merchant_id,
            lots.c.id.label("lot_id"),
            lots.c.member_id,
            lots.c[due_column].label("at"),
            origin.c.program_id,
            origin.c.program_version,
            origin.c.event_id,
            remaining,
            func.count().label("moves"),
        )
        .join(
            postings,
            and_(
                postings.c.merchant_id == lots.c.merchant_id,
                postings.c.member_id == lots.c.member_id,
                postings.c.lot_id == lots.c.id,
            ),
        )
        .join(origin, and_(origin.c.merchant_id == lots.c.merchant_id, origin.c.id == lots.c.journal_id))
        .where(lots.c[due_column] <= as_of, postings.c.account == account)
        .where(_among(conn, lots.c.merchant_id, sorted({m for m, _ in members})))
        .where(_among(conn, lots.c.member_id, [m for _, m in members]))
        .group_by(
            lots.c.merchant_id,
            lots.c.id,
            lots.c.member_id,
            lots.c[due_column],
            origin.c.program_id,
            origin.c.program_version,
            origin.c.event_id,
        )
        .having(func.sum(postings.c.amount) > 0)
    )
    wanted = set(members)
    return [dict(r) for r in conn.execute(stmt).mappings() if (r["merchant_id"], r["member_id"]) in wanted]


def move_due(
    conn: Connection,
    *,
    members: list[tuple[str, str]],
    account: str,
    due_column: str,
    as_of: datetime,
    kind: str,
    prefix: str,
    reason: str,
    target: str,
    now: datetime,
) -> tuple[int, int, int]:
    """Move what the lots of ``members`` due by ``as_of`` still hold in ``account`` to ``target``
    (one journal per lot, :func:`move_lots`): (members, lots, points) moved.

    The caller has locked the members: the lots are read after the lock, so a debit that committed
    while we waited for it is seen. On PostgreSQL one statement does it all (the due lots, their
    journals and postings, the balances), so the lots never leave the database.
    """
    if not members:
        return 0, 0, 0
    if conn.dialect.name != "postgresql":
        due = due_lots(conn, account=account, due_column=due_column, as_of=as_of, members=members)
        move_lots(conn, due, kind=kind, prefix=prefix, reason=reason, source=account, target=target, now=now)
        if kind == "expiry":
            announce_expiry(conn, due, reason=reason, now=now)
        return (
            len({(d["merchant_id"], d["member_id"]) for d in due}),
            len(due),
            sum(d["remaining"] for d in due),
        )
    if due_column not in ("expires_at", "available_from", "earned_at"):
        raise ValueError(f"not a lot's time: {due_column!r}")
    announce = _ANNOUNCE_SQL if kind == "expiry" else ""
    sql = text(
        _MOVE_DUE_SQL.format(due=due_column, src=_BALANCE[account], dst=_BALANCE[target], announce=announce)
    )
    by_merchant: dict[str, list[str]] = {}
    for merchant_id, member_id in members:
        by_merchant.setdefault(merchant_id, []).append(member_id)
    moved = [0, 0, 0]
    make = Ids()
    for merchant_id, ids in by_merchant.items():
        row = conn.execute(
            sql,
            {
                "merchant": merchant_id,
                "members": _SEP.join(ids),
                "sep": _SEP,
                "as_of": as_of,
                "account": account,
                "target": target,
                "kind": kind,
                "prefix": prefix,
                "reason": reason,
                "now": now,
                "events": _SEP.join(map(make, ["evt"] * len(ids))) if announce else "",  # one a member
            },
        ).one()
        moved = [moved[i] + int(row[i]) for i in range(3)]
    return moved[0], moved[1], moved[2]


#: :func:`move_due` on PostgreSQL, for one merchant's members: their due lots with what they hold
#: (a range of the lots' ``(merchant_id, member_id, ...)`` index, its ends taken in the database's
#: collation, filtered to the locked members), then, in data-modifying CTEs, their journals and
#: postings (named as :func:`_name` names them) and the balances. The posting -> journal foreign
#: key is checked at the statement's end. Returns (members, lots, points).
_MOVE_DUE_SQL = """
WITH batch AS (
    SELECT unnest(string_to_array(:members, :sep)) AS member_id
), held AS (
    SELECT l.merchant_id, l.id AS lot_id, l.member_id, l.journal_id, l.{due} AS at,
           CAST(sum(p.amount) AS bigint) AS remaining, count(*) AS moves
    FROM lots l
    JOIN postings p ON p.merchant_id = l.merchant_id AND p.member_id = l.member_id AND p.lot_id = l.id
    WHERE l.merchant_id = :merchant
      AND l.member_id BETWEEN (SELECT min(member_id) FROM batch) AND (SELECT max(member_id) FROM batch)
      AND l.member_id = ANY(string_to_array(:members, :sep)) AND l.{due} <= :as_of AND p.account = :account
    GROUP BY l.merchant_id, l.id
    HAVING sum(p.amount) > 0
), due AS (
    SELECT h.merchant_id, h.lot_id, h.member_id, h.at, h.remaining, o.program_id, o.program_version,
           o.event_id, :prefix || '_' || substr(md5(h.lot_id || ':' || h.moves), 1, 26) AS name
    FROM held h
    JOIN journals o ON o.merchant_id = h.merchant_id AND o.id = h.journal_id
), j AS (
    INSERT INTO journals (merchant_id, id, member_id, program_id, program_version, kind, reason,
        event_id, occurred_at, created_at)
    SELECT :merchant, 'jrn_' || name, member_id, program_id, program_version, :kind, :reason,
           event_id, at, :now
    FROM due
), ps AS (
    INSERT INTO postings (merchant_id, id, journal_id, member_id, account, amount, lot_id, occurred_at)
    SELECT :merchant, 'pst_' || d.name || '_' || s.side, 'jrn_' || d.name, d.member_id, s.account,
           s.sign * d.remaining, d.lot_id, d.at
    FROM due d CROSS JOIN (VALUES ('a', CAST(:account AS text), -1), ('b', CAST(:target AS text), 1))
         AS s(side, account, sign)
), totals AS (
    SELECT member_id, sum(remaining) AS total, count(*) AS lots, max(at) AS at
    FROM due GROUP BY member_id
), u AS (
    UPDATE member_balances mb SET {src} = mb.{src} - t.total, {dst} = mb.{dst} + t.total
    FROM totals t
    WHERE mb.merchant_id = :merchant AND mb.member_id = t.member_id
    RETURNING mb.member_id, mb.available, mb.pending, mb.reserved, mb.debt, mb.lifetime_earned,
              mb.expired, mb.redeemed, t.total, t.lots, t.at
){announce}
SELECT (SELECT count(*) FROM totals), (SELECT count(*) FROM due), (SELECT coalesce(sum(total), 0) FROM totals)
"""

#: the ``points.expired`` business event of each member of :data:`_MOVE_DUE_SQL`, in its
#: statement (the member's next number in their stream; the member is locked; the ids made in
#: Python, one a member of the batch, time-ordered as every id), as :func:`announce_expiry`
#: writes it elsewhere
_ANNOUNCE_SQL = """, ev AS (
    INSERT INTO outbox_events (merchant_id, id, type, member_id, stream, seq, occurred_at, created_at, data)
    SELECT :merchant, n.id, 'points.expired', x.member_id, x.member_id,
           coalesce((SELECT max(o.seq) FROM outbox_events o
                     WHERE o.merchant_id = :merchant AND o.stream = x.member_id), 0) + 1,
           x.at, :now,
           json_build_object(
               'points', x.total, 'lots', x.lots, 'reason', CAST(:reason AS text),
               'balances', json_build_object(
                   'available', x.available, 'pending', x.pending, 'reserved', x.reserved,
                   'debt', x.debt, 'lifetime_earned', x.lifetime_earned, 'expired', x.expired,
                   'redeemed', x.redeemed))
    FROM (SELECT u.*, row_number() OVER (ORDER BY u.member_id) AS k FROM u) x
    JOIN unnest(string_to_array(:events, :sep)) WITH ORDINALITY AS n(id, k) ON n.k = x.k
)"""


def move_lots(
    conn: Connection,
    due: list[dict[str, Any]],
    *,
    kind: str,
    prefix: str,
    reason: str,
    source: str,
    target: str,
    now: datetime,
) -> None:
    """One journal per lot of ``due`` (rows as :func:`due_lots` gives them) moving its remaining
    points from ``source`` to ``target``, and the members' cached balances, in bulk."""
    if not due:
        return
    names = [_name(prefix, d["lot_id"], int(d.get("moves", 0))) for d in due]
    conn.execute(
        journals.insert(),
        [
            {
                "merchant_id": d["merchant_id"],
                "id": f"jrn_{name}",
                "member_id": d["member_id"],
                "program_id": d["program_id"],
                "program_version": d["program_version"],
                "kind": kind,
                "reason": reason,
                "event_id": d["event_id"],
                "occurred_at": d["at"],
                "created_at": now,
            }
            for d, name in zip(due, names, strict=True)
        ],
    )
    conn.execute(
        postings.insert(),
        [
            {
                "merchant_id": d["merchant_id"],
                "id": f"pst_{name}_{side}",
                "journal_id": f"jrn_{name}",
                "member_id": d["member_id"],
                "account": account,
                "amount": sign * int(d["remaining"]),
                "lot_id": d["lot_id"],
                "occurred_at": d["at"],
            }
            for d, name in zip(due, names, strict=True)
            for side, account, sign in (("a", source, -1), ("b", target, 1))
        ],
    )
    totals: dict[tuple[str, str], int] = {}
    for d in due:
        key = (d["merchant_id"], d["member_id"])
        totals[key] = totals.get(key, 0) + int(d["remaining"])
    src, dst = _BALANCE[source], _BALANCE[target]
    conn.execute(
        update(member_balances)
        .where(
            member_balances.c.merchant_id == bindparam("m"),
            member_balances.c.member_id == bindparam("mem"),
        )
        .values({src: member_balances.c[src] - bindparam("x"), dst: member_balances.c[dst] + bindparam("x")}),
        [{"m": m, "mem": mem, "x": x} for (m, mem), x in totals.items()],
    )


def announce_expiry(conn: Connection, due: list[dict[str, Any]], *, reason: str, now: datetime) -> None:
    """A ``points.expired`` business event for each member of ``due`` (lots just expired by
    :func:`move_lots`; the members are locked): the points and lots, the latest expiry time and
    the balances after it, as :data:`_ANNOUNCE_SQL` writes it."""
    from patron.storage.outbox import append_events

    if not due:
        return
    per: dict[tuple[str, str], dict[str, Any]] = {}
    for d in due:
        key = (d["merchant_id"], d["member_id"])
        seen = per.setdefault(key, {"points": 0, "lots": 0, "at": d["at"]})
        seen["points"] += int(d["remaining"])
        seen["lots"] += 1
        seen["at"] = max(seen["at"], d["at"])
    after: dict[tuple[str, str], dict[str, int]] = {}
    for merchant_id in {m for m, _ in per}:  # the balances after the expiry, a query a merchant
        found = conn.execute(
            select(member_balances.c.member_id, *[member_balances.c[c] for c in BALANCE_COLUMNS]).where(
                member_balances.c.merchant_id == merchant_id,
                _among(conn, member_balances.c.member_id, [m for k, m in per if k == merchant_id]),
            )
        )
        after.update(
            {(merchant_id, r[0]): dict(zip(BALANCE_COLUMNS, map(int, r[1:]), strict=True)) for r in found}
        )
    rows: dict[str, list[dict[str, Any]]] = {}
    for (merchant_id, member_id), seen in per.items():
        rows.setdefault(merchant_id, []).append(
            {
                "merchant_id": merchant_id,
                "id": new_id("evt"),
                "type": "points.expired",
                "member_id": member_id,
                "stream": member_id,
                "occurred_at": seen["at"],
                "created_at": now,
                "data": {
                    "points": seen["points"],
                    "lots": seen["lots"],
                    "reason": reason,
                    "balances": after[(merchant_id, member_id)],
                },
                "fanned_out_at": None,
            }
        )
    for merchant_rows in rows.values():
        append_events(conn, merchant_rows)


#: the balance cache's column for each account a job moves points between
_BALANCE = {"available": "available", "pending": "pending", "program:expired": "expired"}


def _name(prefix: str, lot_id: str, moves: int) -> str:
    """``<prefix>_<26 hex>``: the same for the same lot in the same state. MD5 (as a name, not
    for security) because PostgreSQL computes the same in SQL (:data:`_MOVE_DUE_SQL`)."""
    digest = hashlib.md5(f"{lot_id}:{moves}".encode(), usedforsecurity=False).hexdigest()
    return f"{prefix}_{digest[:26]}"


def inactive_members(
    conn: Connection,
    *,
    merchant_id: str,
    program_id: str,
    cutoff: datetime,
    among: list[str] | None = None,
) -> list[tuple[str, datetime]]:
    """Members of a program (``among`` these, if given) with available points whose last
    activity is at or before ``cutoff``, in member id order, with that last activity."""
    from patron.storage.tables import events, members

    last = (
        select(events.c.member_id, func.max(events.c.occurred_at).label("last"))
        .where(
            events.c.merchant_id == merchant_id,
            events.c.program_id == program_id,
            events.c.refers_to.is_(None),
        )
        .group_by(events.c.member_id)
        .subquery()
    )
    stmt = (
        select(members.c.id, func.coalesce(last.c.last, members.c.enrolled_at))
        .select_from(members)
        .join(
            member_balances,
            and_(
                member_balances.c.merchant_id == members.c.merchant_id,
                member_balances.c.member_id == members.c.id,
            ),
        )
        .outerjoin(last, last.c.member_id == members.c.id)
        .where(
            members.c.merchant_id == merchant_id,
            members.c.program_id == program_id,
            member_balances.c.available > 0,
            func.coalesce(last.c.last, members.c.enrolled_at) <= cutoff,
        )
        .order_by(members.c.id)
    )
    if among is not None:
        stmt = stmt.where(_among(conn, members.c.id, among))
    return [(str(m), at) for m, at in conn.execute(stmt)]


def all_programs(conn: Connection, merchant_id: str | None) -> list[tuple[str, str]]:
    from patron.storage.tables import programs

    stmt = select(programs.c.merchant_id, programs.c.id).order_by(programs.c.merchant_id, programs.c.id)
    if merchant_id is not None:
        stmt = stmt.where(programs.c.merchant_id == merchant_id)
    return [(str(m), str(p)) for m, p in conn.execute(stmt)]
