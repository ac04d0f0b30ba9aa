"""Purchases from concurrent requests are applied together (``api/batching.py``): each request
still gets its own answer, the same as one at a time, and nothing is lost when a batch fails."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from patron.api import batching
from patron.services import ledger
from tests.conftest import Api, bean_rewards, purchase

LINES = [
    {"id": "l1", "sku": "LATTE", "category": "coffee", "quantity": 2, "unit_price": 450},
    {"id": "l2", "sku": "MUG", "category": "merch", "quantity": 1, "unit_price": 1500},
]


@pytest.fixture
def every_purchase_batched(client: Any, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """A purchase with nothing else waiting goes through the batch path too (a batch of one),
    instead of on its own: so that these tests do not depend on what arrives together."""
    monkeypatch.setitem(client.app.state._state, "batcher", batching.EventBatcher(engine, alone=False))


@pytest.fixture
def batches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of the batches the batcher applies."""
    sizes: list[int] = []
    real = batching.ingest.record_purchases

    def counting(conn: Any, **kwargs: Any) -> Any:
        sizes.append(len(kwargs["bodies"]))
        return real(conn, **kwargs)

    monkeypatch.setattr(batching.ingest, "record_purchases", counting)
    return sizes


def at_once(api: Api, requests: list[tuple[dict[str, Any], str | None]]) -> list[Any]:
    """POST each body to /v1/events with its key (the api's own when None), 16 at a time."""

    def send(item: tuple[dict[str, Any], str | None]) -> Any:
        body, key = item
        headers = {"Authorization": f"Bearer {key or api.key}"}
        return api.client.post("/v1/events", json=body, headers=headers)

    with ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(send, requests))


def test_concurrent_purchases_each_get_their_own_answer(
    api: Api, other_api: Api, engine: Engine, batches: list[int]
) -> None:
    program = api.program()
    ours = [api.member(program) for _ in range(6)]
    theirs = other_api.member(other_api.program())
    reader = api.post("/v1/api-keys", {"name": "analyst", "scopes": ["read"]}).json()["api_key"]
    first = [(purchase(m, f"o-{m}-{n}", LINES), None) for n in range(4) for m in ours]
    first += [(purchase(theirs, f"t-{n}", LINES), other_api.key) for n in range(4)]
    answers = at_once(api, first)
    assert [r.status_code for r in answers] == [201] * len(first)
    assert all(r.json()["points"] == 33 for r in answers)  # 18 for the lattes, 15 for the mug
    assert all(r.json()["id"] == body["id"] for r, (body, _) in zip(answers, first, strict=True))
    assert max(batches) > 1  # they were applied together

    replay = purchase(ours[0], f"o-{ours[0]}-0", LINES)
    changed = purchase(ours[1], f"o-{ours[1]}-0", LINES[:1])
    second = [
        (replay, None),  # the same event again: 200 and the first result
        (changed, None),  # the same id with another body: 409
        (purchase("mem_nobody", "x-1", LINES), None),  # 404
        ({**purchase(ours[2], "x-2", LINES), "items": []}, None),  # 422
        (purchase(ours[3], "x-3", LINES), reader),  # 403: a key without the pos scope
        (purchase(ours[3], "x-4", LINES), "ptr_not_a_key"),  # 401
        (purchase(ours[4], f"o-{ours[4]}-9", LINES), None),  # and a good one among them: 201
        (purchase(ours[1], f"o-{ours[0]}-0", LINES), other_api.key),  # another merchant's id space: 404
    ]
    got = at_once(api, second)
    assert [r.status_code for r in got] == [200, 409, 404, 422, 403, 401, 201, 404]
    assert got[0].json() == answers[0].json()
    assert all(r.headers["content-type"].startswith("application/problem+json") for r in got[1:6])
    for member, count in [(m, 5 if m == ours[4] else 4) for m in ours]:
        assert api.points(member)["available"] == 33 * count
    assert other_api.points(theirs)["available"] == 33 * 4
    with engine.begin() as conn:
        assert ledger.verify(conn, merchant_id=api.merchant_id) == []
        assert ledger.verify(conn, merchant_id=other_api.merchant_id) == []


