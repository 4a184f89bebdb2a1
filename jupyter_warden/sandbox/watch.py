"""Keeps each sandboxed kernel's mounts within its user's rights while it runs (G4, G7).

A kernel's view is made at start. Every c.Warden.kernel_recheck_interval,
each running kernel's owner is asked again for what its mounts rely on
(read, and write where bound writable, on each path mounted from the served
root; run on its notebooks); every path it can reach below them is asked
again when the policy changes, and every FULL_CHECK_INTERVAL seconds for
rights that end by their time window (a folder of thousands of files is too
many to ask four times a second). A kernel whose owner lost a right is shut
down, with the reason told to its clients and kept for the exit endpoint.
"""

from __future__ import annotations

import time

from tornado.ioloop import PeriodicCallback

from ..enforce.kernel_channels import run_paths
from ..policy.engine import Actor
from ..store import StoreError

FULL_CHECK_INTERVAL = 10.0


class AccessWatch:
    """The running sandboxed kernels, re-checked together on one timer."""

    def __init__(self, warden, interval: float):
        self.warden, self.interval = warden, interval
        self._kernels: dict[str, object] = {}  # kernel id -> its SandboxProvisioner
        # kernel id -> (policy version, time) of its last check of every path
        self._checked: dict[str, tuple[int | None, float]] = {}
        # kernel id -> its owner as of that check (a change of their account, groups or
        # admin flag changes the policy version, and so brings a check of every path)
        self._actors: dict[str, Actor] = {}
        self._timer: PeriodicCallback | None = None

    def add(self, kernel_id: str, provisioner) -> None:
        self._kernels[kernel_id] = provisioner
        if self._timer is None and self.interval > 0:
            self._timer = PeriodicCallback(self.recheck, self.interval * 1000)
            self._timer.start()

    def discard(self, kernel_id: str) -> None:
        self._kernels.pop(kernel_id, None)
        self._checked.pop(kernel_id, None)
        self._actors.pop(kernel_id, None)
        if not self._kernels and self._timer is not None:
            self._timer.stop()
            self._timer = None

    def stop(self) -> None:
        self._kernels.clear()
        self._checked.clear()
        self._actors.clear()
        if self._timer is not None:
            self._timer.stop()
            self._timer = None

    def recheck(self) -> None:
        for kernel_id, provisioner in list(self._kernels.items()):
            try:
                version, now = self.warden.engine.version(), time.monotonic()
                last_version, last_time = self._checked.get(kernel_id, (-1, 0.0))
                every_path = version != last_version or now - last_time >= FULL_CHECK_INTERVAL
                lost = self.lost_right(kernel_id, provisioner.actor, provisioner.launch, every_path)
                if every_path:
                    self._checked[kernel_id] = (version, now)
            except StoreError:
                continue  # the store is down: the guard closes connections; the view stays as it was made
            except Exception:  # one kernel's failure must not stop the watch of the others
                self.warden.log.exception("jupyter-warden: the access check of kernel %s failed", kernel_id)
                continue
            if lost is not None:
                self.discard(kernel_id)
                # The guard first closes the websockets of users who lost run, with its
                # own reason; those who may still use the kernel are told why it stops.
                self.warden.kernel_connections.recheck(kernel_id)
                provisioner.stop_for("access-lost", lost)

    def lost_right(self, kernel_id: str, actor: Actor | None, launch, every_path: bool = True) -> str | None:
        """What the kernel's owner may no longer do that its sandbox still allows; None if nothing."""
        if actor is None or launch is None:
            return None
        if not actor.link_id:
            # The account is read again only with the full check: between two, the
            # policy version did not move, so no account, group or admin flag changed
            # (measured under bench/load.py: this read, per kernel four times a
            # second, was a third of the event loop's time with 100 kernels).
            known = None if every_path else self._actors.get(kernel_id)
            if known is None:
                account = self.warden.accounts.get_user(actor.name)
                if account is None:
                    return f"the account {actor.name} was removed"
                known = self._actors[kernel_id] = Actor.for_account(account)
            actor = known
        if actor.admin:
            return None
        engine = self.warden.engine
        for path, writable, mounted in launch.views:
            if not (mounted or every_path):
                continue
            if not engine.check(actor, "read", path).allowed:
                return f"{actor.name} may no longer read '{path or '/'}'"
            if writable and not engine.check(actor, "write", path).allowed:
                return f"{actor.name} may no longer write '{path or '/'}'"
        for path in run_paths(self.warden.serverapp.session_manager, kernel_id):
            if not engine.check(actor, "run", path).allowed:
                return f"{actor.name} may no longer run '{path}'"
        return None
