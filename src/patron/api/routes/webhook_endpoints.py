"""Outbound webhooks: the merchant's endpoints, their delivery log, replay, and the business
events of the outbox they are fed from."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from patron.api.deps import CallDep
from patron.services import outbox, webhooks_out

router = APIRouter(tags=["webhooks"])

Url = Annotated[
    str, Field(min_length=1, max_length=2000, description="Where to POST events: an http(s) URL.")
]
EventTypes = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=100)]],
    Field(max_length=len(outbox.EVENT_TYPES), description="Event types to send; empty: every type."),
]
Description = Annotated[str, Field(max_length=500)]


class WebhookEndpointCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    url: Url
    description: Description = ""
    event_types: EventTypes = []


class WebhookEndpointUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    url: Url | None = None
    description: Description | None = None
    event_types: EventTypes | None = None
    enabled: bool | None = Field(None, description="`true` re-enables a disabled endpoint.")


class Replay(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    event_id: Annotated[str, Field(min_length=1, max_length=40)]


@router.get("/webhook-event-types")
def event_types(call: CallDep) -> JSONResponse:
    """The business events an endpoint can subscribe to, with what each means."""
    return call.run(
        lambda conn, p: {"data": [{"type": t, "description": d} for t, d in outbox.EVENT_TYPES.items()]},
        scope="read",
    )


@router.post("/webhook-endpoints", status_code=201)
def create_endpoint(body: WebhookEndpointCreate, call: CallDep) -> JSONResponse:
    """Register an endpoint. Events emitted from now on whose type it lists (all, when
    `event_types` is empty) are POSTed to it as JSON, signed per Standard Webhooks with the
    `secret` returned here, **shown only this once**: verify `webhook-signature` over
    `webhook-id`.`webhook-timestamp`.body. `webhook-id` is the event id (deduplicate on it). Each
    member's events arrive in order; failures are retried with exponential backoff."""
    return call.run(
        lambda conn, p: webhooks_out.create_endpoint(
            conn,
            merchant_id=p.merchant_id,
            url=body.url,
            description=body.description,
            event_types=body.event_types,
        ),
        scope="admin",
        status=201,
        body=body.model_dump(),
        secret="secret",  # shown once: a replay of the Idempotency-Key answers it null
    )


@router.get("/webhook-endpoints")
def list_endpoints(call: CallDep) -> JSONResponse:
    return call.run(
        lambda conn, p: {"data": webhooks_out.list_endpoints(conn, merchant_id=p.merchant_id)}, scope="admin"
    )


@router.get("/webhook-endpoints/{endpoint_id}")
def get_endpoint(endpoint_id: str, call: CallDep) -> JSONResponse:
    """The endpoint, whether it is enabled and, if not, why (`disabled_reason`)."""
    return call.run(
        lambda conn, p: webhooks_out.get_endpoint(conn, merchant_id=p.merchant_id, endpoint_id=endpoint_id),
        scope="admin",
    )


@router.patch("/webhook-endpoints/{endpoint_id}")
def update_endpoint(endpoint_id: str, body: WebhookEndpointUpdate, call: CallDep) -> JSONResponse:
    """Change the URL, description or filter, or enable/disable. Enabling a disabled endpoint
    resumes its pending deliveries in order."""
    return call.run(
        lambda conn, p: webhooks_out.update_endpoint(
            conn,
            merchant_id=p.merchant_id,
            endpoint_id=endpoint_id,
            changes=body.model_dump(exclude_unset=True, exclude_none=True),
        ),
        scope="admin",
    )


@router.delete("/webhook-endpoints/{endpoint_id}", status_code=204)
def delete_endpoint(endpoint_id: str, call: CallDep) -> Response:
    """Remove the endpoint with its pending deliveries and its delivery log."""
    call.run(
        lambda conn, p: webhooks_out.delete_endpoint(
            conn, merchant_id=p.merchant_id, endpoint_id=endpoint_id
        ),
        scope="admin",
    )
    return Response(status_code=204)


@router.get("/webhook-endpoints/{endpoint_id}/deliveries")
def deliveries(
    endpoint_id: str,
    call: CallDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> JSONResponse:
    """The delivery log, newest first: each delivery's `status` (`pending` or `delivered`),
    `next_attempt_at`, and in `log` every attempt with its `status_code`, `duration_ms`, `error`
    and the start of the `response`. Page on with `cursor=next_cursor`."""
    return call.run(
        lambda conn, p: webhooks_out.deliveries(
            conn, merchant_id=p.merchant_id, endpoint_id=endpoint_id, limit=limit, cursor=cursor
        ),
        scope="admin",
    )


@router.post("/webhook-endpoints/{endpoint_id}/replay", status_code=202)
def replay(endpoint_id: str, body: Replay, call: CallDep) -> JSONResponse:
    """Send a business event to the endpoint again (whatever its filter), after any earlier
    pending events of the same member. 409 if the endpoint is disabled."""
    return call.run(
        lambda conn, p: webhooks_out.replay(
            conn, merchant_id=p.merchant_id, endpoint_id=endpoint_id, event_id=body.event_id
        ),
        scope="admin",
        status=202,
        body=body.model_dump(),
    )


@router.get("/outbox-events")
def outbox_events(
    call: CallDep,
    member_id: Annotated[str | None, Query(max_length=40)] = None,
    type: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> JSONResponse:
    """The merchant's business events, newest first, optionally one member's or one type's.
    `sequence` numbers one member's events in the order they happened."""
    return call.run(
        lambda conn, p: outbox.list_events(
            conn, merchant_id=p.merchant_id, member_id=member_id, type=type, limit=limit, cursor=cursor
        ),
        scope="read",
    )


@router.get("/outbox-events/{event_id}")
def outbox_event(event_id: str, call: CallDep) -> JSONResponse:
    """One business event, as it is sent to endpoints (`data`), with its member `sequence`."""
    return call.run(
        lambda conn, p: outbox.event_view(
            outbox.get_event(conn, merchant_id=p.merchant_id, event_id=event_id)
        ),
        scope="read",
    )
