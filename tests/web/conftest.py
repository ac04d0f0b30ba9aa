"""Fixtures for the web pages: the API app with the pages installed, a shop with a program,
members and console users, and helpers to sign in and read forms."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from patron.config import Settings
from patron.services import users
from patron.services.clock import utcnow
from patron.services.events import record_event
from patron.services.members import MemberCreate, enrol
from patron.services.merchants import create_merchant
from patron.services.programs import create_program
from patron.services.users import create_user
from patron.web import admin
from patron.web.app import create_web_app
from tests.conftest import bean_rewards, purchase

PASSWORD = "correct horse battery"


@pytest.fixture(scope="session")
def web_app(engine: Engine, db_url: str) -> Any:
    return create_web_app(Settings(database_url=db_url, public_url="http://testserver"), engine=engine)


@pytest.fixture
def browser_client(web_app: Any) -> Iterator[TestClient]:
    """A client with its own cookie jar, like one browser."""
    with TestClient(web_app, raise_server_exceptions=True, follow_redirects=False) as c:
        yield c


CHEAP_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


@pytest.fixture(autouse=True)
def _quick(monkeypatch: pytest.MonkeyPatch) -> None:
    """No deliberate delay after a failed sign-in, and cheap Argon2 parameters: the production
    cost (about a second per hash on a small CI machine) is the point in production, not here."""
    monkeypatch.setattr(admin, "FAILURE_DELAY", 0.0)
    monkeypatch.setattr(users, "_hasher", lambda: CHEAP_HASHER)


_n = [0]


def unique(prefix: str) -> str:
    _n[0] += 1
    return f"{prefix}{_n[0]}-{id(_n)}"


@pytest.fixture
def shop(engine: Engine) -> dict[str, Any]:
    return build_shop(engine)


def build_shop(engine: Engine) -> dict[str, Any]:
    """A merchant with the Bean Rewards program, two members (one with 300 points), an owner and a
    till user."""
    tag = unique("s")
    with engine.begin() as conn:
        merchant, _ = create_merchant(conn, name="Web Shop")
        mid = merchant["id"]
        program = create_program(
            conn,
            merchant_id=mid,
            body=bean_rewards(referrals={"referrer_points": 500, "referee_points": 250}),
        )
        ann = enrol(
            conn,
            merchant_id=mid,
            data=MemberCreate(
                program_id=program["id"], name="Ann Lee", email=f"ann-{tag}@example.com", phone="+14155550123"
            ),
        )
        bob = enrol(
            conn,
            merchant_id=mid,
            data=MemberCreate(program_id=program["id"], name="Bob Stone", email=f"bob-{tag}@example.com"),
        )
        record_event(
            conn,
            merchant_id=mid,
            body=purchase(
                ann["id"],
                f"order-{tag}",
                [{"id": "l1", "sku": "BEANS", "category": "beans", "quantity": 2, "unit_price": 15000}],
                location_id="downtown",
                occurred_at=(utcnow() - timedelta(hours=1)).isoformat(),
            ),
        )
        owner = create_user(conn, merchant_id=mid, email=f"owner-{tag}@example.com", password=PASSWORD)
        staff = create_user(
            conn, merchant_id=mid, email=f"till-{tag}@example.com", password=PASSWORD, role="staff"
        )
    return {
        "merchant_id": mid,
        "program_id": program["id"],
        "ann": ann,
        "bob": bob,
        "owner": owner["email"],
        "staff": staff["email"],
    }


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "no CSRF token in the page"
    return found.group(1)


def sign_in(client: TestClient, email: str, password: str = PASSWORD, next_url: str = "") -> Any:
    page = client.get("/admin/login")
    assert page.status_code == 200
    return client.post(
        "/admin/login",
        data={"email": email, "password": password, "csrf_token": csrf_of(page.text), "next": next_url},
    )
