"""Kernels listen only where other local accounts can't reach them.

Real kernels, started through the REST API and driven over the kernel
websocket; then a raw ZMQ client that knows the ports and the HMAC key,
but not the CurveZMQ keys, tries to read output and to run code.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
import uuid

import pytest
import zmq
import zmq.asyncio
from jupyter_client.session import Session

from conftest import auth
from test_enforce_contents import NOTEBOOK, requester
from jupyter_warden.enforce.transport import (
    KernelTransport,
    TransportError,
    check_private_file,
    secure_runtime_dir,
)


@pytest.fixture
def warden_config():
    # The server's own transport, as used without the sandbox: a sandboxed
    # kernel always gets ipc in its own folder (tests/test_sandbox.py).
    return {"sandbox": "none"}


@pytest.fixture
def plain_kernel_spec(jp_kernel_dir):
    """An ipykernel whose kernelspec does not declare CurveZMQ support."""
    spec = jp_kernel_dir / "plain"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "plain", "language": "python"})
    )
    return "plain"


@pytest.fixture
def alice(jp_root_dir, warden, make_user):
    (jp_root_dir / "nb.ipynb").write_text(json.dumps(NOTEBOOK))
    token = make_user("alice")
    warden.policy.grant("nb.ipynb", "user:alice", "read-run")
    return token


async def start_kernel(jp_fetch, token, kernel_name="python3"):
    body = {"path": "nb.ipynb", "type": "notebook", "name": "", "kernel": {"name": kernel_name}}
    response = await requester(jp_fetch, token)("api", "sessions", method="POST", body=body)
    return response


async def run_code(jp_ws_fetch, token, kernel_id, code):
    """Execute ``code`` over the kernel websocket; return (reply status, stdout text)."""
    ws = await jp_ws_fetch("api", "kernels", kernel_id, "channels", headers=auth(token))
    msg_id = uuid.uuid4().hex
    ws.write_message(json.dumps({
        "channel": "shell",
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "session": "s",
                   "username": "alice", "version": "5.3", "date": ""},
        "parent_header": {}, "metadata": {}, "buffers": [],
        "content": {"code": code, "silent": False, "store_history": False,
                    "user_expressions": {}, "allow_stdin": False},
    }))
    status, out, idle = None, "", False
    async with asyncio.timeout(20):
        while status is None or not idle:
            msg = json.loads(await ws.read_message())
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind = msg["header"]["msg_type"]
            if kind == "execute_reply":
                status = msg["content"]["status"]
            elif kind == "stream":
                out += msg["content"]["text"]
            elif kind == "status" and msg["content"]["execution_state"] == "idle":
                idle = True
    ws.close()
    return status, out


def connection_info(jp_serverapp, kernel_id):
    km = jp_serverapp.kernel_manager.get_kernel(kernel_id)
    with open(km.connection_file) as f:
        return km.connection_file, json.load(f)


def mode_of(path) -> int:
    return os.stat(path).st_mode & 0o777  # jupyter_core may add the sticky bit


async def sneak(info, marker, with_keys: bool) -> bool:
    """Try to run code in the kernel from outside the server; True if it ran."""
    ctx = zmq.asyncio.Context()
    shell = ctx.socket(zmq.DEALER)
    shell.linger = 0
    if with_keys:
        shell.curve_publickey = info["curve_publickey"].encode()
        shell.curve_secretkey = info["curve_secretkey"].encode()
        shell.curve_serverkey = info["curve_publickey"].encode()
    shell.connect(f"tcp://{info['ip']}:{info['shell_port']}")
    session = Session(key=info["key"].encode(), signature_scheme=info["signature_scheme"])
    code = f"open({str(marker)!r}, 'w').close()"
    content = {"code": code, "silent": False, "store_history": False,
               "user_expressions": {}, "allow_stdin": False}
    msg = session.msg("execute_request", content)
    try:
        await asyncio.wait_for(shell.send_multipart(session.serialize(msg)), 2)
        await asyncio.wait_for(shell.recv_multipart(), 3)
    except (asyncio.TimeoutError, zmq.Again):
        pass
    finally:
        shell.close()
        ctx.term()
    return marker.exists()


async def eavesdrop(info, jp_ws_fetch, token, kernel_id) -> list:
    """Subscribe to IOPub without keys while the kernel prints; what arrived."""
    ctx = zmq.asyncio.Context()
    iopub = ctx.socket(zmq.SUB)
    iopub.linger = 0
    iopub.setsockopt(zmq.SUBSCRIBE, b"")
    iopub.connect(f"tcp://{info['ip']}:{info['iopub_port']}")
    await asyncio.sleep(0.5)
    got = []

    async def listen():
        while True:
            got.append(await iopub.recv_multipart())

    listener = asyncio.ensure_future(listen())
    status, out = await run_code(jp_ws_fetch, token, kernel_id, "print('the secret output')")
    await asyncio.sleep(0.5)
    listener.cancel()
    iopub.close()
    ctx.term()
    assert (status, out) == ("ok", "the secret output\n")
    return got


async def test_curve_by_default_and_keyless_clients_are_shut_out(
    jp_fetch, jp_ws_fetch, jp_serverapp, jp_runtime_dir, alice, tmp_path
):
    made = await start_kernel(jp_fetch, alice)
    assert made.code == 201, made.body
    kernel_id = json.loads(made.body)["kernel"]["id"]
    assert await run_code(jp_ws_fetch, alice, kernel_id, "print(1+1)") == ("ok", "2\n")

    path, info = connection_info(jp_serverapp, kernel_id)
    assert info["transport"] == "tcp" and info["ip"] == "127.0.0.1"
    assert info["curve_publickey"] and info["curve_secretkey"]
    assert mode_of(path) == 0o600 and os.stat(path).st_uid == os.geteuid()
    assert os.path.dirname(path) == str(jp_runtime_dir) and mode_of(jp_runtime_dir) == 0o700

    # Knowing the ports and the HMAC key is not enough without the Curve keys:
    # nothing is read from IOPub, and code sent to the shell never runs.
    assert await eavesdrop(info, jp_ws_fetch, alice, kernel_id) == []
    assert not await sneak(info, tmp_path / "sneaked", with_keys=False)
    # The control: with the keys from the connection file the same client gets in.
    assert await sneak(info, tmp_path / "with-keys", with_keys=True)


async def test_auto_puts_kernels_without_curve_on_private_unix_sockets(
    jp_fetch, jp_ws_fetch, jp_serverapp, warden, alice, plain_kernel_spec
):
    made = await start_kernel(jp_fetch, alice, plain_kernel_spec)
    assert made.code == 201, made.body
    kernel_id = json.loads(made.body)["kernel"]["id"]
    assert await run_code(jp_ws_fetch, alice, kernel_id, "print(6*7)") == ("ok", "42\n")

    path, info = connection_info(jp_serverapp, kernel_id)
    assert mode_of(path) == 0o600
    assert info["transport"] == "ipc" and "curve_publickey" not in info
    socket_dir = warden.transport.socket_dir
    assert os.path.dirname(info["ip"]) == socket_dir
    assert mode_of(socket_dir) == 0o700 and os.stat(socket_dir).st_uid == os.geteuid()
    for port in ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port"):
        assert stat.S_ISSOCK(os.stat(f"{info['ip']}-{info[port]}").st_mode), port


class TestIpc:
    @pytest.fixture
    def warden_config(self):
        return {"kernel_transport": "ipc", "sandbox": "none"}

    async def test_ipc_kernels_run_in_a_private_socket_folder(
        self, jp_fetch, jp_ws_fetch, jp_serverapp, warden, alice
    ):
        made = await start_kernel(jp_fetch, alice)
        assert made.code == 201, made.body
        kernel_id = json.loads(made.body)["kernel"]["id"]
        assert await run_code(jp_ws_fetch, alice, kernel_id, "print(1+1)") == ("ok", "2\n")
        path, info = connection_info(jp_serverapp, kernel_id)
        assert mode_of(path) == 0o600
        assert info["transport"] == "ipc" and info["ip"].startswith(warden.transport.socket_dir + "/")
        assert mode_of(warden.transport.socket_dir) == 0o700
        # Shut down, the kernel's sockets go away with it.
        response = await requester(jp_fetch, alice)("api", "kernels", kernel_id, method="DELETE")
        assert response.code == 204
        assert not [n for n in os.listdir(warden.transport.socket_dir) if kernel_id in n]


    async def test_the_servers_iopub_sockets_queue_what_a_fast_cell_prints(
        self, jp_fetch, jp_ws_fetch, jp_serverapp, warden, alice
    ):
        # ZMQ's stock 1,000 messages dropped lines (and idle statuses) of a
        # fast-printing cell on ipc; every IOPub socket of the server holds
        # c.Warden.kernel_iopub_queue messages instead.
        assert warden.kernel_iopub_queue == 10_000
        made = await start_kernel(jp_fetch, alice)
        kernel_id = json.loads(made.body)["kernel"]["id"]
        ws = await jp_ws_fetch("api", "kernels", kernel_id, "channels", headers=auth(alice))
        try:
            [connection] = [c for c in warden.kernel_connections._open if c.kernel_id == kernel_id]
            iopub = connection.channels["iopub"].socket
            assert iopub.socket_type == zmq.SUB and iopub.rcvhwm == 10_000
            activity = jp_serverapp.kernel_manager.get_kernel(kernel_id)._activity_stream.socket
            assert activity.rcvhwm == 10_000
            # The other channels keep ZMQ's defaults.
            assert connection.channels["shell"].socket.rcvhwm == 1000
        finally:
            ws.close()


class TestCurveRequired:
    @pytest.fixture
    def warden_config(self):
        return {"kernel_transport": "curve", "sandbox": "none"}

    async def test_a_kernel_without_curve_is_refused(
        self, jp_fetch, jp_serverapp, alice, plain_kernel_spec
    ):
        made = await start_kernel(jp_fetch, alice, plain_kernel_spec)
        assert made.code == 500
        assert jp_serverapp.kernel_manager.list_kernel_ids() == []


# -- the checks themselves, on folders and files the server did not make -----


def test_a_loose_runtime_folder_is_tightened(tmp_path, caplog):
    import logging

    folder = tmp_path / "runtime"
    folder.mkdir(mode=0o755)
    os.chmod(folder, 0o755)
    secure_runtime_dir(str(folder), logging.getLogger("t"))
    assert mode_of(folder) == 0o700
    assert "was open to others" in caplog.text


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hand a folder to another uid")
def test_someone_elses_runtime_folder_is_refused(tmp_path):
    import logging

    folder = tmp_path / "runtime"
    folder.mkdir(mode=0o700)
    os.chown(folder, 65534, 65534)
    with pytest.raises(TransportError, match="belongs to uid 65534"):
        secure_runtime_dir(str(folder), logging.getLogger("t"))


def test_a_readable_connection_file_is_refused(tmp_path):
    loose = tmp_path / "kernel.json"
    loose.write_text("{}")
    os.chmod(loose, 0o644)
    with pytest.raises(TransportError, match="not a 0600 file"):
        check_private_file(loose, "kernel connection file")
    os.chmod(loose, 0o600)
    check_private_file(loose, "kernel connection file")
    link = tmp_path / "link.json"
    link.symlink_to(loose)
    with pytest.raises(TransportError):
        check_private_file(link, "kernel connection file")


def test_an_unknown_transport_is_refused():
    import logging

    with pytest.raises(TransportError, match="must be one of"):
        KernelTransport("plaintext", logging.getLogger("t"))
    transport = KernelTransport("ipc", logging.getLogger("t"))
    folder = transport.socket_dir
    assert mode_of(folder) == 0o700
    transport.close()
    assert not os.path.exists(folder)
