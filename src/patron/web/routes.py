"""All the web pages as one router, and :func:`install` to add them (and their static files) to
an application. Importing this module does not import the API application, so ``create_app`` can
call :func:`install` without an import cycle."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from patron.web import (
    admin,
    admin_cases,
    admin_events,
    admin_programs,
    admin_reports,
    admin_webhooks,
    portal,
    portal_extras,
    pos,
)
from patron.web.common import STATIC

router = APIRouter(include_in_schema=False)
# admin_cases first: its GET /admin/members/{id} (the 360 view with cases and household) answers
router.include_router(admin_cases.router)
router.include_router(admin.router)
router.include_router(admin_programs.router)
router.include_router(admin_events.router)
router.include_router(admin_reports.router)
router.include_router(admin_webhooks.router)
router.include_router(portal.router)
router.include_router(portal_extras.router)
router.include_router(pos.router)


@router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse("/admin", status_code=307)


def install(app: FastAPI) -> None:
    """Add the console (``/admin``), portal (``/portal``), till (``/pos``) and ``/static``."""
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
