"""The policy engine: may this actor do this action on this path, and why?

Rules (``../shared/DESIGN.md``, "Policy model"): admins may do everything;
otherwise the deepest path (the target, then each folder above it) that
holds a grant in force for one of the actor's subjects decides, and the
grants at that depth are united. ``none`` at that depth gives nothing, so it
takes a subtree away. A share link's bearer is refused under a label that
forbids links. Answers are cached in process; a version counter in the
store, polled at most every ``poll_interval`` seconds, clears the cache
when any process changes the policy.
"""

from __future__ import annotations

import datetime as dt
import functools
import threading
import time
from dataclasses import dataclass, field

from sqlalchemy import bindparam, select

from ..store import Store
from ..store.models import Grant, LabelDefinition, PathLabel, PolicyVersion, utcnow
from .levels import LEVELS, check_capability, level_of
from .paths import ancestors, normalize_path


_VERSION = select(PolicyVersion.version).where(PolicyVersion.id == 1)
_GRANTS = select(
    Grant.id, Grant.path, Grant.subject, Grant.level, Grant.not_before, Grant.not_after
).where(
    Grant.path.in_(bindparam("paths", expanding=True)),
    Grant.subject.in_(bindparam("subjects", expanding=True)),
)
_NO_LINKS_LABEL = (
    select(LabelDefinition.name)
    .join(PathLabel, PathLabel.label_id == LabelDefinition.id)
    .where(PathLabel.path.in_(bindparam("paths", expanding=True)), LabelDefinition.no_links.is_(True))
    .limit(1)
)


@dataclass(frozen=True)
class Actor:
    """Who is asking: a user (with groups and admin flag) or a share link's bearer."""

    name: str
    key: str | None = None
    groups: frozenset[str] = frozenset()
    admin: bool = False
    link_id: str | None = None
    guest_id: str | None = None  # one bearer of the link (its sign-in), see ``owner``

    @classmethod
    def for_account(cls, account) -> Actor:
        from ..names import name_key

        if getattr(account, "link_id", None):
            return cls(name=f"link:{account.link_id}", link_id=account.link_id,
                       guest_id=getattr(account, "guest_id", None))
        return cls(
            name=account.name,
            key=name_key(account.name),
            groups=frozenset(name_key(g) for g in account.groups),
            admin=account.admin,
        )

    @classmethod
    def for_link(cls, link_id: str) -> Actor:
        return cls(name=f"link:{link_id}", link_id=link_id)

    @property
    def subject(self) -> str:
        return f"link:{self.link_id}" if self.link_id else f"user:{self.key}"

    @property
    def owner(self) -> str:
        """Who owns the kernels this actor starts: its subject, or for a link, the one bearer.

        Every bearer of a link has the link's rights, but each its own kernels:
        a presenter's audience must not run code in each other's.
        """
        if self.link_id and self.guest_id:
            return f"link:{self.link_id}/guest:{self.guest_id}"
        return self.subject

    @functools.cached_property
    def subjects_key(self) -> tuple[str, ...]:
        """``subjects()``, computed once per actor: it keys the engine's cache."""
        return self.subjects()

    def subjects(self) -> tuple[str, ...]:
        if self.link_id:
            return (f"link:{self.link_id}",)
        return (f"user:{self.key}", *(f"group:{g}" for g in sorted(self.groups)), "authenticated")


@dataclass(frozen=True)
class GrantRef:
    id: int
    path: str
    subject: str
    level: str
    not_before: dt.datetime | None = None
    not_after: dt.datetime | None = None

    def describe(self, target: str) -> str:
        where = "" if self.path == target else " (inherited)"
        return f"grant #{self.id}: {self.subject} has {self.level} on '{self.path or '/'}'{where}"


@dataclass(frozen=True)
class Effective:
    """Everything an actor may do on a path, and the reason."""

    capabilities: frozenset[str]
    reason: str
    grants: tuple[GrantRef, ...] = ()

    @property
    def level(self) -> str:
        return level_of(self.capabilities)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    actor: str
    capability: str
    path: str
    reason: str
    grants: tuple[GrantRef, ...] = ()

    @property
    def grant(self) -> GrantRef | None:
        return self.grants[0] if self.grants else None


