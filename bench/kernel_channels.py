"""Benchmark: the kernel websocket through the warden vs stock jupyter_server.

Starts two real servers on one root, one with the jupyter_warden extension
and one without, starts a kernel in each through POST /api/sessions, and
speaks the kernel protocol over a raw websocket (tornado, the
v1.kernel.websocket.jupyter.org protocol that JupyterLab uses):

- execute round trip: a trivial `1+1` execute_request until both its
  execute_reply and its idle status arrived; p50 and p99, servers
  interleaved; target warden p50 ≤ 0.25 × stock p50;
- IOPub throughput: one cell printing 20,000 short lines, flushing each,
  counted in stream messages per second; target ≥ 0.90 × stock, with the
  warden's policy holding only the user's own grant, then 100 more grants
  on the notebook's ancestors and elsewhere.

It measures; a missed target does not fail.

    python bench/kernel_channels.py [--runs 300] [--lines 20000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from jupyter_server.services.kernels.connection.base import (
    deserialize_msg_from_ws_v1,
    serialize_msg_to_ws_v1,
)
from jupyter_warden.identity.accounts import Accounts
from jupyter_warden.policy.changes import Policy
from jupyter_warden.store import Store, default_db_url, ensure_state_dir

sys.path.insert(0, str(Path(__file__).parent))
from listing import NOTEBOOK, Server, check_identities  # noqa: E402

USER = "bench"
NB_FOLDER = "course/unit1/week2"
NB_PATH = f"{NB_FOLDER}/nb.ipynb"
PROTOCOL = "v1.kernel.websocket.jupyter.org"
QUIET = 3.0  # seconds of silence after the reply that end a run whose idle was lost
BLOCK = 25  # round trips in a row on one server
TARGET_LATENCY = 0.25  # warden p50 / stock p50, at most
TARGET_THROUGHPUT = 0.90  # warden / stock messages per second, at least
# jupyter_server's own IOPub rate limit (1,000 msg/s by default) would
# measure the limiter, not the channel; both servers run without it.
NO_RATE_LIMIT = "--ZMQChannelsWebsocketConnection.limit_rate=False"


def prepare_warden_state(state: Path) -> str:
    """The bench user, with an API token and `read-run` on the notebook's folder."""
    ensure_state_dir(state)
    store = Store(default_db_url(state))
    store.upgrade()
    accounts = Accounts(store)
    accounts.add_user(USER)
    _, token = accounts.create_token(USER, note="kernel channel benchmark")
    Policy(store).grant(NB_FOLDER, f"user:{USER}", "read-run", by="bench")
    store.dispose()
    return token


def add_100_grants(state: Path) -> None:
    """100 more grants: on every ancestor of the notebook, to others and to the user's groups."""
    store = Store(default_db_url(state))
    accounts, policy = Accounts(store), Policy(store)
    for g in range(10):
        accounts.add_group(f"team{g}")
        if g % 2 == 0:
            accounts.change_members(f"team{g}", add=[USER])
    for u in range(40):
        accounts.add_user(f"other{u}")
    ancestors = ["", "course", "course/unit1", NB_FOLDER, NB_PATH]
    levels = ["read", "read-run", "read-write", "read-write-run", "manage"]
    grants = []
    for i in range(60):  # the notebook's own chain
        subject = f"group:team{i % 10}" if i % 3 == 0 else f"user:other{i % 40}"
        grants.append((ancestors[i % 5], subject, levels[i % 5]))
    for i in range(40):  # elsewhere
        grants.append((f"course/unit{i % 4 + 2}/week{i}", f"user:other{i}", levels[i % 5]))
    for path, subject, level in grants:
        policy.grant(path, subject, level, by="bench")
    store.dispose()


