"""``/api/warden/secrets``: the vault's write-only API (set, delete, grant, revoke, list names).

No response ever carries a value: a value goes in with PUT and comes out
only inside a kernel (jupyter_warden.secrets). Who may change a secret is the
vault's rule (``Vault.may_manage``): its owner, members of an owning group,
and admins. Share links' guests get nothing here.
"""

from __future__ import annotations

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..secrets.vault import NameTaken, OwnerRefused, SecretNotGranted, VaultError
from .base import WardenAPIHandler


class _SecretsBase(WardenAPIHandler):
    def refuse_guests(self, action: str, name: str | None) -> None:
        if self.actor.link_id:
            self.audit(action, "deny", None, reason="a share link's guest can't use the vault",
                       details={"secret": name})
            raise web.HTTPError(403, "a share link's guest can't use the vault; sign in as a user")

    def vault_call(self, action: str, name: str, details: dict, call):
        """Run a vault change; a refusal is audited and becomes 400/403/404/409."""
        self.refuse_guests(action, name)
        try:
            return call()
        except VaultError as e:
            status = 404 if isinstance(e, SecretNotGranted) else 409 if isinstance(e, NameTaken) \
                else 403 if isinstance(e, OwnerRefused) else 400
            self.audit(action, "deny", None, reason=str(e), details={"secret": name, **details})
            raise web.HTTPError(status, str(e)) from None


class SecretsHandler(_SecretsBase):
    @web.authenticated
    @authorized
    def get(self):
        if self.actor.link_id:
            return self.reply({"secrets": []})
        self.reply({"secrets": [info.as_json() for info in self.warden.vault.list(self.actor)]})


class SecretHandler(_SecretsBase):
    @web.authenticated
    @authorized
    def put(self, name):
        body = self.json_body({"value": str}, {"owner": str})
        owner = body.get("owner")
        info, created = self.vault_call(
            "secret.set", name, {"owner": owner},
            lambda: self.warden.vault.set(name, body["value"], self.actor, owner, audited=self.audited()),
        )
        self.reply(info.as_json(), status=201 if created else 200)

    @web.authenticated
    @authorized
    def delete(self, name):
        self.vault_call("secret.remove", name, {},
                        lambda: self.warden.vault.remove(name, self.actor, audited=self.audited()))
        self.set_status(204)
        self.finish()


class SecretGrantsHandler(_SecretsBase):
    @web.authenticated
    @authorized
    def post(self, name):
        subject = self.json_body({"subject": str})["subject"]
        info = self.vault_call("secret.grant", name, {"subject": subject},
                               lambda: self.warden.vault.grant(name, subject, self.actor, audited=self.audited()))
        self.reply(info.as_json())

    @web.authenticated
    @authorized
    def delete(self, name):
        subject = self.get_query_argument("subject", default=None)
        if not subject:
            raise web.HTTPError(400, "the query parameter 'subject' is required")
        self.vault_call("secret.revoke", name, {"subject": subject},
                        lambda: self.warden.vault.revoke(name, subject, self.actor, audited=self.audited()))
        self.set_status(204)
        self.finish()
