"""The cell crypto: AES-256-GCM from ``cryptography`` over a sealed cell's source.

The associated data binds the placeholder format version, the key's name
(its folded key, as in ``names.name_key``), the key version and the cell
id, so a ciphertext moved to another cell, relabelled with another key or
version, or altered in any byte does not open.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..names import name_key
from .placeholder import FORMAT_VERSION, SealedCell

NONCE_BYTES = 12
KEY_BYTES = 32


class UnsealError(Exception):
    """A sealed cell does not open: altered, moved to another cell, or the wrong key."""


def associated_data(format_version: int, key_name: str, key_version: int, cell_id: str) -> bytes:
    return b"\0".join(
        [
            b"jupyter-warden sealed cell",
            f"v{format_version}".encode(),
            name_key(key_name).encode(),
            str(key_version).encode(),
            cell_id.encode(),
        ]
    )


def new_key_material() -> bytes:
    return AESGCM.generate_key(bit_length=8 * KEY_BYTES)


def encrypt_cell(material: bytes, key_name: str, key_version: int, cell_id: str, source: str) -> SealedCell:
    nonce = os.urandom(NONCE_BYTES)
    aad = associated_data(FORMAT_VERSION, key_name, key_version, cell_id)
    blob = nonce + AESGCM(material).encrypt(nonce, source.encode("utf-8"), aad)
    return SealedCell(key_name, key_version, cell_id, blob, FORMAT_VERSION)


def decrypt_cell(material: bytes, cell: SealedCell, cell_id: str | None = None) -> str:
    """The clear source; ``cell_id`` (where the cell is now) defaults to the one the placeholder names."""
    where = cell.cell_id if cell_id is None else cell_id
    aad = associated_data(cell.format_version, cell.key_name, cell.key_version, where)
    nonce, ciphertext = cell.blob[:NONCE_BYTES], cell.blob[NONCE_BYTES:]
    try:
        return AESGCM(material).decrypt(nonce, ciphertext, aad).decode("utf-8")
    except (InvalidTag, UnicodeDecodeError):
        moved = "" if where == cell.cell_id else f" (it was sealed for cell {cell.cell_id!r}, not {where!r})"
        raise UnsealError(
            f"this sealed cell does not open under key {cell.key_name!r} version {cell.key_version}"
            f"{moved}: it was altered or moved. Ask the notebook's owner for a fresh copy."
        ) from None
