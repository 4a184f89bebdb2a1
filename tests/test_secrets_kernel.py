"""The vault seen from sandboxed kernels (real bubblewrap): reads, refusals, masking, saves, passwords.

Each kernel is started through the sessions API and driven over its real
websocket; the vault channel is the kernel's own Unix socket.
"""

from __future__ import annotations

import base64
import json
import asyncio
import sys
import uuid
from urllib.parse import quote

import pytest

from test_enforce_contents import NOTEBOOK, requester
from test_kernel_guard import connect, start_kernel, stdout  # noqa: F401  (fixture)

from jupyter_warden.sandbox import bubblewrap_problem

pytestmark = pytest.mark.skipif(bubblewrap_problem() is not None, reason=f"no sandbox: {bubblewrap_problem()}")

VALUE = "pg-Pa55w0rd/with+odd&chars?"
OTHER = "another-s3cret-value-xyz"


@pytest.fixture
def warden_config():
    return {"audit_code": True, "kernel_memory_limit": 2 * 1024**3, "kernel_process_limit": 64}


@pytest.fixture
def people(jp_root_dir, warden, make_user):
    for folder in ("alice", "bob"):
        (jp_root_dir / folder).mkdir()
        (jp_root_dir / folder / "nb.ipynb").write_text(json.dumps(NOTEBOOK))
    tokens = {n: make_user(n) for n in ("alice", "bob")}
    warden.policy.grant("alice", "user:alice", "read-write-run")
    warden.policy.grant("bob", "user:bob", "read-write-run")
    warden.accounts.add_group("team")
    warden.accounts.change_members("team", add=["alice"])
    warden.vault.set("DB_PASSWORD", VALUE, None, "user:bob")  # bob's, granted to alice's group
    warden.vault.grant("DB_PASSWORD", "group:team", None)
    warden.vault.set("OTHER", OTHER, None, "user:bob")  # never granted to alice
    return tokens


def everything_logged(warden) -> str:
    """Every audit record, as text."""
    return json.dumps([r.as_json() for r in warden.audit.query()], default=str)


def all_text(outputs) -> str:
    return json.dumps([m["content"] for m in outputs])


async def test_granted_user_reads_and_every_form_is_masked(jp_fetch, connect, warden, people, caplog, jp_root_dir):
    caplog.set_level("DEBUG")
    kernel = await start_kernel(jp_fetch, people["alice"], "alice/nb.ipynb")
    json_client = await connect(kernel, people["alice"])
    v1_client = await connect(kernel, people["alice"], "v1")
    code = '''
import base64, binascii, sys, time, urllib.parse, os
from jupyter_warden import secrets
v = secrets.get("DB_PASSWORD")
print("plain", v)
print("b64", base64.b64encode(("user:" + v).encode()).decode())
print("hex", binascii.hexlify(v.encode()).decode())
print("url", urllib.parse.quote(v, safe=""))
sys.stdout.write("split " + v[:7]); sys.stdout.flush(); time.sleep(0.3)
sys.stdout.write(v[7:] + " end\\n"); sys.stdout.flush()
with secrets.env("DB_PASSWORD", PGPASSWORD="DB_PASSWORD"):
    inside = os.environ["PGPASSWORD"] == v and os.environ["DB_PASSWORD"] == v
print("env", inside, "PGPASSWORD" in os.environ, "DB_PASSWORD" in os.environ)
from IPython.display import display, HTML
display(HTML("<b>%s</b>" % v))
print("length", len(v))
v
'''
    reply, outputs = await json_client.execute(code)
    assert reply["content"]["status"] == "ok", reply["content"]
    text = stdout(outputs)
    assert "plain [secret]" in text and "hex [secret]" in text and "url [secret]" in text
    assert "split [secret] end" in text
    # The value really came in two messages: the first ended with its start, held back.
    streams = [m["content"]["text"] for m in outputs if m["msg_type"] == "stream"]
    assert any(t.endswith("split ") for t in streams), streams
    assert "env True False False" in text
    assert f"length {len(VALUE)}" in text  # the kernel really had it
    b64 = base64.b64encode(("user:" + VALUE).encode()).decode()
    assert b64 not in text and "[secret]" in text.split("b64", 1)[1].splitlines()[0]
    forms = [VALUE, quote(VALUE, safe=""), VALUE.encode().hex(), b64, VALUE[7:], "Pa55w0rd/with"]
    results = [m for m in outputs if m["msg_type"] in ("execute_result", "display_data")]
    assert len(results) == 2
    # The other connection (the v1 protocol) saw the same outputs, masked too.
    seen_v1 = []
    while True:
        msg = await v1_client.recv()
        seen_v1.append(msg)
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle" \
                and msg["parent_header"].get("msg_id") == reply["parent_header"]["msg_id"]:
            break
    assert "split [secret] end" in stdout(seen_v1)
    for form in forms:
        assert form not in all_text(outputs) and form not in all_text(seen_v1), form
    # Audited: who, which kernel, which notebook, which secret; never the value.
    reads = [r for r in warden.audit.query() if r.action == "secret.read"]
    assert reads and all(r.outcome == "allow" and r.actor == "alice" for r in reads)
    assert reads[0].path == "alice/nb.ipynb"
    assert reads[0].details["kernel"] == kernel and reads[0].details["secret"] == "DB_PASSWORD"
    assert VALUE not in everything_logged(warden)

    # A notebook saved after printing the secret holds no trace of it on disk.
    notebook = {**NOTEBOOK, "cells": [{
        "cell_type": "code", "metadata": {}, "id": "c2", "execution_count": 1, "source": "print(v)",
        "outputs": [{"output_type": "stream", "name": "stdout", "text": f"leaked {VALUE}\n"},
                    {"output_type": "display_data", "metadata": {},
                     "data": {"text/plain": base64.b64encode(VALUE.encode()).decode()}}],
    }]}
    call = requester(jp_fetch, people["alice"])
    saved = await call("api", "contents", "alice", "saved.ipynb", method="PUT",
                       body={"type": "notebook", "format": "json", "content": notebook})
    assert saved.code == 201, saved.body
    on_disk = (jp_root_dir / "alice" / "saved.ipynb").read_text()
    assert VALUE not in on_disk and base64.b64encode(VALUE.encode()).decode() not in on_disk
    assert "leaked [secret]" in on_disk

    # A revoked grant stops the next read.
    warden.vault.revoke("DB_PASSWORD", "group:team", None)
    reply, outputs = await json_client.execute(
        'from jupyter_warden import secrets\ntry:\n    secrets.get("DB_PASSWORD")\n'
        'except secrets.SecretNotGranted as e:\n    print("refused:", e)')
    assert "refused: secret 'DB_PASSWORD' does not exist or is not granted to you" in stdout(outputs)
    assert caplog.text and VALUE not in caplog.text  # nor in the server's log, at DEBUG


