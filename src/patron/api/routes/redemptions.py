"""Rewards and redemptions: reserve, redeem (at the till or online), cancel; validate a code."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from patron.api.deps import CallDep
from patron.services import redemptions

router = APIRouter(tags=["redemptions"])


class RedemptionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reward_id: Annotated[str, Field(min_length=1, max_length=100)]
    location_id: Annotated[str, Field(min_length=1, max_length=100)] | None = None


@router.get("/members/{member_id}/rewards")
def member_rewards(member_id: str, call: CallDep) -> JSONResponse:
    """The catalogue for this member: cost in their tier, and whether they can redeem each now."""
    return call.run(
        lambda conn, p: {"data": redemptions.catalogue(conn, merchant_id=p.merchant_id, member_id=member_id)},
        scope="read",
    )


@router.post("/members/{member_id}/redemptions", status_code=201)
def reserve(member_id: str, body: RedemptionCreate, call: CallDep) -> JSONResponse:
    """Reserve a reward: its points move from available to reserved and a single-use `code` is
    issued. Not enough points is 409 `insufficient-points`."""
    return call.run(
        lambda conn, p: redemptions.reserve(
            conn,
            merchant_id=p.merchant_id,
            member_id=member_id,
            reward_id=body.reward_id,
            location_id=body.location_id,
        ),
        scope="pos",
        status=201,
        body=body.model_dump(),
    )


@router.get("/members/{member_id}/redemptions")
def list_redemptions(member_id: str, call: CallDep) -> JSONResponse:
    """The member's redemptions, newest first."""
    return call.run(
        lambda conn, p: {"data": redemptions.of_member(conn, merchant_id=p.merchant_id, member_id=member_id)},
        scope="read",
    )


@router.get("/redemptions/{redemption_id}")
def get_redemption(redemption_id: str, call: CallDep) -> JSONResponse:
    return call.run(
        lambda conn, p: redemptions.get(conn, merchant_id=p.merchant_id, redemption_id=redemption_id),
        scope="read",
    )


@router.post("/redemptions/{redemption_id}/redeem")
def redeem(redemption_id: str, call: CallDep) -> JSONResponse:
    """Redeem a reservation (final). Cancelled, lapsed or already redeemed is 409 with its type."""
    return call.run(
        lambda conn, p: redemptions.redeem(conn, merchant_id=p.merchant_id, redemption_id=redemption_id),
        scope="pos",
    )


@router.post("/redemptions/{redemption_id}/cancel")
def cancel(redemption_id: str, call: CallDep) -> JSONResponse:
    """Cancel a reservation: the points return to available with their original expiry."""
    return call.run(
        lambda conn, p: redemptions.cancel(conn, merchant_id=p.merchant_id, redemption_id=redemption_id),
        scope="pos",
    )


@router.get("/codes/{code}")
def validate_code(code: str, call: CallDep) -> JSONResponse:
    """At the till: what a code grants, for whom, and whether it can be used now (or why not)."""
    return call.run(
        lambda conn, p: redemptions.validate_code(conn, merchant_id=p.merchant_id, code=code), scope="pos"
    )


@router.post("/codes/{code}/redeem")
def redeem_code(code: str, call: CallDep) -> JSONResponse:
    """At the till: consume a code exactly once."""
    return call.run(
        lambda conn, p: redemptions.redeem(conn, merchant_id=p.merchant_id, code=code), scope="pos"
    )
