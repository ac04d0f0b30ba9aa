"""Inbound webhooks from Shopify, Square, WooCommerce and Stripe, with the platforms' own sample
payloads and signature vectors (tests/data): each delivery credits once, refunds take back exactly
what the refunded lines earned, and a bad signature writes nothing."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from patron.api.app import create_app
from patron.api.routes.integrations import router
from patron.config import Settings
from patron.integrations import shopify, square, stripe, woocommerce
from patron.integrations.common import MalformedPayload
from tests.conftest import SHARED_DATA, Api, bean_rewards

PUBLIC_URL = "https://loyalty.example.com"
SECRET = "test_secret_local_only"


def sample(name: str) -> bytes:
    return (SHARED_DATA / name).read_bytes()


def vector(name: str) -> dict[str, Any]:
    return dict(json.loads(sample(name)))


def b64_hmac(secret: str, message: bytes) -> str:
    return base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()


def as_bytes(payload: Any) -> bytes:
    return payload if isinstance(payload, bytes) else json.dumps(payload).encode()


@pytest.fixture(scope="module")
def hooks(engine: Engine, db_url: str) -> Iterator[TestClient]:
    """The app with the integrations router, served under a public URL unlike the test host's."""
    app = create_app(Settings(database_url=db_url, public_url=PUBLIC_URL), engine=engine)
    if not any(getattr(r, "path", None) == "/v1/integrations" for r in app.routes):
        app.include_router(router, prefix="/v1")
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


