"""Redemptions: reserve a reward (points to reserved, a single-use code), then redeem or cancel.

Every transition locks the member's balance row first (the same lock earning and adjustments
take), so two redemptions can never spend the same points. A reservation that is not redeemed
within the program's ``reservation_ttl_minutes`` lapses: the ``lapse-reservations`` job gives the
points back, to the same lots with their original expiry.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection

from patron.domain import rewards as rules
from patron.domain.errors import (
    Conflict,
    MemberInactive,
    NotFound,
    RedemptionCancelled,
    RedemptionExpired,
    RedemptionRedeemed,
    UnknownReward,
)
from patron.domain.ledger import Account, spending_order
from patron.domain.program import Period, Program
from patron.services.clock import utcnow
from patron.services.events import period_window
from patron.services.members import get_member
from patron.services.programs import program_at
from patron.services.segments import segment_of
from patron.services.tiers import tier_state
from patron.storage import ledger as ledger_repo
from patron.storage import redemptions as repo
from patron.storage.ids import new_id, random_code

CODE_LENGTH = 12  # 32^12 ≈ 10^18 codes: not guessable at a till or online


def view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "member_id": row["member_id"],
        "program_id": row["program_id"],
        "reward_id": row["reward_id"],
        "code": row["code"],
        "points": row["points"],
        "status": row["status"],
        "grants": row["grants"],
        "location_id": row["location_id"],
        "reserved_at": row["reserved_at"],
        "expires_at": row["expires_at"],
        "settled_at": row["settled_at"],
        "fulfilment_status": row.get("fulfilment_status"),
    }


def _standing(
    conn: Connection,
    merchant_id: str,
    member: dict[str, Any],
    program: Program,
    reward: rules.RewardRule,
    at: datetime,
) -> rules.Standing:
    state = tier_state(conn, merchant_id=merchant_id, member=member, program=program, as_of=at)
    since, until = period_window(Period(reward.limit_period), at, ZoneInfo(program.timezone))
    return rules.Standing(
        at=at,
        tier_id=state.level.id if state and state.level else None,
        available=ledger_repo.cached_balances(conn, merchant_id, member["id"]).available,
        stock_used=repo.count_live(conn, merchant_id, member["program_id"], reward.id)
        if reward.stock is not None
        else 0,
        member_used_in_period=repo.count_live(
            conn,
            merchant_id,
            member["program_id"],
            reward.id,
            member_id=member["id"],
            since=since,
            until=until,
        )
        if reward.limit_per_member is not None
        else 0,
        segment=segment_of(conn, merchant_id=merchant_id, member_id=member["id"])
        if reward.segments
        else None,
    )


def reserve(
    conn: Connection, *, merchant_id: str, member_id: str, reward_id: str, location_id: str | None = None
) -> dict[str, Any]:
    """Reserve ``reward_id`` for the member: its cost moves from available to reserved."""
    member = get_member(conn, merchant_id=merchant_id, member_id=member_id)
    if member["status"] != "active":
        raise MemberInactive(f"member is {member['status']}: no redemptions")
    now = utcnow()
    ledger_repo.lock_balances(conn, merchant_id, member_id)
    program, version = program_at(conn, merchant_id=merchant_id, program_id=member["program_id"], at=now)
    reward = program.reward(reward_id)
    if reward is None:
        raise UnknownReward(f"the program has no reward {reward_id!r}", field="reward_id")
    if reward.stock is not None:
        repo.lock_program(conn, merchant_id, member["program_id"])
    cost = rules.check_reservable(reward, _standing(conn, merchant_id, member, program, reward, now))
    return _hold(
        conn,
        merchant_id=merchant_id,
        member=member,
        program=program,
        version=version,
        reward_id=reward.id,
        points=cost,
        grants=rules_grants(reward, program),
        location_id=location_id,
        now=now,
    )


def _hold(
    conn: Connection,
    *,
    merchant_id: str,
    member: dict[str, Any],
    program: Program,
    version: int,
    reward_id: str,
    points: int,
    grants: dict[str, Any],
    location_id: str | None,
    now: datetime,
) -> dict[str, Any]:
    """Move ``points`` from available to reserved (soonest-expiring lots) and issue a code."""
    member_id = member["id"]
    lots = spending_order(ledger_repo.lot_balances(conn, merchant_id, member_id, Account.AVAILABLE))
    journal = rules.reservation(points, lots)
    journal_id = ledger_repo.write_journal(
        conn,
        journal,
        merchant_id=merchant_id,
        member_id=member_id,
        program_id=member["program_id"],
        program_version=version,
        occurred_at=now,
        created_at=now,
    )
    return _issue(
        conn,
        member,
        reward_id=reward_id,
        points=points,
        grants=grants,
        location_id=location_id,
        journal_id=journal_id,
        at=now,
        expires_at=now + timedelta(minutes=program.reservation_ttl_minutes),
    )


def _issue(
    conn: Connection,
    member: dict[str, Any],
    *,
    reward_id: str,
    points: int,
    grants: dict[str, Any],
    location_id: str | None,
    journal_id: str | None,
    at: datetime,
    expires_at: datetime,
) -> dict[str, Any]:
    """Record a reserved redemption with a fresh single-use code and announce it."""
    merchant_id = member["merchant_id"]
    code = random_code(CODE_LENGTH)
    while repo.code_taken(conn, merchant_id, code):
        code = random_code(CODE_LENGTH)
    row = {
        "merchant_id": merchant_id,
        "id": new_id("rdm"),
        "member_id": member["id"],
        "program_id": member["program_id"],
        "reward_id": reward_id,
        "code": code,
        "points": points,
        "status": rules.Status.RESERVED.value,
        "grants": grants,
        "location_id": location_id,
        "reserve_journal_id": journal_id,
        "settle_journal_id": None,
        "fulfilment_status": None,
        "reserved_at": at,
        "expires_at": expires_at,
        "settled_at": None,
    }
    repo.insert_redemption(conn, row)
    _announce(conn, "reward.issued", row, at)
    return view(row)


def _announce(conn: Connection, kind: str, row: dict[str, Any], at: datetime) -> None:
    from patron.services import outbox

    outbox.emit(
        conn,
        merchant_id=row["merchant_id"],
        type=kind,
        member_id=row["member_id"],
        occurred_at=at,
        data={k: row[k] for k in ("id", "reward_id", "code", "points", "grants", "location_id")},
    )


def stock_used(conn: Connection, *, merchant_id: str, program_id: str, reward_id: str) -> int:
    """How many of the reward's codes count against its stock (live and redeemed ones)."""
    return repo.count_live(conn, merchant_id, program_id, reward_id)


