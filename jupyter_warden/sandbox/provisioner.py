"""The kernel provisioner that starts every kernel inside bubblewrap, under its user's uid.

It forces the ``ipc`` transport into a per-kernel folder bound into the
sandbox (the network is unshared), records each start and exit in the audit
log, and stops a kernel that outlives c.Warden.kernel_max_age. Every end
that the user did not ask for is explained to them (``_tell_why``).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import shutil
import sys
import time
from typing import Any

from jupyter_client.provisioning import KernelProvisionerFactory, LocalProvisioner
from jupyter_server.base.call_context import CallContext
from tornado import web

from ..policy.engine import Actor
from ..store import StoreError
from .cgroups import CgroupError
from .launch import Launch, SandboxRefused, exit_cause
from .notices import STOPPED, exit_message

# Ends the user asked for: nothing to explain.
_REQUESTED = ("shutdown", "restart", "exited")

ENTRY_POINT = "warden-sandbox"

# The kernel the idle culler is shutting down, seen by its provisioner's
# shutdown_requested (the same task): the end is then "idle", not "shutdown".
_CULLING: contextvars.ContextVar[str | None] = contextvars.ContextVar("warden_culling", default=None)


def culling_kernel_manager(base: type) -> type:
    """A subclass of the kernel manager whose idle cull tells the kernel's provisioner it was culled."""

    class CullingKernelManager(base):
        async def cull_kernel_if_idle(self, kernel_id):
            kernel = self._kernels.get(kernel_id)
            # A dead kernel is culled too: its end was its death, already explained.
            idle = kernel is not None and getattr(kernel, "execution_state", None) != "dead"
            token = _CULLING.set(kernel_id if idle else None)
            try:
                return await super().cull_kernel_if_idle(kernel_id)
            finally:
                _CULLING.reset(token)

    CullingKernelManager.__name__ = CullingKernelManager.__qualname__ = base.__name__
    return CullingKernelManager


def _requester() -> Actor | None:
    handler = CallContext.get(CallContext.JUPYTER_HANDLER)
    account = getattr(handler, "warden_account", None)
    return Actor.for_account(account) if account is not None else None


def _umask_002():
    # Files a kernel makes in a shared folder stay writable by the kernels'
    # group (the other users who may write there).
    os.umask(0o002)


