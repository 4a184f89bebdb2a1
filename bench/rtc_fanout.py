"""Benchmark: one writer's edits fanning out to 100 read-only clients, warden vs stock jupyter-collaboration.

Starts real servers on one root: **stock** (jupyter-collaboration without
the warden), **warden** (the guarded document websocket, as shipped) and
**warden-nagle** (the same, with ``--Warden.document_nodelay=False``, to
show what Nagle's algorithm costs Y updates). On each, one writer and 100
readers open the room of ``shared/bench.txt`` over raw websockets with
pycrdt Y documents, as JupyterLab does. The writer types: every
``--interval`` seconds one character (a Y update, SYNC_UPDATE) followed at
once by its cursor (an awareness update), as y-codemirror sends them.

For each keystroke it times, from the moment the update is written, its
arrival at every reader (the update's bytes seen on the reader's socket):
the arrival at all 100 readers (the slowest one) and at each reader, p50
and p99, and the cursor's arrival at all readers. Servers take turns in
blocks of 25 keystrokes. Target: warden / stock ≤ 1.0 on the arrival at
all readers. It measures; a missed target does not fail.

    python bench/rtc_fanout.py [--edits 300] [--readers 100] [--interval 0.05]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import tempfile
import time
from pathlib import Path

from pycrdt import Doc, Text, create_sync_message, create_update_message, handle_sync_message
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from jupyter_warden.enforce.rtc import _chunk, _uint
from jupyter_warden.identity.accounts import Accounts
from jupyter_warden.policy.changes import Policy
from jupyter_warden.store import Store, default_db_url, ensure_state_dir

sys.path.insert(0, str(Path(__file__).parent))
from listing import Server, check_identities  # noqa: E402

FOLDER = "shared"
PATH = f"{FOLDER}/bench.txt"
BLOCK = 25
TARGET = 1.0  # warden / stock, at most
ROOM_EXTENSIONS = "{'jupyter_server_ydoc': True, 'jupyter_server_fileid': True}"


def prepare_warden_state(state: Path, readers: int) -> tuple[str, list[str]]:
    """A writer (read-write) and readers (read) on the folder: the writer's API token, one per reader.

    Each reader signs in with its own credential, as a class or an audience
    does, so the server re-checks each sign-in on its own.
    """
    ensure_state_dir(state)
    store = Store(default_db_url(state))
    store.upgrade()
    accounts, policy = Accounts(store), Policy(store)
    for user, level in (("writer", "read-write"), ("reader", "read")):
        accounts.add_user(user)
        policy.grant(FOLDER, f"user:{user}", level, by="bench")
    writer = accounts.create_token("writer", note="rtc fan-out benchmark")[1]
    readers_tokens = [accounts.create_token("reader", note=f"reader {i}")[1] for i in range(readers)]
    store.dispose()
    return writer, readers_tokens


def awareness_message(client_id: int, clock: int, state: dict) -> bytes:
    entry = _uint(client_id) + _uint(clock) + _chunk(json.dumps(state).encode())
    return _uint(1) + _chunk(_uint(1) + entry)


class Peer:
    """One Y client on a raw websocket: synced with a pycrdt Doc, then timing arrivals by their bytes."""

    def __init__(self, ws):
        self.ws, self.doc = ws, Doc()
        self.text = self.doc.get("source", type=Text)
        self.synced = asyncio.Event()
        self.waiting: dict[bytes, float] = {}  # marker -> arrival time
        self.task = asyncio.create_task(self._pump())

    async def _pump(self):
        while (message := await self.ws.read_message()) is not None:
            now = time.perf_counter()
            for marker in self.waiting:
                if not self.waiting[marker] and marker in message:
                    self.waiting[marker] = now
            if not self.synced.is_set() and message[0] == 0:
                reply = handle_sync_message(message[1:], self.doc)
                if reply is not None:
                    await self.ws.write_message(reply, binary=True)
                if str(self.text):
                    self.synced.set()


class Room:
    """One server's room: a writer and its readers."""

    def __init__(self, server: Server, writer_token: str, reader_tokens: list[str]):
        self.server, self.writer_token, self.reader_tokens = server, writer_token, reader_tokens
        self.clock = 0
        self.samples: dict[str, list[float]] = {"all": [], "each": [], "cursor": []}

    async def open(self, readers: int) -> None:
        response = self.server.client.put(f"/api/collaboration/session/{PATH}",
                                          json={"format": "text", "type": "file"})
        if response.status_code not in (200, 201):
            self.server.fail(f"answered {response.status_code} to the session request: {response.text[:300]}")
        session = response.json()
        url = (f"ws://127.0.0.1:{self.server.port}/api/collaboration/room/"
               f"text:file:{session['fileId']}?sessionId={session['sessionId']}")
        peers = []
        for token in [self.writer_token] + self.reader_tokens[:readers]:
            request = HTTPRequest(url, headers={"Authorization": f"token {token}"})
            ws = await websocket_connect(request)
            ws.protocol.set_nodelay(True)  # as browsers do: only the server's side is measured
            peer = Peer(ws)
            await ws.write_message(create_sync_message(peer.doc), binary=True)
            peers.append(peer)
        await asyncio.wait_for(asyncio.gather(*(p.synced.wait() for p in peers)), 60)
        self.writer, self.readers = peers[0], peers[1:]

    async def keystroke(self, n: int, timeout: float = 10.0) -> None:
        marker = f"<k{n:06d}>".encode()
        cursor = f'"cursor{n:06d}"'.encode()
        updates = []
        subscription = self.writer.doc.observe(lambda event: updates.append(event.update))
        self.writer.text.insert(len(self.writer.text), marker.decode())
        self.writer.doc.unobserve(subscription)
        for reader in self.readers:
            reader.waiting = {marker: 0.0, cursor: 0.0}
        self.clock += 1
        state = {"user": {"username": "writer"}, "cursor": cursor.decode().strip('"')}
        t0 = time.perf_counter()
        for update in updates:
            await self.writer.ws.write_message(create_update_message(update), binary=True)
        await self.writer.ws.write_message(awareness_message(self.writer.doc.client_id, self.clock, state),
                                           binary=True)
        deadline = t0 + timeout
        while not all(r.waiting[marker] and r.waiting[cursor] for r in self.readers):
            if time.perf_counter() > deadline:
                missing = sum(1 for r in self.readers if not r.waiting[marker])
                self.server.fail(f"did not deliver keystroke {n} to {missing} readers within {timeout:.0f} s")
            await asyncio.sleep(0.0005)
        arrivals = [r.waiting[marker] - t0 for r in self.readers]
        self.samples["all"].append(max(arrivals))
        self.samples["each"].extend(arrivals)
        self.samples["cursor"].append(max(r.waiting[cursor] - t0 for r in self.readers))

    def close(self) -> None:
        for peer in [self.writer, *self.readers]:
            peer.ws.close()
            peer.task.cancel()


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


