"""Sandboxed kernels (G4): each kernel runs in bubblewrap, under its user's own uid.

``launch`` decides what a kernel sees and may use, ``provisioner`` plugs that
into jupyter_client, ``uids`` keeps each subject's uid in the store.
"""

from __future__ import annotations

import functools
import os
import subprocess

from .launch import BWRAP, PRLIMIT, SETPRIV, Limits, Sandbox, SandboxRefused
from .provisioner import SandboxProvisioner, culling_kernel_manager, install_factory, uninstall_factory
from .uids import KernelUids


@functools.lru_cache(maxsize=1)
def bubblewrap_problem() -> str | None:
    """Why kernels can't be sandboxed on this host, or None if they can."""
    if os.geteuid() != 0:
        return ("the server does not run as root, so it can't start kernels under other uids "
                "(bubblewrap is used without a user namespace)")
    for tool in (BWRAP, PRLIMIT, SETPRIV):
        if not os.access(tool, os.X_OK):
            return f"{tool} is missing (install bubblewrap and util-linux)"
    try:
        probe = subprocess.run(
            [BWRAP, "--ro-bind", "/", "/", "--unshare-pid", "--unshare-ipc", "--unshare-net",
             "--die-with-parent", "--new-session", "--", "/bin/true"],
            capture_output=True, timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"bubblewrap does not run: {e}"
    if probe.returncode != 0:
        return f"bubblewrap does not run: {probe.stderr.decode(errors='replace').strip()}"
    return None


def cgroup_v2_problem() -> str | None:
    """Why per-kernel cgroup v2 limits (memory.max, pids.max) can't be set on this host, or None."""
    try:
        with open("/proc/self/mounts") as f:
            mounts = [line.split()[1] for line in f if line.split()[2:3] == ["cgroup2"]]
    except OSError as e:
        return f"the mounts can't be read: {e}"
    if not mounts:
        return "this host has no cgroup v2 hierarchy"
    where = mounts[0]
    try:
        with open(os.path.join(where, "cgroup.controllers")) as f:
            controllers = set(f.read().split())
    except OSError as e:
        return f"{where}/cgroup.controllers can't be read: {e}"
    missing = sorted({"memory", "pids"} - controllers)
    if missing:
        v1 = [name for name in missing if os.path.isdir(f"/sys/fs/cgroup/{name}")]
        held = f" (held by cgroup v1 hierarchies: {', '.join(v1)})" if v1 else ""
        return f"the cgroup v2 hierarchy at {where} has no {' or '.join(missing)} controller{held}"
    if not os.access(where, os.W_OK):
        return f"the cgroup v2 hierarchy at {where} is not writable by the server"
    return None


__all__ = ["KernelUids", "Limits", "Sandbox", "SandboxProvisioner", "SandboxRefused",
           "bubblewrap_problem", "cgroup_v2_problem", "culling_kernel_manager", "install_factory",
           "uninstall_factory"]
