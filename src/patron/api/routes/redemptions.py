"""Rewards and redemptions: reserve, redeem (at the till or online), cancel; validate a code."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from patron.api.deps import CallDep
from patron.services import redemptions

router = APIRouter(tags=["redemptions"])


class RedemptionCreate(BaseModel):
    """One of: `reward_id`; `reward_ids` (several rewards for one order, all or none); or `points`
    with `order_amount` (pay with points toward an order)."""

    model_config = ConfigDict(extra="forbid")

    reward_id: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    reward_ids: (
        Annotated[list[Annotated[str, Field(min_length=1, max_length=100)]], Field(max_length=20)] | None
    ) = None
    points: Annotated[int, Field(ge=1, le=10**9)] | None = None
    order_amount: Annotated[int, Field(ge=1, le=10**12)] | None = None
    location_id: Annotated[str, Field(min_length=1, max_length=100)] | None = None

    @model_validator(mode="after")
    def _one(self) -> RedemptionCreate:
        given = [x is not None for x in (self.reward_id, self.reward_ids, self.points)]
        if sum(given) != 1:
            raise ValueError("give exactly one of reward_id, reward_ids or points")
        if self.points is not None and self.order_amount is None:
            raise ValueError("paying with points needs order_amount")
        return self


class FulfilmentUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal["shipped", "delivered", "cancelled"]


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
    issued. Not enough points is 409 `insufficient-points`. With `reward_ids`, several rewards for
    one order (all or none); with `points` and `order_amount`, pay with points toward an order (the
    code grants a discount worth the points, capped by the program's `points_payment`)."""

    def work(conn, p):  # type: ignore[no-untyped-def]
        if body.reward_ids is not None:
            made = redemptions.reserve_many(
                conn,
                merchant_id=p.merchant_id,
                member_id=member_id,
                reward_ids=body.reward_ids,
                location_id=body.location_id,
            )
            return {"data": made, "points": sum(r["points"] for r in made)}
        if body.points is not None and body.order_amount is not None:
            return redemptions.pay_with_points(
                conn,
                merchant_id=p.merchant_id,
                member_id=member_id,
                points=body.points,
                order_amount=body.order_amount,
                location_id=body.location_id,
            )
        assert body.reward_id is not None
        return redemptions.reserve(
            conn,
            merchant_id=p.merchant_id,
            member_id=member_id,
            reward_id=body.reward_id,
            location_id=body.location_id,
        )

    return call.run(work, scope="pos", status=201, body=body.model_dump())


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


@router.post("/redemptions/{redemption_id}/fulfilment")
def fulfilment(redemption_id: str, body: FulfilmentUpdate, call: CallDep) -> JSONResponse:
    """Track a redeemed physical gift: ordered → shipped → delivered, or cancelled."""
    return call.run(
        lambda conn, p: redemptions.set_fulfilment(
            conn, merchant_id=p.merchant_id, redemption_id=redemption_id, status=body.status
        ),
        scope="write",
        body=body.model_dump(),
    )
