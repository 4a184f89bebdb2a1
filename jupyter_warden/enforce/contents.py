"""The contents manager the warden installs: hides the state, filters, keeps grants in step.

The state folder (database, key ring, logs) may lie under the served root
by an operator's choice. Every file operation of a FileContentsManager,
and so contents, ``/view``, nbconvert and checkpoints, resolves its path
through ``_get_os_path``; refusing there covers them all. ``/files`` is
served by jupyter_server's contents-backed ``FilesHandler`` instead of the
stock static file handler, which would read the disk directly.

For the signed-in user of the current request (jupyter_server's
``CallContext``), folder listings show only what they may read (plus the
folders that lead to it) and ``writable`` says whether they may write. A
file or folder they create gets them ``manage``; grants follow a rename and
go with a delete, once the file operation has succeeded. A notebook's
outputs are masked for the vault's handed-out values before it is saved.
"""

from __future__ import annotations

import asyncio
import errno
import inspect
import os
from contextvars import ContextVar

from jupyter_server.base.call_context import CallContext
from jupyter_server.files.handlers import FilesHandler
from jupyter_server.services.contents.handlers import ContentsHandler
from sqlalchemy import func, select
from tornado.web import HTTPError
from traitlets import default

from ..names import name_key
from ..policy.engine import Actor
from ..policy.paths import BadPath, normalize_path
from ..secrets.masking import mask_notebook
from ..store.models import Grant, utcnow


# While a folder is listed: (its OS path, its real path). Children are then
# resolved with one lstat each instead of a realpath walk, and filtered once,
# by the listing, rather than again in each child's own ``get``.
_LISTING: ContextVar[tuple[str, str] | None] = ContextVar("warden_listing", default=None)


def _resolve(os_path: str) -> str:
    """``os.path.realpath(os_path)``, cheaper for the children of the folder being listed."""
    listing = _LISTING.get()
    if listing is not None:
        parent, name = os.path.split(os_path)
        if parent == listing[0] and name not in ("", ".", "..") and not os.path.islink(os_path):
            return os.path.join(listing[1], name)
    return os.path.realpath(os_path)


class HiddenPath(HTTPError, PermissionError):
    """A 404 to the client; EACCES to the listing code, which skips it quietly."""

    def __init__(self, path: str):
        HTTPError.__init__(self, 404, f"No such file or directory: {path}")
        self.errno = errno.EACCES


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def current_user():
    """(warden, account) of the request being served, or None for the server's own calls."""
    handler = CallContext.get(CallContext.JUPYTER_HANDLER)
    account = getattr(handler, "warden_account", None)
    if account is None:
        return None
    return handler.settings["warden"], account


def leads_to_readable(warden, actor: Actor, folder: str) -> set[str]:
    """Names of ``folder``'s children under which some grant lets ``actor`` read."""
    prefix = f"{folder}/" if folder else ""
    now = utcnow()
    with warden.store.transaction() as s:
        rows = s.execute(
            select(Grant.path).where(
                Grant.subject.in_(actor.subjects()),
                Grant.level != "none",
                func.substr(Grant.path, 1, len(prefix)) == prefix,
                Grant.path != folder,
                (Grant.not_before.is_(None)) | (Grant.not_before <= now),
                (Grant.not_after.is_(None)) | (Grant.not_after > now),
            )
        ).scalars().all()
    names = set()
    for path in rows:
        child = path[len(prefix):].split("/", 1)[0]
        # A deeper `none` may take the grant's own path away again.
        if child not in names and warden.engine.check(actor, "read", path).allowed:
            names.add(child)
    return names


