"""The kernel channel guard with real-time collaboration on (jupyter_server_ydoc loaded).

Two users in one notebook's collaboration room each get their own kernel
for it, and neither can reach the other's, over either wire protocol.
"""

from __future__ import annotations

import json

import pytest
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from conftest import auth
from test_enforce_contents import NOTEBOOK, requester
from test_kernel_guard import PROTOCOLS, connect, refused, start_kernel, stdout  # noqa: F401,F811 (connect is a fixture)
from test_rtc_guard import YClient, session, until, ydoc_server

NB = "course/nb.ipynb"


@pytest.fixture
def server_extensions():
    return {"jupyter_warden": True, "jupyterlab": True,
            "jupyter_server_fileid": True, "jupyter_server_ydoc": True}


@pytest.fixture
def extra_server_config(tmp_path):
    return {"YDocExtension": {"document_save_delay": 0.1, "document_cleanup_delay": 0.5},
            "SQLiteYStore": {"db_path": str(tmp_path / "ystore.db")}}


@pytest.fixture
def people(jp_root_dir, warden, make_user):
    (jp_root_dir / "course").mkdir()
    (jp_root_dir / NB).write_text(json.dumps(NOTEBOOK))
    tokens = {n: make_user(n) for n in ("alice", "bob")}
    warden.policy.grant("course", "user:alice", "read-write-run")
    warden.policy.grant("course", "user:bob", "read-run")
    return tokens


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_two_users_in_one_room_get_their_own_kernels(jp_fetch, jp_serverapp, jp_http_port, jp_base_url,
                                                          connect, warden, people, protocol):
    # Both open the notebook's collaboration room, as JupyterLab does with RTC on.
    rooms = []
    for who in ("alice", "bob"):
        code, data = await session(jp_fetch, people[who], path=NB, body={"format": "json", "type": "notebook"})
        assert code in (200, 201), data
        room_id = f"json:notebook:{data['fileId']}"
        url = (f"ws://127.0.0.1:{jp_http_port}{jp_base_url}api/collaboration/room/{room_id}"
               f"?sessionId={data['sessionId']}")
        rooms.append(await YClient(await websocket_connect(HTTPRequest(url, headers=auth(people[who])))).start())
    await until(lambda: room_id in ydoc_server(jp_serverapp).rooms)

    try:
        # Each starts a kernel session for the same notebook: two kernels, one each.
        a_kernel = await start_kernel(jp_fetch, people["alice"], NB)
        b_kernel = await start_kernel(jp_fetch, people["bob"], NB)
        assert a_kernel != b_kernel
        for who, mine in (("alice", a_kernel), ("bob", b_kernel)):
            listed = json.loads((await requester(jp_fetch, people[who])("api", "sessions")).body)
            assert [s["kernel"]["id"] for s in listed] == [mine], who

        # Each runs code in their own kernel, and is refused on the other's.
        alice = await connect(a_kernel, people["alice"], protocol)
        bob = await connect(b_kernel, people["bob"], protocol)
        _, outputs = await alice.execute("owner = 'alice'; print(owner)")
        assert stdout(outputs) == "alice\n"
        _, outputs = await bob.execute("print(globals().get('owner'))")
        assert stdout(outputs) == "None\n"  # not alice's kernel
        assert await refused(connect, a_kernel, people["bob"], protocol) == 404
        assert await refused(connect, b_kernel, people["alice"], protocol) == 404

        # Both are still in the room: collaboration and kernels are separate.
        assert all(not client.task.done() for client in rooms)
    finally:
        for client in rooms:
            client.ws.close()
            client.task.cancel()