class Shop:
    """One merchant with the Bean Rewards program and one integration of a platform."""

    def __init__(self, hooks: TestClient, api: Api, platform: str, secret: str = SECRET) -> None:
        self.api = Api(hooks, api.merchant_id, api.key)
        self.client = hooks
        self.program = self.api.program()
        r = self.api.post(
            "/v1/integrations", {"type": platform, "program_id": self.program, "secret": secret}
        )
        assert r.status_code == 201, r.text
        self.integration = r.json()
        self.secret = secret
        self.path = urlsplit(self.integration["webhook_url"]).path

    def post(self, body: bytes, headers: dict[str, str]) -> Any:
        return self.client.post(
            self.path, content=body, headers={"Content-Type": "application/json", **headers}
        )

    def shopify(
        self, topic: str, payload: Any, *, webhook_id: str | None = None, signature: str | None = None
    ) -> Any:
        body = as_bytes(payload)
        return self.post(
            body,
            {
                "X-Shopify-Topic": topic,
                "X-Shopify-Hmac-Sha256": signature if signature is not None else b64_hmac(self.secret, body),
                "X-Shopify-Webhook-Id": webhook_id or str(uuid.uuid4()),
            },
        )

    def square(self, payload: Any, *, signature: str | None = None) -> Any:
        body = as_bytes(payload)
        signed = self.integration["webhook_url"].encode() + body
        return self.post(body, {"x-square-hmacsha256-signature": signature or b64_hmac(self.secret, signed)})

    def woo(self, topic: str, payload: Any, *, delivery_id: str | None = None) -> Any:
        body = as_bytes(payload)
        return self.post(
            body,
            {
                "X-WC-Webhook-Topic": topic,
                "X-WC-Webhook-Signature": b64_hmac(self.secret, body),
                "X-WC-Webhook-Delivery-ID": delivery_id or str(uuid.uuid4()),
            },
        )

    def stripe(self, payload: Any, *, at: int | None = None) -> Any:
        body = as_bytes(payload)
        t = at if at is not None else int(time.time())
        v1 = hmac.new(self.secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
        return self.post(body, {"Stripe-Signature": f"t={t},v1={v1}"})

    def member(self, **query: str) -> dict[str, Any] | None:
        r = self.api.get("/v1/members", params=query)
        assert r.status_code == 200, r.text
        found = r.json()["data"]
        return dict(found[0]) if found else None

    def deliveries(self, **params: Any) -> list[dict[str, Any]]:
        r = self.api.get(f"/v1/integrations/{self.integration['id']}/deliveries", params=params)
        assert r.status_code == 200, r.text
        return list(r.json()["data"])


def shopify_order(
    order_id: int, lines: list[tuple[int, str, int]], *, email: str = "ann@example.com", currency: str = "USD"
) -> dict[str, Any]:
    """An orders/paid payload cut down from the sample: lines of (id, price, quantity)."""
    order = json.loads(sample("shopify/orders_paid.2025-01.json"))
    template = order["line_items"][0]
    order.update(id=order_id, currency=currency, email=email, processed_at="2026-03-01T10:00:00Z")
    order["customer"] = {**order["customer"], "id": order_id + 7, "email": email}
    order["line_items"] = [
        {**template, "id": line_id, "price": price, "quantity": quantity}
        for line_id, price, quantity in lines
    ]
    return dict(order)


def refund(refund_id: int, order_id: int, lines: list[tuple[int, int]]) -> dict[str, Any]:
    body = json.loads(sample("shopify/refunds_create.2025-01.json"))
    template = body["refund_line_items"][0]
    body.update(id=refund_id, order_id=order_id, processed_at="2026-03-05T12:00:00Z")
    body["refund_line_items"] = [
        {**template, "id": line_id + 1, "line_item_id": line_id, "quantity": q} for line_id, q in lines
    ]
    return dict(body)


# ---------------------------------------------------------------- integrations


def test_an_integration_gives_an_absolute_webhook_url_and_never_shows_its_secret(
    hooks: TestClient, api: Api
) -> None:
    shop = Shop(hooks, api, "shopify")
    made = shop.integration
    assert made["type"] == "shopify" and made["program_id"] == shop.program
    assert made["webhook_url"] == f"{PUBLIC_URL}/v1/webhooks/shopify/{made['id']}"
    listed = shop.api.get("/v1/integrations").json()["data"]
    assert [i["id"] for i in listed] == [made["id"]]
    assert SECRET not in json.dumps(listed) and SECRET not in json.dumps(made)
    r = shop.api.post("/v1/integrations", {"type": "magento", "program_id": shop.program, "secret": SECRET})
    assert r.status_code == 422
    r = shop.api.post("/v1/integrations", {"type": "square", "program_id": "prg_nope", "secret": SECRET})
    assert r.status_code == 404
    keyless = {"type": "square", "program_id": shop.program, "secret": SECRET}
    assert hooks.post("/v1/integrations", json=keyless).status_code == 401


def test_unknown_integrations_and_platforms_are_404(hooks: TestClient, api: Api) -> None:
    shop = Shop(hooks, api, "shopify")
    body = sample("shopify/orders_paid.2025-01.json")
    headers = {"X-Shopify-Topic": "orders/paid", "X-Shopify-Hmac-Sha256": b64_hmac(SECRET, body)}
    assert hooks.post("/v1/webhooks/shopify/int_nope", content=body, headers=headers).status_code == 404
    wrong_platform = shop.path.replace("/shopify/", "/square/")
    assert hooks.post(wrong_platform, content=body, headers=headers).status_code == 404
    assert hooks.post(shop.path.replace("/shopify/", "/magento/"), content=body).status_code == 404


# ---------------------------------------------------------------- Shopify


def test_shopify_signature_vector_is_accepted(hooks: TestClient, api: Api) -> None:
    v = vector("shopify/hmac_test_vector.json")
    body = sample(v["file"])
    assert shopify.verify(
        v["secret"], body, {"X-Shopify-Hmac-Sha256": v["X-Shopify-Hmac-Sha256"]}, now=_now()
    )
    assert not shopify.verify(
        "another secret", body, {"X-Shopify-Hmac-Sha256": v["X-Shopify-Hmac-Sha256"]}, now=_now()
    )
    shop = Shop(hooks, api, "shopify", secret=v["secret"])
    r = shop.shopify("orders/create", body, signature=v["X-Shopify-Hmac-Sha256"])
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "ignored"  # a signed topic Patron does not act on


def test_orders_paid_sample_earns_once_however_often_it_is_delivered(hooks: TestClient, api: Api) -> None:
    shop = Shop(hooks, api, "shopify")
    body = sample("shopify/orders_paid.2025-01.json")
    first = shop.shopify("orders/paid", body, webhook_id="wh-1")
    assert first.status_code == 200, first.text
    assert first.json()["status"] == "processed"
    member = shop.member(email="john@example.com")
    assert member is not None and member["external_id"] == "115310627314723950"
    assert member["points"]["available"] == 398  # 2 x 199.00, shipping not counted
    event = shop.api.get("/v1/events/shopify:order:820982911946154500").json()
    assert event["occurred_at"] == "2022-01-01T00:00:00+00:00"  # processed_at 2021-12-31T19:00-05:00
    assert [ln["points"] for ln in event["lines"]] == [199, 199]

    again = shop.shopify("orders/paid", body, webhook_id="wh-1")
    assert again.status_code == 200 and again.json()["replayed"] is True
    redelivered = shop.shopify("orders/paid", body, webhook_id="wh-2")
    assert redelivered.status_code == 200 and redelivered.json()["status"] == "ignored"
    assert shop.api.points(member["id"])["available"] == 398
    assert {(d["delivery_id"], d["status"]) for d in shop.deliveries()} == {
        ("wh-1", "processed"),
        ("wh-2", "ignored"),
    }


def test_refunds_create_sample_takes_back_the_refunded_lines(hooks: TestClient, api: Api) -> None:
    shop = Shop(hooks, api, "shopify")
    shop.shopify("orders/paid", sample("shopify/orders_paid.2025-01.json"))
    member = shop.member(email="john@example.com")
    assert member is not None
    r = shop.shopify("refunds/create", sample("shopify/refunds_create.2025-01.json"))
    assert r.status_code == 200, r.text
    assert shop.api.points(member["id"])["available"] == 0
    event = shop.api.get("/v1/events/shopify:refund:890088186047892400").json()
    assert event["refers_to"] == "shopify:order:820982911946154500" and event["points"] == -398
    assert event["occurred_at"] == "2022-01-01T00:00:00+00:00"


def test_a_partial_refund_reverses_exactly_the_refunded_lines_points(hooks: TestClient, api: Api) -> None:
    shop = Shop(hooks, api, "shopify")
    order = shopify_order(5001, [(11, "13.33", 3), (12, "5.50", 1)])  # 39.99 and 5.50 points
    assert shop.shopify("orders/paid", order).status_code == 200
    lines = {ln["id"]: ln["points"] for ln in shop.api.get("/v1/events/shopify:order:5001").json()["lines"]}
    assert lines == {"11": 40, "12": 5}  # 45.49 -> 45: the larger fraction takes the spare point
    member = shop.member(email="ann@example.com")
    assert member is not None and shop.api.points(member["id"])["available"] == 45
    r = shop.shopify("refunds/create", refund(7001, 5001, [(11, 1)]))
    assert r.status_code == 200, r.text
    assert shop.api.points(member["id"])["available"] == 45 - 13  # floor(40 * 1 / 3)
    shop.shopify("refunds/create", refund(7002, 5001, [(12, 1)]))
    assert shop.api.points(member["id"])["available"] == 45 - 13 - 5
    cancelled = json.loads(sample("shopify/orders_cancelled.2025-01.json"))
    cancelled["id"] = 5001
    r = shop.shopify("orders/cancelled", cancelled)
    assert r.status_code == 200 and r.json()["status"] == "processed"
    assert shop.api.points(member["id"])["available"] == 0  # the cancel takes what is left of line 11
    late = shop.shopify("refunds/create", refund(7003, 5001, [(11, 1)]))
    assert late.status_code == 200 and late.json()["status"] == "ignored"  # nothing left to take back
    bogus = shop.shopify("refunds/create", refund(7004, 5001, [(99, 1)]))
    assert bogus.status_code == 422 and "not in the purchase" in bogus.json()["detail"]
    after = shop.api.points(member["id"])
    assert (after["available"], after["debt"]) == (0, 0)


def test_the_same_order_delivered_concurrently_enrols_and_credits_once(hooks: TestClient, api: Api) -> None:
    shop = Shop(hooks, api, "shopify")
    order = shopify_order(5401, [(51, "12.00", 1)], email="race@example.com")
    ids = ["same", "same", "same", "other-1", "other-2", "other-3"]
    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(lambda wid: shop.shopify("orders/paid", order, webhook_id=wid), ids))
    assert [a.status_code for a in answers] == [200] * 6, [a.text for a in answers]
    applied = [a.json() for a in answers if not a.json()["replayed"]]
    assert [a["status"] for a in applied].count("processed") == 1  # the others: replays or "already recorded"
    member = shop.member(email="race@example.com")
    assert member is not None and member["points"]["available"] == 12
    assert len(shop.deliveries()) == 4


