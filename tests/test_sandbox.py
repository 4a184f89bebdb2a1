"""Sandboxed kernels (G4): real kernels started through the sessions API, attacked from inside.

Each attack is code run in a kernel over its websocket, and must fail; the
server must stay healthy. Kernels are slow to start, so each test reuses one
or two of them and runs its attacks as one cell printing JSON.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import os
import subprocess
import time

import pytest

from conftest import auth
from test_enforce_contents import NOTEBOOK
from test_kernel_guard import Client, connect, start_kernel, stdout  # noqa: F401  (fixture)

from jupyter_warden.policy.engine import Actor
from jupyter_warden.sandbox import bubblewrap_problem, watch
from jupyter_warden.store.models import utcnow

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
    for name in ("alice", "bob", "nina"):
        (jp_root_dir / "users" / name).mkdir(parents=True)
        (jp_root_dir / "users" / name / "notes.txt").write_text(f"{name}'s notes")
    (jp_root_dir / "users" / "alice" / "locked").mkdir()
    (jp_root_dir / "users" / "alice" / "locked" / "key.txt").write_text("locked away")
    tokens = {n: make_user(n) for n in ("alice", "bob", "nina")}
    warden.policy.grant("course", "user:alice", "read-write-run")
    warden.policy.grant("course/hidden", "user:alice", "none")
    warden.policy.grant("course/solutions.txt", "user:alice", "read")
    warden.policy.grant("course", "user:bob", "read-run")
    warden.policy.grant("private", "user:bob", "read-write-run")
    warden.policy.grant("course/nb.ipynb", "user:nina", "read-run")  # the notebook, not its folder
    warden.policy.grant("users/alice", "user:alice", "read-write-run")
    warden.policy.grant("users/alice/locked", "user:alice", "none")
    warden.policy.grant("users/bob", "user:bob", "read")  # nina has no grant on hers: not bound
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
  "master key": attempt(lambda: open({state!r} + "/master.key").read()),
  "server's open files": attempt(lambda: os.listdir("/proc/{server_pid}/fd")),
  "server's root": attempt(lambda: os.listdir("/proc/{server_pid}/root/")),
  "other workspace": attempt(lambda: open({root!r} + "/users/bob/notes.txt").read()),
  "state listing": attempt(lambda: os.listdir({state!r})),
  "other notebook": attempt(lambda: open({root!r} + "/private/secret.ipynb").read()),
  "served root": attempt(lambda: [n for n in os.listdir({root!r}) if n not in ("course", "users")] or 1/0),
  "other users' workspaces": attempt(lambda: [n for n in os.listdir({root!r} + "/users") if n != "alice"] or 1/0),
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
    assert (warden_state / "master.key").stat().st_size > 0  # there to be stolen, outside
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
    assert status["guarantees"]["G6"]["holds"] is True


async def test_limits_hold_and_the_kernel_survives(jp_fetch, connect, warden, jp_root_dir, people):
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
def huge_file(where):
    with open(where, "wb") as f:
        for _ in range(64):
            f.write(b"x" * 1024**2)
print(json.dumps({
  "10 GB": attempt(lambda: len(bytearray(10 * 1024**3))),
  "fork bomb": attempt(fork_bomb),
  "huge file in /tmp": attempt(lambda: huge_file("/tmp/huge")),
  "huge file on disk": attempt(lambda: huge_file("huge.bin")),
}))''')
    refused(results)
    assert (jp_root_dir / "course" / "huge.bin").stat().st_size <= 16 * 1024**2  # stopped at the limit
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


# Fork (or start threads) until the process limit refuses, letting the error through; then clean up.
FORK_BOMB = """
import os, signal, time
children = []
try:
    for _ in range(500):
        pid = os.fork()
        if pid == 0:
            time.sleep(30)
            os._exit(0)
        children.append(pid)
finally:
    for pid in children:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
