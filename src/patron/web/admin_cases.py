"""The console's customer care: follow-up cases (list, one case with its timeline and the forms
to assign, comment, record the contact, resolve and reopen), the at-risk list with a button to
open a case, and the survey report (NPS and CLI per month)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import Connection

from patron.domain import cases as rules
from patron.domain import surveys as survey_rules
from patron.domain.errors import Conflict, InvalidInput, NotFound
from patron.services import at_risk, cases, households, members, programs, staff, surveys
from patron.services.clock import utcnow
from patron.web.charts_extra import line_chart
from patron.web.common import Staff, render, staff_page

router = APIRouter(include_in_schema=False)

CHANNELS = {
    "phone": "Phone",
    "email": "Email",
    "sms": "Text message",
    "in_store": "In store",
    "other": "Other",
}
STATUSES = [s.value for s in rules.Status]
MAX_TEXT = 4000
PAGE = 50
SURVEY_MONTHS = (6, 12, 24)


def actor_of(who: Staff) -> str:
    return f"user:{who.user['id']}"


def _people(conn: Connection, who: Staff) -> dict[str, str]:
    """Console user id -> email, for choosing and for naming actors and assignees."""
    return {u["id"]: u["email"] for u in staff.console_users(conn, merchant_id=who.merchant_id)}


def actor_name(actor: str | None, people: dict[str, str]) -> str:
    if not actor:
        return ""
    kind, _, ident = actor.partition(":")
    if kind == "user":
        return people.get(ident, "a former user")
    if kind == "api_key":
        return "the API"
    if kind == "job":
        return f"the {ident} job"
    return actor


def _member_names(conn: Connection, merchant_id: str, ids: set[str]) -> dict[str, dict[str, Any]]:
    return members.get_many(conn, merchant_id=merchant_id, member_ids=sorted(ids))


def _program_id(conn: Connection, who: Staff, wanted: str | None) -> tuple[str, list[dict[str, Any]]]:
    found = programs.list_programs(conn, merchant_id=who.merchant_id)
    if not found:
        raise NotFound("no programs")
    ids = [p["id"] for p in found]
    if wanted and wanted not in ids:
        raise NotFound(f"program {wanted} not found")
    return wanted or ids[0], found


# --- the list ------------------------------------------------------------------------------------


@router.get("/admin/cases")
def case_list(
    request: Request, status: str = "", assignee: str = "", member: str = "", cursor: str | None = None
) -> Response:
    def work(conn: Connection, who: Staff) -> Response:
        people = _people(conn, who)
        chosen = status if status in STATUSES else ""
        whom = who.user["id"] if assignee == "mine" else (assignee if assignee in people else "")
        try:
            page = cases.list_cases(
                conn,
                merchant_id=who.merchant_id,
                status=rules.Status(chosen) if chosen else None,
                assignee=whom or None,
                member_id=member[:40] or None,
                limit=PAGE,
                cursor=cursor,
            )
        except InvalidInput:  # a stale or edited cursor: the first page
            page = cases.list_cases(
                conn,
                merchant_id=who.merchant_id,
                status=rules.Status(chosen) if chosen else None,
                assignee=whom or None,
                member_id=member[:40] or None,
                limit=PAGE,
            )
        names = _member_names(conn, who.merchant_id, {c["member_id"] for c in page["data"]})
        return render(
            request,
            "admin/cases.html",
            who=who,
            page=page,
            names=names,
            people=people,
            statuses=STATUSES,
            chosen=chosen,
            assignee="mine" if assignee == "mine" else whom,
            member=member[:40],
            title="Cases",
            nav="cases",
        )

    return staff_page(request, work)


# --- one case ------------------------------------------------------------------------------------


def _case_page(
    request: Request,
    conn: Connection,
    who: Staff,
    case_id: str,
    *,
    errors: dict[str, str] | None = None,
    form: dict[str, str] | None = None,
    notice: str | None = None,
    status: int = 200,
) -> Response:
    case = cases.get_case(conn, merchant_id=who.merchant_id, case_id=case_id)
    member = members.get_member(conn, merchant_id=who.merchant_id, member_id=case["member_id"])
    program = programs.get_program(conn, merchant_id=who.merchant_id, program_id=case["program_id"])
    people = _people(conn, who)
    return render(
        request,
        "admin/case.html",
        status=status,
        who=who,
        case=case,
        member=member,
        tz=program["timezone"],
        people=people,
        actor_name=lambda a: actor_name(a, people),
        channels=CHANNELS,
        errors=errors or {},
        form=form or {},
        notice=notice,
        title=f"Case: {member['name'] or member['card_number']}",
        nav="cases",
    )


NOTICES = {
    "opened": "Case opened.",
    "assigned": "Case assigned.",
    "commented": "Comment added.",
    "contacted": "Contact recorded: the loop is closed.",
    "resolved": "Case resolved.",
    "reopened": "Case reopened.",
}


@router.get("/admin/cases/{case_id}")
def case_page(request: Request, case_id: str, done: str = "") -> Response:
    return staff_page(
        request, lambda conn, who: _case_page(request, conn, who, case_id, notice=NOTICES.get(done))
    )


def _text(value: str, field: str, errors: dict[str, str], *, required: bool, what: str) -> str | None:
    text = value.strip()
    if not text:
        if required:
            errors[field] = what
        return None
    if len(text) > MAX_TEXT:
        errors[field] = f"Keep it under {MAX_TEXT:,} characters."
    return text


def _act(
    request: Request,
    case_id: str,
    csrf_token: str,
    form: dict[str, str],
    errors: dict[str, str],
    field: str,
    action: Any,
    done: str,
) -> Response:
    """Check the form, run ``action(conn, who)``, then back to the case with a notice; invalid
    values come back beside ``field`` (422), a step the status does not allow with why (409)."""

    def work(conn: Connection, who: Staff) -> Response:
        if not errors:
            try:
                with conn.begin_nested():
                    action(conn, who)
            except InvalidInput as exc:
                errors[field] = _sentence(exc.detail)
            except Conflict as exc:  # e.g. "case is open: contact the member before resolving the case"
                errors[field] = _sentence(
                    exc.detail.split(": ", 1)[-1] if exc.detail.startswith("case is ") else exc.detail
                )
                return _case_page(request, conn, who, case_id, errors=errors, form=form, status=409)
            else:
                return RedirectResponse(f"/admin/cases/{case_id}?done={done}", status_code=303)
        return _case_page(request, conn, who, case_id, errors=errors, form=form, status=422)

    return staff_page(request, work, form_csrf=csrf_token, check_csrf=True)


def _sentence(text: str) -> str:
    text = text.strip()
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


@router.post("/admin/cases/{case_id}/assign")
def assign(
    request: Request,
    case_id: str,
    user_id: Annotated[str, Form(max_length=40)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    errors: dict[str, str] = {}
    if not user_id:
        errors["user_id"] = "Choose who follows this case up."

    def action(conn: Connection, who: Staff) -> None:
        if user_id not in _people(conn, who):  # staff (till) users do not work cases
            raise InvalidInput("choose one of the owners or managers listed")
        cases.assign(conn, merchant_id=who.merchant_id, case_id=case_id, user_id=user_id, actor=actor_of(who))

    return _act(request, case_id, csrf_token, {"user_id": user_id}, errors, "user_id", action, "assigned")


@router.post("/admin/cases/{case_id}/comment")
def comment(
    request: Request,
    case_id: str,
    text: Annotated[str, Form(max_length=MAX_TEXT + 100)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    errors: dict[str, str] = {}
    body = _text(text, "text", errors, required=True, what="Write the comment.")

    def action(conn: Connection, who: Staff) -> None:
        cases.comment(
            conn, merchant_id=who.merchant_id, case_id=case_id, text=body or "", actor=actor_of(who)
        )

    return _act(request, case_id, csrf_token, {"text": text}, errors, "text", action, "commented")


@router.post("/admin/cases/{case_id}/contacted")
def contacted(
    request: Request,
    case_id: str,
    channel: Annotated[str, Form(max_length=50)] = "",
    note: Annotated[str, Form(max_length=MAX_TEXT + 100)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    errors: dict[str, str] = {}
    if channel not in CHANNELS:
        errors["channel"] = "Choose how you reached the member."
    text = _text(note, "note", errors, required=False, what="")

    def action(conn: Connection, who: Staff) -> None:
        cases.contacted(
            conn,
            merchant_id=who.merchant_id,
            case_id=case_id,
            channel=channel,
            note=text,
            actor=actor_of(who),
        )

    form = {"channel": channel, "note": note}
    return _act(request, case_id, csrf_token, form, errors, "channel", action, "contacted")


@router.post("/admin/cases/{case_id}/resolve")
def resolve(
    request: Request,
    case_id: str,
    resolution: Annotated[str, Form(max_length=MAX_TEXT + 100)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    errors: dict[str, str] = {}
    text = _text(resolution, "resolution", errors, required=True, what="Say how it was resolved.")

    def action(conn: Connection, who: Staff) -> None:
        cases.resolve(
            conn, merchant_id=who.merchant_id, case_id=case_id, resolution=text or "", actor=actor_of(who)
        )

    form = {"resolution": resolution}
    return _act(request, case_id, csrf_token, form, errors, "resolution", action, "resolved")


@router.post("/admin/cases/{case_id}/reopen")
def reopen(
    request: Request,
    case_id: str,
    note: Annotated[str, Form(max_length=MAX_TEXT + 100)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    errors: dict[str, str] = {}
    text = _text(note, "reopen_note", errors, required=False, what="")

    def action(conn: Connection, who: Staff) -> None:
        cases.reopen(conn, merchant_id=who.merchant_id, case_id=case_id, note=text, actor=actor_of(who))

    return _act(
        request, case_id, csrf_token, {"reopen_note": note}, errors, "reopen_note", action, "reopened"
    )


# --- opening cases -------------------------------------------------------------------------------


@router.post("/admin/members/{member_id}/cases")
def open_for_member(
    request: Request,
    member_id: str,
    summary: Annotated[str, Form(max_length=MAX_TEXT + 100)] = "",
    source: Annotated[str, Form(max_length=20)] = "manual",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    """Open a case for a member: from the at-risk list (``source=at_risk``: the member's one open
    at-risk case, reused if it exists) or by hand from the member's page."""

    def work(conn: Connection, who: Staff) -> Response:
        member = members.get_member(conn, merchant_id=who.merchant_id, member_id=member_id)
        text = summary.strip()[:MAX_TEXT]
        if source == "at_risk":
            case, _ = cases.ensure_case(
                conn,
                merchant_id=who.merchant_id,
                member_id=member["id"],
                source=rules.Source.AT_RISK,
                source_ref=rules.AT_RISK_REF,
                summary=text or "At risk: followed up from the at-risk list",
                actor=actor_of(who),
            )
        else:
            if not text:
                errors = {"summary": "Say what the case is about."}
                from patron.web.admin import _member_page

                return _member_page(request, conn, who, member_id, errors=errors, status=422)
            case = cases.open_case(
                conn, merchant_id=who.merchant_id, member_id=member["id"], summary=text, actor=actor_of(who)
            )
        return RedirectResponse(f"/admin/cases/{case['id']}?done=opened", status_code=303)

    return staff_page(request, work, form_csrf=csrf_token, check_csrf=True)