async def test_refused_without_grant_and_outside_a_warden_kernel(jp_fetch, connect, warden, people):
    kernel = await start_kernel(jp_fetch, people["alice"], "alice/nb.ipynb")
    client = await connect(kernel, people["alice"])
    reply, outputs = await client.execute('''
from jupyter_warden import secrets
import os
for name in ("OTHER", "NO_SUCH"):
    try:
        secrets.get(name)
    except secrets.SecretNotGranted as e:
        print("refused", name, "|", e)
os.environ["WARDEN_VAULT_TOKEN"] = "forged-" + os.environ["WARDEN_VAULT_TOKEN"]
try:
    secrets.get("DB_PASSWORD")
except secrets.VaultError as e:
    print("forged", type(e).__name__, "|", e)
del os.environ["WARDEN_VAULT_SOCKET"]
try:
    secrets.get("DB_PASSWORD")
except secrets.VaultUnavailable as e:
    print("outside", "|", e)
''')
    text = stdout(outputs)
    assert reply["content"]["status"] == "ok", reply["content"]
    assert "refused OTHER | secret 'OTHER' does not exist or is not granted to you" in text
    assert "refused NO_SUCH | secret 'NO_SUCH' does not exist" in text
    assert "forged VaultError | the token is not this kernel's" in text
    assert "outside | this kernel was not started by a jupyter-warden server" in text
    assert OTHER not in text and VALUE not in text
    denials = [r for r in warden.audit.query() if r.action == "secret.read" and r.outcome == "deny"]
    assert {r.details["secret"] for r in denials} >= {"OTHER", "NO_SUCH", None}


