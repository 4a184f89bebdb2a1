"""Sealing and unsealing the tagged cells of a notebook, and writing notebooks atomically.

``seal_notebook`` seals every code cell tagged so (``sealed`` by default):
clear cells are sealed, cells already sealed under an older version or
another key are re-sealed under the given key's current version, and
cells already sealed under it are left alone. Outputs stay. Cells without
an id get one (the notebook becomes nbformat 4.5), since the seal is bound
to it. ``unseal_notebook`` puts the clear source back.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..names import name_key
from .keyring import KeyAccessError, KeyRing, KeyRingError
from .placeholder import CELL_ID, parse_placeholder

DEFAULT_TAG = "sealed"
METADATA_KEY = "jupyter_warden"


@dataclass
class SealReport:
    sealed: list[str] = field(default_factory=list)  # cell ids sealed now
    resealed: list[str] = field(default_factory=list)  # re-sealed under the current version
    unchanged: list[str] = field(default_factory=list)  # already sealed under the current version

    @property
    def changed(self) -> bool:
        return bool(self.sealed or self.resealed)


def _source(cell) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def _ensure_ids(nb) -> None:
    seen = set()
    for cell in nb.get("cells", []):
        cid = cell.get("id")
        if not isinstance(cid, str) or not CELL_ID.match(cid) or cid in seen:
            cid = secrets.token_hex(4)
            while cid in seen:
                cid = secrets.token_hex(4)
            cell["id"] = cid
        seen.add(cid)
    if nb.get("nbformat") == 4 and nb.get("nbformat_minor", 0) < 5:
        nb["nbformat_minor"] = 5


def _mirror(cell, sealed) -> None:
    meta = cell.setdefault("metadata", {})
    meta.setdefault(METADATA_KEY, {})["sealed"] = sealed.metadata() if sealed else None
    if sealed is None:
        del meta[METADATA_KEY]["sealed"]
        if not meta[METADATA_KEY]:
            del meta[METADATA_KEY]


def seal_notebook(
    nb, ring: KeyRing, key_name: str, tag: str = DEFAULT_TAG, may_use=lambda key_name: True
) -> SealReport:
    """Seal the cells of ``nb`` (a notebook dict, changed in place) tagged ``tag``.

    Re-sealing opens a cell sealed before, so ``may_use(its key name)`` must
    allow it: otherwise a placeholder copied from elsewhere, re-sealed under
    a key the caller holds, would hand them code they may not read.
    """
    tagged = [c for c in nb.get("cells", []) if tag in (c.get("metadata", {}).get("tags") or [])]
    if not tagged:
        raise KeyRingError(f"no cell is tagged {tag!r}: tag the cells to seal first")
    for index, cell in enumerate(nb.get("cells", [])):
        if cell in tagged and cell.get("cell_type") != "code":
            raise KeyRingError(
                f"cell {index + 1} is tagged {tag!r} but is a {cell.get('cell_type')} cell; "
                "only code cells can be sealed"
            )
    _ensure_ids(nb)
    current = ring.get(key_name)
    report = SealReport()
    for cell in tagged:
        source = _source(cell)
        existing = parse_placeholder(source)
        if existing is not None:
            same_key = name_key(existing.key_name) == name_key(current.name)
            if same_key and existing.key_version == current.current_version and existing.cell_id == cell["id"]:
                report.unchanged.append(cell["id"])
                continue
            if not may_use(existing.key_name):
                raise KeyAccessError(
                    f"cell {cell['id']!r} is already sealed under key {existing.key_name!r}, which you "
                    "may not use, so it can't be re-sealed"
                )
            source = ring.open(existing)
            report.resealed.append(cell["id"])
        else:
            report.sealed.append(cell["id"])
        placeholder = ring.seal(current.name, cell["id"], source)
        cell["source"] = placeholder
        _mirror(cell, parse_placeholder(placeholder))
    return report


def unseal_notebook(nb, ring: KeyRing, may_use=lambda key_name: True) -> list[str]:
    """Put back the clear source of every sealed cell whose key ``may_use`` allows; their ids."""
    opened = []
    for cell in nb.get("cells", []):
        sealed = parse_placeholder(_source(cell))
        if sealed is None:
            continue
        if not may_use(sealed.key_name):
            raise KeyAccessError(
                f"cell {cell.get('id')!r} is sealed under key {sealed.key_name!r}, which you may not use"
            )
        cell["source"] = ring.open(sealed, cell.get("id") or sealed.cell_id)
        _mirror(cell, None)
        opened.append(cell.get("id"))
    return opened


def sealed_cells(nb) -> list:
    """The SealedCells of a notebook, in order (a malformed placeholder raises)."""
    return [s for s in (parse_placeholder(_source(c)) for c in nb.get("cells", [])) if s is not None]


def write_atomically(path: str | os.PathLike, text: str, mode: int = 0o644,
                     owner: tuple[int, int] | None = None) -> None:
    """Write ``text`` to ``path`` whole or not at all: a temporary file beside it, fsync, rename.

    At every instant ``path`` holds the old text or the new, never a part: a
    process killed meanwhile leaves at most the hidden temporary file
    (``.NAME.*.tmp``), holding a part of the new text. ``owner`` is a (uid,
    gid) for the new file (a file replaced in place keeps its owner).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if owner is not None and (owner[0] != os.geteuid() or owner[1] != os.getegid()):
            os.fchown(fd, *owner)
        os.fchmod(fd, mode)  # after chown, which may clear set-id bits
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    # The rename itself is on disk once the folder is.
    folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def notebook_json(nb) -> str:
    return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