def test_a_refund_before_its_order_fails_and_succeeds_when_redelivered(hooks: TestClient, api: Api) -> None:
    shop = Shop(hooks, api, "shopify")
    early = shop.shopify("refunds/create", refund(7101, 5101, [(21, 1)]), webhook_id="refund-1")
    assert early.status_code == 422
    assert early.headers["content-type"].startswith("application/problem+json")
    assert early.json()["delivery_status"] == "failed"
    shop.shopify("orders/paid", shopify_order(5101, [(21, "10.00", 2)]))
    member = shop.member(email="ann@example.com")
    assert member is not None and shop.api.points(member["id"])["available"] == 20
    retried = shop.shopify("refunds/create", refund(7101, 5101, [(21, 1)]), webhook_id="refund-1")
    assert retried.status_code == 200 and retried.json()["status"] == "processed"
    assert shop.api.points(member["id"])["available"] == 10
    [row] = [d for d in shop.deliveries() if d["delivery_id"] == "refund-1"]
    assert row["status"] == "processed" and row["attempts"] == 2 and row["error"] is None


def test_cancelling_an_order_never_paid_is_ignored(hooks: TestClient, api: Api) -> None:
    shop = Shop(hooks, api, "shopify")
    r = shop.shopify("orders/cancelled", sample("shopify/orders_cancelled.2025-01.json"))
    assert r.status_code == 200 and r.json()["status"] == "ignored"
    assert shop.member(email="john@example.com") is None


