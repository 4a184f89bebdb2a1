"""Benchmark: starting a sandboxed kernel through the warden vs a stock kernel.

Starts two real servers on one root, one with the jupyter_warden extension
and its bubblewrap sandbox (c.Warden.sandbox = "bubblewrap": run it as root,
with /usr/bin/bwrap) and one stock jupyter_server, and in alternating order
times, for each of N kernels:

- from the start request (POST /api/sessions, as JupyterLab sends it) to the
  kernel_info_reply on a kernel websocket opened right after (what the user
  waits for before a cell can run); then the kernel is shut down;
- p50 and p99 per server, and the ratio of p50s (target ≤ 1.3).

Then, with one kernel alive on each server, the memory each kernel's process
tree takes: the sandbox's wrapper processes (bwrap; prlimit and setpriv
exec into the kernel, so they leave no process) and the kernel itself, as
RSS and PSS (/proc/PID/smaps_rollup, shared pages split among sharers).

It measures; a missed target does not fail.

    python bench/kernel_start.py [--starts 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from jupyter_warden.identity.accounts import Accounts
from jupyter_warden.policy.changes import Policy
from jupyter_warden.sandbox import bubblewrap_problem
from jupyter_warden.store import Store, default_db_url, ensure_state_dir

sys.path.insert(0, str(Path(__file__).parent))
from listing import NOTEBOOK, Server, check_identities  # noqa: E402

USER = "bench"
NB_FOLDER = "course"
NB_PATH = f"{NB_FOLDER}/nb.ipynb"
TARGET_RATIO = 1.3


def prepare_warden_state(state: Path) -> str:
    """The bench user, with an API token and `read-write-run` on the notebook's folder."""
    ensure_state_dir(state)
    store = Store(default_db_url(state))
    store.upgrade()
    accounts = Accounts(store)
    accounts.add_user(USER)
    _, token = accounts.create_token(USER, note="kernel start benchmark")
    Policy(store).grant(NB_FOLDER, f"user:{USER}", "read-write-run", by="bench")
    store.dispose()
    return token


class Starter:
    """Starts, times and stops kernels on one server."""

    def __init__(self, server: Server, token: str):
        self.server, self.token = server, token

    def start(self) -> tuple[str, str]:
        body = {"path": NB_PATH, "type": "notebook", "name": "", "kernel": {"name": "python3"}}
        response = self.server.client.post("/api/sessions", json=body)
        if response.status_code != 201:
            self.server.fail(f"answered {response.status_code} to POST /api/sessions: {response.text[:300]}")
        model = response.json()
        return model["id"], model["kernel"]["id"]

    async def kernel_info(self, kernel_id: str) -> None:
        session = uuid.uuid4().hex
        url = f"ws://127.0.0.1:{self.server.port}/api/kernels/{kernel_id}/channels?session_id={session}"
        request = HTTPRequest(url, headers={"Authorization": f"token {self.token}"},
                              connect_timeout=120, request_timeout=120)
        ws = await websocket_connect(request)
        msg_id = uuid.uuid4().hex
        header = {"msg_id": msg_id, "msg_type": "kernel_info_request", "session": session,
                  "username": USER, "version": "5.4", "date": ""}
        await ws.write_message(json.dumps({"header": header, "parent_header": {}, "metadata": {},
                                           "content": {}, "channel": "shell"}))
        async with asyncio.timeout(120):
            while True:
                raw = await ws.read_message()
                if raw is None:
                    self.server.fail(f"closed the kernel websocket ({ws.close_code} {ws.close_reason})")
                msg = json.loads(raw)
                if msg["header"]["msg_type"] == "kernel_info_reply" and msg["parent_header"].get("msg_id") == msg_id:
                    break
        ws.close()

    async def timed_start(self) -> int:
        t0 = time.perf_counter_ns()
        session_id, kernel_id = self.start()
        await self.kernel_info(kernel_id)
        elapsed = time.perf_counter_ns() - t0
        self.stop(session_id)
        return elapsed

    def stop(self, session_id: str) -> None:
        response = self.server.client.delete(f"/api/sessions/{session_id}")
        if response.status_code != 204:
            self.server.fail(f"answered {response.status_code} to DELETE /api/sessions")


def kernel_tree(server: Server) -> list[psutil.Process]:
    return psutil.Process(server.proc.pid).children(recursive=True)


