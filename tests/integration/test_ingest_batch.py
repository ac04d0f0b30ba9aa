"""The batch path (``services.ingest``) gives the ledger that recording each event alone gives.

The same generated history goes into two merchants: through the batch path into one and one
event at a time through ``record_event`` into the other. Balances, lots, postings, events (per
line and per rule), qualification rows and tiers must be identical, the books must balance, a
second import must change nothing, and two batches racing over the same members must neither
deadlock nor lose anything. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, Text, and_, cast, select

from patron.services import events, imports, ingest, ledger, members, merchants, programs
from patron.services.members import MemberCreate
from patron.services.tiers import tier_state
from patron.storage import tables as t
from patron.storage.outbox import outbox_events
from tests.conftest import bean_rewards

START = datetime(2025, 1, 1, tzinfo=UTC)
AS_OF = datetime(2026, 11, 1, tzinfo=UTC)

PROGRAM = bean_rewards(
    earning_rules=[
        {"id": "base", "type": "spend", "points": 1, "per_amount": 100},
        {"id": "coffee-2x", "type": "multiplier", "categories": ["coffee"], "multiplier": "2"},
        {"id": "pastry-3x", "type": "multiplier", "categories": ["pastry"], "multiplier": "3"},
        {"id": "big", "type": "bonus", "threshold": 8000, "points": 25},
    ],
    tiers={
        "metric": "qualifying_spend",
        "period": "calendar_year",
        "downgrade": "one_level",
        "levels": [
            {"id": "member", "name": "Member", "threshold": 0},
            {"id": "silver", "name": "Silver", "threshold": 30000, "multiplier": "1.25"},
            {"id": "gold", "name": "Gold", "threshold": 80000, "multiplier": "1.5"},
        ],
    },
    expiry={"months": 12, "by_tier": {"gold": {"months": 24}}},
)
KNOWN = [f"m{i}" for i in range(6)]
NEW = ["n0", "n1"]


class Shop:
    def __init__(self, engine: Engine, program: dict[str, Any]) -> None:
        self.engine = engine
        with engine.begin() as conn:
            merchant, _ = merchants.create_merchant(conn, name="Batch Café")
            self.merchant = merchant["id"]
            self.program = programs.create_program(conn, merchant_id=self.merchant, body=program)["id"]
            self.ids = {
                ext: members.enrol(
                    conn,
                    merchant_id=self.merchant,
                    data=MemberCreate(program_id=self.program, external_id=ext, enrolled_at=START),
                )["id"]
                for ext in KNOWN
            }
        # m0 owes 100 points: a purchase's points spent, then the purchase refunded
        self.event(_purchase(self.ids["m0"], "old-1", START + timedelta(days=9), [(10000, None)]))
        with engine.begin() as conn:
            ledger.adjust(
                conn,
                merchant_id=self.merchant,
                member_id=self.ids["m0"],
                points=-100,
                reason="spent",
                occurred_at=START + timedelta(days=10),
            )
        self.event(
            {
                "id": "old-1-refund",
                "type": "refund",
                "member_id": self.ids["m0"],
                "refers_to": "old-1",
                "occurred_at": (START + timedelta(days=11)).isoformat(),
                "items": [{"id": "l1", "quantity": 2}],  # all 200 points back: 100 owed
            }
        )

    def event(self, body: dict[str, Any]) -> None:
        with self.engine.begin() as conn:
            events.record_event(conn, merchant_id=self.merchant, body=body)

    def import_batch(self, rows: list[dict[str, str]], batch_size: int = 64) -> tuple[Any, list[Any]]:
        rejected: list[Any] = []
        summary = imports.import_transactions(
            self.engine,
            merchant_id=self.merchant,
            program_id=self.program,
            rows=rows,
            on_rejected=rejected.append,
            batch_size=batch_size,
        )
        return summary, [(r.line, r.reason) for r in rejected]

    def import_one_by_one(self, rows: list[dict[str, str]]) -> tuple[Any, list[Any]]:
        """What the importer did before the batch path: each row alone through record_event."""
        program = imports._program(self.engine, self.merchant, self.program)

        def apply(conn: Any, row: dict[str, str]) -> bool:
            external_id, occurred_at, body = imports._purchase(program, row)
            found = members.find(
                conn, merchant_id=self.merchant, program_id=self.program, external_id=external_id, limit=1
            )
            if found:
                member = found[0]
            else:
                data = MemberCreate(program_id=self.program, external_id=external_id, enrolled_at=occurred_at)
                member = members.enrol(conn, merchant_id=self.merchant, data=data)
            body = {"id": body["id"], "type": "purchase", "member_id": member["id"], **body}
            return events.record_event(conn, merchant_id=self.merchant, body=body)[1]

        rejected: list[Any] = []
        summary = imports._run(self.engine, rows, apply, rejected.append, None, 64)
        return summary, [(r.line, r.reason) for r in rejected]


def _purchase(
    member_id: str, event_id: str, at: datetime, lines: list[tuple[int, str | None]]
) -> dict[str, Any]:
    items = []
    for n, (price, category) in enumerate(lines, 1):
        item: dict[str, Any] = {"id": f"l{n}", "quantity": 1 + n % 2, "unit_price": price}
        if category:
            item["category"] = category
        items.append(item)
    return {
        "id": event_id,
        "type": "purchase",
        "member_id": member_id,
        "occurred_at": at.isoformat(),
        "currency": "USD",
        "items": items,
    }


def history(seed: int, count: int = 300) -> list[dict[str, str]]:
    """CSV rows: purchases over two calendar years, mostly in time order but not quite, with
    repeated rows, explicit ids, a conflicting id and a few bad rows."""
    rnd = random.Random(seed)
    rows: list[dict[str, str]] = []
    at = START + timedelta(days=20)
    for n in range(count):
        at += timedelta(hours=rnd.randint(1, 48))
        when = at - timedelta(days=rnd.choice([0, 0, 0, 3]))  # now and then a late arrival
        ext = rnd.choice(KNOWN + KNOWN + NEW)
        row = {
            "external_id": ext,
            "occurred_at": when.date().isoformat() if n % 5 == 0 else when.isoformat().replace("+00:00", "Z"),
            "amount": f"{rnd.randint(100, 15000) / 100:.2f}",
            "currency": "USD",
            "category": rnd.choice(["coffee", "pastry", "", ""]),
            "event_id": f"order-{n}" if n % 7 == 0 else "",
        }
        rows.append(row)
        if n % 41 == 0:
            rows.append(dict(row))  # the same row twice: one purchase
    rows.insert(50, {**rows[7], "amount": "1.00"})  # order-... reused with other content, or a new hash
    rows.insert(80, {**rows[14], "event_id": "order-14", "amount": "2.00"})  # a conflicting id
    rows.insert(120, {**rows[3], "currency": "EUR"})
    rows.insert(200, {**rows[4], "amount": "ten"})
    return rows


def snapshot(engine: Engine, merchant_id: str) -> dict[str, Any]:
    """Everything the two paths must agree on, keyed by external ids (internal ids differ)."""
    with engine.begin() as conn:
        ext = {
            r.id: r.external_id
            for r in conn.execute(
                select(t.members.c.id, t.members.c.external_id).where(t.members.c.merchant_id == merchant_id)
            )
        }
        balances = {
            ext[r.member_id]: tuple(r)[2:]
            for r in conn.execute(
                select(t.member_balances).where(t.member_balances.c.merchant_id == merchant_id)
            )
        }
        lots = sorted(
            (ext[r.member_id], r.points, r.earned_at, r.available_from, r.expires_at)
            for r in conn.execute(select(t.lots).where(t.lots.c.merchant_id == merchant_id))
        )
        posting_rows = conn.execute(
            select(t.postings, t.journals.c.kind, t.journals.c.reason, t.journals.c.program_version)
            .join(
                t.journals,
                and_(
                    t.journals.c.merchant_id == t.postings.c.merchant_id,
                    t.journals.c.id == t.postings.c.journal_id,
                ),
            )
            .where(t.postings.c.merchant_id == merchant_id)
        )
        postings = sorted(
            (
                ext[r.member_id],
                r.occurred_at,
                r.kind,
                _named(r.reason, ext),
                r.account,
                r.amount,
                r.lot_id is None,
                r.program_version,
            )
            for r in posting_rows
        )
        evs = {r.id: r for r in conn.execute(select(t.events).where(t.events.c.merchant_id == merchant_id))}
        lines = sorted(
            (evs[r.event_id].external_id, r.line_id, r.quantity, r.points, r.amount)
            for r in conn.execute(select(t.event_lines).where(t.event_lines.c.merchant_id == merchant_id))
        )
        rules = sorted(
            (evs[r.event_id].external_id, r.rule_id, r.points)
            for r in conn.execute(select(t.event_rules).where(t.event_rules.c.merchant_id == merchant_id))
        )
        quals = sorted(
            (evs[r.event_id].external_id, r.period_at, r.recorded_at, r.spend, r.status_points, r.visits)
            for r in conn.execute(
                select(t.qualifications).where(t.qualifications.c.merchant_id == merchant_id)
            )
        )
        event_rows = {}
        for e in evs.values():
            result = json.loads(_named(json.dumps(e.result), ext))
            member = result.pop("member")
            body = {k: v for k, v in e.body.items() if k != "member_id"}
            event_rows[e.external_id] = (
                ext[e.member_id],
                e.type,
                e.occurred_at,
                e.points,
                e.program_version,
                e.location_id,
                body,
                result,
                member["points"],
                member["tier"],
                member["external_id"],
            )
        tiers = {}
        for member_id, external_id in ext.items():
            member = members.get_member(conn, merchant_id=merchant_id, member_id=member_id)
            program, _ = programs.program_at(
                conn, merchant_id=merchant_id, program_id=member["program_id"], at=AS_OF
            )
            state = tier_state(conn, merchant_id=merchant_id, member=member, program=program, as_of=AS_OF)
            tiers[external_id] = (
                state.level.id if state and state.level else None,
                state.since if state else None,
            )
        enrolled = {
            ext[m.id]: m.enrolled_at
            for m in conn.execute(select(t.members).where(t.members.c.merchant_id == merchant_id))
        }
        outbox_rows = sorted(
            (
                ext.get(r.stream, r.stream),
                r.seq,
                r.type,
                r.occurred_at,
                # a member's own event data names its merchant's program and card: not compared
                None
                if r.type.startswith("member.")
                else json.loads(re.sub(r"(jrn|lot|evt)_\w+", "id", _named(json.dumps(r.data), ext))),
            )
            for r in conn.execute(select(outbox_events).where(outbox_events.c.merchant_id == merchant_id))
        )
        # JSON is stored as ``json.dumps`` writes it (PostgreSQL's json type keeps the text)
        for table, column in ((t.events, t.events.c.result), (outbox_events, outbox_events.c.data)):
            for (raw,) in conn.execute(select(cast(column, Text)).where(table.c.merchant_id == merchant_id)):
                assert raw == json.dumps(json.loads(raw))
        assert ledger.verify(conn, merchant_id=merchant_id) == []
    return {
        "outbox": outbox_rows,
        "balances": balances,
        "lots": lots,
        "postings": postings,
        "lines": lines,
        "rules": rules,
        "quals": quals,
        "events": event_rows,
        "tiers": tiers,
        "enrolled": enrolled,
    }


def _named(text: str, ext: dict[str, str]) -> str:
    return re.sub(r"mem_\w+", lambda m: ext.get(m.group(0), m.group(0)), text)


def assert_same(a: dict[str, Any], b: dict[str, Any]) -> None:
    for key in a:
        assert a[key] == b[key], key


@pytest.fixture
def slow_calls(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Bodies that the batch path handed to record_event (its slow path)."""
    calls: list[Any] = []
    real = ingest.record_event

    def spy(conn: Any, *, merchant_id: str, body: Any) -> Any:
        calls.append(body)
        return real(conn, merchant_id=merchant_id, body=body)

    monkeypatch.setattr(ingest, "record_event", spy)
    return calls


