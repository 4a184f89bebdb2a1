"""The collaboration guard against real Y clients (pycrdt over raw websockets) on a real server.

alice writes course/notes.txt, bob and eve only read it, carol has nothing;
each attack is checked on the server's document, the other clients and the disk.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
import time

import pytest
from pycrdt import Doc, Text, create_sync_message, create_update_message, handle_sync_message
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

from jupyter_ydoc import YNotebook
from pycrdt import Map

from conftest import Browser, auth
from test_kernel_guard import connect, start_kernel  # noqa: F401  (fixture)
from jupyter_warden.enforce.rtc import _chunk, _Reader, _uint

PATH = "course/notes.txt"
TEXT = {"format": "text", "type": "file"}


@pytest.fixture
def server_extensions():
    return {"jupyter_warden": True, "jupyterlab": True,
            "jupyter_server_fileid": True, "jupyter_server_ydoc": True}


@pytest.fixture
def extra_server_config(tmp_path):
    # The Y store keeps every document's history: outside the served root (and the cwd).
    return {"YDocExtension": {"document_save_delay": 0.1, "document_cleanup_delay": 0.5},
            "SQLiteYStore": {"db_path": str(tmp_path / "ystore.db")}}


@pytest.fixture
def people(warden, make_user, jp_root_dir):
    (jp_root_dir / "course").mkdir()
    (jp_root_dir / PATH).write_text("hello")
    tokens = {name: make_user(name) for name in ("alice", "bob", "carol", "eve")}
    tokens["root"] = make_user("root", admin=True)
    warden.policy.grant("course", "user:alice", "read-write")
    warden.policy.grant("course", "user:bob", "read")
    warden.policy.grant("course", "user:eve", "read")
    return tokens


def ydoc_server(jp_serverapp):
    apps = jp_serverapp.extension_manager.extension_apps["jupyter_server_ydoc"]
    return next(iter(apps)).ywebsocket_server


async def session(jp_fetch, token=None, path=PATH, headers=None, body=None):
    response = await jp_fetch(
        "api", "collaboration", "session", path, method="PUT", raise_error=False,
        headers=headers or auth(token), body=json.dumps(body or {"format": "text", "type": "file"}),
    )
    return response.code, (json.loads(response.body) if response.body else None)


async def collaboration_response(jp_fetch, method, *parts, token, params=None, body=None):
    """One request to jupyter-collaboration's REST side (api/collaboration/...), as ``token``.

    ``body``: an object, sent as JSON, or text sent as it is."""
    if body is not None and not isinstance(body, str):
        body = json.dumps(body)
    return await jp_fetch("api", "collaboration", *parts, method=method, params=params,
                          headers=auth(token), raise_error=False, body=body, allow_nonstandard_methods=True)


async def collaboration(jp_fetch, method, *parts, token, params=None, body=None):
    """The same: (status, the JSON answer or None)."""
    response = await collaboration_response(jp_fetch, method, *parts, token=token, params=params, body=body)
    return response.code, (json.loads(response.body) if response.body else None)


class YClient:
    """A Y client: answers the server's sync, keeps a document, sends what it is told to."""

    def __init__(self, ws):
        self.ws, self.doc = ws, Doc()
        self.text = self.doc.get("source", type=Text)
        self.awareness: list[dict] = []
        self.raw: list[dict] = []
        self.received: list[bytes] = []  # every message from the server, as it came
        self.task = asyncio.create_task(self._pump())

    async def _pump(self):
        while (message := await self.ws.read_message()) is not None:
            self.received.append(message)
            if message[0] == 0:
                reply = handle_sync_message(message[1:], self.doc)
                if reply is not None:
                    await self.ws.write_message(reply, binary=True)
            elif message[0] == 1:
                self.awareness.append(message)
            elif message[0] == 2:
                reader = _Reader(message)
                reader.uint()
                self.raw.append(json.loads(reader.string()))

    async def start(self):
        await self.ws.write_message(create_sync_message(self.doc), binary=True)
        return self

    async def change(self, change):
        """Any local change to the document, sent as SYNC_UPDATE (as JupyterLab does)."""
        updates = []
        subscription = self.doc.observe(lambda event: updates.append(event.update))
        change()
        self.doc.unobserve(subscription)
        for update in updates:
            await self.ws.write_message(create_update_message(update), binary=True)
        return updates

    async def edit(self, change):
        """A local change, sent as SYNC_UPDATE (as JupyterLab does)."""
        updates = []
        subscription = self.doc.observe(lambda event: updates.append(event.update))
        change(self.text)
        self.doc.unobserve(subscription)
        for update in updates:
            await self.ws.write_message(create_update_message(update), binary=True)
        return updates

    async def send(self, message: bytes):
        await self.ws.write_message(message, binary=True)

    def access(self) -> list[bool]:
        """The server's access notices so far: writable or not, in order."""
        return [m["writable"] for m in self.raw if m.get("type") == "warden:access"]

    async def closed(self, timeout=3.0):
        await asyncio.wait_for(self.task, timeout)
        return self.ws.close_code, self.ws.close_reason


