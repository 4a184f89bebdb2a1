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
from jupyter_client.session import DELIM
from jupyter_server.gateway.connections import GatewayWebSocketConnection
from jupyter_server.services.kernels.connection.base import (
    deserialize_binary_message,
    serialize_msg_to_ws_v1,
)
from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection
from tornado import web
from tornado.ioloop import IOLoop, PeriodicCallback
from tornado.websocket import WebSocketClosedError

from ..audit.log import DropRecords
from ..policy.engine import Actor
from ..policy.paths import BadPath
from ..sandbox.notices import FORK_REFUSED, close_reason, error_hint, process_hint
from ..secrets.masking import OutputMasking
from ..store import StoreUnavailable
from ..store.models import utcnow
from .kernel_shares import may_use_kernel, owner_of

V1 = "v1.kernel.websocket.jupyter.org"
POLICY_VIOLATION = 1008  # RFC 6455: the websocket close code for "refused by policy"
# A kernel stopped for good (max age, idle, access lost): a normal closure, so
# JupyterLab marks the connection closed instead of reconnecting to nothing.
KERNEL_STOPPED = 1000

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
_TRACKED_PARENTS = 64  # distinct raw parent headers per connection whose msg_id is remembered


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
        if owner_of(kernel_manager, kernel_id) == actor.owner:
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


def _pending_bytes(handler) -> int:
    """Bytes queued in the server for this websocket that its client's TCP has not taken yet."""
    stream = getattr(getattr(handler, "ws_connection", None), "stream", None)
    # tornado's IOStream keeps no public count; tests/test_kernel_guard.py
    # (test_a_client_that_never_reads) fails if this ever stops finding it.
    buffer = getattr(stream, "_write_buffer", None)
    return len(buffer) if buffer is not None else 0


class OutgoingMessage:
    """One kernel message on its way to one client: its parts, each decoded once, on demand.

    From ZMQ it holds the raw parts (header, parent header, metadata, content,
    buffers); from a gateway, the decoded message. ``set_content`` changes it.
    """

    __slots__ = ("channel", "parts", "size", "changed", "_session", "_decoded")

    def __init__(self, channel, session, parts=None, decoded=None, size=0):
        self.channel, self._session, self.parts = channel, session, parts
        self._decoded = decoded if decoded is not None else [_UNDECODED] * 4
        self.size = size if parts is None else sum(map(len, parts))
        self.changed = False

    def _part(self, i: int):
        value = self._decoded[i]
        if value is _UNDECODED:
            try:
                value = self._session.unpack(self.parts[i])
            except ValueError:
                value = None
            self._decoded[i] = value
        return value

    @property
    def header(self):
        return self._part(0)

    @property
    def parent(self):
        return self._part(1)

    @property
    def metadata(self):
        return self._part(2)

    @property
    def content(self):
        return self._part(3)

    @property
    def raw_parent(self) -> bytes | None:
        raw = self.parts[1] if self.parts is not None else None
        return raw if isinstance(raw, bytes) else None

    def set_content(self, content: dict) -> None:
        self._decoded[3] = content
        if self.parts is not None:
            self.parts[3] = self._session.pack(content)
            self.size = sum(map(len, self.parts))
        self.changed = True


_UNDECODED = object()