def grant(
    conn: Connection,
    *,
    merchant_id: str,
    member: dict[str, Any],
    program: Program,
    reward_id: str,
    at: datetime,
    valid_days: int,
) -> dict[str, Any]:
    """Issue ``reward_id`` to the member free (a filled punch card): a code valid ``valid_days``
    from ``at``, holding no points. Redeemed at the till like any reservation."""
    reward = program.reward(reward_id)
    if reward is None:
        raise UnknownReward(f"the program has no reward {reward_id!r}", field="reward_id")
    return _issue(
        conn,
        member,
        reward_id=reward.id,
        points=0,
        grants=rules_grants(reward, program),
        location_id=None,
        journal_id=None,
        at=at,
        expires_at=at + timedelta(days=valid_days),
    )


def pay_with_points(
    conn: Connection,
    *,
    merchant_id: str,
    member_id: str,
    points: int,
    order_amount: int,
    location_id: str | None = None,
) -> dict[str, Any]:
    """Reserve ``points`` as a payment toward an order of ``order_amount`` minor units. The code
    grants a discount worth the points; send the purchase with that discount on its lines so that
    only the rest of the order earns."""
    member = get_member(conn, merchant_id=merchant_id, member_id=member_id)
    if member["status"] != "active":
        raise MemberInactive(f"member is {member['status']}: no redemptions")
    now = utcnow()
    balances = ledger_repo.lock_balances(conn, merchant_id, member_id)
    program, version = program_at(conn, merchant_id=merchant_id, program_id=member["program_id"], at=now)
    if program.points_payment is None:
        raise UnknownReward("this program does not take points as payment", field="points")
    value = program.points_payment.check(points, order_amount=order_amount, available=balances.available)
    grants = {
        "kind": "points_payment",
        "name": "Paid with points",
        "amount": value,
        "currency": program.currency,
    }
    return _hold(
        conn,
        merchant_id=merchant_id,
        member=member,
        program=program,
        version=version,
        reward_id="points-payment",
        points=points,
        grants=grants,
        location_id=location_id,
        now=now,
    )


