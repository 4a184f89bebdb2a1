"""Load: simulated users on one real server, each action checked against what the policy should allow.

One ``jupyter-warden serve`` (sandboxed kernels, collaboration on) and N
users (50 by default) in 5 teams, for a while (10 minutes by default). Each
user loops over a weighted mix: listing the root, opening notebooks,
editing the team's notebook (a cell's source) or text file in real time
(the edit timed until a teammate's client has it), running a cell in their
own kernel, running the sealed checking cell of the course's assignment
(when this build has sealed cells), sharing a notebook of theirs with
someone and revoking it, and trying what they may not do (another's files,
writing a read-only notebook, granting themselves, a kernel or a room of
another team's). Every answer is checked against a model of the policy,
and counted as ok, error (5xx, exceptions, timeouts),
denied-but-should-be-allowed or allowed-but-should-be-denied.

It prints the machine and its load average, p50/p99 per action (kernel
starts apart), the counts, the server's memory (RSS of the server process)
at the start, the end and its peak, the kernels' memory, and whether the
audit chain still verifies. It measures; it never fails on a figure.
docs/performance.md keeps the latest results.

    python bench/load.py [--users 50] [--minutes 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

from pycrdt import Array, Doc, Text, create_sync_message, create_update_message, handle_sync_message
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.websocket import websocket_connect

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from server_process import CLI, ServerProcess  # noqa: E402

from jupyter_warden.identity.accounts import Accounts  # noqa: E402
from jupyter_warden.policy.changes import Policy  # noqa: E402
from jupyter_warden.store import Store  # noqa: E402

TEAMS = 5
NOTEBOOK = {"cells": [{"cell_type": "code", "id": "c1", "source": "print(1)", "metadata": {}, "outputs": [],
                       "execution_count": None}], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
WEIGHTS = {"list": 15, "open": 15, "rtc_edit": 15, "run": 15, "sealed": 5, "share": 10, "forbidden": 10}
TIMEOUT = 120


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:  # gone meanwhile
        pass
    return 0


def descendants(pid: int) -> list[int]:
    """The processes below ``pid`` (its kernels, their sandboxes), from /proc."""
    children = defaultdict(list)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children[int(fields[1])].append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def memory(pid: int) -> tuple[int, int, int]:
    """(server RSS, RSS of everything below it, number of kernels), in kB."""
    below = descendants(pid)
    kernels = sum(1 for p in below if _is_kernel(_cmdline(p)))
    return rss_kb(pid), sum(rss_kb(p) for p in below), kernels


def _is_kernel(cmdline: bytes) -> bool:
    """The kernel itself, not bwrap, prlimit or setpriv, whose arguments also name it."""
    argv = cmdline.split(b"\0")
    return b"ipykernel" in cmdline and Path(argv[0].decode(errors="replace")).name.startswith("python")


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


class Results:
    def __init__(self):
        self.latency = defaultdict(list)
        self.counts = Counter()
        self.examples = defaultdict(list)

    def add(self, action: str, seconds: float, verdict: str, detail: str = ""):
        if verdict == "ok":
            self.latency[action].append(seconds)
        self.counts[(action, verdict)] += 1
        if verdict != "ok" and len(self.examples[verdict]) < 5:
            self.examples[verdict].append(f"{action}: {detail}"[:300])


class Follower:
    """A Y client that keeps a document in step, for timing edits to their arrival.

    A text file's document is one ``source`` text; a notebook's is the
    ``cells`` array of jupyter_ydoc, whose first cell's ``source`` is edited.
    """

    def __init__(self, ws, notebook: bool = False):
        self.ws, self.doc, self.notebook = ws, Doc(), notebook
        if notebook:
            self.cells = self.doc.get("cells", type=Array)
        else:
            self.source = self.doc.get("source", type=Text)
        self.changed = asyncio.Event()
        self.task = asyncio.ensure_future(self._pump())

    @property
    def text(self):
        if not self.notebook:
            return self.source
        return self.cells[0]["source"] if len(self.cells) else ""

    async def _pump(self):
        while (message := await self.ws.read_message()) is not None:
            if message[0] == 0:
                reply = handle_sync_message(message[1:], self.doc)
                if reply is not None:
                    await self.ws.write_message(reply, binary=True)
                self.changed.set()

    async def start(self):
        await self.ws.write_message(create_sync_message(self.doc), binary=True)
        if self.notebook:  # a notebook's cells come with the server's sync step 2
            deadline = time.monotonic() + TIMEOUT
            while not len(self.cells):
                self.changed.clear()
                await asyncio.wait_for(self.changed.wait(), max(0.01, deadline - time.monotonic()))
        return self

    async def wait_for(self, marker: str, timeout: float = 60):
        deadline = time.monotonic() + timeout
        while marker not in str(self.text):
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), max(0.01, deadline - time.monotonic()))

    async def edit(self, insert: str):
        updates = []
        sub = self.doc.observe(lambda event: updates.append(event.update))
        self.text.insert(len(self.text), insert)
        self.doc.unobserve(sub)
        for update in updates:
            await self.ws.write_message(create_update_message(update), binary=True)


class Bench:
    def __init__(self, server: ServerProcess, users: list[str], sealed: bool):
        self.server = server
        self.users = users
        self.team = {u: f"team{i % TEAMS}" for i, u in enumerate(users)}
        self.sealed = sealed
        self.http = AsyncHTTPClient(max_clients=len(users) * 2)
        self.results = Results()
        self.shared_with: dict[str, set[str]] = defaultdict(set)  # owner -> users who may read now
        self.kernels: dict[str, object] = {}
        self.editors: dict[str, Follower] = {}
        self.followers: dict[str, Follower] = {}

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.port}{path}"

    async def call(self, who, method, path, body=None):
        request = HTTPRequest(self.url(path), method=method, headers={"Authorization": f"token {self.server.tokens[who]}"},
                              body=None if body is None else json.dumps(body), request_timeout=TIMEOUT,
                              allow_nonstandard_methods=True)
        response = await self.http.fetch(request, raise_error=False)
        return response.code, response.body

    def judge(self, action, t0, code, allowed: bool, detail):
        seconds = time.perf_counter() - t0
        if code >= 500 or code == 599:
            verdict = "error"
        elif allowed and code >= 400:
            verdict = "denied_but_allowed"
        elif not allowed and code < 400:
            verdict = "allowed_but_denied"
        else:
            verdict = "ok"
        self.results.add(action, seconds, verdict, f"{detail} -> {code}")

    # -- the actions ------------------------------------------------------

    async def act_list(self, who):
        t0 = time.perf_counter()
        code, body = await self.call(who, "GET", "/api/contents/")
        self.judge("list", t0, code, True, "GET /api/contents/")
        if code == 200:
            names = {e["name"] for e in json.loads(body)["content"]}
            may_see = {"course", self.team[who], f"home-{who}"}
            may_see |= {f"home-{owner}" for owner, readers in self.shared_with.items() if who in readers}
            if names - may_see:
                self.results.add("list", 0, "allowed_but_denied", f"{who} listed {sorted(names - may_see)}")

    async def act_open(self, who):
        other = random.choice([t for t in {f"team{i}" for i in range(TEAMS)} if t != self.team[who]])
        target, allowed = random.choice([
            ("course/lecture.ipynb", True),
            (f"{self.team[who]}/analysis.ipynb", True),
            (f"home-{who}/mine.ipynb", True),
            (f"{other}/analysis.ipynb", False),
        ])
        t0 = time.perf_counter()
        code, _ = await self.call(who, "GET", f"/api/contents/{target}")
        self.judge("open", t0, code, allowed, f"{who} GET {target}")

    async def act_rtc_edit(self, who):
        """An edit in the team's notebook (a cell's source) or text file, timed until a teammate's client has it."""
        team = self.team[who]
        name = random.choice(["analysis.ipynb", "notes.txt"])
        action = "rtc_edit_nb" if name.endswith(".ipynb") else "rtc_edit_text"
        if (who, name) not in self.editors:
            t0 = time.perf_counter()
            self.editors[(who, name)] = await self.room(who, f"{team}/{name}")
            self.results.add("rtc_open", time.perf_counter() - t0, "ok")
        marker = f"<{uuid.uuid4().hex[:8]}>"
        t0 = time.perf_counter()
        await self.editors[(who, name)].edit(marker)
        try:
            await self.followers[(team, name)].wait_for(marker)
            self.results.add(action, time.perf_counter() - t0, "ok")
        except asyncio.TimeoutError:
            self.results.add(action, 0, "denied_but_allowed", f"{who}'s edit of {team}/{name} never reached the follower")

    async def room(self, who, path) -> Follower:
        notebook = path.endswith(".ipynb")
        kind = {"format": "json", "type": "notebook"} if notebook else {"format": "text", "type": "file"}
        code, body = await self.call(who, "PUT", f"/api/collaboration/session/{path}", kind)
        if code not in (200, 201):
            raise RuntimeError(f"session for {who} on {path}: {code} {body[:200]!r}")
        data = json.loads(body)
        url = (f"ws://127.0.0.1:{self.server.port}/api/collaboration/room/{kind['format']}:{kind['type']}:"
               f"{data['fileId']}?sessionId={data['sessionId']}")
        ws = await websocket_connect(HTTPRequest(url, headers={"Authorization": f"token {self.server.tokens[who]}"},
                                                 request_timeout=TIMEOUT))
        return await Follower(ws, notebook).start()

    async def kernel(self, who, path):
        key = (who, path)
        if key not in self.kernels:
            t0 = time.perf_counter()
            code, body = await self.call(who, "POST", "/api/sessions",
                                         {"path": path, "type": "notebook", "name": "", "kernel": {"name": "python3"}})
            if code != 201:
                raise RuntimeError(f"session for {who} on {path}: {code} {body[:200]!r}")
            kernel_id = json.loads(body)["kernel"]["id"]
            url = f"ws://127.0.0.1:{self.server.port}/api/kernels/{kernel_id}/channels"
            self.kernels[key] = await websocket_connect(HTTPRequest(
                url, headers={"Authorization": f"token {self.server.tokens[who]}"}, request_timeout=TIMEOUT,
                connect_timeout=TIMEOUT))
            self.results.add("kernel_start", time.perf_counter() - t0, "ok")
        return self.kernels[key]

    async def execute(self, ws, code: str) -> tuple[str, str]:
        msg_id = uuid.uuid4().hex
        header = {"msg_id": msg_id, "msg_type": "execute_request", "session": "load", "username": "", "version": "5.4"}
        await ws.write_message(json.dumps({"header": header, "parent_header": {}, "metadata": {}, "channel": "shell",
                                           "content": {"code": code, "silent": False, "store_history": True}}))
        out, status, idle = "", None, False
        while status is None or not idle:
            raw = await asyncio.wait_for(ws.read_message(), TIMEOUT)
            if raw is None:
                raise RuntimeError("the kernel socket closed")
            msg = json.loads(raw)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind = msg["header"]["msg_type"]
            if kind == "stream":
                out += msg["content"]["text"]
            elif kind == "execute_reply":
                status = msg["content"]["status"]
            elif kind == "status" and msg["content"]["execution_state"] == "idle":
                idle = True
        return status, out

    async def act_run(self, who):
        ws = await self.kernel(who, f"home-{who}/mine.ipynb")
        t0 = time.perf_counter()
        status, out = await self.execute(ws, "print(sum(range(1000)))")
        ok = status == "ok" and out.strip() == "499500"
        self.results.add("run", time.perf_counter() - t0, "ok" if ok else "error", f"{status} {out[:100]!r}")

    async def act_sealed(self, who):
        if not self.sealed:
            return await self.act_run(who)
        ws = await self.kernel(who, "course/assignment.ipynb")
        source = json.loads((self.server.root / "course" / "assignment.ipynb").read_text())["cells"][0]["source"]
        t0 = time.perf_counter()
        status, out = await self.execute(ws, "".join(source))
        ok = status == "ok" and "sealed check passed" in out
        self.results.add("sealed", time.perf_counter() - t0, "ok" if ok else "error", f"{status} {out[:100]!r}")

    async def act_share(self, who):
        other = random.choice([u for u in self.users if u != who])
        path = f"home-{who}/mine.ipynb"
        # Counted as shared from before the grant until after its revocation,
        # so that a listing made meanwhile may show it or not.
        self.shared_with[who].add(other)
        t0 = time.perf_counter()
        code, _ = await self.call(who, "POST", "/api/warden/grants", {"path": path, "subject": f"user:{other}", "level": "read"})
        self.judge("share", t0, code, True, f"{who} shares {path} with {other}")
        t0 = time.perf_counter()
        code, _ = await self.call(other, "GET", f"/api/contents/{path}")
        self.judge("open_shared", t0, code, True, f"{other} GET {path}")
        t0 = time.perf_counter()
        code, _ = await self.call(who, "DELETE", f"/api/warden/grants?path={path}&subject=user:{other}")
        self.judge("revoke", t0, code, True, f"{who} revokes {other} on {path}")
        t0 = time.perf_counter()
        code, _ = await self.call(other, "GET", f"/api/contents/{path}")
        self.judge("open_revoked", t0, code, False, f"{other} GET {path} after revocation")
        self.shared_with[who].discard(other)

    async def act_forbidden(self, who):
        other = random.choice([u for u in self.users if u != who and who not in self.shared_with[u]])
        team = random.choice([f"team{i}" for i in range(TEAMS) if f"team{i}" != self.team[who]])
        attempt = random.choice([
            ("POST", "/api/sessions", {"path": f"{team}/analysis.ipynb", "type": "notebook", "name": "",
                                       "kernel": {"name": "python3"}}),
            ("PUT", f"/api/collaboration/session/{team}/notes.txt", {"format": "text", "type": "file"}),
            ("GET", f"/api/contents/home-{other}/mine.ipynb", None),
            ("PUT", "/api/contents/course/lecture.ipynb", {"type": "notebook", "format": "json", "content": NOTEBOOK}),
            ("POST", "/api/warden/grants", {"path": "course", "subject": f"user:{who}", "level": "manage"}),
            ("GET", f"/files/home-{other}/mine.ipynb", None),
        ])
        t0 = time.perf_counter()
        code, _ = await self.call(who, *attempt)
        self.judge("forbidden", t0, code, False, f"{who} {attempt[0]} {attempt[1]}")

    async def user_loop(self, who, until: float):
        actions = list(WEIGHTS)
        weights = [WEIGHTS[a] for a in actions]
        while time.monotonic() < until:
            action = random.choices(actions, weights)[0]
            try:
                await getattr(self, f"act_{action}")(who)
            except Exception as e:  # a failure to do what was allowed is an error, never silence
                self.results.add(action, 0, "error", f"{who}: {type(e).__name__}: {e}")
                self.kernels = {k: v for k, v in self.kernels.items() if k[0] != who}
                self.editors = {k: v for k, v in self.editors.items() if k[0] != who}
            await asyncio.sleep(random.uniform(0.05, 0.3))

    async def run(self, minutes: float):
        for t in range(TEAMS):
            for name in ("analysis.ipynb", "notes.txt"):
                self.followers[(f"team{t}", name)] = await self.room("admin", f"team{t}/{name}")
        until = time.monotonic() + minutes * 60
        await asyncio.gather(*(self.user_loop(u, until) for u in self.users))