# --- the member's 360-degree view, with cases and household -------------------------------------


def member_care(conn: Connection, who: Staff, member_id: str) -> dict[str, Any]:
    """The member's follow-up cases (newest first) and household, for the 360-degree view."""
    found = cases.list_cases(conn, merchant_id=who.merchant_id, member_id=member_id, limit=20)
    home = households.household_of_member(conn, merchant_id=who.merchant_id, member_id=member_id)
    return {"cases": found["data"], "more_cases": found["has_more"], "household": home}


# --- at risk -------------------------------------------------------------------------------------


@router.get("/admin/at-risk")
def at_risk_page(request: Request, program: str | None = None) -> Response:
    def work(conn: Connection, who: Staff) -> Response:
        program_id, found = _program_id(conn, who, program)
        listed = at_risk.at_risk_list(conn, merchant_id=who.merchant_id, program_id=program_id, limit=200)
        rows = listed["data"]
        names = _member_names(conn, who.merchant_id, {r["member_id"] for r in rows})
        live = cases.unresolved_at_risk(
            conn, merchant_id=who.merchant_id, member_ids=[r["member_id"] for r in rows]
        )
        tz = next(p["timezone"] for p in found if p["id"] == program_id)
        return render(
            request,
            "admin/at_risk.html",
            who=who,
            rows=rows,
            names=names,
            live=live,
            programs=found,
            program_id=program_id,
            tz=tz,
            title="Members at risk",
            nav="cases",
        )

    return staff_page(request, work)


