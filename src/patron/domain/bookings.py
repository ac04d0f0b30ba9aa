"""Travel award bookings: one member books award seats for several passengers.

Rules
-----
* A booking names its passengers (member ids, at most :data:`MAX_PASSENGERS`, no repeats). Each
  passenger must be an enrolled, **active** member of the booking member's program with a name on
  their profile (the ticket carries it), and must have authorised the booking member: by a
  standing consent, or by a single-use consent code that expires :data:`CONSENT_CODE_TTL` after it
  was issued. A booking member is always authorised for themselves. A member of another program
  or merchant is *unknown*: never say that they exist.
* The price is ``points_per_passenger x passengers``, paid by the booking member alone: one
  journal of kind ``redemption`` from ``available`` (soonest-expiring lots first) to
  ``program:redeemed``. Too few points raises :class:`InsufficientPoints`; nothing is ever drawn
  from a passenger.
* Cancelling gives every point back **to the lots it came from** (their original expiry stands:
  a cancellation does not extend the life of points; a lot that expired meanwhile is taken by the
  next expiry run) and voids the tickets. A booking is cancelled at most once.

Invariant: for every booking, ``points == points_per_passenger x len(tickets)``, and its
journal moved exactly ``points`` to ``program:redeemed``; after a cancellation, the two journals
together sum to zero per lot.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from patron.domain.errors import Conflict, InvalidInput
from patron.domain.ledger import Account, Journal, JournalKind, Lot, Posting, returned, take_back

MAX_PASSENGERS = 9
MAX_POINTS_PER_PASSENGER = 10_000_000
CONSENT_CODE_TTL = timedelta(hours=24)
CONSENT_CODE_LENGTH = 8  # 32^8 ≈ 10^12: short enough to read out, single use, and short-lived
TICKET_CODE_LENGTH = 12
ROUTE = re.compile(r"^([A-Z]{3})-([A-Z]{3})$")


class Cabin(StrEnum):
    FIRST = "F"
    BUSINESS = "J"
    PREMIUM_ECONOMY = "W"
    ECONOMY = "Y"


class BookingStatus(StrEnum):
    BOOKED = "booked"
    CANCELLED = "cancelled"


class TicketStatus(StrEnum):
    ISSUED = "issued"
    VOID = "void"


class InvalidBooking(InvalidInput):
    code = "invalid-booking"
    title = "The booking request breaks a rule"


class PassengerNotAllowed(InvalidInput):
    """One or more passengers cannot be booked; ``errors`` says which and why."""

    code = "passenger-not-allowed"
    title = "A passenger cannot be booked by this member"


class BookingCancelled(Conflict):
    code = "booking-cancelled"
    title = "Booking already cancelled"


@dataclass(frozen=True, slots=True)
class Passenger:
    """What the booking rules need to know about a would-be passenger."""

    id: str
    program_id: str
    status: str
    name: str | None
    consented: bool = False  # a standing consent for this booker


@dataclass(frozen=True, slots=True)
class ConsentCode:
    passenger_id: str
    expires_at: datetime
    used_at: datetime | None


def parse_route(route: str) -> tuple[str, str]:
    """``"JFK-LHR"`` → ``("JFK", "LHR")``; two different three-letter IATA codes."""
    match = ROUTE.match(route.strip().upper())
    if match is None:
        raise InvalidBooking("route must be two IATA airport codes, like 'JFK-LHR'", field="route")
    origin, destination = match.group(1), match.group(2)
    if origin == destination:
        raise InvalidBooking("the origin and destination of a route must differ", field="route")
    return origin, destination


def parse_cabin(cabin: str) -> Cabin:
    """One of the award cabins: F (first), J (business), W (premium economy), Y (economy)."""
    try:
        return Cabin(cabin.strip().upper())
    except ValueError:
        raise InvalidBooking(
            f"cabin must be one of {', '.join(c.value for c in Cabin)}; got {cabin!r}", field="cabin"
        ) from None


def check_request(
    passengers: Sequence[str], points_per_passenger: int, consent_codes: Mapping[str, str]
) -> None:
    """The shape of a booking: passenger count, no repeats, a positive price, codes for named
    passengers only."""
    if not 1 <= len(passengers) <= MAX_PASSENGERS:
        raise InvalidBooking(f"a booking has 1 to {MAX_PASSENGERS} passengers", field="passengers")
    repeated = sorted({p for p in passengers if passengers.count(p) > 1})
    if repeated:
        raise InvalidBooking(f"passengers named twice: {', '.join(repeated)}", field="passengers")
    if not 1 <= points_per_passenger <= MAX_POINTS_PER_PASSENGER:
        raise InvalidBooking(
            f"points_per_passenger must be between 1 and {MAX_POINTS_PER_PASSENGER}",
            field="points_per_passenger",
        )
    strays = sorted(set(consent_codes) - set(passengers))
    if strays:
        raise InvalidBooking(
            f"consent codes for members who are not passengers: {', '.join(strays)}", field="consent_codes"
        )


def code_problem(code: ConsentCode | None, passenger_id: str, now: datetime) -> str | None:
    """Why a presented consent code does not authorise, or ``None`` if it does."""
    if code is None or code.passenger_id != passenger_id:
        return "consent code is not valid"
    if code.used_at is not None:
        return "consent code was already used"
    if now >= code.expires_at:
        return "consent code has expired"
    return None


def refusals(
    *,
    booker_id: str,
    program_id: str,
    passengers: Sequence[str],
    known: Mapping[str, Passenger],
    codes: Mapping[str, ConsentCode | None],
    now: datetime,
) -> list[tuple[str, str]]:
    """``(passenger id, why)`` for every passenger who cannot be booked, in request order.

    ``known`` holds the merchant's members among ``passengers``; ``codes`` the consent code each
    passenger's presented code resolved to (``None``: no such code).
    """
    out: list[tuple[str, str]] = []
    for pid in passengers:
        p = known.get(pid)
        if p is None or p.program_id != program_id:
            out.append((pid, "unknown member"))
        elif p.status != "active":
            out.append((pid, f"member is {p.status}"))
        elif not (p.name or "").strip():
            out.append((pid, "has no name on the member profile"))
        elif pid == booker_id or p.consented:
            continue
        elif pid in codes:
            why = code_problem(codes[pid], pid, now)
            if why is not None:
                out.append((pid, why))
        else:
            out.append((pid, f"has not authorised {booker_id}"))
    return out


def refuse(problems: Sequence[tuple[str, str]]) -> PassengerNotAllowed:
    """The error for :func:`refusals`: one sentence per passenger, and a machine-readable list."""
    errors = [{"loc": f"passengers.{pid}", "msg": why} for pid, why in problems]
    detail = "; ".join(f"{e['loc']}: {e['msg']}" for e in errors)
    return PassengerNotAllowed(detail, errors=errors)


def payment(points: int, lots: Sequence[Lot], reason: str) -> Journal:
    """The booking's journal: ``points`` from available lots (already in spending order) to
    ``program:redeemed``. Raises :class:`InsufficientPoints` rather than going into debt."""
    journal = take_back(
        points,
        sources=[(Account.AVAILABLE, lot) for lot in lots],
        counter=Account.REDEEMED,
        kind=JournalKind.REDEMPTION,
        shortfall_to=None,
        reason=reason,
    )
    assert journal is not None  # points > 0 is checked by check_request
    return journal


def refund(taken: Sequence[tuple[str, int]], reason: str, *, debt: int = 0) -> Journal:
    """The cancellation's journal: each ``(lot id, points)`` the payment took goes back to the
    same lot in ``available``, a ``debt`` the member owes repaid first; ``program:redeemed``
    gives up the total."""
    total = sum(points for _, points in taken)
    postings = [Posting(Account.REDEEMED, -total), *returned(taken, debt=debt)]
    return Journal(JournalKind.CANCELLATION, tuple(postings), reason)
