"""jupyter_server's event bus (``/api/events/subscribe``) for everyone signed in, and the warden's access notice on it.

The stock socket sends every event to every subscriber (paths of others'
saves, kernel actions), so it stays for admins. ``GuardedEventsSocket``
replaces it: admins still get the whole bus, everyone else (share links'
guests too) only ``ACCESS_SCHEMA`` events. ``AccessNotices`` emits one when
anything that decides access changed, so pages re-ask
``/api/warden/permissions`` at once instead of polling; the notice names no
path, user or level, since every subscriber gets it (docs/ui.md).
"""

from __future__ import annotations

import datetime as dt
import json
import time

from jupyter_server.services.events.handlers import SubscribeWebsocket
from sqlalchemy import func, select
from tornado.ioloop import PeriodicCallback
from tornado.websocket import WebSocketClosedError

from ..policy.engine import Actor
from ..store import StoreUnavailable
from ..store.models import Grant, utcnow

# A URN: the project owns no domain to put a schema under.
ACCESS_SCHEMA_ID = "urn:jupyter-warden:events:access:v1"
HEARTBEAT = 5.0  # seconds between 'alive' notices on each subscribed socket
# Why a notice is sent; the first two go through the bus, the last two only
# to the one socket (they are about that connection, not the policy).
CAUSES = {
    "policy": "a grant, label, link, group or account changed (the store's policy version moved)",
    "time": "a grant's time window opened or closed, or a link expired",
    "subscribed": "sent once to a socket that has just subscribed: re-ask what may have changed before",
    "alive": "sent to each subscribed socket every `heartbeat` seconds, so a page can tell the bus is live",
}
ACCESS_SCHEMA = {
    "$id": ACCESS_SCHEMA_ID,
    "version": "1",
    "title": "jupyter-warden access notice",
    "personal-data": False,
    "description": (
        "Something that decides who may do what may have changed. It names no "
        "path, user or level: every signed-in subscriber gets it, and re-asks "
        "GET /api/warden/permissions for what it shows."
    ),
    "type": "object",
    "required": ["cause"],
    "properties": {
        "cause": {"enum": list(CAUSES), "description": "; ".join(f"{k}: {v}" for k, v in CAUSES.items())},
        "heartbeat": {
            "type": "number",
            "description": "with 'subscribed' and 'alive': seconds between 'alive' notices on this socket",
        },
    },
}


class GuardedEventsSocket(SubscribeWebsocket):
    """``/api/events/subscribe``: the whole bus for admins, the warden's access notices for everyone else."""

    def open(self) -> None:  # type: ignore[override]
        self.warden = self.settings["warden"]
        actor = Actor.for_account(self.warden_account)
        if actor.admin:
            super().open()
        else:
            self.event_logger.add_listener(schema_id=ACCESS_SCHEMA_ID, listener=self.event_listener)
        self.warden.access_notices.add(self)

    def on_close(self) -> None:
        warden = getattr(self, "warden", None)
        if warden is not None:
            warden.access_notices.discard(self)
        super().on_close()  # removes the listener from every schema

    def tell(self, cause: str, **fields) -> None:
        """A notice for this socket alone, in the bus's own format."""
        capsule = {
            "schema_id": ACCESS_SCHEMA_ID,
            "__timestamp__": dt.datetime.now(dt.timezone.utc).isoformat() + "Z",
            "__schema__": ACCESS_SCHEMA_ID,
            "__schema_version__": ACCESS_SCHEMA["version"],
            "cause": cause,
            **fields,
        }
        try:
            self.write_message(json.dumps(capsule))
        except WebSocketClosedError:
            pass  # gone: on_close takes it out


class AccessNotices:
    """While pages are subscribed, watch the policy and tell them when access may have changed.

    Each tick asks the engine for the store's policy version (it reads the
    store at most every ``c.Warden.policy_poll_interval``), so changes made
    by the CLI or another server process are noticed too; and it emits again
    when the next grant time window or link expiry passes.
    """

    def __init__(self, warden, interval: float, heartbeat: float):
        self.warden = warden
        self.interval = interval
        self.heartbeat = heartbeat
        self._open: set[GuardedEventsSocket] = set()
        self._timer: PeriodicCallback | None = None
        self._version: int | None = None
        self._next_boundary: dt.datetime | None = None
        self._last_alive = 0.0

    def add(self, socket: GuardedEventsSocket) -> None:
        if not self._open:
            self._version = self._current_version()
            self._next_boundary = self._boundary()
            self._last_alive = time.monotonic()
        self._open.add(socket)
        socket.tell("subscribed", heartbeat=self.heartbeat)
        if self._timer is None:
            self._timer = PeriodicCallback(self.tick, self.interval * 1000)
            self._timer.start()

    def discard(self, socket: GuardedEventsSocket) -> None:
        self._open.discard(socket)
        if not self._open:
            self.stop()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None

    def tick(self) -> None:
        try:
            version = self._current_version()
            if version != self._version:
                self._version = version
                self._next_boundary = self._boundary()
                self.emit("policy")
            elif self._next_boundary is not None and utcnow() >= self._next_boundary:
                self._next_boundary = self._boundary()
                self.emit("time")
        except StoreUnavailable:
            pass  # pages keep what they have; their own requests say the store is away
        now = time.monotonic()
        if now - self._last_alive >= self.heartbeat:
            self._last_alive = now
            for socket in list(self._open):
                socket.tell("alive", heartbeat=self.heartbeat)

    def emit(self, cause: str) -> None:
        self.warden.serverapp.event_logger.emit(schema_id=ACCESS_SCHEMA_ID, data={"cause": cause})

    def _current_version(self) -> int | None:
        return self.warden.engine.version()

    def _boundary(self) -> dt.datetime | None:
        """The next moment a grant's time window opens or closes (a link's expiry is its grant's end)."""
        now = utcnow()
        queries = [
            select(func.min(Grant.not_before)).where(Grant.not_before > now),
            select(func.min(Grant.not_after)).where(Grant.not_after > now),
        ]
        with self.warden.store.read() as conn:
            times = [conn.execute(q).scalar() for q in queries]
        times = [t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc) for t in times if t is not None]
        return min(times) if times else None


def install_events_socket(web_app) -> int:
    """Swap jupyter_server's event bus socket for the guarded one in the server's routes; how many."""

    def swap(router) -> int:
        count = 0
        for rule in getattr(router, "rules", ()):
            target = rule.target
            if target is SubscribeWebsocket:
                rule.target = GuardedEventsSocket
                if hasattr(rule, "handler_class"):
                    rule.handler_class = GuardedEventsSocket
                count += 1
            elif hasattr(target, "rules"):
                count += swap(target)
        return count

    return swap(web_app.default_router)
