"""The policy commands of `jupyter-warden`: grants, access, explain, links, labels, audit.

The commands run as separate processes on a real store; the store is seeded
in process where that is only setup. One test runs a server beside the CLI.
"""

from __future__ import annotations

import asyncio
import csv
import getpass
import importlib.util
import io
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from jupyter_warden.cli import main
from jupyter_warden.identity.accounts import Accounts
from jupyter_warden.policy.changes import Policy
from jupyter_warden.policy.engine import Actor, PolicyEngine

ROOT = Path(__file__).resolve().parent.parent
ME = f"cli:{getpass.getuser()}"


@pytest.fixture
def state(tmp_path):
    return tmp_path / "state"


@pytest.fixture
def cli(state, warden_db_url):
    def run(*args, check: int | None = 0):
        env = {**os.environ, "WARDEN_STATE": str(state), "WARDEN_DB": warden_db_url}
        result = subprocess.run(
            [sys.executable, "-m", "jupyter_warden.cli", *args],
            input="",
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        if check is not None:
            assert result.returncode == check, (args, result.stdout, result.stderr)
        if result.returncode == 1:
            # A refusal is one sentence, never a traceback.
            assert result.stderr.startswith("jupyter-warden: "), result.stderr
            assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        return result

    return run


def seed(store):
    """alice (admin), bob and carol in cs101, dan outside it."""
    accounts = Accounts(store)
    accounts.add_user("alice", admin=True)
    for name in ["bob", "carol", "dan"]:
        accounts.add_user(name)
    accounts.add_group("cs101")
    accounts.change_members("cs101", add=["bob", "carol"])
    return accounts


def lines_of(output: str, start: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip().startswith(start)]


# -- arguments (in process: this is argparse's side of the contract) ----------

NEW_COMMANDS = [
    ["grant"], ["revoke"], ["access"], ["explain"],
    ["link"], ["link", "create"], ["link", "revoke"], ["link", "list"],
    ["label"], ["label", "set"], ["label", "remove"], ["label", "define"], ["label", "list"],
    ["audit"], ["audit", "tail"], ["audit", "verify"], ["audit", "export"],
]  # fmt: skip


def test_every_policy_command_has_help(capsys):
    for command in NEW_COMMANDS:
        with pytest.raises(SystemExit) as exit:
            main([*command, "--help"])
        assert exit.value.code == 0
        assert "usage: jupyter-warden" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args",
    [
        ["grant", "x", "--to", "user:bob"],
        ["grant", "x", "--to", "user:bob", "--level", "superuser"],
        ["grant", "x", "--to", "bob", "--level", "read"],
        ["grant", "x", "--to", "link:abc", "--level", "read"],
        ["grant", "a/../b", "--to", "user:bob", "--level", "read"],
        ["grant", "x", "--to", "user:bob", "--level", "read", "--not-after", "soon"],
        ["revoke", "x"],
        ["explain", "bob", "delete", "x"],
        ["link", "create", "x", "--level", "read-write"],
        ["link", "create", "x", "--level", "manage"],
        ["link", "frobnicate"],
        ["label", "set", "x"],
        ["audit", "tail", "-n", "0"],
        ["audit", "export", "--format", "xml"],
        ["audit", "export", "--since", "last week"],
    ],
)
def test_a_bad_argument_exits_2_with_one_line(capsys, args):
    with pytest.raises(SystemExit) as exit:
        main(args)
    assert exit.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0]


# -- grants, access, explain ---------------------------------------------------


