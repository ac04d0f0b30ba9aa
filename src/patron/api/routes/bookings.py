"""Travel award bookings: passengers' consents, booking for several passengers, cancellation."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Connection

from patron.api.deps import CallDep
from patron.services import bookings
from patron.services.merchants import Principal

router = APIRouter(tags=["bookings"])

MemberId = Annotated[str, Field(min_length=1, max_length=40)]


class TravelConsentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    booker_id: MemberId


class BookingCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    route: Annotated[str, Field(min_length=7, max_length=7, examples=["JFK-LHR"])]
    cabin: Annotated[str, Field(min_length=1, max_length=1, description="F, J, W or Y", examples=["J"])]
    points_per_passenger: Annotated[int, Field(ge=1, le=10_000_000)]
    passengers: Annotated[list[MemberId], Field(min_length=1, max_length=9)]
    consent_codes: Annotated[
        dict[str, Annotated[str, Field(min_length=1, max_length=20)]],
        Field(max_length=9, description="Passenger id → the consent code that passenger issued."),
    ] = {}
    use_household_pool: bool = Field(
        False,
        description="Pay what the booker lacks from their household's pool (the program's `households` "
        "setting decides who may spend it).",
    )


@router.post("/members/{passenger_id}/travel-consents", status_code=201)
def give_consent(passenger_id: str, body: TravelConsentCreate, call: CallDep) -> JSONResponse:
    """The member authorises `booker_id` to book award travel for them, until revoked. Giving
    the same consent again answers 200 with the existing one."""
    return call.run(
        lambda conn, p: bookings.give_consent(
            conn, merchant_id=p.merchant_id, passenger_id=passenger_id, booker_id=body.booker_id
        ),
        scope="write",
        body=body.model_dump(),
    )


@router.get("/members/{passenger_id}/travel-consents")
def list_consents(passenger_id: str, call: CallDep) -> JSONResponse:
    """Whom the member has authorised to book travel for them."""
    return call.run(
        lambda conn, p: {
            "data": bookings.consents(conn, merchant_id=p.merchant_id, passenger_id=passenger_id)
        },
        scope="read",
    )


@router.delete("/members/{passenger_id}/travel-consents/{booker_id}")
def revoke_consent(passenger_id: str, booker_id: str, call: CallDep) -> JSONResponse:
    """Withdraw a consent. Bookings already made stand."""

    def work(conn: Connection, p: Principal) -> dict[str, str]:
        bookings.revoke_consent(
            conn, merchant_id=p.merchant_id, passenger_id=passenger_id, booker_id=booker_id
        )
        return {"passenger_id": passenger_id, "booker_id": booker_id, "status": "revoked"}

    return call.run(work, scope="write")


@router.post("/members/{passenger_id}/travel-consents/code", status_code=201)
def issue_code(passenger_id: str, call: CallDep) -> JSONResponse:
    """A short single-use code the member gives to whoever books for them; it authorises one
    booking and expires after 24 hours."""
    return call.run(
        lambda conn, p: bookings.issue_consent_code(
            conn, merchant_id=p.merchant_id, passenger_id=passenger_id
        ),
        scope="write",
        status=201,
    )


@router.post("/members/{booker_id}/bookings", status_code=201)
def book(booker_id: str, body: BookingCreate, call: CallDep) -> JSONResponse:
    """Book award seats for `passengers`: one registered ticket each, with its own code and the
    passenger's name from their profile. Every passenger must be an active member of the same
    program who authorised the booker (a standing consent, or a code in `consent_codes`); the
    booker needs no consent for themselves. A refused passenger is 422 `passenger-not-allowed`
    with `errors` naming each one and why, and nothing is written. The booker alone pays
    `points_per_passenger x passengers`; too few points is 409 `insufficient-points`."""
    return call.run(
        lambda conn, p: bookings.book(
            conn,
            merchant_id=p.merchant_id,
            booker_id=booker_id,
            route=body.route,
            cabin=body.cabin,
            points_per_passenger=body.points_per_passenger,
            passengers=body.passengers,
            consent_codes=body.consent_codes,
            use_household_pool=body.use_household_pool,
        ),
        scope="pos",
        status=201,
        body=body.model_dump(),
    )


@router.get("/members/{member_id}/bookings")
def list_bookings(member_id: str, call: CallDep) -> JSONResponse:
    """Bookings the member made or travels on, newest first."""
    return call.run(
        lambda conn, p: {"data": bookings.of_member(conn, merchant_id=p.merchant_id, member_id=member_id)},
        scope="read",
    )


@router.get("/bookings/{booking_id}")
def get_booking(booking_id: str, call: CallDep) -> JSONResponse:
    return call.run(
        lambda conn, p: bookings.get(conn, merchant_id=p.merchant_id, booking_id=booking_id), scope="read"
    )


@router.post("/bookings/{booking_id}/cancel")
def cancel(booking_id: str, call: CallDep) -> JSONResponse:
    """Cancel a booking: the points return to the booker's lots they came from (with their
    original expiry) and every ticket is voided. Cancelling again is 409 `booking-cancelled`."""
    return call.run(
        lambda conn, p: bookings.cancel(conn, merchant_id=p.merchant_id, booking_id=booking_id), scope="pos"
    )