def prepare(server: ServerProcess, users: list[str], sealed: bool):
    root = server.root
    (root / "course").mkdir()
    (root / "course" / "lecture.ipynb").write_text(json.dumps(NOTEBOOK))
    for t in range(TEAMS):
        (root / f"team{t}").mkdir()
        (root / f"team{t}" / "analysis.ipynb").write_text(json.dumps(NOTEBOOK))
        (root / f"team{t}" / "notes.txt").write_text("notes\n")
    server.add_admin("admin")
    server.tokens = {"admin": server.token}
    store = Store(server.db_url)
    try:
        accounts, policy = Accounts(store), Policy(store)
        policy.grant("course", "authenticated", "read-run", by="bench")
        for t in range(TEAMS):
            accounts.add_group(f"team{t}")
        for i, u in enumerate(users):
            accounts.add_user(u)
            server.tokens[u] = accounts.create_token(u)[1]
            accounts.change_members(f"team{i % TEAMS}", add=[u])
            (root / f"home-{u}").mkdir()
            (root / f"home-{u}" / "mine.ipynb").write_text(json.dumps(NOTEBOOK))
            policy.grant(f"home-{u}", f"user:{u}", "manage", by="bench")
        for t in range(TEAMS):
            policy.grant(f"team{t}", f"group:team{t}", "read-write-run", by="bench")
    finally:
        store.dispose()
    if sealed:
        src = root / "course" / "assignment-src.ipynb"
        cell = dict(NOTEBOOK["cells"][0], source="print('sealed check passed')", metadata={"tags": ["sealed"]})
        src.write_text(json.dumps(dict(NOTEBOOK, cells=[cell])))
        server.cli("keys", "create", "checks")
        server.cli("keys", "grant", "checks", "--to", "authenticated")
        server.cli("seal", str(src), "-o", str(root / "course" / "assignment.ipynb"), "--key", "checks")
        src.unlink()


