"""Faults: the server killed mid-write, a full disk. Nothing acknowledged is lost, nothing is half-written.

Each test runs a real ``jupyter-warden serve`` in its own process, so that it
can be killed with SIGKILL while requests are in flight, then started again
on the same state and root.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import threading
import time

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from jupyter_warden.audit.log import AuditLog, load_or_create_key
from jupyter_warden.sandbox import bubblewrap_problem
from jupyter_warden.store import Store
from server_process import ServerProcess
from test_kernel_guard import connect  # noqa: F401  (fixture)


@pytest.fixture
def server(tmp_path, warden_db_url):
    root = tmp_path / "root"
    root.mkdir()
    s = ServerProcess(tmp_path, warden_db_url, root)
    s.add_admin()
    yield s
    s.stop()


def _verify_audit(server: ServerProcess):
    store = Store(server.db_url)
    try:
        result = AuditLog(store, load_or_create_key(server.state)).verify()
        assert result.ok, result
        return store
    except BaseException:
        store.dispose()
        raise


def test_sigkill_during_grant_changes_loses_no_acknowledged_grant(server):
    server.start()
    (server.root / "course").mkdir()
    acknowledged: list[str] = []
    stop = threading.Event()

    def make_grants(worker: int):
        i = 0
        while not stop.is_set():
            path = f"course/w{worker}-{i}.ipynb"
            try:
                status, body = server.request(
                    "POST", "/api/warden/grants", {"path": path, "subject": "authenticated", "level": "read"}, timeout=5
                )
            except OSError:
                return  # the server is gone
            assert status in (200, 201), body
            acknowledged.append(path)
            i += 1

    workers = [threading.Thread(target=make_grants, args=(w,)) for w in range(2)]
    for w in workers:
        w.start()
    deadline = time.monotonic() + 60
    while len(acknowledged) < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    server.kill()
    stop.set()
    for w in workers:
        w.join(timeout=30)
    assert len(acknowledged) >= 20

    # Every acknowledged grant is there, with its audit record, and the chain verifies.
    store = _verify_audit(server)
    try:
        from jupyter_warden.policy.changes import Policy

        policy = Policy(store)
        grants = [g for path in {*acknowledged, *(f"course/w{w}-{len(acknowledged) + i}.ipynb" for w in range(2) for i in range(3))}
                  for g in policy.grants_on(path, inherited=False)]
        assert set(acknowledged) <= {g.path for g in grants}
        audit = AuditLog(store, load_or_create_key(server.state))
        audited = {r.grant_id for r in audit.query(under="course") if r.action == "grant.create" and r.outcome == "allow"}
        assert {g.id for g in grants} <= audited, "a grant without its audit record"
    finally:
        store.dispose()

    # The server starts again on the same state and serves the grants.
    server.start()
    for path in acknowledged[-3:]:
        status, body = server.request("GET", f"/api/warden/grants?path={path}")
        assert status == 200
        assert [g["subject"] for g in body["grants"] if not g["inherited"]] == ["authenticated"]


def _notebook(version: int, cells: int = 400) -> dict:
    nb = new_notebook(cells=[new_code_cell(f"# version {version}\n" + "x = 1\n" * 50) for _ in range(cells)])
    nb.metadata["version"] = version
    return json.loads(nbformat.writes(nb))


def test_sigkill_during_a_save_leaves_the_old_or_the_new_notebook_whole(server):
    server.start()
    path = server.root / "work.ipynb"
    status, _ = server.request("PUT", "/api/contents/work.ipynb",
                               {"type": "notebook", "format": "json", "content": _notebook(0)})
    assert status in (200, 201)
    acknowledged = [0]
    stop = threading.Event()

    def save():
        version = 1
        while not stop.is_set():
            try:
                status, _ = server.request("PUT", "/api/contents/work.ipynb",
                                           {"type": "notebook", "format": "json", "content": _notebook(version)},
                                           timeout=10)
            except OSError:
                return
            if status == 200:
                acknowledged.append(version)
            version += 1

    worker = threading.Thread(target=save)
    worker.start()
    deadline = time.monotonic() + 60
    while len(acknowledged) < 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    server.kill()
    stop.set()
    worker.join(timeout=30)
    assert len(acknowledged) >= 4

    # jupyter_server writes in place after copying the old file aside; a
    # write cut short is undone from that copy when the file is next read.
    server.start()
    status, model = server.request("GET", "/api/contents/work.ipynb")
    assert status == 200
    version = model["content"]["metadata"]["version"]
    # The last acknowledged save, or one the server had begun but not acknowledged.
    assert version >= acknowledged[-1]
    assert len(model["content"]["cells"]) == 400
    on_disk = nbformat.read(path, as_version=4)  # whole, valid JSON
    nbformat.validate(on_disk)
    assert on_disk.metadata["version"] == version


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux's unshare")
def test_a_full_disk_refuses_the_save_clearly_and_keeps_the_old_file(tmp_path, warden_db_url):
    if os.geteuid() != 0:
        pytest.fail("this test mounts a small tmpfs and must run as root, as CI does")
    root = tmp_path / "root"
    root.mkdir()
    # A 2 MB file system, private to the server's mount namespace.
    wrap = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            f'mount -t tmpfs -o size=2m tmpfs "{root}" && exec "$0" "$@"']
    server = ServerProcess(tmp_path, warden_db_url, root, wrap=wrap)
    server.add_admin()
    server.start()
    try:
        small = {"type": "notebook", "format": "json", "content": _notebook(1, cells=5)}
        assert server.request("PUT", "/api/contents/work.ipynb", small)[0] in (200, 201)
        big = {"type": "notebook", "format": "json", "content": _notebook(2, cells=8000)}
        status, body = server.request("PUT", "/api/contents/work.ipynb", big)
        assert status == 507, (status, body)
        assert "disk is full" in body["message"] and "work.ipynb" in body["message"]
        assert "not saved" in body["message"]
        # The old version is intact and served; no partial file is left behind.
        status, model = server.request("GET", "/api/contents/work.ipynb")
        assert status == 200 and model["content"]["metadata"]["version"] == 1
        status, listing = server.request("GET", "/api/contents/")
        assert [e["name"] for e in listing["content"]] == ["work.ipynb"]
        # The server is healthy and the audit chain intact.
        assert server.request("GET", "/api/warden/status")[0] == 200
    finally:
        server.stop()
    _verify_audit(server).dispose()




async def test_reads_during_saves_never_see_a_half_written_notebook(jp_fetch, jp_root_dir, warden, make_user):
    """jupyter_server saves in place, in a worker thread; a read meanwhile must wait, not fail (or undo the save)."""
    from test_enforce_contents import requester

    token = make_user("alice")
    (jp_root_dir / "work").mkdir()
    warden.policy.grant("work", "user:alice", "read-write")
    call = requester(jp_fetch, token)
    assert (await call("api", "contents", "work", "nb.ipynb", method="PUT",
                       body={"type": "notebook", "format": "json", "content": _notebook(0)})).code == 201

    async def save(version):
        response = await call("api", "contents", "work", "nb.ipynb", method="PUT",
                              body={"type": "notebook", "format": "json", "content": _notebook(version)})
        return response.code, version

    async def read():
        response = await call("api", "contents", "work", "nb.ipynb")
        return response.code, (json.loads(response.body)["content"]["metadata"]["version"]
                               if response.code == 200 else response.body[:200])

    results = await asyncio.gather(*(save(v) if i % 3 == 0 else read()
                                     for i, v in enumerate(range(1, 31))))
    assert [r for r in results if r[0] != 200] == []
    saved = {version for i, (_, version) in enumerate(results) if i % 3 == 0}
    assert (await read())[1] in saved  # a whole notebook of one of the saves (they ran in any order)
    nbformat.validate(nbformat.read(jp_root_dir / "work" / "nb.ipynb", as_version=4))
    left = {p.name for p in (jp_root_dir / "work").iterdir()} - {"nb.ipynb", ".ipynb_checkpoints"}
    assert not left, left


# -- the server killed during seals ---------------------------------------------------


def _assignment(i: int) -> str:
    """A notebook with one sealed-tagged checking cell holding a marker, and enough filler to take a while."""
    nb = new_notebook(cells=[new_code_cell("answer = 42")]
                      + [new_code_cell(f"# filler {j}\n" + "y = 1\n" * 300) for j in range(150)]
                      + [new_code_cell(f"assert 6 * 7 == 42  # SECRET-{i:02d}-END\nprint('check {i} passed')",
                                       metadata={"tags": ["sealed"]})])
    return nbformat.writes(nb)


def _run_cell(server: ServerProcess, token: str, path: str, code: str) -> tuple[str, str]:
    """(reply status, stdout) of ``code`` run by ``token``'s user in a kernel of their own for ``path``."""
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    status, session = server.request("POST", "/api/sessions", {"path": path, "type": "notebook", "name": "",
                                                                "kernel": {"name": "python3"}}, token=token)
    assert status == 201, session

    async def go():
        url = f"ws://127.0.0.1:{server.port}/api/kernels/{session['kernel']['id']}/channels"
        ws = await websocket_connect(HTTPRequest(url, headers={"Authorization": f"token {token}"},
                                                 connect_timeout=90, request_timeout=90))
        header = {"msg_id": "run-1", "msg_type": "execute_request", "session": "s", "username": "", "version": "5.4"}
        await ws.write_message(json.dumps({"header": header, "parent_header": {}, "metadata": {}, "channel": "shell",
                                           "content": {"code": code, "silent": False, "store_history": True}}))
        out, reply, idle = "", None, False
        while reply is None or not idle:
            msg = json.loads(await asyncio.wait_for(ws.read_message(), 90))
            if msg["parent_header"].get("msg_id") != "run-1":
                continue
            kind = msg["header"]["msg_type"]
            if kind == "stream":
                out += msg["content"]["text"]
            elif kind == "execute_reply":
                reply = msg["content"]["status"]
            elif kind == "status":
                idle = msg["content"]["execution_state"] == "idle"
        ws.close()
        return reply, out

    return asyncio.run(go())