"""
OPEN_FILES = """
files = []
try:
    while True:
        files.append(open("/dev/null"))
finally:
    for f in files:
        f.close()
"""
THREAD_BOMB = """
import threading
release = threading.Event()
try:
    for _ in range(500):
        threading.Thread(target=release.wait, daemon=True).start()
finally:
    release.set()
"""


async def notice_in_cell(client: Client, msg_id: str | None, words: str, timeout: float = 30) -> str:
    """The warden's stderr notice sent into the running cell ``msg_id`` (as JupyterLab would show it)."""
    deadline = time.monotonic() + timeout
    while True:
        msg = await client.recv(max(0.1, deadline - time.monotonic()))
        assert msg is not None, "the socket closed before the notice came"
        text = msg["content"].get("text", "") if msg["msg_type"] == "stream" else ""
        if text.startswith("[jupyter-warden]") and msg["parent_header"].get("msg_id") == msg_id:
            assert words in text, text
            assert msg["content"]["name"] == "stderr"
            return text


async def until_closed(client: Client, timeout: float = 30):
    """(every message until the server closes the socket, the close code, the close reason)."""
    seen, deadline = [], time.monotonic() + timeout
    while True:
        msg = await client.recv(max(0.1, deadline - time.monotonic()))
        if msg is None:
            return seen, client.ws.close_code, client.ws.close_reason
        seen.append(msg)


def states(messages) -> list[str]:
    return [m["content"]["execution_state"] for m in messages if m["msg_type"] == "status"]


async def exit_of(jp_fetch, kernel, token):
    response = await jp_fetch("api", "warden", "kernels", kernel, "exit", headers=auth(token), raise_error=False)
    return response.code, json.loads(response.body) if response.code == 200 else None


async def test_the_user_is_told_which_memory_or_file_limit_failed_their_code(jp_fetch, connect, warden, people):
    bystander = await connect(await start_kernel(jp_fetch, people["bob"]), people["bob"])
    alice = await connect(await start_kernel(jp_fetch, people["alice"]), people["alice"])
    for code, ename, words in (("x = bytearray(10 * 1024**3)", "MemoryError", "at most 2 GiB of memory"),
                               ("open('/tmp/big', 'wb').write(b'x' * 32 * 1024**2)", "OSError",
                                "files of at most 16 MiB"),
                               (FORK_BOMB, "BlockingIOError", "at most 64 processes and threads together "
                                                              "(c.Warden.kernel_process_limit)"),
                               (THREAD_BOMB, "RuntimeError", "at most 64 processes and threads together"),
                               (OPEN_FILES, "OSError", "at most 1024 files open per process "
                                                       "(c.Warden.kernel_open_files_limit)")):
        reply, outputs = await alice.execute(code)
        assert reply["content"]["status"] == "error" and reply["content"]["ename"] == ename, reply["content"]
        notes = [m["content"]["text"] for m in outputs if m["msg_type"] == "stream"]
        assert len(notes) == 1 and words in notes[0] and notes[0].startswith("[jupyter-warden]"), (notes, reply["content"])
    # A shell's own words for a refused fork, in stderr, get the note too (once per cell).
    reply, outputs = await alice.execute(
        "import sys\nfor _ in range(3): print('bash: fork: retry: Resource temporarily unavailable', "
        "file=sys.stderr, flush=True)")
    notes = [m["content"]["text"] for m in outputs if m["content"].get("text", "").startswith("[jupyter-warden]")]
    assert len(notes) == 1 and "at most 64 processes" in notes[0], notes
    # Where the traceback shows the fork, the note says so for certain.
    reply, outputs = await alice.execute("import subprocess\n" + FORK_BOMB.replace(
        "pid = os.fork()", "pid = subprocess.Popen(['/bin/sleep', '30']).pid"))
    assert reply["content"]["ename"] == "BlockingIOError", reply["content"]
    notes = [m["content"]["text"] for m in outputs if m["msg_type"] == "stream"]
    assert len(notes) == 1 and notes[0].startswith("[jupyter-warden] A new process or thread was refused"), notes
    assert await run(alice, "print(6 * 7)") == 42  # the kernel lives on
    assert await run(bystander, "print(6 * 7)") == 42  # and so does everyone else's
    await healthy(jp_fetch, people["bob"])