def reserve_many(
    conn: Connection,
    *,
    merchant_id: str,
    member_id: str,
    reward_ids: list[str],
    location_id: str | None = None,
) -> list[dict[str, Any]]:
    """Several rewards for one order, all or none (one transaction): each reservation is checked
    against what the previous ones left."""
    return [
        reserve(conn, merchant_id=merchant_id, member_id=member_id, reward_id=r, location_id=location_id)
        for r in reward_ids
    ]


def set_fulfilment(conn: Connection, *, merchant_id: str, redemption_id: str, status: str) -> dict[str, Any]:
    """Move a redeemed physical gift along ordered → shipped → delivered (or cancelled)."""
    row = _load(conn, merchant_id, redemption_id, None)
    if row["grants"].get("kind") != "physical_gift":
        raise Conflict("only physical gifts have a fulfilment status")
    if row["status"] != rules.Status.REDEEMED:
        raise Conflict("a gift is fulfilled once its redemption is redeemed")
    current = row.get("fulfilment_status") or "ordered"
    if status not in rules.FULFILMENT_NEXT.get(current, ()):
        allowed = ", ".join(rules.FULFILMENT_NEXT.get(current, ())) or "nothing (final)"
        raise Conflict(f"a gift that is {current} can become {allowed}, not {status}")
    repo.set_fulfilment(conn, merchant_id, redemption_id, status)
    return view(_load(conn, merchant_id, redemption_id, None))


def rules_grants(reward: rules.RewardRule, program: Program) -> dict[str, Any]:
    return reward.grants(program.currency)


def _load(conn: Connection, merchant_id: str, redemption_id: str | None, code: str | None) -> dict[str, Any]:
    row = (
        repo.get(conn, merchant_id, redemption_id)
        if redemption_id
        else repo.by_code(conn, merchant_id, code or "")
    )
    if row is None:
        raise NotFound("no such redemption" if redemption_id else "unknown code")
    return row


def _settle(
    conn: Connection,
    merchant_id: str,
    row: dict[str, Any],
    target: rules.Status,
    *,
    now: datetime,
    reason: str,
) -> dict[str, Any]:
    balances = ledger_repo.lock_balances(conn, merchant_id, row["member_id"])
    row = _load(conn, merchant_id, row["id"], None)  # re-read under the member's lock
    rules.check_transition(row["status"], target, expires_at=row["expires_at"], now=now)
    at = min(now, row["expires_at"]) if target == rules.Status.EXPIRED else now
    journal_id = None
    if row["reserve_journal_id"] is not None:  # a reward granted free holds no points
        journal = rules.settle(
            repo.held(conn, merchant_id, row["reserve_journal_id"]),
            status=target,
            reason=reason,
            debt=balances.debt,
        )
        _, version = program_at(conn, merchant_id=merchant_id, program_id=row["program_id"], at=now)
        journal_id = ledger_repo.write_journal(
            conn,
            journal,
            merchant_id=merchant_id,
            member_id=row["member_id"],
            program_id=row["program_id"],
            program_version=version,
            occurred_at=at,
            created_at=now,
        )
    repo.settle(conn, merchant_id, row["id"], status=target.value, journal_id=journal_id, at=at)
    _announce(conn, "reward.redeemed" if target == rules.Status.REDEEMED else "reward.cancelled", row, at)
    if target == rules.Status.REDEEMED and row["grants"].get("kind") == "physical_gift":
        repo.set_fulfilment(conn, merchant_id, row["id"], "ordered")
    return view(_load(conn, merchant_id, row["id"], None))


