"""Queries for CSV export: one program's members, ledger and events, in a stable order.

Each function returns a Core ``Select``; the caller runs it on a connection with
``stream_results``/``yield_per`` so that a program of any size is read in constant memory.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, select

from patron.domain.ledger import MEMBER_ACCOUNTS
from patron.storage.tables import events, journals, member_balances, members, postings

BALANCES = ("available", "pending", "reserved", "debt", "lifetime_earned", "expired", "redeemed")


def members_query(merchant_id: str, program_id: str) -> Select[Any]:
    """Members of the program with their cached balances (zero when they have none), by id."""
    balance_columns = [func.coalesce(member_balances.c[name], 0).label(name) for name in BALANCES]
    return (
        select(
            members.c.id,
            members.c.external_id,
            members.c.email,
            members.c.phone,
            members.c.name,
            members.c.card_number,
            members.c.status,
            members.c.enrolled_at,
            *balance_columns,
        )
        .select_from(
            members.outerjoin(
                member_balances,
                and_(
                    member_balances.c.merchant_id == members.c.merchant_id,
                    member_balances.c.member_id == members.c.id,
                ),
            )
        )
        .where(members.c.merchant_id == merchant_id, members.c.program_id == program_id)
        .order_by(members.c.id)
    )


def _window(column: Any, since: datetime | None, until: datetime | None) -> list[ColumnElement[bool]]:
    out: list[ColumnElement[bool]] = []
    if since is not None:
        out.append(column >= since)
    if until is not None:
        out.append(column < until)
    return out


def ledger_query(
    merchant_id: str, program_id: str, since: datetime | None = None, until: datetime | None = None
) -> Select[Any]:
    """Postings to member accounts of the program's journals, ``since <= occurred_at < until``,
    by occurred_at then id; with the journal's kind, reason and version and the event's external id."""
    return (
        select(
            postings.c.id,
            postings.c.occurred_at,
            postings.c.member_id,
            members.c.external_id,
            journals.c.kind,
            journals.c.reason,
            postings.c.account,
            postings.c.amount,
            events.c.external_id.label("event_id"),
            postings.c.lot_id,
            journals.c.program_version,
        )
        .select_from(
            postings.join(
                journals,
                and_(
                    journals.c.merchant_id == postings.c.merchant_id, journals.c.id == postings.c.journal_id
                ),
            )
            .join(
                members,
                and_(members.c.merchant_id == postings.c.merchant_id, members.c.id == postings.c.member_id),
            )
            .outerjoin(
                events,
                and_(events.c.merchant_id == journals.c.merchant_id, events.c.id == journals.c.event_id),
            )
        )
        .where(
            postings.c.merchant_id == merchant_id,
            journals.c.program_id == program_id,
            postings.c.account.in_([str(a) for a in MEMBER_ACCOUNTS]),
            *_window(postings.c.occurred_at, since, until),
        )
        .order_by(postings.c.occurred_at, postings.c.id)
    )


def events_query(
    merchant_id: str, program_id: str, since: datetime | None = None, until: datetime | None = None
) -> Select[Any]:
    """The program's events, ``since <= occurred_at < until``, by occurred_at then id; a refund or
    cancel names the external id of the event it refers to."""
    original = events.alias("original")
    return (
        select(
            events.c.external_id.label("id"),
            events.c.type,
            events.c.member_id,
            events.c.occurred_at,
            events.c.received_at,
            events.c.points,
            events.c.location_id,
            original.c.external_id.label("refers_to"),
        )
        .select_from(
            events.outerjoin(
                original,
                and_(original.c.merchant_id == events.c.merchant_id, original.c.id == events.c.refers_to),
            )
        )
        .where(
            events.c.merchant_id == merchant_id,
            events.c.program_id == program_id,
            *_window(events.c.occurred_at, since, until),
        )
        .order_by(events.c.occurred_at, events.c.id)
    )


def count_query(query: Select[Any]) -> Select[Any]:
    """``SELECT count(*)`` of a query, for a progress bar's total."""
    return select(func.count()).select_from(query.order_by(None).subquery())
