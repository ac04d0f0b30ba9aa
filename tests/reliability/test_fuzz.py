"""The API fuzzed from its own OpenAPI with schemathesis: for every operation, requests generated
from the schema (with a valid API key, and real ids of the merchant's own objects in the path
half of the time) never get a 5xx, and every documented response matches its schema.

One pytest test per operation, so that an operation that genuinely fails can be marked
``xfail(strict=True)`` on its own. ``PATRON_FUZZ_EXAMPLES`` raises the number of cases per
operation (default 12).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance
from sqlalchemy import Engine

from patron.api.app import create_app
from patron.config import Settings
from patron.services import events, integrations, ledger, redemptions
from patron.storage.db import make_engine
from tests.conftest import purchase
from tests.reliability.conftest import assert_books_balance, make_shop

EXAMPLES = int(os.environ.get("PATRON_FUZZ_EXAMPLES", "12"))
LINE = [{"id": "l1", "sku": "MUG", "category": "merch", "quantity": 2, "unit_price": 5000}]

# Operations that genuinely 5xx or break their schema: (METHOD, path) -> what is wrong.
KNOWN_BUGS: dict[tuple[str, str], str] = {}


def _operations() -> list[tuple[str, str]]:
    app = create_app(Settings(database_url="sqlite://"), engine=make_engine("sqlite://"))
    paths = app.openapi()["paths"]
    return [(method.upper(), path) for path, ops in paths.items() for method in ops]


def _params() -> list[Any]:
    return [
        pytest.param(
            method,
            path,
            id=f"{method} {path}",
            marks=[pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[(method, path)])]
            if (method, path) in KNOWN_BUGS
            else [],
        )
        for method, path in _operations()
    ]


@dataclass
class World:
    schema: Any
    headers: dict[str, str]
    ids: dict[str, str] = field(default_factory=dict)
    merchant_id: str = ""


@pytest.fixture(scope="module")
def world(engine: Engine, db_url: str) -> Iterator[World]:
    """One merchant with a program, members, events, a redemption and an integration, whose ids
    replace generated path parameters half of the time."""
    shop = make_shop(engine, members_count=2, name="Fuzzed Co")
    m, member, other = shop.merchant_id, shop.member_ids[0], shop.member_ids[1]
    with engine.begin() as conn:
        events.record_event(conn, merchant_id=m, body=purchase(member, "fz-1", LINE))
        ledger.adjust(conn, merchant_id=m, member_id=member, points=500, reason="fuzz")
        rdm = redemptions.reserve(conn, merchant_id=m, member_id=member, reward_id="free-coffee")
        integ = integrations.create_integration(
            conn,
            merchant_id=m,
            data=integrations.IntegrationCreate(
                type="shopify", program_id=shop.program_id, secret="fuzz-secret-000"
            ),
            public_url="http://testserver",
        )
    app = create_app(Settings(database_url=db_url), engine=engine)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    ids = {
        "member_id": member,
        "passenger_id": member,
        "booker_id": other,
        "referee_id": other,
        "program_id": shop.program_id,
        "event_id": "fz-1",
        "redemption_id": rdm["id"],
        "code": rdm["code"],
        "integration_id": integ["id"],
        "platform": "shopify",
    }
    yield World(schema, {"Authorization": f"Bearer {shop.key}"}, ids, m)
    assert_books_balance(engine, db_url, m)


@pytest.mark.parametrize(("method", "path"), _params())
def test_operation_never_5xx_and_answers_match_their_schema(world: World, method: str, path: str) -> None:
    operation = world.schema[path][method]

    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        deadline=None,
        derandomize=True,
        database=None,
    )
    def check(case: Any) -> None:
        for name, value in list((case.path_parameters or {}).items()):
            if name in world.ids and len(str(value)) % 2 == 0:
                case.path_parameters[name] = world.ids[name]
        response = case.call(headers=world.headers)
        case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])
        _problem_details(response, case)

    check()


def _problem_details(response: Any, case: Any) -> None:
    """The contract's error shape: every 4xx is ``application/problem+json`` with ``type``,
    ``title``, ``status`` (the response's) and ``detail``."""
    if not 400 <= response.status_code < 500:
        return
    where = f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"
    assert response.headers.get("content-type", [""])[0].startswith("application/problem+json"), where
    body = response.json()
    assert {"type", "title", "status", "detail"} <= set(body), where
    assert body["status"] == response.status_code, where


def test_the_documented_validation_error_is_what_the_api_sends(world: World) -> None:
    case = world.schema["/v1/members"]["POST"].Case(body={"program_id": 5})
    response = case.call(headers=world.headers)
    assert response.status_code == 422
    case.validate_response(response, checks=[content_type_conformance])
