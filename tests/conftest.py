"""Shared fixtures: the same tests run on SQLite and, when PATRON_TEST_POSTGRES_URL is set, on
PostgreSQL. The schema is always built by the Alembic migrations."""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from sqlalchemy import Engine

from patron.api.app import create_app
from patron.config import Settings
from patron.services.merchants import create_merchant
from patron.storage.db import make_engine, migrate

PG_URL = os.environ.get("PATRON_TEST_POSTGRES_URL")

# Timing is not behaviour: a loaded CI machine must not fail a property for being slow.
settings.register_profile("patron", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("patron")

BEAN_REWARDS: dict[str, Any] = {
    "name": "Bean Rewards",
    "currency": "USD",
    "timezone": "UTC",
    "earning_rules": [
        {"id": "base", "type": "spend", "points": 1, "per_amount": 100},
        {"id": "coffee-2x", "type": "multiplier", "categories": ["coffee"], "multiplier": "2"},
    ],
    "tiers": {
        "metric": "qualifying_spend",
        "period": "calendar_year",
        "downgrade": "one_level",
        "levels": [
            {"id": "member", "name": "Member", "threshold": 0},
            {"id": "silver", "name": "Silver", "threshold": 20000},
            {"id": "gold", "name": "Gold", "threshold": 50000, "multiplier": "1.5"},
        ],
    },
    "expiry": {"months": 12},
    "pending_days": 0,
    "rewards": [{"id": "free-coffee", "name": "Free coffee", "type": "free_product", "cost": 100}],
}


def bean_rewards(**changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(BEAN_REWARDS)
    body.update(changes)
    return body


def _backends() -> list[Any]:
    pg = pytest.param(
        "postgresql",
        marks=[
            pytest.mark.postgres,
            pytest.mark.skipif(not PG_URL, reason="PATRON_TEST_POSTGRES_URL is not set"),
        ],
    )
    return ["sqlite", pg]


@pytest.fixture(scope="session", params=_backends())
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('db') / 'patron.db'}"
    assert PG_URL
    return PG_URL


@pytest.fixture(scope="session")
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    migrate(eng)
    yield eng
    eng.dispose()


@pytest.fixture(scope="session")
def app(engine: Engine, db_url: str) -> Any:
    return create_app(Settings(database_url=db_url), engine=engine)


class Api:
    """A client for one merchant: the real app, the merchant's admin key on every request."""

    def __init__(self, client: TestClient, merchant_id: str, key: str) -> None:
        self.client, self.merchant_id, self.key = client, merchant_id, key

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}", **(extra or {})}

    def get(self, path: str, **kw: Any) -> Any:
        return self.client.get(path, headers=self.headers(kw.pop("headers", None)), **kw)

    def post(self, path: str, json: Any = None, **kw: Any) -> Any:
        return self.client.post(path, json=json, headers=self.headers(kw.pop("headers", None)), **kw)

    def put(self, path: str, json: Any = None, **kw: Any) -> Any:
        return self.client.put(path, json=json, headers=self.headers(kw.pop("headers", None)), **kw)

    def patch(self, path: str, json: Any = None, **kw: Any) -> Any:
        return self.client.patch(path, json=json, headers=self.headers(kw.pop("headers", None)), **kw)

    def delete(self, path: str, **kw: Any) -> Any:
        return self.client.delete(path, headers=self.headers(kw.pop("headers", None)), **kw)

    # conveniences for the common story
    def program(self, body: dict[str, Any] | None = None) -> str:
        r = self.post("/v1/programs", body or bean_rewards())
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def member(self, program_id: str, **fields: Any) -> str:
        r = self.post("/v1/members", {"program_id": program_id, **fields})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def event(self, body: dict[str, Any], expect: int = 201) -> dict[str, Any]:
        r = self.post("/v1/events", body)
        assert r.status_code == expect, r.text
        return dict(r.json())

    def points(self, member_id: str, **params: Any) -> dict[str, int]:
        r = self.get(f"/v1/members/{member_id}", params=params)
        assert r.status_code == 200, r.text
        return dict(r.json()["points"])


@pytest.fixture(scope="session")
def client(app: Any) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def api(client: TestClient, engine: Engine) -> Api:
    """A fresh merchant for each test: tests never see each other's data."""
    with engine.begin() as conn:
        merchant, key = create_merchant(conn, name="Test Merchant")
    return Api(client, merchant["id"], key)


@pytest.fixture
def other_api(client: TestClient, engine: Engine) -> Api:
    with engine.begin() as conn:
        merchant, key = create_merchant(conn, name="Other Merchant")
    return Api(client, merchant["id"], key)


SHARED_DATA = Path(__file__).resolve().parent / "data"


def purchase(member_id: str, event_id: str, items: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "id": event_id,
        "type": "purchase",
        "member_id": member_id,
        "occurred_at": extra.pop("occurred_at", "2026-03-01T10:00:00Z"),
        "currency": "USD",
        "items": items,
        **extra,
    }


def dumps(data: Any) -> str:
    return json.dumps(data, sort_keys=True)
