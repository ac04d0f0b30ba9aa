"""The figures for orientation: a CLV fit, a large CSV import, and a peer ledger.

* clv: BG/NBD + Gamma-Gamma (``patron.analytics.clv``) fitted to synthetic purchases of N
  customers (numpy, seeded): time of ``summarise`` and of ``value_customers``.
* import: ``services.imports.import_transactions`` (what ``patron import transactions`` runs,
  without its progress bar) of a generated CSV file of N rows (one line each, 10 rows per
  customer, unknown customers enrolled) into a fresh SQLite file, in a child process: time and
  the child's peak RSS.
* prune_outbox: the ``prune-outbox`` job's work (``services.outbox.prune``) on PostgreSQL over N
  fanned-out business events of N/10 members, each delivered once with one attempt (one in a
  thousand still pending), all past the retention: time for the whole backlog.
* earn_history: single purchases (``services.events.record_event``, one transaction each) for
  members with N earlier purchases over five years (loaded by the batch importer) against
  members with none, alternately, on PostgreSQL: the ratio of their rates says whether a
  member's events slow down as their history grows (1.0: not at all).
* peer: pgledger's transfer function, recreated here in PL/pgSQL (not vendored): accounts with a
  balance and a version, locked in id order, one transfer row and two entry rows with the
  balances before and after. Run from the same 16 processes as http_earn's twin, one transaction
  per event, each member with its own pair of accounts.
"""

from __future__ import annotations

import csv
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import psycopg
from harness import TMP, alternate, child, libpq, log

PGLEDGER = """
DROP SCHEMA IF EXISTS bench_pgledger CASCADE;
CREATE SCHEMA bench_pgledger;
SET search_path = bench_pgledger;
CREATE TABLE pgl_accounts (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    currency TEXT NOT NULL,
    balance NUMERIC NOT NULL DEFAULT 0,
    version BIGINT NOT NULL DEFAULT 0,
    allow_negative_balance BOOLEAN NOT NULL,
    allow_positive_balance BOOLEAN NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE pgl_transfers (
    id TEXT PRIMARY KEY,
    from_account_id TEXT NOT NULL REFERENCES pgl_accounts (id),
    to_account_id TEXT NOT NULL REFERENCES pgl_accounts (id),
    amount NUMERIC NOT NULL CHECK (amount > 0),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (from_account_id <> to_account_id)
);
CREATE TABLE pgl_entries (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES pgl_accounts (id),
    transfer_id TEXT NOT NULL REFERENCES pgl_transfers (id),
    amount NUMERIC NOT NULL,
    account_previous_balance NUMERIC NOT NULL,
    account_current_balance NUMERIC NOT NULL,
    account_version BIGINT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX ON pgl_entries (account_id);
CREATE INDEX ON pgl_entries (transfer_id);

CREATE FUNCTION pgl_create_transfer(from_id TEXT, to_id TEXT, amount NUMERIC) RETURNS TEXT
LANGUAGE plpgsql SET search_path = bench_pgledger AS $$
DECLARE
    src pgl_accounts;
    dst pgl_accounts;
    transfer_id TEXT := 'xfer_' || gen_random_uuid();
BEGIN
    IF amount <= 0 THEN RAISE EXCEPTION 'amount (%) must be positive', amount; END IF;
    IF from_id = to_id THEN RAISE EXCEPTION 'cannot transfer to the same account'; END IF;
    -- lock both accounts in id order so that two transfers between them cannot deadlock
    PERFORM 1 FROM pgl_accounts WHERE id IN (from_id, to_id) ORDER BY id FOR UPDATE;
    UPDATE pgl_accounts SET balance = balance - amount, version = version + 1, updated_at = now()
        WHERE id = from_id RETURNING * INTO src;
    UPDATE pgl_accounts SET balance = balance + amount, version = version + 1, updated_at = now()
        WHERE id = to_id RETURNING * INTO dst;
    IF src.currency <> dst.currency THEN
        RAISE EXCEPTION 'currencies differ: % and %', src.currency, dst.currency;
    END IF;
    IF src.balance < 0 AND NOT src.allow_negative_balance THEN
        RAISE EXCEPTION 'account % cannot go negative', from_id;
    END IF;
    IF dst.balance > 0 AND NOT dst.allow_positive_balance THEN
        RAISE EXCEPTION 'account % cannot go positive', to_id;
    END IF;
    INSERT INTO pgl_transfers (id, from_account_id, to_account_id, amount)
        VALUES (transfer_id, from_id, to_id, amount);
    INSERT INTO pgl_entries (id, account_id, transfer_id, amount, account_previous_balance,
            account_current_balance, account_version)
        VALUES ('ent_' || gen_random_uuid(), from_id, transfer_id, -amount, src.balance + amount,
                src.balance, src.version),
               ('ent_' || gen_random_uuid(), to_id, transfer_id, amount, dst.balance - amount,
                dst.balance, dst.version);
    RETURN transfer_id;
END $$;
"""