def test_sigkill_during_seals_leaves_each_notebook_old_or_sealed_and_the_cells_run(server):
    root, count = server.root, 12
    (root / "course").mkdir()
    originals = {}
    for i in range(count):
        path = f"course/a{i:02d}.ipynb"
        originals[path] = _assignment(i)
        (root / path).write_text(originals[path])
    server.cli("keys", "create", "checks")
    server.cli("keys", "grant", "checks", "--to", "authenticated")
    server.cli("user", "add", "sam", "--password-stdin", stdin="long-enough-password\n")
    sam = server.cli("user", "token", "sam").stdout.split()[0]
    server.cli("grant", "course", "--to", "user:sam", "--level", "read-run")
    server.start()
    for path in originals:  # a checkpoint each: a clear copy the seal must take away first
        assert server.request("POST", f"/api/contents/{path}/checkpoints")[0] == 201

    todo = list(originals)
    acknowledged: list[str] = []
    lock = threading.Lock()

    def seal():
        while True:
            with lock:
                if not todo:
                    return
                path = todo.pop(0)
            try:
                status, body = server.request("POST", "/api/warden/seal", {"path": path, "key": "checks"}, timeout=30)
            except OSError:
                return  # the server is gone
            assert status == 200, body
            acknowledged.append(path)

    workers = [threading.Thread(target=seal) for _ in range(2)]
    for w in workers:
        w.start()
    deadline = time.monotonic() + 60
    while len(acknowledged) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    server.kill()  # two seals are in flight
    for w in workers:
        w.join(timeout=30)
    assert 3 <= len(acknowledged) < count, acknowledged

    # On disk, before anything reads it again: each notebook is the old one, byte for byte,
    # or the whole sealed one; a sealed notebook's clear source is nowhere in the served tree
    # (no checkpoint, no .~ copy, no temporary file).
    sealed = set()
    files = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    for path, text in originals.items():
        i = int(path[-8:-6])
        on_disk = (root / path).read_text()
        if on_disk == text:
            continue
        nb = nbformat.reads(on_disk, as_version=4)
        nbformat.validate(nb)
        old = nbformat.reads(text, as_version=4)
        assert len(nb.cells) == len(old.cells), f"{path} is half-written"
        assert [c.source for c in nb.cells[:-1]] == [c.source for c in old.cells[:-1]], path
        assert nb.cells[-1].source.startswith("%%warden_sealed v1 key=checks"), path
        sealed.add(path)
        leaks = [str(p) for p, data in files.items() if f"SECRET-{i:02d}-END".encode() in data]
        assert not leaks, f"{path} is sealed, but its clear source is still in {leaks}"
    assert set(acknowledged) <= sealed, "an acknowledged seal was lost"

    # Every seal on disk has its audit record, the chain verifies, and the key and grants are whole.
    store = _verify_audit(server)
    try:
        audit = AuditLog(store, load_or_create_key(server.state))
        recorded = {r.path for r in audit.query(under="course") if r.action == "notebook.seal" and r.outcome == "allow"}
        assert sealed <= recorded, "a notebook sealed without its audit record"
    finally:
        store.dispose()
    assert "checks: version 1 of 1" in server.cli("keys", "list").stdout
    assert "authenticated" in server.cli("keys", "list").stdout

    # Back up: sam reads a sealed notebook (placeholder only) and runs its sealed cell;
    # a notebook the kill left unsealed seals now.
    server.start()
    status, body = server.request("GET", "/api/warden/grants?path=course")
    assert status == 200 and [g["subject"] for g in body["grants"] if not g["inherited"]] == ["user:sam"]
    path = acknowledged[0]
    status, model = server.request("GET", f"/api/contents/{path}", token=sam)
    assert status == 200 and "SECRET-" not in json.dumps(model)
    i = int(path[-8:-6])
    assert _run_cell(server, sam, path, model["content"]["cells"][-1]["source"]) == ("ok", f"check {i} passed\n")
    left = sorted(set(originals) - sealed)
    assert left, "the kill came after every seal"
    status, body = server.request("POST", "/api/warden/seal", {"path": left[0], "key": "checks"})
    assert status == 200 and len(body["sealed"]) == 1, body
    server.stop()
    _verify_audit(server).dispose()


