"""Balances, the ledger listing, manual adjustments and the books' verification."""

from __future__ import annotations

import base64
import json
from dataclasses import asdict
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection

from patron.domain.errors import InvalidInput, MemberInactive, NotFound
from patron.domain.expiry import lot_times
from patron.domain.ledger import (
    Account,
    Balances,
    Journal,
    JournalKind,
    credit,
    display_points,
    spending_order,
    take_back,
)
from patron.domain.program import Program
from patron.services.clock import utcnow
from patron.services.instant import in_range
from patron.services.programs import program_at
from patron.storage import events as events_repo
from patron.storage import ledger as repo
from patron.storage import members as members_repo
from patron.storage.ids import new_id


def balances(conn: Connection, *, merchant_id: str, member_id: str, as_of: datetime | None) -> Balances:
    """Cached balances for now; recomputed from postings for a past instant."""
    if as_of is None:
        return repo.cached_balances(conn, merchant_id, member_id)
    return repo.balances_as_of(conn, merchant_id, member_id, as_of)


def points_view(b: Balances) -> dict[str, int]:
    return asdict(b)


def balance(conn: Connection, *, merchant_id: str, member_id: str) -> dict[str, Any]:
    """The member's points now, from the balances kept with every posting: one primary-key read
    (for a past instant, ``GET /v1/members/{id}?as_of=`` sums the postings)."""
    found = repo.find_balances(conn, merchant_id, member_id)
    if found is None:
        raise NotFound(f"member {member_id} not found")
    return {"member_id": member_id, "points": points_view(found)}


