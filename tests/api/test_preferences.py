"""Email preferences over the API, the member's message log, and the public unsubscribe link:
a confirmation page, one-click POST, forged and other-merchant links refused."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from patron.services.notifications import unsubscribe_url
from tests.conftest import Api


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATRON_SECRET_KEY", "test-secret")
    monkeypatch.setenv("PATRON_PUBLIC_URL", "http://loyalty.example")


def link(engine: Engine, api: Api, member: str) -> str:
    with engine.begin() as conn:
        url = unsubscribe_url(conn, merchant_id=api.merchant_id, member_id=member)
    assert url.startswith("http://loyalty.example/unsubscribe/")
    return url.removeprefix("http://loyalty.example")


def test_preferences_default_to_everything_on_and_can_be_changed(api: Api) -> None:
    member = api.member(api.program(), email="ada@example.com")
    prefs = api.get(f"/v1/members/{member}/preferences").json()
    assert prefs["subscribed"] is True and prefs["email"] == "ada@example.com"
    assert prefs["messages"]["monthly_digest"] is True and all(prefs["messages"].values())

    r = api.put(f"/v1/members/{member}/preferences", {"messages": {"monthly_digest": False, "expiry": False}})
    assert r.status_code == 200, r.text
    assert r.json()["messages"]["monthly_digest"] is False and r.json()["messages"]["expiry"] is False
    assert r.json()["messages"]["welcome"] is True

    r = api.put(f"/v1/members/{member}/preferences", {"subscribed": False})
    assert r.json()["subscribed"] is False and r.json()["unsubscribed_at"]
    assert r.json()["messages"]["monthly_digest"] is False  # kept
    again = api.get(f"/v1/members/{member}/preferences").json()
    assert again == r.json()
    back = api.put(f"/v1/members/{member}/preferences", {"subscribed": True, "messages": {"expiry": True}})
    assert back.json()["subscribed"] is True and back.json()["messages"]["expiry"] is True


def test_bad_preferences_are_refused_and_nothing_written(api: Api) -> None:
    member = api.member(api.program(), email="ada@example.com")
    r = api.put(f"/v1/members/{member}/preferences", {"messages": {"spam": False}})
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")
    assert "spam" in r.json()["detail"]
    r = api.put(f"/v1/members/{member}/preferences", {"subscribed": "maybe"})
    assert r.status_code == 422
    r = api.put(f"/v1/members/{member}/preferences", {"colour": "blue"})
    assert r.status_code == 422
    assert all(api.get(f"/v1/members/{member}/preferences").json()["messages"].values())


def test_another_merchants_member_is_not_found(api: Api, other_api: Api) -> None:
    member = api.member(api.program(), email="ada@example.com")
    assert other_api.get(f"/v1/members/{member}/preferences").status_code == 404
    r = other_api.put(f"/v1/members/{member}/preferences", {"subscribed": False})
    assert r.status_code == 404 and r.json()["type"].endswith("/not-found")
    assert other_api.get(f"/v1/members/{member}/notifications").status_code == 404
    assert api.get(f"/v1/members/{member}/preferences").json()["subscribed"] is True
    assert api.get("/v1/members/mem_nope/preferences").status_code == 404


def test_unsubscribe_page_then_one_click(api: Api, engine: Engine) -> None:
    member = api.member(api.program(), email="ada@example.com")
    path = link(engine, api, member)

    page = api.client.get(path)  # no API key: the link in the email
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<form method="post">' in page.text and "Unsubscribe</button>" in page.text
    assert api.get(f"/v1/members/{member}/preferences").json()["subscribed"] is True  # opening is not consent

    done = api.client.post(path, content="List-Unsubscribe=One-Click")
    assert done.status_code == 200 and "not receive any more emails" in done.text
    assert api.get(f"/v1/members/{member}/preferences").json()["subscribed"] is False
    assert api.client.post(path).status_code == 200  # twice is fine


def test_one_click_unsubscribes_arriving_together_all_succeed(api: Api, engine: Engine) -> None:
    """A mail provider's one-click POST and the member's own click land at once."""
    from concurrent.futures import ThreadPoolExecutor

    def click(path: str) -> int:
        return int(api.client.post(path, content="List-Unsubscribe=One-Click").status_code)

    for n in range(3):
        member = api.member(api.program(), email=f"twice{n}@example.com")
        with ThreadPoolExecutor(max_workers=6) as pool:
            codes = list(pool.map(click, [link(engine, api, member)] * 6))
        assert codes == [200] * 6
        assert api.get(f"/v1/members/{member}/preferences").json()["subscribed"] is False


def test_forged_or_foreign_unsubscribe_links_change_nothing(api: Api, other_api: Api, engine: Engine) -> None:
    ada = api.member(api.program(), email="ada@example.com")
    bob = api.member(api.program(), email="bob@example.com")
    token = link(engine, api, ada).rsplit("/", 1)[1]
    merchant, _, signature = token.split(".")
    for bad in (
        f"{merchant}.{bob}.{signature}",  # another member with Ada's signature
        f"{other_api.merchant_id}.{ada}.{signature}",  # another merchant
        f"{merchant}.{ada}.{signature[:-2]}xx",
        "garbage",
    ):
        assert api.client.post(f"/unsubscribe/{bad}").status_code == 404
        assert api.client.get(f"/unsubscribe/{bad}").status_code == 404
    for member in (ada, bob):
        assert api.get(f"/v1/members/{member}/preferences").json()["subscribed"] is True


def test_the_message_log_of_a_member_starts_empty(api: Api) -> None:
    member = api.member(api.program(), email="ada@example.com")
    r = api.get(f"/v1/members/{member}/notifications")
    assert r.status_code == 200 and r.json() == {"data": []}
