"""A table of bad inputs: each gets a 4xx problem+json that says what is wrong, and nothing is written."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Api, bean_rewards, purchase

LINE = {"id": "l1", "sku": "LATTE", "category": "coffee", "quantity": 1, "unit_price": 450}


def ev(member: str, **changes: Any) -> dict[str, Any]:
    body = purchase(member, "bad-1", [LINE])
    body.update(changes)
    return {k: v for k, v in body.items() if v is not ...}


EVENTS: list[tuple[str, Any, int]] = [
    ("no items", lambda m: ev(m, items=[]), 422),
    ("negative price", lambda m: ev(m, items=[{**LINE, "unit_price": -1}]), 422),
    ("zero quantity", lambda m: ev(m, items=[{**LINE, "quantity": 0}]), 422),
    ("absurd quantity", lambda m: ev(m, items=[{**LINE, "quantity": 10**9}]), 422),
    ("absurd price", lambda m: ev(m, items=[{**LINE, "unit_price": 10**15}]), 422),
    ("string quantity", lambda m: ev(m, items=[{**LINE, "quantity": "two"}]), 422),
    ("float price", lambda m: ev(m, items=[{**LINE, "unit_price": 4.5}]), 422),
    ("discount above price", lambda m: ev(m, items=[{**LINE, "discount": 451}]), 422),
    ("duplicate line ids", lambda m: ev(m, items=[LINE, LINE]), 422),
    ("unknown field", lambda m: ev(m, colour="red"), 422),
    ("unknown type", lambda m: ev(m, type="gift"), 422),
    ("bad type name", lambda m: ev(m, type="DROP TABLE"), 422),
    ("naive time", lambda m: ev(m, occurred_at="2026-03-01T10:00:00"), 422),
    ("not a time", lambda m: ev(m, occurred_at="yesterday"), 422),
    ("future time", lambda m: ev(m, occurred_at="2099-01-01T00:00:00Z"), 422),
    ("first day there is, east of UTC", lambda m: ev(m, occurred_at="0001-01-01T00:00:00+05:00"), 422),
    ("before 1970", lambda m: ev(m, occurred_at="1969-12-31T23:59:59Z"), 422),
    (
        "a total no till rings up",
        lambda m: ev(
            m, items=[{**LINE, "id": f"l{i}", "unit_price": 10**12, "quantity": 10**6} for i in range(3)]
        ),
        422,
    ),
    ("wrong currency", lambda m: ev(m, currency="EUR"), 422),
    ("lowercase currency", lambda m: ev(m, currency="usd"), 422),
    ("unknown member", lambda m: ev("mem_nope"), 404),
    ("missing id", lambda m: ev(m, id=...), 422),
    ("empty id", lambda m: ev(m, id=""), 422),
    ("huge id", lambda m: ev(m, id="x" * 500), 422),
    ("refund without reference", lambda m: {"id": "r", "type": "refund", "member_id": m, "amount": 5}, 422),
    (
        "refund of unknown order",
        lambda m: {"id": "r", "type": "refund", "member_id": m, "refers_to": "nope", "amount": 5},
        404,
    ),
    (
        "refund items and amount",
        lambda m: {
            "id": "r",
            "type": "refund",
            "member_id": m,
            "refers_to": "ok-1",
            "amount": 5,
            "items": [{"id": "l1"}],
        },
        422,
    ),
    (
        "refund more than bought",
        lambda m: {
            "id": "r",
            "type": "refund",
            "member_id": m,
            "refers_to": "ok-1",
            "items": [{"id": "l1", "quantity": 2}],
        },
        422,
    ),
    (
        "refund unknown line",
        lambda m: {"id": "r", "type": "refund", "member_id": m, "refers_to": "ok-1", "items": [{"id": "zz"}]},
        422,
    ),
    (
        "refund amount too big",
        lambda m: {"id": "r", "type": "refund", "member_id": m, "refers_to": "ok-1", "amount": 99999},
        422,
    ),
    ("visit with items", lambda m: {"id": "v", "type": "visit", "member_id": m, "items": [LINE]}, 422),
    ("array body", lambda m: [ev(m)], 422),
    ("string body", lambda m: "purchase", 422),
    ("null body", lambda m: None, 422),
]


@pytest.mark.parametrize(("case", "make", "status"), EVENTS, ids=[c[0] for c in EVENTS])
def test_bad_events_are_refused_and_write_nothing(api: Api, case: str, make: Any, status: int) -> None:
    program = api.program()
    member = api.member(program, email="bad@example.com")
    api.event(purchase(member, "ok-1", [LINE]))
    before = api.get(f"/v1/members/{member}/ledger").json()["data"]
    r = api.post("/v1/events", make(member))
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert {"type", "title", "status", "detail"} <= set(problem)
    assert problem["status"] == status
    assert problem["detail"]
    assert api.get(f"/v1/members/{member}/ledger").json()["data"] == before
    assert api.get("/v1/events/bad-1").status_code == 404


def test_malformed_json_and_wrong_media_are_4xx(api: Api) -> None:
    h = api.headers({"content-type": "application/json"})
    r = api.client.post("/v1/events", content=b'{"id": "x", "type": ', headers=h)
    assert r.status_code == 400
    assert r.json()["type"].endswith("/malformed-json")
    r = api.client.post("/v1/members", content=b"\xff\xfe\x00", headers=h)
    assert 400 <= r.status_code < 500


def test_oversize_body_is_413(api: Api) -> None:
    big = b'{"id": "' + b"x" * 2_000_000 + b'"}'
    r = api.client.post("/v1/events", content=big, headers=api.headers({"content-type": "application/json"}))
    assert r.status_code == 413
    assert r.json()["type"].endswith("/payload-too-large")


MEMBERS: list[tuple[str, dict[str, Any]]] = [
    ("bad email", {"email": "not-an-email"}),
    ("bad phone", {"phone": "12345"}),
    ("phone without country", {"phone": "415 555 0123"}),
    ("future birthday", {"birthday": "2999-01-01"}),
    ("enrolled in the future", {"email": "f@example.com", "enrolled_at": "2999-01-01T00:00:00Z"}),
    ("enrolled on the last day there is", {"email": "l@example.com", "enrolled_at": "9999-12-31T23:59:59Z"}),
    ("bad birthday", {"birthday": "31/12/1990"}),
    ("unknown field", {"email": "a@example.com", "is_admin": True}),
    ("long name", {"name": "n" * 1000}),
    ("unknown program", {"program_id": "prg_nope"}),
]


@pytest.mark.parametrize(("case", "fields"), MEMBERS, ids=[c[0] for c in MEMBERS])
def test_bad_members_are_refused(api: Api, case: str, fields: dict[str, Any]) -> None:
    program = api.program()
    r = api.post("/v1/members", {"program_id": program, **fields})
    assert r.status_code in (404, 422), r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert api.get("/v1/members", params={"program_id": program}).json()["data"] == []


PROGRAMS: list[tuple[str, dict[str, Any]]] = [
    ("no name", {"currency": "USD"}),
    ("bad currency", {"name": "P", "currency": "dollars"}),
    ("bad timezone", {"name": "P", "currency": "USD", "timezone": "Mars/Olympus"}),
    ("unknown rule type", {"name": "P", "currency": "USD", "earning_rules": [{"id": "x", "type": "magic"}]}),
    (
        "zero per_amount",
        {"name": "P", "currency": "USD", "earning_rules": [{"id": "x", "type": "spend", "per_amount": 0}]},
    ),
    (
        "multiplier below one",
        {
            "name": "P",
            "currency": "USD",
            "earning_rules": [{"id": "x", "type": "multiplier", "multiplier": "0.5"}],
        },
    ),
    (
        "duplicate rule ids",
        {
            "name": "P",
            "currency": "USD",
            "earning_rules": [{"id": "x", "type": "spend"}, {"id": "x", "type": "spend"}],
        },
    ),
    (
        "action named like a builtin",
        {
            "name": "P",
            "currency": "USD",
            "earning_rules": [{"id": "x", "type": "action", "action": "purchase", "points": 1}],
        },
    ),
    (
        "duplicate tier thresholds",
        {
            "name": "P",
            "currency": "USD",
            "tiers": {
                "levels": [{"id": "a", "name": "A", "threshold": 0}, {"id": "b", "name": "B", "threshold": 0}]
            },
        },
    ),
    ("negative expiry", {"name": "P", "currency": "USD", "expiry": {"months": -1}}),
    (
        "hours with an offset",
        {
            "name": "P",
            "currency": "USD",
            "earning_rules": [
                {"id": "x", "type": "spend", "hours": {"from": "09:00:00+02:00", "to": "11:00:00+02:00"}}
            ],
        },
    ),
    (
        "hours that never open",
        {
            "name": "P",
            "currency": "USD",
            "earning_rules": [{"id": "x", "type": "spend", "hours": {"from": "09:00", "to": "09:00"}}],
        },
    ),
    (
        "grace beyond a year",
        {
            "name": "P",
            "currency": "USD",
            "tiers": {"grace_days": 10**9, "levels": [{"id": "a", "name": "A", "threshold": 0}]},
        },
    ),
]


@pytest.mark.parametrize(("case", "body"), PROGRAMS, ids=[c[0] for c in PROGRAMS])
def test_bad_programs_are_refused_with_the_field_named(api: Api, case: str, body: dict[str, Any]) -> None:
    r = api.post("/v1/programs", body)
    assert r.status_code == 422, r.text
    problem = r.json()
    assert problem["errors"]
    assert all(e["msg"] for e in problem["errors"])
    assert api.get("/v1/programs").json()["data"] == []


def test_unicode_everywhere(api: Api) -> None:
    program = api.program(
        {
            "name": "Café ☕ Rewards — 東京",
            "currency": "JPY",
            "timezone": "Asia/Tokyo",
            "earning_rules": [{"id": "base", "type": "spend", "points": 1, "per_amount": 100}],
        }
    )
    member = api.member(program, name="Zoë Ångström 山田", email="zoë@exämple.com")
    out = api.event(
        purchase(
            member,
            "注文-1",
            [{"id": "行1", "sku": "抹茶", "category": "お茶", "quantity": 1, "unit_price": 500}],
            currency="JPY",
        )
    )
    assert out["points"] == 5
    assert api.get("/v1/events/注文-1").json()["points"] == 5
    assert api.get(f"/v1/members/{member}").json()["name"] == "Zoë Ångström 山田"


def test_bad_query_parameters(api: Api) -> None:
    member = api.member(api.program(), email="q@example.com")
    assert api.get(f"/v1/members/{member}/ledger", params={"cursor": "garbage"}).status_code == 422
    assert api.get(f"/v1/members/{member}/ledger", params={"limit": 0}).status_code == 422
    assert api.get(f"/v1/members/{member}", params={"as_of": "soon"}).status_code == 422
    assert api.get("/v1/members").status_code == 422
    assert api.get("/v1/nowhere").status_code == 404
    assert api.client.delete("/v1/programs").status_code in (401, 405)


def test_nul_characters_are_refused_not_a_500(api: Api) -> None:
    """PostgreSQL keeps no NUL in text; SQLite does. Either way: a clear 4xx and nothing written."""
    program = api.program()
    for path in ("/v1/members/%00", "/v1/programs/%00", "/v1/redemptions/a%00b"):
        r = api.get(path)
        assert r.status_code in (404, 422), (path, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    r = api.post("/v1/members", {"program_id": program, "email": "nul@example.com", "name": "Ann\u0000Lee"})
    assert r.status_code in (201, 422), r.text
    if r.status_code == 422:
        assert "NUL" in r.json()["detail"]
        assert api.get("/v1/members", params={"email": "nul@example.com"}).json()["data"] == []


INSTANTS = [
    "0001-01-01T00:00:00+05:00",
    "9999-12-31T23:00:00-05:00",
    "9999-12-31T23:59:59Z",
    "1900-01-01T00:00:00Z",
]


@pytest.mark.parametrize("at", INSTANTS)
def test_instants_out_of_range_are_422_wherever_a_time_is_taken(api: Api, at: str) -> None:
    """Times a datetime can hold but Patron cannot compute with (no room for a period or an expiry
    after them, or no UTC for them): a 422 naming the field, never a 500."""
    program = api.program()
    member = api.member(program, email="t@example.com")
    calls = [
        api.post(
            "/v1/events/calculate",
            {"type": "purchase", "member_id": member, "occurred_at": at, "items": [LINE]},
        ),
        api.get(f"/v1/members/{member}", params={"as_of": at}),
        api.get(f"/v1/members/{member}/tier", params={"as_of": at}),
        api.get(f"/v1/members/{member}/tier/history", params={"as_of": at}),
        api.get(f"/v1/members/{member}/ledger", params={"as_of": at}),
        api.get(f"/v1/programs/{program}", params={"as_of": at}),
        api.put(f"/v1/programs/{program}", bean_rewards(), params={"effective_from": at}),
        api.post(f"/v1/members/{member}/tier", {"tier_id": "gold", "reason": "vip", "until": at}),
    ]
    for r in calls:
        assert r.status_code == 422, (r.request.url, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    assert api.get(f"/v1/programs/{program}/versions").json()["data"][-1]["version"] == 1
    history = api.get(f"/v1/members/{member}/tier/history").json()["data"]
    assert [c for c in history if c["cause"] == "assignment"] == []


def test_a_dividend_year_no_calendar_has_is_422(api: Api) -> None:
    program = api.program()
    for year in (10**30, 10000, 1969):
        r = api.get(f"/v1/programs/{program}/dividends/{year}")
        assert r.status_code == 422, r.text


def test_report_windows_ending_before_1970_are_422(api: Api) -> None:
    """Counting the default window back from such an end left the calendar (a 500)."""
    p = api.program()
    for path, params in (
        ("analytics/rfm", {"to": "0001-01-01"}),
        ("analytics/cohorts", {"to": "0001-06-01"}),
        ("analytics/kpis/extended", {"to": "0001-01-10"}),
        ("analytics/tier-thresholds", {"to": "0001-01-01"}),
        ("analytics/kpis", {"end": "0001-01-10"}),
    ):
        r = api.get(f"/v1/programs/{p}/{path}", params=params)
        assert r.status_code == 422 and r.json()["type"].endswith("/invalid-input"), (path, r.text)
    body = {"program": bean_rewards(tiers=None), "from": "0001-01-01", "to": "0001-03-31"}
    assert api.post(f"/v1/programs/{p}/simulations", body).status_code == 422
