"""The kernel channel guard: who may connect to a kernel, and what each message needs.

``kernel_decision`` is the one answer to "may this actor use this kernel's
websocket?" (the authorizer asks it before the upgrade, the periodic recheck
asks it again). ``KernelChannelGuard`` sits in the websocket connection
class and checks every message both ways: the allow-list ``MESSAGE_RULES``,
the real user name in each header, a rate limit, output caps, and the
execution audit. ``KernelConnections`` re-checks every open connection.
docs/kernels.md describes all of it.
"""

from __future__ import annotations

import collections
import hashlib
import json
import time
from dataclasses import dataclass

from jupyter_client.jsonutil import json_default
from jupyter_server.gateway.connections import GatewayWebSocketConnection
from jupyter_server.services.kernels.connection.base import (
    deserialize_binary_message,
    serialize_msg_to_ws_v1,
)
from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection
from tornado import web
from tornado.ioloop import PeriodicCallback

from ..audit.log import DropRecords
from ..policy.engine import Actor
from ..policy.paths import BadPath
from ..store import StoreUnavailable
from .kernel_shares import may_use_kernel, owner_of

V1 = "v1.kernel.websocket.jupyter.org"
POLICY_VIOLATION = 1008  # RFC 6455: the websocket close code for "refused by policy"

# What a message from the client needs, by (channel, msg_type). Anything not
# here (an unknown type, or a known one on the wrong channel) is dropped.
RUN = "run"  # run on the kernel's notebook(s); checked at connect and on every tick
CONTROL = "owner or manage"  # the kernel's owner, or manage on one of its notebooks
OWNER = "owner"  # the kernel's owner (or an admin) only
MESSAGE_RULES: dict[tuple[str, str], str] = {
    **{
        ("shell", t): RUN
        for t in (
            "execute_request", "complete_request", "inspect_request", "history_request",
            "kernel_info_request", "is_complete_request", "comm_info_request",
            "comm_open", "comm_msg", "comm_close",
        )
    },
    ("stdin", "input_reply"): RUN,
    ("control", "interrupt_request"): CONTROL,
    ("control", "shutdown_request"): CONTROL,
    # The debugger reads the kernel's memory and files: as much as its owner can.
    ("control", "debug_request"): OWNER,
}

_DROP_AUDIT_INTERVAL = 1.0  # at most one drop record per connection per second
_TRACKED_EXECUTIONS = 256  # executions per connection whose output size / code hash is kept


@dataclass(frozen=True)
class KernelDecision:
    allowed: bool
    reason: str
    paths: tuple[str, ...] = ()
    hidden: bool = False  # refused as "no such kernel": not theirs, so not told it exists


def run_paths(session_manager, kernel_id: str) -> tuple[str, ...]:
    """The paths ``run`` is checked on: each notebook of the kernel's sessions (a folder for consoles)."""
    rows = session_manager.cursor.execute(
        "SELECT path, type FROM session WHERE kernel_id=?", (kernel_id,)
    ).fetchall()
    paths = {path if kind in (None, "notebook") else path.rpartition("/")[0] for path, kind in rows}
    return tuple(sorted(paths))


def kernel_decision(warden, kernel_manager, session_manager, actor: Actor, kernel_id: str) -> KernelDecision:
    """May ``actor`` hold a websocket to ``kernel_id``? Own or shared kernel, and run on its notebooks."""
    paths = run_paths(session_manager, kernel_id)
    if actor.admin:
        return KernelDecision(True, f"{actor.name} is a server admin", paths)
    if kernel_id not in kernel_manager:
        return KernelDecision(False, f"kernel {kernel_id} is not running", paths, hidden=True)
    if not may_use_kernel(kernel_manager, actor, kernel_id):
        return KernelDecision(False, f"kernel {kernel_id} is not yours and not shared with you",
                              paths, hidden=True)
    if not paths:
        if owner_of(kernel_manager, kernel_id) == actor.subject:
            return KernelDecision(True, "your own kernel, for no notebook")
        return KernelDecision(False, f"kernel {kernel_id} runs for no notebook; only its owner may use it")
    for path in paths:
        try:
            decision = warden.engine.check(actor, "run", path)
        except BadPath:
            return KernelDecision(False, f"kernel {kernel_id} runs for a path the policy can't read")
        if not decision.allowed:
            return KernelDecision(False, f"no run on '{path}': {decision.reason}", paths)
    return KernelDecision(True, "run on " + ", ".join(f"'{p}'" for p in paths), paths)


