"""Outbound webhook endpoints through the API: register (the secret shown once), change, remove,
the delivery log, replay, the outbox listing; bad input and other merchants' ids."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine

from patron.services import outbox, webhooks_out
from tests.conftest import Api
from tests.integration.test_outbox import Receiver, receiver, verify

__all__ = ["receiver"]  # the fixture


def now() -> datetime:
    return datetime.now(UTC)


def create(api: Api, url: str, expect: int = 201, **fields: Any) -> dict[str, Any]:
    r = api.post("/v1/webhook-endpoints", {"url": url, **fields})
    assert r.status_code == expect, r.text
    return dict(r.json())


def emit(engine: Engine, api: Api, member: str, type: str = outbox.POINTS_EARNED, **data: Any) -> str:
    with engine.begin() as conn:
        return outbox.emit(
            conn, merchant_id=api.merchant_id, type=type, member_id=member, occurred_at=now(), data=data
        )


def test_register_change_and_remove_an_endpoint(api: Api) -> None:
    ep = create(api, "https://crm.example.com/hooks", description="CRM", event_types=["tier.changed"])
    assert ep["secret"].startswith("whsec_") and ep["enabled"] is True
    assert ep["event_types"] == ["tier.changed"] and ep["description"] == "CRM"
    shown = api.get(f"/v1/webhook-endpoints/{ep['id']}").json()
    assert "secret" not in shown and shown["url"] == "https://crm.example.com/hooks"
    assert [e["id"] for e in api.get("/v1/webhook-endpoints").json()["data"]] == [ep["id"]]
    assert "secret" not in api.get("/v1/webhook-endpoints").json()["data"][0]

    r = api.patch(f"/v1/webhook-endpoints/{ep['id']}", {"event_types": [], "enabled": False})
    assert r.status_code == 200, r.text
    assert r.json()["event_types"] == [] and r.json()["enabled"] is False
    assert r.json()["disabled_reason"] == "disabled by the merchant"
    r = api.patch(f"/v1/webhook-endpoints/{ep['id']}", {"enabled": True, "url": "http://10.0.0.5:8080/in"})
    assert r.json()["enabled"] is True and r.json()["disabled_reason"] is None
    assert r.json()["url"] == "http://10.0.0.5:8080/in"

    assert api.delete(f"/v1/webhook-endpoints/{ep['id']}").status_code == 204
    assert api.get(f"/v1/webhook-endpoints/{ep['id']}").status_code == 404
    assert api.get("/v1/webhook-endpoints").json()["data"] == []


def test_creating_twice_with_one_idempotency_key_makes_one_endpoint(api: Api) -> None:
    headers = {"Idempotency-Key": "hook-1"}
    first = api.post("/v1/webhook-endpoints", {"url": "https://a.example.com/"}, headers=headers)
    again = api.post("/v1/webhook-endpoints", {"url": "https://a.example.com/"}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json()["id"] == first.json()["id"]
    assert first.json()["secret"].startswith("whsec_")
    assert again.json()["secret"] is None  # shown once: a replay does not show it again
    assert len(api.get("/v1/webhook-endpoints").json()["data"]) == 1


@pytest.mark.parametrize(
    "body",
    [
        {"url": "ftp://files.example.com/in"},
        {"url": "not a url"},
        {"url": "https://"},
        {"url": "javascript:alert(1)"},
        {"url": "http://[::1"},
        {"url": "https://ok.example.com:99999/"},
        {"url": "https://ok\x00.example.com/"},
        {"url": "https://ok.example.com", "description": "line\x00"},
        {"url": ""},
        {},
        {"url": "https://ok.example.com", "event_types": ["points.stolen"]},
        {"url": "https://ok.example.com", "color": "red"},
    ],
)
def test_bad_endpoints_are_422_and_write_nothing(api: Api, body: dict[str, Any]) -> None:
    r = api.post("/v1/webhook-endpoints", body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert api.get("/v1/webhook-endpoints").json()["data"] == []


def test_bad_changes_are_422(api: Api) -> None:
    ep = create(api, "https://crm.example.com/hooks")
    for body in ({"url": "mailto:a@example.com"}, {"event_types": ["nope"]}, {"enabled": "maybe"}):
        r = api.patch(f"/v1/webhook-endpoints/{ep['id']}", body)
        assert r.status_code == 422, (body, r.text)
    assert api.get(f"/v1/webhook-endpoints/{ep['id']}").json()["url"] == "https://crm.example.com/hooks"


def test_another_merchants_endpoint_and_events_are_404(api: Api, other_api: Api, engine: Engine) -> None:
    ep = create(api, "https://crm.example.com/hooks")
    event = emit(engine, api, "mem_a")
    path = f"/v1/webhook-endpoints/{ep['id']}"
    assert other_api.get(path).status_code == 404
    assert other_api.patch(path, {"description": "mine"}).status_code == 404
    assert other_api.delete(path).status_code == 404
    assert other_api.get(f"{path}/deliveries").status_code == 404
    assert other_api.post(f"{path}/replay", {"event_id": event}).status_code == 404
    theirs = create(other_api, "https://other.example.com/hooks")
    r = other_api.post(f"/v1/webhook-endpoints/{theirs['id']}/replay", {"event_id": event})
    assert r.status_code == 404 and r.json()["type"].endswith("/not-found")
    assert other_api.get("/v1/outbox-events").json()["data"] == []
    assert other_api.get(f"/v1/outbox-events/{event}").status_code == 404
    assert api.get(path).json()["description"] == ""  # untouched


def test_the_outbox_lists_newest_first_by_member_and_type_in_pages(api: Api, engine: Engine) -> None:
    a = [emit(engine, api, "mem_a", n=i) for i in range(3)]
    b = emit(engine, api, "mem_b", outbox.MEMBER_ENROLLED)
    everything = api.get("/v1/outbox-events").json()
    assert [e["id"] for e in everything["data"]] == [b, *a[::-1]]
    assert everything["has_more"] is False and everything["next_cursor"] is None

    first = api.get("/v1/outbox-events", params={"member_id": "mem_a", "limit": 2}).json()
    assert [e["id"] for e in first["data"]] == [a[2], a[1]] and first["has_more"] is True
    assert [e["sequence"] for e in first["data"]] == [3, 2]
    rest = api.get("/v1/outbox-events", params={"member_id": "mem_a", "cursor": first["next_cursor"]}).json()
    assert [e["id"] for e in rest["data"]] == [a[0]] and rest["has_more"] is False
    assert rest["data"][0]["data"] == {"n": 0} and rest["data"][0]["type"] == "points.earned"
    one = api.get(f"/v1/outbox-events/{a[0]}")
    assert one.status_code == 200 and one.json() == rest["data"][0]

    enrolled = api.get("/v1/outbox-events", params={"type": "member.enrolled"}).json()["data"]
    assert [e["id"] for e in enrolled] == [b]
    assert api.get("/v1/outbox-events", params={"type": "nope"}).status_code == 422
    assert api.get("/v1/outbox-events", params={"cursor": "%%%"}).status_code == 422
    assert api.get("/v1/outbox-events", params={"limit": 0}).status_code == 422
    assert api.get("/v1/outbox-events", params={"cursor": "AA"}).status_code == 422  # a NUL byte
    assert api.get("/v1/outbox-events", params={"member_id": "a\x00"}).status_code == 422
    assert api.get("/v1/outbox-events/%00").status_code == 404
    assert api.get("/v1/webhook-endpoints/%00").status_code == 404

    types = api.get("/v1/webhook-event-types").json()["data"]
    assert {t["type"] for t in types} == set(outbox.EVENT_TYPES) and "tier.changed" in outbox.EVENT_TYPES


def test_delivery_log_and_replay(api: Api, engine: Engine, receiver: Receiver) -> None:
    ep = create(api, receiver.url("crm"), event_types=["points.earned"])
    receiver.script["/crm"] = [(500, 0.0)]
    event = emit(engine, api, "mem_a", points=120)
    emit(engine, api, "mem_a", outbox.MEMBER_UPDATED)  # filtered out
    at = now()
    webhooks_out.dispatch(engine, merchant_id=api.merchant_id, now=at)
    webhooks_out.dispatch(engine, merchant_id=api.merchant_id, now=at + timedelta(seconds=30))
    [delivery] = api.get(f"/v1/webhook-endpoints/{ep['id']}/deliveries").json()["data"]
    assert delivery["event_id"] == event and delivery["event_type"] == "points.earned"
    assert delivery["status"] == "delivered" and delivery["attempts"] == 2
    assert [(a["attempt"], a["status_code"], a["error"]) for a in delivery["log"]] == [
        (1, 500, "HTTP 500"),
        (2, 200, None),
    ]
    assert all(a["duration_ms"] >= 0 for a in delivery["log"])

    r = api.post(f"/v1/webhook-endpoints/{ep['id']}/replay", {"event_id": event})
    assert r.status_code == 202, r.text
    assert r.json()["replay"] is True and r.json()["status"] == "pending"
    webhooks_out.dispatch(engine, merchant_id=api.merchant_id, now=now())
    got = receiver.at("crm")
    assert [g.headers["webhook-id"] for g in got] == [event] * 3
    assert all(verify(ep["secret"], g) for g in got) and got[-1].json["data"] == {"points": 120}

    page = api.get(f"/v1/webhook-endpoints/{ep['id']}/deliveries", params={"limit": 1}).json()
    assert page["data"][0]["replay"] is True and page["has_more"] is True
    older = api.get(
        f"/v1/webhook-endpoints/{ep['id']}/deliveries", params={"limit": 1, "cursor": page["next_cursor"]}
    ).json()
    assert older["data"][0]["id"] == delivery["id"] and older["has_more"] is False

    assert api.post(f"/v1/webhook-endpoints/{ep['id']}/replay", {"event_id": "evt_nope"}).status_code == 404
    api.patch(f"/v1/webhook-endpoints/{ep['id']}", {"enabled": False})
    r = api.post(f"/v1/webhook-endpoints/{ep['id']}/replay", {"event_id": event})
    assert r.status_code == 409 and "disabled" in r.json()["detail"]