def test_grant_access_explain_revoke(cli, store):
    seed(store)
    assert cli("grant", "cs101", "--to", "group:cs101", "--level", "read").stdout.strip() == (
        "grant #1: group:cs101 has read on 'cs101'"
    )
    cli("grant", "/cs101/a.ipynb", "--to", "group:cs101", "--level", "read-run")
    cli("grant", "cs101/secret", "--to", "user:bob", "--level", "none")
    cli("grant", "cs101/a.ipynb", "--to", "user:dan", "--level", "read-write")

    access = cli("access", "cs101/a.ipynb").stdout
    table = lines_of(access, "1 ") + lines_of(access, "2 ") + lines_of(access, "4 ")
    assert any("'cs101' (inherited)" in line and "group:cs101" in line for line in table), access
    assert any("'cs101/a.ipynb'" in line and "read-run" in line for line in table), access
    assert "cs101/secret" not in access  # a grant below the path is not about it
    by_user = access.split("By user")[1]
    assert lines_of(by_user, "bob")[0].split()[1] == "read-run"
    assert lines_of(by_user, "carol")[0].split()[1] == "read-run"
    assert lines_of(by_user, "dan")[0].split()[1] == "read-write"
    assert "(anyone else signed in)  none" in by_user
    assert "alice" in lines_of(by_user, "(server admins)")[0]

    allowed = cli("explain", "bob", "run", "cs101/a.ipynb").stdout
    assert allowed.startswith("allowed: bob (groups: cs101) may run 'cs101/a.ipynb'")
    assert "grant #2" in allowed
    denied = cli("explain", "bob", "write", "cs101/a.ipynb").stdout
    assert denied.startswith("denied: bob") and "does not include write" in denied
    # The none grant takes cs101/secret away from bob only.
    none = cli("explain", "bob", "read", "cs101/secret/x.ipynb").stdout
    assert none.startswith("denied:") and "grant #3" in none and "none" in none
    engine = PolicyEngine(store)
    carol = Actor.for_account(Accounts(store).get_user("carol"))
    assert engine.check(carol, "read", "cs101/secret/x.ipynb").allowed
    assert cli("explain", "alice", "manage", "anything").stdout.startswith("allowed: alice")
    ghost = cli("explain", "ghost", "read", "x", check=1)
    assert "no user named 'ghost'" in ghost.stderr

    assert "no user named 'ghost'" in cli("grant", "x", "--to", "user:ghost", "--level", "read", check=1).stderr
    assert "no group" in cli("grant", "x", "--to", "group:nope", "--level", "read", check=1).stderr

    revoked = cli("revoke", "cs101/a.ipynb", "--to", "group:cs101").stdout
    assert revoked.strip() == "revoked grant #2 (group:cs101 read-run on 'cs101/a.ipynb')"
    after = cli("explain", "bob", "run", "cs101/a.ipynb").stdout
    assert after.startswith("denied:") and "grant #1" in after
    assert "has no grant on 'cs101/a.ipynb'" in cli("revoke", "cs101/a.ipynb", "--to", "group:cs101", check=1).stderr


def test_time_windows(cli, store):
    seed(store)
    cli("grant", "lab", "--to", "user:bob", "--level", "read", "--not-before", "1h")
    access = cli("access", "lab").stdout
    row = lines_of(access, "1 ")[0]
    assert row.split()[4] == "no" and "from " in row
    explain = cli("explain", "bob", "read", "lab").stdout
    assert explain.startswith("denied:")
    assert "not counted, outside its time window: grant #1" in explain
    assert "already past" in cli(
        "grant", "lab", "--to", "user:bob", "--level", "read", "--not-after", "2020-01-01", check=1
    ).stderr
    assert "must come after" in cli(
        "grant", "lab", "--to", "user:carol", "--level", "read",
        "--not-before", "2d", "--not-after", "1d", check=1,
    ).stderr  # fmt: skip
    # A grant that ends soon is in force now and gone once it ends.
    cli("grant", "lab", "--to", "user:carol", "--level", "read", "--not-after", "2s")
    carol = Actor.for_account(Accounts(store).get_user("carol"))
    engine = PolicyEngine(store)
    assert engine.check(carol, "read", "lab/x.ipynb").allowed
    time.sleep(2.1)
    assert not engine.check(carol, "read", "lab/x.ipynb").allowed


# -- labels and links -----------------------------------------------------------


