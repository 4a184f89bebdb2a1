"""Kernels and sessions belong to the user who started them.

Stock jupyter_server hands the session (and kernel) of a path to whoever
POSTs that path, and lists every kernel and session to everyone. Here each
kernel records its owner (the policy subject, ``user:KEY`` or ``link:ID``)
when it starts, in this server process where the kernels live; sessions
are keyed by (path, owner); lists show each user only their own (admins see
all, and a user sees kernels shared with them); a session can't be created
on, or repointed to, someone else's kernel unless it is shared with them.
``owner_of(kernel_id)`` on the kernel manager is the API other guards use.
"""

from __future__ import annotations

import inspect
import time
import uuid

from jupyter_core.utils import ensure_async
from jupyter_server.base.call_context import CallContext
from tornado import web

from ..policy.engine import Actor
from .kernel_shares import may_use_kernel


def _requester() -> Actor | None:
    """The actor of the request being served; None for the server's own calls."""
    handler = CallContext.get(CallContext.JUPYTER_HANDLER)
    account = getattr(handler, "warden_account", None)
    return Actor.for_account(account) if account is not None else None


def _gateway_allowed_envs() -> list[str]:
    from jupyter_server.gateway.gateway_client import GatewayClient

    return [n for n in GatewayClient.instance().allowed_envs.split(",") if not n.startswith("KERNEL_")]


def _stopped_by(what: str, actor: Actor | None) -> str:
    who = f"by {actor.name}" if actor is not None else "by the server"
    return f"[jupyter-warden] The kernel was {what} {who} before this cell finished; it was not completed."


def owning_kernel_manager(base: type) -> type:
    """A subclass of the configured kernel manager that records and filters by owner."""

    class WardenKernelManager(base):
        _owners: dict

        def owner_of(self, kernel_id: str) -> str | None:
            """The policy subject that started ``kernel_id``; None if unknown or gone."""
            if kernel_id not in self:
                return None
            return self.__dict__.setdefault("_owners", {}).get(kernel_id)

        def visible_to(self, actor: Actor | None, kernel_id: str) -> bool:
            return actor is None or may_use_kernel(self, actor, kernel_id)

        async def start_kernel(self, *args, **kwargs):
            actor = _requester()
            pool = getattr(self, "warden_pool", None)
            if pool is not None:  # kernels on an Enterprise Gateway (pool/warden.py)
                return await self._start_pool_kernel(pool, actor, *args, **kwargs)
            kernel_id = await super().start_kernel(*args, **kwargs)
            if actor is not None:
                self.__dict__.setdefault("_owners", {})[kernel_id] = actor.owner
            return kernel_id

        async def _start_pool_kernel(self, pool, actor, *args, **kwargs):
            if actor is None:
                raise web.HTTPError(403, "a pool kernel is started only for a signed-in user")
            if kwargs.get("kernel_id") is not None:
                # The gateway would hand over any kernel it runs under that id.
                raise web.HTTPError(400, "kernel ids are chosen by the server; leave kernel.id out")
            kernel_id = str(uuid.uuid4())
            # The server writes who the kernel runs as, over anything the request carried.
            # Only what the gateway client would forward anyway (GatewayClient.allowed_envs): it
            # logs this env, and the server's own environment (keys, URLs) has no place there.
            allowed = {name for name in _gateway_allowed_envs() if name}
            given = {k: v for k, v in (kwargs.get("env") or {}).items() if k in allowed}
            kwargs["env"] = {**given, **pool.launch_env(actor, kernel_id)}
            try:
                started = await super().start_kernel(*args, **kwargs)
            except BaseException:
                pool.forget(kernel_id)
                raise
            if started != kernel_id:
                await super().shutdown_kernel(started, now=True)
                raise web.HTTPError(502, "the gateway started the kernel under another id than asked; "
                                         "it was stopped")
            self.__dict__.setdefault("_owners", {})[kernel_id] = actor.owner
            pool.started(kernel_id, actor, self)
            return kernel_id

        async def restart_kernel(self, kernel_id, *args, **kwargs):
            # A restart asked for here is not a lost kernel (GuardedGatewayConnection).
            self.__dict__.setdefault("_restarts", {})[kernel_id] = time.monotonic()
            why = _stopped_by("restarted", _requester())
            restarted = await ensure_async(super().restart_kernel(kernel_id, *args, **kwargs))
            self._executions_stopped(kernel_id, why)
            return restarted

        def _executions_stopped(self, kernel_id: str, why: str) -> None:
            """The cells running on a kernel that was restarted or shut down never get a reply."""
            connections = getattr(getattr(self, "warden_app", None), "kernel_connections", None)
            if connections is not None:
                connections.executions_stopped(kernel_id, why)

        def restart_requested(self, kernel_id: str, within: float = 60.0) -> bool:
            at = self.__dict__.get("_restarts", {}).get(kernel_id)
            return at is not None and time.monotonic() - at < within

        def list_kernels(self):
            actor = _requester()
            kernels = super().list_kernels()
            if inspect.isawaitable(kernels):  # the gateway's manager (pool kernels) lists them async
                return self._visible_kernels(actor, kernels)
            return [k for k in kernels if self.visible_to(actor, k["id"])]

        async def _visible_kernels(self, actor, kernels):
            return [k for k in await kernels if self.visible_to(actor, k["id"])]

        async def cull_kernel_if_idle(self, kernel_id):
            # Pool kernels: jupyter_server's culler shuts them down from the gateway's
            # activity model; their users are told first (pool/warden.py).
            pool = getattr(self, "warden_pool", None)
            kernel = self._kernels.get(kernel_id)
            if pool is None or kernel is None or getattr(kernel, "execution_state", None) == "dead":
                return await super().cull_kernel_if_idle(kernel_id)  # a dead one was told as lost
            culling = self.__dict__.setdefault("_culling", set())
            culling.add(kernel_id)
            try:
                return await super().cull_kernel_if_idle(kernel_id)
            finally:
                culling.discard(kernel_id)

        def shutdown_kernel(self, kernel_id, *args, **kwargs):
            pool = getattr(self, "warden_pool", None)
            if pool is not None and kernel_id in self.__dict__.get("_culling", ()):
                # Only the culler shuts a kernel down while it checks it: an idle cull.
                pool.culled(kernel_id, self.cull_idle_timeout, self.owner_of(kernel_id))
            why = _stopped_by("shut down", _requester())
            stopped = super().shutdown_kernel(kernel_id, *args, **kwargs)  # sync or async, as the base
            if inspect.isawaitable(stopped):
                return self._after_shutdown(stopped, kernel_id, why)
            self._executions_stopped(kernel_id, why)
            return stopped

        async def _after_shutdown(self, stopping, kernel_id: str, why: str):
            stopped = await stopping
            self._executions_stopped(kernel_id, why)
            return stopped

    WardenKernelManager.__name__ = WardenKernelManager.__qualname__ = "Warden" + base.__name__
    return WardenKernelManager


