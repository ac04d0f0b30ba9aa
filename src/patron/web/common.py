"""Plumbing shared by the console, the portal and the POS screen: templates, cookies, sessions,
CSRF and one transaction per page.

Cookies are HttpOnly and SameSite=Lax (Secure when ``public_url`` is https). Every POST form
carries a CSRF token: the session's own token once signed in, and before sign-in a random token
that is also set as a cookie (double submit). Pages render errors as HTML, never as the API's
problem+json: an unknown or other merchant's id is the same 404 page.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy import Connection, Engine

from patron.domain.errors import NotFound, PatronError
from patron.services import users
from patron.services.clock import utcnow
from patron.services.users import CONSOLE_ROLES, Session, SessionKind
from patron.storage import idempotency
from patron.storage import members as members_repo
from patron.web import format as fmt

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters.update(
    money=fmt.money,
    points=fmt.points,
    signed=fmt.signed,
    day=fmt.day,
    when=fmt.when,
    last_day=fmt.last_day,
)
templates.env.globals.update(
    explain=fmt.explain,
    entry_points=fmt.entry_points,
    # a fresh id for each form that must not act twice (a double tap, a resubmission)
    one_time_id=lambda: secrets.token_urlsafe(12),
)

STAFF_COOKIE = "patron_staff"
MEMBER_COOKIE = "patron_member"
PRE_CSRF_COOKIE = "patron_csrf"
COOKIES: dict[SessionKind, tuple[str, str]] = {
    "user": (STAFF_COOKIE, "/"),
    "member": (MEMBER_COOKIE, "/portal"),
}


def engine(request: Request) -> Engine:
    eng: Engine = request.app.state.engine
    return eng


def secure(request: Request) -> bool:
    return str(request.app.state.settings.public_url).startswith("https://")


def render(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    response = templates.TemplateResponse(request, name, context, status_code=status)
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    return response


def error_page(request: Request, status: int, title: str, detail: str, **context: Any) -> HTMLResponse:
    return render(request, "error.html", status=status, title=title, detail=detail, **context)


def not_found(request: Request) -> HTMLResponse:
    return error_page(request, 404, "Not found", "There is nothing here, or it is not yours to see.")


def csrf_refused(request: Request) -> HTMLResponse:
    return error_page(
        request,
        403,
        "This form has expired",
        "The form was missing its security token or it did not match. Go back, reload the page and "
        "try again.",
    )


def set_session_cookie(request: Request, response: Response, kind: SessionKind, token: str) -> None:
    name, path = COOKIES[kind]
    ttl = int(users.SESSION_TTL[kind].total_seconds())
    response.set_cookie(
        name, token, max_age=ttl, path=path, httponly=True, samesite="lax", secure=secure(request)
    )


def clear_session_cookie(response: Response, kind: SessionKind) -> None:
    name, path = COOKIES[kind]
    response.delete_cookie(name, path=path, httponly=True, samesite="lax")


def pre_csrf(request: Request) -> str:
    """The token for a form shown before sign-in: the cookie's, or a new one (set it with
    :func:`remember_pre_csrf`)."""
    token = request.cookies.get(PRE_CSRF_COOKIE, "")
    return token if 20 <= len(token) <= 100 else secrets.token_urlsafe(24)


def remember_pre_csrf(request: Request, response: Response, token: str) -> None:
    response.set_cookie(
        PRE_CSRF_COOKIE, token, max_age=3600, path="/", httponly=True, samesite="lax", secure=secure(request)
    )


def pre_csrf_ok(request: Request, sent: str | None) -> bool:
    cookie = request.cookies.get(PRE_CSRF_COOKIE, "")
    return bool(cookie) and bool(sent) and secrets.compare_digest(cookie.encode(), (sent or "").encode())


def safe_next(value: str | None, default: str) -> str:
    """A local path to go to after sign-in; anything else (another site) becomes ``default``."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return default


@dataclass(frozen=True, slots=True)
class Staff:
    session: Session
    user: dict[str, Any]

    @property
    def merchant_id(self) -> str:
        return self.session.merchant_id

    @property
    def console(self) -> bool:
        return self.user["role"] in CONSOLE_ROLES


