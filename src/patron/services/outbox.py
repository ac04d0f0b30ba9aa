"""The transactional outbox: business events written in the transaction of the change.

A service that changes something a merchant's other systems care about calls :func:`emit` with
the connection of its own transaction, so that the event exists if and only if the change was
committed: never an event for a rolled-back change, never a change without its event. The
dispatcher (``services/webhooks_out.py``) reads the outbox after commit and delivers it.

Ordering. Each event belongs to a *stream*, the member it is about (``""`` when it is about no
member), and carries ``seq``, its number in that stream: 1, 2, 3... ``emit`` takes the stream's
last number plus one, and ``UNIQUE (merchant_id, stream, seq)`` guards it. Why not the time-ordered
ids of ``storage.ids.new_id`` or a database sequence? Both are handed out when a transaction
*writes* the row, not when it *commits*, so across processes a later number can become visible
before an earlier one and a dispatcher that had already passed it would deliver the member's
events out of order. With a per-stream number, two transactions that emit for the same member at
once both try to insert the same ``seq`` on PostgreSQL: the second waits for the first and, when
it commits, fails on the unique constraint, rolls back to a savepoint and takes the next number
(``storage.outbox.append_event``). So a stream's numbers are committed in order, with no gaps, and
a number is never visible before the ones below it. On SQLite one writer at a time
gives the same. Contention is per member, not per merchant. The dispatcher also refuses to deliver
an event while an earlier one of its stream is still waiting to be fanned out.

Events are listed newest first by id (time-ordered); ``seq`` is the order that is guaranteed.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from enum import Enum
from typing import Any, Final

from sqlalchemy import Connection, Engine

from patron.domain.errors import InvalidInput, NotFound
from patron.services.clock import utcnow
from patron.storage import idempotency as idempotency_repo
from patron.storage import outbox as repo
from patron.storage.ids import new_id

MEMBER_ENROLLED: Final = "member.enrolled"
"""A member joined a program."""
MEMBER_UPDATED: Final = "member.updated"
"""A member's profile, status or consent changed."""
POINTS_EARNED: Final = "points.earned"
"""A member earned points (a purchase, a bonus, a referral, a milestone...)."""
POINTS_REVERSED: Final = "points.reversed"
"""Points earned earlier were taken back (a refund, a cancelled order, a revoked referral)."""
POINTS_ADJUSTED: Final = "points.adjusted"
"""Customer care added or removed points by hand, with a reason."""
POINTS_EXPIRED: Final = "points.expired"
"""A member's points reached their expiry and were removed."""
POINTS_EXPIRING: Final = "points.expiring"
"""A member's points will expire soon (a warning, before ``points.expired``)."""
TIER_CHANGED: Final = "tier.changed"
"""A member moved up or down a tier."""
MILESTONE_REACHED: Final = "milestone.reached"
"""A member reached a milestone of the program."""
REWARD_ISSUED: Final = "reward.issued"
"""A reward was reserved or granted to a member (a code to use)."""
REWARD_REDEEMED: Final = "reward.redeemed"
"""A member used a reward."""
REWARD_CANCELLED: Final = "reward.cancelled"
"""A reward was cancelled or its reservation lapsed; its points went back."""
TICKET_ISSUED: Final = "ticket.issued"
"""A member got a ticket to a members-only event."""
REFERRAL_COMPLETED: Final = "referral.completed"
"""A referred friend made a qualifying purchase; both were credited."""
MEMBERSHIP_RENEWED: Final = "membership.renewed"
"""A paid membership was renewed for another period."""
MEMBER_AT_RISK: Final = "member.at_risk"
"""A member is likely to lapse (churn model or inactivity rule)."""

