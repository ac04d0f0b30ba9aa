"""Races: many writers at the same instant, each on its own connection, released together by a
barrier. Nothing is spent twice, nothing granted is lost, nothing is applied twice.

* 50 concurrent reservations against a balance that pays for exactly 10, then the 10 redeemed and
  cancelled at once (one of each pair wins): 3 rounds on every backend, 100 rounds on PostgreSQL
  (``slow``; the redeem/cancel race in every tenth round). The 20-thread test in
  ``tests/integration/test_concurrency.py`` is the small version of the first half.
* A purchase and its refunds sent at the same instant: a refund that arrives first is refused
  (404) and succeeds when redelivered; in the end exactly what the purchase earned is taken back.
* The same webhook delivery sent 20 times at once, and the same order under other delivery ids:
  one credit; then its refund delivered 20 times at once: one reversal.
* One job started four times at once, for each job: its effects happen once.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import OperationalError

from patron.api.app import create_app
from patron.config import Settings
from patron.domain.errors import Conflict, InsufficientPoints, NotFound, PatronError
from patron.services import events, ledger, members, redemptions
from patron.services.jobs import JobResult, run_job
from patron.services.members import MemberCreate
from patron.storage import tables
from patron.storage.db import make_engine
from tests.api.test_webhooks import b64_hmac, refund, shopify_order
from tests.conftest import Api, purchase
from tests.reliability.conftest import assert_books_balance, make_shop

T = TypeVar("T")
WRITERS = 50
WINNERS = 10
COST = 100


@pytest.fixture
def wide_engine(db_url: str, engine: Engine) -> Iterator[Engine]:
    """An engine with a connection for each of the 50 writers (the schema is already migrated),
    closed after the test: PostgreSQL's connection slots are shared with everything else."""
    eng = make_engine(db_url, pool_size=WRITERS, max_overflow=2)
    _open_all(eng, WRITERS)
    yield eng
    eng.dispose()


def _open_all(eng: Engine, n: int, patience: float = 120.0) -> None:
    """Open the pool's ``n`` connections before the race, waiting while the server's connection
    slots are taken by other work: the race is about row locks, not about connection slots."""
    held: list[Any] = []
    deadline = time.monotonic() + patience
    try:
        while len(held) < n:
            try:
                held.append(eng.connect())
            except OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    finally:
        for conn in held:
            conn.close()  # back to the pool, still open


def at_once(n: int, work: Callable[[int], T]) -> list[T | Exception]:
    """Run ``work(0..n-1)`` on ``n`` threads released together; an exception is returned, not raised."""
    barrier = threading.Barrier(n, timeout=60)

    def one(i: int) -> T | Exception:
        barrier.wait()
        try:
            return work(i)
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(one, range(n)))


def kinds(results: list[Any]) -> Counter[str]:
    return Counter("ok" if not isinstance(r, Exception) else type(r).__name__ for r in results)


# ---------------------------------------------------------------- redemptions


