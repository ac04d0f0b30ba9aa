"""The transactional outbox and outbound webhooks: events, endpoints, deliveries, attempts.

``outbox_events`` is append-only apart from ``fanned_out_at``, which the dispatcher sets once it
has made a delivery for each matching endpoint, and from a member's erasure, which blanks their
personal fields in the ``data`` of their events. ``stream`` is the member id (``""`` for an event
of no member) and ``seq`` numbers the events of one stream 1, 2, 3...; the unique constraint on
``(merchant_id, stream, seq)`` is what keeps a member's events in commit order (see
``services/outbox.py``). The tables live on the shared ``metadata``; migration ``0011_outbox``
creates them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Connection,
    ForeignKeyConstraint,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import aliased

from patron.storage.db import bind_row, conflict_insert, fetch_driver, insert_many
from patron.storage.tables import ID, UTCDateTime, metadata

outbox_events = Table(
    "outbox_events",
    metadata,
    Column("merchant_id", ID, nullable=False),
    Column("id", ID, nullable=False),
    Column("type", String(100), nullable=False),
    Column("member_id", ID),
    Column("stream", ID, nullable=False),  # member_id, or "" for an event of no member
    Column("seq", BigInteger, nullable=False),  # 1, 2, 3... within (merchant_id, stream)
    Column("occurred_at", UTCDateTime(), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("data", JSON, nullable=False),
    Column("fanned_out_at", UTCDateTime()),
    PrimaryKeyConstraint("merchant_id", "id"),
    UniqueConstraint("merchant_id", "stream", "seq"),
    # the fan-out's queue: small and in stream order, whatever the size of the history
    Index(
        "ix_outbox_events_merchant_id_stream_seq_unfanned",
        "merchant_id",
        "stream",
        "seq",
        postgresql_where=text("fanned_out_at IS NULL"),
        sqlite_where=text("fanned_out_at IS NULL"),
    ),
    Index(None, "merchant_id", "member_id", "id"),
)

webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("merchant_id", ID, nullable=False),
    Column("id", ID, nullable=False),
    Column("url", String(2000), nullable=False),
    Column("description", String(500), nullable=False),
    Column("event_types", JSON, nullable=False),  # empty: every event
    Column("secret", String(100), nullable=False),  # whsec_...; needed in clear to sign
    Column("enabled", Boolean, nullable=False),
    Column("consecutive_failures", Integer, nullable=False),
    Column("failing_since", UTCDateTime()),  # the first of the current run of failures
    Column("disabled_reason", Text),
    Column("disabled_at", UTCDateTime()),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("merchant_id", "id"),
    ForeignKeyConstraint(["merchant_id"], ["merchants.id"]),
)

outbound_deliveries = Table(
    "outbound_deliveries",
    metadata,
    Column("merchant_id", ID, nullable=False),
    Column("id", ID, nullable=False),
    Column("endpoint_id", ID, nullable=False),
    Column("event_id", ID, nullable=False),
    Column("replay", Integer, nullable=False),  # 0: the fan-out; n: the n-th replay
    Column("stream", ID, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("status", String(20), nullable=False),  # pending | delivered
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UTCDateTime(), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("delivered_at", UTCDateTime()),
    PrimaryKeyConstraint("merchant_id", "id"),
    UniqueConstraint("merchant_id", "endpoint_id", "event_id", "replay"),
    Index(None, "merchant_id", "endpoint_id", "stream", "seq"),
    # an event's deliveries: the retention job, and the foreign key when an event is deleted
    Index(None, "merchant_id", "event_id"),
    Index(
        "ix_outbound_deliveries_merchant_id_next_attempt_at_pending",
        "merchant_id",
        "next_attempt_at",
        postgresql_where=text("status = 'pending'"),
        sqlite_where=text("status = 'pending'"),
    ),
    ForeignKeyConstraint(
        ["merchant_id", "endpoint_id"], ["webhook_endpoints.merchant_id", "webhook_endpoints.id"]
    ),
    ForeignKeyConstraint(["merchant_id", "event_id"], ["outbox_events.merchant_id", "outbox_events.id"]),
)

outbound_attempts = Table(
    "outbound_attempts",
    metadata,
    Column("merchant_id", ID, nullable=False),
    Column("id", ID, nullable=False),
    Column("delivery_id", ID, nullable=False),
    Column("endpoint_id", ID, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("at", UTCDateTime(), nullable=False),
    Column("status_code", Integer),  # None: no HTTP answer (timeout, refused...)
    Column("duration_ms", Integer, nullable=False),
    Column("error", Text),
    Column("response", Text),  # the first characters of the answer's body
    PrimaryKeyConstraint("merchant_id", "id"),
    Index(None, "merchant_id", "delivery_id"),
    ForeignKeyConstraint(
        ["merchant_id", "delivery_id"], ["outbound_deliveries.merchant_id", "outbound_deliveries.id"]
    ),
)


# --- the outbox ---------------------------------------------------------------------------------


def last_seq(conn: Connection, merchant_id: str, stream: str) -> int:
    found = conn.execute(
        select(func.max(outbox_events.c.seq)).where(
            outbox_events.c.merchant_id == merchant_id, outbox_events.c.stream == stream
        )
    ).scalar()
    return int(found or 0)


def _insert_new(conn: Connection) -> Any:
    """An INSERT that skips a row whose (merchant, stream, seq) is taken, instead of failing:
    the transaction goes on and the caller takes the next number."""
    return conflict_insert(conn, outbox_events).on_conflict_do_nothing(
        index_elements=["merchant_id", "stream", "seq"]
    )


_APPEND_COLUMNS = [c.name for c in outbox_events.c if c.name != "seq"]
_APPEND: dict[str, Any] = {}


def _append_next(conn: Connection) -> Any:
    """``INSERT ... SELECT <values>, last seq + 1 ... ON CONFLICT DO NOTHING RETURNING seq``: the
    stream's next number taken and the row written in one statement (built once per dialect)."""
    stmt = _APPEND.get(conn.dialect.name)
    if stmt is None:
        nxt = func.coalesce(func.max(outbox_events.c.seq), 0) + 1
        source = select(
            *[bindparam(name, type_=outbox_events.c[name].type) for name in _APPEND_COLUMNS], nxt
        ).where(
            outbox_events.c.merchant_id == bindparam("merchant_id"),
            outbox_events.c.stream == bindparam("stream"),
        )
        stmt = _insert_new(conn).from_select([*_APPEND_COLUMNS, "seq"], source).returning(outbox_events.c.seq)
        _APPEND[conn.dialect.name] = stmt
    return stmt


