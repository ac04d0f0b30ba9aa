"""Ticketed events: create and list events, RSVP, cancel (promoting the waitlist), check in.

Every change to an event's tickets first locks the event row (``SELECT ... FOR UPDATE`` on
PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` has one writer), then the members' balance rows in id
order, so that seats are counted under the lock and can never be handed out twice, and two ticket
transactions never wait on each other's members in opposite orders.

Points of a paid event move through the ledger with the redemption journals of
``domain/rewards.py`` (reserve, then redeem), each with a reason naming the event; a
cancellation writes a journal that gives back exactly what was taken, to the same lots.
"""

from __future__ import annotations

import io
from dataclasses import replace
from datetime import datetime
from typing import Any

import segno
from sqlalchemy import Connection

from patron.domain import rewards as reward_rules
from patron.domain import tickets as rules
from patron.domain.errors import InsufficientPoints, NotFound
from patron.domain.ledger import Account, Journal, spending_order
from patron.services.clock import utcnow
from patron.services.programs import program_at
from patron.services.tiers import tier_state
from patron.storage import ledger as ledger_repo
from patron.storage import members as members_repo
from patron.storage import programs as programs_repo
from patron.storage import redemptions as redemptions_repo
from patron.storage import tickets as repo
from patron.storage.ids import new_id, random_code

CODE_LENGTH = 16  # 32^16 ≈ 10^24 codes: not guessable at the door


def event_view(row: dict[str, Any], counts: dict[str, int]) -> dict[str, Any]:
    seated = sum(counts.get(s, 0) for s in rules.SEATED)
    return {
        "id": row["id"],
        "program_id": row["program_id"],
        "name": row["name"],
        "place": row["place"],
        "starts_at": row["starts_at"],
        "capacity": row["capacity"],
        "audience": list(row["audience"]),
        "price": row["price"],
        "waitlist": row["waitlist"],
        "status": row["status"],
        "seats_taken": seated,
        "seats_left": max(row["capacity"] - seated, 0),
        "waitlisted": counts.get(rules.TicketStatus.WAITLISTED, 0),
        "created_at": row["created_at"],
    }


def ticket_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "event_id": row["event_id"],
        "member_id": row["member_id"],
        "code": row["code"],
        "status": row["status"],
        "points": row["points"],
        "created_at": row["created_at"],
        "issued_at": row["issued_at"],
        "checked_in_at": row["checked_in_at"],
        "cancelled_at": row["cancelled_at"],
    }


def _event_row(conn: Connection, merchant_id: str, event_id: str, *, lock: bool = False) -> dict[str, Any]:
    row = repo.get_event(conn, merchant_id, event_id, lock=lock)
    if row is None:
        raise NotFound(f"event {event_id} not found")
    return row


def _ticket_row(conn: Connection, merchant_id: str, ticket_id: str) -> dict[str, Any]:
    row = repo.get_ticket(conn, merchant_id, ticket_id)
    if row is None:
        raise NotFound(f"ticket {ticket_id} not found")
    return row


def _event(row: dict[str, Any]) -> rules.Event:
    return rules.Event(
        id=row["id"],
        starts_at=row["starts_at"],
        capacity=row["capacity"],
        audience=tuple(row["audience"]),
        price=row["price"],
        waitlist=row["waitlist"],
        status=rules.EventStatus(row["status"]),
    )


def create_event(
    conn: Connection,
    *,
    merchant_id: str,
    program_id: str,
    name: str,
    place: str,
    starts_at: datetime,
    capacity: int,
    audience: list[str],
    price: int,
    waitlist: bool,
) -> dict[str, Any]:
    """A members-only event of ``program_id``. It must start in the future; ``audience`` names
    tiers of the program (empty: every member); ``price`` is in points (0: free)."""
    if programs_repo.get_program(conn, merchant_id, program_id) is None:
        raise NotFound(f"program {program_id} not found")
    now = utcnow()
    program, _ = program_at(conn, merchant_id=merchant_id, program_id=program_id, at=now)
    tiers = [lv.id for lv in program.tiers.levels] if program.tiers else []
    rules.check_new_event(
        starts_at=starts_at, capacity=capacity, price=price, audience=audience, tiers=tiers, now=now
    )
    row = {
        "merchant_id": merchant_id,
        "id": new_id("tev"),
        "program_id": program_id,
        "name": name,
        "place": place,
        "starts_at": starts_at,
        "capacity": capacity,
        "audience": list(dict.fromkeys(audience)),
        "price": price,
        "waitlist": waitlist,
        "status": rules.EventStatus.SCHEDULED.value,
        "created_at": now,
    }
    repo.insert_event(conn, row)
    return event_view(row, {})


