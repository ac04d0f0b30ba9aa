"""Program simulation on SQLite and PostgreSQL: replaying a period through the unchanged live
program gives what the ledger recorded, member by member; a draft that doubles the points per
spend doubles the spend points; nothing is ever written."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, func, select

from patron.services import events, members, programs, simulation
from patron.services.insights import NoData
from patron.services.members import MemberCreate
from patron.services.merchants import create_merchant
from patron.storage import tables as t
from tests.conftest import bean_rewards

MARCH = (date(2026, 3, 1), date(2026, 3, 31))
RULES: list[dict[str, Any]] = [
    {"id": "base", "type": "spend", "points": 1, "per_amount": 100},
    {"id": "coffee-2x", "type": "multiplier", "categories": ["coffee"], "multiplier": "2"},
    {"id": "visit", "type": "visit", "points": 5},
    {
        "id": "review",
        "type": "action",
        "action": "review",
        "points": 20,
        "limit": {"count": 1, "per": "month"},
    },
]
LIVE = bean_rewards(earning_rules=RULES)  # silver at 200.00, gold at 500.00 with 1.5x; 1 point per 1.00


def _draft_2x(silver: int = 20000) -> dict[str, Any]:
    body = bean_rewards(earning_rules=[{**RULES[0], "points": 2}, *RULES[1:]])
    body["tiers"]["levels"][1]["threshold"] = silver
    return body


class Shop:
    def __init__(self, conn: Connection, body: dict[str, Any] | None = None) -> None:
        merchant, _ = create_merchant(conn, name="Simulated Shop")
        self.conn, self.merchant_id = conn, merchant["id"]
        self.program_id = programs.create_program(conn, merchant_id=self.merchant_id, body=body or LIVE)["id"]
        self.ids: dict[str, str] = {}

    def member(self, name: str, enrolled: str) -> str:
        data = MemberCreate(program_id=self.program_id, external_id=name, enrolled_at=f"{enrolled}T00:00:00Z")
        self.ids[name] = str(members.enrol(self.conn, merchant_id=self.merchant_id, data=data)["id"])
        return self.ids[name]

    def event(self, name: str, event_id: str, kind: str, day: str, **body: Any) -> int:
        payload = {
            "id": event_id,
            "type": kind,
            "member_id": self.ids[name],
            "occurred_at": f"{day}T10:00:00Z",
            **body,
        }
        result, _ = events.record_event(self.conn, merchant_id=self.merchant_id, body=payload)
        return int(result["points"])

    def buy(self, name: str, event_id: str, day: str, *lines: tuple[str, str, int, int]) -> int:
        items = [{"id": i, "category": c, "quantity": q, "unit_price": p} for i, c, q, p in lines]
        return self.event(name, event_id, "purchase", day, items=items)


def _history(shop: Shop) -> dict[str, int]:
    """The story, with the points the ledger gives each event (asserted as it is told)."""
    shop.member("ann", "2026-01-01")
    shop.member("bob", "2026-01-01")
    shop.member("dan", "2026-01-01")  # never comes: stays at the base tier
    # Before the period: Ann spends 400.00 (silver); Bob 2 x 50.00 and writes a review.
    assert shop.buy("ann", "a-feb", "2026-02-10", ("l1", "food", 1, 40000)) == 400
    assert shop.buy("bob", "b-feb", "2026-02-15", ("l1", "food", 1, 5000), ("l2", "food", 1, 5000)) == 100
    assert shop.event("bob", "b-rev-feb", "review", "2026-02-20") == 20
    # March.
    assert shop.buy("ann", "a-1", "2026-03-03", ("l1", "food", 1, 15000)) == 150  # silver then; now gold
    assert shop.buy("ann", "a-2", "2026-03-10", ("l1", "coffee", 1, 10000)) == 300  # 100 x 2 x 1.5
    assert shop.event("ann", "a-rev-1", "review", "2026-03-11") == 20
    assert shop.event("ann", "a-rev-2", "review", "2026-03-12") == 0  # once a month
    assert shop.event("bob", "b-rev", "review", "2026-03-05") == 20  # a new month
    assert shop.event("bob", "b-v1", "visit", "2026-03-06") == 5
    assert shop.event("bob", "b-v2", "visit", "2026-03-07") == 5
    assert shop.event("bob", "b-rf", "refund", "2026-03-08", refers_to="b-feb", items=[{"id": "l2"}]) == -50
    shop.member("cara", "2026-03-02")
    assert shop.buy("cara", "c-1", "2026-03-04", ("l1", "food", 1, 25000)) == 250  # then silver
    assert shop.buy("cara", "c-2", "2026-03-20", ("l1", "coffee", 3, 1000)) == 60
    assert shop.event("cara", "c-rf", "refund", "2026-03-21", refers_to="c-2", items=[{"id": "l1"}]) == -20
    assert shop.buy("ann", "a-apr", "2026-04-02", ("l1", "food", 1, 10000)) == 150  # after the period
    return {"ann": 470, "bob": -20, "cara": 290, "dan": 0}


def _ledger(conn: Connection, shop: Shop) -> tuple[dict[str, int], dict[str, int]]:
    """Per member, the points of the period's events and the postings against program:issued."""
    start, end = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC)
    e = t.events.c
    by_event = dict(
        conn.execute(
            select(e.member_id, func.sum(e.points))
            .where(e.merchant_id == shop.merchant_id, e.occurred_at >= start, e.occurred_at < end)
            .group_by(e.member_id)
        ).all()
    )
    p = t.postings.c
    by_posting = dict(
        conn.execute(
            select(p.member_id, -func.sum(p.amount))
            .where(
                p.merchant_id == shop.merchant_id,
                p.account == "program:issued",
                p.occurred_at >= start,
                p.occurred_at < end,
            )
            .group_by(p.member_id)
        ).all()
    )
    return {k: int(v) for k, v in by_event.items()}, {k: int(v) for k, v in by_posting.items()}