def awareness_message(client_id: int, clock: int, state) -> bytes:
    entry = _uint(client_id) + _uint(clock) + _chunk(json.dumps(state).encode())
    return _uint(1) + _chunk(_uint(1) + entry)


def awareness_states(message: bytes) -> list:
    outer = _Reader(message)
    outer.uint()
    reader = _Reader(outer.bytes())
    return [(reader.uint(), reader.uint(), json.loads(reader.string())) for _ in range(reader.uint())]


@pytest.fixture
def room(jp_fetch, jp_http_port, jp_base_url, people):
    """Open a document websocket as someone (a token, or a browser's cookies)."""
    clients = []

    async def open_(who, path=PATH, room_id=None, start=True, kind=("text", "file")):
        headers = who if isinstance(who, dict) else auth(people[who])
        if room_id is None:
            code, data = await session(jp_fetch, headers=headers, path=path,
                                       body={"format": kind[0], "type": kind[1]})
            assert code in (200, 201), data
            room_id = f"{kind[0]}:{kind[1]}:{data['fileId']}"
            sid = data["sessionId"]
        else:
            sid = ""
        url = f"ws://127.0.0.1:{jp_http_port}{jp_base_url}api/collaboration/room/{room_id}?sessionId={sid}"
        ws = await websocket_connect(HTTPRequest(url, headers=headers))
        client = YClient(ws)
        client.room_id = room_id
        clients.append(client)
        return await client.start() if start else client

    yield open_
    for client in clients:
        client.ws.close()
        client.task.cancel()


async def until(predicate, timeout=3.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.02)


def drops(warden):
    return [r for r in warden.audit.tail(500) if r.action == "document.message" and r.outcome == "deny"]


async def test_a_writers_edit_reaches_every_reader_and_the_disk(room, jp_root_dir, jp_serverapp):
    alice = await room("alice")
    await until(lambda: str(alice.text) == "hello")
    readers = [await room(name) for name in ["bob", "eve"] * 10]  # 20 read-only clients
    await until(lambda: all(str(r.text) == "hello" for r in readers))
    await alice.edit(lambda text: text.insert(5, " world"))
    await until(lambda: all(str(r.text) == "hello world" for r in readers))
    await until(lambda: (jp_root_dir / PATH).read_text() == "hello world")


async def test_a_readers_changes_and_saves_are_dropped(room, warden, jp_root_dir, jp_serverapp):
    alice = await room("alice")
    bob = await room("bob")
    eve = await room("eve")
    await until(lambda: str(bob.text) == str(eve.text) == str(alice.text) == "hello")
    server_doc = ydoc_server(jp_serverapp).rooms[alice.room_id].ydoc

    # SYNC_UPDATE: the ordinary way in.
    updates = await bob.edit(lambda text: text.insert(0, "BOB "))
    # SYNC_STEP2: the other way in, as the reply to the server's step 1.
    forged = Doc()
    forged.get("source", type=Text).insert(0, "STEP2 ")
    await bob.send(bytes([0, 1]) + _chunk(forged.get_update()))
    await bob.send(bytes([0, 1]) + _chunk(updates[0]))
    # RAW save: answered as failed, nothing saved.
    await bob.send(_uint(2) + _chunk(b"save") + _uint(7))
    await until(lambda: any(r.get("type") == "save" for r in bob.raw))
    assert {"type": "save", "responseTo": 7, "status": "failed"} in bob.raw
    # Junk: an unknown message type, a truncated one, a text frame.
    await bob.send(bytes([9, 0, 0]))
    await bob.send(bytes([1, 200]))
    await bob.ws.write_message("not binary")

    # A writer's change after all that still arrives, so everything before was processed.
    await alice.edit(lambda text: text.insert(5, "!"))
    await until(lambda: str(eve.text) == "hello!")
    await asyncio.sleep(0.4)  # past the save delay
    assert str(server_doc.get("source", type=Text)) == "hello!"
    assert str(alice.text) == str(eve.text) == "hello!"
    assert (jp_root_dir / PATH).read_text() == "hello!"
    records = drops(warden)
    assert records and all(r.actor == "bob" and r.path == PATH for r in records)
    assert "may not write" in records[0].reason
    connects = [r for r in warden.audit.tail(500) if r.action == "document.connect" and r.actor == "bob"]
    assert connects and "read-only" in connects[0].reason


