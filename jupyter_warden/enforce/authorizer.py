"""The REST authorizer: finds the path behind each request and asks the policy engine.

Every ``@authorized`` handler of jupyter_server lands in ``WardenAuthorizer``;
every other handler (JupyterLab's pages, settings, workspaces, any
extension's) passes ``HandlerGuard`` right after sign-in. Deny by default:
only the tables below let a request through without the engine.

What each surface requires (docs/enforcement.md has the same table):

- contents GET, /files, /view, /nbconvert/<fmt>/<path>, checkpoints GET:
  ``read`` on the path. A folder the user can't read but that leads to
  something they can is listed (filtered, by the contents manager).
- contents PUT to an existing path, PATCH, DELETE, checkpoint create,
  restore and delete, trust: ``write`` on the path. Creating (PUT to a new
  path, POST untitled, PUT without a body): ``write`` on the folder. Rename:
  ``write`` on the old path and on the new path's folder (and on the new
  path if it exists). Copy: ``read`` on ``copy_from``, ``write`` on the folder.
- POST /api/sessions, and PATCH of a session's path: ``run`` on the notebook,
  or on the folder for other session types (consoles).
- kernels: POST /api/kernels (a kernel with no notebook) is for admins only:
  JupyterLab starts kernels through sessions, and a bare kernel has no path
  the policy could speak about. GET, interrupt, restart, delete of a kernel:
  its owner, or ``manage`` on a notebook it runs for (GET also: a user it
  is shared with); the websocket: ``kernel_decision`` (own or shared kernel,
  and ``run`` on its notebooks; docs/kernels.md). The lists are filtered by the session and kernel managers.
- terminals, server shutdown, posting events, config writes, /api/resolvePath and
  any resource or handler not named here: admins, unless allow-listed. The
  event bus socket is the warden's own (enforce/events.py): everyone signed
  in, filtered to the warden's access notices for all but admins.

Where a path can't be read, the answer is 404 (G1); where it can be read
but not changed, 403 naming what was refused. A path the policy can't parse
is a 404. Every contents decision, and every refusal, is audited first (G8).
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from jupyter_server.auth import decorator as _decorator
from jupyter_server.auth.authorizer import Authorizer
from tornado import web

from ..names import name_key
from .kernel_channels import kernel_decision
from .kernel_shares import may_use_kernel
from ..policy.engine import Actor, Decision
from ..policy.paths import BadPath, normalize_path
from ..identity.provider import WardenIdentityProvider
from ..store import StoreUnavailable

# (resource, action) pairs any signed-in user may use: no path, nothing private.
SIGNED_IN_RESOURCES = frozenset(
    {
        ("api", "read"),  # /api/status, /api/spec.yaml (resolvePath is handled below)
        ("kernelspecs", "read"),  # which kernels exist, their logos
        ("config", "read"),  # frontend config sections, shared by all
        ("csp", "write"),  # the browser's CSP violation reports, only logged
        ("nbconvert", "read"),  # /api/nbconvert: the list of formats
        ("nbconvert", "write"),  # POST /nbconvert/<fmt>: converts the posted notebook only
        ("sessions", "read"),  # the list is filtered to the user's own
        ("kernels", "read"),  # the list is filtered; one kernel's model is checked below
    }
)

# Handlers without @authorized that any signed-in user may reach (exact classes).
SIGNED_IN_HANDLERS = frozenset(
    {
        "jupyter_server.base.handlers.APIVersionHandler",
        "jupyter_server.base.handlers.FileFindHandler",
        "jupyter_server.base.handlers.PublicStaticFileHandler",
        "jupyter_server.base.handlers.MainHandler",
        "jupyter_server.base.handlers.TrailingSlashHandler",
        "jupyter_server.base.handlers.Template404",
        "jupyter_server.base.handlers.FilesRedirectHandler",
        "jupyter_server.base.handlers.RedirectWithParams",
        "jupyter_server.services.api.handlers.IdentityHandler",
        "jupyter_server.services.contents.handlers.NotebooksRedirectHandler",
        "jupyterlab_server.handlers.LabHandler",
        "jupyterlab_server.handlers.NotFoundHandler",
        "jupyterlab_server.licenses_handler.LicensesHandler",
        "jupyterlab_server.listings_handler.ListingsHandler",
        "jupyterlab_server.themes_handler.ThemesHandler",
        "jupyterlab_server.translations_handler.TranslationsHandler",
        "jupyterlab.handlers.announcements.CheckForUpdateHandler",
        "jupyterlab.handlers.announcements.NewsHandler",
        "jupyterlab.handlers.error_handler.ErrorHandler",
        # JupyterHub's sign-out (to the hub) and OAuth return (identity/hub.py).
        "jupyterhub.singleuser.extension.JupyterHubLogoutHandler",
        "jupyterhub.singleuser.extension.JupyterHubOAuthCallbackHandler",
        # Rebound to the user's own folder by HandlerGuard (see _per_user).
        "jupyterlab_server.workspaces_handler.WorkspacesHandler",
        "jupyterlab_server.settings_handler.SettingsHandler",
    }
)

# Websocket handlers that ask the authorizer themselves, in pre_get.
SELF_AUTHORIZING_HANDLERS = frozenset(
    {
        "jupyter_server.services.kernels.websocket.KernelWebsocketHandler",
        "jupyter_server.services.events.handlers.SubscribeWebsocket",
        "jupyter_server_terminals.handlers.TermSocket",
        "jupyter_lsp.handlers.LanguageServerWebSocketHandler",
    }
)

_IDENTITY_HANDLER = "jupyter_server.services.api.handlers.IdentityHandler"

# Contents-resource handlers whose path the warden knows how to find; any
# other (another extension's) is admin-only.
_PATH_HANDLERS = frozenset(
    {
        "jupyter_server.files.handlers.FilesHandler",
        "jupyter_server.view.handlers.ViewHandler",
        "jupyter_server.services.contents.handlers.CheckpointsHandler",
        "jupyter_server.services.contents.handlers.ModifyCheckpointsHandler",
        "jupyter_server.services.contents.handlers.TrustNotebooksHandler",
    }
)
_CONTENTS_HANDLER = "jupyter_server.services.contents.handlers.ContentsHandler"

# Real-time collaboration (jupyter_server_ydoc), decided in _collaboration below.
# The stock document websocket is not here: the warden swaps in its guarded
# subclass (enforce/rtc.py); should that not happen, the stock one stays admin-only.
_ROOM_HANDLER = "jupyter_warden.enforce.rtc.GuardedDocumentHandler"
_SESSION_HANDLER = "jupyter_server_ydoc.handlers.DocSessionHandler"
_TIMELINE_HANDLER = "jupyter_warden.enforce.rtc.GuardedTimelineHandler"
_UNDO_REDO_HANDLER = "jupyter_server_ydoc.handlers.UndoRedoHandler"
_FORK_HANDLER = "jupyter_server_ydoc.handlers.DocForkHandler"
_COLLABORATION_HANDLERS = frozenset(
    {_ROOM_HANDLER, _SESSION_HANDLER, _TIMELINE_HANDLER, _UNDO_REDO_HANDLER, _FORK_HANDLER}
)


def class_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _is_authorized_method(method) -> bool:
    """True when ``method`` is wrapped by jupyter_server's @authorized."""
    while method is not None:
        code = getattr(method, "__code__", None)
        if code and code.co_name == "inner" and code.co_filename == _decorator.__file__:
            return True
        method = getattr(method, "__wrapped__", None)
    return False