class _Malformed(Exception):
    pass


class _TokenBucket:
    def __init__(self, rate: float, burst: float):
        self.rate, self.burst = rate, burst
        self.tokens, self.at = burst, time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


def _obj(value, what: str) -> dict:
    if not isinstance(value, dict):
        raise _Malformed(f"the {what} is not a JSON object")
    return value


def _loads(raw: bytes, what: str) -> dict:
    try:
        return _obj(json.loads(raw), what)
    except (ValueError, UnicodeDecodeError):
        raise _Malformed(f"the {what} is not JSON") from None


def _parse_v1(ws_msg) -> tuple[str, list[bytes]]:
    """A v1 frame's channel and parts, checking every offset (the stock parser trusts them)."""
    if not isinstance(ws_msg, bytes) or len(ws_msg) < 8:
        raise _Malformed("a v1 frame must be binary, with an offset table")
    count = int.from_bytes(ws_msg[:8], "little")
    if not 6 <= count <= 64 or len(ws_msg) < 8 * (count + 1):
        raise _Malformed("the v1 offset table is not valid")
    offsets = [int.from_bytes(ws_msg[8 * (i + 1): 8 * (i + 2)], "little") for i in range(count)]
    if offsets[0] != 8 * (count + 1) or offsets[-1] != len(ws_msg) or offsets != sorted(offsets):
        raise _Malformed("the v1 offsets do not match the frame")
    try:
        channel = ws_msg[offsets[0]: offsets[1]].decode("ascii")
    except UnicodeDecodeError:
        raise _Malformed("the channel name is not ASCII") from None
    return channel, [ws_msg[offsets[i]: offsets[i + 1]] for i in range(1, count - 1)]


