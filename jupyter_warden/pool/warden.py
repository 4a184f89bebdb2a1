"""The warden server's side of pool kernels: the launch request, their max age and idle cull.

With ``--gateway-url``, every kernel starts on an Enterprise Gateway. The
server, never the client, writes the request's environment: the kernel id it
chose, ``KERNEL_USERNAME``, and the signed launch token (user, uid, limits,
network) that the pool host checks. Everything else a request could carry
into EG's remote shell (the notebook's path as ``KERNEL_WORKING_DIR``) is
blanked: EG puts each value in a shell command line on the host.

A pool kernel past ``c.Warden.kernel_max_age`` is shut down here, through
the gateway. jupyter_server's culler (``MappingKernelManager.cull_idle_timeout``,
set from ``c.Warden.kernel_idle_timeout``) shuts down idle ones from the
gateway's activity model; ``culled`` is called just before, so that the
users of either are told why, in the cell that was running.
"""

from __future__ import annotations

import hashlib
import re
import time

from tornado.ioloop import PeriodicCallback

from ..policy.engine import Actor
from ..sandbox.notices import PREFIX, exit_message
from .launch_token import ENV_TOKEN, sign

_SHELL_SAFE = re.compile(r"[A-Za-z0-9._@+-]{1,64}")

LOST_MESSAGE = (
    f"{PREFIX}Kernel lost: the pool host running it stopped answering, and everything defined in "
    "the kernel is gone. Restart the kernel to continue; your notebook is intact."
)


def idle_message(timeout: float) -> str:
    """What the users of a pool kernel culled for idleness read."""
    return (f"{PREFIX}The kernel was stopped: it was idle for longer than the idle timeout of {timeout:g} s "
            "(c.Warden.kernel_idle_timeout). It was shut down; start a new kernel to go on.")


def kernel_username(actor: Actor) -> str:
    """The user's name as EG sees it (KERNEL_USERNAME): shell-safe, else a digest of the subject."""
    if _SHELL_SAFE.fullmatch(actor.name):
        return actor.name
    return "warden-" + hashlib.sha256(actor.subject.encode()).hexdigest()[:16]


class PoolLaunches:
    """Signs launch requests for the pool, and stops pool kernels past their max age."""

    def __init__(self, warden, key: bytes, uids, gid: int, limits, network_subjects: frozenset[str],
                 max_age: float):
        self.warden, self.key, self.uids, self.gid = warden, key, uids, gid
        self.limits, self.network_subjects, self.max_age = limits, network_subjects, max_age
        self._started: dict[str, tuple[float, str, str]] = {}  # kernel id -> (start, user, owner)
        self._timer: PeriodicCallback | None = None
        self._claims: dict[str, dict] = {}  # signed, not yet started

    def launch_env(self, actor: Actor, kernel_id: str) -> dict[str, str]:
        """The environment of the gateway request that starts ``kernel_id`` for ``actor``."""
        username = kernel_username(actor)
        claims = {
            "kernel_id": kernel_id, "user": actor.name, "subject": actor.subject, "username": username,
            "uid": self.uids.uid_for(actor.subject), "gid": self.gid,
            "network": not self.network_subjects.isdisjoint(actor.subjects()),
            "limits": self.limits.as_dict(), "max_age": self.max_age, "issued": int(time.time()),
        }
        self._claims[kernel_id] = claims
        return {"KERNEL_ID": kernel_id, "KERNEL_USERNAME": username, ENV_TOKEN: sign(self.key, claims),
                "KERNEL_WORKING_DIR": "", "KERNEL_REMOTE_HOST": ""}

    def forget(self, kernel_id: str) -> None:
        """The start failed: drop what was signed for it."""
        self._claims.pop(kernel_id, None)

    def started(self, kernel_id: str, actor: Actor, kernel_manager) -> None:
        claims = self._claims.pop(kernel_id, {})
        self.warden.audit.record(actor.name, "kernel.start", "allow", details={
            "kernel_id": kernel_id, "pool": True, "uid": claims.get("uid"), "network": claims.get("network"),
            "limits": self.limits.as_dict()})
        self._started[kernel_id] = (time.monotonic(), actor.name, actor.owner)
        if self.max_age > 0 and self._timer is None:
            self.kernel_manager = kernel_manager
            interval = min(max(self.max_age / 10, 0.5), 30.0)
            self._timer = PeriodicCallback(self._check_ages, interval * 1000)
            self._timer.start()

    async def _check_ages(self) -> None:
        km = self.kernel_manager
        now = time.monotonic()
        for kernel_id, (since, user, owner) in list(self._started.items()):
            if kernel_id not in km:
                del self._started[kernel_id]
                continue
            if now - since < self.max_age:
                continue
            del self._started[kernel_id]
            message = exit_message("max-age", self.limits, self.max_age)
            self.warden.kernel_connections.kernel_ended(kernel_id, message)
            self.warden.audit.record(user, "kernel.exit", "allow", reason="max-age",
                                     details={"kernel_id": kernel_id, "pool": True, "cause": "max-age"})
            self.warden.kernel_ends.record(kernel_id, owner, [], "max-age", message, None)
            try:
                await km.shutdown_kernel(kernel_id, now=True)
            except Exception as e:  # gone on the gateway already
                self.warden.log.warning("jupyter-warden: pool kernel %s not stopped at its max age: %s",
                                        kernel_id, e)

    async def check_gateway(self, kernel_manager) -> None:
        """Say so at start if the gateway won't list its kernels: the kernel list and idle cull need it."""
        from jupyter_server.gateway.gateway_client import gateway_request
        from tornado import web

        try:
            await gateway_request(kernel_manager.kernels_url, method="GET")
        except web.HTTPError as e:
            if e.status_code == 403:
                self.warden.log.error(
                    "jupyter-warden: the Enterprise Gateway refuses to list its kernels: GET /api/kernels "
                    "fails and idle pool kernels are never culled. Start it with "
                    "--EnterpriseGatewayApp.list_kernels=True (docs/pool.md)")
        except Exception as e:  # not up yet: the first launch will say more
            self.warden.log.warning("jupyter-warden: the Enterprise Gateway can't be reached yet: %s", e)

    def culled(self, kernel_id: str, timeout: float, owner: str | None) -> None:
        """jupyter_server's culler is about to shut ``kernel_id`` down for idleness: tell its users."""
        since, user, started_owner = self._started.pop(kernel_id, (None, None, None))
        owner = owner or started_owner or ""
        message = idle_message(timeout)
        self.warden.kernel_connections.kernel_ended(kernel_id, message)
        self.warden.audit.record(user or owner, "kernel.exit", "allow", reason="idle",
                                 details={"kernel_id": kernel_id, "pool": True, "cause": "idle",
                                          "idle_timeout": timeout})
        self.warden.kernel_ends.record(kernel_id, owner, [], "idle", message, None)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
