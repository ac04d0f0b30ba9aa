"""The member portal: sign-in by one-time link, the card, balance, tier progress, history and
rewards. Mobile first: every page fits a 390 px wide screen without sideways scrolling."""

from __future__ import annotations

from typing import Annotated

import segno
from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response
from markupsafe import Markup
from sqlalchemy import Connection

from patron.domain.errors import Conflict, InvalidInput, NotFound
from patron.services import portal, redemptions, users
from patron.web import common
from patron.web.common import Member, member_page, render, submitted_before, went_to
from patron.web.format import tier_progress_percent, tier_sentences

router = APIRouter(include_in_schema=False)


def card_qr(card_number: str, name: str) -> Markup:
    """The card number as a QR code, inline SVG that scales with its box."""
    qr = segno.make(card_number, error="m")
    svg = qr.svg_inline(
        scale=1, omitsize=True, dark="#111111", light="#ffffff", title=f"QR code of card {name}"
    )
    return Markup(svg.replace("<svg ", '<svg role="img" class="qr" ', 1))


@router.get("/portal/login/{token}")
def login(request: Request, token: str) -> Response:
    try:
        with common.engine(request).begin() as conn:
            cookie, _ = portal.consume_login_link(conn, token=token)
    except portal.LinkInvalid as exc:
        reason = exc.extra.get("reason")
        return render(
            request,
            "portal/link_invalid.html",
            status=404 if reason == "unknown" else 410,
            reason=reason,
            detail=exc.detail,
            title="Sign-in link not valid",
            portal=True,
        )
    except NotFound:
        return common.not_found(request)
    response = RedirectResponse("/portal", status_code=303)
    common.set_session_cookie(request, response, "member", cookie)
    return response


def _home(
    request: Request,
    conn: Connection,
    who: Member,
    *,
    reserved: str | None = None,
    error: str | None = None,
    status: int = 200,
) -> Response:
    data = portal.member_home(conn, merchant_id=who.merchant_id, member_id=who.member_id)
    member, program = data["member"], data["program"]
    return render(
        request,
        "portal/home.html",
        status=status,
        who=who,
        d=data,
        m=member,
        program=program,
        qr=card_qr(member["card_number"], member["name"] or member["card_number"]),
        tier_words=tier_sentences(data["tier"], program),
        tier_percent=tier_progress_percent(data["tier"]),
        reserved=reserved,
        error=error,
        title=program["name"],
        portal=True,
    )


@router.get("/portal")
def home(request: Request, reserved: str | None = None) -> Response:
    return member_page(request, lambda conn, who: _home(request, conn, who, reserved=reserved))


@router.get("/portal/card")
def card(request: Request) -> Response:
    def work(conn: Connection, who: Member) -> Response:
        data = portal.member_home(conn, merchant_id=who.merchant_id, member_id=who.member_id)
        member = data["member"]
        return render(
            request,
            "portal/card.html",
            who=who,
            m=member,
            program=data["program"],
            qr=card_qr(member["card_number"], member["name"] or member["card_number"]),
            title="Your card",
            portal=True,
        )

    return member_page(request, work)


@router.post("/portal/rewards/{reward_id}")
def reserve(
    request: Request,
    reward_id: str,
    csrf_token: Annotated[str, Form(max_length=200)] = "",
    form_id: Annotated[str, Form(max_length=40)] = "",
) -> Response:
    def work(conn: Connection, who: Member) -> Response:
        try:
            with conn.begin_nested():  # a refused reservation writes nothing, its form id included
                first = submitted_before(conn, who.merchant_id, form_id, request.url.path)
                if first is not None:  # a double tap: one reservation
                    return RedirectResponse(first, status_code=303)
                held = redemptions.reserve(
                    conn, merchant_id=who.merchant_id, member_id=who.member_id, reward_id=reward_id
                )
                return went_to(conn, who.merchant_id, form_id, f"/portal?reserved={held['id']}#rewards")
        except (Conflict, InvalidInput) as exc:
            message = exc.detail
            if exc.code == "insufficient-points":
                message = "You do not have enough points for this reward yet."
            return _home(request, conn, who, error=message, status=409)

    return member_page(request, work, form_csrf=csrf_token, check_csrf=True)


@router.get("/portal/logout")
def logout_page(request: Request) -> Response:
    return member_page(
        request,
        lambda conn, who: render(request, "portal/logout.html", title="Sign out", portal=True, who=who),
    )


@router.post("/portal/logout")
def logout(request: Request, csrf_token: Annotated[str, Form(max_length=200)] = "") -> Response:
    def work(conn: Connection, who: Member) -> Response:
        users.end_session(conn, token=request.cookies.get(common.MEMBER_COOKIE))
        response = render(request, "portal/signed_out.html", title="Signed out", portal=True)
        common.clear_session_cookie(response, "member")
        return response

    return member_page(request, work, form_csrf=csrf_token, check_csrf=True)
