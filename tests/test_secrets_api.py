"""The vault's REST API (write-only) and the vault itself: owners, groups, grants, audit, encryption."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select, update

from conftest import auth
from test_enforce_contents import requester

from jupyter_warden.master_key import MasterKey, MasterKeyError
from jupyter_warden.secrets.vault import PURPOSE, SecretNotGranted, Vault, VaultError
from jupyter_warden.store.models import Secret

VALUE = "s3cret-value-for-the-api-9f1c"


@pytest.fixture
def people(warden, make_user):
    tokens = {n: make_user(n) for n in ("alice", "bob", "carol")}
    tokens["root"] = make_user("root", admin=True)
    warden.accounts.add_group("team")
    warden.accounts.change_members("team", add=["alice", "bob"])
    return tokens


def body_text(response) -> str:
    return response.body.decode() if response.body else ""


async def test_write_only_api(jp_fetch, warden, people):
    alice, bob, carol, root = (requester(jp_fetch, people[n]) for n in ("alice", "bob", "carol", "root"))
    seen = []  # every response body: none may hold the value

    async def call(who, *parts, **kw):
        response = await who(*parts, **kw)
        seen.append(body_text(response))
        return response

    made = await call(alice, "api", "warden", "secrets", "DB_PASSWORD", method="PUT", body={"value": VALUE})
    assert made.code == 201
    info = json.loads(made.body)
    assert info["owner"] == "user:alice" and info["grants"] == [] and "value" not in info
    replaced = await call(alice, "api", "warden", "secrets", "DB_PASSWORD", method="PUT",
                          body={"value": VALUE + "2", "owner": "group:team"})
    assert replaced.code == 200 and json.loads(replaced.body)["owner"] == "group:team"
    # A member of the owning group manages it; someone else can't touch it, nor take its name.
    granted = await call(bob, "api", "warden", "secrets", "DB_PASSWORD", "grants", method="POST",
                         body={"subject": "user:carol"})
    assert granted.code == 200 and json.loads(granted.body)["grants"] == ["user:carol"]
    assert (await call(carol, "api", "warden", "secrets", "DB_PASSWORD", method="PUT",
                       body={"value": "mine now"})).code == 409
    assert (await call(carol, "api", "warden", "secrets", "DB_PASSWORD", method="DELETE")).code == 404
    assert (await call(carol, "api", "warden", "secrets", "DB_PASSWORD", "grants", method="POST",
                       body={"subject": "user:carol"})).code == 404
    # Carol may not give her own new secret to a group she is not in.
    assert (await call(carol, "api", "warden", "secrets", "CAROLS", method="PUT",
                       body={"value": VALUE, "owner": "group:team"})).code == 403
    # Listing: names, owners and grants for managers; carol (granted) sees the name only.
    listed = json.loads((await call(carol, "api", "warden", "secrets")).body)["secrets"]
    assert listed == [{**listed[0], "name": "DB_PASSWORD", "grants": None, "manageable": False}]
    admin_list = json.loads((await call(root, "api", "warden", "secrets")).body)["secrets"]
    assert [s["name"] for s in admin_list] == ["DB_PASSWORD"] and admin_list[0]["manageable"]
    # Bad input is a clear 400.
    for name, body in [("1bad", {"value": VALUE}), ("OK", {"value": ""}), ("OK", {"value": 3}),
                       ("OK", {"value": VALUE, "extra": 1}), ("OK", {"value": VALUE, "owner": "user:nobody"})]:
        response = await call(alice, "api", "warden", "secrets", name, method="PUT", body=body)
        assert response.code == 400, (name, body, response.body)
        assert json.loads(response.body)["message"]
    revoked = await call(alice, "api", "warden", "secrets", "DB_PASSWORD", "grants", method="DELETE",
                         params={"subject": "user:carol"})
    assert revoked.code == 204
    assert (await call(alice, "api", "warden", "secrets", "DB_PASSWORD", "grants", method="DELETE",
                       params={"subject": "user:carol"})).code == 400
    assert json.loads((await call(carol, "api", "warden", "secrets")).body)["secrets"] == []
    # No GET on a single secret: there is nothing to read back.
    assert (await call(alice, "api", "warden", "secrets", "DB_PASSWORD")).code == 405
    assert (await call(alice, "api", "warden", "secrets", "DB_PASSWORD", method="DELETE")).code == 204
    assert all(VALUE not in text for text in seen)
    # Every change audited, refusals too; never the value.
    records = [r for r in warden.audit.query() if r.action.startswith("secret.")]
    actions = [(r.action, r.outcome) for r in records]
    for expected in [("secret.set", "allow"), ("secret.grant", "allow"), ("secret.revoke", "allow"),
                     ("secret.remove", "allow"), ("secret.set", "deny"), ("secret.remove", "deny")]:
        assert expected in actions
    assert VALUE not in json.dumps([r.as_json() for r in warden.audit.query()], default=str)
    openapi = json.loads((await jp_fetch("api", "warden", "openapi.json", headers=auth(people["alice"]))).body)
    assert "/api/warden/secrets/{name}/grants" in openapi["paths"]


async def test_a_share_link_guest_gets_nothing(jp_fetch, warden, people):
    warden.vault.set("X_SECRET", VALUE, None, "user:alice")
    from jupyter_warden.policy.engine import Actor

    guest = Actor.for_link("abc")
    assert warden.vault.list(guest) == []
    with pytest.raises(VaultError):
        warden.vault.set("GUEST", VALUE, guest)


def test_ciphertext_is_bound_to_owner_and_name(store, tmp_path):
    from jupyter_warden.identity.accounts import Accounts

    Accounts(store).add_user("alice")
    Accounts(store).add_user("bob")
    key = MasterKey(b"k" * 32)
    vault = Vault(store, key)
    vault.set("ONE", VALUE, None, "user:alice")
    vault.set("TWO", "other-value", None, "user:bob")
    vault.grant("TWO", "user:bob", None)
    with store.transaction() as s:
        blob = s.scalar(select(Secret.ciphertext).where(Secret.name == "ONE"))
    assert VALUE.encode() not in blob
    assert vault.read("user:alice", "ONE") == VALUE
    with pytest.raises(SecretNotGranted):
        vault.read("user:bob", "ONE")
    # Alice's blob copied into bob's secret does not open there.
    with store.transaction() as s:
        s.execute(update(Secret).where(Secret.name == "TWO").values(ciphertext=blob))
    with pytest.raises(VaultError, match="does not open"):
        vault.read("user:bob", "TWO")
    with pytest.raises(MasterKeyError):
        key.decrypt(blob, purpose=PURPOSE, context="user:bob\0ONE")
    # Nor under another master key.
    with pytest.raises(VaultError, match="does not open"):
        Vault(store, MasterKey(b"j" * 32)).read("user:alice", "ONE")


def test_reads_follow_group_membership_and_grants_at_once(store):
    from jupyter_warden.identity.accounts import Accounts

    accounts = Accounts(store)
    for name in ("alice", "bob"):
        accounts.add_user(name)
    accounts.add_group("team")
    accounts.change_members("team", add=["bob"])
    vault = Vault(store, MasterKey(b"m" * 32))
    vault.set("TEAM_KEY", VALUE, None, "group:team")
    assert vault.read("user:bob", "TEAM_KEY") == VALUE  # a member of the owning group
    with pytest.raises(SecretNotGranted):
        vault.read("user:alice", "TEAM_KEY")
    vault.grant("TEAM_KEY", "authenticated", None)
    assert vault.read("user:alice", "TEAM_KEY") == VALUE
    vault.revoke("TEAM_KEY", "authenticated", None)
    accounts.change_members("team", remove=["bob"])
    for user in ("alice", "bob"):
        with pytest.raises(SecretNotGranted):
            vault.read(f"user:{user}", "TEAM_KEY")
    with pytest.raises(SecretNotGranted):
        vault.read("link:abc", "TEAM_KEY")  # a share link's guest never