def test_an_order_whose_cancel_was_delivered_first_earns_nothing_when_paid_arrives(
    hooks: TestClient, api: Api
) -> None:
    """Webhooks come in any order: paid then cancelled at once can arrive cancelled first."""
    shop = Shop(hooks, api, "shopify")
    cancelled = json.loads(sample("shopify/orders_cancelled.2025-01.json"))
    cancelled["id"] = 5201
    assert shop.shopify("orders/cancelled", cancelled).json()["status"] == "ignored"
    paid = shop.shopify("orders/paid", shopify_order(5201, [(31, "20.00", 1)], email="late@example.com"))
    assert paid.status_code == 200 and paid.json()["status"] == "ignored"
    assert shop.api.get("/v1/events/shopify:order:5201").status_code == 404
    other = shop.shopify("orders/paid", shopify_order(5202, [(32, "20.00", 1)], email="late@example.com"))
    assert other.json()["status"] == "processed"  # only that order
    member = shop.member(email="late@example.com")
    assert member is not None and shop.api.points(member["id"])["available"] == 20


def test_customers_create_enrols_once(hooks: TestClient, api: Api) -> None:
    shop = Shop(hooks, api, "shopify")
    body = sample("shopify/customers_create.2025-01.json")
    assert shop.shopify("customers/create", body).json()["status"] == "processed"
    member = shop.member(email="bob@biller.com")
    assert member is not None
    assert member["name"] == "Bob Biller" and member["external_id"] == "706405506930370000"
    assert shop.shopify("customers/create", body).json()["status"] == "ignored"
    assert shop.member(external_id="706405506930370000") == member


