"""Settings, read from the environment (``PATRON_*``). Nothing happens at import."""

from __future__ import annotations

from functools import lru_cache

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PATRON_", extra="ignore")

    database_url: str = "sqlite:///./patron.db"
    max_body_bytes: int = 1_048_576
    public_url: str = "http://127.0.0.1:8000"
    #: days business events and delivered webhooks are kept (the prune-outbox job); 0: for ever
    outbox_retention_days: int = 90
    #: single purchases from concurrent requests applied together (``api/batching.py``)
    event_batching: bool = True


@lru_cache
def get_settings() -> Settings:
    return Settings()
