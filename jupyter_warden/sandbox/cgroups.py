"""Per-kernel cgroups: one memory cap and one process cap for all of a kernel's processes together.

Two backends share one interface (``Cgroups``, ``KernelCgroup``); only file
names and where the folders live differ.

- cgroup v2 (the unified hierarchy): a folder for this server's kernels below
  the server's own cgroup (``/proc/self/cgroup``, "0::/..."), one cgroup per
  kernel in it: ``memory.max`` (``memory.swap.max`` 0 and ``memory.oom.group`` 1
  where present) and ``pids.max``. v2 allows no processes in a cgroup that
  hands controllers to its children, so the server first moves itself into a
  leaf of its cgroup, ``warden-server``; a cgroup that holds other processes
  too is refused (the server must have a cgroup of its own).
- cgroup v1: a folder per server at the top of the memory and the pids
  hierarchies (``jupyter-warden-PID``), and one per kernel in each:
  ``memory.limit_in_bytes`` (and ``memory.memsw.limit_in_bytes`` where present)
  and ``pids.max``.

A kernel's launcher writes its own pid into its cgroup(s) and only then execs
bubblewrap (``KernelCgroup.launcher``): the kernel can't fork before it is in.
A kernel killed by the cgroup's OOM killer is told apart from other SIGKILLs
by the cgroup's ``oom_kill`` count (``memory.events`` on v2,
``memory.oom_control`` on v1), read before its cgroup is removed.
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
import signal
import time
from pathlib import Path

V2_SERVER_LEAF = "warden-server"  # where the server's own processes go on v2
CONTROLLERS = ("memory", "pids")
CHOICES = ("auto", "v2", "v1", "none")
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")


class CgroupError(Exception):
    """A cgroup can't be made or written; the message says why, as a clause."""


def _mounts() -> list[tuple[str, str, set[str]]]:
    """(mount point, type, options) of every cgroup file system this process sees."""
    found = []
    with open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 4 and fields[2] in ("cgroup", "cgroup2"):
                where = fields[1].replace("\\040", " ")
                found.append((where, fields[2], set(fields[3].split(","))))
    return found


def _read(path: Path) -> str:
    with open(path) as f:
        return f.read()


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _count(path: Path, key: str) -> int:
    """The value of ``key`` in a flat-keyed cgroup file ("oom_kill 3" in memory.events, "max 2" in pids.events)."""
    try:
        for line in _read(path).splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


# -- cgroup v2 ----------------------------------------------------------------


def _v2_own() -> tuple[Path, Path]:
    """(the v2 mount point, the server's own cgroup folder); CgroupError when there is none."""
    try:
        mounts = [where for where, kind, _ in _mounts() if kind == "cgroup2"]
    except OSError as e:
        raise CgroupError(f"the mounts can't be read: {e}") from None
    if not mounts:
        raise CgroupError("this host has no cgroup v2 hierarchy")
    mount = Path(mounts[0])
    try:
        own = next(line[3:] for line in _read(Path("/proc/self/cgroup")).splitlines() if line.startswith("0::"))
    except (OSError, StopIteration):
        raise CgroupError("/proc/self/cgroup names no cgroup v2 group for the server") from None
    folder = (mount / own.lstrip("/")).resolve()
    if folder != mount and mount not in folder.parents or not folder.is_dir():
        raise CgroupError(f"the server's cgroup {own} is not below the cgroup v2 mount {mount}")
    if folder.name == V2_SERVER_LEAF and folder != mount:
        folder = folder.parent  # moved there by an earlier server in this process
    return mount, folder


def v2_problem() -> str | None:
    """Why per-kernel cgroup v2 limits can't be set here, or None."""
    try:
        mount, own = _v2_own()
        controllers = set(_read(own / "cgroup.controllers").split())
    except CgroupError as e:
        return str(e)
    except OSError as e:
        return f"the server's cgroup can't be read: {e}"
    missing = [c for c in CONTROLLERS if c not in controllers]
    if missing:
        try:
            v1 = [c for c in missing if any(kind == "cgroup" and c in opts for _, kind, opts in _mounts())]
        except OSError:
            v1 = []
        held = f" (held by cgroup v1 hierarchies: {', '.join(v1)})" if v1 else ""
        return (f"the server's cgroup {own} (cgroup v2, mounted at {mount}) has no "
                f"{' or '.join(missing)} controller{held}")
    if not (os.access(own, os.W_OK) and os.access(own / "cgroup.subtree_control", os.W_OK)):
        return (f"the server's cgroup {own} (cgroup v2) is not writable by the server "
                "(delegate it, e.g. systemd's Delegate=yes)")
    return None


def _enable(folder: Path) -> None:
    missing = [c for c in CONTROLLERS if c not in _read(folder / "cgroup.subtree_control").split()]
    if missing:
        _write(folder / "cgroup.subtree_control", " ".join(f"+{c}" for c in missing))