def test_a_csv_history_imported_in_batches_gives_the_ledger_of_one_event_at_a_time(
    engine: Engine, slow_calls: list[Any]
) -> None:
    rows = history(seed=7)
    batch, single = Shop(engine, PROGRAM), Shop(engine, PROGRAM)
    got, got_rejected = batch.import_batch(rows)
    assert not slow_calls, "every row of this program takes the fast path"
    want, want_rejected = single.import_one_by_one(rows)
    assert got.as_dict() == want.as_dict()
    assert got_rejected == want_rejected
    assert len(got_rejected) >= 3 and got.skipped >= 7
    a, b = snapshot(engine, batch.merchant), snapshot(engine, single.merchant)
    assert_same(a, b)
    # the story the generator tells: debt repaid first, tiers reached mid-file, expiry by tier
    assert a["balances"]["m0"][3] == 0  # debt
    assert any(kind == "earn" and account == "debt" for _, _, kind, _, account, *_ in a["postings"])
    assert {"silver", "gold"} <= {tier for tier, _ in a["tiers"].values()} | {
        r[1].split(":")[1] for r in a["rules"] if r[1].startswith("tier:")
    }
    assert any(r[1] == "tier:gold" for r in a["rules"]) and any(r[1] == "tier:silver" for r in a["rules"])
    assert len({lot[4] - lot[2] for lot in a["lots"]}) > 1  # 12 and 24 months

    again, again_rejected = batch.import_batch(rows, batch_size=100)
    assert again.imported == 0 and again.skipped == got.imported + got.skipped
    assert again_rejected == got_rejected
    assert_same(snapshot(engine, batch.merchant), a)