def encode_cursor(at: datetime, posting_id: str) -> str:
    raw = json.dumps([at.isoformat(), posting_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, posting_id = json.loads(raw)
        parsed = datetime.fromisoformat(at)
        if parsed.tzinfo is None or not in_range(parsed) or not isinstance(posting_id, str):
            raise ValueError
    except (ValueError, TypeError, json.JSONDecodeError):
        raise InvalidInput("cursor is not valid; use next_cursor from the previous page", field="cursor")
    return parsed, posting_id


def ledger_page(
    conn: Connection,
    *,
    merchant_id: str,
    member_id: str,
    limit: int = 50,
    cursor: str | None = None,
    as_of: datetime | None = None,
) -> dict[str, Any]:
    """One page of the member's ledger, newest first. Per account, points sum to the balance."""
    if not 1 <= limit <= 500:
        raise InvalidInput("limit must be between 1 and 500", field="limit")
    after = decode_cursor(cursor) if cursor else None
    rows = repo.ledger_page(conn, merchant_id, member_id, limit=limit, after=after, as_of=as_of)
    more = len(rows) > limit
    rows = rows[:limit]
    external = _event_external_ids(conn, merchant_id, {r["event_id"] for r in rows if r["event_id"]})
    data = [
        {
            "id": r["id"],
            "type": r["kind"],
            "account": r["account"],
            "points": display_points(r["account"], r["amount"]),
            "occurred_at": r["occurred_at"],
            "event_id": external.get(r["event_id"]),
            "journal_id": r["journal_id"],
            "reason": r["reason"] or None,
            "lot_id": r["lot_id"],
            "expires_at": r["expires_at"],
            "program_version": r["program_version"],
        }
        for r in rows
    ]
    next_cursor = encode_cursor(rows[-1]["occurred_at"], rows[-1]["id"]) if more and rows else None
    return {"data": data, "next_cursor": next_cursor, "has_more": more}


def _event_external_ids(conn: Connection, merchant_id: str, ids: set[str]) -> dict[str, str]:
    return events_repo.external_ids(conn, merchant_id, ids) if ids else {}


#: the most points one manual adjustment may add or take back
MAX_ADJUSTMENT = 1_000_000_000


def adjust(
    conn: Connection,
    *,
    merchant_id: str,
    member_id: str,
    points: int,
    reason: str,
    occurred_at: datetime | None = None,
) -> dict[str, Any]:
    """A manual correction. A credit repays debt first; a debit cannot overdraw (409)."""
    member = members_repo.get_member(conn, merchant_id, member_id)
    if member is None:
        raise NotFound(f"member {member_id} not found")
    if member["status"] == "closed":
        raise MemberInactive("the member is closed")
    if points == 0:
        raise InvalidInput("an adjustment of 0 points changes nothing", field="points")
    if abs(points) > MAX_ADJUSTMENT:
        raise InvalidInput(f"adjust by at most {MAX_ADJUSTMENT:,} points at a time", field="points")
    if not reason.strip():
        raise InvalidInput("an adjustment needs a reason", field="reason")
    if len(reason.strip()) > 500:
        raise InvalidInput("keep the reason under 500 characters", field="reason")
    now = utcnow()
    at = occurred_at or now
    program, version = program_at(conn, merchant_id=merchant_id, program_id=member["program_id"], at=at)
    current = repo.lock_balances(conn, merchant_id, member_id)
    lot = None
    if points > 0:
        lot_id = new_id("lot")
        journal = credit(
            points,
            debt=current.debt,
            into=Account.AVAILABLE,
            lot_id=lot_id,
            counter=Account.ADJUSTMENTS,
        )
        assert journal is not None
        journal = type(journal)(JournalKind.ADJUSTMENT, journal.postings, reason)
        if any(p.lot_id for p in journal.postings):
            available_from, expires_at = lot_times(
                at, pending_days=0, policy=program.expiry, tz=ZoneInfo(program.timezone)
            )
            lot = repo.NewLot(lot_id, points - min(points, current.debt), at, available_from, expires_at)
    else:
        lots = spending_order(repo.lot_balances(conn, merchant_id, member_id, Account.AVAILABLE))
        journal = take_back(
            -points,
            sources=[(Account.AVAILABLE, lot) for lot in lots],
            counter=Account.ADJUSTMENTS,
            kind=JournalKind.ADJUSTMENT,
            shortfall_to=None,
            reason=reason,
        )
    assert journal is not None
    journal_id = repo.write_journal(
        conn,
        journal,
        merchant_id=merchant_id,
        member_id=member_id,
        program_id=member["program_id"],
        program_version=version,
        occurred_at=at,
        created_at=now,
        lot=lot,
    )
    balances = points_view(repo.cached_balances(conn, merchant_id, member_id))
    from patron.services import outbox

    outbox.emit(
        conn,
        merchant_id=merchant_id,
        type=outbox.POINTS_ADJUSTED,
        member_id=member_id,
        occurred_at=at,
        data={"journal_id": journal_id, "points": points, "reason": reason, "balances": balances},
    )
    return {
        "id": journal_id,
        "member_id": member_id,
        "points": points,
        "reason": reason,
        "occurred_at": at,
        "balances": balances,
    }


def verify(conn: Connection, *, merchant_id: str | None = None) -> list[str]:
    return repo.verify(conn, merchant_id)


def expiring(
    conn: Connection,
    *,
    merchant_id: str,
    within_days: int,
    member_id: str | None = None,
    program_id: str | None = None,
) -> list[dict[str, Any]]:
    """Points that expire within ``within_days``: per lot for one member, or per member for the
    whole program (for reminders: "120 points expire on 1 March")."""
    from datetime import timedelta

    if not 1 <= within_days <= 3650:
        raise InvalidInput("within_days must be between 1 and 3650", field="within_days")
    now = utcnow()
    rows = repo.expiring_lots(
        conn, merchant_id, after=now, until=now + timedelta(days=within_days), member_id=member_id
    )
    if member_id is not None:
        return [
            {"lot_id": r["lot_id"], "points": int(r["points"]), "expires_at": r["expires_at"]} for r in rows
        ]
    per: dict[str, dict[str, Any]] = {}
    for r in rows:
        entry = per.setdefault(
            r["member_id"], {"member_id": r["member_id"], "points": 0, "first_expires_at": r["expires_at"]}
        )
        entry["points"] += int(r["points"])
    return list(per.values())


def credit_member(
    conn: Connection,
    *,
    merchant_id: str,
    member: dict[str, Any],
    program: Program,
    version: int,
    points: int,
    debt: int,
    kind: JournalKind,
    reason: str,
    at: datetime,
    event_id: str | None = None,
) -> Journal | None:
    """Credit a bonus (milestone, referral) to a member: debt first, the rest into a new lot with
    the program's expiry. The caller holds the member's lock and passes their current debt."""
    lot_id = new_id("lot")
    journal = credit(
        points,
        debt=debt,
        into=Account.AVAILABLE,
        lot_id=lot_id,
        counter=Account.ISSUED,
        kind=kind,
        reason=reason,
    )
    if journal is None:
        return None
    lot_points = sum(p.amount for p in journal.postings if p.lot_id)
    _, expires_at = lot_times(at, pending_days=0, policy=program.expiry, tz=ZoneInfo(program.timezone))
    repo.write_journal(
        conn,
        journal,
        merchant_id=merchant_id,
        member_id=member["id"],
        program_id=member["program_id"],
        program_version=version,
        occurred_at=at,
        created_at=utcnow(),
        event_id=event_id,
        lot=repo.NewLot(lot_id, lot_points, at, at, expires_at) if lot_points else None,
    )
    return journal


def take_back_bonus(
    conn: Connection,
    *,
    merchant_id: str,
    member: dict[str, Any],
    program: Program,
    version: int,
    points: int,
    kind: JournalKind,
    reason: str,
    at: datetime,
    event_id: str | None = None,
) -> Journal | None:
    """Take back a bonus from a member (locked by the caller): soonest-expiring lots first, any
    shortfall to debt or written off by the program's return policy."""
    member_id = member["id"]
    avail = spending_order(repo.lot_balances(conn, merchant_id, member_id, Account.AVAILABLE))
    pend = spending_order(repo.lot_balances(conn, merchant_id, member_id, Account.PENDING))
    journal = take_back(
        points,
        sources=[(Account.AVAILABLE, lot) for lot in avail] + [(Account.PENDING, lot) for lot in pend],
        counter=Account.ISSUED,
        kind=kind,
        shortfall_to=Account.DEBT if program.return_policy == "debt" else Account.WRITTEN_OFF,
        reason=reason,
    )
    if journal is None:
        return None
    repo.write_journal(
        conn,
        journal,
        merchant_id=merchant_id,
        member_id=member_id,
        program_id=member["program_id"],
        program_version=version,
        occurred_at=at,
        created_at=utcnow(),
        event_id=event_id,
    )
    return journal
