"""The co-op dividend: pay a closed year once, as store credit, and report what was paid.

The year's purchase lines and what refunds (recorded by the run time) took back of them come
from one grouped query; the rule (``domain/dividends.py``) turns them into payouts; the run, its
payouts and their store-credit entries are written in one transaction. ``UNIQUE (merchant,
program, year)`` on the run makes a year payable once, whoever asks (job or API) and however often.
Each credit takes effect at the year's close (never later than the run time), so store-credit
reads as of the close see it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import IntegrityError

from patron.domain import dividends as rules
from patron.domain import memberships as membership_rules
from patron.domain.errors import InvalidInput, NotFound
from patron.services.clock import utcnow
from patron.services.membership_settings import dividend_of
from patron.services.memberships import record_of
from patron.services.programs import get_program
from patron.storage import jobs as jobs_repo
from patron.storage import memberships as repo
from patron.storage.ids import new_id


class NoDividend(InvalidInput):
    code = "no-dividend"
    title = "The program pays no dividend"


def _report(conn: Connection, run: dict[str, Any]) -> dict[str, Any]:
    payouts = repo.payouts_of(conn, run["merchant_id"], run["id"])
    return {
        "id": run["id"],
        "program_id": run["program_id"],
        "year": run["year"],
        "percent": run["percent"],
        "min_spend": run["min_spend"],
        "full_price_only": run["full_price_only"],
        "plans": list(run["plans"]),
        "currency": run["currency"],
        "period_start": run["period_start"],
        "period_end": run["period_end"],
        "paid_at": run["period_end"],
        "as_of": run["as_of"],
        "members_paid": run["members_paid"],
        "eligible_spend": sum(p["eligible_spend"] for p in payouts),
        "total": run["total"],
        "store_credit_total": repo.credited_total(conn, run["merchant_id"], run["id"]),
        "members": [
            {"member_id": p["member_id"], "eligible_spend": p["eligible_spend"], "amount": p["amount"]}
            for p in payouts
        ],
    }


def _eligible_members(
    conn: Connection,
    merchant_id: str,
    program_id: str,
    plans: tuple[str, ...],
    start: datetime,
    end: datetime,
) -> set[str]:
    """Members who held a paid membership of one of ``plans`` at some time in ``[start, end)``."""
    rows = repo.memberships_of_program(conn, merchant_id, program_id, plans=plans)
    return {r["member_id"] for r in rows if membership_rules.paid_during(record_of(r), start, end)}


def pay_year(
    conn: Connection, *, merchant_id: str, program_id: str, year: int, as_of: datetime
) -> tuple[dict[str, Any], bool]:
    """Pay the program's dividend for ``year`` as if at ``as_of``: ``(report, created)``.

    The year must have closed at ``as_of`` (:class:`YearNotClosed`, nothing written); a year
    already paid is returned as it was paid (``created`` False). Rules come from the program
    version in effect at the year's close.
    """
    current = get_program(conn, merchant_id=merchant_id, program_id=program_id, at=as_of)
    tz = ZoneInfo(current.get("timezone") or "UTC")
    rules.check_closed(year, as_of=as_of, tz=tz)
    start, end = rules.year_bounds(year, tz)
    done = repo.get_run(conn, merchant_id, program_id, year)
    if done is not None:
        return _report(conn, done), False
    body = get_program(conn, merchant_id=merchant_id, program_id=program_id, at=end)
    spec = dividend_of(body)
    if spec is None:
        raise NoDividend(f"program {program_id} has no `dividends` setting in force at the end of {year}")
    rule = spec.to_domain()
    found = repo.year_lines(conn, merchant_id, program_id, start=start, end=end, as_of=as_of)
    discounted = (
        repo.discounted_lines(conn, merchant_id, program_id, start=start, end=end, as_of=as_of)
        if rule.full_price_only
        else set()
    )
    spend = rules.eligible_spend(
        (
            rules.SpendLine(member, amount, refunded, (event, line) in discounted)
            for member, event, line, amount, refunded in found
        ),
        full_price_only=rule.full_price_only,
    )
    members = _eligible_members(conn, merchant_id, program_id, rule.plans, start, end) if rule.plans else None
    payouts = rules.payouts(spend, rule, members=members)
    currency = str(body["currency"])
    now = utcnow()
    run = {
        "merchant_id": merchant_id,
        "id": new_id("div"),
        "program_id": program_id,
        "year": year,
        "percent": str(spec.percent),
        "min_spend": rule.min_spend,
        "full_price_only": rule.full_price_only,
        "plans": list(rule.plans),
        "currency": currency,
        "period_start": start,
        "period_end": end,
        "as_of": as_of,
        "members_paid": len(payouts),
        "total": sum(p.amount for p in payouts),
        "created_at": now,
    }
    credits = []
    rows = []
    for p in payouts:
        credit_id = new_id("scr")
        credits.append(
            {
                "merchant_id": merchant_id,
                "id": credit_id,
                "member_id": p.member_id,
                "program_id": program_id,
                "amount": p.amount,
                "currency": currency,
                "kind": "dividend",
                "reason": f"co-op dividend {year}: {spec.percent}% of {p.eligible_spend} eligible spend",
                "source_ref": f"dividend:{run['id']}:{p.member_id}",
                "occurred_at": end,
                "created_at": now,
            }
        )
        rows.append(
            {
                "merchant_id": merchant_id,
                "run_id": run["id"],
                "member_id": p.member_id,
                "eligible_spend": p.eligible_spend,
                "amount": p.amount,
                "currency": currency,
                "credit_id": credit_id,
            }
        )
    repo.insert_run(conn, run, rows)
    repo.insert_credits(conn, credits)
    return _report(conn, run), True


def dividend_report(conn: Connection, *, merchant_id: str, program_id: str, year: int) -> dict[str, Any]:
    """What was paid for ``year``: each member's eligible spend and dividend, and the totals."""
    get_program(conn, merchant_id=merchant_id, program_id=program_id)
    run = repo.get_run(conn, merchant_id, program_id, year)
    if run is None:
        raise NotFound(f"no dividend has been paid for {year}")
    return _report(conn, run)


def run_dividends(
    engine: Engine,
    *,
    as_of: datetime,
    merchant_id: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[int, int]:
    """The ``dividends`` job: for each program with a ``dividends`` setting, pay the last
    calendar year (in the program's timezone) that has closed at ``as_of``, once. Returns
    ``(members paid, total minor units)`` of the years paid by this run."""
    members = total = 0
    with engine.begin() as conn:
        targets = jobs_repo.all_programs(conn, merchant_id)
    for m, program_id in targets:
        try:
            with engine.begin() as conn:
                body = get_program(conn, merchant_id=m, program_id=program_id, at=as_of)
                tz = ZoneInfo(body.get("timezone") or "UTC")
                year = rules.closed_year(as_of, tz)
                report, created = pay_year(conn, merchant_id=m, program_id=program_id, year=year, as_of=as_of)
        except NoDividend:  # no dividend in force at that year's close
            continue
        except IntegrityError:  # paid concurrently (API or another runner): nothing to add
            continue
        if created:
            members += report["members_paid"]
            total += report["total"]
        if progress:
            progress(1)
    return members, total
