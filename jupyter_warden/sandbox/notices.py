"""What the user is told when a sandbox limit stops their kernel or fails their code.

One sentence per cause, naming the limit and its setting; the kernel guard
shows it in the running cell, ``KernelEnds`` keeps the last end of each
kernel for ``GET /api/warden/kernels/{id}/exit``.
"""

from __future__ import annotations

import collections
import errno
import time

PREFIX = "[jupyter-warden] "
_KEPT_ENDS = 1000  # kernels whose last end is remembered, in this process


def _size(n: int) -> str:
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= factor:
            return f"{n / factor:g} {unit}"
    return f"{n} bytes"


def exit_message(cause: str, limits, max_age: float, detail: str | None = None) -> str:
    """The sentence a user reads when their kernel ended of ``cause``."""
    if cause == "cpu-limit":
        why = (f"it used its CPU time limit of {limits.cpu_seconds} s per process "
               "(c.Warden.kernel_cpu_limit)")
    elif cause == "file-size-limit":
        why = f"it wrote past the file size limit of {_size(limits.file_bytes)} (c.Warden.kernel_file_size_limit)"
    elif cause.startswith("crashed"):
        memory = f" of {_size(limits.memory_bytes)}" if limits.memory_bytes else ""
        why = (f"it crashed, possibly on the memory limit{memory} per process "
               "(c.Warden.kernel_memory_limit)")
    elif cause == "killed":
        why = "it was killed (SIGKILL): past its CPU time limit, or by the host running out of memory"
    elif cause == "max-age":
        why = f"it reached the maximum kernel age of {max_age:g} s (c.Warden.kernel_max_age)"
    elif cause == "access-lost":
        why = f"its user lost a right it relies on ({detail})"
    elif cause == "terminated":
        why = "it was terminated (SIGTERM) from outside the notebook"
    else:
        why = f"it {cause}" if cause.startswith("exited") else cause
    stopped = cause in ("max-age", "access-lost")
    after = ("It was shut down; start a new kernel to go on." if stopped
             else "Jupyter restarts it with a fresh state: variables are lost.")
    return f"{PREFIX}The kernel was stopped: {why}. {after}"


def error_hint(ename: str, evalue: str, limits) -> str | None:
    """A note to add below an error that a sandbox limit caused, or None."""
    if ename == "MemoryError" and limits.memory_bytes:
        return (f"{PREFIX}This kernel may use at most {_size(limits.memory_bytes)} of memory per process "
                "(c.Warden.kernel_memory_limit); the allocation was refused.")
    if evalue.startswith(f"[Errno {errno.EFBIG}]") and limits.file_bytes:
        return (f"{PREFIX}This kernel may write files of at most {_size(limits.file_bytes)} "
                "(c.Warden.kernel_file_size_limit).")
    if evalue.startswith(f"[Errno {errno.EMFILE}]") and limits.open_files:
        return (f"{PREFIX}This kernel may hold at most {limits.open_files} files open per process "
                "(c.Warden.kernel_open_files_limit).")
    return None


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