class KernelChannelGuard:
    """Mixed into a kernel websocket connection class; the transport-specific part is ``_forward``."""

    # -- life cycle ---------------------------------------------------------

    async def prepare(self):
        handler = self.websocket_handler
        self.warden = handler.settings["warden"]
        self.account = handler.warden_account
        self.actor = Actor.for_account(self.account)
        self.closing = False
        self._bucket = _TokenBucket(self.warden.kernel_message_rate, self.warden.kernel_message_burst)
        self._executions: collections.OrderedDict[str, dict] = collections.OrderedDict()
        self._drop_records = DropRecords(_DROP_AUDIT_INTERVAL)
        self._identity_checked = time.monotonic()
        decision = kernel_decision(self.warden, self.multi_kernel_manager, handler.session_manager,
                                   self.actor, self.kernel_id)
        if not decision.allowed:  # the authorizer asked the same question; this is a second lock
            raise web.HTTPError(403, decision.reason)
        self.paths = decision.paths
        parent = getattr(super(), "prepare", None)
        if parent is not None:
            await parent()

    async def connect(self):
        # Nagle's algorithm delays a reply's last small frames until the
        # client's delayed ACK (measured: 48 ms p50 stock, about 5 ms without).
        self.websocket_handler.set_nodelay(True)
        self.warden.kernel_connections.add(self)
        return await _maybe_await(super().connect())

    def disconnect(self):
        warden = getattr(self, "warden", None)
        if warden is not None:
            warden.kernel_connections.discard(self)
        return super().disconnect()

    @property
    def _v1(self) -> bool:
        return getattr(self.websocket_handler, "selected_subprotocol", None) == V1

    # -- the periodic recheck (G7) -----------------------------------------------

    def recheck(self) -> None:
        """Close this connection if its user may no longer use the kernel."""
        if self.closing:
            return
        try:
            now = time.monotonic()
            if now - self._identity_checked >= self.warden.kernel_identity_recheck_interval:
                self._identity_checked = now
                account = _current_account(self.warden, self.websocket_handler, self.account)
                if account is None:
                    return self.close_for("your sign-in ended (signed out, token revoked or account removed)")
                self.account, self.actor = account, Actor.for_account(account)
            decision = kernel_decision(self.warden, self.multi_kernel_manager,
                                       self.websocket_handler.session_manager, self.actor, self.kernel_id)
        except StoreUnavailable:
            return self.close_for("access can't be checked right now (the policy store is unreachable)")
        if not decision.allowed:
            return self.close_for(f"access to this kernel was taken away: {decision.reason}")
        self.paths = decision.paths

    def close_for(self, reason: str) -> None:
        self.closing = True
        self.warden.kernel_connections.discard(self)
        self._audit("kernel.disconnect", "deny", reason=reason)
        # A close reason must fit in one control frame (123 bytes).
        self.websocket_handler.close(POLICY_VIOLATION, reason.encode()[:123].decode("utf-8", "ignore"))

    # -- client to kernel ---------------------------------------------------

    def handle_incoming_message(self, incoming_msg) -> None:
        if self.closing:
            return
        if len(incoming_msg) > self.warden.kernel_max_incoming_bytes:
            return self._drop(f"a frame of {len(incoming_msg)} bytes is over the limit "
                              f"of {self.warden.kernel_max_incoming_bytes}")
        try:
            channel, header, msg, parts = self._parse(incoming_msg)
            if header["msg_type"] == "execute_request" and parts is not None:
                msg = {"content": _loads(parts[3], "content")}
        except _Malformed as e:
            return self._drop(f"malformed message: {e}")
        msg_type = header["msg_type"]
        if not self._bucket.take():
            return self._refuse(channel, header, "over the message rate limit of this connection")
        rule = MESSAGE_RULES.get((channel, msg_type))
        operator_list = getattr(self.multi_kernel_manager, "allowed_message_types", None)
        if rule is None or (operator_list and msg_type not in operator_list):
            return self._drop(f"{msg_type!r} on the {channel} channel is not an allowed message",
                              msg_type=msg_type)
        if rule != RUN:
            allowed, reason = self._may_control(rule)
            self._audit("kernel.message", "allow" if allowed else "deny", reason=reason,
                        details={"msg_type": msg_type}, rate_limited=not allowed)
            if not allowed:
                return self._refuse(channel, header, reason)
        # Whatever the client wrote, the kernel and the audit see the real user.
        header["username"] = self.actor.name
        if parts is not None:
            parts[0] = self.session.pack(header)
        if msg_type == "execute_request":
            self._audit_execute(header, msg["content"])
        self._forward(channel, msg if parts is None else None, parts)

    def _parse(self, ws_msg):
        """(channel, header, message dict or None, v1 parts or None); only v1 parts stay raw."""
        if self._v1:
            channel, parts = _parse_v1(ws_msg)
            if len(parts) < 4:
                raise _Malformed("a message needs header, parent header, metadata and content")
            header, msg = _loads(parts[0], "header"), None
        else:
            try:
                msg = deserialize_binary_message(ws_msg) if isinstance(ws_msg, bytes) else json.loads(ws_msg)
            except Exception:
                raise _Malformed("not a JSON (or binary) kernel message") from None
            msg = _obj(msg, "message")
            channel = msg.pop("channel", None) or "shell"
            header = _obj(msg.get("header"), "header")
            for key in ("parent_header", "metadata", "content"):
                msg[key] = _obj(msg.get(key, {}), key)
            parts = None
        if not isinstance(header.get("msg_type"), str) or not isinstance(header.get("msg_id"), str):
            raise _Malformed("the header has no msg_type or msg_id")
        if not isinstance(channel, str):
            raise _Malformed("the channel is not a string")
        return channel, header, msg, parts

    def _may_control(self, rule: str) -> tuple[bool, str]:
        if self.actor.admin:
            return True, f"{self.actor.name} is a server admin"
        if owner_of(self.multi_kernel_manager, self.kernel_id) == self.actor.subject:
            return True, "the kernel's owner"
        if rule == CONTROL:
            for path in self.paths:
                if self.warden.engine.check(self.actor, "manage", path).allowed:
                    return True, f"manage on '{path}'"
            return False, "only the kernel's owner, or a manager of its notebook, may do this"
        return False, "only the kernel's owner may do this"

    def _refuse(self, channel: str, header: dict, reason: str) -> None:
        """Drop a request, audited, and answer it with an error reply so the client never hangs."""
        msg_type = header["msg_type"]
        self._drop(reason, msg_type=msg_type)
        if msg_type.endswith("_request") and channel in ("shell", "control"):
            content = {"status": "error", "ename": "PermissionError", "evalue": reason, "traceback": []}
            if msg_type == "execute_request":
                content["execution_count"] = None
            self._to_client(channel, self.session.msg(msg_type[:-8] + "_reply", content, parent=header))

    def _drop(self, reason: str, msg_type: str | None = None) -> None:
        self.log.warning("kernel %s: dropped a message from %s: %s", self.kernel_id, self.actor.name, reason)
        self._audit("kernel.message", "deny", reason=reason,
                    details={"msg_type": msg_type} if msg_type else None, rate_limited=True)

    def _audit_execute(self, header: dict, content: dict) -> None:
        code = content.get("code")
        code = code if isinstance(code, str) else ""
        digest = hashlib.sha256(code.encode("utf-8", "surrogatepass")).hexdigest()
        details = {"msg_id": header["msg_id"], "sha256": digest}
        if self.warden.audit_code:
            details["code"] = code
        self._audit("kernel.execute", "allow", details=details)
        self._remember(header["msg_id"])["sha256"] = digest

    # -- kernel to client ---------------------------------------------------

    def _outgoing(self, channel, header: dict, parent: dict, size: int, content) -> str | None:
        """None to send the message; else the text of the notice that replaces it ('' drops it)."""
        if channel == "shell":
            if header.get("msg_type") == "execute_reply":
                self._audit_outcome(parent, content())
            return None
        if channel != "iopub" or header.get("msg_type") == "status":
            return None
        parent_id = parent.get("msg_id")
        if not isinstance(parent_id, str) or not parent_id:
            # Output of no execution (e.g. a thread printing later): only the per-message cap.
            return self._message_cap(size)
        execution = self._remember(parent_id)
        if execution.get("cut"):
            return ""
        limit, total = self.warden.kernel_max_output_bytes, execution.get("output", 0) + size
        if total > limit:
            execution["cut"] = True
            self._audit("kernel.output_cut", "deny", reason=f"over {limit} bytes of output",
                        details={"msg_id": parent_id}, rate_limited=True)
            return (f"[jupyter-warden] Output cut: this execution's output passed the limit of "
                    f"{limit} bytes; the rest is not shown (c.Warden.kernel_max_output_bytes).")
        notice = self._message_cap(size)
        if notice is None:
            execution["output"] = total
        return notice

    def _message_cap(self, size: int) -> str | None:
        if size > self.warden.kernel_max_message_bytes:
            return (f"[jupyter-warden] Output cut: one output message of {size} bytes is over the "
                    f"limit of {self.warden.kernel_max_message_bytes} (c.Warden.kernel_max_message_bytes).")
        return None

    def _notice(self, text: str, parent: dict) -> None:
        if text:
            msg = self.session.msg("stream", {"name": "stderr", "text": text + "\n"}, parent=parent)
            self._to_client("iopub", msg)

    def _audit_outcome(self, parent: dict, content) -> None:
        msg_id = parent.get("msg_id") if isinstance(parent, dict) else None
        status = content.get("status") if isinstance(content, dict) else None
        outcome = status if status in ("ok", "error", "aborted") else "unknown"
        known = self._executions.get(msg_id, {}) if isinstance(msg_id, str) else {}
        self._audit("kernel.execute_reply", outcome,
                    details={"msg_id": msg_id, "sha256": known.get("sha256")})

    def _to_client(self, channel: str, msg: dict) -> None:
        if self._v1:
            self.websocket_handler.write_message(serialize_msg_to_ws_v1(msg, channel, self.session.pack),
                                                 binary=True)
        else:
            self.websocket_handler.write_message(json.dumps({**msg, "channel": channel}, default=json_default))

    # -- shared -------------------------------------------------------------

    def _remember(self, msg_id: str) -> dict:
        execution = self._executions.get(msg_id)
        if execution is None:
            execution = self._executions[msg_id] = {}
            if len(self._executions) > _TRACKED_EXECUTIONS:
                self._executions.popitem(last=False)
        return execution

    def _audit(self, action, outcome, reason=None, details=None, rate_limited=False) -> None:
        if rate_limited:
            admitted, details = self._drop_records.admit(details)
            if not admitted:
                return
        self.warden.audit.record(
            self.actor.name, action, outcome, path=self.paths[0] if self.paths else None,
            reason=reason, client=self.websocket_handler.request.remote_ip,
            details={"kernel": self.kernel_id, **({"paths": list(self.paths)} if len(self.paths) > 1 else {}),
                     **(details or {})},
        )


