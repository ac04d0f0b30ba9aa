"""The co-op dividend: a lifetime member's dividend on a year with a partial refund, the
eligibility rules (minimum spend, plans, full price only), a year not closed yet, re-runs by
the endpoint, the job and the CLI that change nothing, and the report."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Engine
from typer.testing import CliRunner

from patron.domain.dividends import SpendLine, dividend, eligible_spend
from patron.services.jobs import run_job
from tests.conftest import Api, bean_rewards, purchase

LIFETIME = {"id": "life", "name": "Lifetime", "fee": 25000, "currency": "USD", "interval": "lifetime"}


def co_op(**dividends: Any) -> dict[str, Any]:
    return bean_rewards(
        membership_plans=[LIFETIME],
        dividends={"percent": "2.5", "min_spend": 1000, "plans": ["life"], **dividends},
    )


def lifetime_member(api: Api, program: str, email: str, since: str = "2025-01-10T09:00:00Z") -> str:
    member = api.member(program, email=email)
    r = api.post(
        f"/v1/members/{member}/memberships",
        {
            "plan_id": "life",
            "payment": {
                "amount": 25000,
                "currency": "USD",
                "paid_at": since,
                "external_ref": f"fee-{member}",
            },
        },
    )
    assert r.status_code == 201, r.text
    return member


def item(line: str, price: int, quantity: int = 1, **extra: Any) -> dict[str, Any]:
    return {"id": line, "sku": line.upper(), "quantity": quantity, "unit_price": price, **extra}


def credit(api: Api, member: str, **params: Any) -> dict[str, Any]:
    r = api.get(f"/v1/members/{member}/store-credit", params=params)
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_a_lifetime_members_dividend_on_a_year_with_a_partial_refund(api: Api, engine: Engine) -> None:
    program = api.program(co_op())
    ada = lifetime_member(api, program, "ada@example.com")
    # 2025: two full-price latte lines (2 x 4,515), a discounted mug, and 2 x 5,000 of beans
    api.event(
        purchase(
            ada,
            "o-1",
            [item("latte", 4515, 2, category="coffee"), item("mug", 6000, discount=1000)],
            occurred_at="2025-03-01T10:00:00Z",
        )
    )
    api.event(purchase(ada, "o-2", [item("beans", 5000, 2)], occurred_at="2025-06-01T10:00:00Z"))
    # one bag of beans comes back in 2026: refunds recorded by the run reduce the year's spend
    api.event(
        {
            "id": "r-1",
            "type": "refund",
            "member_id": ada,
            "refers_to": "o-2",
            "occurred_at": "2026-02-01T10:00:00Z",
            "items": [{"id": "beans", "quantity": 1}],
        }
    )
    # outside the year: neither counts
    api.event(purchase(ada, "o-0", [item("beans", 90000)], occurred_at="2024-12-31T23:59:59Z"))
    api.event(purchase(ada, "o-3", [item("beans", 90000)], occurred_at="2026-01-01T00:00:00Z"))

    # a lifetime member below the minimum spend, and a big spender without a membership
    bob = lifetime_member(api, program, "bob@example.com")
    api.event(purchase(bob, "o-4", [item("latte", 990)], occurred_at="2025-05-05T10:00:00Z"))
    cy = api.member(program, email="cy@example.com")
    api.event(purchase(cy, "o-5", [item("beans", 50000)], occurred_at="2025-05-05T10:00:00Z"))

    r = api.post(f"/v1/programs/{program}/dividends", {"year": 2025})
    assert r.status_code == 201, r.text
    report = r.json()
    # eligible: 2 x 4,515 + (2 x 5,000 - 5,000 refunded) = 14,030; the mug was discounted
    # dividend: floor(14,030 x 2.5 / 100) = floor(350.75) = 350
    assert report["members"] == [{"member_id": ada, "eligible_spend": 14030, "amount": 350}]
    assert (report["members_paid"], report["total"], report["store_credit_total"]) == (1, 350, 350)
    assert report["currency"] == "USD" and report["percent"] == "2.5"
    assert datetime.fromisoformat(report["paid_at"]) == datetime(2026, 1, 1, tzinfo=UTC)

    mine = credit(api, ada)
    assert mine["balances"] == [{"currency": "USD", "amount": 350}]
    assert mine["entries"][0]["kind"] == "dividend" and "2025" in mine["entries"][0]["reason"]
    assert datetime.fromisoformat(mine["entries"][0]["occurred_at"]) == datetime(2026, 1, 1, tzinfo=UTC)
    assert credit(api, ada, as_of="2025-12-31T23:59:59Z")["balances"] == []
    assert credit(api, bob)["balances"] == [] and credit(api, cy)["balances"] == []
    assert api.points(ada)["available"] > 0  # points are untouched by the dividend

    # every re-run changes nothing: the endpoint replays, the job finds the year paid
    again = api.post(f"/v1/programs/{program}/dividends", {"year": 2025})
    assert again.status_code == 200 and again.json() == report
    job = run_job(engine, "dividends", as_of=datetime(2026, 6, 1, tzinfo=UTC), merchant_id=api.merchant_id)
    assert (job.members, job.points) == (0, 0)
    assert api.get(f"/v1/programs/{program}/dividends/2025").json() == report
    assert credit(api, ada)["balances"] == [{"currency": "USD", "amount": 350}]


def test_without_plans_every_member_is_eligible_and_discounts_may_count(api: Api) -> None:
    program = api.program(co_op(plans=[], full_price_only=False, percent="10", min_spend=0))
    cy = api.member(program, email="cy@example.com")
    api.event(purchase(cy, "o-1", [item("mug", 6000, discount=1000)], occurred_at="2025-05-05T10:00:00Z"))
    report = api.post(f"/v1/programs/{program}/dividends", {"year": 2025}).json()
    assert report["members"] == [{"member_id": cy, "eligible_spend": 5000, "amount": 500}]


def test_a_year_not_closed_yet_is_refused_and_nothing_is_written(api: Api) -> None:
    program = api.program(co_op())
    ada = lifetime_member(api, program, "ada@example.com")
    api.event(purchase(ada, "o-1", [item("beans", 50000)], occurred_at="2025-03-01T10:00:00Z"))
    this_year = datetime.now(UTC).year
    r = api.post(f"/v1/programs/{program}/dividends", {"year": this_year})
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["type"].endswith("/year-not-closed") and str(this_year) in r.json()["detail"]
    assert api.get(f"/v1/programs/{program}/dividends/{this_year}").status_code == 404
    last = api.post(f"/v1/programs/{program}/dividends", {"year": 9999})  # the last year a date has
    assert last.status_code == 422 and last.json()["type"].endswith("/year-not-closed")
    assert "start of 10000" in last.json()["detail"]
    assert credit(api, ada)["balances"] == []
    plain = api.program()
    none = api.post(f"/v1/programs/{plain}/dividends", {"year": 2025})
    assert none.status_code == 422 and none.json()["type"].endswith("/no-dividend")


def test_the_cli_job_pays_the_closed_year_once(api: Api, db_url: str, monkeypatch: Any) -> None:
    from patron.cli.main import app

    program = api.program(co_op(percent="1"))
    ada = lifetime_member(api, program, "ada@example.com")
    api.event(purchase(ada, "o-1", [item("beans", 12345)], occurred_at="2026-03-01T10:00:00Z"))
    monkeypatch.setenv("PATRON_DATABASE_URL", db_url)
    args = ["jobs", "run", "dividends", "--as-of", "2027-01-01T00:00:00Z", "--merchant", api.merchant_id]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "dividends" in first.output
    report = api.get(f"/v1/programs/{program}/dividends/2026").json()
    assert report["members"] == [{"member_id": ada, "eligible_spend": 12345, "amount": 123}]
    second = CliRunner().invoke(app, args)
    assert second.exit_code == 0, second.output
    assert api.get(f"/v1/programs/{program}/dividends/2026").json() == report
    assert credit(api, ada)["balances"] == [{"currency": "USD", "amount": 123}]
    # an effect is recorded at the year's close, never later than the run's time
    assert credit(api, ada, as_of="2026-12-31T23:59:59Z")["balances"] == []


def test_other_merchants_cannot_read_or_pay_a_programs_dividend(api: Api, other_api: Api) -> None:
    program = api.program(co_op())
    assert api.post(f"/v1/programs/{program}/dividends", {"year": 2025}).status_code == 201
    assert other_api.get(f"/v1/programs/{program}/dividends/2025").status_code == 404
    assert other_api.post(f"/v1/programs/{program}/dividends", {"year": 2025}).status_code == 404
    bad = api.post(f"/v1/programs/{program}/dividends", {"year": "last"})
    assert bad.status_code == 422


@given(
    spend=st.lists(st.integers(min_value=0, max_value=10**9), min_size=1, max_size=5),
    refunds=st.lists(st.integers(min_value=0, max_value=10**9), min_size=1, max_size=5),
    percent=st.decimals(min_value="0.0001", max_value="100", places=4),
)
def test_a_dividend_is_the_exact_floor_and_a_refund_never_raises_it(
    spend: list[int], refunds: list[int], percent: Decimal
) -> None:
    lines = [SpendLine("m", amount) for amount in spend]
    returned = [SpendLine("m", amount, min(r, amount)) for amount, r in zip(spend, refunds, strict=False)]
    total = eligible_spend(lines, full_price_only=True).get("m", 0)
    net = eligible_spend(returned, full_price_only=True).get("m", 0)
    assert dividend(total, percent) == int(Decimal(total) * percent // 100)
    assert 0 <= dividend(net, percent) <= dividend(total, percent) <= total
