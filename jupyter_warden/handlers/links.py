"""Share links: ``/api/warden/links`` to make, list and revoke them, and ``/warden/link/TOKEN`` to open one.

Opening a link in force signs the browser in as a guest of that link:
the engine gives a ``link:ID`` subject only what the link grants, and the
guest's session ends as soon as the link is revoked or expires.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import jinja2
from jupyter_server.auth.decorator import allow_unauthenticated, authorized
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.utils import url_path_join
from tornado import web

from ..identity.accounts import Account
from ..policy.changes import PolicyError
from ..policy.engine import Actor
from ..policy.levels import LINK_LEVELS
from .base import WardenAPIHandler, iso, parse_time

_TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
    autoescape=True,
)


def link_json(link) -> dict:
    # Never the token: it is shown once, when the link is made.
    return {
        "id": link.id,
        "path": link.path,
        "level": link.level,
        "state": link.state(),
        "expires_at": iso(link.expires_at),
        "revoked_at": iso(link.revoked_at),
        "created_by": link.created_by,
        "created": iso(link.created),
    }


class LinksHandler(WardenAPIHandler):
    @web.authenticated
    @authorized
    def get(self):
        path = self.path_argument()
        self.require("manage", path, "contents.manage", {"request": "list links"})
        engine, actor = self.warden.engine, self.actor
        # A `none` grant can take part of the subtree away from this manager.
        links = [
            link
            for link in self.warden.policy.list_links(path)
            if engine.check(actor, "manage", link.path).allowed
        ]
        self.reply({"path": path, "links": [link_json(link) for link in links]})

    @web.authenticated
    @authorized
    def post(self):
        body = self.json_body({"path": str, "level": str}, {"expires": str})
        path = self.normalize(body["path"])
        level = body["level"]
        if level not in LINK_LEVELS:
            raise web.HTTPError(
                400, f"a share link gives {' or '.join(LINK_LEVELS)}, never {level!r}"
            )
        expires = parse_time(body.get("expires"), "expires")
        details = {"level": level, "expires": iso(expires)}
        self.require("manage", path, "link.create", details)
        if self.warden.identity == "jupyterhub":
            # Only the hub lets people in here; an anonymous guest would bypass it.
            raise web.HTTPError(409, HUB_NO_LINKS)
        try:
            link, token = self.warden.policy.create_link(
                path, level, expires, by=self.actor.name, audited=self.audited(details)
            )
        except PolicyError as e:
            self.audit("link.create", "deny", path, reason=str(e), details=details)
            raise web.HTTPError(409, str(e)) from None
        url = f"{self.request.protocol}://{self.request.host}" + url_path_join(
            self.base_url, "warden", "link", token
        )
        self.reply({**link_json(link), "token": token, "url": url}, status=201)


class LinkHandler(WardenAPIHandler):
    @web.authenticated
    @authorized
    def delete(self, link_id: str):
        # One answer for "no such link" and "a link on a path you can't read".
        not_found = f"there is no share link {link_id!r}"
        link = self.warden.policy.get_link(link_id)
        if link is None:
            raise web.HTTPError(404, not_found)
        self.require("manage", link.path, "link.revoke", {"link": link_id}, not_found=not_found)
        self.warden.policy.revoke_link(link_id, audited=self.audited())
        self.set_status(204)
        self.finish()


HUB_NO_LINKS = ("share links are off on a server whose users come from JupyterHub: share the "
                "server through the hub (a group's role or a share), then grant here")


class LinkSignInHandler(JupyterHandler):
    """A link's URL: start a guest session and open its notebook in JupyterLab."""

    @allow_unauthenticated
    def get(self, token: str):
        warden = self.settings["warden"]
        link = warden.policy.link_for_token(token)
        client = self.request.remote_ip
        account = getattr(self, "warden_account", None) if self.current_user else None
        # Only the hub lets people in on a hub server (see HUB_NO_LINKS).
        hub_mode = link is not None and warden.identity == "jupyterhub"
        if link is None or hub_mode:
            warden.audit.record(
                actor="anonymous", action="auth.link_opened", outcome="deny",
                reason=HUB_NO_LINKS if hub_mode else "unknown, revoked or expired link", client=client,
            )
            self.set_status(404)
            self.finish(
                _TEMPLATES.get_template("link_closed.html").render(base_url=self.base_url)
            )
            return
        target = url_path_join(self.base_url, "lab", "tree", quote(link.path))
        if account is not None and account.link_id is None:
            # A signed-in user keeps their own session (and rights) rather than
            # being signed out into a guest's.
            self.redirect(target)
            return
        guest = Account.guest(link.id)
        warden.audit.record(
            actor=Actor.for_account(guest).name, action="auth.link_opened", outcome="allow",
            path=link.path, client=client, details={"link": link.id, "level": link.level},
        )
        self.identity_provider.start_session(self, guest)
        self.redirect(target)
