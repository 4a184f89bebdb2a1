"""A cgroup per sandboxed kernel (c.Warden.kernel_cgroups): real kernels, real cgroup v1 hierarchies.

This host's memory and pids controllers are cgroup v1, so these tests run the
v1 backend. Of the v2 backend only the launcher, the counters and the removal
run here, on a v2 hierarchy without controllers: its limits, the controllers'
delegation and the move of the server into a leaf have never run.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from pathlib import Path

import pytest

from conftest import auth
from test_enforce_contents import NOTEBOOK
from test_faults import _run_cell
from test_kernel_guard import connect, start_kernel, stdout  # noqa: F401  (fixture)
from test_sandbox import FORK_BOMB, exit_of, healthy, notice_in_cell, people, records, run  # noqa: F401
from server_process import ServerProcess

from jupyter_warden.sandbox import bubblewrap_problem
from jupyter_warden.sandbox.cgroups import _v1_mounts, v1_problem, v2_problem

pytestmark = pytest.mark.skipif(bubblewrap_problem() is not None, reason=f"no sandbox: {bubblewrap_problem()}")
needs_v1 = pytest.mark.skipif(v1_problem() is not None, reason=f"no cgroup v1 memory and pids: {v1_problem()}")

MiB = 1024**2
MEMORY = 1280 * MiB  # above a kernel's address space at rest (about 800 MB): the rlimit lets it start
PIDS = 40


@pytest.fixture
def warden_config():
    return {
        "kernel_cgroups": "v1",
        "kernel_memory_limit": MEMORY,
        "kernel_cgroup_pids_limit": PIDS,
        "kernel_process_limit": 300,  # the user's rlimit, well above the kernel's cgroup cap
        "kernel_file_size_limit": 16 * MiB,
    }


def process_tree(top: int) -> set[int]:
    """``top`` and every process below it."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, grew = {top}, True
    while grew:
        below = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= below
        grew = bool(below)
    return tree


def alive(pid: int) -> bool:
    """Running: not gone, and not a zombie (an orphan this host's init has not reaped yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def procs(folder: Path) -> set[int]:
    return {int(p) for p in (folder / "cgroup.procs").read_text().split()}


@needs_v1
async def test_a_kernel_runs_in_cgroups_of_its_own_and_they_go_when_it_ends(jp_fetch, connect, warden, people):
    kernel = await start_kernel(jp_fetch, people["alice"])
    alice = await connect(kernel, people["alice"])
    # A process the kernel starts is in its cgroups too.
    await run(alice, "import subprocess, json; child = subprocess.Popen(['sleep', '600']); print(json.dumps(1))")
    provisioner = warden.serverapp.kernel_manager.get_kernel(kernel).provisioner
    cgroup = provisioner.launch.cgroup
    mounts = _v1_mounts()
    memory, pids = (mounts[c] / f"jupyter-warden-{os.getpid()}" / f"kernel-{kernel}" for c in ("memory", "pids"))
    assert cgroup.paths == [memory, pids]
    tree = process_tree(provisioner.pid)  # bwrap, its init, the kernel, sleep
    assert len(tree) >= 4
    assert tree <= procs(memory) and tree <= procs(pids)
    assert int((memory / "memory.limit_in_bytes").read_text()) == MEMORY
    if (memory / "memory.memsw.limit_in_bytes").exists():
        assert int((memory / "memory.memsw.limit_in_bytes").read_text()) == MEMORY
    assert (pids / "pids.max").read_text().strip() == str(PIDS)
    # The audit says which backend and limits.
    start = [r for r in records(warden, "kernel.start") if r.details["kernel_id"] == kernel][0]
    assert start.details["limits"]["cgroup"] == "v1"
    assert start.details["limits"]["cgroup_memory_bytes"] == MEMORY
    assert start.details["limits"]["cgroup_pids"] == PIDS
    assert start.details["cgroup"] == [str(memory), str(pids)]

    # A restart lands in an empty cgroup: nothing of the old kernel is left in it.
    restarted = await jp_fetch("api", "kernels", kernel, "restart", method="POST", body="",
                               headers=auth(people["alice"]))
    assert restarted.code == 200
    again = await connect(kernel, people["alice"])
    assert await run(again, "print(6 * 7)") == 42
    fresh = provisioner.launch.cgroup
    assert fresh is not cgroup
    for folder in fresh.paths:
        members = procs(folder)
        assert provisioner.pid in members and not members & tree
    assert not {pid for pid in tree if alive(pid)}  # the old sleep too

    # Shut down: its folders are gone (the server's own stays while it runs).
    assert (await jp_fetch("api", "kernels", kernel, method="DELETE", headers=auth(people["alice"]))).code == 204
    assert not any(folder.exists() for folder in fresh.paths)
    assert memory.parent.is_dir()


async def run_when_back(connect, kernel, token, code, timeout=60):
    """``run`` on a kernel that is being restarted: tried on a new connection until it answers."""
    deadline = time.monotonic() + timeout
    while True:
        client = await connect(kernel, token)
        msg_id = await client.send("shell", "execute_request", {"code": code, "silent": False})
        try:
            reply, outputs = await client.reply_to(msg_id, "execute_reply", timeout=5)
        except (TimeoutError, asyncio.TimeoutError):
            assert time.monotonic() < deadline, "the kernel did not come back"
            client.ws.close()
            continue
        assert reply["content"]["status"] == "ok", reply["content"]
        return json.loads(stdout(outputs).strip().splitlines()[-1])


# Children hold memory first (each far below the 1.25 GiB address-space rlimit of a
# process), then the kernel itself grows until the cgroup's cap: the host's OOM killer
# takes the biggest process in the cgroup, the kernel.
MEMORY_HOG = """
import os, time
MiB = 1024 ** 2
for _ in range(7):
    r, w = os.pipe()
    if os.fork() == 0:
        held = b"x" * (140 * MiB)
        os.write(w, b"1")
        time.sleep(600)
        os._exit(0)
    os.close(w)
    os.read(r, 1)
    os.close(r)
