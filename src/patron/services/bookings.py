"""Travel award bookings: passengers' consents, booking (points from the booker), cancellation.

Booking and cancelling lock the booking member's balance row first, the same lock earning,
adjustments and redemptions take, so two bookings can never spend the same points. A refused
passenger raises before anything is written, and the request's transaction rolls back whatever
came before, so a refused booking leaves no trace (a consent code stays unused).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from patron.domain import bookings as rules
from patron.domain.errors import InvalidInput, MemberInactive, NotFound
from patron.domain.ledger import Account, spending_order
from patron.services.clock import utcnow
from patron.services.members import get_member
from patron.services.programs import program_at
from patron.storage import bookings as repo
from patron.storage import ledger as ledger_repo
from patron.storage import members as members_repo
from patron.storage.ids import new_id, random_code

# -- consents ---------------------------------------------------------------------------------


def give_consent(
    conn: Connection, *, merchant_id: str, passenger_id: str, booker_id: str
) -> tuple[dict[str, Any], int]:
    """The passenger authorises ``booker_id`` to book travel for them until revoked.

    Returns the consent and 201, or the existing consent and 200 when it was given before.
    """
    passenger = get_member(conn, merchant_id=merchant_id, member_id=passenger_id)
    if passenger["status"] != "active":
        raise MemberInactive(f"member is {passenger['status']}: cannot authorise bookings")
    booker = members_repo.get_member(conn, merchant_id, booker_id)
    if booker is None or booker["program_id"] != passenger["program_id"]:
        raise InvalidInput(f"booker_id: unknown member {booker_id}", field="booker_id")
    if booker_id == passenger_id:
        raise InvalidInput("a member needs no consent to book for themselves", field="booker_id")
    existing = repo.get_consent(conn, merchant_id, passenger_id, booker_id)
    if existing is not None:
        return _consent_view(existing), 200
    repo.insert_consent(conn, merchant_id, passenger_id, booker_id, utcnow())
    row = repo.get_consent(conn, merchant_id, passenger_id, booker_id)
    assert row is not None
    return _consent_view(row), 201


def _consent_view(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "passenger_id": row["passenger_id"],
        "booker_id": row["booker_id"],
        "granted_at": row["granted_at"],
    }


def consents(conn: Connection, *, merchant_id: str, passenger_id: str) -> list[dict[str, Any]]:
    get_member(conn, merchant_id=merchant_id, member_id=passenger_id)
    return [_consent_view(r) for r in repo.consents_of(conn, merchant_id, passenger_id)]


def revoke_consent(conn: Connection, *, merchant_id: str, passenger_id: str, booker_id: str) -> None:
    get_member(conn, merchant_id=merchant_id, member_id=passenger_id)
    if not repo.delete_consent(conn, merchant_id, passenger_id, booker_id):
        raise NotFound(f"member {passenger_id} has not authorised {booker_id}")


def issue_consent_code(conn: Connection, *, merchant_id: str, passenger_id: str) -> dict[str, Any]:
    """A single-use code the passenger hands to a booker; valid for 24 hours."""
    passenger = get_member(conn, merchant_id=merchant_id, member_id=passenger_id)
    if passenger["status"] != "active":
        raise MemberInactive(f"member is {passenger['status']}: cannot authorise bookings")
    now = utcnow()
    code = random_code(rules.CONSENT_CODE_LENGTH)
    while repo.get_code(conn, merchant_id, code) is not None:
        code = random_code(rules.CONSENT_CODE_LENGTH)
    row = {
        "merchant_id": merchant_id,
        "code": code,
        "passenger_id": passenger_id,
        "created_at": now,
        "expires_at": now + rules.CONSENT_CODE_TTL,
        "used_at": None,
        "booking_id": None,
    }
    repo.insert_code(conn, row)
    return {"passenger_id": passenger_id, "code": code, "expires_at": row["expires_at"]}


# -- bookings ---------------------------------------------------------------------------------


def view(booking: Mapping[str, Any], tickets: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    origin, destination = booking["route"].split("-")
    return {
        "id": booking["id"],
        "member_id": booking["member_id"],
        "program_id": booking["program_id"],
        "route": booking["route"],
        "origin": origin,
        "destination": destination,
        "cabin": booking["cabin"],
        "points_per_passenger": booking["points_per_passenger"],
        "points": booking["points"],
        "status": booking["status"],
        "journal_id": booking["journal_id"],
        "cancel_journal_id": booking["cancel_journal_id"],
        "created_at": booking["created_at"],
        "cancelled_at": booking["cancelled_at"],
        "tickets": [
            {
                "id": t["id"],
                "passenger_id": t["passenger_id"],
                "passenger_name": t["passenger_name"],
                "code": t["code"],
                "status": t["status"],
            }
            for t in tickets
        ],
    }


def _authorise(
    conn: Connection,
    merchant_id: str,
    booker: Mapping[str, Any],
    passengers: Sequence[str],
    consent_codes: Mapping[str, str],
    now: datetime,
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """The passengers' member rows and the codes to use up (passenger id → code), or
    :class:`PassengerNotAllowed` naming each refused passenger and why."""
    found = repo.members_by_id(conn, merchant_id, passengers)
    consented = repo.consenting(conn, merchant_id, booker["id"], passengers)
    known = {
        pid: rules.Passenger(pid, m["program_id"], m["status"], m["name"], pid in consented)
        for pid, m in found.items()
    }
    codes: dict[str, rules.ConsentCode | None] = {}
    for pid, code in consent_codes.items():
        row = repo.get_code(conn, merchant_id, code.strip().upper())
        codes[pid] = (
            rules.ConsentCode(row["passenger_id"], row["expires_at"], row["used_at"]) if row else None
        )
    problems = rules.refusals(
        booker_id=booker["id"],
        program_id=booker["program_id"],
        passengers=passengers,
        known=known,
        codes=codes,
        now=now,
    )
    if problems:
        raise rules.refuse(problems)
    # A standing consent (or booking for oneself) makes a code unnecessary: it is left unused.
    to_use = {
        pid: code.strip().upper()
        for pid, code in consent_codes.items()
        if pid != booker["id"] and pid not in consented
    }
    return found, to_use


def _ticket_code(conn: Connection, merchant_id: str, taken: set[str]) -> str:
    code = random_code(rules.TICKET_CODE_LENGTH)
    while code in taken or repo.ticket_code_taken(conn, merchant_id, code):
        code = random_code(rules.TICKET_CODE_LENGTH)
    taken.add(code)
    return code


def book(
    conn: Connection,
    *,
    merchant_id: str,
    booker_id: str,
    route: str,
    cabin: str,
    points_per_passenger: int,
    passengers: Sequence[str],
    consent_codes: Mapping[str, str] | None = None,
    use_household_pool: bool = False,
) -> dict[str, Any]:
    """Book award seats on ``route`` for ``passengers``, paid by the booker's points (with
    ``use_household_pool``, what the booker lacks moves to them from their household's pool
    first, in the same transaction)."""
    codes = dict(consent_codes or {})
    rules.check_request(passengers, points_per_passenger, codes)
    origin, destination = rules.parse_route(route)
    cabin_class = rules.parse_cabin(cabin)
    booker = get_member(conn, merchant_id=merchant_id, member_id=booker_id)
    if booker["status"] != "active":
        raise MemberInactive(f"member is {booker['status']}: no bookings")
    now = utcnow()
    if use_household_pool:  # locks the household, then its members in id order, the booker too
        from patron.services.households import fund_from_pool

        fund_from_pool(
            conn,
            merchant_id=merchant_id,
            member_id=booker_id,
            points=points_per_passenger * len(passengers),
            purpose=f"award booking {origin}-{destination}",
        )
    ledger_repo.lock_balances(conn, merchant_id, booker_id)
    found, to_use = _authorise(conn, merchant_id, booker, passengers, codes, now)
    booking_id = new_id("bkg")
    for pid, code in to_use.items():
        if not repo.use_code(conn, merchant_id, code, booking_id=booking_id, at=now):
            raise rules.refuse([(pid, "consent code was already used")])
    points = points_per_passenger * len(passengers)
    route_name = f"{origin}-{destination}"
    _, version = program_at(conn, merchant_id=merchant_id, program_id=booker["program_id"], at=now)
    lots = spending_order(ledger_repo.lot_balances(conn, merchant_id, booker_id, Account.AVAILABLE))
    journal = rules.payment(points, lots, f"booking {booking_id}: {route_name} {cabin_class.value}")
    journal_id = ledger_repo.write_journal(
        conn,
        journal,
        merchant_id=merchant_id,
        member_id=booker_id,
        program_id=booker["program_id"],
        program_version=version,
        occurred_at=now,
        created_at=now,
    )
    row = {
        "merchant_id": merchant_id,
        "id": booking_id,
        "member_id": booker_id,
        "program_id": booker["program_id"],
        "route": route_name,
        "cabin": cabin_class.value,
        "points_per_passenger": points_per_passenger,
        "points": points,
        "status": rules.BookingStatus.BOOKED.value,
        "journal_id": journal_id,
        "cancel_journal_id": None,
        "created_at": now,
        "cancelled_at": None,
    }
    taken: set[str] = set()
    tickets = [
        {
            "merchant_id": merchant_id,
            "id": new_id("tkt"),
            "booking_id": booking_id,
            "seq": seq,
            "passenger_id": pid,
            "passenger_name": found[pid]["name"].strip(),
            "code": _ticket_code(conn, merchant_id, taken),
            "status": rules.TicketStatus.ISSUED.value,
        }
        for seq, pid in enumerate(passengers)
    ]
    repo.insert_booking(conn, row, tickets)
    return view(row, tickets)


def _load(conn: Connection, merchant_id: str, booking_id: str) -> dict[str, Any]:
    row = repo.get_booking(conn, merchant_id, booking_id)
    if row is None:
        raise NotFound(f"booking {booking_id} not found")
    return row


def cancel(conn: Connection, *, merchant_id: str, booking_id: str) -> dict[str, Any]:
    """Cancel a booking: its points go back to the booker's lots they came from; tickets void."""
    row = _load(conn, merchant_id, booking_id)
    balances = ledger_repo.lock_balances(conn, merchant_id, row["member_id"])
    row = _load(conn, merchant_id, booking_id)  # re-read under the booker's lock
    if row["status"] != rules.BookingStatus.BOOKED:
        raise rules.BookingCancelled(f"booking {booking_id} was cancelled at {row['cancelled_at']}")
    now = utcnow()
    journal = rules.refund(
        repo.paid_from(conn, merchant_id, row["journal_id"]),
        f"cancelled booking {booking_id}",
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
        occurred_at=now,
        created_at=now,
    )
    if not repo.cancel_booking(conn, merchant_id, booking_id, journal_id=journal_id, at=now):
        raise rules.BookingCancelled(f"booking {booking_id} was cancelled concurrently")
    return get(conn, merchant_id=merchant_id, booking_id=booking_id)


def get(conn: Connection, *, merchant_id: str, booking_id: str) -> dict[str, Any]:
    row = _load(conn, merchant_id, booking_id)
    return view(row, repo.tickets_of(conn, merchant_id, [booking_id]))


def of_member(conn: Connection, *, merchant_id: str, member_id: str) -> list[dict[str, Any]]:
    """Bookings the member made or travels on, newest first."""
    get_member(conn, merchant_id=merchant_id, member_id=member_id)
    rows = repo.bookings_of(conn, merchant_id, member_id)
    tickets: dict[str, list[dict[str, Any]]] = {}
    for t in repo.tickets_of(conn, merchant_id, [r["id"] for r in rows]) if rows else []:
        tickets.setdefault(t["booking_id"], []).append(t)
    return [view(r, tickets.get(r["id"], [])) for r in rows]