def _listing_get(base: type):
    """``base.get``, filtered for the user; a folder's children are checked once, by the listing."""
    original = base.get

    def listing_of(cm, path, content, type) -> tuple[str, str] | None:
        if content and type in (None, "directory"):
            os_path = cm._get_os_path(path)
            if os.path.isdir(os_path):
                return os_path, os.path.realpath(os_path)
        return None

    if inspect.iscoroutinefunction(original):

        async def get(self, path, content=True, type=None, format=None, **kwargs):
            if _LISTING.get() is not None:
                # A child's model, built for the folder being listed: it filters.
                return await original(self, path, content, type, format, **kwargs)
            token = _LISTING.set(listing_of(self, path, content, type))
            try:
                return _filter_model(self, await original(self, path, content, type, format, **kwargs), None)
            finally:
                _LISTING.reset(token)

    else:

        def get(self, path, content=True, type=None, format=None, **kwargs):
            if _LISTING.get() is not None:
                return original(self, path, content, type, format, **kwargs)
            token = _LISTING.set(listing_of(self, path, content, type))
            try:
                return _filter_model(self, original(self, path, content, type, format, **kwargs), None)
            finally:
                _LISTING.reset(token)

    return get


# The paths whose lock the current task holds (a save calls get for its reply).
_HELD: ContextVar[frozenset[str]] = ContextVar("warden_held_paths", default=frozenset())


class _PathLocks:
    """Per file path: reads share it, a save has it alone. Made on first use, dropped when unused."""

    def __init__(self):
        self._paths: dict[str, dict] = {}

    async def run(self, key: str, call, exclusive: bool):
        if key in _HELD.get():
            return await call()
        state = self._paths.get(key)
        if state is None:
            state = self._paths[key] = {"cond": asyncio.Condition(), "readers": 0, "writer": False,
                                        "waiting": 0, "users": 0}
        state["users"] += 1
        cond = state["cond"]
        try:
            async with cond:
                if exclusive:
                    state["waiting"] += 1
                    try:
                        await cond.wait_for(lambda: not state["writer"] and not state["readers"])
                    finally:
                        state["waiting"] -= 1
                        cond.notify_all()  # reads held back for this save, should it be cancelled
                    state["writer"] = True
                else:  # a waiting save goes first, so that reads can't starve it
                    await cond.wait_for(lambda: not state["writer"] and not state["waiting"])
                    state["readers"] += 1
            token = _HELD.set(_HELD.get() | {key})
            try:
                return await call()
            finally:
                _HELD.reset(token)
                async with cond:
                    if exclusive:
                        state["writer"] = False
                    else:
                        state["readers"] -= 1
                    cond.notify_all()
        finally:
            state["users"] -= 1
            if not state["users"]:
                del self._paths[key]


def _one_at_a_time(method, name: str):
    """An async ``get`` that waits for a ``save`` of the same path to finish, and the reverse.

    jupyter_server's file manager writes a file in place (after copying the
    old one aside as ``.~NAME``), in a worker thread. A read of that file
    meanwhile saw it half-written: a 400 "Unreadable Notebook", or worse, its
    recovery put the ``.~`` copy back over the save under way, which was then
    lost. Measured under load (bench/load.py): reads during real-time
    collaboration's autosaves. Listings (children's models) don't wait.
    """
    if not inspect.iscoroutinefunction(method):
        return method  # a sync manager runs on the event loop: one call at a time already

    async def wrapped(self, *args, **kwargs):
        if name == "get":
            path = kwargs.get("path", args[0] if args else "")
            if _LISTING.get() is not None:
                return await method(self, *args, **kwargs)
        else:
            path = kwargs.get("path", args[1] if len(args) > 1 else "")
        locks = self.__dict__.get("_warden_path_locks")
        if locks is None:
            locks = self.__dict__["_warden_path_locks"] = _PathLocks()
        key = str(path).strip("/")
        return await locks.run(key, lambda: method(self, *args, **kwargs), exclusive=name == "save")

    wrapped.__name__ = name
    return wrapped


def _after(base: type, name: str, post):
    """``base.name`` followed by ``post(self, result, *args)``, sync or async as base is."""
    original = getattr(base, name)
    if inspect.iscoroutinefunction(original):

        async def method(self, *args, **kwargs):
            before = _existed(self, name, args, kwargs)
            result = await original(self, *args, **kwargs)
            return post(self, result, before, *args, **kwargs)

    else:

        def method(self, *args, **kwargs):
            before = _existed(self, name, args, kwargs)
            result = original(self, *args, **kwargs)
            return post(self, result, before, *args, **kwargs)

    method.__name__ = name
    return method


