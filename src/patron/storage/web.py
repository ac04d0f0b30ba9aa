"""Storage for the web interfaces: console users, browser sessions, one-time login links, and the
read-only queries behind the admin dashboard, member search and the member portal.

Secrets are never stored: sessions and login links keep the SHA-256 of their token. Lookups by
token hash and login by email are global (a browser does not say which merchant it belongs to),
so those columns carry their own unique index beside the ``merchant_id``-led primary key, as
``api_keys.key_hash`` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    ForeignKeyConstraint,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    and_,
    case,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)

from patron.storage.tables import (
    ID,
    UTCDateTime,
    events,
    journals,
    member_balances,
    members,
    metadata,
    postings,
    redemptions,
)

users = Table(
    "users",
    metadata,
    Column("merchant_id", ID, nullable=False),
    Column("id", ID, nullable=False),
    Column("email", String(320), nullable=False),
    Column("email_key", String(320), nullable=False, unique=True),  # one login form for all merchants
    Column("password_hash", String(200), nullable=False),
    Column("role", String(20), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("failed_logins", Integer, nullable=False, default=0),
    Column("locked_until", UTCDateTime()),
    Column("last_login_at", UTCDateTime()),
    PrimaryKeyConstraint("merchant_id", "id"),
    ForeignKeyConstraint(["merchant_id"], ["merchants.id"]),
)

web_sessions = Table(
    "web_sessions",
    metadata,
    Column("merchant_id", ID, nullable=False),
    Column("id", ID, nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("kind", String(10), nullable=False),  # "user" (console, POS) or "member" (portal)
    Column("subject_id", ID, nullable=False),
    Column("csrf", String(64), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("merchant_id", "id"),
    Index(None, "merchant_id", "subject_id"),
    Index(None, "expires_at"),
)

login_links = Table(
    "login_links",
    metadata,
    Column("merchant_id", ID, nullable=False),
    Column("id", ID, nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("member_id", ID, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
    Column("used_at", UTCDateTime()),
    PrimaryKeyConstraint("merchant_id", "id"),
    Index(None, "merchant_id", "member_id"),
    # No foreign key to members: a reference table cannot point into sharded tables (Citus); the
    # service checks the member when the link is made.
)


# --- users -----------------------------------------------------------------------------------


def insert_user(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(insert(users), values)


def user_by_email(conn: Connection, email_key: str) -> dict[str, Any] | None:
    row = conn.execute(select(users).where(users.c.email_key == email_key)).mappings().first()
    return dict(row) if row else None


def get_user(conn: Connection, merchant_id: str, user_id: str) -> dict[str, Any] | None:
    stmt = select(users).where(users.c.merchant_id == merchant_id, users.c.id == user_id)
    row = conn.execute(stmt).mappings().first()
    return dict(row) if row else None


def update_user(conn: Connection, merchant_id: str, user_id: str, **values: Any) -> None:
    conn.execute(
        update(users).where(users.c.merchant_id == merchant_id, users.c.id == user_id).values(**values)
    )


def count_failure(conn: Connection, merchant_id: str, user_id: str) -> int:
    """Add one failed login (atomically, so parallel guesses all count); the new count."""
    conn.execute(
        update(users)
        .where(users.c.merchant_id == merchant_id, users.c.id == user_id)
        .values(failed_logins=users.c.failed_logins + 1)
    )
    stmt = select(users.c.failed_logins).where(users.c.merchant_id == merchant_id, users.c.id == user_id)
    return int(conn.execute(stmt).scalar_one())


# --- sessions --------------------------------------------------------------------------------


def insert_session(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(insert(web_sessions), values)


def session_by_hash(conn: Connection, token_hash: str) -> dict[str, Any] | None:
    row = conn.execute(select(web_sessions).where(web_sessions.c.token_hash == token_hash)).mappings().first()
    return dict(row) if row else None


def delete_session(conn: Connection, token_hash: str) -> None:
    conn.execute(delete(web_sessions).where(web_sessions.c.token_hash == token_hash))


def purge_sessions(conn: Connection, now: datetime) -> int:
    return int(conn.execute(delete(web_sessions).where(web_sessions.c.expires_at <= now)).rowcount or 0)


# --- login links -----------------------------------------------------------------------------


def insert_login_link(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(insert(login_links), values)


def login_link_by_hash(conn: Connection, token_hash: str) -> dict[str, Any] | None:
    row = conn.execute(select(login_links).where(login_links.c.token_hash == token_hash)).mappings().first()
    return dict(row) if row else None


def use_login_link(conn: Connection, merchant_id: str, link_id: str, at: datetime) -> bool:
    """Mark the link used; False if it already was (two clicks racing: only one wins)."""
    result = conn.execute(
        update(login_links)
        .where(
            login_links.c.merchant_id == merchant_id,
            login_links.c.id == link_id,
            login_links.c.used_at.is_(None),
        )
        .values(used_at=at)
    )
    return bool(result.rowcount)


def merchant_of_member(conn: Connection, member_id: str) -> str | None:
    """The merchant a member id belongs to (ids are unique across merchants); for operators' tools."""
    found = conn.execute(select(members.c.merchant_id).where(members.c.id == member_id).limit(2)).all()
    return str(found[0][0]) if len(found) == 1 else None


