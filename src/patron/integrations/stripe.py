"""Stripe webhooks: ``checkout.session.completed`` and ``checkout.session.async_payment_succeeded``
(purchases), ``invoice.paid`` and ``customer.subscription.deleted`` / ``.updated`` (paid
memberships).

``Stripe-Signature: t=<unix time>,v1=<hex>`` where ``v1`` is HMAC-SHA256 of ``"<t>.<raw body>"``
with the endpoint's signing secret (``whsec_...``); a signature more than five minutes from now
is refused, so a captured request cannot be replayed later. The event's ``id`` is the same on
every retry and ``type`` names the topic.

A session whose ``payment_status`` is ``paid`` earns on ``amount_total`` net of tax and shipping
(``total_details``), as the purchase ``stripe:checkout:<session id>``, at the event's time. The
customer is ``customer_details.email`` (or ``customer_email``), else the Stripe customer id.

A paid membership started with ``external_id`` set to the Stripe subscription id renews on each
``invoice.paid`` of that subscription (``amount_paid`` in ``currency``, at the invoice's paid
time, once per invoice id) and is cancelled by ``customer.subscription.deleted`` (or an update to
status ``canceled``). Invoices of other subscriptions are ignored.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from patron.integrations.common import (
    Action,
    Customer,
    MalformedPayload,
    body_id,
    currency_of,
    guarded,
    header,
    instant,
    integer,
    load,
    maybe_obj,
    obj,
    peek,
    text,
    text_id,
    unknown_topic,
)
from patron.services.integrations import Earn, Ignore, MembershipCancelled, MembershipPaid
from patron.services.money import exponent

#: Stripe's own decimals for amounts, where they are not 2 (https://docs.stripe.com/currencies):
#: they differ from ISO 4217's for some (ISK is two-decimal at Stripe, MGA zero-decimal)
_STRIPE_ZERO = ("BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA", "PYG", "RWF", "UGX", "VND", "VUV")
STRIPE_EXPONENTS = {
    **dict.fromkeys((*_STRIPE_ZERO, "XAF", "XOF", "XPF"), 0),
    **dict.fromkeys(("BHD", "JOD", "KWD", "OMR", "TND"), 3),
}


def minor(amount: Any, currency: str, what: str) -> int:
    """A Stripe amount (in Stripe's smallest unit of ``currency``) in Patron's minor units (ISO
    4217's): 500000 ISK from Stripe is 5,000 kr, which Patron counts as 5000."""
    value: int = integer(amount, what)
    shift = exponent(currency) - STRIPE_EXPONENTS.get(currency, 2)
    scale = int(10 ** abs(shift))
    if shift >= 0:
        return value * scale
    whole, rest = divmod(value, scale)
    if rest:
        raise MalformedPayload(f"{what} {value} is not a whole amount of {currency}")
    return whole


NAME = "stripe"
TOLERANCE = timedelta(minutes=5)
TOPICS = (
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "invoice.paid",
    "customer.subscription.deleted",
    "customer.subscription.updated",
)


def verify(
    secret: str, body: bytes, headers: Mapping[str, str], *, urls: Sequence[str] = (), now: datetime
) -> bool:
    timestamp, signatures = None, []
    for part in (header(headers, "Stripe-Signature") or "").split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isascii() and value.isdigit():
            timestamp = int(value)
        elif key == "v1":
            signatures.append(value)
    if timestamp is None or not signatures:
        return False
    if abs(now.timestamp() - timestamp) > TOLERANCE.total_seconds():
        return False
    expected = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    # as bytes: a header is any text, and compare_digest refuses str that is not ASCII
    return any(hmac.compare_digest(expected.encode(), s.encode()) for s in signatures)


def is_ping(body: bytes, headers: Mapping[str, str]) -> bool:
    return False


def delivery(body: bytes, headers: Mapping[str, str]) -> tuple[str, str]:
    event_id, topic = peek(body, "id", "type")
    delivery_id = event_id if isinstance(event_id, str) and 0 < len(event_id) <= 200 else body_id(body)
    return delivery_id, topic if isinstance(topic, str) else ""


@guarded
def translate(topic: str, body: bytes) -> list[Action]:
    if topic not in TOPICS:
        return unknown_topic(NAME, topic)
    event = load(body)
    thing = obj(obj(event["data"], "data")["object"], "data.object")
    at = instant(event["created"])
    if topic == "invoice.paid":
        return _invoice(thing, at)
    if topic.startswith("customer.subscription."):
        return _subscription(topic, thing, at)
    return _session(thing, at)


def _invoice(invoice: dict[str, Any], at: datetime) -> list[Action]:
    invoice_id = text_id(invoice["id"])
    subscription = invoice.get("subscription")
    if isinstance(subscription, dict):
        subscription = subscription.get("id")
    if not isinstance(subscription, str) or not subscription:
        return [Ignore(f"invoice {invoice_id} is not for a subscription")]
    paid = maybe_obj(invoice.get("status_transitions")).get("paid_at")
    currency = currency_of(invoice["currency"])
    return [
        MembershipPaid(
            subscription=text_id(subscription),
            amount=minor(invoice["amount_paid"], currency, "amount_paid"),
            currency=currency,
            paid_at=instant(paid) if paid else at,
            reference=f"stripe:{invoice_id}",
        )
    ]


def _subscription(topic: str, subscription: dict[str, Any], at: datetime) -> list[Action]:
    subscription_id = text_id(subscription["id"])
    if topic == "customer.subscription.updated" and subscription.get("status") != "canceled":
        return [Ignore(f"subscription {subscription_id} is {subscription.get('status')}")]
    ended = subscription.get("ended_at") or subscription.get("canceled_at")
    return [MembershipCancelled(subscription_id, instant(ended) if ended else at)]


def _session(session: dict[str, Any], at: datetime) -> list[Action]:
    session_id = text_id(session["id"])
    if session.get("payment_status") != "paid":
        return [Ignore(f"checkout session {session_id} is {session.get('payment_status')}, not paid")]
    currency = currency_of(session["currency"])
    total = minor(session["amount_total"], currency, "amount_total")
    details = maybe_obj(session.get("total_details"))
    tax = minor(details.get("amount_tax") or 0, currency, "amount_tax")
    shipping = minor(details.get("amount_shipping") or 0, currency, "amount_shipping")
    event: dict[str, Any] = {
        "id": f"stripe:checkout:{session_id}",
        "type": "purchase",
        "occurred_at": at.isoformat(),
        "currency": currency,
        "items": [{"id": "checkout", "quantity": 1, "unit_price": max(total - tax - shipping, 0)}],
    }
    if tax:
        event["items"][0]["tax"] = tax
    if shipping:
        event["shipping"] = shipping
    contact = maybe_obj(session.get("customer_details"))
    email = text(contact.get("email"), 320) or text(session.get("customer_email"), 320)
    customer_id = text(session.get("customer"), 200) if isinstance(session.get("customer"), str) else None
    customer = (
        Customer(email=email, external_id=customer_id, name=text(contact.get("name"), 200))
        if email or customer_id
        else None
    )
    return [Earn(event, customer)]
