"""Sealing meets real-time collaboration: finding a notebook's open rooms, purging its Y history.

jupyter-collaboration keeps a room's document in memory while it is open
(and for ``document_cleanup_delay`` after its last client leaves), and
every update of it in the Y store for good. Sealing in place is refused
while a room exists, since the room would write its clear copy back, and
after sealing the notebook's stored history is deleted, so no clear text
outlives the sealing. Only the SQLite Y store (jupyter-collaboration's
default) can be purged; with another store class sealing in place is refused.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path


class HistoryError(Exception):
    """The document history can't be purged here, so sealing in place must not happen."""


def _ydoc_app(serverapp):
    apps = serverapp.extension_manager.extension_apps.get("jupyter_server_ydoc")
    return next(iter(apps)) if apps else None


def open_rooms(serverapp, path: str) -> list[str]:
    """Ids of the rooms (forks included) that hold ``path``'s document now."""
    app = _ydoc_app(serverapp)
    server = getattr(app, "ywebsocket_server", None) if app else None
    if server is None:
        return []
    from ..enforce.rtc import room_path

    settings = serverapp.web_app.settings
    return [room for room in list(server.rooms) if room_path(settings, room) == path]


def history_store(serverapp) -> Path | None:
    """The SQLite file of the Y store, None without collaboration; HistoryError if it can't be purged."""
    app = _ydoc_app(serverapp)
    if app is None:
        return None
    from pycrdt.store import SQLiteYStore

    if not (isinstance(app.ystore_class, type) and issubclass(app.ystore_class, SQLiteYStore)):
        raise HistoryError(
            f"the document history is kept by {app.ystore_class!r}, which the warden can't purge; "
            "sealing in place is refused. Seal with `jupyter-warden seal` and replace the file instead."
        )
    db_path = app.ystore_class(path="-", config=app.config).db_path
    return Path(db_path).expanduser().resolve()


def purge_history(serverapp, path: str) -> int:
    """Delete every stored Y update and checkpoint of ``path``'s document; how many rows went."""
    db = history_store(serverapp)
    manager = serverapp.web_app.settings.get("file_id_manager")
    file_id = manager.get_id(path) if manager is not None else None
    if db is None or file_id is None or not db.exists():
        return 0
    # The Y store names a document's history ".{type}:{file_id}.y" (jupyter_server_ydoc/app.py).
    names = [f".{kind}:{file_id}.y" for kind in ("notebook", "file", "unicode", "blob")]
    marks = ",".join("?" * len(names))
    conn = sqlite3.connect(db, timeout=10)
    try:
        # Overwrite the freed pages, so the clear text is not left in the file's free list.
        conn.execute("PRAGMA secure_delete=ON")
        with conn:
            gone = conn.execute(f"DELETE FROM yupdates WHERE path IN ({marks})", names).rowcount
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if "ycheckpoints" in tables:
                gone += conn.execute(f"DELETE FROM ycheckpoints WHERE path IN ({marks})", names).rowcount
        if conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):
            return 0
        raise HistoryError(f"the document history in {db} could not be purged: {e}") from None
    finally:
        conn.close()
    return gone
