"""Benchmark: listing a folder of 5,000 notebooks through the warden vs stock jupyter_server.

Starts two real servers on one root, one with the jupyter_warden extension
and one without, times GET /api/contents/<folder> against both in
interleaved rounds, and prints median, p90 and the ratio of medians next
to the target (≤ 1.3). It measures; a missed target does not fail.

    python bench/listing.py [--notebooks 5000] [--rounds 25]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from jupyter_warden.identity.accounts import Accounts
from jupyter_warden.policy.changes import Policy
from jupyter_warden.store import Store, default_db_url, ensure_state_dir

FOLDER = "shared"
USER = "bench"
TARGET_RATIO = 1.3

NOTEBOOK = {
    "cells": [
        {"cell_type": "markdown", "id": "intro", "metadata": {}, "source": "# Notebook {n}"},
        {"cell_type": "code", "id": "code", "execution_count": None, "metadata": {},
         "outputs": [], "source": "print({n})"},
    ],
    "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                "language": "python"}},
    "nbformat": 4,
    "nbformat_minor": 5,
}


def write_notebooks(folder: Path, count: int) -> None:
    folder.mkdir(parents=True)
    template = json.dumps(NOTEBOOK)
    for n in range(count):
        (folder / f"notebook-{n:05d}.ipynb").write_text(template.replace("{n}", str(n)))


def prepare_warden_state(state: Path) -> str:
    """A user with an API token and `read` on the folder; return the token."""
    ensure_state_dir(state)
    store = Store(default_db_url(state))
    store.upgrade()
    Accounts(store).add_user(USER)
    _, token = Accounts(store).create_token(USER, note="listing benchmark")
    # Through the policy, so a listing filter has a real grant to evaluate.
    Policy(store).grant(FOLDER, f"user:{USER}", "read", by="bench")
    store.dispose()
    return token


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One `jupyter server` subprocess and an HTTP client for it."""

    def __init__(self, name: str, root: Path, work: Path, token: str, extra: list[str]):
        self.name = name
        self.port = free_port()
        self.log_path = work / f"{name}.log"
        env = dict(os.environ)
        env.pop("WARDEN_STATE", None)
        env.pop("WARDEN_DB", None)
        env["JUPYTER_CONFIG_DIR"] = str(work / f"{name}-config")
        env["JUPYTER_RUNTIME_DIR"] = str(work / f"{name}-runtime")
        cmd = [
            sys.executable, "-m", "jupyter_server",
            "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0", "--ServerApp.open_browser=False",
            f"--ServerApp.root_dir={root}", *extra,
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-root")  # containers and CI often run as root
        self.log = self.log_path.open("w")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = httpx.Client(
            base_url=self.url, headers={"Authorization": f"token {token}"}, timeout=120
        )

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.fail(f"exited with status {self.proc.returncode}")
            try:
                if self.client.get("/api/status").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.fail(f"did not answer within {timeout:.0f} s")

    def fail(self, why: str):
        self.log.flush()
        tail = "".join(self.log_path.read_text().splitlines(True)[-30:])
        raise SystemExit(f"{self.name} server {why}; its log ends:\n{tail}")

    def list_folder(self) -> tuple[int, int]:
        """(nanoseconds, entries) of one listing."""
        # Every request authenticates by its token, as an API client does,
        # not by the cookie the server may have set.
        self.client.cookies.clear()
        t0 = time.perf_counter_ns()
        response = self.client.get(f"/api/contents/{FOLDER}")
        body = response.content
        elapsed = time.perf_counter_ns() - t0
        if response.status_code != 200:
            self.fail(f"answered {response.status_code} to the listing: {body[:300]!r}")
        return elapsed, len(json.loads(body)["content"])

    def stop(self) -> None:
        self.client.close()
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def check_identities(warden: Server, stock: Server) -> None:
    """Make sure each server is what it claims: each refuses the other's token."""
    for server, other in ((warden, stock), (stock, warden)):
        headers = {"Authorization": other.client.headers["Authorization"]}
        if httpx.get(f"{server.url}/api/contents", headers=headers).status_code == 200:
            server.fail(f"accepted the {other.name} server's token: is the warden "
                        "extension loaded on the one and off on the other?")


def ms(ns: float) -> str:
    return f"{ns / 1e6:.1f} ms"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notebooks", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=25, help="timed listings per server")
    parser.add_argument("--warmup", type=int, default=5, help="untimed listings per server")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="warden-listing-") as tmp:
        work = Path(tmp)
        root = work / "root"
        write_notebooks(root / FOLDER, args.notebooks)
        warden_token = prepare_warden_state(work / "state")
        stock_token = secrets.token_hex(24)
        servers = []
        try:
            warden = Server("warden", root, work, warden_token,
                            [f"--Warden.state_dir={work / 'state'}"])
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

            for _ in range(args.warmup):
                for server in servers:
                    server.list_folder()
            times: dict[str, list[int]] = {"warden": [], "stock": []}
            entries: dict[str, int] = {}
            for i in range(args.rounds):
                # Alternate who goes first, so neither always runs on a warmer machine.
                for server in servers if i % 2 == 0 else servers[::-1]:
                    elapsed, entries[server.name] = server.list_folder()
                    times[server.name].append(elapsed)
        finally:
            for server in servers:
                server.stop()

    print(f"listing {FOLDER}/ with {args.notebooks:,} notebooks, {args.rounds} rounds, "
          f"servers interleaved")
    print(f"{'server':<8} {'entries':>7} {'median':>10} {'p90':>10}")
    medians = {}
    for name in ("stock", "warden"):
        samples = sorted(times[name])
        medians[name] = statistics.median(samples)
        p90 = samples[min(len(samples) - 1, int(0.9 * len(samples)))]
        print(f"{name:<8} {entries[name]:>7} {ms(medians[name]):>10} {ms(p90):>10}")
    ratio = medians["warden"] / medians["stock"]
    verdict = "PASS" if ratio <= TARGET_RATIO else "MISS"
    print(f"ratio of medians (warden / stock): {ratio:.2f}  target ≤ {TARGET_RATIO}  {verdict}")
    if entries["warden"] != entries["stock"]:
        print(f"note: the warden listed {entries['warden']} entries, stock {entries['stock']}; "
              "the user should see every notebook (it has read on the folder)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
