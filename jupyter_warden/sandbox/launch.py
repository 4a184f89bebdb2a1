"""What one sandboxed kernel may see and use, and the bubblewrap command that enforces it.

``Sandbox.plan`` collects the facts (who starts the kernel, for which folder),
asks the policy engine what that user may do there, and returns a ``Launch``:
the uid, the mounts, the limits and the network. ``Launch.argv`` is the
command. Everything not named here stays outside the sandbox (deny by default).
"""

from __future__ import annotations

import atexit
import dataclasses
import os
import shutil
import signal
import stat
import sys
import tempfile
from pathlib import Path

from ..policy.engine import Actor, PolicyEngine
from .cgroups import Cgroups, KernelCgroup
from .uids import KernelUids

BWRAP = "/usr/bin/bwrap"
PRLIMIT = "/usr/bin/prlimit"
SETPRIV = "/usr/bin/setpriv"
KERNEL_HOME = "/home/kernel"
# Where the jupyter_warden package is bound read-only, so that kernels can
# `from jupyter_warden import secrets` whatever their environment holds.
CLIENT_SITE = "/opt/jupyter-warden/site"
PACKAGE = Path(__file__).resolve().parent.parent

# Variables a kernel inherits from the server; everything else (database
# URLs, tokens, proxies' secrets) stays out of the sandbox. JPY_PARENT_PID too:
# in its own PID namespace the kernel's parent is pid 1, which ipykernel
# would take for "my parent died" (--die-with-parent does that job).
PASSED_ENV = ("LANG", "LANGUAGE", "TZ", "TERM", "JPY_SESSION_NAME")


# How a folder appears inside the sandbox.
WRITABLE, READ_ONLY, ABSENT = "writable", "read-only", "absent"


class SandboxRefused(Exception):
    """The kernel can't be started in a sandbox; the message is meant for the user."""


@dataclasses.dataclass(frozen=True)
class Limits:
    """rlimits of a kernel's processes, and its cgroup's limits; 0 means no limit."""

    memory_bytes: int  # address space of each process (RLIMIT_AS)
    cpu_seconds: int
    processes: int  # tasks of the kernel's uid, on the whole host (RLIMIT_NPROC)
    file_bytes: int  # largest file it may write (RLIMIT_FSIZE)
    open_files: int
    # With a cgroup per kernel (sandbox/cgroups.py): its backend ("v1", "v2"; "" for
    # none), and the caps on all of one kernel's processes together.
    cgroup: str = ""
    cgroup_memory_bytes: int = 0  # memory.max / memory.limit_in_bytes
    cgroup_pids: int = 0  # pids.max

    def prlimit_argv(self) -> list[str]:
        pairs = (("as", self.memory_bytes), ("nproc", self.processes),
                 ("fsize", self.file_bytes), ("nofile", self.open_files))
        argv = [PRLIMIT, "--core=0", *(f"--{name}={value}" for name, value in pairs if value > 0)]
        if self.cpu_seconds > 0:
            # SIGXCPU at the soft limit tells why; SIGKILL at the hard one, if that was ignored.
            argv.append(f"--cpu={self.cpu_seconds}:{self.cpu_seconds + 5}")
        return [*argv, "--"]

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


# Why a kernel process ended, from its exit status (bwrap passes the kernel's on,
# a signal as 128 + its number).
SIGNAL_CAUSES = {
    signal.SIGXCPU: "cpu-limit",
    signal.SIGXFSZ: "file-size-limit",
    signal.SIGKILL: "killed",  # "memory-limit" when the kernel's cgroup counts an OOM kill
    signal.SIGSEGV: "crashed (possibly the memory limit)",
    signal.SIGABRT: "crashed (possibly the memory limit)",
    signal.SIGTERM: "terminated",
}


def exit_cause(code: int | None) -> str:
    if code is None:
        return "unknown"
    signum = -code if code < 0 else code - 128 if code > 128 else None
    if signum is not None and signum in SIGNAL_CAUSES:
        return SIGNAL_CAUSES[signum]
    return "exited" if code == 0 else f"exited with status {code}"