def memory(process: psutil.Process) -> tuple[int, int]:
    """(RSS, PSS) in bytes, from /proc/PID/smaps_rollup."""
    rss = pss = 0
    with open(f"/proc/{process.pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Rss:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("Pss:"):
                pss = int(line.split()[1]) * 1024
    return rss, pss


def mib(n: float) -> str:
    return f"{n / 1024**2:.1f} MiB"


def ms(ns: float) -> str:
    return f"{ns / 1e6:.0f} ms"


def pct(samples: list[int], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(starters: dict[str, Starter], starts: int) -> None:
    names = ["stock", "warden"]
    for starter in starters.values():  # warm-up: imports, page cache
        await starter.timed_start()
    times: dict[str, list[int]] = {n: [] for n in names}
    for i in range(starts):
        for name in names if i % 2 == 0 else names[::-1]:
            times[name].append(await starters[name].timed_start())
    print(f"\nkernel start (POST /api/sessions → kernel_info_reply), {starts} starts each, alternating")
    print(f"{'server':<8} {'p50':>8} {'p99':>8} {'mean':>8}")
    for name in names:
        print(f"{name:<8} {ms(pct(times[name], 0.5)):>8} {ms(pct(times[name], 0.99)):>8} "
              f"{ms(statistics.mean(times[name])):>8}")
    ratio = pct(times["warden"], 0.5) / pct(times["stock"], 0.5)
    verdict = "PASS" if ratio <= TARGET_RATIO else "MISS"
    print(f"ratio of p50 (sandboxed / stock): {ratio:.2f}  target ≤ {TARGET_RATIO}  {verdict}")
    if starts < 100:
        print(f"(p99 of {starts} starts is their slowest)")

    print("\nmemory of one idle kernel's processes")
    print(f"{'server':<8} {'process':<34} {'uid':>7} {'RSS':>10} {'PSS':>10}")
    totals = {}
    sessions = {name: starters[name].start() for name in names}
    for name in names:
        await starters[name].kernel_info(sessions[name][1])
    for name in names:
        total_rss = total_pss = wrapper_rss = wrapper_pss = 0
        for process in kernel_tree(starters[name].server):
            rss, pss = memory(process)
            label = " ".join(process.cmdline()[:3])[:34]
            print(f"{name:<8} {label:<34} {process.uids().real:>7} {mib(rss):>10} {mib(pss):>10}")
            total_rss, total_pss = total_rss + rss, total_pss + pss
            if process.name() == "bwrap":
                wrapper_rss, wrapper_pss = wrapper_rss + rss, wrapper_pss + pss
        totals[name] = (total_rss, total_pss, wrapper_rss, wrapper_pss)
    print(f"sandbox wrappers (bwrap) per kernel: RSS {mib(totals['warden'][2])}, PSS {mib(totals['warden'][3])}")
    print(f"added per kernel (warden tree - stock tree): RSS {mib(totals['warden'][0] - totals['stock'][0])}, "
          f"PSS {mib(totals['warden'][1] - totals['stock'][1])}")
    for name in names:
        starters[name].stop(sessions[name][0])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=20, help="timed kernel starts per server")
    args = parser.parse_args(argv)
    problem = bubblewrap_problem()
    if problem is not None:
        print(f"kernel_start: skipped, kernels can't be sandboxed here: {problem}")
        return 0

    with tempfile.TemporaryDirectory(prefix="warden-kstart-") as tmp:
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
                            [f"--Warden.state_dir={state}", "--Warden.sandbox=bubblewrap"])
            servers.append(warden)
            stock_config = work / "stock_config.py"
            stock_config.write_text(
                "c.ServerApp.jpserver_extensions = {'jupyter_warden': False}\n"
                f"c.IdentityProvider.token = {stock_token!r}\n"
            )
            stock = Server("stock", root, work, stock_token, [f"--config={stock_config}"])
            servers.append(stock)
            for server in servers:
                server.wait_ready()
            check_identities(warden, stock)
            print(f"kernels for {NB_PATH}; {os.cpu_count()} CPUs, load average "
                  f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} (a shared machine: "
                  "other work moves these figures)")
            starters = {"stock": Starter(stock, stock_token), "warden": Starter(warden, warden_token)}
            asyncio.run(measure(starters, args.starts))
        finally:
            for server in servers:
                server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
