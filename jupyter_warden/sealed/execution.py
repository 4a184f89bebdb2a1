"""Running sealed cells: the kernel guard's substitution point, and the scrubbing of what comes back.

``SealedRuns`` (one per server, ``warden.sealed_runs``) turns an ``execute_request``
whose code is a placeholder into the real code for the kernel, after checking the
key, and remembers per kernel what must never reach a client: the ``execute_input``
of sealed executions, and (as keyed digests, never the text) the sealed lines that
tracebacks, streams, inspect and history replies must not carry. docs/sealed-cells.md,
"Running sealed cells", has the whole story and its limits.
"""

from __future__ import annotations

import ast
import base64
import collections
import hashlib
import json
import os
import re
import shutil
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from jupyter_client.session import DELIM

from ..store import StoreUnavailable
from .crypto import UnsealError
from .keyring import KeyRingError
from .placeholder import PlaceholderError, SealedCell, looks_sealed, parse_placeholder

ERROR_NAME = "SealedCellError"
HIDDEN = "[jupyter-warden: sealed line hidden]"
_TRACKED_RUNS = 256  # sealed executions per kernel whose execute_input is masked
_TRACKED_LINES = 20000  # sealed line digests kept per kernel
_TRACKED_KERNELS = 1024

# The purge that follows every sealed cell runs in the kernel: jupyter_warden/_sealed_purge.py
# says how. Its first line arms it, on one line (line numbers of the sealed code stay
# theirs), binding no name in the user's namespace. A kernel that can import
# jupyter_warden gets a short line: ipykernel hashes and IPython re-parses every cell's
# text, so each byte counts. Any other Python kernel gets the module's text, compressed,
# installed the first time (exec'd source is not put in linecache).
HELPER = "_jupyter_warden_sealed"
_PURGE_SOURCE = (Path(__file__).parent.parent / "_sealed_purge.py").read_text("utf-8").split('"""', 2)[2]
_ARM = '.arm(__import__("sys")._getframe(0).f_code.co_filename)  # jupyter-warden: sealed cell, purged after the run'
SHORT_ARM_LINE = f'__import__("jupyter_warden._sealed_purge", fromlist=["arm"]){_ARM}'
ARM_LINE = (
    f'(__import__("sys").modules.get("{HELPER}") or exec(__import__("zlib").decompress(__import__("base64")'
    f'.b64decode("{base64.b64encode(zlib.compress(_PURGE_SOURCE.encode(), 9)).decode()}")), {{"__name__": "{HELPER}"}}) '
    f'or __import__("sys").modules["{HELPER}"]){_ARM}'
)

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# IPython's traceback gutter: "----> 6 code" or "      3 code".
_GUTTER = re.compile(r"^(\s*(?:-*>)?\s*\d+ ?)(.*)$")
_WORD = re.compile(r"\w")


class SealedRefused(Exception):
    """A sealed cell that may not, or can't, run; the message is for the user who ran it."""


@dataclass
class _KernelState:
    """What one kernel's connections must mask: sealed executions and sealed line digests."""

    runs: collections.OrderedDict = field(default_factory=collections.OrderedDict)  # msg_id -> placeholder
    lines: collections.OrderedDict = field(default_factory=collections.OrderedDict)  # digest -> None
    arm_line: str | None = None  # the first line its sealed cells get (ARM_LINE or SHORT_ARM_LINE)


class SameKernel:
    """The route of a sealed execution: the connection's own kernel.

    The isolated mode (DESIGN.md) plugs in here: a route that sends the code
    to a grader kernel and relays its output to this connection instead.
    """

    def send(self, connection, channel: str, msg: dict | None, parts: list | None) -> None:
        connection._forward(channel, msg, parts)


_transformer = None


def to_python(code: str) -> str:
    """The cell as IPython will run it (magics, ``!`` and ``?`` turned into Python); SealedRefused if it can't be."""
    global _transformer
    if _transformer is None:  # making one takes about a millisecond; transforming keeps no state
        try:
            from IPython.core.inputtransformer2 import TransformerManager
        except ImportError:
            raise SealedRefused("this server can't read IPython syntax (IPython is not installed); "
                                "sealed cells can't run here") from None
        _transformer = TransformerManager()
    try:
        python = _transformer.transform_cell(code)
    except Exception as e:  # IPython raises several kinds for unreadable magics and prompts
        raise SealedRefused(f"this sealed cell's IPython syntax can't be read ({type(e).__name__})") from None
    return python


