"""Sealing meets real-time collaboration, with the real jupyter-collaboration stack:
sealing in place is refused while a room holds the notebook, and purges its stored Y history,
so a notebook sealed and then opened in RTC (document and timeline) carries no clear source."""

from __future__ import annotations

import asyncio
import json
import sqlite3

import pytest
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from jupyter_ydoc import YNotebook

from conftest import auth
from test_api import call
from test_rtc_guard import YClient, collaboration_response, session, until
from test_sealed_api import NB, make_notebook
from jupyter_warden.sealed.documents import open_rooms

MARK = b"SECRET-CHECK"


@pytest.fixture
def server_extensions():
    return {"jupyter_warden": True, "jupyterlab": True,
            "jupyter_server_fileid": True, "jupyter_server_ydoc": True}


@pytest.fixture
def ystore_path(tmp_path):
    return tmp_path / "ystore.db"


@pytest.fixture
def extra_server_config(ystore_path):
    return {"YDocExtension": {"document_save_delay": 0.1, "document_cleanup_delay": 0.3},
            "SQLiteYStore": {"db_path": str(ystore_path)}}


@pytest.fixture
def course(warden, make_user, jp_root_dir):
    tokens = {name: make_user(name) for name in ("ines", "sam")}
    warden.accounts.add_group("cs101")
    warden.accounts.change_members("cs101", add=["sam"])
    warden.policy.grant("cs101", "user:ines", "manage")
    warden.policy.grant("cs101", "group:cs101", "read-run")
    make_notebook(jp_root_dir / NB)
    warden.key_ring.create("cs101-checks")
    warden.key_ring.grant("cs101-checks", "group:cs101")
    warden.key_ring.grant("cs101-checks", "user:ines")
    return tokens


@pytest.fixture
def open_room(jp_fetch, jp_http_port, jp_base_url, course):
    clients = []

    async def open_(who, room_id=None):
        """The notebook's room, as ``who``; or another room (a fork, a timeline's) by its id."""
        headers = auth(course[who])
        file_id, session_id = None, ""
        if room_id is None:
            code, data = await session(jp_fetch, headers=headers, path=NB,
                                       body={"format": "json", "type": "notebook"})
            assert code in (200, 201), data
            file_id, session_id = data["fileId"], data["sessionId"]
            room_id = f"json:notebook:{file_id}"
        url = f"ws://127.0.0.1:{jp_http_port}{jp_base_url}api/collaboration/room/{room_id}?sessionId={session_id}"
        client = YClient(await websocket_connect(HTTPRequest(url, headers=headers)))
        client.room_id, client.file_id = room_id, file_id
        clients.append(client)
        return await client.start()

    yield open_
    for client in clients:
        client.ws.close()
        client.task.cancel()


def history_rows(ystore_path, file_id) -> list[bytes]:
    if not ystore_path.exists():
        return []
    try:
        with sqlite3.connect(ystore_path) as conn:
            rows = conn.execute("SELECT yupdate FROM yupdates WHERE path = ?", (f".notebook:{file_id}.y",))
            return [row[0] for row in rows]
    except sqlite3.OperationalError:  # the Y store is still creating its tables
        return []


async def test_seal_refused_while_a_room_is_open_then_history_purged(
    jp_fetch, jp_serverapp, warden, course, open_room, ystore_path, jp_root_dir
):
    ines = await open_room("ines")
    await until(lambda: MARK in ines.doc.get_update(), timeout=10)
    before = (jp_root_dir / NB).read_text()

    code, body = await call(jp_fetch, "POST", "api", "warden", "seal", token=course["ines"],
                            body={"path": NB, "key": "cs101-checks"})
    assert code == 409 and "real-time collaboration" in body["message"]
    assert (jp_root_dir / NB).read_text() == before
    assert [r.outcome for r in warden.audit.tail(50) if r.action == "notebook.seal"] == ["deny"]

    # The room's history holds the clear source.
    await until(lambda: any(MARK in row for row in history_rows(ystore_path, ines.file_id)), timeout=10)
    ines.ws.close()
    await until(lambda: not open_rooms(jp_serverapp, NB), timeout=10)

    code, body = await call(jp_fetch, "POST", "api", "warden", "seal", token=course["ines"],
                            body={"path": NB, "key": "cs101-checks"})
    assert code == 200, body
    assert body["history_purged"] >= 1
    assert history_rows(ystore_path, ines.file_id) == []
    for path in ystore_path.parent.glob("ystore.db*"):
        assert MARK not in path.read_bytes(), path

    # sam opens the sealed notebook in RTC: the document and its timeline carry only the placeholder.
    sam = await open_room("sam")
    await until(lambda: b"warden_sealed" in sam.doc.get_update(), timeout=10)
    assert MARK not in sam.doc.get_update()
    response = await jp_fetch("api", "collaboration", "timeline", NB, headers=auth(course["sam"]),
                              params={"format": "json", "type": "notebook"}, raise_error=False)
    assert response.code == 200
    assert MARK not in response.body
    await asyncio.sleep(0.3)
    for row in history_rows(ystore_path, sam.file_id):
        assert MARK not in row
    assert not [r for r in warden.audit.tail(500) if "SECRET-CHECK" in repr(r)]


