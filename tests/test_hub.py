"""JupyterHub integration: a real hub, its proxy, and the warden as the instructor's course server.

One hub per module, started from examples/jupyterhub/course/jupyterhub_config.py
(with test ports, the dummy authenticator and a 2-second hub cache), talked
to through configurable-http-proxy like a browser would. The course
server's kernels run in the bubblewrap sandbox where it works (root), to
show per-user kernel uids for hub users; the team server's run with
c.Warden.sandbox = "none" (identity is the point there).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from conftest import fresh_database

from jupyter_warden.sandbox import bubblewrap_problem

requests = pytest.importorskip("requests")
pytest.importorskip("jupyterhub")

ROOT = Path(__file__).resolve().parent.parent
CHP = ROOT / "tests" / "jupyterhub" / "node_modules" / ".bin" / "configurable-http-proxy"
COURSE_EXAMPLE = ROOT / "examples" / "jupyterhub" / "course" / "jupyterhub_config.py"
TEAM_EXAMPLE = ROOT / "examples" / "jupyterhub" / "team" / "jupyterhub_config.py"
HUB_CACHE_SECONDS = 2
# The course server sandboxes kernels where bubblewrap works (as root); the
# team server never does, and neither does the course server elsewhere.
SANDBOX = "bubblewrap" if bubblewrap_problem() is None else "none"
USERS = ["instructor", "alice", "bob", "carol", "dave", "eve", "hubadmin"]

pytestmark = pytest.mark.skipif(
    not CHP.exists(), reason="configurable-http-proxy is missing: run scripts/hub-proxy.sh (make system-deps)"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, timeout: float, what: str, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except requests.ConnectionError:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class Hub:
    """A running JupyterHub: its public URL, and its REST API as an admin service."""

    def __init__(self, url: str, admin_token: str, log: Path, prefix: str):
        self.url = url
        self.prefix = prefix  # of the warden server: user/NAME or services/NAME
        self.admin_token = admin_token
        self.log = log
        self.tokens: dict[str, str] = {}
        self.db_url: str | None = None  # the warden server's database

    def api(self, method: str, path: str, body=None, expect=(200, 201, 204)):
        r = requests.request(method, f"{self.url}/hub/api/{path}", json=body, timeout=30,
                             headers={"Authorization": f"token {self.admin_token}"})
        assert r.status_code in expect, f"{method} {path}: {r.status_code} {r.text}"
        return r.json() if r.content else None

    def token(self, user: str) -> str:
        """An API token of ``user``, issued by the hub (with the user's own permissions)."""
        if user not in self.tokens:
            self.tokens[user] = self.api("POST", f"users/{user}/tokens", {"note": "test"})["token"]
        return self.tokens[user]

    def server(self, user: str, method: str, path: str, token: str | None = None, **kwargs):
        """A request to the warden server, through the hub's proxy, as ``user``."""
        headers = kwargs.pop("headers", {})
        if user is not None:
            headers["Authorization"] = f"token {token or self.token(user)}"
        return requests.request(method, f"{self.url}/{self.prefix}/{path}", headers=headers,
                                timeout=60, allow_redirects=False, **kwargs)


def _notebook(text: str) -> dict:
    return {
        "type": "notebook",
        "format": "json",
        "content": {
            "cells": [{"cell_type": "markdown", "metadata": {}, "source": text, "id": "c1"}],
            "metadata": {}, "nbformat": 4, "nbformat_minor": 5,
        },
    }


@contextlib.contextmanager
def _start_hub(base: Path, example: Path, settings: str, env: dict, users: list[str], prefix: str):
    """JupyterHub from ``example`` plus test ``settings``, on loopback ports, until the block ends."""
    admin_token = secrets.token_hex(32)
    public, api, hub_port = _free_port(), _free_port(), _free_port()
    config = base / "jupyterhub_config.py"
    config.write_text(f"""
c = get_config()
load_subconfig({str(example)!r})
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allowed_users = {set(users)!r}
c.JupyterHub.services.extend([{{"name": "test-admin", "api_token": {admin_token!r}}}])
c.JupyterHub.load_roles.extend([{{"name": "admin", "services": ["test-admin"]}}])
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {public}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{api}"
c.ConfigurableHTTPProxy.command = [{str(CHP)!r}]
c.JupyterHub.db_url = "sqlite:///{base / 'hub.sqlite'}"
c.JupyterHub.cookie_secret_file = {str(base / 'cookie_secret')!r}
""" + settings)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        "CONFIGPROXY_AUTH_TOKEN": secrets.token_hex(32),
        **env,
    }
    for var in ("WARDEN_STATE", "WARDEN_DB", "JUPYTER_CONFIG_DIR"):
        env.pop(var, None)
    log = base / "hub.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "jupyterhub", "-f", str(config)], cwd=base,
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    the_hub = Hub(f"http://127.0.0.1:{public}", admin_token, log, prefix)
    try:
        def answers():
            if proc.poll() is not None:
                raise AssertionError(f"the hub exited with {proc.returncode}; its log is printed below")
            return requests.get(f"{the_hub.url}/hub/api/", timeout=5).ok

        _wait(answers, 120, "the hub to answer")
        yield the_hub
    except BaseException:
        print(log.read_text(errors="replace")[-20000:])
        raise
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(10)


