"""The console's customer care and reports in a real browser (Chromium, driven by Playwright)
against a real server on the demo coffee shop: an owner opens a case from the at-risk list,
comments, records the contact and resolves it; then reads the reports' charts, on a desktop and
on a 390 px phone without sideways scrolling. Screenshots go where ``test_browser.py`` puts its."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.web.browser_support import chromium, web_server
from tests.web.test_browser import ARTIFACTS, CHROMIUM, PASSWORD, _no_sideways_scroll, _shot

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason="browser tests need Chromium at /usr/bin/chromium"),
    pytest.mark.xdist_group("browser"),
]


def _seed(url: str) -> dict[str, Any]:
    """The demo shop with an owner, and an at-risk assessment that opens no cases by itself (so
    that the list offers a button)."""
    from argon2 import PasswordHasher

    from patron.services import at_risk, programs, users
    from patron.services.clock import utcnow
    from patron.services.demo import build_demo
    from patron.storage.db import make_engine, migrate

    engine = make_engine(url)
    migrate(engine)
    cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(users, "_hasher", lambda: cheap)
        with engine.begin() as conn:
            demo = build_demo(conn, members=40)
            mid = demo["merchant_id"]
            users.create_user(conn, merchant_id=mid, email="owner@demo.example", password=PASSWORD)
            pid = programs.list_programs(conn, merchant_id=mid)[0]["id"]
            body = programs.get_program(conn, merchant_id=mid, program_id=pid)
            body = {
                k: v for k, v in body.items() if k not in ("id", "version", "effective_from", "created_at")
            }
            body["at_risk"] = {
                "inactive_days": 30,
                "min_purchases": 1,
                "p_alive_below": None,
                "open_cases": False,
            }
            programs.update_program(conn, merchant_id=mid, program_id=pid, body=body, effective_from=None)
        with engine.begin() as conn:
            found = at_risk.assess_program(conn, merchant_id=mid, program_id=pid, as_of=utcnow())
    engine.dispose()
    assert found.at_risk > 0, "the demo has members who lapsed"
    return {**demo, "program_id": pid, "url": url}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    url = f"sqlite:///{tmp_path_factory.mktemp('console') / 'patron.db'}"
    seeded = _seed(url)
    with web_server(url) as base:
        yield {**seeded, "base": base}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


def _timed(page: Any, url: str, timings: dict[str, float], name: str) -> None:
    started = time.perf_counter()
    page.goto(url)
    timings[name] = (time.perf_counter() - started) * 1000


def test_an_owner_follows_up_a_member_at_risk_and_reads_the_reports(
    server: dict[str, Any], browser: Any
) -> None:
    from playwright.sync_api import expect

    timings: dict[str, float] = {}
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(server["base"] + "/admin/cases")
    page.get_by_label("Email").fill("owner@demo.example")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(server["base"] + "/admin/cases")
    page.get_by_role("link", name="members at risk").click()
    expect(page.get_by_role("heading", name="Members at risk", level=1)).to_be_visible()
    _timed(page, server["base"] + "/admin/at-risk", timings, "GET /admin/at-risk")
    _shot(page, "console-at-risk")

    # the demo's own assessment already opened cases for some: take one without a case yet
    first = page.locator("ul.at-risk li").filter(has=page.get_by_role("button")).first
    name = first.locator(".case-title a").inner_text()
    first.get_by_role("button", name=f"Open a case for {name}").click()
    expect(page.get_by_role("status")).to_have_text("Case opened.")
    expect(page.get_by_role("heading", level=1)).to_contain_text(name)
    case_url = page.url.split("?")[0]

    page.get_by_label("Comment").fill("Left a voicemail; will call again after lunch.")
    page.get_by_role("button", name="Add comment").click()
    expect(page.get_by_role("status")).to_have_text("Comment added.")
    # forgetting the channel: the message is beside the field and focus can reach it
    page.get_by_role("button", name="Record the contact").click()
    expect(page.locator("#channel-error")).to_have_text("Choose how you reached the member.")
    page.get_by_label("How you reached the member").select_option("phone")
    page.get_by_label("What was said (optional)").fill("Moved house; will visit the harbour shop.")
    page.get_by_role("button", name="Record the contact").click()
    expect(page.get_by_role("status")).to_have_text("Contact recorded: the loop is closed.")
    page.get_by_label("Resolution").fill("Sent a welcome-back offer.")
    page.get_by_role("button", name="Resolve the case").click()
    expect(page.get_by_role("status")).to_have_text("Case resolved.")
    expect(page.locator("#case-status")).to_have_text("resolved")
    timeline = page.locator("#timeline li")
    expect(timeline).to_have_count(4)  # opened, commented, contacted, resolved
    expect(timeline.nth(2)).to_contain_text("Contacted by phone")
    _timed(page, case_url, timings, "GET /admin/cases/{id}")
    _shot(page, "console-case-resolved")

    page.get_by_role("link", name="Reports").click()
    expect(page.get_by_role("heading", name="Reports", level=1)).to_be_visible()
    charts = page.locator("svg.chart")
    expect(charts).to_have_count(4)
    for i in range(4):
        expect(charts.nth(i)).to_be_visible()
    assert page.locator("#usage svg.chart rect.bar.earns").count() == 12
    usage_box = page.locator("#usage svg.chart").bounding_box() or {}
    assert usage_box.get("height", 0) > 150
    _timed(page, server["base"] + "/admin/reports", timings, "GET /admin/reports")
    _shot(page, "console-reports")
    page.get_by_label("Location").select_option("harbour")
    page.get_by_role("button", name="Show").click()
    expect(page.get_by_role("heading", name="Usage per month at Harbour")).to_be_visible()

    _timed(page, server["base"] + "/admin/cases", timings, "GET /admin/cases")
    _timed(page, server["base"] + "/admin/events", timings, "GET /admin/events")
    _timed(page, server["base"] + "/admin/surveys", timings, "GET /admin/surveys")
    context.close()

    phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = phone.new_page()
    page.goto(server["base"] + "/admin/login")
    page.get_by_label("Email").fill("owner@demo.example")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    for path, shot in (("/admin/reports", "console-reports-390"), (case_url, "console-case-390"),
                       ("/admin/events", "console-events-390"), ("/admin/at-risk", "console-at-risk-390"),
                       ("/admin/surveys", "console-surveys-390")):  # fmt: skip
        page.goto(path if path.startswith("http") else server["base"] + path)
        _no_sideways_scroll(page, 390)
        _shot(page, shot)
        if shot == "console-reports-390":
            for part in ("kpis", "liability", "usage", "tiers"):
                page.locator(f"#{part}").screenshot(path=str(ARTIFACTS / f"console-reports-{part}-390.png"))
    phone.close()

    ARTIFACTS.mkdir(exist_ok=True)
    lines = [f"{name}: {ms:.0f} ms" for name, ms in timings.items()]
    (ARTIFACTS / "timings-console.txt").write_text("\n".join(lines) + "\n")
    slow = {n: ms for n, ms in timings.items() if ms > 1000}
    assert not slow, f"pages far slower than the 200 ms aim: {slow}"
