"""Sandboxed kernels (G4): real kernels started through the sessions API, attacked from inside.

Each attack is code run in a kernel over its websocket, and must fail; the
server must stay healthy. Kernels are slow to start, so each test reuses one
or two of them and runs its attacks as one cell printing JSON.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import time

import pytest

from conftest import auth
from test_enforce_contents import NOTEBOOK
from test_kernel_guard import Client, connect, start_kernel, stdout  # noqa: F401  (fixture)

from jupyter_warden.sandbox import bubblewrap_problem

pytestmark = pytest.mark.skipif(bubblewrap_problem() is not None, reason=f"no sandbox: {bubblewrap_problem()}")

SECRET = "warden-test-secret-in-the-server-environment"


@pytest.fixture
def warden_config():
    return {
        "kernel_memory_limit": 2 * 1024**3,
        "kernel_file_size_limit": 16 * 1024**2,
        "kernel_process_limit": 64,
    }


@pytest.fixture
def people(jp_root_dir, warden, make_user, monkeypatch):
    monkeypatch.setenv("WARDEN_TEST_SECRET", SECRET)
    course = jp_root_dir / "course"
    (course / "hidden").mkdir(parents=True)
    (course / "nb.ipynb").write_text(json.dumps(NOTEBOOK))
    (course / "hidden" / "answers.txt").write_text("the answers")
    (course / "solutions.txt").write_text("solutions")
    (jp_root_dir / "private").mkdir()
    (jp_root_dir / "private" / "secret.ipynb").write_text(json.dumps(NOTEBOOK))
    (jp_root_dir / "top.txt").write_text("top")
    tokens = {n: make_user(n) for n in ("alice", "bob", "nina")}
    warden.policy.grant("course", "user:alice", "read-write-run")
    warden.policy.grant("course/hidden", "user:alice", "none")
    warden.policy.grant("course/solutions.txt", "user:alice", "read")
    warden.policy.grant("course", "user:bob", "read-run")
    warden.policy.grant("private", "user:bob", "read-write-run")
    warden.policy.grant("course/nb.ipynb", "user:nina", "read-run")  # the notebook, not its folder
    return tokens


async def run(client: Client, code: str):
    reply, outputs = await client.execute(code)
    assert reply["content"]["status"] == "ok", reply["content"]
    return json.loads(stdout(outputs).strip().splitlines()[-1])


TRY = '''
import json, os, socket
def attempt(f):
    try:
        r = f()
        return "ALLOWED: %r" % (r,)
    except BaseException as e:
        return "refused: " + type(e).__name__
'''


def refused(results: dict):
    allowed = {k: v for k, v in results.items() if not str(v).startswith("refused")}
    assert not allowed, f"attacks that worked: {allowed}"


def records(warden, action):
    return [r for r in warden.audit.query() if r.action == action]


async def healthy(jp_fetch, token):
    response = await jp_fetch("api", "status", headers=auth(token))
    assert response.code == 200


async def test_attacks_from_inside_a_kernel_fail(jp_fetch, connect, warden, warden_state, jp_root_dir, people):
    kernel = await start_kernel(jp_fetch, people["alice"])
    alice = await connect(kernel, people["alice"])
    state, root, server_pid = str(warden_state), str(jp_root_dir), os.getpid()
    results = await run(alice, TRY + f'''
print(json.dumps({{
  "database": attempt(lambda: open({state!r} + "/warden.db", "rb").read(10)),
  "audit key": attempt(lambda: open({state!r} + "/audit.key").read()),
  "state listing": attempt(lambda: os.listdir({state!r})),
  "other notebook": attempt(lambda: open({root!r} + "/private/secret.ipynb").read()),
  "served root": attempt(lambda: [n for n in os.listdir({root!r}) if n != "course"] or 1/0),
  "root file": attempt(lambda: open({root!r} + "/top.txt").read()),
  "hidden folder": attempt(lambda: os.listdir({root!r} + "/course/hidden") or 1/0),
  "hidden file": attempt(lambda: open({root!r} + "/course/hidden/answers.txt").read()),
  "server environ": attempt(lambda: open("/proc/{server_pid}/environ", "rb").read()),
  "server mem": attempt(lambda: open("/proc/{server_pid}/mem", "rb").read(1)),
  "signal the server": attempt(lambda: os.kill({server_pid}, 0)),
  "secret in own env": attempt(lambda: [v for v in os.environ.values() if {SECRET!r} in v] or 1/0),
  "write /etc": attempt(lambda: open("/etc/pwned", "w").write("x")),
  "write /usr": attempt(lambda: open("/usr/pwned", "w").write("x")),
  "write the venv": attempt(lambda: open(__import__("sys").prefix + "/pwned", "w").write("x")),
  "write the root": attempt(lambda: open({root!r} + "/pwned", "w").write("x")),
  "write read-only file": attempt(lambda: open("solutions.txt", "a").write("x")),
  "tcp to the server": attempt(lambda: socket.create_connection(("127.0.0.1", {warden.serverapp.port}), 2)),
  "tcp outbound": attempt(lambda: socket.create_connection(("1.1.1.1", 53), 2)),
  "root's home": attempt(lambda: [n for n in os.listdir("/root") if n != ".pyenv"] or 1/0),
}}))''')
    refused(results)
    # What the user may do still works: their folder, a private /tmp and home.
    own = await run(alice, '''
import json, os
open("new.txt", "w").write("mine"); open("/tmp/t", "w").write("t"); open(os.path.expanduser("~/h"), "w").write("h")
print(json.dumps({"uid": os.getuid(), "cwd": os.getcwd(), "listing": sorted(os.listdir(".")),
                  "solutions": open("solutions.txt").read(), "pids": sorted(os.listdir("/proc"))}))''')
    assert own["uid"] not in (0, os.getuid())
    assert own["listing"] == ["hidden", "nb.ipynb", "new.txt", "solutions.txt"]
    assert os.listdir(jp_root_dir / "course" / "hidden") == ["answers.txt"]  # untouched outside
    assert own["solutions"] == "solutions"
    assert (jp_root_dir / "course" / "new.txt").read_text() == "mine"
    assert not (jp_root_dir / "pwned").exists()
    start = [r for r in records(warden, "kernel.start") if r.details["kernel_id"] == kernel][0]
    assert start.actor == "alice" and start.path == "course" and start.outcome == "allow"
    assert start.details["uid"] == own["uid"] and start.details["network"] is False
    assert start.details["limits"]["processes"] == 64
    await healthy(jp_fetch, people["alice"])
    status = json.loads((await jp_fetch("api", "warden", "status", headers=auth(people["bob"]))).body)
    assert status["sandbox"] == "bubblewrap" and status["guarantees"]["G4"]["holds"] is True


async def test_limits_hold_and_the_kernel_survives(jp_fetch, connect, warden, people):
    kernel = await start_kernel(jp_fetch, people["alice"])
    alice = await connect(kernel, people["alice"])
    results = await run(alice, TRY + '''
import os, signal, time
def fork_bomb():
    children, error = [], None
    try:
        for _ in range(500):
            pid = os.fork()
            if pid == 0:
                time.sleep(30)
                os._exit(0)
            children.append(pid)
    except OSError as e:
        error = e
    for pid in children:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    if error is None:
        return len(children)
    assert len(children) < 64
    raise error
def huge_file():
    with open("/tmp/huge", "wb") as f:
        for _ in range(64):
            f.write(b"x" * 1024**2)
print(json.dumps({
  "10 GB": attempt(lambda: len(bytearray(10 * 1024**3))),
  "fork bomb": attempt(fork_bomb),
  "huge file": attempt(huge_file),
}))''')
    refused(results)
    assert (await run(alice, "print(6 * 7)")) == 42  # still alive
    await healthy(jp_fetch, people["alice"])


async def test_read_run_user_reads_but_cannot_write_and_uids_differ(jp_fetch, connect, warden, jp_root_dir, people):
    alice_kernel = await start_kernel(jp_fetch, people["alice"])
    bob_kernel = await start_kernel(jp_fetch, people["bob"])
    alice = await connect(alice_kernel, people["alice"])
    bob = await connect(bob_kernel, people["bob"])
    alice_uid = await run(alice, "import os; print(os.getuid())")
    results = await run(bob, TRY + '''
print(json.dumps({
  "write the notebook": attempt(lambda: open("nb.ipynb", "a").write("x")),
  "create a file": attempt(lambda: open("new.txt", "w").write("x")),
  "delete": attempt(lambda: os.remove("nb.ipynb")),
}))''')
    refused(results)
    seen = await run(bob, 'import os, json; print(json.dumps([os.getuid(), sorted(os.listdir(".")), '
                          'json.load(open("nb.ipynb"))["nbformat"]]))')
    bob_uid, listing, nbformat = seen
    assert nbformat == NOTEBOOK["nbformat"]
    assert "hidden" in listing  # bob's grant on course has no exception
    assert bob_uid != alice_uid and 0 not in (bob_uid, alice_uid) and os.getuid() not in (bob_uid, alice_uid)
    # A user who may run one notebook but not read its folder sees that notebook alone.
    nina = await connect(await start_kernel(jp_fetch, people["nina"]), people["nina"])
    assert await run(nina, "import os, json; print(json.dumps(sorted(os.listdir('.'))))") == ["nb.ipynb"]
    refused(await run(nina, TRY + '''
print(json.dumps({"write it": attempt(lambda: open("nb.ipynb", "a").write("x")),
                  "create": attempt(lambda: open("x.txt", "w").write("x"))}))'''))
    # Same user, same uid, on every kernel; kept in the store.
    again = await start_kernel(jp_fetch, people["alice"], path="course/other.ipynb")
    assert await run(await connect(again, people["alice"]), "import os; print(os.getuid())") == alice_uid
    assert warden.sandbox_runner.uids.uid_for("user:alice") == alice_uid
    # Another kernel can't be seen, signalled or traced from inside.
    host_pid = warden.serverapp.kernel_manager.get_kernel(alice_kernel).provisioner.pid
    results = await run(bob, TRY + f'''
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
def ptrace():
    if libc.ptrace(16, {host_pid}, 0, 0) != 0:  # PTRACE_ATTACH
        raise OSError(ctypes.get_errno(), "ptrace")
print(json.dumps({{
  "signal": attempt(lambda: os.kill({host_pid}, 0)),
  "ptrace": attempt(ptrace),
  "other processes": attempt(lambda: [p for p in os.listdir("/proc") if p.isdigit() and int(p) > 50] or 1/0),
}}))''')
    refused(results)


async def test_a_kernel_over_its_cpu_or_age_limit_is_stopped(jp_fetch, connect, warden, people):
    sandbox = warden.sandbox_runner
    sandbox.limits = dataclasses.replace(sandbox.limits, cpu_seconds=1)
    kernel = await start_kernel(jp_fetch, people["alice"])
    alice = await connect(kernel, people["alice"])
    await alice.send("shell", "execute_request", {"code": "while True: pass", "silent": False})
    deadline = time.monotonic() + 20
    while not any(r.details.get("kernel_id") == kernel for r in records(warden, "kernel.exit")):
        assert time.monotonic() < deadline, "the kernel outlived its CPU limit"
        await asyncio.sleep(0.2)
    exit_record = [r for r in records(warden, "kernel.exit") if r.details["kernel_id"] == kernel][0]
    assert exit_record.reason == "cpu-limit", exit_record.details
    await healthy(jp_fetch, people["alice"])

    sandbox.limits = dataclasses.replace(sandbox.limits, cpu_seconds=0)
    sandbox.max_age = 1.5
    old = await start_kernel(jp_fetch, people["bob"])
    bob = await connect(old, people["bob"])
    await bob.send("shell", "execute_request", {"code": "import time; time.sleep(3600)", "silent": False})
    deadline = time.monotonic() + 15
    while old in warden.serverapp.kernel_manager:
        assert time.monotonic() < deadline, "the kernel outlived its maximum age"
        await asyncio.sleep(0.2)
    causes = [r.reason for r in records(warden, "kernel.exit") if r.details["kernel_id"] == old]
    assert causes == ["max-age"]
    await healthy(jp_fetch, people["bob"])


class TestWithoutSandbox:
    @pytest.fixture
    def warden_config(self):
        return {"sandbox": "none"}

    async def test_none_runs_kernels_as_the_server(self, jp_fetch, connect, warden, people):
        assert warden.sandbox_runner is None
        status = json.loads((await jp_fetch("api", "warden", "status", headers=auth(people["bob"]))).body)
        assert status["sandbox"] == "none"
        assert [g["holds"] for g in status["guarantees"].values()] == [False, False]
        assert "not sandboxed" in status["guarantees"]["G4"]["reason"]
        kernel = await start_kernel(jp_fetch, people["alice"])
        alice = await connect(kernel, people["alice"])
        assert await run(alice, "import os; print(os.getuid())") == os.getuid()


def test_state_and_root_stay_hidden_below_a_bound_system_folder(warden, warden_state, jp_root_dir, people):
    """An operator who binds a folder holding the state and the served root still exposes neither."""
    from jupyter_warden.policy.engine import Actor
    from jupyter_warden.sandbox import Sandbox

    outer = jp_root_dir.parent  # holds both state/ and root_dir/
    outer.chmod(0o755)  # as a system folder would be: the kernel's uid passes the modes of bound folders
    runner = warden.sandbox_runner
    sandbox = Sandbox(uids=runner.uids, gid=runner.gid, engine=warden.engine, root_dir=str(jp_root_dir),
                      hidden=[str(warden_state)], system_paths=["/usr", "/bin", "/lib", "/lib64", "/etc", str(outer)],
                      limits=runner.limits, network_subjects=frozenset(), max_entries=100, max_age=0, log=warden.log)
    alice = Actor.for_account(warden.accounts.get_user("alice"))
    launch = sandbox.plan(alice, str(jp_root_dir / "course"), "k-test", "/bin/sh")
    script = (f"ls -A {warden_state}; echo --; ls -A {jp_root_dir}; echo --; ls -A {jp_root_dir}/course; "
              f"echo --; ls -A {outer}")
    seen = subprocess.run(launch.argv(["/bin/sh", "-c", script]), capture_output=True, text=True, timeout=20)
    sandbox.release(launch)
    assert seen.stdout.count("--\n") == 3, (seen.stdout, seen.stderr)
    state, root, course, outer_listing = seen.stdout.split("--\n")
    assert state.split() == []
    assert root.split() == ["course"]
    assert sorted(course.split()) == ["hidden", "nb.ipynb", "solutions.txt"]
    assert (jp_root_dir / "course" / "nb.ipynb").exists()
    assert os.listdir(warden_state)  # it is there, outside
    assert outer_listing.split() and seen.returncode == 0, seen.stderr


def test_network_only_for_those_allowed(warden, jp_root_dir, people):
    from jupyter_warden.policy.engine import Actor

    runner = warden.sandbox_runner
    port = warden.serverapp.port
    probe = ["/usr/bin/python3", "-c",
             f"import socket; socket.create_connection(('127.0.0.1', {port}), 2); print('connected')"]
    results = {}
    for name, allowed in (("alice", frozenset()), ("bob", frozenset({"user:bob"}))):
        runner.network_subjects = allowed
        launch = runner.plan(Actor.for_account(warden.accounts.get_user(name)), str(jp_root_dir / "course"),
                             f"net-{name}", "/usr/bin/python3")
        done = subprocess.run(launch.argv(probe), capture_output=True, text=True, timeout=20)
        runner.release(launch)
        results[name] = (launch.network, done.stdout.strip(), done.returncode)
    assert results["alice"][:2] == (False, "") and results["alice"][2] != 0
    assert results["bob"] == (True, "connected", 0)


async def test_a_sandboxed_kernel_restarts_in_its_sandbox(jp_fetch, connect, warden, people):
    kernel = await start_kernel(jp_fetch, people["alice"])
    before = await run(await connect(kernel, people["alice"]), "import os; print(os.getuid())")
    restarted = await jp_fetch(
        "api", "kernels", kernel, "restart", method="POST", body="", headers=auth(people["alice"])
    )
    assert restarted.code == 200
    # The connection file was written afresh (the server's, 0600) and handed
    # to the kernel again: same uid, same view, code runs.
    after = await run(await connect(kernel, people["alice"]), "import os; print(os.getuid())")
    assert after == before and after != os.getuid()