def _parent(path: str) -> str:
    return path.rpartition("/")[0]


def _not_found(path: str) -> web.HTTPError:
    return web.HTTPError(404, f"No such file or directory: {path or '/'}")


@dataclass
class _Request:
    """One request's facts: who, through which handler, for what."""

    handler: web.RequestHandler
    warden: object
    account: object
    actor: Actor

    @property
    def client(self) -> str | None:
        return self.handler.request.remote_ip

    def audit(self, action: str, outcome: str, path=None, reason=None, grant_id=None, details=None):
        self.warden.audit.record(
            self.actor.name, action, outcome, path=path, reason=reason,
            grant_id=grant_id, client=self.client, details=details,
        )

    def refuse(self, status: int, message: str, action: str = "request.denied", path=None):
        self.audit(action, "deny", path=path, reason=message,
                   details={"method": self.handler.request.method, "url": self.handler.request.path})
        raise web.HTTPError(status, message)

    # -- contents ------------------------------------------------------------

    def body(self) -> dict:
        """The request's JSON object (an empty one if there is no body); 400 otherwise."""
        body = self.handler.get_json_body()
        if body is None:
            return {}
        if not isinstance(body, dict):
            raise web.HTTPError(400, "the request body must be a JSON object")
        return body

    def policy_path(self, raw: str | None) -> str:
        if raw is not None and not isinstance(raw, str):
            raise web.HTTPError(400, "a path must be a string")
        try:
            return normalize_path(raw or "")
        except BadPath as e:
            self.refuse(404, f"{e}", action="request.denied")

    def real_path(self, path: str) -> str | None:
        """Where ``path`` really is, relative to the root; None if outside it."""
        cm = self.handler.contents_manager
        root = os.path.realpath(cm.root_dir)
        real = os.path.realpath(os.path.join(root, *path.split("/"))) if path else root
        if real == root:
            return ""
        if not real.startswith(root + os.sep):
            return None
        return real[len(root) + 1 :].replace(os.sep, "/")

    def require(self, capability: str, path: str, details: dict | None = None) -> Decision:
        """Ask the engine about ``path`` and where it really leads; audit; 404/403 on no.

        ``details`` go into the audit record (which request the decision was for).
        """
        decision = self.warden.engine.check(self.actor, capability, path)
        real = self.real_path(path)
        if real is None:
            decision = Decision(False, self.actor.name, capability, path,
                                "the path leads outside the served root")
        elif real != path and decision.allowed:
            # A symlink: its target must be allowed too, under the target's rules.
            target = self.warden.engine.check(self.actor, capability, real)
            if not target.allowed:
                decision = Decision(False, self.actor.name, capability, path,
                                    f"it leads to another path, where {target.reason}")
        grant = decision.grant.id if decision.grant else None
        self.audit(f"contents.{capability}", "allow" if decision.allowed else "deny",
                   path=path, reason=decision.reason, grant_id=grant, details=details)
        if decision.allowed:
            return decision
        # The root exists for everyone; anything else unreadable is not there (G1).
        if path and (capability == "read" or not self._may_read(path, real)):
            raise _not_found(path)
        raise web.HTTPError(
            403,
            f"{self.actor.name} may not {capability} '{path or '/'}': {decision.reason}. "
            "Ask someone who manages it for access.",
        )

    def _may_read(self, path: str, real: str | None) -> bool:
        engine = self.warden.engine
        return (
            real is not None
            and engine.check(self.actor, "read", path).allowed
            and engine.check(self.actor, "read", real).allowed
        )

    def exists(self, path: str) -> bool:
        return os.path.lexists(self.handler.contents_manager._get_os_path(path))