def syntax_error(python: str) -> SyntaxError | None:
    """A SyntaxError checked here, so that a cell that doesn't parse never reaches the kernel's caches."""
    flags = ast.PyCF_ONLY_AST | getattr(ast, "PyCF_ALLOW_TOP_LEVEL_AWAIT", 0)
    try:
        compile(python, "<sealed cell>", "exec", flags=flags, dont_inherit=True)
    except SyntaxError as e:
        return e
    except (ValueError, MemoryError, RecursionError) as e:
        return SyntaxError(str(e) or type(e).__name__)
    return None


class SealedRuns:
    """The kernel guard's sealed-cell logic, shared by every connection of this server."""

    def __init__(self, key_ring, route=None):
        self.key_ring = key_ring
        self.route = route or SameKernel()
        self._kernels: collections.OrderedDict[str, _KernelState] = collections.OrderedDict()
        # Line digests are keyed so the server's memory holds no dictionary-checkable hashes of the code.
        self._salt = os.urandom(32)

    # -- client to kernel ---------------------------------------------------

    @staticmethod
    def claims_sealed(content: dict) -> bool:
        code = content.get("code")
        return isinstance(code, str) and looks_sealed(code)

    def execute(self, connection, channel: str, header: dict, msg: dict | None, parts: list | None,
                content: dict) -> None:
        """Run (or refuse, with an error output and reply) the sealed cell of this execute_request."""
        placeholder = content["code"]
        try:
            sealed = parse_placeholder(placeholder)
            python = self._open(connection, sealed)
        except (PlaceholderError, SealedRefused) as e:
            return self._refuse(connection, header, str(e), placeholder)
        # The guard's execution record, of the placeholder (never the clear code, even with
        # audit_code), naming the key and cell: one record, as for any execution, before it runs.
        connection._audit_execute(header, content, sealed={
            "key": sealed.key_name, "key_version": sealed.key_version, "cell": sealed.cell_id})
        state = self._state(connection.kernel_id)
        self._remember_lines(state, python)
        problem = syntax_error(python)
        if problem is not None:
            return self._syntax_error(connection, header, problem)
        state.runs[header["msg_id"]] = placeholder
        while len(state.runs) > _TRACKED_RUNS:
            state.runs.popitem(last=False)
        if state.arm_line is None:
            state.arm_line = SHORT_ARM_LINE if _imports_warden(connection) else ARM_LINE
        content = {**content, "code": state.arm_line + "\n" + python, "store_history": False, "silent": False}
        if parts is not None:
            parts[3] = connection.session.pack(content)
        else:
            msg = {**msg, "content": content}
        self.route.send(connection, channel, msg, parts)

    def _open(self, connection, sealed: SealedCell) -> str:
        actor = connection.actor
        language = _kernel_language(connection)
        if language != "python":
            raise SealedRefused(
                f"sealed cells run only in Python kernels on this server (this kernel's language is "
                f"{language or 'unknown'}): its caches of the code can't be purged otherwise")
        try:
            for path in connection.paths:
                decision = connection.warden.engine.check(actor, "run", path)
                if not decision.allowed:
                    raise SealedRefused(f"you may not run '{path}': {decision.reason}")
            if not self.key_ring.may_use(actor, sealed.key_name):
                raise SealedRefused(
                    f"this cell is sealed under key {sealed.key_name!r}, which you ({actor.name}) may not use; "
                    f"ask the notebook's owner to grant you that key")
            code = self.key_ring.open(sealed)
        except (KeyRingError, UnsealError) as e:
            raise SealedRefused(str(e)) from None
        except StoreUnavailable:
            raise SealedRefused("the key ring can't be reached right now; try again shortly") from None
        return to_python(code)

    def _refuse(self, connection, header: dict, reason: str, placeholder: str) -> None:
        digest = hashlib.sha256(placeholder.encode("utf-8", "surrogatepass")).hexdigest()
        connection._audit("sealed.refuse", "deny", reason=reason,
                          details={"msg_id": header["msg_id"], "sha256": digest})
        connection.log.warning("kernel %s: refused a sealed cell of %s: %s",
                               connection.kernel_id, connection.actor.name, reason)
        self._error_reply(connection, header, ERROR_NAME, f"{reason}.".replace("..", "."))

    def _syntax_error(self, connection, header: dict, error: SyntaxError) -> None:
        where = f"sealed cell, line {error.lineno}" if error.lineno else "sealed cell"
        self._error_reply(connection, header, "SyntaxError", f"{error.msg} ({where})")

    def _error_reply(self, connection, header: dict, ename: str, evalue: str) -> None:
        """The whole exchange a frontend waits for (busy, error, reply, idle), to this connection only."""
        session = connection.session
        error = {"ename": ename, "evalue": evalue, "traceback": [f"{ename}: {evalue}"]}
        connection._to_client("iopub", session.msg("status", {"execution_state": "busy"}, parent=header))
        connection._to_client("iopub", session.msg("error", error, parent=header))
        reply = {"status": "error", "execution_count": None, **error}
        connection._to_client("shell", session.msg("execute_reply", reply, parent=header))
        connection._to_client("iopub", session.msg("status", {"execution_state": "idle"}, parent=header))
        connection._remember(header["msg_id"])["replied"] = True  # answered here: no kernel reply will come

    # -- kernel to client ---------------------------------------------------

    def has_runs(self, kernel_id: str) -> bool:
        """Whether the kernel has run sealed code, so that its output needs looking at."""
        return kernel_id in self._kernels

    def outgoing(self, kernel_id: str, channel: str, header: dict, parent: dict, content):
        """The content to send instead (a dict), or None to send the message as it is.

        ``content`` is a callable returning the message's content, called only
        for a kernel that has run sealed code, and only for the message types
        that can carry code.
        """
        state = self._kernels.get(kernel_id)
        if state is None:
            return None
        msg_type = header.get("msg_type")
        parent_id = parent.get("msg_id") if isinstance(parent, dict) else None
        sealed_run = isinstance(parent_id, str) and parent_id in state.runs
        if msg_type == "execute_input":
            if not sealed_run:
                return None
            body = content()
            return {**(body if isinstance(body, dict) else {}), "code": state.runs[parent_id]}
        if msg_type not in _SCRUBBED or (msg_type == "stream" and not sealed_run):
            return None
        body = content()
        if not isinstance(body, dict):
            return None
        scrubbed = _SCRUBBED[msg_type](self, state, body)
        return scrubbed if scrubbed != body else None

    def _remember_lines(self, state: _KernelState, python: str) -> None:
        for line in (ARM_LINE + "\n" + python).splitlines():
            digest = self._digest(line)
            if digest is not None:
                state.lines[digest] = None
                state.lines.move_to_end(digest)
        while len(state.lines) > _TRACKED_LINES:
            state.lines.popitem(last=False)

    def _digest(self, line: str) -> bytes | None:
        line = line.strip()
        if not _WORD.search(line):  # blank lines and lone brackets say nothing
            return None
        return hashlib.blake2b(line.encode("utf-8", "surrogatepass"), key=self._salt, digest_size=16).digest()

    def _sealed_line(self, state: _KernelState, line: str) -> bool:
        plain = _ANSI.sub("", line)
        candidates = [plain]
        gutter = _GUTTER.match(plain)
        if gutter:
            candidates.append(gutter.group(2))
        return any((d := self._digest(c)) is not None and d in state.lines for c in candidates)

    def scrub_text(self, state: _KernelState, text):
        """The text with each line that is a sealed line replaced (its traceback gutter kept)."""
        if not isinstance(text, str) or not state.lines:
            return text
        out = []
        for line in text.split("\n"):
            if self._sealed_line(state, line):
                gutter = _GUTTER.match(_ANSI.sub("", line))
                line = (gutter.group(1) if gutter else "") + HIDDEN
            out.append(line)
        return "\n".join(out)

    def _scrub_error(self, state, body: dict) -> dict:
        body = dict(body)
        if isinstance(body.get("traceback"), list):
            body["traceback"] = [self.scrub_text(state, t) for t in body["traceback"]]
        if isinstance(body.get("evalue"), str):
            body["evalue"] = self.scrub_text(state, body["evalue"])
        return body

    def _scrub_reply(self, state, body: dict) -> dict:
        """An execute_reply: its traceback, and its payloads (the pager of ``f??``, ``set_next_input``)."""
        body = self._scrub_error(state, body)
        if isinstance(body.get("payload"), list):
            payloads = []
            for payload in body["payload"]:
                if isinstance(payload, dict):
                    payload = self._scrub_bundle(state, payload)
                    if "text" in payload:
                        payload = {**payload, "text": self.scrub_text(state, payload["text"])}
                payloads.append(payload)
            body = {**body, "payload": payloads}
        return body

    def _scrub_stream(self, state, body: dict) -> dict:
        return {**body, "text": self.scrub_text(state, body.get("text"))}

    def _scrub_bundle(self, state, body: dict) -> dict:
        data = body.get("data")
        if not isinstance(data, dict):
            return body
        return {**body, "data": {k: self.scrub_text(state, v) for k, v in data.items()}}

    def _scrub_history(self, state, body: dict) -> dict:
        history = body.get("history")
        if not isinstance(history, list):
            return body
        entries = []
        for entry in history:
            if isinstance(entry, list) and len(entry) == 3:
                source = entry[2]
                if isinstance(source, list) and source:  # (input, output) with output=True
                    source = [self.scrub_text(state, source[0]), *source[1:]]
                else:
                    source = self.scrub_text(state, source)
                entry = [entry[0], entry[1], source]
            entries.append(entry)
        return {**body, "history": entries}

    def _state(self, kernel_id: str) -> _KernelState:
        state = self._kernels.get(kernel_id)
        if state is None:
            state = self._kernels[kernel_id] = _KernelState()
        self._kernels.move_to_end(kernel_id)
        while len(self._kernels) > _TRACKED_KERNELS:
            self._kernels.popitem(last=False)
        return state

    def forget(self, kernel_id: str) -> None:
        self._kernels.pop(kernel_id, None)