async def test_a_notebook_replaced_by_a_sealed_file_gets_its_history_purged(
    jp_fetch, jp_serverapp, warden, course, open_room, ystore_path, jp_root_dir
):
    import nbformat

    from jupyter_warden.sealed import seal_notebook
    from jupyter_warden.sealed.notebook import notebook_json, write_atomically

    ines = await open_room("ines")
    await until(lambda: any(MARK in row for row in history_rows(ystore_path, ines.file_id)), timeout=10)
    ines.ws.close()
    await until(lambda: not open_rooms(jp_serverapp, NB), timeout=10)
    # Sealed outside the server (as `jupyter-warden seal` does), then moved over the served file.
    nb = nbformat.read(str(jp_root_dir / NB), as_version=4)
    seal_notebook(nb, warden.key_ring, "cs101-checks")
    write_atomically(jp_root_dir / NB, notebook_json(nb))

    code, body = await call(jp_fetch, "POST", "api", "warden", "seal", token=course["ines"],
                            body={"path": NB, "key": "cs101-checks"})
    assert code == 200 and body["sealed"] == [] and len(body["unchanged"]) == 1, body
    assert not any(MARK in row for row in history_rows(ystore_path, ines.file_id))
    response = await jp_fetch("api", "collaboration", "timeline", NB, headers=auth(course["sam"]),
                              params={"format": "json", "type": "notebook"}, raise_error=False)
    # 404: no history left to show for it.
    assert response.code in (200, 404) and MARK not in (response.body or b"")


async def test_undo_and_forks_of_a_sealed_notebook_carry_no_clear_source(
    jp_fetch, jp_serverapp, warden, course, open_room, ystore_path, jp_root_dir
):
    """G5 on undo/redo and forks: ines edited the notebook live (its history holds the clear
    source), then sealed it. sam, with read-write-run but not manage, opens its room, edits it,
    follows its timeline, undoes every step there, forks it and follows the fork: no Y message
    and no JSON answer he gets carries the clear source."""
    warden.policy.grant(NB, "user:sam", "read-write-run")
    ines = await open_room("ines")
    await until(lambda: MARK in ines.doc.get_update(), timeout=10)
    ines_nb = YNotebook(ines.doc)
    await ines.change(lambda: ines_nb.ycells[2]["source"].insert(0, "# checked live\n"))
    await until(lambda: any(MARK in row for row in history_rows(ystore_path, ines.file_id))
                and any(b"# checked live" in row for row in history_rows(ystore_path, ines.file_id)), timeout=10)
    ines.ws.close()
    await until(lambda: not open_rooms(jp_serverapp, NB), timeout=10)
    code, body = await call(jp_fetch, "POST", "api", "warden", "seal", token=course["ines"],
                            body={"path": NB, "key": "cs101-checks"})
    assert code == 200 and body["history_purged"] >= 1, body

    answers: list[bytes] = []

    async def sam_asks(method, *parts, params=None, body=None):
        response = await collaboration_response(jp_fetch, method, *parts, token=course["sam"],
                                                params=params, body=body)
        answers.append(response.body or b"")
        return response.code, (json.loads(response.body) if response.body else None)

    sam = await open_room("sam")
    await until(lambda: b"warden_sealed" in sam.doc.get_update(), timeout=10)
    sam_nb = YNotebook(sam.doc)
    # sam edits: a history of his own to undo, on top of the sealed notebook.
    for line in ("# one\n", "# two\n"):
        await sam.change(lambda line=line: sam_nb.ycells[1]["source"].insert(0, line))
    await until(lambda: any(b"# two" in row for row in history_rows(ystore_path, sam.file_id)), timeout=10)

    code, timeline = await sam_asks("GET", "timeline", NB, params={"format": "json", "type": "notebook"})
    assert code == 200 and timeline["timestamps"], timeline
    history = await open_room("sam", room_id=timeline["forkRoom"])  # as JupyterLab's history slider does
    history_nb = YNotebook(history.doc)
    await until(lambda: history_nb.cell_number == 3 and "# two" in history_nb.get_cell(1)["source"])
    undo = {"action": "undo", "steps": "1000", "forkRoom": timeline["forkRoom"]}
    code, answer = await sam_asks("PUT", "undo_redo", sam.room_id, params=undo)
    assert code == 200 and answer == {"status": "undone"}, answer
    # The undo reached sam's view of the timeline: back to the notebook as sealed.
    await until(lambda: "# one" not in str(history_nb.get_cell(1)["source"]))
    assert b"warden_sealed" in history.doc.get_update()
    code, answer = await sam_asks("PUT", "undo_redo", sam.room_id, params={**undo, "action": "redo"})
    assert code == 200, answer

    code, fork = await sam_asks("PUT", "fork", sam.room_id, body={"title": "mine"})
    assert code == 201, fork
    forked = await open_room("sam", room_id=fork["fork_roomid"])
    await until(lambda: b"warden_sealed" in forked.doc.get_update() and b"# two" in forked.doc.get_update())
    code, forks = await sam_asks("GET", "fork", sam.room_id)
    assert code == 200 and fork["fork_roomid"] in forks
    await asyncio.sleep(0.3)  # anything still on its way

    for client in (sam, history, forked):
        assert client.received and not any(MARK in message for message in client.received)
        assert MARK not in client.doc.get_update()
    assert answers and not any(MARK in answer for answer in answers)
    assert MARK not in (jp_root_dir / NB).read_bytes()
