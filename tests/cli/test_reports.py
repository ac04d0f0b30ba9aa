"""``patron report NAME``: files an analyst can open (CSV, Parquet, SVG), a table on the terminal,
and a clear exit 1 for an unknown program or an empty period. On SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from typer.testing import CliRunner

from patron.cli.main import app
from patron.services import events, members, programs
from patron.services.members import MemberCreate
from patron.services.merchants import create_merchant
from patron.storage import tables as t
from tests.conftest import bean_rewards


@pytest.fixture
def shop(engine: Engine) -> dict[str, Any]:
    """Two members enrolled in January 2026: Ann buys in January and March, Bob in February."""
    with engine.begin() as conn:
        merchant, _ = create_merchant(conn, name="Report Shop")
        program = programs.create_program(conn, merchant_id=merchant["id"], body=bean_rewards(tiers=None))
        ids = {}
        for name, day in (("ann", "2026-01-03"), ("bob", "2026-01-04")):
            data = MemberCreate(program_id=program["id"], external_id=name, enrolled_at=f"{day}T00:00:00Z")
            ids[name] = members.enrol(conn, merchant_id=merchant["id"], data=data)["id"]
        for event_id, name, day, amount in (
            ("o1", "ann", "2026-01-05", 10000),
            ("o2", "bob", "2026-02-05", 5000),
            ("o3", "ann", "2026-03-05", 20000),
        ):
            body = {
                "id": event_id,
                "type": "purchase",
                "member_id": ids[name],
                "occurred_at": f"{day}T10:00:00Z",
                "items": [{"id": "l1", "category": "food", "quantity": 1, "unit_price": amount}],
            }
            events.record_event(conn, merchant_id=merchant["id"], body=body)
    return {"merchant": merchant["id"], "program": program["id"], "ids": ids}


def _report(db_url: str, shop: dict[str, Any], *args: str) -> Any:
    runner = CliRunner()
    env = {"PATRON_DATABASE_URL": db_url, "PATRON_MERCHANT": shop["merchant"], "COLUMNS": "200"}
    return runner.invoke(app, ["report", *args], env=env)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def test_cohorts_report_writes_csv_parquet_and_chart(
    db_url: str, shop: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "reports"
    args = [
        "cohorts",
        "--program",
        shop["program"],
        "--from",
        "2026-01-01",
        "--to",
        "2026-03-31",
        "--out",
        str(out),
    ]
    r = _report(db_url, shop, *args)
    assert r.exit_code == 0, r.output
    # One January cohort of 2: Ann in January, Bob in February, Ann in March.
    assert _rows(out / "cohorts.csv") == [
        {"month": "2026-01", "size": "2", "m0": "0.5", "m1": "0.5", "m2": "0.5"}
    ]
    assert (out / "cohorts.svg").read_text().startswith("<svg")
    assert "2026-01" in r.output and "cohorts.csv" in r.output
    pq = pytest.importorskip("pyarrow.parquet")
    table = pq.read_table(out / "cohorts.parquet").to_pylist()
    assert table == [{"month": "2026-01", "size": 2, "m0": 0.5, "m1": 0.5, "m2": 0.5}]


def test_rfm_and_kpi_reports(db_url: str, shop: dict[str, Any], tmp_path: Path) -> None:
    window = [
        "--program",
        shop["program"],
        "--from",
        "2026-01-01",
        "--to",
        "2026-03-31",
        "--out",
        str(tmp_path),
    ]
    r = _report(db_url, shop, "rfm", *window)
    assert r.exit_code == 0, r.output
    rows = {row["external_id"]: row for row in _rows(tmp_path / "rfm.csv")}
    # Ann: 2 purchases, 300.00, last on 5 March (26 days before 1 April); Bob: 1, 50.00, 54 days.
    assert (rows["ann"]["frequency"], rows["ann"]["monetary"], rows["ann"]["recency_days"]) == (
        "2",
        "30000",
        "26",
    )
    assert (rows["bob"]["frequency"], rows["bob"]["monetary"], rows["bob"]["recency_days"]) == (
        "1",
        "5000",
        "54",
    )
    # Two members: the better scores 1 + 5 * 1 // 2 = 3, the other 1 -> Ann loyal, Bob lost.
    assert (rows["ann"]["segment"], rows["bob"]["segment"]) == ("loyal", "lost")
    segments = {row["segment"]: row["members"] for row in _rows(tmp_path / "rfm-segments.csv")}
    assert (segments["loyal"], segments["lost"], segments["champions"]) == ("1", "1", "0")
    r = _report(db_url, shop, "kpis", *window)
    assert r.exit_code == 0, r.output
    figures = {row["figure"]: row["value"] for row in _rows(tmp_path / "kpis.csv")}
    assert (figures["purchases"], figures["purchase_frequency"], figures["member_revenue"]) == (
        "3",
        "1.5",
        "35000",
    )


def test_simulation_report_writes_nothing_to_the_ledger(
    db_url: str, shop: dict[str, Any], tmp_path: Path, engine: Engine
) -> None:
    draft = tmp_path / "draft.json"
    draft.write_text(
        json.dumps(
            bean_rewards(
                tiers=None, earning_rules=[{"id": "base", "type": "spend", "points": 2, "per_amount": 100}]
            )
        )
    )

    def journals() -> int:
        with engine.connect() as c:
            return int(
                c.execute(
                    select(func.count())
                    .select_from(t.journals)
                    .where(t.journals.c.merchant_id == shop["merchant"])
                ).scalar()
                or 0
            )

    before = journals()
    args = [
        "simulation",
        "--program",
        shop["program"],
        "--draft",
        str(draft),
        "--from",
        "2026-01-01",
        "--to",
        "2026-03-31",
        "--out",
        str(tmp_path),
    ]
    r = _report(db_url, shop, *args)
    assert r.exit_code == 0, r.output
    figures = {row["figure"]: row for row in _rows(tmp_path / "simulation.csv")}
    assert (figures["points_issued"]["live"], figures["points_issued"]["draft"]) == ("350", "700")
    assert len(_rows(tmp_path / "simulation-members.csv")) == 2
    assert journals() == before


def test_unknown_program_and_empty_period_exit_1(db_url: str, shop: dict[str, Any], tmp_path: Path) -> None:
    r = _report(db_url, shop, "rfm", "--program", "prg_nope", "--out", str(tmp_path))
    assert r.exit_code == 1 and "not found" in r.output
    r = _report(
        db_url,
        shop,
        "rfm",
        "--program",
        shop["program"],
        "--from",
        "2025-01-01",
        "--to",
        "2025-01-31",
        "--out",
        str(tmp_path),
    )
    assert r.exit_code == 1 and "no purchases between 2025-01-01 and 2025-01-31" in r.output
    assert not (tmp_path / "rfm.csv").exists()
    r = _report(
        db_url, shop, "cohorts", "--program", shop["program"], "--from", "2026-13-01", "--out", str(tmp_path)
    )
    assert r.exit_code == 1 and "YYYY-MM-DD" in r.output
    for args in (("--from", "0001-01-01", "--to", "0001-01-02"), ("--to", "9999-12-31")):
        r = _report(db_url, shop, "rfm", "--program", shop["program"], *args, "--out", str(tmp_path))
        assert r.exit_code == 1 and "out of range" in r.output, r.output
        assert r.exception is None or isinstance(r.exception, SystemExit)


def test_liability_and_usage_reports(db_url: str, shop: dict[str, Any], tmp_path: Path) -> None:
    base = ["--program", shop["program"], "--out", str(tmp_path)]
    r = _report(db_url, shop, "liability", *base, "--cost-per-point", "0.5")
    assert r.exit_code == 0, r.output
    figures = {row["figure"]: row["value"] for row in _rows(tmp_path / "liability.csv")}
    # 100 + 50 + 200 points held, nothing redeemed or expired: no breakage, 350 x 0.5.
    assert (figures["outstanding"], figures["breakage_rate"], figures["liability"]) == ("350", "0.0", "175")
    r = _report(db_url, shop, "liability", *base)
    assert r.exit_code == 1 and "--cost-per-point" in r.output
    r = _report(db_url, shop, "usage", *base, "--from", "2026-01-01", "--to", "2026-03-31")
    assert r.exit_code == 0, r.output
    assert [(row["month"], row["earns"]) for row in _rows(tmp_path / "usage.csv")] == [
        ("2026-01", "1"),
        ("2026-02", "1"),
        ("2026-03", "1"),
    ]
    assert "Loyalty visits per month" in (tmp_path / "usage.svg").read_text()
