"""Customer care in the console: the at-risk list opens a case, which is assigned, commented,
contacted and resolved (and reopened) with every step on its timeline; invalid forms come back
with the message beside the field; the survey report; the member's cases and household on the
360 view; another merchant's case is the same 404."""

from __future__ import annotations

import re
from datetime import timedelta
from html import unescape
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from patron.domain.surveys import Kind
from patron.services import at_risk, cases, households, programs, surveys, users
from patron.services.clock import utcnow
from tests.web.conftest import PASSWORD, build_shop, csrf_of, sign_in, unique


@pytest.fixture
def care(engine: Engine) -> dict[str, Any]:
    """The web shop, with at-risk settings that find Ann (one purchase an hour ago, assessed as if
    two days from now), a manager, and an at-risk assessment."""
    shop = build_shop(engine)
    mid, pid = shop["merchant_id"], shop["program_id"]
    with engine.begin() as conn:
        body = programs.get_program(conn, merchant_id=mid, program_id=pid)
        body = {k: v for k, v in body.items() if k not in ("id", "version", "effective_from", "created_at")}
        body["at_risk"] = {"inactive_days": 1, "min_purchases": 1, "p_alive_below": None, "open_cases": False}
        programs.update_program(conn, merchant_id=mid, program_id=pid, body=body, effective_from=None)
        manager = users.create_user(
            conn, merchant_id=mid, email=f"{unique('mgr')}@example.com", password=PASSWORD, role="manager"
        )
    with engine.begin() as conn:
        at_risk.assess_program(conn, merchant_id=mid, program_id=pid, as_of=utcnow() + timedelta(days=2))
    return {**shop, "manager": manager}


def _post(client: TestClient, url: str, page_url: str, **data: str) -> Any:
    page = client.get(page_url)
    assert page.status_code == 200, page.text
    return client.post(url, data={**data, "csrf_token": csrf_of(page.text)})


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html)))


def test_an_owner_opens_a_case_from_the_at_risk_list_and_works_it_to_resolution(
    browser_client: TestClient, care: dict[str, Any]
) -> None:
    c = browser_client
    sign_in(c, care["owner"])
    listing = c.get("/admin/at-risk")
    assert listing.status_code == 200
    assert "1 member at risk" in _text(listing.text) and "Ann Lee" in listing.text
    assert "Bob Stone" not in listing.text  # never bought anything
    r = c.post(
        f"/admin/members/{care['ann']['id']}/cases",
        data={"source": "at_risk", "summary": "At risk", "csrf_token": csrf_of(listing.text)},
    )
    assert r.status_code == 303
    case_url = r.headers["location"].split("?")[0]
    page = c.get(r.headers["location"])
    assert "Case opened." in page.text and 'id="case-status">open<' in page.text
    # the at-risk list now links to the live case instead of offering a second one
    again = c.get("/admin/at-risk").text
    assert f'href="{case_url}"' in again and "Open a case for Ann Lee" not in again

    # resolving before anyone has spoken to the member is not offered, and refused if forced
    assert "Resolve the case" not in page.text
    r = _post(c, f"{case_url}/resolve", case_url, resolution="Fixed")
    assert r.status_code == 409 and "Contact the member before resolving the case." in r.text

    r = _post(c, f"{case_url}/assign", case_url, user_id=care["manager"]["id"])
    assert r.status_code == 303
    r = _post(c, f"{case_url}/comment", case_url, text="Called, no answer; will try tomorrow.")
    assert r.status_code == 303
    r = _post(c, f"{case_url}/contacted", case_url, channel="phone", note="Spoke to Ann: happy again.")
    assert r.status_code == 303
    page = c.get(r.headers["location"])
    assert "Contact recorded: the loop is closed." in page.text
    r = _post(c, f"{case_url}/resolve", case_url, resolution="Offered a free coffee.")
    assert r.status_code == 303
    page = _text(c.get(case_url).text)
    assert "resolved" in page and "Offered a free coffee." in page
    timeline = page[page.index("Timeline") :]
    for step in (
        "Opened",
        "Assigned to " + care["manager"]["email"],
        "Commented",
        "Contacted by phone",
        "Resolved",
    ):
        assert step in timeline, step
    assert "Spoke to Ann: happy again." in timeline and care["owner"] in timeline  # who did it

    r = _post(c, f"{case_url}/reopen", case_url, note="She called back.")
    assert r.status_code == 303
    assert 'id="case-status">assigned<' in c.get(case_url).text  # the assignee is kept