# --- console reads ---------------------------------------------------------------------------


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def search_members(
    conn: Connection,
    merchant_id: str,
    *,
    text: str,
    phone: str | None,
    digits: str | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Members whose name or email contains ``text`` (any case), whose phone is ``phone``, whose
    card number or external id equals ``digits``/``text``; with their balances."""
    needle = _like(text.lower())
    match = [
        func.lower(members.c.name).like(needle, escape="\\"),
        members.c.email_key.like(needle, escape="\\"),
        members.c.external_id == text,
    ]
    if phone:
        match.append(members.c.phone == phone)
    if digits:
        match.append(members.c.card_number == digits)
    stmt = (
        select(
            members.c.id,
            members.c.name,
            members.c.email,
            members.c.phone,
            members.c.card_number,
            members.c.external_id,
            members.c.status,
            members.c.enrolled_at,
            member_balances.c.available,
            member_balances.c.pending,
        )
        .join(
            member_balances,
            and_(
                member_balances.c.merchant_id == members.c.merchant_id,
                member_balances.c.member_id == members.c.id,
            ),
        )
        .where(members.c.merchant_id == merchant_id, or_(*match))
        .order_by(members.c.name, members.c.id)
        .limit(limit)
    )
    return [dict(r) for r in conn.execute(stmt).mappings()]


def member_counts(conn: Connection, merchant_id: str, *, active_since: datetime) -> dict[str, int]:
    """Members by status, and how many active ones had an event since ``active_since``."""
    by_status = {
        str(status): int(n)
        for status, n in conn.execute(
            select(members.c.status, func.count())
            .where(members.c.merchant_id == merchant_id)
            .group_by(members.c.status)
        )
    }
    recent = (
        select(events.c.member_id)
        .where(events.c.merchant_id == merchant_id, events.c.occurred_at >= active_since)
        .distinct()
        .subquery()
    )
    active = conn.execute(
        select(func.count())
        .select_from(members)
        .join(recent, recent.c.member_id == members.c.id)
        .where(members.c.merchant_id == merchant_id, members.c.status == "active")
    ).scalar_one()
    return {"total": sum(by_status.values()), "active": int(active), **by_status}


def balance_totals(conn: Connection, merchant_id: str) -> dict[str, int]:
    cols = ("available", "pending", "reserved", "debt", "lifetime_earned", "expired", "redeemed")
    row = conn.execute(
        select(*[func.coalesce(func.sum(member_balances.c[c]), 0).label(c) for c in cols]).where(
            member_balances.c.merchant_id == merchant_id
        )
    ).one()
    return {c: int(v) for c, v in zip(cols, row, strict=True)}


def program_flows(
    conn: Connection, merchant_id: str, bounds: Sequence[datetime], accounts: Sequence[str]
) -> list[dict[str, int]]:
    """Sums of program-side postings per account in each ``[bounds[i], bounds[i+1])``: one pass
    over the merchant's postings in the window, portable to SQLite and PostgreSQL."""
    columns = []
    for i in range(len(bounds) - 1):
        inside = and_(postings.c.occurred_at >= bounds[i], postings.c.occurred_at < bounds[i + 1])
        for account in accounts:
            hit = and_(inside, postings.c.account == account)
            columns.append(func.coalesce(func.sum(case((hit, postings.c.amount), else_=0)), 0))
    if not columns:
        return []
    row = conn.execute(
        select(*columns).where(
            postings.c.merchant_id == merchant_id,
            postings.c.occurred_at >= bounds[0],
            postings.c.occurred_at < bounds[-1],
            postings.c.account.in_(list(accounts)),
        )
    ).one()
    values = [int(v) for v in row]
    n = len(accounts)
    return [dict(zip(accounts, values[i * n : (i + 1) * n], strict=True)) for i in range(len(bounds) - 1)]


def events_by_ids(conn: Connection, merchant_id: str, ids: set[str]) -> dict[str, dict[str, Any]]:
    if not ids:
        return {}
    stmt = select(
        events.c.id,
        events.c.external_id,
        events.c.type,
        events.c.location_id,
        events.c.refers_to,
        events.c.body,
        events.c.result,
    ).where(events.c.merchant_id == merchant_id, events.c.id.in_(ids))
    return {str(r["id"]): dict(r) for r in conn.execute(stmt).mappings()}


def journal_events(conn: Connection, merchant_id: str, journal_ids: set[str]) -> dict[str, str]:
    """Internal event id of each journal that has one."""
    if not journal_ids:
        return {}
    stmt = select(journals.c.id, journals.c.event_id).where(
        journals.c.merchant_id == merchant_id, journals.c.id.in_(journal_ids), journals.c.event_id.isnot(None)
    )
    return {str(j): str(e) for j, e in conn.execute(stmt)}


def redemption_journals(conn: Connection, merchant_id: str, member_id: str) -> dict[str, str]:
    """Reward id of each journal that reserved or settled one of the member's redemptions."""
    stmt = select(
        redemptions.c.reward_id, redemptions.c.reserve_journal_id, redemptions.c.settle_journal_id
    ).where(redemptions.c.merchant_id == merchant_id, redemptions.c.member_id == member_id)
    out: dict[str, str] = {}
    for reward_id, reserve, settle in conn.execute(stmt):
        out[str(reserve)] = str(reward_id)
        if settle:
            out[str(settle)] = str(reward_id)
    return out