class WardenAuthorizer(Authorizer):
    """Every ``@authorized`` request: collect the facts, ask the engine."""

    def is_authorized(self, handler, user, action, resource) -> bool:
        warden = handler.settings.get("warden")
        account = getattr(handler, "warden_account", None)
        if warden is None or account is None or user is None:
            return False
        if class_name(type(handler)) == _IDENTITY_HANDLER:
            # /api/me?permissions=...: a report, not a request; coarse and silent.
            return account.admin or (resource, action) in SIGNED_IN_RESOURCES
        try:
            return self._decide(_Request(handler, warden, account, Actor.for_account(account)),
                                handler, action, resource)
        except StoreUnavailable as e:
            # Fail closed, and say why: no answer from the policy store is a no.
            raise web.HTTPError(503, f"access can't be checked right now: {e}") from None

    def _decide(self, request, handler, action, resource) -> bool:
        check = _RESOURCES.get(resource)
        if check is not None:
            return check(request, action)
        if type(handler).__module__.startswith("jupyter_warden."):
            return True  # the warden's own API asks the engine itself, per path
        return _admin_or_allow_listed(request, action, resource)


def _admin_or_allow_listed(request: _Request, action: str, resource: str) -> bool:
    warden = request.warden
    if request.actor.admin or (resource, action) in SIGNED_IN_RESOURCES:
        return True
    if resource in warden.signed_in_resources or f"{resource}:{action}" in warden.signed_in_resources:
        return True
    request.refuse(
        403,
        f"'{resource}' ({action}) is for server admins only on this server; "
        "an admin can allow it with c.Warden.signed_in_resources",
        action="server.admin",
    )


