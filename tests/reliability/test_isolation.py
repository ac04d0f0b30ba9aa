"""Isolation: one merchant's key never reaches another merchant's data, scopes are enforced on
every operation, login links are single use and short lived, and secrets never reach the logs.

``tests/api/test_tenancy.py`` checks a handful of paths; here every operation of the OpenAPI that
names an object is called with another merchant's real ids (the list must cover the OpenAPI, so
that a new route cannot be forgotten), and every operation is called with keys of each scope.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine

from patron.services import merchants, portal
from tests.conftest import Api, bean_rewards, purchase
from tests.reliability.conftest import PATRON, assert_books_balance, cli_env, patron_serve

COFFEE = [{"id": "l1", "sku": "LATTE", "category": "coffee", "quantity": 1, "unit_price": 500}]


def _soon() -> str:
    return (datetime.now(UTC) + timedelta(days=7)).replace(microsecond=0).isoformat()


class Victim:
    """Merchant B with one of everything the API can name, made through B's own key."""

    def __init__(self, b: Api) -> None:
        self.api = b
        self.program = b.program()
        self.member = b.member(self.program, email="victim@example.com", name="Victor Victim")
        self.passenger = b.member(self.program, email="passenger@example.com", name="Pat Passenger")
        self.event = "b-order-1"
        b.event(purchase(self.member, self.event, COFFEE))
        ok = b.post(f"/v1/members/{self.member}/adjustments", {"points": 2000, "reason": "float"})
        assert ok.status_code == 201, ok.text
        r = b.post(f"/v1/members/{self.member}/redemptions", {"reward_id": "free-coffee"})
        assert r.status_code == 201, r.text
        self.redemption, self.code = r.json()["id"], r.json()["code"]
        r = b.post(
            "/v1/integrations", {"type": "shopify", "program_id": self.program, "secret": "b-secret-1"}
        )
        assert r.status_code == 201, r.text
        self.integration = r.json()["id"]
        r = b.post("/v1/api-keys", {"name": "till", "scopes": ["pos"]})
        assert r.status_code == 201, r.text
        self.key_id, self.till_key = r.json()["id"], r.json()["api_key"]
        body = {"name": "Tasting", "starts_at": _soon(), "place": "Shop", "capacity": 5}
        r = b.post(f"/v1/programs/{self.program}/ticketed-events", body)
        assert r.status_code == 201, r.text
        self.ticketed = r.json()["id"]
        r = b.post(f"/v1/ticketed-events/{self.ticketed}/rsvp", {"member_id": self.member})
        assert r.status_code == 201, r.text
        self.ticket, self.ticket_code = r.json()["id"], r.json()["code"]
        r = b.post(f"/v1/members/{self.passenger}/travel-consents", {"booker_id": self.member})
        assert r.status_code in (200, 201), r.text
        booking = {"route": "JFK-LHR", "cabin": "J", "points_per_passenger": 100, "passengers": [self.member]}
        r = b.post(f"/v1/members/{self.member}/bookings", booking)
        assert r.status_code == 201, r.text
        self.booking = r.json()["id"]
        self.ids = {
            "program_id": self.program,
            "member_id": self.member,
            "passenger_id": self.passenger,
            "booker_id": self.member,
            "referee_id": self.passenger,
            "event_id": self.event,
            "redemption_id": self.redemption,
            "code": self.code,
            "integration_id": self.integration,
            "key_id": self.key_id,
            "ticket_id": self.ticket,
            "booking_id": self.booking,
            "milestone_id": "first-visit",
        }

    def snapshot(self) -> Any:
        b = self.api
        return (
            b.get(f"/v1/members/{self.member}").json(),
            b.get(f"/v1/members/{self.passenger}").json(),
            b.get(f"/v1/redemptions/{self.redemption}").json(),
            b.get(f"/v1/tickets/{self.ticket}").json(),
            b.get(f"/v1/bookings/{self.booking}").json(),
            b.get(f"/v1/programs/{self.program}").json(),
            sorted(k["id"] for k in b.get("/v1/api-keys").json()["data"]),
        )


