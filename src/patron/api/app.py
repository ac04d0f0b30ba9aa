"""The FastAPI application factory."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy import Engine, text
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from patron import __version__
from patron.api import errors
from patron.api.batching import EventBatcher
from patron.api.routes import (
    analytics,
    bookings,
    cases,
    events,
    exports,
    households,
    insights,
    integrations,
    members,
    memberships,
    merchants,
    milestones,
    preferences,
    programs,
    redemptions,
    referrals,
    surveys,
    tickets,
    tiers,
    webhook_endpoints,
)
from patron.config import Settings, get_settings
from patron.storage.db import make_engine, migrate

DESCRIPTION = """
Patron's REST API. Authenticate with `Authorization: Bearer <api_key>`. Errors are
`application/problem+json` (RFC 9457) with a stable `type`. Money is integer minor units, points
are integers, times are RFC 3339 with an offset. Every POST accepts an `Idempotency-Key` header:
a replay returns the stored response; the same key with a different body is 409.
"""


class BodyLimit:
    """Refuse request bodies larger than ``limit`` bytes with 413, before the app reads them."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await _send_413(send, self.limit)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await _send_413(send, self.limit)


class _TooLarge(Exception):
    pass


async def _send_413(send: Send, limit: int) -> None:
    response = errors.problem(
        413, "payload-too-large", "Request body too large", f"the limit is {limit} bytes"
    )
    await send({"type": "http.response.start", "status": 413, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})


def serve_app() -> FastAPI:
    """The app as ``patron serve`` runs it in each worker: :func:`create_app`, then everything
    made so far (modules, routes, schemas) moved out of the garbage collector's way
    (``gc.freeze``), so that its full collections scan only what requests make and pause the
    worker for less; and the youngest generation collected every 20,000 allocations rather than
    700 (a request's objects are freed by reference counting; cycles are rare)."""
    import gc

    app = create_app()
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 50)
    return app


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> FastAPI:
    settings = settings or get_settings()
    if engine is None:
        engine = make_engine(settings.database_url)
        migrate(engine)
    app = FastAPI(
        title="Patron",
        version=__version__,
        description=DESCRIPTION,
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.engine = engine
    app.state.settings = settings
    app.state.batcher = EventBatcher(engine) if settings.event_batching else None
    errors.install(app)
    errors.document_problems(app)
    modules = (
        programs,
        members,
        tiers,
        milestones,
        events,
        redemptions,
        referrals,
        tickets,
        preferences,
        bookings,
        households,
        integrations,
        analytics,
        insights,
        exports,
        merchants,
        webhook_endpoints,
        surveys,
        cases,
        memberships,
    )
    for module in modules:
        app.include_router(module.router, prefix="/v1")
    app.include_router(preferences.public_router)  # /unsubscribe/{token}: the link in every email

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, Any]:
        """Liveness: the process answers."""
        return {"status": "ok", "version": __version__}

    @app.get("/readyz", tags=["ops"])
    def readyz() -> JSONResponse:
        """Readiness: the database answers."""
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:
            return JSONResponse({"status": "unavailable", "detail": str(exc)[:200]}, status_code=503)
        return JSONResponse({"status": "ok"})

    from patron.web.routes import install as install_web

    install_web(app)  # /admin, /portal, /pos and their static files
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    return app
