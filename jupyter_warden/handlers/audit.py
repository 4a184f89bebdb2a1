"""``GET /api/warden/audit``: audit records, for admins (all) and managers (their paths).

A manager sees only records whose path is under the asked path and that
they manage; records about no path (sign-ins, label definitions) are
for admins.
"""

from __future__ import annotations

from jupyter_server.auth.decorator import authorized
from tornado import web

from .base import WardenAPIHandler, parse_time

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


class AuditHandler(WardenAPIHandler):
    @web.authenticated
    @authorized
    def get(self):
        path = self.path_argument()
        since = parse_time(self.get_query_argument("since", default=None), "since")
        actor_filter = self.get_query_argument("actor", default=None) or None
        raw_limit = self.get_query_argument("limit", default=str(DEFAULT_LIMIT))
        if not (raw_limit.isascii() and raw_limit.isdigit()) or not 1 <= int(raw_limit) <= MAX_LIMIT:
            raise web.HTTPError(400, f"limit must be a whole number from 1 to {MAX_LIMIT}")
        actor = self.actor
        if not actor.admin:
            if actor.link_id:
                self.audit("contents.manage", "deny", path, reason="guests can't read the audit log")
                raise web.HTTPError(403, "guests can't read the audit log")
            self.require("manage", path, "contents.manage", {"request": "audit query"})
        records = self.warden.audit.query(
            since=since, actor=actor_filter, under=path, limit=int(raw_limit), newest_first=True
        )
        if not actor.admin:
            engine = self.warden.engine
            records = [r for r in records if self._manages(engine, actor, r.path)]
        self.reply({"path": path, "records": [r.as_json() for r in reversed(records)]})

    @staticmethod
    def _manages(engine, actor, path: str | None) -> bool:
        if path is None:
            return False
        try:
            return engine.check(actor, "manage", path).allowed
        except ValueError:  # a record about a path the policy refuses to spell
            return False
