"""The state store: migrations, refusal of newer schemas, failing closed, the state folder."""

from __future__ import annotations

import json
import os
import stat

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from conftest import auth
from jupyter_warden.identity.accounts import AccountError, Accounts
from jupyter_warden.store import SchemaTooNew, Store, StoreUnavailable, ensure_state_dir
from jupyter_warden.store.models import Base


@pytest.fixture
def store(warden_db_url, warden_state):
    ensure_state_dir(warden_state)
    s = Store(warden_db_url)
    yield s
    s.dispose()


def test_migrations_build_the_whole_schema_from_an_empty_database(store):
    assert store.current_revision() is None
    store.upgrade()
    assert store.current_revision() == store.head_revision()
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == [], f"models and migrations disagree: {diff}"


def test_an_older_database_is_migrated_and_keeps_its_data(store):
    from alembic import command

    store.upgrade()
    Accounts(store).add_user("bob", password="bob-password")
    cfg = store._alembic_config()
    with store.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")
    assert store.current_revision() is None
    store.upgrade()  # idempotent from any older revision
    store.upgrade()
    assert store.current_revision() == store.head_revision()
    assert set(inspect(store.engine).get_table_names()) >= {"users", "groups", "api_tokens"}


def test_a_database_from_a_newer_version_is_refused(store):
    store.upgrade()
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999_from_the_future'"))
    with pytest.raises(SchemaTooNew, match="newer version. Upgrade jupyter-warden"):
        store.upgrade()
    # Nothing was changed by the refusal.
    assert store.current_revision() == "9999_from_the_future"


def test_sqlite_runs_in_wal_mode(store):
    if store.engine.dialect.name != "sqlite":
        pytest.skip("WAL is SQLite's; this run is on PostgreSQL")
    with store.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1


def test_an_unreachable_database_is_a_clear_error():
    store = Store("postgresql://nobody@127.0.0.1:1/none")
    with pytest.raises(StoreUnavailable, match="can't be used right now"):
        store.upgrade()