async def test_a_kernel_over_its_cpu_or_age_limit_is_stopped_and_told(jp_fetch, connect, warden, people):
    sandbox = warden.sandbox_runner
    bystander = await connect(await start_kernel(jp_fetch, people["bob"], path="private/secret.ipynb"),
                              people["bob"])
    sandbox.limits = dataclasses.replace(sandbox.limits, cpu_seconds=1)
    kernel = await start_kernel(jp_fetch, people["alice"])
    alice = await connect(kernel, people["alice"])
    spin = await alice.send("shell", "execute_request", {"code": "while True: pass", "silent": False})
    text = (await notice_in_cell(alice, spin, "CPU time limit of 1 s")).strip()
    assert "restarts it" in text
    exit_record = [r for r in records(warden, "kernel.exit") if r.details["kernel_id"] == kernel][0]
    assert exit_record.reason == "cpu-limit", exit_record.details
    # The REST kernel model and the warden's endpoint say why; not to another user.
    model = json.loads((await jp_fetch("api", "kernels", kernel, headers=auth(people["alice"]))).body)
    assert model["reason"] == text
    code, end = await exit_of(jp_fetch, kernel, people["alice"])
    assert code == 200 and end["cause"] == "cpu-limit" and end["message"] == text
    assert (await exit_of(jp_fetch, kernel, people["bob"]))[0] == 404
    # The server and the other user's kernel carry on.
    await healthy(jp_fetch, people["alice"])
    assert await run(bystander, "print(6 * 7)") == 42

    sandbox.limits = dataclasses.replace(sandbox.limits, cpu_seconds=0)
    sandbox.max_age = 1.5
    old = await start_kernel(jp_fetch, people["bob"])
    bob = await connect(old, people["bob"])
    sleeping = await bob.send("shell", "execute_request", {"code": "import time; time.sleep(3600)", "silent": False})
    text = (await notice_in_cell(bob, sleeping, "maximum kernel age of 1.5 s")).strip()
    # Then a "dead" status, and the websocket closes normally (no reconnecting) saying why.
    seen, close_code, close_reason = await until_closed(bob)
    assert "dead" in states(seen)
    assert close_code == 1000
    assert close_reason == "The kernel was stopped: it reached the maximum kernel age of 1.5 s (c.Warden.kernel_max_age)"
    deadline = time.monotonic() + 15
    while old in warden.serverapp.kernel_manager:
        assert time.monotonic() < deadline, "the kernel outlived its maximum age"
        await asyncio.sleep(0.2)
    causes = [r.reason for r in records(warden, "kernel.exit") if r.details["kernel_id"] == old]
    assert causes == ["max-age"]
    code, end = await exit_of(jp_fetch, old, people["bob"])
    assert code == 200 and end["cause"] == "max-age" and end["message"] == text
    await healthy(jp_fetch, people["bob"])
    assert await run(bystander, "print(6 * 7)") == 42