async def test_no_read_no_room(room, people, warden, jp_serverapp, jp_fetch):
    alice = await room("alice")
    server = ydoc_server(jp_serverapp)
    rooms_before = set(server.rooms)
    for attempt in (
        dict(who="carol", room_id=alice.room_id),  # the room of a file carol may not read
        dict(who="bob", room_id="text:file:no-such-id"),
        dict(who="bob", room_id="JupyterLab:globalAwareness"),  # everyone's open documents
        dict(who="bob", room_id="some-transient-room"),
    ):
        with pytest.raises(HTTPClientError) as e:
            await room(**attempt)
        assert e.value.code == 404, attempt
    assert set(server.rooms) == rooms_before  # nothing made, nothing loaded
    code, _ = await session(jp_fetch, people["carol"])
    assert code == 404
    # An admin may use the awareness room.
    await room("root", room_id="JupyterLab:globalAwareness")


async def test_session_timeline_undo_and_fork(room, people, jp_fetch, jp_root_dir, jp_serverapp):
    # A reader opens an existing file; nobody opens (or creates) a missing one.
    assert (await session(jp_fetch, people["bob"]))[0] in (200, 201)
    for who in ("bob", "alice"):
        code, _ = await session(jp_fetch, people[who], path="course/new.txt")
        assert code == 404
    assert not (jp_root_dir / "course" / "new.txt").exists()
    assert (await session(jp_fetch, people["bob"], body={"nonsense": 1}))[0] == 400

    alice = await room("alice")
    await until(lambda: str(alice.text) == "hello")

    call = functools.partial(collaboration, jp_fetch)

    # The timeline is a read: bob may see the history.
    code, timeline = await call("GET", "timeline", PATH, token=people["bob"],
                                params={"format": "text", "type": "file"})
    assert code == 200, timeline
    code, _ = await call("GET", "timeline", PATH, token=people["carol"], params={"format": "text", "type": "file"})
    assert code == 404
    # Undo and redo need write.
    params = {"action": "undo", "steps": "1", "forkRoom": timeline["forkRoom"]}
    assert (await call("PUT", "undo_redo", alice.room_id, token=people["bob"], params=params))[0] == 403
    assert (await call("PUT", "undo_redo", alice.room_id, token=people["alice"], params=params))[0] == 200
    other = {**params, "forkRoom": "not-this-rooms-timeline"}
    assert (await call("PUT", "undo_redo", alice.room_id, token=people["alice"], params=other))[0] == 404

    # Forking and merging need write on the root document.
    assert (await call("PUT", "fork", alice.room_id, token=people["bob"], body={}))[0] == 403
    code, fork = await call("PUT", "fork", alice.room_id, token=people["alice"], body={"title": "t"})
    assert code == 201
    fork_id = fork["fork_roomid"]
    assert (await call("GET", "fork", alice.room_id, token=people["bob"]))[0] == 200
    # bob follows the fork read-only; his change to it is dropped, so a merge can't carry it.
    bob_fork = await room("bob", room_id=fork_id)
    await until(lambda: str(bob_fork.text) == "hello")
    await bob_fork.edit(lambda text: text.insert(0, "BOB "))
    assert (await call("DELETE", "fork", fork_id, token=people["bob"], params={"merge": "true"}))[0] == 403
    assert (await call("DELETE", "fork", fork_id, token=people["alice"], params={"merge": "true"}))[0] == 200
    await asyncio.sleep(0.4)
    assert str(alice.text) == "hello"
    assert (jp_root_dir / PATH).read_text() == "hello"


async def test_without_read_no_timeline_undo_or_fork_of_the_room(room, people, jp_fetch, jp_root_dir,
                                                                   jp_serverapp):
    """carol, who may not read the file, learns nothing and changes nothing through a room's REST side (G1, G2)."""
    alice = await room("alice")
    await until(lambda: str(alice.text) == "hello")
    server = ydoc_server(jp_serverapp)
    rooms_before = set(server.rooms)

    async def call(method, *parts, params=None, body=None):
        response = await jp_fetch("api", "collaboration", *parts, method=method, params=params,
                                  headers=auth(people["carol"]), raise_error=False,
                                  body=None if body is None else json.dumps(body), allow_nonstandard_methods=True)
        return response.code, response.body

    attempts = [
        ("GET", ("fork", alice.room_id), None, None),
        ("PUT", ("fork", alice.room_id), None, {"title": "t", "synchronize": True}),
        ("PUT", ("undo_redo", alice.room_id), {"action": "undo", "steps": "1", "forkRoom": "x"}, None),
        ("GET", ("timeline", PATH), {"format": "text", "type": "file"}, None),
    ]
    for method, parts, params, body in attempts:
        code, answer = await call(method, *parts, params=params, body=body)
        assert code in (403, 404), (method, parts, code)
        assert b"hello" not in answer, (method, parts)
    assert set(server.rooms) == rooms_before  # no fork made
    await asyncio.sleep(0.3)
    assert (jp_root_dir / PATH).read_text() == "hello" and str(alice.text) == "hello"


