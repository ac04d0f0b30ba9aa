"""WooCommerce webhooks: ``order.created`` and ``order.updated``.

WooCommerce signs the raw body: ``X-WC-Webhook-Signature`` is base64 HMAC-SHA256 with the
webhook's secret. ``X-WC-Webhook-Delivery-ID`` identifies the delivery and
``X-WC-Webhook-Topic`` the topic. When a webhook is saved, WooCommerce checks the URL with an
unsigned form post ``webhook_id=<n>``: it is answered 200 and changes nothing.

The body is the order (REST API v3):

* ``processing`` or ``completed`` earns per line on its ``total`` (after coupons, before tax) as
  the purchase ``woocommerce:order:<order id>``, at ``date_paid_gmt``, once per order however
  many updates follow;
* each entry of ``refunds`` takes back points in proportion to its amount, once per refund id
  (``woocommerce:refund:<refund id>``);
* ``cancelled`` cancels what is left of the order. Other statuses earn nothing.
"""

from __future__ import annotations

import re
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
from patron.services.integrations import Earn, Ignore, Reverse

NAME = "woocommerce"
EARNING = ("processing", "completed")
_PING = re.compile(rb"^\s*webhook_id=\d+\s*$")


def verify(
    secret: str, body: bytes, headers: Mapping[str, str], *, urls: Sequence[str] = (), now: datetime
) -> bool:
    return base64_matches(header(headers, "X-WC-Webhook-Signature"), hmac_sha256(secret, body))


def is_ping(body: bytes, headers: Mapping[str, str]) -> bool:
    return _PING.match(body) is not None


def delivery(body: bytes, headers: Mapping[str, str]) -> tuple[str, str]:
    delivery_id = (header(headers, "X-WC-Webhook-Delivery-ID") or "").strip()
    topic = (header(headers, "X-WC-Webhook-Topic") or "").strip()
    return (delivery_id if 0 < len(delivery_id) <= 200 else body_id(body)), topic


@guarded
def translate(topic: str, body: bytes) -> list[Action]:
    if topic not in ("order.created", "order.updated"):
        return unknown_topic(NAME, topic)
    return _order(load(body))


def order_event_id(order_id: str) -> str:
    return f"woocommerce:order:{order_id}"


def _order(order: dict[str, Any]) -> list[Action]:
    order_id = text_id(order["id"])
    status = order.get("status")
    currency = currency_of(order["currency"])
    actions: list[Action] = []
    if status in EARNING:
        actions.append(_earn(order, order_id, currency))
    elif status == "cancelled":
        at = order.get("date_modified_gmt")
        event: dict[str, Any] = {
            "id": f"woocommerce:cancel:{order_id}",
            "type": "cancel",
            "refers_to": order_event_id(order_id),
        }
        if at:
            event["occurred_at"] = instant(at, naive_is_utc=True).isoformat()
        actions.append(Reverse(event))
    refunded_at = order.get("date_modified_gmt") or order.get("date_created_gmt")
    for refund in items(order.get("refunds"), "refunds"):
        refund = obj(refund, "refund")
        total = refund.get("total") if refund.get("total") is not None else refund.get("amount")
        amount = money(str(total).strip().lstrip("-"), currency)
        if amount <= 0:
            continue
        refund_event: dict[str, Any] = {
            "id": f"woocommerce:refund:{text_id(refund['id'])}",
            "type": "refund",
            "refers_to": order_event_id(order_id),
            "currency": currency,
            "amount": amount,
        }
        if refunded_at:
            refund_event["occurred_at"] = instant(refunded_at, naive_is_utc=True).isoformat()
        # A refund seen on an order that never earned (refunded before it was paid) is no failure.
        actions.append(Reverse(refund_event, optional=status not in EARNING))
    return actions or [Ignore(f"order {order_id} is {status}: nothing to earn or take back")]


def _earn(order: dict[str, Any], order_id: str, currency: str) -> Action:
    lines = []
    for li in items(order.get("line_items"), "line_items"):
        li = obj(li, "line item")
        quantity = integer(li["quantity"], "quantity")
        if quantity <= 0:
            continue
        total = money(li["total"], currency)
        subtotal = money(li.get("subtotal") or li["total"], currency)
        # Whole minor units per unit whose product covers the line; the rest is the discount,
        # so that quantity * unit_price - discount is exactly the line's total.
        unit_price = -(-max(subtotal, total) // quantity)
        line: dict[str, Any] = {
            "id": text_id(li["id"]),
            "quantity": quantity,
            "unit_price": unit_price,
            "discount": unit_price * quantity - total,
        }
        tax = money(li.get("total_tax") or "0", currency)
        if tax:
            line["tax"] = tax
        sku = text(li.get("sku"), 200)
        if sku:
            line["sku"] = sku
        name = text(li.get("name"), 500)
        if name:
            line["name"] = name
        lines.append(line)
    if not lines:
        return Ignore(f"order {order_id} has no line items to earn on")
    at = order.get("date_paid_gmt") or order.get("date_created_gmt")
    event: dict[str, Any] = {
        "id": order_event_id(order_id),
        "type": "purchase",
        "occurred_at": instant(at, naive_is_utc=True).isoformat(),
        "currency": currency,
        "items": lines,
    }
    shipping = sum(
        money(obj(s, "shipping line")["total"], currency)
        for s in items(order.get("shipping_lines"), "shipping_lines")
    )
    if shipping:
        event["shipping"] = shipping
    return Earn(event, _customer(order))


def _customer(order: dict[str, Any]) -> Customer | None:
    billing = maybe_obj(order.get("billing"))
    email = text(billing.get("email"), 320)
    customer_id = order.get("customer_id")
    external_id = text_id(customer_id) if customer_id not in (None, 0, "0", "") else None
    if not (email or external_id):
        return None
    name = text(" ".join(str(billing.get(k) or "") for k in ("first_name", "last_name")), 200)
    return Customer(email=email, external_id=external_id, name=name)