class Kernel:
    """One kernel on one server, driven over a raw kernel websocket."""

    def __init__(self, server: Server, token: str):
        self.server = server
        self.token = token
        body = {"path": NB_PATH, "type": "notebook", "name": "", "kernel": {"name": "python3"}}
        response = server.client.post("/api/sessions", json=body)
        if response.status_code != 201:
            server.fail(f"answered {response.status_code} to POST /api/sessions: {response.text[:300]}")
        self.kernel_id = response.json()["kernel"]["id"]
        self.session = uuid.uuid4().hex
        self.ws = None
        self.lost_idle = 0
        self.last_seen = 0.0

    def transport(self) -> str:
        """What the kernel listens on, from its connection file."""
        path = self.server.log_path.parent / f"{self.server.name}-runtime" / f"kernel-{self.kernel_id}.json"
        if not path.exists():
            # A sandboxed kernel's connection file is in its own run folder,
            # and a sandboxed kernel always listens on ipc there.
            return "ipc (sandboxed kernel, in its own folder)"
        info = json.loads(path.read_text())
        if info.get("curve_publickey"):
            return f"{info['transport']} + CurveZMQ"
        return info["transport"]

    async def connect(self) -> None:
        if self.ws is not None:
            self.ws.close()
        url = (f"ws://127.0.0.1:{self.server.port}/api/kernels/{self.kernel_id}/channels"
               f"?session_id={self.session}")
        request = HTTPRequest(url, headers={"Authorization": f"token {self.token}"})
        self.ws = await websocket_connect(request, subprotocols=[PROTOCOL],
                                          max_message_size=64 * 1024 * 1024)
        if self.ws.selected_subprotocol != PROTOCOL:
            self.server.fail(f"did not agree to the {PROTOCOL} protocol")
        await self.execute("None")  # the channels are up once this returns

    def _send(self, code: str) -> str:
        msg_id = uuid.uuid4().hex
        header = {"msg_id": msg_id, "msg_type": "execute_request", "session": self.session,
                  "username": USER, "version": "5.4", "date": ""}
        content = {"code": code, "silent": False, "store_history": False,
                   "user_expressions": {}, "allow_stdin": False, "stop_on_error": True}
        parts = [json.dumps(x).encode() for x in (header, {}, {}, content)]
        self.ws.write_message(serialize_msg_to_ws_v1(parts, "shell"), binary=True)
        return msg_id

    async def execute(self, code: str, timeout: float = 120) -> tuple[str, int, int]:
        """Run ``code``; (reply status, stream messages, lines in them) once reply and idle arrived."""
        msg_id = self._send(code)
        status, streams, lines, idle = None, 0, 0, False
        async with asyncio.timeout(timeout):
            while status is None or not idle:
                try:
                    # IOPub is lossy (ZMQ drops at its high-water mark): once the
                    # reply is in, a lost idle status must not hang the run.
                    frame = await asyncio.wait_for(self.ws.read_message(),
                                                   QUIET if status else None)
                except asyncio.TimeoutError:
                    self.lost_idle += 1
                    break
                if frame is None:
                    self.server.fail(f"closed the kernel websocket ({self.ws.close_code} "
                                     f"{self.ws.close_reason})")
                channel, parts = deserialize_msg_from_ws_v1(frame)
                parent = json.loads(parts[1])
                if parent.get("msg_id") != msg_id:
                    continue
                self.last_seen = time.perf_counter()
                kind = json.loads(parts[0])["msg_type"]
                if kind == "stream":
                    streams += 1
                    lines += json.loads(parts[3])["text"].count("\n")
                elif kind == "execute_reply":
                    status = json.loads(parts[3])["status"]
                elif kind == "status" and b'"idle"' in parts[3]:
                    idle = True
        return status, streams, lines

    async def round_trip(self) -> int:
        t0 = time.perf_counter_ns()
        status, _, _ = await self.execute("1+1")
        elapsed = time.perf_counter_ns() - t0
        if status != "ok":
            self.server.fail(f"answered {status!r} to 1+1")
        return elapsed

    async def flood(self, lines: int) -> tuple[float, int]:
        """(stream messages per second, lines delivered) of one printing cell."""
        await self.connect()  # a fresh connection, as a policy change may close old ones
        t0 = time.perf_counter()
        status, streams, delivered = await self.execute(
            f"for i in range({lines}): print(i, flush=True)"
        )
        elapsed = self.last_seen - t0  # not the wait for a lost idle status
        if status != "ok":
            self.server.fail(f"answered {status!r} to the printing cell")
        return streams / elapsed, delivered


