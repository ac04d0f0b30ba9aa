"""Member email: the notifications log, email preferences, and the set-based queries that find
what is due as of a time from the ledger and the other merchant tables.

The log's UNIQUE ``(merchant_id, member_id, kind, key)`` is what makes the job idempotent: a due
message is inserted with ``ON CONFLICT DO NOTHING`` before anything is sent, so a second run for
the same time finds it already there. Sending claims a row with a conditional UPDATE
(``queued``/``failed`` -> ``sending``) committed before the SMTP hand-over, so one row is never
handed over twice. The tables live on the shared ``metadata``; migration ``0011_notifications``
creates them.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    Connection,
    ForeignKeyConstraint,
    Index,
    Integer,
    PrimaryKeyConstraint,
    Select,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    func,
    select,
    tuple_,
    update,
)

from patron.storage.db import conflict_insert
from patron.storage.tables import (
    ID,
    UTCDateTime,
    events,
    journals,
    lots,
    member_milestones,
    members,
    metadata,
    postings,
    qualifications,
    redemptions,
    tier_changes,
)

notifications = Table(
    "notifications",
    metadata,
    Column("merchant_id", ID, nullable=False),
    Column("id", ID, nullable=False),
    Column("program_id", ID, nullable=False),
    Column("member_id", ID, nullable=False),
    Column("kind", String(30), nullable=False),
    Column("key", String(200), nullable=False),  # what it is about: journal id, "2027-01-31:30", "2026-12"
    Column("context", JSON, nullable=False),  # the numbers the message says, as of the run time
    Column("as_of", UTCDateTime(), nullable=False),  # the run time that found it due
    Column("status", String(20), nullable=False),  # queued | sending | sent | failed | skipped
    Column("attempts", Integer, nullable=False),
    Column("last_error", Text),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("sent_at", UTCDateTime()),
    PrimaryKeyConstraint("merchant_id", "id"),
    # merchant_id leads every key; member_id second so a member's messages are one range
    UniqueConstraint("merchant_id", "member_id", "kind", "key"),
    Index(None, "merchant_id", "status", "created_at"),
    ForeignKeyConstraint(["merchant_id", "member_id"], ["members.merchant_id", "members.id"]),
)

notification_preferences = Table(
    "notification_preferences",
    metadata,
    Column("merchant_id", ID, nullable=False),
    Column("member_id", ID, nullable=False),
    Column("unsubscribed_at", UTCDateTime()),
    Column("off", JSON, nullable=False),  # switched-off message names (domain SWITCHES)
    Column("updated_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("merchant_id", "member_id"),
    ForeignKeyConstraint(["merchant_id", "member_id"], ["members.merchant_id", "members.id"]),
)

notification_keys = Table(
    "notification_keys",
    metadata,
    Column("merchant_id", ID, nullable=False),
    Column("secret", String(64), nullable=False),  # signs unsubscribe links (with PATRON_SECRET_KEY)
    Column("created_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("merchant_id"),
    ForeignKeyConstraint(["merchant_id"], ["merchants.id"]),
)

CHUNK = 500


def _chunks(items: list[str]) -> Iterator[list[str]]:
    for i in range(0, len(items), CHUNK):
        yield items[i : i + CHUNK]


def _insert_ignore(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> int:
    """Insert rows, skipping those whose unique key is already there; how many were new."""
    if not rows:
        return 0
    stmt = conflict_insert(conn, table).on_conflict_do_nothing()
    done = 0
    for i in range(0, len(rows), CHUNK):
        result = conn.execute(stmt, rows[i : i + CHUNK])
        done += max(result.rowcount, 0)
    return done


# Keys and preferences -----------------------------------------------------------------------


def merchant_secret(conn: Connection, merchant_id: str, *, new: str, at: datetime) -> str:
    """The merchant's signing secret, created (as ``new``) on first use: a read, and a write only
    the first time (a concurrent first use keeps whichever secret was stored first)."""
    stmt = select(notification_keys.c.secret).where(notification_keys.c.merchant_id == merchant_id)
    found = conn.execute(stmt).scalar()
    if found is not None:
        return str(found)
    _insert_ignore(conn, notification_keys, [{"merchant_id": merchant_id, "secret": new, "created_at": at}])
    return str(conn.execute(stmt).scalar_one())


def get_preferences(conn: Connection, merchant_id: str, member_id: str) -> dict[str, Any] | None:
    stmt = select(notification_preferences).where(
        notification_preferences.c.merchant_id == merchant_id,
        notification_preferences.c.member_id == member_id,
    )
    row = conn.execute(stmt).mappings().first()
    return dict(row) if row else None


def preferences_of(conn: Connection, merchant_id: str, member_ids: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for ids in _chunks(sorted(set(member_ids))):
        stmt = select(notification_preferences).where(
            notification_preferences.c.merchant_id == merchant_id,
            notification_preferences.c.member_id.in_(ids),
        )
        out.update({r["member_id"]: dict(r) for r in conn.execute(stmt).mappings()})
    return out


def put_preferences(
    conn: Connection,
    merchant_id: str,
    member_id: str,
    *,
    unsubscribed_at: datetime | None,
    off: list[str],
    at: datetime,
) -> None:
    """The member's preferences become these: one upsert, so that two at once (a mail
    provider's one-click unsubscribe and the member's own click) both succeed."""
    values = {"unsubscribed_at": unsubscribed_at, "off": off, "updated_at": at}
    stmt = conflict_insert(conn, notification_preferences).values(
        merchant_id=merchant_id, member_id=member_id, **values
    )
    conn.execute(stmt.on_conflict_do_update(index_elements=["merchant_id", "member_id"], set_=values))


# What is due -------------------------------------------------------------------------------


def _reachable(stmt: Select[Any], merchant_id: str, program_id: str, *, mailable: bool = True) -> Select[Any]:
    """Members of the program who can be mailed: an email, not closed, not erased (without
    ``mailable``, the email is not needed)."""
    stmt = stmt.where(
        members.c.merchant_id == merchant_id,
        members.c.program_id == program_id,
        members.c.erased_at.is_(None),
        members.c.status != "closed",
    )
    return stmt.where(members.c.email.is_not(None)) if mailable else stmt


def _join_member(table: Table) -> Any:
    return and_(members.c.merchant_id == table.c.merchant_id, members.c.id == table.c.member_id)


def _rows(conn: Connection, stmt: Select[Any]) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute(stmt).mappings()]


MEMBER = (members.c.id.label("member_id"), members.c.email, members.c.name)


def enrolled(
    conn: Connection, merchant_id: str, program_id: str, *, since: datetime, as_of: datetime
) -> list[dict[str, Any]]:
    stmt = select(*MEMBER, members.c.enrolled_at.label("at")).where(
        members.c.enrolled_at > since, members.c.enrolled_at <= as_of
    )
    return _rows(conn, _reachable(stmt, merchant_id, program_id))


def earnings(
    conn: Connection, merchant_id: str, program_id: str, *, since: datetime, as_of: datetime
) -> list[dict[str, Any]]:
    """Earning journals in ``(since, as_of]`` with the points they credited (available or pending)."""
    credited = func.sum(postings.c.amount)
    stmt = (
        select(
            *MEMBER,
            journals.c.id.label("journal_id"),
            journals.c.event_id,
            journals.c.occurred_at.label("at"),
            credited.label("points"),
        )
        .select_from(journals)
        .join(members, _join_member(journals))
        .join(
            postings,
            and_(postings.c.merchant_id == journals.c.merchant_id, postings.c.journal_id == journals.c.id),
        )
        .where(
            journals.c.merchant_id == merchant_id,
            journals.c.kind == "earn",
            journals.c.occurred_at > since,
            journals.c.occurred_at <= as_of,
            postings.c.account.in_(("available", "pending")),
            postings.c.amount > 0,
        )
        .group_by(members.c.id, members.c.email, members.c.name, journals.c.id, journals.c.event_id)
        .group_by(journals.c.occurred_at)
        .having(credited > 0)
    )
    return _rows(conn, _reachable(stmt, merchant_id, program_id))


def tier_moves(
    conn: Connection, merchant_id: str, program_id: str, *, since: datetime, as_of: datetime
) -> list[dict[str, Any]]:
    stmt = (
        select(*MEMBER, tier_changes.c.at, tier_changes.c.from_tier, tier_changes.c.to_tier)
        .select_from(tier_changes)
        .join(members, _join_member(tier_changes))
        .where(tier_changes.c.at > since, tier_changes.c.at <= as_of)
    )
    return _rows(conn, _reachable(stmt, merchant_id, program_id))


def qualified_recently(
    conn: Connection, merchant_id: str, program_id: str, *, since: datetime, as_of: datetime
) -> list[dict[str, Any]]:
    """Reachable members with qualifying activity recorded in ``(since, as_of]``: the only ones
    whose tier can have risen at once in that time."""
    recent = (
        select(qualifications.c.member_id)
        .where(
            qualifications.c.merchant_id == merchant_id,
            qualifications.c.recorded_at > since,
            qualifications.c.recorded_at <= as_of,
        )
        .distinct()
        .subquery()
    )
    stmt = (
        select(*MEMBER, members.c.enrolled_at)
        .select_from(members)
        .join(recent, recent.c.member_id == members.c.id)
        .order_by(members.c.id)
    )
    return _rows(conn, _reachable(stmt, merchant_id, program_id))


def milestones_reached(
    conn: Connection, merchant_id: str, program_id: str, *, since: datetime, as_of: datetime
) -> list[dict[str, Any]]:
    stmt = (
        select(
            *MEMBER,
            member_milestones.c.milestone_id,
            member_milestones.c.reached_at.label("at"),
            member_milestones.c.points,
        )
        .select_from(member_milestones)
        .join(members, _join_member(member_milestones))
        .where(member_milestones.c.reached_at > since, member_milestones.c.reached_at <= as_of)
    )
    return _rows(conn, _reachable(stmt, merchant_id, program_id))


def rewards_issued(
    conn: Connection, merchant_id: str, program_id: str, *, since: datetime, as_of: datetime
) -> list[dict[str, Any]]:
    stmt = (
        select(
            *MEMBER,
            redemptions.c.id.label("redemption_id"),
            redemptions.c.reward_id,
            redemptions.c.code,
            redemptions.c.points,
            redemptions.c.status,
            redemptions.c.reserved_at.label("at"),
        )
        .select_from(redemptions)
        .join(members, _join_member(redemptions))
        .where(
            redemptions.c.program_id == program_id,
            redemptions.c.reserved_at > since,
            redemptions.c.reserved_at <= as_of,
            redemptions.c.status != "cancelled",
        )
    )
    return _rows(conn, _reachable(stmt, merchant_id, program_id))


def expiring(
    conn: Connection,
    merchant_id: str,
    program_id: str,
    *,
    as_of: datetime,
    until: datetime,
    mailable: bool = True,
) -> list[dict[str, Any]]:
    """Per member and lot expiry time: available points (postings up to ``as_of``) of lots that
    expire in ``(as_of, until]``; of members who can be mailed, or (``mailable=False``) of every
    member not closed or erased."""
    remaining = func.sum(postings.c.amount)
    stmt = (
        select(*MEMBER, lots.c.expires_at, remaining.label("points"))
        .select_from(lots)
        .join(members, _join_member(lots))
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
            lots.c.expires_at > as_of,
            lots.c.expires_at <= until,
            postings.c.account == "available",
            postings.c.occurred_at <= as_of,
        )
        .group_by(members.c.id, members.c.email, members.c.name, lots.c.id, lots.c.expires_at)
        .having(remaining > 0)
    )
    return _rows(conn, _reachable(stmt, merchant_id, program_id, mailable=mailable))


def with_balance(
    conn: Connection, merchant_id: str, program_id: str, *, as_of: datetime
) -> list[dict[str, Any]]:
    """Reachable members with available points as of ``as_of``."""
    total = func.sum(postings.c.amount)
    stmt = (
        select(*MEMBER, total.label("available"))
        .select_from(members)
        .join(
            postings,
            and_(postings.c.merchant_id == members.c.merchant_id, postings.c.member_id == members.c.id),
        )
        .where(postings.c.account == "available", postings.c.occurred_at <= as_of)
        .group_by(members.c.id, members.c.email, members.c.name)
        .having(total > 0)
    )
    return _rows(conn, _reachable(stmt, merchant_id, program_id))


def last_activity(
    conn: Connection, merchant_id: str, program_id: str, *, as_of: datetime, cutoff: datetime
) -> list[dict[str, Any]]:
    """Reachable members whose last event (or enrolment, with none) up to ``as_of`` is at or
    before ``cutoff``."""
    last = (
        select(events.c.member_id, func.max(events.c.occurred_at).label("last"))
        .where(
            events.c.merchant_id == merchant_id,
            events.c.program_id == program_id,
            events.c.refers_to.is_(None),
            events.c.occurred_at <= as_of,
        )
        .group_by(events.c.member_id)
        .subquery()
    )
    at = func.coalesce(last.c.last, members.c.enrolled_at)
    stmt = (
        select(*MEMBER, at.label("at"))
        .select_from(members)
        .outerjoin(last, last.c.member_id == members.c.id)
        .where(members.c.enrolled_at <= as_of, at <= cutoff)
    )
    return _rows(conn, _reachable(stmt, merchant_id, program_id))


def available_as_of(
    conn: Connection, merchant_id: str, member_ids: list[str], as_of: datetime
) -> dict[str, int]:
    """Available points per member from postings up to ``as_of`` (members without any: absent)."""
    out: dict[str, int] = {}
    for ids in _chunks(sorted(set(member_ids))):
        stmt = (
            select(postings.c.member_id, func.sum(postings.c.amount))
            .where(
                postings.c.merchant_id == merchant_id,
                postings.c.member_id.in_(ids),
                postings.c.account == "available",
                postings.c.occurred_at <= as_of,
            )
            .group_by(postings.c.member_id)
        )
        out.update({str(m): int(s or 0) for m, s in conn.execute(stmt)})
    return out


def earned_between(
    conn: Connection, merchant_id: str, member_ids: list[str], start: datetime, end: datetime
) -> dict[str, int]:
    """Points credited by earning, milestones and referrals in ``[start, end)``, per member."""
    out: dict[str, int] = {}
    for ids in _chunks(sorted(set(member_ids))):
        stmt = (
            select(postings.c.member_id, func.sum(postings.c.amount))
            .join(
                journals,
                and_(
                    journals.c.merchant_id == postings.c.merchant_id, journals.c.id == postings.c.journal_id
                ),
            )
            .where(
                postings.c.merchant_id == merchant_id,
                postings.c.member_id.in_(ids),
                postings.c.account.in_(("available", "pending")),
                postings.c.amount > 0,
                journals.c.kind.in_(("earn", "milestone", "referral")),
                postings.c.occurred_at >= start,
                postings.c.occurred_at < end,
            )
            .group_by(postings.c.member_id)
        )
        out.update({str(m): int(s or 0) for m, s in conn.execute(stmt)})
    return out


# The log -----------------------------------------------------------------------------------


def record(conn: Connection, rows: list[dict[str, Any]]) -> int:
    """Record due messages; those already in the log are left as they are. How many were new."""
    return _insert_ignore(conn, notifications, rows)


def to_send(
    conn: Connection,
    *,
    merchant_id: str | None,
    statuses: tuple[str, ...],
    after: tuple[str, str] | None,
    limit: int,
) -> list[dict[str, Any]]:
    """The next ``limit`` messages in ``statuses`` after ``after`` (merchant_id, id), in key
    order (ids grow with time, so oldest first), with the member's email as it is now."""
    stmt = (
        select(notifications, members.c.email.label("member_email"), members.c.erased_at)
        .join(members, _join_member(notifications))
        .where(notifications.c.status.in_(statuses))
        .order_by(notifications.c.merchant_id, notifications.c.id)
        .limit(limit)
    )
    if merchant_id is not None:
        stmt = stmt.where(notifications.c.merchant_id == merchant_id)
    if after is not None:
        stmt = stmt.where(tuple_(notifications.c.merchant_id, notifications.c.id) > tuple_(*after))
    return _rows(conn, stmt)