@pytest.mark.usefixtures("every_purchase_batched")
def test_a_batched_purchase_answers_as_one_at_a_time_does(api: Api, batches: list[int]) -> None:
    """A request with an Idempotency-Key is applied on its own: the same purchases, one member
    through the batcher and one not, give the same results."""
    program = api.program(bean_rewards())
    alone, batched = api.member(program), api.member(program)
    for n, at in enumerate(["2026-03-01T10:00:00Z", "2026-03-02T10:00:00Z", "2026-06-01T09:00:00Z"]):
        one = api.post(
            "/v1/events",
            purchase(alone, f"a-{n}", LINES, occurred_at=at),
            headers={"Idempotency-Key": f"k-{n}"},
        )
        other = api.post("/v1/events", purchase(batched, f"b-{n}", LINES, occurred_at=at))
        assert one.status_code == other.status_code == 201
        mine, theirs = one.json(), other.json()
        for result in (mine, theirs):  # but for what differs between two members
            result.pop("id")
            own = ("id", "card_number", "referral_code", "enrolled_at", "created_at", "updated_at")
            result["member"] = {k: v for k, v in result["member"].items() if k not in own}
            result["member"]["tier"].pop("since")
        assert mine == theirs
    assert len(batches) == 3  # the batched member's three, and none of the other's


@pytest.mark.usefixtures("every_purchase_batched")
def test_a_batch_that_fails_runs_each_request_on_its_own(
    api: Api, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    member = api.member(api.program())
    failed: list[int] = []

    def down(conn: Any, **kwargs: Any) -> Any:
        failed.append(len(kwargs["bodies"]))
        raise OperationalError("INSERT", {}, Exception("the server closed the connection"))

    monkeypatch.setattr(batching.ingest, "record_purchases", down)
    answers = at_once(api, [(purchase(member, f"f-{n}", LINES), None) for n in range(10)])
    assert [r.status_code for r in answers] == [201] * 10
    assert sum(failed) == 10  # each went to a batch that failed, then on its own
    assert api.points(member)["available"] == 330
    with engine.begin() as conn:
        assert ledger.verify(conn, merchant_id=api.merchant_id) == []


def test_a_purchase_given_up_before_its_batch_began_is_not_applied(api: Api, engine: Engine) -> None:
    """A client that goes away while its purchase waits cancels it; the purchases waiting with it
    are applied and answered (the batcher runs here in the test, one batch)."""
    member = api.member(api.program())
    batcher = batching.EventBatcher(engine, alone=False)
    batcher._started = True  # no thread of its own: the test runs the batch

    async def scenario() -> tuple[Any, bool]:
        gone = asyncio.ensure_future(batcher.apply(api.key, purchase(member, "gone-1", LINES)))
        kept = asyncio.ensure_future(batcher.apply(api.key, purchase(member, "kept-1", LINES)))
        await asyncio.sleep(0)  # both wait in the queue
        gone.cancel()
        await asyncio.sleep(0)
        await asyncio.to_thread(batcher._once, batcher._queue.get())
        return await kept, gone.cancelled()

    (result, created), cancelled = asyncio.run(scenario())
    assert created and result["points"] == 33 and cancelled
    assert api.get("/v1/events/kept-1").status_code == 200
    assert api.get("/v1/events/gone-1").status_code == 404
    assert api.points(member)["available"] == 33


def test_a_purchase_that_arrives_alone_is_applied_on_its_own(api: Api, batches: list[int]) -> None:
    """With nothing else waiting, the one-event path is quicker than a batch of one: a till's
    purchases one after the other never go through the batch path."""
    member = api.member(api.program())
    for n in range(3):
        assert api.event(purchase(member, f"alone-{n}", LINES))["points"] == 33
    assert batches == []
    assert api.points(member)["available"] == 99
