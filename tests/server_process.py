"""A real ``jupyter-warden serve`` in a process of its own: for tests that kill it, or drive it synchronously."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

CLI = [sys.executable, "-m", "jupyter_warden.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """A ``jupyter-warden serve`` of its own, with a token for an admin."""

    def __init__(self, tmp_path: Path, db_url: str, root: Path, wrap: list[str] | None = None):
        self.root = root
        self.state = tmp_path / "state"
        self.db_url = db_url
        self.wrap = wrap or []
        self.log = tmp_path / "server.log"
        home = tmp_path / "home"
        home.mkdir(exist_ok=True)
        self.env = dict(
            os.environ,
            HOME=str(home),
            WARDEN_STATE=str(self.state),
            WARDEN_DB=db_url,
            JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
            JUPYTER_CONFIG_DIR=str(tmp_path / "jupyter-config"),
        )
        self.extra_args: list[str] = []  # further `jupyter-warden serve` options
        self.proc = None
        self.port = None
        self.token = None

    def cli(self, *args, stdin=None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*CLI, *args], env=self.env, input=stdin, capture_output=True, text=True, timeout=120, check=True
        )

    def add_admin(self, name="alice"):
        self.cli("user", "add", name, "--admin", "--password-stdin", stdin="long-enough-password\n")
        self.token = self.cli("user", "token", name).stdout.split()[0]

    def start(self):
        self.port = _free_port()
        argv = [*self.wrap, *CLI, "serve", "--root", str(self.root), "--port", str(self.port),
                "--ServerApp.allow_root=True", *self.extra_args]
        self.proc = subprocess.Popen(
            argv, env=self.env, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the server exited: {self.log.read_text()[-3000:]}")
            try:
                if self.request("GET", "/api/warden/status")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"the server did not start: {self.log.read_text()[-3000:]}")

    def kill(self):
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def request(self, method, path, body=None, timeout=30, token=None):
        """(status, decoded body) of one request, as the admin or as ``token``'s user."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            token = token or self.token
            headers = {"Authorization": f"token {token}"} if token else {}
            if body is not None:
                body = json.dumps(body)
                headers["Content-Type"] = "application/json"
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
            try:
                return response.status, json.loads(data) if data else None
            except ValueError:
                return response.status, data.decode(errors="replace")
        finally:
            conn.close()
