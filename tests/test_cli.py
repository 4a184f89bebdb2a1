"""The `jupyter-warden` command line, end to end, as separate processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import auth


@pytest.fixture
def cli(tmp_path, warden_db_url):
    state = tmp_path / "state"

    def run(*args, stdin: str | None = None, check: int | None = 0):
        env = {**os.environ, "WARDEN_STATE": str(state), "WARDEN_DB": warden_db_url}
        result = subprocess.run(
            [sys.executable, "-m", "jupyter_warden.cli", *args],
            input=stdin if stdin is not None else "",
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        if check is not None:
            assert result.returncode == check, (args, result.stdout, result.stderr)
        return result

    return run


def test_every_command_has_help(cli):
    for command in [
        [],
        ["serve"],
        ["demo"],
        ["user"],
        ["user", "add"],
        ["user", "password"],
        ["user", "admin"],
        ["user", "token"],
        ["user", "list"],
        ["user", "remove"],
        ["group"],
        ["group", "add"],
        ["group", "members"],
        ["group", "import"],
        ["group", "list"],
    ]:
        result = cli(*command, "--help")
        assert "usage: jupyter-warden" in result.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["frobnicate"],
        ["user"],
        ["user", "add"],
        ["user", "token", "bob", "--expires", "next tuesday"],
        ["user", "token", "bob", "--list", "--revoke", "1"],
        ["user", "admin", "bob", "maybe"],
        ["serve", "--port", "eighty"],
    ],
)
def test_a_bad_argument_is_one_line_and_exit_code_2(cli, args):
    result = cli(*args, check=2)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0], result.stderr


def test_accounts_end_to_end(cli, tmp_path):
    assert "added admin alice" in cli("user", "add", "alice", "--admin", "--password-stdin", stdin="alice-password\n").stdout
    cli("user", "add", "bob", "--password-stdin", stdin="bob-password\n")
    refused = cli("user", "add", "BOB", "--password-stdin", stdin="whatever-pass\n", check=1)
    assert refused.stderr.startswith("jupyter-warden: ") and "twin" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    cli("user", "add", "short", "--password-stdin", stdin="abc\n", check=1)
    cli("user", "add", "nopw", "--password-stdin", stdin="", check=1)
    listing = cli("user", "list").stdout
    assert "alice" in listing and "bob" in listing and "short" not in listing

    token = cli("user", "token", "bob", "--note", "ci", "--expires", "7d")
    value = token.stdout.strip()
    assert value.startswith("wdn_") and "\n" not in value
    assert "shown only this once" in token.stderr
    tokens = cli("user", "token", "bob", "--list").stdout
    assert "active" in tokens and "ci" in tokens and value not in tokens
    cli("user", "token", "bob", "--revoke", "1")
    assert "revoked" in cli("user", "token", "bob", "--list").stdout
    cli("user", "token", "bob", "--revoke", "99", check=1)

    cli("user", "password", "bob", "--password-stdin", stdin="new-bob-password\n")
    cli("user", "password", "nobody", "--password-stdin", stdin="new-bob-password\n", check=1)
    cli("user", "admin", "bob", "on")
    assert "yes" in [line.split()[1] for line in cli("user", "list").stdout.splitlines() if line.startswith("bob")]
    cli("user", "remove", "bob")
    cli("user", "remove", "bob", check=1)


def test_groups_and_rosters_end_to_end(cli, tmp_path):
    for name in ["alice", "bob", "carol"]:
        cli("user", "add", name)
    cli("group", "add", "cs101")
    cli("group", "add", "CS101", check=1)
    assert cli("group", "members", "cs101", "--add", "bob", "carol").stdout.strip() == "cs101: bob carol"
    assert cli("group", "members", "cs101", "--remove", "bob").stdout.strip() == "cs101: carol"
    cli("group", "members", "cs101", "--add", "ghost", check=1)
    cli("group", "members", "nogroup", check=1)

    roster = tmp_path / "roster.csv"
    roster.write_text("Name,username\nBob B,bob\nDan D,dan\n", encoding="utf-8")
    refused = cli("group", "import", "cs101", str(roster), check=1)
    assert "dan" in refused.stderr and "--create-missing" in refused.stderr
    assert "dan" not in cli("group", "list").stdout
    done = cli("group", "import", "cs101", str(roster), "--create-missing")
    assert "1 new account" in done.stdout
    assert cli("group", "list").stdout.strip() == "cs101: bob carol dan"
    (tmp_path / "bad.csv").write_text("email\nx@y\n", encoding="utf-8")
    assert "no 'username' column" in cli("group", "import", "cs101", str(tmp_path / "bad.csv"), check=1).stderr
    assert "can't read roster" in cli("group", "import", "cs101", str(tmp_path / "missing.csv"), check=1).stderr


def test_a_bad_database_url_is_one_sentence(cli):
    result = cli("user", "list", "--db", "nonsense://x", check=1)
    assert result.stderr.startswith("jupyter-warden: ") and "Traceback" not in result.stderr


def test_jupyter_warden_is_reachable_as_jupyter_warden(cli, tmp_path):
    jupyter = os.path.join(os.path.dirname(sys.executable), "jupyter")
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    result = subprocess.run([jupyter, "warden", "--help"], capture_output=True, text=True, env=env)
    assert result.returncode == 0 and "usage: jupyter-warden" in result.stdout


async def test_a_token_made_by_the_cli_works_on_the_running_server(cli, jp_fetch, warden):
    cli("user", "add", "dora")
    token = cli("user", "token", "dora").stdout.strip()
    me = json.loads((await jp_fetch("api", "me", headers=auth(token))).body)
    assert me["identity"]["username"] == "dora"
    cli("user", "token", "dora", "--revoke", "1")
    assert (await jp_fetch("api", "me", headers=auth(token), raise_error=False)).code == 403
    cli("user", "remove", "dora")


def test_the_demo_is_idempotent(tmp_path):
    from jupyter_warden.demo import prepare_demo
    from jupyter_warden.identity.accounts import Accounts
    from jupyter_warden.store import Store, default_db_url, ensure_state_dir

    state = ensure_state_dir(tmp_path / "state")
    root = tmp_path / "notebooks"
    store = Store(default_db_url(state))
    store.upgrade()
    users = prepare_demo(store, root)
    assert set(users) == {"alice", "bob", "carol"}
    accounts = Accounts(store)
    assert accounts.get_user("alice").admin
    assert accounts.list_groups() == {"cs101": ["bob", "carol"]}
    notebooks = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.ipynb"))
    assert "cs101/assignment-01.ipynb" in notebooks
    # A user's edits and a changed password survive a second run.
    (root / "welcome.ipynb").write_text('{"edited": true}')
    accounts.set_password("bob", "bob-changed-it")
    prepare_demo(store, root)
    assert (root / "welcome.ipynb").read_text() == '{"edited": true}'
    assert accounts.verify_password("bob", "bob-changed-it") is not None
    assert accounts.verify_password("alice", users["alice"][0]) is not None
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*.ipynb")) == notebooks
    store.dispose()


def test_serve_passes_jupyter_options_through_and_other_commands_refuse_unknown_ones(capsys, monkeypatch):
    from jupyter_warden import cli

    launched = []
    monkeypatch.setattr(cli, "_launch_lab", launched.append)
    cli.main(["serve", "--root", "/", "--ServerApp.base_url=/x/"])
    assert "--ServerApp.base_url=/x/" in launched[0]
    with pytest.raises(SystemExit) as e:
        cli.main(["audit", "tail", "--ServerApp.base_url=/x/"])
    assert e.value.code == 2
    assert "unrecognized arguments: --ServerApp.base_url=/x/" in capsys.readouterr().err
