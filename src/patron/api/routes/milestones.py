"""Milestones, expiring points and the jobs' run log."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from patron.api.deps import CallDep
from patron.services import ledger, members, milestones
from patron.services.clock import utcnow
from patron.services.programs import get_program, program_at

router = APIRouter(tags=["milestones and expiry"])


class MilestoneDetails(BaseModel):
    model_config = ConfigDict(extra="forbid")

    details: dict[str, Annotated[str, Field(max_length=200)]]


@router.get("/members/{member_id}/milestones")
def member_milestones(member_id: str, call: CallDep) -> JSONResponse:
    """Milestones the member reached, with the bonus and any details they gave."""

    def work(conn, p):  # type: ignore[no-untyped-def]
        row = members.get_member(conn, merchant_id=p.merchant_id, member_id=member_id)
        program, _ = program_at(conn, merchant_id=p.merchant_id, program_id=row["program_id"], at=utcnow())
        return {"data": milestones.of_member(conn, merchant_id=p.merchant_id, member=row, program=program)}

    return call.run(work, scope="read")


@router.post("/members/{member_id}/milestones/{milestone_id}/details")
def milestone_details(
    member_id: str, milestone_id: str, body: MilestoneDetails, call: CallDep
) -> JSONResponse:
    """Store what a milestone asked the member for (e.g. a t-shirt size)."""

    def work(conn, p):  # type: ignore[no-untyped-def]
        row = members.get_member(conn, merchant_id=p.merchant_id, member_id=member_id)
        program, _ = program_at(conn, merchant_id=p.merchant_id, program_id=row["program_id"], at=utcnow())
        return milestones.set_details(
            conn,
            merchant_id=p.merchant_id,
            member=row,
            program=program,
            milestone_id=milestone_id,
            details=body.details,
        )

    return call.run(work, scope="write", body=body.model_dump())


@router.get("/members/{member_id}/expiring")
def member_expiring(
    member_id: str, call: CallDep, within_days: Annotated[int, Query(ge=1, le=3650)] = 30
) -> JSONResponse:
    """The member's points that expire within `within_days`, lot by lot, soonest first."""

    def work(conn, p):  # type: ignore[no-untyped-def]
        members.get_member(conn, merchant_id=p.merchant_id, member_id=member_id)
        data = ledger.expiring(conn, merchant_id=p.merchant_id, within_days=within_days, member_id=member_id)
        return {"data": data, "total": sum(r["points"] for r in data)}

    return call.run(work, scope="read")


@router.get("/programs/{program_id}/expiring")
def program_expiring(
    program_id: str, call: CallDep, within_days: Annotated[int, Query(ge=1, le=3650)] = 30
) -> JSONResponse:
    """Members with points expiring within `within_days` (who to remind, and how much)."""

    def work(conn, p):  # type: ignore[no-untyped-def]
        get_program(conn, merchant_id=p.merchant_id, program_id=program_id)
        data = ledger.expiring(
            conn, merchant_id=p.merchant_id, within_days=within_days, program_id=program_id
        )
        return {"data": data}

    return call.run(work, scope="read")