@dataclass
class _Entry:
    effective: Effective
    valid_until: dt.datetime | None


@dataclass
class PolicyEngine:
    store: Store
    poll_interval: float = 0.25
    max_entries: int = 200_000
    _cache: dict = field(default_factory=dict)
    _version: int | None = None
    _polled: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- the question ---------------------------------------------------------

    def check(self, actor: Actor, capability: str, path: str) -> Decision:
        check_capability(capability)
        path = normalize_path(path)
        effective = self.effective(actor, path)
        allowed = capability in effective.capabilities
        reason = effective.reason
        if not allowed and effective.capabilities:
            reason = f"{reason}, which does not include {capability}"
        return Decision(allowed, actor.name, capability, path, reason, effective.grants)

    def effective(self, actor: Actor, path: str) -> Effective:
        path = normalize_path(path)
        if actor.admin:
            return Effective(frozenset(LEVELS["manage"]), f"{actor.name} is a server admin")
        return self._entry(actor, path).effective

    def next_change(self, actor: Actor, path: str) -> dt.datetime | None:
        """When the answer for ``actor`` on ``path`` next changes by itself: the nearest start or
        end of a time window among the grants that bear on it; None if none lies ahead.
        (A change to the policy changes the answers too; ``version`` tells of those.)"""
        if actor.admin:
            return None
        return self._entry(actor, normalize_path(path)).valid_until

    def _entry(self, actor: Actor, path: str) -> _Entry:
        self._poll_version()
        key = (actor.subjects_key, path)
        now = utcnow()
        entry = self._cache.get(key)
        if entry is not None and (entry.valid_until is None or now < entry.valid_until):
            return entry
        entry = self._compute(actor, path, now)
        with self._lock:
            if len(self._cache) >= self.max_entries:
                self._cache.clear()
            self._cache[key] = entry
        return entry

    def version(self) -> int | None:
        """The store's policy version as last polled: it changes with every grant change."""
        self._poll_version()
        return self._version

    def invalidate(self) -> None:
        """Forget every cached answer (this process changed the policy)."""
        with self._lock:
            self._cache.clear()
            self._version = None

    # -- internals ----------------------------------------------------------

    def _poll_version(self) -> None:
        now = time.monotonic()
        if self._version is not None and now - self._polled < self.poll_interval:
            return
        with self.store.read() as conn:
            version = conn.execute(_VERSION).scalar()
        with self._lock:
            if version != self._version:
                self._cache.clear()
                self._version = version
            self._polled = now

    def _compute(self, actor: Actor, path: str, now: dt.datetime) -> _Entry:
        chain = ancestors(path)
        subjects = actor.subjects_key
        # Core rows, not ORM objects: this runs on every cache miss.
        with self.store.read() as conn:
            grants = [
                GrantRef(*row)
                for row in conn.execute(_GRANTS, {"paths": chain, "subjects": subjects})
            ]
            blocking_label = None
            if actor.link_id:
                blocking_label = conn.execute(_NO_LINKS_LABEL, {"paths": chain}).scalar()
        if blocking_label is not None:
            return _Entry(
                Effective(frozenset(), f"label '{blocking_label}' forbids share links here"), None
            )
        # The cached answer holds until the next time window opens or closes.
        boundaries = [
            t for g in grants for t in (g.not_before, g.not_after) if t is not None and t > now
        ]
        valid_until = min(boundaries) if boundaries else None
        in_force = [
            g
            for g in grants
            if (g.not_before is None or g.not_before <= now)
            and (g.not_after is None or now < g.not_after)
        ]
        depth = {p: i for i, p in enumerate(chain)}
        if not in_force:
            return _Entry(
                Effective(frozenset(), f"no grant gives {actor.name} anything on '{path or '/'}'"),
                valid_until,
            )
        deepest = min(depth[g.path] for g in in_force)
        deciding = tuple(sorted((g for g in in_force if depth[g.path] == deepest), key=lambda g: g.id))
        capabilities = frozenset().union(*(LEVELS[g.level] for g in deciding))
        reason = "; ".join(g.describe(path) for g in deciding)
        return _Entry(Effective(capabilities, reason, deciding), valid_until)
