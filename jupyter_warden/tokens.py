"""Bearer secrets (API tokens, share-link tokens, sign-in session ids).

All are 256 random bits, so a plain SHA-256 is enough to store them and
lets a request find its row by an indexed lookup; a revocable, expiring
bearer is in one of three states, decided here once.
"""

from __future__ import annotations

import datetime as dt
import hashlib

from .store.models import utcnow


def token_hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def bearer_state(
    revoked_at: dt.datetime | None, expires_at: dt.datetime | None, now: dt.datetime | None = None
) -> str:
    """'revoked', 'expired' or 'active'."""
    if revoked_at:
        return "revoked"
    if expires_at and expires_at <= (now or utcnow()):
        return "expired"
    return "active"
