"""The server's master key, which the key ring and the vault are encrypted under.

The key comes from, in order: $WARDEN_MASTER_KEY; the output of a command
(``c.Warden.master_key_command`` or $WARDEN_MASTER_KEY_COMMAND), the hook for
an external KMS; else ``master.key``, a 0600 file in the state folder made on
first use. Encryption is AES-256-GCM from ``cryptography``; the associated
data binds a purpose and a context, so a blob can't be moved between uses.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
import shlex
import subprocess
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

ENV_KEY = "WARDEN_MASTER_KEY"
ENV_COMMAND = "WARDEN_MASTER_KEY_COMMAND"
FILE_NAME = "master.key"
FORMAT = b"\x01"  # first byte of every blob: the format version
NONCE_BYTES = 12


class MasterKeyError(Exception):
    """The master key can't be had, or a blob doesn't open under it."""


def parse_key(text: str, source: str) -> bytes:
    """32 bytes from 64 hex digits or base64 (standard or URL-safe)."""
    text = text.strip()
    try:
        if len(text) == 64:
            key = bytes.fromhex(text)
        else:
            key = base64.b64decode(text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4), validate=True)
    except (ValueError, binascii.Error):
        key = b""
    if len(key) != 32:
        raise MasterKeyError(f"the master key from {source} is not 32 bytes in hex or base64")
    return key


def _from_command(command: list[str]) -> bytes:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise MasterKeyError(f"the master key command {command[0]!r} could not run: {e}") from e
    if done.returncode != 0:
        raise MasterKeyError(
            f"the master key command {command[0]!r} exited with status {done.returncode}: "
            f"{done.stderr.strip()[:200]}"
        )
    return parse_key(done.stdout, f"the command {command[0]!r}")


def _from_file(state_dir: str | os.PathLike) -> bytes:
    path = Path(state_dir).expanduser() / FILE_NAME
    try:
        return parse_key(path.read_text(), str(path))
    except FileNotFoundError:
        pass
    key = secrets.token_bytes(32)
    # Written whole under a temporary name, then linked into place: a crash
    # leaves no half key, and of two servers starting at once one key wins.
    tmp = path.with_name(f".{FILE_NAME}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(key.hex() + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return parse_key(path.read_text(), str(path))
    finally:
        tmp.unlink(missing_ok=True)
    return key


def load_master_key(state_dir: str | os.PathLike, command: list[str] | None = None) -> "MasterKey":
    if os.environ.get(ENV_KEY):
        return MasterKey(parse_key(os.environ[ENV_KEY], f"${ENV_KEY}"))
    if not command and os.environ.get(ENV_COMMAND):
        command = shlex.split(os.environ[ENV_COMMAND])
    if command:
        return MasterKey(_from_command(command))
    return MasterKey(_from_file(state_dir))


def _associated_data(purpose: str, context: str) -> bytes:
    return b"jupyter-warden\0" + FORMAT + purpose.encode() + b"\0" + context.encode()


class MasterKey:
    """AES-256-GCM under the master key; blobs are FORMAT + nonce + ciphertext."""

    def __init__(self, key: bytes):
        if len(key) != 32:
            raise MasterKeyError("the master key must be 32 bytes")
        self._aead = AESGCM(key)

    def encrypt(self, plaintext: bytes, *, purpose: str, context: str) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return FORMAT + nonce + self._aead.encrypt(nonce, plaintext, _associated_data(purpose, context))

    def decrypt(self, blob: bytes, *, purpose: str, context: str) -> bytes:
        if not blob or blob[:1] != FORMAT or len(blob) < 1 + NONCE_BYTES + 16:
            raise MasterKeyError(f"a {purpose} blob is not in a format this server knows")
        nonce, ciphertext = blob[1 : 1 + NONCE_BYTES], blob[1 + NONCE_BYTES :]
        try:
            return self._aead.decrypt(nonce, ciphertext, _associated_data(purpose, context))
        except InvalidTag:
            raise MasterKeyError(
                f"a {purpose} blob for {context!r} does not open under this master key "
                "(a different key, or the data was altered)"
            ) from None

    def __repr__(self):
        return "MasterKey(<hidden>)"
