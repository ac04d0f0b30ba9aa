"""Idempotency-Key on POSTs: a replay returns the stored response; a different body is 409."""

from __future__ import annotations

from tests.conftest import Api


def test_idempotency_key_replays_member_creation(api: Api) -> None:
    program = api.program()
    body = {"program_id": program, "email": "idem@example.com"}
    first = api.post("/v1/members", body, headers={"Idempotency-Key": "k-1"})
    second = api.post("/v1/members", body, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == second.status_code == 201
    assert second.json()["id"] == first.json()["id"]
    assert second.headers.get("idempotent-replayed") == "true"
    assert len(api.get("/v1/members", params={"program_id": program}).json()["data"]) == 1
    other = api.post("/v1/members", {**body, "email": "else@example.com"}, headers={"Idempotency-Key": "k-1"})
    assert other.status_code == 409
    assert other.json()["type"].endswith("/idempotency-conflict")


def test_idempotency_key_makes_adjustments_safe_to_retry(api: Api) -> None:
    member = api.member(api.program(), email="adj@example.com")
    for _ in range(3):
        r = api.post(
            f"/v1/members/{member}/adjustments",
            {"points": 50, "reason": "sorry"},
            headers={"Idempotency-Key": "adj-7"},
        )
        assert r.status_code == 201
    assert api.points(member)["available"] == 50
    # without a key, each adjustment is a new one
    api.post(f"/v1/members/{member}/adjustments", {"points": 5, "reason": "again"})
    api.post(f"/v1/members/{member}/adjustments", {"points": 5, "reason": "again"})
    assert api.points(member)["available"] == 60


def test_keys_are_per_merchant(api: Api, other_api: Api) -> None:
    p1, p2 = api.program(), other_api.program()
    a = api.post(
        "/v1/members", {"program_id": p1, "email": "x@example.com"}, headers={"Idempotency-Key": "same"}
    )
    b = other_api.post(
        "/v1/members", {"program_id": p2, "email": "x@example.com"}, headers={"Idempotency-Key": "same"}
    )
    assert a.status_code == b.status_code == 201
    assert a.json()["id"] != b.json()["id"]


def test_a_replayed_api_key_creation_does_not_show_the_key_again(api: Api) -> None:
    """The key is shown once: a replay answers the same key without the secret, which is not in
    the stored answer another admin key could replay either."""
    headers = {"Idempotency-Key": "new-key-1"}
    body = {"name": "till 2", "scopes": ["pos"]}
    first = api.post("/v1/api-keys", body, headers=headers)
    assert first.status_code == 201 and first.json()["api_key"]
    again = api.post("/v1/api-keys", body, headers=headers)
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"] and again.json()["api_key"] is None
    assert len([k for k in api.get("/v1/api-keys").json()["data"] if k["name"] == "till 2"]) == 1
