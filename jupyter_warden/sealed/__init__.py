"""Sealed cells: the key ring, the cell crypto, the placeholder format, and (un)sealing notebooks.

What the kernel guard calls (docs/sealed-cells.md has the whole story)::

    from jupyter_warden.sealed import parse_placeholder, KeyRing, PlaceholderError, UnsealError, KeyRingError

    sealed = parse_placeholder(source)   # None: not sealed; PlaceholderError: malformed/altered
    ring = KeyRing(store, master_key)    # the server's is settings["warden"].key_ring
    ring.may_use(actor, sealed.key_name) # bool, read from the store each call (revocation is at once)
    code = ring.open(sealed, cell_id)    # clear source; UnsealError (altered, moved) or KeyRingError
    ring.seal(key_name, cell_id, source) # a placeholder string

Errors all derive from Exception with a message meant for the user who ran
the cell; none of them carries clear source.
"""

from .crypto import UnsealError
from .keyring import ROLES, KeyAccessError, KeyInfo, KeyRing, KeyRingError
from .notebook import DEFAULT_TAG, SealReport, seal_notebook, sealed_cells, unseal_notebook
from .placeholder import MAGIC, PlaceholderError, SealedCell, looks_sealed, parse_placeholder

__all__ = [
    "DEFAULT_TAG",
    "MAGIC",
    "ROLES",
    "KeyAccessError",
    "KeyInfo",
    "KeyRing",
    "KeyRingError",
    "PlaceholderError",
    "SealReport",
    "SealedCell",
    "UnsealError",
    "looks_sealed",
    "parse_placeholder",
    "seal_notebook",
    "sealed_cells",
    "unseal_notebook",
]
