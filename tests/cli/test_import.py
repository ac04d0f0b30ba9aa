"""``patron import members|transactions``: a merchant's CSV files, good rows and bad, imported once."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from typer.testing import CliRunner

from patron.cli.imports import app
from patron.domain.errors import InvalidInput
from patron.services import imports
from patron.services.members import find, member_view
from patron.services.merchants import create_merchant
from patron.services.money import to_minor
from patron.services.programs import create_program
from patron.storage import tables
from patron.storage.db import make_engine, migrate
from tests.conftest import bean_rewards


class Shop:
    """A database file with one merchant and a Bean Rewards program in New York time."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.url = f"sqlite:///{tmp / 'patron.db'}"
        self.engine = make_engine(self.url)
        migrate(self.engine)
        with self.engine.begin() as conn:
            merchant, _ = create_merchant(conn, name="Corner Café")
            self.merchant = merchant["id"]
            self.program = create_program(
                conn, merchant_id=self.merchant, body=bean_rewards(timezone="America/New_York")
            )["id"]

    def write(self, name: str, text: str) -> Path:
        path = self.tmp / name
        path.write_text(text, encoding="utf-8")
        return path

    def run(self, *args: str, program: str | None = None) -> Any:
        env = {"PATRON_DATABASE_URL": self.url, "PATRON_MERCHANT": None, "COLUMNS": "200"}
        return CliRunner().invoke(app, [*args, "--program", program or self.program], env=env)

    def points(self, external_id: str) -> int | None:
        with self.engine.begin() as conn:
            found = find(conn, merchant_id=self.merchant, external_id=external_id)
            if not found:
                return None
            return int(member_view(conn, merchant_id=self.merchant, member=found[0])["points"]["available"])

    def count(self, table: Any) -> int:
        with self.engine.begin() as conn:
            return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


@pytest.fixture
def shop(tmp_path: Path) -> Shop:
    return Shop(tmp_path)