def pgledger_setup(url: str, members: int) -> list[tuple[str, str]]:
    """The schema and function, and a pair of accounts (issued, member) per member."""
    with psycopg.connect(libpq(url), autocommit=True) as conn:
        conn.execute(PGLEDGER)
        conn.execute(
            """INSERT INTO bench_pgledger.pgl_accounts (id, name, currency, allow_negative_balance,
                   allow_positive_balance)
               SELECT 'acc_' || i || s.side, s.side || i, 'PTS', s.side = 'issued', s.side = 'member'
               FROM generate_series(0, %s - 1) AS i, (VALUES ('issued'), ('member')) AS s(side)""",
            (members,),
        )
    return [(f"acc_{i}issued", f"acc_{i}member") for i in range(members)]


def clv(customers: int) -> dict[str, Any]:
    from patron.analytics import clv as model

    rng = np.random.default_rng(7)
    purchases = rng.geometric(0.3, customers)  # 1 or more each
    who = np.repeat(np.arange(customers), purchases)
    first = rng.integers(0, 500, customers)
    day = first[who] + rng.integers(0, 230, len(who))
    value = rng.lognormal(3.5, 0.6, len(who)).round(2)
    t0 = time.perf_counter()
    _, summary = model.summarise(who, day, value, end_day=730, unit_days=7.0)
    summarised = time.perf_counter() - t0
    t0 = time.perf_counter()
    v = model.value_customers(summary, 52.0)
    fitted = time.perf_counter() - t0
    log(
        f"clv: {customers:,} customers, {len(who):,} purchases: summarise {summarised:.2f} s, "
        f"fit and value {fitted:.2f} s"
    )
    return {
        "customers": customers,
        "purchases": len(who),
        "summarise_s": round(summarised, 3),
        "fit_and_value_s": round(fitted, 3),
        "mean_clv": round(float(np.mean(v.clv)), 2),
    }


IMPORT = """
import csv, sys
from patron.services import imports, merchants, programs
from patron.storage.db import make_engine, migrate
engine = make_engine(sys.argv[1]); migrate(engine)
with engine.begin() as conn:
    m, _ = merchants.create_merchant(conn, name="Bench import")
    p = programs.create_program(conn, merchant_id=m["id"], body={"name": "Bench", "currency": "USD",
        "earning_rules": [{"id": "base", "type": "spend", "points": 1, "per_amount": 100}]})["id"]
bad = []
import time
t = time.perf_counter()
with open(sys.argv[2], encoding="utf-8-sig", newline="") as f:
    reader = csv.DictReader(f)
    reader.fieldnames = imports.check_header("transactions", reader.fieldnames)
    s = imports.import_transactions(engine, merchant_id=m["id"], program_id=p, rows=reader,
                                    on_rejected=bad.append)
print("elapsed", time.perf_counter() - t, s.as_dict())
assert s.imported == int(sys.argv[3]) and not bad, (s, bad[:3])
"""


