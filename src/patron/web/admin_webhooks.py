"""The console's outbound webhook endpoints (owners only, like API keys): list them, create one
(its signing secret shown once), disable and enable, each endpoint's recent deliveries with
their status and attempts, and replaying an event to an endpoint."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import Connection

from patron.domain.errors import Conflict, InvalidInput, NotFound
from patron.services import outbox, webhooks_out
from patron.web.common import Staff, render, staff_page

router = APIRouter(include_in_schema=False)

OWNER = "owner"


def _owner(who: Staff) -> None:
    if who.user["role"] != OWNER:
        raise NotFound("only owners manage webhook endpoints")


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def _list_page(
    request: Request,
    conn: Connection,
    who: Staff,
    *,
    created: dict[str, Any] | None = None,
    form: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    return render(
        request,
        "admin/webhooks.html",
        status=status,
        who=who,
        endpoints=webhooks_out.list_endpoints(conn, merchant_id=who.merchant_id),
        types=outbox.EVENT_TYPES,
        created=created,
        form=form or {"event_types": []},
        errors=errors or {},
        title="Webhooks",
        nav="webhooks",
    )


@router.get("/admin/webhooks")
def webhooks_page(request: Request) -> Response:
    def work(conn: Connection, who: Staff) -> Response:
        _owner(who)
        return _list_page(request, conn, who)

    return staff_page(request, work)


@router.post("/admin/webhooks")
async def create(request: Request) -> Response:
    posted = await request.form()
    url = str(posted.get("url", ""))[:2000].strip()
    description = str(posted.get("description", ""))[:300].strip()
    types = [str(t)[:60] for t in posted.getlist("event_types")][:50]
    csrf = str(posted.get("csrf_token", ""))
    form = {"url": url, "description": description, "event_types": types}

    def work(conn: Connection, who: Staff) -> Response:
        _owner(who)
        errors: dict[str, str] = {}
        if not url:
            errors["url"] = (
                "Enter the address that receives the events, e.g. https://example.com/hooks/patron."
            )
        if len(description) > 200:
            errors["description"] = "Keep the description under 200 characters."
        if not errors:
            try:
                with conn.begin_nested():
                    made = webhooks_out.create_endpoint(
                        conn, merchant_id=who.merchant_id, url=url, description=description, event_types=types
                    )
            except InvalidInput as exc:
                field = exc.extra.get("field")
                errors[field if field in ("url", "description", "event_types") else "url"] = _message(exc)
            except Conflict as exc:
                errors["url"] = _sentence(exc.detail)
            else:
                return _list_page(request, conn, who, created=made)
        return _list_page(request, conn, who, form=form, errors=errors, status=422)

    return await run_in_threadpool(staff_page, request, work, form_csrf=csrf, check_csrf=True)


def _message(exc: InvalidInput) -> str:
    if exc.extra.get("field") == "url":
        return "Enter a full http or https address, e.g. https://example.com/hooks/patron."
    if exc.extra.get("field") == "event_types":
        return "Choose event types from the list."
    return _sentence(exc.detail)


@router.post("/admin/webhooks/{endpoint_id}/enabled")
async def set_enabled(request: Request, endpoint_id: str) -> Response:
    posted = await request.form()
    enabled = posted.get("enabled") == "1"
    csrf = str(posted.get("csrf_token", ""))

    def work(conn: Connection, who: Staff) -> Response:
        _owner(who)
        webhooks_out.update_endpoint(
            conn, merchant_id=who.merchant_id, endpoint_id=endpoint_id, changes={"enabled": enabled}
        )
        return RedirectResponse(f"/admin/webhooks/{endpoint_id}", status_code=303)

    return await run_in_threadpool(staff_page, request, work, form_csrf=csrf, check_csrf=True)


def _endpoint_page(
    request: Request,
    conn: Connection,
    who: Staff,
    endpoint_id: str,
    *,
    event_id: str = "",
    error: str | None = None,
    notice: str | None = None,
    status: int = 200,
) -> Response:
    endpoint = webhooks_out.get_endpoint(conn, merchant_id=who.merchant_id, endpoint_id=endpoint_id)
    recent = webhooks_out.deliveries(conn, merchant_id=who.merchant_id, endpoint_id=endpoint_id, limit=50)
    return render(
        request,
        "admin/webhook.html",
        status=status,
        who=who,
        e=endpoint,
        recent=recent["data"],
        event_id=event_id,
        error=error,
        notice=notice,
        title="Webhook endpoint",
        nav="webhooks",
    )


@router.get("/admin/webhooks/{endpoint_id}")
def endpoint_page(request: Request, endpoint_id: str, replayed: str = "") -> Response:
    notice = f"Event {replayed[:40]} queued to be sent again." if replayed else None

    def work(conn: Connection, who: Staff) -> Response:
        _owner(who)
        return _endpoint_page(request, conn, who, endpoint_id, notice=notice)

    return staff_page(request, work)


@router.post("/admin/webhooks/{endpoint_id}/replay")
async def replay(request: Request, endpoint_id: str) -> Response:
    posted = await request.form()
    event_id = str(posted.get("event_id", ""))[:100].strip()
    csrf = str(posted.get("csrf_token", ""))

    def work(conn: Connection, who: Staff) -> Response:
        _owner(who)
        webhooks_out.get_endpoint(conn, merchant_id=who.merchant_id, endpoint_id=endpoint_id)  # else 404
        error, status = None, 422
        if not event_id:
            error = "Enter the id of the event to send again."
        else:
            try:
                with conn.begin_nested():
                    webhooks_out.replay(
                        conn, merchant_id=who.merchant_id, endpoint_id=endpoint_id, event_id=event_id
                    )
            except NotFound:
                error = "There is no event with this id."
            except Conflict as exc:
                error, status = _sentence(exc.detail), 409
            else:
                return RedirectResponse(
                    f"/admin/webhooks/{endpoint_id}?replayed={quote(event_id)}", status_code=303
                )
        return _endpoint_page(request, conn, who, endpoint_id, event_id=event_id, error=error, status=status)

    return await run_in_threadpool(staff_page, request, work, form_csrf=csrf, check_csrf=True)
