"""The jupyter_server IdentityProvider: turns a request into a warden user.

Two modes, chosen by ``c.Warden.identity``: built-in ``accounts`` (an API
token in the Authorization header, or the sign-in session cookie), and
``proxy`` (a header set by a reverse proxy, believed only from the
addresses in ``c.Warden.trusted_proxies``). A store that can't be reached
refuses the request (503) rather than guessing.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re

from jupyter_server.auth.identity import IdentityProvider, User
from tornado import web
from traitlets import default

from ..names import InvalidName, normalize_name
from ..store import StoreUnavailable
from .accounts import Account
from .handlers import SignInHandler, SignOutHandler

INVALID_CREDENTIALS = "Invalid credentials: the user name, password or token was not accepted."
_AUTH_HEADER = re.compile(r"(?i)(token|bearer)[ \t]+([!-~]+)")
# JupyterLab's collaborator colours, so users look as they do in RTC.
_COLOURS = tuple(f"var(--jp-collaborator-color{i})" for i in range(1, 8))


def jupyter_user(account: Account) -> User:
    words = re.findall(r"\w+", account.display_name) or [account.name]
    initials = "".join(w[0] for w in words[:2]).upper()
    digest = hashlib.sha256(account.name.encode()).digest()
    return User(
        username=account.name,
        name=account.name,
        display_name=account.display_name,
        initials=initials,
        color=_COLOURS[digest[0] % len(_COLOURS)],
    )


class WardenIdentityProvider(IdentityProvider):
    """Identity for every handler of the server, from the warden's store."""

    login_handler_class = SignInHandler
    logout_handler_class = SignOutHandler
    need_token = False

    @default("token")
    def _token_default(self):
        # The server-wide token identifies nobody here: don't print it in URLs.
        return ""

    def get_cookie_name(self, handler: web.RequestHandler) -> str:
        return "warden-session-" + re.sub(r"[^A-Za-z0-9]", "-", handler.request.host)

    async def get_user(self, handler: web.RequestHandler) -> User | None:
        cached = getattr(handler, "_jupyter_current_user", None)
        if cached:
            return cached
        warden = handler.settings.get("warden")
        if warden is None:
            # The extension did not load: nobody is signed in (fail closed).
            return None
        try:
            account = self.account_for(warden, handler)
        except web.HTTPError:
            # Error pages ask for the user again; they must not re-run this.
            handler.current_user = None
            raise
        if account is None:
            return None
        user = jupyter_user(account)
        handler.warden_account = account
        return user

    def account_for(self, warden, handler) -> Account | None:
        """The account the request's credential names now (also used to re-check open websockets)."""
        try:
            if warden.identity == "proxy":
                account = self._proxy_account(warden, handler)
            else:
                account = self._token_account(warden, handler)
                if account is not None:
                    handler._token_authenticated = True
                else:
                    account = self._cookie_account(warden, handler)
        except StoreUnavailable as e:
            raise web.HTTPError(503, str(e)) from None
        return account

    # -- accounts mode ------------------------------------------------------

    def _token_account(self, warden, handler) -> Account | None:
        header = handler.request.headers.get("Authorization", "").strip()
        if not header:
            return None
        match = _AUTH_HEADER.fullmatch(header)
        if match is None:
            raise web.HTTPError(
                400, "malformed Authorization header: expected 'Authorization: token <api token>'"
            )
        account = warden.accounts.user_for_token(match.group(2))
        if account is None:
            # An explicit credential that fails is refused, not treated as
            # anonymous, so a script learns at once that its token is dead.
            raise web.HTTPError(403, INVALID_CREDENTIALS)
        return account

    def _cookie_account(self, warden, handler) -> Account | None:
        value = handler.get_secure_cookie(
            self.get_cookie_name(handler), max_age_days=warden.session_lifetime_days
        )
        if not value:
            return None
        account = warden.accounts.user_for_session(value.decode("ascii", "replace"))
        if account is None:
            self.clear_login_cookie(handler)
        return account

    def start_session(self, handler, account: Account) -> None:
        """Sign the browser in as ``account``: a user, or a share link's guest."""
        warden = handler.settings["warden"]
        value = warden.accounts.start_session(
            None if account.link_id else account.id,
            warden.session_lifetime,
            handler.request.remote_ip,
            link_id=account.link_id,
        )
        secure = warden.secure_cookie
        if secure is None:
            secure = handler.request.protocol == "https"
        handler.set_secure_cookie(
            self.get_cookie_name(handler),
            value,
            expires_days=warden.session_lifetime_days,
            path=handler.base_url,
            httponly=True,
            samesite=warden.cookie_samesite,
            secure=secure,
        )

    def end_session(self, handler) -> None:
        warden = handler.settings.get("warden")
        value = handler.get_secure_cookie(self.get_cookie_name(handler))
        if warden is not None and value:
            warden.accounts.end_session(value.decode("ascii", "replace"))
        self.clear_login_cookie(handler)

    # -- proxy mode ---------------------------------------------------------

    def _proxy_account(self, warden, handler) -> Account | None:
        # The socket's peer, not request.remote_ip: with trust_xheaders that
        # comes from X-Real-Ip, which the client writes.
        peer = getattr(handler.request.connection.context, "address", None)
        address = ipaddress.ip_address(str(peer[0] if peer else handler.request.remote_ip).split("%")[0])
        if not any(address in network for network in warden.trusted_networks):
            raise web.HTTPError(
                403,
                f"this server takes identity only through its reverse proxy; a request "
                f"from {address} did not come through it. Use the proxy's address.",
            )
        raw = handler.request.headers.get(warden.proxy_header, "").strip()
        if not raw:
            return None
        try:
            name = normalize_name(raw, "user name")
        except InvalidName as e:
            raise web.HTTPError(403, f"the proxy sent a user name that is not allowed: {e}") from None
        if warden.proxy_create_users:
            return warden.accounts.ensure_user(name)
        account = warden.accounts.get_user(name)
        if account is None:
            raise web.HTTPError(
                403, f"user {name!r} has no account on this server; ask an administrator to add it"
            )
        return account
