"""Programs and their versions (immutable once written)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, insert, select

from patron.storage.tables import program_versions, programs


def insert_program(conn: Connection, *, merchant_id: str, id: str, name: str, created_at: datetime) -> None:
    conn.execute(
        insert(programs), {"merchant_id": merchant_id, "id": id, "name": name, "created_at": created_at}
    )


def insert_version(conn: Connection, **values: Any) -> None:
    conn.execute(insert(program_versions), values)


def get_program(conn: Connection, merchant_id: str, program_id: str) -> dict[str, Any] | None:
    row = (
        conn.execute(
            select(programs).where(programs.c.merchant_id == merchant_id, programs.c.id == program_id)
        )
        .mappings()
        .first()
    )
    return dict(row) if row else None


def list_programs(conn: Connection, merchant_id: str) -> list[dict[str, Any]]:
    stmt = select(programs).where(programs.c.merchant_id == merchant_id).order_by(programs.c.created_at)
    return [dict(r) for r in conn.execute(stmt).mappings()]


def versions(conn: Connection, merchant_id: str, program_id: str) -> list[dict[str, Any]]:
    stmt = (
        select(program_versions)
        .where(
            program_versions.c.merchant_id == merchant_id,
            program_versions.c.program_id == program_id,
        )
        .order_by(program_versions.c.version)
    )
    return [dict(r) for r in conn.execute(stmt).mappings()]


def latest_version_number(conn: Connection, merchant_id: str, program_id: str) -> int:
    stmt = select(func.max(program_versions.c.version)).where(
        program_versions.c.merchant_id == merchant_id, program_versions.c.program_id == program_id
    )
    return int(conn.execute(stmt).scalar() or 0)


def version_times(conn: Connection, merchant_id: str, program_id: str) -> list[tuple[int, datetime]]:
    """Every version's number and effective time, oldest first (a light query: no bodies)."""
    stmt = (
        select(program_versions.c.version, program_versions.c.effective_from)
        .where(program_versions.c.merchant_id == merchant_id, program_versions.c.program_id == program_id)
        .order_by(program_versions.c.version)
    )
    return [(int(v), e) for v, e in conn.execute(stmt)]


def version_body(conn: Connection, merchant_id: str, program_id: str, version: int) -> dict[str, Any] | None:
    stmt = select(program_versions.c.body).where(
        program_versions.c.merchant_id == merchant_id,
        program_versions.c.program_id == program_id,
        program_versions.c.version == version,
    )
    body = conn.execute(stmt).scalar()
    return dict(body) if body is not None else None