def test_invalid_case_forms_come_back_with_the_message_beside_the_field(
    browser_client: TestClient, care: dict[str, Any], engine: Engine
) -> None:
    with engine.begin() as conn:
        case = cases.open_case(
            conn,
            merchant_id=care["merchant_id"],
            member_id=care["bob"]["id"],
            summary="Complaint",
            actor="test",
        )
    url = f"/admin/cases/{case['id']}"
    sign_in(browser_client, care["owner"])
    r = _post(browser_client, f"{url}/comment", url, text="   ")
    assert r.status_code == 422
    assert 'id="text-error">Write the comment.' in r.text and 'aria-invalid="true"' in r.text
    r = _post(browser_client, f"{url}/contacted", url, channel="pigeon", note="")
    assert r.status_code == 422 and 'id="channel-error">Choose how you reached the member.' in r.text
    # a till user cannot be given a case, even by a forged form
    with engine.begin() as conn:
        till = users.authenticate(conn, email=care["staff"], password=PASSWORD)
    assert till is not None
    r = _post(browser_client, f"{url}/assign", url, user_id=till["id"])
    assert r.status_code == 422 and 'id="user_id-error"' in r.text
    assert 'id="case-assignee">nobody yet<' in browser_client.get(url).text
    # without the CSRF token nothing happens
    r = browser_client.post(f"{url}/comment", data={"text": "sneaky"})
    assert r.status_code == 403
    assert "sneaky" not in browser_client.get(url).text


def test_the_case_list_filters_by_status_and_by_mine(
    browser_client: TestClient, care: dict[str, Any], engine: Engine
) -> None:
    sign_in(browser_client, care["owner"])
    with engine.begin() as conn:
        owner = users.authenticate(conn, email=care["owner"], password=PASSWORD)
        assert owner is not None
        mine = cases.open_case(
            conn,
            merchant_id=care["merchant_id"],
            member_id=care["ann"]["id"],
            summary="Mine to follow",
            actor="test",
            assignee=owner["id"],
        )
        cases.open_case(
            conn,
            merchant_id=care["merchant_id"],
            member_id=care["bob"]["id"],
            summary="Nobody's yet",
            actor="test",
        )
    every = browser_client.get("/admin/cases").text
    assert "Mine to follow" in every and "Nobody&#39;s yet" in every
    only_mine = browser_client.get("/admin/cases?assignee=mine").text
    assert "Mine to follow" in only_mine and "Nobody&#39;s yet" not in only_mine
    opened = browser_client.get("/admin/cases?status=open").text
    assert "Mine to follow" not in opened and "Nobody&#39;s yet" in opened
    assert f"/admin/cases/{mine['id']}" in browser_client.get("/admin/cases?status=assigned").text


def test_the_member_page_shows_cases_and_household_and_opens_a_case(
    browser_client: TestClient, care: dict[str, Any]
) -> None:
    sign_in(browser_client, care["owner"])
    url = f"/admin/members/{care['bob']['id']}"
    page = browser_client.get(url)
    assert page.status_code == 200
    assert "Follow-up cases" in page.text and "No cases." in page.text and "Not in a household." in page.text
    r = browser_client.post(f"{url}/cases", data={"summary": " ", "csrf_token": csrf_of(page.text)})
    assert r.status_code == 422 and 'id="case-summary-error">Say what the case is about.' in r.text
    r = browser_client.post(
        f"{url}/cases", data={"summary": "Card not scanning", "csrf_token": csrf_of(page.text)}
    )
    assert r.status_code == 303
    assert "Card not scanning" in browser_client.get(url).text


