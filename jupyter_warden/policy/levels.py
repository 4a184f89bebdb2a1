"""Capabilities and access levels, defined once.

The code, the CLI, the HTTP API and the docs all read these tables;
nothing else spells out what a level means.
"""

from __future__ import annotations

CAPABILITIES: dict[str, str] = {
    "read": "See the file or folder and its content, and follow it live.",
    "run": "Execute code for the notebook in one's own kernel.",
    "write": "Change, rename, move or delete it; create files in a folder.",
    "manage": "Everything above, plus sharing, labels, sealing and the path's audit records.",
}

LEVELS: dict[str, frozenset[str]] = {
    "none": frozenset(),
    "read": frozenset({"read"}),
    "read-run": frozenset({"read", "run"}),
    "read-write": frozenset({"read", "write"}),
    "read-write-run": frozenset({"read", "write", "run"}),
    "manage": frozenset(CAPABILITIES),
}

LEVEL_DESCRIPTIONS: dict[str, str] = {
    "none": "Takes away every right on the path and below it.",
    "read": "Read only.",
    "read-run": "Read, and run in one's own kernel; no edits.",
    "read-write": "Read and edit; never execute.",
    "read-write-run": "Read, edit and run.",
    "manage": "Full control, including sharing.",
}

# The most a share link can give.
LINK_LEVELS = ("read", "read-run")


def level_of(capabilities: frozenset[str]) -> str:
    """The name of the smallest level holding ``capabilities`` (best effort for display)."""
    for name, caps in LEVELS.items():
        if caps == capabilities:
            return name
    for name, caps in LEVELS.items():
        if capabilities <= caps:
            return name
    return "manage"


def check_level(level: str) -> str:
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}: use one of {', '.join(LEVELS)}")
    return level


def check_capability(capability: str) -> str:
    if capability not in CAPABILITIES:
        raise ValueError(f"unknown action {capability!r}: use one of {', '.join(CAPABILITIES)}")
    return capability