def errors_of(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


TRANSACTIONS = """external_id,occurred_at,amount,currency,category
c1,2026-03-01,29.33,USD,coffee
c1,2026-03-02T10:00:00Z,10,usd,
c2,2026-03-03T09:30:00+01:00,5.50,USD,
"""


def test_importing_the_same_transactions_twice_changes_nothing(shop: Shop) -> None:
    file = shop.write("orders.csv", TRANSACTIONS)
    first = shop.run("transactions", str(file))
    assert first.exit_code == 0, first.output
    assert "read 3 rows: 3 imported, 0 skipped as already imported, 0 rejected" in first.output
    assert shop.points("c1") == 58 + 10  # 29.33 coffee at 2x, then 10.00
    assert shop.points("c2") == 5
    with shop.engine.begin() as conn:
        at = conn.execute(
            select(tables.events.c.occurred_at).where(tables.events.c.points == 58)
        ).scalar_one()
    assert at.isoformat() == "2026-03-01T05:00:00+00:00"  # a date is midnight in the program's timezone
    postings = shop.count(tables.postings)

    second = shop.run("transactions", str(file))
    assert second.exit_code == 0, second.output
    assert "read 3 rows: 0 imported, 3 skipped as already imported, 0 rejected" in second.output
    assert (shop.points("c1"), shop.points("c2")) == (68, 5)
    assert shop.count(tables.postings) == postings and shop.count(tables.members) == 2
    assert not (shop.tmp / "orders.errors.csv").exists()


def test_bad_transaction_rows_are_reported_and_the_rest_imported(shop: Shop) -> None:
    file = shop.write(
        "history.csv",
        "external_id,occurred_at,amount,currency,event_id\n"
        "c1,2026-03-01,10.00,USD,\n"
        "c1,2026-02-30,10.00,USD,\n"  # no such date
        "c1,2026-03-01,ten,USD,\n"
        "c1,2026-03-01,1.005,USD,\n"
        "c2,2026-03-01,10.00,EUR,\n"
        "c2,2026-03-01,7.00,USD,order-1\n"
        "c2,2026-03-01,8.00,USD,order-1\n"  # the same id with other content
        "c3,2026-03-01T10:00:00,10.00,USD,\n"  # no offset
        ",2026-03-01,10.00,USD,\n"
        "c3,2099-01-01,10.00,USD,\n"
        "c3,2026-03-04,3.00,USD,,extra\n"
        "c4,2026-03-05,20.00,USD,\n"
        "c5,0001-01-01T00:00:00+05:00,4.00,USD,\n"  # no UTC instant for it
        "c5,1969-12-31,4.00,USD,\n",
    )
    result = shop.run("transactions", str(file), "--batch-size", "3")
    assert result.exit_code == 0, result.output
    assert "read 14 rows: 3 imported, 0 skipped as already imported, 11 rejected" in result.output
    assert (shop.points("c1"), shop.points("c2"), shop.points("c4")) == (10, 7, 20)
    assert shop.points("c3") is None  # its rows were all rejected: no member either
    rejected = errors_of(shop.tmp / "history.errors.csv")
    reasons = {int(r["line"]): r["reason"] for r in rejected}
    assert sorted(reasons) == [3, 4, 5, 6, 8, 9, 10, 11, 12, 14, 15]
    assert "out of range" in reasons[14] and "out of range" in reasons[15]
    assert "not a date" in reasons[3]
    assert "plain decimal" in reasons[4]
    assert "decimal places" in reasons[5]
    assert "EUR does not match" in reasons[6]
    assert "order-1" in reasons[8] and "different" in reasons[8]
    assert "offset" in reasons[9]
    assert "external_id" in reasons[10]
    assert "future" in reasons[11]
    assert "more fields than the header (extra: extra)" in reasons[12]
    assert rejected[1]["amount"] == "ten"  # the row as it was, to correct and import again

    fixed = shop.write(
        "history.errors.csv",
        (shop.tmp / "history.errors.csv").read_text().replace("2026-02-30", "2026-02-28"),
    )
    again = shop.run("transactions", str(fixed))
    assert again.exit_code == 0, again.output
    assert "read 11 rows: 2 imported" in again.output  # the corrected date, and the row without its extra
    assert (shop.points("c1"), shop.points("c3")) == (20, 3)


MEMBERS = """external_id,email,phone,name,birthday
m1,ann@example.com,+14155550123,Ann,1990-05-01
m2,bob@example,,Bob,
,,,Nobody,
m3,ANN@example.com,,Ann twin,
m4,cat@example.com,020 7946 0958,Cat,
m5,dan@example.com,,Dan,2999-01-01
m6,,,Eve,
m1,ann@example.com,,Ann,
"""


def test_members_import_enrols_good_rows_rejects_bad_ones_and_is_idempotent(shop: Shop) -> None:
    file = shop.write("members.csv", MEMBERS)
    result = shop.run("members", str(file))
    assert result.exit_code == 0, result.output
    assert "read 8 rows: 2 imported, 1 skipped as already imported, 5 rejected" in result.output
    with shop.engine.begin() as conn:
        [ann] = find(conn, merchant_id=shop.merchant, email="ANN@example.com")
    assert (ann["external_id"], ann["phone"], str(ann["birthday"])) == ("m1", "+14155550123", "1990-05-01")
    reasons = {r["external_id"]: r["reason"] for r in errors_of(shop.tmp / "members.errors.csv")}
    assert set(reasons) == {"m2", "", "m3", "m4", "m5"}
    assert "email" in reasons["m2"]
    assert "external_id, email or phone" in reasons[""]
    assert "m1" in reasons["m3"]  # the email belongs to the member imported as m1
    assert "phone" in reasons["m4"]
    assert "birthday" in reasons["m5"]

    again = shop.run("members", str(file))
    assert "read 8 rows: 0 imported, 3 skipped as already imported, 5 rejected" in again.output
    assert shop.count(tables.members) == 2


def test_unreadable_files_and_unknown_programs_exit_non_zero(shop: Shop) -> None:
    missing = shop.run("transactions", str(shop.tmp / "missing.csv"))
    assert missing.exit_code == 1 and "cannot read" in missing.output
    wrong = shop.write("wrong.csv", "customer,when,total\nc1,2026-03-01,10.00\n")
    result = shop.run("transactions", str(wrong))
    assert result.exit_code == 1 and "occurred_at" in result.output
    empty = shop.write("empty.csv", "")
    assert shop.run("members", str(empty)).exit_code == 1
    garbage = shop.tmp / "garbage.csv"
    garbage.write_bytes(b"\xff\xfe\x00\x01binary\x00")
    assert shop.run("transactions", str(garbage)).exit_code == 1
    good = shop.write("good.csv", TRANSACTIONS)
    unknown = shop.run("transactions", str(good), program="prg_nope")
    assert unknown.exit_code == 1 and "prg_nope" in unknown.output
    twice = shop.write(
        "twice.csv", "external_id,occurred_at,amount,currency,Amount \nd1,2026-03-01,100.00,USD,1.00\n"
    )
    result = shop.run("transactions", str(twice))
    assert result.exit_code == 1 and "amount more than once" in result.output
    assert shop.count(tables.events) == 0


def test_a_byte_that_is_not_utf8_halfway_says_where_and_how_much_was_recorded(shop: Shop) -> None:
    rows = [f"m{i},2026-03-01,1.00,USD" for i in range(5000)]
    rows[2999] = "m2999,2026-03-01,1.00,USD,caf\xe9"  # a Latin-1 byte on file line 3001
    file = shop.tmp / "mixed.csv"
    file.write_bytes(
        ("external_id,occurred_at,amount,currency\n" + "\n".join(rows[:2999])).encode()
        + b"\n"
        + rows[2999].encode("latin-1")
        + b"\n"
        + "\n".join(rows[3000:]).encode()
        + b"\n"
    )
    result = CliRunner().invoke(
        app,
        ["transactions", str(file), "--program", shop.program, "--batch-size", "1000"],
        env={"PATRON_DATABASE_URL": shop.url, "PATRON_MERCHANT": None, "COLUMNS": "300"},
    )
    assert result.exit_code == 1
    words = " ".join(result.output.split())
    assert "at line 3001" in words
    recorded = shop.count(tables.events)
    assert recorded < 3000 and f"The first {recorded:,} rows were recorded, none after them" in words


def test_rejected_rows_are_reported_at_their_line_in_the_file(shop: Shop) -> None:
    file = shop.write(
        "lines.csv",
        "external_id,occurred_at,amount,currency,category\n"
        'q1,2026-03-01,1.00,USD,"two\nlines"\n'
        "\n"
        "\n"
        "q2,2026-03-01,bad,USD,\n",
    )
    result = shop.run("transactions", str(file))
    assert result.exit_code == 0 and "1 imported" in result.output and "1 rejected" in result.output
    [rejected] = errors_of(shop.tmp / "lines.errors.csv")
    assert rejected["external_id"] == "q2" and rejected["line"] == "6"


def test_a_real_process_shows_progress_and_prints_the_summary(shop: Shop) -> None:
    file = shop.write("orders.csv", TRANSACTIONS)
    env = {**os.environ, "PATRON_DATABASE_URL": shop.url, "COLUMNS": "200"}
    env.pop("PATRON_MERCHANT", None)
    command = [sys.executable, "-c", "from patron.cli.imports import app; app()"]
    proc = subprocess.run(
        [*command, "transactions", str(file), "--program", shop.program],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "3 imported" in proc.stdout and "orders.csv" in proc.stderr  # the progress bar
    proc = subprocess.run(
        [*command, "transactions", str(file), "--program", shop.program, "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert json.loads(proc.stdout) == {
        "read": 3,
        "imported": 0,
        "skipped": 3,
        "rejected": 0,
        "errors_file": None,
    }


def test_amounts_are_read_with_the_currency_exponent() -> None:
    assert [to_minor("29.33", "USD"), to_minor("1500", "JPY"), to_minor("1.250", "KWD")] == [2933, 1500, 1250]
    for bad, currency in (("1.5", "JPY"), ("-1.00", "USD"), ("1e3", "USD"), ("1,000.00", "USD"), ("", "USD")):
        with pytest.raises(InvalidInput):
            to_minor(bad, currency)


def test_rows_stream_in_batches_on_every_backend(engine: Engine) -> None:
    with engine.begin() as conn:
        merchant, _ = create_merchant(conn, name="Stream")
        program = create_program(conn, merchant_id=merchant["id"], body=bean_rewards())["id"]

    def rows() -> Any:
        for n in range(25):
            amount = "x" if n == 7 else f"{n + 1}.00"
            yield {
                "external_id": f"s{n % 4}",
                "occurred_at": "2026-03-01",
                "amount": amount,
                "currency": "USD",
            }

    batches: list[int] = []
    rejected: list[imports.Rejected] = []
    summary = imports.import_transactions(
        engine,
        merchant_id=merchant["id"],
        program_id=program,
        rows=rows(),
        on_rejected=rejected.append,
        progress=batches.append,
        batch_size=10,
    )
    assert batches == [10, 10, 5]
    assert summary.as_dict() == {"read": 25, "imported": 24, "skipped": 0, "rejected": 1}
    assert [(r.line, r.row["amount"]) for r in rejected] == [(9, "x")]
    with engine.begin() as conn:
        found = find(conn, merchant_id=merchant["id"], external_id="s3")
        view = member_view(conn, merchant_id=merchant["id"], member=found[0])
    assert view["points"]["available"] == sum(n + 1 for n in range(3, 25, 4) if n != 7)


def test_new_customers_are_enrolled_as_one_at_a_time_would_and_announced_first(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from patron.domain.identity import luhn_digit
    from patron.services import members, outbox
    from patron.storage import ingest as ingest_repo

    with engine.begin() as conn:
        merchant, _ = create_merchant(conn, name="Bulk Enrol")
        program = create_program(conn, merchant_id=merchant["id"], body=bean_rewards())["id"]
        # one customer is enrolled by another hand after the import looked them up: the bulk
        # enrolment meets their external id and falls back to one at a time
        members.enrol(
            conn,
            merchant_id=merchant["id"],
            data=members.MemberCreate(program_id=program, external_id="b-taken"),
        )
    rows = [
        {
            "external_id": f"b-{n % 30}",
            "occurred_at": f"2026-03-{1 + n % 28:02d}",
            "amount": "12.00",
            "currency": "USD",
        }
        for n in range(90)
    ] + [{"external_id": "b-taken", "occurred_at": "2026-03-05", "amount": "3.00", "currency": "USD"}]
    lookup, calls = ingest_repo.members_by_external_id, []

    def not_yet(conn, merchant_id, program_id, external_ids):  # type: ignore[no-untyped-def]
        calls.append(1)
        found = lookup(conn, merchant_id, program_id, external_ids)
        return {k: v for k, v in found.items() if k != "b-taken"} if len(calls) == 1 else found

    monkeypatch.setattr(ingest_repo, "members_by_external_id", not_yet)
    rejected: list[imports.Rejected] = []
    summary = imports.import_transactions(
        engine, merchant_id=merchant["id"], program_id=program, rows=rows, on_rejected=rejected.append
    )
    assert summary.as_dict() == {"read": 91, "imported": 91, "skipped": 0, "rejected": 0}, rejected
    assert len(calls) > 1  # the fallback asked again who "b-taken" is
    with engine.begin() as conn:
        people = [find(conn, merchant_id=merchant["id"], external_id=f"b-{n}")[0] for n in range(30)]
        cards = [p["card_number"] for p in people]
        codes = [p["referral_code"] for p in people]
        assert len(set(cards)) == len(set(codes)) == 30
        assert all(c.startswith("8") and len(c) == 16 and luhn_digit(c[:-1]) == c[-1] for c in cards)
        for n, p in enumerate(people):
            assert p["enrolled_at"].date().isoformat() == f"2026-03-{1 + n % 28:02d}"  # their first purchase
            assert member_view(conn, merchant_id=merchant["id"], member=p)["points"]["available"] == 36
            stream = outbox.list_events(conn, merchant_id=merchant["id"], member_id=p["id"])["data"]
            first = min(stream, key=lambda e: e["sequence"])
            assert (first["type"], first["sequence"]) == ("member.enrolled", 1)
            assert first["data"] == members.outbox_member(p)
            assert sorted(e["type"] for e in stream) == ["member.enrolled"] + ["points.earned"] * 3