def test_three_line_purchases_with_repeats_and_odd_bodies(engine: Engine, slow_calls: list[Any]) -> None:
    batch, single = Shop(engine, PROGRAM), Shop(engine, PROGRAM)
    rnd = random.Random(11)

    def bodies(shop: Shop) -> list[dict[str, Any]]:
        rnd.seed(11)
        out = []
        at = START + timedelta(days=30)
        for n in range(240):
            at += timedelta(hours=rnd.randint(1, 60))
            ext = rnd.choice(KNOWN)
            lines = [(rnd.randint(50, 4000), rnd.choice(["coffee", "pastry", None])) for _ in range(3)]
            out.append(_purchase(shop.ids[ext], f"p-{n}", at, lines))
        out.insert(10, dict(out[3]))  # a replay inside the batch
        out.insert(20, {**out[5], "items": out[6]["items"]})  # the same id, another body: 409
        out.insert(30, {**out[8], "id": "ghost", "member_id": "mem_nobody"})  # unknown member
        out.insert(
            40, {"id": "v1", "type": "visit", "member_id": shop.ids["m5"], "occurred_at": at.isoformat()}
        )
        out.insert(50, {**out[9], "id": "eur", "currency": "EUR"})  # m-something goes one at a time
        out.insert(60, {"id": "bad", "type": "purchase"})  # does not parse
        return out

    outcomes = []
    b_bodies = bodies(batch)
    for i in range(0, len(b_bodies), 70):
        with engine.begin() as conn:
            outcomes += ingest.record_purchases(conn, merchant_id=batch.merchant, bodies=b_bodies[i : i + 70])
    reference = []
    for body in bodies(single):
        try:
            with engine.begin() as conn:
                reference.append((events.record_event(conn, merchant_id=single.merchant, body=body)[1], None))
        except Exception as exc:
            reference.append((False, type(exc).__name__))
    got = [(o.created, type(o.error).__name__ if o.error else None) for o in outcomes]
    assert got == reference
    assert {o for o in got if o[1]} == {
        (False, "IdempotencyConflict"),
        (False, "NotFound"),
        (False, "InvalidInput"),
    }
    assert 0 < len(slow_calls) < 80  # the visit, the unknown member, the EUR member's events
    assert_same(snapshot(engine, batch.merchant), snapshot(engine, single.merchant))


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"pending_days": 14}, id="pending"),
        pytest.param({"referrals": {"referrer_points": 50, "referee_points": 20}}, id="referrals"),
    ],
)
def test_programs_the_batch_path_cannot_do_fall_back_to_one_at_a_time(
    engine: Engine, slow_calls: list[Any], changes: dict[str, Any]
) -> None:
    program = {**PROGRAM, **changes}
    rows = history(seed=3, count=80)
    batch, single = Shop(engine, program), Shop(engine, program)
    if "referrals" in changes:
        for shop in (batch, single):
            with shop.engine.begin() as conn:
                referrer = members.get_member(conn, merchant_id=shop.merchant, member_id=shop.ids["m1"])
                members.enrol(
                    conn,
                    merchant_id=shop.merchant,
                    data=MemberCreate(
                        program_id=shop.program,
                        external_id="n0",
                        enrolled_at=START,
                        referral_code=referrer["referral_code"],
                    ),
                )
    got, got_rejected = batch.import_batch(rows, batch_size=25)
    want, want_rejected = single.import_one_by_one(rows)
    assert slow_calls
    assert (got.as_dict(), got_rejected) == (want.as_dict(), want_rejected)
    assert_same(snapshot(engine, batch.merchant), snapshot(engine, single.merchant))


