"""Shopify webhooks: ``orders/paid``, ``refunds/create``, ``orders/cancelled``, ``customers/create``.

Shopify signs the raw body: ``X-Shopify-Hmac-Sha256`` is base64 HMAC-SHA256 with the app's
secret. ``X-Shopify-Webhook-Id`` is the same on every retry of one delivery; ``X-Shopify-Topic``
names the topic.

* ``orders/paid`` earns on each line's ``price`` times ``quantity`` less its discount allocations
  (tax and shipping are passed along for programs whose earning base counts them), at the
  order's ``processed_at``, as the event ``shopify:order:<order id>``: once per order however
  often it is delivered.
* ``refunds/create`` returns the refunded lines (``refund_line_items``: ``line_item_id`` and
  ``quantity``) as the refund ``shopify:refund:<refund id>`` of that order, at the refund's
  ``processed_at``.
* ``orders/cancelled`` cancels what is left of the order (``shopify:cancel:<order id>``).
* ``customers/create`` enrols the customer.

Ids are kept as strings with every digit (Shopify's are 64-bit integers).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from patron.integrations.common import (
    Action,
    Customer,
    base64_matches,
    body_id,
    currency_of,
    guarded,
    header,
    hmac_sha256,
    instant,
    integer,
    items,
    load,
    maybe_obj,
    money,
    obj,
    text,
    text_id,
    unknown_topic,
)
from patron.services.integrations import Earn, Enrol, Ignore, Reverse

NAME = "shopify"


def verify(
    secret: str, body: bytes, headers: Mapping[str, str], *, urls: Sequence[str] = (), now: datetime
) -> bool:
    return base64_matches(header(headers, "X-Shopify-Hmac-Sha256"), hmac_sha256(secret, body))


def is_ping(body: bytes, headers: Mapping[str, str]) -> bool:
    return False


def delivery(body: bytes, headers: Mapping[str, str]) -> tuple[str, str]:
    webhook_id = (header(headers, "X-Shopify-Webhook-Id") or "").strip()
    topic = (header(headers, "X-Shopify-Topic") or "").strip()
    return (webhook_id if 0 < len(webhook_id) <= 200 else body_id(body)), topic


@guarded
def translate(topic: str, body: bytes) -> list[Action]:
    handler = {
        "orders/paid": _order_paid,
        "refunds/create": _refund,
        "orders/cancelled": _cancelled,
        "customers/create": _customer_created,
    }.get(topic)
    if handler is None:
        return unknown_topic(NAME, topic)
    return handler(load(body))


def order_event_id(order_id: str) -> str:
    return f"shopify:order:{order_id}"


def _order_paid(order: dict[str, Any]) -> list[Action]:
    order_id = text_id(order["id"])
    currency = currency_of(order["currency"])
    taxes_included = bool(order.get("taxes_included"))
    read = (
        _line(obj(li, "line item"), currency, taxes_included)
        for li in items(order.get("line_items"), "line_items")
    )
    lines = [ln for ln in read if ln is not None]
    if not lines:
        return [Ignore(f"order {order_id} has no line items to earn on")]
    event: dict[str, Any] = {
        "id": order_event_id(order_id),
        "type": "purchase",
        "occurred_at": instant(order.get("processed_at") or order["created_at"]).isoformat(),
        "currency": currency,
        "items": lines,
    }
    shipping = sum(
        money(obj(s, "shipping line").get("discounted_price") or s["price"], currency)
        for s in items(order.get("shipping_lines"), "shipping_lines")
    )
    if shipping:
        event["shipping"] = shipping
    channel = text(order.get("source_name"), 50)
    if channel:
        event["channel"] = channel
    return [Earn(event, _customer_of_order(order))]


def _line(li: dict[str, Any], currency: str, taxes_included: bool) -> dict[str, Any] | None:
    quantity = integer(li["quantity"], "quantity")
    if quantity <= 0:
        return None
    price = money(li["price"], currency)
    allocations = items(li.get("discount_allocations"), "discount_allocations")
    if allocations:
        discount = sum(money(obj(a, "discount allocation")["amount"], currency) for a in allocations)
    else:
        discount = money(li.get("total_discount") or "0", currency)
    line: dict[str, Any] = {
        "id": text_id(li["id"]),
        "quantity": quantity,
        "unit_price": price,
        "discount": min(discount, price * quantity),
    }
    if not taxes_included:
        tax = sum(
            money(obj(t, "tax line")["price"], currency) for t in items(li.get("tax_lines"), "tax_lines")
        )
        if tax:
            line["tax"] = tax
    sku = text(li.get("sku"), 200)
    if sku:
        line["sku"] = sku
    if li.get("gift_card") is True:
        line["gift_card"] = True
    name = text(li.get("title") or li.get("name"), 500)
    if name:
        line["name"] = name
    return line


def _customer_of_order(order: dict[str, Any]) -> Customer | None:
    customer = maybe_obj(order.get("customer"))
    email = (
        text(customer.get("email"), 320)
        or text(order.get("email"), 320)
        or text(order.get("contact_email"), 320)
    )
    customer_id = text_id(customer["id"]) if customer.get("id") is not None else None
    if not (email or customer_id):
        return None
    return Customer(email=email, external_id=customer_id, name=_name(customer))


def _name(customer: dict[str, Any]) -> str | None:
    return text(" ".join(str(customer.get(k) or "") for k in ("first_name", "last_name")), 200)


def _refund(refund: dict[str, Any]) -> list[Action]:
    refund_id, order_id = text_id(refund["id"]), text_id(refund["order_id"])
    returned: dict[str, int] = {}
    for rli in items(refund.get("refund_line_items"), "refund_line_items"):
        rli = obj(rli, "refund line item")
        quantity = integer(rli["quantity"], "quantity")
        if quantity > 0:
            line_id = text_id(rli["line_item_id"])
            returned[line_id] = returned.get(line_id, 0) + quantity
    if not returned:
        return [Ignore(f"refund {refund_id} returns no line items (no points to take back)")]
    event = {
        "id": f"shopify:refund:{refund_id}",
        "type": "refund",
        "refers_to": order_event_id(order_id),
        "occurred_at": instant(refund.get("processed_at") or refund["created_at"]).isoformat(),
        "items": [{"id": line_id, "quantity": q} for line_id, q in returned.items()],
    }
    return [Reverse(event)]


def _cancelled(order: dict[str, Any]) -> list[Action]:
    order_id = text_id(order["id"])
    event: dict[str, Any] = {
        "id": f"shopify:cancel:{order_id}",
        "type": "cancel",
        "refers_to": order_event_id(order_id),
    }
    at = order.get("cancelled_at") or order.get("updated_at")
    if at:
        event["occurred_at"] = instant(at).isoformat()
    return [Reverse(event)]


def _customer_created(customer: dict[str, Any]) -> list[Action]:
    email = text(customer.get("email"), 320)
    customer_id = text_id(customer["id"])
    since = instant(customer["created_at"]) if customer.get("created_at") else None
    return [Enrol(Customer(email=email, external_id=customer_id, name=_name(customer), since=since))]
