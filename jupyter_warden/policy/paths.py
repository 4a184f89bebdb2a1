"""API paths as the policy sees them: one spelling for one place.

A policy path is relative to the server root, '/'-separated, without a
leading or trailing slash; the root is "". ``..``, ``.`` and empty
segments, NUL and backslashes are refused rather than interpreted.
"""

from __future__ import annotations


class BadPath(ValueError):
    pass


def normalize_path(path: str) -> str:
    if path is None:
        return ""
    if "\x00" in path or "\\" in path:
        raise BadPath(f"path {path!r} is not allowed")
    parts = [p for p in path.strip("/").split("/")]
    if parts == [""]:
        return ""
    for part in parts:
        if part in ("", ".", ".."):
            raise BadPath(f"path {path!r} is not allowed: use a plain path relative to the root")
    return "/".join(parts)


def ancestors(path: str) -> list[str]:
    """``path`` and every folder above it, the most specific first, ending with ""."""
    result = [path]
    while path:
        path = path.rpartition("/")[0]
        result.append(path)
    return result


def is_within(path: str, folder: str) -> bool:
    return folder == "" or path == folder or path.startswith(folder + "/")
