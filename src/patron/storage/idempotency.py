"""Stored responses for ``Idempotency-Key`` replays; the key is unique per merchant."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, insert, select, tuple_, update

from patron.storage.db import conflict_insert
from patron.storage.tables import idempotency_keys


def get(conn: Connection, merchant_id: str, key: str) -> dict[str, Any] | None:
    stmt = select(idempotency_keys).where(
        idempotency_keys.c.merchant_id == merchant_id, idempotency_keys.c.key == key
    )
    row = conn.execute(stmt).mappings().first()
    return dict(row) if row else None


def put(conn: Connection, **values: Any) -> None:
    conn.execute(insert(idempotency_keys), values)


def claim(conn: Connection, **values: Any) -> bool:
    """Insert the key's row unless the merchant has it: whether this call inserted it. A second
    claim of the same key waits (PostgreSQL) until the first transaction ends, then says False."""
    stmt = (
        conflict_insert(conn, idempotency_keys)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["merchant_id", "key"])
        .returning(idempotency_keys.c.key)
    )
    return conn.execute(stmt).first() is not None


def settle(conn: Connection, merchant_id: str, key: str, *, status_code: int, response: Any) -> None:
    """Record what the request that claimed ``key`` answered."""
    conn.execute(
        update(idempotency_keys)
        .where(idempotency_keys.c.merchant_id == merchant_id, idempotency_keys.c.key == key)
        .values(status_code=status_code, response=response)
    )


def prune(conn: Connection, *, cutoff: datetime, merchant_id: str | None, limit: int) -> int:
    """Delete at most ``limit`` stored answers created before ``cutoff``; how many."""
    c = idempotency_keys.c
    stmt = select(c.merchant_id, c.key).where(c.created_at < cutoff).limit(limit)
    if merchant_id is not None:
        stmt = stmt.where(c.merchant_id == merchant_id)
    keys = [tuple(r) for r in conn.execute(stmt)]
    if keys:
        conn.execute(delete(idempotency_keys).where(tuple_(c.merchant_id, c.key).in_(keys)))
    return len(keys)
