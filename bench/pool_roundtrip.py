"""Benchmark: the execute round trip of a kernel on the pool against a local kernel (issue 11).

Builds the pool of tests/test_pool.py (network-namespace hosts with sshd,
Enterprise Gateway from .venv-eg, a warden server with --gateway-url), and a
second warden server with local sandboxed kernels. The same user runs `1+1`
over a raw websocket (JSON protocol, what a gateway kernel speaks) on each,
in alternating blocks; p50 and p99 of each, and the ratio pool / local.
There is no target yet: it measures. Needs root, like the test.

    python bench/pool_roundtrip.py [--runs 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from server_process import ServerProcess  # noqa: E402
from test_pool import KERNEL, NB, Pool, _problem, connect  # noqa: E402

BLOCK = 20


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def round_trips(client, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        msg_id = await client.send("shell", "execute_request", {
            "code": "1+1", "silent": False, "store_history": True, "user_expressions": {}, "allow_stdin": False})
        await client.reply_to(msg_id, "execute_reply", timeout=60)
        times.append(time.perf_counter() - start)
    return times


def start_session(server, token, kernel_name):
    saved, server.token = server.token, token
    try:
        status, body = server.request("POST", "/api/sessions", {
            "path": NB, "type": "notebook", "name": "", "kernel": {"name": kernel_name}}, timeout=120)
    finally:
        server.token = saved
    assert status == 201, body
    return body["kernel"]["id"]


async def main(runs: int) -> None:
    problem = _problem()
    if problem:
        print(f"pool_roundtrip: skipped: {problem}")
        return
    tmp = Path(tempfile.mkdtemp(prefix="warden-bench-pool-"))
    pool = Pool(tmp)
    local = None
    try:
        pool.add_host(1)
        pool.add_host(2)
        pool.start_gateway()
        remote = pool.start_warden()
        remote.add_admin("root")
        remote.cli("user", "add", "sam", "--password-stdin", stdin="long-enough-password\n")
        remote.cli("grant", "course", "--to", "user:sam", "--level", "read-write-run")
        (remote.root / NB).write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
        pool.tokens = {"sam": remote.cli("user", "token", "sam").stdout.split()[0]}
        remote.start()

        (tmp / "local").mkdir()
        local = ServerProcess(tmp / "local", f"sqlite:///{tmp}/local/state/warden.db", remote.root)
        local.add_admin("root")
        local.cli("user", "add", "sam", "--password-stdin", stdin="long-enough-password\n")
        local.cli("grant", "course", "--to", "user:sam", "--level", "read-write-run")
        local_token = local.cli("user", "token", "sam").stdout.split()[0]
        local.start()

        pool_client = await connect(pool, start_session(remote, pool.tokens["sam"], KERNEL), "sam")

        class LocalView:  # connect() reads the server and tokens from here
            server, tokens = local, {"sam": local_token}

        local_client = await connect(LocalView, start_session(local, local_token, "python3"), "sam")
        for client in (pool_client, local_client):
            await round_trips(client, 10)  # warm up
        times = {"pool": [], "local": []}
        while len(times["pool"]) < runs:
            times["pool"] += await round_trips(pool_client, BLOCK)
            times["local"] += await round_trips(local_client, BLOCK)
        for name, values in times.items():
            print(f"execute round trip, {name:5} kernel: p50 {pct(values, 0.5) * 1e3:7.2f} ms   "
                  f"p99 {pct(values, 0.99) * 1e3:7.2f} ms   ({len(values)} runs)")
        ratio = pct(times["pool"], 0.5) / pct(times["local"], 0.5)
        print(f"pool / local p50 ratio: {ratio:.2f} (no target yet)")
        for client in (pool_client, local_client):
            client.ws.close()
    finally:
        if local is not None:
            local.stop()
        pool.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    asyncio.run(main(parser.parse_args().runs))
