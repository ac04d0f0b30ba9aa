"""Households: create, join, change roles and permissions, leave, audit, and pooled redemptions.

Every change to a household first locks its row (``SELECT ... FOR UPDATE`` on PostgreSQL;
SQLite's ``BEGIN IMMEDIATE`` has one writer), so that its size is counted under the lock. Every
change is written to the append-only ``household_events`` with the actor (the API key) and a
reason.

A pooled redemption locks the household, then every current member's balances in id order (so
two pooled redemptions of one household, or a pooled one and a member's own, never wait on each
other in opposite orders), moves the shortfall to the redeemer with one ``household_transfer``
journal (``domain/households.py`` rule 6), and then reserves the reward for the redeemer with
the ordinary redemption service, all in one transaction: if the reservation fails, nothing
moved. Cancelling that redemption later returns the points to the redeemer, who holds them in
the pool like their own.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from patron.domain import households as rules
from patron.domain.errors import Conflict, InvalidInput, MemberInactive, NotFound, UnknownReward
from patron.domain.households import EventKind, HouseholdSpec, Membership, Role
from patron.domain.ledger import Account
from patron.services import redemptions
from patron.services.clock import utcnow
from patron.services.programs import program_at
from patron.services.tiers import tier_state
from patron.storage import households as repo
from patron.storage import ledger as ledger_repo
from patron.storage import members as members_repo
from patron.storage import programs as programs_repo
from patron.storage.ids import new_id

EVENTS_PAGE_MAX = 500


def spec_at(conn: Connection, *, merchant_id: str, program_id: str, at: datetime) -> HouseholdSpec | None:
    """The program's ``households`` setting in effect at ``at`` (None: not offered)."""
    _, version = program_at(conn, merchant_id=merchant_id, program_id=program_id, at=at)
    body = programs_repo.version_body(conn, merchant_id, program_id, version) or {}
    raw = body.get("households")
    return HouseholdSpec(**raw) if raw else None


def _require_spec(conn: Connection, merchant_id: str, program_id: str, at: datetime) -> HouseholdSpec:
    spec = spec_at(conn, merchant_id=merchant_id, program_id=program_id, at=at)
    if spec is None:
        raise rules.HouseholdsNotOffered(
            f"program {program_id} does not offer households: add a 'households' setting to the "
            'program, e.g. {"max_members": 6, "cooldown_days": 90, "spending": "pool"}',
            field="program_id",
        )
    return spec


def _membership(row: dict[str, Any] | None) -> Membership | None:
    if row is None:
        return None
    return Membership(
        household_id=row["household_id"],
        member_id=row["member_id"],
        role=Role(row["role"]),
        can_spend=bool(row["can_spend"]),
        joined_at=row["joined_at"],
        left_at=row["left_at"],
    )


def _household(
    conn: Connection, merchant_id: str, household_id: str, *, lock: bool = False
) -> dict[str, Any]:
    row = repo.get_household(conn, merchant_id, household_id, lock=lock)
    if row is None:
        raise NotFound(f"household {household_id} not found")
    return row


def _open_household(conn: Connection, merchant_id: str, household_id: str) -> dict[str, Any]:
    row = _household(conn, merchant_id, household_id, lock=True)
    if row["dissolved_at"] is not None:
        raise rules.HouseholdClosed(
            f"household {household_id} was dissolved on {row['dissolved_at'].isoformat()}"
        )
    return row


def _member_of_program(
    conn: Connection, merchant_id: str, member_id: str, program_id: str, *, field: str
) -> dict[str, Any]:
    member = members_repo.get_member(conn, merchant_id, member_id)
    if member is None:
        raise NotFound(f"member {member_id} not found")
    if member["program_id"] != program_id:
        raise rules.WrongProgram(f"member {member_id} is not in the household's program", field=field)
    if member["status"] == "closed":
        raise MemberInactive(f"member {member_id} is closed")
    return member


def _current(conn: Connection, merchant_id: str, household_id: str, member_id: str) -> Membership:
    m = _membership(repo.membership_of(conn, merchant_id, member_id))
    if m is None or not m.current or m.household_id != household_id:
        raise NotFound(f"member {member_id} is not in household {household_id}")
    return m