# -- a kernel killed mid-execution ---------------------------------------------


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in os.listdir("/proc"):
        if stat.isdigit():
            try:
                with open(f"/proc/{stat}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(stat))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _kernel_pid(serverapp, kernel_id: str) -> int:
    """The kernel's own process: below bwrap, prlimit and setpriv when sandboxed, else the launched one."""
    launched = serverapp.kernel_manager.get_kernel(kernel_id).provisioner.process.pid
    for pid in [launched, *_descendants(launched)]:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if os.path.basename(argv[0]).startswith(b"python") and b"ipykernel_launcher" in b" ".join(argv):
            return pid
    raise AssertionError(f"no kernel process below {launched}")


@pytest.mark.parametrize("warden_config", [{}, {"sandbox": "none"}], ids=["sandboxed", "unsandboxed"])
async def test_a_kernel_killed_mid_execution_is_told_recorded_and_restarted(
    jp_fetch, jp_root_dir, jp_serverapp, warden, make_user, connect, warden_config
):
    from test_kernel_guard import start_kernel, stdout

    nb = jp_root_dir / "course" / "nb.ipynb"
    nb.parent.mkdir()
    nb.write_text(json.dumps(json.loads(nbformat.writes(new_notebook(cells=[new_code_cell("print(1)")])))))
    (jp_root_dir / "other").mkdir()
    (jp_root_dir / "other" / "nb.ipynb").write_text(nb.read_text())
    before = nb.read_bytes()
    tokens = {name: make_user(name) for name in ("alice", "bob")}
    warden.policy.grant("course", "user:alice", "read-write-run")
    warden.policy.grant("other", "user:bob", "read-write-run")
    sandboxed = warden.sandbox_runner is not None
    if warden_config:
        assert not sandboxed
    elif not sandboxed:
        pytest.skip(f"no sandbox: {bubblewrap_problem()}")

    bob = await connect(await start_kernel(jp_fetch, tokens["bob"], path="other/nb.ipynb"), tokens["bob"])
    kernel = await start_kernel(jp_fetch, tokens["alice"])
    alice = await connect(kernel, tokens["alice"])
    running = await alice.send("shell", "execute_request", {
        "code": "x = 1\nimport time\nprint('started', flush=True)\ntime.sleep(600)", "silent": False,
        "store_history": True, "user_expressions": {}, "allow_stdin": False, "stop_on_error": True})
    while True:  # the cell runs
        msg = await alice.recv(60)
        assert msg is not None
        if msg["msg_type"] == "stream" and "started" in msg["content"]["text"]:
            break

    os.kill(_kernel_pid(jp_serverapp, kernel), signal.SIGKILL)

    # The client hears it: a notice in the running cell (sandboxed: with the cause),
    # an error reply to the execution, then Jupyter's "restarting".
    notice, reply, states = None, None, []
    while "restarting" not in states or reply is None:
        msg = await alice.recv(60)
        assert msg is not None, "the socket closed"
        kind, parent = msg["msg_type"], msg["parent_header"].get("msg_id")
        if kind == "stream" and msg["content"]["text"].startswith("[jupyter-warden]"):
            assert parent == running and msg["content"]["name"] == "stderr"
            notice = msg["content"]["text"]
        elif kind == "execute_reply":
            assert parent == running
            reply = msg["content"]
        elif kind == "status":
            states.append(msg["content"]["execution_state"])
    assert reply["status"] == "error" and reply["ename"] == "KernelDied", reply
    if sandboxed:
        assert notice is not None and "killed (SIGKILL)" in notice and "restarts it" in notice, notice
        assert reply["evalue"] == notice.strip()
        assert states.index("restarting") >= 0
    else:
        assert "died before it replied" in reply["evalue"]

    # The audit: the execution, its outcome 'lost' with why, and (sandboxed) the kernel's exit.
    executed = [r for r in warden.audit.query(actor="alice") if r.details and r.details.get("msg_id") == running]
    assert [(r.action, r.outcome) for r in executed] == [("kernel.execute", "allow"), ("kernel.execute_reply", "lost")]
    assert executed[1].reason == reply["evalue"] and executed[1].details["sha256"] == executed[0].details["sha256"]
    if sandboxed:
        exits = [r for r in warden.audit.query() if r.action == "kernel.exit" and r.details["kernel_id"] == kernel]
        assert [r.reason for r in exits] == ["killed"]

    # The kernel is back, fresh; the notebook is as it was; bob's kernel never noticed.
    # (A kernel that dies within 10 s of its start is restarted on new ports, so a
    # websocket opened before the restart is done reaches nothing: open another.)
    deadline = time.monotonic() + 90
    while True:
        again = await connect(kernel, tokens["alice"])
        try:
            # Asked in the reply itself: a fresh websocket may miss the first IOPub output.
            reply, _ = await again.reply_to(await again.send("shell", "execute_request", {
                "code": "", "silent": False, "store_history": False, "user_expressions": {"x": "'x' in dir()"},
                "allow_stdin": False, "stop_on_error": True}), "execute_reply", timeout=10)
        except (TimeoutError, asyncio.TimeoutError):
            reply = None
        if reply is not None and reply["content"]["status"] == "ok":
            break
        assert time.monotonic() < deadline, reply
        again.ws.close()
        await asyncio.sleep(0.5)
    assert reply["content"]["user_expressions"]["x"]["data"]["text/plain"] == "False"  # a fresh kernel
    assert nb.read_bytes() == before
    reply, outputs = await bob.execute("print(6 * 7)")
    assert reply["content"]["status"] == "ok" and stdout(outputs).strip() == "42"
    assert warden.audit.verify().ok


async def test_a_store_that_stops_answering_closes_open_kernel_websockets(jp_fetch, jp_root_dir, warden, make_user,
                                                                          connect):
    """G9 on an open connection: with the policy store gone, access can't be re-checked, so it ends (fail closed)."""
    from test_kernel_guard import start_kernel

    if warden.store.engine.dialect.name != "sqlite":
        pytest.skip("breaks the SQLite file; tests/test_store.py covers PostgreSQL going away for requests")
    (jp_root_dir / "course").mkdir()
    (jp_root_dir / "course" / "nb.ipynb").write_text(nbformat.writes(new_notebook(cells=[new_code_cell("1")])))
    token = make_user("alice")
    warden.policy.grant("course", "user:alice", "read-write-run")
    alice = await connect(await start_kernel(jp_fetch, token), token)
    reply, _ = await alice.execute("print(1)")
    assert reply["content"]["status"] == "ok"
    db_file = warden.store.engine.url.database
    warden.store.engine.dispose()
    os.rename(db_file, db_file + ".moved")
    os.mkdir(db_file)  # a folder where the database was: can't be opened
    try:
        code, reason = await alice.wait_closed(timeout=10)
    finally:
        os.rmdir(db_file)
        os.rename(db_file + ".moved", db_file)
    assert code == 1008 and "can't be checked" in reason, (code, reason)
    # Once the store is back, so is the user, and the chain verifies.
    alice = await connect(warden.serverapp.kernel_manager.list_kernel_ids()[0], token)
    reply, _ = await alice.execute("print(2)")
    assert reply["content"]["status"] == "ok"
    assert warden.audit.verify().ok
