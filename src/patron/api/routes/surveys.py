"""Surveys: members answer NPS or Customer Loyalty Index surveys; the program reports them over time."""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Connection

from patron.api.deps import CallDep
from patron.domain import surveys as rules
from patron.domain.errors import InvalidInput
from patron.services import surveys
from patron.services.instant import Instant
from patron.services.merchants import Principal

router = APIRouter(tags=["surveys"])

Comment = Annotated[str, Field(min_length=1, max_length=2000)]
ResponseId = Annotated[
    str, Field(min_length=1, max_length=200, description="Your id for this response; a resend is a no-op.")
]
Nps = Annotated[int, Field(strict=True, ge=0, le=10)]
Cli = Annotated[int, Field(strict=True, ge=1, le=6)]


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    id: ResponseId | None = None
    comment: Comment | None = None
    occurred_at: Instant | None = Field(None, description="When it was answered; default now.")


class NpsResponseCreate(_Base):
    kind: Literal["nps"]
    score: Nps = Field(description="0-10: how likely the member is to recommend you.")


class CliResponseCreate(_Base):
    kind: Literal["cli"]
    recommend: Cli = Field(description="1-6: would recommend.")
    buy_again: Cli = Field(description="1-6: would buy again.")
    try_other: Cli = Field(description="1-6: would try other products.")


SurveyResponseCreate = Annotated[NpsResponseCreate | CliResponseCreate, Field(discriminator="kind")]


@router.post("/members/{member_id}/surveys", status_code=201)
def answer(member_id: str, body: SurveyResponseCreate, call: CallDep) -> JSONResponse:
    """Record a member's survey response: `{"kind": "nps", "score": 9}` (0-10) or `{"kind": "cli",
    "recommend": 5, "buy_again": 6, "try_other": 4}` (each 1-6), with an optional `comment`.

    The answer comes back with its `classification` (NPS: promoter 9-10, passive 7-8, detractor
    0-6) or its `cli` (the mean of the three answers). A low score (program setting `surveys`:
    NPS at most `case_on_nps_at_most`, default 6; CLI at most `case_on_cli_at_most`, default 3)
    opens a follow-up case, returned as `case_id`. With `surveys.earn_action` set, answering
    earns through that custom action (event id = the response `id`, returned as `event_id`).
    Sending the same `id` again returns the stored response (200); with different answers, 409."""
    answers: tuple[int, ...]
    if isinstance(body, NpsResponseCreate):
        kind, answers = rules.Kind.NPS, (body.score,)
    else:
        kind, answers = rules.Kind.CLI, (body.recommend, body.buy_again, body.try_other)

    def work(conn: Connection, p: Principal) -> tuple[dict[str, Any], int]:
        out, created = surveys.submit(
            conn,
            merchant_id=p.merchant_id,
            member_id=member_id,
            kind=kind,
            answers=answers,
            comment=body.comment,
            external_id=body.id,
            occurred_at=body.occurred_at,
            channel="api",
        )
        return out, 201 if created else 200

    return call.run(work, scope="write", body=body.model_dump(mode="json"))


@router.get("/members/{member_id}/surveys")
def member_surveys(
    member_id: str, call: CallDep, limit: Annotated[int, Query(ge=1, le=500)] = 100
) -> JSONResponse:
    """The member's survey responses, newest first."""
    return call.run(
        lambda conn, p: {
            "data": surveys.member_responses(
                conn, merchant_id=p.merchant_id, member_id=member_id, limit=limit
            )
        },
        scope="read",
    )


def _day(value: str | None, name: str) -> date | None:
    if value is None:
        return None
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            raise ValueError
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"{name} must be a calendar date YYYY-MM-DD, not {value!r}", field=name)


@router.get("/programs/{program_id}/analytics/surveys", summary="NPS and CLI over time")
def survey_report(
    program_id: str,
    call: CallDep,
    from_: Annotated[
        str | None,
        Query(
            alias="from",
            description="First day (YYYY-MM-DD, program timezone). Default: about a year "
            "(month), 12 weeks (week) or 30 days (day) before `to`, at a period's start.",
        ),
    ] = None,
    to: Annotated[str | None, Query(description="Last day, inclusive (YYYY-MM-DD). Default: today.")] = None,
    interval: Annotated[Literal["day", "week", "month"], Query(description="Period length.")] = "month",
) -> JSONResponse:
    """Survey figures per period: `responses`; NPS (`nps` = % promoters minus % detractors,
    rounded to one decimal, with `promoters`, `passives`, `detractors`, `nps_responses`); CLI
    (`cli` = mean of the respondents' mean answers, rounded to two decimals, with
    `cli_responses`). Periods are calendar days, ISO weeks (from Monday) or calendar months in the
    program's timezone; the first and last are clipped to `from` and `to`. A period without
    responses has null scores, never 0 or NaN; when the whole range has none, `message` says so.
    `total` covers the whole range."""
    first, last = _day(from_, "from"), _day(to, "to")
    return call.run(
        lambda conn, p: surveys.report(
            conn,
            merchant_id=p.merchant_id,
            program_id=program_id,
            first=first,
            last=last,
            interval=rules.Interval(interval),
        ),
        scope="read",
    )