@dataclasses.dataclass
class Launch:
    """One kernel's sandbox, decided when it starts."""

    subject: str
    user: str
    uid: int
    gid: int
    folder: str  # the API path bound in ("" is the served root)
    writable: bool
    network: bool
    limits: Limits
    mounts: list[str]  # bwrap's file-system arguments, in order
    chdir: str
    run_dir: Path
    # (API path, writable, a mount of its own?) of each folder and file the kernel
    # can reach in the served root: what its user must keep the right to while
    # it runs (sandbox/watch.py).
    views: list[tuple[str, bool, bool]] = dataclasses.field(default_factory=list)
    workspace: str | None = None  # the user's workspace (API path), when bound
    cgroup: KernelCgroup | None = None  # this start's own cgroup, when the host gives cgroups

    def argv(self, kernel_cmd: list[str]) -> list[str]:
        namespaces = ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
        if not self.network:
            namespaces.append("--unshare-net")
        drop_to_uid = [SETPRIV, f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups",
                       "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all", "--"]
        joins = self.cgroup.launcher() if self.cgroup is not None else []
        return [*joins, BWRAP, "--die-with-parent", "--new-session", *namespaces, "--hostname", "kernel",
                *self.mounts, "--chdir", self.chdir, "--",
                *self.limits.prlimit_argv(), *drop_to_uid, *kernel_cmd]

    def env(self, given: dict[str, str], spec_env: dict[str, str], path: str) -> dict[str, str]:
        env = {k: v for k, v in given.items() if k in PASSED_ENV or k.startswith("LC_")}
        env.update(spec_env)
        env.update(HOME=KERNEL_HOME, USER="kernel", LOGNAME="kernel", TMPDIR="/tmp", PATH=path)
        if self.workspace:
            env["WARDEN_WORKSPACE"] = self.workspace
        env["PYTHONPATH"] = os.pathsep.join(p for p in (CLIENT_SITE, spec_env.get("PYTHONPATH")) if p)
        return env

    def audit_details(self, kernel_id: str) -> dict:
        details = {"kernel_id": kernel_id, "uid": self.uid, "network": self.network,
                   "writable": self.writable, "limits": self.limits.as_dict(), "workspace": self.workspace}
        if self.cgroup is not None:
            details["cgroup"] = [str(p) for p in self.cgroup.paths]
        return details


def interpreter_trees(argv0: str) -> list[Path]:
    """Folders the kernel's interpreter needs: its own prefix and the base Python's."""
    trees = {Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix), Path(sys.base_exec_prefix)}
    exe = Path(argv0)
    if exe.is_absolute():
        for prefix in (exe.parent.parent, exe.resolve().parent.parent):
            if (prefix / "pyvenv.cfg").is_file():  # another virtual environment's kernel
                trees.add(prefix)
    # Never the whole host: "/" would be a prefix of everything.
    return sorted({t.resolve() for t in trees if t.is_dir() and len(t.resolve().parts) > 1})


class Mounts:
    """bwrap file-system arguments, creating the parents of each bind with mode 0755."""

    def __init__(self, hidden: list[Path]):
        self.args: list[str] = []
        self.made: set[Path] = {Path("/")}
        self.bound: list[Path] = []
        self.mounts: list[tuple[Path, bool]] = []  # (where, from the host?) in order
        self.hidden = hidden

    def _exists(self, path: Path) -> bool:
        """Whether ``path`` is already there inside: made, or below the deepest host bind over it."""
        if path in self.made:
            return True
        covering = [m for m in self.mounts if m[0] in path.parents]
        return bool(covering) and max(covering, key=lambda m: len(m[0].parts))[1]

    def _parents(self, path: Path) -> None:
        for parent in reversed(path.parents):
            if not self._exists(parent):
                self.args += ["--perms", "0755", "--dir", str(parent)]
                self.made.add(parent)

    def bind(self, path: Path, writable: bool) -> None:
        self._parents(path)
        self.args += ["--bind" if writable else "--ro-bind", str(path), str(path)]
        self.made.add(path)
        self.bound.append(path)
        self.mounts.append((path, True))
        # The state folder (or the kernels' socket folders) may lie below a
        # bound folder: an empty tmpfs over it keeps it out of sight.
        for hidden in self.hidden:
            if path in hidden.parents:
                self.args += ["--perms", "0755", "--tmpfs", str(hidden)]
                self.made.add(hidden)
                self.mounts.append((hidden, False))

    def bind_to(self, source: Path, path: Path) -> None:
        """A read-only bind of ``source`` at another place inside."""
        self._parents(path)
        self.args += ["--ro-bind", str(source), str(path)]
        self.made.add(path)
        self.mounts.append((path, True))

    def dir(self, path: Path) -> None:
        self._parents(path)
        self.args += ["--perms", "0755", "--dir", str(path)]
        self.made.add(path)
        self.mounts.append((path, False))

    def symlink(self, target: str, path: Path) -> None:
        self.args += ["--symlink", target, str(path)]
        self.made.add(path)

    def tmpfs(self, path: Path, perms: str) -> None:
        self._parents(path)
        self.args += ["--perms", perms, "--tmpfs", str(path)]
        self.made.add(path)
        self.mounts.append((path, False))

    def blank_file(self, path: Path) -> None:
        self.args += ["--ro-bind", "/dev/null", str(path)]


