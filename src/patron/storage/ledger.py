"""Ledger persistence: journals, postings, lots and the cached balances, written together."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Connection, and_, bindparam, case, func, insert, or_, select, update

from patron.domain.ledger import Account, Balances, Journal, Lot, balances_from_postings
from patron.storage.db import execute_driver, insert_many, insert_rows, is_postgres
from patron.storage.ids import new_id
from patron.storage.tables import journals, lots, member_balances, postings

BALANCE_COLUMNS = (
    "available",
    "pending",
    "reserved",
    "debt",
    "lifetime_earned",
    "expired",
    "redeemed",
)


# Built once: what every journal runs (building a statement costs more than running it), and its
# SQL for psycopg directly on PostgreSQL.
_ADD_TO_BALANCES = (
    update(member_balances)
    .where(
        member_balances.c.merchant_id == bindparam("b_merchant_id"),
        member_balances.c.member_id == bindparam("b_member_id"),
    )
    .values({c: member_balances.c[c] + bindparam("d_" + c, type_=BigInteger) for c in BALANCE_COLUMNS})
)


@dataclass(frozen=True, slots=True)
class NewLot:
    id: str
    points: int
    earned_at: datetime
    available_from: datetime
    expires_at: datetime | None


def create_balances(conn: Connection, merchant_id: str, member_id: str) -> None:
    conn.execute(
        insert(member_balances),
        dict(merchant_id=merchant_id, member_id=member_id, **dict.fromkeys(BALANCE_COLUMNS, 0)),
    )


def create_balances_many(conn: Connection, merchant_id: str, member_ids: list[str]) -> None:
    insert_many(
        conn,
        member_balances,
        [dict(merchant_id=merchant_id, member_id=m, **dict.fromkeys(BALANCE_COLUMNS, 0)) for m in member_ids],
    )


def cached_balances(conn: Connection, merchant_id: str, member_id: str, *, lock: bool = False) -> Balances:
    """The member's cached balances; with ``lock``, locked for the rest of the transaction
    (PostgreSQL; SQLite's single writer already serialises)."""
    stmt = select(*[member_balances.c[c] for c in BALANCE_COLUMNS]).where(
        member_balances.c.merchant_id == merchant_id, member_balances.c.member_id == member_id
    )
    if lock and conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    return Balances(**conn.execute(stmt).mappings().one())


def find_balances(conn: Connection, merchant_id: str, member_id: str) -> Balances | None:
    """The member's cached balances by primary key, or None when the merchant has no such member."""
    stmt = select(*[member_balances.c[c] for c in BALANCE_COLUMNS]).where(
        member_balances.c.merchant_id == merchant_id, member_balances.c.member_id == member_id
    )
    row = conn.execute(stmt).mappings().first()
    return None if row is None else Balances(**row)


def lock_balances(conn: Connection, merchant_id: str, member_id: str) -> Balances:
    """The member's cached balances, locked for the rest of the transaction."""
    return cached_balances(conn, merchant_id, member_id, lock=True)


def write_journal(
    conn: Connection,
    journal: Journal,
    *,
    merchant_id: str,
    member_id: str,
    program_id: str,
    program_version: int,
    occurred_at: datetime,
    created_at: datetime,
    event_id: str | None = None,
    lot: NewLot | None = None,
) -> str:
    """Append ``journal`` and its postings, create ``lot`` if given, and update the cache."""
    journal_id = new_id("jrn")
    insert_rows(
        conn,
        journals,
        {
            "merchant_id": merchant_id,
            "id": journal_id,
            "member_id": member_id,
            "program_id": program_id,
            "program_version": program_version,
            "kind": str(journal.kind),
            "reason": journal.reason,
            "event_id": event_id,
            "occurred_at": occurred_at,
            "created_at": created_at,
        },
    )
    if lot is not None:
        insert_rows(
            conn,
            lots,
            {
                "merchant_id": merchant_id,
                "id": lot.id,
                "member_id": member_id,
                "journal_id": journal_id,
                "points": lot.points,
                "earned_at": lot.earned_at,
                "available_from": lot.available_from,
                "expires_at": lot.expires_at,
            },
        )
    insert_rows(
        conn,
        postings,
        [
            {
                "merchant_id": merchant_id,
                "id": new_id("pst"),
                "journal_id": journal_id,
                "member_id": member_id,
                "account": str(p.account),
                "amount": p.amount,
                "lot_id": p.lot_id,
                "occurred_at": occurred_at,
            }
            for p in journal.postings
        ],
    )
    delta = balances_from_postings(journal.postings)
    changes = {"d_" + c: getattr(delta, c) for c in BALANCE_COLUMNS}
    if any(changes.values()):
        params = {"b_merchant_id": merchant_id, "b_member_id": member_id, **changes}
        if is_postgres(conn):
            execute_driver(conn, _ADD_TO_BALANCES, params)
        else:
            conn.execute(_ADD_TO_BALANCES, params)
    return journal_id


def lot_balances(
    conn: Connection,
    merchant_id: str,
    member_id: str,
    account: Account,
    *,
    lot_ids: list[str] | None = None,
) -> list[Lot]:
    """Lots with points left in ``account`` (available or pending), any order."""
    remaining = func.sum(postings.c.amount)
    stmt = (
        select(
            lots.c.id,
            lots.c.earned_at,
            lots.c.available_from,
            lots.c.expires_at,
            remaining.label("remaining"),
        )
        .join(
            postings,
            and_(
                postings.c.merchant_id == lots.c.merchant_id,
                postings.c.member_id == lots.c.member_id,
                postings.c.lot_id == lots.c.id,
            ),
        )
        .where(
            lots.c.merchant_id == merchant_id,
            lots.c.member_id == member_id,
            postings.c.member_id == member_id,
            postings.c.account == str(account),
        )
        .group_by(lots.c.id, lots.c.earned_at, lots.c.available_from, lots.c.expires_at)
        .having(remaining > 0)
    )
    if lot_ids is not None:
        stmt = stmt.where(lots.c.id.in_(lot_ids))
    return [Lot(**row) for row in conn.execute(stmt).mappings()]


def balances_as_of(conn: Connection, merchant_id: str, member_id: str, as_of: datetime) -> Balances:
    """Balances recomputed from postings that occurred at or before ``as_of``."""
    negative = postings.c.amount < 0  # manual credits and debits count differently (see Balances)
    stmt = (
        select(postings.c.account, func.sum(postings.c.amount))
        .where(
            postings.c.merchant_id == merchant_id,
            postings.c.member_id == member_id,
            postings.c.occurred_at <= as_of,
        )
        .group_by(postings.c.account, negative)
    )
    return balances_from_postings((str(a), int(s)) for a, s in conn.execute(stmt))


def ledger_page(
    conn: Connection,
    merchant_id: str,
    member_id: str,
    *,
    limit: int,
    after: tuple[datetime, str] | None,
    as_of: datetime | None,
) -> list[dict[str, Any]]:
    """Member-account postings, newest first, ``limit + 1`` rows to tell if there are more."""
    member_accounts = [str(a) for a in (Account.AVAILABLE, Account.PENDING, Account.RESERVED, Account.DEBT)]
    stmt = (
        select(
            postings.c.id,
            postings.c.account,
            postings.c.amount,
            postings.c.occurred_at,
            postings.c.lot_id,
            postings.c.journal_id,
            journals.c.kind,
            journals.c.reason,
            journals.c.event_id,
            journals.c.program_version,
            lots.c.expires_at,
        )
        .join(
            journals,
            and_(
                journals.c.merchant_id == postings.c.merchant_id,
                journals.c.id == postings.c.journal_id,
            ),
        )
        .outerjoin(lots, and_(lots.c.merchant_id == postings.c.merchant_id, lots.c.id == postings.c.lot_id))
        .where(
            postings.c.merchant_id == merchant_id,
            postings.c.member_id == member_id,
            postings.c.account.in_(member_accounts),
        )
        .order_by(postings.c.occurred_at.desc(), postings.c.id.desc())
        .limit(limit + 1)
    )
    if as_of is not None:
        stmt = stmt.where(postings.c.occurred_at <= as_of)
    if after is not None:
        at, pid = after
        stmt = stmt.where(
            or_(postings.c.occurred_at < at, and_(postings.c.occurred_at == at, postings.c.id < pid))
        )
    return [dict(r) for r in conn.execute(stmt).mappings()]


def verify(conn: Connection, merchant_id: str | None = None) -> list[str]:
    """Everything wrong with the books, as sentences; empty when they balance.

    Two set-based checks: every journal's postings sum to zero, and every member's cached
    balances equal the sums of their postings.
    """
    problems: list[str] = []
    unbalanced = (
        select(postings.c.merchant_id, postings.c.journal_id, func.sum(postings.c.amount))
        .group_by(postings.c.merchant_id, postings.c.journal_id)
        .having(func.sum(postings.c.amount) != 0)
    )
    if merchant_id:
        unbalanced = unbalanced.where(postings.c.merchant_id == merchant_id)
    for m, j, s in conn.execute(unbalanced):
        problems.append(f"journal {j} (merchant {m}) sums to {s}, not 0")

    def total(account: str, sign: int = 1) -> Any:
        return sign * func.coalesce(
            func.sum(case((postings.c.account == account, postings.c.amount), else_=0)), 0
        )

    manual_credits = -func.coalesce(
        func.sum(
            case(
                (and_(postings.c.account == "program:adjustments", postings.c.amount < 0), postings.c.amount),
                else_=0,
            )
        ),
        0,
    )
    sums = (
        select(
            postings.c.merchant_id,
            postings.c.member_id,
            total("available").label("available"),
            total("pending").label("pending"),
            total("reserved").label("reserved"),
            total("debt", -1).label("debt"),
            (total("program:issued", -1) + manual_credits).label("lifetime_earned"),
            total("program:expired").label("expired"),
            total("program:redeemed").label("redeemed"),
        )
        .group_by(postings.c.merchant_id, postings.c.member_id)
        .subquery()
    )
    mb = member_balances
    cond = [mb.c[c] != func.coalesce(sums.c[c], 0) for c in BALANCE_COLUMNS]
    stmt = (
        select(
            mb.c.merchant_id,
            mb.c.member_id,
            *[mb.c[c] for c in BALANCE_COLUMNS],
            *[sums.c[c].label("p_" + c) for c in BALANCE_COLUMNS],
        )
        .outerjoin(sums, and_(sums.c.merchant_id == mb.c.merchant_id, sums.c.member_id == mb.c.member_id))
        .where(or_(*cond))
    )
    if merchant_id:
        stmt = stmt.where(mb.c.merchant_id == merchant_id)
    for row in conn.execute(stmt).mappings():
        diffs = ", ".join(
            f"{c} cached {row[c]} != postings {row['p_' + c] or 0}"
            for c in BALANCE_COLUMNS
            if row[c] != (row["p_" + c] or 0)
        )
        problems.append(f"member {row['member_id']} (merchant {row['merchant_id']}): {diffs}")
    negative = select(mb.c.merchant_id, mb.c.member_id).where(
        or_(mb.c.available < 0, mb.c.pending < 0, mb.c.reserved < 0, mb.c.debt < 0)
    )
    if merchant_id:
        negative = negative.where(mb.c.merchant_id == merchant_id)
    for m, mem in conn.execute(negative):
        problems.append(f"member {mem} (merchant {m}) has a negative balance")
    return problems


def lots_of_event(conn: Connection, merchant_id: str, event_id: str) -> list[str]:
    """Ids of the lots that ``event_id``'s journals created."""
    stmt = (
        select(lots.c.id)
        .join(
            journals,
            and_(journals.c.merchant_id == lots.c.merchant_id, journals.c.id == lots.c.journal_id),
        )
        .where(lots.c.merchant_id == merchant_id, journals.c.event_id == event_id)
    )
    return [r[0] for r in conn.execute(stmt)]


def postings_of_member(conn: Connection, merchant_id: str, member_id: str) -> list[dict[str, Any]]:
    stmt = (
        select(
            postings.c.id,
            postings.c.journal_id,
            journals.c.kind,
            journals.c.reason,
            postings.c.account,
            postings.c.amount,
            postings.c.lot_id,
            postings.c.occurred_at,
        )
        .join(
            journals,
            and_(
                journals.c.merchant_id == postings.c.merchant_id,
                journals.c.id == postings.c.journal_id,
            ),
        )
        .where(postings.c.merchant_id == merchant_id, postings.c.member_id == member_id)
        .order_by(postings.c.occurred_at, postings.c.id)
    )
    return [dict(r) for r in conn.execute(stmt).mappings()]


def expiring_lots(
    conn: Connection,
    merchant_id: str,
    *,
    until: datetime,
    after: datetime,
    member_id: str | None = None,
    program_id: str | None = None,
) -> list[dict[str, Any]]:
    """Lots with available points that expire in ``(after, until]``, soonest first."""
    remaining = func.sum(postings.c.amount).label("points")
    stmt = (
        select(lots.c.member_id, lots.c.id.label("lot_id"), lots.c.expires_at, remaining)
        .join(
            postings,
            and_(
                postings.c.merchant_id == lots.c.merchant_id,
                postings.c.member_id == lots.c.member_id,
                postings.c.lot_id == lots.c.id,
            ),
        )
        .where(
            lots.c.merchant_id == merchant_id,
            postings.c.account == "available",
            lots.c.expires_at > after,
            lots.c.expires_at <= until,
        )
        .group_by(lots.c.member_id, lots.c.id, lots.c.expires_at)
        .having(func.sum(postings.c.amount) > 0)
        .order_by(lots.c.expires_at, lots.c.id)
    )
    if member_id is not None:
        stmt = stmt.where(lots.c.member_id == member_id)
    if program_id is not None:
        from patron.storage.tables import members

        stmt = stmt.join(
            members, and_(members.c.merchant_id == lots.c.merchant_id, members.c.id == lots.c.member_id)
        ).where(members.c.program_id == program_id)
    return [dict(r) for r in conn.execute(stmt).mappings()]
