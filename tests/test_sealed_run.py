"""Running sealed cells (G5): real kernels, raw websocket clients, both wire protocols.

A student with run and the key runs sealed cells and sees their output; every
frame that reaches them, or a second connection to the same kernel, is
searched for the sealed source. Refusals (no key, altered or revoked) are
clean errors, audited. Kernels are slow to start, so each test reuses one.
"""

from __future__ import annotations

import json
import sys

import pytest

from conftest import auth
from test_enforce_contents import NOTEBOOK
from test_kernel_guard import PROTOCOLS, Client, records, requester, start_kernel, stdout
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from jupyter_warden.sandbox import bubblewrap_problem
from jupyter_warden.sealed.execution import ERROR_NAME

V1 = "v1.kernel.websocket.jupyter.org"
NB = "course/nb.ipynb"
KEY = "cs101-checks"

# Each marker is in the sealed source only; the probes below build them at run time.
CHECK = '''def check_answer(x):
    """Checks the answer."""
    hidden_helper_value = x * 7  # MARKERCOMMENT
    return hidden_helper_value
print("result", check_answer(6))
'''
FAILING = '''def failing_check(x):
    assert x == 3, "wrong answer, try again"  # MARKERFAIL
failing_check(2)
'''
SYNTAX = '''def broken(:
    MARKERSYNTAX = 1
'''
WARNS = '''import warnings
warnings.warn("careful now")  # MARKERWARN
'''
MAGIC = '''%%capture captured
print("MARKERCAPTURE")
'''
PAGER = '''def helper():
    return 1  # MARKERPAGER
helper??
'''
MARKERS = ("MARKERPAGER", "MARKERCOMMENT", "hidden_helper_value", "MARKERFAIL", "wrong answer, try again\"  #",
           "MARKERSYNTAX", "MARKERWARN", "MARKERCAPTURE", "x * 7")


class RecordingClient(Client):
    """The guard tests' raw client, keeping every frame it receives."""

    def __init__(self, ws, protocol):
        super().__init__(ws, protocol)
        self.frames: list[str] = []

    async def recv(self, timeout=30):
        msg = await super().recv(timeout)
        if msg is not None:
            self.frames.append(json.dumps(msg))
        return msg

    def leaks(self) -> list[str]:
        return [m for m in MARKERS for f in self.frames if m in f]


@pytest.fixture
def warden_config():
    # The sandbox adds nothing to what these tests check, and costs time;
    # test_sealed_run_in_the_sandbox runs one under bubblewrap.
    return {"sandbox": "none"}


@pytest.fixture
def course(jp_root_dir, warden, make_user):
    (jp_root_dir / "course").mkdir()
    (jp_root_dir / "course" / "nb.ipynb").write_text(json.dumps(NOTEBOOK))
    tokens = {n: make_user(n) for n in ("sam", "gina", "bob")}
    warden.policy.grant("course", "user:sam", "read-write-run")  # may share his kernel with gina
    warden.policy.grant("course", "user:gina", "read-write-run")
    warden.policy.grant("course", "user:bob", "read-run")  # no key
    warden.key_ring.create(KEY)
    warden.key_ring.grant(KEY, "user:sam")
    return tokens


@pytest.fixture
def connect(jp_http_port, jp_base_url):
    clients = []

    async def open_(kernel_id, token, protocol="json"):
        url = f"ws://localhost:{jp_http_port}{jp_base_url}api/kernels/{kernel_id}/channels"
        ws = await websocket_connect(HTTPRequest(url, headers=auth(token), connect_timeout=90, request_timeout=90),
                                     subprotocols=[V1] if protocol == "v1" else None)
        client = RecordingClient(ws, protocol)
        clients.append(client)
        return client

    yield open_
    for client in clients:
        client.ws.close()


def sealed(warden, source, cell_id="check-1"):
    return warden.key_ring.seal(KEY, cell_id, source)


def error_of(outputs):
    errors = [m["content"] for m in outputs if m["msg_type"] == "error"]
    assert len(errors) == 1, outputs
    return errors[0]