def test_labels_and_links(cli, store):
    seed(store)
    defined = cli(
        "label", "define", "confidential", "--banner", "CONFIDENTIAL — do not share",
        "--colour", "red", "--no-links",
    ).stdout  # fmt: skip
    assert "no share links" in defined and "red" in defined
    cli("label", "set", "alice", "confidential")
    refused = cli("link", "create", "alice/notes.ipynb", "--level", "read", check=1)
    assert "label 'confidential'" in refused.stderr
    assert Policy(store).list_links() == []

    cli("label", "define", "cs-only", "--only-groups", "cs101")
    cli("label", "set", "cs101", "cs-only")
    refused = cli("grant", "cs101/a.ipynb", "--to", "user:dan", "--level", "read", check=1)
    assert "label 'cs-only'" in refused.stderr and "group:cs101" in refused.stderr
    cli("grant", "cs101/a.ipynb", "--to", "group:cs101", "--level", "read")
    assert "no label named 'nolabel'" in cli("label", "set", "x", "nolabel", check=1).stderr

    labels = cli("label", "list").stdout
    assert "confidential: banner 'CONFIDENTIAL — do not share' in red; no share links" in labels
    assert "cs-only: grants only to group:cs101" in labels
    assert "confidential (on 'alice')" in cli("label", "list", "alice/notes.ipynb").stdout

    made = cli("link", "create", "shared/doc.ipynb", "--level", "read-run", "--expires", "1d")
    url = made.stdout.strip()
    assert url.startswith("/warden/link/wdl_") and "\n" not in url
    assert "shown only this once" in made.stderr and "prefix it with the server's address" in made.stderr
    link = Policy(store).link_for_token(url.rsplit("/", 1)[1])
    assert link is not None and link.path == "shared/doc.ipynb" and link.level == "read-run"

    listed = cli("link", "list").stdout
    row = lines_of(listed, link.id)[0].split()
    assert row[1:3] == ["active", "read-run"] and row[-1] == "'shared/doc.ipynb'"
    assert len(cli("link", "list", "cs101").stdout.strip().splitlines()) == 1  # header only

    assert "revoked" in cli("link", "revoke", link.id).stdout
    assert lines_of(cli("link", "list", "shared").stdout, link.id)[0].split()[1] == "revoked"
    assert Policy(store).link_for_token(url.rsplit("/", 1)[1]) is None
    assert "no share link" in cli("link", "revoke", "nosuchlink", check=1).stderr

    cli("label", "remove", "alice", "confidential")
    assert cli("label", "list", "alice").stdout.strip() == "no label is in force on 'alice'"
    assert "has no label 'confidential'" in cli("label", "remove", "alice", "confidential", check=1).stderr
    # With the label gone, the link is allowed.
    assert cli("link", "create", "alice/notes.ipynb", "--level", "read").stdout.startswith("/warden/link/")


# -- the audit log ----------------------------------------------------------------


def _tamper(db_url: str, statement: str) -> None:
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite":
        conn = sqlite3.connect(url.database)  # by hand, outside the warden's code
        conn.execute(statement)
        conn.commit()
        conn.close()
        return
    engine = create_engine(url.set(drivername="postgresql+psycopg"))
    with engine.begin() as conn:
        conn.execute(text(statement))
    engine.dispose()


def test_cli_changes_are_audited_and_the_log_verifies(cli, store, warden_db_url, tmp_path):
    cli("user", "add", "bob")
    cli("group", "add", "cs101")
    cli("group", "members", "cs101", "--add", "bob")
    cli("grant", "cs101", "--to", "group:cs101", "--level", "read")
    cli("grant", "cs101", "--to", "user:ghost", "--level", "read", check=1)

    tail = cli("audit", "tail", "-n", "2").stdout.strip().splitlines()
    assert len(tail) == 2
    assert "grant.create" in tail[0] and "allow" in tail[0]
    assert "grant.create" in tail[1] and "deny" in tail[1] and "no user named 'ghost'" in tail[1]

    records = [json.loads(line) for line in cli("audit", "export").stdout.splitlines()]
    assert [r["action"] for r in records] == [
        "admin.user", "admin.group", "admin.group", "grant.create", "grant.create"
    ]  # fmt: skip
    assert {r["actor"] for r in records} == {ME}
    assert records[0]["details"] == {"op": "add", "user": "bob", "admin": False, "password": False}
    assert records[3]["path"] == "cs101" and records[3]["grant_id"] == 1
    assert records[3]["details"]["subject"] == "group:cs101"
    rows = list(csv.DictReader(io.StringIO(cli("audit", "export", "--format", "csv").stdout)))
    assert [int(r["seq"]) for r in rows] == [r["seq"] for r in records]
    assert json.loads(rows[2]["details"])["add"] == ["bob"]
    assert cli("audit", "export", "--since", "1h").stdout.count("\n") == 5
    assert cli("audit", "export", "--since", "2999-01-01").stdout == ""

    assert cli("audit", "verify").stdout.strip() == "5 records, chain intact"

    _tamper(warden_db_url, "UPDATE audit_log SET actor='eve' WHERE seq=2")
    bad = cli("audit", "verify", check=1)
    assert "record 2 does not match its hash" in bad.stderr
    _tamper(warden_db_url, f"UPDATE audit_log SET actor='{ME}' WHERE seq=2")
    assert cli("audit", "verify").stdout.strip() == "5 records, chain intact"

    _tamper(warden_db_url, "DELETE FROM audit_log WHERE seq=3")
    gone = cli("audit", "verify", check=1)
    assert "record 3 is missing" in gone.stderr

    # A state folder without the log's key is the wrong one: refused, not re-keyed.
    elsewhere = cli("audit", "verify", "--state", str(tmp_path / "other"), check=1)
    assert "holds no audit key" in elsewhere.stderr
    assert not (tmp_path / "other" / "audit.key").exists()