def _bodies(own_member: str) -> dict[tuple[str, str], Any]:
    """A valid body for every operation that takes one, so that only the ids can be wrong."""
    return {
        ("PUT", "/v1/programs/{program_id}"): bean_rewards(),
        ("PATCH", "/v1/members/{member_id}"): {"name": "Mallory"},
        ("POST", "/v1/members/{member_id}/adjustments"): {"points": 500, "reason": "x"},
        ("POST", "/v1/members/{member_id}/tier"): {"tier_id": "gold", "reason": "x"},
        ("POST", "/v1/programs/{program_id}/tiers/preview"): bean_rewards()["tiers"],
        ("POST", "/v1/members/{member_id}/milestones/{milestone_id}/details"): {"details": {"size": "9"}},
        ("POST", "/v1/members/{member_id}/redemptions"): {"reward_id": "free-coffee"},
        ("POST", "/v1/redemptions/{redemption_id}/fulfilment"): {"status": "shipped"},
        ("POST", "/v1/programs/{program_id}/ticketed-events"): {
            "name": "x",
            "starts_at": _soon(),
            "place": "y",
            "capacity": 5,
        },
        ("POST", "/v1/ticketed-events/{event_id}/rsvp"): {"member_id": own_member},
        ("POST", "/v1/members/{passenger_id}/travel-consents"): {"booker_id": own_member},
        ("POST", "/v1/members/{booker_id}/bookings"): {
            "route": "JFK-LHR",
            "cabin": "J",
            "points_per_passenger": 100,
            "passengers": [own_member],
        },
    }


def _operations(api: Api) -> list[tuple[str, str]]:
    paths = api.client.get("/openapi.json").json()["paths"]
    return [(m.upper(), p) for p, ops in paths.items() for m in ops]


# Path parameters the victim cannot make an object for yet (features still being written): these
# operations are called with made-up values, which must be 404 as well.
PLACEHOLDERS = {
    "household_id": "hh_unknown",
    "case_id": "case_unknown",
    "membership_id": "msh_unknown",
    "endpoint_id": "whe_unknown",
    "year": "2026",
}

# Operations naming an object whose id is not a merchant's: none but the inbound webhooks, which
# carry no key (their signature is their authentication; tests/api/test_webhooks.py).
NOT_MERCHANT_KEYED = {("POST", "/v1/webhooks/{platform}/{integration_id}")}


def test_every_operation_with_another_merchants_ids_is_404_and_changes_nothing(
    api: Api, other_api: Api, engine: Engine, db_url: str
) -> None:
    victim = Victim(other_api)
    own_program = api.program()
    own_member = api.member(own_program, email="mallory@example.com", name="Mallory")
    before = victim.snapshot()
    bodies = _bodies(own_member)
    named = [(m, p) for m, p in _operations(api) if "{" in p and (m, p) not in NOT_MERCHANT_KEYED]
    answers = {}
    for method, path in named:
        filled = re.sub(
            r"\{(\w+)\}", lambda g: victim.ids.get(g.group(1), PLACEHOLDERS.get(g.group(1), "x")), path
        )
        if path == "/v1/ticketed-events/{event_id}" or path.startswith("/v1/ticketed-events/{event_id}/"):
            filled = filled.replace(victim.event, victim.ticketed)
        r = api.client.request(method, filled, json=bodies.get((method, path)), headers=api.headers())
        if r.status_code == 422 and (method, path) not in bodies and method != "GET":
            continue  # no valid body known here: refused before any lookup, so nothing to learn
        answers[f"{method} {path}"] = (r.status_code, r.text[:160])
    wrong = {op: a for op, a in answers.items() if a[0] != 404}
    assert wrong == {}
    assert len(answers) >= len(named) - 25, "give the new operations valid bodies in _bodies()"

    # ids of B's objects inside a body: refused exactly as ids that do not exist (no oracle)
    for path, body, fake in (
        ("/v1/events", purchase(victim.member, "m-1", COFFEE), purchase("mem_fake", "m-1", COFFEE)),
        ("/v1/events/calculate", purchase(victim.member, "m-2", COFFEE), purchase("mem_fake", "m-2", COFFEE)),
        (
            "/v1/members",
            {"program_id": victim.program, "email": "x@example.com"},
            {"program_id": "prg_fake", "email": "x@example.com"},
        ),
        (
            "/v1/integrations",
            {"type": "shopify", "program_id": victim.program, "secret": "s3cret-x"},
            {"type": "shopify", "program_id": "prg_fake", "secret": "s3cret-x"},
        ),
        ("/v1/tickets/check-in", {"code": victim.ticket_code}, {"code": "FAKECODE1234"}),
        (
            f"/v1/members/{own_member}/travel-consents",
            {"booker_id": victim.member},
            {"booker_id": "mem_fake"},
        ),
        (
            f"/v1/members/{own_member}/bookings",
            {"route": "JFK-LHR", "cabin": "J", "points_per_passenger": 100, "passengers": [victim.member]},
            {"route": "JFK-LHR", "cabin": "J", "points_per_passenger": 100, "passengers": ["mem_fake"]},
        ),
    ):
        real, made_up = api.post(path, body), api.post(path, fake)
        assert real.status_code in (404, 422), (path, real.status_code, real.text)
        assert (real.status_code, real.json()["type"]) == (made_up.status_code, made_up.json()["type"]), path
    for query in (
        {"email": "victim@example.com"},
        {"external_id": victim.member},
        {"card_number": other_api.get(f"/v1/members/{victim.member}").json()["card_number"]},
    ):
        assert api.get("/v1/members", params=query).json()["data"] == [], query
    assert victim.snapshot() == before
    assert (
        other_api.client.get(
            "/v1/merchant", headers={"Authorization": f"Bearer {victim.till_key}"}
        ).status_code
        == 200
    )
    assert_books_balance(engine, db_url, other_api.merchant_id)
    assert_books_balance(engine, db_url, api.merchant_id)