async def _maybe_await(value):
    if hasattr(value, "__await__"):
        return await value
    return value


def _current_account(warden, handler, account):
    """The request's credential looked up again; None once it no longer signs anyone in."""
    try:
        fresh = handler.identity_provider.account_for(warden, handler)
    except web.HTTPError as e:
        if e.status_code == 503:
            raise StoreUnavailable(e.log_message) from None
        return None
    if fresh is None or fresh.name != account.name or fresh.link_id != account.link_id:
        return None
    return fresh


class GuardedZMQChannelsConnection(KernelChannelGuard, ZMQChannelsWebsocketConnection):
    """The guard over a local kernel's ZMQ channels."""

    def _forward(self, channel: str, msg, parts) -> None:
        if not self.channels:
            return  # already closed
        stream = self.channels.get(channel)
        if stream is None:
            return self._drop(f"no {channel} channel")
        if parts is not None:
            self.session.send_raw(stream, parts)
        else:
            self.session.send(stream, msg)

    def handle_outgoing_message(self, stream, outgoing_msg) -> None:
        channel = stream if isinstance(stream, str) else getattr(stream, "channel", None)
        _, fed = self.session.feed_identities(outgoing_msg)
        parts = fed[1:]
        if channel in ("shell", "iopub") and len(parts) >= 4:
            unpack = self.session.unpack
            try:
                header, parent = unpack(parts[0]), unpack(parts[1])
            except ValueError:
                return super().handle_outgoing_message(stream, outgoing_msg)
            notice = self._outgoing(channel, header, parent, sum(len(p) for p in parts),
                                    lambda: unpack(parts[3]))
            if notice is not None:
                return self._notice(notice, parent)
        super().handle_outgoing_message(stream, outgoing_msg)