def append_event(conn: Connection, values: dict[str, Any], *, tries: int = 5) -> int:
    """Insert the event as the next of its stream and return its ``seq``.

    Under PostgreSQL's READ COMMITTED, a concurrent transaction may take the same number first:
    our insert then waits for it and, if it commits, inserts nothing (``ON CONFLICT DO
    NOTHING``); we try again with the stream's new last number, without losing the caller's
    work. One round trip when nobody competes: the number is read by the insert itself.
    """
    params = {name: values[name] for name in _APPEND_COLUMNS}
    pg = conn.dialect.name == "postgresql"
    if pg:  # straight to psycopg: a fraction of SQLAlchemy's cost, for a row every event writes
        params = bind_row(conn, outbox_events, params)
    for _ in range(tries):
        if pg:  # also inside storage.db.pipelined: fetching the result syncs the pipeline
            row = fetch_driver(conn, _append_next(conn), params)
            seq = None if row is None else row[0]
        else:
            seq = conn.execute(_append_next(conn), params).scalar()
        if seq is not None:
            return int(seq)
    raise IntegrityError("outbox sequence", None, Exception(f"stream {values['stream']} is too busy"))


def last_sequences(conn: Connection, merchant_id: str, streams: Iterable[str]) -> dict[str, int]:
    """The last outbox sequence number of each of ``streams`` that has one (one index probe
    per stream on PostgreSQL, however long its history)."""
    out: dict[str, int] = {}
    wanted = sorted(set(streams))
    if not wanted:
        return out
    if conn.dialect.name == "postgresql":
        found = conn.execute(
            text(
                "SELECT s.stream, (SELECT max(o.seq) FROM outbox_events o "
                "WHERE o.merchant_id = :m AND o.stream = s.stream) "
                "FROM unnest(CAST(:streams AS varchar[])) AS s(stream)"
            ),
            {"m": merchant_id, "streams": wanted},
        )
        return {str(stream): int(seq) for stream, seq in found if seq is not None}
    for at in range(0, len(wanted), 500):
        chunk = wanted[at : at + 500]
        stmt = (
            select(outbox_events.c.stream, func.max(outbox_events.c.seq))
            .where(outbox_events.c.merchant_id == merchant_id, outbox_events.c.stream.in_(chunk))
            .group_by(outbox_events.c.stream)
        )
        out.update((str(stream), int(seq)) for stream, seq in conn.execute(stmt))
    return out