def test_batches_over_the_same_members_race_without_deadlock_or_loss(engine: Engine) -> None:
    size = 10  # events per batch
    shop = Shop(engine, bean_rewards())
    ids = [shop.ids[e] for e in KNOWN]
    errors: list[BaseException] = []

    def worker(tag: str, order: list[str], rounds: int, go: threading.Barrier) -> Callable[[], None]:
        def run() -> None:
            try:
                for r in range(rounds):
                    go.wait()
                    bodies = [
                        _purchase(
                            order[n % len(order)],
                            f"{tag}-{r}-{n}",
                            START + timedelta(days=40, minutes=n),
                            [(1000, "coffee"), (250, None), (990, "pastry")],
                        )
                        for n in range(size)
                    ]
                    with engine.begin() as conn:
                        outcomes = ingest.record_purchases(conn, merchant_id=shop.merchant, bodies=bodies)
                    assert all(o.created for o in outcomes)
            except BaseException as exc:
                errors.append(exc)
                go.abort()

        return run

    rounds = 100  # small batches, many rounds: any lock-order inversion would show as a deadlock
    go = threading.Barrier(2)
    threads = [
        threading.Thread(target=worker("a", ids[:5], rounds, go)),
        threading.Thread(target=worker("b", list(reversed(ids[1:])), rounds, go)),
    ]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=300)
    assert not errors, errors
    with engine.begin() as conn:
        assert ledger.verify(conn, merchant_id=shop.merchant) == []
        count = conn.execute(
            select(t.events.c.id).where(
                t.events.c.merchant_id == shop.merchant, t.events.c.external_id.like("a-%")
            )
        ).all()
        assert len(count) == rounds * size
        for member_id in ids:
            earned = sum(
                r.points
                for r in conn.execute(
                    select(t.events.c.points).where(
                        t.events.c.merchant_id == shop.merchant, t.events.c.member_id == member_id
                    )
                )
            )
            b = ledger.balances(conn, merchant_id=shop.merchant, member_id=member_id, as_of=None)
            assert b.lifetime_earned == earned


