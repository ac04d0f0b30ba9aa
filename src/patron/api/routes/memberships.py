"""Paid membership (plans, payments, cancellation), store credit, and the co-op dividend.

Fees, store credit and dividends are money: integer minor units with a currency, never points.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Connection

from patron.api.deps import CallDep
from patron.services import dividends, memberships
from patron.services.clock import utcnow
from patron.services.instant import Instant
from patron.services.merchants import Principal

router = APIRouter(tags=["memberships"])

Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code.")]
Ref = Annotated[str, Field(min_length=1, max_length=200)]


class PaymentIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    amount: Annotated[int, Field(ge=0, le=10**15, description="Minor units; the plan's fee.")]
    currency: Currency
    paid_at: Instant
    external_ref: Ref = Field(description="The payment's id at the provider; a replay records nothing.")


class MembershipCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    plan_id: Annotated[str, Field(min_length=1, max_length=100)]
    trial: bool = Field(False, description="Start in the plan's trial (the plan must offer one).")
    payment: PaymentIn | None = Field(None, description="The first payment; required without a trial.")
    started_at: Instant | None = Field(None, description="Default now; a past time brings in history.")
    external_id: Ref | None = Field(None, description="The provider's subscription id, e.g. Stripe's.")


class MembershipCancel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    at: Instant | None = Field(None, description="When renewal stopped; default now.")


class StoreCreditAdjust(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    amount: Annotated[int, Field(ge=-(10**15), le=10**15, description="Minor units; negative spends.")]
    currency: Currency
    reason: Annotated[str, Field(min_length=1, max_length=500)]


class DividendRun(BaseModel):
    model_config = ConfigDict(extra="forbid")

    year: Annotated[int, Field(ge=1970, le=9999)]


@router.post("/members/{member_id}/memberships", status_code=201)
def start_membership(member_id: str, body: MembershipCreate, call: CallDep) -> JSONResponse:
    """Start the member's membership of a plan of their program: in its trial (`trial`: true) or
    with the first `payment`, which must be exactly the plan's fee in its currency. One
    membership per member and plan; a second while one is in force is 409."""
    return call.run(
        lambda conn, p: memberships.start_membership(
            conn,
            merchant_id=p.merchant_id,
            member_id=member_id,
            plan_id=body.plan_id,
            trial=body.trial,
            started_at=body.started_at,
            payment=body.payment.model_dump() if body.payment else None,
            external_id=body.external_id,
        ),
        scope="write",
        status=201,
        body=body.model_dump(mode="json"),
    )


@router.get("/members/{member_id}/memberships")
def list_memberships(member_id: str, call: CallDep, as_of: Instant | None = None) -> JSONResponse:
    """The member's memberships with their state as of `as_of` (default now): `trialing`,
    `active`, `past_due`, `cancelled` or `lapsed`, the period paid, the tier and benefits in
    force, and fees charged and paid."""
    return call.run(
        lambda conn, p: {
            "data": memberships.list_memberships(
                conn, merchant_id=p.merchant_id, member_id=member_id, as_of=as_of
            )
        },
        scope="read",
    )


@router.get("/memberships/{membership_id}")
def get_membership(membership_id: str, call: CallDep, as_of: Instant | None = None) -> JSONResponse:
    """One membership as of `as_of`, with its payments and its history of states."""
    return call.run(
        lambda conn, p: memberships.get_membership(
            conn, merchant_id=p.merchant_id, membership_id=membership_id, as_of=as_of
        ),
        scope="read",
    )


@router.post("/memberships/{membership_id}/payments", status_code=201)
def record_payment(membership_id: str, body: PaymentIn, call: CallDep) -> JSONResponse:
    """A payment of the next period (it renews the membership and extends its tier): exactly
    the plan's fee in its currency, else 422 `payment-mismatch`. The same `external_ref` again is
    200 with nothing written; with other details 409. A lapsed or cancelled membership takes no
    payment (409 `membership-conflict`)."""

    def work(conn: Connection, p: Principal) -> tuple[dict[str, Any], int]:
        view, created = memberships.record_payment(
            conn,
            merchant_id=p.merchant_id,
            membership_id=membership_id,
            amount=body.amount,
            currency=body.currency,
            paid_at=body.paid_at,
            external_ref=body.external_ref,
        )
        return view, 201 if created else 200

    return call.run(work, scope="write", body=body.model_dump(mode="json"))


@router.post("/memberships/{membership_id}/cancel")
def cancel_membership(
    membership_id: str, call: CallDep, body: MembershipCancel | None = None
) -> JSONResponse:
    """Stop renewal: the membership is `cancelled` and its tier and benefits last to the end of
    the period already paid (a lifetime membership ends at once). Cancelling again is 409."""
    at = body.at if body else None
    return call.run(
        lambda conn, p: memberships.cancel_membership(
            conn, merchant_id=p.merchant_id, membership_id=membership_id, at=at
        ),
        scope="write",
        body=body.model_dump(mode="json") if body else None,
    )


@router.get("/members/{member_id}/store-credit")
def store_credit(
    member_id: str,
    call: CallDep,
    as_of: Instant | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> JSONResponse:
    """The member's store credit per currency (the sum of its entries) and the newest entries:
    dividends, adjustments, spending. Money, in minor units; never points."""
    return call.run(
        lambda conn, p: memberships.store_credit(
            conn, merchant_id=p.merchant_id, member_id=member_id, as_of=as_of, limit=limit
        ),
        scope="read",
    )


@router.post("/members/{member_id}/store-credit", status_code=201)
def adjust_store_credit(member_id: str, body: StoreCreditAdjust, call: CallDep) -> JSONResponse:
    """Credit (positive `amount`) or spend (negative) store credit; the balance never goes below
    zero (409 `insufficient-store-credit`). Send an Idempotency-Key to make retries safe."""
    return call.run(
        lambda conn, p: memberships.adjust_store_credit(
            conn,
            merchant_id=p.merchant_id,
            member_id=member_id,
            amount=body.amount,
            currency=body.currency,
            reason=body.reason,
        ),
        scope="write",
        status=201,
        body=body.model_dump(mode="json"),
    )


@router.post("/programs/{program_id}/dividends", status_code=201)
def pay_dividends(program_id: str, body: DividendRun, call: CallDep) -> JSONResponse:
    """Pay the program's co-op dividend for a closed `year` (in the program's timezone) as
    store credit, and return the report. 201 when paid now; 200 with the same report when the
    year was already paid (nothing written). A year not closed yet is 422 `year-not-closed`; a
    program without a `dividends` setting is 422 `no-dividend`."""

    def work(conn: Connection, p: Principal) -> tuple[dict[str, Any], int]:
        report, created = dividends.pay_year(
            conn, merchant_id=p.merchant_id, program_id=program_id, year=body.year, as_of=utcnow()
        )
        return report, 201 if created else 200

    return call.run(work, scope="admin", body=body.model_dump())


@router.get("/programs/{program_id}/dividends/{year}")
def dividend_report(
    program_id: str, year: Annotated[int, Path(ge=1970, le=9999)], call: CallDep
) -> JSONResponse:
    """What the dividend for `year` paid: each member's eligible spend and amount, the total,
    and the store credit written (equal to the total)."""
    return call.run(
        lambda conn, p: dividends.dividend_report(
            conn, merchant_id=p.merchant_id, program_id=program_id, year=year
        ),
        scope="read",
    )