@pytest.mark.parametrize("taken", ["revoked", "expired", "write revoked"])
async def test_a_revoke_holds_on_timeline_undo_and_forks_within_a_second(taken, room, people, warden, jp_fetch,
                                                                         jp_root_dir):
    """G7: alice has the room, its timeline and a fork of it open (bob follows the fork);
    her grant goes (revoked, its time window closes, or only write is taken). At once her
    timeline, undo, fork and merge requests are refused; within a second her fork and
    timeline websockets are closed (or turned read-only); nothing of hers reaches the file."""
    call = functools.partial(collaboration, jp_fetch, token=people["alice"])
    if taken == "expired":
        warden.policy.revoke("course", "user:alice")
        ends = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=3)
        warden.policy.grant(PATH, "user:alice", "read-write", not_after=ends)
    alice = await room("alice")
    bob = await room("bob")
    await until(lambda: str(alice.text) == str(bob.text) == "hello")
    code, timeline = await call("GET", "timeline", PATH, params=TEXT)
    assert code == 200, timeline
    code, fork = await call("PUT", "fork", alice.room_id, body={"title": "draft"})
    assert code == 201, fork
    fork_id = fork["fork_roomid"]
    alice_fork = await room("alice", room_id=fork_id)
    alice_history = await room("alice", room_id=timeline["forkRoom"])  # the timeline's own fork
    bob_fork = await room("bob", room_id=fork_id)
    await until(lambda: str(alice_fork.text) == str(bob_fork.text) == "hello")
    await alice_fork.edit(lambda text: text.insert(0, "DRAFT "))
    await until(lambda: str(bob_fork.text) == "DRAFT hello")
    await until(lambda: alice_fork.access() == alice_history.access() == [True])

    if taken == "expired":
        left = (ends - dt.datetime.now(dt.timezone.utc)).total_seconds()
        assert left > 0, "the set-up outlasted the grant's window"
        await asyncio.sleep(left + 0.02)
    started = time.monotonic()
    if taken == "revoked":
        warden.policy.revoke("course", "user:alice")
    elif taken == "write revoked":
        warden.policy.grant("course", "user:alice", "read")

    # At once: without read everything is 404 (G1); with read left, the writes are 403.
    reads = 200 if taken == "write revoked" else 404
    writes = 403 if taken == "write revoked" else 404
    undo = {"action": "undo", "steps": "1", "forkRoom": timeline["forkRoom"]}
    for method, parts, params, body, status in [
        ("GET", ("timeline", PATH), TEXT, None, reads),
        ("PUT", ("undo_redo", alice.room_id), undo, None, writes),
        ("GET", ("fork", alice.room_id), None, None, reads),
        ("PUT", ("fork", alice.room_id), None, {"title": "another"}, writes),
        ("DELETE", ("fork", fork_id), {"merge": "true"}, None, writes),
    ]:
        code, answer = await call(method, *parts, params=params, body=body)
        assert code == status, (method, parts, code, answer)
    # Within a second: her websockets of the room, its fork and its timeline.
    if taken == "write revoked":
        await until(lambda: [c.access() for c in (alice, alice_fork, alice_history)] == [[True, False]] * 3,
                    timeout=1.5)
        assert time.monotonic() - started < 1.0
        await alice_fork.edit(lambda text: text.insert(0, "LATE "))  # read-only now: dropped
    else:
        for client in (alice_fork, alice_history, alice):
            code, reason = await client.closed(timeout=1.5)
            assert code == 1008 and "read access" in reason, (code, reason)
        assert time.monotonic() - started < 1.0
    assert not bob_fork.task.done() and not bob.task.done()  # bob still reads both
    # Nothing of hers reached the file: the merge was refused, the fork is still there.
    await asyncio.sleep(0.4)  # past the save delay
    assert str(bob_fork.text) == "DRAFT hello"
    assert str(bob.text) == "hello"
    assert (jp_root_dir / PATH).read_text() == "hello"
    code, forks = await collaboration(jp_fetch, "GET", "fork", alice.room_id, token=people["bob"])
    assert code == 200 and list(forks) == [fork_id]
    denied = [r for r in warden.audit.query(actor="alice") if r.outcome == "deny" and r.action.startswith("contents.")]
    assert [r.details["request"] for r in denied] == (
        ["collaboration undo", "collaboration fork", "collaboration fork merge"] if taken == "write revoked" else
        ["collaboration timeline", "collaboration undo", "collaboration fork list", "collaboration fork",
         "collaboration fork merge"])