class SandboxProvisioner(LocalProvisioner):
    """LocalProvisioner, with the command wrapped in bwrap and the connection in a bound folder."""

    launch: Launch | None = None
    actor: Actor | None = None
    stop_reason: str | None = None
    stop_detail: str | None = None
    started_at: float | None = None
    _age_timer: asyncio.TimerHandle | None = None
    _exit_recorded = True

    @property
    def _kernel_manager(self):
        return getattr(self.parent, "parent", None)

    @property
    def _warden(self):
        return getattr(self._kernel_manager, "warden_app", None)

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        warden = self._warden
        if warden is None:
            raise RuntimeError("jupyter-warden's sandbox is not set up; refusing to start a kernel")
        # The owner is whoever asks for the kernel; a restart (by the owner, a
        # share holder or the auto-restarter) keeps the first owner's sandbox.
        if self.actor is None:
            self.actor = _requester()
        if self.actor is None:
            raise web.HTTPError(403, "a kernel is started only for a signed-in user")
        km = self.parent
        argv0 = shutil.which(km.kernel_spec.argv[0]) or km.kernel_spec.argv[0]
        if km.kernel_spec.argv[0] in ("python", "python3", f"python{sys.version_info[0]}"):
            argv0 = sys.executable
        # Spelled without '..' (a server started as ../.venv/bin/python): inside
        # the sandbox only the environment itself is bound, not the folders around it.
        argv0 = os.path.abspath(argv0)
        try:
            self.launch = warden.sandbox_runner.plan(self.actor, kwargs.get("cwd"), self.kernel_id, argv0)
        except SandboxRefused as e:
            warden.audit.record(self.actor.name, "kernel.start", "deny", reason=str(e),
                                details={"kernel_id": self.kernel_id})
            raise web.HTTPError(403, str(e)) from None
        except (StoreError, CgroupError) as e:  # e.g. no free uid, the store is down: no kernel, fail closed
            raise web.HTTPError(503, f"the kernel can't be sandboxed: {e}") from None
        run_dir = self.launch.run_dir
        km.transport = "ipc"
        km.cache_ports = False
        if not km.connection_file or os.path.dirname(km.connection_file) != str(run_dir):
            km.connection_file = str(run_dir / "connection.json")
            km.ip = str(run_dir / "ipc")
        # The kernel can't be signalled through bwrap (another session): interrupts go as messages.
        km.kernel_spec.interrupt_mode = "message"
        # On a restart the old file belongs to the kernel's uid: write a fresh
        # one as the server (the transport checks it is the server's, 0600),
        # then hand it to the kernel.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(km.connection_file)
        kwargs = await super().pre_launch(**kwargs)
        os.chown(km.connection_file, self.launch.uid, self.launch.gid)
        cmd = kwargs["cmd"]
        if cmd:
            cmd = [os.path.abspath(cmd[0]) if os.path.isabs(cmd[0]) else argv0, *cmd[1:]]
        kwargs["cmd"] = self.launch.argv(cmd)
        path = os.pathsep.join(dict.fromkeys([os.path.dirname(argv0), "/usr/local/bin", "/usr/bin", "/bin"]))
        kwargs["env"] = self.launch.env(kwargs.get("env") or {}, km.kernel_spec.env or {}, path)
        # The vault's socket for this kernel, in its run folder, and its token (secrets/channel.py).
        kwargs["env"].update(await warden.vault_channels.open(
            self.kernel_id, self.launch.run_dir, self.launch.uid, self.launch.gid,
            self.launch.subject, self.launch.user))
        kwargs["preexec_fn"] = _umask_002
        kwargs["independent"] = True  # no JPY_PARENT_PID: see launch.PASSED_ENV
        self.log.debug("jupyter-warden: sandbox for kernel %s: %s", self.kernel_id, kwargs["cmd"])
        return kwargs

    async def launch_kernel(self, cmd: list[str], **kwargs: Any):
        info = await super().launch_kernel(cmd, **kwargs)
        warden = self._warden
        self._exit_recorded = False
        self.stop_reason = None
        warden.audit.record(self.launch.user, "kernel.start", "allow", path=self.launch.folder,
                            details=self.launch.audit_details(self.kernel_id))
        watch = getattr(warden, "sandbox_watch", None)
        if watch is not None:
            watch.add(self.kernel_id, self)
        if self.started_at is None:
            self.started_at = time.monotonic()
            if warden.sandbox_runner.max_age > 0:
                loop = asyncio.get_running_loop()
                self._age_timer = loop.call_later(warden.sandbox_runner.max_age, self._too_old)
        return info

    def _too_old(self) -> None:
        self.stop_for("max-age")

    def stop_for(self, cause: str, detail: str | None = None) -> None:
        """Shut the kernel down for ``cause`` (max-age, access-lost); its exit says why."""
        kernel_manager = self._kernel_manager
        if kernel_manager is None or self.kernel_id not in kernel_manager:
            return
        self.stop_reason, self.stop_detail = cause, detail
        self.log.warning("jupyter-warden: stopping kernel %s: %s%s", self.kernel_id, cause,
                         f" ({detail})" if detail else "")
        asyncio.ensure_future(kernel_manager.shutdown_kernel(self.kernel_id, now=True))

    async def shutdown_requested(self, restart: bool = False) -> None:
        if not restart and _CULLING.get() == self.kernel_id and self.stop_reason is None:
            self.stop_reason, self.stop_detail = "idle", f"idle for over {self._idle_timeout():g} s"
        self.stop_reason = self.stop_reason or ("restart" if restart else "shutdown")
        await super().shutdown_requested(restart=restart)

    async def poll(self) -> int | None:
        process = self.process
        code = await super().poll()
        if process is not None and code is not None:
            self._record_exit(code)
        return code

    async def wait(self) -> int | None:
        had_process = self.process is not None
        code = await super().wait()
        if had_process:
            self._record_exit(code)
        return code

    def _record_exit(self, code: int | None) -> None:
        if self._exit_recorded or self.launch is None:
            return
        self._exit_recorded = True
        cause = self.stop_reason or exit_cause(code)
        cgroup = self.launch.cgroup
        oom_kills = cgroup.oom_kills() if cgroup is not None else 0
        if cause == "killed" and oom_kills > 0:
            # SIGKILLed, and its cgroup (this start's alone) counts an OOM kill: its memory cap.
            cause = "memory-limit"
        warden = self._warden
        details = {**self.launch.audit_details(self.kernel_id), "exit_code": code, "cause": cause}
        if cgroup is not None:
            details["oom_kills"] = oom_kills
        if self.stop_detail:
            details["detail"] = self.stop_detail
        self.log.info("jupyter-warden: kernel %s of %s ended: %s", self.kernel_id, self.launch.user, cause)
        if warden is not None:
            try:
                warden.audit.record(self.launch.user, "kernel.exit", "allow", path=self.launch.folder,
                                    reason=cause, details=details)
            except Exception as e:  # the store may be gone at server shutdown
                self.log.warning("jupyter-warden: kernel exit not audited: %s", e)
            if cause not in _REQUESTED:
                self._tell_why(warden, cause, code)
        self.stop_reason = self.stop_detail = None

    def _idle_timeout(self) -> float:
        """The idle timeout the culler applies to this kernel (its kernel spec may set its own)."""
        metadata = getattr(self.kernel_spec, "metadata", None) or {}
        try:
            return float(metadata.get("cull_idle_timeout", getattr(self._kernel_manager, "cull_idle_timeout", 0)))
        except (TypeError, ValueError):
            return 0.0

    def _tell_why(self, warden, cause: str, code: int | None) -> None:
        """Put the reason where the user looks: the running cell, the kernel model, the exit endpoint.

        A kernel stopped for good (``STOPPED``) also gets its clients a "dead"
        status and a closed websocket saying why (enforce/kernel_channels.py).
        """
        runner = warden.sandbox_runner
        message = exit_message(cause, runner.limits, runner.max_age, self.stop_detail,
                               idle_timeout=self._idle_timeout())
        km = self.parent
        km.reason = message  # jupyter_server's kernel model shows it as "reason"
        shares = getattr(self._kernel_manager, "warden_shares", None)
        users = shares.subjects(self.kernel_id) if shares is not None else []
        ends = getattr(warden, "kernel_ends", None)
        if ends is not None:
            ends.record(self.kernel_id, self.actor.owner if self.actor else "", users, cause, message, code)
        connections = getattr(warden, "kernel_connections", None)
        if connections is not None:
            connections.kernel_ended(self.kernel_id, message, stopped=cause in STOPPED)

    async def cleanup(self, restart: bool = False) -> None:
        await super().cleanup(restart=restart)
        if self.launch is not None and self.launch.cgroup is not None:
            # After the exit is recorded (it reads the OOM count); a restart gets a fresh cgroup.
            if not restart:
                self._record_exit(None)
            cgroup, self.launch.cgroup = self.launch.cgroup, None
            if not await cgroup.remove():
                self.log.warning("jupyter-warden: kernel %s: its cgroup %s is not empty; left in place",
                                 self.kernel_id, ", ".join(map(str, cgroup.paths)))
        if not restart:
            self._record_exit(None)
            if self._age_timer is not None:
                self._age_timer.cancel()
            warden = self._warden
            watch = getattr(warden, "sandbox_watch", None)
            if watch is not None:
                watch.discard(self.kernel_id)
            if warden is not None and self.launch is not None:
                await warden.vault_channels.close(self.kernel_id)
                warden.sandbox_runner.release(self.launch)


class SandboxProvisionerFactory(KernelProvisionerFactory):
    """Every kernel gets the sandbox, whatever provisioner its kernel spec names."""

    def create_provisioner_instance(self, kernel_id: str, kernel_spec: Any, parent: Any):
        named = (kernel_spec.metadata or {}).get("kernel_provisioner", {}).get("provisioner_name")
        if named and named != ENTRY_POINT:
            self.log.warning("jupyter-warden: kernel spec %r names provisioner %r; it is sandboxed instead",
                             kernel_spec.display_name, named)
        return SandboxProvisioner(kernel_id=kernel_id, kernel_spec=kernel_spec, parent=parent)


def install_factory(parent) -> None:
    """Make the sandboxing factory jupyter_client's provisioner factory (a singleton)."""
    if isinstance(KernelProvisionerFactory._instance, SandboxProvisionerFactory):
        return
    KernelProvisionerFactory.clear_instance()
    SandboxProvisionerFactory.instance(parent=parent)


def uninstall_factory() -> None:
    if isinstance(KernelProvisionerFactory._instance, SandboxProvisionerFactory):
        SandboxProvisionerFactory.clear_instance()
