"""Programs and their versions (immutable once written)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, insert, select

from patron.storage.tables import program_versions, programs


def insert_program(conn: Connection, *, merchant_id: str, id: str, name: str, created_at: datetime) -> None:
    conn.execute(insert(programs).values(merchant_id=merchant_id, id=id, name=name, created_at=created_at))


def insert_version(conn: Connection, **values: Any) -> None:
    conn.execute(insert(program_versions).values(**values))


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


def version_at(conn: Connection, merchant_id: str, program_id: str, at: datetime) -> dict[str, Any] | None:
    """The version in effect at ``at``: the latest-numbered one effective by then, else the first."""
    base = select(program_versions).where(
        program_versions.c.merchant_id == merchant_id, program_versions.c.program_id == program_id
    )
    row = (
        conn.execute(
            base.where(program_versions.c.effective_from <= at)
            .order_by(program_versions.c.effective_from.desc(), program_versions.c.version.desc())
            .limit(1)
        )
        .mappings()
        .first()
    )
    if row is None:
        row = conn.execute(base.order_by(program_versions.c.version).limit(1)).mappings().first()
    return dict(row) if row else None
