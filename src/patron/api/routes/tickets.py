"""Members-only events with tickets: create events, RSVP, waitlist, cancel, QR codes, check-in."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Connection

from patron.api.deps import CallDep
from patron.services import tickets
from patron.services.instant import Instant
from patron.services.merchants import Principal

router = APIRouter(tags=["tickets"])

TierId = Annotated[str, Field(min_length=1, max_length=100)]


class TicketedEventCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: Annotated[str, Field(min_length=1, max_length=200)]
    starts_at: Instant
    place: Annotated[str, Field(min_length=1, max_length=500)]
    capacity: Annotated[int, Field(ge=1, le=1_000_000, description="Seats.")]
    audience: Annotated[
        list[TierId], Field(max_length=50, description="Tier ids that may RSVP; empty: every member.")
    ] = []
    price: Annotated[int, Field(ge=0, le=10**9, description="Points per ticket; 0: free.")] = 0
    waitlist: bool = Field(True, description="When full, RSVPs join a waitlist (else 409 `event-full`).")


class RsvpCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    member_id: Annotated[str, Field(min_length=1, max_length=40)]


class CheckIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    code: Annotated[str, Field(min_length=1, max_length=40)]


#: a till's or a back office's: checked before an Idempotency-Key replay, as any scope
TILL_OR_WRITER = ("pos", "write")


@router.post("/programs/{program_id}/ticketed-events", status_code=201)
def create_event(program_id: str, body: TicketedEventCreate, call: CallDep) -> JSONResponse:
    """Create a members-only event of the program. It must start in the future; `audience` lists
    tiers of the program; `price` is in points (0 for a free event)."""
    return call.run(
        lambda conn, p: tickets.create_event(
            conn,
            merchant_id=p.merchant_id,
            program_id=program_id,
            name=body.name,
            place=body.place,
            starts_at=body.starts_at,
            capacity=body.capacity,
            audience=body.audience,
            price=body.price,
            waitlist=body.waitlist,
        ),
        scope="admin",
        status=201,
        body=body.model_dump(),
    )


@router.get("/programs/{program_id}/ticketed-events")
def list_events(program_id: str, call: CallDep) -> JSONResponse:
    """The program's events, soonest first, with seats taken and left and the waitlist length."""
    return call.run(
        lambda conn, p: {"data": tickets.list_events(conn, merchant_id=p.merchant_id, program_id=program_id)},
        scope="read",
    )


@router.get("/ticketed-events/{event_id}")
def get_event(event_id: str, call: CallDep) -> JSONResponse:
    return call.run(
        lambda conn, p: tickets.get_event(conn, merchant_id=p.merchant_id, event_id=event_id), scope="read"
    )


@router.get("/ticketed-events/{event_id}/tickets")
def event_tickets(event_id: str, call: CallDep) -> JSONResponse:
    """The event's tickets in the order they were asked for (the waitlist order)."""
    return call.run(
        lambda conn, p: {
            "data": tickets.tickets_of_event(conn, merchant_id=p.merchant_id, event_id=event_id)
        },
        scope="read",
    )


@router.post("/ticketed-events/{event_id}/rsvp", status_code=201)
def rsvp(event_id: str, body: RsvpCreate, call: CallDep) -> JSONResponse:
    """RSVP a member (`pos` or `write` scope). While seats last the ticket is `issued` with its
    `code`; when full the member is `waitlisted` (or 409 `event-full` if the event keeps no
    waitlist). A paid event takes its price in points: spent for a seat, held for a waitlist place
    (not enough points is 409 `insufficient-points`)."""

    def work(conn: Connection, p: Principal) -> dict[str, object]:
        return tickets.rsvp(conn, merchant_id=p.merchant_id, event_id=event_id, member_id=body.member_id)

    return call.run(work, scope=TILL_OR_WRITER, status=201, body=body.model_dump())


@router.get("/tickets/{ticket_id}")
def get_ticket(ticket_id: str, call: CallDep) -> JSONResponse:
    return call.run(
        lambda conn, p: tickets.get_ticket(conn, merchant_id=p.merchant_id, ticket_id=ticket_id), scope="read"
    )


@router.get(
    "/tickets/{ticket_id}/qr.svg",
    response_class=Response,
    responses={200: {"content": {"image/svg+xml": {}}}},
)
def ticket_qr(ticket_id: str, call: CallDep) -> Response:
    """The ticket's code as a QR code (SVG), to print or show at the door."""
    found = call.run(
        lambda conn, p: {
            "code": tickets.get_ticket(conn, merchant_id=p.merchant_id, ticket_id=ticket_id)["code"]
        },
        scope="read",
    )
    code = json.loads(bytes(found.body))["code"]
    return Response(tickets.render_qr(code), media_type="image/svg+xml")


@router.post("/tickets/{ticket_id}/cancel")
def cancel(ticket_id: str, call: CallDep) -> JSONResponse:
    """Cancel a ticket: paid points go back to the member, and the freed seat goes to the first
    member on the waitlist (returned as `promoted`). A checked-in ticket cannot be cancelled."""

    def work(conn: Connection, p: Principal) -> dict[str, object]:
        return tickets.cancel(conn, merchant_id=p.merchant_id, ticket_id=ticket_id)

    return call.run(work, scope=TILL_OR_WRITER)


@router.post("/tickets/check-in")
def check_in(body: CheckIn, call: CallDep) -> JSONResponse:
    """At the door: check a ticket in by its code, once. A second check-in is 409
    `already-checked-in` saying when the first was; a cancelled ticket is 409; an unknown code 404."""
    return call.run(
        lambda conn, p: tickets.check_in(conn, merchant_id=p.merchant_id, code=body.code),
        scope="pos",
        body=body.model_dump(),
    )
