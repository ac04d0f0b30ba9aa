"""The demo that ``make run`` shows a new user: a coffee shop with a year of believable activity."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, func, select

from patron.services.demo import DEMO_MERCHANT, build_demo
from patron.services.ledger import ledger_page, verify
from patron.services.members import get_member, member_view
from patron.services.merchants import authenticate
from patron.services.programs import get_program
from patron.storage import tables
from patron.storage.db import make_engine, migrate

MEMBERS = 30


def fresh_engine(path: Path) -> Engine:
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    return engine


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Engine, dict[str, Any]]]:
    engine = fresh_engine(tmp_path_factory.mktemp("demo") / "demo.db")
    with engine.begin() as conn:
        out = build_demo(conn, members=MEMBERS, seed=7)
    yield engine, out
    engine.dispose()


def count(engine: Engine, table: Any, merchant_id: str, *where: Any) -> int:
    with engine.connect() as conn:
        stmt = select(func.count()).select_from(table).where(table.c.merchant_id == merchant_id, *where)
        return int(conn.execute(stmt).scalar_one())


def event_rows(engine: Engine, merchant_id: str) -> list[dict[str, Any]]:
    """The demo's events in the order they were recorded (ids are time-ordered)."""
    ev = tables.events
    with engine.connect() as conn:
        stmt = select(ev).where(ev.c.merchant_id == merchant_id).order_by(ev.c.id)
        return [dict(r) for r in conn.execute(stmt).mappings()]


def test_returned_counts_match_the_database(demo_db: tuple[Engine, dict[str, Any]]) -> None:
    engine, out = demo_db
    m = out["merchant_id"]
    assert out["members"] == MEMBERS == count(engine, tables.members, m)
    assert out["events"] == count(engine, tables.events, m)
    assert out["events"] > 4 * MEMBERS  # a year of activity, not a handful of rows
    with engine.connect() as conn:
        sample = get_member(conn, merchant_id=m, member_id=out["sample_member"])
        program = get_program(conn, merchant_id=m, program_id=out["program_id"])
    assert sample["program_id"] == out["program_id"]
    assert program["timezone"] == "America/New_York"
    assert [lv["id"] for lv in program["tiers"]["levels"]] == ["member", "silver", "gold"]


def test_members_look_like_real_customers(demo_db: tuple[Engine, dict[str, Any]]) -> None:
    engine, out = demo_db
    mt = tables.members
    with engine.connect() as conn:
        rows = conn.execute(select(mt).where(mt.c.merchant_id == out["merchant_id"])).mappings().all()
    assert sorted(r["external_id"] for r in rows) == [f"cust-{n:04d}" for n in range(1, MEMBERS + 1)]
    assert len({r["email"] for r in rows}) == MEMBERS
    assert all(re.fullmatch(r"[a-z]+\.[a-z]+\.\d+@example\.com", r["email"]) for r in rows)
    with_phone = [r["phone"] for r in rows if r["phone"]]
    assert 0.4 * MEMBERS <= len(with_phone) < MEMBERS
    assert all(re.fullmatch(r"\+1415\d{7}", p) for p in with_phone)
    now = datetime.now(UTC)
    ages = [(now - r["enrolled_at"]).days for r in rows]
    assert max(ages) > 365  # some joined more than a year ago
    assert min(ages) < 200  # and some recently
    assert max(ages) <= 460


def test_the_books_balance(demo_db: tuple[Engine, dict[str, Any]]) -> None:
    engine, out = demo_db
    with engine.connect() as conn:
        assert verify(conn) == []
        assert verify(conn, merchant_id=out["merchant_id"]) == []


def test_regulars_reach_silver_or_gold(demo_db: tuple[Engine, dict[str, Any]]) -> None:
    engine, out = demo_db
    m = out["merchant_id"]
    mt = tables.members
    with engine.connect() as conn:
        ids = conn.execute(select(mt.c.id).where(mt.c.merchant_id == m)).scalars().all()
        tiers = [
            member_view(conn, merchant_id=m, member=get_member(conn, merchant_id=m, member_id=i))["tier"]
            for i in ids
        ]
    levels = [t["id"] if t else None for t in tiers]
    assert None not in levels  # everyone holds at least the base level
    assert {"silver", "gold"} & set(levels), levels
    assert levels.count("member") > len(levels) / 2  # most people are occasional customers


def test_activity_is_a_year_of_shop_life_in_time_order(demo_db: tuple[Engine, dict[str, Any]]) -> None:
    engine, out = demo_db
    rows = event_rows(engine, out["merchant_id"])
    now = datetime.now(UTC)
    times = [r["occurred_at"] for r in rows]
    assert times == sorted(times)  # recorded chronologically, which tiers depend on
    assert times[-1] < now
    assert 300 <= (now - times[0]).days <= 366
    types = {r["type"] for r in rows}
    assert {"purchase", "refund", "visit", "review"} <= types
    purchases = [r for r in rows if r["type"] == "purchase"]
    assert {r["location_id"] for r in purchases} == {"downtown", "harbour"}
    new_york = ZoneInfo("America/New_York")
    assert {p["occurred_at"].astimezone(new_york).hour for p in purchases} <= set(range(7, 19))
    assert all(r["points"] > 0 for r in purchases)
    er = tables.event_rules
    with engine.connect() as conn:
        rule_ids = set(
            conn.execute(select(er.c.rule_id).where(er.c.merchant_id == out["merchant_id"])).scalars()
        )
    assert {"base", "coffee-2x", "happy-hour"} <= rule_ids


