"""``GET /api/warden/permissions``: what the current user may do on a path, and why.

The UI's badge and banner read this. A path the user can't read gets the
same answer whether it exists or not: no capabilities and no details, so
the answer never tells what lies there (G1).
"""

from __future__ import annotations

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..policy.levels import CAPABILITIES
from .base import WardenAPIHandler, grant_json


def label_json(label) -> dict:
    return {
        "name": label.name,
        "banner": label.banner,
        "colour": label.colour,
        "no_links": label.no_links,
        "only_groups": list(label.only_groups),
        "path": label.path,
    }


class PermissionsHandler(WardenAPIHandler):
    @web.authenticated
    @authorized
    def get(self):
        path = self.path_argument(required=True)
        actor = self.actor
        effective = self.warden.engine.effective(actor, path)
        me = {"name": actor.name, "admin": actor.admin, "guest": actor.link_id is not None}
        if "read" not in effective.capabilities:
            self.reply(
                {
                    "path": path,
                    "user": me,
                    "capabilities": [],
                    "level": "none",
                    "reason": f"you have no access to '{path or '/'}'",
                    "grants": [],
                    "labels": [],
                }
            )
            return
        self.reply(
            {
                "path": path,
                "user": me,
                "capabilities": [c for c in CAPABILITIES if c in effective.capabilities],
                "level": effective.level,
                "reason": effective.reason,
                "grants": [grant_json(g, path) for g in effective.grants],
                "labels": [label_json(label) for label in self.warden.policy.labels_on(path)],
            }
        )
