"""Member email preferences, the member's message log, and one-click unsubscribe.

``router`` goes under ``/v1`` with the other API routers. ``public_router`` has no prefix and no
API key: ``/unsubscribe/{token}`` is the link in every email (``List-Unsubscribe``), signed so that
only Patron can make one. Mail clients POST to it for one-click unsubscribe (RFC 8058); a person
who opens the link sees a page with a button that POSTs the same.
"""

from __future__ import annotations

from html import escape
from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Engine

from patron.api.deps import CallDep
from patron.domain.errors import NotFound
from patron.services import notifications

router = APIRouter(tags=["notifications"])
public_router = APIRouter(tags=["notifications"])

Token = Annotated[str, Path(min_length=5, max_length=400)]


class PreferencesUpdate(BaseModel):
    """Omitted fields stay as they are."""

    model_config = ConfigDict(extra="forbid")

    subscribed: bool | None = Field(None, description="false: no email at all (as the unsubscribe link).")
    messages: dict[str, bool] | None = Field(
        None,
        description="Switch single messages on or off: welcome, points_earned, tier_changed, milestone, "
        "reward_issued, expiry, monthly_digest, win_back.",
        examples=[{"monthly_digest": False}],
    )


@router.get("/members/{member_id}/preferences")
def get_preferences(member_id: str, call: CallDep) -> JSONResponse:
    """The member's email preferences: `subscribed` (false after unsubscribing) and each message
    on or off. A member who is not subscribed, or has a message off, is not sent it."""
    return call.run(
        lambda conn, p: notifications.get_preferences(conn, merchant_id=p.merchant_id, member_id=member_id),
        scope="read",
    )


@router.put("/members/{member_id}/preferences")
def put_preferences(member_id: str, body: PreferencesUpdate, call: CallDep) -> JSONResponse:
    """Change the member's email preferences (e.g. at the member's request at the till)."""
    return call.run(
        lambda conn, p: notifications.set_preferences(
            conn,
            merchant_id=p.merchant_id,
            member_id=member_id,
            subscribed=body.subscribed,
            messages=body.messages,
        ),
        scope="write",
        body=body.model_dump(),
    )


@router.get("/members/{member_id}/notifications")
def member_notifications(member_id: str, call: CallDep) -> JSONResponse:
    """The member's emails, newest first (at most 100): kind, status (`queued`, `sending`, `sent`,
    `failed`, `skipped`), attempts and the last error."""
    return call.run(
        lambda conn, p: {
            "data": notifications.log_of_member(conn, merchant_id=p.merchant_id, member_id=member_id)
        },
        scope="read",
    )


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{title}</title></head>
<body style="font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem;color:#18181b">
<h1 style="font-size:1.4rem">{title}</h1>{body}</body></html>"""


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(PAGE.format(title=escape(title), body=body), status_code=status)


def _invalid() -> HTMLResponse:
    return _page("Link not valid", "<p>This unsubscribe link is not valid.</p>", 404)


@public_router.get("/unsubscribe/{token}", response_class=HTMLResponse, include_in_schema=False)
def unsubscribe_page(token: Token, request: Request) -> HTMLResponse:
    """A page asking to confirm: opening a link (or a mail scanner fetching it) changes nothing."""
    engine: Engine = request.app.state.engine
    try:
        with engine.begin() as conn:
            notifications.check_token(conn, token)
    except NotFound:
        return _invalid()
    return _page(
        "Unsubscribe",
        '<p>Stop all emails from this loyalty program?</p><form method="post">'
        '<button type="submit" style="font-size:1rem;padding:.5rem 1rem">Unsubscribe</button></form>',
    )


@public_router.post("/unsubscribe/{token}", response_class=HTMLResponse, include_in_schema=False)
def unsubscribe(token: Token, request: Request) -> HTMLResponse:
    """One-click unsubscribe (RFC 8058: the body is `List-Unsubscribe=One-Click`, ignored)."""
    engine: Engine = request.app.state.engine
    try:
        with engine.begin() as conn:
            notifications.unsubscribe(conn, token=token)
    except NotFound:
        return _invalid()
    return _page("Unsubscribed", "<p>You will not receive any more emails from this program.</p>")
