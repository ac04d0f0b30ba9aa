"""Surveys: record NPS and CLI responses, open follow-up cases on low scores, report over time.

Also home of the two program settings this area reads (``surveys`` and ``at_risk``): plain
Pydantic models that ``program_schema.ProgramSpec`` includes. This module must not import
``program_schema`` (nor ``services.programs`` or ``services.events`` at import time, which do):
it would be an import cycle.

A response's identity is the client's ``id`` when given; otherwise one is derived from its
content when it carries ``occurred_at`` (so a resent response changes nothing), else it is new
(the request's ``Idempotency-Key`` protects retries). The same id with different answers is 409
``idempotency-conflict``.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, date, datetime, time, timedelta
from fractions import Fraction
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Connection

from patron.domain import surveys as rules
from patron.domain.cases import Source
from patron.domain.errors import IdempotencyConflict, InvalidInput, NotFound
from patron.services import cases as cases_service
from patron.services.clock import utcnow
from patron.services.instant import FUTURE_SLACK
from patron.storage import members as members_repo
from patron.storage import programs as programs_repo
from patron.storage import surveys as repo
from patron.storage.ids import new_id

MAX_PERIODS = 1000
DEFAULT_SPAN = {rules.Interval.DAY: 30, rules.Interval.WEEK: 7 * 12, rules.Interval.MONTH: 365}


class SurveySettings(BaseModel):
    """What a survey response sets off."""

    model_config = ConfigDict(extra="forbid")

    case_on_nps_at_most: Annotated[int, Field(ge=0, le=10)] | None = Field(
        6,
        description="An NPS score at most this opens a follow-up case (default 6: detractors); null: never.",
    )
    case_on_cli_at_most: Annotated[float, Field(ge=1, le=6, allow_inf_nan=False)] | None = Field(
        3.0, description="A CLI response whose mean is at most this opens a follow-up case; null: never."
    )
    earn_action: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")] | None = Field(
        None,
        description="The custom action (of an `action` earning rule) credited for answering a survey; "
        "recorded as an event whose id is the response id. Null: no points for answering.",
    )


class AtRiskSettings(BaseModel):
    """Who the daily ``at-risk`` job flags, and whether it opens follow-up cases."""

    model_config = ConfigDict(extra="forbid")

    inactive_days: Annotated[int, Field(ge=1, le=3650)] = Field(
        90, description="At risk when the last purchase is more than this many days before the run."
    )
    min_purchases: Annotated[int, Field(ge=1, le=1000)] = Field(
        2, description="Only members with at least this many purchases are assessed."
    )
    p_alive_below: Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)] | None = Field(
        0.3,
        description="Also at risk when the BG/NBD probability of still being a customer is below this "
        "(used when the program has enough repeat buyers to fit the model); null: recency only.",
    )
    open_cases: bool = Field(True, description="Open a follow-up case for each member newly at risk.")


def program_settings(
    conn: Connection, *, merchant_id: str, program_id: str, at: datetime
) -> tuple[SurveySettings, AtRiskSettings]:
    """The two settings in the program version in effect at ``at`` (defaults when absent)."""
    from patron.services.programs import pick_version

    version = pick_version(programs_repo.version_times(conn, merchant_id, program_id), at)
    if version is None:
        raise NotFound(f"program {program_id} not found")
    body = programs_repo.version_body(conn, merchant_id, program_id, version) or {}
    return (
        SurveySettings.model_validate(body.get("surveys") or {}),
        AtRiskSettings.model_validate(body.get("at_risk") or {}),
    )


def response_view(row: dict[str, Any]) -> dict[str, Any]:
    kind = rules.Kind(row["kind"])
    out: dict[str, Any] = {
        "id": row["id"],
        "external_id": row["external_id"],
        "member_id": row["member_id"],
        "program_id": row["program_id"],
        "kind": kind.value,
        "comment": row["comment"],
        "channel": row["channel"],
        "occurred_at": row["occurred_at"],
        "case_id": row["case_id"],
        "event_id": row["event_id"],
    }
    if kind == rules.Kind.NPS:
        out.update(score=row["score"], classification=rules.classify(row["score"]).value)
    else:
        answers = (row["recommend"], row["buy_again"], row["try_other"])
        out.update(
            recommend=answers[0],
            buy_again=answers[1],
            try_other=answers[2],
            cli=rules.round_half_up(rules.cli_mean(answers), rules.CLI_PLACES),
        )
    return out


def _content_hash(
    member_id: str, kind: rules.Kind, answers: tuple[int, ...], comment: str | None, at: str
) -> str:
    raw = json.dumps([member_id, kind.value, list(answers), comment, at])
    return hashlib.sha256(raw.encode()).hexdigest()


def submit(
    conn: Connection,
    *,
    merchant_id: str,
    member_id: str,
    kind: rules.Kind,
    answers: tuple[int, ...],
    comment: str | None = None,
    external_id: str | None = None,
    occurred_at: datetime | None = None,
    channel: str = "api",
) -> tuple[dict[str, Any], bool]:
    """Record one response of ``member_id``: ``answers`` is ``(score,)`` for NPS or
    ``(recommend, buy_again, try_other)`` for CLI. A low score opens a follow-up case (one per
    response); with ``earn_action`` set, answering earns through that action. Returns
    ``(response, created)``; ``created`` is False for a replay of the same id and content."""
    if kind == rules.Kind.NPS:
        if len(answers) != 1:
            raise InvalidInput("an NPS response has one answer: score", field="score")
        rules.check_nps(answers[0])
    else:
        rules.check_cli(answers)
    member = members_repo.get_member(conn, merchant_id, member_id)
    if member is None:
        raise NotFound(f"member {member_id} not found")
    now = utcnow()
    if occurred_at is not None:
        if occurred_at.tzinfo is None:
            raise InvalidInput("occurred_at needs a timezone offset", field="occurred_at")
        if occurred_at > now + FUTURE_SLACK:
            raise InvalidInput("occurred_at is in the future", field="occurred_at")
    at = occurred_at.astimezone(UTC) if occurred_at else now
    digest = _content_hash(member_id, kind, answers, comment, at.isoformat() if occurred_at else "")
    response_id = new_id("svy")
    if external_id is None:
        external_id = f"derived:{digest[:40]}" if occurred_at else response_id
    existing = repo.by_external_id(conn, merchant_id, external_id)
    if existing is not None:
        if existing["body_hash"] != digest or existing["member_id"] != member_id:
            raise IdempotencyConflict(f"survey response id {external_id!r} was used with different answers")
        return response_view(existing), False

    settings, _ = program_settings(conn, merchant_id=merchant_id, program_id=member["program_id"], at=at)
    score = rules.cli_mean(answers) if kind == rules.Kind.CLI else Fraction(answers[0])
    case_id = None
    if rules.is_low(
        kind, score=score, nps_at_most=settings.case_on_nps_at_most, cli_at_most=settings.case_on_cli_at_most
    ):
        label = (
            f"NPS {answers[0]}"
            if kind == rules.Kind.NPS
            else f"CLI {rules.round_half_up(score, rules.CLI_PLACES):g}"
        )
        summary = f"Low survey score: {label}" + (f". Comment: {comment}" if comment else "")
        case, _ = cases_service.ensure_case(
            conn,
            merchant_id=merchant_id,
            member_id=member_id,
            source=Source.SURVEY,
            source_ref=response_id,
            summary=summary,
            actor=f"survey:{response_id}",
        )
        case_id = case["id"]
    event_id = _earn(
        conn, merchant_id=merchant_id, member=member, settings=settings, response_id=response_id, at=at
    )
    row: dict[str, Any] = {
        "merchant_id": merchant_id,
        "id": response_id,
        "external_id": external_id,
        "program_id": member["program_id"],
        "member_id": member_id,
        "kind": kind.value,
        "score": answers[0] if kind == rules.Kind.NPS else None,
        "recommend": answers[0] if kind == rules.Kind.CLI else None,
        "buy_again": answers[1] if kind == rules.Kind.CLI else None,
        "try_other": answers[2] if kind == rules.Kind.CLI else None,
        "comment": comment,
        "channel": channel,
        "body_hash": digest,
        "case_id": case_id,
        "event_id": event_id,
        "occurred_at": at,
        "created_at": now,
    }
    repo.insert_response(conn, row)
    return response_view(row), True


def _earn(
    conn: Connection,
    *,
    merchant_id: str,
    member: dict[str, Any],
    settings: SurveySettings,
    response_id: str,
    at: datetime,
) -> str | None:
    """Credit ``earn_action`` for answering, through the ordinary event path (its rule's points
    and limits apply). Skipped for an inactive member or when the program has no such action."""
    if settings.earn_action is None or member["status"] != "active":
        return None
    from patron.services.events import record_event
    from patron.services.programs import program_at

    program, _ = program_at(conn, merchant_id=merchant_id, program_id=member["program_id"], at=at)
    if settings.earn_action not in program.actions():
        return None
    body = {
        "id": response_id,
        "type": settings.earn_action,
        "member_id": member["id"],
        "occurred_at": at.isoformat(),
    }
    record_event(conn, merchant_id=merchant_id, body=body)
    return response_id


def member_responses(
    conn: Connection, *, merchant_id: str, member_id: str, limit: int = 100
) -> list[dict[str, Any]]:
    if members_repo.get_member(conn, merchant_id, member_id) is None:
        raise NotFound(f"member {member_id} not found")
    return [response_view(r) for r in repo.responses_of_member(conn, merchant_id, member_id, limit)]


def _tally_json(t: rules.Tally) -> dict[str, Any]:
    return {
        "responses": t.responses,
        "nps": t.nps,
        "nps_responses": t.nps_responses,
        "promoters": t.promoters,
        "passives": t.passives,
        "detractors": t.detractors,
        "cli": t.cli,
        "cli_responses": t.cli_responses,
    }


def report(
    conn: Connection,
    *,
    merchant_id: str,
    program_id: str,
    first: date | None,
    last: date | None,
    interval: rules.Interval,
) -> dict[str, Any]:
    """NPS and CLI per period (days in the program's timezone, both ends inclusive). Every period
    is listed; one without responses has null scores and zero counts."""
    from patron.services.programs import program_at

    now = utcnow()
    program, _ = program_at(conn, merchant_id=merchant_id, program_id=program_id, at=now)
    zone = ZoneInfo(program.timezone)
    last = last or now.astimezone(zone).date()
    first = first or rules.period_start(last - timedelta(days=DEFAULT_SPAN[interval]), interval)
    if last < first:
        raise InvalidInput(f"from ({first}) is after to ({last})", field="from")
    spans = rules.periods(first, last, interval) if (last - first).days <= 40_000 else None
    if spans is None or len(spans) > MAX_PERIODS:
        raise InvalidInput(
            f"{first}..{last} by {interval.value} is more than {MAX_PERIODS} periods; use a longer interval",
            field="interval",
        )
    rows = repo.responses_between(
        conn,
        merchant_id=merchant_id,
        program_id=program_id,
        start=datetime.combine(first, time(), zone),
        end=datetime.combine(last + timedelta(days=1), time(), zone),
    )
    responses = [
        rules.Response(
            day=r["occurred_at"].astimezone(zone).date(),
            kind=rules.Kind(r["kind"]),
            answers=(r["score"],)
            if r["kind"] == rules.Kind.NPS
            else (r["recommend"], r["buy_again"], r["try_other"]),
        )
        for r in rows
    ]
    per_period, total = rules.report(responses, first, last, interval)
    message = None
    if total.responses == 0:
        message = f"no survey responses between {first} and {last}: scores are null"
    return {
        "program_id": program_id,
        "interval": interval.value,
        "from": first.isoformat(),
        "to": last.isoformat(),
        "timezone": program.timezone,
        "periods": [
            {"start": s.isoformat(), "end": e.isoformat(), **_tally_json(t)} for s, e, t in per_period
        ],
        "total": _tally_json(total),
        "message": message,
    }
