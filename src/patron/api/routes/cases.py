"""Follow-up cases (customer care) and the at-risk list.

A case follows a member up: opened by staff, by a low survey score or by the `at-risk` job;
assigned to a console user, commented, marked `contacted` when someone reached the member (the
loop is closed), then resolved. Statuses: `open` -> `assigned` -> `contacted` -> `resolved`;
a resolved case can be reopened. A transition the status does not allow is 409
`invalid-case-transition`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from patron.api.deps import CallDep
from patron.domain.cases import Status
from patron.services import at_risk, cases
from patron.services.merchants import Principal

router = APIRouter(tags=["cases"])

Text = Annotated[str, Field(min_length=1, max_length=4000)]
Id = Annotated[str, Field(min_length=1, max_length=40)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class CaseCreate(_Body):
    member_id: Id
    summary: Text = Field(description="What the case is about.")
    source_ref: Annotated[str, Field(min_length=1, max_length=200)] | None = Field(
        None,
        description="Your reference (e.g. a complaint number): one unresolved case per member and reference.",
    )
    assignee: Id | None = Field(None, description="A console user id of the merchant.")


class CaseAssign(_Body):
    user_id: Id = Field(description="A console user id of the merchant.")


class CaseComment(_Body):
    text: Text


class CaseContacted(_Body):
    channel: Annotated[str, Field(min_length=1, max_length=50, description="phone, email, sms, in_store...")]
    note: Text | None = None


class CaseResolve(_Body):
    resolution: Text


class CaseReopen(_Body):
    note: Text | None = None


def actor(p: Principal) -> str:
    return f"api_key:{p.key_id}"


@router.post("/cases", status_code=201)
def create_case(body: CaseCreate, call: CallDep) -> JSONResponse:
    """Open a follow-up case for a member (`source` = `manual`). An unknown member or user is 404."""
    return call.run(
        lambda conn, p: cases.open_case(
            conn,
            merchant_id=p.merchant_id,
            member_id=body.member_id,
            summary=body.summary,
            actor=actor(p),
            source_ref=body.source_ref,
            assignee=body.assignee,
        ),
        scope="write",
        status=201,
        body=body.model_dump(),
    )


@router.get("/cases")
def list_cases(
    call: CallDep,
    status: Annotated[Literal["open", "assigned", "contacted", "resolved"] | None, Query()] = None,
    assignee: Annotated[str | None, Query(max_length=40)] = None,
    member_id: Annotated[str | None, Query(max_length=40)] = None,
    limit: Annotated[int, Query(ge=1, le=cases.MAX_PAGE)] = 50,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> JSONResponse:
    """Cases, newest first: `{"data", "next_cursor", "has_more"}`; pass `next_cursor` back as
    `cursor` for the next page."""
    return call.run(
        lambda conn, p: cases.list_cases(
            conn,
            merchant_id=p.merchant_id,
            status=Status(status) if status else None,
            assignee=assignee,
            member_id=member_id,
            limit=limit,
            cursor=cursor,
        ),
        scope="read",
    )


@router.get("/cases/{case_id}")
def get_case(case_id: str, call: CallDep) -> JSONResponse:
    """The case with its `timeline`: every action, oldest first, with its actor and text."""
    return call.run(
        lambda conn, p: cases.get_case(conn, merchant_id=p.merchant_id, case_id=case_id), scope="read"
    )


@router.post("/cases/{case_id}/assign")
def assign(case_id: str, body: CaseAssign, call: CallDep) -> JSONResponse:
    """Assign or reassign the case to a console user. A resolved case is 409 (reopen it first)."""
    return call.run(
        lambda conn, p: cases.assign(
            conn, merchant_id=p.merchant_id, case_id=case_id, user_id=body.user_id, actor=actor(p)
        ),
        scope="write",
        body=body.model_dump(),
    )


@router.post("/cases/{case_id}/comments")
def comment(case_id: str, body: CaseComment, call: CallDep) -> JSONResponse:
    """Add a comment to the timeline (any status)."""
    return call.run(
        lambda conn, p: cases.comment(
            conn, merchant_id=p.merchant_id, case_id=case_id, text=body.text, actor=actor(p)
        ),
        scope="write",
        body=body.model_dump(),
    )


@router.post("/cases/{case_id}/contacted")
def contacted(case_id: str, body: CaseContacted, call: CallDep) -> JSONResponse:
    """Record that the member was contacted: sets `contacted_at`, closing the loop. Once per
    round: a second contact before resolving is 409."""
    return call.run(
        lambda conn, p: cases.contacted(
            conn,
            merchant_id=p.merchant_id,
            case_id=case_id,
            channel=body.channel,
            note=body.note,
            actor=actor(p),
        ),
        scope="write",
        body=body.model_dump(),
    )


@router.post("/cases/{case_id}/resolve")
def resolve(case_id: str, body: CaseResolve, call: CallDep) -> JSONResponse:
    """Resolve the case with a `resolution`. Only after the member was contacted (else 409)."""
    return call.run(
        lambda conn, p: cases.resolve(
            conn, merchant_id=p.merchant_id, case_id=case_id, resolution=body.resolution, actor=actor(p)
        ),
        scope="write",
        body=body.model_dump(),
    )


@router.post("/cases/{case_id}/reopen")
def reopen(case_id: str, call: CallDep, body: CaseReopen | None = None) -> JSONResponse:
    """Reopen a resolved case (else 409): it goes back to `assigned` (or `open` without an
    assignee) and the member must be contacted again before it is resolved again."""
    note = body.note if body else None
    return call.run(
        lambda conn, p: cases.reopen(
            conn, merchant_id=p.merchant_id, case_id=case_id, note=note, actor=actor(p)
        ),
        scope="write",
        body=body.model_dump() if body else None,
    )


@router.get("/programs/{program_id}/at-risk")
def at_risk_list(
    program_id: str, call: CallDep, limit: Annotated[int, Query(ge=1, le=at_risk.LIST_LIMIT)] = 200
) -> JSONResponse:
    """Members at risk now (as the latest `at-risk` job run for each found them), longest since
    a purchase first: `recency_days` and `last_purchase_at` at that run, `p_alive` (BG/NBD; null
    when the run used recency alone, see `method`), and the follow-up `case_id` opened when they
    became at risk."""
    return call.run(
        lambda conn, p: at_risk.at_risk_list(
            conn, merchant_id=p.merchant_id, program_id=program_id, limit=limit
        ),
        scope="read",
    )