async def test_every_collaboration_request_is_audited_allowed_and_denied(room, people, warden, jp_fetch):
    """G8: each REST call of the collaboration API, allowed once and refused once, leaves its record
    (who, what, the outcome, which file, which request) before its answer; the chain verifies."""
    alice = await room("alice")
    await until(lambda: str(alice.text) == "hello")

    async def audited(who, method, *parts, params=None, body=None):
        before = warden.audit.tail(1)[0].seq
        code, answer = await collaboration(jp_fetch, method, *parts, token=people[who], params=params, body=body)
        records = [r for r in warden.audit.query(actor=who) if r.seq > before]
        assert all(r.reason and r.client for r in records), records
        assert all(r.grant_id is not None for r in records if r.outcome == "allow"), records
        return code, answer, [(r.action, r.outcome, r.path, (r.details or {}).get("request")) for r in records]

    def one(action, outcome, request, path=PATH):
        return [(action, outcome, path, request)]

    code, _, records = await audited("alice", "PUT", "session", PATH, body=TEXT)
    assert code in (200, 201) and records == one("contents.read", "allow", "collaboration session")
    code, _, records = await audited("carol", "PUT", "session", PATH, body=TEXT)
    assert code == 404 and records == one("contents.read", "deny", "collaboration session")
    # Allowed by the policy, refused for another reason: both are recorded.
    code, _, records = await audited("alice", "PUT", "session", "course/new.txt", body=TEXT)
    assert code == 404 and records == [("contents.read", "allow", "course/new.txt", "collaboration session"),
                                       ("request.denied", "deny", "course/new.txt", None)]
    for bad in ({"format": "text"}, ["text", "file"], "{not json"):
        code, _, records = await audited("alice", "PUT", "session", PATH, body=bad)
        assert code == 400 and records == [("contents.read", "allow", PATH, "collaboration session"),
                                           ("request.denied", "deny", PATH, None)], bad

    code, timeline, records = await audited("alice", "GET", "timeline", PATH, params=TEXT)
    assert code == 200 and records == one("contents.read", "allow", "collaboration timeline")
    code, _, records = await audited("carol", "GET", "timeline", PATH, params=TEXT)
    assert code == 404 and records == one("contents.read", "deny", "collaboration timeline")

    undo = {"action": "undo", "steps": "1", "forkRoom": timeline["forkRoom"]}
    code, _, records = await audited("alice", "PUT", "undo_redo", alice.room_id, params=undo)
    assert code == 200 and records == one("contents.write", "allow", "collaboration undo")
    code, _, records = await audited("bob", "PUT", "undo_redo", alice.room_id, params={**undo, "action": "redo"})
    assert code == 403 and records == one("contents.write", "deny", "collaboration redo")
    code, _, records = await audited("alice", "PUT", "undo_redo", alice.room_id, params={**undo, "forkRoom": "x"})
    assert code == 404 and records == one("request.denied", "deny", None)

    code, _, records = await audited("alice", "GET", "fork", alice.room_id)
    assert code == 200 and records == one("contents.read", "allow", "collaboration fork list")
    code, _, records = await audited("carol", "GET", "fork", alice.room_id)
    assert code == 404 and records == one("contents.read", "deny", "collaboration fork list")
    code, fork, records = await audited("alice", "PUT", "fork", alice.room_id, body={"title": "t"})
    assert code == 201 and records == one("contents.write", "allow", "collaboration fork")
    code, _, records = await audited("bob", "PUT", "fork", alice.room_id, body={"title": "t"})
    assert code == 403 and records == one("contents.write", "deny", "collaboration fork")
    fork_id = fork["fork_roomid"]
    code, _, records = await audited("bob", "DELETE", "fork", fork_id, params={"merge": "true"})
    assert code == 403 and records == one("contents.write", "deny", "collaboration fork merge")
    code, _, records = await audited("alice", "DELETE", "fork", fork_id, params={"merge": "true"})
    assert code == 200 and records == one("contents.write", "allow", "collaboration fork merge")
    code, _, records = await audited("alice", "DELETE", "fork", fork_id)  # gone now
    assert code == 404 and records == one("request.denied", "deny", None, path=None)
    code, _, records = await audited("carol", "PUT", "fork", "text:file:no-such-id", body={})
    assert code == 404 and records == one("request.denied", "deny", None, path=None)

    merge = next(r for r in warden.audit.query(actor="alice") if (r.details or {}).get("request") ==
                 "collaboration fork merge")
    assert merge.details["fork"] == fork_id
    assert warden.audit.verify().ok


