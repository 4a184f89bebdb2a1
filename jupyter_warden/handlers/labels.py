"""Labels: their definitions (``/api/warden/labels``) and the labels on paths (``/api/warden/path-labels``).

Anyone signed in may read the definitions; only admins define them. Putting
a label on a path or taking it off needs ``manage`` on that path.
"""

from __future__ import annotations

import re

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..names import InvalidName, normalize_name
from ..policy.changes import PolicyError
from .base import WardenAPIHandler
from .permissions import label_json

# The banner's colour reaches the UI's CSS: a hex colour or a colour name, nothing else.
_COLOUR = re.compile(r"#[0-9a-fA-F]{3,8}|[a-zA-Z]{1,30}")
MAX_BANNER = 200


def label_name(raw: str) -> str:
    try:
        return normalize_name(raw, "label name")
    except InvalidName as e:
        raise web.HTTPError(400, str(e)) from None


class LabelsHandler(WardenAPIHandler):
    @web.authenticated
    @authorized
    def get(self):
        self.reply({"labels": [label_json(label) for label in self.warden.policy.list_labels()]})


class LabelHandler(WardenAPIHandler):
    @web.authenticated
    @authorized
    def put(self, name: str):
        name = label_name(name)
        body = self.json_body({}, {"banner": str, "colour": str, "no_links": bool, "only_groups": list})
        banner, colour = body.get("banner"), body.get("colour")
        if banner is not None and len(banner) > MAX_BANNER:
            raise web.HTTPError(400, f"the banner is longer than {MAX_BANNER} characters")
        if colour is not None and not _COLOUR.fullmatch(colour):
            raise web.HTTPError(400, f"colour {colour!r} must be a hex colour (#c00) or a colour name (red)")
        groups = body.get("only_groups") or []
        if not all(isinstance(g, str) for g in groups):
            raise web.HTTPError(400, "only_groups must be a list of group names")
        details = {"label": name}
        self.require_admin("label.define", details=details)
        policy = self.warden.policy
        try:
            with self.warden.store.transaction() as s:
                for group in groups:
                    policy.subject_key(s, f"group:{group}")
        except PolicyError as e:
            raise web.HTTPError(400, str(e)) from None
        try:
            label = policy.define_label(
                name, banner=banner, colour=colour,
                no_links=bool(body.get("no_links")), only_groups=groups,
                audited=self.audited(details),
            )
        except PolicyError as e:
            self.audit("label.define", "deny", None, reason=str(e), details=details)
            raise web.HTTPError(409, str(e)) from None
        self.reply(label_json(label))


class PathLabelsHandler(WardenAPIHandler):
    @web.authenticated
    @authorized
    def get(self):
        path = self.path_argument(required=True)
        self.require("read", path, "contents.read", {"request": "labels on path"})
        self.reply({"path": path, "labels": [label_json(label) for label in self.warden.policy.labels_on(path)]})

    @web.authenticated
    @authorized
    def post(self):
        body = self.json_body({"path": str, "label": str})
        path = self.normalize(body["path"])
        name = label_name(body["label"])
        details = {"label": name}
        self.require("manage", path, "label.set", details)
        if name not in {label.name for label in self.warden.policy.list_labels()}:
            raise web.HTTPError(400, f"there is no label named {name!r}; an admin defines labels first")
        try:
            label = self.warden.policy.set_label(path, name, audited=self.audited(details))
        except PolicyError as e:
            self.audit("label.set", "deny", path, reason=str(e), details=details)
            raise web.HTTPError(409, str(e)) from None
        self.reply(label_json(label), status=201)

    @web.authenticated
    @authorized
    def delete(self):
        path = self.path_argument(required=True)
        raw = self.get_query_argument("label", default=None)
        if not raw:
            raise web.HTTPError(400, "the query parameter 'label' is required")
        name = label_name(raw)
        details = {"label": name}
        self.require("manage", path, "label.remove", details)
        try:
            self.warden.policy.remove_label(path, name, audited=self.audited(details))
        except PolicyError as e:
            raise web.HTTPError(404, str(e)) from None
        self.set_status(204)
        self.finish()
