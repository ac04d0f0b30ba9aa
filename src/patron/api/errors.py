"""RFC 9457 problem details: one table from error class to HTTP status and ``type``."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from patron.domain import errors as e

log = logging.getLogger("patron.api")
TYPE_BASE = "https://patron.dev/problems/"

#: The one table. Order matters: the first class an error is an instance of wins.
STATUS: list[tuple[type[e.PatronError], int]] = [
    (e.NotFound, 404),
    (e.Unauthorized, 401),
    (e.Forbidden, 403),
    (e.InsufficientPoints, 409),
    (e.UnknownReward, 422),
    (e.DuplicateMember, 409),
    (e.IdempotencyConflict, 409),
    (e.MemberInactive, 409),
    (e.Conflict, 409),
    (e.RefundExceedsPurchase, 422),
    (e.InvalidInput, 422),
    (e.LedgerImbalance, 500),
]

HTTP_CODES = {
    400: ("bad-request", "Bad request"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    413: ("payload-too-large", "Request body too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
}


def problem(status: int, code: str, title: str, detail: str, **extra: Any) -> JSONResponse:
    body = {"type": TYPE_BASE + code, "title": title, "status": status, "detail": detail}
    body.update(jsonable_encoder(extra))
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type="application/problem+json", headers=headers)


def status_of(exc: e.PatronError) -> int:
    return next((s for cls, s in STATUS if isinstance(exc, cls)), 400)


PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "An error, as RFC 9457 problem details. `type` is stable: branch on it.",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "format": "uri", "examples": [TYPE_BASE + "invalid-input"]},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "description": "Per field, for invalid input.",
            "items": {
                "type": "object",
                "properties": {
                    "loc": {"type": "string"},
                    "msg": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
    },
    "additionalProperties": True,
}

_ERRORS = {
    "401": "The API key is missing, unknown or revoked.",
    "403": "The API key's scopes do not allow this.",
    "404": "Not found, or not this merchant's.",
    "409": "A conflict with the current state (see `type`).",
    "422": "Invalid input: the request breaks a rule (see `type`, `detail` and `errors`).",
}


def document_problems(app: FastAPI) -> None:
    """Make the OpenAPI document say what the API sends: every error is
    ``application/problem+json`` (FastAPI would document 422 as its own validation shape)."""
    from fastapi.openapi.utils import get_openapi

    def build() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        components["Problem"] = PROBLEM_SCHEMA
        ref = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
        for path, operations in schema.get("paths", {}).items():
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                codes = ["422"] if path in ("/healthz", "/readyz") else list(_ERRORS)
                for code in codes:
                    if path in ("/healthz", "/readyz") and code == "422" and code not in responses:
                        continue
                    responses[code] = {"description": _ERRORS[code], "content": ref}
        app.openapi_schema = schema
        return schema

    app.openapi = build  # type: ignore[method-assign]


def install(app: FastAPI) -> None:
    @app.exception_handler(e.PatronError)
    async def _patron(_: Request, exc: e.PatronError) -> JSONResponse:
        status = status_of(exc)
        if status >= 500:
            log.error("internal error: %s", exc.detail)
        return problem(status, exc.code, exc.title, exc.detail, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "loc": ".".join(str(p) for p in err.get("loc", ())),
                "msg": err.get("msg"),
                "type": err.get("type"),
            }
            for err in exc.errors()
        ]
        if any(err["type"] == "json_invalid" for err in errors):
            return problem(
                400,
                "malformed-json",
                "Malformed JSON",
                "the request body is not valid JSON",
                errors=errors,
            )
        detail = "; ".join(f"{err['loc']}: {err['msg']}" for err in errors[:5])
        return problem(422, "validation-error", "Invalid request", detail, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code, title = HTTP_CODES.get(exc.status_code, ("http-error", "HTTP error"))
        return problem(exc.status_code, code, title, str(exc.detail))

    @app.exception_handler(DataError)
    async def _data(_: Request, exc: DataError) -> JSONResponse:
        """The database refused a value the request carried (PostgreSQL stores no NUL character
        in text; a number beyond its column): the request's fault, and nothing was written."""
        reason = str(getattr(exc, "orig", exc)).splitlines()[0][:200]
        if "NUL" in reason or "0x00" in reason:
            detail = "text in the request (a path, query or body value) contains a NUL character (\\u0000)"
        else:
            detail = f"a value in the request does not fit: {reason}"
        return problem(422, "invalid-input", "Invalid input", detail)

    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    async def _unavailable(_: Request, exc: Exception) -> JSONResponse:
        """The database could not be reached, or gave up on the transaction (a restart, a lost
        connection, a deadlock still there after the retries): nothing was written, and the same
        request may be sent again (an event id or Idempotency-Key keeps a retry from counting
        twice)."""
        log.warning("database unavailable: %s", type(getattr(exc, "orig", exc)).__name__)
        response = problem(
            503,
            "database-unavailable",
            "Database unavailable",
            "the database could not complete the request; nothing was written: send it again",
        )
        response.headers["Retry-After"] = "1"
        return response

    @app.exception_handler(Exception)
    async def _bug(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return problem(
            500,
            "internal-error",
            "Internal error",
            "an unexpected error occurred; it has been logged",
        )