def _cache_args(args: str, db_url: str, sandbox: str = "none") -> str:
    """Test settings: the sandbox, the database, and a short hub cache in place of the example's."""
    return (f"[a for a in {args} if not a.startswith('--Warden.hub_cache_max_age')] + "
            f"['--Warden.sandbox={sandbox}', '--Warden.hub_cache_max_age={HUB_CACHE_SECONDS}', "
            f"{'--Warden.db_url=' + db_url!r}]")


def _folders(root: Path, files: dict[str, str]) -> None:
    for folder, text in files.items():
        (root / folder).mkdir(parents=True)
        (root / folder / "notes.md").write_text(text)


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """The course setup: the warden as the instructor's server, students in the hub group cs101."""
    base = tmp_path_factory.mktemp("hub")
    course, home, state = base / "course", base / "home", base / "state"
    _folders(course, {"lectures": "week one", "solutions": "the answer is 42",
                      "homework/alice": "alice's homework", "homework/bob": "bob's homework"})
    db = contextlib.ExitStack()
    db_url = db.enter_context(fresh_database(base))  # in base/state on SQLite
    settings = f"""
c.Authenticator.admin_users = {{"hubadmin"}}
c.JupyterHub.load_groups = {{"cs101": {{"users": ["alice", "bob", "carol"]}}, "tas": {{"users": []}}}}
c.Spawner.args = {_cache_args("c.Spawner.args", db_url, SANDBOX)}
c.Spawner.start_timeout = 240
c.Spawner.http_timeout = 240
"""
    env = {"COURSE_ROOT": str(course), "COURSE_HOME": str(home), "COURSE_WARDEN_STATE": str(state)}
    with db, _start_hub(base, COURSE_EXAMPLE, settings, env, USERS, "user/instructor") as the_hub:
        the_hub.db_url = db_url
        try:
            the_hub.api("POST", "users/instructor/server", expect=(201, 202))
            _wait(lambda: (the_hub.api("GET", "users/instructor")["servers"].get("") or {}).get("ready"),
                  240, "the instructor's server to be ready", interval=1)
        except BaseException:
            print(the_hub.log.read_text(errors="replace")[-20000:])
            raise
        yield the_hub


@pytest.fixture(scope="module")
def course(hub):
    """The instructor's grants, made through the warden's REST API: the instructor is its admin."""
    grants = [("lectures", "group:cs101", "read"), ("homework/alice", "user:alice", "read-write-run"),
              ("homework/bob", "user:bob", "read-write-run"), ("solutions", "group:tas", "read")]
    for path, subject, level in grants:
        r = hub.server("instructor", "POST", "api/warden/grants",
                       json={"path": path, "subject": subject, "level": level})
        assert r.status_code == 201, r.text
    return hub


def _names(listing) -> set[str]:
    return {item["name"] for item in listing.json()["content"]}


def _read(hub, user, path, **kwargs):
    return hub.server(user, "GET", f"api/contents/{path}", **kwargs)


# -- who gets in ---------------------------------------------------------------


def test_the_instructor_is_the_warden_admin_of_her_course_server(course):
    me = course.server("instructor", "GET", "api/me")
    assert me.status_code == 200 and me.json()["identity"]["username"] == "instructor"
    for path in ("solutions/notes.md", "homework/alice/notes.md", "homework/bob/notes.md"):
        assert _read(course, "instructor", path).status_code == 200


def test_nobody_gets_in_without_the_hub(course):
    assert course.server(None, "GET", "api/contents").status_code in (302, 403)
    # A header that means something in proxy mode means nothing here.
    forged = course.server(None, "GET", "api/contents", headers={"X-Forwarded-User": "instructor"})
    assert forged.status_code in (302, 403)
    assert course.server("alice", "GET", "api/contents", token="not-a-hub-token").status_code in (302, 403)


