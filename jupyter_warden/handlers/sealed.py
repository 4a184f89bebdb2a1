"""The key ring and sealing over HTTP: ``/api/warden/keys...``, ``/api/warden/seal``, ``/api/warden/unseal``.

Who may: anyone signed in lists the keys they may use or manage (admins
see all); only admins create keys; a key's managers (role ``manage``) and
admins grant, revoke and rotate it. Sealing a notebook in place needs
``manage`` on it and use of the key; it is refused (409) while a
real-time room holds the notebook, and purges the notebook's stored Y
history and checkpoints afterwards. Unsealing in place needs the same, and
is refused (409) while anyone without ``manage`` may read the notebook,
since they would then read the clear source.
"""

from __future__ import annotations

import errno
import os
import stat

import nbformat
from jupyter_server.auth.decorator import authorized
from jupyter_server.utils import ensure_async
from tornado import web

from ..identity.accounts import Accounts
from ..names import name_key
from ..policy.changes import PolicyError
from ..policy.engine import Actor
from ..policy.paths import ancestors
from ..sealed import (
    DEFAULT_TAG,
    ROLES,
    KeyAccessError,
    KeyRingError,
    PlaceholderError,
    UnsealError,
    seal_notebook,
    sealed_cells,
    unseal_notebook,
)
from ..sealed.documents import HistoryError, history_store, open_rooms, purge_history
from ..sealed.notebook import write_atomically
from ..secrets.masking import mask_notebook
from ..sealed.keyring import _key_name
from .base import WardenAPIHandler


class _KeyRingHandler(WardenAPIHandler):
    @property
    def ring(self):
        return self.warden.key_ring

    def key_name(self, raw: str) -> str:
        try:
            return _key_name(raw)
        except KeyRingError as e:
            raise web.HTTPError(400, str(e)) from None

    def require_key_manager(self, name: str, action: str, details: dict) -> None:
        # The same answer whether the key exists or not: a name is no secret
        # worth a 404/403 oracle, but there is no reason to give one either.
        if not self.ring.may_manage(self.actor, name):
            self.audit(action, "deny", None, reason=f"may not manage sealing key {name!r}", details=details)
            raise web.HTTPError(
                403, f"you may not manage sealing key {name!r}; its managers or a server admin can"
            )

    def key_error(self, action: str, error: Exception, details: dict, status: int = 404):
        self.audit(action, "deny", None, reason=str(error), details=details)
        raise web.HTTPError(status, str(error)) from None


class KeysHandler(_KeyRingHandler):
    @web.authenticated
    @authorized
    def get(self):
        actor = self.actor
        keys = []
        for info in self.ring.list_keys():
            if actor.admin or self.ring.may_manage(actor, info.name):
                keys.append(info.as_json())
            elif self.ring.may_use(actor, info.name):
                data = info.as_json()
                data["grants"] = None  # who else holds it is the managers' business
                keys.append(data)
        self.reply({"keys": keys})

    @web.authenticated
    @authorized
    def post(self):
        body = self.json_body({"name": str})
        name = self.key_name(body["name"])
        details = {"key": name}
        self.require_admin("key.create", details=details)
        try:
            info = self.ring.create(name, by=self.actor.name, audited=self.audited(details))
        except KeyRingError as e:
            self.key_error("key.create", e, details, status=409)
        self.reply(info.as_json(), status=201)


class KeyGrantsHandler(_KeyRingHandler):
    @web.authenticated
    @authorized
    def post(self, name: str):
        name = self.key_name(name)
        body = self.json_body({"subject": str}, {"role": str})
        role = body.get("role") or "use"
        if role not in ROLES:
            raise web.HTTPError(400, f"unknown key role {role!r}: use one of {', '.join(ROLES)}")
        details = {"key": name, "subject": body["subject"], "role": role}
        self.require_key_manager(name, "key.grant", details)
        try:
            info = self.ring.grant(name, body["subject"], role, by=self.actor.name, audited=self.audited(details))
        except KeyRingError as e:
            self.key_error("key.grant", e, details, status=400)
        self.reply(info.as_json(), status=201)

    @web.authenticated
    @authorized
    def delete(self, name: str):
        name = self.key_name(name)
        subject = self.get_query_argument("subject", default=None)
        if not subject:
            raise web.HTTPError(400, "the query parameter 'subject' is required")
        details = {"key": name, "subject": subject}
        self.require_key_manager(name, "key.revoke", details)
        try:
            with self.warden.store.transaction() as s:
                self.warden.policy.subject_key(s, subject)
        except PolicyError as e:
            raise web.HTTPError(400, str(e)) from None
        try:
            self.ring.revoke(name, subject, audited=self.audited(details))
        except KeyRingError as e:
            self.key_error("key.revoke", e, details)
        self.set_status(204)
        self.finish()


