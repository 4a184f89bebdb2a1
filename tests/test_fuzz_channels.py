"""Property-based fuzzing (hypothesis) of contents paths, kernel websocket frames and Y-protocol messages.

One real server (``jupyter-warden serve``, sandboxed kernels, real-time
collaboration on) per module. Properties: never a 5xx and the server stays
up; nothing beyond the caller's capabilities (no unreadable content, no
write by a reader, no audit record in another's name); the audit chain
still verifies afterwards.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import threading
import time
import uuid
from urllib.parse import quote

import hypothesis
import pytest
import requests
from hypothesis import HealthCheck, Phase, strategies as st
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from jupyter_warden.audit.log import AuditLog, load_or_create_key
from jupyter_warden.store import Store
from conftest import fresh_database
from server_process import ServerProcess

EXAMPLES = int(os.environ.get("WARDEN_FUZZ_EXAMPLES", "40"))
SECRET = "the-private-answers-42"
NB = "course/lecture.ipynb"
NOTEBOOK = {"cells": [{"cell_type": "code", "id": "c1", "source": "print('hi')", "metadata": {},
                       "outputs": [], "execution_count": None}],
            "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
V1 = "v1.kernel.websocket.jupyter.org"

settings = hypothesis.settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=True,  # the same inputs on every run, so a failure can be replayed
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


class Loop:
    """An event loop in a thread, for websocket clients driven from synchronous hypothesis tests."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine, timeout=120):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    root = tmp / "root"
    (root / "course").mkdir(parents=True)
    (root / NB).write_text(json.dumps(NOTEBOOK))
    (root / "private").mkdir()
    (root / "private" / "answers.txt").write_text(SECRET)
    (root / "course" / "peek").symlink_to(root / "private")
    with fresh_database(tmp) as db_url:
        server = ServerProcess(tmp, db_url, root)
        server.add_admin("admin")
        server.tokens = {}
        for name, level in [("reader", "read"), ("runner", "read-run")]:
            server.cli("user", "add", name, "--password-stdin", stdin="long-enough-password\n")
            server.tokens[name] = server.cli("user", "token", name).stdout.split()[0]
            server.cli("grant", "course", "--to", f"user:{name}", "--level", level)
        server.loop = Loop()
        try:
            server.start()
            yield server
        finally:
            server.loop.close()
            server.stop()


def call(server, who, method, path, **kw):
    headers = {"Authorization": f"token {server.tokens[who]}"}
    return requests.request(method, f"http://127.0.0.1:{server.port}{path}", headers=headers, timeout=60, **kw)


def audit_since(server, seq: int):
    store = Store(server.db_url)
    try:
        audit = AuditLog(store, load_or_create_key(server.state))
        assert audit.verify().ok
        return [r for r in audit.tail(100000) if r.seq > seq]
    finally:
        store.dispose()


def last_seq(server) -> int:
    tail = audit_since(server, 0)
    return tail[-1].seq if tail else 0


def alive(server):
    assert call(server, "reader", "GET", "/api/warden/status").status_code == 200


# -- contents paths --------------------------------------------------------

components = st.one_of(
    st.sampled_from(["course", "private", "peek", "answers.txt", "lecture.ipynb", "..", ".", "", "%2e%2e",
                     "%2F", "..%2f", "~", ".ipynb_checkpoints", "state", "\\..\\", "%00"]),
    st.text(min_size=1, max_size=12),
)
paths = st.lists(components, min_size=1, max_size=5).map("/".join)
endpoints = st.sampled_from(["/api/contents/", "/files/", "/nbconvert/html/", "/api/contents/{}/checkpoints"])


def _url(template: str, path: str) -> str:
    quoted = quote(path, safe="/%")
    return template.format(quoted) if "{}" in template else template + quoted