def test_64_bit_ids_stay_exact_and_discounts_do_not_earn(hooks: TestClient, api: Api) -> None:
    shop = Shop(hooks, api, "shopify")
    r = shop.shopify("orders/paid", sample("shopify/orders_create.docs-2019.exact-ids.json"))
    assert r.status_code == 200, r.text
    event = shop.api.get("/v1/events/shopify:order:820982911946154508").json()
    assert {ln["id"]: ln["points"] for ln in event["lines"]} == {
        "866550311766439020": 199,
        "141249953214522974": 194,  # 199.00 less its 5.00 discount allocation
    }
    member = shop.member(external_id="115310627314723954")
    assert member is not None and member["email"] == "john@test.com"


def test_an_order_from_a_known_member_credits_them(hooks: TestClient, api: Api) -> None:
    shop = Shop(hooks, api, "shopify")
    known = shop.api.member(shop.program, email="Ann@Example.com")
    shop.shopify("orders/paid", shopify_order(5201, [(31, "20.00", 1)], email="ann@example.COM"))
    assert shop.api.points(known)["available"] == 20


def test_a_bad_signature_is_401_and_writes_nothing(hooks: TestClient, api: Api) -> None:
    shop = Shop(hooks, api, "shopify")
    body = sample("shopify/orders_paid.2025-01.json")
    for signature in ("", b64_hmac("not the secret", body), b64_hmac(SECRET, body + b" "), "not base64!"):
        r = shop.shopify("orders/paid", body, signature=signature)
        assert r.status_code == 401, signature
        assert r.headers["content-type"].startswith("application/problem+json")
    tampered = body.replace(b'"price": "199.00"', b'"price": "999.00"')
    r = shop.shopify("orders/paid", tampered, signature=b64_hmac(SECRET, body))
    assert r.status_code == 401
    assert shop.member(email="john@example.com") is None
    assert shop.deliveries() == []


def test_bad_payloads_are_recorded_as_failed_and_never_credit(hooks: TestClient, api: Api) -> None:
    shop = Shop(hooks, api, "shopify")
    truncated = sample("shopify/orders_paid.2025-01.json")[:4000]
    r = shop.shopify("orders/paid", truncated, webhook_id="truncated")
    assert r.status_code == 400 and "JSON" in r.json()["detail"]

    no_customer = shopify_order(5301, [(41, "10.00", 1)])
    del no_customer["customer"]
    no_customer["email"] = no_customer["contact_email"] = None
    r = shop.shopify("orders/paid", no_customer, webhook_id="no-customer")
    assert r.status_code == 422 and "no customer" in r.json()["detail"]

    euros = shopify_order(5302, [(42, "10.00", 1)], email="eve@example.com", currency="EUR")
    r = shop.shopify("orders/paid", euros, webhook_id="euros")
    assert r.status_code == 422 and "EUR" in r.json()["detail"]
    assert shop.member(email="eve@example.com") is None  # nothing of the failed delivery stays

    not_a_line = shopify_order(5303, [(43, "ten dollars", 1)], email="eve@example.com")
    r = shop.shopify("orders/paid", not_a_line, webhook_id="bad-price")
    assert r.status_code == 422

    wrong_shape = shopify_order(5304, [(44, "10.00", 1)], email="eve@example.com")
    wrong_shape["line_items"] = "none"
    r = shop.shopify("orders/paid", wrong_shape, webhook_id="wrong-shape")
    assert r.status_code == 400

    failed = {d["delivery_id"]: d for d in shop.deliveries(status="failed")}
    assert set(failed) == {"truncated", "no-customer", "euros", "bad-price", "wrong-shape"}
    assert all(d["error"] for d in failed.values())
    assert "currency EUR" in failed["euros"]["error"]
    assert shop.member(email="eve@example.com") is None


def test_unknown_topics_are_acknowledged_and_ignored(hooks: TestClient, api: Api) -> None:
    shop = Shop(hooks, api, "shopify")
    r = shop.shopify("products/update", b'{"id": 1}', webhook_id="product")
    assert r.status_code == 200 and r.json()["status"] == "ignored"
    assert [d["status"] for d in shop.deliveries()] == ["ignored"]


