"""Merchants, their API keys and locations."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, update

from patron.storage.db import driver_rows, fetch_driver, is_postgres
from patron.storage.tables import api_keys, locations, merchants

_KEY_COLUMNS = [c.name for c in api_keys.c]
_KEY_BY_HASH = select(api_keys).where(api_keys.c.key_hash == bindparam("key_hash"))


def insert_merchant(conn: Connection, *, id: str, name: str, created_at: datetime) -> None:
    conn.execute(insert(merchants), {"id": id, "name": name, "created_at": created_at})


def get_merchant(conn: Connection, merchant_id: str) -> dict[str, Any] | None:
    row = conn.execute(select(merchants).where(merchants.c.id == merchant_id)).mappings().first()
    return dict(row) if row else None


def list_merchants(conn: Connection) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute(select(merchants).order_by(merchants.c.created_at)).mappings()]


def insert_api_key(conn: Connection, **values: Any) -> None:
    conn.execute(insert(api_keys), values)


def api_key_by_hash(conn: Connection, key_hash: str) -> dict[str, Any] | None:
    """The key with this hash. Every API request asks: on PostgreSQL it goes to the driver
    directly (a fraction of SQLAlchemy's cost per statement), read as the column types read."""
    if is_postgres(conn):
        found = fetch_driver(conn, _KEY_BY_HASH, {"key_hash": key_hash})
        return driver_rows(conn, api_keys, _KEY_COLUMNS, [found])[0] if found else None
    row = conn.execute(_KEY_BY_HASH, {"key_hash": key_hash}).mappings().first()
    return dict(row) if row else None


def list_api_keys(conn: Connection, merchant_id: str) -> list[dict[str, Any]]:
    stmt = select(api_keys).where(api_keys.c.merchant_id == merchant_id).order_by(api_keys.c.created_at)
    return [dict(r) for r in conn.execute(stmt).mappings()]


def revoke_api_key(conn: Connection, merchant_id: str, key_id: str, at: datetime) -> bool:
    result = conn.execute(
        update(api_keys)
        .where(
            api_keys.c.merchant_id == merchant_id,
            api_keys.c.id == key_id,
            api_keys.c.revoked_at.is_(None),
        )
        .values(revoked_at=at)
    )
    return bool(result.rowcount)


def get_location(conn: Connection, merchant_id: str, location_id: str) -> dict[str, Any] | None:
    row = (
        conn.execute(
            select(locations).where(locations.c.merchant_id == merchant_id, locations.c.id == location_id)
        )
        .mappings()
        .first()
    )
    return dict(row) if row else None


def insert_location(conn: Connection, *, merchant_id: str, id: str, name: str, created_at: datetime) -> None:
    conn.execute(
        insert(locations), {"merchant_id": merchant_id, "id": id, "name": name, "created_at": created_at}
    )


def list_locations(conn: Connection, merchant_id: str) -> list[dict[str, Any]]:
    stmt = select(locations).where(locations.c.merchant_id == merchant_id).order_by(locations.c.id)
    return [dict(r) for r in conn.execute(stmt).mappings()]


def rename_location(conn: Connection, merchant_id: str, location_id: str, name: str) -> None:
    conn.execute(
        update(locations)
        .where(locations.c.merchant_id == merchant_id, locations.c.id == location_id)
        .values(name=name)
    )