async def drain(client, code="1"):
    """Run something and wait for it, so that earlier broadcast messages have all arrived."""
    reply, _ = await client.execute(code)
    assert reply["content"]["status"] == "ok"


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_sealed_cells_run_and_never_show_their_source(jp_fetch, connect, warden, course, protocol):
    kernel = await start_kernel(jp_fetch, course["sam"])
    shares = ("api", "warden", "kernels", kernel, "shares")
    assert (await requester(jp_fetch, course["sam"])(*shares, method="POST", body={"user": "gina"})).code == 201
    sam = await connect(kernel, course["sam"], protocol)
    gina = await connect(kernel, course["gina"], protocol)  # a second connection: its own IOPub
    warden.audit_code = True  # even so, the audit never holds the clear source

    # The output shows; execute_input carries the placeholder, on both connections.
    placeholder = sealed(warden, CHECK)
    reply, outputs = await sam.execute(placeholder)
    assert reply["content"]["status"] == "ok", reply
    assert stdout(outputs) == "result 42\n"
    inputs = [m["content"]["code"] for m in outputs if m["msg_type"] == "execute_input"]
    assert inputs == [placeholder]
    await drain(gina)
    assert placeholder.splitlines()[0] in "".join(gina.frames)  # she saw the masked execute_input

    # An error inside sealed code: type and message kept, no sealed line.
    reply, outputs = await sam.execute(sealed(warden, FAILING, "check-2"))
    error = error_of(outputs)
    assert (error["ename"], error["evalue"]) == ("AssertionError", "wrong answer, try again")
    assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "AssertionError"
    assert "[jupyter-warden: sealed line hidden]" in "".join(error["traceback"])

    # A syntax error: reported, and the code never reached the kernel.
    reply, outputs = await sam.execute(sealed(warden, SYNTAX, "check-3"))
    error = error_of(outputs)
    assert error["ename"] == "SyntaxError" and "sealed cell, line 1" in error["evalue"]
    assert reply["content"]["status"] == "error"

    # A warning names its line from linecache while the cell runs: scrubbed from the stream.
    reply, outputs = await sam.execute(sealed(warden, WARNS, "check-4"))
    assert "UserWarning: careful now" in "".join(m["content"].get("text", "") for m in outputs)

    # A cell magic runs its body as another cell; that one is purged too.
    reply, outputs = await sam.execute(sealed(warden, MAGIC, "check-5"))
    assert reply["content"]["status"] == "ok"
    reply, outputs = await sam.execute("print(captured.stdout.strip()[:6])")
    assert stdout(outputs) == "MARKER\n"  # the output is the student's; the code is not

    # The pager (``helper??`` shows source) comes back in the reply's payload: scrubbed.
    reply, outputs = await sam.execute(sealed(warden, PAGER, "check-6"))
    pages = reply["content"]["payload"]
    assert pages and "[jupyter-warden: sealed line hidden]" in pages[0]["data"]["text/plain"]

    # user_expressions are evaluated after the run, once the caches are purged.
    msg_id = await sam.send("shell", "execute_request", {
        "code": sealed(warden, CHECK), "silent": False, "store_history": True, "allow_stdin": False,
        "user_expressions": {"cache": "str(__import__('linecache').cache)",
                             "last": "str(get_ipython().last_execution_result.info)"}})
    reply, outputs = await sam.reply_to(msg_id, "execute_reply")
    assert stdout(outputs) == "result 42\n"
    assert reply["content"]["user_expressions"]["cache"]["status"] == "ok"

    # In, _ih, %history, history_request: nothing sealed.
    probe = "m = 'MARKER' + 'COMMENT'; print(any(m in c for c in In), any(m in c for c in _ih))"
    assert stdout((await sam.execute(probe))[1]) == "False False\n"
    reply, outputs = await sam.execute("%history -n -g")
    assert reply["content"]["status"] == "ok"
    for access in ({"hist_access_type": "tail", "n": 100}, {"hist_access_type": "search", "pattern": "*"}):
        msg_id = await sam.send("shell", "history_request", {"output": True, "raw": True, **access})
        reply, _ = await sam.reply_to(msg_id, "history_reply")
        assert reply["content"]["status"] == "ok"

    # inspect_request on a function that sealed code defined: no source.
    msg_id = await sam.send("shell", "inspect_request", {"code": "check_answer", "cursor_pos": 12,
                                                         "detail_level": 1})
    reply, _ = await sam.reply_to(msg_id, "inspect_reply")
    assert reply["content"]["status"] == "ok" and reply["content"]["found"]
    msg_id = await sam.send("shell", "complete_request", {"code": "check_", "cursor_pos": 6})
    reply, _ = await sam.reply_to(msg_id, "complete_reply")
    assert "check_answer" in reply["content"]["matches"]

    # The kernel's caches: linecache, inspect.getsource, the last exception; the object still works.
    probe = (
        "import linecache, inspect, sys\n"
        "def _leaks():\n"
        "    marks = ['MARKER' + s for s in ('COMMENT', 'FAIL', 'SYNTAX', 'WARN', 'CAPTURE', 'PAGER')]\n"
        "    return sorted({k for k, v in linecache.cache.items() if len(v) > 2\n"
        "                   for m in marks if m in ''.join(v[2])})\n"
        "try:\n"
        "    inspect.getsource(check_answer); src = 'source'\n"
        "except OSError:\n"
        "    src = 'no source'\n"
        "print(_leaks(), src, check_answer(1), hasattr(sys, 'last_value'))\n"
    )
    reply, outputs = await sam.execute(probe)
    assert stdout(outputs) == "[] no source 7 False\n", outputs

    await drain(gina)
    assert sam.leaks() == [] and gina.leaks() == []

    # The audit: each sealed run, with key and cell, and never the clear source.
    runs = [r for r in records(warden, "kernel.execute", "sam") if "sealed" in r.details]
    assert [r.details["sealed"]["cell"] for r in runs] == ["check-1", "check-2", "check-3", "check-4",
                                                           "check-5", "check-6", "check-1"]
    assert all(r.details["sealed"]["key"] == KEY and r.details["kernel"] == kernel and r.path == NB
               for r in runs)
    assert runs[0].details["code"] == placeholder
    dump = json.dumps([r.details for r in warden.audit.query()] + [r.reason for r in warden.audit.query()])
    assert not [m for m in MARKERS if m in dump]

    # gina shares the kernel but not the key: refused in it, clear message, audited.
    reply, outputs = await gina.execute(placeholder)
    error = error_of(outputs)
    assert error["ename"] == ERROR_NAME and KEY in error["evalue"] and "may not use" in error["evalue"]
    assert reply["content"]["status"] == "error"
    assert records(warden, "sealed.refuse", "gina")[-1].outcome == "deny"
    assert gina.leaks() == []


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_refused_without_the_key_altered_or_revoked(jp_fetch, connect, warden, course, protocol):
    kernel = await start_kernel(jp_fetch, course["bob"])
    bob = await connect(kernel, course["bob"], protocol)
    placeholder = sealed(warden, CHECK)

    # No key: a clean error output and reply (idle comes, nothing hangs), audited; the kernel never ran it.
    reply, outputs = await bob.execute(placeholder)
    error = error_of(outputs)
    assert error["ename"] == ERROR_NAME and "may not use" in error["evalue"] and "grant" in error["evalue"]
    assert reply["content"]["status"] == "error"
    assert not [m for m in outputs if m["msg_type"] == "execute_input"]
    refusal = records(warden, "sealed.refuse", "bob")[-1]
    assert refusal.outcome == "deny" and refusal.details["kernel"] == kernel and refusal.path == NB
    reply, outputs = await bob.execute("print('check_answer' in dir())")
    assert stdout(outputs) == "False\n"

    # With the key, it runs; altered ciphertext, an edited header or extra lines are refused.
    warden.key_ring.grant(KEY, "user:bob")
    assert stdout((await bob.execute(placeholder))[1]) == "result 42\n"
    head, notice, blob = placeholder.splitlines()
    flipped = blob[:10] + ("A" if blob[10] != "A" else "B") + blob[11:]
    moved = head.replace("cell=check-1", "cell=check-9")
    for bad, why in (("\n".join([head, notice, flipped]), "altered"),
                     ("\n".join([moved, notice, blob]), "altered"),
                     ("\n".join([head, notice, blob, "print('extra')"]), "edited"),
                     ("%%warden_sealed v1 key=cs101-checks", "edited")):
        reply, outputs = await bob.execute(bad)
        error = error_of(outputs)
        assert error["ename"] == ERROR_NAME and why in error["evalue"], (why, error)
        assert reply["content"]["status"] == "error"
    assert len(records(warden, "sealed.refuse", "bob")) == 5

    # A key revoked mid-session stops the next run.
    warden.key_ring.revoke(KEY, "user:bob")
    reply, outputs = await bob.execute(placeholder)
    assert error_of(outputs)["ename"] == ERROR_NAME
    assert bob.leaks() == []


