"""Bulk reads and writes for batch ingestion (``services/ingest.py``).

Writes go the fastest plain way each database offers: ``COPY ... FROM STDIN`` on PostgreSQL
(psycopg's ``cursor.copy``, inside the caller's transaction) and ``executemany`` on SQLite.
Reads take many members at once, in chunks that stay below every driver's parameter limit.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from sqlalchemy import Column, Connection, Table, bindparam, select, update

from patron.domain.ledger import Balances
from patron.storage import ids
from patron.storage.ledger import BALANCE_COLUMNS
from patron.storage.tables import UTCDateTime, events, member_balances, members, referrals

CHUNK = 900
_CROCKFORD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", b"0123456789abcdefghjkmnpqrstvwxyz")


class Ids:
    """``storage.ids.new_id`` for many rows: the same format and the same process-wide order,
    from blocks reserved under its lock (one reservation per ``block`` identifiers), encoded
    with the C base32 encoder rather than digit by digit."""

    def __init__(self, block: int = 4096) -> None:
        self.block = block
        self.head = ""
        self.next = self.end = 0

    def _reserve(self) -> None:
        with ids._lock:
            ms = time.time_ns() // 1_000_000
            if ms <= ids._last[0]:
                ms = ids._last[0]
                rand = ids._last[1] + 1
            else:
                rand = secrets.randbits(79)
            ids._last[0], ids._last[1] = ms, rand + self.block - 1
        self.head = ids._b32(ms, 10)
        self.next, self.end = rand, rand + self.block

    def __call__(self, prefix: str) -> str:
        if self.next >= self.end:
            self._reserve()
        rand = self.next
        self.next += 1
        tail = base64.b32encode(rand.to_bytes(10, "big")).translate(_CROCKFORD).decode()
        return f"{prefix}_{self.head}{tail}"


def _chunks(values: Sequence[str]) -> Iterator[list[str]]:
    for i in range(0, len(values), CHUNK):
        yield list(values[i : i + CHUNK])


def members_by_id(conn: Connection, merchant_id: str, member_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Members by id (every column, as ``storage.members.get_member`` returns them)."""
    out: dict[str, dict[str, Any]] = {}
    for chunk in _chunks(sorted(set(member_ids))):
        stmt = select(members).where(members.c.merchant_id == merchant_id, members.c.id.in_(chunk))
        for row in conn.execute(stmt).mappings():
            out[str(row["id"])] = dict(row)
    return out


def members_by_external_id(
    conn: Connection, merchant_id: str, program_id: str, external_ids: Iterable[str]
) -> dict[str, dict[str, Any]]:
    """A program's members by external id."""
    out: dict[str, dict[str, Any]] = {}
    for chunk in _chunks(sorted(set(external_ids))):
        stmt = select(members).where(
            members.c.merchant_id == merchant_id,
            members.c.program_id == program_id,
            members.c.external_id.in_(chunk),
        )
        for row in conn.execute(stmt).mappings():
            out[str(row["external_id"])] = dict(row)
    return out


def lock_balances(conn: Connection, merchant_id: str, member_ids: Iterable[str]) -> dict[str, Balances]:
    """The members' cached balances, locked for the rest of the transaction in member-id order
    (PostgreSQL: ``SELECT ... ORDER BY member_id FOR UPDATE``, so that two batches with members
    in common queue rather than deadlock; SQLite's single writer already serialises)."""
    out: dict[str, Balances] = {}
    cols = [member_balances.c[c] for c in BALANCE_COLUMNS]
    for chunk in _chunks(sorted(set(member_ids))):
        stmt = (
            select(member_balances.c.member_id, *cols)
            .where(member_balances.c.merchant_id == merchant_id, member_balances.c.member_id.in_(chunk))
            .order_by(member_balances.c.member_id)
        )
        if conn.dialect.name == "postgresql":
            stmt = stmt.with_for_update()
        for row in conn.execute(stmt):
            out[str(row[0])] = Balances(*(int(v) for v in row[1:]))
    return out


