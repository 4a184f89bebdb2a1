"""Sealed cells over HTTP on a real server: the key ring's REST API, sealing and unsealing in
place, and every contents channel of a sealed notebook (contents, /files, nbconvert) without
its clear source."""

from __future__ import annotations

import json

import nbformat
import pytest

from conftest import auth
from test_api import call, records

SECRET = "assert answer == 42, 'SECRET-CHECK-7f3a'"
NB = "cs101/assignment-01.ipynb"


def make_notebook(path, tagged_source=SECRET):
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Assignment 1"),
        nbformat.v4.new_code_cell("answer = 42"),
        nbformat.v4.new_code_cell(tagged_source, metadata={"tags": ["sealed"]}),
    ]
    nb.cells[2].outputs = [nbformat.v4.new_output("stream", text="all checks passed\n")]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return nb


@pytest.fixture
def course(warden, make_user, jp_root_dir):
    """ines manages cs101/ and manages key cs101-checks; sam (group cs101) has read-run and the key;
    tom (group cs101) has read-run but not the key; root is an admin."""
    tokens = {name: make_user(name) for name in ("ines", "sam", "tom")}
    tokens["root"] = make_user("root", admin=True)
    warden.accounts.add_group("cs101")
    warden.accounts.change_members("cs101", add=["sam", "tom"])
    warden.policy.grant("cs101", "user:ines", "manage")
    warden.policy.grant("cs101", "group:cs101", "read-run")
    make_notebook(jp_root_dir / NB)
    warden.key_ring.create("cs101-checks")
    warden.key_ring.grant("cs101-checks", "user:ines", "manage")
    warden.key_ring.grant("cs101-checks", "user:sam")
    return tokens


async def seal(jp_fetch, token, path=NB, key="cs101-checks", **extra):
    return await call(jp_fetch, "POST", "api", "warden", "seal", token=token, body={"path": path, "key": key, **extra})


# -- the key ring ---------------------------------------------------------------


async def test_keys_created_by_admins_only(jp_fetch, warden, course):
    code, body = await call(jp_fetch, "POST", "api", "warden", "keys", token=course["ines"], body={"name": "k2"})
    assert code == 403 and "admin" in body["message"]
    code, body = await call(jp_fetch, "POST", "api", "warden", "keys", token=course["root"], body={"name": "k2"})
    assert code == 201 and body["current_version"] == 1 and body["grants"] == []
    code, body = await call(jp_fetch, "POST", "api", "warden", "keys", token=course["root"], body={"name": "K2"})
    assert code == 409 and "exists already" in body["message"]
    code, body = await call(jp_fetch, "POST", "api", "warden", "keys", token=course["root"], body={"name": "no spaces"})
    assert code == 400
    assert [r.outcome for r in records(warden, "key.create")][-3:] == ["deny", "allow", "deny"]


async def test_key_grant_revoke_rotate_by_managers(jp_fetch, warden, course):
    url = ("api", "warden", "keys", "cs101-checks")
    # sam only uses the key: he can't hand it on, nor rotate it.
    code, body = await call(jp_fetch, "POST", *url, "grants", token=course["sam"], body={"subject": "user:tom"})
    assert code == 403 and "may not manage" in body["message"]
    code, _ = await call(jp_fetch, "POST", *url, "rotate", token=course["sam"])
    assert code == 403
    # ines manages it.
    code, body = await call(jp_fetch, "POST", *url, "grants", token=course["ines"], body={"subject": "group:cs101"})
    assert code == 201 and {"subject": "group:cs101", "role": "use"} in body["grants"]
    code, body = await call(jp_fetch, "POST", *url, "grants", token=course["ines"], body={"subject": "user:nobody"})
    assert code == 400 and "no user named" in body["message"]
    code, body = await call(jp_fetch, "POST", *url, "grants", token=course["ines"],
                            body={"subject": "user:tom", "role": "owner"})
    assert code == 400
    tom = warden.accounts.get_user("tom")
    from jupyter_warden.policy.engine import Actor

    assert warden.key_ring.may_use(Actor.for_account(tom), "cs101-checks")
    code, _ = await call(jp_fetch, "DELETE", *url, "grants", token=course["ines"], params={"subject": "group:cs101"})
    assert code == 204
    assert not warden.key_ring.may_use(Actor.for_account(tom), "cs101-checks")
    code, _ = await call(jp_fetch, "DELETE", *url, "grants", token=course["ines"], params={"subject": "group:cs101"})
    assert code == 404
    code, body = await call(jp_fetch, "DELETE", *url, "grants", token=course["ines"], params={"subject": "link:x"})
    assert code == 400 and "not one of" in body["message"]
    code, body = await call(jp_fetch, "POST", *url, "rotate", token=course["ines"])
    assert code == 200 and body["current_version"] == 2 and body["versions"] == [1, 2]
    # A key nobody granted tom: the same 403 whether it exists or not.
    for name in ("cs101-checks", "no-such-key"):
        code, body = await call(jp_fetch, "POST", "api", "warden", "keys", name, "rotate", token=course["tom"])
        assert code == 403
    assert {r.action for r in records(warden, "key.grant")} == {"key.grant"}
    assert [r.outcome for r in records(warden, "key.rotate")] == ["deny", "allow", "deny", "deny"]