def test_the_survey_report_shows_nps_and_cli_per_month(
    browser_client: TestClient, care: dict[str, Any], engine: Engine
) -> None:
    with engine.begin() as conn:
        for member, score in ((care["ann"], 10), (care["bob"], 3)):
            surveys.submit(
                conn, merchant_id=care["merchant_id"], member_id=member["id"], kind=Kind.NPS, answers=(score,)
            )
        surveys.submit(
            conn,
            merchant_id=care["merchant_id"],
            member_id=care["ann"]["id"],
            kind=Kind.CLI,
            answers=(5, 6, 4),
        )
    sign_in(browser_client, care["owner"])
    page = browser_client.get("/admin/surveys?months=6")
    assert page.status_code == 200
    text = _text(page.text)
    assert "NPS 0 2 answers: 1 promoters, 1 detractors" in text
    assert "CLI 5 1 answers" in text
    assert page.text.count('<svg class="chart"') == 2
    assert page.text.count('<th scope="row" class="nowrap">') == 6  # one row per month
    # the detractor's low score opened a case, listed with the others
    assert "Bob Stone" in browser_client.get("/admin/cases").text


def test_another_merchants_case_is_not_found_and_staff_go_to_the_till(
    browser_client: TestClient, care: dict[str, Any], engine: Engine
) -> None:
    other = build_shop(engine)
    with engine.begin() as conn:
        theirs = cases.open_case(
            conn, merchant_id=other["merchant_id"], member_id=other["ann"]["id"], summary="Theirs", actor="t"
        )
    sign_in(browser_client, care["owner"])
    page = browser_client.get("/admin/cases")
    for url in (f"/admin/cases/{theirs['id']}", "/admin/cases/case_nope"):
        r = browser_client.get(url)
        assert r.status_code == 404 and "Theirs" not in r.text
    r = browser_client.post(
        f"/admin/cases/{theirs['id']}/comment", data={"text": "hi", "csrf_token": csrf_of(page.text)}
    )
    assert r.status_code == 404
    r = browser_client.post(
        f"/admin/members/{other['ann']['id']}/cases",
        data={"summary": "x", "source": "at_risk", "csrf_token": csrf_of(page.text)},
    )
    assert r.status_code == 404
    browser_client.cookies.clear()
    sign_in(browser_client, care["staff"])
    r = browser_client.get("/admin/cases")
    assert r.status_code == 303 and r.headers["location"] == "/pos"


def test_the_member_page_shows_the_household_and_its_pool(
    browser_client: TestClient, care: dict[str, Any], engine: Engine
) -> None:
    mid, pid = care["merchant_id"], care["program_id"]
    with engine.begin() as conn:
        body = programs.get_program(conn, merchant_id=mid, program_id=pid)
        body = {k: v for k, v in body.items() if k not in ("id", "version", "effective_from", "created_at")}
        body["households"] = {"max_members": 3, "cooldown_days": 90, "spending": "pool"}
        programs.update_program(conn, merchant_id=mid, program_id=pid, body=body, effective_from=None)
        home = households.create_household(
            conn,
            merchant_id=mid,
            program_id=pid,
            head_member_id=care["ann"]["id"],
            name="The Lees",
            actor="t",
        )
        households.add_member(
            conn,
            merchant_id=mid,
            household_id=home["id"],
            member_id=care["bob"]["id"],
            role="adult",
            can_spend=True,
            actor="t",
        )
    sign_in(browser_client, care["owner"])
    text = _text(browser_client.get(f"/admin/members/{care['bob']['id']}").text)
    household = text[text.index("Household") :]
    assert "The Lees · adult" in household and "pool 300 points available" in household
    assert "Ann Lee" in household and "Bob Stone (this member)" in household
