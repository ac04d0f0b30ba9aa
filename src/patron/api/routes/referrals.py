"""The referral review queue: referrals held back by a fraud check, approved or rejected by hand."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from patron.api.deps import CallDep
from patron.services import referrals

router = APIRouter(tags=["referrals"])


@router.get("/programs/{program_id}/referrals/review")
def referral_review_queue(program_id: str, call: CallDep) -> JSONResponse:
    """The program's referrals waiting for review (with the check they tripped), oldest first."""

    def work(conn, p):  # type: ignore[no-untyped-def]
        return {"data": referrals.review_queue(conn, merchant_id=p.merchant_id, program_id=program_id)}

    return call.run(work, scope="admin")


@router.post("/referrals/{referee_id}/approve")
def approve_referral(referee_id: str, call: CallDep) -> JSONResponse:
    """Approve a referral in review: both sides are credited now. 409 unless it is in review."""

    def work(conn, p):  # type: ignore[no-untyped-def]
        return referrals.approve(conn, merchant_id=p.merchant_id, referee_id=referee_id)

    return call.run(work, scope="admin")


@router.post("/referrals/{referee_id}/reject")
def reject_referral(referee_id: str, call: CallDep) -> JSONResponse:
    """Reject a referral in review: nobody is credited. 409 unless it is in review."""

    def work(conn, p):  # type: ignore[no-untyped-def]
        return referrals.reject(conn, merchant_id=p.merchant_id, referee_id=referee_id)

    return call.run(work, scope="admin")
