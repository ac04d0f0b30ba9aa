"""Each member's current segment (RFM), written by the ``segments`` job and read by earning
rules and rewards that target a segment. One row per member: the latest assessment."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    ForeignKeyConstraint,
    Index,
    PrimaryKeyConstraint,
    String,
    Table,
    delete,
    insert,
    select,
)

from patron.storage.tables import ID, UTCDateTime, metadata

member_segments = Table(
    "member_segments",
    metadata,
    Column("merchant_id", ID, nullable=False),
    Column("member_id", ID, nullable=False),
    Column("program_id", ID, nullable=False),
    Column("segment", String(40), nullable=False),
    Column("as_of", UTCDateTime(), nullable=False),
    Column("computed_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("merchant_id", "member_id"),
    Index(None, "merchant_id", "program_id", "segment"),
    ForeignKeyConstraint(["merchant_id", "member_id"], ["members.merchant_id", "members.id"]),
)


def segment_of(conn: Connection, merchant_id: str, member_id: str) -> str | None:
    stmt = select(member_segments.c.segment).where(
        member_segments.c.merchant_id == merchant_id, member_segments.c.member_id == member_id
    )
    found = conn.execute(stmt).scalar()
    return str(found) if found is not None else None


def replace_program(
    conn: Connection, *, merchant_id: str, program_id: str, rows: list[dict[str, Any]]
) -> int:
    """The program's segments become ``rows``; only members whose segment changed (or who left
    every segment) are rewritten, so a second run that finds the same changes nothing. Returns
    how many members changed."""
    where = (member_segments.c.merchant_id == merchant_id, member_segments.c.program_id == program_id)
    current = {
        str(m): str(s)
        for m, s in conn.execute(select(member_segments.c.member_id, member_segments.c.segment).where(*where))
    }
    wanted = {r["member_id"]: r for r in rows}
    gone = [m for m, s in current.items() if m not in wanted or wanted[m]["segment"] != s]
    fresh = [r for m, r in wanted.items() if current.get(m) != r["segment"]]
    for i in range(0, len(gone), 1000):
        conn.execute(
            delete(member_segments).where(*where, member_segments.c.member_id.in_(gone[i : i + 1000]))
        )
    if fresh:
        conn.execute(insert(member_segments), fresh)
    return len(set(gone) | {r["member_id"] for r in fresh})