def _audit(
    conn: Connection,
    *,
    merchant_id: str,
    household_id: str,
    member_id: str,
    kind: EventKind,
    actor: str,
    reason: str,
    at: datetime,
    **details: Any,
) -> None:
    repo.insert_event(
        conn,
        {
            "merchant_id": merchant_id,
            "household_id": household_id,
            "member_id": member_id,
            "kind": kind.value,
            "actor": actor,
            "reason": reason,
            "details": details,
            "occurred_at": at,
        },
    )


def household_view(conn: Connection, *, merchant_id: str, row: dict[str, Any]) -> dict[str, Any]:
    """The household with its members, roles, permissions, each member's available points and the
    pool (the available points of its active members)."""
    spec = spec_at(conn, merchant_id=merchant_id, program_id=row["program_id"], at=utcnow())
    spending = spec.spending if spec else None
    members = []
    pool = 0
    for m in repo.current_members(conn, merchant_id, row["id"]):
        member = members_repo.get_member(conn, merchant_id, m["member_id"]) or {}
        available = ledger_repo.cached_balances(conn, merchant_id, m["member_id"]).available
        in_pool = member.get("status") == "active"
        pool += available if in_pool else 0
        members.append(
            {
                "member_id": m["member_id"],
                "name": member.get("name"),
                "role": m["role"],
                "can_spend": bool(m["can_spend"]),
                "may_spend_pool": bool(spending)
                and rules.may_spend(spending or "", m["role"], m["can_spend"]),
                "joined_at": m["joined_at"],
                "available": available,
                "in_pool": in_pool,
            }
        )
    return {
        "id": row["id"],
        "program_id": row["program_id"],
        "name": row["name"],
        "head_member_id": row["head_member_id"],
        "created_at": row["created_at"],
        "dissolved_at": row["dissolved_at"],
        "settings": (
            {"max_members": spec.max_members, "cooldown_days": spec.cooldown_days, "spending": spec.spending}
            if spec
            else None
        ),
        "members": members,
        "pool": {"available": pool},
    }


def create_household(
    conn: Connection,
    *,
    merchant_id: str,
    program_id: str,
    head_member_id: str,
    name: str,
    actor: str,
    reason: str = "",
) -> dict[str, Any]:
    """A new household of ``program_id`` headed by ``head_member_id`` (who must not be in another
    household, nor within the cooldown after leaving one)."""
    if programs_repo.get_program(conn, merchant_id, program_id) is None:
        raise NotFound(f"program {program_id} not found")
    now = utcnow()
    spec = _require_spec(conn, merchant_id, program_id, now)
    _member_of_program(conn, merchant_id, head_member_id, program_id, field="head_member_id")
    household_id = new_id("hh")
    last = _membership(repo.membership_of(conn, merchant_id, head_member_id))
    rules.check_join(spec, household_id=household_id, size=0, last=last, now=now)
    row = {
        "merchant_id": merchant_id,
        "id": household_id,
        "program_id": program_id,
        "head_member_id": head_member_id,
        "name": name,
        "created_at": now,
        "dissolved_at": None,
    }
    repo.insert_household(conn, row)
    if not repo.join(
        conn,
        merchant_id=merchant_id,
        member_id=head_member_id,
        household_id=household_id,
        role=Role.HEAD.value,
        can_spend=True,
        at=now,
        previous_left_at=last.left_at if last else None,
    ):
        raise Conflict("the member's household changed meanwhile; retry")
    _audit(
        conn,
        merchant_id=merchant_id,
        household_id=household_id,
        member_id=head_member_id,
        kind=EventKind.CREATED,
        actor=actor,
        reason=reason,
        at=now,
        role=Role.HEAD.value,
    )
    return household_view(conn, merchant_id=merchant_id, row=row)


def get_household(conn: Connection, *, merchant_id: str, household_id: str) -> dict[str, Any]:
    return household_view(conn, merchant_id=merchant_id, row=_household(conn, merchant_id, household_id))


