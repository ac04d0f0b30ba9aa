"""The POS screen: find a member by phone or card, record a visit, redeem a reward at the till,
and validate and consume a reward code. Large targets for a touch screen at the counter."""

from __future__ import annotations

import secrets
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import Connection

from patron.domain.errors import Conflict, InvalidInput, NotFound
from patron.services import console, members, redemptions
from patron.services.events import record_event
from patron.services.portal import program_facts
from patron.web.common import Staff, render, staff_page

router = APIRouter(include_in_schema=False)

Csrf = Annotated[str, Form(max_length=200)]


def _screen(
    request: Request,
    conn: Connection,
    who: Staff,
    *,
    q: str = "",
    member_id: str | None = None,
    notice: str | None = None,
    error: str | None = None,
    check: dict[str, Any] | None = None,
    code: str = "",
    status: int = 200,
) -> Response:
    found: list[dict[str, Any]] = []
    if q and member_id is None:
        try:
            found = console.till_lookup(conn, merchant_id=who.merchant_id, query=q[:100])
        except InvalidInput as exc:
            error = exc.detail
        if len(found) == 1:
            member_id = found[0]["id"]
        elif not found and error is None:
            error = "No member has this card number or phone number."
    view = rewards = program = None
    if member_id is not None:
        row = members.get_member(conn, merchant_id=who.merchant_id, member_id=member_id)
        view = members.member_view(conn, merchant_id=who.merchant_id, member=row)
        rewards = redemptions.catalogue(conn, merchant_id=who.merchant_id, member_id=member_id)
        program = program_facts(conn, merchant_id=who.merchant_id, program_id=row["program_id"])
    return render(
        request,
        "pos.html",
        status=status,
        who=who,
        q=q,
        found=found,
        m=view,
        rewards=rewards,
        program=program,
        notice=notice,
        error=error,
        check=check,
        code=code,
        visit_id=secrets.token_urlsafe(12),  # a fresh event id per form: a resubmission is a replay
        title="Till",
        nav="pos",
    )


@router.get("/pos")
def screen(
    request: Request,
    q: str = "",
    member: str | None = None,
    visited: int | None = None,
    redeemed: int | None = None,
) -> Response:
    notice = None
    if visited is not None:
        notice = f"Visit recorded: +{visited:,} points." if visited else "Visit recorded."
    elif redeemed is not None:
        notice = f"Reward redeemed for {redeemed:,} points. Hand it over."
    return staff_page(
        request,
        lambda conn, who: _screen(request, conn, who, q=q, member_id=member or None, notice=notice),
        console=False,
    )


@router.post("/pos/members/{member_id}/visit")
def visit(
    request: Request,
    member_id: str,
    visit_id: Annotated[str, Form(max_length=40)] = "",
    csrf_token: Csrf = "",
) -> Response:
    def work(conn: Connection, who: Staff) -> Response:
        members.get_member(conn, merchant_id=who.merchant_id, member_id=member_id)
        body = {
            "id": f"pos-visit-{visit_id or secrets.token_urlsafe(12)}",
            "type": "visit",
            "member_id": member_id,
        }
        try:
            with conn.begin_nested():
                result, _ = record_event(conn, merchant_id=who.merchant_id, body=body)
        except (Conflict, InvalidInput) as exc:
            return _screen(request, conn, who, member_id=member_id, error=exc.detail, status=409)
        earned = int(result.get("points") or 0)
        return RedirectResponse(f"/pos?member={quote(member_id)}&visited={earned}", status_code=303)

    return staff_page(request, work, console=False, form_csrf=csrf_token, check_csrf=True)


@router.post("/pos/members/{member_id}/rewards/{reward_id}")
def redeem_now(request: Request, member_id: str, reward_id: str, csrf_token: Csrf = "") -> Response:
    def work(conn: Connection, who: Staff) -> Response:
        try:
            with conn.begin_nested():
                done = console.redeem_at_till(
                    conn, merchant_id=who.merchant_id, member_id=member_id, reward_id=reward_id
                )
        except (Conflict, InvalidInput) as exc:
            return _screen(request, conn, who, member_id=member_id, error=exc.detail, status=409)
        return RedirectResponse(f"/pos?member={quote(member_id)}&redeemed={done['points']}", status_code=303)

    return staff_page(request, work, console=False, form_csrf=csrf_token, check_csrf=True)


def _check(conn: Connection, who: Staff, code: str) -> dict[str, Any] | None:
    try:
        result = redemptions.validate_code(conn, merchant_id=who.merchant_id, code=code)
    except NotFound:
        return None
    program = program_facts(conn, merchant_id=who.merchant_id, program_id=result["redemption"]["program_id"])
    reward_id = result["redemption"]["reward_id"]
    result["reward_name"] = program["reward_names"].get(reward_id, reward_id)
    return result


@router.post("/pos/codes/check")
def check_code(
    request: Request, code: Annotated[str, Form(max_length=60)] = "", csrf_token: Csrf = ""
) -> Response:
    def work(conn: Connection, who: Staff) -> Response:
        clean = code.strip().upper().replace(" ", "").replace("-", "")
        if not clean:
            return _screen(request, conn, who, error="Type the code the member shows you.", status=422)
        result = _check(conn, who, clean)
        if result is None:
            return _screen(
                request, conn, who, code=clean, error=f"No reward has the code {clean}.", status=404
            )
        return _screen(request, conn, who, code=clean, check=result)

    return staff_page(request, work, console=False, form_csrf=csrf_token, check_csrf=True)


@router.post("/pos/codes/redeem")
def redeem_code(
    request: Request, code: Annotated[str, Form(max_length=60)] = "", csrf_token: Csrf = ""
) -> Response:
    def work(conn: Connection, who: Staff) -> Response:
        clean = code.strip().upper()
        try:
            with conn.begin_nested():
                done = redemptions.redeem(conn, merchant_id=who.merchant_id, code=clean)
        except NotFound:
            return _screen(
                request, conn, who, code=clean, error=f"No reward has the code {clean}.", status=404
            )
        except Conflict as exc:
            return _screen(
                request, conn, who, code=clean, check=_check(conn, who, clean), error=exc.detail, status=409
            )
        result = _check(conn, who, clean)
        name = result["reward_name"] if result else done["reward_id"]
        person = (result or {}).get("member", {}).get("name")
        notice = f"Code {clean} used: hand over {name}" + (f" to {person}." if person else ".")
        return _screen(request, conn, who, notice=notice)

    return staff_page(request, work, console=False, form_csrf=csrf_token, check_csrf=True)
