"""The console's reports: KPIs for a chosen period, liability with expected breakage, usage per
location, tier population, each with a chart and a table; bad choices come back beside their
fields; CSV downloads for owners only."""

from __future__ import annotations

import re
from html import unescape
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from patron.services import merchants, redemptions, users
from tests.web.conftest import PASSWORD, build_shop, sign_in, unique


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html)))


def test_the_reports_page_shows_each_figure_as_a_chart_and_a_table(
    browser_client: TestClient, shop: dict[str, Any]
) -> None:
    sign_in(browser_client, shop["owner"])
    page = browser_client.get("/admin/reports")
    assert page.status_code == 200
    assert page.text.count('<svg class="chart') == 4
    for chart in ("kpi-points", "liability", "usage", "tiers"):
        assert f'aria-labelledby="{chart}-title {chart}-desc"' in page.text
    text = _text(page.text)
    # Ann's purchase of 2 x $150.00 an hour ago: 300 points, one purchase, $300.00 qualifying spend
    assert "Members 2 2 new in the period" in text
    assert "Purchases 1 by 1 members" in text and "Qualifying spend $300.00" in text
    assert "Issued 300 Adjusted by hand 0 Redeemed 0 Expired 0 Held by members at the end 300" in text
    assert "Held by members 300" in text
    assert "Downtown" in text or "downtown" in text  # the location of the purchase
    assert re.search(r"Member\s*</th>\s*<td class=\"num\">1<", page.text)  # Ann's tier
    # no points_payment in the program: the liability asks for the cost of a point
    assert "enter the cost of a point above" in text
    valued = _text(browser_client.get("/admin/reports?cost=0.5").text)
    assert "Liability $1.50" in valued  # 300 points x 0.5 cents, nothing expired yet


def test_a_chosen_period_and_location_narrow_the_figures(
    browser_client: TestClient, shop: dict[str, Any], engine: Engine
) -> None:
    with engine.begin() as conn:
        merchants.put_location(conn, merchant_id=shop["merchant_id"], location_id="harbour", name="Harbour")
    sign_in(browser_client, shop["owner"])
    long_ago = _text(browser_client.get("/admin/reports?start=2020-01-01&end=2020-01-31").text)
    assert "Key figures, 2020-01-01 to 2020-01-31" in long_ago and "Purchases 0" in long_ago
    everywhere = _text(browser_client.get("/admin/reports").text)
    harbour = _text(browser_client.get("/admin/reports?location=harbour").text)
    downtown = _text(browser_client.get("/admin/reports?location=downtown").text)
    assert "Usage per month at Harbour" in harbour and "Usage per month at downtown" in downtown
    assert re.search(r": 1 earns", everywhere) and re.search(r": 1 earns", downtown)
    assert not re.search(r": 1 earns", harbour)  # Ann bought downtown


def test_invalid_choices_come_back_beside_their_fields(
    browser_client: TestClient, shop: dict[str, Any]
) -> None:
    sign_in(browser_client, shop["owner"])
    r = browser_client.get("/admin/reports?start=31/01/2026&cost=free")
    assert r.status_code == 422
    assert 'id="r-start-error">Enter a date as YYYY-MM-DD' in r.text
    assert 'id="r-cost-error">Enter what one point costs you' in r.text
    r = browser_client.get("/admin/reports?start=2026-02-01&end=2026-01-01")
    assert (
        r.status_code == 422 and 'id="r-start-error">The first day 2026-02-01 is after the last day' in r.text
    )
    for end in ("0001-01-01", "9999-12-31"):  # no 30 days before the one, none after the other
        r = browser_client.get("/admin/reports", params={"end": end})
        assert r.status_code == 422 and "The window must lie between 1970-01-01" in r.text, end


def test_owners_download_csv_and_managers_do_not(
    browser_client: TestClient, shop: dict[str, Any], engine: Engine
) -> None:
    sign_in(browser_client, shop["owner"])
    page = browser_client.get("/admin/reports").text
    link = f"/admin/reports/{shop['program_id']}/members.csv"
    assert link in page
    r = browser_client.get(link)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    lines = r.text.strip().splitlines()
    assert lines[0].startswith("id,") and len(lines) == 3 and "Ann Lee" in r.text
    other = build_shop(engine)
    assert browser_client.get(f"/admin/reports/{other['program_id']}/members.csv").status_code == 404
    assert browser_client.get(f"/admin/reports?program={other['program_id']}").status_code == 404

    with engine.begin() as conn:
        manager = users.create_user(
            conn,
            merchant_id=shop["merchant_id"],
            email=f"{unique('m')}@example.com",
            password=PASSWORD,
            role="manager",
        )
    browser_client.cookies.clear()
    sign_in(browser_client, manager["email"])
    page = browser_client.get("/admin/reports")
    assert page.status_code == 200 and link not in page.text
    assert browser_client.get(link).status_code == 404


def test_a_reward_redeemed_at_a_location_counts_there_and_in_the_points(
    browser_client: TestClient, shop: dict[str, Any], engine: Engine
) -> None:
    with engine.begin() as conn:
        merchants.put_location(conn, merchant_id=shop["merchant_id"], location_id="harbour", name="Harbour")
        held = redemptions.reserve(
            conn,
            merchant_id=shop["merchant_id"],
            member_id=shop["ann"]["id"],
            reward_id="free-coffee",
            location_id="harbour",
        )
        redemptions.redeem(conn, merchant_id=shop["merchant_id"], redemption_id=held["id"])
    sign_in(browser_client, shop["owner"])
    harbour = _text(browser_client.get("/admin/reports?location=harbour").text)
    assert re.search(r": 1 redemptions", harbour) and not re.search(r": 1 earns", harbour)
    everything = _text(browser_client.get("/admin/reports").text)
    assert "Redeemed 100 Expired 0 Held by members at the end 200" in everything
    assert re.search(r": 1 earns", everything) and re.search(r": 1 redemptions", everything)
