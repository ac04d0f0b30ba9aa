"""The pages in a real browser (Chromium, driven by Playwright) against a real server: uvicorn in a
subprocess on a free port, on a SQLite file seeded with the demo coffee shop."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.web.browser_support import CHROMIUM, chromium, web_server

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
PASSWORD = "correct horse battery"

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason="browser tests need Chromium at /usr/bin/chromium"),
    pytest.mark.xdist_group("browser"),
]


def _seed(url: str) -> dict[str, Any]:
    from argon2 import PasswordHasher

    from patron.services import portal, redemptions, users
    from patron.services.demo import build_demo
    from patron.storage.db import make_engine, migrate

    engine = make_engine(url)
    migrate(engine)
    cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(users, "_hasher", lambda: cheap)
        with engine.begin() as conn:
            demo = build_demo(conn, members=20)
            mid = demo["merchant_id"]
            users.create_user(conn, merchant_id=mid, email="owner@demo.example", password=PASSWORD)
            users.create_user(
                conn, merchant_id=mid, email="till@demo.example", password=PASSWORD, role="staff"
            )
            member = portal.member_home(conn, merchant_id=mid, member_id=demo["sample_member"])["member"]
            held = redemptions.reserve(conn, merchant_id=mid, member_id=member["id"], reward_id="free-coffee")
    engine.dispose()
    return {**demo, "member": member, "code": held["code"], "url": url}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    url = f"sqlite:///{tmp_path_factory.mktemp('browser') / 'patron.db'}"
    seeded = _seed(url)
    with web_server(url) as base:
        yield {**seeded, "base": base}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


@pytest.fixture(scope="module")
def timings() -> Iterator[dict[str, float]]:
    found: dict[str, float] = {}
    yield found
    ARTIFACTS.mkdir(exist_ok=True)
    lines = [f"{name}: {ms:.0f} ms" for name, ms in found.items()]
    (ARTIFACTS / "timings.txt").write_text("\n".join(lines) + "\n")


def _goto(page: Any, url: str, timings: dict[str, float], name: str) -> None:
    started = time.perf_counter()
    page.goto(url)
    timings[name] = (time.perf_counter() - started) * 1000


def _shot(page: Any, name: str, *, full_page: bool = True) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=full_page)


def _no_sideways_scroll(page: Any, width: int) -> None:
    assert page.evaluate("document.documentElement.scrollWidth") <= width


def test_an_admin_finds_a_member_adjusts_points_and_reads_the_dashboard(
    server: dict[str, Any], browser: Any, timings: dict[str, float]
) -> None:
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    _goto(page, server["base"] + "/admin", timings, "GET /admin/login")
    expect(page).to_have_url(server["base"] + "/admin/login?next=/admin")
    # with the keyboard only: the email field has focus, Tab to the password, Enter to submit
    expect(page.get_by_label("Email")).to_be_focused()
    page.keyboard.type("owner@demo.example")
    page.keyboard.press("Tab")
    page.keyboard.type("a wrong password")
    page.keyboard.press("Enter")
    expect(page.get_by_role("alert")).to_have_text("Email or password is incorrect")
    page.get_by_label("Password").fill(PASSWORD)
    started = time.perf_counter()
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(server["base"] + "/admin")
    timings["POST /admin/login -> GET /admin"] = (time.perf_counter() - started) * 1000
    chart = page.locator("svg.chart")
    expect(chart).to_be_visible()
    assert chart.locator("rect.bar.issued").count() == 12
    assert (chart.bounding_box() or {}).get("height", 0) > 150
    expect(page.get_by_role("heading", name="Tier population")).to_be_visible()
    _goto(page, server["base"] + "/admin", timings, "GET /admin (dashboard)")
    _shot(page, "admin-dashboard")

    member = server["member"]
    last_name = member["name"].split()[-1]
    page.get_by_role("link", name="Members").click()
    page.get_by_label("Find a member by name, email, phone or card number").fill(last_name)
    started = time.perf_counter()
    page.keyboard.press("Enter")
    page.get_by_role("link", name=member["name"]).first.wait_for()
    timings["GET /admin/members?q="] = (time.perf_counter() - started) * 1000
    _shot(page, "admin-search")
    _goto(page, f"{server['base']}/admin/members/{member['id']}", timings, "GET /admin/members/{id}")
    before = int(page.locator("#available-points").inner_text().replace(",", ""))
    page.get_by_label("Points (negative to take back)").fill("25")
    page.get_by_label("Reason").fill("Goodwill: long wait")
    page.get_by_role("button", name="Adjust points").click()
    expect(page.get_by_role("status")).to_have_text("Points adjusted by +25.")
    expect(page.locator("#available-points")).to_have_text(f"{before + 25:,}")
    expect(page.get_by_role("cell", name="Goodwill: long wait", exact=True)).to_be_visible()
    _shot(page, "admin-member")
    _shot(page, "admin-member-top", full_page=False)

    page.get_by_label("Points (negative to take back)").fill("lots")
    page.get_by_role("button", name="Adjust points").click()
    expect(page.locator("#adj-points-error")).to_contain_text("whole number")
    context.close()


def test_a_member_signs_in_by_link_on_a_phone(
    server: dict[str, Any], browser: Any, timings: dict[str, float]
) -> None:
    from playwright.sync_api import expect

    from patron.services import portal
    from patron.storage.db import make_engine

    engine = make_engine(server["url"])
    with engine.begin() as conn:
        link = portal.create_login_link(
            conn, merchant_id=server["merchant_id"], member_id=server["member"]["id"], base_url=server["base"]
        )
    engine.dispose()
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = context.new_page()
    _goto(page, link["url"], timings, "GET /portal/login/{token} -> GET /portal")
    expect(page).to_have_url(server["base"] + "/portal")
    expect(page.locator("#card-number")).to_have_text(server["member"]["card_number"])
    expect(page.locator(".card-qr svg")).to_be_visible()
    expect(page.locator("#balance")).to_be_visible()
    assert page.locator(".history li").count() >= 10
    expect(page.get_by_text("Purchase of $").first).to_be_visible()
    expect(page.get_by_role("heading", name="Your tier:")).to_be_visible()
    _no_sideways_scroll(page, 390)
    _shot(page, "portal-home-390")
    _shot(page, "portal-home-390-top", full_page=False)
    page.locator("#history li").nth(5).scroll_into_view_if_needed()
    _shot(page, "portal-history-390", full_page=False)
    _goto(page, server["base"] + "/portal", timings, "GET /portal")

    page.get_by_role("button", name="Get Free coffee").click()
    expect(page.locator("#reserved-code")).to_have_text(__import__("re").compile(r"^[A-Z0-9]{12}$"))
    _no_sideways_scroll(page, 390)
    page.locator("#rewards").screenshot(path=str(ARTIFACTS / "portal-reserved-390.png"))

    _goto(page, server["base"] + "/portal/card", timings, "GET /portal/card")
    _no_sideways_scroll(page, 390)
    _shot(page, "portal-card-390")

    again = context.new_page()
    again.goto(link["url"])
    expect(again.get_by_role("heading", level=1)).to_have_text("This sign-in link was already used")
    context.close()


def test_staff_validate_and_consume_a_reward_code_at_the_till(
    server: dict[str, Any], browser: Any, timings: dict[str, float]
) -> None:
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1024, "height": 768}, has_touch=True)
    page = context.new_page()
    page.goto(server["base"] + "/pos")
    page.get_by_label("Email").fill("till@demo.example")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(server["base"] + "/pos")

    member = server["member"]
    page.get_by_label("Card number or phone (with country code)").fill(member["card_number"])
    started = time.perf_counter()
    page.get_by_role("button", name="Find").click()
    expect(page.locator("#pos-member-name")).to_have_text(member["name"])
    timings["GET /pos?q=card"] = (time.perf_counter() - started) * 1000
    expect(page.locator("#pos-balance")).to_be_visible()
    find_box = page.get_by_role("button", name="Find").bounding_box()
    assert find_box and find_box["height"] >= 56  # a big touch target

    page.get_by_role("button", name="Record a visit").click()
    expect(page.locator("#pos-notice")).to_contain_text("Visit recorded")

    code = server["code"]
    page.get_by_label("Code the member shows you").fill(code.lower())
    page.get_by_role("button", name="Check code").click()
    expect(page.locator("#code-result")).to_contain_text("Valid: Free coffee")
    _shot(page, "pos-code-valid")
    page.get_by_role("button", name="Use this code").click()
    expect(page.locator("#pos-notice")).to_contain_text(f"Code {code} used: hand over Free coffee")
    _shot(page, "pos-code-used")

    page.get_by_label("Code the member shows you").fill(code)
    page.get_by_role("button", name="Check code").click()
    expect(page.locator("#code-result")).to_contain_text("Cannot be used")
    expect(page.get_by_role("button", name="Use this code")).to_have_count(0)
    _no_sideways_scroll(page, 1024)
    context.close()