class _Pacing:
    """``TCP_NODELAY`` for replies, Nagle's coalescing for a burst of output.

    Without Nagle, a reply's few small frames leave at once (the round trip
    is several times faster than stock). In a burst (a cell printing fast),
    each frame would then be a packet of its own, which costs the server and
    the client a send and a receive per message: after ``BURST`` messages
    within ``WINDOW`` seconds Nagle's algorithm is turned back on, and off
    again (which sends what it held) once the output pauses for ``WINDOW``.
    """

    BURST = 16
    WINDOW = 0.005

    def __init__(self, handler):
        self._handler = handler
        self._start = self._last = 0.0
        self._count = 0
        self._coalescing = False
        self._set(True)

    def _set(self, nodelay: bool) -> None:
        try:
            self._handler.set_nodelay(nodelay)
        except (AssertionError, AttributeError, OSError):  # the websocket is closing
            pass

    def wrote(self) -> None:
        now = time.monotonic()
        self._last = now
        if self._coalescing:
            return
        if now - self._start > self.WINDOW:
            self._start, self._count = now, 0
        self._count += 1
        if self._count >= self.BURST:
            self._coalescing = True
            self._set(False)
            IOLoop.current().call_later(self.WINDOW, self._settle)

    def _settle(self) -> None:
        quiet = time.monotonic() - self._last
        if quiet < self.WINDOW:
            IOLoop.current().call_later(self.WINDOW - quiet, self._settle)
            return
        self._coalescing, self._count = False, 0
        self._set(True)


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
        self._parent_ids: dict[bytes, str] = {}
        self._unsent, self._unsent_parent = 0, None  # output dropped for a client that didn't read
        self._ended: str | None = None  # why the kernel was stopped for good, once it was
        # Read once per connection: the outgoing path runs thousands of times a second.
        self._max_message_bytes = self.warden.kernel_max_message_bytes
        self._max_output_bytes = self.warden.kernel_max_output_bytes
        self._max_send_buffer = self.warden.kernel_max_send_buffer_bytes
        decision = kernel_decision(self.warden, self.multi_kernel_manager, handler.session_manager,
                                   self.actor, self.kernel_id)
        if not decision.allowed:  # the authorizer asked the same question; this is a second lock
            raise web.HTTPError(403, decision.reason)
        self.paths = decision.paths
        self.masking = OutputMasking(getattr(self.warden, "vault_channels", None), self.kernel_id,
                                     self.actor.owner)
        parent = getattr(super(), "prepare", None)
        if parent is not None:
            await parent()

    async def connect(self):
        # Nagle's algorithm delays a reply's last small frames until the
        # client's delayed ACK (measured: 48 ms p50 stock, about 5 ms without).
        self._pacing = _Pacing(self.websocket_handler)
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
        if self._ended is not None and self.kernel_id not in self.multi_kernel_manager:
            return self._close_stopped()
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
        # Output dropped while the client wasn't reading, and nothing sent since: say so now.
        if self._unsent and _pending_bytes(self.websocket_handler) <= self._max_send_buffer // 2:
            self._send_unsent_notice()

    def close_for(self, reason: str) -> None:
        self.closing = True
        self.warden.kernel_connections.discard(self)
        try:
            self._audit("kernel.disconnect", "deny", reason=reason)
        except Exception as e:  # the store may be what failed: the connection closes all the same (G9)
            self.log.warning("kernel %s: the disconnect of %s was not audited: %s", self.kernel_id,
                             self.actor.name, e)
        finally:
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
            if self.warden.sealed_runs.claims_sealed(msg["content"]):  # sealed/execution.py
                return self.warden.sealed_runs.execute(self, channel, header, msg if parts is None else None,
                                                       parts, msg["content"])
            self._audit_execute(header, msg["content"])
        elif msg_type == "input_reply":  # never audited nor logged; a password typed is masked from now on
            self.masking.input_reply(*_reply_of(msg, parts))
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
        if owner_of(self.multi_kernel_manager, self.kernel_id) == self.actor.owner:
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

    def _audit_execute(self, header: dict, content: dict, sealed: dict | None = None) -> None:
        code = content.get("code")
        code = code if isinstance(code, str) else ""
        digest = hashlib.sha256(code.encode("utf-8", "surrogatepass")).hexdigest()
        details = {"msg_id": header["msg_id"], "sha256": digest, **({"sealed": sealed} if sealed else {})}
        if self.warden.audit_code:
            details["code"] = code
        self._audit("kernel.execute", "allow", details=details)
        execution = self._remember(header["msg_id"])
        execution["sha256"], execution["header"] = digest, header

    # -- kernel to client ---------------------------------------------------
    #
    # Every message from the kernel takes one path, in this order:
    #   1. ``_output_guard``: the output caps and the execution audit's outcome;
    #      the message is sent, replaced by a notice, or dropped;
    #   2. ``_room_to_send``: the bound on what waits for a client that doesn't read;
    #   3. ``transform_outgoing``: the one place where a message's content is
    #      changed before it leaves (masking hooks go there);
    #   4. jupyter_server's own path (traceback hiding, IOPub rate limit, the write).
    # IOPub carries thousands of messages a second: 1 and 2 decode nothing in
    # the common case but the parent header, once per execution (``_parent_id``).

    def _pass_outgoing(self, message: OutgoingMessage) -> bool:
        """Whether to send ``message`` on (perhaps changed); False when it was dropped or replaced."""
        if self.closing:
            return False
        notice = self._output_guard(message)
        if notice is not None:
            if notice:
                self._notice(notice, message.parent)
            return False
        if not self._room_to_send(message.channel, message):
            return False
        self.transform_outgoing(message)
        return True

    def transform_outgoing(self, message: OutgoingMessage) -> None:
        """Change a message on its way to the client, in place (``message.set_content``).

        The single place for output transformations; it runs after the caps,
        on messages that will be sent. Secrets are masked after it, on the
        message as it will be sent (secrets/masking.py).
        """
        # Sealed cells: masked execute_input, scrubbed tracebacks and replies
        # (sealed/execution.py); nothing is decoded for a kernel that never ran one.
        runs = self.warden.sealed_runs
        if not runs.has_runs(self.kernel_id):
            return
        header, parent = message.header, message.parent
        if not isinstance(header, dict):
            return
        scrubbed = runs.outgoing(self.kernel_id, message.channel, header,
                                 parent if isinstance(parent, dict) else {}, lambda: message.content)
        if scrubbed is not None:
            message.set_content(scrubbed)

    def _output_guard(self, message: OutgoingMessage) -> str | None:
        """None to send the message; else the text of the notice that replaces it ('' drops it)."""
        channel = message.channel
        if channel == "shell":
            header = message.header
            if isinstance(header, dict) and header.get("msg_type") == "execute_reply":
                self._audit_outcome(message.parent, message.content)
            return None
        if channel != "iopub":
            return None
        size = message.size
        # A cheap look at the raw header first: only a header holding b"error" can be an error.
        if self.warden.sandbox_runner is not None:
            self._explain_limit(message)
        parent_id = self._parent_id(message)
        execution = self._remember(parent_id) if parent_id else None
        if execution is not None and execution.get("cut"):
            return None if self._is_status(message) else ""
        if size > self._max_message_bytes:
            # No real status message is this big; even one labelled so is cut.
            return (f"[jupyter-warden] Output cut: one output message of {size} bytes is over the "
                    f"limit of {self._max_message_bytes} (c.Warden.kernel_max_message_bytes).")
        if execution is None:
            return None  # output of no execution (e.g. a thread printing later): only the message cap
        total = execution.get("output", 0) + size
        if total <= self._max_output_bytes:
            execution["output"] = total
            return None
        if self._is_status(message):
            return None  # the client waits for the idle status: it always passes
        limit = self._max_output_bytes
        execution["cut"] = True
        self._audit("kernel.output_cut", "deny", reason=f"over {limit} bytes of output",
                    details={"msg_id": parent_id}, rate_limited=True)
        return (f"[jupyter-warden] Output cut: this execution's output passed the limit of "
                f"{limit} bytes; the rest is not shown (c.Warden.kernel_max_output_bytes).")

    def _parent_id(self, message: OutgoingMessage) -> str | None:
        """The parent header's msg_id. An execution's outputs carry the same parent bytes, so
        each distinct parent is decoded once; the answer is exactly what decoding would give."""
        raw = message.raw_parent
        if raw is not None:
            known = self._parent_ids.get(raw)
            if known is not None:
                return known or None
        parent = message.parent
        parent_id = parent.get("msg_id") if isinstance(parent, dict) else None
        parent_id = parent_id if isinstance(parent_id, str) else ""
        if raw is not None:
            if len(self._parent_ids) >= _TRACKED_PARENTS:
                self._parent_ids.clear()
            self._parent_ids[raw] = parent_id
        return parent_id or None

    @staticmethod
    def _is_status(message: OutgoingMessage) -> bool:
        header = message.header
        return isinstance(header, dict) and header.get("msg_type") == "status"

    def _notice(self, text: str, parent) -> None:
        msg = self.session.msg("stream", {"name": "stderr", "text": text + "\n"},
                               parent=parent if isinstance(parent, dict) else {})
        self._to_client("iopub", msg)

    def _audit_outcome(self, parent, content) -> None:
        msg_id = parent.get("msg_id") if isinstance(parent, dict) else None
        status = content.get("status") if isinstance(content, dict) else None
        outcome = status if status in ("ok", "error", "aborted") else "unknown"
        known = self._executions.get(msg_id, {}) if isinstance(msg_id, str) else {}
        known["replied"] = True
        self._audit("kernel.execute_reply", outcome,
                    details={"msg_id": msg_id, "sha256": known.get("sha256")})

    def _explain_limit(self, message: OutgoingMessage) -> None:
        """Output that a sandbox limit caused gets a note naming the limit and its setting.

        An error (MemoryError, EFBIG, EMFILE, a refused fork or thread) and, once
        per execution, stderr where a shell or library says its fork was refused.
        Cheap looks at the raw parts first: this runs on every IOPub message.
        """
        raw_header = message.parts[0] if message.parts is not None else None
        raw_content = message.parts[3] if message.parts is not None else None
        limits = self.warden.sandbox_runner.limits
        if not isinstance(raw_header, bytes) or b"error" in raw_header:
            header, content = message.header, message.content
            if not (isinstance(header, dict) and header.get("msg_type") == "error" and isinstance(content, dict)):
                return
            ename, evalue = content.get("ename"), content.get("evalue")
            if isinstance(ename, str) and isinstance(evalue, str):
                hint = error_hint(ename, evalue, limits, content.get("traceback"), self._kernel_cap_refused)
                if hint:
                    self._notice(hint, message.parent)
        elif ((limits.processes or limits.cgroup_pids) and isinstance(raw_content, bytes)
                and FORK_REFUSED in raw_content and b"fork" in raw_content and isinstance(message.header, dict)
                and message.header.get("msg_type") == "stream"):
            parent_id = self._parent_id(message)
            execution = self._remember(parent_id) if parent_id else {}
            if not execution.get("told_processes"):
                execution["told_processes"] = True
                self._notice(process_hint(limits, kernel_cap=self._kernel_cap_refused()), message.parent)

    def _kernel_cap_refused(self) -> bool | None:
        """Whether the kernel's cgroup refused a process since this connection last asked
        (its pids.events count rose); None without a cgroup to ask."""
        try:
            launch = self.multi_kernel_manager.get_kernel(self.kernel_id).provisioner.launch
            cgroup = launch.cgroup if launch is not None else None
        except (KeyError, AttributeError):
            return None
        if cgroup is None:
            return None
        count = cgroup.pids_refusals()
        seen = getattr(self, "_pids_refusals_seen", (None, 0))
        before = seen[1] if seen[0] is cgroup else 0  # a restart's cgroup counts from 0
        self._pids_refusals_seen = (cgroup, count)
        return count > before

    def kernel_ended(self, message: str, stopped: bool = False) -> None:
        """Tell this client why its kernel died: in each running cell, or once if none runs.

        ``stopped``: the kernel was shut down for good (not restarted). The client
        also gets a "dead" status, and its websocket is closed with the reason
        once the kernel is gone from the kernel manager (``recheck``).

        Each execution still running is lost: its cell gets the notice, then an
        error ``execute_reply`` (the kernel will never send one), and the audit
        its outcome, ``lost``.        """
        if self.closing:
            return
        running = self._running()
        try:
            for parent in running or [{}]:
                self._notice(message, parent)
            if stopped:
                self._ended = message
                dead = self.session.msg("status", {"execution_state": "dead"}, parent=(running or [{}])[0])
                self._to_client("iopub", dead)
        except Exception as e:  # the websocket may be closing too
            self.log.debug("kernel %s: the end notice was not sent: %s", self.kernel_id, e)
        self._lose(running, message)

    def on_kernel_restarted(self):
        # jupyter_client's restarter found the kernel dead (a kernel outside the
        # sandbox, or one whose end the sandbox did not see first).
        self._lose(self._running(), "The kernel died before it replied; Jupyter restarts it with a fresh state.")
        parent = getattr(super(), "on_kernel_restarted", None)
        if parent is not None:
            parent()

    def on_restart_failed(self):
        self._lose(self._running(), "The kernel died before it replied, and could not be restarted.")
        parent = getattr(super(), "on_restart_failed", None)
        if parent is not None:
            parent()

    def _running(self) -> list[dict]:
        """The request headers of this connection's executions that have no reply yet."""
        return [e["header"] for e in self._executions.values() if "header" in e and not e.get("replied")]

    def executions_stopped(self, why: str) -> None:
        """The kernel was restarted or shut down on request: each running execution is aborted.

        The kernel will never reply to them; each gets the notice, an
        ``aborted`` reply, and its outcome in the audit, ``aborted``, with who
        stopped it."""
        running = self._running()
        if not self.closing:
            for parent in running:
                self._notice(why, parent)
        self._lose(running, why, outcome="aborted")

    def _lose(self, running: list[dict], why: str, outcome: str = "lost") -> None:
        for header in running:
            execution = self._executions.get(header.get("msg_id"), {})
            if execution.get("replied"):
                continue
            execution["replied"] = True
            self._audit("kernel.execute_reply", outcome, reason=why.strip(),
                        details={"msg_id": header.get("msg_id"), "sha256": execution.get("sha256")})
            if self.closing:
                continue
            if outcome == "aborted":
                content = {"status": "aborted", "execution_count": None}
            else:
                content = {"status": "error", "execution_count": None, "ename": "KernelDied",
                           "evalue": why.strip(), "traceback": []}
            try:
                self._to_client("shell", self.session.msg("execute_reply", content, parent=header))
            except Exception as e:  # the websocket may be closing too
                self.log.debug("kernel %s: the lost reply was not sent: %s", self.kernel_id, e)

    def _close_stopped(self) -> None:
        """Close this websocket of a kernel that was stopped for good, with why."""
        self.closing = True
        self.warden.kernel_connections.discard(self)
        reason = close_reason(self._ended)
        self._audit("kernel.disconnect", "allow", reason=reason)
        self.websocket_handler.close(KERNEL_STOPPED, reason)

    def _to_client(self, channel: str, msg: dict) -> None:
        """Send a message the guard made (a notice, an error reply), within the send buffer bound."""
        if not self.closing and self._room_to_send(channel, None):
            self._write(channel, msg)

    def _write(self, channel: str, msg: dict) -> None:
        if self._v1:
            data, binary = serialize_msg_to_ws_v1(msg, channel, self.session.pack), True
        else:
            data, binary = json.dumps({**msg, "channel": channel}, default=json_default), False
        try:
            self.websocket_handler.write_message(data, binary=binary)
        except WebSocketClosedError:
            pass

    # -- a client that doesn't read ---------------------------------------------

    def _room_to_send(self, channel: str, message: OutgoingMessage | None) -> bool:
        """Whether a message may be queued for the client now (the send buffer bound).

        Over ``kernel_max_send_buffer_bytes`` waiting to be sent, output is
        dropped (the client hears of it once it reads again); status messages
        and replies still queue, as clients wait for them, up to twice the
        bound; past that, the client is not reading at all and is disconnected.
        """
        limit = self._max_send_buffer
        pending = _pending_bytes(self.websocket_handler)
        if pending <= limit:
            if self._unsent and pending <= limit // 2:
                self._send_unsent_notice()
            return True
        is_output = channel == "iopub" and (message is None or not self._is_status(message))
        if is_output:
            if not self._unsent:
                self._audit("kernel.output_dropped", "deny", rate_limited=True,
                            reason=f"over {limit} bytes were waiting to be sent to a client that "
                                   "was not reading; output is dropped until it catches up")
            self._unsent += 1
            if message is not None:
                self._unsent_parent = message.parent
            return False
        if pending > 2 * limit:
            self.close_for(f"this connection stopped reading: over {2 * limit} bytes were waiting "
                           "to be sent to it (c.Warden.kernel_max_send_buffer_bytes)")
            return False
        if self._unsent and channel == "iopub":
            self._send_unsent_notice()  # before the (idle) status, so the cell still shows it
        return True

    def _send_unsent_notice(self) -> None:
        """One small notice for the output dropped so far; it is queued even over the bound."""
        count, parent = self._unsent, self._unsent_parent
        self._unsent, self._unsent_parent = 0, None
        text = (f"[jupyter-warden] {count} output message(s) were not shown: this connection was "
                f"not reading them fast enough, and over {self._max_send_buffer} bytes were waiting "
                "to be sent (c.Warden.kernel_max_send_buffer_bytes).\n")
        msg = self.session.msg("stream", {"name": "stderr", "text": text},
                               parent=parent if isinstance(parent, dict) else {})
        self._write("iopub", msg)

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