class GuardedGatewayConnection(KernelChannelGuard, GatewayWebSocketConnection):
    """The guard over a kernel on a Jupyter (Enterprise) Gateway; always the JSON protocol."""

    def _forward(self, channel: str, msg, parts) -> None:
        super().handle_incoming_message(json.dumps({**msg, "channel": channel}, default=json_default))

    def handle_outgoing_message(self, incoming_msg, *args) -> None:
        try:
            msg = json.loads(incoming_msg)
            channel, header, parent = msg.get("channel"), msg["header"], msg.get("parent_header") or {}
        except (ValueError, KeyError, TypeError, AttributeError):
            return super().handle_outgoing_message(incoming_msg, *args)
        notice = self._outgoing(channel, header, parent, len(incoming_msg), lambda: msg.get("content"))
        if notice is not None:
            return self._notice(notice, parent)
        super().handle_outgoing_message(incoming_msg, *args)


class KernelConnections:
    """Every open guarded kernel connection, re-checked together on one timer (G7)."""

    def __init__(self, interval: float):
        self.interval = interval
        self._open: set = set()
        self._timer: PeriodicCallback | None = None

    def add(self, connection) -> None:
        self._open.add(connection)
        if self._timer is None:
            self._timer = PeriodicCallback(self.recheck, self.interval * 1000)
            self._timer.start()

    def discard(self, connection) -> None:
        self._open.discard(connection)
        if not self._open and self._timer is not None:
            self._timer.stop()
            self._timer = None

    def recheck(self, kernel_id: str | None = None) -> None:
        for connection in list(self._open):
            if kernel_id is None or connection.kernel_id == kernel_id:
                try:
                    connection.recheck()
                except Exception:
                    connection.log.exception("kernel connection recheck failed; closing it")
                    connection.close_for("access can't be checked right now")

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