async def test_a_store_that_stops_answering_closes_open_document_websockets(room, warden, jp_root_dir):
    """G9 on an open connection: with the policy store gone, access can't be re-checked, so it ends."""
    import os

    if warden.store.engine.dialect.name != "sqlite":
        pytest.skip("breaks the SQLite file; tests/test_store.py covers PostgreSQL going away for requests")
    bob = await room("bob")
    await until(lambda: str(bob.text) == "hello")
    db_file = warden.store.engine.url.database
    warden.store.engine.dispose()
    os.rename(db_file, db_file + ".moved")
    os.mkdir(db_file)  # a folder where the database was: can't be opened
    try:
        await asyncio.wait_for(bob.task, 10)
    finally:
        os.rmdir(db_file)
        os.rename(db_file + ".moved", db_file)
    assert bob.ws.close_code == 1008 and "can't be checked" in bob.ws.close_reason
    assert (jp_root_dir / PATH).read_text() == "hello"
    assert warden.audit.verify().ok


async def test_a_revoked_reader_is_disconnected_within_a_second(room, warden):
    bob = await room("bob")
    await until(lambda: str(bob.text) == "hello")
    started = time.monotonic()
    warden.policy.revoke("course", "user:bob")
    code, reason = await bob.closed(timeout=1.5)
    assert time.monotonic() - started < 1.0
    assert code == 1008 and "read access" in reason
    record = next(r for r in warden.audit.tail(50) if r.action == "document.disconnect")
    assert record.actor == "bob" and record.path == PATH


async def test_a_renamed_document_is_followed_to_where_the_reader_may_not_read(room, warden, people,
                                                                             jp_fetch, jp_root_dir):
    (jp_root_dir / "private").mkdir()
    warden.policy.grant("private", "user:alice", "read-write")
    bob = await room("bob")
    await until(lambda: str(bob.text) == "hello")
    # Within the folder bob may read: followed, still open.
    moved = await jp_fetch("api", "contents", PATH, method="PATCH", headers=auth(people["alice"]),
                           body=json.dumps({"path": "course/renamed.txt"}))
    assert moved.code == 200
    await asyncio.sleep(1.0)
    assert not bob.task.done()
    # Into a folder bob may not read: closed, naming where it went.
    moved = await jp_fetch("api", "contents", "course/renamed.txt", method="PATCH",
                           headers=auth(people["alice"]), body=json.dumps({"path": "private/renamed.txt"}))
    assert moved.code == 200
    code, reason = await bob.closed(timeout=2.0)
    assert code == 1008 and "private/renamed.txt" in reason


async def test_an_ended_sign_in_closes_every_document_connection(room, warden, people, jp_root_dir):
    """Sign-ins are re-checked one at a time (enforce/rtc.py _IdentityQueue); all 30 still close in time."""
    bobs = [await room("bob") for _ in range(15)]
    eves = [await room("eve") for _ in range(15)]
    await until(lambda: all(str(c.text) == "hello" for c in bobs + eves))
    started = time.monotonic()
    warden.accounts.revoke_token("bob", warden.accounts.list_tokens("bob")[0].id)
    for bob in bobs:
        code, reason = await bob.closed(timeout=2.0)
        assert code == 1008 and "sign-in ended" in reason
    assert time.monotonic() - started < 1.5  # kernel_identity_recheck_interval (0.75 s) and the queue
    await asyncio.sleep(1.0)
    assert not any(e.task.done() for e in eves)  # eve's sign-in holds


async def test_a_time_window_opens_and_closes_write_mid_session(room, warden, jp_serverapp):
    alice = await room("alice")
    bob = await room("bob")
    await until(lambda: str(bob.text) == "hello")
    now = dt.datetime.now(dt.timezone.utc)
    warden.policy.grant(PATH, "user:bob", "read-write",
                        not_before=now + dt.timedelta(seconds=1), not_after=now + dt.timedelta(seconds=2.5))
    await bob.edit(lambda text: text.insert(0, "A"))  # before the window: dropped
    await asyncio.sleep(0.6)
    assert str(alice.text) == "hello"
    await asyncio.sleep(1.0)  # the window opened (plus the recheck)
    await bob.edit(lambda text: text.insert(len(text), "B"))
    # On gaining write the server asks bob's client for what it lacks: A comes along with B.
    await until(lambda: str(alice.text) == "AhelloB")
    await asyncio.sleep(1.6)  # the window closed
    await bob.edit(lambda text: text.insert(len(text), "C"))
    await alice.edit(lambda text: text.insert(0, "-"))
    await until(lambda: str(bob.text).startswith("-"))
    assert str(alice.text) == "-AhelloB"  # C (after the window) never arrived
    modes = [r.outcome for r in warden.audit.tail(200) if r.action == "document.access" and r.actor == "bob"]
    assert modes == ["allow", "deny"]


