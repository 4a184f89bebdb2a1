"""Sign-in and sign-out pages for built-in accounts.

A failed sign-in reads and costs the same whether the user exists or not;
repeated failures are slowed per user name and per address (``throttle``).
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import jinja2
from jupyter_server.auth.decorator import allow_unauthenticated
from jupyter_server.auth.login import LoginFormHandler

from ..names import name_key
from ..store import StoreUnavailable

_TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
    autoescape=True,
)


class SignInHandler(LoginFormHandler):
    """GET shows the form; POST checks the password and starts a session."""

    def _render(self, message=None, status: int = 200):
        warden = self.settings.get("warden")
        self.set_status(status)
        self.finish(
            _TEMPLATES.get_template("signin.html").render(
                base_url=self.base_url,
                next=self.get_argument("next", default=self.base_url),
                xsrf_form_html=self.xsrf_form_html(),
                message=message,
                proxy_mode=warden is not None and warden.identity == "proxy",
            )
        )

    def _audit(self, warden, actor: str, action: str, outcome: str, reason: str | None = None):
        try:
            warden.audit.record(
                actor[:300] or "(empty)", action, outcome, reason=reason, client=self.request.remote_ip
            )
        except StoreUnavailable:
            if outcome == "allow":
                raise  # no record, no sign-in
            warden.log.error("could not audit %s for %r: store unavailable", action, actor)

    @allow_unauthenticated
    def get(self):
        if self.current_user:
            self._redirect_safe(self.get_argument("next", default=self.base_url))
        else:
            self._render()

    @allow_unauthenticated
    async def post(self):
        from .provider import INVALID_CREDENTIALS

        warden = self.settings.get("warden")
        if warden is None or warden.identity != "accounts":
            self._render("Sign-in with a password is off on this server.", status=403)
            return
        name = self.get_argument("username", default="")
        password = self.get_argument("password", default="")
        name_throttle_key = "name:" + name_key(name.strip())
        address_key = "addr:" + self.request.remote_ip
        wait = warden.throttle.retry_after(name_throttle_key, address_key)
        if wait > 0:
            seconds = math.ceil(wait)
            self.set_header("Retry-After", str(seconds))
            warden.log.warning("sign-in throttled for %r from %s", name, self.request.remote_ip)
            self._audit(warden, name, "auth.throttled", "deny", f"retry after {seconds} s")
            self._render(
                f"Too many failed sign-ins. Try again in {seconds} second(s).", status=429
            )
            return
        # Count the attempt as failed before the slow check, so that attempts
        # sent in parallel can't all pass the throttle; a success takes it back.
        warden.throttle.failed(name_throttle_key, address_key)
        try:
            # argon2 takes tens of milliseconds of CPU: keep it off the event loop.
            account = await asyncio.get_running_loop().run_in_executor(
                None, warden.accounts.verify_password, name, password
            )
        except StoreUnavailable as e:
            warden.throttle.forgive(name_throttle_key)
            warden.throttle.forgive(address_key)
            self._render(str(e), status=503)
            return
        if account is None:
            warden.log.warning("failed sign-in for %r from %s", name, self.request.remote_ip)
            self._audit(warden, name, "auth.sign_in_failed", "deny", "wrong user name or password")
            self._render(INVALID_CREDENTIALS, status=403)
            return
        # Only the name's counter resets: one's own good password must not
        # wipe out the failures an address has piled up against others.
        warden.throttle.succeeded(name_throttle_key)
        warden.throttle.forgive(address_key)
        try:
            # Recorded before the session exists (G8).
            self._audit(warden, account.name, "auth.sign_in", "allow")
            self.identity_provider.start_session(self, account)
        except StoreUnavailable as e:
            self._render(str(e), status=503)
            return
        warden.log.info("user %s signed in from %s", account.name, self.request.remote_ip)
        self._redirect_safe(self.get_argument("next", default=self.base_url))


class SignOutHandler(LoginFormHandler):
    """Ends the browser's session on the server, not just its cookie."""

    @allow_unauthenticated
    def get(self):
        warden = self.settings.get("warden")
        account = getattr(self, "warden_account", None)
        try:
            if warden is not None and account is not None:
                warden.audit.record(
                    account.name, "auth.sign_out", "allow", client=self.request.remote_ip
                )
            self.identity_provider.end_session(self)
        except StoreUnavailable as e:
            self.set_status(503)
            self.finish(str(e))
            return
        self.finish(
            _TEMPLATES.get_template("signout.html").render(base_url=self.base_url)
        )