def test_contents_paths_never_reach_what_the_reader_cant_read(server):
    @settings
    @hypothesis.given(path=paths, endpoint=endpoints)
    def run(path, endpoint):
        response = call(server, "reader", "GET", _url(endpoint, path))
        assert response.status_code < 500, (path, response.status_code, response.text[:300])
        assert SECRET not in response.text, path
        if response.status_code == 200 and endpoint == "/api/contents/":
            model = response.json()
            assert model["path"] == "" or model["path"] == "course" or model["path"].startswith("course/"), model["path"]
            if model["type"] == "directory":
                assert {e["name"] for e in model["content"]} <= {"course", "lecture.ipynb"}, model["content"]

    @settings
    @hypothesis.given(path=paths)
    def write(path):
        body = {"type": "file", "format": "text", "content": "overwritten"}
        response = call(server, "reader", "PUT", _url("/api/contents/", path), json=body)
        assert response.status_code < 500 and response.status_code not in (200, 201), (path, response.status_code)
        moved = call(server, "reader", "PATCH", _url("/api/contents/", NB), json={"path": path})
        assert moved.status_code < 500 and moved.status_code != 200, (path, moved.status_code)

    run()
    write()
    assert (server.root / "private" / "answers.txt").read_text() == SECRET
    assert json.loads((server.root / NB).read_text()) == NOTEBOOK
    alive(server)


# -- kernel websocket frames -----------------------------------------------

msg_types = st.sampled_from(["execute_request", "kernel_info_request", "complete_request", "inspect_request",
                             "history_request", "comm_open", "comm_msg", "input_reply", "interrupt_request",
                             "shutdown_request", "debug_request", "bogus_request", "", "execute_reply"])
channels = st.sampled_from(["shell", "control", "stdin", "iopub", "bogus", ""])
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                           max_leaves=10)


