"""The console's program editor (validation beside the JSON, a preview of who would move, publishing
a version), rewards with stock, and API keys shown once and revocable."""

from __future__ import annotations

import json
import re
from html import unescape
from typing import Any

from fastapi.testclient import TestClient

from tests.web.conftest import csrf_of, sign_in


def _editor(client: TestClient, shop: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    page = client.get(f"/admin/programs/{shop['program_id']}")
    assert page.status_code == 200, page.text
    text = re.search(r'<textarea id="program-json"[^>]*>(.*?)</textarea>', page.text, re.S)
    assert text
    return csrf_of(page.text), json.loads(unescape(text.group(1)))


def test_the_editor_refuses_a_broken_program_with_the_reason_and_changes_nothing(
    browser_client: TestClient, shop: dict[str, Any]
) -> None:
    assert sign_in(browser_client, shop["owner"]).status_code == 303
    csrf, body = _editor(browser_client, shop)
    assert body["name"] == "Bean Rewards" and body["tiers"]["levels"][1]["id"] == "silver"
    body["tiers"]["levels"][1]["threshold"] = 90000  # above gold: out of order
    r = browser_client.post(
        f"/admin/programs/{shop['program_id']}",
        data={"program": json.dumps(body), "action": "publish", "csrf_token": csrf},
    )
    assert r.status_code == 422
    assert "The program was not saved" in r.text and "lowest threshold to the highest" in r.text
    r = browser_client.post(
        f"/admin/programs/{shop['program_id']}",
        data={"program": "{not json", "action": "preview", "csrf_token": csrf},
    )
    assert r.status_code == 422 and "not valid JSON" in r.text
    r = browser_client.post(
        f"/admin/programs/{shop['program_id']}",
        data={"program": "[" * 100_000, "action": "preview", "csrf_token": csrf},
    )
    assert r.status_code == 422 and "nested too deeply" in r.text
    assert "Version 1," in browser_client.get(f"/admin/programs/{shop['program_id']}").text


def test_preview_shows_who_moves_then_publish_makes_a_version(
    browser_client: TestClient, shop: dict[str, Any]
) -> None:
    sign_in(browser_client, shop["owner"])
    csrf, body = _editor(browser_client, shop)
    body["tiers"]["levels"][1]["threshold"] = 100  # Ann's 30,000 of spend now reaches silver... and gold
    body["tiers"]["levels"][2]["threshold"] = 200
    r = browser_client.post(
        f"/admin/programs/{shop['program_id']}",
        data={"program": json.dumps(body), "action": "preview", "csrf_token": csrf},
    )
    assert r.status_code == 200, r.text
    assert "1 up, 0 down, 1 unchanged" in r.text
    assert f"/admin/members/{shop['ann']['id']}" in r.text
    r = browser_client.post(
        f"/admin/programs/{shop['program_id']}",
        data={"program": json.dumps(body), "action": "publish", "csrf_token": csrf},
    )
    assert r.status_code == 303 and r.headers["location"].endswith("published=2")
    page = browser_client.get(r.headers["location"])
    assert "Version 2 published." in page.text and "Version 2," in page.text


def test_rewards_show_what_is_left_of_their_stock(browser_client: TestClient, shop: dict[str, Any]) -> None:
    sign_in(browser_client, shop["owner"])
    page = browser_client.get(f"/admin/programs/{shop['program_id']}")
    assert "Free coffee" in page.text and "unlimited" in page.text


def test_an_owner_creates_a_key_seen_once_and_revokes_it(
    browser_client: TestClient, shop: dict[str, Any]
) -> None:
    sign_in(browser_client, shop["owner"])
    page = browser_client.get("/admin/keys")
    assert page.status_code == 200
    r = browser_client.post("/admin/keys", data={"name": "", "csrf_token": csrf_of(page.text)})
    assert r.status_code == 422 and "Name the key" in r.text and "Choose at least one scope" in r.text
    r = browser_client.post(
        "/admin/keys", data={"name": "Till app", "scopes": ["pos", "read"], "csrf_token": csrf_of(page.text)}
    )
    assert r.status_code == 200
    key = re.search(r'id="new-key">(ptr_[^<]+)<', r.text)
    assert key
    headers = {"Authorization": f"Bearer {key.group(1)}"}
    assert browser_client.get(f"/v1/members/{shop['ann']['id']}", headers=headers).status_code == 200
    assert key.group(1) not in browser_client.get("/admin/keys").text  # shown once
    revoke = re.search(r'Till app</th>.*?action="(/admin/keys/[^"]+/revoke)"', r.text, re.S)
    assert revoke
    r = browser_client.post(revoke.group(1), data={"csrf_token": csrf_of(page.text)})
    assert r.status_code == 303
    assert browser_client.get(f"/v1/members/{shop['ann']['id']}", headers=headers).status_code == 401


def test_staff_and_managers_cannot_manage_keys(browser_client: TestClient, shop: dict[str, Any]) -> None:
    sign_in(browser_client, shop["staff"])
    assert browser_client.get("/admin/keys").status_code == 303  # the till user goes to the till
    assert browser_client.get(f"/admin/programs/{shop['program_id']}").status_code == 303