def _contents(request: _Request, action: str) -> bool:
    handler = request.handler
    name = class_name(type(handler))
    method = handler.request.method
    if name in _COLLABORATION_HANDLERS:
        return _collaboration(request, name, method)
    raw = handler.path_kwargs.get("path")
    if raw is None and handler.path_args:
        raw = handler.path_args[0]  # /files/<path>
    if (name not in _PATH_HANDLERS and name != _CONTENTS_HANDLER) or raw is None:
        # A contents handler the warden does not know: no path, no answer.
        return _admin_or_allow_listed(request, action, "contents")
    path = request.policy_path(raw)
    if name != _CONTENTS_HANDLER:
        # /files, /view, checkpoints, trust: reads read, everything else writes.
        request.require("read" if method in ("GET", "HEAD") else "write", path)
        return True
    if method in ("GET", "HEAD"):
        _read_or_traverse(request, path)
    elif method == "PUT":
        body = request.body()
        if body and request.exists(path):
            request.require("write", path)
        else:
            # A new file (upload) is created in its folder; no body: untitled in `path`.
            request.require("write", _parent(path) if body else path)
    elif method == "POST":
        copy_from = request.body().get("copy_from")
        if copy_from:
            request.require("read", request.policy_path(copy_from))
        request.require("write", path)
    elif method == "PATCH":
        new = request.body().get("path")
        if new is None:
            raise web.HTTPError(400, "a rename needs the new path in the body: {\"path\": ...}")
        new = request.policy_path(new)
        request.require("write", path)
        request.require("write", _parent(new))
        if new != path and request.exists(new):
            request.require("write", new)
    elif method == "DELETE":
        request.require("write", path)
    else:
        request.refuse(405, f"{method} is not a contents operation")
    return True