@st.composite
def kernel_frames(draw):
    """A frame a hostile client might send: garbage, or a message with forged or missing fields."""
    kind = draw(st.sampled_from(["bytes", "text", "message", "message"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200)), True
    if kind == "text":
        return draw(st.text(max_size=200)), False
    header = {"msg_id": uuid.uuid4().hex, "msg_type": draw(msg_types), "session": draw(st.text(max_size=10)),
              "username": draw(st.sampled_from(["", "admin", "reader", "runner"])), "version": "5.4"}
    for key in draw(st.lists(st.sampled_from(["msg_id", "msg_type", "session", "username"]), max_size=2)):
        header.pop(key, None)
    content = draw(st.one_of(json_values, st.just({"code": "open('/tmp/fuzz-ran','w').write('x')",
                                                     "silent": False})))
    message = {"header": draw(st.one_of(st.just(header), json_values)), "parent_header": draw(json_values),
               "metadata": {}, "content": content, "channel": draw(channels)}
    for key in draw(st.lists(st.sampled_from(list(message)), max_size=2)):
        message.pop(key, None)
    return json.dumps(message), False


async def _kernel_socket(server, who, kernel_id):
    url = f"ws://127.0.0.1:{server.port}/api/kernels/{kernel_id}/channels"
    headers = {"Authorization": f"token {server.tokens[who]}"}
    return await websocket_connect(HTTPRequest(url, headers=headers, connect_timeout=90, request_timeout=90))


async def _drain(ws, seconds=0.05):
    try:
        while await asyncio.wait_for(ws.read_message(), seconds) is not None:
            pass
        return False  # closed
    except asyncio.TimeoutError:
        return True


async def _execute(ws, code) -> str:
    msg_id = uuid.uuid4().hex
    header = {"msg_id": msg_id, "msg_type": "execute_request", "session": "s", "username": "", "version": "5.4"}
    await ws.write_message(json.dumps({"header": header, "parent_header": {}, "metadata": {}, "channel": "shell",
                                       "content": {"code": code, "silent": False, "store_history": False}}))
    out, replied, idle = "", False, False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (replied and idle):
        raw = await asyncio.wait_for(ws.read_message(), 60)
        assert raw is not None, "the socket closed"
        msg = json.loads(raw)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind = msg["header"]["msg_type"]
        if kind == "stream":
            out += msg["content"]["text"]
        replied = replied or kind == "execute_reply"
        idle = idle or (kind == "status" and msg["content"]["execution_state"] == "idle")
    if replied and idle:
        return out
    raise AssertionError("no execute_reply and idle")


@pytest.mark.timeout(900)
def test_kernel_frames_are_checked_and_the_kernel_keeps_its_one_user(server):
    made = call(server, "runner", "POST", "/api/sessions",
                json={"path": NB, "type": "notebook", "name": "", "kernel": {"name": "python3"}})
    assert made.status_code == 201, made.text
    kernel_id = made.json()["kernel"]["id"]
    loop = server.loop
    state = {"ws": loop.run(_kernel_socket(server, "runner", kernel_id))}
    # The owner's kernel works, then takes the fuzz.
    assert loop.run(_execute(state["ws"], "print(6 * 7)")) == "42\n"
    before = last_seq(server)

    @settings
    @hypothesis.given(frame=kernel_frames())
    def run(frame):
        data, binary = frame
        async def send():
            await state["ws"].write_message(data, binary=binary)
            if not await _drain(state["ws"]):
                state["ws"] = await _kernel_socket(server, "runner", kernel_id)
        try:
            loop.run(send())
        except Exception:  # the socket was closed under us: open a new one
            state["ws"] = loop.run(_kernel_socket(server, "runner", kernel_id))

    run()
    records = audit_since(server, before)  # and the chain verifies
    # Forged usernames and sessions notwithstanding, everything was done as the runner.
    assert {r.actor for r in records} <= {"runner"}, {r.actor for r in records}
    assert any(r.outcome == "deny" for r in records), "the fuzz was never refused anything"
    # The reader, who can't run, can't even connect.
    with pytest.raises(Exception):
        loop.run(_kernel_socket(server, "reader", kernel_id))
    alive(server)
    # Still the owner's kernel, working, unless the fuzz shut it down as its owner may.
    if call(server, "runner", "GET", f"/api/kernels/{kernel_id}").status_code == 200:
        ws = loop.run(_kernel_socket(server, "runner", kernel_id))
        assert loop.run(_execute(ws, "print(6 * 7)")) == "42\n"
        loop.loop.call_soon_threadsafe(ws.close)
    call(server, "runner", "DELETE", f"/api/kernels/{kernel_id}")


# -- Y-protocol messages ---------------------------------------------------


def _varuint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


@st.composite
def y_messages(draw):
    """A Y websocket message: garbage, a sync step or update with any payload, awareness, or a RAW save."""
    kind = draw(st.sampled_from(["garbage", "sync", "sync", "awareness", "raw", "truncated"]))
    if kind == "garbage":
        return draw(st.binary(max_size=100))
    payload = draw(st.binary(max_size=80))
    if kind == "sync":
        step = draw(st.sampled_from([0, 1, 2, 7]))
        return bytes([0, step]) + _varuint(len(payload)) + payload
    if kind == "awareness":
        return bytes([1]) + _varuint(len(payload)) + payload
    if kind == "raw":
        text = draw(st.sampled_from(['{"type": "save", "requestId": 1}', '{"type":"save"}', "save"]))
        return bytes([2]) + _varuint(len(text)) + text.encode()
    head = bytes([0, 2]) + _varuint(len(payload) + 50)
    return head + payload  # the length says more than there is


def _real_update() -> bytes:
    """A well-formed Y update that would rewrite the notebook's source, were it accepted."""
    from pycrdt import Doc, Map, Text

    doc = Doc()
    doc["meta"] = Map()
    doc["source"] = Text("import os; os.system('rm -rf /')")
    return bytes([0, 2]) + _varuint(len(doc.get_update())) + doc.get_update()


def test_y_messages_from_a_reader_change_nothing(server):
    made = call(server, "reader", "PUT", f"/api/collaboration/session/{NB}", json={"format": "json", "type": "notebook"})
    assert made.status_code in (200, 201), made.text
    room_id = f"json:notebook:{made.json()['fileId']}"
    url = f"ws://127.0.0.1:{server.port}/api/collaboration/room/{room_id}?sessionId={made.json()['sessionId']}"
    headers = {"Authorization": f"token {server.tokens['reader']}"}
    loop = server.loop

    async def connect():
        return await websocket_connect(HTTPRequest(url, headers=headers, connect_timeout=60, request_timeout=60))

    state = {"ws": loop.run(connect())}
    disk = hashlib.sha256((server.root / NB).read_bytes()).hexdigest()
    before = last_seq(server)

    @settings
    @hypothesis.given(message=st.one_of(y_messages(), st.just(_real_update())))
    def run(message):
        async def send():
            await state["ws"].write_message(message, binary=True)
            if not await _drain(state["ws"]):
                state["ws"] = await connect()
        try:
            loop.run(send())
        except Exception:
            state["ws"] = loop.run(connect())

    run()
    time.sleep(2.5)  # past the room's save delay, had anything been accepted
    assert hashlib.sha256((server.root / NB).read_bytes()).hexdigest() == disk
    records = [r for r in audit_since(server, before) if r.action.startswith("document.")]
    assert {r.actor for r in records} <= {"reader"}
    assert any(r.action == "document.message" and r.outcome == "deny" for r in records)
    loop.loop.call_soon_threadsafe(state["ws"].close)  # the socket belongs to the loop's thread
    alive(server)