async def test_awareness_carries_the_servers_identity(room, warden):
    alice = await room("alice")
    bob = await room("bob")
    await until(lambda: str(bob.text) == "hello")
    client = bob.doc.client_id
    # Forged: bob says he is alice. Refused, never seen by alice.
    await bob.send(awareness_message(client, 1, {"user": {"username": "alice", "name": "alice"}}))
    # Another client's id: refused too.
    await bob.send(awareness_message(alice.doc.client_id, 5, {"user": {"username": "bob"}, "cursor": 1}))
    # Honest, with a made-up avatar and display details: the server's identity replaces them.
    await bob.send(awareness_message(client, 2, {"user": {"username": "bob", "avatar_url": "http://x/"},
                                                 "cursor": 3}))
    await until(lambda: alice.awareness)
    states = [s for message in alice.awareness for s in awareness_states(message)]
    assert [(c, state["user"]["username"]) for c, _, state in states] == [(client, "bob")]
    assert states[0][2]["user"]["avatar_url"] is None and states[0][2]["cursor"] == 3
    assert any("another user" in r.reason for r in drops(warden))


async def test_a_link_follower_sees_live_edits_and_cannot_write(room, warden, jp_fetch, jp_root_dir):
    _info, token = warden.policy.create_link(PATH, "read")
    guest = Browser(jp_fetch)
    opened = await guest.request("warden", "link", token)
    assert opened.code in (200, 302), opened.code
    await guest.request("lab")  # (a page: it sets the _xsrf cookie a browser echoes on PUT)
    assert "_xsrf" in guest.cookies, guest.cookies
    cookies = {"Authorization": "", "Cookie": "; ".join(f"{k}={v}" for k, v in guest.cookies.items()),
               "X-XSRFToken": guest.cookies.get("_xsrf", "")}
    alice = await room("alice")
    follower = await room(cookies)
    await until(lambda: str(follower.text) == "hello")
    await alice.edit(lambda text: text.insert(5, " all"))
    await until(lambda: str(follower.text) == "hello all")
    await follower.edit(lambda text: text.insert(0, "GUEST "))
    await follower.send(awareness_message(follower.doc.client_id, 1, {"cursor": 0}))
    await until(lambda: alice.awareness)
    await alice.edit(lambda text: text.insert(0, ">"))
    await until(lambda: str(follower.text).endswith("hello all") and ">" in str(follower.text))
    assert str(alice.text) == ">hello all"
    await asyncio.sleep(0.4)
    assert (jp_root_dir / PATH).read_text() == ">hello all"
    (_, _, state), = awareness_states(alice.awareness[-1])
    assert state["user"]["display_name"] == "Guest (shared link)"
    assert follower.access() == [False]  # told it is read-only
    # Revoking the link ends the follower's connection within a second.
    started = time.monotonic()
    warden.policy.revoke_link(_info.id)
    code, reason = await follower.closed(timeout=2.0)
    assert time.monotonic() - started < 1.5
    assert code == 1008


class TestDocumentHistoryPlacement:
    @pytest.fixture
    def extra_server_config(self, jp_root_dir):
        # An operator pointing the Y store into the served root, as the
        # default (the working folder) often does.
        return {"SQLiteYStore": {"db_path": str(jp_root_dir / "ystore.db")}}

    async def test_the_y_store_is_moved_into_the_state_folder(self, jp_serverapp, warden, warden_state):
        [app] = jp_serverapp.extension_manager.extension_apps["jupyter_server_ydoc"]
        assert app.config.SQLiteYStore.db_path == str(warden_state.resolve() / "ystore.db")


async def test_the_client_is_told_when_it_turns_read_only_or_read_write(room, warden):
    alice = await room("alice")
    bob = await room("bob")
    await until(lambda: alice.access() and bob.access())
    assert alice.access() == [True] and bob.access() == [False]
    notice = next(m for m in bob.raw if m["type"] == "warden:access")
    assert notice["path"] == PATH and "read-only" in notice["reason"]
    started = time.monotonic()
    warden.policy.grant(PATH, "user:bob", "read-write")
    await until(lambda: bob.access() == [False, True], timeout=1.5)
    assert time.monotonic() - started < 1.0
    warden.policy.revoke(PATH, "user:bob")
    await until(lambda: bob.access() == [False, True, False], timeout=1.5)
    await asyncio.sleep(0.4)
    assert alice.access() == [True]  # nothing changed for alice: no notice


