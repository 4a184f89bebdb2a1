"""Secrets in a kernel: ``secrets.get("NAME")`` and ``with secrets.env("NAME"):``.

This module runs inside sandboxed kernels, so it imports only the standard
library. It asks the server over the kernel's own Unix socket (named, with
the kernel's token, in its environment); the request never passes through
the notebook, the browser or the kernel websocket. The server side is in
``vault`` (storage), ``channel`` (the socket) and ``masking`` (outputs).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket

ENV_SOCKET = "WARDEN_VAULT_SOCKET"
ENV_TOKEN = "WARDEN_VAULT_TOKEN"
TIMEOUT = 30.0
MAX_REPLY = 1024 * 1024

__all__ = ["SecretNotGranted", "VaultError", "VaultUnavailable", "env", "get"]


class VaultError(Exception):
    """The vault refused or failed; the message says why."""


class VaultUnavailable(VaultError):
    """There is no vault to ask: not a jupyter-warden kernel, or the server is gone."""


class SecretNotGranted(VaultError, KeyError):
    """The secret does not exist, or is not granted to this kernel's user."""

    def __str__(self):  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def _ask(request: dict) -> dict:
    path, token = os.environ.get(ENV_SOCKET), os.environ.get(ENV_TOKEN)
    if not path or not token:
        raise VaultUnavailable(
            "this kernel was not started by a jupyter-warden server with sandboxed kernels, "
            "so it has no vault; secrets are only handed to kernels the server starts"
        )
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(TIMEOUT)
            sock.connect(path)
            sock.sendall(json.dumps({"token": token, **request}).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n") and len(data) < MAX_REPLY:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError as e:
        raise VaultUnavailable(
            f"the jupyter-warden server's vault can't be reached ({e.strerror or e}); "
            "the server may have stopped: restart the kernel from a running server"
        ) from None
    try:
        reply = json.loads(data)
    except ValueError:
        raise VaultUnavailable("the vault closed the connection without an answer") from None
    if not isinstance(reply, dict):
        raise VaultUnavailable("the vault's answer is not understood")
    return reply


def get(name: str) -> str:
    """The value of the secret ``name``, if it is granted to this kernel's user."""
    if not isinstance(name, str):
        raise TypeError(f"a secret's name is a string, not {type(name).__name__}")
    reply = _ask({"op": "get", "name": name})
    if reply.get("ok") is True and isinstance(reply.get("value"), str):
        return reply["value"]
    message = reply.get("message") or "the vault refused"
    if reply.get("error") == "not_granted":
        raise SecretNotGranted(message)
    if reply.get("error") == "unavailable":
        raise VaultUnavailable(message)
    raise VaultError(message)


@contextlib.contextmanager
def env(*names: str, **renamed: str):
    """Set environment variables from secrets for the ``with`` block, then put back what was there.

    ``env("DB_PASSWORD")`` sets $DB_PASSWORD; ``env(PGPASSWORD="DB_PASSWORD")``
    sets $PGPASSWORD to the secret DB_PASSWORD. Every secret is fetched
    before any variable is set, so a refusal changes nothing.
    """
    wanted = {**{n: n for n in names}, **renamed}
    values = {var: get(secret) for var, secret in wanted.items()}
    saved = {var: os.environ.get(var) for var in values}
    try:
        os.environ.update(values)
        yield values
    finally:
        for var, old in saved.items():
            if old is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = old
