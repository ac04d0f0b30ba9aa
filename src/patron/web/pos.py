"""The POS screen: find a member by phone or card, record a visit or a purchase, redeem a reward
at the till, validate and consume a reward code, and check a ticket in at the door. Large targets
for a touch screen at the counter."""

from __future__ import annotations

import re
import secrets
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import Connection

from patron.domain.errors import Conflict, InvalidInput, NotFound
from patron.services import console, members, redemptions, tickets
from patron.services.event_schema import MAX_TOTAL
from patron.services.events import record_event
from patron.services.portal import program_facts
from patron.web.common import Staff, render, staff_page, submitted_before, went_to
from patron.web.format import EXPONENTS, money, when

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
    amount: str = "",
    field_errors: dict[str, str] | None = None,
    purchase: tuple[int, int] | None = None,
    ticket_code: str = "",
    ticket: dict[str, Any] | None = None,
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
        if purchase is not None:
            spent, earned = purchase
            notice = (
                f"Purchase of {money(spent, program['currency'])} recorded: "
                f"+{earned:,} {program['points_name']}."
            )
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
        purchase_id=secrets.token_urlsafe(12),
        amount=amount,
        field_errors=field_errors or {},
        ticket_code=ticket_code,
        ticket=ticket,
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
    bought: Annotated[int | None, Query(ge=0, le=1_000_000_000)] = None,
    spent: Annotated[int | None, Query(ge=0, le=MAX_TOTAL)] = None,
) -> Response:
    notice = None
    purchase = (spent, bought) if spent is not None and bought is not None else None
    if visited is not None:
        notice = f"Visit recorded: +{visited:,} points." if visited else "Visit recorded."
    elif redeemed is not None:
        notice = f"Reward redeemed for {redeemed:,} points. Hand it over."
    return staff_page(
        request,
        lambda conn, who: _screen(
            request, conn, who, q=q, member_id=member or None, notice=notice, purchase=purchase
        ),
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
def redeem_now(
    request: Request,
    member_id: str,
    reward_id: str,
    csrf_token: Csrf = "",
    form_id: Annotated[str, Form(max_length=40)] = "",
) -> Response:
    def work(conn: Connection, who: Staff) -> Response:
        try:
            with conn.begin_nested():  # a refused redemption writes nothing, its form id included
                first = submitted_before(conn, who.merchant_id, form_id, request.url.path)
                if first is not None:  # a double tap: the reward was redeemed once
                    return RedirectResponse(first, status_code=303)
                done = console.redeem_at_till(
                    conn, merchant_id=who.merchant_id, member_id=member_id, reward_id=reward_id
                )
                location = f"/pos?member={quote(member_id)}&redeemed={done['points']}"
                return went_to(conn, who.merchant_id, form_id, location)
        except (Conflict, InvalidInput) as exc:
            return _screen(request, conn, who, member_id=member_id, error=exc.detail, status=409)

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


MAX_AMOUNT = Decimal("1000000")  # a till purchase above this is a typo, not a sale


def parse_amount(text: str, currency: str) -> int:
    """``"12.50"`` (or ``"12,50"``, ``"1,200"``) in ``currency`` -> minor units; :class:`InvalidInput` with a
    message for the person at the till otherwise."""
    exponent = EXPONENTS.get(currency, 2)
    clean = text.strip().replace(" ", "")
    # "12,50" has a decimal comma; in "1,200.00" commas separate thousands
    decimal_comma = re.fullmatch(r"\d+,\d{1,2}", clean) is not None
    clean = clean.replace(",", ".") if decimal_comma else clean.replace(",", "")
    try:
        value = Decimal(clean)
    except InvalidOperation:
        raise InvalidInput("Type the amount paid, like 12.50.", field="amount")
    if not value.is_finite() or value <= 0:
        raise InvalidInput("The amount must be more than zero.", field="amount")
    if value > MAX_AMOUNT:
        raise InvalidInput(f"The amount must be at most {money(int(MAX_AMOUNT) * 10**exponent, currency)}.")
    minor = value.scaleb(exponent)
    if minor != minor.to_integral_value():
        places = "no decimals" if exponent == 0 else f"at most {exponent} decimals"
        raise InvalidInput(f"Use {places} for {currency}.", field="amount")
    return int(minor)


@router.post("/pos/members/{member_id}/purchase")
def purchase(
    request: Request,
    member_id: str,
    amount: Annotated[str, Form(max_length=40)] = "",
    purchase_id: Annotated[str, Form(max_length=40)] = "",
    csrf_token: Csrf = "",
) -> Response:
    def work(conn: Connection, who: Staff) -> Response:
        row = members.get_member(conn, merchant_id=who.merchant_id, member_id=member_id)
        program = program_facts(conn, merchant_id=who.merchant_id, program_id=row["program_id"])
        try:
            minor = parse_amount(amount, program["currency"])
        except InvalidInput as exc:
            return _screen(
                request,
                conn,
                who,
                member_id=member_id,
                amount=amount,
                field_errors={"amount": exc.detail},
                status=422,
            )
        body = {
            "id": f"pos-purchase-{purchase_id or secrets.token_urlsafe(12)}",
            "type": "purchase",
            "member_id": member_id,
            "currency": program["currency"],
            "channel": "pos",
            "items": [{"id": "till", "quantity": 1, "unit_price": minor, "name": "Purchase at the till"}],
        }
        try:
            with conn.begin_nested():
                result, _ = record_event(conn, merchant_id=who.merchant_id, body=body)
        except (Conflict, InvalidInput) as exc:
            return _screen(request, conn, who, member_id=member_id, error=exc.detail, status=409)
        earned = int(result.get("points") or 0)
        return RedirectResponse(
            f"/pos?member={quote(member_id)}&bought={earned}&spent={minor}", status_code=303
        )

    return staff_page(request, work, console=False, form_csrf=csrf_token, check_csrf=True)


@router.post("/pos/tickets/check-in")
def check_in_ticket(
    request: Request, ticket_code: Annotated[str, Form(max_length=60)] = "", csrf_token: Csrf = ""
) -> Response:
    def work(conn: Connection, who: Staff) -> Response:
        clean = ticket_code.strip().upper().replace(" ", "").replace("-", "")
        if not clean:
            errors = {"ticket_code": "Type or scan the code on the ticket."}
            return _screen(request, conn, who, field_errors=errors, status=422)
        try:
            with conn.begin_nested():
                done = tickets.check_in(conn, merchant_id=who.merchant_id, code=clean)
        except NotFound:
            return _screen(
                request, conn, who, ticket_code=clean, error=f"No ticket has the code {clean}.", status=404
            )
        except Conflict as exc:
            message = exc.detail
            first = exc.extra.get("checked_in_at")
            if exc.code == "already-checked-in" and first is not None:
                message = f"This ticket was already checked in at {when(first)} UTC."
            return _screen(request, conn, who, ticket_code=clean, error=message, status=409)
        event = tickets.get_event(conn, merchant_id=who.merchant_id, event_id=done["event"]["id"])
        tz = program_facts(conn, merchant_id=who.merchant_id, program_id=event["program_id"])["timezone"]
        done["starts"] = when(done["event"]["starts_at"], tz)
        return _screen(request, conn, who, ticket=done)

    return staff_page(request, work, console=False, form_csrf=csrf_token, check_csrf=True)