async def test_key_list_shows_grants_to_managers_only(jp_fetch, course):
    code, body = await call(jp_fetch, "GET", "api", "warden", "keys", token=course["ines"])
    assert code == 200 and body["keys"][0]["grants"] is not None
    code, body = await call(jp_fetch, "GET", "api", "warden", "keys", token=course["sam"])
    assert body["keys"][0]["name"] == "cs101-checks" and body["keys"][0]["grants"] is None
    code, body = await call(jp_fetch, "GET", "api", "warden", "keys", token=course["tom"])
    assert body["keys"] == []


# -- sealing in place and the contents channels ---------------------------------


async def test_seal_in_place_and_no_channel_carries_the_source(jp_fetch, warden, course, jp_root_dir):
    code, body = await seal(jp_fetch, course["ines"])
    assert code == 200, body
    assert len(body["sealed"]) == 1 and body["resealed"] == []
    on_disk = (jp_root_dir / NB).read_text()
    assert "SECRET-CHECK" not in on_disk and "%%warden_sealed v1 key=cs101-checks" in on_disk
    nb = nbformat.reads(on_disk, as_version=4)
    assert nb.cells[2].outputs[0]["text"] == "all checks passed\n"  # outputs stay
    assert nb.cells[2].metadata["jupyter_warden"]["sealed"] == {"format": 1, "key": "cs101-checks", "version": 1}
    assert records(warden, "notebook.seal")[-1].outcome == "allow"

    # A student with read-run and the key reads the notebook through every channel.
    student = auth(course["sam"])
    bodies = []
    for params in ({}, {"type": "notebook"}, {"type": "file", "format": "text"},
                   {"type": "file", "format": "base64"}):
        r = await jp_fetch("api", "contents", NB, headers=student, params={"content": "1", **params})
        data = json.loads(r.body)
        if params.get("format") == "base64":
            import base64

            data = base64.b64decode(data["content"])
            assert b"warden_sealed" in data
        bodies.append(r.body if isinstance(data, dict) else data)
    r = await jp_fetch("api", "contents", "cs101", headers=student, params={"content": "1"})
    bodies.append(r.body)
    r = await jp_fetch("files", NB, headers=student)
    bodies.append(r.body)
    r = await jp_fetch("files", NB, headers=student, params={"download": "1"})
    bodies.append(r.body)
    # Every exporter the server offers; some need tools this host may lack (pandoc, TeX),
    # and fail, but none may answer with the clear source.
    r = await jp_fetch("api", "nbconvert", headers=student)
    exporters = set(json.loads(r.body))
    converted = set()
    for exporter in sorted(exporters):
        for download in ({}, {"download": "true"}):
            r = await jp_fetch("nbconvert", exporter, NB, headers=student, params=download, raise_error=False)
            if r.code == 200:
                converted.add(exporter)
            bodies.append(r.body or b"")
    assert {"html", "markdown", "python", "script", "notebook"} <= converted
    for data in bodies:
        assert b"SECRET-CHECK" not in data and b"answer == 42" not in data
    assert any(b"warden_sealed" in data for data in bodies)
    # The notebook's checkpoints (copies from before) are gone.
    r = await jp_fetch("api", "contents", NB, "checkpoints", headers=auth(course["ines"]))
    assert json.loads(r.body) == []


async def test_seal_deletes_checkpoints_with_clear_text(jp_fetch, course, jp_root_dir):
    r = await jp_fetch("api", "contents", NB, "checkpoints", method="POST", body="", headers=auth(course["ines"]))
    assert r.code == 201
    assert any("SECRET-CHECK" in p.read_text() for p in jp_root_dir.rglob("*-checkpoint.ipynb"))
    code, _ = await seal(jp_fetch, course["ines"])
    assert code == 200
    for p in jp_root_dir.rglob("*"):
        if p.is_file():
            assert "SECRET-CHECK" not in p.read_text(errors="replace"), p


