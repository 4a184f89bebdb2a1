"""The sealed cell's visible source: a short placeholder that carries the ciphertext.

Format 1, three lines::

    %%warden_sealed v1 key=cs101-checks version=2 cell=5f3c9a1e
    # Sealed cell (jupyter-warden): its code is hidden. Run it to see its output.
    # <base64url of nonce + AES-256-GCM ciphertext and tag>

The first line is what a kernel outside this server sees first. IPython
says ``UsageError: Cell magic `%%warden_sealed` not found.``; plain Python
and JavaScript refuse ``%%`` as a syntax error and echo the line; R and
Julia refuse it as a syntax error too; bash takes it for a job spec and
fails without naming the cell (docs/sealed-cells.md has the list).
Languages where ``%`` starts a comment (MATLAB/Octave, Erlang, Prolog) run
the placeholder as comments and do nothing. The key, its version and the
cell id are written in clear on the first line so a person (and the kernel
guard) can tell what opens it; they are also bound into the ciphertext's
associated data (``crypto.py``), so editing them breaks the seal.

``parse_placeholder(source)`` returns None for ordinary source, a
``SealedCell`` for a well-formed placeholder, and raises ``PlaceholderError``
for source that starts like one but is malformed (nothing else may ride
along with a placeholder: extra lines are refused, not dropped).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

MAGIC = "%%warden_sealed"
FORMAT_VERSION = 1
NOTICE = "# Sealed cell (jupyter-warden): its code is hidden. Run it to see its output."
# nbformat 4.5's rule for cell ids.
CELL_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}\Z")
_HEADER = re.compile(
    r"%%warden_sealed v(?P<format>[0-9]{1,4}) key=(?P<key>\S{1,64}) "
    r"version=(?P<version>[1-9][0-9]{0,8}) cell=(?P<cell>[a-zA-Z0-9_-]{1,64})\Z"
)
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+\Z")
# A nonce (12 bytes) and a tag (16) at the least; 1 MiB of source at the most.
_MIN_BLOB, _MAX_BLOB = 12 + 16, 12 + 16 + (1 << 20)


class PlaceholderError(ValueError):
    """Source that starts as a sealed cell's placeholder but is malformed or altered."""


@dataclass(frozen=True)
class SealedCell:
    """What a placeholder says: the format, the key and version that open it, the cell, the blob."""

    key_name: str
    key_version: int
    cell_id: str
    blob: bytes  # nonce + ciphertext + tag
    format_version: int = FORMAT_VERSION

    def metadata(self) -> dict:
        """The mirror kept in the cell's metadata, ``jupyter_warden.sealed`` (for display only)."""
        return {"format": self.format_version, "key": self.key_name, "version": self.key_version}


def looks_sealed(source: str) -> bool:
    """Cheap test for the kernel guard's hot path: does this source claim to be sealed?"""
    return source.lstrip().startswith(MAGIC)


def _b64encode(blob: bytes) -> str:
    return base64.urlsafe_b64encode(blob).decode("ascii").rstrip("=")


def _b64decode(text: str) -> bytes:
    if not _BASE64URL.match(text):
        raise PlaceholderError("the sealed cell's ciphertext is not base64url: it was altered")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise PlaceholderError("the sealed cell's ciphertext is not base64url: it was altered") from None


def format_placeholder(cell: SealedCell) -> str:
    return "\n".join(
        [
            f"{MAGIC} v{cell.format_version} key={cell.key_name} version={cell.key_version} "
            f"cell={cell.cell_id}",
            NOTICE,
            f"# {_b64encode(cell.blob)}",
        ]
    )


def parse_placeholder(source: str) -> SealedCell | None:
    """The sealed cell a source holds; None if it is ordinary source; PlaceholderError if malformed."""
    if not looks_sealed(source):
        return None
    lines = source.strip().splitlines()
    if len(lines) != 3:
        raise PlaceholderError(
            "this sealed cell's placeholder was edited (it must be exactly its three lines); "
            "undo the edit, or ask the notebook's owner for a fresh copy"
        )
    header = _HEADER.match(lines[0].strip())
    if header is None:
        raise PlaceholderError(
            "this sealed cell's first line is not '%%warden_sealed vN key=NAME version=N cell=ID': "
            "it was altered"
        )
    if int(header["format"]) != FORMAT_VERSION:
        raise PlaceholderError(
            f"this sealed cell is in format v{header['format']}, which this server does not know "
            f"(it knows v{FORMAT_VERSION}); upgrade jupyter-warden"
        )
    if lines[1].strip() != NOTICE or not lines[2].startswith("# "):
        raise PlaceholderError("this sealed cell's placeholder was edited; undo the edit")
    blob = _b64decode(lines[2][2:].strip())
    if not _MIN_BLOB <= len(blob) <= _MAX_BLOB:
        raise PlaceholderError("the sealed cell's ciphertext has an impossible length: it was altered")
    return SealedCell(header["key"], int(header["version"]), header["cell"], blob, FORMAT_VERSION)
