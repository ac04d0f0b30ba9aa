"""Households: a family pools its redeemable points while each member keeps their own status.
Pooled redemption through the ledger, size limit, one household at a time, cooldown after leaving,
the head_allows policy, the audit trail, and tenancy."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine

from patron.services import households as households_service
from patron.services import ledger as ledger_service
from tests.conftest import Api, bean_rewards, purchase

HOUSEHOLDS = {"max_members": 3, "cooldown_days": 90, "spending": "pool"}
REWARDS = [
    {"id": "free-coffee", "name": "Free coffee", "type": "free_product", "cost": 100},
    {"id": "hamper", "name": "Hamper", "type": "free_product", "cost": 700},
]


def family_program(api: Api, **households: Any) -> str:
    return api.program(bean_rewards(households={**HOUSEHOLDS, **households}, rewards=REWARDS))


def earn(api: Api, member: str, order: str, dollars: int, day: str) -> None:
    """A merch purchase: one point per dollar, on ``day`` (lots expire 12 months later)."""
    item = {"id": "l1", "sku": "HAMPER", "category": "merch", "quantity": 1, "unit_price": dollars * 100}
    api.event(purchase(member, order, [item], occurred_at=f"{day}T10:00:00Z"))


def create(api: Api, program: str, head: str, expect: int = 201, **extra: Any) -> dict[str, Any]:
    r = api.post(
        "/v1/households", {"program_id": program, "head_member_id": head, "name": "The Smiths", **extra}
    )
    assert r.status_code == expect, r.text
    return dict(r.json())


def join(api: Api, household: str, member: str, expect: int = 201, **extra: Any) -> dict[str, Any]:
    r = api.post(f"/v1/households/{household}/members", {"member_id": member, "role": "adult", **extra})
    assert r.status_code == expect, r.text
    return dict(r.json())


def events(api: Api, household: str) -> list[dict[str, Any]]:
    r = api.get(f"/v1/households/{household}/events")
    assert r.status_code == 200, r.text
    return list(r.json()["data"])


def ledger(api: Api, member: str) -> list[dict[str, Any]]:
    r = api.get(f"/v1/members/{member}/ledger")
    assert r.status_code == 200, r.text
    return list(r.json()["data"])


def test_household_redemption_draws_from_two_members_soonest_expiring_first(api: Api, engine: Engine) -> None:
    program = family_program(api)
    alice = api.member(program, email="alice@example.com", name="Alice")
    bob = api.member(program, email="bob@example.com", name="Bob")
    carol = api.member(program, email="carol@example.com", name="Carol")
    earn(api, alice, "a-1", 100, "2026-05-01")  # 100 points, expire 2027-05-01
    earn(api, bob, "b-1", 300, "2026-02-01")  # 300, expire 2027-02-01 (the soonest)
    earn(api, bob, "b-2", 200, "2026-06-01")  # 200, expire 2027-06-01 (the latest)
    earn(api, carol, "c-1", 300, "2026-04-01")  # 300, expire 2027-04-01
    household = create(api, program, alice)["id"]
    join(api, household, bob)
    join(api, household, carol, role="member")

    view = api.get(f"/v1/households/{household}").json()
    assert view["pool"]["available"] == 900
    assert {m["member_id"]: (m["role"], m["available"]) for m in view["members"]} == {
        alice: ("head", 100),
        bob: ("adult", 500),
        carol: ("member", 300),
    }
    before = {
        m: (api.points(m)["lifetime_earned"], api.get(f"/v1/members/{m}/tier").json())
        for m in (alice, bob, carol)
    }
    assert before[bob][1]["current"]["id"] == "gold"  # $500 of qualifying spend: his status, not Alice's

    r = api.post(f"/v1/households/{household}/redemptions", {"member_id": alice, "reward_id": "hamper"})
    assert r.status_code == 201, r.text
    made = r.json()
    assert made["redemption"]["status"] == "reserved" and made["redemption"]["points"] == 700
    assert made["redemption"]["member_id"] == alice and made["redemption"]["code"]
    # Alice's own 100 first, then the lots that expire soonest: Bob's February 300, Carol's April 300.
    assert made["drawn"] == sorted(
        [
            {"member_id": alice, "points": 100},
            {"member_id": bob, "points": 300},
            {"member_id": carol, "points": 300},
        ],
        key=lambda d: (d["member_id"] != alice, d["member_id"]),
    )
    assert api.points(alice)["available"] == 0 and api.points(alice)["reserved"] == 700
    assert api.points(bob)["available"] == 200  # his June lot is untouched
    assert api.points(carol)["available"] == 0
    assert api.get(f"/v1/households/{household}").json()["pool"]["available"] == 200

    reason = f"household pool: for member {alice}: Hamper"  # no personal data in the ledger
    bob_lines = [e for e in ledger(api, bob) if e["type"] == "household_transfer"]
    assert [(e["account"], e["points"], e["reason"]) for e in bob_lines] == [("available", -300, reason)]
    alice_lines = [e for e in ledger(api, alice) if e["type"] == "household_transfer"]
    assert sorted((e["points"], e["expires_at"][:10]) for e in alice_lines) == [
        (300, "2027-02-01"),  # the moved points keep their original expiry
        (300, "2027-04-01"),
    ]
    assert {e["reason"] for e in alice_lines} == {reason}

    # Status stays individual: nobody's lifetime_earned or tier moved.
    for m in (alice, bob, carol):
        assert api.points(m)["lifetime_earned"] == before[m][0]
        assert api.get(f"/v1/members/{m}/tier").json() == before[m][1]

    assert api.post(f"/v1/redemptions/{made['redemption']['id']}/redeem").json()["status"] == "redeemed"
    assert api.points(alice)["redeemed"] == 700 and api.points(bob)["redeemed"] == 0
    with engine.connect() as conn:
        assert ledger_service.verify(conn, merchant_id=api.merchant_id) == []


def test_own_points_suffice_moves_nothing_and_a_replay_moves_nothing_twice(api: Api) -> None:
    program = family_program(api)
    alice = api.member(program, email="alice@example.com", name="Alice")
    bob = api.member(program, email="bob@example.com")
    earn(api, alice, "a-1", 150, "2026-05-01")
    earn(api, bob, "b-1", 300, "2026-02-01")
    household = create(api, program, alice)["id"]
    join(api, household, bob)

    small = api.post(
        f"/v1/households/{household}/redemptions", {"member_id": alice, "reward_id": "free-coffee"}
    )
    assert small.status_code == 201, small.text
    assert small.json()["drawn"] == [{"member_id": alice, "points": 100}]
    assert small.json()["transfer_journal_id"] is None
    assert api.points(bob)["available"] == 300

    body = {"member_id": bob, "reward_id": "hamper"}  # 300 own + 50 Alice: not enough
    short = api.post(f"/v1/households/{household}/redemptions", body)
    assert short.status_code == 409 and short.json()["type"].endswith("/insufficient-points")
    assert (api.points(alice)["available"], api.points(bob)["available"]) == (50, 300)

    key = {"Idempotency-Key": "pool-1"}
    first = api.post(
        f"/v1/households/{household}/redemptions", {"member_id": bob, "reward_id": "free-coffee"}, headers=key
    )
    again = api.post(
        f"/v1/households/{household}/redemptions", {"member_id": bob, "reward_id": "free-coffee"}, headers=key
    )
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers.get("Idempotent-Replayed") == "true"
    assert api.points(bob)["reserved"] == 100


def test_a_household_over_its_size_is_refused_and_nothing_is_written(api: Api) -> None:
    program = family_program(api, max_members=3)
    people = [api.member(program, email=f"p{i}@example.com") for i in range(4)]
    household = create(api, program, people[0])["id"]
    join(api, household, people[1])
    join(api, household, people[2])
    trail = events(api, household)

    full = join(api, household, people[3], expect=409)
    assert full["type"].endswith("/household-full")
    assert "3" in full["detail"]
    assert len(api.get(f"/v1/households/{household}").json()["members"]) == 3
    assert api.get(f"/v1/members/{people[3]}/household").json()["household"] is None
    assert events(api, household) == trail


def test_a_member_is_in_one_household_at_a_time(api: Api) -> None:
    program = family_program(api)
    a, b, c = (api.member(program, email=f"{n}@example.com") for n in "abc")
    first = create(api, program, a)["id"]
    second = create(api, program, b)["id"]
    join(api, first, c)

    assert join(api, second, c, expect=409)["type"].endswith("/already-in-household")
    assert create(api, program, c, expect=409)["type"].endswith("/already-in-household")
    assert join(api, first, c, expect=409)["type"].endswith("/already-in-household")
    mine = api.get(f"/v1/members/{c}/household").json()
    assert mine["household"]["id"] == first and mine["role"] == "adult"


def test_cooldown_after_leaving_then_joining_is_allowed(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    program = family_program(api, cooldown_days=90)
    a, b, c = (api.member(program, email=f"{n}@example.com") for n in "abc")
    first = create(api, program, a)["id"]
    second = create(api, program, b)["id"]
    join(api, first, c)

    left = api.delete(f"/v1/households/{first}/members/{c}", params={"reason": "moved out"})
    assert left.status_code == 200, left.text
    until = datetime.fromisoformat(left.json()["cooldown_until"])
    assert until - datetime.fromisoformat(left.json()["left_at"]) == timedelta(days=90)
    assert api.get(f"/v1/members/{c}/household").json()["cooldown_until"] is not None

    refused = join(api, second, c, expect=409)
    assert refused["type"].endswith("/household-cooldown")
    assert datetime.fromisoformat(refused["cooldown_until"]) == until
    assert [m["member_id"] for m in api.get(f"/v1/households/{second}").json()["members"]] == [b]

    later = datetime.now(UTC) + timedelta(days=91)
    monkeypatch.setattr(households_service, "utcnow", lambda: later)
    joined = join(api, second, c)
    assert c in [m["member_id"] for m in joined["members"]]
    assert api.get(f"/v1/members/{c}/household").json()["household"]["id"] == second


def test_head_allows_only_members_the_head_permits(api: Api) -> None:
    program = family_program(api, spending="head_allows")
    head = api.member(program, email="head@example.com", name="Dana")
    adult = api.member(program, email="adult@example.com", name="Eve")
    earn(api, head, "h-1", 300, "2026-05-01")
    household = create(api, program, head)["id"]
    join(api, household, adult)  # can_spend defaults to false

    body = {"member_id": adult, "reward_id": "free-coffee"}
    denied = api.post(f"/v1/households/{household}/redemptions", body)
    assert denied.status_code == 403, denied.text
    assert denied.json()["type"].endswith("/household-spending-not-allowed")
    assert api.points(head)["available"] == 300 and api.points(adult)["reserved"] == 0

    r = api.patch(f"/v1/households/{household}/members/{adult}", {"can_spend": True, "reason": "trusted"})
    assert r.status_code == 200, r.text
    assert {m["member_id"]: m["may_spend_pool"] for m in r.json()["members"]} == {head: True, adult: True}
    allowed = api.post(f"/v1/households/{household}/redemptions", body)
    assert allowed.status_code == 201, allowed.text
    assert api.points(head)["available"] == 200 and api.points(adult)["reserved"] == 100


def test_audit_trail_lists_joins_changes_and_leaves(api: Api) -> None:
    program = family_program(api)
    a, b, c = (api.member(program, email=f"{n}@example.com") for n in "abc")
    household = create(api, program, a, reason="family sign-up")["id"]
    join(api, household, b, reason="spouse")
    join(api, household, c, role="member")
    assert api.patch(f"/v1/households/{household}/members/{c}", {"can_spend": True}).status_code == 200
    stays = api.delete(f"/v1/households/{household}/members/{a}")
    assert stays.status_code == 409 and stays.json()["type"].endswith("/household-head-must-stay")
    handover = api.patch(f"/v1/households/{household}/members/{b}", {"role": "head"})
    assert handover.status_code == 200 and handover.json()["head_member_id"] == b
    assert api.delete(f"/v1/households/{household}/members/{c}", params={"by": "head"}).status_code == 200
    assert api.delete(f"/v1/households/{household}/members/{a}").status_code == 200

    trail = [(e["type"], e["member_id"]) for e in events(api, household)]
    assert trail == [
        ("created", a),
        ("joined", b),
        ("joined", c),
        ("permission_changed", c),
        ("role_changed", a),
        ("role_changed", b),
        ("removed", c),
        ("left", a),
    ]
    first = events(api, household)[0]
    assert first["reason"] == "family sign-up" and first["actor"].startswith("api_key:")
    assert [
        (m["member_id"], m["role"]) for m in api.get(f"/v1/households/{household}").json()["members"]
    ] == [(b, "head")]


def test_program_without_households_and_bad_input(api: Api) -> None:
    plain = api.program()
    member = api.member(plain, email="solo@example.com")
    r = api.post("/v1/households", {"program_id": plain, "head_member_id": member, "name": "Solo"})
    assert r.status_code == 422 and r.json()["type"].endswith("/households-not-offered")
    assert "households" in r.json()["detail"]
    assert api.get(f"/v1/members/{member}/household").json()["household"] is None

    bad = api.post("/v1/programs", bean_rewards(households={"max_members": 1}))
    assert bad.status_code == 422
    program = family_program(api)
    head = api.member(program, email="head@example.com")
    assert create(api, program, member, expect=422)["type"].endswith("/wrong-program")
    household = create(api, program, head)["id"]
    other = api.member(program, email="other@example.com")
    assert join(api, household, other, role="head", expect=422)["type"].endswith("/invalid-input")
    assert join(api, household, other, role="boss", expect=422)


def test_another_merchants_household_is_not_found(api: Api, other_api: Api) -> None:
    program = family_program(api)
    head = api.member(program, email="head@example.com")
    household = create(api, program, head)["id"]
    theirs = other_api.member(other_api.program(bean_rewards(households=HOUSEHOLDS)), email="x@example.com")

    assert other_api.get(f"/v1/households/{household}").status_code == 404
    assert other_api.get(f"/v1/households/{household}/events").status_code == 404
    assert join(other_api, household, theirs, expect=404)["type"].endswith("/not-found")
    body = {"member_id": head, "reward_id": "free-coffee"}
    assert other_api.post(f"/v1/households/{household}/redemptions", body).status_code == 404
    assert other_api.delete(f"/v1/households/{household}/members/{head}").status_code == 404
    assert other_api.get(f"/v1/members/{head}/household").status_code == 404
    assert len(api.get(f"/v1/households/{household}").json()["members"]) == 1


def test_two_pooled_redemptions_racing_for_one_pool_cannot_both_succeed(api: Api, engine: Engine) -> None:
    program = family_program(api)
    members = [api.member(program, email=f"m{i}@example.com", name=f"M{i}") for i in range(3)]
    for i, m in enumerate(members):
        earn(api, m, f"o-{i}", 300, "2026-05-01")  # a pool of 900: one hamper (700), not two
    household = create(api, program, members[0])["id"]
    join(api, household, members[1])
    join(api, household, members[2])

    def go(member: str) -> int:
        r = api.post(f"/v1/households/{household}/redemptions", {"member_id": member, "reward_id": "hamper"})
        return int(r.status_code)

    with ThreadPoolExecutor(max_workers=3) as pool:
        codes = list(pool.map(go, members))
    assert sorted(codes) == [201, 409, 409]
    assert sum(api.points(m)["reserved"] for m in members) == 700
    assert sum(api.points(m)["available"] for m in members) == 200
    with engine.connect() as conn:
        assert ledger_service.verify(conn, merchant_id=api.merchant_id) == []


def test_a_read_only_key_cannot_change_a_household(api: Api) -> None:
    program = family_program(api)
    head = api.member(program, email="head@example.com")
    other = api.member(program, email="other@example.com")
    household = create(api, program, head)["id"]
    key = api.post("/v1/api-keys", {"name": "analyst", "scopes": ["read"]}).json()["api_key"]
    as_read = Api(api.client, api.merchant_id, key)

    assert as_read.get(f"/v1/households/{household}").status_code == 200
    assert join(as_read, household, other, expect=403)["type"].endswith("/forbidden")
    body = {"member_id": head, "reward_id": "free-coffee"}
    assert as_read.post(f"/v1/households/{household}/redemptions", body).status_code == 403
    assert len(api.get(f"/v1/households/{household}").json()["members"]) == 1


def test_the_audit_trail_pages_with_its_own_cursors_only(api: Api) -> None:
    program = family_program(api)
    household = create(api, program, api.member(program, email="pages@example.com"))["id"]
    for n in range(2):
        join(api, household, api.member(program, email=f"kid{n}@example.com"))
    first = api.get(f"/v1/households/{household}/events", params={"limit": 2}).json()
    assert len(first["data"]) == 2 and first["next_cursor"]
    rest = api.get(f"/v1/households/{household}/events", params={"limit": 2, "cursor": first["next_cursor"]})
    assert rest.status_code == 200 and rest.json()["data"][0]["id"] not in {e["id"] for e in first["data"]}
    for made_up in ("zzz", "a", "hev_" + "0" * 25):
        bad = api.get(f"/v1/households/{household}/events", params={"cursor": made_up})
        assert bad.status_code == 422 and bad.json()["type"].endswith("/invalid-input"), made_up