@pytest.mark.parametrize("seed", range(40))
def test_the_tier_tracker_agrees_with_folding_the_whole_history(seed: int) -> None:
    """``ingest._advance`` moves a member's tier on row by row; at every step it must equal
    ``evaluate`` over every row (what record_event computes), whatever the period, policy,
    grace, assignments or order of arrival."""
    from patron.domain.tiers import Assignment, QualRow
    from patron.services.programs import ProgramSpec
    from patron.services.tiers import evaluate

    rnd = random.Random(seed)
    spec = bean_rewards(
        tiers={
            "metric": "qualifying_spend",
            "period": rnd.choice(["calendar_year", "anniversary", "rolling_12_months", "calendar_year"]),
            "downgrade": rnd.choice(["one_level", "recompute", "none"]),
            "grace_days": rnd.choice([0, 0, 0, 30]),
            "levels": [
                {"id": "member", "name": "Member", "threshold": rnd.choice([0, 0, 500])},
                {"id": "silver", "name": "Silver", "threshold": 20000, "multiplier": "1.25"},
                {"id": "gold", "name": "Gold", "threshold": 50000, "multiplier": "1.5"},
            ],
        }
    )
    program = ProgramSpec.model_validate(spec).to_domain()
    member = {"enrolled_at": START + timedelta(days=rnd.randint(0, 200)), "id": "m"}
    given = [Assignment("silver", START + timedelta(days=300))] if seed % 5 == 4 else []
    now = datetime(2026, 11, 20, tzinfo=UTC)
    m = ingest._Member(member, ingest.Balances(), {}, given)
    m.earning, m.shown = (
        ingest._Tiers(program, member, given, None),
        ingest._Tiers(program, member, given, None),
    )
    rows: list[QualRow] = []
    at = START if seed % 2 else datetime(2026, 1, 1, tzinfo=UTC)  # odd: across periods
    for _ in range(150):
        at += timedelta(hours=rnd.randint(0, 90 if seed % 2 else 40))
        when = at - timedelta(days=rnd.choice([0, 0, 0, 0, 0, 0, 0, 5, 400]))
        value = rnd.choice([0, rnd.randint(1, 5000), rnd.randint(1, 5000)])
        held = m.earning.at(rows, when, m.newest)
        assert held == evaluate(program, member, rows, when, given)
        shown = ingest._advance(m, rows, value, when, now)
        assert shown == evaluate(program, member, [*rows, QualRow(when, when, value)], max(now, when), given)
        if value:
            rows.append(QualRow(when, when, value))
            m.newest = when if m.newest is None or when > m.newest else m.newest