def test_the_list_of_other_merchant_ids_covers_every_path_parameter(api: Api) -> None:
    """If a route gains a new kind of id, the 404 test above must learn to fill it."""
    known = {
        "program_id",
        "member_id",
        "passenger_id",
        "booker_id",
        "referee_id",
        "event_id",
        "redemption_id",
        "code",
        "integration_id",
        "key_id",
        "ticket_id",
        "booking_id",
        "milestone_id",
        "platform",
        *PLACEHOLDERS,
    }
    used = {name for _, p in _operations(api) for name in re.findall(r"\{(\w+)\}", p)}
    assert used <= known, used - known


# ---------------------------------------------------------------- scopes

# Operations only an admin key may call, and operations that change nothing (a read key may).
ADMIN_ONLY = {
    ("POST", "/v1/programs"),
    ("PUT", "/v1/programs/{program_id}"),
    ("POST", "/v1/members/{member_id}/erase"),
    ("GET", "/v1/members/{member_id}/export"),
    ("POST", "/v1/members/{member_id}/tier"),
    ("DELETE", "/v1/members/{member_id}/tier"),
    ("GET", "/v1/programs/{program_id}/referrals/review"),
    ("POST", "/v1/referrals/{referee_id}/approve"),
    ("POST", "/v1/referrals/{referee_id}/reject"),
    ("POST", "/v1/programs/{program_id}/ticketed-events"),
    ("POST", "/v1/integrations"),
    ("GET", "/v1/programs/{program_id}/exports/members.csv"),
    ("GET", "/v1/programs/{program_id}/exports/ledger.csv"),
    ("GET", "/v1/programs/{program_id}/exports/events.csv"),
    ("GET", "/v1/api-keys"),
    ("POST", "/v1/api-keys"),
    ("DELETE", "/v1/api-keys/{key_id}"),
    ("POST", "/v1/locations"),
    ("GET", "/v1/verify"),
    ("GET", "/v1/webhook-endpoints"),
    ("GET", "/v1/webhook-endpoints/{endpoint_id}"),
    ("GET", "/v1/webhook-endpoints/{endpoint_id}/deliveries"),
}
# Till operations: a pos (or admin) key, not a read or write one.
POS_ONLY = {
    ("GET", "/v1/codes/{code}"),
    ("POST", "/v1/codes/{code}/redeem"),
    ("POST", "/v1/tickets/check-in"),
}
WRITES_NOTHING = {("POST", "/v1/events/calculate"), ("POST", "/v1/programs/{program_id}/tiers/preview")}
UNAUTHENTICATED = {
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("POST", "/v1/webhooks/{platform}/{integration_id}"),
}


def _scoped(api: Api, scope: str) -> dict[str, str]:
    r = api.post("/v1/api-keys", {"name": scope, "scopes": [scope]})
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['api_key']}"}