_SCRUBBED = {
    "error": SealedRuns._scrub_error,
    "execute_reply": SealedRuns._scrub_reply,
    "stream": SealedRuns._scrub_stream,
    "inspect_reply": SealedRuns._scrub_bundle,
    "history_reply": SealedRuns._scrub_history,
}


def _imports_warden(connection) -> bool:
    """Whether the kernel's Python can import jupyter_warden: a sandboxed kernel (the package
    is bound in), or one that runs the server's own interpreter. Unsure: no (the long line)."""
    from ..sandbox.provisioner import SandboxProvisioner

    try:
        manager = connection.multi_kernel_manager.get_kernel(connection.kernel_id)
        if isinstance(getattr(manager, "provisioner", None), SandboxProvisioner):
            return True
        program = manager.kernel_spec.argv[0]
    except Exception:  # no local spec (e.g. a gateway kernel)
        return False
    # As jupyter_client's KernelManager.format_kernel_cmd: these names run the server's Python.
    if program in {"python", f"python{sys.version_info[0]}", "python{}.{}".format(*sys.version_info[:2])}:
        return True
    # Not resolved through symbolic links: a virtual environment's python is one to the base's.
    return os.path.abspath(shutil.which(program) or program) == os.path.abspath(sys.executable)


def _kernel_language(connection) -> str | None:
    try:
        spec = connection.multi_kernel_manager.get_kernel(connection.kernel_id).kernel_spec
        return (spec.language or "").lower() or None
    except Exception:  # no local spec (e.g. a gateway kernel whose spec isn't readable here)
        return None


def replace_content(session, outgoing_msg: list, content: dict) -> list:
    """A ZMQ message list with its content replaced and signed again with the kernel's key."""
    identities, fed = session.feed_identities(outgoing_msg)
    header, parent, metadata = fed[1:4]
    packed = session.pack(content)
    signature = session.sign([header, parent, metadata, packed])
    return [*identities, DELIM, signature, header, parent, metadata, packed, *fed[5:]]


def replace_json_content(raw: str, content: dict) -> str:
    from jupyter_client.jsonutil import json_default

    msg = json.loads(raw)
    msg["content"] = content
    return json.dumps(msg, default=json_default)
