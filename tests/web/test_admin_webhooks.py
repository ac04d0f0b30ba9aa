"""Webhook endpoints in the console: an owner creates one (the secret shown once; a bad URL comes
back beside the field), sees its deliveries, replays an event, disables and enables it; managers
and other merchants get the same 404."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from patron.services import outbox, users, webhooks_out
from tests.web.conftest import PASSWORD, build_shop, csrf_of, sign_in, unique


def _create(client: TestClient, **fields: Any) -> Any:
    page = client.get("/admin/webhooks")
    assert page.status_code == 200
    return client.post("/admin/webhooks", data={"csrf_token": csrf_of(page.text), **fields})


def test_an_owner_creates_an_endpoint_and_sees_the_secret_once(
    browser_client: TestClient, shop: dict[str, Any]
) -> None:
    sign_in(browser_client, shop["owner"])
    r = _create(browser_client, url="ftp://nope", description="CRM")
    assert r.status_code == 422 and 'id="wh-url-error">Enter a full http or https address' in r.text
    assert 'value="CRM"' in r.text
    r = _create(browser_client, url="", description="")
    assert r.status_code == 422 and 'id="wh-url-error"' in r.text
    r = _create(
        browser_client, url="https://crm.example.com/hooks", description="CRM", event_types="tier.changed"
    )
    assert r.status_code == 200
    secret = re.search(r'id="new-secret">(whsec_[^<]+)<', r.text)
    assert secret
    page = browser_client.get("/admin/webhooks").text
    assert "https://crm.example.com/hooks" in page and "tier.changed" in page
    assert secret.group(1) not in page  # shown once


def test_deliveries_replay_and_disable(
    browser_client: TestClient, shop: dict[str, Any], engine: Engine
) -> None:
    mid = shop["merchant_id"]
    with engine.begin() as conn:
        endpoint = webhooks_out.create_endpoint(conn, merchant_id=mid, url="https://crm.example.com/in")
        event_id = outbox.emit(
            conn,
            merchant_id=mid,
            type=outbox.POINTS_EARNED,
            member_id=shop["ann"]["id"],
            occurred_at=datetime.now(UTC),
            data={"points": 300},
        )
    fanned = 1
    while fanned:  # the database is shared: other tests' events may come first
        with engine.begin() as conn:
            fanned, _ = webhooks_out.fan_out(conn, now=datetime.now(UTC), limit=500)
    sign_in(browser_client, shop["owner"])
    url = f"/admin/webhooks/{endpoint['id']}"
    page = browser_client.get(url)
    assert page.status_code == 200
    assert "points.earned" in page.text and event_id in page.text and ">pending<" in page.text
    csrf = csrf_of(page.text)
    r = browser_client.post(f"{url}/replay", data={"event_id": "evt_nope", "csrf_token": csrf})
    assert r.status_code == 422 and 'id="replay-event-error">There is no event with this id.' in r.text
    r = browser_client.post(f"{url}/replay", data={"event_id": event_id, "csrf_token": csrf})
    assert r.status_code == 303
    page = browser_client.get(r.headers["location"]).text
    assert "queued to be sent again" in page and ">replay<" in page
    r = browser_client.post(f"{url}/enabled", data={"enabled": "0", "csrf_token": csrf})
    assert r.status_code == 303
    page = browser_client.get(url).text
    assert 'id="endpoint-state">disabled<' in page and "disabled by the merchant" in page
    r = browser_client.post(f"{url}/replay", data={"event_id": event_id, "csrf_token": csrf})
    assert r.status_code == 409 and "enable it first" in r.text
    r = browser_client.post(f"{url}/enabled", data={"enabled": "1", "csrf_token": csrf})
    assert 'id="endpoint-state">enabled<' in browser_client.get(url).text


def test_managers_and_other_merchants_get_not_found(
    browser_client: TestClient, shop: dict[str, Any], engine: Engine
) -> None:
    other = build_shop(engine)
    with engine.begin() as conn:
        theirs = webhooks_out.create_endpoint(
            conn, merchant_id=other["merchant_id"], url="https://them.example/in"
        )
        manager = users.create_user(
            conn,
            merchant_id=shop["merchant_id"],
            email=f"{unique('m')}@example.com",
            password=PASSWORD,
            role="manager",
        )
    sign_in(browser_client, shop["owner"])
    page = browser_client.get("/admin/webhooks")
    assert "them.example" not in page.text
    assert browser_client.get(f"/admin/webhooks/{theirs['id']}").status_code == 404
    r = browser_client.post(
        f"/admin/webhooks/{theirs['id']}/enabled", data={"enabled": "0", "csrf_token": csrf_of(page.text)}
    )
    assert r.status_code == 404
    browser_client.cookies.clear()
    sign_in(browser_client, manager["email"])
    assert browser_client.get("/admin/webhooks").status_code == 404
    assert "/admin/webhooks" not in browser_client.get("/admin").text