# --- surveys -------------------------------------------------------------------------------------


@router.get("/admin/surveys")
def survey_report(request: Request, program: str | None = None, months: int = 12) -> Response:
    def work(conn: Connection, who: Staff) -> Response:
        program_id, found = _program_id(conn, who, program)
        span = months if months in SURVEY_MONTHS else 12
        tz = next(p["timezone"] for p in found if p["id"] == program_id)
        from zoneinfo import ZoneInfo

        last = utcnow().astimezone(ZoneInfo(tz)).date()
        first = survey_rules.period_start(last - timedelta(days=31 * (span - 1)), survey_rules.Interval.MONTH)
        report = surveys.report(
            conn,
            merchant_id=who.merchant_id,
            program_id=program_id,
            first=first,
            last=last,
            interval=survey_rules.Interval.MONTH,
        )
        periods = report["periods"][-span:]
        labels = [_month_label(p["start"]) for p in periods]
        nps = line_chart(
            labels,
            [("NPS", "nps", [p["nps"] for p in periods])],
            low=-100,
            high=100,
            title="Net Promoter Score per month",
            description=f"NPS from -100 to 100 for each month from {labels[0]} to {labels[-1]}; "
            "months without answers are left out. The table gives the exact figures.",
            chart_id="nps",
        )
        cli = line_chart(
            labels,
            [("CLI", "cli", [p["cli"] for p in periods])],
            low=1,
            high=6,
            ticks=5,
            title="Customer Loyalty Index per month",
            description=f"CLI from 1 to 6 for each month from {labels[0]} to {labels[-1]}; "
            "months without answers are left out. The table gives the exact figures.",
            chart_id="cli",
        )
        return render(
            request,
            "admin/surveys.html",
            who=who,
            report=report,
            periods=[{**p, "month": _month_name(p["start"])} for p in periods],
            nps_chart=nps,
            cli_chart=cli,
            programs=found,
            program_id=program_id,
            months=span,
            spans=SURVEY_MONTHS,
            title="Survey report",
            nav="cases",
        )

    return staff_page(request, work)


def _month_name(iso: str) -> str:
    from datetime import date

    return date.fromisoformat(iso).strftime("%b %Y")


def _month_label(iso: str) -> str:
    from datetime import date

    d = date.fromisoformat(iso)
    return d.strftime("%b") + (d.strftime(" %y") if d.month == 1 else "")