def import_rows(rows: int, pg_url: str | None = None) -> dict[str, Any]:
    """The import into a fresh SQLite file, and into PostgreSQL (its ``public`` schema reset by the
    caller) when ``pg_url`` is given; the SQLite figures at the top level, PostgreSQL's under
    ``"postgres"``."""
    path = TMP / f"transactions-{rows}.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["external_id", "occurred_at", "amount", "currency", "event_id", "category"])
        for i in range(rows):
            day = f"2025-{1 + i % 12:02d}-{1 + i % 28:02d}"
            w.writerow([f"cust{i // 10}", day, f"{5 + i % 90}.{i % 100:02d}", "USD", f"order-{i}", "shop"])
    db = TMP / f"import-{rows}.db"
    db.unlink(missing_ok=True)
    out = _import_into(f"sqlite:///{db}", "sqlite (file)", path, rows)
    if pg_url is not None:
        out["postgres"] = _import_into(pg_url, "postgresql", path, rows)
    return out


def _import_into(url: str, label: str, path: Any, rows: int) -> dict[str, Any]:
    _, peak, out = child([sys.executable, "-c", IMPORT, url, str(path), str(rows)])
    words = out.split()
    took = float(words[words.index("elapsed") + 1])  # the import alone, not start-up and migration
    log(
        f"import: {rows:,} CSV rows into {label} in {took:.1f} s ({rows / took:,.0f} rows/s), "
        f"peak RSS {peak} MiB"
    )
    return {
        "rows": rows,
        "database": label,
        "seconds": round(took, 1),
        "rows_per_s": round(rows / took, 1),
        "peak_rss_mib": peak,
        "projected_1m_s": round(1_000_000 / (rows / took)),
    }


def earn_history(url: str, prior: int, rounds: int, members: int = 20, events: int = 200) -> dict[str, Any]:
    from datetime import UTC, datetime, timedelta

    from earn import PROGRAM

    from patron.services import events as event_service
    from patron.services import ingest, merchants, programs
    from patron.services import members as member_service
    from patron.services.members import MemberCreate
    from patron.storage.db import make_engine, migrate

    engine = make_engine(url)
    migrate(engine)
    with engine.begin() as conn:
        m = merchants.create_merchant(conn, name="Bench history")[0]["id"]
        p = programs.create_program(conn, merchant_id=m, body=PROGRAM)["id"]
        ids = {
            group: [
                member_service.enrol(
                    conn, merchant_id=m, data=MemberCreate(program_id=p, external_id=f"{group}{i}")
                )["id"]
                for i in range(members)
            ]
            for group in ("old", "new")
        }
    line = [{"id": "l1", "sku": "LATTE", "category": "coffee", "quantity": 2, "unit_price": 450}]

    def purchase(event_id: str, member_id: str, at: datetime) -> dict[str, Any]:
        return {
            "id": event_id,
            "type": "purchase",
            "member_id": member_id,
            "occurred_at": at.isoformat(),
            "items": line,
        }

    start, now = datetime(2021, 12, 1, tzinfo=UTC), datetime.now(UTC)
    step = (now - timedelta(days=2) - start) / prior
    t = time.perf_counter()
    for k in range(0, prior, 100):  # oldest first, as a history import goes
        bodies = [
            purchase(f"old-{member}-{n}", member, start + step * n)
            for n in range(k, min(k + 100, prior))
            for member in ids["old"]
        ]
        with engine.begin() as conn:
            ingest.record_purchases(conn, merchant_id=m, bodies=bodies)
    took = time.perf_counter() - t
    log(f"earn_history: {members} members with {prior:,} purchases each loaded in {took:.1f} s")

    def rate(group: str) -> Callable[[int], float]:
        def go(r: int) -> float:
            began = time.perf_counter()
            for n in range(events):
                body = purchase(f"{group}-r{r}-{n}", ids[group][n % members], datetime.now(UTC))
                with engine.begin() as conn:
                    event_service.record_event(conn, merchant_id=m, body=body)
            return events / (time.perf_counter() - began)

        return go

    out = alternate("earn_history", rounds, rate("old"), rate("new"), "events/s")
    engine.dispose()
    out.update(
        prior_purchases=prior,
        members=members,
        events_per_round=events,
        ms_per_event_history=round(1000 / out["patron_events_per_s"], 2),
        ms_per_event_fresh=round(1000 / out["twin_events_per_s"], 2),
        database="postgresql",
        compares="members with the history (as patron) against members with none (as twin)",
    )
    return out