async def test_an_idle_kernel_is_culled_and_its_users_told_why(jp_fetch, connect, warden, people):
    kernel_manager = warden.serverapp.kernel_manager
    kernel_manager.cull_interval, kernel_manager.cull_connected = 1, True  # read when the culler starts
    bob_kernel = await start_kernel(jp_fetch, people["bob"], path="private/secret.ipynb")
    bystander = await connect(bob_kernel, people["bob"])
    kernel = await start_kernel(jp_fetch, people["alice"])
    alice = await connect(kernel, people["alice"])
    assert await run(alice, "print(6 * 7)") == 42
    # bob keeps his kernel busy; alice's goes idle past a 1 s timeout (the culler reads it every time).
    busy = await bystander.send("shell", "execute_request", {"code": "import time; time.sleep(3600)", "silent": False})
    while True:
        msg = await bystander.recv()
        if msg["msg_type"] == "status" and msg["parent_header"].get("msg_id") == busy \
                and msg["content"]["execution_state"] == "busy":
            break
    kernel_manager.cull_idle_timeout = 1
    text = (await notice_in_cell(alice, None, "idle for longer than the idle timeout of 1 s")).strip()
    assert "It was shut down; start a new kernel to go on." in text
    seen, close_code, close_reason = await until_closed(alice)
    assert "dead" in states(seen) and close_code == 1000
    assert close_reason.startswith("The kernel was stopped: it was idle for longer than the idle timeout of 1 s")
    exits = [r for r in records(warden, "kernel.exit") if r.details["kernel_id"] == kernel]
    assert [r.reason for r in exits] == ["idle"] and exits[0].details["detail"] == "idle for over 1 s"
    code, end = await exit_of(jp_fetch, kernel, people["alice"])
    assert code == 200 and end["cause"] == "idle" and end["message"] == text
    # A kernel the user shuts down is not explained: it ended as asked.
    kernel_manager.cull_idle_timeout = 3600
    other = await start_kernel(jp_fetch, people["alice"], path="course/other.ipynb")
    assert await run(await connect(other, people["alice"]), "print(1)") == 1
    assert (await jp_fetch("api", "kernels", other, method="DELETE", headers=auth(people["alice"]))).code == 204
    assert [r.reason for r in records(warden, "kernel.exit") if r.details["kernel_id"] == other] == ["shutdown"]
    assert (await exit_of(jp_fetch, other, people["alice"]))[0] == 404
    await healthy(jp_fetch, people["bob"])
    assert bob_kernel in kernel_manager  # busy: never culled


async def test_a_right_below_a_mount_that_ends_by_its_window_stops_the_kernel_at_the_end(
        jp_fetch, connect, warden, people, monkeypatch):
    """A time window's end is followed at its boundary, not at the next full check of every path."""
    monkeypatch.setattr(watch, "FULL_CHECK_INTERVAL", 3600.0)  # no backstop: only the window's timer
    kernel = await start_kernel(jp_fetch, people["bob"])
    bob = await connect(kernel, people["bob"])
    assert await run(bob, "import os, json; print(json.dumps(os.listdir('hidden')))") == ["answers.txt"]
    # course/hidden, readable like course (so not a mount of its own), stays so for bob for a
    # few seconds only: his own grant there ends, and everyone's `none` beside it remains.
    ends = utcnow() + dt.timedelta(seconds=3)
    warden.policy.grant("course/hidden", "user:bob", "read", not_after=ends)
    warden.policy.grant("course/hidden", "authenticated", "none")
    actor = Actor.for_account(warden.accounts.get_user("bob"))
    assert warden.engine.check(actor, "read", "course/hidden").allowed
    sleeping = await bob.send("shell", "execute_request", {"code": "import time; time.sleep(3600)", "silent": False})
    text = await notice_in_cell(bob, sleeping, "bob may no longer read 'course/hidden'", timeout=60)
    assert utcnow() >= ends  # not before the window ended
    assert "shut down" in text
    seen, close_code, _ = await until_closed(bob)
    assert close_code == 1000 and "dead" in states(seen)
    exit_record = [r for r in records(warden, "kernel.exit") if r.details["kernel_id"] == kernel][0]
    assert exit_record.reason == "access-lost"
    assert exit_record.details["detail"] == "bob may no longer read 'course/hidden'"