async def test_seal_refused_without_manage_or_key(jp_fetch, warden, course, jp_root_dir):
    before = (jp_root_dir / NB).read_text()
    # sam may run the notebook and use the key, but not manage it.
    code, body = await seal(jp_fetch, course["sam"])
    assert code == 403 and "manage" in body["message"]
    code, body = await call(jp_fetch, "POST", "api", "warden", "unseal", token=course["sam"], body={"path": NB})
    assert code == 403
    # ines manages the folder, but a key she was not given is refused.
    warden.key_ring.create("other")
    code, body = await seal(jp_fetch, course["ines"], key="other")
    assert code == 403 and "may not use sealing key 'other'" in body["message"]
    assert (jp_root_dir / NB).read_text() == before
    code, body = await seal(jp_fetch, course["ines"], tag="nothing-tagged")
    assert code == 400 and "no cell is tagged 'nothing-tagged'" in body["message"]
    code, body = await seal(jp_fetch, course["ines"], path="cs101/missing.ipynb")
    assert code == 404
    code, body = await seal(jp_fetch, course["ines"], path="cs101")
    assert code == 400
    assert {r.outcome for r in records(warden, "notebook.seal")} == {"deny"}


async def test_reseal_after_rotation_uses_the_new_version(jp_fetch, warden, course, jp_root_dir):
    assert (await seal(jp_fetch, course["ines"]))[0] == 200
    code, body = await seal(jp_fetch, course["ines"])
    assert code == 200 and body["sealed"] == [] and len(body["unchanged"]) == 1
    warden.key_ring.rotate("cs101-checks")
    code, body = await seal(jp_fetch, course["ines"])
    assert code == 200 and len(body["resealed"]) == 1
    assert "key=cs101-checks version=2" in (jp_root_dir / NB).read_text()


async def test_unseal_in_place(jp_fetch, warden, course, jp_root_dir):
    assert (await seal(jp_fetch, course["ines"]))[0] == 200
    # Students may read the notebook: unsealing in place would show them the source.
    code, body = await call(jp_fetch, "POST", "api", "warden", "unseal", token=course["ines"], body={"path": NB})
    assert code == 409 and "sam" in body["message"] and "tom" in body["message"]
    assert "SECRET-CHECK" not in (jp_root_dir / NB).read_text()
    warden.policy.revoke("cs101", "group:cs101")
    # A group with no members yet, or everyone signed in: future readers count too.
    warden.accounts.add_group("auditors")
    for subject, named in (("group:auditors", "members of group:auditors"), ("authenticated", "anyone signed in")):
        warden.policy.grant("cs101", subject, "read")
        code, body = await call(jp_fetch, "POST", "api", "warden", "unseal", token=course["ines"], body={"path": NB})
        assert code == 409 and named in body["message"], body
        warden.policy.revoke("cs101", subject)
    # tom, a student without the key (nor manage), can't unseal; neither can he seal.
    warden.policy.grant(NB, "user:tom", "read-write-run")
    code, body = await call(jp_fetch, "POST", "api", "warden", "unseal", token=course["tom"], body={"path": NB})
    assert code == 403 and "manage" in body["message"]
    warden.policy.revoke(NB, "user:tom")
    # The key is needed too: root may, ines may; a manager of the folder without the key may not.
    warden.accounts.add_user("max")
    _id, max_token = warden.accounts.create_token("max")
    warden.policy.grant("cs101", "user:max", "manage")
    code, body = await call(jp_fetch, "POST", "api", "warden", "unseal", token=max_token, body={"path": NB})
    assert code == 403 and "may not use sealing key(s) cs101-checks" in body["message"]
    assert "SECRET-CHECK" not in (jp_root_dir / NB).read_text()
    warden.policy.revoke("cs101", "user:max")
    code, body = await call(jp_fetch, "POST", "api", "warden", "unseal", token=course["ines"], body={"path": NB})
    assert code == 200 and len(body["unsealed"]) == 1
    assert SECRET in (jp_root_dir / NB).read_text()


async def test_reseal_cannot_launder_a_key_one_may_not_use(jp_fetch, warden, course, jp_root_dir):
    """A placeholder sealed under a key ines can't use, pasted into her notebook and re-sealed
    under her own key, would give her its code: refused."""
    warden.key_ring.create("staff-only")
    foreign = warden.key_ring.seal("staff-only", "c1", "print('STAFF-ONLY-CODE')")
    nb = nbformat.read(str(jp_root_dir / NB), as_version=4)
    nb.cells[2].source = foreign
    nbformat.write(nb, str(jp_root_dir / NB))
    code, body = await seal(jp_fetch, course["ines"])
    assert code == 403 and "'staff-only', which you may not use" in body["message"]
    assert nbformat.read(str(jp_root_dir / NB), as_version=4).cells[2].source == foreign
    # Once she may use it, re-sealing moves the cell to her key.
    warden.key_ring.grant("staff-only", "user:ines")
    code, body = await seal(jp_fetch, course["ines"])
    assert code == 200 and len(body["resealed"]) == 1
    assert "key=cs101-checks" in (jp_root_dir / NB).read_text()