@pytest.mark.skipif(bubblewrap_problem() is not None, reason=f"no sandbox: {bubblewrap_problem()}")
class TestInTheSandbox:
    @pytest.fixture
    def warden_config(self):
        return {}  # the default: bubblewrap

    async def test_sealed_run_in_the_sandbox(self, jp_fetch, connect, warden, course):
        kernel = await start_kernel(jp_fetch, course["sam"])
        sam = await connect(kernel, course["sam"], "v1")
        reply, outputs = await sam.execute(sealed(warden, CHECK))
        assert stdout(outputs) == "result 42\n"
        reply, outputs = await sam.execute(sealed(warden, FAILING, "check-2"))
        assert error_of(outputs)["evalue"] == "wrong answer, try again"
        probe = ("import linecache; m = 'MARKER' + 'COMMENT'\n"
                 "print(any(m in ''.join(v[2]) for v in linecache.cache.values() if len(v) > 2))")
        assert stdout((await sam.execute(probe))[1]) == "False\n"
        assert sam.leaks() == []



async def test_the_purge_survives_a_kernel_restart(jp_fetch, connect, warden, course):
    # The kernel-side helper lives in the kernel process: a restarted kernel gets it again.
    kernel = await start_kernel(jp_fetch, course["sam"])
    sam = await connect(kernel, course["sam"], "v1")
    probe = ("import linecache, sys; m = 'MARKER' + 'COMMENT'\n"
             "print(any(m in ''.join(v[2]) for v in linecache.cache.values() if len(v) > 2),"
             " '_jupyter_warden_sealed' in sys.modules)")
    assert stdout((await sam.execute(sealed(warden, CHECK)))[1]) == "result 42\n"
    assert stdout((await sam.execute(probe))[1]) == "False True\n"
    restarted = await jp_fetch("api", "kernels", kernel, "restart", method="POST", body="",
                               headers=auth(course["sam"]))
    assert restarted.code == 200
    sam = await connect(kernel, course["sam"], "v1")
    assert stdout((await sam.execute(probe))[1]) == "False False\n"
    assert stdout((await sam.execute(sealed(warden, CHECK)))[1]) == "result 42\n"
    assert stdout((await sam.execute(probe))[1]) == "False True\n"
    assert sam.leaks() == []