def test_refunds_are_partial_and_come_after_their_purchase(demo_db: tuple[Engine, dict[str, Any]]) -> None:
    engine, out = demo_db
    rows = event_rows(engine, out["merchant_id"])
    by_id = {r["id"]: r for r in rows}
    refunds = [r for r in rows if r["type"] == "refund"]
    assert refunds
    now = datetime.now(UTC)
    for refund in refunds:
        purchase = by_id[refund["refers_to"]]
        assert purchase["type"] == "purchase"
        assert purchase["member_id"] == refund["member_id"]
        assert purchase["occurred_at"] < refund["occurred_at"] < now
        assert 0 < -refund["points"] < purchase["points"]  # one unit back, not the whole order
    purchases = sum(1 for r in rows if r["type"] == "purchase")
    assert len(refunds) < 0.1 * purchases


def test_goodwill_adjustments_show_in_the_members_ledger(demo_db: tuple[Engine, dict[str, Any]]) -> None:
    engine, out = demo_db
    m = out["merchant_id"]
    jt = tables.journals
    with engine.connect() as conn:
        adjusted = set(
            conn.execute(
                select(jt.c.member_id).where(jt.c.merchant_id == m, jt.c.kind == "adjustment")
            ).scalars()
        )
        assert adjusted
        for member_id in adjusted:
            page = ledger_page(conn, merchant_id=m, member_id=member_id, limit=500)
            goodwill = [e for e in page["data"] if e["type"] == "adjustment"]
            assert goodwill
            assert all(e["points"] > 0 and e["reason"].startswith("Goodwill") for e in goodwill)


def test_same_seed_gives_the_same_activity(demo_db: tuple[Engine, dict[str, Any]], tmp_path: Path) -> None:
    engine, out = demo_db
    other = fresh_engine(tmp_path / "again.db")
    try:
        with other.begin() as conn:
            again = build_demo(conn, members=MEMBERS, seed=7)
        assert again["events"] == out["events"]
        assert again["merchant_id"] != out["merchant_id"]
        first = sorted(
            (r["external_id"], r["type"], r["points"]) for r in event_rows(engine, out["merchant_id"])
        )
        second = sorted(
            (r["external_id"], r["type"], r["points"]) for r in event_rows(other, again["merchant_id"])
        )
        assert first == second
    finally:
        other.dispose()


def test_running_it_again_creates_nothing_and_issues_a_new_key(
    demo_db: tuple[Engine, dict[str, Any]],
) -> None:
    engine, out = demo_db
    with engine.begin() as conn:
        again = build_demo(conn, members=MEMBERS * 2, seed=8)
    assert again["merchant_id"] == out["merchant_id"]
    assert again["program_id"] == out["program_id"]
    assert again["members"] == MEMBERS == count(engine, tables.members, out["merchant_id"])
    assert again["events"] == out["events"] == count(engine, tables.events, out["merchant_id"])
    with engine.connect() as conn:
        merchants = conn.execute(
            select(func.count()).select_from(tables.merchants).where(tables.merchants.c.name == DEMO_MERCHANT)
        ).scalar_one()
        assert merchants == 1
        assert again["api_key"] != out["api_key"]
        principal = authenticate(conn, key=again["api_key"])
        assert principal.merchant_id == out["merchant_id"]
        assert principal.allows("admin")
        get_member(conn, merchant_id=out["merchant_id"], member_id=again["sample_member"])


def test_patron_demo_command(tmp_path: Path) -> None:
    patron = Path(sys.executable).parent / "patron"
    env = {
        **os.environ,
        "PATRON_DATABASE_URL": f"sqlite:///{tmp_path / 'demo.db'}",
        "COLUMNS": "200",
    }
    env.pop("PATRON_MERCHANT", None)
    run = subprocess.run(
        [str(patron), "demo", "--members", "20"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    found = re.search(r"API key: (ptr_[A-Za-z0-9_-]+)", run.stdout)
    assert found, run.stdout
    assert "20 members" in run.stdout
    engine = make_engine(env["PATRON_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            merchant_id = authenticate(conn, key=found.group(1)).merchant_id
            name = conn.execute(
                select(tables.merchants.c.name).where(tables.merchants.c.id == merchant_id)
            ).scalar_one()
        assert name == DEMO_MERCHANT
    finally:
        engine.dispose()
    checked = subprocess.run(
        [str(patron), "verify"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.startswith("ok")