def redeem(
    conn: Connection, *, merchant_id: str, redemption_id: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """Consume a reservation: final. A lapsed, cancelled or used one is 409 with why."""
    row = _load(conn, merchant_id, redemption_id, code)
    return _settle(
        conn, merchant_id, row, rules.Status.REDEEMED, now=utcnow(), reason=f"redeemed {row['reward_id']}"
    )


def cancel(conn: Connection, *, merchant_id: str, redemption_id: str) -> dict[str, Any]:
    """Cancel a reservation: its points go back to available, to the same lots."""
    row = _load(conn, merchant_id, redemption_id, None)
    now = utcnow()
    target = (
        rules.Status.EXPIRED
        if row["status"] == "reserved" and now >= row["expires_at"]
        else rules.Status.CANCELLED
    )
    return _settle(conn, merchant_id, row, target, now=now, reason=f"cancelled {row['reward_id']}")


def validate_code(conn: Connection, *, merchant_id: str, code: str) -> dict[str, Any]:
    """What a code grants, for whom, and whether it can be used now (and if not, why)."""
    row = repo.by_code(conn, merchant_id, code.strip().upper())
    if row is None:
        raise NotFound("unknown code")
    member = get_member(conn, merchant_id=merchant_id, member_id=row["member_id"])
    now = utcnow()
    reason = None
    try:
        rules.check_transition(row["status"], rules.Status.REDEEMED, expires_at=row["expires_at"], now=now)
    except Conflict as exc:
        reason = {"type": exc.code, "detail": exc.detail}
    return {
        "valid": reason is None,
        "reason": reason,
        "redemption": view(row),
        "member": {"id": member["id"], "name": member["name"], "card_number": member["card_number"]},
    }


def get(conn: Connection, *, merchant_id: str, redemption_id: str) -> dict[str, Any]:
    return view(_load(conn, merchant_id, redemption_id, None))


def of_member(conn: Connection, *, merchant_id: str, member_id: str) -> list[dict[str, Any]]:
    get_member(conn, merchant_id=merchant_id, member_id=member_id)
    return [view(r) for r in repo.of_member(conn, merchant_id, member_id)]


def catalogue(conn: Connection, *, merchant_id: str, member_id: str) -> list[dict[str, Any]]:
    """The program's visible rewards, each with its cost for this member and whether they can
    reserve it now (and if not, why): what a till shows a member without a smartphone."""
    member = get_member(conn, merchant_id=merchant_id, member_id=member_id)
    now = utcnow()
    program, _ = program_at(conn, merchant_id=merchant_id, program_id=member["program_id"], at=now)
    out = []
    for reward in program.rewards:
        if not reward.visible(now):
            continue
        standing = _standing(conn, merchant_id, member, program, reward, now)
        why = None
        try:
            rules.check_reservable(reward, standing)
        except Conflict as exc:
            why = {"type": exc.code, "detail": exc.detail}
        out.append(
            {
                "reward_id": reward.id,
                "name": reward.name,
                "kind": str(reward.kind),
                "points": reward.cost_for(standing.tier_id),
                "grants": reward.grants(program.currency),
                "redeemable": why is None,
                "reason": why,
            }
        )
    return out


def lapse_due(
    conn: Connection, *, as_of: datetime, merchant_id: str | None = None, limit: int = 500
) -> tuple[int, int]:
    """Give back the points of reservations that lapsed by ``as_of``: (found, lapsed). One
    redeemed or cancelled at the till after it was found is left as the till left it."""
    rows = repo.lapsed(conn, as_of=as_of, merchant_id=merchant_id, limit=limit)
    lapsed = 0
    for row in sorted(rows, key=lambda r: (r["merchant_id"], r["member_id"])):
        try:
            _settle(
                conn,
                row["merchant_id"],
                row,
                rules.Status.EXPIRED,
                now=max(as_of, row["expires_at"]),
                reason="reservation lapsed",
            )
        except (RedemptionRedeemed, RedemptionCancelled, RedemptionExpired):
            continue  # settled meanwhile (refused before anything was written)
        lapsed += 1
    return len(rows), lapsed