def machine() -> str:
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return f"{os.cpu_count()} cores, {mem_kb / 1024 / 1024:.1f} GB of memory; {' '.join(platform.uname())}"


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def report(results: Results, start: dict, end: dict, peak: dict, users: int, minutes: float, audit: str):
    print(f"\nload: {users} users for {minutes:g} min on one server")
    print(f"machine: {machine()}")
    print(f"load average (1, 5, 15 min): {start['loadavg']} at the start, {end['loadavg']} at the end\n")
    print(f"{'action':14} {'count':>7} {'p50 ms':>9} {'p99 ms':>9}")
    for action in sorted(results.latency):
        values = sorted(results.latency[action])
        p50 = statistics.median(values) * 1000
        p99 = values[min(len(values) - 1, int(len(values) * 0.99))] * 1000
        print(f"{action:14} {len(values):7d} {p50:9.1f} {p99:9.1f}")
    totals = Counter()
    for (_, verdict), n in results.counts.items():
        totals[verdict] += n
    print()
    for verdict, target in [("ok", None), ("error", 0), ("denied_but_allowed", 0), ("allowed_but_denied", 0)]:
        mark = "" if target is None else ("  PASS" if totals[verdict] == target else "  MISS (target 0)")
        print(f"{verdict:22} {totals[verdict]:7d}{mark}")
    for verdict, examples in results.examples.items():
        print(f"  e.g. {verdict}:")
        for e in examples:
            print(f"    {e}")
    mb = lambda kb: f"{kb / 1024:.0f} MB"  # noqa: E731
    print(f"\nserver RSS: {mb(start['server'])} at the start, {mb(end['server'])} at the end, "
          f"{mb(peak['server'])} at most")
    print(f"kernels and their sandboxes: {start['kernels']} kernels, {mb(start['below'])} at the start; "
          f"{end['kernels']} kernels, {mb(end['below'])} at the end")
    print(f"audit: {audit}")


