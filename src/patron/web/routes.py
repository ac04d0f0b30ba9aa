"""All the web pages as one router, and :func:`install` to add them (and their static files) to
an application. Importing this module does not import the API application, so ``create_app`` can
call :func:`install` without an import cycle."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from patron.web import admin, portal, pos
from patron.web.common import STATIC

router = APIRouter(include_in_schema=False)
router.include_router(admin.router)
router.include_router(portal.router)
router.include_router(pos.router)


@router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse("/admin", status_code=307)


def install(app: FastAPI) -> None:
    """Add the console (``/admin``), portal (``/portal``), till (``/pos``) and ``/static``."""
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