def get_event(conn: Connection, *, merchant_id: str, event_id: str) -> dict[str, Any]:
    row = _event_row(conn, merchant_id, event_id)
    return event_view(row, repo.counts(conn, merchant_id, event_id))


def list_events(conn: Connection, *, merchant_id: str, program_id: str) -> list[dict[str, Any]]:
    if programs_repo.get_program(conn, merchant_id, program_id) is None:
        raise NotFound(f"program {program_id} not found")
    return [
        event_view(row, repo.counts(conn, merchant_id, row["id"]))
        for row in repo.events_of_program(conn, merchant_id, program_id)
    ]


def tickets_of_event(conn: Connection, *, merchant_id: str, event_id: str) -> list[dict[str, Any]]:
    _event_row(conn, merchant_id, event_id)
    return [ticket_view(r) for r in repo.tickets_of_event(conn, merchant_id, event_id)]


def get_ticket(conn: Connection, *, merchant_id: str, ticket_id: str) -> dict[str, Any]:
    return ticket_view(_ticket_row(conn, merchant_id, ticket_id))


def _write(
    conn: Connection,
    journal: Journal,
    *,
    merchant_id: str,
    member_id: str,
    event: dict[str, Any],
    at: datetime,
) -> str:
    _, version = program_at(conn, merchant_id=merchant_id, program_id=event["program_id"], at=at)
    return ledger_repo.write_journal(
        conn,
        journal,
        merchant_id=merchant_id,
        member_id=member_id,
        program_id=event["program_id"],
        program_version=version,
        occurred_at=at,
        created_at=at,
    )


def _redeem_held(
    conn: Connection, merchant_id: str, ticket: dict[str, Any], event: dict[str, Any], at: datetime
) -> str:
    """Spend the points a ticket holds in ``reserved``: reserved -> program:redeemed."""
    held = redemptions_repo.held(conn, merchant_id, ticket["reserve_journal_id"])
    journal = reward_rules.settle(
        held, status=reward_rules.Status.REDEEMED, reason=f"ticket for {event['name']} ({event['id']})"
    )
    return _write(conn, journal, merchant_id=merchant_id, member_id=ticket["member_id"], event=event, at=at)


def _new_code(conn: Connection, merchant_id: str) -> str:
    code = random_code(CODE_LENGTH)
    while repo.ticket_by_code(conn, merchant_id, code) is not None:
        code = random_code(CODE_LENGTH)
    return code