held = []
for _ in range(24):
    held.append(b"y" * (20 * MiB))
print("never killed")
"""


@needs_v1
async def test_a_kernel_past_its_memory_cap_is_killed_and_its_user_told(jp_fetch, connect, warden, people):
    bystander = await connect(await start_kernel(jp_fetch, people["bob"], path="private/secret.ipynb"),
                              people["bob"])
    kernel = await start_kernel(jp_fetch, people["alice"])
    alice = await connect(kernel, people["alice"])
    hog = await alice.send("shell", "execute_request", {"code": MEMORY_HOG, "silent": False})
    text = (await notice_in_cell(alice, hog, "(c.Warden.kernel_memory_limit)", timeout=60)).strip()
    assert "more memory than its limit of 1.25 GiB for the kernel and all its processes together" in text
    assert "restarts it" in text
    # The cgroup caught it: its OOM killer killed the kernel (not the rlimit's MemoryError).
    exit_record = [r for r in records(warden, "kernel.exit") if r.details["kernel_id"] == kernel][0]
    assert exit_record.reason == "memory-limit", exit_record.details
    assert exit_record.details["oom_kills"] >= 1 and exit_record.details["exit_code"] in (-9, 137)
    code, end = await exit_of(jp_fetch, kernel, people["alice"])
    assert code == 200 and end["cause"] == "memory-limit" and end["message"] == text
    # The server and the other user's kernel carry on; alice's kernel is back, in a fresh cgroup.
    await healthy(jp_fetch, people["bob"])
    assert await run(bystander, "print(6 * 7)") == 42
    assert await run_when_back(connect, kernel, people["alice"], "print(6 * 7)") == 42
    provisioner = warden.serverapp.kernel_manager.get_kernel(kernel).provisioner
    assert provisioner.launch.cgroup.oom_kills() == 0


@needs_v1
async def test_a_fork_loop_past_the_kernels_cap_is_refused_and_the_kernel_lives(jp_fetch, connect, warden, people):
    kernel = await start_kernel(jp_fetch, people["alice"])
    alice = await connect(kernel, people["alice"])
    reply, outputs = await alice.execute(FORK_BOMB)
    assert reply["content"]["ename"] == "BlockingIOError", reply["content"]
    notes = [m["content"]["text"] for m in outputs if m["msg_type"] == "stream"]
    assert notes == ["[jupyter-warden] A new process or thread was refused: this kernel may run at most "
                     f"{PIDS} processes and threads (c.Warden.kernel_cgroup_pids_limit).\n"], notes
    cgroup = warden.serverapp.kernel_manager.get_kernel(kernel).provisioner.launch.cgroup
    assert cgroup.pids_refusals() >= 1  # refused by pids.max, not by the user's rlimit (300)
    assert await run(alice, "print(6 * 7)") == 42
    await healthy(jp_fetch, people["alice"])


@pytest.mark.skipif(v2_problem() is None, reason="this host has usable cgroup v2 memory and pids controllers")
def test_v2_where_the_host_has_none_stops_the_server(jp_configurable_serverapp, jp_server_config):
    jp_server_config["Warden"]["kernel_cgroups"] = "v2"
    with pytest.raises(SystemExit, match=r"c.Warden.kernel_cgroups is 'v2' but .*(no|not)"):
        jp_configurable_serverapp(config=jp_server_config)


def test_an_explicit_backend_for_kernels_that_are_not_sandboxed_stops_the_server(jp_configurable_serverapp,
                                                                                jp_server_config):
    jp_server_config["Warden"].update(kernel_cgroups="v1", sandbox="none")
    with pytest.raises(SystemExit, match=r"c.Warden.kernel_cgroups is 'v1' but kernels are not sandboxed here"):
        jp_configurable_serverapp(config=jp_server_config)


def server_folders(server: ServerProcess) -> list[Path]:
    """The cgroup folders of the server's latest start, from its log."""
    pid = int(re.findall(r"in a cgroup v1 of its own, in \S*/jupyter-warden-(\d+)", server.log.read_text())[-1])
    return [where / f"jupyter-warden-{pid}" for where in _v1_mounts().values()]


