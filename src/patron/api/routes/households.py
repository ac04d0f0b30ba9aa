"""Households (family pooling): a head and members with roles; redeemable points pooled, status
individual; joins, leaves and changes audited, with a cooldown before joining another household."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Connection

from patron.api.deps import CallDep
from patron.services import households
from patron.services.merchants import Principal

router = APIRouter(tags=["households"])

Id = Annotated[str, Field(min_length=1, max_length=40)]
Reason = Annotated[str, Field(max_length=500, description="Why, for the audit trail.")]


class HouseholdCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    program_id: Id
    head_member_id: Id
    name: Annotated[str, Field(min_length=1, max_length=200)]
    reason: Reason = ""


class HouseholdMemberAdd(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    member_id: Id
    role: Literal["adult", "member", "head"] = Field(
        "member", description="`adult` or `member`; a household has one head (hand it over with PATCH)."
    )
    can_spend: bool = Field(
        False, description="May spend the pool (needed by `member`s, and under `head_allows`)."
    )
    reason: Reason = ""


class HouseholdMemberUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    role: Literal["head", "adult", "member"] | None = Field(
        None, description="`head` hands headship over; the previous head becomes an adult."
    )
    can_spend: bool | None = None
    reason: Reason = ""


class HouseholdRedemptionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    member_id: Id
    reward_id: Annotated[str, Field(min_length=1, max_length=100)]


def _actor(p: Principal) -> str:
    return f"api_key:{p.key_id}"


@router.post("/households", status_code=201)
def create_household(body: HouseholdCreate, call: CallDep) -> JSONResponse:
    """Create a household headed by `head_member_id`. The program must have a `households`
    setting (else 422 `households-not-offered`); the head must not be in another household
    (409 `already-in-household`) nor within the cooldown after leaving one (409
    `household-cooldown`)."""
    return call.run(
        lambda conn, p: households.create_household(
            conn,
            merchant_id=p.merchant_id,
            program_id=body.program_id,
            head_member_id=body.head_member_id,
            name=body.name,
            actor=_actor(p),
            reason=body.reason,
        ),
        scope="write",
        status=201,
        body=body.model_dump(),
    )


@router.get("/households/{household_id}")
def get_household(household_id: str, call: CallDep) -> JSONResponse:
    """The household: members with their roles, permission to spend the pool and available points,
    and the pool total (the available points of its active members)."""
    return call.run(
        lambda conn, p: households.get_household(conn, merchant_id=p.merchant_id, household_id=household_id),
        scope="read",
    )


@router.post("/households/{household_id}/members", status_code=201)
def add_member(household_id: str, body: HouseholdMemberAdd, call: CallDep) -> JSONResponse:
    """Add a member. A full household is 409 `household-full` and nothing is written; a member in
    another household is 409 `already-in-household`; one who left a household within the
    program's `cooldown_days` is 409 `household-cooldown` (with `cooldown_until`)."""
    return call.run(
        lambda conn, p: households.add_member(
            conn,
            merchant_id=p.merchant_id,
            household_id=household_id,
            member_id=body.member_id,
            role=body.role,
            can_spend=body.can_spend,
            actor=_actor(p),
            reason=body.reason,
        ),
        scope="write",
        status=201,
        body=body.model_dump(),
    )


@router.patch("/households/{household_id}/members/{member_id}")
def update_member(
    household_id: str, member_id: str, body: HouseholdMemberUpdate, call: CallDep
) -> JSONResponse:
    """Change a member's `role` or `can_spend`. Every change is audited."""
    return call.run(
        lambda conn, p: households.update_member(
            conn,
            merchant_id=p.merchant_id,
            household_id=household_id,
            member_id=member_id,
            role=body.role,
            can_spend=body.can_spend,
            actor=_actor(p),
            reason=body.reason,
        ),
        scope="write",
    )


@router.delete("/households/{household_id}/members/{member_id}")
def remove_member(
    household_id: str,
    member_id: str,
    call: CallDep,
    by: Annotated[
        Literal["member", "head"], Query(description="`member`: they leave; `head`: the head removes them.")
    ] = "member",
    reason: Annotated[str, Query(max_length=500)] = "",
) -> JSONResponse:
    """The member leaves (or is removed by the head). Their points stay theirs; the cooldown
    before joining another household starts now (`cooldown_until`). The head leaves last, which
    dissolves the household (409 `household-head-must-stay` while others remain)."""

    def work(conn: Connection, p: Principal) -> dict[str, object]:
        return households.remove_member(
            conn,
            merchant_id=p.merchant_id,
            household_id=household_id,
            member_id=member_id,
            by_head=by == "head",
            actor=_actor(p),
            reason=reason,
        )

    return call.run(work, scope="write")


@router.get("/households/{household_id}/events")
def household_events(
    household_id: str,
    call: CallDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=100)] = None,
) -> JSONResponse:
    """The audit trail, oldest first: `created`, `joined`, `left`, `removed`, `role_changed`,
    `permission_changed`, each with the member, the actor, the reason and when."""
    return call.run(
        lambda conn, p: households.events(
            conn, merchant_id=p.merchant_id, household_id=household_id, limit=limit, cursor=cursor
        ),
        scope="read",
    )


@router.get("/members/{member_id}/household")
def member_household(member_id: str, call: CallDep) -> JSONResponse:
    """The member's household (or null), their role, and `cooldown_until` when they recently left one."""
    return call.run(
        lambda conn, p: households.household_of_member(conn, merchant_id=p.merchant_id, member_id=member_id),
        scope="read",
    )


@router.post("/households/{household_id}/redemptions", status_code=201)
def redeem(household_id: str, body: HouseholdRedemptionCreate, call: CallDep) -> JSONResponse:
    """Reserve a reward for `member_id` with the household's pooled points: their own points
    first, then the other members' soonest-expiring points (moved to them by a
    `household_transfer` ledger entry). A member the policy does not let spend the pool is 403
    `household-spending-not-allowed`; a pool too small is 409 `insufficient-points`. The result's
    `redemption` is redeemed or cancelled like any other."""

    def work(conn: Connection, p: Principal) -> dict[str, object]:
        return households.redeem(
            conn,
            merchant_id=p.merchant_id,
            household_id=household_id,
            member_id=body.member_id,
            reward_id=body.reward_id,
        )

    # the scope is checked before an Idempotency-Key replay: a read key gets no stored answer
    return call.run(work, scope=("pos", "write"), status=201, body=body.model_dump())