def pct(samples: list[int], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(ns: float) -> str:
    return f"{ns / 1e6:.2f} ms"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


async def measure(kernels: dict[str, Kernel], args, state: Path) -> None:
    names = ["stock", "warden"]
    for kernel in kernels.values():
        await kernel.connect()
        for _ in range(20):
            await kernel.round_trip()
    latency: dict[str, list[int]] = {n: [] for n in names}
    # Blocks of BLOCK runs, servers alternating, so neither always runs on a
    # warmer machine. Not one by one: a round trip on one server right after
    # one on the other changes when TCP's delayed ACKs fire, and that alone
    # moved stock's p50 from 48 ms to 12 ms.
    for i in range(0, args.runs, BLOCK):
        for name in names if (i // BLOCK) % 2 == 0 else names[::-1]:
            for _ in range(min(BLOCK, args.runs - i)):
                latency[name].append(await kernels[name].round_trip())

    print(f"\nexecute round trip (1+1 → execute_reply and idle), {args.runs} runs each, "
          f"in alternating blocks of {BLOCK}")
    print(f"{'server':<8} {'p50':>10} {'p99':>10}")
    for name in names:
        print(f"{name:<8} {ms(pct(latency[name], 0.5)):>10} {ms(pct(latency[name], 0.99)):>10}")
    ratio = pct(latency["warden"], 0.5) / pct(latency["stock"], 0.5)
    print(f"ratio of p50 (warden / stock): {ratio:.2f}  target ≤ {TARGET_LATENCY}  "
          f"{verdict(ratio <= TARGET_LATENCY)}")

    for kernel in kernels.values():
        await kernel.flood(min(2000, args.lines))  # warm-up
    print(f"\nIOPub throughput: one cell printing {args.lines:,} lines (print(i, flush=True)), "
          f"median of {args.repeats}")
    print(f"{'policy':<22} {'server':<8} {'msg/s':>9} {'lines':>9}")
    for rules in (0, 100):
        if rules:
            add_100_grants(state)
            await asyncio.sleep(1.0)  # the server's policy poll (0.25 s) sees the change
        rates: dict[str, list[float]] = {n: [] for n in names}
        counts: dict[str, int] = {}
        for i in range(args.repeats):
            for name in names if i % 2 == 0 else names[::-1]:
                rate, counts[name] = await kernels[name].flood(args.lines)
                rates[name].append(rate)
        label = "user's grant only" if not rules else "+100 grants"
        for name in names:
            print(f"{label:<22} {name:<8} {statistics.median(rates[name]):>9,.0f} {counts[name]:>9,}")
        ratio = statistics.median(rates["warden"]) / statistics.median(rates["stock"])
        print(f"{label:<22} ratio (warden / stock): {ratio:.2f}  target ≥ {TARGET_THROUGHPUT}  "
              f"{verdict(ratio >= TARGET_THROUGHPUT)}")
        for name in names:
            if counts[name] != args.lines:
                print(f"note: {name} delivered {counts[name]:,} of {args.lines:,} lines in its "
                      "last run: IOPub messages were dropped on the way")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300, help="timed round trips per server")
    parser.add_argument("--lines", type=int, default=20000, help="lines the flooding cell prints")
    parser.add_argument("--repeats", type=int, default=3, help="flooding cells per server and policy")
    parser.add_argument("--warden-arg", action="append", default=[],
                        help="extra option for the warden server, e.g. --Warden.kernel_transport=ipc")
    parser.add_argument("--stock-arg", action="append", default=[],
                        help="extra option for the stock server, e.g. --KernelManager.transport=ipc")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="warden-kchan-") as tmp:
        work = Path(tmp)
        root = work / "root"
        (root / NB_FOLDER).mkdir(parents=True)
        (root / NB_PATH).write_text(json.dumps(NOTEBOOK).replace("{n}", "0"))
        state = work / "state"
        warden_token = prepare_warden_state(state)
        stock_token = secrets.token_hex(24)
        servers = []
        try:
            warden = Server("warden", root, work, warden_token,
                            [f"--Warden.state_dir={state}", NO_RATE_LIMIT, *args.warden_arg])
            servers.append(warden)
            stock_config = work / "stock_config.py"
            stock_config.write_text(
                "c.ServerApp.jpserver_extensions = {'jupyter_warden': False}\n"
                f"c.IdentityProvider.token = {stock_token!r}\n"
            )
            stock = Server("stock", root, work, stock_token, [f"--config={stock_config}", NO_RATE_LIMIT, *args.stock_arg])
            servers.append(stock)
            for server in servers:
                server.wait_ready()
            check_identities(warden, stock)
            kernels = {"stock": Kernel(stock, stock_token), "warden": Kernel(warden, warden_token)}
            print(f"kernels on {NB_PATH}; jupyter_server IOPub rate limit off on both servers")
            for name, kernel in kernels.items():
                print(f"{name:<8} kernel transport: {kernel.transport()}")
            asyncio.run(measure(kernels, args, state))
            for name, kernel in kernels.items():
                if kernel.lost_idle:
                    print(f"note: {name} lost the idle status of {kernel.lost_idle} runs "
                          f"(each ended {QUIET:.0f} s after its reply, timed to its last message)")
        finally:
            for server in servers:
                server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