@pytest.mark.parametrize("scope", ["read", "pos", "write"])
def test_every_operation_enforces_its_scope(api: Api, engine: Engine, db_url: str, scope: str) -> None:
    """A read key changes nothing; pos and write keys do nothing that is an admin's. Ids are
    unknown ones: the scope is checked before anything is looked up, so 403 comes first."""
    headers = _scoped(api, scope)
    bodies = _bodies("mem_unknown")
    bodies.update(
        {
            ("POST", "/v1/programs"): bean_rewards(),
            ("POST", "/v1/members"): {"program_id": "prg_unknown", "email": "s@example.com"},
            ("POST", "/v1/events"): purchase("mem_unknown", "s-1", COFFEE),
            ("POST", "/v1/events/calculate"): purchase("mem_unknown", "s-1", COFFEE),
            ("POST", "/v1/tickets/check-in"): {"code": "NOPE"},
            ("POST", "/v1/integrations"): {
                "type": "shopify",
                "program_id": "prg_unknown",
                "secret": "s3cret-x",
            },
            ("POST", "/v1/api-keys"): {"name": "x", "scopes": ["read"]},
            ("POST", "/v1/locations"): {"id": "store-9", "name": "Store 9"},
        }
    )
    refused, allowed, unchecked = {}, {}, set()
    for method, path in _operations(api):
        if (method, path) in UNAUTHENTICATED:
            continue
        filled = re.sub(r"\{(\w+)\}", lambda g: f"unknown_{g.group(1)}", path)
        r = api.client.request(method, filled, json=bodies.get((method, path)), headers=headers)
        if r.status_code == 422 and method != "GET" and (method, path) not in bodies:
            unchecked.add((method, path))  # no valid body known here: refused before the scope check
            continue
        (refused if r.status_code == 403 else allowed)[(method, path)] = r.status_code
        if r.status_code == 403:
            assert r.json()["type"].endswith("/forbidden"), r.text
    must_refuse = set(ADMIN_ONLY) | (POS_ONLY if scope != "pos" else set())
    if scope == "read":
        must_refuse |= {(m, p) for m, p in _operations(api) if m != "GET"} - WRITES_NOTHING - UNAUTHENTICATED
    must_refuse -= unchecked
    assert len(unchecked) <= 25, sorted(unchecked)  # a few new operations at most; give them bodies
    assert must_refuse - set(refused) == set(), "allowed beyond the key's scope"
    gets = {(m, p) for m, p in _operations(api) if m == "GET"} - ADMIN_ONLY - POS_ONLY - UNAUTHENTICATED
    assert gets & set(refused) == set(), "every key may read"
    assert allowed.keys().isdisjoint(must_refuse)
    assert_books_balance(engine, db_url, api.merchant_id)


# ---------------------------------------------------------------- login links


def test_a_login_link_is_single_use_even_when_opened_ten_times_at_once(api: Api, engine: Engine) -> None:
    program = api.program()
    member = api.member(program, email="link@example.com")
    with engine.begin() as conn:
        link = portal.create_login_link(
            conn, merchant_id=api.merchant_id, member_id=member, base_url="http://x"
        )
    token = link["url"].rsplit("/", 1)[1]
    assert len(token) >= 32  # not guessable
    lifetime = link["expires_at"] - datetime.now(UTC)
    assert timedelta(0) < lifetime <= timedelta(hours=24), lifetime  # short lived

    def use(_: int) -> str:
        try:
            with engine.begin() as conn:
                portal.consume_login_link(conn, token=token)
            return "signed in"
        except portal.LinkInvalid as exc:
            return str(exc.extra.get("reason"))

    with ThreadPoolExecutor(max_workers=10) as pool:
        outcomes = list(pool.map(use, range(10)))
    assert outcomes.count("signed in") == 1, outcomes
    assert set(outcomes) == {"signed in", "used"}