def rsvp(conn: Connection, *, merchant_id: str, event_id: str, member_id: str) -> dict[str, Any]:
    """RSVP ``member_id`` to the event: a ticket while seats last, else the waitlist (or
    :class:`EventFull` when the event keeps none). A paid event reserves its price and, with a
    seat, redeems it at once; on the waitlist the points stay reserved until promotion."""
    event = _event_row(conn, merchant_id, event_id, lock=True)
    member = members_repo.get_member(conn, merchant_id, member_id)
    if member is None:
        raise NotFound(f"member {member_id} not found")
    if member["program_id"] != event["program_id"]:
        raise rules.WrongProgram(f"member {member_id} is not in the event's program", field="member_id")
    now = utcnow()
    balances = ledger_repo.lock_balances(conn, merchant_id, member_id)
    tier_id = None
    if event["audience"]:
        program, _ = program_at(conn, merchant_id=merchant_id, program_id=event["program_id"], at=now)
        state = tier_state(conn, merchant_id=merchant_id, member=member, program=program, as_of=now)
        tier_id = state.level.id if state and state.level else None
    counts = repo.counts(conn, merchant_id, event_id)
    already = repo.live_ticket_of(conn, merchant_id, event_id, member_id, tuple(rules.LIVE)) is not None
    status = rules.rsvp(
        _event(event),
        now=now,
        member_status=member["status"],
        tier_id=tier_id,
        seated=sum(counts.get(s, 0) for s in rules.SEATED),
        already=already,
    )
    ticket: dict[str, Any] = {
        "merchant_id": merchant_id,
        "id": new_id("tkt"),
        "event_id": event_id,
        "member_id": member_id,
        "code": _new_code(conn, merchant_id),
        "status": status.value,
        "points": event["price"],
        "reserve_journal_id": None,
        "redeem_journal_id": None,
        "return_journal_id": None,
        "created_at": now,
        "issued_at": now if status == rules.TicketStatus.ISSUED else None,
        "checked_in_at": None,
        "cancelled_at": None,
    }
    price = event["price"]
    if price > 0:
        if balances.available < price:
            raise InsufficientPoints(
                f"a ticket for {event['name']} costs {price} points; {balances.available} available",
                needed=price,
                available=balances.available,
            )
        lots = spending_order(ledger_repo.lot_balances(conn, merchant_id, member_id, Account.AVAILABLE))
        held_for = "waitlist place" if status == rules.TicketStatus.WAITLISTED else "ticket"
        journal = replace(
            reward_rules.reservation(price, lots),
            reason=f"{held_for} for {event['name']} ({event_id}): points held",
        )
        ticket["reserve_journal_id"] = _write(
            conn, journal, merchant_id=merchant_id, member_id=member_id, event=event, at=now
        )
        if status == rules.TicketStatus.ISSUED:
            ticket["redeem_journal_id"] = _redeem_held(conn, merchant_id, ticket, event, now)
    repo.insert_ticket(conn, ticket)
    if status == rules.TicketStatus.ISSUED:
        _announce_issued(conn, merchant_id, ticket, event, now)
    return ticket_view(ticket)


def _announce_issued(
    conn: Connection, merchant_id: str, ticket: dict[str, Any], event: dict[str, Any], at: datetime
) -> None:
    """``ticket.issued`` with the code, for the member's webhook and message."""
    from patron.services import outbox

    outbox.emit(
        conn,
        merchant_id=merchant_id,
        type=outbox.TICKET_ISSUED,
        member_id=ticket["member_id"],
        occurred_at=at,
        data={
            "ticket_id": ticket["id"],
            "event_id": event["id"],
            "event_name": event["name"],
            "code": ticket["code"],
        },
    )


def cancel(conn: Connection, *, merchant_id: str, ticket_id: str) -> dict[str, Any]:
    """Cancel a ticket: paid points go back to the member, the seat goes to the first member on
    the waitlist (whose held points are then spent). A checked-in ticket cannot be cancelled."""
    first = _ticket_row(conn, merchant_id, ticket_id)
    event = _event_row(conn, merchant_id, first["event_id"], lock=True)
    ticket = _ticket_row(conn, merchant_id, ticket_id)  # re-read under the event's lock
    now = utcnow()
    rules.check_cancel(
        ticket["status"], checked_in_at=ticket["checked_in_at"], starts_at=event["starts_at"], now=now
    )
    promote = None
    if ticket["status"] == rules.TicketStatus.ISSUED and event["status"] == rules.EventStatus.SCHEDULED:
        promote = repo.first_waitlisted(conn, merchant_id, event["id"])
    locked = {
        member_id: ledger_repo.lock_balances(conn, merchant_id, member_id)
        for member_id in sorted({ticket["member_id"], *([promote["member_id"]] if promote else [])})
    }
    _give_back(conn, merchant_id, ticket, event, debt=locked[ticket["member_id"]].debt, at=now)
    promoted = None
    if promote is not None:
        seat: dict[str, Any] = {"status": rules.TicketStatus.ISSUED.value, "issued_at": now}
        if promote["points"] > 0:
            seat["redeem_journal_id"] = _redeem_held(conn, merchant_id, promote, event, now)
        repo.update_ticket(conn, merchant_id, promote["id"], **seat)
        promoted_row = _ticket_row(conn, merchant_id, promote["id"])
        _announce_issued(conn, merchant_id, promoted_row, event, now)
        promoted = ticket_view(promoted_row)
    return {**ticket_view(_ticket_row(conn, merchant_id, ticket_id)), "promoted": promoted}


