"""Integrations: connect Shopify, Square, WooCommerce or Stripe, and receive their webhooks."""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from types import ModuleType
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError
from starlette.concurrency import run_in_threadpool

from patron.api import errors
from patron.api.deps import CallDep
from patron.domain.errors import Conflict, NotFound, Unauthorized
from patron.integrations import shopify, square, stripe, woocommerce
from patron.services import integrations
from patron.services.clock import utcnow
from patron.services.integrations import IntegrationCreate, Receipt

router = APIRouter(tags=["integrations"])
log = logging.getLogger("patron.integrations")

ADAPTERS: dict[str, ModuleType] = {
    "shopify": shopify,
    "square": square,
    "woocommerce": woocommerce,
    "stripe": stripe,
}


class BadSignature(Unauthorized):
    code = "invalid-signature"
    title = "Missing or invalid webhook signature"


def _public_url(request: Request) -> str:
    return str(request.app.state.settings.public_url)


@router.post("/integrations", status_code=201)
def create_integration(body: IntegrationCreate, call: CallDep, request: Request) -> JSONResponse:
    """Connect a platform to a program. Returns the `webhook_url` to give the platform: its
    webhooks need no API key, their signature (made with `secret`) authenticates them.

    Shopify: subscribe `orders/paid`, `refunds/create`, `orders/cancelled` and `customers/create`.
    Square: `payment.updated` and `refund.updated`. WooCommerce: `order.created` and
    `order.updated`. Stripe: `checkout.session.completed`."""
    public_url = _public_url(request)
    return call.run(
        lambda conn, p: integrations.create_integration(
            conn, merchant_id=p.merchant_id, data=body, public_url=public_url
        ),
        scope="admin",
        status=201,
        body=body.model_dump(mode="json"),
    )


@router.get("/integrations")
def list_integrations(call: CallDep, request: Request) -> JSONResponse:
    """The merchant's integrations and their webhook URLs (never their secrets)."""
    public_url = _public_url(request)
    return call.run(
        lambda conn, p: {
            "data": integrations.list_integrations(conn, merchant_id=p.merchant_id, public_url=public_url)
        },
        scope="read",
    )


@router.get("/integrations/{integration_id}")
def get_integration(integration_id: str, call: CallDep, request: Request) -> JSONResponse:
    """One integration and its webhook URL."""
    public_url = _public_url(request)
    return call.run(
        lambda conn, p: integrations.get_integration(
            conn, merchant_id=p.merchant_id, integration_id=integration_id, public_url=public_url
        ),
        scope="read",
    )


@router.get("/integrations/{integration_id}/deliveries")
def list_deliveries(
    integration_id: str,
    call: CallDep,
    status: Literal["processed", "ignored", "failed"] | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> JSONResponse:
    """Webhook deliveries received, newest first: what each did (`outcome`), or why it
    `failed` (`error`). A failed delivery is tried again when the platform redelivers it."""
    return call.run(
        lambda conn, p: integrations.list_deliveries(
            conn,
            merchant_id=p.merchant_id,
            integration_id=integration_id,
            limit=limit,
            cursor=cursor,
            status=status,
        ),
        scope="read",
    )


@router.post(
    "/webhooks/{platform}/{integration_id}",
    responses={
        200: {"description": "Applied, ignored, or a redelivery acknowledged without applying it again."},
        400: {"description": "The body is not the platform's JSON (recorded as a failed delivery)."},
        401: {"description": "Missing or wrong signature; nothing is recorded."},
        404: {"description": "No such integration for this platform."},
        422: {"description": "Understood but not applicable (recorded as failed, with the reason)."},
    },
)
async def receive_webhook(platform: str, integration_id: str, request: Request) -> JSONResponse:
    """Where a platform sends its webhooks, exactly as it sends them (no API key: the signature
    over the raw body authenticates). Each delivery is applied once: a redelivery of the same
    delivery id is acknowledged without being applied again, and a purchase is credited once
    however often it is delivered. A delivery that cannot be applied is recorded as `failed`
    with its reason (see `GET /v1/integrations/{id}/deliveries`) and retried on redelivery."""
    body = await request.body()
    return await run_in_threadpool(
        _deliver,
        request.app.state.engine,
        platform,
        integration_id,
        body,
        request.headers,
        [integrations.webhook_url(_public_url(request), platform, integration_id), str(request.url)],
    )


def _deliver(
    engine: Engine,
    platform: str,
    integration_id: str,
    body: bytes,
    headers: Mapping[str, str],
    urls: Sequence[str],
) -> JSONResponse:
    adapter = ADAPTERS.get(platform)
    if adapter is None:
        raise NotFound(f"no webhook endpoint for {platform!r}; platforms: {', '.join(ADAPTERS)}")
    for attempt in range(4):
        try:
            with engine.begin() as conn:
                target = integrations.webhook_target(conn, integration_id=integration_id, type_=platform)
                if adapter.is_ping(body, headers):
                    return JSONResponse({"status": "ping"})
                now: datetime = utcnow()
                if not adapter.verify(target.secret, body, headers, urls=urls, now=now):
                    log.warning("%s webhook for %s: bad or missing signature", platform, integration_id)
                    raise BadSignature(
                        "the webhook signature is missing or does not match; nothing was recorded"
                    )
                delivery_id, topic = adapter.delivery(body, headers)
                receipt = integrations.receive(
                    conn,
                    target=target,
                    delivery_id=delivery_id,
                    topic=topic,
                    translate=functools.partial(adapter.translate, topic, body),
                )
            return _answer(platform, integration_id, receipt)
        except IntegrityError:  # the same delivery arriving twice at once: the loser replays
            if attempt == 3:
                raise Conflict("a concurrent delivery changed the same data; retry")
        except DBAPIError as exc:  # serialization failure / deadlock on PostgreSQL
            if getattr(exc.orig, "sqlstate", None) not in ("40001", "40P01") or attempt == 3:
                raise
    raise Conflict("a concurrent delivery changed the same data; retry")


def _answer(platform: str, integration_id: str, receipt: Receipt) -> JSONResponse:
    where = f"{platform} {receipt.topic or '(no topic)'} {receipt.delivery_id} for {integration_id}"
    error = receipt.error
    if error is not None:
        log.warning("%s failed: %s", where, error.detail)
        return errors.problem(
            errors.status_of(error),
            error.code,
            error.title,
            error.detail,
            delivery_id=receipt.delivery_id,
            topic=receipt.topic,
            delivery_status=receipt.status,
        )
    if receipt.status == integrations.IGNORED and not receipt.replayed:
        log.info("%s ignored: %s", where, "; ".join(o.get("reason", "") for o in receipt.outcome))
    return JSONResponse(receipt.body())
