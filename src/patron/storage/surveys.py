"""Survey responses (NPS and CLI). Append-only: a response is written once and never changed.

The table lives on the shared ``metadata``; migration ``0011_surveys_cases`` creates it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
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
    insert,
    select,
)

from patron.storage.tables import ID, UTCDateTime, metadata

survey_responses = Table(
    "survey_responses",
    metadata,
    Column("merchant_id", ID, nullable=False),
    Column("id", ID, nullable=False),
    Column("external_id", String(200), nullable=False),  # the client's id, or one derived
    Column("program_id", ID, nullable=False),
    Column("member_id", ID, nullable=False),
    Column("kind", String(10), nullable=False),  # nps | cli
    Column("score", Integer),  # nps: 0-10
    Column("recommend", Integer),  # cli: 1-6 each
    Column("buy_again", Integer),
    Column("try_other", Integer),
    Column("comment", Text),
    Column("channel", String(20), nullable=False),  # api | portal
    Column("body_hash", String(64), nullable=False),
    Column("case_id", ID),
    Column("event_id", ID),  # the earning event recorded for answering, if any
    Column("occurred_at", UTCDateTime(), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("merchant_id", "id"),
    UniqueConstraint("merchant_id", "external_id"),
    Index(None, "merchant_id", "program_id", "occurred_at"),
    Index(None, "merchant_id", "member_id", "occurred_at"),
    ForeignKeyConstraint(["merchant_id", "member_id"], ["members.merchant_id", "members.id"]),
    ForeignKeyConstraint(["merchant_id", "program_id"], ["programs.merchant_id", "programs.id"]),
)


def insert_response(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(insert(survey_responses), values)


def by_external_id(conn: Connection, merchant_id: str, external_id: str) -> dict[str, Any] | None:
    stmt = select(survey_responses).where(
        survey_responses.c.merchant_id == merchant_id, survey_responses.c.external_id == external_id
    )
    row = conn.execute(stmt).mappings().first()
    return dict(row) if row else None


def responses_between(
    conn: Connection, *, merchant_id: str, program_id: str, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    """The program's responses with ``start <= occurred_at < end``: only the columns a report
    needs (the answers and the time), oldest first."""
    c = survey_responses.c
    stmt = (
        select(c.kind, c.score, c.recommend, c.buy_again, c.try_other, c.occurred_at)
        .where(
            c.merchant_id == merchant_id,
            c.program_id == program_id,
            c.occurred_at >= start,
            c.occurred_at < end,
        )
        .order_by(c.occurred_at, c.id)
    )
    return [dict(r) for r in conn.execute(stmt).mappings()]


def responses_of_member(
    conn: Connection, merchant_id: str, member_id: str, limit: int
) -> list[dict[str, Any]]:
    c = survey_responses.c
    stmt = (
        select(survey_responses)
        .where(c.merchant_id == merchant_id, c.member_id == member_id)
        .order_by(c.occurred_at.desc(), c.id.desc())
        .limit(limit)
    )
    return [dict(r) for r in conn.execute(stmt).mappings()]