_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def _disk_full_is_507(save):
    """jupyter_server reports a full disk as a bare 500; say what happened, and that the old file stands."""

    def translate(e: HTTPError, path: str) -> HTTPError:
        cause = e.__cause__ or e.__context__
        if e.status_code != 500 or not isinstance(cause, OSError) or cause.errno not in _DISK_FULL:
            return e
        why = "the disk quota is used up" if cause.errno == errno.EDQUOT else "the disk is full"
        return HTTPError(
            507,
            f"{path} was not saved: {why} ({os.strerror(cause.errno)}). "
            "The version saved before is unchanged; free some space and save again.",
        )

    if inspect.iscoroutinefunction(save):

        async def method(self, model, path="", *args, **kwargs):
            try:
                return await save(self, model, path, *args, **kwargs)
            except HTTPError as e:
                raise translate(e, path) from e.__cause__

    else:

        def method(self, model, path="", *args, **kwargs):
            try:
                return save(self, model, path, *args, **kwargs)
            except HTTPError as e:
                raise translate(e, path) from e.__cause__

    method.__name__ = "save"
    return method


def _masking_outputs(save):
    """A notebook's outputs are masked for the vault values of whoever saves it, before it is written.

    A request of the contents API, or a seal (handlers marked
    ``saves_for_its_user``), saves for its user: their own values. Anything
    else is a collaboration room's save, for everyone who wrote to it
    (``document_writers``): its task runs in the context of whatever changed
    the room last (a document websocket, a fork merge, a timeline restore),
    not of one saver. Never for every value handed out: then anyone could
    save guesses and read back which of them are someone's secret.
    """

    def mask(cm, model, path) -> None:
        warden = cm.parent.web_app.settings["warden"] if _has_warden(cm) else None
        channels = getattr(warden, "vault_channels", None)
        if channels is None or not isinstance(model, dict) or model.get("type") != "notebook":
            return
        handler = CallContext.get(CallContext.JUPYTER_HANDLER)
        account = getattr(handler, "warden_account", None)
        if account is not None and (isinstance(handler, ContentsHandler)
                                    or getattr(handler, "saves_for_its_user", False)):
            masker = channels.save_masker([Actor.for_account(account).owner])
        else:
            writers = warden.document_writers.get(_policy_path(path or ""))
            # No writer known for this path (a room renamed since it was written to): every value.
            masker = channels.save_masker(writers) if writers else channels.every_value
        mask_notebook(model.get("content"), masker)

    if inspect.iscoroutinefunction(save):

        async def method(self, model, path="", *args, **kwargs):
            mask(self, model, path)
            return await save(self, model, path, *args, **kwargs)

    else:

        def method(self, model, path="", *args, **kwargs):
            mask(self, model, path)
            return save(self, model, path, *args, **kwargs)

    method.__name__ = "save"
    return method


def _existed(cm, name, args, kwargs) -> bool | None:
    if name != "save":
        return None
    path = kwargs.get("path", args[1] if len(args) > 1 else "")
    try:
        return os.path.lexists(cm._get_os_path(path.strip("/")))
    except HTTPError:
        return None


def _policy_path(path: str) -> str | None:
    try:
        return normalize_path(path)
    except BadPath:
        return None