class KeyRotateHandler(_KeyRingHandler):
    @web.authenticated
    @authorized
    def post(self, name: str):
        name = self.key_name(name)
        details = {"key": name}
        self.require_key_manager(name, "key.rotate", details)
        try:
            info = self.ring.rotate(name, audited=self.audited(details))
        except KeyRingError as e:
            self.key_error("key.rotate", e, details)
        self.reply(info.as_json())


class _InPlaceHandler(_KeyRingHandler):
    """What sealing and unsealing in place share: the notebook, the room check, the purge."""

    action = ""
    saves_for_its_user = True  # a save it makes is masked for its user's vault values (enforce/contents.py)

    def refuse(self, status: int, path: str, message: str, details: dict):
        self.audit(self.action, "deny", path, reason=message, details=details)
        raise web.HTTPError(status, message)

    def check_no_room(self, path: str, details: dict) -> None:
        rooms = open_rooms(self.serverapp, path)
        if rooms:
            self.refuse(
                409, path,
                f"'{path}' is open in real-time collaboration ({len(rooms)} room(s)); its clear text "
                "is in the shared document. Close it in every browser, wait for the room to be "
                "cleaned (YDocExtension.document_cleanup_delay, 60 s by default), and try again",
                details,
            )

    async def notebook(self, path: str, details: dict):
        if not path.endswith(".ipynb"):
            self.refuse(400, path, f"'{path}' is not a notebook (.ipynb)", details)
        try:
            model = await ensure_async(self.contents_manager.get(path, content=True, type="notebook"))
        except web.HTTPError as e:
            self.refuse(e.status_code if e.status_code != 403 else 404, path,
                        f"'{path}' can't be opened as a notebook: {e.log_message}", details)
        return model["content"]

    async def delete_checkpoints(self, path: str) -> None:
        """Checkpoints are copies of the notebook from before: for a seal, they hold its clear source."""
        cm = self.contents_manager
        for checkpoint in await ensure_async(cm.list_checkpoints(path)):
            await ensure_async(cm.delete_checkpoint(checkpoint["id"], path))

    async def replace(self, path: str, nb, details: dict) -> None:
        """Put ``nb`` in place of the notebook whole, or leave the old one whole.

        jupyter_server's own save writes over the file in place, after copying
        the old one aside as ``.~NAME``: a server killed meanwhile leaves a
        half-written notebook (undone at its next read) and, for a seal, that
        clear copy beside it. Here the notebook is written as the contents
        manager would write it (signed if it was trusted, vault values masked)
        to a temporary file, then renamed over the old one, keeping its owner
        and mode. Contents managers that are not file-based get their own save.
        """
        cm = self.contents_manager
        get_os_path = getattr(cm, "_get_os_path", None)
        if get_os_path is None:
            await ensure_async(cm.save({"type": "notebook", "format": "json", "content": nb}, path))
            return
        os_path = os.path.realpath(get_os_path(path))
        nb = nbformat.from_dict(nb)
        cm.check_and_sign(nb, path)
        channels = getattr(self.warden, "vault_channels", None)
        if channels is not None:
            mask_notebook(nb, channels.save_masker([self.actor.owner]))  # as a save of theirs would
        try:
            st = os.stat(os_path)
            write_atomically(os_path, nbformat.writes(nb, version=nbformat.NO_CONVERT) + "\n",
                             mode=stat.S_IMODE(st.st_mode), owner=(st.st_uid, st.st_gid))
        except OSError as e:
            full = e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
            message = (f"'{path}' was not changed: {'the disk is full' if full else 'it could not be written'} "
                       f"({os.strerror(e.errno) if e.errno else e}). The notebook is as it was.")
            self.log.error("jupyter-warden: %s", message)
            self.audit(self.action, "error", path, reason=message, details=details)
            raise web.HTTPError(507 if full else 500, message) from None
        manager = self.settings.get("file_id_manager")
        if manager is not None:
            manager.save(path)

    def purge(self, path: str) -> int:
        try:
            return purge_history(self.serverapp, path)
        except HistoryError as e:
            self.log.error("jupyter-warden: %s", e)
            raise web.HTTPError(500, str(e)) from None


