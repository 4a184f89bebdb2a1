"""GET /api/warden/principals: the share dialog's completion of users and groups,
for managers of the path only."""

from __future__ import annotations

import json

from conftest import auth


async def test_a_manager_gets_matching_users_and_groups(jp_fetch, warden, make_user):
    alice = make_user("alice")
    make_user("carol")
    make_user("Caroline")
    make_user("dave")
    warden.accounts.add_group("cs101")
    warden.accounts.add_group("carpenters")
    warden.policy.grant("course", "user:alice", "manage")

    response = await jp_fetch(
        "api", "warden", "principals", params={"path": "course/nb.ipynb", "q": "CAR"}, headers=auth(alice)
    )
    body = json.loads(response.body)
    assert sorted(u["name"] for u in body["users"]) == ["Caroline", "carol"]
    assert [g["name"] for g in body["groups"]] == ["carpenters"]
    # Names and display names only: nothing about admins, tokens or passwords.
    assert set(body["users"][0]) == {"name", "display_name"}


async def test_non_managers_are_refused_and_audited(jp_fetch, warden, make_user):
    bob = make_user("bob")
    eve = make_user("eve")
    warden.policy.grant("course", "user:bob", "read-write-run")

    response = await jp_fetch(
        "api", "warden", "principals", params={"path": "course"}, headers=auth(bob), raise_error=False
    )
    assert response.code == 403
    assert "manage" in json.loads(response.body)["message"]
    # Someone who can't read the path doesn't learn it exists.
    response = await jp_fetch(
        "api", "warden", "principals", params={"path": "course"}, headers=auth(eve), raise_error=False
    )
    assert response.code == 404
    denied = [r for r in warden.audit.tail(20) if r.outcome == "deny" and r.action == "contents.manage"]
    assert {r.actor for r in denied} >= {"bob", "eve"}


async def test_the_path_is_required(jp_fetch, make_user):
    root = make_user("root", admin=True)
    response = await jp_fetch("api", "warden", "principals", headers=auth(root), raise_error=False)
    assert response.code == 400