def _redemption_rounds(engine: Engine, db_url: str, rounds: int, settle_every: int = 1) -> None:
    shop = make_shop(engine, name="Fifty Tills", rewards=[{"id": "coffee", "name": "Coffee", "cost": COST}])
    m = shop.merchant_id
    for round_ in range(rounds):
        with engine.begin() as conn:
            member = members.enrol(
                conn, merchant_id=m, data=MemberCreate(program_id=shop.program_id, external_id=f"r{round_}")
            )["id"]
            ledger.adjust(conn, merchant_id=m, member_id=member, points=WINNERS * COST, reason="float")

        def reserve(_: int, member: str = member) -> dict[str, Any]:
            with engine.begin() as conn:
                return redemptions.reserve(conn, merchant_id=m, member_id=member, reward_id="coffee")

        results = at_once(WRITERS, reserve)
        won = [r for r in results if isinstance(r, dict)]
        assert kinds(results) == {"ok": WINNERS, "InsufficientPoints": WRITERS - WINNERS}, (
            round_,
            [r for r in results if isinstance(r, Exception) and not isinstance(r, InsufficientPoints)][:3],
        )
        with engine.begin() as conn:
            b = ledger.balances(conn, merchant_id=m, member_id=member, as_of=None)
            assert (b.available, b.reserved) == (0, WINNERS * COST), round_
            assert len(redemptions.of_member(conn, merchant_id=m, member_id=member)) == WINNERS

        if round_ % settle_every:
            continue

        # each reservation redeemed and cancelled at the same instant: exactly one of each pair wins
        def settle(i: int, won: list[dict[str, Any]] = won) -> str:
            target = won[i // 2]["id"]
            with engine.begin() as conn:
                if i % 2:
                    return str(redemptions.cancel(conn, merchant_id=m, redemption_id=target)["status"])
                return str(redemptions.redeem(conn, merchant_id=m, redemption_id=target)["status"])

        settled = at_once(2 * WINNERS, settle)
        assert all(isinstance(s, str | Conflict) for s in settled), settled
        for i in range(WINNERS):
            assert [isinstance(s, str) for s in settled[2 * i : 2 * i + 2]].count(True) == 1, settled
        redeemed = settled.count("redeemed")
        with engine.begin() as conn:
            b = ledger.balances(conn, merchant_id=m, member_id=member, as_of=None)
            assert (b.available, b.reserved, b.redeemed) == (
                (WINNERS - redeemed) * COST,
                0,
                redeemed * COST,
            ), round_
    with engine.begin() as conn:
        assert ledger.verify(conn, merchant_id=m) == []
    assert_books_balance(engine, db_url, m)


@pytest.mark.exclusive  # 50 connections: run alone (make test), never beside other tests
def test_fifty_concurrent_redemptions_with_points_for_ten(wide_engine: Engine, db_url: str) -> None:
    _redemption_rounds(wide_engine, db_url, rounds=3)


@pytest.mark.slow
@pytest.mark.exclusive
def test_a_hundred_rounds_of_fifty_concurrent_redemptions_on_postgresql(
    wide_engine: Engine, db_url: str
) -> None:
    if wide_engine.dialect.name != "postgresql":
        pytest.skip("the long race is for PostgreSQL's row locks; SQLite has one writer")
    _redemption_rounds(wide_engine, db_url, rounds=100, settle_every=10)


# ---------------------------------------------------------------- earning and refunding at once


def test_an_order_and_its_refunds_sent_at_once_take_back_exactly_what_it_earned(
    engine: Engine, db_url: str
) -> None:
    shop = make_shop(engine, members_count=1, name="Returns Desk")
    m, member = shop.merchant_id, shop.member_ids[0]
    line = [{"id": "l1", "sku": "MUG", "category": "merch", "quantity": 3, "unit_price": 1000}]
    earned_total = 0
    for n in range(8):
        order = f"o-{n}"
        bodies = [purchase(member, order, line)] + [
            {
                "id": f"{order}-r{k}",
                "type": "refund",
                "member_id": member,
                "refers_to": order,
                "occurred_at": "2026-03-02T10:00:00Z",
                "items": [{"id": "l1", "quantity": 1}],
            }
            for k in range(4)  # one refund too many: only 3 units were bought
        ]

        def send(i: int, bodies: list[dict[str, Any]] = bodies) -> dict[str, Any]:
            with engine.begin() as conn:
                return events.record_event(conn, merchant_id=m, body=bodies[i])[0]

        results = at_once(len(bodies), send)
        assert isinstance(results[0], dict) and results[0]["points"] == 30, results[0]
        for r in results[1:]:
            # before the order: not found; after the third unit: nothing left to return
            assert isinstance(r, dict | NotFound | PatronError), r
        # the platform redelivers whatever was refused
        for i, r in enumerate(results[1:], start=1):
            if isinstance(r, NotFound):
                try:
                    results[i] = send(i)
                except PatronError as exc:
                    results[i] = exc
        taken = [-r["points"] for r in results[1:] if isinstance(r, dict)]
        assert sorted(taken) == [10, 10, 10], results
        earned_total += 30
    with engine.begin() as conn:
        b = ledger.balances(conn, merchant_id=m, member_id=member, as_of=None)
        assert (b.available, b.debt, b.lifetime_earned) == (0, 0, 0)
        refunds = conn.execute(
            select(func.count())
            .select_from(tables.events)
            .where(tables.events.c.merchant_id == m, tables.events.c.type == "refund")
        ).scalar_one()
        assert refunds == 3 * 8
    assert earned_total == 240
    assert_books_balance(engine, db_url, m)


# ---------------------------------------------------------------- webhooks


@pytest.fixture(scope="module")
def hooks(engine: Engine, db_url: str) -> Iterator[TestClient]:
    app = create_app(Settings(database_url=db_url, public_url="https://loyalty.example.com"), engine=engine)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def test_the_same_webhook_delivered_twenty_times_at_once_credits_and_refunds_once(
    hooks: TestClient, engine: Engine, db_url: str
) -> None:
    shop = make_shop(engine, members_count=0, name="Webhook Storm")
    api = Api(hooks, shop.merchant_id, shop.key)
    secret = "storm-secret-0001"
    made = api.post("/v1/integrations", {"type": "shopify", "program_id": shop.program_id, "secret": secret})
    assert made.status_code == 201, made.text
    path = urlsplit(made.json()["webhook_url"]).path

    def deliver(topic: str, payload: dict[str, Any], webhook_id: str) -> Any:
        body = api_json(payload)
        return hooks.post(
            path,
            content=body,
            headers={
                "Content-Type": "application/json",
                "X-Shopify-Topic": topic,
                "X-Shopify-Hmac-Sha256": b64_hmac(secret, body),
                "X-Shopify-Webhook-Id": webhook_id,
            },
        )

    order = shopify_order(9101, [(91, "12.00", 2), (92, "5.00", 1)], email="storm@example.com")
    ids = ["same"] * 20 + [f"other-{n}" for n in range(5)]
    answers = at_once(len(ids), lambda i: deliver("orders/paid", order, ids[i]))
    assert all(not isinstance(a, Exception) and a.status_code == 200 for a in answers), [
        getattr(a, "text", a) for a in answers
    ]
    found = api.get("/v1/members", params={"email": "storm@example.com"}).json()["data"]
    assert len(found) == 1, found
    member = found[0]["id"]
    assert api.points(member)["available"] == 29

    back = refund(9201, 9101, [(91, 1)])
    answers = at_once(20, lambda i: deliver("refunds/create", back, "refund-same"))
    assert all(not isinstance(a, Exception) and a.status_code == 200 for a in answers), [
        getattr(a, "text", a) for a in answers
    ]
    points = api.points(member)
    assert (points["available"], points["debt"]) == (17, 0)
    deliveries = api.get(f"/v1/integrations/{made.json()['id']}/deliveries", params={"limit": 100})
    assert deliveries.status_code == 200, deliveries.text
    assert len(deliveries.json()["data"]) == 7  # "same", five others, "refund-same"
    assert_books_balance(engine, db_url, shop.merchant_id)


def api_json(payload: dict[str, Any]) -> bytes:
    import json

    return json.dumps(payload).encode()


# ---------------------------------------------------------------- one job started twice


def _job_world(engine: Engine) -> tuple[str, list[str], datetime]:
    """Six members, each with points pending release, lots to expire, a reservation to lapse and
    a Silver year behind them to lose, all due by the returned time."""
    shop = make_shop(
        engine,
        members_count=6,
        name="Twice Started",
        pending_days=10,
        expiry={"months": 1},
        rewards=[{"id": "coffee", "name": "Coffee", "cost": 5}],
    )
    m = shop.merchant_id
    now = datetime.now(UTC).replace(microsecond=0)

    def line(dollars: int) -> list[dict[str, Any]]:
        return [{"id": "l1", "sku": "MUG", "category": "merch", "quantity": 1, "unit_price": 100 * dollars}]

    with engine.begin() as conn:
        for n, member in enumerate(shop.member_ids):
            old = purchase(member, f"old-{n}", line(250), occurred_at="2025-03-01T10:00:00Z")
            events.record_event(conn, merchant_id=m, body=old)  # Silver for 2025 and 2026
            new = purchase(member, f"new-{n}", line(20), occurred_at=now.isoformat())
            events.record_event(conn, merchant_id=m, body=new)  # pending for 10 days
            ledger.adjust(conn, merchant_id=m, member_id=member, points=20, reason="float")
            redemptions.reserve(conn, merchant_id=m, member_id=member, reward_id="coffee")
    return m, shop.member_ids, now + timedelta(days=3650)


def _tier_changes(engine: Engine, merchant_id: str) -> int:
    with engine.begin() as conn:
        return int(
            conn.execute(
                select(func.count())
                .select_from(tables.tier_changes)
                .where(tables.tier_changes.c.merchant_id == merchant_id)
            ).scalar_one()
        )


LOTS = {"release-pending": 6, "expire-points": 18, "lapse-reservations": 6}


@pytest.mark.parametrize("job", ["release-pending", "expire-points", "lapse-reservations", "requalify-tiers"])
def test_one_job_started_four_times_at_once_does_its_work_once(engine: Engine, db_url: str, job: str) -> None:
    m, member_ids, as_of = _job_world(engine)
    if job == "expire-points":  # pending points must be released before they can expire
        run_job(engine, "release-pending", as_of=as_of, merchant_id=m)
    with engine.begin() as conn:
        before = {mid: ledger.balances(conn, merchant_id=m, member_id=mid, as_of=None) for mid in member_ids}

    results = at_once(4, lambda _: run_job(engine, job, as_of=as_of, merchant_id=m))
    assert all(isinstance(r, JobResult | Conflict) for r in results), results
    done = [r for r in results if isinstance(r, JobResult)]
    assert done
    changes = _tier_changes(engine, m)
    again = run_job(engine, job, as_of=as_of, merchant_id=m)
    assert (again.lots, again.points) == (0, 0), again
    with engine.begin() as conn:
        after = {mid: ledger.balances(conn, merchant_id=m, member_id=mid, as_of=None) for mid in member_ids}
    for mid in member_ids:
        b0, b1 = before[mid], after[mid]
        if job == "release-pending":
            assert (b1.pending, b1.available) == (0, b0.available + 20), (b0, b1)
        elif job == "expire-points":
            assert (b1.available, b1.expired) == (0, b0.available), (b0, b1)
        elif job == "lapse-reservations":
            assert (b1.reserved, b1.available) == (0, b0.available + 5), (b0, b1)
        else:
            assert b1 == b0
    if job == "requalify-tiers":
        assert changes >= len(member_ids)  # each member loses Silver once
        assert sum(r.lots for r in done) == changes == _tier_changes(engine, m)
    else:
        assert sum(r.lots for r in done) == LOTS[job], done  # each lot once, whoever did it
    assert_books_balance(engine, db_url, m)