def fail_waiting(conn: Connection, *, merchant_id: str | None, error: str, at: datetime) -> int:
    """Every waiting message (queued or failed) counts an attempt that failed with ``error``."""
    stmt = (
        update(notifications)
        .where(notifications.c.status.in_(("queued", "failed")))
        .values(
            status="failed", attempts=notifications.c.attempts + 1, last_error=error[:2000], updated_at=at
        )
    )
    if merchant_id is not None:
        stmt = stmt.where(notifications.c.merchant_id == merchant_id)
    return int(conn.execute(stmt).rowcount)


def claim(
    conn: Connection, merchant_id: str, notification_id: str, *, statuses: tuple[str, ...], at: datetime
) -> bool:
    """Mark a message as being sent, if it still waits; False when another run took it."""
    done = conn.execute(
        update(notifications)
        .where(
            notifications.c.merchant_id == merchant_id,
            notifications.c.id == notification_id,
            notifications.c.status.in_(statuses),
        )
        .values(status="sending", attempts=notifications.c.attempts + 1, updated_at=at)
    )
    return done.rowcount == 1


def finish(
    conn: Connection,
    merchant_id: str,
    notification_id: str,
    *,
    status: str,
    at: datetime,
    error: str | None = None,
    attempted: bool = True,
) -> None:
    values: dict[str, Any] = {"status": status, "updated_at": at, "last_error": error}
    if status == "sent":
        values["sent_at"] = at
    if not attempted:
        values["attempts"] = notifications.c.attempts + 1
    conn.execute(
        update(notifications)
        .where(notifications.c.merchant_id == merchant_id, notifications.c.id == notification_id)
        .values(values)
    )


def of_member(conn: Connection, merchant_id: str, member_id: str, limit: int = 100) -> list[dict[str, Any]]:
    stmt = (
        select(notifications)
        .where(notifications.c.merchant_id == merchant_id, notifications.c.member_id == member_id)
        .order_by(notifications.c.created_at.desc(), notifications.c.id.desc())
        .limit(limit)
    )
    return _rows(conn, stmt)
