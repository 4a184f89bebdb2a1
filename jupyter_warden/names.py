"""The one rule for user and group names, and the key that makes twins collide.

A name is NFC-normalised, 1 to 64 characters of letters (with their
combining marks), digits and ``. _ - @ +``, starting with a letter or digit. Two names whose keys (NFKC,
case-folded) are equal are the same name, so ``Bob`` and ``bob`` can't
both exist.
"""

from __future__ import annotations

import unicodedata

MAX_NAME_LENGTH = 64
NAME_RULE = (
    "1 to 64 characters: letters, digits and . _ - @ +, starting with a letter or digit"
)
_PUNCTUATION = frozenset("._-@+")


def _allowed(char: str, first: bool) -> bool:
    category = unicodedata.category(char)
    if first:
        return category[0] in "LN"
    # Marks (M*) too: many scripts write letters with combining signs.
    return category[0] in "LNM" or char in _PUNCTUATION


class InvalidName(ValueError):
    pass


def normalize_name(raw: str, kind: str = "name") -> str:
    """Return the NFC form of ``raw``, or raise InvalidName saying why not."""
    name = unicodedata.normalize("NFC", raw.strip())
    if (
        not name
        or len(name) > MAX_NAME_LENGTH
        or not all(_allowed(c, i == 0) for i, c in enumerate(name))
    ):
        raise InvalidName(f"{kind} {raw!r} is not allowed: use {NAME_RULE}")
    return name


def name_key(name: str) -> str:
    """The identity of a name: equal keys are the same user or group."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())