async def test_oversized_messages_are_dropped_audited_and_end_the_connection(room, warden, jp_root_dir):
    warden.document_max_message_bytes = 2048
    alice = await room("alice")
    bob = await room("bob")
    await until(lambda: str(alice.text) == str(bob.text) == "hello")
    big_state = {"user": {"username": "bob"}, "note": "x" * 3000}
    # A reader's oversized messages: dropped with a notice, the third closes the connection.
    for clock in (1, 2):
        await bob.send(awareness_message(bob.doc.client_id, clock, big_state))
    await until(lambda: len([m for m in bob.raw if m["type"] == "warden:refused"]) == 2)
    refused = [m for m in bob.raw if m["type"] == "warden:refused"][0]
    assert refused["limit"] == 2048 and refused["size"] > 2048 and "over this server's limit" in refused["reason"]
    assert not alice.awareness  # never passed on
    await bob.send(awareness_message(bob.doc.client_id, 3, big_state))
    code, reason = await bob.closed()
    assert code == 1009 and "3 messages over the limit" in reason
    # A writer's oversized change: closed at once, nothing applied or saved.
    await alice.edit(lambda text: text.insert(5, "y" * 3000))
    code, reason = await alice.closed()
    assert code == 1009 and "a change of" in reason
    # A frame over 4x the limit is not even read.
    eve = await room("eve")
    await until(lambda: str(eve.text) == "hello")
    await eve.send(bytes([1]) + b"z" * (4 * 2048 + 10))
    code, _ = await eve.closed()
    assert code == 1009
    watcher = await room("bob")
    await until(lambda: str(watcher.text) == "hello")
    await asyncio.sleep(0.3)
    assert (jp_root_dir / PATH).read_text() == "hello"
    records = [r for r in warden.audit.tail(200) if r.action in ("document.message", "document.disconnect")]
    too_big = [r for r in records if r.action == "document.message" and "over this server's limit" in r.reason]
    assert {r.actor for r in too_big} == {"alice", "bob"}
    assert len([r for r in too_big if r.actor == "bob"]) <= 2  # rate-limited: one a second
    disconnects = {r.actor: r.reason for r in records if r.action == "document.disconnect"}
    assert set(disconnects) == {"alice", "bob", "eve"}
    assert "a frame over 8192 bytes" in disconnects["eve"]


NOTEBOOK_PATH = "course/nb.ipynb"
NB_ROOM = ("json", "notebook")


async def test_a_read_run_users_outputs_stay_in_their_own_view(room, people, warden, jp_fetch, jp_root_dir,
                                                               connect, jp_serverapp):
    """bob may run the notebook, not write it: his kernel's output, added to his Y
    document as JupyterLab adds it, reaches neither the room, nor alice, nor the disk."""
    notebook = {"cells": [{"cell_type": "code", "id": "c1", "metadata": {}, "source": "print(6 * 7)",
                           "outputs": [], "execution_count": None}],
                "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (jp_root_dir / NOTEBOOK_PATH).write_text(json.dumps(notebook))
    warden.policy.grant(NOTEBOOK_PATH, "user:bob", "read-run")
    # bob runs the cell in his own kernel (sandboxed where the host allows it).
    kernel = await start_kernel(jp_fetch, people["bob"], path=NOTEBOOK_PATH)
    reply, outputs = await (await connect(kernel, people["bob"])).execute("print(6 * 7)")
    assert reply["content"]["status"] == "ok"
    stream = next(m["content"] for m in outputs if m["msg_type"] == "stream")
    assert stream["text"] == "42\n"

    alice = await room("alice", path=NOTEBOOK_PATH, kind=NB_ROOM)
    bob = await room("bob", path=NOTEBOOK_PATH, kind=NB_ROOM)
    alice_nb, bob_nb = YNotebook(alice.doc), YNotebook(bob.doc)
    await until(lambda: alice_nb.cell_number == bob_nb.cell_number == 1)
    await until(lambda: bob.access() == [False])  # bob's client is told it is read-only

    def add_output():
        cell = bob_nb.ycells[0]
        cell["outputs"].append(Map({"output_type": "stream", "name": stream["name"], "text": stream["text"]}))
        cell["execution_count"] = reply["content"]["execution_count"]

    updates = await bob.change(add_output)
    assert updates  # a real Y update carrying the output
    # bob's own view has it: his client keeps what it applied locally.
    assert bob_nb.get_cell(0)["outputs"] == [{"output_type": "stream", "name": "stdout", "text": "42\n"}]
    # alice edits, so the room saves; the output never arrives anywhere.
    await alice.change(lambda: alice_nb.ycells[0]["source"].insert(0, "# run me\n"))
    await until(lambda: str(bob_nb.ycells[0]["source"]).startswith("# run me"))
    room_nb = YNotebook(ydoc_server(jp_serverapp).rooms[alice.room_id].ydoc)

    def saved_cell():
        try:
            cell = json.loads((jp_root_dir / NOTEBOOK_PATH).read_text())["cells"][0]
            return {**cell, "source": "".join(cell["source"])}
        except ValueError:
            return None  # caught mid-save

    await until(lambda: (saved_cell() or {}).get("source", "").startswith("# run me"))
    saved = saved_cell()
    assert saved["outputs"] == [] and saved["execution_count"] is None
    assert alice_nb.get_cell(0)["outputs"] == [] and room_nb.get_cell(0)["outputs"] == []
    assert bob_nb.get_cell(0)["outputs"]  # still in bob's own view
    record = [r for r in drops(warden) if r.actor == "bob"][0]
    assert record.path == NOTEBOOK_PATH and "may not write" in record.reason