def _simulate(conn: Connection, shop: Shop, draft: dict[str, Any], cost: float = 0.5) -> dict[str, Any]:
    return simulation.simulate(
        conn,
        merchant_id=shop.merchant_id,
        program_id=shop.program_id,
        draft=draft,
        first=MARCH[0],
        last=MARCH[1],
        cost_per_point=cost,
    )


def test_the_unchanged_program_replays_to_what_the_ledger_recorded(engine: Engine) -> None:
    with engine.begin() as conn:
        shop = Shop(conn)
        expected = _history(shop)
        out = _simulate(conn, shop, LIVE)
        by_event, by_posting = _ledger(conn, shop)
    names = {v: k for k, v in shop.ids.items()}
    live = {names[m]: p for m, p in out["per_member_live"].items()}
    assert live == expected
    assert {names[m]: p for m, p in by_event.items()} == {k: v for k, v in expected.items() if k != "dan"}
    assert by_posting == by_event
    assert out["per_member_draft"] == out["per_member_live"]
    assert out["ledger"] == {"points_issued": 810, "points_reversed": 70}
    assert (out["live"]["points_issued"], out["live"]["points_reversed"], out["live"]["net_points"]) == (
        810,
        70,
        740,
    )
    assert out["draft"] == out["live"]
    assert set(out["difference"].values()) == {0} and out["most_affected"] == []
    # Held at the end of March: Ann 400 + 470, Bob 100 + 20 (February) - 20 (March), Cara 290.
    assert out["live"]["liability_points"] == 1260 and out["live"]["liability"] == 630
    assert out["live"]["cost"] == 370  # 740 net points at 0.5
    assert out["live"]["tier_population"] == {"gold": 1, "member": 2, "silver": 1}


def test_a_draft_with_twice_the_points_per_spend_doubles_the_spend_points(engine: Engine) -> None:
    with engine.begin() as conn:
        shop = Shop(conn)
        _history(shop)
        out = _simulate(conn, shop, _draft_2x(silver=30000))
    live, draft = out["live"], out["draft"]
    fixed = 20 + 20 + 5 + 5  # reviews and visits: fixed awards, not multiplied
    assert draft["points_issued"] - fixed == 2 * (live["points_issued"] - fixed) == 1520
    # Cara's returned coffee takes back twice as much (40); Bob's refund of a February purchase
    # takes back what the ledger gave that purchase (50) either way.
    assert (live["points_reversed"], draft["points_reversed"]) == (70, 90)
    assert out["difference"]["net_points"] == 740 and out["difference"]["cost"] == 370
    assert draft["liability_points"] == 1260 + 740
    # With silver at 300.00, Cara (270.00 net) stays at the base tier.
    assert draft["tier_population"] == {"gold": 1, "member": 3}
    names = {v: k for k, v in shop.ids.items()}
    assert [(names[m["member_id"]], m["difference"]) for m in out["most_affected"]] == [
        ("ann", 450),
        ("cara", 290),
    ]
    assert (
        out["most_affected"][1]["live_tier"] == "silver" and out["most_affected"][1]["draft_tier"] == "member"
    )


