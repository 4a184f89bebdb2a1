"""Identity from JupyterHub (``c.Warden.identity = "jupyterhub"``).

JupyterHub's own ``JupyterHubIdentityProvider`` (its OAuth, its token check
and its access scopes) says who is asking and whether the hub lets them reach
this server. This module turns that hub user into a warden account: created
on first sight, admin only as configured, hub groups mirrored as memberships.
"""

from __future__ import annotations

import asyncio
import logging

from jupyterhub.singleuser.extension import JupyterHubIdentityProvider
from tornado import web

from ..names import InvalidName, normalize_name
from ..store import StoreUnavailable
from .accounts import Account, AccountError, same_spelling

log = logging.getLogger(__name__)


def hub_account(warden, model: dict) -> Account:
    """The warden account of the hub user ``model`` (from the hub's /api/user), in step with it.

    Called on every request and every identity re-check of an open websocket:
    the model is the hub's answer, cached by HubOAuth for at most
    ``HubOAuth.cache_max_age`` seconds (c.Warden.hub_cache_max_age), so a
    change in the hub shows here within that time.
    """
    if model.get("kind", "user") != "user":
        # A hub service's token: services are no users here, and must not
        # borrow the account of a user who happens to share their name.
        raise web.HTTPError(403, f"hub {model.get('kind')} {model.get('name')!r} is not a user; "
                                 "only hub users have accounts on this server")
    name = model.get("name") or ""
    admin = any(same_spelling(name, n) for n in warden.hub_admin_users) or (
        warden.hub_admins_are_admins and bool(model.get("admin"))
    )
    # No "groups" in the model: the token may not read them. Unknown is not
    # "none" to be written down, but this request gets no hub group's grants.
    groups = None if "groups" not in model else []
    for raw in model.get("groups") or ():
        try:
            groups.append(normalize_name(raw, "group name"))
        except InvalidName as e:
            # One odd hub group must not lock its members out of the rest.
            log.warning("jupyter-warden: hub group ignored: %s", e)

    def audit(session, changes):
        warden.audit.record(name, "auth.hub_sync", "allow", session=session,
                            reason="the hub's user model changed", details=changes)

    try:
        account, _ = warden.accounts.sync_hub_user(name, groups, admin, on_change=audit)
    except AccountError as e:
        raise web.HTTPError(403, f"the hub's user can't have an account here: {e}") from None
    except StoreUnavailable as e:
        raise web.HTTPError(503, str(e)) from None
    return account


class HubIdentityProvider(JupyterHubIdentityProvider):
    """JupyterHub's identity provider, answering with warden accounts.

    Whoever the hub's access scopes let through (``access:servers`` of this
    server, a share, or the service's ``access:services``) gets an account and
    then only what the warden grants that account.
    """

    async def get_user(self, handler: web.RequestHandler):
        cached = getattr(handler, "_jupyter_current_user", None)
        if cached:
            return cached
        warden = handler.settings.get("warden")
        if warden is None:
            return None  # the extension did not load: nobody is signed in (fail closed)
        user = await super().get_user(handler)
        if user is None:
            return None  # not signed in, or the hub does not let them reach this server
        try:
            handler.warden_account = hub_account(warden, user.hub_user)
        except web.HTTPError:
            handler.current_user = None  # error pages ask again; they must not re-run this
            raise
        return user

    def account_for(self, warden, handler) -> Account | None:
        """The account the request's hub token names now, for open websockets' re-checks.

        Synchronous, and called on the event loop: it never waits for the hub.
        Each call takes the answer that the previous call started fetching
        (from HubOAuth's cache while that is fresh) and starts the next one,
        so a change in the hub reaches an open websocket at most one re-check
        interval after it reaches a new request.
        """
        token = self.hub_auth.get_token(handler)
        if not token:
            return None
        pending = getattr(handler, "_warden_hub_check", None)
        check = asyncio.ensure_future(
            self.hub_auth.user_for_token(token, session_id=self.hub_auth.get_session_id(handler), sync=False)
        )
        # Read by the next call; one left when the socket closes is not an error.
        check.add_done_callback(lambda done: done.cancelled() or done.exception())
        handler._warden_hub_check = check
        if pending is None or not pending.done():
            return getattr(handler, "warden_account", None)  # nothing newer known yet
        try:
            model = pending.result()
        except Exception as e:
            # Fail closed: the caller treats 503 like an unreachable store.
            why = e.log_message if isinstance(e, web.HTTPError) else str(e) or type(e).__name__
            raise web.HTTPError(503, f"the hub can't be asked who this is: {why}") from None
        if not model or not self.hub_auth.check_scopes(self.hub_auth.access_scopes, model):
            return None  # signed out, token revoked, or the hub no longer lets them in
        return hub_account(warden, model)
