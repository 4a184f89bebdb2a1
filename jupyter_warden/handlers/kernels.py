"""Kernel shares (``/api/warden/kernels/{kernel_id}/shares``) and why a kernel ended (``.../exit``).

A kernel's owner (or an admin) lets named users into the kernel, and takes
that back. A share lets its user run code *as the owner*, so the user must
already have read-write-run on every notebook the kernel runs for.
"""

from __future__ import annotations

import datetime as dt

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..enforce.kernel_channels import run_paths
from ..enforce.kernel_shares import owner_of
from ..policy.engine import Actor
from .base import WardenAPIHandler

_SHARE_NEEDS = frozenset({"read", "write", "run"})


class KernelSharesHandler(WardenAPIHandler):
    def _owned_kernel(self, kernel_id: str, action: str) -> str:
        """The kernel's owner subject; 404 unless the requester owns it or is an admin."""
        km = self.kernel_manager
        owner = owner_of(km, kernel_id) if kernel_id in km else None
        if owner is None or not (self.actor.admin or owner == self.actor.owner):
            self.audit(action, "deny", None, reason="not the kernel's owner", details={"kernel": kernel_id})
            raise web.HTTPError(404, f"there is no kernel {kernel_id!r} of yours")
        return owner

    def _user_argument(self, body: dict | None) -> str:
        name = (body or {}).get("user") if body is not None else self.get_query_argument("user", None)
        if not isinstance(name, str) or not name:
            raise web.HTTPError(400, "name the user: {\"user\": NAME} (or ?user=NAME on DELETE)")
        return name

    def _state(self, kernel_id: str, owner: str) -> dict:
        return {"kernel": kernel_id, "owner": owner, "users": self.warden.kernel_shares.users(kernel_id)}

    @web.authenticated
    @authorized
    def get(self, kernel_id: str):
        owner = self._owned_kernel(kernel_id, "kernel.share")
        self.reply(self._state(kernel_id, owner))

    @web.authenticated
    @authorized
    def post(self, kernel_id: str):
        owner = self._owned_kernel(kernel_id, "kernel.share")
        name = self._user_argument(self.json_body({"user": str}))
        details = {"kernel": kernel_id, "user": name}
        account = self.warden.accounts.get_user(name)
        if account is None:
            self.audit("kernel.share", "deny", None, reason="no such user", details=details)
            raise web.HTTPError(400, f"there is no user {name!r}")
        target = Actor.for_account(account)
        if target.owner == owner:
            raise web.HTTPError(400, f"{name} owns this kernel already")
        paths = run_paths(self.session_manager, kernel_id)
        if not paths:
            self.audit("kernel.share", "deny", None, reason="the kernel runs for no notebook", details=details)
            raise web.HTTPError(409, "this kernel runs for no notebook, so it can't be shared")
        for path in paths:
            effective = self.warden.engine.effective(target, path)
            if not _SHARE_NEEDS <= effective.capabilities:
                reason = f"{name} has {effective.level or 'nothing'} on '{path}', not read-write-run"
                self.audit("kernel.share", "deny", path, reason=reason, details=details)
                raise web.HTTPError(409, f"{reason}; only users with read-write-run on the notebook "
                                         "can be let into its kernel")
        # Audited before it takes effect (G8).
        self.audit("kernel.share", "allow", paths[0], reason=f"shared by {self.actor.name}", details=details)
        self.warden.kernel_shares.add(kernel_id, target)
        self.reply({
            **self._state(kernel_id, owner),
            "warning": f"{name} can now run any code in this kernel, as its owner ({owner}): "
                       f"read and change everything the kernel can reach, and see its variables.",
        }, status=201)

    @web.authenticated
    @authorized
    def delete(self, kernel_id: str):
        self._owned_kernel(kernel_id, "kernel.unshare")
        body = None
        if self.request.body.strip():
            body = self.json_body({"user": str})
        name = self._user_argument(body)
        account = self.warden.accounts.get_user(name)
        subject = Actor.for_account(account).owner if account is not None else None
        shares = self.warden.kernel_shares
        if subject is None or not shares.is_shared_with(kernel_id, subject):
            raise web.HTTPError(404, f"kernel {kernel_id} is not shared with {name!r}")
        self.audit("kernel.unshare", "allow", None, reason=f"revoked by {self.actor.name}",
                   details={"kernel": kernel_id, "user": name})
        shares.remove(kernel_id, subject)  # closes that user's connections to it at once
        self.set_status(204)
        self.finish()


class KernelExitHandler(WardenAPIHandler):
    """``/api/warden/kernels/{kernel_id}/exit``: why a kernel last died or was stopped by the sandbox."""

    @web.authenticated
    @authorized
    def get(self, kernel_id: str):
        end = self.warden.kernel_ends.get(kernel_id)
        subject = self.actor.owner  # a link guest: its own kernels only
        if end is None or not (self.actor.admin or subject == end["owner"] or subject in end["users"]):
            raise web.HTTPError(404, f"no kernel {kernel_id!r} of yours was stopped by a limit")
        self.reply({k: end[k] for k in ("kernel", "cause", "message", "exit_code")}
                   | {"at": _iso(end["at"])})


def _iso(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.timezone.utc).isoformat()