def test_two_imports_over_overlapping_members_run_at_once_without_deadlock(engine: Engine) -> None:
    """Two CSV imports at once, their members overlapping (known ones and ones to enrol), in
    opposite orders: neither deadlocks; a row may only be turned away as a concurrent change, and
    importing both files again afterwards completes them."""
    shop = Shop(engine, PROGRAM)
    errors: list[BaseException] = []

    def rows(tag: str, people: list[str]) -> list[dict[str, str]]:
        return [
            {
                "external_id": people[n % len(people)],
                "occurred_at": (START + timedelta(days=60, minutes=n)).isoformat(),
                "amount": f"{10 + n % 17}.25",
                "currency": "USD",
                "event_id": f"{tag}-{n}",
            }
            for n in range(240)
        ]

    files = {}
    for r in range(3):
        people = KNOWN + [f"r{r}-new{i}" for i in range(4)]
        files[f"a{r}"] = rows(f"a{r}", people)
        files[f"b{r}"] = rows(f"b{r}", list(reversed(people)))

    def run(name: str, go: threading.Barrier, reasons: list[str]) -> None:
        try:
            go.wait()
            _, rejected = shop.import_batch(files[name], batch_size=60)
            reasons.extend(reason for _, reason in rejected)
        except BaseException as exc:
            errors.append(exc)

    reasons: list[str] = []
    for r in range(3):
        go = threading.Barrier(2)
        threads = [threading.Thread(target=run, args=(f"{x}{r}", go, reasons)) for x in "ab"]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=300)
    assert not errors, errors
    assert set(reasons) <= {imports.CONCURRENT}
    for name, data in files.items():
        summary, rejected = shop.import_batch(data)
        assert rejected == [] and summary.imported + summary.skipped == len(data), name
    with engine.begin() as conn:
        assert ledger.verify(conn, merchant_id=shop.merchant) == []


def test_an_id_a_concurrent_writer_records_first_sends_the_batch_one_at_a_time(engine: Engine) -> None:
    """The batch checks recorded ids under its members' locks, but a concurrent writer may record
    one of them for another member, uncommitted: the bulk write then meets the unique key (on
    PostgreSQL it waits for the other transaction first) and the batch goes one at a time, where
    that event is a conflict and the others are recorded."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer: a concurrent write cannot be in flight")
    shop = Shop(engine, PROGRAM)
    at = START + timedelta(days=60)
    taken = _purchase(shop.ids["m1"], "both-1", at, [(1000, "coffee")])
    bodies = [
        _purchase(shop.ids["m2"], "both-1", at, [(1000, "coffee")]),
        _purchase(shop.ids["m2"], "m2-only", at, [(2500, "pastry")]),
        _purchase(shop.ids["m3"], "m3-only", at, [(700, None)]),
    ]
    outcomes: list[ingest.Outcome] = []
    failures: list[BaseException] = []

    def batch() -> None:
        try:
            with engine.begin() as conn:
                outcomes.extend(ingest.record_purchases(conn, merchant_id=shop.merchant, bodies=bodies))
        except BaseException as exc:
            failures.append(exc)

    first = engine.connect()
    try:
        with first.begin():
            events.record_event(first, merchant_id=shop.merchant, body=taken)
            worker = threading.Thread(target=batch)
            worker.start()
            with engine.connect() as watch:  # until the batch waits on the uncommitted id
                while worker.is_alive():
                    waiting = watch.exec_driver_sql(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE wait_event_type = 'Lock' AND datname = current_database()"
                    ).scalar()
                    watch.rollback()
                    if waiting:
                        break
                    time.sleep(0.01)
    finally:
        first.close()
    worker.join(timeout=60)
    assert not failures, failures
    assert [type(o.error).__name__ if o.error else o.created for o in outcomes] == [
        "IdempotencyConflict",
        True,
        True,
    ]
    with engine.begin() as conn:
        assert ledger.verify(conn, merchant_id=shop.merchant) == []