def test_deliveries_page_newest_first(hooks: TestClient, api: Api) -> None:
    shop = Shop(hooks, api, "shopify")
    for n in range(5):
        shop.shopify("products/update", b"{}", webhook_id=f"d-{n}")
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = shop.api.get(f"/v1/integrations/{shop.integration['id']}/deliveries", params=params).json()
        seen += [d["delivery_id"] for d in page["data"]]
        if not page["has_more"]:
            break
        cursor = page["next_cursor"]
    assert seen == [f"d-{n}" for n in reversed(range(5))]


# ---------------------------------------------------------------- Square


def square_payment(
    payment_id: str, amount: int, *, status: str = "COMPLETED", **extra: Any
) -> dict[str, Any]:
    body = json.loads(sample("square/payment.updated.docs-example.json"))
    payment = body["data"]["object"]["payment"]
    payment.update(id=payment_id, status=status, amount_money={"amount": amount, "currency": "USD"}, **extra)
    body["event_id"] = str(uuid.uuid4())
    return dict(body)


def test_square_signature_vector() -> None:
    v = vector("square/signature_test_vector.square-sdk.json")
    body = v["raw_body"].encode()
    headers = v["header"]
    assert square.verify(v["signature_key"], body, headers, urls=[v["notification_url"]], now=_now())
    assert not square.verify(
        v["signature_key"], body, headers, urls=["https://elsewhere.example/"], now=_now()
    )
    assert not square.verify(
        v["signature_key"], body + b" ", headers, urls=[v["notification_url"]], now=_now()
    )


def test_square_completed_payment_earns_and_refund_takes_back(hooks: TestClient, api: Api) -> None:
    shop = Shop(hooks, api, "square", secret="Ibxx_5AKakO-3qeNVR61Dw")
    as_is = json.loads(sample("square/payment.updated.docs-example.json"))
    r = shop.square(as_is)
    assert r.status_code == 422 and "no customer" in r.json()["detail"]  # the sample names nobody

    payment = square_payment("KkAkhdMsgzn59SM8A89WgKwekxLZY", 2500, buyer_email_address="sq@example.com")
    r = shop.square(payment)
    assert r.status_code == 200 and r.json()["status"] == "processed", r.text
    member = shop.member(email="sq@example.com")
    assert member is not None and member["points"]["available"] == 25
    assert shop.square(payment).json()["replayed"] is True
    again = {**payment, "event_id": str(uuid.uuid4())}  # a later payment.updated about the same payment
    assert shop.square(again).json()["status"] == "ignored"
    assert shop.api.points(member["id"])["available"] == 25

    r = shop.square(sample("square/refund.updated.docs-example.json"))  # 10.00 of the 25.00 payment
    assert r.status_code == 200 and r.json()["status"] == "processed", r.text
    assert shop.api.points(member["id"])["available"] == 15

    pending = square_payment("pay-2", 900, status="APPROVED", buyer_email_address="sq@example.com")
    assert shop.square(pending).json()["status"] == "ignored"
    assert shop.square(payment, signature=b64_hmac("wrong", as_bytes(payment))).status_code == 401
    assert shop.api.points(member["id"])["available"] == 15


# ---------------------------------------------------------------- WooCommerce