def owning_session_manager(base: type) -> type:
    """A subclass of the configured session manager keyed by (path, owner)."""

    class WardenSessionManager(base):
        def _visible(self, actor: Actor | None, kernel_id: str, own_only: bool = False,
                     shared: bool = False) -> bool:
            if actor is None:
                return True
            owner_of = getattr(self.kernel_manager, "owner_of", None)
            if owner_of is None:
                return actor.admin  # fail closed: nobody's kernels can be told apart
            if actor.admin and not own_only:
                return True
            if shared:  # listed, and usable for a session; never changed through theirs
                return may_use_kernel(self.kernel_manager, actor, kernel_id)
            return owner_of(kernel_id) == actor.owner

        def paths_of_kernel(self, kernel_id: str) -> list[str]:
            """The paths of the sessions that use ``kernel_id`` (for `manage` checks)."""
            rows = self.cursor.execute("SELECT path FROM session WHERE kernel_id=?", (kernel_id,))
            return [row[0] for row in rows.fetchall()]

        async def session_exists(self, path):
            actor = _requester()
            rows = self.cursor.execute("SELECT * FROM session WHERE path=?", (path,)).fetchall()
            for row in rows:
                if self._visible(actor, row["kernel_id"], own_only=True):
                    if await self.row_to_model(row, tolerate_culled=True) is not None:
                        return True
            return False

        async def get_session(self, **kwargs):
            actor = _requester()
            if actor is None or not kwargs:
                return await super().get_session(**kwargs)
            for column in kwargs:
                if column not in self._columns:
                    raise TypeError(f"No such column: {column}")
            where = " AND ".join(f"{column}=?" for column in kwargs)
            rows = self.cursor.execute(
                f"SELECT * FROM session WHERE {where}", list(kwargs.values())  # noqa: S608
            ).fetchall()
            # By path a user reaches only their own session, admins included:
            # two users on one notebook get two kernels.
            own_only = "path" in kwargs
            for row in rows:
                if self._visible(actor, row["kernel_id"], own_only=own_only):
                    try:
                        return await self.row_to_model(row)
                    except KeyError as e:
                        raise web.HTTPError(404, f"Session not found: {e}") from e
            raise web.HTTPError(404, "Session not found")

        async def create_session(self, path=None, name=None, type=None, kernel_name=None, kernel_id=None):
            self._refuse_foreign_kernel(kernel_id)
            return await super().create_session(
                path=path, name=name, type=type, kernel_name=kernel_name, kernel_id=kernel_id
            )

        async def update_session(self, session_id, **kwargs):
            await self.get_session(session_id=session_id)  # 404 if not theirs
            self._refuse_foreign_kernel(kwargs.get("kernel_id"))
            return await super().update_session(session_id, **kwargs)

        async def list_sessions(self):
            actor = _requester()
            sessions = await super().list_sessions()
            return [s for s in sessions if self._visible(actor, s["kernel"]["id"], shared=True)]

        def _refuse_foreign_kernel(self, kernel_id) -> None:
            actor = _requester()
            if actor is None or kernel_id is None:
                return
            if kernel_id not in self.kernel_manager:
                if getattr(self.kernel_manager, "warden_pool", None) is not None:
                    # The gateway would hand over any kernel it runs under that id.
                    raise web.HTTPError(400, "kernel ids are chosen by the server; leave kernel.id out")
                return  # a new kernel will be started at that id, owned by the requester
            if not self._visible(actor, kernel_id, shared=True):
                raise web.HTTPError(
                    403,
                    f"kernel {kernel_id} belongs to someone else; start your own kernel "
                    "(leave kernel.id out of the request)",
                )

    WardenSessionManager.__name__ = WardenSessionManager.__qualname__ = "Warden" + base.__name__
    return WardenSessionManager