def test_a_login_link_is_refused_once_it_has_expired(
    api: Api, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    program = api.program()
    member = api.member(program, email="late@example.com")
    with engine.begin() as conn:
        link = portal.create_login_link(
            conn, merchant_id=api.merchant_id, member_id=member, base_url="http://x"
        )
    token = link["url"].rsplit("/", 1)[1]
    later = link["expires_at"] + timedelta(seconds=1)
    monkeypatch.setattr(portal, "utcnow", lambda: later)
    with pytest.raises(portal.LinkInvalid) as refused, engine.begin() as conn:
        portal.consume_login_link(conn, token=token)
    assert refused.value.extra.get("reason") == "expired"


# ---------------------------------------------------------------- secrets and logs


@pytest.fixture
def served(db_url: str, engine: Engine, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real ``patron serve`` whose whole output goes to a log file."""
    log = tmp_path / "serve.log"
    with patron_serve(db_url, log) as base:
        yield base, log


def test_secrets_never_reach_the_logs(
    served: tuple[str, Path], engine: Engine, db_url: str, tmp_path: Path
) -> None:
    base, log = served
    with engine.begin() as conn:
        merchant, key = merchants.create_merchant(conn, name="Quiet Co")
    m = merchant["id"]
    secrets: dict[str, str] = {"admin api key": key}
    auth = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=base, headers=auth, timeout=30) as http:
        program = http.post("/v1/programs", json=bean_rewards()).json()["id"]
        member = http.post("/v1/members", json={"program_id": program, "email": "q@example.com"}).json()["id"]
        made = http.post("/v1/api-keys", json={"name": "till", "scopes": ["pos"]})
        secrets["created api key"] = made.json()["api_key"]
        secrets["integration secret"] = "shh-integration-secret-42"
        hook = http.post(
            "/v1/integrations",
            json={"type": "shopify", "program_id": program, "secret": secrets["integration secret"]},
        ).json()
        # failures are where secrets leak: a wrong key, a bad signature, a bad body, a 404
        http.get("/v1/merchant", headers={"Authorization": "Bearer ptr_wrong_key_0123456789abcdef"})
        http.post(
            httpx.URL(hook["webhook_url"]).path,
            content=b"{}",
            headers={
                "X-Shopify-Topic": "orders/paid",
                "X-Shopify-Hmac-Sha256": "bad",
                "X-Shopify-Webhook-Id": "1",
            },
        )
        http.post("/v1/events", json={"id": "x", "type": "purchase", "member_id": member, "items": "bad"})
        http.get("/v1/members/mem_nope")
        http.post(f"/v1/members/{member}/adjustments", json={"points": 10, "reason": "x"})
        with engine.begin() as conn:
            link = portal.create_login_link(conn, merchant_id=m, member_id=member, base_url=base)
        unused = link["url"].rsplit("/", 1)[1]
        secrets["login link token (never opened)"] = unused
        with engine.begin() as conn:
            opened = portal.create_login_link(conn, merchant_id=m, member_id=member, base_url=base)
        assert httpx.get(opened["url"], follow_redirects=False, timeout=30).status_code == 303
        # the access log shows the path of an opened link: harmless only because it is used up
        assert httpx.get(opened["url"], follow_redirects=False, timeout=30).status_code == 410
    password = "correct-horse-battery-staple-9"
    secrets["user password"] = password
    created = subprocess.run(
        [
            PATRON,
            "users",
            "create",
            f"owner-{m.lower()}@quiet.example",
            "--password",
            password,
            "--merchant",
            m,
        ],
        env=cli_env(db_url),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert created.returncode == 0, created.stderr
    time.sleep(0.5)  # let the server flush its log
    text = log.read_text(errors="replace") + created.stdout + created.stderr
    leaked = {what: value for what, value in secrets.items() if value in text}
    assert leaked == {}, [line for line in text.splitlines() if any(v in line for v in leaked.values())]
    assert_books_balance(engine, db_url, m)


def test_secrets_never_reach_the_logs_of_the_app_itself(
    api: Api, caplog: pytest.LogCaptureFixture, engine: Engine
) -> None:
    """In process, every logger at DEBUG: the key, an integration secret and a bad key's text."""
    caplog.set_level("DEBUG")
    program = api.program()
    secret = "inproc-integration-secret-7"
    api.post("/v1/integrations", {"type": "shopify", "program_id": program, "secret": secret})
    api.client.get("/v1/merchant", headers={"Authorization": "Bearer ptr_also_wrong_0123456789"})
    api.post("/v1/events", {"id": "x", "type": "purchase", "member_id": "mem_x", "items": "bad"})
    text = caplog.text
    for value in (api.key, secret, "ptr_also_wrong_0123456789"):
        assert value not in text
