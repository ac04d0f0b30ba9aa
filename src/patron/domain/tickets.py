"""Tickets: members-only events with a capacity, RSVP, a waitlist, and a check-in at the door.

An event belongs to one program, has a start time, a place and a ``capacity`` (seats). It may be
limited to some tiers (``audience``) and may cost points (``price``). A member RSVPs:

* while a seat is free, the member gets a ticket at once (``issued``) with a unique code;
* when every seat is taken, the member joins the waitlist (``waitlisted``) if the event allows
  one, else the RSVP is refused (:class:`EventFull`);
* cancelling an issued ticket frees its seat, and the first waitlisted member (first come, first
  served) is promoted to ``issued``;
* a ticket is checked in once (``checked_in``); a second check-in says when the first one was.

Points of a paid event move through the ledger as a redemption does (see ``domain/rewards.py``):
joining the waitlist *reserves* the price (available -> reserved), so that a promotion can always
pay; getting a seat *redeems* it (reserved -> program:redeemed); cancelling gives back exactly
what was taken, to the same lots (reserved -> available for a waitlisted ticket, program:redeemed
-> available for an issued one).

Invariants
----------
1. ``issued + checked_in <= capacity`` for every event, at every moment.
2. A member holds at most one live ticket (issued, waitlisted or checked in) per event.
3. Waitlisted members are promoted in the order they joined.
4. A ticket is checked in at most once; a cancelled or used ticket never comes back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from patron.domain.errors import Conflict, InvalidInput, MemberInactive
from patron.domain.ledger import Account, Journal, JournalKind, Posting, returned


class EventStatus(StrEnum):
    SCHEDULED = "scheduled"
    CANCELLED = "cancelled"


class TicketStatus(StrEnum):
    ISSUED = "issued"
    WAITLISTED = "waitlisted"
    CHECKED_IN = "checked_in"
    CANCELLED = "cancelled"


#: Statuses that hold a seat.
SEATED = (TicketStatus.ISSUED, TicketStatus.CHECKED_IN)
#: Statuses that count as the member's one live ticket for an event.
LIVE = (TicketStatus.ISSUED, TicketStatus.WAITLISTED, TicketStatus.CHECKED_IN)


class EventFull(Conflict):
    code = "event-full"
    title = "The event is full"


class EventClosed(Conflict):
    """The event has started (or was cancelled): no more RSVPs."""

    code = "event-closed"
    title = "The event is closed"


class AlreadyRegistered(Conflict):
    code = "already-registered"
    title = "The member already has a ticket for this event"


class NotInAudience(Conflict):
    code = "not-in-audience"
    title = "The event is for other tiers"


class AlreadyCheckedIn(Conflict):
    code = "already-checked-in"
    title = "Ticket already checked in"


class TicketCancelled(Conflict):
    code = "ticket-cancelled"
    title = "Ticket was cancelled"


class TicketWaitlisted(Conflict):
    code = "ticket-waitlisted"
    title = "Ticket is on the waitlist"


class EventInPast(InvalidInput):
    code = "event-in-past"
    title = "The event starts in the past"


class UnknownTier(InvalidInput):
    code = "unknown-tier"
    title = "No such tier in the program"


class WrongProgram(InvalidInput):
    code = "wrong-program"
    title = "The member belongs to another program"


@dataclass(frozen=True, slots=True)
class Event:
    """What the rules need to know about an event."""

    id: str
    starts_at: datetime
    capacity: int
    audience: tuple[str, ...] = ()
    price: int = 0
    waitlist: bool = True
    status: EventStatus = EventStatus.SCHEDULED


def check_new_event(
    *,
    starts_at: datetime,
    capacity: int,
    price: int,
    audience: Sequence[str],
    tiers: Sequence[str],
    now: datetime,
) -> None:
    """An event must start in the future, seat at least one person, cost no negative points and
    name only tiers the program has."""
    if starts_at <= now:
        raise EventInPast(f"the event starts at {starts_at.isoformat()}, which is not in the future")
    if capacity < 1:
        raise InvalidInput("capacity must be at least 1", field="capacity")
    if price < 0:
        raise InvalidInput("price must be 0 or more points", field="price")
    unknown = sorted(set(audience) - set(tiers))
    if unknown:
        raise UnknownTier(f"the program has no tier {', '.join(unknown)}", field="audience", tiers=unknown)


def rsvp(
    event: Event,
    *,
    now: datetime,
    member_status: str,
    tier_id: str | None,
    seated: int,
    already: bool,
) -> TicketStatus:
    """What an RSVP gives the member now: a seat, a place on the waitlist, or why not.

    ``seated`` is how many tickets hold a seat; ``already`` says whether the member holds a live
    ticket. The caller counts both under the event's lock, so the answer cannot go stale.
    """
    if event.status != EventStatus.SCHEDULED:
        raise EventClosed(f"event {event.id} was {event.status}")
    if now >= event.starts_at:
        raise EventClosed(f"event {event.id} started at {event.starts_at.isoformat()}")
    if member_status != "active":
        raise MemberInactive(f"member is {member_status}: no tickets")
    if event.audience and tier_id not in event.audience:
        raise NotInAudience(
            f"event {event.id} is for tiers {', '.join(event.audience)}", tiers=list(event.audience)
        )
    if already:
        raise AlreadyRegistered(f"the member already has a ticket for event {event.id}")
    if seated < event.capacity:
        return TicketStatus.ISSUED
    if not event.waitlist:
        raise EventFull(f"all {event.capacity} seats of event {event.id} are taken")
    return TicketStatus.WAITLISTED


def check_in(status: str, *, checked_in_at: datetime | None) -> None:
    """Only an issued ticket can be checked in, and only once."""
    if status == TicketStatus.CHECKED_IN:
        when = checked_in_at.isoformat() if checked_in_at else "earlier"
        raise AlreadyCheckedIn(f"this ticket was already checked in at {when}", checked_in_at=checked_in_at)
    if status == TicketStatus.CANCELLED:
        raise TicketCancelled("this ticket was cancelled")
    if status == TicketStatus.WAITLISTED:
        raise TicketWaitlisted("this ticket is on the waitlist and has no seat yet")


def check_cancel(status: str, *, checked_in_at: datetime | None, starts_at: datetime, now: datetime) -> None:
    """An issued or waitlisted ticket can be cancelled until the event starts; a used or
    cancelled one cannot (nor, once it has started, one the member did not use: no refund for a
    no-show, and no seat to hand to the waitlist)."""
    if status == TicketStatus.CHECKED_IN:
        when = checked_in_at.isoformat() if checked_in_at else "earlier"
        raise AlreadyCheckedIn(
            f"this ticket was checked in at {when}; a used ticket cannot be cancelled",
            checked_in_at=checked_in_at,
        )
    if status == TicketStatus.CANCELLED:
        raise TicketCancelled("this ticket was already cancelled")
    if now >= starts_at:
        raise EventClosed(
            f"the event started at {starts_at.isoformat()}: its tickets can no longer be cancelled"
        )


def give_back_redeemed(held: Sequence[tuple[str, int]], *, reason: str, debt: int = 0) -> Journal:
    """Return the points an issued paid ticket spent: program:redeemed -> available, to the same
    lots (``held`` is what the reservation took, lot by lot), a ``debt`` owed repaid first."""
    postings = returned(held, debt=debt)
    postings.append(Posting(Account.REDEEMED, -sum(p for _, p in held)))
    return Journal(JournalKind.CANCELLATION, tuple(postings), reason)
