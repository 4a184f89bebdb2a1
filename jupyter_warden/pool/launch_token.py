"""The signed launch request: who a pool kernel runs as, and under which limits.

The warden server signs the claims (kernel id, user, uid, limits) with an
HMAC key it shares with the pool hosts; the host launcher runs a kernel only
for a token that verifies and names the kernel id it was asked to start.
Neither a client nor the gateway can change a claim without the key.
Only the standard library: this runs on the hosts and in EG's environment.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path

ENV_TOKEN = "KERNEL_WARDEN_LAUNCH"
_VERSION = "wp1"
_CONTEXT = b"jupyter-warden pool launch v1\0"


class BadLaunchToken(Exception):
    """The launch request is not signed by the warden, or not for this kernel."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(key: bytes, claims: dict) -> str:
    """A token carrying ``claims``; its characters are all shell-safe ([A-Za-z0-9_.-])."""
    payload = _b64(json.dumps(claims, sort_keys=True, separators=(",", ":")).encode())
    mac = hmac.new(key, _CONTEXT + payload.encode(), hashlib.sha256).digest()
    return f"{_VERSION}.{payload}.{_b64(mac)}"


def verify(key: bytes, token: str, kernel_id: str) -> dict:
    """The claims of ``token``, if the warden signed it for ``kernel_id``; else BadLaunchToken."""
    parts = (token or "").split(".")
    if len(parts) != 3 or parts[0] != _VERSION:
        raise BadLaunchToken("no signed launch request (KERNEL_WARDEN_LAUNCH) came with the kernel")
    expected = hmac.new(key, _CONTEXT + parts[1].encode(), hashlib.sha256).digest()
    try:
        given = _unb64(parts[2])
        claims = json.loads(_unb64(parts[1]))
    except (ValueError, UnicodeDecodeError):
        raise BadLaunchToken("the launch request is malformed") from None
    if not hmac.compare_digest(expected, given):
        raise BadLaunchToken("the launch request's signature does not verify (wrong key, or changed)")
    if not isinstance(claims, dict) or claims.get("kernel_id") != kernel_id:
        raise BadLaunchToken(f"the launch request was signed for another kernel, not {kernel_id}")
    for name, kind in (("user", str), ("subject", str), ("uid", int), ("gid", int), ("limits", dict)):
        if not isinstance(claims.get(name), kind):
            raise BadLaunchToken(f"the launch request has no valid {name!r}")
    if claims["uid"] <= 0 or claims["gid"] <= 0:
        raise BadLaunchToken("the launch request names uid or gid 0")
    return claims


def load_key(path: str | os.PathLike) -> bytes:
    """The shared key from a file (hex); it must be the owner's alone (0600 or stricter)."""
    path = Path(path)
    st = path.stat()
    if st.st_mode & 0o077:
        raise PermissionError(f"{path} is readable by others (mode {st.st_mode & 0o777:o}); chmod 600 it")
    key = bytes.fromhex(path.read_text().strip())
    if len(key) < 32:
        raise ValueError(f"{path} holds a key shorter than 32 bytes")
    return key


def load_or_create_key(path: str | os.PathLike) -> bytes:
    """The shared key, made (32 random bytes, 0600) on first use."""
    path = Path(path)
    try:
        return load_key(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key.hex() + "\n")
    try:
        os.link(tmp, path)  # atomic, and never over a key another process just made
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    return load_key(path)