EVENT_TYPES: Final[dict[str, str]] = {
    MEMBER_ENROLLED: "A member joined a program.",
    MEMBER_UPDATED: "A member's profile, status or consent changed.",
    POINTS_EARNED: "A member earned points.",
    POINTS_REVERSED: "Points earned earlier were taken back.",
    POINTS_ADJUSTED: "Points were added or removed by hand.",
    POINTS_EXPIRED: "A member's points expired.",
    POINTS_EXPIRING: "A member's points will expire soon.",
    TIER_CHANGED: "A member moved up or down a tier.",
    MILESTONE_REACHED: "A member reached a milestone.",
    REWARD_ISSUED: "A reward was issued to a member.",
    REWARD_REDEEMED: "A member used a reward.",
    REWARD_CANCELLED: "A reward was cancelled; its points went back.",
    TICKET_ISSUED: "A member got a ticket to an event.",
    REFERRAL_COMPLETED: "A referral completed; both members were credited.",
    MEMBERSHIP_RENEWED: "A paid membership was renewed.",
    MEMBER_AT_RISK: "A member is likely to lapse.",
}
"""Every business event type with a one-line description (also served to integrators)."""

MAX_DATA_BYTES: Final = 64_000


def _plain(value: object) -> object:
    """JSON for the values services hold: times in RFC 3339 (UTC as ``Z``), decimals as strings."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime in event data")
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal | Enum):
        return str(value.value if isinstance(value, Enum) else value)
    if isinstance(value, set | frozenset | tuple):
        return sorted(value) if isinstance(value, set | frozenset) else list(value)
    raise TypeError(f"event data holds a {type(value).__name__}, which is not JSON")


def _row(
    merchant_id: str,
    type: str,
    member_id: str | None,
    occurred_at: datetime,
    data: dict[str, Any],
    id: str | None = None,
) -> dict[str, Any]:
    if type not in EVENT_TYPES:
        raise ValueError(f"unknown business event type {type!r}")
    if occurred_at.tzinfo is None:
        raise ValueError("occurred_at must be timezone-aware")
    body = json.dumps(data, separators=(",", ":"), sort_keys=True, default=_plain)
    if len(body) > MAX_DATA_BYTES:
        raise ValueError(f"event data is {len(body)} bytes; the limit is {MAX_DATA_BYTES}")
    return {
        "merchant_id": merchant_id,
        "id": id or new_id("evt"),
        "type": type,
        "member_id": member_id,
        "stream": member_id or "",
        "occurred_at": occurred_at,
        "created_at": utcnow(),
        "data": json.loads(body),
        "fanned_out_at": None,
    }


def emit(
    conn: Connection,
    *,
    merchant_id: str,
    type: str,
    member_id: str | None,
    occurred_at: datetime,
    data: dict[str, Any],
) -> str:
    """Write one business event in the caller's transaction and return its id (``evt_...``).

    ``data`` is sent as JSON: aware datetimes become RFC 3339 strings, dates ISO dates, decimals
    strings; ``occurred_at`` is when the change took effect.
    An unknown ``type`` or a naive time is a programming error (:class:`ValueError`).
    """
    row = _row(merchant_id, type, member_id, occurred_at, data)
    repo.append_event(conn, row)
    return str(row["id"])


def emit_many(
    conn: Connection,
    *,
    merchant_id: str,
    events: list[tuple[str, str | None, datetime, dict[str, Any]]],
    ids: list[str] | None = None,
) -> list[str]:
    """:func:`emit` for many ``(type, member_id, occurred_at, data)`` of one merchant at once (a
    job's batch), in a few statements; each member's events keep their list order. ``ids``: the
    events' own ids (derived from what they announce, so that a job run twice finds them),
    instead of new ones."""
    named: list[str | None] = list(ids) if ids is not None else [None] * len(events)
    rows = [_row(merchant_id, t, m, at, data, i) for (t, m, at, data), i in zip(events, named, strict=True)]
    repo.append_events(conn, rows)
    return [str(r["id"]) for r in rows]


def missing_ids(conn: Connection, *, merchant_id: str, ids: list[str]) -> set[str]:
    """Those of ``ids`` that name no event of the merchant yet."""
    return set(ids) - repo.existing_event_ids(conn, merchant_id, ids)


def event_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "type": row["type"],
        "member_id": row["member_id"],
        "sequence": row["seq"],
        "occurred_at": row["occurred_at"],
        "created_at": row["created_at"],
        "data": row["data"],
    }


def plausible_id(value: str) -> bool:
    """Ids are short printable ASCII; anything else (a NUL byte, which PostgreSQL refuses in
    text) cannot name a row, so it is looked up nowhere."""
    return len(value) <= 40 and value.isascii() and value.isprintable()


def get_event(conn: Connection, *, merchant_id: str, event_id: str) -> dict[str, Any]:
    row = repo.get_event(conn, merchant_id, event_id) if plausible_id(event_id) else None
    if row is None:
        raise NotFound(f"event {event_id} not found")
    return row


def _cursor(value: str) -> str:
    return base64.urlsafe_b64encode(value.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("cursor is not valid; use next_cursor from the previous page", field="cursor")
    if not raw or not plausible_id(raw):
        raise InvalidInput("cursor is not valid; use next_cursor from the previous page", field="cursor")
    return raw


def page(rows: list[dict[str, Any]], limit: int) -> tuple[list[dict[str, Any]], str | None]:
    """Rows of one page and the cursor of the next (``None`` on the last page)."""
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (_cursor(rows[-1]["id"]) if more and rows else None)


def list_events(
    conn: Connection,
    *,
    merchant_id: str,
    member_id: str | None = None,
    type: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> dict[str, Any]:
    """The merchant's business events, newest first, optionally of one member or one type."""
    if not 1 <= limit <= 500:
        raise InvalidInput("limit must be between 1 and 500", field="limit")
    if type is not None and type not in EVENT_TYPES:
        raise InvalidInput(f"unknown event type {type!r}; types: {', '.join(EVENT_TYPES)}", field="type")
    if member_id is not None and not plausible_id(member_id):
        raise InvalidInput("member_id is not a member id", field="member_id")
    before = decode_cursor(cursor) if cursor else None
    rows = repo.events_page(conn, merchant_id, member_id=member_id, type=type, limit=limit, before=before)
    rows, next_cursor = page(rows, limit)
    return {"data": [event_view(r) for r in rows], "next_cursor": next_cursor, "has_more": bool(next_cursor)}


#: Rows examined per transaction of the retention job.
PRUNE_BATCH = 2000


def prune(
    engine: Engine,
    *,
    as_of: datetime,
    days: int,
    merchant_id: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[int, int, int]:
    """The retention of the outbox and the webhook delivery log: delivered deliveries (with their
    attempts) and fanned-out business events older than ``days`` at ``as_of`` are deleted, in
    batches of one transaction each. Kept whatever their age: deliveries still pending, the
    events they deliver, events not fanned out yet, and each member's latest event (it carries
    their stream's last number). The answers stored for Idempotency-Key replays go after the same
    ``days``. ``days`` 0 keeps everything. (events, deliveries, attempts)."""
    if days < 0:
        raise InvalidInput("the retention is a number of days, 0 or more", field="days")
    if days == 0:
        return 0, 0, 0
    cutoff = as_of - timedelta(days=days)
    deliveries = attempts = events = 0
    after: repo.Key | None = None
    while True:  # the delivery log first: an event is kept while a delivery of it is
        with engine.begin() as conn:
            done, tried, after = repo.prune_deliveries(
                conn, cutoff=cutoff, merchant_id=merchant_id, after=after, limit=PRUNE_BATCH
            )
        deliveries, attempts = deliveries + done, attempts + tried
        if progress and done:
            progress(done)
        if after is None:
            break
    while True:
        with engine.begin() as conn:
            done, after = repo.prune_events(
                conn, cutoff=cutoff, merchant_id=merchant_id, after=after, limit=PRUNE_BATCH
            )
        events += done
        if progress and done:
            progress(done)
        if after is None:
            break
    while True:  # the answers kept for Idempotency-Key replays: a retry comes within days, not months
        with engine.begin() as conn:
            done = idempotency_repo.prune(conn, cutoff=cutoff, merchant_id=merchant_id, limit=PRUNE_BATCH)
        if done < PRUNE_BATCH:
            break
    return events, deliveries, attempts