def _reply_of(msg, parts) -> tuple[str | None, dict | None]:
    """(the parent msg_id, the content) of a client's reply, in either wire protocol."""
    try:
        parent = msg["parent_header"] if parts is None else json.loads(parts[1])
        content = msg["content"] if parts is None else json.loads(parts[3])
    except (ValueError, UnicodeDecodeError, KeyError, TypeError):
        return None, None
    return (parent.get("msg_id") if isinstance(parent, dict) else None), content


async def _maybe_await(value):
    if hasattr(value, "__await__"):
        return await value
    return value


def _current_account(warden, handler, account):
    """The request's credential looked up again; None once it no longer signs anyone in.

    Every change that can end or alter a sign-in (sign-out, a password change,
    a revoked token or link, an account removed, a group or admin change)
    bumps the store's policy version in its own transaction. While that
    version is the one seen at the last lookup, and the credential has not
    expired, the answer stands without a store transaction: a hundred open
    websockets cost one version poll, not a hundred lookups. The hub's
    answers come from the hub, not the store: those are always asked again.
    """
    version = None
    if warden.identity != "jupyterhub":
        version = warden.engine.version()
        if (version is not None and getattr(handler, "_warden_identity_seen", None) == version
                and (account.valid_until is None or utcnow() < account.valid_until)):
            return account
    try:
        fresh = handler.identity_provider.account_for(warden, handler)
    except web.HTTPError as e:
        if e.status_code == 503:
            raise StoreUnavailable(e.log_message) from None
        return None
    if fresh is None or fresh.name != account.name or fresh.link_id != account.link_id:
        return None
    handler._warden_identity_seen = version  # read before the lookup: a change meanwhile is seen next time
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
        idents, fed = self.session.feed_identities(outgoing_msg)
        if len(fed) < 5:
            return super().handle_outgoing_message(stream, outgoing_msg)  # not a message: logged there
        message = OutgoingMessage(channel, self.session, parts=fed[1:])
        if not self._pass_outgoing(message):
            return
        if message.changed:  # re-signed: the JSON protocol checks the kernel's signature
            outgoing_msg = [*idents, DELIM, self.session.sign(message.parts[:4]), *message.parts]
        outgoing_msg = self.masking.zmq(self, channel, outgoing_msg, idents, message)  # secrets/masking.py
        if outgoing_msg is not None:
            if b'"status"' not in message.parts[0]:  # a burst is output, not a cell's busy and idle
                self._pacing.wrote()
            super().handle_outgoing_message(stream, outgoing_msg)