async def _ask_as(uid: int, gid: int, path: str, token: str, name: str = "DB_PASSWORD") -> str:
    """Connect to a vault socket from a process of another uid, as an attacker on the host would."""
    code = (
        "import json, socket, sys\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "try:\n"
        f"    s.connect({path!r})\n"
        "except OSError as e:\n"
        "    print('connect refused:', e.strerror); sys.exit()\n"
        "try:\n"
        f"    s.sendall(json.dumps({{'token': {token!r}, 'op': 'get', 'name': {name!r}}}).encode() + b'\\n')\n"
        "except BrokenPipeError:\n"
        "    pass  # refused before the request was read\n"
        "print(s.makefile().readline())\n"
    )
    # Not subprocess.run: the server answers on this same event loop.
    process = await asyncio.create_subprocess_exec(
        "/usr/bin/setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", sys.executable, "-c", code,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    return out.decode()


async def test_another_kernels_socket_and_token_are_refused(jp_fetch, connect, warden, people):
    alice_kernel = await start_kernel(jp_fetch, people["alice"], "alice/nb.ipynb")
    bob_kernel = await start_kernel(jp_fetch, people["bob"], "bob/nb.ipynb")
    channels = warden.vault_channels._channels
    alice, bob = channels[alice_kernel], channels[bob_kernel]
    assert alice.uid != bob.uid
    gid = warden.sandbox_gid
    # On the host, no kernel uid can reach any kernel's socket: the kernels' base folder is root's 0700
    # (inside, each sandbox binds its own run folder only); Bob's uid with Alice's token gets nowhere.
    assert "connect refused: Permission denied" in await _ask_as(bob.uid, gid, str(alice.path), alice.token)
    assert "connect refused: Permission denied" in await _ask_as(alice.uid, gid, str(alice.path), alice.token)
    # A process that can connect (the server's own uid, root) is still not the kernel: refused by
    # its peer credentials, token or not.
    assert "is not this kernel" in await _ask_as(0, 0, str(alice.path), alice.token)
    # Bob's kernel reads his own secret; Alice's could not (test above). The forged token is refused
    # from inside a kernel in test_refused_without_grant_and_outside_a_warden_kernel.
    client = await connect(bob_kernel, people["bob"])
    reply, outputs = await client.execute(
        'from jupyter_warden import secrets\nprint(len(secrets.get("OTHER")))\n'
        'import os\nprint(sorted(os.listdir(os.path.dirname(os.environ["WARDEN_VAULT_SOCKET"]))))')
    assert reply["content"]["status"] == "ok", reply["content"]
    assert str(len(OTHER)) in stdout(outputs)
    # From inside bob's sandbox, alice's kernel folder does not exist.
    reply, outputs = await client.execute(f'import os\nprint(os.path.exists({str(alice.path)!r}))')
    assert "False" in stdout(outputs)


async def test_password_input_is_never_audited_nor_echoed(jp_fetch, connect, warden, people, caplog):
    caplog.set_level("DEBUG")
    password = "typed-" + uuid.uuid4().hex
    kernel = await start_kernel(jp_fetch, people["alice"], "alice/nb.ipynb")
    client = await connect(kernel, people["alice"])
    msg_id = await client.send("shell", "execute_request", {
        "code": "import getpass\np = getpass.getpass('Password: ')\nprint('got', p)\nprint(len(p))",
        "silent": False, "store_history": True, "user_expressions": {}, "allow_stdin": True,
        "stop_on_error": True})
    while True:
        msg = await client.recv()
        if msg["msg_type"] == "input_request":
            assert msg["content"]["password"] is True
            break
    # The reply's parent is the request, as a frontend sends it.
    await client.ws.write_message(json.dumps({
        "header": client.header("input_reply"), "parent_header": msg["header"], "metadata": {},
        "content": {"value": password, "status": "ok"}, "channel": "stdin"}))
    reply, outputs = await client.reply_to(msg_id, "execute_reply")
    text = stdout(outputs)
    assert reply["content"]["status"] == "ok", reply["content"]
    assert password not in text and "got [secret]" in text and str(len(password)) in text
    assert password not in everything_logged(warden)
    assert caplog.text and password not in caplog.text
    executes = [r for r in warden.audit.query() if r.action == "kernel.execute"]
    assert executes and "getpass" in executes[-1].details["code"]  # audit_code is on


async def test_a_restarted_kernel_gets_a_fresh_token_and_still_reads(jp_fetch, connect, warden, people):
    kernel = await start_kernel(jp_fetch, people["alice"], "alice/nb.ipynb")
    before = warden.vault_channels._channels[kernel].token
    call = requester(jp_fetch, people["alice"])
    restarted = await call("api", "kernels", kernel, "restart", method="POST")
    assert restarted.code == 200, restarted.body
    after = warden.vault_channels._channels[kernel].token
    assert after != before
    client = await connect(kernel, people["alice"])
    reply, outputs = await client.execute(
        'import os\nfrom jupyter_warden import secrets\n'
        f'print(os.environ["WARDEN_VAULT_TOKEN"] == {before!r}, len(secrets.get("DB_PASSWORD")))\n'
        f'os.environ["WARDEN_VAULT_TOKEN"] = {before!r}\n'
        'try:\n    secrets.get("DB_PASSWORD")\nexcept secrets.VaultError as e:\n    print("old token:", e)')
    assert reply["content"]["status"] == "ok", reply["content"]
    text = stdout(outputs)
    assert f"False {len(VALUE)}" in text and "old token: the token is not this kernel's" in text
    # Once the kernel is gone, so is its socket.
    path = warden.vault_channels._channels[kernel].path
    assert (await call("api", "kernels", kernel, method="DELETE")).code == 204
    await asyncio.sleep(0.5)
    assert kernel not in warden.vault_channels._channels and not path.exists()


async def test_buffers_of_comm_messages_are_masked_or_removed(jp_fetch, connect, warden, people):
    """A widget's (comm's) binary buffers: text masked; binary holding a value replaced, audited, told."""
    kernel = await start_kernel(jp_fetch, people["alice"], "alice/nb.ipynb")
    clients = {"json": await connect(kernel, people["alice"]), "v1": await connect(kernel, people["alice"], "v1")}
    code = '''
import base64
from comm import create_comm
from jupyter_warden import secrets
v = secrets.get("DB_PASSWORD").encode()
c = create_comm(target_name="warden-test", data={"n": 1}, buffers=[b"opened"])
c.send(data={"buffer_paths": [["a"], ["b"], ["c"], ["d"]]}, buffers=[
    b"text " + v,                                   # UTF-8 text: masked in place
    b"\\xff\\xfe" + v + b"\\x00",                      # binary holding the value: removed
    b"\\x80" + base64.b64encode(v) + b"\\x81",         # binary holding its base64: removed
    bytes(range(256)),                               # binary without it: untouched
])
print("sent")
'''
    msg_id = await clients["json"].send("shell", "execute_request", {
        "code": code, "silent": False, "store_history": True, "user_expressions": {}, "allow_stdin": False,
        "stop_on_error": True})
    for name, client in clients.items():
        reply, outputs = await client.reply_to(msg_id, "execute_reply") if name == "json" else \
            (None, await iopub_of(client, msg_id))
        if reply is not None:
            assert reply["content"]["status"] == "ok", reply["content"]
        opened = [m for m in outputs if m["msg_type"] == "comm_open"]
        sent = [m for m in outputs if m["msg_type"] == "comm_msg"]
        assert len(opened) == 1 and [bytes(b) for b in opened[0]["buffers"]] == [b"opened"], name
        assert len(sent) == 1, name
        buffers = [bytes(b) for b in sent[0]["buffers"]]
        assert buffers == [b"text [secret]", b"", b"", bytes(range(256))], (name, buffers)
        assert sent[0]["content"]["data"]["buffer_paths"] == [["a"], ["b"], ["c"], ["d"]]
        notes = [m["content"]["text"] for m in outputs if m["msg_type"] == "stream"
                 and m["content"]["text"].startswith("[jupyter-warden]")]
        assert notes == ["[jupyter-warden] 2 binary buffer(s) of a comm_msg message held a secret value handed "
                         "to this kernel and were not sent (see docs/secrets.md).\n"], (name, notes)
        assert "sent\n" in stdout(outputs)
    removed = [r for r in warden.audit.query() if r.action == "secret.buffer_removed"]
    assert removed and removed[0].actor == "alice" and removed[0].details["kernel"] == kernel
    assert removed[0].details["buffers"] == [1, 2] and removed[0].details["msg_type"] == "comm_msg"
    assert VALUE not in everything_logged(warden)

    # A kernel handed no value sends its buffers as they are.
    bob_kernel = await start_kernel(jp_fetch, people["bob"], "bob/nb.ipynb")
    bob = await connect(bob_kernel, people["bob"], "v1")
    reply, outputs = await bob.execute(
        f'from comm import create_comm\ncreate_comm(target_name="t", data={{}}, buffers=[{VALUE.encode()!r}])')
    assert reply["content"]["status"] == "ok", reply["content"]
    assert [m["buffers"] for m in outputs if m["msg_type"] == "comm_open"] == [[VALUE.encode()]]


async def iopub_of(client, msg_id, timeout=60):
    """The IOPub messages of one execution, up to its idle status."""
    outputs, deadline = [], asyncio.get_running_loop().time() + timeout
    while True:
        msg = await client.recv(max(0.1, deadline - asyncio.get_running_loop().time()))
        assert msg is not None, "the socket closed"
        if msg["parent_header"].get("msg_id") != msg_id or msg["channel"] != "iopub":
            continue
        outputs.append(msg)
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return outputs
