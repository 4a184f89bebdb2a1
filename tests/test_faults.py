"""Faults: the server killed mid-write, a full disk. Nothing acknowledged is lost, nothing is half-written.

Each test runs a real ``jupyter-warden serve`` in its own process, so that it
can be killed with SIGKILL while requests are in flight, then started again
on the same state and root.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from jupyter_warden.audit.log import AuditLog, load_or_create_key
from jupyter_warden.store import Store
from server_process import ServerProcess



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