class GuardedGatewayConnection(KernelChannelGuard, GatewayWebSocketConnection):
    """The guard over a kernel on a Jupyter (Enterprise) Gateway; always the JSON protocol."""

    def _forward(self, channel: str, msg, parts) -> None:
        # Past the guard (whose handle_incoming_message is next in the MRO): to the gateway.
        GatewayWebSocketConnection.handle_incoming_message(
            self, json.dumps({**msg, "channel": channel}, default=json_default))

    def handle_outgoing_message(self, incoming_msg, *args) -> None:
        try:
            msg = json.loads(incoming_msg)
            decoded = [msg["header"], msg.get("parent_header") or {}, msg.get("metadata"), msg.get("content")]
            channel = msg.get("channel")
        except (ValueError, KeyError, TypeError, AttributeError):
            return super().handle_outgoing_message(incoming_msg, *args)
        message = OutgoingMessage(channel, self.session, decoded=decoded, size=len(incoming_msg))
        if channel == "iopub" and isinstance(decoded[0], dict) and decoded[0].get("msg_type") == "status":
            self._watch_status(decoded[3])
        if not self._pass_outgoing(message):
            return
        if message.changed:
            msg = {**msg, "content": message.content}
            incoming_msg = json.dumps(msg, default=json_default)
        masked = self.masking.json(self, msg)  # secrets/masking.py
        if masked is None:
            return
        if masked is not msg:
            incoming_msg = json.dumps(masked, default=json_default)
        super().handle_outgoing_message(incoming_msg, *args)


    def _watch_status(self, content) -> None:
        """The gateway restarting the kernel on its own, or giving it up: its host was lost."""
        state = content.get("execution_state") if isinstance(content, dict) else None
        if state not in ("restarting", "dead"):
            return
        requested = getattr(self.multi_kernel_manager, "restart_requested", None)
        if state == "restarting" and requested is not None and requested(self.kernel_id):
            return
        from ..pool.warden import LOST_MESSAGE

        if not getattr(self, "_lost_told", False):  # once per loss: "dead" may follow "restarting"
            self._lost_told = True
            self._audit("kernel.lost", "deny", reason=f"the gateway reported the kernel {state}")
            self.kernel_ended(LOST_MESSAGE)
            self.warden.kernel_ends.record(self.kernel_id, owner_of(self.multi_kernel_manager, self.kernel_id)
                                           or "", [], "lost", LOST_MESSAGE, None)

    def _pass_outgoing(self, message: OutgoingMessage) -> bool:
        state = None
        if message.channel == "iopub" and isinstance(message.header, dict) \
                and message.header.get("msg_type") == "status" and isinstance(message.content, dict):
            state = message.content.get("execution_state")
        if state in ("idle", "busy", "starting"):
            self._lost_told = False  # alive again (restarted): a later loss is told again
        return super()._pass_outgoing(message)


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

    def kernel_ended(self, kernel_id: str, message: str, stopped: bool = False) -> None:
        """A kernel died or was stopped for a limit: every client on it is told why."""
        for connection in list(self._open):
            if connection.kernel_id == kernel_id:
                connection.kernel_ended(message, stopped)

    def executions_stopped(self, kernel_id: str, why: str) -> None:
        """A kernel was restarted or shut down on request: its running executions are aborted."""
        for connection in list(self._open):
            if connection.kernel_id == kernel_id:
                connection.executions_stopped(why)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