async def test_a_kernel_whose_user_lost_a_right_on_its_mounts_is_stopped(jp_fetch, connect, warden, make_user,
                                                                          people):
    """The mounts are made at start; when the policy takes a right they rely on, the kernel stops (G7)."""
    kernel = await start_kernel(jp_fetch, people["alice"])
    alice = await connect(kernel, people["alice"])
    bob_kernel = await start_kernel(jp_fetch, people["bob"])
    bob = await connect(bob_kernel, people["bob"])
    loop = await alice.send("shell", "execute_request", {
        "code": "import time\nwhile True:\n    open('log.txt', 'a').write('x'); time.sleep(0.05)", "silent": False})
    await asyncio.sleep(1)
    # alice keeps run on the notebook (her websocket stays), but loses write on its folder.
    warden.policy.grant("course", "user:alice", "read-run")
    taken = time.monotonic()
    text = await notice_in_cell(alice, loop, "alice may no longer write 'course'")
    assert "shut down" in text
    while kernel in warden.serverapp.kernel_manager:
        assert time.monotonic() - taken < 10, "the kernel kept its writable mount"
        await asyncio.sleep(0.1)
    exit_record = [r for r in records(warden, "kernel.exit") if r.details["kernel_id"] == kernel][0]
    assert exit_record.reason == "access-lost" and "write 'course'" in exit_record.details["detail"]
    code, end = await exit_of(jp_fetch, kernel, people["alice"])
    assert code == 200 and end["cause"] == "access-lost"
    # bob's kernel in the same folder (his rights unchanged) carries on...
    assert await run(bob, "print(6 * 7)") == 42
    # ...until he loses read on a path below it that has no mount of its own.
    warden.policy.grant("course/hidden", "user:bob", "none")
    deadline = time.monotonic() + 10
    while bob_kernel in warden.serverapp.kernel_manager:
        assert time.monotonic() < deadline, "the kernel kept a path its user may no longer read"
        await asyncio.sleep(0.1)
    detail = [r.details.get("detail") for r in records(warden, "kernel.exit") if r.actor == "bob"]
    assert detail == ["bob may no longer read 'course/hidden'"]

    # Losing read on a file bound on its own (nina's notebook) stops that kernel too.
    nina_kernel = await start_kernel(jp_fetch, people["nina"])
    assert await run(await connect(nina_kernel, people["nina"]), "print(1)") == 1
    warden.policy.revoke("course/nb.ipynb", "user:nina")
    deadline = time.monotonic() + 10
    while nina_kernel in warden.serverapp.kernel_manager:
        assert time.monotonic() < deadline, "the kernel kept a mount its user may no longer read"
        await asyncio.sleep(0.1)
    assert (await exit_of(jp_fetch, nina_kernel, people["nina"]))[1]["cause"] == "access-lost"

    # A removed account's kernels stop too.
    dora_token = make_user("dora")
    warden.policy.grant("course", "user:dora", "read-run")
    dora_kernel = await start_kernel(jp_fetch, dora_token)
    assert await run(await connect(dora_kernel, dora_token), "print(1)") == 1
    warden.accounts.remove_user("dora")
    deadline = time.monotonic() + 10
    while dora_kernel in warden.serverapp.kernel_manager:
        assert time.monotonic() < deadline, "a removed account's kernel kept running"
        await asyncio.sleep(0.1)
    assert [r.details.get("detail") for r in records(warden, "kernel.exit") if r.actor == "dora"] \
        == ["the account dora was removed"]


class TestWithoutSandbox:
    @pytest.fixture
    def warden_config(self):
        return {"sandbox": "none"}

    async def test_none_runs_kernels_as_the_server(self, jp_fetch, connect, warden, people):
        assert warden.sandbox_runner is None
        status = json.loads((await jp_fetch("api", "warden", "status", headers=auth(people["bob"]))).body)
        assert status["sandbox"] == "none"
        assert set(status["guarantees"]) >= {"G4", "G5", "G6"}
        assert not any(g["holds"] for g in status["guarantees"].values())
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