def prune_outbox(url: str, events: int) -> dict[str, Any]:
    from datetime import UTC, datetime

    from sqlalchemy import text

    from patron.services import merchants, outbox, webhooks_out
    from patron.storage.db import make_engine, migrate

    engine = make_engine(url)
    migrate(engine)
    with engine.begin() as conn:
        m, _ = merchants.create_merchant(conn, name="Bench prune")
        ep = webhooks_out.create_endpoint(
            conn, merchant_id=m["id"], url="https://crm.example.com/hooks", event_types=None
        )
    old = datetime(2025, 1, 1, tzinfo=UTC)
    args = {"m": m["id"], "ep": ep["id"], "old": old, "n": events, "k": max(events // 10, 1)}
    with engine.begin() as conn:
        conn.execute(text(PRUNE_EVENTS), args)
        conn.execute(text(PRUNE_DELIVERIES), args)
        conn.execute(text(PRUNE_ATTEMPTS), args)
    with engine.begin() as conn:
        conn.execute(text("ANALYZE outbox_events, outbound_deliveries, outbound_attempts"))
    t = time.perf_counter()
    pruned, deliveries, attempts = outbox.prune(engine, as_of=datetime(2026, 1, 1, tzinfo=UTC), days=90)
    took = time.perf_counter() - t
    engine.dispose()
    log(
        f"prune-outbox: {pruned:,} events, {deliveries:,} deliveries, {attempts:,} attempts of {events:,} "
        f"in {took:.1f} s"
    )
    return {
        "events": events,
        "pruned_events": pruned,
        "pruned_deliveries": deliveries,
        "pruned_attempts": attempts,
        "seconds": round(took, 1),
        "events_per_s": round(events / took, 1),
        "database": "postgresql",
    }


PRUNE_EVENTS = """
INSERT INTO outbox_events (merchant_id, id, type, member_id, stream, seq, occurred_at, created_at, data,
    fanned_out_at)
SELECT :m, 'evt_' || lpad(g::text, 26, '0'), 'points.earned', 'mem_' || (g % :k), 'mem_' || (g % :k),
       g / :k + 1, :old, :old + g * interval '1 second', '{"points": 1}'::json, :old
FROM generate_series(1, :n) g
"""
PRUNE_DELIVERIES = """
INSERT INTO outbound_deliveries (merchant_id, id, endpoint_id, event_id, replay, stream, seq, status,
    attempts, next_attempt_at, created_at, delivered_at)
SELECT :m, 'dlv_' || lpad(g::text, 26, '0'), :ep, 'evt_' || lpad(g::text, 26, '0'), 0, 'mem_' || (g % :k),
       g / :k + 1, CASE WHEN g % 1000 = 0 THEN 'pending' ELSE 'delivered' END, 1, :old,
       :old + g * interval '1 second', :old
FROM generate_series(1, :n) g
"""
PRUNE_ATTEMPTS = """
INSERT INTO outbound_attempts (merchant_id, id, delivery_id, endpoint_id, attempt, at, status_code,
    duration_ms)
SELECT :m, 'att_' || lpad(g::text, 26, '0'), 'dlv_' || lpad(g::text, 26, '0'), :ep, 1, :old, 200, 5
FROM generate_series(1, :n) g
"""
