"""Events: purchases, refunds, cancels, visits, flights and custom actions."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from patron.api.batching import EventBatcher, RunAlone
from patron.api.deps import CallDep, rendered
from patron.services import events

router = APIRouter(tags=["events"])

PURCHASE = {
    "id": "order-1001",
    "type": "purchase",
    "member_id": "mem_...",
    "occurred_at": "2026-03-01T10:00:00Z",
    "currency": "USD",
    "location_id": "store-1",
    "items": [
        {"id": "l1", "sku": "LATTE", "category": "coffee", "quantity": 2, "unit_price": 450},
        {"id": "l2", "sku": "MUG", "category": "merch", "quantity": 1, "unit_price": 1500},
    ],
}
REFUND = {
    "id": "refund-1",
    "type": "refund",
    "member_id": "mem_...",
    "refers_to": "order-1001",
    "items": [{"id": "l2", "quantity": 1}],
}
EventBody = Body(
    ...,
    openapi_examples={
        "purchase": {"summary": "A purchase", "value": PURCHASE},
        "refund": {"summary": "A partial refund", "value": REFUND},
        "visit": {
            "summary": "A visit",
            "value": {"id": "v-1", "type": "visit", "member_id": "mem_..."},
        },
    },
)


@router.post("/events", status_code=201)
async def record_event(call: CallDep, body: Any = EventBody) -> JSONResponse:
    """Record one event and earn (or take back) its points.

    201 with the points per line and per rule. The same `id` again with the same body answers
    200 with the first result and writes nothing; with a different body, 409.
    """
    # async: a purchase waits for its batch without a thread of its own; the rest runs in one
    batcher: EventBatcher | None = call.request.app.state.batcher
    purchase = isinstance(body, dict) and body.get("type") == "purchase"
    if batcher is not None and purchase and call.idempotency_key is None:  # with others arriving now
        try:
            result, created = await batcher.apply(call.bearer_key(), body)
        except RunAlone:
            pass  # alone, its batch failed, or it met a concurrent writer: on its own, as below
        else:
            return rendered(result, 201 if created else 200)

    def work(conn, p):  # type: ignore[no-untyped-def]
        result, created = events.record_event(conn, merchant_id=p.merchant_id, body=body)
        return result, 201 if created else 200

    return await run_in_threadpool(call.run, work, scope="pos", body=body)


@router.post("/events/calculate")
def calculate(call: CallDep, body: Any = EventBody) -> JSONResponse:
    """What an event would earn and what the member is near to. Writes nothing; `id` optional."""
    return call.run(
        lambda conn, p: events.calculate(conn, merchant_id=p.merchant_id, body=body), scope="read"
    )


@router.get("/events/{event_id}")
def get_event(event_id: str, call: CallDep) -> JSONResponse:
    """The recorded result of an event, by your event id."""
    return call.run(
        lambda conn, p: events.get_event(conn, merchant_id=p.merchant_id, event_id=event_id),
        scope="read",
    )