def _collaboration(request: _Request, name: str, method: str) -> bool:
    """Real-time collaboration: what each endpoint needs, on the file its room edits.

    - the document websocket: ``read`` (checked at sign-in, see _document_room);
      each message's needs are in rtc.MESSAGE_RULES;
    - PUT session/<path>: ``read`` on an existing file (it only looks up, or makes,
      the file's id: a reader may open a file, nobody may create one here);
    - GET timeline/<path>: ``read`` (it returns the document's history);
    - PUT undo_redo/<room>: ``write``, and its forkRoom must be that room's timeline;
    - fork/<room>: GET ``read``, PUT (fork) ``write``; DELETE fork/<fork>, with or
      without a merge: ``write`` on the fork's root document.

    Each decision is audited as ``contents.read`` or ``contents.write`` on the
    file, its details naming the request (``_collaboration_details``); every
    other refusal here (no such room, timeline or file, a bad body) as
    ``request.denied``, before the answer.
    """
    from . import rtc

    handler = request.handler
    if name == _ROOM_HANDLER:
        return handler.warden_room_checked
    raw = handler.path_args[0] if handler.path_args else ""
    details = _collaboration_details(handler, name, method, raw)
    if name in (_SESSION_HANDLER, _TIMELINE_HANDLER):
        path = request.policy_path(raw)
        request.require("read", path, details)
        if name == _SESSION_HANDLER:
            try:
                body = request.body()
            except web.HTTPError as e:  # not JSON, or not an object
                request.refuse(400, e.log_message or "the body must be a JSON object", path=path)
            if not isinstance(body.get("format"), str) or not isinstance(body.get("type"), str):
                request.refuse(400, 'a session needs {"format": ..., "type": ...} in the body', path=path)
            if not os.path.isfile(handler.contents_manager._get_os_path(path)):
                request.refuse(404, f"No such file or directory: {path}", path=path)
        elif not (handler.get_query_argument("format", None) and handler.get_query_argument("type", None)):
            request.refuse(400, "the timeline needs ?format=...&type=...", path=path)
        return True
    if name == _FORK_HANDLER and method == "DELETE":
        fork = rtc.FORK_ROOMS.get(raw)
        raw = fork["root_roomid"] if fork else None
    path = rtc.room_path(handler.settings, raw) if raw is not None else None
    if path is None:
        if request.actor.admin:
            return True
        request.refuse(404, "No such collaboration room")
    if name == _UNDO_REDO_HANDLER:
        fork = handler.get_query_argument("forkRoom", None)
        if rtc.TIMELINE_FORKS.get(fork) != raw:
            request.refuse(404, "No such timeline for this room", path=path)
        request.require("write", path, details)
    elif name == _FORK_HANDLER:
        request.require("read" if method == "GET" else "write", path, details)
    else:
        return _admin_or_allow_listed(request, "write", "contents")
    return True


_UNDO_ACTIONS = frozenset({"undo", "redo", "restore"})


def _collaboration_details(handler, name: str, method: str, raw: str) -> dict:
    """What a collaboration request asks for, for its audit record (never the query string whole:
    it may carry a token)."""
    if name == _SESSION_HANDLER:
        return {"request": "collaboration session"}
    if name == _TIMELINE_HANDLER:
        return {"request": "collaboration timeline"}
    if name == _UNDO_REDO_HANDLER:
        action = handler.get_query_argument("action", None)
        return {"request": f"collaboration {action if action in _UNDO_ACTIONS else 'undo_redo'}",
                "room": raw, "fork": handler.get_query_argument("forkRoom", None)}
    if name == _FORK_HANDLER:
        if method == "DELETE":
            merge = handler.get_query_argument("merge", None) == "true"
            return {"request": "collaboration fork merge" if merge else "collaboration fork delete",
                    "fork": raw}
        return {"request": "collaboration fork list" if method == "GET" else "collaboration fork",
                "room": raw}
    return {"request": "collaboration"}


def _document_room(request: _Request) -> None:
    """The document websocket, at sign-in: ``read`` on the room's file, before prepare() loads it.

    A room that edits no file (the server-wide awareness room, where everyone's
    open documents show) is for admins only.
    """
    from . import rtc

    handler = request.handler
    path = rtc.room_path(handler.settings, rtc.room_of(handler))
    if path is None and not request.actor.admin:
        request.refuse(404, "No such document: this collaboration room edits no file you may read")
    if path is not None:
        request.require("read", path)
    handler.warden_path = path
    handler.warden_room_checked = True


def _read_or_traverse(request: _Request, path: str) -> None:
    """A folder with something readable below it is listed (filtered); else read decides."""
    engine = request.warden.engine
    if not engine.check(request.actor, "read", path).allowed:
        cm = request.handler.contents_manager
        real = request.real_path(path)
        if real is not None and (path == "" or real == path) and os.path.isdir(cm._get_os_path(path)):
            from .contents import leads_to_readable

            if path == "" or leads_to_readable(request.warden, request.actor, path):
                request.audit("contents.read", "allow", path=path,
                              reason="a folder leading to something readable: listed filtered")
                return
    request.require("read", path)


