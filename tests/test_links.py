"""Share links over real HTTP: making, listing, revoking, opening as a guest, expiry, labels."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os

import pytest
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

from conftest import Browser
from jupyter_warden.policy.engine import Actor
from jupyter_warden.sandbox import bubblewrap_problem
from test_api import call
from test_enforce_contents import NOTEBOOK
from test_kernel_guard import Client, connect, start_kernel, stdout  # noqa: F401  (fixture)
from test_sandbox import TRY


@pytest.fixture
def people(warden, make_user):
    """alice manages course/; bob reads course/lecture.ipynb; carol has nothing; root is admin."""
    tokens = {name: make_user(name) for name in ("alice", "bob", "carol")}
    tokens["root"] = make_user("root", admin=True)
    warden.policy.grant("course", "user:alice", "manage")
    warden.policy.grant("course/lecture.ipynb", "user:bob", "read")
    return tokens


async def make_link(jp_fetch, token, path="course/lecture.ipynb", level="read", **extra):
    return await call(
        jp_fetch, "POST", "api", "warden", "links", token=token, body={"path": path, "level": level, **extra}
    )


async def permissions(browser, path):
    response = await browser.request("api", "warden", "permissions", params={"path": path})
    return response.code, (json.loads(response.body) if response.code == 200 else None)


def actions(warden, action):
    return [(r.actor, r.outcome) for r in warden.audit.tail(200) if r.action == action]


async def test_a_manager_makes_a_link_whose_token_is_shown_once(jp_fetch, jp_base_url, warden, people):
    code, link = await make_link(jp_fetch, people["alice"])
    assert code == 201, link
    assert link["token"].startswith("wdl_") and link["state"] == "active"
    assert link["url"].endswith(f"{jp_base_url}warden/link/{link['token']}")
    assert link["url"].startswith("http://")
    code, listing = await call(
        jp_fetch, "GET", "api", "warden", "links", token=people["alice"], params={"path": "course"}
    )
    assert code == 200
    assert [entry["id"] for entry in listing["links"]] == [link["id"]]
    assert link["token"] not in json.dumps(listing)
    assert "token" not in listing["links"][0]
    record = next(r for r in warden.audit.tail(50) if r.action == "link.create")
    assert record.actor == "alice" and record.outcome == "allow" and record.path == "course/lecture.ipynb"
    assert link["token"] not in json.dumps(record.details)


async def test_links_never_give_write_or_manage(jp_fetch, warden, people):
    for level in ("read-write", "read-write-run", "manage", "none", "owner"):
        code, data = await make_link(jp_fetch, people["root"], level=level)
        assert code == 400, (level, data)
        assert "never" in data["message"]
    assert warden.policy.list_links() == []


async def test_making_and_listing_links_needs_manage(jp_fetch, warden, people):
    code, data = await make_link(jp_fetch, people["bob"])  # bob may read it: 403
    assert code == 403 and "manage" in data["message"]
    code, _ = await make_link(jp_fetch, people["carol"])  # carol can't see it: 404
    assert code == 404
    for who, expected in (("bob", 403), ("carol", 404)):
        code, _ = await call(
            jp_fetch, "GET", "api", "warden", "links", token=people[who],
            params={"path": "course/lecture.ipynb"},
        )
        assert code == expected
    assert actions(warden, "link.create") == [("bob", "deny"), ("carol", "deny")]
    assert warden.policy.list_links() == []


async def test_revoking_a_link_needs_manage_on_its_path_or_admin(jp_fetch, warden, people):
    _, first = await make_link(jp_fetch, people["alice"])
    _, second = await make_link(jp_fetch, people["alice"], level="read-run")
    for who, expected in (("bob", 403), ("carol", 404)):
        code, data = await call(jp_fetch, "DELETE", "api", "warden", "links", first["id"], token=people[who])
        assert code == expected
    # carol's 404 reads like an unknown link's, and doesn't name the path.
    assert data["message"] == f"there is no share link {first['id']!r}"
    code, unknown = await call(jp_fetch, "DELETE", "api", "warden", "links", "0000", token=people["carol"])
    assert code == 404 and unknown["message"] == "there is no share link '0000'"
    code, _ = await call(jp_fetch, "DELETE", "api", "warden", "links", first["id"], token=people["alice"])
    assert code == 204
    code, _ = await call(jp_fetch, "DELETE", "api", "warden", "links", second["id"], token=people["root"])
    assert code == 204
    assert {link.state() for link in warden.policy.list_links()} == {"revoked"}
    assert actions(warden, "link.revoke") == [
        ("bob", "deny"), ("carol", "deny"), ("alice", "allow"), ("root", "allow")
    ]


async def test_a_label_that_forbids_links_refuses_one_naming_the_label(jp_fetch, warden, people):
    warden.policy.define_label("confidential", banner="Confidential", no_links=True)
    warden.policy.set_label("course", "confidential")
    code, data = await make_link(jp_fetch, people["alice"])
    assert code == 409
    assert "confidential" in data["message"]
    assert actions(warden, "link.create") == [("alice", "deny")]
    assert warden.policy.list_links() == []


async def test_bad_link_input_is_400(jp_fetch, people):
    cases = [
        ({"path": "course/a.ipynb", "level": "read", "expires": "soon"}, "ISO 8601"),
        ({"path": "course/a.ipynb", "level": "read", "expires": "2031-01-01T00:00"}, "time zone"),
        ({"path": "course/../x", "level": "read"}, "not allowed"),
        ({"path": "course/a.ipynb"}, "'level' is required"),
        ({"path": "course/a.ipynb", "level": True}, "must be a string"),
        ({"path": "course/a.ipynb", "level": "read", "token": "mine"}, "unknown field"),
    ]
    for body, message in cases:
        code, data = await call(jp_fetch, "POST", "api", "warden", "links", token=people["alice"], body=body)
        assert code == 400, (body, data)
        assert message in data["message"], (body, data)
    code, data = await make_link(
        jp_fetch, people["alice"], expires=(dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)).isoformat()
    )
    assert code == 409 and "already past" in data["message"]


async def test_opening_a_link_signs_in_a_guest_of_that_path_only(
    jp_fetch, jp_base_url, jp_http_port, warden, people, jp_root_dir
):
    import nbformat

    (jp_root_dir / "course").mkdir()
    notebook = nbformat.writes(nbformat.v4.new_notebook())
    (jp_root_dir / "course" / "lecture.ipynb").write_text(notebook)
    (jp_root_dir / "course" / "answers.ipynb").write_text(notebook)
    _, link = await make_link(jp_fetch, people["alice"], level="read-run")
    guest = Browser(jp_fetch)
    opened = await guest.request("warden", "link", link["token"])
    assert opened.code == 302
    assert opened.headers["Location"] == f"{jp_base_url}lab/tree/course/lecture.ipynb"
    cookie = next(c for c in guest.last_set_cookie if c.startswith("warden-session-"))
    assert "httponly" in cookie.lower()

    code, mine = await permissions(guest, "course/lecture.ipynb")
    assert code == 200
    assert mine["capabilities"] == ["read", "run"] and mine["user"]["guest"] is True
    assert mine["user"]["name"] == f"link:{link['id']}"
    code, sibling = await permissions(guest, "course/answers.ipynb")
    assert code == 200 and sibling["capabilities"] == []
    # The engine agrees: the link's subject reaches its one path, never write.
    link_actor = Actor.for_link(link["id"])
    assert warden.engine.check(link_actor, "run", "course/lecture.ipynb").allowed
    assert not warden.engine.check(link_actor, "write", "course/lecture.ipynb").allowed
    assert not warden.engine.check(link_actor, "read", "course/answers.ipynb").allowed
    # A guest manages nothing: no sharing, no audit.
    await guest.request("lab")  # a page sets the _xsrf cookie, as in a browser
    xsrf = {"X-XSRFToken": guest.cookies["_xsrf"]}
    for path, expected in (("course/lecture.ipynb", 403), ("course/answers.ipynb", 404)):
        response = await guest.request(
            "api", "warden", "links", method="POST", headers=xsrf,
            body=json.dumps({"path": path, "level": "read"}),
        )
        assert response.code == expected, response.body
        assert (b"manage" if expected == 403 else b"not found") in response.body
    response = await guest.request("api", "warden", "audit", params={"path": "course/lecture.ipynb"})
    assert response.code == 403
    assert actions(warden, "auth.link_opened") == [(f"link:{link['id']}", "allow")]

    # Through the contents channels too: the one path, read only; nothing else.
    got = await guest.request("api", "contents", "course", "lecture.ipynb")
    assert got.code == 200 and json.loads(got.body)["writable"] is False
    # /files wants a same-site Referer from cookie-authenticated browsers (XSSI).
    same_site = {"Referer": f"http://127.0.0.1:{jp_http_port}/lab"}
    assert (await guest.request("files", "course", "lecture.ipynb", headers=same_site)).code == 200
    for parts in (("api", "contents", "course", "answers.ipynb"), ("files", "course", "answers.ipynb")):
        assert (await guest.request(*parts, headers=same_site)).code == 404
    listing = json.loads((await guest.request("api", "contents", "course")).body)
    assert [e["name"] for e in listing["content"]] == ["lecture.ipynb"]
    save = await guest.request(
        "api", "contents", "course", "lecture.ipynb", method="PUT", headers=xsrf,
        body=json.dumps({"type": "file", "format": "text", "content": "defaced"}),
    )
    assert save.code == 403
    assert (jp_root_dir / "course" / "lecture.ipynb").read_text() == notebook


async def test_a_revoked_link_stops_its_guests_at_once_and_opens_nothing(jp_fetch, warden, people):
    _, link = await make_link(jp_fetch, people["alice"])
    guest = Browser(jp_fetch)
    await guest.request("warden", "link", link["token"])
    code, _ = await permissions(guest, "course/lecture.ipynb")
    assert code == 200
    code, _ = await call(jp_fetch, "DELETE", "api", "warden", "links", link["id"], token=people["alice"])
    assert code == 204
    code, _ = await permissions(guest, "course/lecture.ipynb")
    assert code == 403  # no longer signed in at all
    again = await Browser(jp_fetch).request("warden", "link", link["token"])
    assert again.code == 404
    assert "revoked" in again.body.decode()
    assert not any(c.startswith("warden-session-") for c in again.headers.get_list("Set-Cookie"))
    assert actions(warden, "auth.link_opened")[-1] == ("anonymous", "deny")


async def test_an_expired_link_ends_its_guests_sessions(jp_fetch, warden, people):
    expires = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=1.5)
    code, link = await make_link(jp_fetch, people["alice"], expires=expires.isoformat())
    assert code == 201 and link["expires_at"]
    guest = Browser(jp_fetch)
    opened = await guest.request("warden", "link", link["token"])
    assert opened.code == 302
    code, _ = await permissions(guest, "course/lecture.ipynb")
    assert code == 200
    await asyncio.sleep(max(0.0, (expires - dt.datetime.now(dt.timezone.utc)).total_seconds()) + 0.1)
    code, _ = await permissions(guest, "course/lecture.ipynb")
    assert code == 403
    assert (await Browser(jp_fetch).request("warden", "link", link["token"])).code == 404
    code, listing = await call(
        jp_fetch, "GET", "api", "warden", "links", token=people["alice"], params={"path": "course"}
    )
    assert listing["links"][0]["state"] == "expired"


async def test_unknown_and_malformed_tokens_are_404(jp_fetch, people):
    for token in ("wdl_nothing-here", "not-a-token", "x" * 500):
        response = await Browser(jp_fetch).request("warden", "link", token)
        assert response.code == 404
        assert "does not open anything" in response.body.decode()


async def test_a_signed_in_user_opening_a_link_keeps_their_own_session(jp_fetch, people):
    _, link = await make_link(jp_fetch, people["alice"])
    browser = Browser(jp_fetch)
    await browser.sign_in("carol", "correct-horse")
    response = await browser.request("warden", "link", link["token"])
    assert response.code == 302
    code, data = await permissions(browser, "course/lecture.ipynb")
    assert code == 200 and data["user"] == {"name": "carol", "admin": False, "guest": False}


@pytest.mark.skipif(bubblewrap_problem() is not None, reason=f"no sandbox: {bubblewrap_problem()}")
async def test_a_read_run_link_runs_the_notebook_in_its_own_sandboxed_kernel(
    jp_fetch, jp_http_port, jp_base_url, jp_root_dir, warden, people, connect
):
    """A read-run link's bearer: a kernel of their own, sandboxed, seeing the notebook read-only and nothing else."""
    (jp_root_dir / "course").mkdir()
    (jp_root_dir / "course" / "lecture.ipynb").write_text(json.dumps(NOTEBOOK))
    (jp_root_dir / "course" / "answers.txt").write_text("the answers")
    (jp_root_dir / "other").mkdir()
    (jp_root_dir / "other" / "secret.txt").write_text("a sibling folder's secret")
    alice_kernel = await start_kernel(jp_fetch, people["alice"], path="course/lecture.ipynb")
    alice = await connect(alice_kernel, people["alice"])
    alice_uid = json.loads(stdout((await alice.execute("import os; print(os.getuid())"))[1]))

    _, link = await make_link(jp_fetch, people["alice"], level="read-run")
    guest = Browser(jp_fetch)
    assert (await guest.request("warden", "link", link["token"])).code == 302
    await guest.request("lab")  # a page sets the _xsrf cookie, as in a browser
    xsrf = {"X-XSRFToken": guest.cookies["_xsrf"]}
    body = {"path": "course/lecture.ipynb", "type": "notebook", "name": "", "kernel": {"name": "python3"}}
    made = await guest.request("api", "sessions", method="POST", headers=xsrf, body=json.dumps(body),
                               request_timeout=90)
    assert made.code == 201, made.body
    kernel_id = json.loads(made.body)["kernel"]["id"]
    assert kernel_id != alice_kernel
    cookie = {"Cookie": guest._headers()["Cookie"]}
    url = f"ws://127.0.0.1:{jp_http_port}{jp_base_url}api/kernels/{kernel_id}/channels"
    ws = await websocket_connect(HTTPRequest(url, headers=cookie, connect_timeout=90, request_timeout=90))
    mine = Client(ws, "json")
    try:
        reply, outputs = await mine.execute(TRY + f'''
root = {str(jp_root_dir)!r}
print(json.dumps({{
  "uid": os.getuid(),
  "listing": sorted(os.listdir(".")),
  "notebook": json.load(open("lecture.ipynb"))["nbformat"],
  "write the notebook": attempt(lambda: open("lecture.ipynb", "a").write("x")),
  "create in the folder": attempt(lambda: open("new.txt", "w").write("x")),
  "delete the notebook": attempt(lambda: os.remove("lecture.ipynb")),
  "a file beside it": attempt(lambda: open("answers.txt").read() or 1/0),
  "a sibling folder": attempt(lambda: open(root + "/other/secret.txt").read()),
  "list the sibling folder": attempt(lambda: os.listdir(root + "/other") or 1/0),
  "list the root": attempt(lambda: [n for n in os.listdir(root) if n != "course"] or 1/0),
  "tcp to the server": attempt(lambda: socket.create_connection(("127.0.0.1", {jp_http_port}), 2)),
}}))''')
        assert reply["content"]["status"] == "ok", reply["content"]
        results = json.loads(stdout(outputs).strip().splitlines()[-1])
    finally:
        ws.close()
    assert results.pop("listing") == ["lecture.ipynb"]
    assert results.pop("notebook") == NOTEBOOK["nbformat"]
    uid = results.pop("uid")
    assert uid not in (0, os.getuid(), alice_uid)
    assert uid == warden.sandbox_runner.uids.uid_for(f"link:{link['id']}")
    allowed = {k: v for k, v in results.items() if not v.startswith("refused")}
    assert not allowed, f"attacks that worked: {allowed}"
    assert (jp_root_dir / "course" / "lecture.ipynb").read_text() == json.dumps(NOTEBOOK)
    assert not (jp_root_dir / "course" / "new.txt").exists()
    start = next(r for r in warden.audit.tail(100) if r.action == "kernel.start" and r.outcome == "allow"
                 and r.actor == f"link:{link['id']}")
    assert start.path == "course"

    # Another user's kernel stays out of reach: its channels, its model, a session onto it.
    alice_url = f"ws://127.0.0.1:{jp_http_port}{jp_base_url}api/kernels/{alice_kernel}/channels"
    with pytest.raises(HTTPClientError) as refused:
        await websocket_connect(HTTPRequest(alice_url, headers=cookie))
    assert refused.value.code == 404
    assert (await guest.request("api", "kernels", alice_kernel)).code == 404
    listed = json.loads((await guest.request("api", "kernels")).body)
    assert [k["id"] for k in listed] == [kernel_id]
    onto = await guest.request("api", "sessions", method="POST", headers=xsrf,
                               body=json.dumps({**body, "kernel": {"id": alice_kernel}}))
    assert onto.code == 403, onto.body
    # Another bearer of the same link is another guest: its own kernel, not the first one's.
    other = Browser(jp_fetch)
    await other.request("warden", "link", link["token"])
    await other.request("lab")
    other_xsrf = {"X-XSRFToken": other.cookies["_xsrf"]}
    assert json.loads((await other.request("api", "kernels")).body) == []
    assert (await other.request("api", "kernels", kernel_id)).code == 404
    assert json.loads((await other.request("api", "sessions")).body) == []
    other_cookie = {"Cookie": other._headers()["Cookie"]}
    with pytest.raises(HTTPClientError) as refused:
        await websocket_connect(HTTPRequest(url, headers=other_cookie))
    assert refused.value.code == 404
    onto = await other.request("api", "sessions", method="POST", headers=other_xsrf,
                               body=json.dumps({**body, "kernel": {"id": kernel_id}}))
    assert onto.code == 403, onto.body
    own = await other.request("api", "sessions", method="POST", headers=other_xsrf, body=json.dumps(body),
                              request_timeout=90)
    assert own.code == 201, own.body
    assert json.loads(own.body)["kernel"]["id"] not in (kernel_id, alice_kernel)

    # A read link's bearer runs nothing.
    _, read_link = await make_link(jp_fetch, people["alice"], level="read")
    reader = Browser(jp_fetch)
    await reader.request("warden", "link", read_link["token"])
    await reader.request("lab")
    refused_session = await reader.request("api", "sessions", method="POST", body=json.dumps(body),
                                           headers={"X-XSRFToken": reader.cookies["_xsrf"]})
    assert refused_session.code == 403
