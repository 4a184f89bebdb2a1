"""A collaboration (RTC) save of a notebook whose outputs hold a handed-out secret: masked on disk.

A real pycrdt client edits the notebook's Y document over the guarded
document websocket; jupyter-collaboration saves it through the contents
manager, where the outputs are masked.
"""

from __future__ import annotations

import asyncio
import base64
import json

import pytest
from jupyter_ydoc import YNotebook
from pycrdt import Doc, create_sync_message, create_update_message, handle_sync_message
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from conftest import auth
from test_rtc_guard import until

VALUE = "rtc-handed-out-s3cret-42"
NB = "course/nb.ipynb"
NOTEBOOK = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": "notes", "id": "c1"}],
            "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


@pytest.fixture
def server_extensions():
    return {"jupyter_warden": True, "jupyterlab": True,
            "jupyter_server_fileid": True, "jupyter_server_ydoc": True}


@pytest.fixture
def extra_server_config(tmp_path):
    return {"YDocExtension": {"document_save_delay": 0.1, "document_cleanup_delay": 0.5},
            "SQLiteYStore": {"db_path": str(tmp_path / "ystore.db")}}


async def test_a_collaboration_save_masks_handed_out_values(jp_fetch, jp_http_port, jp_base_url, warden,
                                                           make_user, jp_root_dir):
    (jp_root_dir / "course").mkdir()
    (jp_root_dir / NB).write_text(json.dumps(NOTEBOOK))
    token = make_user("alice")
    warden.policy.grant("course", "user:alice", "read-write")
    warden.vault_channels.remember("a-kernel", VALUE)  # as the vault channel does on a read
    response = await jp_fetch("api", "collaboration", "session", NB, method="PUT", headers=auth(token),
                              body=json.dumps({"format": "json", "type": "notebook"}))
    data = json.loads(response.body)
    url = (f"ws://127.0.0.1:{jp_http_port}{jp_base_url}api/collaboration/room/"
           f"json:notebook:{data['fileId']}?sessionId={data['sessionId']}")
    ws = await websocket_connect(HTTPRequest(url, headers=auth(token)))
    doc = Doc()
    notebook = YNotebook(doc)

    async def pump():
        while (message := await ws.read_message()) is not None:
            if message[0] == 0:
                reply = handle_sync_message(message[1:], doc)
                if reply is not None:
                    await ws.write_message(reply, binary=True)

    task = asyncio.create_task(pump())
    try:
        await ws.write_message(create_sync_message(doc), binary=True)
        await until(lambda: notebook.cell_number == 1, timeout=10)
        updates = []
        subscription = doc.observe(lambda event: updates.append(event.update))
        notebook.append_cell({
            "cell_type": "code", "id": "c2", "metadata": {}, "execution_count": 1, "source": "print(pw)",
            "outputs": [
                {"output_type": "stream", "name": "stdout", "text": f"the password is {VALUE}\n"},
                {"output_type": "execute_result", "execution_count": 1, "metadata": {},
                 "data": {"text/plain": base64.b64encode(VALUE.encode()).decode()}},
            ],
        })
        doc.unobserve(subscription)
        for update in updates:
            await ws.write_message(create_update_message(update), binary=True)
        await until(lambda: "the password is" in (jp_root_dir / NB).read_text(), timeout=10)
        on_disk = (jp_root_dir / NB).read_text()
        assert "the password is [secret]" in on_disk
        assert VALUE not in on_disk and base64.b64encode(VALUE.encode()).decode() not in on_disk
    finally:
        ws.close()
        task.cancel()