def add_member(
    conn: Connection,
    *,
    merchant_id: str,
    household_id: str,
    member_id: str,
    role: str,
    can_spend: bool,
    actor: str,
    reason: str = "",
) -> dict[str, Any]:
    """Add a member as ``adult`` or ``member``: 409 when the household is full, the member is in a
    household, or left another one within the cooldown."""
    hh = _open_household(conn, merchant_id, household_id)
    now = utcnow()
    spec = _require_spec(conn, merchant_id, hh["program_id"], now)
    new_role = Role(role)
    rules.check_joining_role(new_role)
    _member_of_program(conn, merchant_id, member_id, hh["program_id"], field="member_id")
    last = _membership(repo.membership_of(conn, merchant_id, member_id))
    size = len(repo.current_members(conn, merchant_id, household_id))
    rules.check_join(spec, household_id=household_id, size=size, last=last, now=now)
    if not repo.join(
        conn,
        merchant_id=merchant_id,
        member_id=member_id,
        household_id=household_id,
        role=new_role.value,
        can_spend=can_spend,
        at=now,
        previous_left_at=last.left_at if last else None,
    ):
        raise Conflict("the member's household changed meanwhile; retry")
    _audit(
        conn,
        merchant_id=merchant_id,
        household_id=household_id,
        member_id=member_id,
        kind=EventKind.JOINED,
        actor=actor,
        reason=reason,
        at=now,
        role=new_role.value,
        can_spend=can_spend,
    )
    return household_view(conn, merchant_id=merchant_id, row=hh)


def update_member(
    conn: Connection,
    *,
    merchant_id: str,
    household_id: str,
    member_id: str,
    role: str | None,
    can_spend: bool | None,
    actor: str,
    reason: str = "",
) -> dict[str, Any]:
    """Change a member's role or permission to spend the pool. Making someone ``head`` hands
    headship over: the previous head becomes an adult."""
    if role is None and can_spend is None:
        raise InvalidInput("send 'role', 'can_spend' or both")
    hh = _open_household(conn, merchant_id, household_id)
    m = _current(conn, merchant_id, household_id, member_id)
    now = utcnow()

    def note(subject: str, kind: EventKind, **details: Any) -> None:
        _audit(
            conn,
            merchant_id=merchant_id,
            household_id=household_id,
            member_id=subject,
            kind=kind,
            actor=actor,
            reason=reason,
            at=now,
            **details,
        )

    if role is not None and Role(role) != m.role:
        new_role = Role(role)
        rules.check_role_change(m, new_role)
        if new_role == Role.HEAD:
            old_head = hh["head_member_id"]
            repo.update_membership(conn, merchant_id, old_head, role=Role.ADULT.value)
            repo.update_household(conn, merchant_id, household_id, head_member_id=member_id)
            hh = {**hh, "head_member_id": member_id}
            note(old_head, EventKind.ROLE_CHANGED, old=Role.HEAD.value, new=Role.ADULT.value)
        repo.update_membership(conn, merchant_id, member_id, role=new_role.value)
        note(member_id, EventKind.ROLE_CHANGED, old=m.role.value, new=new_role.value)
    if can_spend is not None and can_spend != m.can_spend:
        repo.update_membership(conn, merchant_id, member_id, can_spend=can_spend)
        note(member_id, EventKind.PERMISSION_CHANGED, old=m.can_spend, new=can_spend)
    return household_view(conn, merchant_id=merchant_id, row=hh)