def test_a_hub_user_the_hub_does_not_let_through_is_refused(course):
    # eve is signed in to the hub but in no course group and has no share.
    r = course.server("eve", "GET", "api/contents")
    assert r.status_code == 403, r.text


# -- what they see -------------------------------------------------------------


def test_two_students_each_see_only_what_is_granted(course):
    for me, other in (("alice", "bob"), ("bob", "alice")):
        root = course.server(me, "GET", "api/contents")
        assert root.status_code == 200
        assert _names(root) == {"lectures", "homework"}  # not solutions
        assert _names(_read(course, me, "homework")) == {me}
        mine = _read(course, me, f"homework/{me}/notes.md")
        assert mine.status_code == 200 and mine.json()["content"] == f"{me}'s homework"
        assert _read(course, me, f"homework/{other}/notes.md").status_code == 404
        assert _read(course, me, "solutions/notes.md").status_code == 404
        # read-write on their own folder, nothing more
        put = course.server(me, "PUT", f"api/contents/homework/{me}/answer.ipynb", json=_notebook(f"by {me}"))
        assert put.status_code in (200, 201), put.text
        theirs = course.server(me, "PUT", f"api/contents/homework/{other}/answer.ipynb", json=_notebook("x"))
        assert theirs.status_code in (403, 404)


def test_a_hub_group_granted_read_on_a_folder(course):
    # cs101 is a hub group; nobody made it in the warden.
    for student in ("alice", "bob", "carol"):
        lecture = _read(course, student, "lectures/notes.md")
        assert lecture.status_code == 200 and lecture.json()["content"] == "week one"
        write = course.server(student, "PUT", "api/contents/lectures/notes.md",
                              json={"type": "file", "format": "text", "content": "changed"})
        assert write.status_code == 403, write.text
    assert _read(course, "instructor", "lectures/notes.md").json()["content"] == "week one"
    # Nor may a reader start a kernel for a lecture notebook (read, not read-run).
    course.server("instructor", "PUT", "api/contents/lectures/l1.ipynb", json=_notebook("lecture"))
    session = course.server("carol", "POST", "api/sessions",
                            json={"path": "lectures/l1.ipynb", "type": "notebook", "name": "l1.ipynb",
                                  "kernel": {"name": "python3"}})
    assert session.status_code == 403, session.text


def test_a_membership_change_in_the_hub_takes_effect(course):
    assert _read(course, "carol", "solutions/notes.md").status_code == 404
    course.api("POST", "groups/tas/users", {"users": ["carol"]})
    seen = _wait(lambda: _read(course, "carol", "solutions/notes.md").status_code == 200,
                 HUB_CACHE_SECONDS + 10, "carol's new hub group to reach the warden")
    assert seen
    course.api("DELETE", "groups/tas/users", {"users": ["carol"]})
    _wait(lambda: _read(course, "carol", "solutions/notes.md").status_code == 404,
          HUB_CACHE_SECONDS + 10, "carol's removal from the hub group to reach the warden")
    # Out of the course group, the hub no longer lets her reach the server at all.
    course.api("DELETE", "groups/cs101/users", {"users": ["carol"]})
    _wait(lambda: course.server("carol", "GET", "api/contents").status_code == 403,
          HUB_CACHE_SECONDS + 10, "carol's removal from the course group to reach the server")
    course.api("POST", "groups/cs101/users", {"users": ["carol"]})


def test_a_user_the_hub_lets_through_with_no_grant_sees_nothing(course):
    # dave gets in through a hub share of the instructor's server ...
    course.api("POST", "shares/instructor/", {"user": "dave"})
    root = _wait(lambda: (r := course.server("dave", "GET", "api/contents")).status_code == 200 and r,
                 HUB_CACHE_SECONDS + 10, "dave's share to reach the server")
    # ... and sees nothing, can change nothing, and runs nothing.
    assert _names(root) == set()
    for path in ("lectures/notes.md", "solutions/notes.md", "homework/alice/notes.md", "lectures"):
        assert _read(course, "dave", path).status_code == 404
    assert course.server("dave", "GET", "files/lectures/notes.md").status_code == 404
    new = course.server("dave", "PUT", "api/contents/dave.ipynb", json=_notebook("mine"))
    assert new.status_code == 403, new.text
    session = course.server("dave", "POST", "api/sessions",
                            json={"path": "lectures/l1.ipynb", "type": "notebook", "name": "l1.ipynb",
                                  "kernel": {"name": "python3"}})
    assert session.status_code in (403, 404)
    assert course.server("dave", "POST", "api/terminals").status_code == 403


