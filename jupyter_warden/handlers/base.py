"""What every /api/warden handler shares: who is asking, one way to require a capability, input checks.

Handlers collect facts (actor, capability, path) and ask the policy
engine; ``require`` turns its answer into 404 (the user can't read the
path, so must not learn it exists), 403, or nothing. Bad input is 400.
"""

from __future__ import annotations

import datetime as dt
import json

from jupyter_server.base.handlers import APIHandler
from tornado import web

from ..policy.changes import Audited
from ..policy.engine import Actor, Decision, GrantRef
from ..policy.paths import BadPath, normalize_path
from ..store import StoreUnavailable

# The jupyter_server Authorizer sees this resource for every /api/warden
# request; the per-path decision is made here, through the engine.
AUTH_RESOURCE = "warden"


def iso(value: dt.datetime | None) -> str | None:
    return value.astimezone(dt.timezone.utc).isoformat() if value else None


def parse_time(value, field: str) -> dt.datetime | None:
    """An ISO 8601 time with a zone (``Z`` or ``+01:00``), or None; else 400."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise web.HTTPError(400, f"{field} must be an ISO 8601 time as a string, e.g. 2026-12-01T09:00Z")
    text = value.strip()
    try:
        when = dt.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
        if when.tzinfo is None:
            raise web.HTTPError(
                400, f"{field} {value!r} has no time zone: add Z (UTC) or an offset such as +01:00"
            )
        return when.astimezone(dt.timezone.utc)
    except (ValueError, OverflowError):  # OverflowError: a zone pushing it past year 9999
        raise web.HTTPError(
            400, f"{field} {value!r} is not an ISO 8601 time, e.g. 2026-12-01T09:00Z"
        ) from None


def grant_json(g: GrantRef, target: str | None = None) -> dict:
    data = {
        "id": g.id,
        "path": g.path,
        "subject": g.subject,
        "level": g.level,
        "not_before": iso(g.not_before),
        "not_after": iso(g.not_after),
    }
    if target is not None:
        data["inherited"] = g.path != target
    return data


class WardenAPIHandler(APIHandler):
    """Base of the /api/warden handlers."""

    auth_resource = AUTH_RESOURCE

    @property
    def warden(self):
        return self.settings["warden"]

    @property
    def actor(self) -> Actor:
        return Actor.for_account(self.warden_account)

    @property
    def client(self) -> str | None:
        return self.request.remote_ip

    # -- input --------------------------------------------------------------

    def path_argument(self, name: str = "path", required: bool = False) -> str:
        raw = self.get_query_argument(name, default=None)
        if raw is None and required:
            raise web.HTTPError(400, f"the query parameter {name!r} is required")
        return self.normalize(raw or "", name)

    @staticmethod
    def normalize(raw, field: str = "path") -> str:
        if not isinstance(raw, str):
            raise web.HTTPError(400, f"{field} must be a string: a path relative to the server root")
        try:
            return normalize_path(raw)
        except BadPath as e:
            raise web.HTTPError(400, str(e)) from None

    def json_body(self, required: dict[str, type], optional: dict[str, type] = {}) -> dict:  # noqa: B006
        """The request's JSON object, with exactly these fields of these types."""
        try:
            body = json.loads(self.request.body or b"")
        except (ValueError, UnicodeDecodeError):
            raise web.HTTPError(400, "the request body must be a JSON object") from None
        if not isinstance(body, dict):
            raise web.HTTPError(400, "the request body must be a JSON object")
        unknown = sorted(set(body) - set(required) - set(optional))
        if unknown:
            known = ", ".join([*required, *optional])
            raise web.HTTPError(400, f"unknown field(s) {', '.join(unknown)}: expected {known}")
        for name in required:
            if body.get(name) is None:
                raise web.HTTPError(400, f"the field {name!r} is required")
        for name, kind in {**required, **optional}.items():
            value = body.get(name)
            # bool is an int in Python; a JSON true is never a number here.
            if value is not None and (
                not isinstance(value, kind) or (kind is not bool and isinstance(value, bool))
            ):
                raise web.HTTPError(400, f"the field {name!r} must be a {_JSON_TYPES[kind]}")
        return body

    # -- deciding -----------------------------------------------------------

    def require(
        self,
        capability: str,
        path: str,
        action: str,
        details: dict | None = None,
        not_found: str | None = None,
    ) -> Decision:
        """Ask the engine; on refusal audit it and raise 404 (no read) or 403.

        ``not_found`` is the 404 message, when the caller did not name the
        path itself (the message must not reveal it).
        """
        decision = self.warden.engine.check(self.actor, capability, path)
        if decision.allowed:
            return decision
        self.audit(action, "deny", path, reason=decision.reason, details=details)
        if not self.warden.engine.check(self.actor, "read", path).allowed:
            raise web.HTTPError(
                404, not_found or f"'{path or '/'}' was not found, or you have no access to it"
            )
        raise web.HTTPError(
            403,
            f"you need {capability} on '{path or '/'}' for this; ask someone who manages it",
        )

    def require_admin(self, action: str, path: str | None = None, details: dict | None = None) -> None:
        if self.actor.admin:
            return
        self.audit(action, "deny", path, reason="only server admins may do this", details=details)
        raise web.HTTPError(403, "only server admins may do this")

    def audited(self, details: dict | None = None) -> Audited:
        """For a policy change: its record is written in the change's own transaction."""
        return Audited(self.warden.audit, self.actor.name, self.client, details)

    def audit(
        self,
        action: str,
        outcome: str,
        path: str | None,
        reason: str | None = None,
        grant_id: int | None = None,
        details: dict | None = None,
    ) -> None:
        self.warden.audit.record(
            actor=self.actor.name,
            action=action,
            outcome=outcome,
            path=path,
            reason=reason,
            grant_id=grant_id,
            client=self.client,
            details=details,
        )

    # -- output -------------------------------------------------------------

    def reply(self, data, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data))

    def write_error(self, status_code: int, **kwargs) -> None:
        exc_info = kwargs.get("exc_info")
        if exc_info and isinstance(exc_info[1], StoreUnavailable):
            # Fail closed, and say why, rather than an opaque 500.
            self.set_status(503)
            kwargs["exc_info"] = (web.HTTPError, web.HTTPError(503, str(exc_info[1])), None)
            status_code = 503
        super().write_error(status_code, **kwargs)


_JSON_TYPES = {str: "string", bool: "boolean", int: "integer", list: "list", dict: "object"}
