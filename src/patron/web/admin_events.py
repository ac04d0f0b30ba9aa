"""The console's members-only events: the list with seats taken, a form to create one, each
event's guest list, and checking a ticket in by its code at the door."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import Connection

from patron.domain import tickets as ticket_rules
from patron.domain.errors import Conflict, InvalidInput, NotFound
from patron.services import members, programs, tickets
from patron.services.instant import in_range
from patron.web.common import Staff, render, staff_page

router = APIRouter(include_in_schema=False)

MAX_CAPACITY = 100_000
MAX_PRICE = 10_000_000
WRONG_CODE = "No ticket for this event has that code. Check it, or the ticket may be for another event."


def _programs(
    conn: Connection, who: Staff, wanted: str | None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    found = programs.list_programs(conn, merchant_id=who.merchant_id)
    if not found:
        raise NotFound("no programs")
    chosen = next((p for p in found if p["id"] == wanted), None) if wanted else found[0]
    if chosen is None:
        raise NotFound(f"program {wanted} not found")
    return chosen, found


def _levels(program: dict[str, Any]) -> list[dict[str, Any]]:
    tiers = program.get("tiers") or {}
    return list(tiers.get("levels", []))


def _events_page(
    request: Request,
    conn: Connection,
    who: Staff,
    program_id: str | None,
    *,
    form: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    notice: str | None = None,
    status: int = 200,
) -> Response:
    program, found = _programs(conn, who, program_id)
    events = tickets.list_events(conn, merchant_id=who.merchant_id, program_id=program["id"])
    events.sort(key=lambda e: e["starts_at"], reverse=True)
    return render(
        request,
        "admin/events.html",
        status=status,
        who=who,
        events=events,
        program=program,
        programs=found,
        levels=_levels(program),
        tz=program["timezone"],
        form=form or {"capacity": "50", "price": "0", "waitlist": True, "audience": []},
        errors=errors or {},
        notice=notice,
        title="Events",
        nav="events",
    )


@router.get("/admin/events")
def event_list(request: Request, program: str | None = None, created: str = "") -> Response:
    notice = "Event created." if created else None
    return staff_page(request, lambda conn, who: _events_page(request, conn, who, program, notice=notice))


def _whole(value: str, field: str, errors: dict[str, str], low: int, high: int, what: str) -> int:
    try:
        n = int(value.strip().replace(",", ""))
    except ValueError:
        errors[field] = f"Enter a whole number, e.g. {what}."
        return 0
    if not low <= n <= high:
        errors[field] = f"Enter a number from {low:,} to {high:,}."
    return n


@router.post("/admin/events")
async def create_event(request: Request) -> Response:
    posted = await request.form()
    field = {
        k: str(posted.get(k, ""))[:500]
        for k in ("program_id", "name", "place", "starts_at", "capacity", "price")
    }
    audience = [str(a)[:40] for a in posted.getlist("audience")][:50]
    waitlist = posted.get("waitlist") == "on"
    csrf = str(posted.get("csrf_token", ""))
    form = {**field, "audience": audience, "waitlist": waitlist}

    def work(conn: Connection, who: Staff) -> Response:
        program, _ = _programs(conn, who, field["program_id"] or None)
        errors: dict[str, str] = {}
        name, place = field["name"].strip(), field["place"].strip()
        if not name:
            errors["name"] = "Name the event, e.g. “Tasting evening”."
        elif len(name) > 200:
            errors["name"] = "Keep the name under 200 characters."
        if not place:
            errors["place"] = "Say where it takes place."
        elif len(place) > 200:
            errors["place"] = "Keep the place under 200 characters."
        starts_at = None
        try:
            starts_at = datetime.fromisoformat(field["starts_at"].strip()).replace(
                tzinfo=ZoneInfo(program["timezone"])
            )
            if not in_range(starts_at):
                raise ValueError
        except ValueError:
            errors["starts_at"] = "Enter the date and time it starts."
        capacity = _whole(field["capacity"], "capacity", errors, 1, MAX_CAPACITY, "50")
        price = _whole(field["price"], "price", errors, 0, MAX_PRICE, "0 for free or 500")
        known = {lv["id"] for lv in _levels(program)}
        if set(audience) - known:
            errors["audience"] = "Choose tiers of this program."
        if not errors and starts_at is not None:
            try:
                with conn.begin_nested():
                    tickets.create_event(
                        conn,
                        merchant_id=who.merchant_id,
                        program_id=program["id"],
                        name=name,
                        place=place,
                        starts_at=starts_at,
                        capacity=capacity,
                        audience=audience,
                        price=price,
                        waitlist=waitlist,
                    )
            except ticket_rules.EventInPast:
                errors["starts_at"] = "Choose a time in the future."
            except InvalidInput as exc:
                key = exc.extra.get("field")
                errors[key if key in field or key == "audience" else "name"] = _sentence(exc.detail)
            else:
                return RedirectResponse(f"/admin/events?program={program['id']}&created=1", status_code=303)
        return _events_page(request, conn, who, program["id"], form=form, errors=errors, status=422)

    return await run_in_threadpool(staff_page, request, work, form_csrf=csrf, check_csrf=True)


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def _event_page(
    request: Request,
    conn: Connection,
    who: Staff,
    event_id: str,
    *,
    code: str = "",
    error: str | None = None,
    checked: dict[str, Any] | None = None,
    status: int = 200,
) -> Response:
    event = tickets.get_event(conn, merchant_id=who.merchant_id, event_id=event_id)
    program = programs.get_program(conn, merchant_id=who.merchant_id, program_id=event["program_id"])
    guests = tickets.tickets_of_event(conn, merchant_id=who.merchant_id, event_id=event_id)
    names: dict[str, dict[str, Any]] = {}
    for t in guests:
        if t["member_id"] not in names:
            try:
                names[t["member_id"]] = members.get_member(
                    conn, merchant_id=who.merchant_id, member_id=t["member_id"]
                )
            except NotFound:
                names[t["member_id"]] = {}
    order = {"checked_in": 0, "issued": 1, "waitlisted": 2, "cancelled": 3}
    guests.sort(key=lambda t: (order.get(t["status"], 9), (names[t["member_id"]].get("name") or "").lower()))
    levels = {lv["id"]: lv["name"] for lv in _levels(program)}
    return render(
        request,
        "admin/event.html",
        status=status,
        who=who,
        event=event,
        guests=guests,
        names=names,
        audience=[levels.get(a, a) for a in event["audience"]],
        tz=program["timezone"],
        code=code,
        error=error,
        checked=checked,
        title=event["name"],
        nav="events",
    )


@router.get("/admin/events/{event_id}")
def event_page(request: Request, event_id: str) -> Response:
    return staff_page(request, lambda conn, who: _event_page(request, conn, who, event_id))


@router.post("/admin/events/{event_id}/check-in")
async def check_in(request: Request, event_id: str) -> Response:
    posted = await request.form()
    code = str(posted.get("code", ""))[:100].strip()
    csrf = str(posted.get("csrf_token", ""))

    def work(conn: Connection, who: Staff) -> Response:
        wanted = code.replace(" ", "").replace("-", "").upper()
        if not wanted:
            return _event_page(
                request, conn, who, event_id, code=code, error="Enter the code on the ticket.", status=422
            )
        mine = {
            t["code"] for t in tickets.tickets_of_event(conn, merchant_id=who.merchant_id, event_id=event_id)
        }
        if wanted not in mine:
            return _event_page(
                request,
                conn,
                who,
                event_id,
                code=code,
                error=WRONG_CODE,
                status=422,
            )
        try:
            with conn.begin_nested():
                done = tickets.check_in(conn, merchant_id=who.merchant_id, code=wanted)
        except Conflict as exc:
            return _event_page(
                request, conn, who, event_id, code=code, error=_checkin_message(exc), status=409
            )
        return _event_page(request, conn, who, event_id, checked=done)

    return await run_in_threadpool(staff_page, request, work, form_csrf=csrf, check_csrf=True)


def _checkin_message(exc: Conflict) -> str:
    if isinstance(exc, ticket_rules.AlreadyCheckedIn):
        return "This ticket was already checked in."
    if isinstance(exc, ticket_rules.TicketCancelled):
        return "This ticket was cancelled: do not let it in."
    if isinstance(exc, ticket_rules.TicketWaitlisted):
        return "This ticket is on the waitlist and has no seat."
    return _sentence(exc.detail)