@needs_v1
def test_the_servers_cgroup_folders_go_when_it_stops(tmp_path, warden_db_url):
    """A server stopped (SIGTERM) with a kernel running leaves no cgroup folder behind; one that
    was killed does, and the next server to start removes them."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "nb.ipynb").write_text(json.dumps(NOTEBOOK))
    server = ServerProcess(tmp_path, warden_db_url, root)
    server.extra_args = ["--Warden.kernel_cgroups=v1"]
    server.add_admin()
    server.start()
    try:
        assert _run_cell(server, server.token, "nb.ipynb", "print(6 * 7)") == ("ok", "42\n")
        killed = server_folders(server)
        assert all(any(child.name.startswith("kernel-") for child in folder.iterdir()) for folder in killed)
    finally:
        server.kill()
    assert all(folder.is_dir() for folder in killed)  # a crash leaves them (its kernels died with it)
    server.start()
    try:
        assert not any(folder.exists() for folder in killed)  # swept by the next server, once empty
        assert _run_cell(server, server.token, "nb.ipynb", "print(6 * 7)") == ("ok", "42\n")
        folders = server_folders(server)
        assert folders != killed and all(folder.is_dir() for folder in folders)
    finally:
        server.stop()
    assert server.proc.returncode is not None
    assert not any(folder.exists() for folder in folders), server.log.read_text()[-2000:]


def _v2_mount() -> Path | None:
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if fields[2] == "cgroup2" and os.access(fields[1], os.W_OK):
            return Path(fields[1])
    return None


@pytest.mark.skipif(_v2_mount() is None, reason="no writable cgroup v2 mount")
def test_the_v2_launcher_joins_its_cgroup_and_removal_kills_what_is_left():
    """The part of the v2 backend this host can run: its memory and pids controllers are v1's, so
    this cgroup has no limits; joining before exec, the counters, cgroup.kill and rmdir are real."""
    import subprocess

    from jupyter_warden.sandbox.cgroups import Cgroups

    base = _v2_mount() / f"warden-test-{os.getpid()}"
    base.mkdir()
    try:
        cgroups = Cgroups("v2", {"memory": base, "pids": base})
        cgroup = cgroups.create("k1", 0, 0)
        assert cgroup.paths == [base / "kernel-k1"]
        launched = subprocess.Popen([*cgroup.launcher(), "/bin/sh", "-c", "sleep 600 & sleep 600"])
        deadline = time.monotonic() + 10
        while len(procs(cgroup.paths[0])) < 3:  # sh (exec'd into the second sh) and its two sleeps
            assert time.monotonic() < deadline, procs(cgroup.paths[0])
            time.sleep(0.05)
        assert launched.pid in procs(cgroup.paths[0])
        assert cgroup.oom_kills() == 0 and cgroup.pids_refusals() == 0
        assert cgroup.remove_now() and not cgroup.paths[0].exists()
        assert launched.wait(10) == -9
        assert cgroups.close() and not base.exists()
    finally:
        for folder in (base / "kernel-k1", base):
            if folder.exists():
                folder.rmdir()