def _give_back(
    conn: Connection,
    merchant_id: str,
    ticket: dict[str, Any],
    event: dict[str, Any],
    *,
    debt: int,
    at: datetime,
    why: str = "cancelled",
) -> None:
    """Cancel the ticket at ``at``: the points it paid or holds go back to the member's lots,
    a ``debt`` they owe repaid first (the caller holds their lock)."""
    changes: dict[str, Any] = {"status": rules.TicketStatus.CANCELLED.value, "cancelled_at": at}
    if ticket["points"] > 0:
        held = redemptions_repo.held(conn, merchant_id, ticket["reserve_journal_id"])
        reason = f"ticket for {event['name']} ({event['id']}) {why}: points returned"
        journal = (
            rules.give_back_redeemed(held, reason=reason, debt=debt)
            if ticket["status"] == rules.TicketStatus.ISSUED
            else reward_rules.settle(held, status=reward_rules.Status.CANCELLED, reason=reason, debt=debt)
        )
        changes["return_journal_id"] = _write(
            conn, journal, merchant_id=merchant_id, member_id=ticket["member_id"], event=event, at=at
        )
    repo.update_ticket(conn, merchant_id, ticket["id"], **changes)


def release_waitlists(
    conn: Connection, *, as_of: datetime, merchant_id: str | None, limit: int
) -> tuple[int, int]:
    """Close the waitlists of events that started by ``as_of``: each waiting member's held
    points go back to them, as of the event's start (nobody will be promoted any more).
    ``(found, released)``; a batch of at most ``limit``."""
    found = repo.waitlisted_of_started(conn, as_of=as_of, merchant_id=merchant_id, limit=limit)
    released = 0
    for row in sorted(found, key=lambda r: (r["merchant_id"], r["event_id"], r["member_id"])):
        m = row["merchant_id"]
        event = _event_row(conn, m, row["event_id"], lock=True)
        balances = ledger_repo.lock_balances(conn, m, row["member_id"])
        ticket = _ticket_row(conn, m, row["id"])  # re-read under the locks
        if ticket["status"] != rules.TicketStatus.WAITLISTED:
            continue
        at = min(as_of, event["starts_at"])
        _give_back(conn, m, ticket, event, debt=balances.debt, at=at, why="not reached on the waitlist")
        released += 1
    return len(found), released


def check_in(conn: Connection, *, merchant_id: str, code: str) -> dict[str, Any]:
    """At the door: check the ticket with ``code`` in, exactly once. A second check-in is 409
    ``already-checked-in`` saying when the first was; a cancelled or waitlisted ticket is 409."""
    row = repo.ticket_by_code(conn, merchant_id, code.strip().upper())
    if row is None:
        raise NotFound("unknown ticket code")
    rules.check_in(row["status"], checked_in_at=row["checked_in_at"])
    if not repo.mark_checked_in(conn, merchant_id, row["id"], utcnow()):
        row = _ticket_row(conn, merchant_id, row["id"])  # a concurrent check-in won
        rules.check_in(row["status"], checked_in_at=row["checked_in_at"])
    row = _ticket_row(conn, merchant_id, row["id"])
    event = _event_row(conn, merchant_id, row["event_id"])
    member = members_repo.get_member(conn, merchant_id, row["member_id"]) or {}
    return {
        **ticket_view(row),
        "event": {"id": event["id"], "name": event["name"], "starts_at": event["starts_at"]},
        "member": {"id": row["member_id"], "name": member.get("name")},
    }


def render_qr(code: str) -> str:
    out = io.BytesIO()
    segno.make(code, error="m", micro=False).save(out, kind="svg", scale=4, border=2)
    return out.getvalue().decode()
