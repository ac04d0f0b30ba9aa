"""The API application with the web pages: ``uvicorn --factory patron.web.app:create_web_app``.
``create_app`` installs the console, portal and till itself, so this factory is the same app."""

from __future__ import annotations

from fastapi import FastAPI
from sqlalchemy import Engine

from patron.api.app import create_app
from patron.config import Settings


def create_web_app(settings: Settings | None = None, engine: Engine | None = None) -> FastAPI:
    return create_app(settings, engine=engine)
