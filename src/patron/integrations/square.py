"""Square webhooks: ``payment.created``/``payment.updated`` and ``refund.created``/``refund.updated``.

Square signs the notification URL followed by the raw body: ``x-square-hmacsha256-signature`` is
base64 HMAC-SHA256 with the subscription's signature key. The body's ``event_id`` is the same on
every retry; ``type`` names the topic.

* A payment whose ``status`` is ``COMPLETED`` earns on its ``amount_money`` (tips, which Square
  keeps apart in ``tip_money``, do not earn) as the purchase ``square:payment:<payment id>``,
  once however many updates Square sends about it. Other statuses are ignored.
* A refund whose ``status`` is ``COMPLETED`` takes back points in proportion to its
  ``amount_money`` (``square:refund:<refund id>``, referring to the payment).

The customer is the payment's ``buyer_email_address``, else its ``customer_id``.
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
    load,
    obj,
    peek,
    text,
    text_id,
    unknown_topic,
)
from patron.services.integrations import Earn, Ignore, Reverse

NAME = "square"


def verify(
    secret: str, body: bytes, headers: Mapping[str, str], *, urls: Sequence[str] = (), now: datetime
) -> bool:
    signature = header(headers, "x-square-hmacsha256-signature")
    return any(base64_matches(signature, hmac_sha256(secret, url.encode() + body)) for url in urls)


def is_ping(body: bytes, headers: Mapping[str, str]) -> bool:
    return False


def delivery(body: bytes, headers: Mapping[str, str]) -> tuple[str, str]:
    event_id, topic = peek(body, "event_id", "type")
    delivery_id = event_id if isinstance(event_id, str) and 0 < len(event_id) <= 200 else body_id(body)
    return delivery_id, topic if isinstance(topic, str) else ""


@guarded
def translate(topic: str, body: bytes) -> list[Action]:
    if topic in ("payment.created", "payment.updated"):
        return _payment(obj(_object(load(body))["payment"], "payment"))
    if topic in ("refund.created", "refund.updated"):
        return _refund(obj(_object(load(body))["refund"], "refund"))
    return unknown_topic(NAME, topic)


def _object(event: dict[str, Any]) -> dict[str, Any]:
    return obj(obj(event["data"], "data")["object"], "data.object")


def _amount(money: Any) -> tuple[int, str]:
    money = obj(money, "amount_money")
    return integer(money["amount"], "amount_money.amount"), currency_of(money["currency"])


def _payment(payment: dict[str, Any]) -> list[Action]:
    payment_id = text_id(payment["id"])
    status = payment.get("status")
    if status != "COMPLETED":
        return [Ignore(f"payment {payment_id} is {status}, not COMPLETED: nothing to earn yet")]
    amount, currency = _amount(payment["amount_money"])
    email = text(payment.get("buyer_email_address"), 320)
    customer_id = text(payment.get("customer_id"), 200)
    event = {
        "id": f"square:payment:{payment_id}",
        "type": "purchase",
        "occurred_at": instant(payment.get("created_at") or payment["updated_at"]).isoformat(),
        "currency": currency,
        "items": [{"id": "payment", "quantity": 1, "unit_price": amount}],
    }
    customer = Customer(email=email, external_id=customer_id) if email or customer_id else None
    return [Earn(event, customer)]


def _refund(refund: dict[str, Any]) -> list[Action]:
    refund_id = text_id(refund["id"])
    status = refund.get("status")
    if status != "COMPLETED":
        return [Ignore(f"refund {refund_id} is {status}, not COMPLETED: nothing to take back yet")]
    amount, currency = _amount(refund["amount_money"])
    if amount <= 0:
        return [Ignore(f"refund {refund_id} returns no money")]
    event = {
        "id": f"square:refund:{refund_id}",
        "type": "refund",
        "refers_to": f"square:payment:{text_id(refund['payment_id'])}",
        "occurred_at": instant(refund.get("updated_at") or refund["created_at"]).isoformat(),
        "currency": currency,
        "amount": amount,
    }
    return [Reverse(event)]
