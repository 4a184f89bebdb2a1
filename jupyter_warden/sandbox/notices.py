"""What the user is told when a sandbox limit stops their kernel or fails their code.

One sentence per cause, naming the limit and its setting; the kernel guard
shows it in the running cell, ``KernelEnds`` keeps the last end of each
kernel for ``GET /api/warden/kernels/{id}/exit``.
"""

from __future__ import annotations

import collections
import errno
import re
import time

PREFIX = "[jupyter-warden] "
_KEPT_ENDS = 1000  # kernels whose last end is remembered, in this process


def _size(n: int) -> str:
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= factor:
            return f"{n / factor:g} {unit}"
    return f"{n} bytes"


# Ends after which the kernel is gone for good (shut down, not restarted): its
# clients get a "dead" status and their websockets are closed with the reason.
STOPPED = ("max-age", "idle", "access-lost")


def exit_message(cause: str, limits, max_age: float, detail: str | None = None,
                 idle_timeout: float | None = None) -> str:
    """The sentence a user reads when their kernel ended of ``cause``."""
    if cause == "cpu-limit":
        why = (f"it used its CPU time limit of {limits.cpu_seconds} s per process "
               "(c.Warden.kernel_cpu_limit)")
    elif cause == "file-size-limit":
        why = f"it wrote past the file size limit of {_size(limits.file_bytes)} (c.Warden.kernel_file_size_limit)"
    elif cause == "memory-limit":
        cap = limits.cgroup_memory_bytes or limits.memory_bytes
        why = (f"it used more memory than its limit of {_size(cap)} for the kernel and all its processes "
               "together (c.Warden.kernel_memory_limit), and was killed")
    elif cause.startswith("crashed"):
        memory = f" of {_size(limits.memory_bytes)}" if limits.memory_bytes else ""
        why = (f"it crashed, possibly on the memory limit{memory} per process "
               "(c.Warden.kernel_memory_limit)")
    elif cause == "killed":
        why = "it was killed (SIGKILL): past its CPU time limit, or by the host running out of memory"
    elif cause == "max-age":
        why = f"it reached the maximum kernel age of {max_age:g} s (c.Warden.kernel_max_age)"
    elif cause == "idle":
        after = f" {idle_timeout:g} s" if idle_timeout else ""
        why = (f"it was idle for longer than the idle timeout of{after} "
               "(c.Warden.kernel_idle_timeout, or MappingKernelManager.cull_idle_timeout)")
    elif cause == "access-lost":
        why = f"its user lost a right it relies on ({detail})"
    elif cause == "terminated":
        why = "it was terminated (SIGTERM) from outside the notebook"
    else:
        why = f"it {cause}" if cause.startswith("exited") else cause
    after = ("It was shut down; start a new kernel to go on." if cause in STOPPED
             else "Jupyter restarts it with a fresh state: variables are lost.")
    return f"{PREFIX}The kernel was stopped: {why}. {after}"


def close_reason(message: str) -> str:
    """The websocket close reason for an end: its first sentence, within one control frame (123 bytes)."""
    text = message.removeprefix(PREFIX).split(". ", 1)[0]
    return text.encode()[:123].decode("utf-8", "ignore")


# Where a process or thread is started, in a traceback: the frames of os.fork,
# subprocess, multiprocessing, posix_spawn.
_STARTS_PROCESS = ("fork", "spawn", "Popen", "_execute_child")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def error_hint(ename: str, evalue: str, limits, traceback=None, kernel_cap=None) -> str | None:
    """A note to add below an error that a sandbox limit caused, or None.

    ``kernel_cap``: a function saying whether a refused process or thread was
    refused by the kernel's own cgroup cap (True), by the user's rlimit (False),
    or None when it can't tell (see ``process_hint``).
    """
    if ename.endswith("MemoryError") and limits.memory_bytes:  # numpy's _ArrayMemoryError too
        return (f"{PREFIX}This kernel may use at most {_size(limits.memory_bytes)} of memory per process "
                "(c.Warden.kernel_memory_limit); the allocation was refused.")
    if evalue.startswith(f"[Errno {errno.EFBIG}]") and limits.file_bytes:
        return (f"{PREFIX}This kernel may write files of at most {_size(limits.file_bytes)} "
                "(c.Warden.kernel_file_size_limit).")
    if evalue.startswith(f"[Errno {errno.EMFILE}]") and limits.open_files:
        return (f"{PREFIX}This kernel may hold at most {limits.open_files} files open per process "
                "(c.Warden.kernel_open_files_limit).")
    if not (limits.processes or limits.cgroup_pids):
        return None
    which = kernel_cap() if kernel_cap is not None else None
    if ename == "RuntimeError" and "can't start new thread" in evalue:
        return process_hint(limits, kernel_cap=which)
    if ename in ("BlockingIOError", "OSError") and evalue.startswith(f"[Errno {errno.EAGAIN}]"):
        # EAGAIN is also a non-blocking socket's "try again": certain only where the
        # traceback shows a process being started (IPython may show other lines).
        lines = traceback if isinstance(traceback, list) else []
        text = _ANSI.sub("", "\n".join(line for line in lines if isinstance(line, str)))
        # The kernel's cgroup counting a refusal just now is as sure as the traceback.
        certain = which is True or any(marker in text for marker in _STARTS_PROCESS)
        return process_hint(limits, certain=certain, kernel_cap=which)
    return None


def process_hint(limits, certain: bool = True, kernel_cap: bool | None = None) -> str:
    """Which process limit refused: the kernel's cgroup cap (``kernel_cap`` True), the
    user's rlimit (False), or, when that can't be told, each limit there is."""
    what = ("A new process or thread was refused" if certain
            else "If this error came from starting a process or thread, it was refused")
    kernel = (f"this kernel may run at most {limits.cgroup_pids} processes and threads "
              "(c.Warden.kernel_cgroup_pids_limit)")
    user = (f"this user's kernels may run at most {limits.processes} processes and threads together "
            "(c.Warden.kernel_process_limit)")
    if not limits.cgroup_pids or kernel_cap is False and limits.processes:
        return f"{PREFIX}{what}: {user}."
    if kernel_cap or not limits.processes:
        return f"{PREFIX}{what}: {kernel}."
    return f"{PREFIX}{what}: {user}, and {kernel}."


# A shell's or C library's own words when fork fails, in a stream (bash: "fork: retry:
# Resource temporarily unavailable"); the guard looks for them in stderr output.
FORK_REFUSED = b"Resource temporarily unavailable"


class KernelEnds:
    """The last end of recent kernels: who may ask, why it ended, and when."""

    def __init__(self):
        self._ends: collections.OrderedDict[str, dict] = collections.OrderedDict()

    def record(self, kernel_id: str, owner: str, users: list[str], cause: str, message: str,
               exit_code: int | None) -> None:
        self._ends.pop(kernel_id, None)
        self._ends[kernel_id] = {"kernel": kernel_id, "owner": owner, "users": users, "cause": cause,
                                 "message": message, "exit_code": exit_code, "at": time.time()}
        while len(self._ends) > _KEPT_ENDS:
            self._ends.popitem(last=False)

    def get(self, kernel_id: str) -> dict | None:
        return self._ends.get(kernel_id)
