"""Analytics over the API on SQLite and PostgreSQL: CLV from a program's purchases (purchase days,
calibration end, refunds, time units), KPIs, and the errors an integrator can cause."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, Engine

from patron.api.app import create_app
from patron.config import Settings
from patron.services import events, members, programs
from patron.services.members import MemberCreate
from patron.services.merchants import create_merchant
from patron.storage.analytics import purchase_days
from tests.conftest import bean_rewards

CALIBRATION_END = "2026-02-02"


@dataclass
class Shop:
    client: TestClient
    key: str
    program_id: str
    ids: dict[str, str]  # external id -> member id

    def get(self, path: str, key: str | None = None, **params: Any) -> Any:
        return self.client.get(path, params=params, headers={"Authorization": f"Bearer {key or self.key}"})

    def clv(self, **params: Any) -> Any:
        return self.get(f"/v1/programs/{self.program_id}/analytics/clv", **params)


def _merchant(conn: Connection, tz: str = "UTC") -> tuple[str, str, str]:
    merchant, key = create_merchant(conn, name="Analytics Shop")
    program = programs.create_program(conn, merchant_id=merchant["id"], body=bean_rewards(timezone=tz))
    return merchant["id"], key, program["id"]


def _member(conn: Connection, merchant_id: str, program_id: str, external_id: str, **extra: Any) -> str:
    data = MemberCreate(program_id=program_id, external_id=external_id, **extra)
    return str(members.enrol(conn, merchant_id=merchant_id, data=data)["id"])


def _buy(conn: Connection, merchant_id: str, member_id: str, event_id: str, at: str, *amounts: int) -> None:
    items = [
        {"id": f"l{n}", "sku": "SOUP", "category": "food", "quantity": 1, "unit_price": amount}
        for n, amount in enumerate(amounts, 1)
    ]
    body = {"id": event_id, "type": "purchase", "member_id": member_id, "occurred_at": at, "items": items}
    events.record_event(conn, merchant_id=merchant_id, body=body)


def _refund(
    conn: Connection, merchant_id: str, member_id: str, event_id: str, of: str, at: str, *lines: str
) -> None:
    body = {
        "id": event_id,
        "type": "refund",
        "member_id": member_id,
        "refers_to": of,
        "occurred_at": at,
        "items": [{"id": line, "quantity": 1} for line in lines],
    }
    events.record_event(conn, merchant_id=merchant_id, body=body)


def _regulars(conn: Connection, merchant_id: str, program_id: str, count: int, seed: int) -> None:
    """Customers who come back now and then, so that the models have something to learn from."""
    rng = random.Random(seed)
    for i in range(count):
        mid = _member(conn, merchant_id, program_id, f"regular-{i}")
        day = date(2025, 10, 1) + timedelta(days=rng.randrange(90))
        for n in range((1, 2, 3, 4, 6)[i % 5]):
            if day > date(2026, 2, 2):
                break
            _buy(conn, merchant_id, mid, f"r{i}-{n}", f"{day}T12:00:00Z", rng.randrange(500, 5000))
            day += timedelta(days=rng.randrange(3, 30))


@pytest.fixture(scope="module")
def analytics_client(engine: Engine, db_url: str) -> Iterator[TestClient]:
    app = create_app(Settings(database_url=db_url), engine=engine)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="module")
def shop(analytics_client: TestClient, engine: Engine) -> Shop:
    with engine.begin() as conn:
        merchant_id, key, program_id = _merchant(conn)
        m, p = merchant_id, program_id
        ids = {
            name: _member(conn, m, p, name)
            for name in ("alice", "bob", "carol", "dave", "erin", "frank", "gina")
        }
        a, b, c, d, e, g = (ids[k] for k in ("alice", "bob", "carol", "dave", "erin", "gina"))
        # alice: two purchases on 5 January count as one day; the one after the calibration end is ignored
        _buy(conn, m, a, "a1", "2026-01-05T09:00:00Z", 1200)
        _buy(conn, m, a, "a2", "2026-01-05T18:00:00Z", 800)
        _buy(conn, m, a, "a3", "2026-01-19T12:00:00Z", 2500)
        _buy(conn, m, a, "a4", "2026-02-10T12:00:00Z", 9900)
        # bob: one purchase
        _buy(conn, m, b, "b1", "2026-01-12T12:00:00Z", 700)
        # carol: a repeat day made of two purchases (3.00 + 7.00)
        _buy(conn, m, c, "c1", "2026-01-05T12:00:00Z", 1000)
        _buy(conn, m, c, "c2", "2026-01-12T12:00:00Z", 2000)
        _buy(conn, m, c, "c3", "2026-01-26T08:00:00Z", 300)
        _buy(conn, m, c, "c4", "2026-01-26T20:00:00Z", 700)
        # dave: the last minutes of the calibration end count, the first minutes after it do not
        _buy(conn, m, d, "d1", "2026-01-06T12:00:00Z", 500)
        _buy(conn, m, d, "d2", "2026-02-02T23:30:00Z", 600)
        _buy(conn, m, d, "d3", "2026-02-03T00:10:00Z", 700)
        # erin: a purchase refunded in full is no purchase; a partial refund lowers the day's value;
        # a refund after the calibration end was not known at that time
        _buy(conn, m, e, "e1", "2026-01-05T12:00:00Z", 1000)
        _buy(conn, m, e, "e2", "2026-01-19T12:00:00Z", 4000)
        _refund(conn, m, e, "e2-back", "e2", "2026-01-20T12:00:00Z", "l1")
        _buy(conn, m, e, "e3", "2026-01-26T12:00:00Z", 3000, 1000)
        _refund(conn, m, e, "e3-back", "e3", "2026-01-28T12:00:00Z", "l2")
        _buy(conn, m, e, "e4", "2026-01-30T12:00:00Z", 2000)
        _refund(conn, m, e, "e4-back", "e4", "2026-02-05T12:00:00Z", "l1")
        # frank never buys; gina only after the calibration end
        _buy(conn, m, g, "g1", "2026-03-01T12:00:00Z", 1500)
        _regulars(conn, m, p, 24, seed=7)
    return Shop(analytics_client, key, program_id, ids)


def _by_external(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["external_id"]: row for row in body["members"]}


def test_frequency_recency_and_age_count_purchase_days_up_to_the_calibration_end(shop: Shop) -> None:
    r = shop.clv(calibration_end=CALIBRATION_END, time_unit="week", horizon=39)
    assert r.status_code == 200, r.text
    rows = _by_external(r.json())
    alice, bob, carol, dave, erin = (rows[k] for k in ("alice", "bob", "carol", "dave", "erin"))
    assert alice["member_id"] == shop.ids["alice"]
    assert (alice["frequency"], alice["recency"], alice["T"]) == (1, 2, 4)
    assert alice["monetary_value"] == 25.0  # 5 January is the first day; 19 January's 25.00 repeats
    assert (bob["frequency"], bob["recency"], bob["T"]) == (0, 0, 3)
    assert bob["monetary_value"] is None
    assert (carol["frequency"], carol["recency"], carol["T"]) == (2, 3, 4)
    assert carol["monetary_value"] == 15.0  # (20.00 + (3.00 + 7.00)) / 2
    assert dave["frequency"] == 1
    assert dave["recency"] == dave["T"] == pytest.approx(27 / 7)
    assert erin["frequency"] == 2  # 5, 26 and 30 January; 19 January was taken back
    assert (erin["recency"], erin["T"]) == (pytest.approx(25 / 7), 4)
    assert erin["monetary_value"] == 25.0  # (30.00 + 20.00) / 2
    assert "frank" not in rows and "gina" not in rows
    assert len(rows) == 5 + 24


def test_time_unit_and_calibration_end_change_the_clock(shop: Shop) -> None:
    days = _by_external(shop.clv(calibration_end=CALIBRATION_END, time_unit="day").json())["alice"]
    assert (days["frequency"], days["recency"], days["T"]) == (1, 14, 28)
    months = _by_external(shop.clv(calibration_end=CALIBRATION_END, time_unit="month").json())["alice"]
    assert months["recency"] == pytest.approx(14 / 30.4375)
    assert months["T"] == pytest.approx(28 / 30.4375)
    earlier = _by_external(shop.clv(calibration_end="2026-01-19", time_unit="week").json())
    assert (earlier["alice"]["frequency"], earlier["alice"]["T"]) == (1, 2)
    assert earlier["carol"]["frequency"] == 1
    assert "dave" in earlier and earlier["dave"]["frequency"] == 0


def test_values_are_probabilities_and_positive_money(shop: Shop) -> None:
    body = shop.clv(calibration_end=CALIBRATION_END, time_unit="week", horizon=39).json()
    model = body["model"]
    assert set(model) == {"bgnbd", "gamma_gamma"}
    assert set(model["bgnbd"]) == {"r", "alpha", "a", "b"}
    assert set(model["gamma_gamma"]) == {"p", "q", "v"}
    for value in [*model["bgnbd"].values(), *model["gamma_gamma"].values()]:
        assert math.isfinite(value) and value > 0
    rows = body["members"]
    for row in rows:
        assert 0 < row["p_alive"] <= 1
        assert math.isfinite(row["expected_purchases"]) and row["expected_purchases"] > 0
        assert math.isfinite(row["clv"]) and row["clv"] > 0
        if row["frequency"] == 0:
            assert row["p_alive"] == 1
    assert [row["clv"] for row in rows] == sorted((row["clv"] for row in rows), reverse=True)
    # a longer horizon means more purchases expected, for everyone
    longer = _by_external(shop.clv(calibration_end=CALIBRATION_END, time_unit="week", horizon=78).json())
    for row in rows:
        assert longer[row["external_id"]]["expected_purchases"] > row["expected_purchases"]
    top = shop.clv(calibration_end=CALIBRATION_END, limit=3).json()["members"]
    assert [row["member_id"] for row in top] == [row["member_id"] for row in rows[:3]]


def test_purchase_days_follow_the_programs_timezone(engine: Engine) -> None:
    with engine.begin() as conn:
        m, _, p = _merchant(conn)
        who = _member(conn, m, p, "traveller")
        _buy(conn, m, who, "t1", "2026-01-06T03:00:00Z", 100)  # 5 January in New York
        _buy(conn, m, who, "t2", "2026-01-10T22:30:00Z", 100)  # 10 January, 23:30 in Paris (CET)
        _buy(conn, m, who, "t3", "2026-01-10T23:30:00Z", 100)  # 11 January, 00:30 in Paris
        _buy(conn, m, who, "t4", "2026-07-01T22:30:00Z", 100)  # 2 July, 00:30 in Paris (CEST)

        def days(tz: str) -> list[str]:
            rows = purchase_days(
                conn,
                merchant_id=m,
                program_id=p,
                until=datetime.fromisoformat("2026-08-01T00:00:00Z"),
                timezone=tz,
            )
            return [str(row.day) for row in rows]

        assert days("UTC") == ["2026-01-06", "2026-01-10", "2026-07-01"]
        assert days("Europe/Paris") == ["2026-01-06", "2026-01-10", "2026-01-11", "2026-07-02"]
        assert days("America/New_York") == ["2026-01-05", "2026-01-10", "2026-07-01"]


def test_another_merchants_program_is_not_found(shop: Shop, engine: Engine) -> None:
    with engine.begin() as conn:
        _, other_key, other_program = _merchant(conn)
    r = shop.get(
        f"/v1/programs/{shop.program_id}/analytics/clv", key=other_key, calibration_end=CALIBRATION_END
    )
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["type"].endswith("/not-found")
    assert shop.get(f"/v1/programs/{other_program}/analytics/clv").status_code == 404
    assert shop.get("/v1/programs/prg_nope/analytics/clv").status_code == 404
    assert shop.get(f"/v1/programs/{shop.program_id}/analytics/kpis", key=other_key).status_code == 404


@pytest.mark.parametrize(
    "params",
    [
        {"calibration_end": "2026-02-30"},
        {"calibration_end": "02/02/2026"},
        {"calibration_end": "2026-2-2"},
        {"calibration_end": "2999-01-01"},
        {"calibration_end": "1969-12-31"},
        {"calibration_end": CALIBRATION_END, "time_unit": "year"},
        {"calibration_end": CALIBRATION_END, "horizon": 0},
        {"calibration_end": CALIBRATION_END, "horizon": -4},
        {"calibration_end": CALIBRATION_END, "horizon": "nan"},
        {"calibration_end": CALIBRATION_END, "horizon": "inf"},
        {"calibration_end": CALIBRATION_END, "horizon": 10_000, "time_unit": "week"},
        {"calibration_end": CALIBRATION_END, "limit": 0},
    ],
)
def test_bad_input_is_a_problem_not_a_crash(shop: Shop, params: dict[str, Any]) -> None:
    r = shop.clv(**params)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["detail"]


def test_too_few_customers_is_422_with_the_reason(analytics_client: TestClient, engine: Engine) -> None:
    with engine.begin() as conn:
        m, key, p = _merchant(conn)
        for i in range(3):
            who = _member(conn, m, p, f"only-{i}")
            _buy(conn, m, who, f"o{i}-1", "2026-01-05T12:00:00Z", 1000)
            _buy(conn, m, who, f"o{i}-2", "2026-01-15T12:00:00Z", 1000)
    shop = Shop(analytics_client, key, p, {})
    r = shop.clv(calibration_end=CALIBRATION_END)
    assert r.status_code == 422
    assert r.json()["type"].endswith("/insufficient-data")
    assert "3 customers" in r.json()["detail"] and "at least 10" in r.json()["detail"]


def test_kpis_count_a_window_of_days(analytics_client: TestClient, engine: Engine) -> None:
    with engine.begin() as conn:
        m, key, p = _merchant(conn)
        early = datetime.fromisoformat("2025-12-01T00:00:00Z")
        ann = _member(conn, m, p, "ann", enrolled_at=early)
        ben = _member(conn, m, p, "ben", enrolled_at=early)
        _member(conn, m, p, "cat", enrolled_at=datetime.fromisoformat("2026-01-15T00:00:00Z"))
        _member(conn, m, p, "dan", enrolled_at=datetime.fromisoformat("2026-02-15T00:00:00Z"))
        _buy(conn, m, ann, "k1", "2026-01-03T12:00:00Z", 1000)  # 10 points
        _buy(conn, m, ann, "k2", "2026-01-20T12:00:00Z", 2000, 500)  # 25 points
        _refund(conn, m, ann, "k2-back", "k2", "2026-01-21T12:00:00Z", "l2")  # -5 points
        _buy(conn, m, ben, "k3", "2026-01-31T23:00:00Z", 500)  # 5 points
        _buy(conn, m, ben, "k4", "2026-02-01T12:00:00Z", 4000)  # after the window: 40 points
    r = Shop(analytics_client, key, p, {}).get(
        f"/v1/programs/{p}/analytics/kpis", start="2026-01-01", end="2026-01-31"
    )
    assert r.status_code == 200, r.text
    k = r.json()
    assert (k["start"], k["end"]) == ("2026-01-01", "2026-01-31")
    assert (k["members"], k["new_members"], k["active_members"]) == (3, 1, 2)
    assert (k["purchases"], k["purchasing_members"], k["repeat_purchase_rate"]) == (3, 2, 0.5)
    assert k["qualifying_spend"] == 1000 + 2500 - 500 + 500
    assert k["points"]["issued"] == 10 + 25 - 5 + 5
    assert k["points"]["outstanding"] == 35
    assert (k["points"]["redeemed"], k["points"]["expired"], k["points"]["debt"]) == (0, 0, 0)
    bad = Shop(analytics_client, key, p, {}).get(
        f"/v1/programs/{p}/analytics/kpis", start="2026-02-01", end="2026-01-31"
    )
    assert bad.status_code == 422