def test_the_state_folder_is_private(tmp_path):
    path = tmp_path / "state"
    ensure_state_dir(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    path.chmod(0o755)
    ensure_state_dir(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o700


def test_name_twins_can_not_both_exist(store):
    store.upgrade()
    accounts = Accounts(store)
    accounts.add_user("José", password="long-enough")
    for twin in ["josé", "JOSÉ", "Jose\u0301", "ＪＯＳＥ\u0301", "jos\u00e9"]:
        with pytest.raises(AccountError, match="twin"):
            accounts.add_user(twin)
    accounts.add_group("cs101")
    with pytest.raises(AccountError, match="twin"):
        accounts.add_group("CS101")
    for bad in ["", ".hidden", "a/b", "a\\b", "x" * 65, "-rf", "user:bob", "tab\tname", "_x", "\u0301x", "a\u200bb", "ok\x00"]:
        with pytest.raises(AccountError, match="not allowed"):
            accounts.add_user(bad)
    assert accounts.get_user("jose\u0301").name == "José"


def test_a_refused_roster_import_changes_nothing(store, tmp_path):
    store.upgrade()
    accounts = Accounts(store)
    accounts.add_user("bob")
    accounts.add_group("cs101")
    roster = tmp_path / "roster.csv"
    roster.write_text("email,username\nb@x,bob\nz@x,zed\n", encoding="utf-8")
    with pytest.raises(AccountError, match="zed"):
        accounts.import_roster("cs101", roster)
    assert accounts.list_groups() == {"cs101": []}
    assert accounts.get_user("zed") is None
    roster.write_text("username\nbob\n../evil\n", encoding="utf-8")
    with pytest.raises(AccountError, match="line 3"):
        accounts.import_roster("cs101", roster, create_missing=True)
    assert accounts.list_groups() == {"cs101": []}


# -- on a running server ---------------------------------------------------


async def test_a_broken_database_refuses_requests_with_503(jp_fetch, warden, make_user):
    token = make_user("bob")
    assert (await jp_fetch("api", "me", headers=auth(token))).code == 200
    if warden.store.engine.dialect.name == "sqlite":
        db_file = warden.store.engine.url.database
        warden.store.engine.dispose()
        os.rename(db_file, db_file + ".moved")
        os.mkdir(db_file)  # a folder where the database was: can't be opened
        try:
            response = await jp_fetch("api", "me", headers=auth(token), raise_error=False)
        finally:
            os.rmdir(db_file)
            os.rename(db_file + ".moved", db_file)
    else:
        from sqlalchemy import create_engine
        from sqlalchemy.engine import make_url

        dbname = warden.store.engine.url.database
        admin = create_engine(
            make_url(os.environ["WARDEN_TEST_POSTGRES"]).set(drivername="postgresql+psycopg"),
            isolation_level="AUTOCOMMIT",
        )
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS false'))
            conn.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d"),
                {"d": dbname},
            )
        try:
            response = await jp_fetch("api", "me", headers=auth(token), raise_error=False)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS true'))
            admin.dispose()
    assert response.code == 503
    assert "can't be used right now" in json.loads(response.body)["message"]
    # And it recovers once the database is back.
    assert (await jp_fetch("api", "me", headers=auth(token))).code == 200


class TestStateUnderRoot:
    @pytest.fixture
    def warden_state(self, jp_root_dir):
        # The operator put the state folder under the served root.
        return jp_root_dir / "warden-state"

    @pytest.fixture
    def warden_db_url(self, jp_root_dir):
        return f"sqlite:///{jp_root_dir / 'warden-state' / 'warden.db'}"

    async def test_the_state_folder_is_unreachable(self, jp_fetch, jp_root_dir, warden, make_user):
        token = make_user("alice", admin=True)
        (jp_root_dir / "notes.txt").write_text("hello")
        (jp_root_dir / "link-to-state").symlink_to(jp_root_dir / "warden-state")
        listing = json.loads((await jp_fetch("api", "contents", headers=auth(token))).body)
        names = {entry["name"] for entry in listing["content"]}
        assert "notes.txt" in names
        assert "warden-state" not in names and "link-to-state" not in names
        attempts = [
            ("api", "contents", "warden-state"),
            ("api", "contents", "warden-state", "warden.db"),
            ("api", "contents", "link-to-state", "warden.db"),
            ("files", "warden-state", "warden.db"),
            ("files", "link-to-state", "warden.db"),
            ("nbconvert", "html", "warden-state", "warden.db"),
        ]
        for parts in attempts:
            response = await jp_fetch(*parts, headers=auth(token), raise_error=False)
            assert response.code == 404, parts
        # Writes, renames and copies into it are refused too.
        put = await jp_fetch(
            "api", "contents", "warden-state", "evil.txt",
            method="PUT",
            body=json.dumps({"type": "file", "format": "text", "content": "x"}),
            headers=auth(token),
            raise_error=False,
        )
        assert put.code == 404
        rename = await jp_fetch(
            "api", "contents", "notes.txt",
            method="PATCH",
            body=json.dumps({"path": "warden-state/notes.txt"}),
            headers=auth(token),
            raise_error=False,
        )
        assert rename.code == 404
        copy = await jp_fetch(
            "api", "contents",
            method="POST",
            body=json.dumps({"copy_from": "warden-state/warden.db"}),
            headers=auth(token),
            raise_error=False,
        )
        assert copy.code == 404
        checkpoint = await jp_fetch(
            "api", "contents", "warden-state", "warden.db", "checkpoints",
            method="POST", body="", headers=auth(token), raise_error=False,
        )
        assert checkpoint.code == 404
        delete = await jp_fetch(
            "api", "contents", "warden-state", "warden.db",
            method="DELETE", headers=auth(token), raise_error=False,
        )
        assert delete.code == 404
        assert not (jp_root_dir / "warden-state" / "evil.txt").exists()
        assert (jp_root_dir / "notes.txt").exists()


async def test_a_locked_database_refuses_a_sign_in_with_503(jp_fetch, warden, make_user):
    import sqlite3

    from conftest import Browser

    if warden.store.engine.dialect.name != "sqlite":
        # PostgreSQL has no whole-database write lock; the unreachable case above covers it.
        pytest.skip("a whole-database lock is SQLite's")
    make_user("bob", password="bob-password")
    browser = Browser(jp_fetch)
    await browser.request("login")
    locker = sqlite3.connect(warden.store.engine.url.database, timeout=1)
    locker.execute("BEGIN IMMEDIATE")  # holds the write lock, as a stuck process would
    try:
        response = await browser.sign_in("bob", "bob-password")
    finally:
        locker.rollback()
        locker.close()
    assert response.code == 503
    assert b"be used right now" in response.body
    assert not any(c.startswith("warden-session-") for c in browser.cookies)
    # Nothing half-written: once the lock is gone, the chain verifies and sign-in works.
    assert warden.audit.verify().ok
    assert (await Browser(jp_fetch).sign_in("bob", "bob-password")).code == 302
