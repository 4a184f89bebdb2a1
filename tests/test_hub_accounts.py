"""Hub users as warden accounts (identity/hub.py), on a real store, without a hub.

The hub itself is in test_hub.py. These are the rules of the mirror (hub
memberships follow the hub, the warden's own don't, twins never merge) and
a server whose hub can't be asked or isn't there.
"""

from __future__ import annotations

import pytest

from jupyter_warden.identity.accounts import AccountError, Accounts


@pytest.fixture
def accounts(store):
    return Accounts(store)


def test_a_hub_user_is_created_with_its_groups_and_kept_in_step(accounts):
    account, changes = accounts.sync_hub_user("alice", ["cs101", "tas"], admin=False)
    assert account.groups == ("cs101", "tas") and not account.admin
    assert changes == {"created": True, "groups_joined": ["cs101", "tas"]}
    account, changes = accounts.sync_hub_user("alice", ["cs101", "tas"], admin=False)
    assert changes == {}  # nothing written when nothing changed
    account, changes = accounts.sync_hub_user("alice", ["cs101"], admin=True)
    assert account.groups == ("cs101",) and account.admin
    assert changes == {"admin": True, "groups_left": ["tas"]}
    assert accounts.list_groups()["tas"] == []  # the group stays, for its grants


def test_memberships_made_in_the_warden_are_not_the_hubs_to_remove(accounts):
    accounts.add_group("staff")
    accounts.sync_hub_user("bob", ["cs101"], admin=False)
    accounts.change_members("staff", add=["bob"])
    # A membership the hub gave, then added by hand: the warden's own from now on.
    accounts.change_members("cs101", add=["bob"])
    account, changes = accounts.sync_hub_user("bob", [], admin=False)
    assert account.groups == ("cs101", "staff") and changes == {}


def test_two_hub_users_never_share_one_account(accounts):
    accounts.sync_hub_user("strasse", ["cs101"], admin=False)
    with pytest.raises(AccountError, match="can't be told apart"):
        accounts.sync_hub_user("straße", ["cs101", "tas"], admin=True)
    assert accounts.get_user("strasse").groups == ("cs101",) and not accounts.get_user("strasse").admin
    # Case alone is the same user (hubs lower-case names; a grant may not).
    account, _ = accounts.sync_hub_user("STRASSE", ["cs101"], admin=False)
    assert account.name == "strasse"


def test_a_hub_user_with_a_name_the_warden_refuses_is_refused(accounts):
    with pytest.raises(AccountError, match="not allowed"):
        accounts.sync_hub_user("bad/name", [], admin=False)


def test_hub_identity_outside_a_hub_stops_the_server(jp_configurable_serverapp, jp_server_config, monkeypatch):
    """Without the hub's credentials nobody could be identified: refuse to start, with why."""
    pytest.importorskip("jupyterhub")
    monkeypatch.delenv("JUPYTERHUB_API_TOKEN", raising=False)
    jp_server_config["Warden"]["identity"] = "jupyterhub"
    with pytest.raises(SystemExit, match="not started by JupyterHub"):
        jp_configurable_serverapp(config=jp_server_config)


@pytest.mark.parametrize("hub_admins_are_admins", [False, True])
def test_hub_admins_are_warden_admins_only_when_configured(store, warden_state, hub_admins_are_admins):
    pytest.importorskip("jupyterhub")
    from types import SimpleNamespace

    from jupyter_warden.audit.log import AuditLog, load_or_create_key
    from jupyter_warden.identity.hub import hub_account

    warden = SimpleNamespace(accounts=Accounts(store), audit=AuditLog(store, load_or_create_key(warden_state)),
                             hub_admin_users=["Instructor"], hub_admins_are_admins=hub_admins_are_admins)
    assert hub_account(warden, {"name": "root", "admin": True, "groups": []}).admin is hub_admins_are_admins
    assert hub_account(warden, {"name": "instructor", "admin": False, "groups": []}).admin
    assert not hub_account(warden, {"name": "alice", "admin": False, "groups": ["cs101", "bad group"]}).admin
    assert warden.accounts.get_user("alice").groups == ("cs101",)  # the odd hub group is skipped
    # The flag is configuration: a hub admin made a warden admin by hand loses it at the next sync.
    warden.accounts.set_admin("root", True)
    assert hub_account(warden, {"name": "root", "admin": True, "groups": []}).admin is hub_admins_are_admins
    syncs = [r for r in warden.audit.query(actor="alice") if r.action == "auth.hub_sync"]
    assert syncs and syncs[0].details["groups_joined"] == ["cs101"]


def test_a_hub_service_is_not_a_user(store, warden_state):
    pytest.importorskip("jupyterhub")
    from types import SimpleNamespace

    from tornado import web

    from jupyter_warden.audit.log import AuditLog, load_or_create_key
    from jupyter_warden.identity.hub import hub_account

    accounts = Accounts(store)
    accounts.add_user("team", admin=True)
    warden = SimpleNamespace(accounts=accounts, audit=AuditLog(store, load_or_create_key(warden_state)),
                             hub_admin_users=["team"], hub_admins_are_admins=False)
    with pytest.raises(web.HTTPError) as refused:
        hub_account(warden, {"kind": "service", "name": "team", "scopes": ["access:services!service=team"]})
    assert refused.value.status_code == 403 and "not a user" in refused.value.log_message


def test_a_hub_answer_without_groups_changes_nothing_and_grants_no_hub_group(accounts):
    accounts.add_group("staff")
    accounts.sync_hub_user("carol", ["cs101", "tas"], admin=False)
    accounts.change_members("staff", add=["carol"])
    account, changes = accounts.sync_hub_user("carol", None, admin=False)
    assert changes == {} and account.groups == ("staff",)  # only the warden's own membership counts
    assert accounts.get_user("carol").groups == ("cs101", "staff", "tas")  # and nothing was forgotten


@pytest.fixture
def warden_config(monkeypatch):
    """For the server tests below: hub identity, with a hub that is not there (a closed port)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "server-token")
    monkeypatch.setenv("JUPYTERHUB_CLIENT_ID", "jupyterhub-user-instructor")
    monkeypatch.setenv("JUPYTERHUB_API_URL", f"http://127.0.0.1:{dead}/hub/api")
    return {"identity": "jupyterhub"}


async def test_a_hub_that_can_not_be_asked_lets_nobody_in(jp_fetch, warden):
    pytest.importorskip("jupyterhub")
    from jupyter_warden.enforce.authorizer import guarded_hub_identity_provider

    assert isinstance(warden.serverapp.identity_provider, guarded_hub_identity_provider())
    asked = await jp_fetch("api", "contents", headers={"Authorization": "token a-hub-token"}, raise_error=False)
    assert asked.code >= 500 and b"Hub" in asked.body
    anonymous = await jp_fetch("api", "contents", raise_error=False)
    assert anonymous.code == 403
    # The warden's own credentials mean nothing here.
    _id, token = warden.accounts.create_token(warden.accounts.add_user("eve", admin=True).name)
    own = await jp_fetch("api", "contents", headers={"Authorization": f"token {token}"}, raise_error=False)
    assert own.code >= 403 and own.code != 200
