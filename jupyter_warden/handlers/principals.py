"""``GET /api/warden/principals``: the users and groups a manager may share with.

The share dialog completes names from this. Only someone who manages the
path may ask, so the list of accounts is not open to every signed-in user.
"""

from __future__ import annotations

from jupyter_server.auth.decorator import authorized
from tornado import web

from .base import WardenAPIHandler

MAX_MATCHES = 50


class PrincipalsHandler(WardenAPIHandler):
    @web.authenticated
    @authorized
    def get(self):
        path = self.path_argument(required=True)
        query = (self.get_query_argument("q", default="") or "").strip().casefold()
        self.require("manage", path, "contents.manage", {"request": "list users and groups"})
        accounts = self.warden.accounts
        users = [
            {"name": a.name, "display_name": a.display_name}
            for a in accounts.list_users()
            if query in a.name.casefold() or query in a.display_name.casefold()
        ]
        groups = [{"name": name} for name in accounts.list_groups() if query in name.casefold()]
        self.reply({"path": path, "users": users[:MAX_MATCHES], "groups": groups[:MAX_MATCHES]})
