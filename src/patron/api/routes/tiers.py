"""Tiers: where a member stands and why, their history, assignments, and previews of new rules."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from patron.api.deps import CallDep
from patron.services import members, tiers
from patron.services.clock import utcnow
from patron.services.instant import Instant
from patron.services.programs import get_program, program_at, validate_spec

router = APIRouter(tags=["tiers"])


class TierAssign(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tier_id: Annotated[str, Field(min_length=1, max_length=100)]
    reason: Annotated[str, Field(min_length=1, max_length=500)]
    until: Instant | None = None


@router.get("/members/{member_id}/tier")
def member_tier(member_id: str, call: CallDep, as_of: Instant | None = None) -> JSONResponse:
    """The member's tier, since when and why, the qualifying period's value, what keeps the tier
    (`keep.remaining` of the metric by `keep.by`) and what reaches the next."""

    def work(conn, p):  # type: ignore[no-untyped-def]
        row = members.get_member(conn, merchant_id=p.merchant_id, member_id=member_id)
        at = as_of or utcnow()
        program, _ = program_at(conn, merchant_id=p.merchant_id, program_id=row["program_id"], at=at)
        state = tiers.tier_state(conn, merchant_id=p.merchant_id, member=row, program=program, as_of=at)
        return tiers.tier_detail(state, program)

    return call.run(work, scope="read")


@router.get("/members/{member_id}/tier/history")
def member_tier_history(member_id: str, call: CallDep, as_of: Instant | None = None) -> JSONResponse:
    """Every tier change with its time, reason and cause (`event`, `period_end`, `assignment`)."""

    def work(conn, p):  # type: ignore[no-untyped-def]
        row = members.get_member(conn, merchant_id=p.merchant_id, member_id=member_id)
        at = as_of or utcnow()
        program, _ = program_at(conn, merchant_id=p.merchant_id, program_id=row["program_id"], at=at)
        return {
            "data": tiers.tier_history(conn, merchant_id=p.merchant_id, member=row, program=program, as_of=at)
        }

    return call.run(work, scope="read")


@router.post("/members/{member_id}/tier", status_code=201)
def assign_tier(member_id: str, body: TierAssign, call: CallDep) -> JSONResponse:
    """Give the member a tier by hand (manual or invite-only). It is a floor: the member never
    drops below it while it lasts, and still climbs above it by qualifying."""

    def work(conn, p):  # type: ignore[no-untyped-def]
        row = members.get_member(conn, merchant_id=p.merchant_id, member_id=member_id)
        program, _ = program_at(conn, merchant_id=p.merchant_id, program_id=row["program_id"], at=utcnow())
        return tiers.assign(
            conn,
            merchant_id=p.merchant_id,
            member=row,
            program=program,
            tier_id=body.tier_id,
            reason=body.reason,
            until=body.until,
        )

    return call.run(work, scope="admin", status=201, body=body.model_dump(mode="json"))


@router.delete("/members/{member_id}/tier")
def end_assignment(member_id: str, call: CallDep) -> JSONResponse:
    """End the member's tier assignments now; from here the tier policy alone places them."""

    def work(conn, p):  # type: ignore[no-untyped-def]
        members.get_member(conn, merchant_id=p.merchant_id, member_id=member_id)
        return {"ended": tiers.unassign(conn, merchant_id=p.merchant_id, member_id=member_id)}

    return call.run(work, scope="admin")


@router.post("/programs/{program_id}/tiers/preview")
def preview_tiers(program_id: str, call: CallDep, body: Any = Body(...)) -> JSONResponse:
    """Before publishing new tier rules: who would move up or down if the proposed program (a full
    program body, as for `PUT /v1/programs/{id}`) replaced the current one now. Writes nothing."""

    def work(conn, p):  # type: ignore[no-untyped-def]
        get_program(conn, merchant_id=p.merchant_id, program_id=program_id)
        now = utcnow()
        current, _ = program_at(conn, merchant_id=p.merchant_id, program_id=program_id, at=now)
        proposed = validate_spec(body).to_domain()
        return tiers.preview(
            conn,
            merchant_id=p.merchant_id,
            program_id=program_id,
            current=current,
            proposed=proposed,
            as_of=now,
        )

    return call.run(work, scope="read", body=body)
