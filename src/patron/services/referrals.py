"""Referrals: both sides rewarded on the referee's first qualifying purchase; both taken back if
that purchase is refunded in full.

Before crediting, the referral is checked for fraud (self-referral, velocity, existing customers:
:mod:`patron.domain.referrals`). One that trips a check is recorded with status ``review`` and a
reason and credits nobody until it is approved (credited then, the same way) or rejected. When a
referrer's completed referrals reach a referral milestone, its bonus is credited once, recorded on
the referral that reached it; a later revocation does not take it back.

The referee's lock is held by the event (or taken first on approval); the referrer's balance row is
locked after it. Referral links only point from newer members to older ones, so these locks never
form a cycle.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from patron.domain import referrals as rules
from patron.domain.errors import Conflict, MemberInactive, NotFound
from patron.domain.ledger import Balances, Journal, JournalKind
from patron.domain.program import Program
from patron.services.clock import utcnow
from patron.services.ledger import credit_member, take_back_bonus
from patron.services.programs import get_program, program_at
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
    fingerprint: str | None = None,
    order: dict[str, Any] | None = None,
) -> tuple[Journal | None, dict[str, Any] | None]:
    """Complete the referral if this is the referee's first qualifying purchase. Returns the
    referee's journal (for the caller's running balances) and what happened. ``fingerprint`` is
    the purchase's own payment fingerprint, when it carries one; ``order`` its attributes (who
    placed it: ``customer_email``, ``device_id``, ``ip_address``, ``shipping_address``)."""
    referrer_id = referee.get("referred_by")
    if not referrer_id or not (program.referrer_points or program.referee_points):
        return None, None
    if amount <= 0 or amount < program.referral_min_spend:
        return None, None
    if repo.of_referee(conn, merchant_id, referee["id"]) is not None:
        return None, None
    referrer = members_repo.get_member(conn, merchant_id, referrer_id)
    active = referrer is not None and referrer["status"] == "active"
    balances = ledger_repo.lock_balances(conn, merchant_id, referrer_id) if active else None
    reason = (
        _review_reason(conn, merchant_id, referee, referrer, program, at, fingerprint, order or {})
        if referrer
        else None
    )
    row = {
        "merchant_id": merchant_id,
        "referee_id": referee["id"],
        "referrer_id": referrer_id,
        "event_id": event_id,
        "completed_at": at,
        "revoked_at": None,
    }
    if reason is not None:
        repo.insert_referral(
            conn, {**row, "status": "review", "reason": reason, "referrer_points": 0, "referee_points": 0}
        )
        return None, {
            "referrer_id": referrer_id,
            "status": "review",
            "reason": reason,
            "referrer_points": 0,
            "referee_points": 0,
        }
    journal, referrer_balances = _credit_both(
        conn,
        merchant_id=merchant_id,
        referee=referee,
        referrer=referrer if active else None,
        referrer_balances=balances,
        program=program,
        version=version,
        referee_debt=referee_debt,
        at=at,
        event_id=event_id,
    )
    referrer_points = program.referrer_points if active else 0
    repo.insert_referral(
        conn,
        {
            **row,
            "status": "completed",
            "referrer_points": referrer_points,
            "referee_points": program.referee_points,
        },
    )
    milestones = _milestones(
        conn,
        merchant_id=merchant_id,
        referee_id=referee["id"],
        referrer=referrer if active else None,
        balances=referrer_balances,
        program=program,
        version=version,
        at=at,
        event_id=event_id,
    )
    out: dict[str, Any] = {
        "referrer_id": referrer_id,
        "status": "completed",
        "referrer_points": referrer_points,
        "referee_points": program.referee_points,
    }
    if milestones:
        out["milestones"] = milestones
    return journal, out


def _review_reason(
    conn: Connection,
    merchant_id: str,
    referee: dict[str, Any],
    referrer: dict[str, Any],
    program: Program,
    at: datetime,
    fingerprint: str | None = None,
    order: dict[str, Any] | None = None,
) -> str | None:
    """Why the referral must be reviewed before anyone is credited, or None."""

    def party(member: dict[str, Any]) -> rules.Party:
        prints, devices, shipped = repo.order_marks(conn, merchant_id, member["id"])
        attrs = member.get("attributes") or {}
        own = attrs.get("payment_fingerprint")
        if isinstance(own, str) and own:
            prints.add(own)
        if member is referee and fingerprint:
            prints.add(fingerprint)
        addresses = {
            rules.normalise_address(a) for a in (*shipped, attrs.get("address")) if isinstance(a, str)
        }
        return rules.Party(
            email=member.get("email"),
            phone=member.get("phone"),
            fingerprints=frozenset(prints),
            devices=frozenset(devices),
            addresses=frozenset(a for a in addresses if a),
        )

    order = order or {}
    placed = rules.Order(
        email=order.get("customer_email") if isinstance(order.get("customer_email"), str) else None,
        devices=frozenset(
            f"{key}:{order[key]}" for key in ("device_id", "ip_address") if isinstance(order.get(key), str)
        ),
        address=order.get("shipping_address") if isinstance(order.get("shipping_address"), str) else None,
    )
    week = at - timedelta(days=7)
    recent = (
        repo.completed_since(conn, merchant_id, referrer["id"], week)
        if program.referral_max_per_week is not None
        else []
    )
    referee_party = party(referee)
    same_address: list[datetime] = []
    if program.referral_max_per_week is not None and referee_party.addresses:
        for completed_at, attrs in repo.completed_at_addresses(conn, merchant_id, week):
            address = rules.normalise_address((attrs or {}).get("address"))
            if address in referee_party.addresses:
                same_address.append(completed_at)
    return rules.review_reason(
        referee=referee_party,
        order=placed,
        address_completed_at=same_address,
        referrer=party(referrer),
        referee_enrolled_at=referee["enrolled_at"],
        referrer_completed_at=recent,
        at=at,
        max_per_week=program.referral_max_per_week,
        max_days_to_first_purchase=program.referral_max_days_to_first_purchase,
    )


def _credit_both(
    conn: Connection,
    *,
    merchant_id: str,
    referee: dict[str, Any],
    referrer: dict[str, Any] | None,
    referrer_balances: Balances | None,
    program: Program,
    version: int,
    referee_debt: int,
    at: datetime,
    event_id: str,
) -> tuple[Journal | None, Balances | None]:
    """Credit the referee's bonus and, if given (locked, active), the referrer's. Returns the
    referee's journal and the referrer's balances afterwards."""
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
    if referrer is None or referrer_balances is None:
        return journal, None
    theirs = credit_member(
        conn,
        merchant_id=merchant_id,
        member=referrer,
        program=program,
        version=version,
        points=program.referrer_points,
        debt=referrer_balances.debt,
        kind=JournalKind.REFERRAL,
        reason=f"referral of {referee['id']} completed",
        at=at,
        event_id=event_id,
    )
    return journal, referrer_balances.apply(theirs.postings) if theirs else referrer_balances


def _milestones(
    conn: Connection,
    *,
    merchant_id: str,
    referee_id: str,
    referrer: dict[str, Any] | None,
    balances: Balances | None,
    program: Program,
    version: int,
    at: datetime,
    event_id: str,
) -> list[dict[str, int]]:
    """Credit the referral milestones the referrer (locked) has now reached for the first time,
    recording them on this referral."""
    if referrer is None or balances is None or not program.referral_milestones:
        return []
    completed = repo.count_completed(conn, merchant_id, referrer["id"])
    credited = repo.milestone_counts(conn, merchant_id, referrer["id"])
    due = rules.milestones_due(program.referral_milestones, completed, credited)
    done = []
    for count, points in due:
        journal = credit_member(
            conn,
            merchant_id=merchant_id,
            member=referrer,
            program=program,
            version=version,
            points=points,
            debt=balances.debt,
            kind=JournalKind.REFERRAL,
            reason=f"referral milestone: {count} completed referrals",
            at=at,
            event_id=event_id,
        )
        if journal is not None:
            balances = balances.apply(journal.postings)
        done.append({"count": count, "points": points})
    if done:
        repo.add_milestones(conn, merchant_id, referee_id, done)
    return done


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
    """Revoke the referral that ``purchase_event_id`` completed, taking back both bonuses. One
    still waiting for review is revoked without crediting or taking back anything."""
    referral = repo.by_event(conn, merchant_id, purchase_event_id)
    if referral is not None and referral["status"] == "review":
        repo.revoke(conn, merchant_id, referee["id"], utcnow())
        return None, {"referrer_id": referral["referrer_id"], "revoked": True}
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


def review_queue(conn: Connection, *, merchant_id: str, program_id: str) -> list[dict[str, Any]]:
    """The program's referrals waiting for review, oldest first."""
    get_program(conn, merchant_id=merchant_id, program_id=program_id)
    return repo.in_review(conn, merchant_id, program_id)