# -- the demo -------------------------------------------------------------------


def test_the_demo_shares_at_every_level_and_stays_idempotent(store, state, tmp_path):
    from jupyter_warden.audit.log import AuditLog, load_or_create_key
    from jupyter_warden.demo import DEMO_GRANTS, prepare_demo

    audit = AuditLog(store, load_or_create_key(state))
    root = tmp_path / "notebooks"
    prepare_demo(store, root, audit=audit, actor="cli:test")
    policy, engine, accounts = Policy(store), PolicyEngine(store), Accounts(store)
    levels = {g.level for path, *_ in DEMO_GRANTS for g in policy.grants_on(path, inherited=False)}
    assert levels == {"read", "read-run", "read-write", "read-write-run", "manage"}
    for path, *_ in DEMO_GRANTS:
        assert (root / path).exists(), path

    def may(name, capability, path):
        return engine.check(Actor.for_account(accounts.get_user(name)), capability, path).allowed

    assert may("bob", "read", "cs101/lecture-01.ipynb") and not may("bob", "write", "cs101/lecture-01.ipynb")
    assert may("bob", "run", "cs101/assignment-01.ipynb")
    assert may("bob", "write", "shared/notes.ipynb") and not may("bob", "run", "shared/notes.ipynb")
    assert not may("bob", "read", "team/analysis.ipynb") and not may("bob", "read", "alice/private-notes.ipynb")
    assert may("carol", "run", "team/analysis.ipynb") and may("carol", "write", "team/analysis.ipynb")
    assert not may("carol", "read", "shared/notes.ipynb")
    labels = policy.labels_on("alice/private-notes.ipynb")
    assert [(l.name, l.colour, l.no_links) for l in labels] == [("confidential", "red", True)]

    # Someone's own change survives a second run, and nothing is duplicated.
    policy.grant("shared", "user:bob", "read")
    before = (policy.grants_on("shared/x"), len(audit.query()))
    prepare_demo(store, root, audit=audit, actor="cli:test")
    assert (policy.grants_on("shared/x"), len(audit.query())) == before
    assert [g.level for g in policy.grants_on("shared", inherited=False)] == ["read"]
    assert len(policy.list_labels()) == 1 and len(policy.labels_on("alice")) == 1
    assert audit.verify().ok


# -- the docs are generated from the code ---------------------------------------------


def test_the_policy_docs_match_the_code():
    spec = importlib.util.spec_from_file_location("doc_tables", ROOT / "docs" / "tables.py")
    tables = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tables)
    stale = tables.stale_blocks()
    assert not stale, f"docs out of date ({', '.join(stale)}): run `python docs/tables.py`"


def test_every_warden_option_is_in_the_operator_guide():
    from jupyter_warden.app import Warden
    from jupyter_server.extension.application import ExtensionApp

    guide = (ROOT / "docs" / "operator.md").read_text(encoding="utf-8")
    own = set(Warden.class_own_traits(config=True)) - set(ExtensionApp.class_traits(config=True))
    missing = [name for name in sorted(own) if f"`c.Warden.{name}`" not in guide]
    assert not missing, f"options missing from docs/operator.md: {', '.join(missing)}"


# -- with a running server --------------------------------------------------------


async def _within(seconds, condition):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.05)
    return condition()


async def test_a_cli_grant_and_revoke_reach_the_running_server_at_once(cli, warden, make_user):
    make_user("erin")
    erin = Actor.for_account(warden.accounts.get_user("erin"))
    assert not warden.engine.check(erin, "read", "projects/plan.ipynb").allowed  # now cached

    cli("grant", "projects", "--to", "user:erin", "--level", "read")
    assert await _within(1.0, lambda: warden.engine.check(erin, "read", "projects/plan.ipynb").allowed)
    cli("revoke", "projects", "--to", "user:erin")
    assert await _within(1.0, lambda: not warden.engine.check(erin, "read", "projects/plan.ipynb").allowed)

    # The server and the CLI share the state folder's key: one chain.
    warden.audit.record("erin", "contents.read", "allow", path="projects/plan.ipynb")
    assert cli("audit", "verify").stdout.strip() == "3 records, chain intact"