def _filter_model(cm, model, before, *args, **kwargs):
    user = current_user()
    if user is None or not isinstance(model, dict):
        return model
    warden, account = user
    actor = Actor.for_account(account)
    engine = warden.engine
    path = _policy_path(model.get("path", ""))
    if path is None:
        return model
    model["writable"] = bool(model.get("writable")) and engine.check(actor, "write", path).allowed
    if model.get("type") == "directory" and isinstance(model.get("content"), list):
        root = os.path.realpath(cm.root_dir)
        leading = None
        kept = []
        for entry in model["content"]:
            entry_path = _policy_path(entry.get("path", ""))
            if entry_path is None:
                continue
            if _may_read(cm, engine, actor, entry_path, root):
                entry["writable"] = bool(entry.get("writable")) and engine.check(
                    actor, "write", entry_path
                ).allowed
                kept.append(entry)
            elif entry.get("type") == "directory":
                if leading is None:
                    leading = leads_to_readable(warden, actor, path)
                if entry["name"] in leading and _real(cm, entry_path, root) == entry_path:
                    entry["writable"] = False
                    kept.append(entry)
        model["content"] = kept
    return model


def _real(cm, path: str, root: str) -> str | None:
    real = _resolve(cm._get_os_path(path))
    if not real.startswith(root + os.sep):
        return None
    return real[len(root) + 1 :].replace(os.sep, "/")


def _may_read(cm, engine, actor, path: str, root: str) -> bool:
    if not engine.check(actor, "read", path).allowed:
        return False
    real = _real(cm, path, root)
    # A symlink is listed only if its target is readable too (and inside the root).
    return real == path or (real is not None and engine.check(actor, "read", real).allowed)


def _created(cm, model, before, *args, **kwargs):
    user = current_user()
    if user is not None and before is False and isinstance(model, dict):
        _set_creator(user, model.get("path", ""))
    return _filter_model(cm, model, None)


def _copied(cm, model, before, *args, **kwargs):
    user = current_user()
    if user is not None and isinstance(model, dict):
        _set_creator(user, model.get("path", ""))
    return _filter_model(cm, model, None)


def _set_creator(user, path: str) -> None:
    warden, account = user
    path = _policy_path(path)
    if path and not account.link_id:
        warden.policy.set_creator(path, name_key(account.name))


def _renamed(cm, result, before, old_path, new_path, *args, **kwargs):
    warden = cm.parent.web_app.settings["warden"] if _has_warden(cm) else None
    old, new = _policy_path(old_path), _policy_path(new_path)
    if warden is not None and old is not None and new is not None:
        warden.policy.moved(old, new)
    return result


def _deleted(cm, result, before, path, *args, **kwargs):
    warden = cm.parent.web_app.settings["warden"] if _has_warden(cm) else None
    path = _policy_path(path)
    if warden is not None and path:
        warden.policy.deleted(path)
    return result


def _has_warden(cm) -> bool:
    web_app = getattr(getattr(cm, "parent", None), "web_app", None)
    return web_app is not None and "warden" in web_app.settings


def hiding_contents_manager(base: type, hidden_folders: list[str]) -> type:
    """A subclass of ``base`` that treats ``hidden_folders`` as absent and enforces the policy."""
    folders = tuple(os.path.realpath(f) for f in hidden_folders)

    def _get_os_path(self, path):
        os_path = base._get_os_path(self, path)
        real = _resolve(os_path)
        if any(_inside(real, folder) for folder in folders):
            raise HiddenPath(path)
        return os_path

    @default("files_handler_class")
    def _files_handler_class_default(self):
        return FilesHandler

    @default("files_handler_params")
    def _files_handler_params_default(self):
        # StaticFileHandler.initialize wants a path; FilesHandler never reads it.
        return {"path": self.root_dir}

    return type(
        "Warden" + base.__name__,
        (base,),
        {
            "_get_os_path": _get_os_path,
            "_files_handler_class_default": _files_handler_class_default,
            "_files_handler_params_default": _files_handler_params_default,
            "__module__": __name__,
            "warden_hidden": folders,
            # Every write path ends in save, copy, rename_file or delete_file.
            "get": _one_at_a_time(_listing_get(base), "get"),
            "save": _one_at_a_time(_masking_outputs(_disk_full_is_507(_after(base, "save", _created))), "save"),
            "copy": _after(base, "copy", _copied),
            "rename_file": _after(base, "rename_file", _renamed),
            "delete_file": _after(base, "delete_file", _deleted),
        },
    )