def _waiting(conn: Connection, merchant_id: str, referee_id: str) -> tuple[dict[str, Any], Balances]:
    """The referral in review, with the referee's balances locked (taken before the referrer's)."""
    if repo.of_referee(conn, merchant_id, referee_id) is None:
        raise NotFound(f"no referral of member {referee_id}")
    balances = ledger_repo.lock_balances(conn, merchant_id, referee_id)
    referral = repo.of_referee(conn, merchant_id, referee_id)  # read again under the lock
    assert referral is not None
    if referral["status"] != "review":
        raise Conflict(f"the referral of {referee_id} is {referral['status']}, not in review")
    return referral, balances


def approve(conn: Connection, *, merchant_id: str, referee_id: str) -> dict[str, Any]:
    """Approve a referral in review: credit both sides now, as a completion would have."""
    referral, balances = _waiting(conn, merchant_id, referee_id)
    referee = members_repo.get_member(conn, merchant_id, referee_id)
    if referee is None:
        raise NotFound(f"member {referee_id} not found")
    if referee["status"] != "active":
        raise MemberInactive(f"member is {referee['status']}: reject the referral instead")
    now = utcnow()
    program, version = program_at(conn, merchant_id=merchant_id, program_id=referee["program_id"], at=now)
    referrer = members_repo.get_member(conn, merchant_id, referral["referrer_id"])
    active = referrer is not None and referrer["status"] == "active"
    referrer_balances = (
        ledger_repo.lock_balances(conn, merchant_id, referral["referrer_id"]) if active else None
    )
    _, after = _credit_both(
        conn,
        merchant_id=merchant_id,
        referee=referee,
        referrer=referrer if active else None,
        referrer_balances=referrer_balances,
        program=program,
        version=version,
        referee_debt=balances.debt,
        at=now,
        event_id=referral["event_id"],
    )
    repo.set_review(
        conn,
        merchant_id,
        referee_id,
        status="completed",
        at=now,
        values={
            "referrer_points": program.referrer_points if active else 0,
            "referee_points": program.referee_points,
        },
    )
    _milestones(
        conn,
        merchant_id=merchant_id,
        referee_id=referee_id,
        referrer=referrer if active else None,
        balances=after,
        program=program,
        version=version,
        at=now,
        event_id=referral["event_id"],
    )
    found = repo.of_referee(conn, merchant_id, referee_id)
    assert found is not None
    return found


def reject(conn: Connection, *, merchant_id: str, referee_id: str) -> dict[str, Any]:
    """Reject a referral in review: nobody is credited, now or later."""
    _waiting(conn, merchant_id, referee_id)
    repo.set_review(conn, merchant_id, referee_id, status="rejected", at=utcnow(), values={})
    found = repo.of_referee(conn, merchant_id, referee_id)
    assert found is not None
    return found
