"""The run log of scheduled jobs, and a database lock so one job never runs twice at once."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zlib import crc32

from sqlalchemy import Connection, insert, select, text, update

from patron.storage.tables import job_runs


def start(
    conn: Connection, *, id: str, name: str, merchant_id: str | None, as_of: datetime, at: datetime
) -> None:
    conn.execute(
        insert(job_runs),
        {
            "id": id,
            "name": name,
            "merchant_id": merchant_id,
            "as_of": as_of,
            "started_at": at,
            "finished_at": None,
            "status": "running",
            "result": {},
            "error": None,
        },
    )


def finish(
    conn: Connection, *, id: str, at: datetime, status: str, result: dict[str, Any], error: str | None
) -> None:
    conn.execute(
        update(job_runs)
        .where(job_runs.c.id == id)
        .values(finished_at=at, status=status, result=result, error=error)
    )


def recent(conn: Connection, *, name: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    stmt = select(job_runs).order_by(job_runs.c.started_at.desc()).limit(limit)
    if name:
        stmt = stmt.where(job_runs.c.name == name)
    return [dict(r) for r in conn.execute(stmt).mappings()]


def try_lock(conn: Connection, name: str) -> bool:
    """A session-level advisory lock on PostgreSQL (held until ``unlock``); always True on SQLite,
    whose single writer already serialises the job's transactions."""
    if conn.dialect.name != "postgresql":
        return True
    return bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": crc32(name.encode())}).scalar())


def unlock(conn: Connection, name: str) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": crc32(name.encode())})
