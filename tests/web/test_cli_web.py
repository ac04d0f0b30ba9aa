"""``patron users create`` and ``patron members login-link``, as the CLI will register them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from patron.cli import web_commands
from patron.cli.common import unit
from patron.config import get_settings
from patron.services.members import MemberCreate, enrol
from patron.services.merchants import create_merchant
from patron.services.programs import create_program
from patron.services.users import authenticate
from tests.conftest import bean_rewards


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    monkeypatch.setenv("PATRON_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.delenv("PATRON_MERCHANT", raising=False)
    app = typer.Typer()
    app.add_typer(web_commands.users_app, name="users")
    members = typer.Typer()
    members.command("login-link")(web_commands.members_login_link)
    members.command("noop")(lambda: None)  # a group with one command would swallow its name
    app.add_typer(members, name="members")
    return app


def test_users_create_and_login_link(cli: typer.Typer) -> None:
    with unit() as conn:
        merchant, _ = create_merchant(conn, name="Cli Shop")
        program = create_program(conn, merchant_id=merchant["id"], body=bean_rewards())
        member = enrol(
            conn, merchant_id=merchant["id"], data=MemberCreate(program_id=program["id"], name="Cy")
        )
    runner = CliRunner()
    out = runner.invoke(
        cli,
        ["users", "create", "Boss@Example.com", "--password", "long enough pw", "--merchant", merchant["id"]],
    )
    assert out.exit_code == 0, out.output
    assert "created" in out.output
    with unit() as conn:
        assert authenticate(conn, email="boss@example.com", password="long enough pw") is not None
    again = runner.invoke(cli, ["users", "create", "boss@example.com", "--password", "long enough pw"])
    assert again.exit_code == 1 and "already exists" in again.output
    short = runner.invoke(cli, ["users", "create", "b2@example.com", "--password", "short"])
    assert short.exit_code == 1 and "at least 10 characters" in short.output

    link = runner.invoke(cli, ["members", "login-link", member["id"]])
    assert link.exit_code == 0, link.output
    url = link.output.strip()
    base = re.escape(get_settings().public_url.rstrip("/"))
    assert re.fullmatch(base + r"/portal/login/[A-Za-z0-9_-]{40,}", url)
    missing = runner.invoke(cli, ["members", "login-link", "mem_nope"])
    assert missing.exit_code == 1 and "not found" in missing.output
