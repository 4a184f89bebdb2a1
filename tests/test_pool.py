"""Kernels on a pool of hosts through Jupyter Enterprise Gateway (issue 11), for real on one machine.

Each pool host is a network namespace of its own (``ip netns``, a veth on a
bridge) running its own sshd; Enterprise Gateway (its own virtual
environment, ``make eg-venv``) reaches them over SSH as root with a key made
here, and starts each kernel through the warden's host launcher
(jupyter_warden/pool/host.py) in bubblewrap. The warden server is a
``jupyter-warden serve --gateway-url`` process of its own; clients speak to
it only, over raw websockets. Everything made is removed in the finalizers.
The hosts share this machine's file system: what differs is the network.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from server_process import ServerProcess, _free_port
from test_kernel_guard import Client, stdout
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from jupyter_warden.pool.kernelspec import write_kernelspec
from jupyter_warden.pool.warden import LOST_MESSAGE
from jupyter_warden.sandbox import bubblewrap_problem

REPO = Path(__file__).resolve().parent.parent
EG_VENV = Path(os.environ.get("WARDEN_EG_VENV", REPO / ".venv-eg"))
EG = EG_VENV / "bin" / "jupyter-enterprisegateway"
SSHD = "/usr/sbin/sshd"
KERNEL = "pool_python"
NB = "course/nb.ipynb"
KEY = "cs101-checks"
CHECK = 'def check_answer(x):\n    hidden_helper_value = x * 7  # MARKERCOMMENT\n    return hidden_helper_value\nprint("result", check_answer(6))\n'


def _problem() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, sshd, bubblewrap on the hosts)"
    for tool in (SSHD, "/usr/sbin/ip", "/usr/bin/ssh-keygen"):
        if not os.access(tool, os.X_OK):
            return f"{tool} is missing (scripts/system-deps.sh installs openssh-server and iproute2)"
    if not EG.exists():
        return f"Enterprise Gateway is not installed in {EG_VENV} (make eg-venv)"
    return bubblewrap_problem()


pytestmark = pytest.mark.skipif(_problem() is not None, reason=str(_problem()))


def run(*argv, check=True, **kw):
    return subprocess.run([str(a) for a in argv], check=check, capture_output=True, text=True, timeout=60, **kw)


class Pool:
    """The bridge, the hosts (namespaces with sshd), Enterprise Gateway and the warden server."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.tag = secrets.token_hex(2)
        self.net = f"10.213.{int(self.tag, 16) % 250 + 1}"
        self.bridge = f"wpb{self.tag}"
        self.hosts: dict[int, dict] = {}
        self.procs: list[subprocess.Popen] = []
        self.home = tmp / "eg-home"
        (self.home / ".ssh").mkdir(parents=True, mode=0o700)
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", self.home / ".ssh" / "id_ed25519")
        self.authorized = tmp / "authorized_keys"
        shutil.copy(self.home / ".ssh" / "id_ed25519.pub", self.authorized)
        # EG's kernel-ID.log of each launch (EG_KERNEL_LOG_DIR, /tmp by default): removed in close().
        self.kernel_logs = tmp / "kernel-logs"
        self.kernel_logs.mkdir()
        self.hosts_file = tmp / "pool-hosts"
        self.hosts_file.write_text("# the pool, read by the gateway at each launch\n")
        self.key_file = tmp / "pool.key"
        self.key_file.write_text(secrets.token_hex(32) + "\n")
        self.key_file.chmod(0o600)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation folder
        run("ip", "link", "add", self.bridge, "type", "bridge")
        run("ip", "addr", "add", f"{self.net}.1/24", "dev", self.bridge)
        run("ip", "link", "set", self.bridge, "up")

    # -- hosts ----------------------------------------------------------------

    def add_host(self, n: int, listed: bool = True) -> str:
        ns, veth, address = f"wp{self.tag}h{n}", f"wp{self.tag}v{n}", f"{self.net}.{10 + n}"
        self.hosts[n] = {"ns": ns, "veth": veth, "address": address}
        run("ip", "netns", "add", ns)
        run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        run("ip", "link", "set", veth, "master", self.bridge, "up")
        for argv in (["ip", "addr", "add", f"{address}/24", "dev", "eth0"], ["ip", "link", "set", "eth0", "up"],
                     ["ip", "link", "set", "lo", "up"], ["ip", "route", "add", "default", "via", f"{self.net}.1"]):
            run("ip", "netns", "exec", ns, *argv)
        host_key = self.tmp / f"host{n}_key"
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", host_key)
        config = self.tmp / f"sshd{n}.conf"
        config.write_text(
            f"ListenAddress {address}\nPort 22\nHostKey {host_key}\nAuthorizedKeysFile {self.authorized}\n"
            "PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            f"UsePAM no\nStrictModes no\nPidFile {self.tmp}/sshd{n}.pid\n")
        sshd = subprocess.Popen(["ip", "netns", "exec", ns, SSHD, "-D", "-e", "-f", str(config)],
                                stdout=open(self.tmp / f"sshd{n}.log", "ab"), stderr=subprocess.STDOUT)
        self.procs.append(sshd)
        self.hosts[n]["sshd"] = sshd
        public = (self.tmp / f"host{n}_key.pub").read_text().split()
        with open(self.home / ".ssh" / "known_hosts", "a") as f:
            f.write(f"{address} {public[0]} {public[1]}\n")
        _wait_port(address, 22)
        if listed:
            with open(self.hosts_file, "a") as f:
                f.write(address + "\n")
        return address

    def unlist_host(self, n: int) -> None:
        address = self.hosts[n]["address"]
        lines = [line for line in self.hosts_file.read_text().splitlines() if line.strip() != address]
        tmp = self.hosts_file.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, self.hosts_file)

    def kill_host(self, n: int) -> None:
        """The host dies: its sshd and every process in it (launchers, kernels) are killed."""
        pids = run("ip", "netns", "pids", self.hosts[n]["ns"], check=False).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass

    def host_of(self, kernel_id: str) -> int | None:
        """The host whose namespace runs the launcher of ``kernel_id``."""
        for n, host in self.hosts.items():
            for pid in run("ip", "netns", "pids", host["ns"], check=False).stdout.split():
                try:
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                except OSError:
                    continue
                if b"jupyter_warden.pool.host" in cmdline and kernel_id.encode() in cmdline:
                    return n
        return None

    def connection_info(self, kernel_id: str) -> dict:
        """The kernel's ports and key, as the launcher sent them to the gateway (its debug log)."""
        import ast

        mark = f"Connection info received for kernel '{kernel_id}': "
        for line in reversed(self.eg_log.read_text().splitlines()):
            if mark in line:
                return ast.literal_eval(line.split(mark, 1)[1])
        raise AssertionError(f"no connection info of {kernel_id} in {self.eg_log}")

    # -- the gateway and the warden -----------------------------------------

    def start_gateway(self) -> None:
        share = self.tmp / "eg-share"
        path = write_kernelspec(share / "kernels", KERNEL, python=sys.executable, hosts_file=str(self.hosts_file),
                                key_file=str(self.key_file))
        spec = json.loads(path.read_text())
        spec["env"] = {"PYTHONPATH": str(REPO)}  # the launcher of this tree, not an installed one
        path.write_text(json.dumps(spec))
        self.eg_port, self.eg_token = _free_port(), secrets.token_hex(16)
        env = {**{k: v for k, v in os.environ.items() if k in ("PATH", "LANG")},
               "HOME": str(self.home), "JUPYTER_PATH": str(share), "JUPYTER_DATA_DIR": str(share),
               "JUPYTER_RUNTIME_DIR": str(self.tmp / "eg-runtime"), "JUPYTER_CONFIG_DIR": str(self.tmp / "eg-config"),
               "PYTHONPATH": str(REPO),  # jupyter_warden.pool.gateway, with no other dependency
               "EG_REMOTE_USER": "root", "EG_RESPONSE_IP": f"{self.net}.1", "EG_KERNEL_LAUNCH_TIMEOUT": "40",
               "EG_KERNEL_LOG_DIR": str(self.kernel_logs)}
        self.eg_log = self.tmp / "eg.log"
        eg = subprocess.Popen(
            [str(EG), "--ip=127.0.0.1", f"--port={self.eg_port}", f"--EnterpriseGatewayApp.auth_token={self.eg_token}",
             f"--EnterpriseGatewayApp.default_kernel_name={KERNEL}",
             f"--KernelSpecManager.allowed_kernelspecs={KERNEL}",
             # The warden's kernel list and its idle culler ask the gateway for its kernels.
             "--EnterpriseGatewayApp.list_kernels=True", "--debug"],
            env=env, stdout=open(self.eg_log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(eg)
        self.eg = eg
        _wait_port("127.0.0.1", self.eg_port, eg, self.eg_log)

    def start_warden(self) -> ServerProcess:
        root = self.tmp / "root"
        (root / "course").mkdir(parents=True)
        (self.tmp / "warden").mkdir(exist_ok=True)
        server = ServerProcess(self.tmp / "warden", f"sqlite:///{self.tmp}/warden/state/warden.db", root)
        self.server = server
        self.configure_warden({"kernel_max_age": 3600, "kernel_max_output_bytes": 300_000})
        server.extra_args = [f"--gateway-url=http://127.0.0.1:{self.eg_port}",
                             f"--GatewayClient.auth_token={self.eg_token}", "--GatewayClient.request_timeout=60"]
        return server

    def configure_warden(self, warden: dict, **more) -> None:
        """The warden server's config file: ``c.Warden`` options, and other sections."""
        config = Path(self.server.env["JUPYTER_CONFIG_DIR"])
        config.mkdir(parents=True, exist_ok=True)
        (config / "jupyter_server_config.json").write_text(json.dumps({
            "Warden": {"pool_key_file": str(self.key_file), **warden}, **more}))

    def close(self) -> None:
        server = getattr(self, "server", None)
        if server is not None:
            server.stop()
        for proc in reversed(self.procs):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM) if proc is getattr(self, "eg", None) else proc.terminate()
                    proc.wait(10)
                except (subprocess.TimeoutExpired, ProcessLookupError):
                    proc.kill()
        for n, host in self.hosts.items():
            self.kill_host(n)
            run("ip", "netns", "del", host["ns"], check=False)
            run("ip", "link", "del", host["veth"], check=False)
        run("ip", "link", "del", self.bridge, check=False)
        shutil.rmtree(self.kernel_logs, ignore_errors=True)


def _wait_port(host, port, proc=None, log=None, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"exited: {log.read_text()[-3000:] if log else ''}")
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"nothing listens on {host}:{port}: {log.read_text()[-3000:] if log else ''}")


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    made = Pool(tmp_path_factory.mktemp("pool"))
    try:
        made.add_host(1)
        made.add_host(2)
        made.start_gateway()
        server = made.start_warden()
        # Users, grants, the sealing key: through the CLI, as an operator would.
        server.add_admin("root")
        made.tokens = {}
        for name in ("sam", "bob"):
            server.cli("user", "add", name, "--password-stdin", stdin="long-enough-password\n")
            made.tokens[name] = server.cli("user", "token", name).stdout.split()[0]
            server.cli("grant", "course", "--to", f"user:{name}", "--level", "read-write-run")
        server.cli("keys", "create", KEY)
        server.cli("keys", "grant", KEY, "--to", "user:sam")
        notebook = {"cells": [
            {"cell_type": "code", "id": "check-1", "metadata": {"tags": ["sealed"]}, "source": CHECK,
             "outputs": [], "execution_count": None}], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
        plain = made.tmp / "plain.ipynb"
        plain.write_text(json.dumps(notebook))
        server.cli("seal", str(plain), "-o", str(server.root / NB), "--key", KEY)
        server.start()
        yield made
    finally:
        made.close()


# -- a client of the warden server -------------------------------------------


def call(pool, method, path, token, body=None):
    saved, pool.server.token = pool.server.token, token
    try:
        return pool.server.request(method, path, body, timeout=120)
    finally:
        pool.server.token = saved


def start_kernel(pool, user, path=NB) -> str:
    status, body = call(pool, "POST", "/api/sessions", pool.tokens[user],
                        {"path": path, "type": "notebook", "name": "", "kernel": {"name": KERNEL}})
    assert status == 201, body
    return body["kernel"]["id"]


async def connect(pool, kernel_id, user) -> Client:
    url = f"ws://127.0.0.1:{pool.server.port}/api/kernels/{kernel_id}/channels"
    ws = await websocket_connect(HTTPRequest(url, headers={"Authorization": f"token {pool.tokens[user]}"},
                                             connect_timeout=60, request_timeout=60))
    return Client(ws, "json")


async def ready(client: Client) -> None:
    """The first execution: the gateway may still be opening its channels."""
    msg_id = await client.send("shell", "execute_request", {
        "code": "1", "silent": False, "store_history": True, "user_expressions": {}, "allow_stdin": False})
    reply, _ = await client.reply_to(msg_id, "execute_reply", timeout=60)
    assert reply["content"]["status"] == "ok", reply


# -- the tests ---------------------------------------------------------------


async def test_round_robin_sandboxed_and_sealed(pool):
    sam_kernel = start_kernel(pool, "sam")
    bob_kernel = start_kernel(pool, "bob")
    hosts = {pool.host_of(sam_kernel), pool.host_of(bob_kernel)}
    assert hosts == {1, 2}, "the two kernels should land on the two hosts, round robin"

    sam = await connect(pool, sam_kernel, "sam")
    bob = await connect(pool, bob_kernel, "bob")
    await ready(sam)
    await ready(bob)
    probe = ("import os, socket; print(os.getuid(), os.getgid(), [n for _, n in socket.if_nameindex()], "
             f"os.path.exists({str(pool.key_file)!r}), os.environ.get('KERNEL_WARDEN_LAUNCH'))")
    sam_says = stdout((await sam.execute(probe))[1]).split(" ", 2)
    bob_says = stdout((await bob.execute(probe))[1]).split(" ", 2)
    # Each user's own uid from the warden's range, the kernels' group; no network but lo;
    # neither the pool key nor the launch token inside.
    assert 200000 <= int(sam_says[0]) <= 299999 and 200000 <= int(bob_says[0]) <= 299999
    assert sam_says[0] != bob_says[0] and sam_says[1] == "199999"
    pool.uids = {"sam": sam_says[0], "bob": bob_says[0]}
    assert sam_says[2].strip() == "['lo'] False None"

    # On the pool network, the kernel takes only messages signed with its own key:
    # one signed with another key (or none) runs nothing.
    info = pool.connection_info(sam_kernel)
    assert len(info["key"]) >= 32
    for key, answered in ((b"", False), (b"guessed", False), (info["key"].encode(), True)):
        assert await asyncio.get_running_loop().run_in_executor(None, _execute_direct, info, key) is answered
    reply, outputs = await sam.execute("print('direct' in globals())")
    assert stdout(outputs) == "True\n"  # the signed one ran, once (it sets `direct`); the others did not
    reply, outputs = await sam.execute("print(direct)")
    assert stdout(outputs) == str(info["key"].encode()) + "\n"

    # A sealed cell on a pool kernel: it runs; its source never reaches the user.
    status, model = call(pool, "GET", f"/api/contents/{NB}", pool.tokens["sam"])
    placeholder = model["content"]["cells"][0]["source"]
    assert "MARKERCOMMENT" not in placeholder
    frames = []
    reply, outputs = await sam.execute(placeholder)
    frames += [json.dumps(m) for m in [reply, *outputs]]
    assert reply["content"]["status"] == "ok", reply
    assert stdout(outputs) == "result 42\n"
    assert [m["content"]["code"] for m in outputs if m["msg_type"] == "execute_input"] == [placeholder]
    probe = "m = 'MARKER' + 'COMMENT'; import linecache; print(any(m in c for c in In), any(m in ''.join(v[2]) for v in linecache.cache.values()))"
    reply, outputs = await sam.execute(probe)
    frames += [json.dumps(m) for m in [reply, *outputs]]
    assert stdout(outputs) == "False False\n"
    assert not [f for f in frames if "MARKERCOMMENT" in f or "hidden_helper_value" in f]
    # bob has run on the notebook but not the key: refused on the warden, before the pool.
    reply, outputs = await bob.execute(placeholder)
    assert reply["content"]["status"] == "error"

    # The output cap holds on the warden side for a pool kernel as for a local one.
    reply, outputs = await sam.execute("for i in range(10): print('y' * 100_000, flush=True)")
    assert reply["content"]["status"] == "ok"
    assert stdout(outputs).count("y" * 100_000) < 10
    assert any("Output cut" in m["content"].get("text", "") for m in outputs if m["msg_type"] == "stream")

    # A client-chosen user name in the header changes nothing; bob can't reach sam's kernel.
    reply, outputs = await bob.execute("import getpass; print(os.getuid())", username="sam")
    assert stdout(outputs).strip() == bob_says[0]
    with pytest.raises(Exception):
        await connect(pool, sam_kernel, "bob")
    for client in (sam, bob):
        client.ws.close()


async def test_identity_travels_signed_and_is_not_forgeable(pool):
    # Through the warden: whatever env a client sends, the kernel is its own user's.
    forged = {"KERNEL_USERNAME": "sam", "KERNEL_WARDEN_LAUNCH": "wp1.x.y", "KERNEL_REMOTE_HOST": "127.0.0.1"}
    status, body = call(pool, "POST", "/api/sessions", pool.tokens["bob"],
                        {"path": NB, "type": "notebook", "env": forged, "kernel": {"name": KERNEL, "env": forged}})
    assert status == 201, body
    bob = await connect(pool, body["kernel"]["id"], "bob")
    await ready(bob)
    uid = stdout((await bob.execute("import os; print(os.getuid())"))[1]).strip()
    assert uid == pool.uids["bob"] != pool.uids["sam"]
    bob.ws.close()
    # A kernel id the client chose is refused: the gateway would hand over a kernel it runs under that id.
    status, body = call(pool, "POST", "/api/sessions", pool.tokens["bob"], {
        "path": "course/other.ipynb", "type": "notebook", "kernel": {"name": KERNEL, "id": str(uuid.uuid4())}})
    assert status == 400 and "kernel ids are chosen by the server" in body["message"], body

    # Straight at the gateway (as if someone got past the warden to it): a forged or replayed
    # launch request starts nothing on a host.
    from jupyter_warden.pool.launch_token import sign

    forged = sign(b"x" * 32, {"kernel_id": "k", "user": "sam", "subject": "user:sam", "username": "sam",
                              "uid": 200000, "gid": 199999, "limits": {}})
    for token in (forged, "", None):
        kernel = str(uuid.uuid4())
        env = {"KERNEL_ID": kernel, "KERNEL_USERNAME": "sam", "KERNEL_LAUNCH_TIMEOUT": "8"}
        if token is not None:
            env["KERNEL_WARDEN_LAUNCH"] = token
        status = await asyncio.get_running_loop().run_in_executor(None, _eg_start, pool, env)
        assert status >= 400
        log = pool.kernel_logs / f"kernel-{kernel}.log"
        assert "refused to start kernel" in log.read_text(), log.read_text()
        log.unlink()

    # A notebook path that would be shell code in EG's remote command: nothing runs.
    # (EG's remote shell starts in root's home: where a `touch` would land.)
    marker = Path("/root") / f"wpool-injected-{pool.tag}"
    folder = f"course/x$(touch {marker.name})`touch {marker.name}`"
    (pool.server.root / folder).mkdir()
    (pool.server.root / folder / "nb.ipynb").write_text((pool.server.root / NB).read_text())
    try:
        start_kernel(pool, "bob", f"{folder}/nb.ipynb")
        assert not marker.exists()
    finally:
        marker.unlink(missing_ok=True)


def _execute_direct(info: dict, key: bytes) -> bool:
    """Send an execute_request straight to a pool kernel's shell port; whether it was answered."""
    import zmq
    from jupyter_client.session import Session

    session = Session(key=key, signature_scheme=info["signature_scheme"])
    context = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(f"tcp://{info['ip']}:{info['shell_port']}")
        session.send(sock, "execute_request", {"code": f"direct = {key!r}", "silent": False, "store_history": False,
                                               "user_expressions": {}, "allow_stdin": False})
        return bool(sock.poll(3000 if key else 2000))
    finally:
        sock.close(0)
        context.term()


def _eg_start(pool, env) -> int:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", pool.eg_port, timeout=60)
    try:
        conn.request("POST", "/api/kernels", json.dumps({"name": KERNEL, "env": env}),
                     {"Authorization": f"token {pool.eg_token}", "Content-Type": "application/json"})
        return conn.getresponse().status
    finally:
        conn.close()


async def test_a_dead_host_takes_only_its_kernels_and_new_hosts_join(pool):
    # One kernel of sam's per host.
    kernels = {}
    for i in range(4):  # a session per (notebook, user): one notebook each
        if len(kernels) == 2:
            break
        kernel_id = start_kernel(pool, "sam", f"course/lost{i}.ipynb")
        kernels.setdefault(pool.host_of(kernel_id), kernel_id)
    doomed_host = 2
    doomed = await connect(pool, kernels[doomed_host], "sam")
    survivor = await connect(pool, kernels[1], "sam")
    await ready(doomed)
    await ready(survivor)
    msg_id = await doomed.send("shell", "execute_request", {
        "code": "import time; time.sleep(600)", "silent": False, "store_history": True,
        "user_expressions": {}, "allow_stdin": False, "stop_on_error": True})
    await asyncio.sleep(0.5)

    before = call(pool, "GET", f"/api/contents/{NB}", pool.tokens["sam"])[1]["content"]
    pool.kill_host(doomed_host)
    pool.unlist_host(doomed_host)
    # The user of the lost kernel is told, in the cell that was running.
    told = None
    deadline = time.monotonic() + 60
    while told is None and time.monotonic() < deadline:
        msg = await doomed.recv(timeout=max(1, deadline - time.monotonic()))
        assert msg is not None, "the socket closed"
        if msg["msg_type"] == "stream" and LOST_MESSAGE in msg["content"]["text"]:
            told = msg
    assert told is not None and told["parent_header"]["msg_id"] == msg_id

    # The server, the notebook and the other kernel are fine.
    reply, outputs = await survivor.execute("print(6 * 7)")
    assert stdout(outputs) == "42\n"
    status, model = call(pool, "GET", f"/api/contents/{NB}", pool.tokens["sam"])
    assert status == 200 and model["content"] == before
    # Restarting the lost kernel puts it on a live host, and it runs again.
    status, _ = call(pool, "POST", f"/api/kernels/{kernels[doomed_host]}/restart", pool.tokens["sam"])
    assert status == 200
    doomed.ws.close()
    again = await connect(pool, kernels[doomed_host], "sam")
    await ready(again)
    assert pool.host_of(kernels[doomed_host]) == 1

    # A host added while everything runs gets new kernels.
    pool.add_host(3)
    landed = {pool.host_of(start_kernel(pool, "bob", f"course/new{i}.ipynb")) for i in range(2)}
    assert 3 in landed and 2 not in landed
    # A live host taken out of the list gets none, and keeps the kernels it runs.
    pool.unlist_host(1)
    landed = {pool.host_of(start_kernel(pool, "bob", f"course/later{i}.ipynb")) for i in range(2)}
    assert landed == {3}
    reply, outputs = await survivor.execute("print(6 * 7)")
    assert stdout(outputs) == "42\n"
    for client in (survivor, again):
        client.ws.close()


async def _told(client, text, deadline) -> dict:
    """The first stream message of the warden that contains ``text``."""
    while True:
        msg = await client.recv(timeout=max(1, deadline - time.monotonic()))
        assert msg is not None, f"the socket closed before the notice {text!r}"
        if msg["msg_type"] == "stream" and text in msg["content"]["text"]:
            return msg


async def test_max_age_and_idle_cull_of_pool_kernels(pool):
    # Short limits for this test: the warden restarts with them (the gateway and the hosts stay).
    # The culler counts connected kernels too, so that the user still on the socket is told.
    pool.server.stop()
    pool.configure_warden({"kernel_max_age": 20, "kernel_idle_timeout": 6},
                          MappingKernelManager={"cull_interval": 1, "cull_connected": True})
    pool.server.start()

    # sam's kernel runs a long cell (busy: never idle) until its max age.
    aged_id = start_kernel(pool, "sam", "course/aged.ipynb")
    aged = await connect(pool, aged_id, "sam")
    await ready(aged)
    running = await aged.send("shell", "execute_request", {
        "code": "import time; time.sleep(600)", "silent": False, "store_history": True,
        "user_expressions": {}, "allow_stdin": False, "stop_on_error": True})
    # bob's kernel does nothing after its first cell.
    idle_id = start_kernel(pool, "bob", "course/idle.ipynb")
    idle = await connect(pool, idle_id, "bob")
    await ready(idle)

    deadline = time.monotonic() + 60
    told = await _told(idle, "it was idle for longer than the idle timeout of 6 s (c.Warden.kernel_idle_timeout)",
                       deadline)
    assert "start a new kernel" in told["content"]["text"]
    told = await _told(aged, "it reached the maximum kernel age of 20 s (c.Warden.kernel_max_age)", deadline)
    assert told["parent_header"]["msg_id"] == running  # in the cell that was running

    for kernel_id, user, cause in ((idle_id, "bob", "idle"), (aged_id, "sam", "max-age")):
        # Gone from the warden (the notice comes just before the shutdown) and from the
        # gateway; why, kept for its user.
        while call(pool, "GET", f"/api/kernels/{kernel_id}", pool.tokens[user])[0] != 404:
            assert time.monotonic() < deadline, f"kernel {kernel_id} was not shut down"
            await asyncio.sleep(0.2)
        assert kernel_id not in [k["id"] for k in call(pool, "GET", "/api/kernels", pool.tokens[user])[1]]
        status, _ = await asyncio.get_running_loop().run_in_executor(None, _eg_get, pool, kernel_id)
        assert status == 404
        status, end = call(pool, "GET", f"/api/warden/kernels/{kernel_id}/exit", pool.tokens[user])
        assert status == 200 and end["cause"] == cause, end
    for client in (aged, idle):
        client.ws.close()


def _eg_get(pool, kernel_id):
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", pool.eg_port, timeout=60)
    try:
        conn.request("GET", f"/api/kernels/{kernel_id}", headers={"Authorization": f"token {pool.eg_token}"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()
