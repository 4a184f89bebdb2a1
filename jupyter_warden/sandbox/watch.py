"""Keeps each sandboxed kernel's mounts within its user's rights while it runs (G4, G7).

A kernel's view is made at start. Every c.Warden.kernel_recheck_interval,
each running kernel's owner is asked again for what its mounts rely on
(read, and write where bound writable, on each path mounted from the served
root; run on its notebooks). Every path it can reach below them (a folder of
thousands of files is too many to ask four times a second) is asked again
when the policy or the owner's groups change, and at the next start or end
of a time window among the grants those answers rest on: a timer is set for
that moment, as the policy engine's cache expires then. A kernel whose owner
lost a right is shut down, with the reason told to its clients and kept for
the exit endpoint.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass

from tornado.ioloop import IOLoop, PeriodicCallback

from ..enforce.kernel_channels import run_paths
from ..policy.engine import Actor
from ..store import StoreError
from ..store.models import utcnow

# A backstop only: policy changes, group changes and time windows each start a full check.
FULL_CHECK_INTERVAL = 60.0
# The window timer fires this much after the boundary, so that the clocks agree it has passed.
_WINDOW_MARGIN = 0.01


@dataclass(frozen=True)
class _FullCheck:
    """The last check of every path of one kernel, and what would make it stale."""

    version: int | None  # the policy version it saw
    subjects: tuple[str, ...]  # the owner's subjects (user, groups) it saw
    at: float  # when (monotonic)
    next_change: dt.datetime | None  # the nearest time-window start or end among its answers


class AccessWatch:
    """The running sandboxed kernels, re-checked together on one timer."""

    def __init__(self, warden, interval: float):
        self.warden, self.interval = warden, interval
        self._kernels: dict[str, object] = {}  # kernel id -> its SandboxProvisioner
        self._checked: dict[str, _FullCheck] = {}  # kernel id -> its last full check
        # kernel id -> its owner as of the policy version of that check (a change of their
        # account, groups or admin flag bumps the version, and so brings a fresh look)
        self._actors: dict[str, tuple[int | None, Actor]] = {}
        self._timer: PeriodicCallback | None = None
        self._window_timer = None  # (IOLoop, its timeout) at the nearest time-window boundary
        self._window_at: dt.datetime | None = None

    def add(self, kernel_id: str, provisioner) -> None:
        self._kernels[kernel_id] = provisioner
        if self._timer is None and self.interval > 0:
            self._timer = PeriodicCallback(self.recheck, self.interval * 1000)
            self._timer.start()

    def discard(self, kernel_id: str) -> None:
        self._kernels.pop(kernel_id, None)
        self._checked.pop(kernel_id, None)
        self._actors.pop(kernel_id, None)
        if not self._kernels:
            self.stop()

    def stop(self) -> None:
        self._kernels.clear()
        self._checked.clear()
        self._actors.clear()
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        self._set_window_timer(None)

    def recheck(self) -> None:
        for kernel_id, provisioner in list(self._kernels.items()):
            try:
                lost = self._check(kernel_id, provisioner)
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
        self._set_window_timer(min((c.next_change for c in self._checked.values() if c.next_change),
                                   default=None))

    def _check(self, kernel_id: str, provisioner) -> str | None:
        """What the kernel's owner lost, checking every path only when something may have changed."""
        actor, launch = provisioner.actor, provisioner.launch
        if actor is None or launch is None:
            return None
        version, now = self.warden.engine.version(), time.monotonic()
        if not actor.link_id:
            known = self._actors.get(kernel_id)
            if known is not None and known[0] == version:
                actor = known[1]  # no store read while nothing changed
            else:
                account = self.warden.accounts.get_user(actor.name)
                if account is None:
                    return f"the account {actor.name} was removed"
                actor = Actor.for_account(account)
                self._actors[kernel_id] = (version, actor)
        if actor.admin:
            return None
        last = self._checked.get(kernel_id)
        every_path = (last is None or last.version != version or last.subjects != actor.subjects_key
                      or now - last.at >= FULL_CHECK_INTERVAL
                      or (last.next_change is not None and utcnow() >= last.next_change))
        lost, next_change = self.lost_right(kernel_id, actor, launch, every_path)
        if every_path and lost is None:
            self._checked[kernel_id] = _FullCheck(version, actor.subjects_key, now, next_change)
        return lost

    def lost_right(self, kernel_id: str, actor: Actor, launch,
                   every_path: bool = True) -> tuple[str | None, dt.datetime | None]:
        """(what the owner may no longer do that the sandbox still allows, or None; and, when
        every path was asked, the nearest time-window boundary among the answers)."""
        engine = self.warden.engine
        soonest: dt.datetime | None = None
        for path, writable, mounted in launch.views:
            if not (mounted or every_path):
                continue
            if not engine.check(actor, "read", path).allowed:
                return f"{actor.name} may no longer read '{path or '/'}'", None
            if writable and not engine.check(actor, "write", path).allowed:
                return f"{actor.name} may no longer write '{path or '/'}'", None
            if every_path:
                change = engine.next_change(actor, path)
                if change is not None and (soonest is None or change < soonest):
                    soonest = change
        for path in run_paths(self.warden.serverapp.session_manager, kernel_id):
            if not engine.check(actor, "run", path).allowed:
                return f"{actor.name} may no longer run '{path}'", None
        return None, soonest

    def _set_window_timer(self, at: dt.datetime | None) -> None:
        """One timer, at the nearest time-window boundary of any running kernel's paths."""
        if at == self._window_at:
            return
        if self._window_timer is not None:
            self._window_timer[0].remove_timeout(self._window_timer[1])
            self._window_timer = None
        self._window_at = at
        if at is not None:
            loop = IOLoop.current()
            delay = max(0.0, (at - utcnow()).total_seconds()) + _WINDOW_MARGIN
            self._window_timer = (loop, loop.call_later(delay, self._window_reached))

    def _window_reached(self) -> None:
        self._window_timer = self._window_at = None
        self.recheck()
