"""Members: enrol, look up, change, and see points, ledger and tier."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from patron.api.deps import CallDep
from patron.domain.errors import InvalidInput
from patron.services import ledger, members
from patron.services.instant import Instant
from patron.services.members import MemberCreate, MemberUpdate, member_view

router = APIRouter(tags=["members"])


class AdjustmentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    points: Annotated[int, Field(ge=-ledger.MAX_ADJUSTMENT, le=ledger.MAX_ADJUSTMENT)]
    reason: Annotated[str, Field(min_length=1, max_length=500)]


@router.post("/members", status_code=201)
def enrol(body: MemberCreate, call: CallDep) -> JSONResponse:
    """Enrol a member. A duplicate email, phone or external id in the program is 409."""

    def work(conn, p):  # type: ignore[no-untyped-def]
        row = members.enrol(conn, merchant_id=p.merchant_id, data=body)
        return member_view(conn, merchant_id=p.merchant_id, member=row)

    return call.run(work, scope="write", status=201, body=body.model_dump(mode="json"))


@router.get("/members")
def find_members(
    call: CallDep,
    email: str | None = None,
    phone: str | None = None,
    card_number: str | None = None,
    external_id: str | None = None,
    program_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> JSONResponse:
    """Find members by email (case-insensitive), phone (any format, compared in E.164), card
    number or external id."""
    if not any((email, phone, card_number, external_id, program_id)):
        raise InvalidInput("give email, phone, card_number, external_id or program_id")

    def work(conn, p):  # type: ignore[no-untyped-def]
        rows = members.find(
            conn,
            merchant_id=p.merchant_id,
            email=email,
            phone=phone,
            card_number=card_number,
            external_id=external_id,
            program_id=program_id,
            limit=limit,
        )
        return {"data": [member_view(conn, merchant_id=p.merchant_id, member=r) for r in rows]}

    return call.run(work, scope="read")


@router.get("/members/{member_id}")
def get_member(member_id: str, call: CallDep, as_of: Instant | None = None) -> JSONResponse:
    """A member with points (available, pending, reserved, debt, lifetime_earned, expired,
    redeemed) and tier, now or as of a past instant."""

    def work(conn, p):  # type: ignore[no-untyped-def]
        row = members.get_member(conn, merchant_id=p.merchant_id, member_id=member_id)
        return member_view(conn, merchant_id=p.merchant_id, member=row, as_of=as_of)

    return call.run(work, scope="read")


@router.patch("/members/{member_id}")
def update_member(member_id: str, body: MemberUpdate, call: CallDep) -> JSONResponse:
    """Change profile fields or status (`active`, `suspended`: no earning, `closed`: final)."""

    def work(conn, p):  # type: ignore[no-untyped-def]
        row = members.update(conn, merchant_id=p.merchant_id, member_id=member_id, data=body)
        return member_view(conn, merchant_id=p.merchant_id, member=row)

    return call.run(work, scope="write")


@router.get("/members/{member_id}/balance")
def member_balance(member_id: str, call: CallDep) -> JSONResponse:
    """The member's points now (available, pending, reserved, debt, lifetime_earned, expired,
    redeemed), and nothing else: the quickest read, for tills and shop pages."""
    return call.run(
        lambda conn, p: ledger.balance(conn, merchant_id=p.merchant_id, member_id=member_id), scope="read"
    )


@router.get("/members/{member_id}/punch-cards")
def member_punch_cards(member_id: str, call: CallDep) -> JSONResponse:
    """The member's punch cards: punches on the current card, how many remain to the reward,
    and how many cards were filled."""

    def work(conn, p):  # type: ignore[no-untyped-def]
        from patron.services.punch_cards import cards_of

        return {"data": cards_of(conn, merchant_id=p.merchant_id, member_id=member_id)}

    return call.run(work, scope="read")


@router.get("/members/{member_id}/ledger")
def member_ledger(
    member_id: str,
    call: CallDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
    as_of: Instant | None = None,
) -> JSONResponse:
    """The member's postings, newest first. Per `account`, `points` sum to that balance."""

    def work(conn, p):  # type: ignore[no-untyped-def]
        members.get_member(conn, merchant_id=p.merchant_id, member_id=member_id)
        return ledger.ledger_page(
            conn,
            merchant_id=p.merchant_id,
            member_id=member_id,
            limit=limit,
            cursor=cursor,
            as_of=as_of,
        )

    return call.run(work, scope="read")


@router.post("/members/{member_id}/adjustments", status_code=201)
def adjust(member_id: str, body: AdjustmentCreate, call: CallDep) -> JSONResponse:
    """Credit or debit points by hand, with a reason. A debit beyond the available balance is
    409 `insufficient-points`."""
    return call.run(
        lambda conn, p: ledger.adjust(
            conn,
            merchant_id=p.merchant_id,
            member_id=member_id,
            points=body.points,
            reason=body.reason,
        ),
        scope="write",
        status=201,
        body=body.model_dump(),
    )


@router.get("/members/{member_id}/export")
def export_member(member_id: str, call: CallDep) -> JSONResponse:
    """Everything Patron holds about the member: profile, balances, events and ledger."""
    return call.run(
        lambda conn, p: members.export(conn, merchant_id=p.merchant_id, member_id=member_id),
        scope="admin",
    )


@router.post("/members/{member_id}/erase")
def erase_member(member_id: str, call: CallDep) -> JSONResponse:
    """Anonymise the member's personal data and close the membership. The ledger stays whole."""

    def work(conn, p):  # type: ignore[no-untyped-def]
        row = members.erase(conn, merchant_id=p.merchant_id, member_id=member_id)
        return member_view(conn, merchant_id=p.merchant_id, member=row)

    return call.run(work, scope="admin")


@router.get("/members/{member_id}/referrals")
def member_referrals(member_id: str, call: CallDep) -> JSONResponse:
    """Who referred the member, and the referrals they made (completed or revoked)."""

    def work(conn, p):  # type: ignore[no-untyped-def]
        from patron.services import referrals

        members.get_member(conn, merchant_id=p.merchant_id, member_id=member_id)
        return referrals.of_member(conn, merchant_id=p.merchant_id, member_id=member_id)

    return call.run(work, scope="read")
