"""Set-based ledger moves for scheduled jobs: due lots in one query, journals in bulk.

Journal and posting ids are derived from the lot and the number of postings it holds in the
source account (``jrn_exp_<hash of lot and count>``): two runs that see a lot in the same state
name their journal alike, so a racing run fails on the primary key instead of moving points
twice, while points given back to a lot after it expired (a cancelled reservation) get a journal
of their own when they expire in turn. A second run for the same time finds nothing due.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, bindparam, func, select, tuple_, update

from patron.storage.ingest import insert_many
from patron.storage.tables import journals, lots, member_balances, postings


def members_holding(
    conn: Connection,
    *,
    account: str,
    limit: int,
    after: tuple[str, str] | None,
    merchant_id: str | None = None,
) -> list[tuple[str, str]]:
    """The next ``limit`` (merchant_id, member_id) with points in ``account``, in key order.

    Walks the balance cache by its primary key, so a run over a million members reads each once.
    """
    column = member_balances.c[account]
    stmt = select(member_balances.c.merchant_id, member_balances.c.member_id).where(column > 0)
    if merchant_id is not None:
        stmt = stmt.where(member_balances.c.merchant_id == merchant_id)
    if after is not None:
        stmt = stmt.where(tuple_(member_balances.c.merchant_id, member_balances.c.member_id) > tuple_(*after))
    stmt = stmt.order_by(member_balances.c.merchant_id, member_balances.c.member_id).limit(limit)
    return [(str(m), str(mem)) for m, mem in conn.execute(stmt)]


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
    """One journal per lot moving its remaining points from ``source`` to ``target``, in bulk."""
    if not due:
        return
    names = {d["lot_id"]: _name(prefix, d["lot_id"], int(d.get("moves", 0))) for d in due}
    insert_many(
        conn,
        journals,
        [
            {
                "merchant_id": d["merchant_id"],
                "id": f"jrn_{names[d['lot_id']]}",
                "member_id": d["member_id"],
                "program_id": d["program_id"],
                "program_version": d["program_version"],
                "kind": kind,
                "reason": reason,
                "event_id": d["event_id"],
                "occurred_at": d["at"],
                "created_at": now,
            }
            for d in due
        ],
    )
    rows = []
    for d in due:
        for side, account, amount in (("a", source, -d["remaining"]), ("b", target, d["remaining"])):
            rows.append(
                {
                    "merchant_id": d["merchant_id"],
                    "id": f"pst_{names[d['lot_id']]}_{side}",
                    "journal_id": f"jrn_{names[d['lot_id']]}",
                    "member_id": d["member_id"],
                    "account": account,
                    "amount": amount,
                    "lot_id": d["lot_id"],
                    "occurred_at": d["at"],
                }
            )
    insert_many(conn, postings, rows)
    totals: dict[tuple[str, str], int] = {}
    for d in due:
        key = (d["merchant_id"], d["member_id"])
        totals[key] = totals.get(key, 0) + int(d["remaining"])
    columns = {"available": "available", "pending": "pending", "program:expired": "expired"}
    src, dst = columns[source], columns[target]
    conn.execute(
        update(member_balances)
        .where(
            member_balances.c.merchant_id == bindparam("m"),
            member_balances.c.member_id == bindparam("mem"),
        )
        .values({src: member_balances.c[src] - bindparam("x"), dst: member_balances.c[dst] + bindparam("x")}),
        [{"m": m, "mem": mem, "x": x} for (m, mem), x in totals.items()],
    )


def _name(prefix: str, lot_id: str, moves: int) -> str:
    """``<prefix>_<26 hex>``: the same for the same lot in the same state."""
    return f"{prefix}_{hashlib.blake2b(f'{lot_id}:{moves}'.encode(), digest_size=13).hexdigest()}"


def inactive_members(
    conn: Connection, *, merchant_id: str, program_id: str, cutoff: datetime
) -> list[tuple[str, datetime]]:
    """Members of a program with available points whose last activity is at or before ``cutoff``."""
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
    return [(str(m), at) for m, at in conn.execute(stmt)]


def all_programs(conn: Connection, merchant_id: str | None) -> list[tuple[str, str]]:
    from patron.storage.tables import programs

    stmt = select(programs.c.merchant_id, programs.c.id).order_by(programs.c.merchant_id, programs.c.id)
    if merchant_id is not None:
        stmt = stmt.where(programs.c.merchant_id == merchant_id)
    return [(str(m), str(p)) for m, p in conn.execute(stmt)]
