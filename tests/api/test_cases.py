"""Follow-up cases: the life cycle with its timeline (open, assign, comment, contact, resolve,
reopen), transitions the status does not allow, listing with filters and cursors, tenancy and
bad input."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine

from patron.services.users import create_user
from tests.conftest import Api


def console_user(engine: Engine, api: Api, email: str) -> str:
    with engine.begin() as conn:
        user = create_user(conn, merchant_id=api.merchant_id, email=email, password="correct horse battery")
    return str(user["id"])


def new_case(api: Api, member: str, expect: int = 201, **fields: Any) -> dict[str, Any]:
    r = api.post("/v1/cases", {"member_id": member, "summary": "Complained about a late order", **fields})
    assert r.status_code == expect, r.text
    return dict(r.json())


def act(
    api: Api, case_id: str, action: str, body: dict[str, Any] | None = None, expect: int = 200
) -> dict[str, Any]:
    r = api.post(f"/v1/cases/{case_id}/{action}", body)
    assert r.status_code == expect, r.text
    return dict(r.json())


def test_case_life_cycle_closes_the_loop_and_keeps_a_timeline(api: Api, engine: Engine) -> None:
    program = api.program()
    member = api.member(program, email="m@example.com")
    ana = console_user(engine, api, f"ana-{api.merchant_id}@example.com")
    bob = console_user(engine, api, f"bob-{api.merchant_id}@example.com")

    case = new_case(api, member)
    assert case["status"] == "open" and case["source"] == "manual" and case["assignee"] is None
    assert [e["action"] for e in case["timeline"]] == ["opened"]

    case = act(api, case["id"], "assign", {"user_id": ana})
    assert case["status"] == "assigned" and case["assignee"] == ana
    case = act(api, case["id"], "comments", {"text": "Called, no answer; will try tomorrow"})
    assert case["status"] == "assigned" and case["contacted_at"] is None
    case = act(api, case["id"], "assign", {"user_id": bob})
    assert case["assignee"] == bob

    case = act(api, case["id"], "contacted", {"channel": "phone", "note": "Apologised, offered a coffee"})
    assert case["status"] == "contacted" and case["contacted_at"] and case["contact_channel"] == "phone"
    assert case["resolved_at"] is None

    case = act(api, case["id"], "resolve", {"resolution": "Member happy again"})
    assert case["status"] == "resolved" and case["resolution"] == "Member happy again"
    assert case["resolved_at"] >= case["contacted_at"]

    timeline = api.get(f"/v1/cases/{case['id']}").json()["timeline"]
    assert [e["action"] for e in timeline] == [
        "opened",
        "assigned",
        "commented",
        "assigned",
        "contacted",
        "resolved",
    ]
    assert timeline[2]["text"] == "Called, no answer; will try tomorrow"
    assert timeline[3]["assignee"] == bob and timeline[4]["channel"] == "phone"
    assert all(e["actor"].startswith("api_key:") for e in timeline)

    case = act(api, case["id"], "reopen", {"note": "He called back, still unhappy"})
    assert case["status"] == "assigned" and case["assignee"] == bob
    assert case["contacted_at"] is None and case["resolution"] is None
    act(api, case["id"], "resolve", {"resolution": "again"}, expect=409)  # contact first, again
    assert api.get(f"/v1/cases/{case['id']}").json()["timeline"][-1]["action"] == "reopened"


@pytest.mark.parametrize(
    ("steps", "action", "body"),
    [
        ([], "resolve", {"resolution": "done"}),  # not contacted yet
        ([], "reopen", None),  # not resolved
        ([("contacted", {"channel": "email"})], "contacted", {"channel": "phone"}),  # twice
        ([("contacted", {"channel": "email"}), ("resolve", {"resolution": "ok"})], "assign", "USER"),
        (
            [("contacted", {"channel": "email"}), ("resolve", {"resolution": "ok"})],
            "contacted",
            {"channel": "sms"},
        ),
    ],
)
def test_invalid_transitions_are_409_and_change_nothing(
    api: Api, engine: Engine, steps: list[tuple[str, dict[str, Any]]], action: str, body: Any
) -> None:
    program = api.program()
    member = api.member(program, email="x@example.com")
    user = console_user(engine, api, f"u-{api.merchant_id}@example.com")
    case = new_case(api, member)
    for step, step_body in steps:
        act(api, case["id"], step, step_body)
    before = api.get(f"/v1/cases/{case['id']}").json()
    r = api.post(f"/v1/cases/{case['id']}/{action}", {"user_id": user} if body == "USER" else body)
    assert r.status_code == 409, r.text
    assert r.json()["type"].endswith("/invalid-case-transition")
    assert api.get(f"/v1/cases/{case['id']}").json() == before


def test_comments_are_allowed_on_a_resolved_case(api: Api) -> None:
    member = api.member(api.program(), email="c@example.com")
    case = new_case(api, member)
    act(api, case["id"], "contacted", {"channel": "in_store"})
    act(api, case["id"], "resolve", {"resolution": "ok"})
    case = act(api, case["id"], "comments", {"text": "Follow-up note"})
    assert case["status"] == "resolved" and case["timeline"][-1]["text"] == "Follow-up note"


def test_one_unresolved_case_per_member_and_reference(api: Api) -> None:
    member = api.member(api.program(), email="r@example.com")
    first = new_case(api, member, source_ref="complaint-7")
    r = api.post("/v1/cases", {"member_id": member, "summary": "again", "source_ref": "complaint-7"})
    assert r.status_code == 409 and r.json()["type"].endswith("/case-exists")
    assert r.json()["case_id"] == first["id"]
    act(api, first["id"], "contacted", {"channel": "phone"})
    act(api, first["id"], "resolve", {"resolution": "refunded"})
    second = new_case(api, member, source_ref="complaint-7")
    assert second["id"] != first["id"]
    r = api.post(f"/v1/cases/{first['id']}/reopen")  # the second one is being worked on
    assert r.status_code == 409 and r.json()["type"].endswith("/case-exists")


def test_list_filters_and_cursor_pages(api: Api, engine: Engine) -> None:
    program = api.program()
    members = [api.member(program, email=f"l{i}@example.com") for i in range(3)]
    user = console_user(engine, api, f"l-{api.merchant_id}@example.com")
    ids = [new_case(api, m)["id"] for m in members]
    act(api, ids[0], "assign", {"user_id": user})

    page = api.get("/v1/cases", params={"limit": 2}).json()
    assert page["has_more"] is True and [c["id"] for c in page["data"]] == [ids[2], ids[1]]
    rest = api.get("/v1/cases", params={"limit": 2, "cursor": page["next_cursor"]}).json()
    assert (
        [c["id"] for c in rest["data"]] == [ids[0]]
        and rest["has_more"] is False
        and rest["next_cursor"] is None
    )

    assert [c["id"] for c in api.get("/v1/cases", params={"status": "assigned"}).json()["data"]] == [ids[0]]
    assert [c["id"] for c in api.get("/v1/cases", params={"assignee": user}).json()["data"]] == [ids[0]]
    assert [c["id"] for c in api.get("/v1/cases", params={"member_id": members[1]}).json()["data"]] == [
        ids[1]
    ]
    assert api.get("/v1/cases", params={"status": "closed"}).status_code == 422
    assert api.get("/v1/cases", params={"cursor": "not-a-cursor"}).status_code == 422


def test_another_merchants_case_member_or_user_is_404(api: Api, other_api: Api, engine: Engine) -> None:
    member = api.member(api.program(), email="t@example.com")
    case = new_case(api, member)
    theirs = console_user(engine, other_api, f"t-{other_api.merchant_id}@example.com")
    assert other_api.get(f"/v1/cases/{case['id']}").status_code == 404
    assert other_api.post(f"/v1/cases/{case['id']}/comments", {"text": "hi"}).status_code == 404
    assert other_api.post("/v1/cases", {"member_id": member, "summary": "x"}).status_code == 404
    assert other_api.get("/v1/cases").json()["data"] == []
    r = api.post(f"/v1/cases/{case['id']}/assign", {"user_id": theirs})
    assert r.status_code == 404, r.text
    assert api.get("/v1/cases/case_unknown").status_code == 404
    assert [e["action"] for e in api.get(f"/v1/cases/{case['id']}").json()["timeline"]] == ["opened"]


@pytest.mark.parametrize(
    ("action", "body"),
    [
        ("comments", {"text": ""}),
        ("comments", {}),
        ("resolve", {}),
        ("contacted", {"note": "no channel"}),
        ("assign", {"user_id": ""}),
        ("comments", {"text": "ok", "extra": 1}),
    ],
)
def test_bad_bodies_are_422_and_write_nothing(api: Api, action: str, body: dict[str, Any]) -> None:
    member = api.member(api.program(), email="b@example.com")
    case = new_case(api, member)
    r = api.post(f"/v1/cases/{case['id']}/{action}", body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert len(api.get(f"/v1/cases/{case['id']}").json()["timeline"]) == 1


def test_posts_are_idempotent_with_a_key(api: Api) -> None:
    member = api.member(api.program(), email="k@example.com")
    case = new_case(api, member)
    headers = {"Idempotency-Key": "comment-1"}
    first = api.post(f"/v1/cases/{case['id']}/comments", {"text": "once"}, headers=headers)
    again = api.post(f"/v1/cases/{case['id']}/comments", {"text": "once"}, headers=headers)
    assert (
        first.status_code == again.status_code == 200 and again.headers.get("Idempotent-Replayed") == "true"
    )
    assert [e["action"] for e in api.get(f"/v1/cases/{case['id']}").json()["timeline"]] == [
        "opened",
        "commented",
    ]


def test_a_read_only_key_can_look_but_not_act(api: Api, engine: Engine) -> None:
    from patron.services.merchants import create_api_key

    member = api.member(api.program(), email="ro@example.com")
    case = new_case(api, member)
    with engine.begin() as conn:
        _, key = create_api_key(conn, merchant_id=api.merchant_id, name="reader", scopes=["read"])
    reader = Api(api.client, api.merchant_id, key)
    assert reader.get(f"/v1/cases/{case['id']}").status_code == 200
    assert reader.post(f"/v1/cases/{case['id']}/comments", {"text": "hi"}).status_code == 403
    assert reader.post(f"/v1/members/{member}/surveys", {"kind": "nps", "score": 1}).status_code == 403
    assert len(api.get(f"/v1/cases/{case['id']}").json()["timeline"]) == 1


def test_cases_go_to_owners_and_managers_not_till_staff(api: Api, engine: Engine) -> None:
    member = api.member(api.program(), email="till-case@example.com")
    case = new_case(api, member)
    with engine.begin() as conn:
        till = create_user(
            conn,
            merchant_id=api.merchant_id,
            email=f"till-only-{api.merchant_id}@example.com",
            password="correct horse battery",
            role="staff",
        )
    refused = act(api, case["id"], "assign", {"user_id": till["id"]}, expect=422)
    assert "owner or a manager" in refused["detail"]
    manager = console_user(engine, api, f"manager-case-{api.merchant_id}@example.com")
    assert act(api, case["id"], "assign", {"user_id": manager})["assignee"] == manager
