"""The console's program pages: the program as JSON with validation and a preview of who would
move before a change is published, the rewards with their stock, and the API keys."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import Connection

from patron.domain.errors import InvalidInput, NotFound
from patron.services import merchants, programs, redemptions, tiers
from patron.services.clock import utcnow
from patron.services.instant import in_range
from patron.services.merchants import SCOPES
from patron.web.common import Staff, render, staff_page

router = APIRouter(include_in_schema=False)

OWNER = "owner"


def _rewards(
    conn: Connection, merchant_id: str, program_id: str, body: dict[str, Any]
) -> list[dict[str, Any]]:
    """The catalogue with what is left of each reward's stock (live and redeemed codes count)."""
    out = []
    for reward in body.get("rewards", []):
        used = redemptions.stock_used(
            conn, merchant_id=merchant_id, program_id=program_id, reward_id=reward["id"]
        )
        stock = reward.get("stock")
        out.append({**reward, "used": used, "left": None if stock is None else max(stock - used, 0)})
    return out


def _program_page(
    request: Request,
    conn: Connection,
    who: Staff,
    program_id: str,
    *,
    text: str | None = None,
    effective_from: str = "",
    errors: list[dict[str, Any]] | None = None,
    preview: dict[str, Any] | None = None,
    notice: str | None = None,
    status: int = 200,
) -> Response:
    program = programs.get_program(conn, merchant_id=who.merchant_id, program_id=program_id)
    body = {k: v for k, v in program.items() if k not in ("id", "version", "effective_from", "created_at")}
    return render(
        request,
        "admin/program.html",
        status=status,
        who=who,
        p=program,
        text=text if text is not None else json.dumps(body, indent=2, ensure_ascii=False),
        effective_from=effective_from,
        errors=errors or [],
        preview=preview,
        notice=notice,
        rewards=_rewards(conn, who.merchant_id, program_id, body),
        versions=programs.list_versions(conn, merchant_id=who.merchant_id, program_id=program_id),
        title=program["name"],
        nav="programs",
    )


@router.get("/admin/programs")
def program_list(request: Request) -> Response:
    def work(conn: Connection, who: Staff) -> Response:
        found = programs.list_programs(conn, merchant_id=who.merchant_id)
        if len(found) == 1:
            return RedirectResponse(f"/admin/programs/{found[0]['id']}", status_code=303)
        return render(request, "admin/programs.html", who=who, found=found, title="Programs", nav="programs")

    return staff_page(request, work)


@router.get("/admin/programs/{program_id}")
def program_page(request: Request, program_id: str, published: int | None = None) -> Response:
    notice = f"Version {published} published." if published else None
    return staff_page(request, lambda conn, who: _program_page(request, conn, who, program_id, notice=notice))


def _parse(text: str, effective_from: str) -> tuple[Any, datetime | None, list[dict[str, Any]]]:
    """The posted JSON and effective time, or the errors to show beside the fields."""
    errors: list[dict[str, Any]] = []
    body: Any = None
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        errors.append({"loc": f"line {exc.lineno}, column {exc.colno}", "msg": f"not valid JSON: {exc.msg}"})
    except RecursionError:
        errors.append({"loc": "program", "msg": "not valid JSON: nested too deeply"})
    when = None
    if effective_from.strip():
        try:
            when = datetime.fromisoformat(effective_from.strip().replace("Z", "+00:00"))
            if when.tzinfo is None or not in_range(when):
                raise ValueError
        except ValueError:
            errors.append(
                {"loc": "effective_from", "msg": "a time with its offset, e.g. 2027-01-01T00:00:00Z"}
            )
    return body, when, errors