def recorded_events(
    conn: Connection, merchant_id: str, external_ids: Iterable[str]
) -> dict[str, tuple[str, dict[str, Any]]]:
    """Events already recorded, by external id: ``(body_hash, result)``."""
    out: dict[str, tuple[str, dict[str, Any]]] = {}
    for chunk in _chunks(sorted(set(external_ids))):
        stmt = select(events.c.external_id, events.c.body_hash, events.c.result).where(
            events.c.merchant_id == merchant_id, events.c.external_id.in_(chunk)
        )
        for ext, digest, result in conn.execute(stmt):
            out[str(ext)] = (str(digest), result)
    return out


def referees_with_referral(conn: Connection, merchant_id: str, member_ids: Iterable[str]) -> set[str]:
    """Which of ``member_ids`` already have a referral row (completed, revoked or in review)."""
    out: set[str] = set()
    for chunk in _chunks(sorted(set(member_ids))):
        stmt = select(referrals.c.referee_id).where(
            referrals.c.merchant_id == merchant_id, referrals.c.referee_id.in_(chunk)
        )
        out.update(str(r[0]) for r in conn.execute(stmt))
    return out


class JsonText(str):
    """A value of a JSON column already serialised (``json.dumps``): written as it is."""


def _copy_value(column: Column[Any], value: Any) -> Any:
    if value is not None and not isinstance(value, JsonText) and column.type.__class__.__name__ == "JSON":
        return json.dumps(value)
    return value


def _json_text(proc: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def run(value: Any) -> Any:
        return str(value) if isinstance(value, JsonText) else proc(value)

    return run


def _memo(proc: Callable[[Any], Any]) -> Callable[[Any], Any]:
    seen: dict[Any, Any] = {}

    def run(value: Any) -> Any:
        if value is None:
            return proc(value)
        out = seen.get(value)
        if out is None:
            out = seen[value] = proc(value)
        return out

    return run


def insert_many(conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert ``rows`` (all with the same keys): COPY on PostgreSQL, executemany on SQLite."""
    if not rows:
        return
    if conn.dialect.name != "postgresql":
        # executemany on the driver, each value through its column type's own bind processor:
        # what ``conn.execute(insert(table), rows)`` stores, without its per-row overhead
        names = list(rows[0])
        procs: list[Callable[[Any], Any] | None] = [
            table.c[n].type._cached_bind_processor(conn.dialect) for n in names
        ]
        sql = f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({', '.join('?' for _ in names)})"
        for i, n in enumerate(names):  # the same instants recur (an event's rows share one)
            proc = procs[i]
            if proc is not None and isinstance(table.c[n].type, UTCDateTime):
                procs[i] = _memo(proc)
            elif proc is not None and table.c[n].type.__class__.__name__ == "JSON":
                procs[i] = _json_text(proc)
        params = [
            tuple(p(row[n]) if p else row[n] for n, p in zip(names, procs, strict=True)) for row in rows
        ]
        conn.exec_driver_sql(sql, params)
        return
    names = list(rows[0])
    columns = [table.c[n] for n in names]
    json_at = [i for i, c in enumerate(columns) if c.type.__class__.__name__ == "JSON"]
    raw = conn.connection.driver_connection
    assert raw is not None
    with raw.cursor() as cur, cur.copy(f"COPY {table.name} ({', '.join(names)}) FROM STDIN") as copy:
        for row in rows:
            values = [row[n] for n in names]
            for i in json_at:
                values[i] = _copy_value(columns[i], values[i])
            copy.write_row(values)


def add_to_balances(conn: Connection, merchant_id: str, deltas: Mapping[str, Balances]) -> None:
    """Add each member's ``deltas`` to their cached balances (one statement, executemany)."""
    params = []
    for member_id, delta in deltas.items():
        values = {c: getattr(delta, c) for c in BALANCE_COLUMNS}
        if any(values.values()):
            params.append(
                {"m": merchant_id, "b_member_id": member_id, **{"d_" + k: v for k, v in values.items()}}
            )
    if not params:
        return
    stmt = (
        update(member_balances)
        .where(
            member_balances.c.merchant_id == bindparam("m"),
            member_balances.c.member_id == bindparam("b_member_id"),
        )
        .values({c: member_balances.c[c] + bindparam("d_" + c) for c in BALANCE_COLUMNS})
    )
    conn.execute(stmt, params)