def _sessions(request: _Request, action: str) -> bool:
    handler = request.handler
    if action == "read":
        return True  # the session manager shows each user only their own
    body = request.body() if handler.request.method in ("POST", "PATCH") else {}
    if "notebook" in body and isinstance(body["notebook"], dict) and "path" in body["notebook"]:
        body = {**body, "path": body["notebook"]["path"], "type": body.get("type", "notebook")}
    if "path" in body:
        path = request.policy_path(body["path"])
        kind = body.get("type", "notebook")
        if kind == "notebook" and handler.request.method == "POST" and _is_placeholder(request, path):
            _require_run_beside(request, path)
        else:
            request.require("run", path if kind == "notebook" else _parent(path))
    elif handler.request.method == "POST":
        raise web.HTTPError(400, "Missing field in JSON data: path")
    kernel = body.get("kernel") or {}
    kernel_id = kernel.get("id") if isinstance(kernel, dict) else None
    if kernel_id is not None and not isinstance(kernel_id, str):
        raise web.HTTPError(400, "kernel.id must be a string")
    if kernel_id and kernel_id not in handler.kernel_manager \
            and getattr(handler.kernel_manager, "warden_pool", None) is not None:
        # Pool kernels: the gateway would hand over any kernel it runs under that id. Here,
        # before the session manager, whose refusals jupyter_server turns into 500s.
        request.refuse(400, "kernel ids are chosen by the server; leave kernel.id out")
    if kernel_id and kernel_id in handler.kernel_manager:
        if not may_use_kernel(handler.kernel_manager, request.actor, kernel_id):
            request.refuse(403, f"kernel {kernel_id} belongs to someone else; "
                                "leave kernel.id out to start your own")
    # Which sessions and kernels are the user's own: the session manager.
    return True


# JupyterLab starts a notebook's session at FOLDER/<uuid4>, then moves it to
# the notebook with a PATCH (checked like any other): that first path never exists.
_PLACEHOLDER = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
_SIBLINGS_CHECKED = 1000


def _is_placeholder(request: _Request, path: str) -> bool:
    return bool(_PLACEHOLDER.fullmatch(path.rpartition("/")[2])) and not request.exists(path)


def _require_run_beside(request: _Request, path: str) -> None:
    """A placeholder session needs ``run`` on some notebook in its folder.

    Its kernel is of no use until the PATCH that names the notebook: the
    kernel websocket needs ``run`` on the session's path. So a user whose
    ``run`` is granted on one notebook alone gets a session as JupyterLab
    asks for it, and one with ``run`` on nothing in the folder gets none.
    """
    folder = _parent(path)
    decision = request.warden.engine.check(request.actor, "run", path)
    if not decision.allowed:
        try:
            with os.scandir(request.handler.contents_manager._get_os_path(folder)) as entries:
                notebooks = [e.name for _, e in zip(range(_SIBLINGS_CHECKED), entries) if e.name.endswith(".ipynb")]
        except (OSError, web.HTTPError):
            notebooks = []
        for name in notebooks:
            sibling = f"{folder}/{name}" if folder else name
            if request.warden.engine.check(request.actor, "run", sibling).allowed:
                decision = request.warden.engine.check(request.actor, "run", sibling)
                break
    request.audit("contents.run", "allow" if decision.allowed else "deny", path=path,
                  reason=decision.reason if decision.allowed else f"no notebook in '{folder or '/'}' may be run",
                  grant_id=decision.grant.id if decision.allowed and decision.grant else None)
    if not decision.allowed:
        raise _not_found(path)


