"""Every other surface: terminals, posting events, config, the lab's own APIs, other extensions' handlers.

Non-admins get the signed-in allow-list and their own workspaces and
settings; anything else the warden does not know is for admins only,
unless an operator allow-lists it.
"""

from __future__ import annotations

import json

import pytest
from tornado.httpclient import HTTPClientError

from conftest import auth
from test_enforce_contents import requester


@pytest.fixture
def jp_server_config(warden_state, warden_db_url, warden_config):
    # jupyter_lsp too: an extension with a resource ('lsp') the warden does not know.
    return {
        "ServerApp": {
            "jpserver_extensions": {"jupyter_warden": True, "jupyterlab": True, "jupyter_lsp": True}
        },
        "Warden": {"state_dir": str(warden_state), "db_url": warden_db_url, **warden_config},
    }


@pytest.fixture
def tokens(make_user):
    return {
        "alice": make_user("alice"),
        "bob": make_user("bob"),
        "root": make_user("root", admin=True),
    }


# (method, url parts, body): what any signed-in user may do.
SIGNED_IN = [
    ("GET", ("api", "status"), None),
    ("GET", ("api", "me"), None),
    ("GET", ("api", "kernelspecs"), None),
    ("GET", ("api", "config", "notebook"), None),
    ("GET", ("api", "nbconvert"), None),
    ("GET", ("lab",), None),
    ("GET", ("lab", "api", "settings"), None),
    ("GET", ("lab", "api", "translations"), None),
]

# What only admins may do, by default.
ADMIN_ONLY = [
    ("GET", ("api", "terminals"), None),
    ("POST", ("api", "terminals"), ""),
    ("PATCH", ("api", "config", "notebook"), {"x": 1}),
    ("PUT", ("api", "config", "notebook"), {"x": 1}),
    ("POST", ("api", "events"), {"schema_id": "x", "version": "1", "data": {}}),
    ("GET", ("api", "resolvePath"), None),
    ("GET", ("lsp", "status"), None),  # another extension's resource
    ("GET", ("lab", "api", "build"), None),  # handlers without @authorized
    ("GET", ("lab", "api", "extensions"), None),
    ("POST", ("lab", "api", "plugins"), {}),
    ("GET", ("metrics",), None),
]


@pytest.mark.parametrize("method, parts, body", SIGNED_IN)
async def test_signed_in_surfaces(jp_fetch, tokens, method, parts, body):
    response = await requester(jp_fetch, tokens["bob"])(*parts, method=method, body=body)
    assert response.code == 200, (parts, response.code)


@pytest.mark.parametrize("method, parts, body", ADMIN_ONLY)
async def test_admin_only_surfaces(jp_fetch, warden, tokens, method, parts, body):
    bob = requester(jp_fetch, tokens["bob"])
    response = await bob(*parts, method=method, body=body)
    assert response.code == 403, (parts, response.code)
    assert b"admin" in response.body
    assert any(r.outcome == "deny" for r in warden.audit.query(actor="bob"))
    if method == "GET":
        admin = await requester(jp_fetch, tokens["root"])(*parts, method=method, body=body,
                                                          params={"path": "x"})
        assert admin.code != 403, parts


async def test_websockets_of_terminals_are_refused(jp_fetch, jp_ws_fetch, tokens):
    # (The event bus socket is open to everyone, filtered: tests/test_events.py.)
    admin = requester(jp_fetch, tokens["root"])
    terminal = json.loads((await admin("api", "terminals", method="POST", body="")).body)
    with pytest.raises(HTTPClientError) as refused:
        await jp_ws_fetch("terminals", "websocket", terminal["name"], headers=auth(tokens["bob"]))
    assert refused.value.code == 403
    assert (await admin("api", "terminals", terminal["name"], method="DELETE")).code == 204
    assert (await requester(jp_fetch, tokens["bob"])("api", "shutdown", method="POST")).code == 403


class TestAllowList:
    @pytest.fixture
    def warden_config(self):
        return {
            "signed_in_resources": ["lsp"],
            "signed_in_handlers": ["jupyterlab.handlers.build_handler.BuildHandler"],
            "terminals_for_everyone": True,
        }

    async def test_an_operator_can_allow_list_resources_and_handlers(self, jp_fetch, tokens):
        bob = requester(jp_fetch, tokens["bob"])
        assert (await bob("lsp", "status")).code == 200
        assert (await bob("lab", "api", "build")).code == 200
        assert (await bob("api", "terminals")).code == 200
        # Only what was named.
        assert (await bob("lab", "api", "extensions")).code == 403


async def test_workspaces_are_per_user(jp_fetch, tokens):
    alice = requester(jp_fetch, tokens["alice"])
    bob = requester(jp_fetch, tokens["bob"])
    space = {"data": {"layout-restorer:data": {"secret": "alice-layout"}}, "metadata": {"id": "lab"}}
    assert (await alice("lab", "api", "workspaces", "lab", method="PUT", body=space)).code == 204
    seen = await bob("lab", "api", "workspaces", "lab")
    assert seen.code == 200 and b"alice-layout" not in seen.body
    listed = await bob("lab", "api", "workspaces")
    assert b"alice-layout" not in listed.body
    mine = {"data": {"bob": "bob-layout"}, "metadata": {"id": "lab"}}
    assert (await bob("lab", "api", "workspaces", "lab", method="PUT", body=mine)).code == 204
    assert (await bob("lab", "api", "workspaces", "lab", method="DELETE")).code == 204
    kept = await alice("lab", "api", "workspaces", "lab")
    assert b"alice-layout" in kept.body and b"bob-layout" not in kept.body


async def test_settings_are_per_user(jp_fetch, tokens):
    alice = requester(jp_fetch, tokens["alice"])
    bob = requester(jp_fetch, tokens["bob"])
    plugin = ("lab", "api", "settings", "@jupyterlab/apputils-extension:themes")
    raw = json.dumps({"theme": "JupyterLab Dark"})
    assert (await alice(*plugin, method="PUT", body={"raw": raw})).code == 204
    assert "JupyterLab Dark" in json.loads((await alice(*plugin)).body)["raw"]
    assert "JupyterLab Dark" not in json.loads((await bob(*plugin)).body)["raw"]


async def test_an_unknown_contents_handler_is_stopped_before_its_prepare(
    jp_fetch, jp_serverapp, warden, tokens
):
    from jupyter_server.auth.decorator import authorized
    from jupyter_server.base.handlers import APIHandler
    from jupyter_server.utils import url_path_join

    prepared = []

    class RoomHandler(APIHandler):
        """Like real-time collaboration: loads the file in prepare, checks in get."""

        auth_resource = "contents"

        async def prepare(self):
            await super().prepare()
            prepared.append(self.current_user.username)

        @authorized
        async def get(self, path):
            self.finish("{}")

    jp_serverapp.web_app.add_handlers(
        ".*$", [(url_path_join(jp_serverapp.base_url, "x-room", "(.*)"), RoomHandler)]
    )
    warden.policy.grant("", "user:bob", "manage")
    assert (await requester(jp_fetch, tokens["bob"])("x-room", "nb.ipynb")).code == 403
    assert prepared == []
    assert (await requester(jp_fetch, tokens["root"])("x-room", "nb.ipynb")).code == 200
    assert prepared == ["root"]