async def test_the_users_own_workspace_is_bound_at_their_rights(jp_fetch, connect, warden, jp_root_dir, people):
    """c.Warden.workspace_dir ("users/{user}"): in every kernel of its user, at the policy's rights."""
    root = str(jp_root_dir)
    alice = await connect(await start_kernel(jp_fetch, people["alice"]), people["alice"])
    seen = await run(alice, TRY + f'''
ws = os.environ["WARDEN_WORKSPACE"]
open(ws + "/from-kernel.txt", "w").write("made in course's kernel")
print(json.dumps({{"ws": ws, "listing": sorted(os.listdir(ws)), "notes": open(ws + "/notes.txt").read(),
  "locked": attempt(lambda: open(ws + "/locked/key.txt").read()),
  "bob's": attempt(lambda: os.listdir({root!r} + "/users/bob")),
  "users": sorted(os.listdir({root!r} + "/users"))}}))''')
    assert seen["ws"] == f"{root}/users/alice"
    assert seen["notes"] == "alice's notes" and seen["listing"] == ["from-kernel.txt", "locked", "notes.txt"]
    assert seen["locked"].startswith("refused") and seen["bob's"].startswith("refused")
    assert seen["users"] == ["alice"]
    assert (jp_root_dir / "users" / "alice" / "from-kernel.txt").read_text() == "made in course's kernel"

    # bob may only read his workspace: bound read-only.
    bob = await connect(await start_kernel(jp_fetch, people["bob"]), people["bob"])
    results = await run(bob, TRY + '''
ws = os.environ["WARDEN_WORKSPACE"]
print(json.dumps({"read": open(ws + "/notes.txt").read(),
                  "write": attempt(lambda: open(ws + "/notes.txt", "a").write("x")),
                  "create": attempt(lambda: open(ws + "/new.txt", "w").write("x"))}))''')
    assert results.pop("read") == "bob's notes"
    refused(results)
    # nina has no right on users/nina: it is not bound, and nothing says it exists.
    nina = await connect(await start_kernel(jp_fetch, people["nina"]), people["nina"])
    assert await run(nina, TRY + f'''
print(json.dumps([os.environ.get("WARDEN_WORKSPACE"), attempt(lambda: os.listdir({root!r} + "/users"))]))''') \
        == [None, "refused: FileNotFoundError"]


def test_a_notebook_inside_the_workspace_sees_the_workspace_once(warden, jp_root_dir, people):
    """The notebook's folder lies in the workspace: one bind of the workspace, at the user's rights."""
    from jupyter_warden.policy.engine import Actor

    project = jp_root_dir / "users" / "alice" / "project"
    project.mkdir()
    (project / "nb.ipynb").write_text("{}")
    runner = warden.sandbox_runner
    alice = Actor.for_account(warden.accounts.get_user("alice"))
    launch = runner.plan(alice, str(project), "ws-test", "/bin/sh")
    ws = jp_root_dir / "users" / "alice"
    script = (f"pwd; ls -A {ws}; echo --; ls -A {ws}/locked; echo --; echo hi > {ws}/project/made.txt && echo wrote; "
              f"echo --; ls -A {jp_root_dir}/users")
    seen = subprocess.run(launch.argv(["/bin/sh", "-c", script]), capture_output=True, text=True, timeout=20)
    runner.release(launch)
    assert seen.stdout.count("--\n") == 3, (seen.stdout, seen.stderr)
    top, locked, wrote, users = seen.stdout.split("--\n")
    assert top.split() == [str(project), "locked", "notes.txt", "project"]
    assert locked.split() == []  # `none` below the workspace: an empty folder
    assert wrote.split() == ["wrote"] and (project / "made.txt").read_text() == "hi\n"
    assert users.split() == ["alice"]
    assert launch.workspace == str(ws)
    assert sum(1 for a in launch.mounts if a == str(ws)) == 2  # one --bind SRC DEST, not two