class Sandbox:
    """Turns (actor, folder) into a Launch; holds the operator's sandbox settings."""

    def __init__(self, *, uids: KernelUids, gid: int, engine: PolicyEngine, root_dir: str,
                 hidden: list[str], system_paths: list[str], limits: Limits,
                 network_subjects: frozenset[str], max_entries: int, max_age: float, log,
                 workspace: str = "", cgroups: Cgroups | None = None):
        self.uids, self.gid, self.engine, self.log = uids, gid, engine, log
        self.cgroups = cgroups  # a cgroup per kernel start, when the host gives them
        self.workspace = workspace
        self.root = Path(root_dir).resolve()
        self.system_paths = [Path(p) for p in system_paths]
        self.limits, self.network_subjects = limits, network_subjects
        self.max_entries, self.max_age = max_entries, max_age
        # Socket folders, one per kernel: 0700 root here, each kernel's 0700 its own uid.
        self.run_base = Path(tempfile.mkdtemp(prefix="warden-kernels-")).resolve()
        # Kernels are stopped after extensions, so the folder goes when the process ends.
        atexit.register(shutil.rmtree, self.run_base, ignore_errors=True)
        self.hidden = [Path(p).resolve() for p in hidden] + [self.run_base]

    def interpreter_trees(self, argv0: str) -> list[Path]:
        return interpreter_trees(argv0)

    def plan(self, actor: Actor, cwd: str, kernel_id: str, argv0: str) -> Launch:
        folder_os = Path(cwd or self.root).resolve()
        if folder_os != self.root and self.root not in folder_os.parents:
            raise SandboxRefused(f"the kernel's folder {folder_os} is outside the served root")
        if any(folder_os == h or h in folder_os.parents for h in self.hidden):
            raise SandboxRefused("a kernel can't be started in the warden's state folder")
        folder = folder_os.relative_to(self.root).as_posix() if folder_os != self.root else ""
        writable = self.engine.check(actor, "write", folder).allowed
        uid = self.uids.uid_for(actor.subject)
        run_dir = self.run_base / kernel_id
        run_dir.mkdir(mode=0o700, exist_ok=True)
        os.chown(run_dir, uid, self.gid)

        mounts = Mounts(self.hidden)
        # The private /tmp and home first: a system folder may lie below /tmp.
        mounts.tmpfs(Path("/tmp"), "1777")
        mounts.tmpfs(Path(KERNEL_HOME), "1777")
        for path in self.system_paths:
            if path.is_symlink():
                mounts.symlink(os.readlink(path), path)
            elif path.is_dir():
                mounts.bind(path, writable=False)
        for tree in self.interpreter_trees(argv0):
            if not any(b == tree or b in tree.parents for b in mounts.bound):
                mounts.bind(tree, writable=False)
        if any(b == self.root or b in self.root.parents for b in mounts.bound):
            mounts.tmpfs(self.root, "0755")  # the served root lies in a system folder: only the kernel's part
        mounts.args += ["--proc", "/proc", "--dev", "/dev"]
        mounts.bind_to(PACKAGE, Path(CLIENT_SITE) / PACKAGE.name)
        views: list[tuple[str, bool, bool]] = []
        tops = [(folder_os, folder)]
        workspace = self.workspace_for(actor)
        if workspace is not None:
            if workspace[0] == folder_os or folder_os in workspace[0].parents:
                pass  # the workspace lies in the notebook's folder: seen there, at its own rights
            elif workspace[0] in folder_os.parents:
                tops = [workspace]  # the notebook's folder lies in the workspace
            else:
                tops.append(workspace)
        for top_os, top_api in tops:
            self._bind_top(actor, top_os, top_api, mounts, views)
        mounts.bind(run_dir, writable=True)  # last: the served root may hold the socket folders
        cgroup = None
        if self.cgroups is not None:  # last: nothing after it can refuse, and leave it behind
            cgroup = self.cgroups.create(kernel_id, self.limits.cgroup_memory_bytes, self.limits.cgroup_pids)
        return Launch(
            subject=actor.subject, user=actor.name, uid=uid, gid=self.gid, folder=folder,
            writable=writable, network=not self.network_subjects.isdisjoint(actor.subjects()),
            limits=self.limits, mounts=mounts.args, chdir=str(folder_os), run_dir=run_dir,
            views=views, workspace=str(workspace[0]) if workspace is not None else None, cgroup=cgroup,
        )

    def workspace_for(self, actor: Actor) -> tuple[Path, str] | None:
        """The user's own workspace (c.Warden.workspace_dir), if it exists and they may read it."""
        if not self.workspace or actor.link_id:
            return None
        api = self.workspace.format(user=actor.name).strip("/")
        where = (self.root / api).resolve()
        if where == self.root or self.root not in where.parents or not where.is_dir():
            return None
        if any(where == h or h in where.parents for h in self.hidden):
            return None
        api = where.relative_to(self.root).as_posix()
        if not self.engine.check(actor, "read", api).allowed:
            return None
        return where, api

    def _bind_top(self, actor: Actor, top_os: Path, top_api: str, mounts: Mounts,
                  views: list[tuple[str, bool, bool]]) -> None:
        """Bind one folder (the notebook's, or the workspace) at its rights, then what lies below."""
        readable = self.engine.check(actor, "read", top_api).allowed
        writable = self.engine.check(actor, "write", top_api).allowed
        state = (WRITABLE if writable else READ_ONLY) if readable else ABSENT
        if state is ABSENT:
            mounts.dir(top_os)  # e.g. a user who may run one notebook, not read its folder
        else:
            mounts.bind(top_os, writable)
            self._give_to_group(top_os, writable)
            views.append((top_api, writable, True))
        self._folder_view(actor, top_os, top_api, state, mounts, views)

    def _folder_view(self, actor: Actor, top: Path, folder: str, state: str, mounts: Mounts,
                     views: list[tuple[str, bool, bool]]) -> None:
        """Below the folder, hide what the user may not read and bind each part at its own right.

        The kernel's uid must also pass the file modes: every entry it may
        reach is given to the kernels' group (read, and write where the user
        may write). Which user's kernel sees which entry is the mounts' job.
        """
        seen = 0
        stack = [(top, folder, state)]
        while stack:
            directory, api_dir, parent_state = stack.pop()
            try:
                entries = list(os.scandir(directory))
            except OSError:
                continue
            for entry in entries:
                seen += 1
                if seen > self.max_entries:
                    raise SandboxRefused(
                        f"{folder or 'the root folder'} holds more than {self.max_entries} files and "
                        "folders; start the kernel from a smaller folder (or raise "
                        "c.Warden.sandbox_max_entries)")
                path = Path(entry.path)
                if entry.is_symlink():
                    continue  # resolved inside the sandbox, against what is mounted there
                if any(path == h or h in path.parents for h in self.hidden):
                    continue  # already covered by a tmpfs
                api_path = f"{api_dir}/{entry.name}" if api_dir else entry.name
                is_dir = entry.is_dir(follow_symlinks=False)
                if self.engine.check(actor, "read", api_path).allowed:
                    may_write = self.engine.check(actor, "write", api_path).allowed
                    entry_state = WRITABLE if may_write else READ_ONLY
                    if entry_state != parent_state:
                        mounts.bind(path, may_write)
                    self._give_to_group(path, may_write)
                    views.append((api_path, may_write, entry_state != parent_state))
                elif parent_state is ABSENT:
                    entry_state = ABSENT
                elif is_dir:
                    mounts.tmpfs(path, "0755")
                    entry_state = ABSENT
                else:
                    mounts.blank_file(path)
                    continue
                if is_dir:  # an unreadable folder may hold a readable path: look inside it too
                    stack.append((path, api_path, entry_state))

    def _give_to_group(self, path: Path, writable: bool) -> None:
        try:
            st = os.lstat(path)
        except OSError:
            return
        is_dir = stat.S_ISDIR(st.st_mode)
        if not is_dir and (not stat.S_ISREG(st.st_mode) or st.st_nlink > 1):
            return  # a hard link may be another folder's file: never widen it from here
        bits = stat.S_IRGRP | (stat.S_IXGRP | stat.S_ISGID if is_dir else 0) | (stat.S_IWGRP if writable else 0)
        try:
            if st.st_gid != self.gid:
                os.chown(path, -1, self.gid, follow_symlinks=False)
            if stat.S_IMODE(st.st_mode) & bits != bits:
                os.chmod(path, stat.S_IMODE(st.st_mode) | bits)
        except OSError as e:
            self.log.warning("jupyter-warden: can't open %s to kernels: %s", path, e)

    def release(self, launch: Launch) -> None:
        self.release_cgroup(launch)
        for child in launch.run_dir.glob("*"):
            try:
                child.unlink()
            except OSError:
                pass
        try:
            launch.run_dir.rmdir()
        except OSError:
            pass

    def release_cgroup(self, launch: Launch) -> None:
        """Remove the cgroup of a kernel start that has ended (its leftovers killed)."""
        if launch.cgroup is not None:
            if not launch.cgroup.remove_now():
                self.log.warning("jupyter-warden: the cgroup %s is not empty; left in place",
                                 ", ".join(map(str, launch.cgroup.paths)))
            launch.cgroup = None
