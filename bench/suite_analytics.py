"""analytics: the reports an analyst asks for (RFM segments, cohort retention, KPIs over a
quarter, liability, usage per location and month) on a program with a year of purchases, against
a plain-SQL twin: one aggregate query per report over the same rows, with no scoring or shaping.

The ratio is the twin's time over Patron's, so 1.0 would be "as fast as the raw aggregate". The
program's history is loaded once through the batch ingest path (``services.ingest``).
"""

from __future__ import annotations

import random
import statistics
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

from harness import log, reset_postgres
from sqlalchemy import Engine, text

from patron.services import insights, members, merchants, programs, reports
from patron.services.ingest import record_purchases, refresh_statistics
from patron.services.members import MemberCreate
from patron.storage.db import make_engine

PROGRAM = {
    "name": "Bench analytics",
    "currency": "USD",
    "earning_rules": [
        {"id": "base", "type": "spend", "points": 1, "per_amount": 100},
        {"id": "coffee", "type": "multiplier", "categories": ["coffee"], "multiplier": "2"},
    ],
    "expiry": {"months": 12},
}
LOCATIONS = ("downtown", "harbour", "station")
CATEGORIES = (("coffee", "LATTE", 450), ("food", "BAGEL", 350), ("merch", "MUG", 1500))

TWIN = {
    "rfm": """SELECT e.member_id, max(e.occurred_at), count(*), sum(l.amount)
              FROM events e JOIN event_lines l ON l.merchant_id = e.merchant_id AND l.event_id = e.id
              WHERE e.merchant_id = :m AND e.type = 'purchase' AND e.occurred_at >= :start
              GROUP BY e.member_id""",
    "cohorts": """SELECT date_trunc('month', m.enrolled_at), date_trunc('month', e.occurred_at),
                         count(DISTINCT e.member_id)
                  FROM members m JOIN events e ON e.merchant_id = m.merchant_id AND e.member_id = m.id
                  WHERE m.merchant_id = :m GROUP BY 1, 2""",
    "kpis": """SELECT count(DISTINCT member_id), count(*), sum(points) FROM events
               WHERE merchant_id = :m AND occurred_at >= :quarter""",
    "liability": """SELECT sum(available), sum(pending), sum(reserved) FROM member_balances
                    WHERE merchant_id = :m""",
    "usage": """SELECT location_id, date_trunc('month', occurred_at), count(*) FROM events
                WHERE merchant_id = :m AND occurred_at >= :start GROUP BY 1, 2""",
}


def _load(engine: Engine, *, purchases: int, people: int) -> tuple[str, str, date]:
    rng = random.Random(11)
    now = datetime.now(UTC).replace(microsecond=0)
    with engine.begin() as conn:
        merchant, _ = merchants.create_merchant(conn, name="Bench analytics")
        m = merchant["id"]
        program = programs.create_program(conn, merchant_id=m, body=PROGRAM)["id"]
        ids = [
            members.enrol(
                conn,
                merchant_id=m,
                data=MemberCreate(
                    program_id=program,
                    external_id=f"a{i}",
                    enrolled_at=now - timedelta(days=rng.randint(200, 400)),
                ),
            )["id"]
            for i in range(people)
        ]
    weights = [rng.paretovariate(1.2) for _ in ids]  # a few regulars, many occasional customers
    bodies = []
    for n in range(purchases):
        lines = [
            {"id": f"l{k}", "sku": sku, "category": cat, "quantity": rng.randint(1, 2), "unit_price": price}
            for k, (cat, sku, price) in enumerate(rng.sample(CATEGORIES, rng.randint(1, 3)))
        ]
        bodies.append(
            {
                "id": f"a-{n}",
                "type": "purchase",
                "member_id": rng.choices(ids, weights)[0],
                "occurred_at": (now - timedelta(minutes=rng.randint(60, 60 * 24 * 190))).isoformat(),
                "currency": "USD",
                "location_id": rng.choice(LOCATIONS),
                "items": lines,
            }
        )
    bodies.sort(key=lambda b: b["occurred_at"])
    t0 = time.perf_counter()
    for i in range(0, len(bodies), 2000):
        with engine.begin() as conn:
            record_purchases(conn, merchant_id=m, bodies=bodies[i : i + 2000])
    refresh_statistics(engine)  # what `patron import` does after a large load
    log(
        f"analytics: loaded {purchases:,} purchases of {people:,} members in {time.perf_counter() - t0:.0f} s"
    )
    return m, program, now.date()


def run(url: str, *, purchases: int, people: int, rounds: int) -> dict[str, Any]:
    reset_postgres(url)
    engine = make_engine(url)
    merchant_id, program_id, today = _load(engine, purchases=purchases, people=people)
    year, quarter = today - timedelta(days=365), today - timedelta(days=90)
    patron = {
        "rfm": lambda c: insights.rfm(
            c, merchant_id=merchant_id, program_id=program_id, first=year, last=today
        ),
        "cohorts": lambda c: insights.cohorts(
            c, merchant_id=merchant_id, program_id=program_id, first=year, last=today
        ),
        "kpis": lambda c: insights.kpis(
            c, merchant_id=merchant_id, program_id=program_id, first=quarter, last=today
        ),
        "liability": lambda c: reports.liability(c, merchant_id=merchant_id, program_id=program_id),
        "usage": lambda c: reports.usage_by_month(c, merchant_id=merchant_id, program_id=program_id),
    }
    params = {
        "m": merchant_id,
        "start": datetime.combine(year, datetime.min.time(), UTC),
        "quarter": datetime.combine(quarter, datetime.min.time(), UTC),
    }
    per: dict[str, dict[str, list[float]]] = {name: {"patron": [], "twin": []} for name in patron}
    for r in range(rounds):
        for name, report in patron.items():
            with engine.connect() as conn:
                t0 = time.perf_counter()
                report(conn)
                per[name]["patron"].append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                conn.execute(text(TWIN[name]), params).all()
                per[name]["twin"].append(time.perf_counter() - t0)
        total_p = sum(per[n]["patron"][-1] for n in per)
        total_t = sum(per[n]["twin"][-1] for n in per)
        log(
            f"  analytics round {r + 1}/{rounds}: "
            f"patron {total_p * 1000:,.0f} ms  twin {total_t * 1000:,.0f} ms"
        )
    engine.dispose()
    ratios = [
        sum(per[n]["twin"][i] for n in per) / sum(per[n]["patron"][i] for n in per) for i in range(rounds)
    ]
    return {
        "ratio": round(statistics.median(ratios), 4),
        "ratio_min": round(min(ratios), 4),
        "ratio_max": round(max(ratios), 4),
        "ratios": [round(x, 4) for x in ratios],
        "purchases": purchases,
        "members": people,
        "reports_ms": {
            n: {
                "patron": round(statistics.median(v["patron"]) * 1000, 1),
                "twin": round(statistics.median(v["twin"]) * 1000, 1),
            }
            for n, v in per.items()
        },
        "twin": "one plain aggregate query per report over the same rows (no scoring or shaping)",
    }