async def test_a_kernel_that_cant_import_the_warden_gets_the_purge_in_the_cell(
        jp_fetch, connect, warden, course, jp_data_dir, tmp_path):
    # A kernel on another Python (here: a wrapper script, as a conda environment's would be)
    # may not have jupyter_warden: its first sealed cell carries the purge's text instead.
    wrapper = tmp_path / "other-python"
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} \"$@\"\n")
    wrapper.chmod(0o755)
    spec = jp_data_dir / "kernels" / "otherpython"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [str(wrapper), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Another Python", "language": "python"}))
    probe = ("import linecache, sys; m = 'MARKER' + 'COMMENT'\n"
             "print(any(m in ''.join(v[2]) for v in linecache.cache.values() if len(v) > 2),"
             " '_jupyter_warden_sealed' in sys.modules, 'jupyter_warden._sealed_purge' in sys.modules)")
    for kernel_name, imported in (("otherpython", False), ("python3", True)):
        body = {"path": NB, "type": "notebook", "name": "", "kernel": {"name": kernel_name}}
        made = await requester(jp_fetch, course["sam"])("api", "sessions", method="POST", body=body)
        kernel = json.loads(made.body)["kernel"]["id"]
        sam = await connect(kernel, course["sam"], "v1")
        for _ in range(2):  # the first run installs the purge; the second finds it
            assert stdout((await sam.execute(sealed(warden, CHECK)))[1]) == "result 42\n"
            assert stdout((await sam.execute(probe))[1]) == f"False True {imported}\n", kernel_name
        assert sam.leaks() == []
        await requester(jp_fetch, course["sam"])("api", "sessions", json.loads(made.body)["id"], method="DELETE")


def test_replies_that_a_purged_kernel_no_longer_produces_are_scrubbed_too(warden, course):
    # inspect and history replies can carry sealed lines only in a race the purge
    # closes (e.g. a kernel shared, messages from another socket): the scrubbing is
    # the second lock. Real-shaped replies, as a kernel would send them mid-run.
    runs = warden.sealed_runs
    header = {"msg_id": "m1", "msg_type": "execute_request"}
    state = runs._state("k-scrub")
    runs._remember_lines(state, CHECK)
    inspect = {"status": "ok", "found": True, "metadata": {}, "data": {
        "text/plain": "\x1b[31mSignature:\x1b[39m check_answer(x)\n\x1b[31mSource:\x1b[39m\n"
                      "def check_answer(x):\n    hidden_helper_value = x * 7  # MARKERCOMMENT\n"
                      "    return hidden_helper_value\n"}}
    out = runs.outgoing("k-scrub", "shell", {"msg_type": "inspect_reply"}, header, lambda: inspect)
    assert "Signature:" in out["data"]["text/plain"] and "check_answer(x)" in out["data"]["text/plain"]
    assert "MARKER" not in json.dumps(out) and "x * 7" not in json.dumps(out)
    history = {"status": "ok", "history": [[0, 1, "print(1)"], [0, 2, ["    return hidden_helper_value", None]]]}
    out = runs.outgoing("k-scrub", "shell", {"msg_type": "history_reply"}, header, lambda: history)
    assert out["history"][0] == [0, 1, "print(1)"] and "hidden_helper_value" not in json.dumps(out)
    # Not a sealed kernel, or not a message that carries code: passed as it is, content never read.
    assert runs.outgoing("k-other", "shell", {"msg_type": "inspect_reply"}, header, lambda: 1 / 0) is None
    assert runs.outgoing("k-scrub", "iopub", {"msg_type": "execute_result"}, header, lambda: 1 / 0) is None
