"""The real-time collaboration guard: jupyter-collaboration's document websocket, per message.

``room_path`` maps a room id to the file it edits. ``GuardedDocumentHandler``
replaces jupyter_server_ydoc's websocket handler: its file's ``read`` is
checked at sign-in, before ``prepare()`` loads anything (the authorizer's
``_document_room``); from there on every message from the client is
screened here (``MESSAGE_RULES``), awareness carries the server's identity
of the user, and the connection is re-checked on a timer (G7).
docs/collaboration.md describes all of it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque

from jupyter_server.base.handlers import JupyterHandler
from jupyter_server_ydoc.handlers import FORK_ROOMS, TimelineHandler, YDocWebSocketHandler
from jupyter_server_ydoc.utils import room_id_from_encoded_path
from pycrdt import create_sync_message
from tornado import web
from tornado.websocket import WebSocketClosedError

from ..audit.log import DropRecords
from ..policy.engine import Actor
from ..policy.paths import BadPath, normalize_path
from ..store import StoreUnavailable
from .kernel_channels import POLICY_VIOLATION, _current_account

SYNC, AWARENESS, RAW = 0, 1, 2
SYNC_STEP1, SYNC_STEP2, SYNC_UPDATE = 0, 1, 2
READ, WRITE = "read", "write"

# What a message from the client needs, by its first bytes. Anything else
# (another message type, an unknown sync step or RAW request) is dropped.
# Both SYNC_STEP2 and SYNC_UPDATE carry changes: filtering only one is a hole.
MESSAGE_RULES: dict[tuple, str] = {
    (SYNC, SYNC_STEP1): READ,  # "what do you have?": the server answers with the document
    (SYNC, SYNC_STEP2): WRITE,
    (SYNC, SYNC_UPDATE): WRITE,
    (AWARENESS,): READ,  # presence and cursors; the user field is the server's (see _awareness)
    (RAW, "save"): WRITE,  # saves the room to disk at once
}

# An empty Y update (no structs, no deletions), as a length-prefixed payload:
# what a fresh client answers to the server's step 1. Dropped for readers, silently.
_EMPTY_UPDATE = b"\x02\x00\x00"
_DROP_AUDIT_INTERVAL = 1.0  # at most one drop record per connection per second
_IDENTITY_FIELDS = ("username", "name", "display_name")

# What the server tells a client about its own connection, as RAW JSON messages
# (docs/collaboration.md, "Telling the client"). Stock clients ignore them.
ACCESS_NOTICE = "warden:access"  # on open, and whenever write comes or goes
REFUSED_NOTICE = "warden:refused"  # a message of the client's was dropped for its size
_OVERSIZE_CLOSE_AFTER = 3  # oversized messages one connection may send before it is closed
MESSAGE_TOO_BIG = 1009  # the websocket close code for "message too big" (RFC 6455)

# Sign-in re-checks, shared by connections with the same credential for this long.
_IDENTITY_SHARED_FOR = 0.1
_IDENTITY_ANSWERS: dict[tuple, tuple] = {}

# Timeline forks (a read-only copy of a document's history): fork room id -> root room id.
TIMELINE_FORKS: dict[str, str] = {}


def room_path(settings, room_id: str, _depth: int = 0) -> str | None:
    """The file a room edits, relative to the root; None for a room that edits no file."""
    if room_id.count(":") >= 2:
        manager = settings.get("file_id_manager")
        file_id = room_id.split(":", 2)[2]
        path = manager.get_path(file_id) if manager is not None and file_id else None
        if not isinstance(path, str):
            return None
        try:
            return normalize_path(path)
        except BadPath:
            return None
    # A fork (or a timeline's fork) stands for its root document.
    root = (FORK_ROOMS.get(room_id) or {}).get("root_roomid") or TIMELINE_FORKS.get(room_id)
    if root is None or _depth > 4:
        return None
    return room_path(settings, root, _depth + 1)


# The file of each room, as last looked up (a file id store query, about 60 µs): every
# open connection of a room re-checks its path each tick, and they share one lookup.
_ROOM_PATHS: dict[tuple[int, str], tuple[float, str | None]] = {}


def current_room_path(settings, room_id: str, max_age: float) -> str | None:
    """room_path(), looked up at most once per ``max_age`` seconds per room."""
    now = time.monotonic()
    key = (id(settings), room_id)
    known = _ROOM_PATHS.get(key)
    if known is not None and now - known[0] < max_age:
        return known[1]
    if len(_ROOM_PATHS) > 4096:
        _ROOM_PATHS.clear()
    path = _ROOM_PATHS[key] = (now, room_path(settings, room_id))
    return path[1]


def room_of(handler) -> str:
    """The room id exactly as jupyter_server_ydoc derives it from the URL."""
    return room_id_from_encoded_path(handler.request.path)


class _Malformed(Exception):
    pass


class _Reader:
    """Y protocol decoding with every length checked (pycrdt's decoder trusts them)."""

    def __init__(self, data: bytes):
        self.data, self.at = data, 0

    def uint(self) -> int:
        value = shift = 0
        while True:
            if self.at >= len(self.data) or shift > 63:
                raise _Malformed("a number runs past the end of the message")
            byte = self.data[self.at]
            self.at += 1
            value |= (byte & 127) << shift
            shift += 7
            if byte < 128:
                return value

    def bytes(self) -> bytes:
        length = self.uint()
        if self.at + length > len(self.data):
            raise _Malformed("a field runs past the end of the message")
        chunk = self.data[self.at : self.at + length]
        self.at += length
        return chunk

    def string(self) -> str:
        try:
            return self.bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise _Malformed("a string is not UTF-8") from None


def _uint(value: int) -> bytes:
    out = bytearray()
    while value > 127:
        out.append(128 | (value & 127))
        value >>= 7
    out.append(value)
    return bytes(out)


def _chunk(data: bytes) -> bytes:
    return _uint(len(data)) + data


class GuardedDocumentHandler(YDocWebSocketHandler):
    """jupyter_server_ydoc's document websocket, with the warden's checks on every message."""

    warden_path: str | None = None  # set by the authorizer at sign-in, once read is checked
    warden_room_checked = False
    _wrote = False
    kernel_id = None  # (the connection registry is shared with the kernel guard's)

    # -- life cycle ---------------------------------------------------------

    async def prepare(self):
        # Sign-in first: the identity guard checks read on the room's file there
        # (authorizer._document_room). Only then may the room be made and loaded.
        await JupyterHandler.prepare(self)
        if self._finished:
            return  # sent to the sign-in page
        if self.current_user is None or not self.warden_room_checked:
            raise web.HTTPError(403, "sign in to open this document")
        self.warden = self.settings["warden"]
        self.account = self.warden_account
        self.actor = Actor.for_account(self.account)
        self.closing = False
        self.may_write = self._may(WRITE)
        self.awareness_client: int | None = None
        self._drop_records = DropRecords(_DROP_AUDIT_INTERVAL)
        self._identity_checked = time.monotonic()
        self._oversized = 0
        await super().prepare()

    @property
    def max_message_size(self) -> int:
        # Frames up to 4x the cap are read and refused by on_message (audited,
        # with a notice); anything bigger is never buffered: tornado closes
        # the connection on its header (1009), see on_close.
        cap = self.settings["warden"].document_max_message_bytes
        return cap * 4 if cap > 0 else super().max_message_size

    async def open(self, room_id: str) -> None:
        if self.warden.document_nodelay:
            # Y updates are small and fan out to every client at once; with
            # Nagle's algorithm a second write to a socket (the awareness that
            # follows each keystroke's update) waits for the client's delayed ACK.
            self.set_nodelay(True)
        self.warden.document_connections.add(self)
        self._audit("document.connect", "allow", reason=self._mode())
        await super().open(room_id)
        if self.ws_connection is not None and not self.ws_connection.is_closing():
            self._tell_access()

    def get_websocket_protocol(self):
        protocol = super().get_websocket_protocol()
        if protocol is not None:
            # tornado closes with 1009 by itself on a frame over max_message_size,
            # before any of it is read: note it, to audit it in on_close.
            close = protocol.close

            def close_noting_size(code=None, reason=None):
                if code == MESSAGE_TOO_BIG and not self.closing:
                    self._frame_too_big = True
                return close(code, reason)

            protocol.close = close_noting_size
        return protocol

    def on_close(self) -> None:
        warden = getattr(self, "warden", None)
        if warden is not None:
            warden.document_connections.discard(self)
            if getattr(self, "_frame_too_big", False):
                self.closing = True
                self._audit("document.disconnect", "deny",
                            reason=f"a frame over {self.max_message_size} bytes (4 times the message limit)")
        super().on_close()

    def _mode(self) -> str:
        return "read-write" if self.may_write else "read-only: changes from this connection are dropped"

    def _may(self, capability: str) -> bool:
        if self.warden_path is None:
            return self.actor.admin  # a room for no file: admins only (see _document_room)
        return self.warden.engine.check(self.actor, capability, self.warden_path).allowed

    # -- the periodic recheck (G7) ------------------------------------------

    def recheck(self) -> None:
        """Follow the policy: close on lost read, turn read-only or read-write as write comes and goes."""
        if self.closing:
            return
        now = time.monotonic()
        if now - self._identity_checked >= self.warden.kernel_identity_recheck_interval:
            self._identity_checked = now
            _IDENTITY_QUEUE.check_soon(self)
        try:
            if self.warden_path is not None:
                # The file may have moved (its room id stays): follow it.
                path = current_room_path(self.settings, self._room_id,
                                         self.warden.document_recheck_interval / 2)
                if path is None:
                    return self.close_for("the document is gone")
                self.warden_path = path
            if not self._may(READ):
                return self.close_for(f"read access to '{self.warden_path}' was taken away")
            may_write = self._may(WRITE)
        except StoreUnavailable:
            return self.close_for("access can't be checked right now (the policy store is unreachable)")
        if may_write != self.may_write:
            self.may_write = may_write
            self._audit("document.access", "allow" if may_write else "deny", reason=self._mode())
            self._tell_access()
            if may_write and self.room is not None:
                # The client's edits from its read-only time were dropped, and Y
                # applies a client's edits only in order: ask it (sync step 1) for
                # all it has that the room lacks, or its next edits would wait forever.
                self.write_message(create_sync_message(self.room.ydoc), binary=True)

    def recheck_identity(self) -> None:
        """The sign-in, looked up again (from _IDENTITY_QUEUE): closed once it ended."""
        if self.closing:
            return
        try:
            account = self._current_account()
        except StoreUnavailable:
            return self.close_for("access can't be checked right now (the policy store is unreachable)")
        if account is None:
            return self.close_for("your sign-in ended (signed out, token revoked or account removed)")
        self.account, self.actor = account, Actor.for_account(account)

    def _current_account(self):
        """The sign-in looked up again, once per credential per recheck pass.

        A lookup costs a store transaction (about 1.5 ms); one user's many tabs,
        all re-checked on the same tick, share one answer.
        """
        headers = self.request.headers
        key = (self.request.remote_ip, headers.get("Authorization"), headers.get("Cookie"),
               headers.get(self.warden.proxy_header))
        now = time.monotonic()
        for old in [k for k, (at, _) in _IDENTITY_ANSWERS.items() if now - at > _IDENTITY_SHARED_FOR]:
            del _IDENTITY_ANSWERS[old]
        if key in _IDENTITY_ANSWERS:
            account = _IDENTITY_ANSWERS[key][1]
        else:
            account = _current_account(self.warden, self, self.account)
            _IDENTITY_ANSWERS[key] = (now, account)
        if account is None or account.name != self.account.name or account.link_id != self.account.link_id:
            return None
        return account

    def close_for(self, reason: str) -> None:
        self.closing = True
        self.warden.document_connections.discard(self)
        try:
            self._audit("document.disconnect", "deny", reason=reason)
        except Exception as e:  # the store may be what failed: the connection closes all the same (G9)
            self.log.warning("document %s: the disconnect of %s was not audited: %s", self._room_id,
                             self.actor.name, e)
        finally:
            # A close reason must fit in one control frame (123 bytes).
            self.close(POLICY_VIOLATION, reason.encode()[:123].decode("utf-8", "ignore"))

    # -- client to room -----------------------------------------------------

    def on_message(self, message):
        if self.closing:
            return None
        cap = self.warden.document_max_message_bytes
        if cap > 0 and len(message) > cap:
            return self._too_big(message, cap)
        try:
            rule, message = self._screen(message)
        except _Malformed as e:
            return self._drop(f"malformed message: {e}")
        if rule is None:
            return None
        if rule == WRITE:
            if not self.may_write:
                return self._refuse(message)
            if not self._wrote and self.warden_path is not None:
                # The room's saves are masked for the vault values of those who wrote to it.
                self._wrote = True
                self.warden.document_writers.setdefault(self.warden_path, set()).add(self.actor.owner)
        return super().on_message(message)

    def _screen(self, message) -> tuple[str | None, bytes]:
        """(the capability the message needs, the message to pass on); (None, _) to drop it."""
        if not isinstance(message, bytes) or len(message) < 1:
            raise _Malformed("a Y message is a non-empty binary frame")
        kind = message[0]
        if kind == SYNC:
            step = message[1] if len(message) > 1 else None
            rule = MESSAGE_RULES.get((SYNC, step))
        elif kind == AWARENESS:
            return READ, self._awareness(message)
        elif kind == RAW:
            reader = _Reader(message)
            reader.uint()
            rule = MESSAGE_RULES.get((RAW, reader.string()))
        else:
            rule = None
        if rule is None:
            self._drop("not an allowed collaboration message", kind=kind)
        return rule, message

    def _refuse(self, message: bytes) -> None:
        """A change or save from a connection without write: dropped, and audited if it carried anything."""
        if message[0] == SYNC:
            if message[2:] != _EMPTY_UPDATE:
                self._drop(f"{self.actor.name} may not write '{self.warden_path}'; the change was dropped",
                           kind="sync-step2" if message[1] == SYNC_STEP2 else "sync-update")
            return None
        self._drop(f"{self.actor.name} may not write '{self.warden_path}'; the save was refused", kind="save")
        reader = _Reader(message)
        reader.uint(), reader.string()
        try:
            save_id = reader.uint()
        except _Malformed:
            return None
        # Answer it, so the client stops waiting (the stock reply format).
        reply = json.dumps({"type": "save", "responseTo": save_id, "status": "failed"})
        self.write_message(_uint(RAW) + _chunk(reply.encode()), binary=True)
        return None

    def _too_big(self, message, cap: int) -> None:
        """A message over c.Warden.document_max_message_bytes: dropped, audited, told; closed if it goes on.

        A writer's change that is dropped leaves its client out of step for
        good (Y applies a client's changes only in order): that connection is
        closed at once, so that the client reconnects (JupyterLab reloads).
        """
        self._oversized += 1
        change = isinstance(message, bytes) and message[:1] == bytes([SYNC]) and message[1:2] in (
            bytes([SYNC_STEP2]), bytes([SYNC_UPDATE]))
        reason = f"a message of {len(message)} bytes is over this server's limit of {cap} bytes"
        self._drop(reason, kind="too-big")
        self._notify(REFUSED_NOTICE, reason=reason, size=len(message), limit=cap)
        if change and self.may_write:
            return self._close_too_big(f"a change of {len(message)} bytes is over the limit of {cap} bytes")
        if self._oversized >= _OVERSIZE_CLOSE_AFTER:
            return self._close_too_big(f"{self._oversized} messages over the limit of {cap} bytes")
        return None

    def _close_too_big(self, reason: str) -> None:
        self.closing = True
        self.warden.document_connections.discard(self)
        self._audit("document.disconnect", "deny", reason=reason)
        self.close(MESSAGE_TOO_BIG, reason.encode()[:123].decode("utf-8", "ignore"))

    # -- server to client: notices ------------------------------------------

    def _tell_access(self) -> None:
        """Tell the client whether its changes reach the room (docs/collaboration.md)."""
        self._notify(ACCESS_NOTICE, path=self.warden_path, writable=self.may_write,
                     reason=("you may edit this document" if self.may_write else
                             "read-only: you may not write this document; your changes are not kept"))

    def _notify(self, kind: str, **fields) -> None:
        body = json.dumps({"type": kind, **fields})
        try:
            self.write_message(_uint(RAW) + _chunk(body.encode()), binary=True)
        except WebSocketClosedError:
            pass  # the client is gone: it needs no notice

    def _awareness(self, message: bytes) -> bytes:
        """The awareness update with this user's identity as the server knows it.

        One connection speaks for one Y client id, its first; a state naming
        another user (``username``, ``name`` or ``display_name``) is refused.
        """
        outer = _Reader(message)
        outer.uint()
        reader = _Reader(outer.bytes())
        entries = []
        for _ in range(reader.uint()):
            client_id, clock, raw = reader.uint(), reader.uint(), reader.string()
            if self.awareness_client is None:
                if self._claimed_by_another(client_id):
                    raise _Malformed(f"awareness client id {client_id} belongs to another connection")
                self.awareness_client = client_id
            if client_id != self.awareness_client:
                raise _Malformed("awareness for another client id than this connection's")
            try:
                state = json.loads(raw) if raw else None
            except ValueError:
                raise _Malformed("an awareness state is not JSON") from None
            if state is not None:
                if not isinstance(state, dict):
                    raise _Malformed("an awareness state is not a JSON object")
                state["user"] = self._identity(state.get("user"))
            entries.append(_uint(client_id) + _uint(clock) + _chunk(json.dumps(state).encode()))
        update = _uint(len(entries)) + b"".join(entries)
        return _uint(AWARENESS) + _chunk(update)

    def _identity(self, claimed) -> dict:
        user = self.current_user
        own = {
            "username": user.username, "name": user.name, "display_name": user.display_name,
            "initials": user.initials, "avatar_url": None, "color": user.color,
        }
        if claimed is not None:
            if not isinstance(claimed, dict):
                raise _Malformed("the awareness user is not a JSON object")
            forged = [f for f in _IDENTITY_FIELDS if f in claimed and claimed[f] != own[f]]
            if forged:
                raise _Malformed(f"the awareness state names another user ({', '.join(forged)})")
        return own

    def _claimed_by_another(self, client_id: int) -> bool:
        room = getattr(self, "room", None)
        return any(
            other is not self and getattr(other, "awareness_client", None) == client_id
            for other in getattr(room, "clients", ())
        )

    # -- audit --------------------------------------------------------------

    def _drop(self, reason: str, kind=None) -> None:
        self.log.warning("document %s: dropped a message from %s: %s", self._room_id, self.actor.name, reason)
        self._audit("document.message", "deny", reason=reason,
                    details={"message": kind} if kind is not None else None, rate_limited=True)

    def _audit(self, action, outcome, reason=None, details=None, rate_limited=False) -> None:
        if rate_limited:
            admitted, details = self._drop_records.admit(details)
            if not admitted:
                return
        self.warden.audit.record(
            self.actor.name, action, outcome, path=self.warden_path, reason=reason,
            client=self.request.remote_ip, details={"room": self._room_id, **(details or {})},
        )


class _IdentityQueue:
    """Sign-in re-checks of open document websockets, one per turn of the event loop.

    Each is a store transaction (about 1.5 ms): a hundred followers re-checked
    in one go would hold every room's messages for 150 ms or more. One at a
    time, messages flow in between; a hundred still take well under a second.
    """

    def __init__(self):
        self._due: deque = deque()
        self._task: asyncio.Task | None = None
        self._loop = None

    def check_soon(self, connection) -> None:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new server (tests): nothing from the old loop carries over
            self._loop, self._due, self._task = loop, deque(), None
        if connection in self._due:
            return  # (a slow store: still waiting from the last interval)
        self._due.append(connection)
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._drain())

    async def _drain(self) -> None:
        while self._due:
            connection = self._due.popleft()
            try:
                connection.recheck_identity()
            except Exception:
                connection.log.exception("document connection sign-in recheck failed; closing it")
                connection.close_for("access can't be checked right now")
            await asyncio.sleep(0)  # let the loop deliver messages before the next one


_IDENTITY_QUEUE = _IdentityQueue()


class GuardedTimelineHandler(TimelineHandler):
    """The timeline, remembering which document each fork it makes is a copy of."""

    def finish(self, chunk=None):
        if isinstance(chunk, str) and '"forkRoom"' in chunk:
            try:
                data = json.loads(chunk)
                TIMELINE_FORKS[data["forkRoom"]] = data["roomId"]
            except (ValueError, KeyError, TypeError):
                pass
        return super().finish(chunk)


REPLACEMENTS = {
    YDocWebSocketHandler: GuardedDocumentHandler,
    TimelineHandler: GuardedTimelineHandler,
}


def install_guarded_handlers(web_app) -> int:
    """Swap jupyter_server_ydoc's handlers for the guarded ones in the server's routes; how many."""

    def swap(router) -> int:
        count = 0
        for rule in getattr(router, "rules", ()):
            target = rule.target
            if isinstance(target, type) and target in REPLACEMENTS:
                rule.target = REPLACEMENTS[target]
                if hasattr(rule, "handler_class"):
                    rule.handler_class = rule.target
                count += 1
            elif hasattr(target, "rules"):
                count += swap(target)
        return count

    return swap(web_app.default_router)