def snapshot(pid: int) -> dict:
    server, below, kernels = memory(pid)
    return {"server": server, "below": below, "kernels": kernels, "loadavg": load_average()}


async def sample_peak(pid: int, peak: dict, every: float = 5):
    while True:
        peak["server"] = max(peak["server"], rss_kb(pid))
        await asyncio.sleep(every)


async def drive(bench: Bench, minutes: float, pid: int, peak: dict):
    sampler = asyncio.ensure_future(sample_peak(pid, peak))
    try:
        await bench.run(minutes)
    finally:
        sampler.cancel()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--minutes", type=float, default=10)
    args = parser.parse_args()
    random.seed(7)
    with tempfile.TemporaryDirectory(prefix="warden-load-") as tmp:
        tmp = Path(tmp)
        root = tmp / "root"
        root.mkdir()
        server = ServerProcess(tmp, f"sqlite:///{tmp / 'state' / 'warden.db'}", root)
        users = [f"u{i:02d}" for i in range(args.users)]
        sealed = "seal" in server.cli("--help").stdout
        print(f"preparing {args.users} users (sealed cells: {'yes' if sealed else 'not in this build'}) ...")
        prepare(server, users, sealed)
        server.start()
        try:
            start = snapshot(server.proc.pid)
            peak = {"server": start["server"]}
            bench = Bench(server, users, sealed)
            asyncio.run(drive(bench, args.minutes, server.proc.pid, peak))
            end = snapshot(server.proc.pid)
        finally:
            server.stop()
        # The chain holds every decision of the run, and still verifies.
        verify = subprocess.run([*CLI, "audit", "verify"], env=server.env, capture_output=True, text=True)
        audit = (verify.stdout + verify.stderr).strip().splitlines()[-1:] or [""]
        audit = f"{audit[0]} (exit {verify.returncode})"
        report(bench.results, start, end, peak, args.users, args.minutes, audit)


if __name__ == "__main__":
    main()
