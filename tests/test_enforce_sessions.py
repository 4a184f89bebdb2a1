"""Sessions and kernels belong to their owner: (path, user) keys, filtered lists, no hijacking.

Kernels are slow to start, so one test walks through the whole story
with two kernels (alice's and bob's on the same notebook).
"""

from __future__ import annotations

import json

import pytest
from tornado.httpclient import HTTPClientError

from conftest import auth
from test_enforce_contents import NOTEBOOK, requester


@pytest.fixture
def people(jp_root_dir, warden, make_user):
    (jp_root_dir / "course").mkdir()
    (jp_root_dir / "course" / "nb.ipynb").write_text(json.dumps(NOTEBOOK))
    tokens = {name: make_user(name) for name in ("alice", "bob", "carol", "dave", "erin", "fay")}
    tokens["root"] = make_user("root", admin=True)
    warden.policy.grant("course", "user:alice", "read-write-run")
    warden.policy.grant("course", "user:bob", "read-run")
    warden.policy.grant("course/nb.ipynb", "user:carol", "manage")
    warden.policy.grant("course", "user:dave", "read-write")
    warden.policy.grant("course", "user:fay", "read")
    return tokens


def _session(path="course/nb.ipynb", kind="notebook", **extra):
    return {"path": path, "type": kind, "name": "", "kernel": {"name": "python3"}, **extra}


@pytest.mark.parametrize(
    "who, level_note, status",
    [
        ("fay", "read: never reaches a kernel", 403),
        ("dave", "read-write: never run", 403),
        ("erin", "no grant: the notebook does not exist", 404),
    ],
)
async def test_sessions_need_run_on_the_notebook(jp_fetch, people, who, level_note, status):
    call = requester(jp_fetch, people[who])
    response = await call("api", "sessions", method="POST", body=_session())
    assert response.code == status, level_note
    console = await call("api", "sessions", method="POST",
                         body=_session("course/console-1-abc", kind="console"))
    assert console.code == status
    bad = await call("api", "sessions", method="POST", body=_session("course/../x.ipynb"))
    assert bad.code in (400, 404)
    assert (await call("api", "sessions", method="POST", body={"type": "notebook"})).code == 400