def _setup_v2(name: str) -> dict[str, Path]:
    _, own = _v2_own()
    try:
        try:
            _enable(own)
        except OSError as e:
            if e.errno != errno.EBUSY:
                raise
            # "No internal processes": a cgroup (but the host's root) hands controllers to
            # its children only once its own processes are in a leaf of it. Only the
            # server's own process is moved: a cgroup shared with others (a login
            # session's scope) is not the server's to rearrange.
            others = [pid for pid in _read(own / "cgroup.procs").split() if pid != str(os.getpid())]
            if others:
                raise CgroupError(
                    f"the server's cgroup {own} also holds other processes ({', '.join(others[:5])}); "
                    "run the server in a cgroup of its own (e.g. a systemd service with Delegate=yes)"
                ) from None
            leaf = own / V2_SERVER_LEAF
            leaf.mkdir(exist_ok=True)
            _write(leaf / "cgroup.procs", str(os.getpid()))
            _enable(own)
        parent = own / name
        parent.mkdir(exist_ok=True)
        _enable(parent)
    except OSError as e:
        raise CgroupError(f"the kernels' cgroup below {own} can't be set up: {e}") from None
    return {"memory": parent, "pids": parent}


# -- cgroup v1 ----------------------------------------------------------------


def _v1_mounts() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for where, kind, options in _mounts():
        for controller in CONTROLLERS:
            if kind == "cgroup" and controller in options and controller not in found:
                found[controller] = Path(where)
    return found


def v1_problem() -> str | None:
    """Why per-kernel cgroup v1 limits can't be set here, or None."""
    try:
        mounts = _v1_mounts()
    except OSError as e:
        return f"the mounts can't be read: {e}"
    missing = [c for c in CONTROLLERS if c not in mounts]
    if missing:
        return f"this host has no cgroup v1 {' or '.join(missing)} hierarchy"
    for controller, where in mounts.items():
        if not os.access(where, os.W_OK):
            return f"the cgroup v1 {controller} hierarchy at {where} is not writable by the server"
    return None


def _setup_v1(name: str) -> dict[str, Path]:
    parents = {c: where / name for c, where in _v1_mounts().items()}
    try:
        for parent in parents.values():
            parent.mkdir(exist_ok=True)
    except OSError as e:
        raise CgroupError(f"the kernels' cgroup {parent} can't be made: {e}") from None
    return parents


# -- one server's kernels -------------------------------------------------------


class Cgroups:
    """Where one server's kernel cgroups live, and how their limits are written (v1 or v2)."""

    def __init__(self, backend: str, parents: dict[str, Path]):
        self.backend = backend
        self.parents = parents  # controller -> this server's folder (one and the same on v2)
        self.stopping = False  # set at server stop: the last kernel's cleanup removes the parents

    @classmethod
    def open(cls, choice: str) -> tuple[Cgroups | None, str]:
        """The backend for c.Warden.kernel_cgroups; (None, why) when there is none.

        An explicit "v1" or "v2" that can't be had raises CgroupError.
        """
        if choice == "none":
            return None, "c.Warden.kernel_cgroups is 'none'"
        name = f"jupyter-warden-{os.getpid()}"
        reasons = []
        for backend, problem, setup in (("v2", v2_problem, _setup_v2), ("v1", v1_problem, _setup_v1)):
            if choice not in ("auto", backend):
                continue
            why = problem()
            if why is None:
                try:
                    cgroups = cls(backend, setup(name))
                except CgroupError as e:
                    why = str(e)
                else:
                    cgroups.sweep()
                    return cgroups, ""
            if choice == backend:
                raise CgroupError(why)
            reasons.append(f"not v2: {why}" if backend == "v2" else f"not v1: {why}")
        return None, "; ".join(reasons)

    @property
    def where(self) -> list[Path]:
        return sorted(set(self.parents.values()))

    def _ensure_parents(self) -> None:
        """Make this server's folders again if they went (another server of this process stopped)."""
        for parent in self.where:
            if not parent.is_dir():
                parent.mkdir(exist_ok=True)
                if self.backend == "v2":
                    _enable(parent)

    def create(self, kernel_id: str, memory_bytes: int, pids: int) -> KernelCgroup:
        """A new, empty cgroup for one start of a kernel (a restart gets another), with its limits."""
        if not _SAFE_NAME.fullmatch(kernel_id):
            raise CgroupError(f"the kernel id {kernel_id!r} can't name a cgroup")
        try:
            self._ensure_parents()
        except OSError as e:
            raise CgroupError(f"the kernels' cgroup folder can't be made again: {e}") from None
        for n in range(1, 100):
            name = f"kernel-{kernel_id}" + (f".{n}" if n > 1 else "")
            folders = {c: parent / name for c, parent in self.parents.items()}
            if any(f.exists() for f in folders.values()):
                continue  # an earlier start's, not yet gone
            made = []
            try:
                for folder in dict.fromkeys(folders.values()):
                    folder.mkdir()
                    made.append(folder)
            except FileExistsError:
                _remove_folders(made)
                continue
            except OSError as e:
                _remove_folders(made)
                raise CgroupError(f"the kernel's cgroup {folders['memory']} can't be made: {e}") from None
            cgroup = KernelCgroup(self, folders, memory_bytes, pids)
            try:
                cgroup.write_limits()
            except OSError as e:
                _remove_folders(made)
                raise CgroupError(f"the limits of the kernel's cgroup {folders['memory']} can't be set: {e}") from None
            return cgroup
        raise CgroupError(f"the cgroups of 99 earlier starts of kernel {kernel_id} are still there")

    def sweep(self) -> list[Path]:
        """rmdir what servers no longer running left empty beside this one's folders (never kills)."""
        removed = []
        for parent in self.where:
            for other in parent.parent.glob("jupyter-warden-*"):
                pid = other.name.removeprefix("jupyter-warden-")
                if other == parent or not pid.isdigit() or Path(f"/proc/{pid}").exists():
                    continue
                for child in other.glob("kernel-*"):
                    _try_remove(child, self.backend, kill=False)
                if _try_remove(other, self.backend, kill=False):
                    removed.append(other)
        return removed

    def close(self, kill: bool = False, timeout: float = 2.0) -> bool:
        """Remove this server's folders; True if gone.

        ``kill``: what is left in them is killed, and removal retried for up
        to ``timeout`` seconds (at the process's exit); else one try.
        """
        deadline = time.monotonic() + timeout
        while not self._close_once(kill) and kill:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return not any(parent.exists() for parent in self.where)

    def _close_once(self, kill: bool) -> bool:
        gone = True
        for parent in self.where:
            if not parent.is_dir():
                continue
            for child in parent.iterdir():
                if child.is_dir() and child.name.startswith("kernel-"):
                    gone &= _try_remove(child, self.backend, kill)
            try:
                parent.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                gone = False
        return gone