def test_live_versions_are_replayed_as_the_ledger_applied_them(engine: Engine) -> None:
    with engine.begin() as conn:
        shop = Shop(conn)
        later = bean_rewards(earning_rules=[{**RULES[0], "points": 3}, *RULES[1:]])
        programs.update_program(
            conn,
            merchant_id=shop.merchant_id,
            program_id=shop.program_id,
            body=later,
            effective_from=datetime(2026, 3, 15, tzinfo=UTC),
        )
        shop.member("eve", "2026-01-01")
        assert shop.buy("eve", "e-1", "2026-03-10", ("l1", "food", 1, 10000)) == 100  # version 1
        assert shop.buy("eve", "e-2", "2026-03-20", ("l1", "coffee", 2, 1000)) == 120  # 20 x 3 x 2
        assert shop.event("eve", "e-rf", "refund", "2026-03-25", refers_to="e-2", items=[{"id": "l1"}]) == -60
        out = _simulate(conn, shop, LIVE)  # the draft: version 1's rules for the whole month
        by_event, _ = _ledger(conn, shop)
    assert out["per_member_live"] == by_event == {shop.ids["eve"]: 160}
    assert out["per_member_draft"] == {shop.ids["eve"]: 100 + 40 - 20}


def test_flights_with_status_miles_tiers_replay_to_the_ledger(engine: Engine) -> None:
    """An airline: miles by distance, a gold bonus on miles once status miles reach gold, and a
    cancelled flight taking its status miles back."""
    tiers = {
        "metric": "status_miles",
        "period": "calendar_year",
        "downgrade": "one_level",
        "levels": [
            {"id": "blue", "name": "Blue", "threshold": 0},
            {"id": "silver", "name": "Silver", "threshold": 5000},
            {"id": "gold", "name": "Gold", "threshold": 15000, "multiplier": "2"},
        ],
    }
    rule = {
        "id": "miles",
        "type": "distance",
        "percent_by_fare_class": {"Y": 100, "J": 150},
        "tier_bonus": True,
    }
    body = bean_rewards(name="Sky", earning_rules=[rule], tiers=tiers, rewards=[])
    with engine.begin() as conn:
        shop = Shop(conn, body)
        shop.member("flyer", "2026-01-01")
        trip = {"origin": "JFK", "destination": "LHR", "fare_class": "J"}
        shop.event("flyer", "f-feb", "flight", "2026-02-01", **trip)  # before: about 5,177 status miles
        for n in range(1, 5):
            shop.event("flyer", f"f-{n}", "flight", f"2026-03-0{n}", **trip)
        shop.event("flyer", "f-x", "cancel", "2026-03-06", refers_to="f-2")
        shop.event("flyer", "f-5", "flight", "2026-03-07", **trip)
        out = _simulate(conn, shop, body)
        by_event, _ = _ledger(conn, shop)
        e = t.events.c
        points = dict(
            conn.execute(select(e.external_id, e.points).where(e.merchant_id == shop.merchant_id)).all()
        )
    # Gold after f-2 (3 x about 5,177 status miles): f-3 on earn twice the miles of f-1.
    assert points["f-3"] == points["f-5"] == 2 * points["f-1"]
    assert out["per_member_live"] == by_event == out["per_member_draft"]
    assert out["live"]["tier_population"] == {"gold": 1}
    assert out["live"]["points_reversed"] > 0


def test_a_simulation_writes_nothing(engine: Engine) -> None:
    counted = [
        t.journals,
        t.postings,
        t.events,
        t.event_lines,
        t.event_rules,
        t.qualifications,
        t.lots,
        t.tier_changes,
        t.member_balances,
    ]
    with engine.begin() as conn:
        shop = Shop(conn)
        _history(shop)

    def counts() -> list[int]:
        with engine.connect() as c:
            return [
                int(
                    c.execute(
                        select(func.count()).select_from(tb).where(tb.c.merchant_id == shop.merchant_id)
                    ).scalar()
                    or 0
                )
                for tb in counted
            ]

    before = counts()
    with engine.begin() as conn:
        _simulate(conn, shop, _draft_2x())
        with pytest.raises(NoData):
            simulation.simulate(
                conn,
                merchant_id=shop.merchant_id,
                program_id=shop.program_id,
                draft=LIVE,
                first=date(2025, 1, 1),
                last=date(2025, 1, 31),
                cost_per_point=1,
            )
    assert counts() == before
