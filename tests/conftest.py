"""Fixtures: a real jupyter_server with the warden loaded, on SQLite or PostgreSQL.

Set WARDEN_TEST_POSTGRES to a PostgreSQL URL (a role that may create
databases) to run every test against a fresh PostgreSQL database instead of
SQLite; `.ci/run` does both.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import uuid
from pathlib import Path
from urllib.parse import urlencode

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

pytest_plugins = ["pytest_jupyter.jupyter_server"]

POSTGRES = os.environ.get("WARDEN_TEST_POSTGRES")


@contextlib.contextmanager
def fresh_database(folder):
    """A fresh, empty database: SQLite in ``folder``, or one made on WARDEN_TEST_POSTGRES and dropped after."""
    if not POSTGRES:
        yield f"sqlite:///{folder / 'state' / 'warden.db'}"
        return
    admin_url = make_url(POSTGRES).set(drivername="postgresql+psycopg")
    name = f"warden_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def database_contents(url: str) -> bytes:
    """Every row of every table, as bytes, on SQLite or PostgreSQL alike; on
    SQLite the database file too. For asserting a value was never stored."""
    from sqlalchemy import MetaData

    engine = create_engine(url)
    try:
        metadata = MetaData()
        metadata.reflect(engine)
        with engine.connect() as conn:
            rows = [repr(tuple(row)) for table in metadata.sorted_tables
                    for row in conn.execute(table.select())]
    finally:
        engine.dispose()
    contents = "\n".join(rows).encode()
    path = make_url(url).database
    if url.startswith("sqlite") and path:
        contents += open(path, "rb").read()
    return contents


@pytest.fixture(scope="session")
def labextensions(tmp_path_factory):
    """A labextensions folder holding the built JupyterLab extension under its package name.

    One for the whole session, shared by every browser test module: jupyter_server's
    FileFindHandler caches the file behind each static path process-wide, by path alone,
    so a second folder for the same extension would be refused (403) as outside its roots.
    """
    built = Path(__file__).resolve().parent.parent / "jupyter_warden" / "labextension"
    if not (built / "package.json").exists():
        pytest.fail(f"{built} is not built: run `jlpm install && jlpm build:prod` (make venv does)")
    folder = tmp_path_factory.mktemp("labextensions")
    (folder / "jupyter-warden").symlink_to(built)
    return folder


@pytest.fixture
def warden_db_url(tmp_path):
    """A fresh, empty database for one test."""
    with fresh_database(tmp_path) as url:
        yield url


@pytest.fixture
def warden_state(tmp_path):
    return tmp_path / "state"


@pytest.fixture
def store(warden_db_url, warden_state):
    """The store of a test with no server: migrated to head, disposed after."""
    from jupyter_warden.store import Store, ensure_state_dir

    ensure_state_dir(warden_state)
    s = Store(warden_db_url)
    s.upgrade()
    yield s
    s.dispose()


@pytest.fixture
def warden_config():
    """Extra c.Warden settings for one test; override in a test module."""
    return {}


@pytest.fixture
def server_extensions():
    """The server extensions loaded beside the warden. pytest-jupyter hides the
    environment's config, so real-time collaboration (installed) is off unless a
    test module adds jupyter_server_fileid and jupyter_server_ydoc here."""
    return {"jupyter_warden": True, "jupyterlab": True}


@pytest.fixture
def extra_server_config():
    """Other classes' settings for one test module (e.g. YDocExtension)."""
    return {}


@pytest.fixture
def jp_server_config(warden_state, warden_db_url, warden_config, server_extensions, extra_server_config):
    return {
        **extra_server_config,
        "ServerApp": {"jpserver_extensions": server_extensions},
        "Warden": {"state_dir": str(warden_state), "db_url": warden_db_url, **warden_config},
    }


@pytest.fixture
def jp_auth_header():
    # pytest-jupyter would send the server-wide token, which identifies nobody
    # here; each test sends a user's token or cookie itself.
    return {}


@pytest.fixture
def warden(jp_serverapp):
    """The loaded Warden extension app of the running server."""
    return jp_serverapp.web_app.settings["warden"]


@pytest.fixture
def make_user(warden):
    """Create a user with a password; return (name, api token)."""

    def make(name, password="correct-horse", admin=False):
        warden.accounts.add_user(name, password=password, admin=admin)
        _id, token = warden.accounts.create_token(name)
        return token

    return make


def auth(token: str) -> dict:
    return {"Authorization": f"token {token}"}


NO_AUTH = {"Authorization": ""}


async def fetch_json(jp_fetch, *parts, **kw):
    response = await jp_fetch(*parts, **kw)
    return json.loads(response.body)


def cookies_of(response) -> dict[str, str]:
    jar = {}
    for header in response.headers.get_list("Set-Cookie"):
        name, _, rest = header.partition("=")
        jar[name] = rest.split(";", 1)[0]
    return jar


class Browser:
    """A cookie jar over jp_fetch: sign-in flows as a browser would do them."""

    def __init__(self, jp_fetch):
        self.jp_fetch = jp_fetch
        self.cookies: dict[str, str] = {}
        self.last_set_cookie: list[str] = []

    def _headers(self, extra=None):
        headers = {"Authorization": ""}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        headers.update(extra or {})
        return headers

    async def request(self, *parts, method="GET", body=None, headers=None, **kw):
        response = await self.jp_fetch(
            *parts,
            method=method,
            body=body,
            headers=self._headers(headers),
            follow_redirects=False,
            raise_error=False,
            **kw,
        )
        self.last_set_cookie = response.headers.get_list("Set-Cookie")
        for header in self.last_set_cookie:
            name, _, rest = header.partition("=")
            value = rest.split(";", 1)[0]
            if value in ("", '""') or "expires=Thu, 01 Jan 1970" in header or "Max-Age=0" in header:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        return response

    async def sign_in(self, username, password, headers=None):
        page = await self.request("login")
        xsrf = self.cookies.get("_xsrf") or re.search(
            r'name="_xsrf" value="([^"]+)"', page.body.decode()
        ).group(1)
        body = urlencode({"username": username, "password": password, "_xsrf": xsrf})
        return await self.request(
            "login",
            method="POST",
            body=body,
            headers={"Content-Type": "application/x-www-form-urlencoded", **(headers or {})},
        )


# Some test servers' event loops close with an AnyIO worker thread still waiting
# for work (jupyter_server runs file calls in them): a non-daemon thread that its
# root task's end never stopped, so the interpreter would wait for it forever
# after the last test. Once pytest has reported, leave with its exit status.
def pytest_sessionfinish(session, exitstatus):
    session.config._warden_exitstatus = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    status = getattr(config, "_warden_exitstatus", None)
    if status is not None:
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
