"""More of the member portal: tickets, referral link, punch cards, surveys, email preferences,
download my data, and the wallet passes (Apple Wallet ``.pkpass``, Google Wallet save link).

Every page goes through the same services as the API; a wallet that is not configured has no
button and its URL is a 404 page that says so.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import segno
from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response
from markupsafe import Markup
from sqlalchemy import Connection

from patron.domain import surveys as survey_rules
from patron.domain.errors import InvalidInput
from patron.domain.notifications import SWITCHES
from patron.services import members, notifications, portal_extras, punch_cards, referrals, surveys, wallet
from patron.services.portal import program_facts
from patron.web.common import Member, error_page, member_page, render, submitted_before, templates, went_to

router = APIRouter(include_in_schema=False)

Csrf = Annotated[str, Form(max_length=200)]

MESSAGE_LABELS = {
    "welcome": "Welcome message when you join",
    "points_earned": "Points you earn",
    "tier_changed": "Changes to your tier",
    "milestone": "Milestones you reach",
    "reward_issued": "Rewards we give you",
    "expiry": "Points about to expire",
    "monthly_digest": "Monthly summary of your points",
    "win_back": "We miss you messages",
}
CLI_QUESTIONS = {
    "recommend": "How likely are you to recommend us to a friend?",
    "buy_again": "How likely are you to buy from us again?",
    "try_other": "How likely are you to try our other products?",
}
CLI_SCALE = "1 means not at all likely, 6 means very likely."


def wallet_links() -> dict[str, bool]:
    """Which wallet buttons to show: only those whose configuration is complete."""
    s = wallet.WalletSettings()
    if not wallet.crypto_available():
        return {"apple": False, "google": False}
    return {
        "apple": all(
            (s.apple_pass_cert, s.apple_pass_key, s.apple_wwdr_cert, s.apple_pass_type_id, s.apple_team_id)
        ),
        "google": bool(s.google_wallet_issuer_id and s.google_wallet_key_file),
    }


templates.env.globals["wallet_links"] = wallet_links


def _public_url(request: Request) -> str:
    return str(request.app.state.settings.public_url).rstrip("/")


def _qr(text: str, title: str) -> Markup:
    svg = segno.make(text, error="m").svg_inline(
        scale=1, omitsize=True, dark="#111111", light="#ffffff", title=title
    )
    return Markup(svg.replace("<svg ", '<svg role="img" class="qr" ', 1))


def _facts(conn: Connection, who: Member) -> tuple[dict[str, Any], dict[str, Any]]:
    member = members.get_member(conn, merchant_id=who.merchant_id, member_id=who.member_id)
    return member, program_facts(conn, merchant_id=who.merchant_id, program_id=member["program_id"])


def _page(request: Request, name: str, who: Member, program: dict[str, Any], **context: Any) -> Response:
    return render(request, name, who=who, program=program, portal=True, **context)


# Tickets, referral, punch cards ----------------------------------------------------------


@router.get("/portal/tickets")
def tickets_page(request: Request) -> Response:
    def work(conn: Connection, who: Member) -> Response:
        _, program = _facts(conn, who)
        found = portal_extras.member_tickets(conn, merchant_id=who.merchant_id, member_id=who.member_id)
        for t in found:
            t["qr"] = _qr(t["code"], f"QR code of your ticket for {t['event_name']}") if t["usable"] else None
        return _page(request, "portal/tickets.html", who, program, tickets=found, title="Your tickets")

    return member_page(request, work)


@router.get("/portal/referral")
def referral_page(request: Request) -> Response:
    def work(conn: Connection, who: Member) -> Response:
        member, program = _facts(conn, who)
        link = f"{_public_url(request)}/portal/join?ref={quote(member['referral_code'])}"
        mine = referrals.of_member(conn, merchant_id=who.merchant_id, member_id=who.member_id)
        return _page(
            request,
            "portal/referral.html",
            who,
            program,
            m=member,
            link=link,
            qr=_qr(link, "QR code of your invitation link"),
            completed=mine["completed"],
            waiting=sum(1 for r in mine["referrals"] if r["status"] == "review"),
            title="Invite a friend",
        )

    return member_page(request, work)


@router.get("/portal/join")
def join(request: Request, ref: str = "") -> Response:
    """Where a referral link lands: the friend is told to give the code when they join."""
    code = "".join(ch for ch in ref.upper() if ch.isalnum())[:40]
    return render(request, "portal/join.html", code=code, title="You are invited", portal=True)


@router.get("/portal/punch-cards")
def punch_cards_page(request: Request) -> Response:
    def work(conn: Connection, who: Member) -> Response:
        _, program = _facts(conn, who)
        cards = punch_cards.cards_of(conn, merchant_id=who.merchant_id, member_id=who.member_id)
        for c in cards:
            c["name"] = program["rule_names"].get(c["rule_id"], c["rule_id"])
            c["reward_name"] = program["reward_names"].get(c["reward_id"], c["reward_id"])
        return _page(request, "portal/punch_cards.html", who, program, cards=cards, title="Punch cards")

    return member_page(request, work)


# Surveys ------------------------------------------------------------------------------------


def _surveys(
    request: Request,
    conn: Connection,
    who: Member,
    *,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
    thanks: str | None = None,
    status: int = 200,
) -> Response:
    _, program = _facts(conn, who)
    answered = surveys.member_responses(conn, merchant_id=who.merchant_id, member_id=who.member_id, limit=5)
    return render(
        request,
        "portal/surveys.html",
        status=status,
        who=who,
        program=program,
        answered=answered,
        errors=errors or {},
        values=values or {},
        thanks=thanks,
        questions=CLI_QUESTIONS,
        scale=CLI_SCALE,
        title="Tell us what you think",
        portal=True,
    )


@router.get("/portal/surveys")
def surveys_page(request: Request, thanks: str | None = None) -> Response:
    return member_page(request, lambda conn, who: _surveys(request, conn, who, thanks=thanks))


def _whole(value: str, low: int, high: int) -> int | None:
    text = value.strip()
    if not (text.isascii() and text.isdigit()):  # "²" and "①" are digits to isdigit(), not to int()
        return None
    n = int(text)
    return n if low <= n <= high else None


def _comment(value: str) -> str | None:
    text = value.strip()
    return text[:2000] if text else None


@router.post("/portal/surveys/nps")
def answer_nps(
    request: Request,
    score: Annotated[str, Form(max_length=10)] = "",
    comment: Annotated[str, Form(max_length=4000)] = "",
    csrf_token: Csrf = "",
    form_id: Annotated[str, Form(max_length=40)] = "",
) -> Response:
    def work(conn: Connection, who: Member) -> Response:
        n = _whole(score, survey_rules.NPS_MIN, survey_rules.NPS_MAX)
        if n is None:
            errors = {"score": "Choose a score from 0 to 10."}
            values = {"nps_comment": comment}
            return _surveys(request, conn, who, errors=errors, values=values, status=422)
        first = submitted_before(conn, who.merchant_id, form_id, request.url.path)
        if first is not None:  # sent twice: answered once
            return RedirectResponse(first, status_code=303)
        surveys.submit(
            conn,
            merchant_id=who.merchant_id,
            member_id=who.member_id,
            kind=survey_rules.Kind.NPS,
            answers=(n,),
            comment=_comment(comment),
            channel="portal",
        )
        return went_to(conn, who.merchant_id, form_id, "/portal/surveys?thanks=nps")

    return member_page(request, work, form_csrf=csrf_token, check_csrf=True)


@router.post("/portal/surveys/cli")
def answer_cli(
    request: Request,
    recommend: Annotated[str, Form(max_length=10)] = "",
    buy_again: Annotated[str, Form(max_length=10)] = "",
    try_other: Annotated[str, Form(max_length=10)] = "",
    comment: Annotated[str, Form(max_length=4000)] = "",
    csrf_token: Csrf = "",
    form_id: Annotated[str, Form(max_length=40)] = "",
) -> Response:
    def work(conn: Connection, who: Member) -> Response:
        given = {"recommend": recommend, "buy_again": buy_again, "try_other": try_other}
        answers = {k: _whole(v, survey_rules.CLI_MIN, survey_rules.CLI_MAX) for k, v in given.items()}
        errors = {k: "Choose an answer from 1 to 6." for k, n in answers.items() if n is None}
        if errors:
            values = {**{f"cli_{k}": v for k, v in given.items()}, "cli_comment": comment}
            return _surveys(request, conn, who, errors=errors, values=values, status=422)
        first = submitted_before(conn, who.merchant_id, form_id, request.url.path)
        if first is not None:  # sent twice: answered once
            return RedirectResponse(first, status_code=303)
        surveys.submit(
            conn,
            merchant_id=who.merchant_id,
            member_id=who.member_id,
            kind=survey_rules.Kind.CLI,
            answers=tuple(int(answers[k] or 0) for k in survey_rules.CLI_QUESTIONS),
            comment=_comment(comment),
            channel="portal",
        )
        return went_to(conn, who.merchant_id, form_id, "/portal/surveys?thanks=cli")

    return member_page(request, work, form_csrf=csrf_token, check_csrf=True)


# Preferences and data -----------------------------------------------------------------------


def _preferences(
    request: Request, conn: Connection, who: Member, *, notice: str | None = None, status: int = 200
) -> Response:
    _, program = _facts(conn, who)
    prefs = notifications.get_preferences(conn, merchant_id=who.merchant_id, member_id=who.member_id)
    return render(
        request,
        "portal/preferences.html",
        status=status,
        who=who,
        program=program,
        prefs=prefs,
        labels=MESSAGE_LABELS,
        notice=notice,
        title="Emails and your data",
        portal=True,
    )


NOTICES = {
    "saved": "Your choices are saved.",
    "unsubscribed": "You will get no more emails from us.",
    "subscribed": "Emails are on again, as chosen below.",
}


@router.get("/portal/preferences")
def preferences_page(request: Request, done: str | None = None) -> Response:
    notice = NOTICES.get(done or "")
    return member_page(request, lambda conn, who: _preferences(request, conn, who, notice=notice))


@router.post("/portal/preferences")
def save_preferences(
    request: Request,
    messages: Annotated[list[str] | None, Form()] = None,
    csrf_token: Csrf = "",
) -> Response:
    chosen = set(messages or [])

    def work(conn: Connection, who: Member) -> Response:
        notifications.set_preferences(
            conn,
            merchant_id=who.merchant_id,
            member_id=who.member_id,
            messages={name: name in chosen for name in SWITCHES},
        )
        return RedirectResponse("/portal/preferences?done=saved", status_code=303)

    return member_page(request, work, form_csrf=csrf_token, check_csrf=True)


@router.post("/portal/preferences/unsubscribe")
def unsubscribe_all(request: Request, csrf_token: Csrf = "") -> Response:
    def work(conn: Connection, who: Member) -> Response:
        notifications.set_preferences(
            conn, merchant_id=who.merchant_id, member_id=who.member_id, subscribed=False
        )
        return RedirectResponse("/portal/preferences?done=unsubscribed", status_code=303)

    return member_page(request, work, form_csrf=csrf_token, check_csrf=True)


@router.post("/portal/preferences/subscribe")
def subscribe_again(request: Request, csrf_token: Csrf = "") -> Response:
    def work(conn: Connection, who: Member) -> Response:
        notifications.set_preferences(
            conn, merchant_id=who.merchant_id, member_id=who.member_id, subscribed=True
        )
        return RedirectResponse("/portal/preferences?done=subscribed", status_code=303)

    return member_page(request, work, form_csrf=csrf_token, check_csrf=True)


@router.get("/portal/my-data.json")
def download_data(request: Request) -> Response:
    def work(conn: Connection, who: Member) -> Response:
        body = portal_extras.export_json(conn, merchant_id=who.merchant_id, member_id=who.member_id)
        return Response(
            body,
            media_type="application/json",
            headers={
                "Content-Disposition": 'attachment; filename="my-loyalty-data.json"',
                "Cache-Control": "no-store",
            },
        )

    return member_page(request, work)


# Wallet -------------------------------------------------------------------------------------


def _not_configured(request: Request, who: Member, wallet_name: str) -> Response:
    return error_page(
        request,
        404,
        f"{wallet_name} is not available",
        f"This program does not offer a {wallet_name} pass yet. Show the QR code on your card page "
        "at the till, or print your card.",
        portal=True,
        who=who,
    )


def _misconfigured(request: Request, who: Member, wallet_name: str) -> Response:
    return error_page(
        request,
        503,
        f"{wallet_name} is not working right now",
        "We could not make your pass. Please try again later; your card page works meanwhile.",
        portal=True,
        who=who,
    )


@router.get("/portal/wallet.pkpass")
def apple_pass(request: Request) -> Response:
    def work(conn: Connection, who: Member) -> Response:
        try:
            config = wallet.apple_config()
        except InvalidInput:
            return _misconfigured(request, who, "Apple Wallet")
        if config is None:
            return _not_configured(request, who, "Apple Wallet")
        _, program = _facts(conn, who)
        card = portal_extras.wallet_card(
            conn, merchant_id=who.merchant_id, member_id=who.member_id, program=program
        )
        body = wallet.build_pkpass(config, card, web_url=f"{_public_url(request)}/portal")
        return Response(
            body,
            media_type="application/vnd.apple.pkpass",
            headers={
                "Content-Disposition": f'attachment; filename="{wallet.pass_filename(card)}"',
                "Cache-Control": "no-store",
            },
        )

    return member_page(request, work)


@router.get("/portal/wallet/google")
def google_pass(request: Request) -> Response:
    def work(conn: Connection, who: Member) -> Response:
        try:
            config = wallet.google_config()
        except InvalidInput:
            return _misconfigured(request, who, "Google Wallet")
        if config is None:
            return _not_configured(request, who, "Google Wallet")
        _, program = _facts(conn, who)
        card = portal_extras.wallet_card(
            conn, merchant_id=who.merchant_id, member_id=who.member_id, program=program
        )
        url = wallet.google_save_url(config, card, origin=_public_url(request))
        return RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store"})

    return member_page(request, work)
