"""Surveys: NPS and CLI answered over the API, reported per month (worked out by hand below),
low scores opening follow-up cases, points for answering, idempotency, tenancy and bad input."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Api, bean_rewards


def answer(api: Api, member: str, body: dict[str, Any], expect: int = 201, **kw: Any) -> dict[str, Any]:
    r = api.post(f"/v1/members/{member}/surveys", body, **kw)
    assert r.status_code == expect, r.text
    return dict(r.json())


def nps(score: int, at: str, **extra: Any) -> dict[str, Any]:
    return {"kind": "nps", "score": score, "occurred_at": at, **extra}


def cli(recommend: int, buy_again: int, try_other: int, at: str) -> dict[str, Any]:
    return {
        "kind": "cli",
        "recommend": recommend,
        "buy_again": buy_again,
        "try_other": try_other,
        "occurred_at": at,
    }


def test_nps_and_cli_per_month_worked_out_by_hand(api: Api) -> None:
    """January NPS 10, 9, 9, 8, 6: 3 promoters, 1 passive, 1 detractor of 5 -> 100 * (3 - 1) / 5 = 40.0.
    February NPS 10, 9, 9, 7, 2, 5: 3 promoters, 1 passive, 2 detractors of 6 -> 100 / 6 = 16.67 -> 16.7.
    January CLI (5,6,4), (2,3,1), (6,6,5): means 5, 2, 5.67 -> 38 / 9 = 4.222 -> 4.22.
    February CLI (6,6,6), (3,4,4): 29 / 6 = 4.833 -> 4.83. March: nothing -> null, never 0 or NaN.
    The whole quarter: NPS 100 * (6 - 3) / 11 = 27.27 -> 27.3; CLI 67 / 15 = 4.467 -> 4.47."""
    program = api.program()
    members = [api.member(program, email=f"s{i}@example.com") for i in range(3)]
    jan = [10, 9, 9, 8, 6]
    feb = [10, 9, 9, 7, 2, 5]
    for i, score in enumerate(jan):
        answer(api, members[i % 3], nps(score, f"2026-01-{i + 2:02d}T12:00:00Z"))
    for i, score in enumerate(feb):
        answer(api, members[i % 3], nps(score, f"2026-02-{i + 2:02d}T12:00:00Z"))
    for i, trio in enumerate([(5, 6, 4), (2, 3, 1), (6, 6, 5)]):
        answer(api, members[i], cli(*trio, at=f"2026-01-{i + 20:02d}T08:00:00Z"))
    for i, trio in enumerate([(6, 6, 6), (3, 4, 4)]):
        answer(api, members[i], cli(*trio, at=f"2026-02-{i + 20:02d}T08:00:00Z"))

    r = api.get(
        f"/v1/programs/{program}/analytics/surveys",
        params={"from": "2026-01-01", "to": "2026-03-31", "interval": "month"},
    )
    assert r.status_code == 200, r.text
    assert "NaN" not in r.text
    report = r.json()
    january, february, march = report["periods"]
    assert (january["start"], january["end"]) == ("2026-01-01", "2026-01-31")
    assert (march["start"], march["end"]) == ("2026-03-01", "2026-03-31")
    assert january == {
        "start": "2026-01-01",
        "end": "2026-01-31",
        "responses": 8,
        "nps": 40.0,
        "nps_responses": 5,
        "promoters": 3,
        "passives": 1,
        "detractors": 1,
        "cli": 4.22,
        "cli_responses": 3,
    }
    assert (february["nps"], february["promoters"], february["passives"], february["detractors"]) == (
        16.7,
        3,
        1,
        2,
    )
    assert (february["cli"], february["cli_responses"], february["responses"]) == (4.83, 2, 8)
    assert march["responses"] == 0 and march["nps"] is None and march["cli"] is None
    assert report["total"]["nps"] == 27.3 and report["total"]["cli"] == 4.47
    assert report["total"]["responses"] == 16 and report["message"] is None

    weeks = api.get(
        f"/v1/programs/{program}/analytics/surveys",
        params={"from": "2026-01-01", "to": "2026-01-11", "interval": "week"},
    ).json()["periods"]
    # 2026-01-01 is a Thursday: the first week is clipped to Thu-Sun, then Mon 5 - Sun 11.
    assert [(w["start"], w["end"]) for w in weeks] == [
        ("2026-01-01", "2026-01-04"),
        ("2026-01-05", "2026-01-11"),
    ]
    assert [w["nps_responses"] for w in weeks] == [3, 2]  # Jan 2, 3, 4 | Jan 5, 6


def test_a_period_without_data_is_null_with_a_message(api: Api) -> None:
    program = api.program()
    r = api.get(
        f"/v1/programs/{program}/analytics/surveys", params={"from": "2025-01-01", "to": "2025-02-28"}
    )
    assert r.status_code == 200, r.text
    assert "NaN" not in r.text
    body = r.json()
    assert [p["nps"] for p in body["periods"]] == [None, None]
    assert [p["cli"] for p in body["periods"]] == [None, None]
    assert body["total"]["responses"] == 0 and body["total"]["nps"] is None
    assert "no survey responses" in body["message"]


def test_a_detractor_opens_a_case_a_promoter_does_not(api: Api) -> None:
    program = api.program()
    member = api.member(program, email="d@example.com")
    promoter = answer(api, member, {"kind": "nps", "score": 9})
    assert promoter["classification"] == "promoter" and promoter["case_id"] is None
    passive = answer(api, member, {"kind": "nps", "score": 7})
    assert passive["classification"] == "passive" and passive["case_id"] is None
    detractor = answer(api, member, {"kind": "nps", "score": 6, "comment": "Cold coffee"})
    assert detractor["classification"] == "detractor" and detractor["case_id"]
    low_cli = answer(api, member, {"kind": "cli", "recommend": 3, "buy_again": 3, "try_other": 3})
    assert low_cli["cli"] == 3.0 and low_cli["case_id"]
    fine_cli = answer(api, member, {"kind": "cli", "recommend": 4, "buy_again": 3, "try_other": 3})
    assert fine_cli["cli"] == 3.33 and fine_cli["case_id"] is None

    listed = api.get("/v1/cases", params={"member_id": member}).json()["data"]
    assert {c["id"] for c in listed} == {detractor["case_id"], low_cli["case_id"]}
    case = api.get(f"/v1/cases/{detractor['case_id']}").json()
    assert case["source"] == "survey" and case["source_ref"] == detractor["id"]
    assert case["status"] == "open" and "Cold coffee" in case["summary"]
    assert [e["action"] for e in case["timeline"]] == ["opened"]


def test_thresholds_come_from_the_program(api: Api) -> None:
    program = api.program(bean_rewards(surveys={"case_on_nps_at_most": None, "case_on_cli_at_most": 5}))
    member = api.member(program, email="t@example.com")
    assert answer(api, member, {"kind": "nps", "score": 0})["case_id"] is None
    assert answer(api, member, {"kind": "cli", "recommend": 5, "buy_again": 5, "try_other": 5})["case_id"]
    bad = api.post("/v1/programs", bean_rewards(surveys={"case_on_nps_at_most": 11}))
    assert bad.status_code == 422, bad.text


def test_answering_earns_through_the_action(api: Api) -> None:
    program = api.program(
        bean_rewards(
            earning_rules=[{"id": "survey-bonus", "type": "action", "action": "survey", "points": 50}],
            surveys={"earn_action": "survey"},
        )
    )
    member = api.member(program, email="e@example.com")
    first = answer(api, member, {"kind": "nps", "score": 10, "id": "resp-1"})
    assert first["event_id"] == first["id"]
    assert api.points(member)["available"] == 50
    replay = answer(api, member, {"kind": "nps", "score": 10, "id": "resp-1"}, expect=200)
    assert replay["id"] == first["id"]
    assert api.points(member)["available"] == 50


def test_same_id_replays_and_different_answers_conflict(api: Api) -> None:
    program = api.program()
    member = api.member(program, email="i@example.com")
    first = answer(api, member, {"kind": "nps", "score": 3, "id": "abc"})
    again = answer(api, member, {"kind": "nps", "score": 3, "id": "abc"}, expect=200)
    assert again == first
    r = api.post(f"/v1/members/{member}/surveys", {"kind": "nps", "score": 4, "id": "abc"})
    assert r.status_code == 409 and r.json()["type"].endswith("/idempotency-conflict")
    # Without an id, a response with the same occurred_at and answers is the same response.
    at = "2026-02-01T10:00:00Z"
    one = answer(api, member, nps(2, at))
    assert answer(api, member, nps(2, at), expect=200)["id"] == one["id"]
    keyed = answer(api, member, {"kind": "nps", "score": 8}, headers={"Idempotency-Key": "k1"})
    assert (
        answer(api, member, {"kind": "nps", "score": 8}, headers={"Idempotency-Key": "k1"})["id"]
        == keyed["id"]
    )
    assert len(api.get(f"/v1/members/{member}/surveys").json()["data"]) == 3
    assert len(api.get("/v1/cases", params={"member_id": member}).json()["data"]) == 2  # the 3 and the 2


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "nps", "score": 11},
        {"kind": "nps", "score": -1},
        {"kind": "nps", "score": 9.5},
        {"kind": "nps", "score": "9"},
        {"kind": "nps", "score": True},
        {"kind": "nps"},
        {"kind": "cli", "recommend": 0, "buy_again": 3, "try_other": 3},
        {"kind": "cli", "recommend": 7, "buy_again": 3, "try_other": 3},
        {"kind": "cli", "recommend": 5, "buy_again": 3},
        {"kind": "ces", "score": 3},
        {"kind": "nps", "score": 5, "occurred_at": "2026-01-01T10:00:00"},
        {"kind": "nps", "score": 5, "occurred_at": "2999-01-01T10:00:00Z"},
        {"kind": "nps", "score": 5, "extra": 1},
    ],
)
def test_bad_scores_are_422_and_write_nothing(api: Api, body: dict[str, Any]) -> None:
    program = api.program()
    member = api.member(program, email="b@example.com")
    r = api.post(f"/v1/members/{member}/surveys", body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert api.get(f"/v1/members/{member}/surveys").json()["data"] == []
    assert api.get("/v1/cases").json()["data"] == []


@pytest.mark.parametrize(
    "params",
    [
        {"from": "2026-03-01", "to": "2026-01-01"},
        {"from": "2026-13-01"},
        {"to": "yesterday"},
        {"interval": "year"},
        {"from": "1990-01-01", "to": "2026-01-01", "interval": "day"},
    ],
)
def test_bad_report_parameters_are_422(api: Api, params: dict[str, str]) -> None:
    program = api.program()
    r = api.get(f"/v1/programs/{program}/analytics/surveys", params=params)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")


def test_another_merchants_member_and_program_are_404(api: Api, other_api: Api) -> None:
    program = api.program()
    member = api.member(program, email="o@example.com")
    answer(api, member, {"kind": "nps", "score": 2})
    assert other_api.post(f"/v1/members/{member}/surveys", {"kind": "nps", "score": 5}).status_code == 404
    assert other_api.get(f"/v1/members/{member}/surveys").status_code == 404
    assert other_api.get(f"/v1/programs/{program}/analytics/surveys").status_code == 404
    assert other_api.get("/v1/cases").json()["data"] == []
    assert len(api.get(f"/v1/members/{member}/surveys").json()["data"]) == 1
