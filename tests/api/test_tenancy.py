"""One merchant never sees or touches another's data; keys are scoped and revocable."""

from __future__ import annotations

from tests.conftest import Api, purchase

COFFEE = [{"id": "l1", "sku": "LATTE", "category": "coffee", "quantity": 1, "unit_price": 500}]


def test_other_merchants_ids_are_404(api: Api, other_api: Api) -> None:
    program = api.program()
    mid = api.member(program, email="mine@example.com")
    api.event(purchase(mid, "o-1", COFFEE))
    for path in (
        f"/v1/members/{mid}",
        f"/v1/members/{mid}/ledger",
        f"/v1/members/{mid}/tier",
        f"/v1/programs/{program}",
        "/v1/events/o-1",
    ):
        r = other_api.get(path)
        assert r.status_code == 404, path
        assert r.json()["type"].endswith("/not-found")
    assert other_api.post("/v1/events", purchase(mid, "o-2", COFFEE)).status_code == 404
    assert other_api.post(f"/v1/members/{mid}/adjustments", {"points": 5, "reason": "x"}).status_code == 404
    assert other_api.post("/v1/members", {"program_id": program, "email": "x@example.com"}).status_code == 404
    assert other_api.get("/v1/members", params={"email": "mine@example.com"}).json()["data"] == []
    assert api.points(mid)["available"] == 10


def test_missing_wrong_and_revoked_keys_are_401(api: Api) -> None:
    assert api.client.get("/v1/programs").status_code == 401
    r = api.client.get("/v1/programs", headers={"Authorization": "Bearer ptr_nope"})
    assert r.status_code == 401
    assert r.json()["type"].endswith("/unauthorized")
    created = api.post("/v1/api-keys", {"name": "till", "scopes": ["pos"]}).json()
    till = {"Authorization": f"Bearer {created['api_key']}"}
    assert api.client.get("/v1/programs", headers=till).status_code == 200
    assert api.delete(f"/v1/api-keys/{created['id']}").status_code == 204
    assert api.client.get("/v1/programs", headers=till).status_code == 401
    listed = api.get("/v1/api-keys").json()["data"]
    assert all("api_key" not in k and "key_hash" not in k for k in listed)


def test_scopes_limit_what_a_key_can_do(api: Api) -> None:
    program = api.program()
    mid = api.member(program, email="scope@example.com")
    read = api.post("/v1/api-keys", {"name": "analyst", "scopes": ["read"]}).json()["api_key"]
    pos = api.post("/v1/api-keys", {"name": "till", "scopes": ["pos"]}).json()["api_key"]
    as_read = {"Authorization": f"Bearer {read}"}
    as_pos = {"Authorization": f"Bearer {pos}"}
    assert api.client.get(f"/v1/members/{mid}", headers=as_read).status_code == 200
    r = api.client.post("/v1/events", json=purchase(mid, "o-1", COFFEE), headers=as_read)
    assert r.status_code == 403
    assert r.json()["type"].endswith("/forbidden")
    assert api.client.post("/v1/events", json=purchase(mid, "o-1", COFFEE), headers=as_pos).status_code == 201
    assert (
        api.client.post("/v1/programs", json={"name": "x", "currency": "USD"}, headers=as_pos).status_code
        == 403
    )
    assert api.post("/v1/api-keys", {"name": "bad", "scopes": ["root"]}).status_code == 422
