"""Contents, /files, /view, nbconvert and checkpoints under the policy, over real HTTP.

Each level is tried on each contents surface; then path attacks, moves
across folders, expiring grants, grants that follow a rename, filtered
listings, the ``writable`` flag, and the audit trail of every decision.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import unicodedata

import pytest

from conftest import auth
from jupyter_warden.policy.levels import LEVELS

NOTEBOOK = {
    "cells": [{"cell_type": "markdown", "metadata": {}, "source": "secret plan", "id": "c1"}],
    "metadata": {},
    "nbformat": 4,
    "nbformat_minor": 5,
}


def _write_notebook(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(NOTEBOOK))


@pytest.fixture
def world(jp_root_dir, warden, make_user):
    """alice owns alice/; 'shared/' holds a notebook and a text file; bob starts with nothing."""
    _write_notebook(jp_root_dir / "shared" / "nb.ipynb")
    (jp_root_dir / "shared" / "data.txt").write_text("shared data")
    (jp_root_dir / "alice").mkdir()
    (jp_root_dir / "alice" / "secret.txt").write_text("alice's secret")
    tokens = {
        "alice": make_user("alice"),
        "bob": make_user("bob"),
        "root": make_user("root", admin=True),
    }
    warden.policy.grant("alice", "user:alice", "manage")
    return tokens


def requester(jp_fetch, token):
    async def call(*parts, method="GET", body=None, params=None):
        if body is not None and not isinstance(body, str):
            body = json.dumps(body)
        if method in ("POST", "PUT", "PATCH") and body is None:
            body = ""
        return await jp_fetch(
            *parts, method=method, body=body, params=params, headers=auth(token),
            raise_error=False, allow_nonstandard_methods=True,
            # Starting a sandboxed kernel on a loaded 2-core machine can take a while.
            request_timeout=90,
        )

    return call


def raw_requester(http_server_client, jp_base_url, token):
    """Requests with the URL exactly as written: no escaping, no normalising."""

    async def call(url, method="GET", body=None):
        if body is not None and not isinstance(body, str):
            body = json.dumps(body)
        return await http_server_client.fetch(
            jp_base_url + url, method=method, body=body, headers=auth(token),
            raise_error=False, allow_nonstandard_methods=True, follow_redirects=False,
        )

    return call


def _capabilities(level):
    return LEVELS["manage"] if level == "admin" else LEVELS[level]


@pytest.mark.parametrize("level", [*LEVELS, "admin"])
async def test_each_level_on_each_contents_surface(jp_fetch, jp_root_dir, warden, world, level):
    token = world["root"] if level == "admin" else world["bob"]
    if level != "admin":
        warden.policy.grant("shared", "user:bob", level)
    caps = _capabilities(level)
    call = requester(jp_fetch, token)
    hidden = 404  # without read, a path does not exist (G1)
    refused_write = 403 if "read" in caps else hidden

    def expect(response, capability, ok=(200, 201, 204)):
        wanted = capability in caps
        assert (response.code in ok) == wanted, (level, capability, response.code, response.body[:200])
        if not wanted:
            assert response.code == (hidden if capability == "read" else refused_write)

    expect(await call("api", "contents", "shared", "nb.ipynb"), "read")
    expect(await call("files", "shared", "data.txt"), "read")
    expect(await call("view", "shared", "data.txt"), "read")
    expect(await call("nbconvert", "notebook", "shared", "nb.ipynb"), "read")
    expect(await call("api", "contents", "shared", "nb.ipynb", "checkpoints"), "read")
    expect(await call("api", "contents", "shared", "data.txt", method="PUT",
                      body={"type": "file", "format": "text", "content": "changed"}), "write")
    expect(await call("api", "contents", "shared", method="POST", body={"type": "file"}), "write")
    expect(await call("api", "contents", "shared", "nb.ipynb", "checkpoints", method="POST"), "write")
    expect(await call("api", "contents", "shared", "data.txt", method="PATCH",
                      body={"path": "shared/renamed.txt"}), "write")
    victim = "renamed.txt" if "write" in caps else "data.txt"
    expect(await call("api", "contents", "shared", victim, method="DELETE"), "write")
    if "write" not in caps:
        assert (jp_root_dir / "shared" / "data.txt").read_text() == "shared data"
    # Nobody but alice and admins reaches alice's folder, whatever bob holds on shared/.
    other = await call("api", "contents", "alice", "secret.txt")
    assert (other.code == 200) == (level == "admin")


async def test_a_reader_gets_403_naming_what_was_refused(jp_fetch, warden, world):
    warden.policy.grant("shared", "user:bob", "read")
    call = requester(jp_fetch, world["bob"])
    response = await call("api", "contents", "shared", "data.txt", method="DELETE")
    assert response.code == 403
    message = json.loads(response.body)["message"]
    assert "bob may not write 'shared/data.txt'" in message and "read" in message


async def test_path_attacks_are_refused(
    jp_fetch, http_server_client, jp_base_url, jp_root_dir, warden, world
):
    warden.policy.grant("shared", "user:bob", "read-write")
    (jp_root_dir / "bob").mkdir()
    warden.policy.grant("bob", "user:bob", "manage")
    outside = jp_root_dir.parent / "outside.txt"
    outside.write_text("outside the root")
    os.symlink(outside, jp_root_dir / "bob" / "out.txt")
    os.symlink(jp_root_dir / "alice" / "secret.txt", jp_root_dir / "bob" / "into-alice.txt")
    os.symlink(jp_root_dir / "alice", jp_root_dir / "bob" / "alice-dir")
    call = requester(jp_fetch, world["bob"])
    raw = raw_requester(http_server_client, jp_base_url, world["bob"])
    for url in [
        "api/contents/shared/../alice/secret.txt",
        "api/contents/shared/%2e%2e/alice/secret.txt",
        "api/contents/shared/%2E%2E/alice/secret.txt",
        "api/contents/shared/%252e%252e/alice/secret.txt",
        "files/shared/%2e%2e/alice/secret.txt",
        "files/shared/%252e%252e/alice/secret.txt",
        "view/shared/%2e%2e/alice/secret.txt",
        "api/contents/bob/out.txt",
        "files/bob/out.txt",
        "api/contents/bob/into-alice.txt",
        "files/bob/into-alice.txt",
        "api/contents/bob/alice-dir/secret.txt",
        "api/contents/bob/alice-dir",
    ]:
        response = await raw(url)
        assert response.code in (400, 404), (url, response.code)
        assert b"alice's secret" not in response.body and b"outside the root" not in response.body
    # Writing through a symlink into alice's folder, and copying out of it.
    response = await call("api", "contents", "bob", "alice-dir", "new.txt", method="PUT",
                          body={"type": "file", "format": "text", "content": "x"})
    assert response.code in (403, 404)
    assert not (jp_root_dir / "alice" / "new.txt").exists()
    response = await call("api", "contents", "bob", method="POST",
                          body={"copy_from": "bob/into-alice.txt"})
    assert response.code == 404
    # Rename and copy bodies with `..`.
    response = await call("api", "contents", "shared", "data.txt", method="PATCH",
                          body={"path": "shared/../alice/stolen.txt"})
    assert response.code in (400, 404)
    response = await call("api", "contents", "bob", method="POST",
                          body={"copy_from": "shared/../alice/secret.txt"})
    assert response.code in (400, 404)
    # The symlinks themselves are hidden from bob's listing.
    listing = json.loads((await call("api", "contents", "bob")).body)
    assert sorted(e["name"] for e in listing["content"]) == []
    # Trailing slash and empty path: the root listing, filtered; never a 500.
    for url in ["api/contents/", "api/contents", "api/contents/shared/", "files/", "view/"]:
        response = await raw(url)
        assert response.code < 500, (url, response.code)
    root = json.loads((await call("api", "contents")).body)
    assert sorted(e["name"] for e in root["content"]) == ["bob", "shared"]
    assert root["writable"] is False


async def test_case_and_unicode_twins_get_nothing_from_each_other(jp_fetch, jp_root_dir, warden, world):
    nfc = unicodedata.normalize("NFC", "café")
    nfd = unicodedata.normalize("NFD", "café")
    assert nfc != nfd
    (jp_root_dir / "projects").mkdir()
    (jp_root_dir / "projects" / nfc).write_text("the real café")
    (jp_root_dir / "projects" / "Report.txt").write_text("the real report")
    warden.policy.grant("projects", "user:alice", "manage")
    warden.policy.grant(f"projects/{nfc}", "user:bob", "read")
    warden.policy.grant("projects/Report.txt", "user:bob", "read")
    # bob may create files in his own folder only; twins are made there and in projects by alice.
    (jp_root_dir / "projects" / nfd).write_text("a twin")
    (jp_root_dir / "projects" / "report.txt").write_text("a lower-case twin")
    bob = requester(jp_fetch, world["bob"])
    assert (await bob("api", "contents", "projects", nfc)).code == 200
    assert (await bob("api", "contents", "projects", nfd)).code == 404
    assert (await bob("api", "contents", "projects", "Report.txt")).code == 200
    assert (await bob("api", "contents", "projects", "report.txt")).code == 404
    assert (await bob("api", "contents", "projects", "REPORT.TXT")).code == 404
    # An attacker who owns a twin (and so manages it) gains nothing on the original.
    warden.policy.grant("", "user:bob", "read-write")
    warden.policy.grant("projects", "user:bob", "read")
    twin = await bob("api", "contents", "PROJECTS", method="PUT", body={"type": "directory"})
    assert twin.code == 201
    assert warden.engine.check(_actor(warden, "bob"), "manage", "PROJECTS").allowed
    assert not warden.engine.check(_actor(warden, "bob"), "write", "projects").allowed
    # Deleting or renaming the twin leaves the original's grants alone.
    assert (await bob("api", "contents", "PROJECTS", method="PATCH", body={"path": "P2"})).code == 200
    assert (await bob("api", "contents", "P2", method="DELETE")).code == 204
    grants = {(g.path, g.subject) for g in warden.policy.grants_on(f"projects/{nfc}")}
    assert (f"projects/{nfc}", "user:bob") in grants and ("projects", "user:alice") in grants


def _actor(warden, name):
    from jupyter_warden.policy.engine import Actor

    return Actor.for_account(warden.accounts.get_user(name))


async def test_rename_and_copy_across_a_folder_bob_cannot_write(jp_fetch, jp_root_dir, warden, world):
    (jp_root_dir / "bob").mkdir()
    (jp_root_dir / "bob" / "mine.txt").write_text("bob's")
    warden.policy.grant("bob", "user:bob", "manage")
    warden.policy.grant("shared", "user:bob", "read")
    bob = requester(jp_fetch, world["bob"])
    # Out of a read-only folder: the source can't be written (moved away).
    out = await bob("api", "contents", "shared", "data.txt", method="PATCH", body={"path": "bob/data.txt"})
    assert out.code == 403
    # Into a read-only folder, and into a folder he can't see.
    into = await bob("api", "contents", "bob", "mine.txt", method="PATCH", body={"path": "shared/mine.txt"})
    assert into.code == 403
    hidden = await bob("api", "contents", "bob", "mine.txt", method="PATCH", body={"path": "alice/mine.txt"})
    assert hidden.code == 404
    assert (jp_root_dir / "bob" / "mine.txt").exists()
    # Copy: out of a readable folder is fine (and bob manages the copy) ...
    copied = await bob("api", "contents", "bob", method="POST", body={"copy_from": "shared/data.txt"})
    assert copied.code == 201
    copy_path = json.loads(copied.body)["path"]
    assert warden.engine.check(_actor(warden, "bob"), "manage", copy_path).allowed
    # ... into a read-only folder is not, nor out of an unreadable one.
    assert (await bob("api", "contents", "shared", method="POST",
                      body={"copy_from": "bob/mine.txt"})).code == 403
    assert (await bob("api", "contents", "bob", method="POST",
                      body={"copy_from": "alice/secret.txt"})).code == 404


async def test_an_expiring_grant_stops_working(jp_fetch, warden, world):
    ends = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=1.5)
    warden.policy.grant("shared", "user:bob", "read", not_after=ends)
    bob = requester(jp_fetch, world["bob"])
    assert (await bob("api", "contents", "shared", "data.txt")).code == 200
    await asyncio.sleep(max(0.0, (ends - dt.datetime.now(dt.timezone.utc)).total_seconds()) + 0.1)
    assert (await bob("api", "contents", "shared", "data.txt")).code == 404


async def test_grants_follow_a_rename_and_a_new_file_at_the_old_path_inherits_nothing(
    jp_fetch, jp_root_dir, warden, world
):
    warden.policy.grant("", "user:alice", "read-write")
    warden.policy.grant("shared/data.txt", "user:bob", "read")
    alice = requester(jp_fetch, world["alice"])
    bob = requester(jp_fetch, world["bob"])
    warden.policy.grant("shared", "user:alice", "read-write")
    moved = await alice("api", "contents", "shared", "data.txt", method="PATCH",
                        body={"path": "shared/moved.txt"})
    assert moved.code == 200
    assert (await bob("api", "contents", "shared", "moved.txt")).code == 200
    assert (await bob("api", "contents", "shared", "data.txt")).code == 404
    made = await alice("api", "contents", "shared", "data.txt", method="PUT",
                       body={"type": "file", "format": "text", "content": "new file"})
    assert made.code == 201
    assert (await bob("api", "contents", "shared", "data.txt")).code == 404
    # alice created it, so she manages it; deleting it takes its grants away.
    assert warden.engine.check(_actor(warden, "alice"), "manage", "shared/data.txt").allowed
    assert (await alice("api", "contents", "shared", "moved.txt", method="DELETE")).code == 204
    assert warden.policy.grants_on("shared/moved.txt", inherited=False) == []


async def test_listings_are_filtered_and_writable_is_per_user(jp_fetch, jp_root_dir, warden, world):
    (jp_root_dir / "course" / "week1").mkdir(parents=True)
    (jp_root_dir / "course" / "week1" / "lecture.ipynb").write_text(json.dumps(NOTEBOOK))
    (jp_root_dir / "course" / "week1" / "answers.ipynb").write_text(json.dumps(NOTEBOOK))
    (jp_root_dir / "course" / "staff").mkdir()
    warden.policy.grant("course/week1/lecture.ipynb", "user:bob", "read")
    warden.policy.grant("shared", "user:bob", "read-write")
    bob = requester(jp_fetch, world["bob"])
    root = json.loads((await bob("api", "contents")).body)
    assert sorted(e["name"] for e in root["content"]) == ["course", "shared"]
    course = json.loads((await bob("api", "contents", "course")).body)
    assert [e["name"] for e in course["content"]] == ["week1"]
    assert course["writable"] is False
    week = json.loads((await bob("api", "contents", "course", "week1")).body)
    assert [e["name"] for e in week["content"]] == ["lecture.ipynb"]
    assert week["content"][0]["writable"] is False
    # A folder with nothing readable below it does not exist for bob.
    assert (await bob("api", "contents", "course", "staff")).code == 404
    lecture = json.loads((await bob("api", "contents", "course", "week1", "lecture.ipynb")).body)
    assert lecture["writable"] is False
    shared = json.loads((await bob("api", "contents", "shared")).body)
    assert shared["writable"] is True and all(e["writable"] for e in shared["content"])
    # A `none` below a grant takes it away again, in the listing too.
    warden.policy.grant("shared/data.txt", "user:bob", "none")
    shared = json.loads((await bob("api", "contents", "shared")).body)
    assert [e["name"] for e in shared["content"]] == ["nb.ipynb"]
    # An admin sees everything.
    admin = requester(jp_fetch, world["root"])
    everything = json.loads((await admin("api", "contents")).body)
    assert {"alice", "course", "shared"} <= {e["name"] for e in everything["content"]}


async def test_creators_manage_what_they_create(jp_fetch, warden, world):
    warden.policy.grant("shared", "user:bob", "read-write")
    bob = requester(jp_fetch, world["bob"])
    untitled = json.loads((await bob("api", "contents", "shared", method="POST", body={"type": "notebook"})).body)
    folder = await bob("api", "contents", "shared", "bobs", method="PUT", body={"type": "directory"})
    assert folder.code == 201
    upload = await bob("api", "contents", "shared", "bobs", "up.txt", method="PUT",
                       body={"type": "file", "format": "text", "content": "uploaded"})
    assert upload.code == 201
    actor = _actor(warden, "bob")
    for path in [untitled["path"], "shared/bobs", "shared/bobs/up.txt"]:
        assert warden.engine.check(actor, "manage", path).allowed, path
    assert not warden.engine.check(actor, "manage", "shared/nb.ipynb").allowed


async def test_every_contents_decision_is_audited(
    jp_fetch, http_server_client, jp_base_url, warden, world
):
    warden.policy.grant("shared", "user:bob", "read")
    bob = requester(jp_fetch, world["bob"])
    assert (await bob("api", "contents", "shared", "data.txt")).code == 200
    assert (await bob("api", "contents", "shared", "data.txt", method="DELETE")).code == 403
    assert (await bob("api", "contents", "alice", "secret.txt")).code == 404
    raw = raw_requester(http_server_client, jp_base_url, world["bob"])
    assert (await raw("api/contents/shared/%2e%2e/x")).code == 404
    records = [(r.action, r.path, r.outcome) for r in warden.audit.query(actor="bob")]
    assert ("contents.read", "shared/data.txt", "allow") in records
    assert ("contents.write", "shared/data.txt", "deny") in records
    assert ("contents.read", "alice/secret.txt", "deny") in records
    assert ("request.denied", None, "deny") in records
    allow = next(r for r in warden.audit.query(actor="bob") if r.outcome == "allow")
    assert allow.grant_id is not None and allow.client


async def test_malformed_requests_get_a_clear_4xx(jp_fetch, warden, world):
    warden.policy.grant("shared", "user:bob", "read-write-run")
    bob = requester(jp_fetch, world["bob"])
    for parts, method, body in [
        (("api", "contents", "shared"), "POST", "[1, 2]"),
        (("api", "contents", "shared"), "POST", "{not json"),
        (("api", "contents", "shared"), "POST", {"copy_from": 5}),
        (("api", "contents", "shared", "data.txt"), "PATCH", {}),
        (("api", "contents", "shared", "data.txt"), "PATCH", {"path": ["x"]}),
        (("api", "contents", "shared", "x.txt"), "PUT", "[]"),
        (("api", "sessions"), "POST", {"path": 5, "type": "notebook"}),
        (("api", "sessions"), "POST", {"path": "shared/nb.ipynb", "type": "notebook",
                                       "kernel": {"id": ["x"]}}),
        (("api", "sessions"), "POST", "[]"),
    ]:
        response = await bob(*parts, method=method, body=body)
        assert 400 <= response.code < 500, (parts, method, body, response.code)