def _remove_folders(folders) -> None:
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            pass


def _try_remove(folder: Path, backend: str, kill: bool) -> bool:
    """rmdir one cgroup, after killing what is still in it if ``kill``; True once it is gone."""
    if kill:
        try:
            if backend == "v2" and (folder / "cgroup.kill").exists():
                _write(folder / "cgroup.kill", "1")
            else:
                for pid in _read(folder / "cgroup.procs").split():
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        except FileNotFoundError:
            return True
        except OSError:
            pass
    try:
        folder.rmdir()
    except FileNotFoundError:
        return True
    except OSError:
        return False  # EBUSY: processes (or zombies not yet reaped) still in it
    return True


class KernelCgroup:
    """The cgroup of one start of one kernel: its limits, launcher, counters and removal."""

    def __init__(self, owner: Cgroups, folders: dict[str, Path], memory_bytes: int, pids: int):
        self.owner, self.folders = owner, folders
        self.memory_bytes, self.pids = memory_bytes, pids

    @property
    def backend(self) -> str:
        return self.owner.backend

    @property
    def paths(self) -> list[Path]:
        return list(dict.fromkeys(self.folders.values()))

    def write_limits(self) -> None:
        memory, pids = self.folders["memory"], self.folders["pids"]
        optional: list[tuple[Path, str]] = []
        if self.memory_bytes > 0:
            value = str(self.memory_bytes)
            if self.backend == "v2":
                _write(memory / "memory.max", value)
                # No swapping round the cap; and an OOM kill takes the whole kernel, not one process of it.
                optional += [(memory / "memory.swap.max", "0"), (memory / "memory.oom.group", "1")]
            else:
                _write(memory / "memory.limit_in_bytes", value)
                optional.append((memory / "memory.memsw.limit_in_bytes", value))  # memory + swap
        if self.pids > 0:
            _write(pids / "pids.max", str(self.pids))
        for path, value in optional:
            if path.exists():
                try:
                    _write(path, value)
                except OSError:
                    pass  # e.g. swap accounting off: the memory cap still holds

    def launcher(self) -> list[str]:
        """A prefix for the kernel's command: the process joins its cgroup(s), then execs the rest.

        ``sh -c 'echo $$ > "$0" && exec "$@"' PROCS...``: ``$$`` is the process
        the server started, before anything else runs in it. A write that fails
        stops the launch (the kernel never starts outside its cgroup).
        """
        procs = [str(folder / "cgroup.procs") for folder in self.paths]
        joins = " && ".join(f'echo $$ > "${i}"' for i in range(len(procs)))
        shift = f" && shift {len(procs) - 1}" if len(procs) > 1 else ""
        return ["/bin/sh", "-c", f'{joins}{shift} && exec "$@"', *procs]

    def oom_kills(self) -> int:
        """Processes of this cgroup the kernel's OOM killer killed for its memory cap."""
        events = "memory.events" if self.backend == "v2" else "memory.oom_control"
        return _count(self.folders["memory"] / events, "oom_kill")

    def pids_refusals(self) -> int:
        """Forks (and new threads) refused because of pids.max."""
        return _count(self.folders["pids"] / "pids.events", "max")

    def try_remove(self) -> bool:
        """Kill what is left in the cgroup and rmdir it; True once every folder is gone."""
        gone = all([_try_remove(folder, self.backend, kill=True) for folder in self.paths])
        if gone and self.owner.stopping:
            self.owner.close()
        return gone

    async def remove(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while not self.try_remove():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    def remove_now(self, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while not self.try_remove():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True