class SealHandler(_InPlaceHandler):
    action = "notebook.seal"

    @web.authenticated
    @authorized
    async def post(self):
        body = self.json_body({"path": str, "key": str}, {"tag": str})
        path = self.normalize(body["path"])
        key, tag = self.key_name(body["key"]), body.get("tag") or DEFAULT_TAG
        details = {"key": key, "tag": tag}
        self.require("manage", path, self.action, details)
        if not self.ring.may_use(self.actor, key):
            self.refuse(403, path, f"you may not use sealing key {key!r}; ask one of its managers for a grant", details)
        try:
            history_store(self.serverapp)
        except HistoryError as e:
            self.refuse(409, path, str(e), details)
        self.check_no_room(path, details)
        nb = await self.notebook(path, details)
        try:
            report = seal_notebook(nb, self.ring, key, tag, may_use=lambda k: self.ring.may_use(self.actor, k))
        except KeyAccessError as e:
            self.refuse(403, path, str(e), details)
        except KeyRingError as e:
            self.refuse(400, path, str(e), details)
        except (UnsealError, PlaceholderError) as e:
            self.refuse(409, path, f"a cell already sealed does not open: {e}", details)
        result = {
            "path": path, "key": key, "sealed": report.sealed, "resealed": report.resealed,
            "unchanged": report.unchanged,
        }
        # The decision is recorded before anything changes (G8). Then the clear
        # copies go (checkpoints, stored Y history), then the sealed notebook
        # replaces the old one in one rename: a server killed at any point
        # leaves the old notebook or the sealed one, and never a sealed
        # notebook beside clear copies of its cells.
        self.audit(self.action, "allow", path, details={**details, **{k: v for k, v in result.items() if v}})
        await self.delete_checkpoints(path)
        # A room opened meanwhile would hold the clear text. From this check to
        # the rename nothing yields to the event loop, so none can open between.
        self.check_no_room(path, details)
        purged = self.purge(path)
        if report.changed:
            await self.replace(path, nb, details)
        self.reply({**result, "history_purged": purged})


class UnsealHandler(_InPlaceHandler):
    action = "notebook.unseal"

    def readers_without_manage(self, path: str) -> list[str]:
        """Who could read the notebook without managing it: they must never see its clear source."""
        engine, actors = self.warden.engine, []
        accounts = Accounts(self.warden.store)
        for account in accounts.list_users():
            if not account.admin:
                actors.append(Actor.for_account(account))
        # Users to come: a group's future members, anyone who signs up later.
        # Their user subject ("user:", an empty name) matches no grant.
        for group in accounts.list_groups():
            actors.append(Actor(name=f"members of group:{group}", key="", groups=frozenset({name_key(group)})))
        actors.append(Actor(name="anyone signed in", key=""))
        chain = set(ancestors(path))
        for link in self.warden.policy.list_links():
            if link.path in chain and link.state() == "active":
                actors.append(Actor.for_link(link.id))
        found = []
        for actor in actors:
            caps = engine.effective(actor, path).capabilities
            if "read" in caps and "manage" not in caps and actor.name not in found:
                found.append(actor.name)
        return found

    @web.authenticated
    @authorized
    async def post(self):
        body = self.json_body({"path": str})
        path = self.normalize(body["path"])
        details: dict = {}
        self.require("manage", path, self.action, details)
        readers = self.readers_without_manage(path)
        if readers:
            shown = ", ".join(readers[:5]) + (f" and {len(readers) - 5} more" if len(readers) > 5 else "")
            self.refuse(
                409, path,
                f"{shown} may read '{path}' without managing it and would see the clear source; "
                "unseal a copy with `jupyter-warden unseal`, or take their access first",
                details,
            )
        self.check_no_room(path, details)
        nb = await self.notebook(path, details)
        try:
            keys = sorted({cell.key_name for cell in sealed_cells(nb)})
        except PlaceholderError as e:
            self.refuse(409, path, str(e), details)
        details["keys"] = keys
        refused = [k for k in keys if not self.ring.may_use(self.actor, k)]
        if refused:
            self.refuse(403, path, f"you may not use sealing key(s) {', '.join(refused)}", details)
        if not keys:
            self.refuse(409, path, f"'{path}' has no sealed cell", details)
        try:
            opened = unseal_notebook(nb, self.ring)
        except (KeyRingError, UnsealError, PlaceholderError) as e:
            self.refuse(409, path, str(e), details)
        details["cells"] = opened
        self.audit(self.action, "allow", path, details=details)  # before the change (G8)
        await self.delete_checkpoints(path)
        self.check_no_room(path, details)  # nothing yields from here to the rename
        await self.replace(path, nb, details)
        self.reply({"path": path, "unsealed": opened})