def _kernels(request: _Request, action: str) -> bool:
    handler = request.handler
    kernel_id = handler.path_kwargs.get("kernel_id")
    if kernel_id is None:
        if action == "read":
            return True  # the list, filtered by the kernel manager
        return _admin_only(request, "starting a kernel without a notebook (use a session)")
    km = handler.kernel_manager
    if action == "execute":
        return _kernel_websocket(request, kernel_id)
    if request.actor.admin:
        return True
    owner_of = getattr(km, "owner_of", None)
    if owner_of is None:
        return _admin_only(request, "kernels (this kernel manager records no owners)")
    if owner_of(kernel_id) == request.actor.owner:
        return True
    if action == "read" and may_use_kernel(km, request.actor, kernel_id):
        return True  # a kernel shared with them: its model, not its restart or deletion
    if action == "write" and _manages_a_notebook_of(request, kernel_id):
        return True
    request.refuse(404, f"Kernel does not exist: {kernel_id}")


def _kernel_websocket(request: _Request, kernel_id: str) -> bool:
    """The kernel's channels: the guard's own question (enforce/kernel_channels.py), before the upgrade."""
    handler = request.handler
    decision = kernel_decision(request.warden, handler.kernel_manager, handler.session_manager,
                               request.actor, kernel_id)
    path = decision.paths[0] if decision.paths else None
    details = {"kernel": kernel_id, **({"paths": list(decision.paths)} if len(decision.paths) > 1 else {})}
    request.audit("kernel.connect", "allow" if decision.allowed else "deny", path=path,
                  reason=decision.reason, details=details)
    if decision.allowed:
        return True
    if decision.hidden:
        raise web.HTTPError(404, f"Kernel does not exist: {kernel_id}")
    raise web.HTTPError(403, f"{request.actor.name} may not use kernel {kernel_id}: {decision.reason}. "
                             "Ask someone who manages the notebook for read-run access.")


def _manages_a_notebook_of(request: _Request, kernel_id: str) -> bool:
    paths = getattr(request.handler.session_manager, "paths_of_kernel", lambda k: [])(kernel_id)
    for path in paths:
        try:
            if request.warden.engine.check(request.actor, "manage", path).allowed:
                request.audit("contents.manage", "allow", path=path,
                              reason=f"manage on a notebook of kernel {kernel_id}")
                return True
        except BadPath:
            continue
    return False


def _admin_only(request: _Request, what: str) -> bool:
    if request.actor.admin:
        return True
    request.refuse(403, f"{what} is for server admins only", action="server.admin")


def _terminals(request: _Request, action: str) -> bool:
    if request.warden.terminals_for_everyone:
        return True
    return _admin_only(request, "terminals (a terminal runs as the server's own account)")


def _api(request: _Request, action: str) -> bool:
    if type(request.handler).__name__ == "PathResolverHandler":
        # It answers whether any path exists, and where: G1 for admins only.
        return _admin_only(request, "/api/resolvePath")
    return _admin_or_allow_listed(request, action, "api")


def _nbconvert(request: _Request, action: str) -> bool:
    if "path" in request.handler.path_kwargs:
        request.require("read", request.policy_path(request.handler.path_kwargs["path"]))
        return True
    return _admin_or_allow_listed(request, action, "nbconvert")


_RESOURCES = {
    "contents": _contents,
    "sessions": _sessions,
    "kernels": _kernels,
    "terminals": _terminals,
    "api": _api,
    "nbconvert": _nbconvert,
    "server": lambda r, a: _admin_only(r, "shutting the server down"),
}


# -- handlers that never ask the authorizer -----------------------------------