@router.post("/admin/programs/{program_id}")
def program_submit(
    request: Request,
    program_id: str,
    program: Annotated[str, Form(max_length=2_000_000)] = "",
    effective_from: Annotated[str, Form(max_length=100)] = "",
    action: Annotated[str, Form(max_length=20)] = "preview",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    """``preview``: validate and show who would change tier; ``publish``: a new version."""

    def work(conn: Connection, who: Staff) -> Response:
        body, when, errors = _parse(program, effective_from)
        spec = None
        if not errors:
            try:
                spec = programs.validate_spec(body)
            except InvalidInput as exc:
                errors = list(exc.extra.get("errors", [])) or [{"loc": "", "msg": exc.detail}]
        if errors or spec is None:
            return _program_page(
                request,
                conn,
                who,
                program_id,
                text=program,
                effective_from=effective_from,
                errors=errors,
                status=422,
            )
        if action == "publish":
            saved = programs.update_program(
                conn, merchant_id=who.merchant_id, program_id=program_id, body=body, effective_from=when
            )
            return RedirectResponse(
                f"/admin/programs/{program_id}?published={saved['version']}", status_code=303
            )
        now = utcnow()
        current, _ = programs.program_at(conn, merchant_id=who.merchant_id, program_id=program_id, at=now)
        moves = tiers.preview(
            conn,
            merchant_id=who.merchant_id,
            program_id=program_id,
            current=current,
            proposed=spec.to_domain(),
            as_of=when or now,
        )
        return _program_page(
            request, conn, who, program_id, text=program, effective_from=effective_from, preview=moves
        )

    return staff_page(request, work, form_csrf=csrf_token, check_csrf=True)


def _keys_page(
    request: Request,
    conn: Connection,
    who: Staff,
    *,
    new_key: str | None = None,
    errors: dict[str, str] | None = None,
    form: dict[str, Any] | None = None,
    status: int = 200,
) -> Response:
    return render(
        request,
        "admin/keys.html",
        status=status,
        who=who,
        keys=merchants.list_api_keys(conn, merchant_id=who.merchant_id),
        scopes=SCOPES,
        new_key=new_key,
        errors=errors or {},
        form=form or {"scopes": ["read"]},
        title="API keys",
        nav="keys",
    )


@router.get("/admin/keys")
def keys_page(request: Request) -> Response:
    def work(conn: Connection, who: Staff) -> Response:
        if who.user["role"] != OWNER:
            raise NotFound("only owners manage API keys")
        return _keys_page(request, conn, who)

    return staff_page(request, work)


@router.post("/admin/keys")
async def create_key(request: Request) -> Response:
    form = await request.form()
    name = str(form.get("name", "")).strip()[:200]
    scopes = [str(s) for s in form.getlist("scopes")]
    csrf = str(form.get("csrf_token", ""))

    def work(conn: Connection, who: Staff) -> Response:
        if who.user["role"] != OWNER:
            raise NotFound("only owners manage API keys")
        errors = {}
        if not name:
            errors["name"] = "Name the key after what uses it, e.g. “Shopify store”."
        if not scopes or set(scopes) - set(SCOPES):
            errors["scopes"] = "Choose at least one scope."
        if errors:
            return _keys_page(
                request, conn, who, errors=errors, form={"name": name, "scopes": scopes}, status=422
            )
        _, key = merchants.create_api_key(conn, merchant_id=who.merchant_id, name=name, scopes=scopes)
        return _keys_page(request, conn, who, new_key=key)

    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(staff_page, request, work, form_csrf=csrf, check_csrf=True)


@router.post("/admin/keys/{key_id}/revoke")
def revoke_key(
    request: Request, key_id: str, csrf_token: Annotated[str, Form(max_length=200)] = ""
) -> Response:
    def work(conn: Connection, who: Staff) -> Response:
        if who.user["role"] != OWNER:
            raise NotFound("only owners manage API keys")
        merchants.revoke_api_key(conn, merchant_id=who.merchant_id, key_id=key_id)
        return RedirectResponse("/admin/keys", status_code=303)

    return staff_page(request, work, form_csrf=csrf_token, check_csrf=True)
