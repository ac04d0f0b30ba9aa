"""The ``at-risk`` job on hand-made purchase histories: who is found, the follow-up case it opens,
re-runs that change nothing, recovery, and the BG/NBD path when the program has enough buyers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from patron.services.at_risk import run_at_risk_programs
from patron.services.jobs import run_job
from tests.conftest import Api, bean_rewards


def buy(api: Api, member: str, at: datetime, key: str, amount: int = 500) -> None:
    api.event(
        {
            "id": key,
            "type": "purchase",
            "member_id": member,
            "occurred_at": at.isoformat(),
            "currency": "USD",
            "items": [{"id": "l1", "quantity": 1, "unit_price": amount}],
        }
    )


def program_with(api: Api, **at_risk: Any) -> str:
    return api.program(bean_rewards(expiry=None, at_risk=at_risk) if at_risk else bean_rewards(expiry=None))


def test_finds_the_lapsed_member_opens_one_case_and_a_rerun_changes_nothing(api: Api, engine: Engine) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    program = program_with(api)  # defaults: 90 days, at least 2 purchases, cases on
    lapsed = api.member(program, email="lapsed@example.com")
    regular = api.member(program, email="regular@example.com")
    once = api.member(program, email="once@example.com")
    api.member(program, email="never@example.com")
    buy(api, lapsed, now - timedelta(days=200), "a1")
    buy(api, lapsed, now - timedelta(days=100), "a2")
    buy(api, regular, now - timedelta(days=150), "b1")
    buy(api, regular, now - timedelta(days=10), "b2")
    buy(api, once, now - timedelta(days=100), "c1")  # one purchase: not assessed

    first = run_job(engine, "at-risk", as_of=now, merchant_id=api.merchant_id)
    assert (first.members, first.lots) == (2, 1)  # two members assessed, one newly at risk

    listed = api.get(f"/v1/programs/{program}/at-risk").json()["data"]
    assert [row["member_id"] for row in listed] == [lapsed]
    row = listed[0]
    assert row["recency_days"] == 100 and row["purchases"] == 2 and row["method"] == "recency"
    assert row["p_alive"] is None  # four members cannot fit BG/NBD: recency alone
    cases = api.get("/v1/cases").json()["data"]
    assert len(cases) == 1 and cases[0]["id"] == row["case_id"]
    assert (cases[0]["member_id"], cases[0]["source"], cases[0]["status"]) == (lapsed, "at_risk", "open")
    assert datetime.fromisoformat(cases[0]["opened_at"]) == now
    assert "100 days" in cases[0]["summary"]

    again = run_job(engine, "at-risk", as_of=now, merchant_id=api.merchant_id)
    assert (again.members, again.lots) == (2, 0)
    [detail] = run_at_risk_programs(engine, as_of=now, merchant_id=api.merchant_id)
    assert detail.newly == [] and detail.cases == [] and "recency only" in (detail.note or "")
    assert api.get(f"/v1/programs/{program}/at-risk").json()["data"] == listed
    assert len(api.get("/v1/cases").json()["data"]) == 1

    # The next day: still at risk, not newly; the list is refreshed and keeps pointing at the case.
    later = run_job(engine, "at-risk", as_of=now + timedelta(days=1), merchant_id=api.merchant_id)
    assert (later.members, later.lots) == (2, 0)
    [row] = api.get(f"/v1/programs/{program}/at-risk").json()["data"]
    assert (row["member_id"], row["recency_days"], row["case_id"]) == (lapsed, 101, cases[0]["id"])
    assert len(api.get("/v1/cases").json()["data"]) == 1


def test_recovery_leaves_the_list_and_a_relapse_keeps_the_open_case(api: Api, engine: Engine) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    program = program_with(api, inactive_days=15)
    member = api.member(program, email="m@example.com")
    for i, days in enumerate((60, 40, 18)):
        buy(api, member, now - timedelta(days=days), f"p{i}")

    first = run_job(engine, "at-risk", as_of=now - timedelta(days=20), merchant_id=api.merchant_id)
    assert first.lots == 1
    assert [r["recency_days"] for r in api.get(f"/v1/programs/{program}/at-risk").json()["data"]] == [20]

    back = run_job(engine, "at-risk", as_of=now - timedelta(days=16), merchant_id=api.merchant_id)
    assert back.lots == 0
    assert api.get(f"/v1/programs/{program}/at-risk").json()["data"] == []

    relapse = run_job(engine, "at-risk", as_of=now, merchant_id=api.merchant_id)
    assert relapse.lots == 1  # newly at risk again...
    [row] = api.get(f"/v1/programs/{program}/at-risk").json()["data"]
    cases = api.get("/v1/cases").json()["data"]
    assert len(cases) == 1  # ...but its first case is still open: no second one
    assert row["recency_days"] == 18 and row["case_id"] == cases[0]["id"]


def test_no_cases_when_the_program_says_so(api: Api, engine: Engine) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    program = program_with(api, open_cases=False)
    member = api.member(program, email="n@example.com")
    buy(api, member, now - timedelta(days=300), "n1")
    buy(api, member, now - timedelta(days=200), "n2")
    assert run_job(engine, "at-risk", as_of=now, merchant_id=api.merchant_id).lots == 1
    assert [r["case_id"] for r in api.get(f"/v1/programs/{program}/at-risk").json()["data"]] == [None]
    assert api.get("/v1/cases").json()["data"] == []


def test_p_alive_flags_a_frequent_buyer_who_stopped(api: Api, engine: Engine) -> None:
    """Eleven members: ten buy every week or two until recently; one bought weekly for ten weeks
    and stopped 75 days ago, well inside the 90-day recency threshold, yet BG/NBD gives them a low
    probability of still being a customer."""
    now = datetime.now(UTC).replace(microsecond=0)
    program = program_with(api, p_alive_below=0.5)
    steady = [api.member(program, email=f"s{i}@example.com") for i in range(10)]
    for i, member in enumerate(steady):
        gap = 7 + i % 3 * 3
        for k, days in enumerate(range(200 - i, 5, -gap)):
            buy(api, member, now - timedelta(days=days), f"s{i}-{k}")
    stopped = api.member(program, email="stopped@example.com")
    for k in range(10):
        buy(api, stopped, now - timedelta(days=75 + 7 * k), f"x{k}")

    result = run_job(engine, "at-risk", as_of=now, merchant_id=api.merchant_id)
    assert result.members == 11
    listed = api.get(f"/v1/programs/{program}/at-risk").json()["data"]
    assert [r["member_id"] for r in listed] == [stopped]
    assert listed[0]["method"] == "bgnbd" and listed[0]["recency_days"] == 75
    assert 0 <= listed[0]["p_alive"] < 0.5


def test_unknown_or_other_merchants_program_is_404(api: Api, other_api: Api) -> None:
    program = api.program()
    assert other_api.get(f"/v1/programs/{program}/at-risk").status_code == 404
    assert api.get("/v1/programs/prg_unknown/at-risk").status_code == 404
    assert api.get(f"/v1/programs/{program}/at-risk", params={"limit": 0}).status_code == 422


def test_bad_settings_are_refused(api: Api) -> None:
    for bad in ({"inactive_days": 0}, {"p_alive_below": 1.5}, {"min_purchases": "two"}, {"unknown": 1}):
        r = api.post("/v1/programs", bean_rewards(at_risk=bad))
        assert r.status_code == 422, (bad, r.text)