def remove_member(
    conn: Connection,
    *,
    merchant_id: str,
    household_id: str,
    member_id: str,
    by_head: bool,
    actor: str,
    reason: str = "",
) -> dict[str, Any]:
    """The member leaves (or, ``by_head``, is removed). The head leaves last, which dissolves the
    household. The cooldown before joining another household starts now."""
    hh = _open_household(conn, merchant_id, household_id)
    m = _current(conn, merchant_id, household_id, member_id)
    size = len(repo.current_members(conn, merchant_id, household_id))
    rules.check_leave(m, size=size)
    now = utcnow()
    repo.update_membership(conn, merchant_id, member_id, left_at=now)
    kind = EventKind.REMOVED if by_head and m.role != Role.HEAD else EventKind.LEFT
    _audit(
        conn,
        merchant_id=merchant_id,
        household_id=household_id,
        member_id=member_id,
        kind=kind,
        actor=actor,
        reason=reason,
        at=now,
        role=m.role.value,
    )
    if m.role == Role.HEAD:
        repo.update_household(conn, merchant_id, household_id, dissolved_at=now)
    spec = spec_at(conn, merchant_id=merchant_id, program_id=hh["program_id"], at=now)
    left = Membership(household_id, member_id, m.role, m.can_spend, m.joined_at, now)
    return {
        "household_id": household_id,
        "member_id": member_id,
        "event": kind.value,
        "left_at": now,
        "cooldown_until": rules.cooldown_until(left, spec) if spec else None,
        "household_dissolved": m.role == Role.HEAD,
    }


def household_of_member(conn: Connection, *, merchant_id: str, member_id: str) -> dict[str, Any]:
    """The member's household now (or null), their role, and until when they wait to join
    another one after leaving."""
    member = members_repo.get_member(conn, merchant_id, member_id)
    if member is None:
        raise NotFound(f"member {member_id} not found")
    m = _membership(repo.membership_of(conn, merchant_id, member_id))
    household = None
    until = None
    if m is not None and m.current:
        household = household_view(
            conn, merchant_id=merchant_id, row=_household(conn, merchant_id, m.household_id)
        )
    elif m is not None:
        spec = spec_at(conn, merchant_id=merchant_id, program_id=member["program_id"], at=utcnow())
        until = rules.cooldown_until(m, spec) if spec else None
        if until is not None and until <= utcnow():
            until = None
    return {
        "member_id": member_id,
        "household": household,
        "role": m.role.value if m and m.current else None,
        "can_spend": m.can_spend if m and m.current else None,
        "joined_at": m.joined_at if m and m.current else None,
        "cooldown_until": until,
    }


#: a household event's id, the cursor of its audit trail
_CURSOR = re.compile(r"hev_[0-9a-z]{26}")


def events(
    conn: Connection, *, merchant_id: str, household_id: str, limit: int = 100, cursor: str | None = None
) -> dict[str, Any]:
    """The household's audit trail in the order it happened."""
    if not 1 <= limit <= EVENTS_PAGE_MAX:
        raise InvalidInput(f"limit must be between 1 and {EVENTS_PAGE_MAX}", field="limit")
    _household(conn, merchant_id, household_id)
    if cursor is not None and not _CURSOR.fullmatch(cursor):  # only a next_cursor this gave
        raise InvalidInput("cursor is not valid; use next_cursor from the previous page", field="cursor")
    rows = repo.events_of(conn, merchant_id, household_id, limit=limit, after=cursor)
    more = len(rows) > limit
    rows = rows[:limit]
    data = [
        {
            "id": r["id"],
            "type": r["kind"],
            "member_id": r["member_id"],
            "actor": r["actor"],
            "reason": r["reason"] or None,
            "details": r["details"],
            "occurred_at": r["occurred_at"],
        }
        for r in rows
    ]
    return {"data": data, "next_cursor": rows[-1]["id"] if more and rows else None, "has_more": more}


