"""The policy engine and policy changes, on a real store (SQLite or PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import time

import pytest

from jupyter_warden.identity.accounts import Accounts
from jupyter_warden.policy import Actor, PolicyEngine
from jupyter_warden.policy.changes import Policy, PolicyError
from jupyter_warden.policy.levels import LEVELS
from jupyter_warden.store.models import utcnow


@pytest.fixture
def world(store):
    accounts = Accounts(store)
    for name in ["alice", "bob", "carol", "dan"]:
        accounts.add_user(name, admin=name == "alice")
    accounts.add_group("cs101")
    accounts.change_members("cs101", add=["bob", "carol"])
    engine = PolicyEngine(store)
    policy = Policy(store, on_change=engine.invalidate)

    def actor(name):
        return Actor.for_account(accounts.get_user(name))

    return accounts, engine, policy, actor


def caps(engine, actor, path):
    return engine.effective(actor, path).capabilities


def test_each_level_gives_exactly_its_capabilities(world):
    _, engine, policy, actor = world
    for level, expected in LEVELS.items():
        policy.grant(f"p-{level}", "user:dan", level)
        assert caps(engine, actor("dan"), f"p-{level}/x.ipynb") == expected
        for capability in ["read", "run", "write", "manage"]:
            decision = engine.check(actor("dan"), capability, f"p-{level}/x.ipynb")
            assert decision.allowed == (capability in expected)


def test_nothing_without_a_grant_and_everything_for_admins(world):
    _, engine, _, actor = world
    denied = engine.check(actor("bob"), "read", "secret.ipynb")
    assert not denied.allowed and "no grant" in denied.reason
    allowed = engine.check(actor("alice"), "manage", "anything/at/all.ipynb")
    assert allowed.allowed and "admin" in allowed.reason


def test_the_deepest_grant_wins_and_none_takes_a_subtree_away(world):
    _, engine, policy, actor = world
    policy.grant("course", "group:cs101", "read-run")
    policy.grant("course/solutions", "group:cs101", "none")
    policy.grant("course/solutions/bob", "user:bob", "read")
    assert caps(engine, actor("carol"), "course/lecture.ipynb") == {"read", "run"}
    assert caps(engine, actor("carol"), "course/solutions/a.ipynb") == set()
    assert caps(engine, actor("bob"), "course/solutions/a.ipynb") == set()
    assert caps(engine, actor("bob"), "course/solutions/bob/a.ipynb") == {"read"}
    # A more specific grant narrows as well as widens.
    policy.grant("course/readonly.ipynb", "group:cs101", "read")
    assert caps(engine, actor("carol"), "course/readonly.ipynb") == {"read"}


def test_grants_at_the_same_depth_are_united(world):
    _, engine, policy, actor = world
    policy.grant("lab", "group:cs101", "read-run")
    policy.grant("lab", "user:bob", "read-write")
    policy.grant("lab", "authenticated", "none")
    decision = engine.check(actor("bob"), "write", "lab/x.ipynb")
    assert decision.allowed
    assert {g.subject for g in decision.grants} == {"group:cs101", "user:bob", "authenticated"}
    assert caps(engine, actor("bob"), "lab/x.ipynb") == {"read", "run", "write"}
    assert caps(engine, actor("dan"), "lab/x.ipynb") == set()


def test_authenticated_means_anyone_signed_in_but_not_link_guests(world):
    _, engine, policy, actor = world
    policy.grant("public", "authenticated", "read")
    assert caps(engine, actor("dan"), "public/a.ipynb") == {"read"}
    link, _token = policy.create_link("other.ipynb", "read")
    assert caps(engine, Actor.for_link(link.id), "public/a.ipynb") == set()
    assert caps(engine, Actor.for_link(link.id), "other.ipynb") == {"read"}


def test_time_windows_open_and_close_even_with_a_warm_cache(world):
    _, engine, policy, actor = world
    now = utcnow()
    policy.grant("live", "user:bob", "read-write", not_after=now + dt.timedelta(seconds=1))
    policy.grant("later", "user:bob", "read", not_before=now + dt.timedelta(seconds=1))
    assert caps(engine, actor("bob"), "live/x") == {"read", "write"}
    assert caps(engine, actor("bob"), "later/x") == set()
    time.sleep(1.1)
    assert caps(engine, actor("bob"), "live/x") == set()
    assert caps(engine, actor("bob"), "later/x") == {"read"}


def test_changes_from_another_process_reach_a_warm_cache(store, world):
    _, engine, policy, actor = world
    engine.poll_interval = 0.05
    other = Policy(store)  # another process: no shared cache, only the store
    other.grant("shared", "user:dan", "read")
    time.sleep(0.1)
    assert caps(engine, actor("dan"), "shared/n.ipynb") == {"read"}
    other.revoke("shared", "user:dan")
    time.sleep(0.1)
    assert caps(engine, actor("dan"), "shared/n.ipynb") == set()
    # Group membership changes count as policy changes too.
    policy.grant("club", "group:cs101", "read")
    assert caps(engine, actor("dan"), "club/x") == set()
    Accounts(store).change_members("cs101", add=["dan"])
    time.sleep(0.1)
    assert caps(engine, actor("dan"), "club/x") == {"read"}


def test_grants_follow_renames_and_vanish_on_delete(world):
    _, engine, policy, actor = world
    policy.grant("a/notes.ipynb", "user:bob", "read-write")
    policy.grant("a", "user:carol", "read")
    policy.moved("a", "b")
    assert caps(engine, actor("bob"), "b/notes.ipynb") == {"read", "write"}
    assert caps(engine, actor("carol"), "b/other") == {"read"}
    assert caps(engine, actor("bob"), "a/notes.ipynb") == set()
    policy.moved("b/notes.ipynb", "b/renamed.ipynb")
    assert caps(engine, actor("bob"), "b/renamed.ipynb") == {"read", "write"}
    policy.deleted("b/renamed.ipynb")
    # A new file at the old path starts with nothing of the old one's.
    assert caps(engine, actor("bob"), "b/renamed.ipynb") == set()
    assert policy.grants_on("b/renamed.ipynb", inherited=False) == []


def test_a_prefix_is_not_a_parent(world):
    _, engine, policy, actor = world
    policy.grant("ab", "user:bob", "read")
    policy.grant("a_c", "user:bob", "read")
    assert caps(engine, actor("bob"), "abc/x") == set()
    policy.moved("a", "z")  # must not drag "ab" or "a_c" along
    assert caps(engine, actor("bob"), "ab/x") == {"read"}
    assert caps(engine, actor("bob"), "a_c/x") == {"read"}
    policy.deleted("a")
    assert caps(engine, actor("bob"), "ab/x") == {"read"}


def test_the_creator_gets_manage_and_nothing_stale(world):
    accounts, engine, policy, actor = world
    policy.grant("n.ipynb", "user:carol", "read")
    policy.set_creator("n.ipynb", "dan")
    assert caps(engine, actor("dan"), "n.ipynb") == LEVELS["manage"]
    assert caps(engine, actor("carol"), "n.ipynb") == set()


def test_a_removed_user_takes_their_grants_along(world):
    accounts, engine, policy, actor = world
    policy.grant("x", "user:dan", "manage")
    accounts.remove_user("dan")
    accounts.add_user("dan")
    assert caps(engine, actor("dan"), "x/y") == set()


def test_bad_grants_are_refused_with_reasons(world):
    _, _, policy, _ = world
    cases = [
        (("x", "user:nobody", "read"), "no user named"),
        (("x", "group:nogroup", "read"), "no group named"),
        (("x", "bob", "read"), "is not one of"),
        (("x", "link:abc", "read"), "share links are made"),
        (("x", "user:bob", "admin"), "unknown level"),
        (("../x", "user:bob", "read"), "not allowed"),
    ]
    for args, message in cases:
        with pytest.raises(PolicyError, match=message):
            policy.grant(*args)
    past = utcnow() - dt.timedelta(minutes=1)
    with pytest.raises(PolicyError, match="already past"):
        policy.grant("x", "user:bob", "read", not_after=past)
    with pytest.raises(PolicyError, match="must come after"):
        policy.grant("x", "user:bob", "read", not_before=utcnow() + dt.timedelta(hours=2), not_after=utcnow() + dt.timedelta(hours=1))
    for level in ["read-write", "manage", "none"]:
        with pytest.raises(PolicyError, match="at most"):
            policy.create_link("x", level)


def test_labels_refuse_links_and_grants_outside_their_groups(world):
    _, engine, policy, actor = world
    policy.define_label("confidential", banner="CONFIDENTIAL", colour="#b00", no_links=True)
    policy.define_label("course-only", only_groups=["cs101"])
    policy.set_label("vault", "confidential")
    with pytest.raises(PolicyError, match="label 'confidential'.*forbids share links"):
        policy.create_link("vault/a.ipynb", "read")
    policy.set_label("course", "course-only")
    with pytest.raises(PolicyError, match="label 'course-only'.*only to group:cs101"):
        policy.grant("course/a.ipynb", "user:dan", "read")
    policy.grant("course/a.ipynb", "group:cs101", "read")
    # A label that existing shares break is refused, naming the grant.
    policy.grant("open", "user:dan", "read")
    with pytest.raises(PolicyError, match="grant #\\d+ \\(user:dan read"):
        policy.set_label("open", "course-only")
    # A link made before a no-links label stops working once the label is set.
    link, _ = policy.create_link("later/a.ipynb", "read")
    with pytest.raises(PolicyError, match="forbids share links"):
        policy.set_label("later", "confidential")
    assert [label.name for label in policy.labels_on("vault/deep/x.ipynb")] == ["confidential"]
    assert policy.labels_on("vault/deep/x.ipynb")[0].banner == "CONFIDENTIAL"


def test_revoked_and_expired_links_open_nothing(world):
    _, engine, policy, _ = world
    link, token = policy.create_link("talk.ipynb", "read-run")
    assert policy.link_for_token(token).id == link.id
    assert caps(engine, Actor.for_link(link.id), "talk.ipynb") == {"read", "run"}
    assert caps(engine, Actor.for_link(link.id), "talk2.ipynb") == set()
    policy.revoke_link(link.id)
    assert policy.link_for_token(token) is None
    assert caps(engine, Actor.for_link(link.id), "talk.ipynb") == set()
    short, short_token = policy.create_link("t.ipynb", "read", expires_at=utcnow() + dt.timedelta(seconds=1))
    time.sleep(1.1)
    assert policy.link_for_token(short_token) is None
    assert caps(engine, Actor.for_link(short.id), "t.ipynb") == set()
    assert policy.link_for_token("wdl_not-a-token") is None
    assert policy.link_for_token("garbage") is None


def test_a_change_and_its_audit_record_commit_together(store, world, warden_state):
    from jupyter_warden.audit.log import AuditLog, load_or_create_key
    from jupyter_warden.policy.changes import Audited

    _, engine, policy, actor = world
    log = AuditLog(store, load_or_create_key(warden_state))
    ref = policy.grant("x", "user:dan", "read", audited=Audited(log, "alice", "10.0.0.1"))
    [record] = log.query(path="x")
    assert (record.actor, record.action, record.outcome, record.grant_id) == (
        "alice", "grant.create", "allow", ref.id
    )

    class FailingLog(AuditLog):
        def record(self, *args, **kwargs):
            super().record(*args, **kwargs)
            raise RuntimeError("the disk filled up after the record")

    with pytest.raises(RuntimeError):
        policy.grant("y", "user:dan", "read", audited=Audited(FailingLog(store, log.key), "alice"))
    # Neither the grant nor its record survived.
    assert policy.grants_on("y", inherited=False) == []
    assert log.query(path="y") == []
    assert log.verify().ok