@dataclass(frozen=True, slots=True)
class Member:
    session: Session

    @property
    def merchant_id(self) -> str:
        return self.session.merchant_id

    @property
    def member_id(self) -> str:
        return self.session.subject_id


def staff_of(conn: Connection, request: Request) -> Staff | None:
    session = users.session_for(conn, token=request.cookies.get(STAFF_COOKIE), kind="user")
    if session is None:
        return None
    try:
        user = users.get_user(conn, merchant_id=session.merchant_id, user_id=session.subject_id)
    except NotFound:
        return None
    return Staff(session, user)


def member_of(conn: Connection, request: Request) -> Member | None:
    """The signed-in member; None without a session, or once their membership is closed (or
    their data erased): a session outlives neither."""
    session = users.session_for(conn, token=request.cookies.get(MEMBER_COOKIE), kind="member")
    if session is None:
        return None
    member = members_repo.get_member(conn, session.merchant_id, session.subject_id)
    return None if member is None or member["status"] == "closed" else Member(session)


def to_login(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/admin/login?next={quote(target, safe='/')}", status_code=303)


def staff_page(
    request: Request,
    work: Callable[[Connection, Staff], Response],
    *,
    console: bool = True,
    form_csrf: str | None = None,
    check_csrf: bool = False,
) -> Response:
    """Run ``work`` for a signed-in user in one transaction (committed only if it returns).

    Without a session: to the sign-in page. ``console`` pages need an owner or manager (staff go
    to the POS screen). ``check_csrf``: refuse with 403 unless ``form_csrf`` is the session's.
    """
    try:
        with engine(request).begin() as conn:
            who = staff_of(conn, request)
            if who is None:
                return to_login(request)
            if console and not who.console:
                return RedirectResponse("/pos", status_code=303)
            if check_csrf and not who.session.csrf_ok(form_csrf):
                return csrf_refused(request)
            return work(conn, who)
    except NotFound:
        return not_found(request)
    except PatronError as exc:
        return error_page(request, 409, exc.title, exc.detail)


def member_page(
    request: Request,
    work: Callable[[Connection, Member], Response],
    *,
    form_csrf: str | None = None,
    check_csrf: bool = False,
) -> Response:
    """As :func:`staff_page`, for the member portal: no session shows how to sign in."""
    try:
        with engine(request).begin() as conn:
            who = member_of(conn, request)
            if who is None:
                return error_page(
                    request,
                    401,
                    "Please sign in",
                    "Open the sign-in link we sent you, or ask at the till for a new one.",
                    portal=True,
                )
            if check_csrf and not who.session.csrf_ok(form_csrf):
                return csrf_refused(request)
            return work(conn, who)
    except NotFound:
        return not_found(request)
    except PatronError as exc:
        return error_page(request, 409, exc.title, exc.detail, portal=True)


def submitted_before(conn: Connection, merchant_id: str, form_id: str, path: str) -> str | None:
    """Claim a form's one-time id: None the first time (the caller acts, then calls
    :func:`went_to`); for a double submit, where the first one went. The claim is part of the
    caller's transaction, so a submission that fails leaves the id free for another try."""
    if not form_id:
        return None  # a form from before one-time ids: acts as it always did
    key = f"form:{form_id}"
    values = {"method": "POST", "path": path[:500], "body_hash": "", "status_code": 303}
    if idempotency.claim(conn, merchant_id=merchant_id, key=key, response={}, created_at=utcnow(), **values):
        return None
    first = idempotency.get(conn, merchant_id, key)
    assert first is not None
    return str(first["response"].get("location") or path)


def went_to(conn: Connection, merchant_id: str, form_id: str, location: str) -> RedirectResponse:
    """Remember where the form's first submission went, and go there."""
    if form_id:
        idempotency.settle(
            conn, merchant_id, f"form:{form_id}", status_code=303, response={"location": location}
        )
    return RedirectResponse(location, status_code=303)
