"""Stored responses for ``Idempotency-Key`` replays; the key is unique per merchant."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, insert, select

from patron.storage.tables import idempotency_keys


def get(conn: Connection, merchant_id: str, key: str) -> dict[str, Any] | None:
    stmt = select(idempotency_keys).where(
        idempotency_keys.c.merchant_id == merchant_id, idempotency_keys.c.key == key
    )
    row = conn.execute(stmt).mappings().first()
    return dict(row) if row else None


def put(conn: Connection, **values: Any) -> None:
    conn.execute(insert(idempotency_keys), values)