class _SignInGuard:
    """Mixed into an identity provider: after sign-in, holds back handlers the authorizer never sees."""

    async def get_user(self, handler):
        user = await super().get_user(handler)
        account = getattr(handler, "warden_account", None)
        if user is not None and account is not None:
            self._guard(handler, account)
        return user

    def _guard(self, handler, account) -> None:
        cls = type(handler)
        name = class_name(cls)
        method = handler.request.method
        if name in _PER_USER:
            _PER_USER[name](handler, account)
        if name == _ROOM_HANDLER:
            try:
                _document_room(_Request(handler, handler.settings["warden"], account, Actor.for_account(account)))
            except StoreUnavailable as e:
                handler.current_user = None
                raise web.HTTPError(503, f"access can't be checked right now: {e}") from None
            except web.HTTPError:
                handler.current_user = None
                raise
        if account.admin or method == "OPTIONS" or cls.__module__.startswith("jupyter_warden."):
            return  # (the warden's own handlers check for themselves)
        warden = handler.settings["warden"]
        asks_authorizer = name in SELF_AUTHORIZING_HANDLERS or _is_authorized_method(
            getattr(handler, (method or "").lower(), None)
        )
        if asks_authorizer and not _refused_early(warden, handler, name):
            return
        if not asks_authorizer and (name in SIGNED_IN_HANDLERS or name in warden.signed_in_handlers):
            return
        message = (
            f"{handler.request.path} ({name}) is for server admins only on this server; "
            "an admin can allow it with c.Warden.signed_in_handlers"
            + (" or c.Warden.signed_in_resources" if asks_authorizer else "")
        )
        warden.audit.record(
            account.name, "request.denied", "deny", reason=message,
            client=handler.request.remote_ip, details={"method": method, "url": handler.request.path},
        )
        handler.current_user = None
        raise web.HTTPError(403, message)


class GuardedIdentityProvider(_SignInGuard, WardenIdentityProvider):
    """The warden's own accounts, or a trusted proxy's header (c.Warden.identity)."""


@functools.cache
def guarded_hub_identity_provider() -> type:
    """JupyterHub's OAuth, with warden accounts (identity/hub.py); needs the jupyterhub package."""
    from ..identity.hub import HubIdentityProvider

    class GuardedHubIdentityProvider(_SignInGuard, HubIdentityProvider):
        """Hub users, as warden accounts (c.Warden.identity = "jupyterhub")."""

    GuardedHubIdentityProvider.__module__ = __name__
    return GuardedHubIdentityProvider


def _refused_early(warden, handler, name: str) -> bool:
    """Another extension's handler the authorizer would refuse in any case.

    Refused here, at sign-in, so that nothing its ``prepare`` does (real-time
    collaboration loads the file there) runs for a request that will fail.
    """
    resource = getattr(handler, "auth_resource", None)
    allow_listed = any(r == resource or r.startswith(f"{resource}:") for r in warden.signed_in_resources)
    if resource == "contents":
        known = name in _PATH_HANDLERS or name in _COLLABORATION_HANDLERS or name == _CONTENTS_HANDLER
        return not known and not allow_listed
    if resource in _RESOURCES or resource is None:
        return False
    action = "read" if handler.request.method in ("GET", "HEAD") else "write"
    return (resource, action) not in SIGNED_IN_RESOURCES and not allow_listed


def user_folder(warden, account, kind: str) -> str:
    """The user's own folder for JupyterLab's ``kind`` (workspaces, settings), under the state."""
    digest = hashlib.sha256(name_key(account.name).encode()).hexdigest()[:32]
    folder = Path(warden.state_dir).expanduser() / "lab" / digest / kind
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return str(folder)


def _own_workspaces(handler, account) -> None:
    from jupyterlab_server.workspaces_handler import WorkspacesManager

    handler.manager = WorkspacesManager(user_folder(handler.settings["warden"], account, "workspaces"))


def _own_settings(handler, account) -> None:
    handler.settings_dir = user_folder(handler.settings["warden"], account, "settings")


# JupyterLab keeps one workspaces and one settings folder for the server;
# each request is pointed at the user's own instead, so nobody sees another's.
_PER_USER = {
    "jupyterlab_server.workspaces_handler.WorkspacesHandler": _own_workspaces,
    "jupyterlab_server.settings_handler.SettingsHandler": _own_settings,
}
