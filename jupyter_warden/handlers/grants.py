"""``/api/warden/grants``: list, make and take back grants on a path.

Each needs ``manage`` on the path (admins have it everywhere); a manager
may give any level there, ``none`` included. Label rules are the policy's
to enforce: a share they forbid is 409 with the label's name.
"""

from __future__ import annotations

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..policy.changes import PolicyError
from ..policy.levels import LEVELS
from .base import WardenAPIHandler, grant_json, parse_time


class GrantsHandler(WardenAPIHandler):
    def check_subject(self, subject: str) -> None:
        try:
            with self.warden.store.transaction() as s:
                self.warden.policy.subject_key(s, subject)
        except PolicyError as e:
            raise web.HTTPError(400, str(e)) from None

    @web.authenticated
    @authorized
    def get(self):
        path = self.path_argument(required=True)
        self.require("manage", path, "contents.manage", {"request": "list grants"})
        self.reply({"path": path, "grants": [grant_json(g, path) for g in self.warden.policy.grants_on(path)]})

    @web.authenticated
    @authorized
    def post(self):
        body = self.json_body(
            {"path": str, "subject": str, "level": str}, {"not_before": str, "not_after": str}
        )
        path = self.normalize(body["path"])
        level, subject = body["level"], body["subject"]
        if level not in LEVELS:
            raise web.HTTPError(400, f"unknown level {level!r}: use one of {', '.join(LEVELS)}")
        not_before = parse_time(body.get("not_before"), "not_before")
        not_after = parse_time(body.get("not_after"), "not_after")
        details = {"subject": subject, "level": level}
        self.require("manage", path, "grant.create", details)
        policy = self.warden.policy
        # A subject that is malformed or names nobody is bad input (400);
        # a well-formed share that the policy refuses is a conflict (409).
        self.check_subject(subject)
        try:
            grant = policy.grant(
                path, subject, level, not_before, not_after,
                by=self.actor.name, audited=self.audited(details),
            )
        except PolicyError as e:
            self.audit("grant.create", "deny", path, reason=str(e), details=details)
            raise web.HTTPError(409, str(e)) from None
        self.reply(grant_json(grant, path), status=201)

    @web.authenticated
    @authorized
    def delete(self):
        path = self.path_argument(required=True)
        subject = self.get_query_argument("subject", default=None)
        if not subject:
            raise web.HTTPError(400, "the query parameter 'subject' is required")
        details = {"subject": subject}
        self.require("manage", path, "grant.revoke", details)
        if not subject.startswith("link:"):
            self.check_subject(subject)
        try:
            self.warden.policy.revoke(path, subject, audited=self.audited(details))
        except PolicyError as e:
            raise web.HTTPError(404, str(e)) from None
        self.set_status(204)
        self.finish()
