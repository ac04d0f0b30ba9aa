"""Referrals: both sides rewarded on the referee's first qualifying purchase; both taken back if
that purchase is refunded in full.

The referee's lock is held by the event; the referrer's balance row is locked after it. Referral
links only point from newer members to older ones, so these locks never form a cycle.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from patron.domain.ledger import Journal, JournalKind
from patron.domain.program import Program
from patron.services.clock import utcnow
from patron.services.ledger import credit_member, take_back_bonus
from patron.storage import ledger as ledger_repo
from patron.storage import members as members_repo
from patron.storage import referrals as repo


def on_purchase(
    conn: Connection,
    *,
    merchant_id: str,
    referee: dict[str, Any],
    program: Program,
    version: int,
    event_id: str,
    at: datetime,
    amount: int,
    referee_debt: int,
) -> tuple[Journal | None, dict[str, Any] | None]:
    """Complete the referral if this is the referee's first qualifying purchase. Returns the
    referee's journal (for the caller's running balances) and what happened."""
    referrer_id = referee.get("referred_by")
    if not referrer_id or not (program.referrer_points or program.referee_points):
        return None, None
    if amount <= 0 or amount < program.referral_min_spend:
        return None, None
    if repo.of_referee(conn, merchant_id, referee["id"]) is not None:
        return None, None
    referrer = members_repo.get_member(conn, merchant_id, referrer_id)
    journal = credit_member(
        conn,
        merchant_id=merchant_id,
        member=referee,
        program=program,
        version=version,
        points=program.referee_points,
        debt=referee_debt,
        kind=JournalKind.REFERRAL,
        reason="welcome bonus: joined through a referral",
        at=at,
        event_id=event_id,
    )
    referrer_points = 0
    if referrer is not None and referrer["status"] == "active":
        balances = ledger_repo.lock_balances(conn, merchant_id, referrer_id)
        credit_member(
            conn,
            merchant_id=merchant_id,
            member=referrer,
            program=program,
            version=version,
            points=program.referrer_points,
            debt=balances.debt,
            kind=JournalKind.REFERRAL,
            reason=f"referral of {referee['id']} completed",
            at=at,
            event_id=event_id,
        )
        referrer_points = program.referrer_points
    repo.insert_referral(
        conn,
        {
            "merchant_id": merchant_id,
            "referee_id": referee["id"],
            "referrer_id": referrer_id,
            "status": "completed",
            "event_id": event_id,
            "referrer_points": referrer_points,
            "referee_points": program.referee_points,
            "completed_at": at,
            "revoked_at": None,
        },
    )
    return journal, {
        "referrer_id": referrer_id,
        "referrer_points": referrer_points,
        "referee_points": program.referee_points,
    }


def on_full_refund(
    conn: Connection,
    *,
    merchant_id: str,
    referee: dict[str, Any],
    program: Program,
    version: int,
    purchase_event_id: str,
    event_id: str,
    at: datetime,
) -> tuple[Journal | None, dict[str, Any] | None]:
    """Revoke the referral that ``purchase_event_id`` completed, taking back both bonuses."""
    referral = repo.by_event(conn, merchant_id, purchase_event_id)
    if referral is None or referral["status"] != "completed":
        return None, None
    journal = take_back_bonus(
        conn,
        merchant_id=merchant_id,
        member=referee,
        program=program,
        version=version,
        points=int(referral["referee_points"]),
        kind=JournalKind.REFERRAL_REVOKED,
        reason="referral revoked: the qualifying purchase was refunded",
        at=at,
        event_id=event_id,
    )
    referrer = members_repo.get_member(conn, merchant_id, referral["referrer_id"])
    if referrer is not None and referral["referrer_points"]:
        ledger_repo.lock_balances(conn, merchant_id, referrer["id"])
        take_back_bonus(
            conn,
            merchant_id=merchant_id,
            member=referrer,
            program=program,
            version=version,
            points=int(referral["referrer_points"]),
            kind=JournalKind.REFERRAL_REVOKED,
            reason=f"referral of {referee['id']} revoked: the qualifying purchase was refunded",
            at=at,
            event_id=event_id,
        )
    repo.revoke(conn, merchant_id, referee["id"], utcnow())
    return journal, {"referrer_id": referral["referrer_id"], "revoked": True}


def of_member(conn: Connection, *, merchant_id: str, member_id: str) -> dict[str, Any]:
    """Who referred the member (and whether it completed), and whom they referred."""
    mine = repo.of_referee(conn, merchant_id, member_id)
    made = repo.of_referrer(conn, merchant_id, member_id)
    return {
        "referred_by": mine,
        "referrals": made,
        "completed": sum(1 for r in made if r["status"] == "completed"),
    }