def fund_from_pool(
    conn: Connection,
    *,
    merchant_id: str,
    member_id: str,
    points: int,
    purpose: str,
    household_id: str | None = None,
) -> dict[str, Any]:
    """Make ``member_id`` hold ``points`` available points from their household's pool, so that
    the caller can then spend them as the member's own (a reward, a travel award booking...).

    Their own points count first; the shortfall moves to them from the other active members'
    soonest-expiring points with one ``household_transfer`` journal whose reason names
    ``purpose``. Locks the household, then every member's balances in id order; the caller's
    own lock on the member afterwards is then already held. Raises 403
    ``household-spending-not-allowed`` when the member is not in the household (or any household
    when ``household_id`` is None) or the policy does not let them spend the pool, 409
    ``insufficient-points`` when the pool is too small."""
    if household_id is None:
        last = _membership(repo.membership_of(conn, merchant_id, member_id))
        if last is None or not last.current:
            raise rules.SpendingNotAllowed(f"member {member_id} is not in a household")
        household_id = last.household_id
    hh = _open_household(conn, merchant_id, household_id)
    m = _membership(repo.membership_of(conn, merchant_id, member_id))  # re-read under the lock
    if m is None or not m.current or m.household_id != household_id:
        raise rules.SpendingNotAllowed(f"member {member_id} is not in household {household_id}")
    now = utcnow()
    spec = _require_spec(conn, merchant_id, hh["program_id"], now)
    rules.check_may_spend(spec, m)
    current = repo.current_members(conn, merchant_id, household_id)
    for mid in sorted(r["member_id"] for r in current):
        ledger_repo.lock_balances(conn, merchant_id, mid)
    member = members_repo.get_member(conn, merchant_id, member_id)
    assert member is not None
    if member["status"] != "active":
        raise MemberInactive(f"member is {member['status']}: no redemptions")
    others = {}
    for r in current:
        other = members_repo.get_member(conn, merchant_id, r["member_id"]) or {}
        if r["member_id"] != member_id and other.get("status") == "active":
            others[r["member_id"]] = ledger_repo.lot_balances(
                conn, merchant_id, r["member_id"], Account.AVAILABLE
            )
    draws = rules.plan_pool_draw(
        redeemer_id=member_id,
        cost=points,
        own_available=ledger_repo.cached_balances(conn, merchant_id, member_id).available,
        others=others,
    )
    journal_id = None
    if draws:
        _, version = program_at(conn, merchant_id=merchant_id, program_id=hh["program_id"], at=now)
        transfer = rules.pool_transfer(
            member_id,
            draws,
            lot_ids=[new_id("lot") for _ in draws],
            # the ledger is kept for ever and never rewritten: no names in it, only the member id
            reason=f"household pool: for member {member['id']}: {purpose}",
        )
        journal_id = repo.write_transfer(
            conn,
            transfer.journal,
            owners=transfer.owners,
            new_lots=transfer.new_lots,
            merchant_id=merchant_id,
            member_id=member_id,
            program_id=hh["program_id"],
            program_version=version,
            occurred_at=now,
            created_at=now,
        )
    drawn = Counter[str]()
    for d in draws:
        drawn[d.member_id] += d.points
    own = points - sum(drawn.values())
    shares = [{"member_id": member_id, "points": own}] if own > 0 else []
    shares += [{"member_id": k, "points": v} for k, v in sorted(drawn.items())]
    return {"household_id": household_id, "drawn": shares, "transfer_journal_id": journal_id}


def redeem(
    conn: Connection, *, merchant_id: str, household_id: str, member_id: str, reward_id: str
) -> dict[str, Any]:
    """Reserve ``reward_id`` for ``member_id`` using the household pool (:func:`fund_from_pool`),
    then as any redemption (a code, then redeem or cancel), all in one transaction."""
    hh = _household(conn, merchant_id, household_id)
    member = members_repo.get_member(conn, merchant_id, member_id)
    if member is None:
        raise NotFound(f"member {member_id} not found")
    now = utcnow()
    program, _ = program_at(conn, merchant_id=merchant_id, program_id=hh["program_id"], at=now)
    reward = program.reward(reward_id)
    if reward is None:
        raise UnknownReward(f"the program has no reward {reward_id!r}", field="reward_id")
    state = tier_state(conn, merchant_id=merchant_id, member=member, program=program, as_of=now)
    cost = reward.cost_for(state.level.id if state and state.level else None)
    funded = fund_from_pool(
        conn,
        merchant_id=merchant_id,
        member_id=member_id,
        points=cost,
        purpose=reward.name,
        household_id=household_id,
    )
    redemption = redemptions.reserve(conn, merchant_id=merchant_id, member_id=member_id, reward_id=reward_id)
    return {**funded, "member_id": member_id, "redemption": redemption, "points": cost}
