"""The /api/warden HTTP API on a real server: each endpoint allowed and refused, bad input, audit, OpenAPI."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from conftest import NO_AUTH, Browser, auth
from jupyter_warden.handlers import ROUTES, url_pattern
from jupyter_warden.policy.levels import LEVELS

HTTP_METHODS = ("get", "post", "put", "patch", "delete")


async def call(jp_fetch, method, *parts, token=None, body=None, params=None, headers=None):
    """One request; returns (status, parsed JSON or None)."""
    response = await jp_fetch(
        *parts,
        method=method,
        body=None if body is None else (body if isinstance(body, (str, bytes)) else json.dumps(body)),
        params=params or {},
        headers=headers if headers is not None else (auth(token) if token else NO_AUTH),
        raise_error=False,
        allow_nonstandard_methods=True,
    )
    text = response.body.decode() if response.body else ""
    return response.code, (json.loads(text) if text.startswith(("{", "[")) else None)


@pytest.fixture
def people(warden, make_user):
    """alice manages course/; bob reads course/lecture.ipynb; carol has nothing; root is admin."""
    tokens = {
        "alice": make_user("alice"),
        "bob": make_user("bob"),
        "carol": make_user("carol"),
        "root": make_user("root", admin=True),
    }
    warden.accounts.add_group("tas")
    warden.accounts.change_members("tas", add=["carol"])
    warden.policy.grant("course", "user:alice", "manage")
    warden.policy.grant("course/lecture.ipynb", "user:bob", "read")
    return tokens


def later(**kw) -> str:
    return (dt.datetime.now(dt.timezone.utc) + dt.timedelta(**kw)).isoformat()


def records(warden, action):
    return [r for r in warden.audit.tail(200) if r.action == action]


# -- permissions --------------------------------------------------------------


async def test_permissions_show_level_reason_grants_and_labels(jp_fetch, warden, people):
    warden.policy.define_label("confidential", banner="Confidential", colour="#c00", no_links=True)
    warden.policy.set_label("course", "confidential")
    code, data = await call(
        jp_fetch, "GET", "api", "warden", "permissions",
        token=people["bob"], params={"path": "course/lecture.ipynb"},
    )
    assert code == 200
    assert data["capabilities"] == ["read"] and data["level"] == "read"
    assert "user:bob has read" in data["reason"]
    assert [g["subject"] for g in data["grants"]] == ["user:bob"]
    assert data["grants"][0]["inherited"] is False
    assert data["labels"] == [
        {"name": "confidential", "banner": "Confidential", "colour": "#c00",
         "no_links": True, "only_groups": [], "path": "course"}
    ]
    code, data = await call(
        jp_fetch, "GET", "api", "warden", "permissions",
        token=people["alice"], params={"path": "course/lecture.ipynb"},
    )
    assert data["level"] == "manage" and data["grants"][0]["inherited"] is True


async def test_permissions_on_an_unreadable_path_tell_nothing(jp_fetch, warden, people, jp_root_dir):
    (jp_root_dir / "course").mkdir()
    (jp_root_dir / "course" / "secret.ipynb").write_text("{}")
    warden.policy.define_label("exam", banner="Exam")
    warden.policy.set_label("course/secret.ipynb", "exam")
    answers = []
    for path in ("course/secret.ipynb", "course/no-such-file.ipynb"):
        code, data = await call(
            jp_fetch, "GET", "api", "warden", "permissions", token=people["bob"], params={"path": path}
        )
        assert code == 200
        assert data["capabilities"] == [] and data["level"] == "none"
        assert data["grants"] == [] and data["labels"] == []
        answers.append({k: v for k, v in data.items() if k not in ("path", "reason")})
    # Existing or not, labelled or not: the same answer.
    assert answers[0] == answers[1]


async def test_permissions_need_a_sign_in(jp_fetch, people):
    code, _ = await call(jp_fetch, "GET", "api", "warden", "permissions", params={"path": "course"})
    assert code == 403


async def test_admin_has_everything(jp_fetch, people):
    code, data = await call(
        jp_fetch, "GET", "api", "warden", "permissions", token=people["root"], params={"path": "x/y"}
    )
    assert code == 200 and data["level"] == "manage" and "admin" in data["reason"]


# -- grants -------------------------------------------------------------------


async def test_a_manager_lists_makes_and_revokes_grants(jp_fetch, warden, people):
    code, grant = await call(
        jp_fetch, "POST", "api", "warden", "grants", token=people["alice"],
        body={"path": "course/hw1.ipynb", "subject": "user:carol", "level": "read-write",
              "not_after": later(hours=1)},
    )
    assert code == 201, grant
    assert grant["subject"] == "user:carol" and grant["level"] == "read-write"
    assert grant["not_after"] is not None
    assert warden.engine.check(
        warden_actor(warden, "carol"), "write", "course/hw1.ipynb"
    ).allowed

    code, data = await call(
        jp_fetch, "GET", "api", "warden", "grants", token=people["alice"],
        params={"path": "course/hw1.ipynb"},
    )
    assert code == 200
    listed = {(g["subject"], g["level"], g["inherited"]) for g in data["grants"]}
    assert listed == {("user:carol", "read-write", False), ("user:alice", "manage", True)}

    code, _ = await call(
        jp_fetch, "DELETE", "api", "warden", "grants", token=people["alice"],
        params={"path": "course/hw1.ipynb", "subject": "user:carol"},
    )
    assert code == 204
    assert not warden.engine.check(warden_actor(warden, "carol"), "read", "course/hw1.ipynb").allowed
    created, revoked = records(warden, "grant.create"), records(warden, "grant.revoke")
    assert created[-1].actor == "alice" and created[-1].outcome == "allow"
    assert created[-1].path == "course/hw1.ipynb" and created[-1].details["subject"] == "user:carol"
    assert created[-1].client
    assert revoked[-1].outcome == "allow" and revoked[-1].actor == "alice"


def warden_actor(warden, name):
    from jupyter_warden.policy.engine import Actor

    return Actor.for_account(warden.accounts.get_user(name))


async def test_grants_are_refused_without_manage(jp_fetch, warden, people):
    # bob reads the lecture: he may know it exists, so 403.
    code, data = await call(
        jp_fetch, "POST", "api", "warden", "grants", token=people["bob"],
        body={"path": "course/lecture.ipynb", "subject": "user:carol", "level": "read"},
    )
    assert code == 403 and "manage" in data["message"]
    code, _ = await call(
        jp_fetch, "GET", "api", "warden", "grants", token=people["bob"],
        params={"path": "course/lecture.ipynb"},
    )
    assert code == 403
    # carol can't read course/ at all: 404, as for a path that doesn't exist.
    for method, kw in (
        ("GET", {"params": {"path": "course"}}),
        ("POST", {"body": {"path": "course", "subject": "user:carol", "level": "manage"}}),
        ("DELETE", {"params": {"path": "course", "subject": "user:alice"}}),
    ):
        code, data = await call(jp_fetch, method, "api", "warden", "grants", token=people["carol"], **kw)
        assert code == 404, (method, data)
    denied = records(warden, "grant.create")
    assert [(r.actor, r.outcome) for r in denied] == [("bob", "deny"), ("carol", "deny")]
    assert records(warden, "grant.revoke")[-1].outcome == "deny"
    # Nothing changed.
    assert not warden.engine.check(warden_actor(warden, "carol"), "read", "course").allowed


async def test_admin_grants_anywhere(jp_fetch, warden, people):
    code, _ = await call(
        jp_fetch, "POST", "api", "warden", "grants", token=people["root"],
        body={"path": "other", "subject": "group:tas", "level": "read-run"},
    )
    assert code == 201
    assert warden.engine.check(warden_actor(warden, "carol"), "run", "other/x.ipynb").allowed


async def test_a_manager_may_take_a_subtree_away_with_none(jp_fetch, warden, people):
    code, _ = await call(
        jp_fetch, "POST", "api", "warden", "grants", token=people["alice"],
        body={"path": "course", "subject": "authenticated", "level": "read"},
    )
    assert code == 201
    code, _ = await call(
        jp_fetch, "POST", "api", "warden", "grants", token=people["alice"],
        body={"path": "course/private", "subject": "authenticated", "level": "none"},
    )
    assert code == 201
    carol = warden_actor(warden, "carol")
    assert warden.engine.check(carol, "read", "course/a.ipynb").allowed
    assert not warden.engine.check(carol, "read", "course/private/a.ipynb").allowed


async def test_a_label_limiting_grants_to_groups_is_409_naming_it(jp_fetch, warden, people):
    warden.policy.define_label("staff-only", only_groups=["tas"])
    warden.policy.set_label("course/solutions", "staff-only")
    code, data = await call(
        jp_fetch, "POST", "api", "warden", "grants", token=people["alice"],
        body={"path": "course/solutions/a.ipynb", "subject": "user:bob", "level": "read"},
    )
    assert code == 409 and "staff-only" in data["message"]
    assert records(warden, "grant.create")[-1].outcome == "deny"
    code, _ = await call(
        jp_fetch, "POST", "api", "warden", "grants", token=people["alice"],
        body={"path": "course/solutions/a.ipynb", "subject": "group:tas", "level": "read"},
    )
    assert code == 201


BAD_GRANTS = [
    ({"path": "course", "subject": "user:carol", "level": "owner"}, "unknown level"),
    ({"path": "course", "subject": "carol", "level": "read"}, "not one of"),
    ({"path": "course", "subject": "user:nobody", "level": "read"}, "no user named"),
    ({"path": "course", "subject": "group:", "level": "read"}, "not one of"),
    ({"path": "course", "subject": "link:abc", "level": "read"}, "link create"),
    ({"path": "course/../other", "subject": "user:carol", "level": "read"}, "not allowed"),
    ({"path": "course\x00", "subject": "user:carol", "level": "read"}, "not allowed"),
    ({"path": 3, "subject": "user:carol", "level": "read"}, "must be a string"),
    ({"path": "course", "subject": ["user:carol"], "level": "read"}, "must be a string"),
    ({"path": "course", "subject": "user:carol"}, "'level' is required"),
    ({"path": "course", "subject": "user:carol", "level": "read", "not_after": "tomorrow"}, "ISO 8601"),
    ({"path": "course", "subject": "user:carol", "level": "read", "not_after": "2030-01-01T00:00"},
     "time zone"),
    ({"path": "course", "subject": "user:carol", "level": "read", "not_after": 12}, "must be a string"),
    ({"path": "course", "subject": "user:carol", "level": "read", "until": "x"}, "unknown field"),
    ({"path": "course", "subject": "user:carol", "level": "read", "not_after": True}, "must be a string"),
    ({"path": "course", "subject": "user:carol", "level": None}, "'level' is required"),
    ([1, 2], "JSON object"),
    (b"\xff\xfe{", "JSON object"),
    ("{not json", "JSON object"),
    ("", "JSON object"),
]


async def test_bad_grant_input_is_400_with_a_message(jp_fetch, warden, people):
    for body, message in BAD_GRANTS:
        code, data = await call(jp_fetch, "POST", "api", "warden", "grants", token=people["alice"], body=body)
        assert code == 400, (body, data)
        assert message in data["message"], (body, data)
    assert warden.policy.grants_on("course", inherited=False)[0].subject == "user:alice"
    assert len(warden.policy.grants_on("course", inherited=False)) == 1


async def test_grant_times_the_policy_refuses_are_409(jp_fetch, people):
    code, data = await call(
        jp_fetch, "POST", "api", "warden", "grants", token=people["alice"],
        body={"path": "course", "subject": "user:carol", "level": "read",
              "not_before": later(hours=2), "not_after": later(hours=1)},
    )
    assert code == 409 and "not_after" in data["message"]


BAD_QUERIES = [
    ("GET", ("grants",), {}, "'path' is required"),
    ("GET", ("grants",), {"path": "a/../../etc"}, "not allowed"),
    ("GET", ("permissions",), {"path": "a//b"}, "not allowed"),
    ("GET", ("permissions",), {}, "'path' is required"),
    ("DELETE", ("grants",), {"path": "course"}, "'subject' is required"),
    ("DELETE", ("grants",), {"path": "course", "subject": "nobody"}, "not one of"),
    ("DELETE", ("grants",), {"path": "course", "subject": "user:carol"}, "no grant"),
    ("GET", ("audit",), {"limit": "0"}, "limit"),
    ("GET", ("audit",), {"limit": "lots"}, "limit"),
    ("GET", ("audit",), {"since": "yesterday"}, "ISO 8601"),
    ("GET", ("audit",), {"since": "9999-12-31T23:59:59-01:00"}, "ISO 8601"),
    ("GET", ("audit",), {"limit": "\u00b2"}, "limit"),
    ("GET", ("audit",), {"limit": "1001"}, "limit"),
    ("DELETE", ("path-labels",), {"path": "course"}, "'label' is required"),
    ("DELETE", ("path-labels",), {"path": "course", "label": "none-such"}, "no label"),
    ("DELETE", ("links", "feedface"), {}, "no share link"),
]


async def test_bad_query_input_is_4xx_with_a_message(jp_fetch, people):
    for method, parts, params, message in BAD_QUERIES:
        code, data = await call(
            jp_fetch, method, "api", "warden", *parts, token=people["root"], params=params
        )
        assert code in (400, 404), (parts, params, data)
        assert message in data["message"], (parts, params, data)


# -- labels -------------------------------------------------------------------


async def test_labels_are_defined_by_admins_and_read_by_anyone(jp_fetch, warden, people):
    definition = {"banner": "Exam material", "colour": "#b00", "no_links": True, "only_groups": ["tas"]}
    code, data = await call(
        jp_fetch, "PUT", "api", "warden", "labels", "exam", token=people["alice"], body=definition
    )
    assert code == 403
    assert records(warden, "label.define")[-1].outcome == "deny"
    code, data = await call(
        jp_fetch, "PUT", "api", "warden", "labels", "exam", token=people["root"], body=definition
    )
    assert code == 200 and data["only_groups"] == ["tas"] and data["no_links"] is True
    assert records(warden, "label.define")[-1].outcome == "allow"
    code, data = await call(jp_fetch, "GET", "api", "warden", "labels", token=people["carol"])
    assert code == 200 and [label["name"] for label in data["labels"]] == ["exam"]


BAD_LABELS = [
    ("exam", {"colour": "red;background:url(x)"}, "colour"),
    ("exam", {"banner": "x" * 201}, "longer"),
    ("exam", {"no_links": "yes"}, "boolean"),
    ("exam", {"only_groups": "tas"}, "list"),
    ("exam", {"only_groups": [1]}, "group names"),
    ("exam", {"only_groups": ["ghosts"]}, "no group named"),
    ("exam", {"secret": True}, "unknown field"),
    ("-bad-", {}, "not allowed"),
    ("exam", [], "JSON object"),
]


async def test_bad_label_definitions_are_400(jp_fetch, warden, people):
    for name, body, message in BAD_LABELS:
        code, data = await call(
            jp_fetch, "PUT", "api", "warden", "labels", name, token=people["root"], body=body
        )
        assert code == 400, (name, body, data)
        assert message in data["message"], (name, body, data)
    assert warden.policy.list_labels() == []


async def test_managers_set_and_remove_labels_on_their_paths(jp_fetch, warden, people):
    warden.policy.define_label("draft", banner="Draft")
    code, data = await call(
        jp_fetch, "POST", "api", "warden", "path-labels", token=people["alice"],
        body={"path": "course/hw1.ipynb", "label": "draft"},
    )
    assert code == 201 and data["path"] == "course/hw1.ipynb"
    code, data = await call(
        jp_fetch, "GET", "api", "warden", "path-labels", token=people["alice"],
        params={"path": "course/hw1.ipynb"},
    )
    assert [label["name"] for label in data["labels"]] == ["draft"]
    # bob reads only the lecture: he can't label it, and can't see hw1 at all.
    code, _ = await call(
        jp_fetch, "POST", "api", "warden", "path-labels", token=people["bob"],
        body={"path": "course/lecture.ipynb", "label": "draft"},
    )
    assert code == 403
    code, _ = await call(
        jp_fetch, "GET", "api", "warden", "path-labels", token=people["bob"],
        params={"path": "course/hw1.ipynb"},
    )
    assert code == 404
    code, _ = await call(
        jp_fetch, "DELETE", "api", "warden", "path-labels", token=people["bob"],
        params={"path": "course/hw1.ipynb", "label": "draft"},
    )
    assert code == 404
    code, _ = await call(
        jp_fetch, "DELETE", "api", "warden", "path-labels", token=people["alice"],
        params={"path": "course/hw1.ipynb", "label": "draft"},
    )
    assert code == 204
    assert warden.policy.labels_on("course/hw1.ipynb") == []
    assert [(r.outcome, r.actor) for r in records(warden, "label.set")] == [("allow", "alice"), ("deny", "bob")]
    assert [(r.outcome, r.actor) for r in records(warden, "label.remove")] == [("deny", "bob"), ("allow", "alice")]


async def test_setting_an_unknown_label_or_one_existing_grants_break(jp_fetch, warden, people):
    code, data = await call(
        jp_fetch, "POST", "api", "warden", "path-labels", token=people["alice"],
        body={"path": "course", "label": "ghost"},
    )
    assert code == 400 and "no label named 'ghost'" in data["message"]
    warden.policy.define_label("staff-only", only_groups=["tas"])
    code, data = await call(
        jp_fetch, "POST", "api", "warden", "path-labels", token=people["alice"],
        body={"path": "course", "label": "staff-only"},
    )
    # alice's and bob's grants in course/ are not to group:tas.
    assert code == 409 and "staff-only" in data["message"] and "revoke it first" in data["message"]
    assert warden.policy.labels_on("course") == []


# -- audit --------------------------------------------------------------------


async def test_audit_queries_admin_manager_and_others(jp_fetch, warden, people):
    warden.audit.record("alice", "contents.read", "allow", path="course/lecture.ipynb")
    warden.audit.record("dave", "contents.read", "allow", path="other/x.ipynb")
    warden.audit.record("dave", "auth.sign_in", "allow")
    code, data = await call(jp_fetch, "GET", "api", "warden", "audit", token=people["root"])
    assert code == 200
    assert {r["actor"] for r in data["records"]} >= {"alice", "dave"}
    code, data = await call(
        jp_fetch, "GET", "api", "warden", "audit", token=people["root"], params={"actor": "dave", "limit": "1"}
    )
    assert [r["action"] for r in data["records"]] == ["auth.sign_in"]

    code, data = await call(
        jp_fetch, "GET", "api", "warden", "audit", token=people["alice"], params={"path": "course"}
    )
    assert code == 200
    assert data["records"] and all(r["path"].startswith("course") for r in data["records"])
    # A manager of course/ asking for the whole server is refused (the root is readable to nobody but admins).
    code, _ = await call(jp_fetch, "GET", "api", "warden", "audit", token=people["alice"])
    assert code == 404
    code, _ = await call(
        jp_fetch, "GET", "api", "warden", "audit", token=people["bob"], params={"path": "course/lecture.ipynb"}
    )
    assert code == 403
    code, _ = await call(
        jp_fetch, "GET", "api", "warden", "audit", token=people["carol"], params={"path": "course"}
    )
    assert code == 404
    since = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)).isoformat()
    code, data = await call(
        jp_fetch, "GET", "api", "warden", "audit", token=people["root"], params={"since": since}
    )
    assert code == 200 and data["records"] == []


async def test_a_manager_does_not_see_audit_records_of_a_subtree_taken_away(jp_fetch, warden, people):
    warden.policy.grant("course/private", "user:alice", "none")
    warden.audit.record("root", "contents.read", "allow", path="course/private/grades.ipynb")
    warden.audit.record("root", "contents.read", "allow", path="course/public.ipynb")
    code, data = await call(
        jp_fetch, "GET", "api", "warden", "audit", token=people["alice"], params={"path": "course"}
    )
    paths = {r["path"] for r in data["records"]}
    assert "course/public.ipynb" in paths and "course/private/grades.ipynb" not in paths


# -- OpenAPI ------------------------------------------------------------------


def _registered_routes(jp_serverapp, base_url):
    """(pattern, handler) of every route the running server has under /api/warden or /warden."""
    found = {}
    for rule in jp_serverapp.web_app.default_router.rules:
        for inner in getattr(rule.target, "rules", []):
            pattern = inner.matcher.regex.pattern.rstrip("$")
            if pattern.startswith(base_url + "api/warden") or pattern.startswith(base_url + "warden/"):
                found[pattern] = inner.target
    return found


async def test_openapi_describes_exactly_the_registered_routes(jp_fetch, jp_serverapp, jp_base_url, people):
    code, document = await call(jp_fetch, "GET", "api", "warden", "openapi.json", token=people["carol"])
    assert code == 200 and document["openapi"].startswith("3.")
    registered = _registered_routes(jp_serverapp, jp_base_url)
    described = {jp_base_url.rstrip("/") + url_pattern(p) for p in document["paths"]}
    assert set(registered) == described
    templates = dict(ROUTES)
    for template, operations in document["paths"].items():
        handler = registered[jp_base_url.rstrip("/") + url_pattern(template)]
        assert handler is templates[template]
        implemented = {m for m in HTTP_METHODS if getattr(handler, m).__qualname__.split(".")[0] != "RequestHandler"}
        assert set(operations) == implemented, template
        for operation in operations.values():
            assert operation["responses"], template
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path":
                    assert "{" + parameter["name"] + "}" in template
    # Every level the code knows is the one the document offers.
    assert document["components"]["schemas"]["NewGrant"]["properties"]["level"]["enum"] == list(LEVELS)


async def test_openapi_document_references_resolve(jp_fetch, people):
    code, document = await call(jp_fetch, "GET", "api", "warden", "openapi.json", token=people["carol"])
    schemas = document["components"]["schemas"]

    def walk(node):
        if isinstance(node, dict):
            if "$ref" in node:
                assert node["$ref"].removeprefix("#/components/schemas/") in schemas, node
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    for template, operations in document["paths"].items():
        for method, operation in operations.items():
            statuses = set(operation["responses"])
            assert statuses and all(s.isdigit() for s in statuses), (template, method)
            if method in ("post", "put"):
                assert "requestBody" in operation, (template, method)


async def test_cookie_authenticated_changes_need_the_xsrf_token(jp_fetch, warden, people):
    browser = Browser(jp_fetch)
    await browser.sign_in("alice", "correct-horse")
    body = json.dumps({"path": "course/a.ipynb", "subject": "user:carol", "level": "read"})
    refused = await browser.request("api", "warden", "grants", method="POST", body=body)
    assert refused.code == 403
    assert warden.policy.grants_on("course/a.ipynb", inherited=False) == []
    allowed = await browser.request(
        "api", "warden", "grants", method="POST", body=body,
        headers={"X-XSRFToken": browser.cookies["_xsrf"]},
    )
    assert allowed.code == 201