async def measure(rooms: dict[str, Room], args) -> None:
    for room in rooms.values():
        await room.open(args.readers)
    names = list(rooms)
    n = 0
    for room in rooms.values():  # warm-up, untimed
        for _ in range(10):
            n += 1
            await room.keystroke(n)
            await asyncio.sleep(args.interval)
        room.samples = {k: [] for k in room.samples}
    for i in range(0, args.edits, BLOCK):
        order = names if (i // BLOCK) % 2 == 0 else names[::-1]
        for name in order:
            for _ in range(min(BLOCK, args.edits - i)):
                n += 1
                started = time.perf_counter()
                await rooms[name].keystroke(n)
                await asyncio.sleep(max(0.0, args.interval - (time.perf_counter() - started)))
    print(f"\n1 writer, {args.readers} read-only readers, {args.edits} keystrokes per server "
          f"(one every {args.interval * 1000:.0f} ms: a Y update, then the cursor's awareness), "
          f"servers in turns of {BLOCK}")
    print(f"{'server':<13} {'all p50':>10} {'all p99':>10} {'each p50':>10} {'each p99':>10} "
          f"{'cursor p50':>11} {'cursor p99':>11}")
    for name in names:
        s = rooms[name].samples
        print(f"{name:<13} {ms(pct(s['all'], .5)):>10} {ms(pct(s['all'], .99)):>10} "
              f"{ms(pct(s['each'], .5)):>10} {ms(pct(s['each'], .99)):>10} "
              f"{ms(pct(s['cursor'], .5)):>11} {ms(pct(s['cursor'], .99)):>11}")
    stock = rooms["stock"].samples["all"]
    for name in names[1:]:
        mine = rooms[name].samples["all"]
        for q, label in ((.5, "p50"), (.99, "p99")):
            ratio = pct(mine, q) / pct(stock, q)
            verdict = ("PASS" if ratio <= TARGET else "MISS") if name == "warden" else ""
            print(f"ratio of {label} at all readers ({name} / stock): {ratio:.2f}"
                  + (f"  target ≤ {TARGET}  {verdict}" if verdict else ""))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edits", type=int, default=300, help="timed keystrokes per server")
    parser.add_argument("--readers", type=int, default=100, help="read-only clients per server")
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between keystrokes")
    parser.add_argument("--warden-arg", action="append", default=[],
                        help="extra option for the warden servers, e.g. --Warden.document_recheck_interval=0.5")
    parser.add_argument("--no-nagle-run", action="store_true",
                        help="skip the warden server with document_nodelay off")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="warden-rtc-") as tmp:
        work = Path(tmp)
        names = ["stock", "warden"] + ([] if args.no_nagle_run else ["warden-nagle"])
        servers: dict[str, Server] = {}
        rooms: dict[str, Room] = {}
        try:
            for name in names:
                # Each server its own root, file ids and Y store: a server watches its
                # files on disk, and another's saves would look like outside changes.
                root = work / name / "root"
                (root / FOLDER).mkdir(parents=True)
                (root / PATH).write_text("start\n")
                config = work / name / "config.py"
                own = (f"c.BaseFileIdManager.db_path = {str(work / name / 'file_id.db')!r}\n"
                       f"c.SQLiteYStore.db_path = {str(work / name / 'ystore.db')!r}\n")
                if name == "stock":
                    token = secrets.token_hex(24)
                    config.write_text(f"c.ServerApp.jpserver_extensions = {{'jupyter_warden': False, "
                                      f"**{ROOM_EXTENSIONS}}}\nc.IdentityProvider.token = {token!r}\n" + own)
                    tokens, extra = (token, [token] * args.readers), []
                else:
                    config.write_text(f"c.ServerApp.jpserver_extensions = {{'jupyter_warden': True, "
                                      f"**{ROOM_EXTENSIONS}}}\n" + own)
                    state = work / name / "state"
                    tokens = prepare_warden_state(state, args.readers)
                    extra = [f"--Warden.state_dir={state}", *args.warden_arg]
                    if name == "warden-nagle":
                        extra.append("--Warden.document_nodelay=False")
                servers[name] = Server(name, root, work, tokens[0], [f"--config={config}", *extra])
                rooms[name] = Room(servers[name], *tokens)
            for server in servers.values():
                server.wait_ready()
            check_identities(servers["warden"], servers["stock"])
            asyncio.run(measure(rooms, args))
        finally:
            for server in servers.values():
                server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
