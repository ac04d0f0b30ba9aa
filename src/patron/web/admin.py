"""The admin console: sign-in, dashboard, member search and the member's 360-degree view."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import Connection

from patron.domain.errors import Conflict, InvalidInput, PatronError
from patron.services import console, ledger, users
from patron.web import common
from patron.web.charts import months_chart
from patron.web.common import Staff, render, staff_page, submitted_before, went_to
from patron.web.format import tier_progress_percent, tier_sentences

router = APIRouter(include_in_schema=False)

LOGIN_FAILED = "Email or password is incorrect"
#: Every failed sign-in waits this long before answering (without holding a worker thread).
FAILURE_DELAY = 0.4


def _login_form(
    request: Request, *, next_url: str, email: str = "", error: str | None = None, status: int = 200
) -> HTMLResponse:
    token = common.pre_csrf(request)
    response = render(
        request,
        "admin/login.html",
        status=status,
        csrf=token,
        next_url=next_url,
        email=email,
        error=error,
        title="Sign in",
    )
    common.remember_pre_csrf(request, response, token)
    return response


@router.get("/admin/login")
def login_page(request: Request, next: str = "") -> Response:
    with common.engine(request).begin() as conn:
        who = common.staff_of(conn, request)
    if who is not None:
        return RedirectResponse(common.safe_next(next, "/admin" if who.console else "/pos"), status_code=303)
    return _login_form(request, next_url=common.safe_next(next, ""))


@router.post("/admin/login")
async def login(
    request: Request,
    email: Annotated[str, Form(max_length=320)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
    next: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    if not common.pre_csrf_ok(request, csrf_token):
        return common.csrf_refused(request)

    def attempt() -> tuple[str, users.Session, dict[str, Any]] | None:
        with common.engine(request).begin() as conn:
            user = users.authenticate(conn, email=email, password=password)
            if user is None:
                return None
            token, session = users.start_session(
                conn, merchant_id=user["merchant_id"], kind="user", subject_id=user["id"]
            )
            return token, session, user

    outcome = await run_in_threadpool(attempt)
    if outcome is None:
        await asyncio.sleep(FAILURE_DELAY)
        return _login_form(
            request, next_url=common.safe_next(next, ""), email=email, error=LOGIN_FAILED, status=401
        )
    token, _, user = outcome
    default = "/admin" if user["role"] in users.CONSOLE_ROLES else "/pos"
    response = RedirectResponse(common.safe_next(next, default), status_code=303)
    common.set_session_cookie(request, response, "user", token)
    return response


@router.get("/admin/logout")
def logout_page(request: Request) -> Response:
    return staff_page(
        request,
        lambda conn, who: render(request, "admin/logout.html", who=who, title="Sign out"),
        console=False,
    )


@router.post("/admin/logout")
def logout(request: Request, csrf_token: Annotated[str, Form(max_length=200)] = "") -> Response:
    def work(conn: Connection, who: Staff) -> Response:
        users.end_session(conn, token=request.cookies.get(common.STAFF_COOKIE))
        response = RedirectResponse("/admin/login", status_code=303)
        common.clear_session_cookie(response, "user")
        return response

    return staff_page(request, work, console=False, form_csrf=csrf_token, check_csrf=True)


@router.get("/admin")
def dashboard(request: Request) -> Response:
    def work(conn: Connection, who: Staff) -> Response:
        data = console.dashboard(conn, merchant_id=who.merchant_id)
        return render(
            request,
            "admin/dashboard.html",
            who=who,
            data=data,
            chart=months_chart(data["months"], f"months in {data['timezone']}"),
            title="Dashboard",
            nav="dashboard",
        )

    return staff_page(request, work)


@router.get("/admin/members")
def members(request: Request, q: str = "") -> Response:
    def work(conn: Connection, who: Staff) -> Response:
        error = None
        try:
            found = console.search(conn, merchant_id=who.merchant_id, query=q[:200])
        except InvalidInput as exc:
            found, error = [], exc.detail
        return render(
            request,
            "admin/members.html",
            who=who,
            q=q,
            found=found,
            error=error,
            title="Members",
            nav="members",
        )

    return staff_page(request, work)


def _member_page(
    request: Request,
    conn: Connection,
    who: Staff,
    member_id: str,
    *,
    cursor: str | None = None,
    form: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    notice: str | None = None,
    status: int = 200,
) -> Response:
    try:
        data = console.member_360(conn, merchant_id=who.merchant_id, member_id=member_id, cursor=cursor)
    except InvalidInput:  # a bad cursor: start from the newest
        data = console.member_360(conn, merchant_id=who.merchant_id, member_id=member_id)
    tier = data["tier"]
    from patron.web.admin_cases import _people, member_care  # the cases and household sections

    return render(
        request,
        "admin/member.html",
        status=status,
        who=who,
        d=data,
        m=data["member"],
        program=data["program"],
        tier_words=tier_sentences(tier, data["program"]),
        tier_percent=tier_progress_percent(tier),
        form=form or {},
        errors=errors or {},
        notice=notice,
        care=member_care(conn, who, member_id),
        people=_people(conn, who),
        title=data["member"]["name"] or data["member"]["card_number"],
        nav="members",
    )


@router.get("/admin/members/{member_id}")
def member(
    request: Request, member_id: str, cursor: str | None = None, adjusted: int | None = None
) -> Response:
    notice = None
    if adjusted:
        notice = f"Points adjusted by {'+' if adjusted > 0 else ''}{adjusted:,}."
    return staff_page(
        request, lambda conn, who: _member_page(request, conn, who, member_id, cursor=cursor, notice=notice)
    )


@router.post("/admin/members/{member_id}/adjust")
def adjust(
    request: Request,
    member_id: str,
    points: Annotated[str, Form(max_length=40)] = "",
    reason: Annotated[str, Form(max_length=2000)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
    form_id: Annotated[str, Form(max_length=40)] = "",
) -> Response:
    form = {"points": points, "reason": reason}
    errors: dict[str, str] = {}
    amount = 0
    try:
        amount = int(points.strip().replace(",", "").replace("\u2212", "-"))
    except ValueError:
        errors["points"] = "Enter a whole number of points, e.g. 50 or -50."
    if amount == 0 and "points" not in errors:
        errors["points"] = "Enter a number of points other than 0."
    elif abs(amount) > ledger.MAX_ADJUSTMENT:
        errors["points"] = f"Adjust by at most {ledger.MAX_ADJUSTMENT:,} points at a time."
    if not reason.strip():
        errors["reason"] = "Say why, for the member's history and the audit trail."
    elif len(reason.strip()) > 500:
        errors["reason"] = "Keep the reason under 500 characters."

    def work(conn: Connection, who: Staff) -> Response:
        if not errors:
            try:
                with conn.begin_nested():  # a refused adjustment writes nothing, its form id included
                    first = submitted_before(conn, who.merchant_id, form_id, request.url.path)
                    if first is not None:  # submitted twice: adjusted once
                        return RedirectResponse(first, status_code=303)
                    ledger.adjust(
                        conn,
                        merchant_id=who.merchant_id,
                        member_id=member_id,
                        points=amount,
                        reason=reason.strip(),
                    )
                    return went_to(
                        conn, who.merchant_id, form_id, f"/admin/members/{member_id}?adjusted={amount}"
                    )
            except (InvalidInput, Conflict) as exc:
                field = exc.extra.get("field")
                if field not in ("points", "reason"):
                    field = "points"
                errors[field] = _adjust_message(exc)
        return _member_page(request, conn, who, member_id, form=form, errors=errors, status=422)

    return staff_page(request, work, form_csrf=csrf_token, check_csrf=True)


def _adjust_message(exc: PatronError) -> str:
    if exc.code == "insufficient-points":
        return "The member does not have that many available points to take back."
    return exc.detail[:1].upper() + exc.detail[1:] + ("" if exc.detail.endswith(".") else ".")