async def test_kernels_and_sessions_belong_to_their_owner(jp_fetch, jp_ws_fetch, warden, people):
    alice = requester(jp_fetch, people["alice"])
    bob = requester(jp_fetch, people["bob"])
    carol = requester(jp_fetch, people["carol"])
    admin = requester(jp_fetch, people["root"])

    made = await alice("api", "sessions", method="POST", body=_session())
    assert made.code == 201, made.body
    a_session = json.loads(made.body)
    a_kernel = a_session["kernel"]["id"]
    assert warden_kernels(warden).owner_of(a_kernel) == "user:alice"

    # bob (read-run) on the same notebook gets his own session and kernel.
    made = await bob("api", "sessions", method="POST", body=_session())
    assert made.code == 201, made.body
    b_session = json.loads(made.body)
    b_kernel = b_session["kernel"]["id"]
    assert b_session["id"] != a_session["id"] and b_kernel != a_kernel
    # Asking again gives each their own session back.
    again = json.loads((await alice("api", "sessions", method="POST", body=_session())).body)
    assert again["id"] == a_session["id"]

    # Lists show each user their own; admins see all.
    assert [s["id"] for s in json.loads((await bob("api", "sessions")).body)] == [b_session["id"]]
    assert [k["id"] for k in json.loads((await bob("api", "kernels")).body)] == [b_kernel]
    assert json.loads((await carol("api", "kernels")).body) == []
    assert {k["id"] for k in json.loads((await admin("api", "kernels")).body)} == {a_kernel, b_kernel}
    assert len(json.loads((await admin("api", "sessions")).body)) == 2

    # Someone else's session: 404 for GET, PATCH and DELETE.
    for method, body in [("GET", None), ("PATCH", {"name": "mine"}), ("DELETE", None)]:
        response = await bob("api", "sessions", a_session["id"], method=method, body=body)
        assert response.code == 404, method
    # Someone else's kernel: not by a client-chosen id, not by a PATCH.
    hijack = await bob("api", "sessions", method="POST",
                       body={**_session("course/other.ipynb"), "kernel": {"id": a_kernel}})
    assert hijack.code == 403
    repoint = await bob("api", "sessions", b_session["id"], method="PATCH",
                        body={"kernel": {"id": a_kernel}})
    assert repoint.code == 403
    # Nor its REST endpoints, nor its websocket.
    assert (await bob("api", "kernels", a_kernel)).code == 404
    for action in ("interrupt", "restart"):
        assert (await bob("api", "kernels", a_kernel, action, method="POST")).code == 404
    assert (await bob("api", "kernels", a_kernel, method="DELETE")).code == 404
    with pytest.raises(HTTPClientError) as refused:
        await jp_ws_fetch("api", "kernels", a_kernel, "channels", headers=auth(people["bob"]))
    assert refused.value.code in (403, 404)
    # A bare kernel (no notebook) is for admins only.
    assert (await bob("api", "kernels", method="POST", body={"name": "python3"})).code == 403
    # A manager of the notebook runs it in a kernel of her own.
    made = await carol("api", "sessions", method="POST", body=_session())
    assert made.code == 201
    c_session = json.loads(made.body)
    assert c_session["kernel"]["id"] not in (a_kernel, b_kernel)
    assert (await carol("api", "sessions", c_session["id"], method="DELETE")).code == 204
    # The kernel's owner, and a manager of its notebook, may interrupt it.
    assert (await alice("api", "kernels", a_kernel, "interrupt", method="POST")).code == 204
    assert (await carol("api", "kernels", a_kernel, "interrupt", method="POST")).code == 204
    assert (await bob("api", "kernels", b_kernel)).code == 200

    # Each may end their own session; then it is gone for them too.
    assert (await bob("api", "sessions", b_session["id"], method="DELETE")).code == 204
    assert (await bob("api", "sessions", b_session["id"])).code == 404
    assert (await alice("api", "sessions", a_session["id"])).code == 200
    assert (await admin("api", "sessions", a_session["id"], method="DELETE")).code == 204
    denied = [r for r in warden.audit.query(actor="bob") if r.outcome == "deny"]
    assert any("belongs to someone else" in (r.reason or "") for r in denied)


def warden_kernels(warden):
    return warden.serverapp.kernel_manager


async def test_jupyterlabs_placeholder_session_path_needs_run_on_a_notebook_beside_it(jp_fetch, jp_ws_fetch, people):
    """JupyterLab starts a session at FOLDER/<uuid4>, then PATCHes it to the notebook.

    carol may run course/nb.ipynb alone (no grant on the folder): she gets the
    session, but its kernel is hers to use only once it names the notebook.
    """
    import uuid

    placeholder = f"course/{uuid.uuid4()}"
    for who in ("fay", "dave", "erin"):
        refused = await requester(jp_fetch, people[who])("api", "sessions", method="POST", body=_session(placeholder))
        assert refused.code == 404, who
    carol = requester(jp_fetch, people["carol"])
    made = await carol("api", "sessions", method="POST", body=_session(placeholder))
    assert made.code == 201, made.body
    session = json.loads(made.body)
    kernel_id = session["kernel"]["id"]
    with pytest.raises(HTTPClientError) as refused:
        await jp_ws_fetch("api", "kernels", kernel_id, "channels", headers=auth(people["carol"]))
    assert refused.value.code in (403, 404)
    moved = await carol("api", "sessions", session["id"], method="PATCH", body={"path": "course/nb.ipynb"})
    assert moved.code == 200, moved.body
    ws = await jp_ws_fetch("api", "kernels", kernel_id, "channels", headers=auth(people["carol"]))
    ws.close()
    # Moving it onto a notebook she may not run is refused.
    elsewhere = await carol("api", "sessions", session["id"], method="PATCH", body={"path": "course/other.ipynb"})
    assert elsewhere.code in (403, 404)
    await carol("api", "sessions", session["id"], method="DELETE")
