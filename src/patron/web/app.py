"""The API application with the web pages installed: ``uvicorn --factory
patron.web.app:create_web_app``. Once ``create_app`` calls ``patron.web.routes.install`` itself,
this factory is the same as ``create_app``."""

from __future__ import annotations

from fastapi import FastAPI
from sqlalchemy import Engine

from patron.api.app import create_app
from patron.config import Settings
from patron.web.routes import install


def create_web_app(settings: Settings | None = None, engine: Engine | None = None) -> FastAPI:
    app = create_app(settings, engine=engine)
    if not any(getattr(r, "path", None) == "/admin" for r in app.routes):  # not installed by create_app yet
        install(app)
    return app