def append_events(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert many events of one merchant, each the next of its stream in list order: one query
    for the streams' last numbers and one bulk insert (COPY on PostgreSQL), in a savepoint: if a
    concurrent writer took a number, the batch is appended one event at a time instead."""
    if not rows:
        return
    last = last_sequences(conn, rows[0]["merchant_id"], (r["stream"] for r in rows))
    numbered = []
    for r in rows:
        seq = last.get(r["stream"], 0) + 1
        last[r["stream"]] = seq
        numbered.append({**r, "seq": seq})
    saved = conn.begin_nested()
    try:
        insert_many(conn, outbox_events, numbered)
    except IntegrityError:
        saved.rollback()  # a concurrent writer took some numbers: one by one, keeping each stream's order
        for r in rows:
            append_event(conn, r)
        return
    saved.commit()


def existing_event_ids(conn: Connection, merchant_id: str, ids: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for i in range(0, len(ids), 1000):
        found.update(
            conn.execute(
                select(outbox_events.c.id).where(
                    outbox_events.c.merchant_id == merchant_id, outbox_events.c.id.in_(ids[i : i + 1000])
                )
            ).scalars()
        )
    return found


def get_event(conn: Connection, merchant_id: str, event_id: str) -> dict[str, Any] | None:
    row = conn.execute(
        select(outbox_events).where(
            outbox_events.c.merchant_id == merchant_id, outbox_events.c.id == event_id
        )
    ).first()
    return dict(row._mapping) if row else None


def events_page(
    conn: Connection,
    merchant_id: str,
    *,
    member_id: str | None,
    type: str | None,
    limit: int,
    before: str | None,
) -> list[dict[str, Any]]:
    """Newest first (ids are time-ordered), ``limit + 1`` rows to tell whether there is more."""
    q = select(outbox_events).where(outbox_events.c.merchant_id == merchant_id)
    if member_id is not None:
        q = q.where(outbox_events.c.member_id == member_id)
    if type is not None:
        q = q.where(outbox_events.c.type == type)
    if before is not None:
        q = q.where(outbox_events.c.id < before)
    q = q.order_by(outbox_events.c.id.desc()).limit(limit + 1)
    return [dict(r._mapping) for r in conn.execute(q)]


def events_to_fan_out(conn: Connection, limit: int, merchant_id: str | None = None) -> list[dict[str, Any]]:
    """Events of every merchant (or one) not fanned out yet, each stream's in ``seq`` order,
    locked (skipping rows another dispatcher holds)."""
    q = (
        select(outbox_events)
        .where(
            outbox_events.c.fanned_out_at.is_(None),
            *([outbox_events.c.merchant_id == merchant_id] if merchant_id else []),
        )
        .order_by(outbox_events.c.merchant_id, outbox_events.c.stream, outbox_events.c.seq)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return [dict(r._mapping) for r in conn.execute(q)]


def mark_fanned_out(conn: Connection, keys: Sequence[tuple[str, str]], at: datetime) -> None:
    if keys:
        conn.execute(
            update(outbox_events)
            .where(tuple_(outbox_events.c.merchant_id, outbox_events.c.id).in_(list(keys)))
            .values(fanned_out_at=at)
        )


# --- endpoints ----------------------------------------------------------------------------------


def insert_endpoint(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(insert(webhook_endpoints), values)


def get_endpoint(conn: Connection, merchant_id: str, endpoint_id: str) -> dict[str, Any] | None:
    row = conn.execute(
        select(webhook_endpoints).where(
            webhook_endpoints.c.merchant_id == merchant_id, webhook_endpoints.c.id == endpoint_id
        )
    ).first()
    return dict(row._mapping) if row else None


def list_endpoints(conn: Connection, merchant_id: str) -> list[dict[str, Any]]:
    q = (
        select(webhook_endpoints)
        .where(webhook_endpoints.c.merchant_id == merchant_id)
        .order_by(webhook_endpoints.c.created_at, webhook_endpoints.c.id)
    )
    return [dict(r._mapping) for r in conn.execute(q)]


#: why an endpoint is off when its merchant turned it off (others were turned off by Patron)
BY_THE_MERCHANT = "disabled by the merchant"


def receiving_endpoints(conn: Connection, merchant_ids: Iterable[str]) -> list[dict[str, Any]]:
    """The endpoints new events are queued for: enabled ones, and those Patron disabled because
    they kept failing (their deliveries wait for the merchant to enable them again, so that the
    receiver misses nothing); not those the merchant turned off."""
    c = webhook_endpoints.c
    q = select(webhook_endpoints).where(
        c.merchant_id.in_(sorted(set(merchant_ids))),
        c.enabled.is_(True) | (c.disabled_reason.is_not(None) & (c.disabled_reason != BY_THE_MERCHANT)),
    )
    return [dict(r._mapping) for r in conn.execute(q)]


def update_endpoint(conn: Connection, merchant_id: str, endpoint_id: str, values: dict[str, Any]) -> None:
    conn.execute(
        update(webhook_endpoints)
        .where(webhook_endpoints.c.merchant_id == merchant_id, webhook_endpoints.c.id == endpoint_id)
        .values(**values)
    )


def delete_endpoint(conn: Connection, merchant_id: str, endpoint_id: str) -> None:
    """The endpoint with its deliveries and their log."""
    of_endpoint = select(outbound_deliveries.c.id).where(
        outbound_deliveries.c.merchant_id == merchant_id, outbound_deliveries.c.endpoint_id == endpoint_id
    )
    conn.execute(
        delete(outbound_attempts).where(
            outbound_attempts.c.merchant_id == merchant_id, outbound_attempts.c.delivery_id.in_(of_endpoint)
        )
    )
    conn.execute(
        delete(outbound_deliveries).where(
            outbound_deliveries.c.merchant_id == merchant_id, outbound_deliveries.c.endpoint_id == endpoint_id
        )
    )
    conn.execute(
        delete(webhook_endpoints).where(
            webhook_endpoints.c.merchant_id == merchant_id, webhook_endpoints.c.id == endpoint_id
        )
    )


# --- deliveries ---------------------------------------------------------------------------------


def insert_deliveries(conn: Connection, rows: list[dict[str, Any]]) -> None:
    if rows:
        conn.execute(insert(outbound_deliveries), rows)


def existing_pairs(conn: Connection, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str, str]]:
    """(merchant_id, endpoint_id, event_id) of the deliveries already made for these events."""
    if not keys:
        return set()
    d = outbound_deliveries.c
    q = select(d.merchant_id, d.endpoint_id, d.event_id).where(
        tuple_(d.merchant_id, d.event_id).in_(list(keys))
    )
    return {(r.merchant_id, r.endpoint_id, r.event_id) for r in conn.execute(q)}


def count_failures(
    conn: Connection, merchant_id: str, endpoint_id: str, *, failures: int, reset: bool, at: datetime
) -> dict[str, Any] | None:
    """Count ``failures`` more consecutive failed attempts (``reset``: a success came first);
    the endpoint's counters and state after it, or None if it is gone."""
    ep = webhook_endpoints.c
    if reset:
        values: dict[str, Any] = {"consecutive_failures": failures, "failing_since": at if failures else None}
    else:
        values = {
            "consecutive_failures": ep.consecutive_failures + failures,
            "failing_since": func.coalesce(ep.failing_since, at),
        }
    row = conn.execute(
        update(webhook_endpoints)
        .where(ep.merchant_id == merchant_id, ep.id == endpoint_id)
        .values(**values)
        .returning(ep.consecutive_failures, ep.failing_since, ep.enabled)
    ).first()
    return None if row is None else dict(row._mapping)


def last_replay(conn: Connection, merchant_id: str, endpoint_id: str, event_id: str) -> int:
    d = outbound_deliveries.c
    found = conn.execute(
        select(func.max(d.replay)).where(
            d.merchant_id == merchant_id, d.endpoint_id == endpoint_id, d.event_id == event_id
        )
    ).scalar()
    return -1 if found is None else int(found)


def claim_due(
    conn: Connection, *, now: datetime, limit: int, merchant_id: str | None = None
) -> list[dict[str, Any]]:
    """Pending deliveries due by ``now`` to enabled endpoints that are at the head of their
    member's line: no earlier pending delivery of the same stream to the same endpoint, and no
    earlier event of the stream still waiting to be fanned out. Locked, skipping rows another
    dispatcher holds; joined with the endpoint and the event."""
    d, ep, ev = outbound_deliveries, webhook_endpoints, outbox_events
    earlier = aliased(outbound_deliveries)
    earlier_event = aliased(outbox_events)
    blocked = exists().where(
        earlier.c.merchant_id == d.c.merchant_id,
        earlier.c.endpoint_id == d.c.endpoint_id,
        earlier.c.stream == d.c.stream,
        earlier.c.status == "pending",
        or_(earlier.c.seq < d.c.seq, and_(earlier.c.seq == d.c.seq, earlier.c.id < d.c.id)),
    )
    unfanned = exists().where(
        earlier_event.c.merchant_id == d.c.merchant_id,
        earlier_event.c.stream == d.c.stream,
        earlier_event.c.seq < d.c.seq,
        earlier_event.c.fanned_out_at.is_(None),
    )
    q = (
        select(
            d,
            ep.c.url,
            ep.c.secret,
            ev.c.type.label("event_type"),
            ev.c.member_id,
            ev.c.occurred_at,
            ev.c.data,
        )
        .join(ep, and_(ep.c.merchant_id == d.c.merchant_id, ep.c.id == d.c.endpoint_id))
        .join(ev, and_(ev.c.merchant_id == d.c.merchant_id, ev.c.id == d.c.event_id))
        .where(
            d.c.status == "pending",
            d.c.next_attempt_at <= now,
            ep.c.enabled.is_(True),
            ~blocked,
            ~unfanned,
            *([d.c.merchant_id == merchant_id] if merchant_id else []),
        )
        .order_by(d.c.next_attempt_at, d.c.merchant_id, d.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True, of=d)
    )
    return [dict(r._mapping) for r in conn.execute(q)]


def lease(conn: Connection, keys: Sequence[tuple[str, str]], until: datetime) -> None:
    """Push claimed deliveries out of reach of other dispatchers while they are being sent."""
    if keys:
        d = outbound_deliveries.c
        conn.execute(
            update(outbound_deliveries)
            .where(tuple_(d.merchant_id, d.id).in_(list(keys)))
            .values(next_attempt_at=until)
        )


def record_deliveries(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Settle or reschedule many deliveries in one statement: each row has ``merchant_id``,
    ``delivery_id``, ``status``, ``attempts``, ``delivered_at`` and ``next_attempt_at``."""
    if not rows:
        return
    d = outbound_deliveries.c
    conn.execute(
        update(outbound_deliveries)
        .where(d.merchant_id == bindparam("m"), d.id == bindparam("delivery_id"))
        .values(
            status=bindparam("status"),
            attempts=bindparam("attempts"),
            delivered_at=bindparam("delivered_at"),
            next_attempt_at=bindparam("next_attempt_at"),
        ),
        [{**r, "m": r["merchant_id"]} for r in rows],
    )


def insert_attempts(conn: Connection, rows: list[dict[str, Any]]) -> None:
    if rows:
        conn.execute(insert(outbound_attempts), rows)


def get_delivery(conn: Connection, merchant_id: str, delivery_id: str) -> dict[str, Any] | None:
    row = conn.execute(
        select(outbound_deliveries).where(
            outbound_deliveries.c.merchant_id == merchant_id, outbound_deliveries.c.id == delivery_id
        )
    ).first()
    return dict(row._mapping) if row else None


def deliveries_page(
    conn: Connection, merchant_id: str, endpoint_id: str, *, limit: int, before: str | None
) -> list[dict[str, Any]]:
    """The endpoint's deliveries newest first, with the event's type; ``limit + 1`` rows."""
    d, ev = outbound_deliveries, outbox_events
    q = (
        select(d, ev.c.type.label("event_type"), ev.c.member_id)
        .join(ev, and_(ev.c.merchant_id == d.c.merchant_id, ev.c.id == d.c.event_id))
        .where(d.c.merchant_id == merchant_id, d.c.endpoint_id == endpoint_id)
    )
    if before is not None:
        q = q.where(d.c.id < before)
    q = q.order_by(d.c.id.desc()).limit(limit + 1)
    return [dict(r._mapping) for r in conn.execute(q)]


def attempts_of(conn: Connection, merchant_id: str, delivery_ids: Sequence[str]) -> list[dict[str, Any]]:
    if not delivery_ids:
        return []
    a = outbound_attempts.c
    q = (
        select(outbound_attempts)
        .where(a.merchant_id == merchant_id, a.delivery_id.in_(list(delivery_ids)))
        .order_by(a.delivery_id, a.attempt)
    )
    return [dict(r._mapping) for r in conn.execute(q)]


# --- retention ----------------------------------------------------------------------------------


Key = tuple[str, str]


def _chunk_end(
    conn: Connection, table: Table, merchant_id: str | None, after: Key | None, limit: int
) -> Key | None:
    """The key of the ``limit``-th row after ``after`` in primary-key order (or of the last row,
    if fewer are left; None if none): the end of the next chunk a pruning pass examines."""
    stmt = select(table.c.merchant_id, table.c.id)
    if merchant_id is not None:
        stmt = stmt.where(table.c.merchant_id == merchant_id)
    if after is not None:
        stmt = stmt.where(tuple_(table.c.merchant_id, table.c.id) > tuple_(*after))
    keys = conn.execute(stmt.order_by(table.c.merchant_id, table.c.id).limit(limit)).all()
    return (str(keys[-1][0]), str(keys[-1][1])) if keys else None


def _in_chunk(table: Table, merchant_id: str | None, after: Key | None, end: Key) -> Any:
    """The rows of the chunk that ends at ``end`` (of ``merchant_id``, when given)."""
    key = tuple_(table.c.merchant_id, table.c.id)
    out = and_(key <= tuple_(*end), key > tuple_(*after)) if after is not None else key <= tuple_(*end)
    return and_(out, table.c.merchant_id == merchant_id) if merchant_id is not None else out


def prune_deliveries(
    conn: Connection, *, cutoff: datetime, merchant_id: str | None, after: Key | None, limit: int
) -> tuple[int, int, Key | None]:
    """In the next ``limit`` deliveries after ``after`` (primary-key order), delete those
    delivered and made before ``cutoff``, with their attempts: (deliveries, attempts, the last
    key examined, None when there was none left). Pending ones (still being retried, or waiting
    for a disabled endpoint to come back) are kept whatever their age. Walking the key rather
    than asking again for "the next old ones" keeps a long first run from reading the rows it
    already deleted over and over."""
    d = outbound_deliveries
    end = _chunk_end(conn, d, merchant_id, after, limit)
    if end is None:
        return 0, 0, None
    prunable = and_(_in_chunk(d, merchant_id, after, end), d.c.status == "delivered", d.c.created_at < cutoff)
    a = outbound_attempts
    attempts = conn.execute(
        delete(a).where(
            exists().where(d.c.merchant_id == a.c.merchant_id, d.c.id == a.c.delivery_id, prunable)
        )
    ).rowcount
    deliveries = conn.execute(delete(d).where(prunable)).rowcount
    return int(deliveries or 0), int(attempts or 0), end


def prune_events(
    conn: Connection, *, cutoff: datetime, merchant_id: str | None, after: Key | None, limit: int
) -> tuple[int, Key | None]:
    """In the next ``limit`` business events after ``after`` (primary-key order), delete those
    written before ``cutoff`` that are fanned out, have no delivery left in the log and are not
    the latest of their stream: the latest stays, so a member's next event is numbered after it,
    never from 1 again. (deleted, the last key examined or None when there was none left)."""
    e = outbox_events
    end = _chunk_end(conn, e, merchant_id, after, limit)
    if end is None:
        return 0, None
    newer = aliased(e)
    d = outbound_deliveries
    deleted = conn.execute(
        delete(e).where(
            _in_chunk(e, merchant_id, after, end),
            e.c.fanned_out_at.is_not(None),
            e.c.created_at < cutoff,
            exists().where(
                newer.c.merchant_id == e.c.merchant_id, newer.c.stream == e.c.stream, newer.c.seq > e.c.seq
            ),
            ~exists().where(d.c.merchant_id == e.c.merchant_id, d.c.event_id == e.c.id),
        )
    ).rowcount
    return int(deleted or 0), end