def test_a_hub_admin_is_not_a_warden_admin(course):
    # The hub's admins may reach every server; here they get only what is granted (nothing).
    root = course.server("hubadmin", "GET", "api/contents")
    assert root.status_code == 200 and _names(root) == set()
    assert _read(course, "hubadmin", "solutions/notes.md").status_code == 404
    grant = course.server("hubadmin", "POST", "api/warden/grants",
                          json={"path": "solutions", "subject": "user:hubadmin", "level": "manage"})
    assert grant.status_code in (403, 404)


def test_share_links_are_refused_on_a_hub_server(course):
    # A link's anonymous guest would get in without the hub.
    r = course.server("instructor", "POST", "api/warden/links", json={"path": "lectures", "level": "read"})
    assert r.status_code == 409 and "JupyterHub" in r.json()["message"], r.text


def test_hub_changes_are_audited(course):
    course.api("POST", "groups/tas/users", {"users": ["alice"]})
    _wait(lambda: _read(course, "alice", "solutions/notes.md").status_code == 200,
          HUB_CACHE_SECONDS + 10, "alice's new hub group to reach the warden")
    course.api("DELETE", "groups/tas/users", {"users": ["alice"]})
    records = course.server("instructor", "GET", "api/warden/audit", params={"actor": "alice", "limit": "500"})
    assert records.status_code == 200, records.text
    syncs = [r["details"] for r in records.json()["records"] if r["action"] == "auth.hub_sync"]
    assert {"groups_joined": ["tas"]} in syncs
    # alice's account was made by the instructor's grant; her first visit brought her hub group.
    assert any("cs101" in d.get("groups_joined", []) for d in syncs)


def test_hub_groups_and_accounts_are_mirrored_in_the_warden_store(course):
    from jupyter_warden.identity.accounts import Accounts
    from jupyter_warden.store import Store

    store = Store(course.db_url)
    try:
        groups = Accounts(store).list_groups()
        assert {"alice", "bob"} <= set(groups["cs101"])
        users = {a.name: a for a in Accounts(store).list_users()}
        assert users["instructor"].admin and not users["hubadmin"].admin and not users["alice"].admin
    finally:
        store.dispose()


# -- open connections ----------------------------------------------------------


