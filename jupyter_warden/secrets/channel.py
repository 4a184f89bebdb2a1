"""The per-kernel vault channel: a Unix socket in the kernel's own run folder, and its token.

Each sandboxed kernel gets ``vault.sock`` in its run folder (0700, owned by
the kernel's uid, bound into its sandbox and no other) plus a random token
in its environment. A request must come from the kernel's uid (SO_PEERCRED)
and carry the token; it is answered for the kernel's owner only, as the
kernel manager recorded them, and every answer is audited. Values handed out
are remembered per kernel for masking its outputs (``masker_for``), and per
user for masking the notebooks they save (``save_masker``): a save is masked
for the saver's own values only, so that saving guesses and reading them back
tells nobody whether a guess is someone else's secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import os
import secrets
import socket
import struct
from dataclasses import dataclass, field
from pathlib import Path

from . import ENV_SOCKET, ENV_TOKEN
from .masking import Masker
from .vault import SecretNotGranted, VaultError

SOCKET_NAME = "vault.sock"
MAX_REQUEST = 64 * 1024
REQUEST_TIMEOUT = 10.0


@dataclass
class _Channel:
    kernel_id: str
    uid: int
    subject: str  # the sandbox's user, user:KEY
    user: str  # their name, as the audit log writes it
    token: str
    path: Path
    server: asyncio.AbstractServer | None = None
    masker: Masker = field(default_factory=Masker)


def _peer_uid(writer: asyncio.StreamWriter) -> int | None:
    sock = writer.get_extra_info("socket")
    if sock is None:
        return None
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid


class VaultChannels:
    """Every kernel's vault socket in this server process."""

    def __init__(self, warden):
        self.warden = warden
        self._channels: dict[str, _Channel] = {}
        # Per user (the kernel's owner, or who typed at a password prompt), kept
        # after their kernels end: their saves stay masked for what they were given.
        self._handed: dict[str, Masker] = {}
        self.every_value = Masker()  # every value handed out here
        self._joined: dict[frozenset, tuple[int, Masker]] = {}

    def masker_for(self, kernel_id: str) -> Masker | None:
        channel = self._channels.get(kernel_id)
        return channel.masker if channel is not None and channel.masker else None

    def remember(self, kernel_id: str, value: str, subject: str | None = None) -> None:
        """A value this kernel has seen (a secret, or a password typed into it): mask it from now on.

        ``subject``: whose value it is (default: the kernel's owner)."""
        channel = self._channels.get(kernel_id)
        if channel is not None:
            channel.masker.add(value)
            subject = subject or channel.subject
        if subject:
            self._handed.setdefault(subject, Masker()).add(value)
        self.every_value.add(value)

    def save_masker(self, subjects) -> Masker:
        """What a notebook saved by ``subjects`` (policy subjects) is masked for: their own values."""
        subjects = frozenset(s for s in subjects if s in self._handed)
        if len(subjects) <= 1:
            return self._handed[next(iter(subjects))] if subjects else Masker()
        size = sum(len(self._handed[s]._values) for s in subjects)
        cached = self._joined.get(subjects)
        if cached is None or cached[0] != size:
            if len(self._joined) > 256:
                self._joined.clear()
            cached = self._joined[subjects] = (size, Masker.union(self._handed[s] for s in subjects))
        return cached[1]

    async def open(self, kernel_id: str, run_dir: Path, uid: int, gid: int, subject: str,
                   user: str) -> dict[str, str]:
        """Listen for one kernel (again, on a restart: a fresh token); returns the kernel's env."""
        old = self._channels.get(kernel_id)
        await self.close(kernel_id, forget=False)
        path = Path(run_dir) / SOCKET_NAME
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        channel = _Channel(kernel_id, uid, subject, user, secrets.token_urlsafe(32), path)
        if old is not None:
            channel.masker = old.masker  # outputs of the kernel before its restart stay masked
        channel.server = await asyncio.start_unix_server(
            lambda r, w: self._serve(channel, r, w), path=str(path), limit=MAX_REQUEST
        )
        # The folder is the kernel uid's own (0700); the socket too, so no other uid can connect.
        os.chown(path, uid, gid)
        os.chmod(path, 0o600)
        # The token is not masked: it opens nothing outside this kernel's sandbox, and a
        # kernel that was handed no value then skips masking altogether.
        self._channels[kernel_id] = channel
        return {ENV_SOCKET: str(path), ENV_TOKEN: channel.token}

    async def close(self, kernel_id: str, forget: bool = True) -> None:
        channel = self._channels.get(kernel_id)
        if channel is None:
            return
        if forget:
            del self._channels[kernel_id]
        if channel.server is not None:
            channel.server.close()
            channel.server = None
        with contextlib.suppress(OSError):
            channel.path.unlink()

    async def close_all(self) -> None:
        for kernel_id in list(self._channels):
            await self.close(kernel_id)

    # -- one request -------------------------------------------------------

    async def _serve(self, channel: _Channel, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        try:
            try:
                reply = await self._answer(channel, reader, writer)
            except (OSError, asyncio.TimeoutError):
                raise
            except Exception as e:  # e.g. the store is down: fail closed, and say so
                self.warden.log.warning("jupyter-warden: vault request of kernel %s failed: %s",
                                        channel.kernel_id, e)
                reply = {"ok": False, "error": "unavailable", "message": f"the vault can't answer right now: {e}"}
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except (OSError, asyncio.TimeoutError):
            pass
        finally:
            writer.close()

    async def _answer(self, channel: _Channel, reader, writer) -> dict:
        peer = _peer_uid(writer)
        if peer != channel.uid:
            return self._refuse(channel, None, "denied", f"a process of uid {peer} is not this kernel")
        try:
            line = await asyncio.wait_for(reader.readline(), REQUEST_TIMEOUT)
            request = json.loads(line)
        except (ValueError, asyncio.LimitOverrunError):
            return self._refuse(channel, None, "bad_request", "the request is not one JSON line")
        if not isinstance(request, dict) or not isinstance(request.get("token"), str):
            return self._refuse(channel, None, "bad_request", "the request has no token")
        if not hmac.compare_digest(request["token"].encode(), channel.token.encode()):
            return self._refuse(channel, None, "denied", "the token is not this kernel's")
        name = request.get("name")
        if request.get("op") != "get" or not isinstance(name, str):
            return self._refuse(channel, None, "bad_request", "the only request is {op: get, name: NAME}")
        return self._get(channel, name)

    def _kernel_facts(self, channel: _Channel) -> tuple[str | None, list[str]]:
        """The kernel's recorded owner, and the notebooks it runs for."""
        from ..enforce.kernel_channels import run_paths

        serverapp = self.warden.serverapp
        owner_of = getattr(serverapp.kernel_manager, "owner_of", None)
        owner = owner_of(channel.kernel_id) if owner_of is not None else None
        try:
            notebooks = list(run_paths(serverapp.session_manager, channel.kernel_id))
        except Exception:
            notebooks = []
        return owner, notebooks

    def _get(self, channel: _Channel, name: str) -> dict:
        owner, notebooks = self._kernel_facts(channel)
        if owner is None or owner != channel.subject:
            return self._refuse(channel, name, "unavailable",
                                "this kernel has no recorded owner any more; restart it", notebooks)
        try:
            value = self.warden.vault.read(owner, name)
        except SecretNotGranted as e:
            return self._refuse(channel, name, "not_granted", str(e), notebooks)
        except VaultError as e:
            return self._refuse(channel, name, "failed", str(e), notebooks)
        self.remember(channel.kernel_id, value)
        self._audit(channel, name, "allow", None, notebooks)
        return {"ok": True, "value": value}

    def _refuse(self, channel: _Channel, name: str | None, error: str, message: str,
                notebooks: list[str] | None = None) -> dict:
        self._audit(channel, name, "deny", message, notebooks or [])
        return {"ok": False, "error": error, "message": message}

    def _audit(self, channel: _Channel, name: str | None, outcome: str, reason: str | None,
               notebooks: list[str]) -> None:
        details = {"kernel": channel.kernel_id, "secret": name, "notebooks": notebooks}
        self.warden.audit.record(channel.user, "secret.read", outcome, path=notebooks[0] if notebooks else None,
                                 reason=reason, details=details)