def test_woocommerce_ping_answers_200_and_records_nothing(hooks: TestClient, api: Api) -> None:
    shop = Shop(hooks, api, "woocommerce")
    r = hooks.post(
        shop.path, content=b"webhook_id=15", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert r.status_code == 200
    assert shop.deliveries() == []


def test_woocommerce_order_earns_per_line_and_refunds_reverse_by_amount(hooks: TestClient, api: Api) -> None:
    v = vector("woocommerce/hmac_test_vector.json")
    body = sample(v["file"])
    assert woocommerce.verify(
        v["secret"], body, {"X-WC-Webhook-Signature": v["X-WC-Webhook-Signature"]}, now=_now()
    )
    shop = Shop(hooks, api, "woocommerce", secret=v["secret"])
    r = shop.post(
        body,
        {
            "X-WC-Webhook-Topic": "order.created",
            "X-WC-Webhook-Signature": v["X-WC-Webhook-Signature"],
            "X-WC-Webhook-Delivery-ID": "woo-1",
        },
    )
    assert r.status_code == 200 and r.json()["status"] == "processed", r.text
    member = shop.member(email="john.doe@example.com")
    assert member is not None and member["points"]["available"] == 18  # 6.00 + 12.00; no tax, no shipping
    event = shop.api.get("/v1/events/woocommerce:order:727").json()
    assert event["occurred_at"] == "2017-03-22T19:28:08+00:00"

    order = json.loads(body)
    refund_object = json.loads(sample("woocommerce/order_refund.wc-v3.rest-docs-example.json"))
    order["refunds"] = [{"id": refund_object["id"], "reason": "", "total": "-" + refund_object["amount"]}]
    r = shop.woo("order.updated", order)
    assert r.status_code == 200 and r.json()["status"] == "processed", r.text
    assert shop.api.points(member["id"])["available"] == 8  # 10.00 of 18.00 takes back 10 points
    assert shop.woo("order.updated", order).json()["status"] == "ignored"  # same refund, new delivery
    assert shop.api.points(member["id"])["available"] == 8

    order["status"] = "cancelled"
    assert shop.woo("order.updated", order).json()["status"] == "processed"
    assert shop.api.points(member["id"])["available"] == 0


def test_woocommerce_unpaid_orders_earn_nothing_and_bad_signatures_are_401(
    hooks: TestClient, api: Api
) -> None:
    shop = Shop(hooks, api, "woocommerce")
    order = json.loads(sample("woocommerce/order.wc-v3.rest-docs-example.json"))
    order.update(id=801, status="pending")
    assert shop.woo("order.created", order).json()["status"] == "ignored"
    body = as_bytes({**order, "status": "completed"})
    r = shop.post(
        body, {"X-WC-Webhook-Topic": "order.updated", "X-WC-Webhook-Signature": b64_hmac("x" * 9, body)}
    )
    assert r.status_code == 401
    assert shop.member(email="john.doe@example.com") is None


# ---------------------------------------------------------------- Stripe


def test_stripe_signature_vector_and_its_five_minute_tolerance() -> None:
    v = vector("stripe/checkout.session.completed.signed-test-vector.json")
    body, headers = v["raw_body"].encode(), v["headers"]
    signed_at = datetime.fromtimestamp(int(headers["Stripe-Signature"].split(",")[0][2:]), UTC)
    assert stripe.verify(v["secret"], body, headers, now=signed_at)
    assert stripe.verify(v["secret"], body, headers, now=signed_at + timedelta(minutes=4))
    assert not stripe.verify(v["secret"], body, headers, now=signed_at + timedelta(minutes=6))
    assert not stripe.verify(v["secret"], body + b"\n", headers, now=signed_at)
    assert not stripe.verify("whsec_other", body, headers, now=signed_at)
    assert not stripe.verify(v["secret"], body, {"Stripe-Signature": "garbage"}, now=signed_at)
    t = headers["Stripe-Signature"].split(",")[0]
    for odd in (f"{t},v1=é" + "0" * 63, "t=²,v1=00"):  # text a header may carry: refused, not a 500
        assert not stripe.verify(v["secret"], body, {"Stripe-Signature": odd}, now=signed_at)


def test_stripe_paid_checkout_earns_once(hooks: TestClient, api: Api) -> None:
    v = vector("stripe/checkout.session.completed.signed-test-vector.json")
    shop = Shop(hooks, api, "stripe", secret=v["secret"])
    old = shop.post(v["raw_body"].encode(), v["headers"])  # signed hours ago: a replayed capture
    assert old.status_code == 401
    body = sample("stripe/checkout.session.completed.sample.json")
    r = shop.stripe(body)
    assert r.status_code == 200 and r.json()["status"] == "processed", r.text
    member = shop.member(email="example@example.com")
    assert member is not None and member["external_id"] == "cus_TEST123"
    assert member["points"]["available"] == 50
    assert shop.stripe(body).json()["replayed"] is True
    unpaid = copy.deepcopy(json.loads(body))
    unpaid["id"] = "evt_TEST_2"
    unpaid["data"]["object"].update(id="cs_test_2", payment_status="unpaid")
    assert shop.stripe(unpaid).json()["status"] == "ignored"
    assert shop.api.points(member["id"])["available"] == 50


def test_stripe_amounts_are_read_in_stripes_own_decimals() -> None:
    """Stripe writes ISK in hundredths and MGA in whole ariary, unlike ISO 4217: 5,000 kr and
    10,000 Ar are what Patron records, whatever Stripe's integer looks like."""
    assert stripe.minor(500000, "ISK", "amount_total") == 5000  # ISO: no decimals
    assert stripe.minor(10000, "MGA", "amount_total") == 1000000  # ISO: two decimals
    assert (
        stripe.minor(2933, "USD", "x"),
        stripe.minor(1500, "JPY", "x"),
        stripe.minor(1234, "KWD", "x"),
    ) == (
        2933,
        1500,
        1234,
    )
    with pytest.raises(MalformedPayload):
        stripe.minor(500050, "ISK", "amount_total")  # Stripe never sends a fraction of a krona


def _now() -> datetime:
    return datetime.now(UTC)


def test_stripe_invoices_renew_a_paid_membership_once_and_cancellation_ends_it(
    hooks: TestClient, api: Api
) -> None:
    shop = Shop(hooks, api, "stripe")
    plans = [
        {"id": "plus", "name": "Plus", "fee": 999, "currency": "USD", "interval": "month", "tier": "gold"}
    ]
    r = shop.api.put(f"/v1/programs/{shop.program}", bean_rewards(membership_plans=plans))
    assert r.status_code == 200, r.text
    member = shop.api.member(shop.program, email="sub@example.com")
    first_paid = int(time.time()) - 60
    r = shop.api.post(
        f"/v1/members/{member}/memberships",
        {
            "plan_id": "plus",
            "external_id": "sub_42",
            "payment": {
                "amount": 999,
                "currency": "USD",
                "paid_at": datetime.fromtimestamp(first_paid, UTC).isoformat(),
                "external_ref": "stripe:in_1",
            },
        },
    )
    assert r.status_code == 201, r.text
    membership = r.json()["id"]

    def invoice(invoice_id: str, subscription: str, paid_at: int) -> dict[str, Any]:
        return {
            "id": f"evt_{invoice_id}",
            "type": "invoice.paid",
            "created": paid_at,
            "data": {
                "object": {
                    "id": invoice_id,
                    "object": "invoice",
                    "subscription": subscription,
                    "amount_paid": 999,
                    "currency": "usd",
                    "status_transitions": {"paid_at": paid_at},
                }
            },
        }

    renewal = invoice("in_2", "sub_42", first_paid + 30)
    assert shop.stripe(renewal).json()["status"] == "processed"
    assert shop.stripe({**renewal, "id": "evt_again"}).status_code == 200  # same invoice, new event id
    seen = shop.api.get(f"/v1/memberships/{membership}").json()
    assert seen["fees"]["periods_paid"] == 2 and len(seen["payments"]) == 2
    assert shop.stripe(invoice("in_9", "sub_other", first_paid)).json()["status"] in ("ignored", "processed")
    assert len(shop.api.get(f"/v1/memberships/{membership}").json()["payments"]) == 2
    cancelled = {
        "id": "evt_cancel",
        "type": "customer.subscription.deleted",
        "created": first_paid + 40,
        "data": {"object": {"id": "sub_42", "object": "subscription", "status": "canceled"}},
    }
    assert shop.stripe(cancelled).status_code == 200
    assert shop.api.get(f"/v1/memberships/{membership}").json()["state"] == "cancelled"