async def _execute(ws, code: str, timeout: float = 120) -> dict:
    msg_id = uuid.uuid4().hex
    await ws.write_message(json.dumps({
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "", "session": uuid.uuid4().hex,
                   "date": "2026-01-01T00:00:00Z", "version": "5.4"},
        "parent_header": {}, "metadata": {}, "channel": "shell",
        "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                    "allow_stdin": False, "stop_on_error": True}}))
    deadline = time.monotonic() + timeout
    while True:
        raw = await asyncio.wait_for(ws.read_message(), max(0.1, deadline - time.monotonic()))
        assert raw is not None, f"the socket closed: {ws.close_code} {ws.close_reason}"
        msg = json.loads(raw)
        if msg["header"]["msg_type"] == "execute_reply" and msg["parent_header"].get("msg_id") == msg_id:
            return msg


def test_leaving_a_hub_group_closes_an_open_kernel_connection(course):
    """The identity re-check of open websockets asks the hub again (its cache aside)."""
    r = course.server("instructor", "POST", "api/warden/grants",
                      json={"path": "solutions", "subject": "group:tas", "level": "read-run"})
    assert r.status_code == 201, r.text
    course.server("instructor", "PUT", "api/contents/solutions/check.ipynb", json=_notebook("check"))
    course.api("POST", "groups/tas/users", {"users": ["bob"]})
    session = _wait(lambda: (s := course.server("bob", "POST", "api/sessions", json={
        "path": "solutions/check.ipynb", "type": "notebook", "name": "check.ipynb",
        "kernel": {"name": "python3"}})).status_code == 201 and s.json(),
        HUB_CACHE_SECONDS + 10, "bob's new hub group to let him run the notebook")
    url = course.url.replace("http", "ws", 1) + f"/user/instructor/api/kernels/{session['kernel']['id']}/channels"

    async def scenario():
        ws = await websocket_connect(HTTPRequest(url, headers={"Authorization": f"token {course.token('bob')}"},
                                                 connect_timeout=120, request_timeout=120))
        try:
            reply = await _execute(ws, "6 * 7")
            assert reply["content"]["status"] == "ok"
            course.api("DELETE", "groups/tas/users", {"users": ["bob"]})
            removed = time.monotonic()
            while await asyncio.wait_for(ws.read_message(), HUB_CACHE_SECONDS + 20) is not None:
                pass
            return time.monotonic() - removed, ws.close_reason
        finally:
            ws.close()

    elapsed, reason = asyncio.run(scenario())
    assert elapsed < HUB_CACHE_SECONDS + 20, reason
    assert _read(course, "bob", "solutions/check.ipynb").status_code == 404


def _start_session(hub, user: str, path: str) -> str:
    r = hub.server(user, "POST", "api/sessions", json={"path": path, "type": "notebook",
                                                      "name": path.rsplit("/", 1)[-1], "kernel": {"name": "python3"}})
    assert r.status_code == 201, r.text
    return r.json()["kernel"]["id"]


@pytest.mark.skipif(SANDBOX == "none", reason=f"no sandbox: {bubblewrap_problem()}")
def test_hub_users_kernels_run_sandboxed_under_their_own_uids(course):
    from jupyter_warden.sandbox import KernelUids
    from jupyter_warden.store import Store

    uids = {}
    for student in ("alice", "bob"):
        course.server(student, "PUT", f"api/contents/homework/{student}/hw.ipynb", json=_notebook("hw"))
        kernel = _start_session(course, student, f"homework/{student}/hw.ipynb")
        # The server's hub API token names the instructor: a kernel that could read it could act as her.
        code = ("import os, json; open('out.txt', 'w').write('mine'); "
                "print(json.dumps([os.getuid(), sorted(os.listdir('..')), "
                "sorted(k for k in os.environ if k.startswith('JUPYTERHUB'))]))")
        uids[student] = asyncio.run(_stdout_of(course, student, kernel, code))
    (alice_uid, alice_sees, alice_env), (bob_uid, bob_sees, bob_env) = uids["alice"], uids["bob"]
    assert alice_env == [] and bob_env == []
    assert alice_uid != bob_uid and 0 not in (alice_uid, bob_uid)
    # Each kernel sees its own homework folder, not the other's, nor the solutions.
    assert _read(course, "alice", "homework/alice/out.txt").json()["content"] == "mine"
    store = Store(course.db_url)
    try:
        kernel_uids = KernelUids(store, 200000, 299999)
        assert kernel_uids.uid_for("user:alice") == alice_uid and kernel_uids.uid_for("user:bob") == bob_uid
    finally:
        store.dispose()
    assert "solutions" not in alice_sees and "solutions" not in bob_sees


async def _stdout_of(hub, user: str, kernel_id: str, code: str):
    url = hub.url.replace("http", "ws", 1) + f"/{hub.prefix}/api/kernels/{kernel_id}/channels"
    ws = await websocket_connect(HTTPRequest(url, headers={"Authorization": f"token {hub.token(user)}"},
                                             connect_timeout=120, request_timeout=120))
    try:
        msg_id = uuid.uuid4().hex
        await ws.write_message(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "",
                       "session": uuid.uuid4().hex, "date": "2026-01-01T00:00:00Z", "version": "5.4"},
            "parent_header": {}, "metadata": {}, "channel": "shell",
            "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True}}))
        out, deadline = "", time.monotonic() + 180
        while True:
            raw = await asyncio.wait_for(ws.read_message(), max(0.1, deadline - time.monotonic()))
            assert raw is not None, f"the socket closed: {ws.close_code} {ws.close_reason}"
            msg = json.loads(raw)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind = msg["header"]["msg_type"]
            if kind == "stream":
                out += msg["content"]["text"]
            elif kind == "error":
                raise AssertionError("\n".join(msg["content"]["traceback"]))
            elif kind == "status" and msg["content"]["execution_state"] == "idle":
                return json.loads(out)
    finally:
        ws.close()


def _form(html: str, action_part: str) -> tuple[str, list]:
    """The action and the hidden fields of the page's first form whose action contains ``action_part``."""
    import html as html_lib
    import re

    for form in re.finditer(r"<form\b[^>]*>.*?</form>", html, re.S | re.I):
        action = re.search(r'action="([^"]*)"', form.group(0))
        if action and action_part in action.group(1):
            fields = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form.group(0))
            return html_lib.unescape(action.group(1)), [(k, html_lib.unescape(v)) for k, v in fields]
    raise AssertionError(f"no form for {action_part!r} in the page")


def test_a_browser_signs_in_through_the_hub_and_sees_only_its_grants(course):
    """The browser's way in: hub sign-in, then OAuth to the course server, then its cookie."""
    anonymous = requests.get(f"{course.url}/user/instructor/lab", allow_redirects=False, timeout=30)
    assert anonymous.status_code == 302 and "/hub/api/oauth2/authorize" in anonymous.headers["Location"]

    browser = requests.Session()
    login = browser.get(f"{course.url}/hub/login", timeout=30)
    action, fields = _form(login.text, "login")
    # Signed in, the hub sends bob on to the course server (the example's default_url).
    page = browser.post(requests.compat.urljoin(login.url, action), timeout=60,
                        data=[*fields, ("username", "bob"), ("password", "any")])
    if "/oauth2/authorize" in page.url:  # the hub asks bob to let the server know who he is
        action, fields = _form(page.text, "")  # it posts back to itself
        page = browser.post(requests.compat.urljoin(page.url, action), data=fields, timeout=60)
    assert page.status_code == 200 and page.url.endswith("/user/instructor/lab"), (page.url, page.text[:500])
    root = browser.get(f"{course.url}/user/instructor/api/contents", timeout=30)
    assert root.status_code == 200 and _names(root) == {"lectures", "homework"}
    assert browser.get(f"{course.url}/user/instructor/api/contents/solutions/notes.md", timeout=30).status_code == 404
    # The cookie is the server's OAuth token; a change needs the hub's _xsrf like any Jupyter write.
    xsrf = {"X-XSRFToken": browser.cookies.get("_xsrf", path="/user/instructor/") or ""}
    mine = browser.put(f"{course.url}/user/instructor/api/contents/homework/bob/browser.txt", timeout=30,
                       json={"type": "file", "format": "text", "content": "from the browser"}, headers=xsrf)
    assert mine.status_code == 201, mine.text
    put = browser.put(f"{course.url}/user/instructor/api/contents/lectures/notes.md", timeout=30,
                      json={"type": "file", "format": "text", "content": "changed"}, headers=xsrf)
    assert put.status_code == 403 and "bob" in put.json()["message"], put.text


# -- the team server, run as a hub service ---------------------------------------


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    """The team setup: the warden as the hub's managed service `team`, for the hub group `team`."""
    base = tmp_path_factory.mktemp("team")
    root, home, state = base / "team", base / "home", base / "state"
    _folders(root, {"shared": "for the whole team", "projects/x": "project x, ann only"})
    home.mkdir()
    db = contextlib.ExitStack()
    db_url = db.enter_context(fresh_database(base))  # in base/state on SQLite
    settings = f"""
c.JupyterHub.load_groups = {{"team": {{"users": ["lead", "ann", "tom"]}}}}
c.Authenticator.admin_users = {{"hubadmin"}}
team = next(s for s in c.JupyterHub.services if s["name"] == "team")
team["command"] = {_cache_args('team["command"]', db_url)}
"""
    env = {"TEAM_ROOT": str(root), "TEAM_HOME": str(home), "TEAM_WARDEN_STATE": str(state),
           "TEAM_PORT": str(_free_port())}
    users = ["lead", "ann", "tom", "zoe", "hubadmin"]
    with db, _start_hub(base, TEAM_EXAMPLE, settings, env, users, "services/team") as the_hub:
        _wait(lambda: the_hub.server("lead", "GET", "api/me").status_code == 200, 240,
              "the team service to answer", interval=1)
        for path, subject, level in [("shared", "group:team", "read"), ("projects/x", "user:ann", "read-write")]:
            r = the_hub.server("lead", "POST", "api/warden/grants",
                               json={"path": path, "subject": subject, "level": level})
            assert r.status_code == 201, r.text
        yield the_hub


def test_a_team_server_run_as_a_hub_service_gives_members_only_their_grants(team):
    assert _names(team.server("ann", "GET", "api/contents")) == {"shared", "projects"}
    assert _names(team.server("tom", "GET", "api/contents")) == {"shared"}
    assert _read(team, "ann", "projects/x/notes.md").status_code == 200
    assert _read(team, "tom", "projects/x/notes.md").status_code == 404
    assert _read(team, "tom", "shared/notes.md").json()["content"] == "for the whole team"
    # zoe is on the hub but not in the team: the hub's access scopes keep her out.
    assert team.server("zoe", "GET", "api/contents").status_code == 403
    # The hub's admin may reach every service; here only what is granted (nothing).
    admin = team.server("hubadmin", "GET", "api/contents")
    assert admin.status_code == 200 and _names(admin) == set()
