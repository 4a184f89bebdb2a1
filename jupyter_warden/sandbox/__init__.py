"""Sandboxed kernels (G4): each kernel runs in bubblewrap, under its user's own uid.

``launch`` decides what a kernel sees and may use, ``provisioner`` plugs that
into jupyter_client, ``uids`` keeps each subject's uid in the store,
``cgroups`` caps each kernel's memory and processes where the host allows.
"""

from __future__ import annotations

import functools
import os
import subprocess

from .cgroups import CgroupError, Cgroups
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


__all__ = ["CgroupError", "Cgroups", "KernelUids", "Limits", "Sandbox", "SandboxProvisioner", "SandboxRefused",
           "bubblewrap_problem", "culling_kernel_manager", "install_factory",
           "uninstall_factory"]
