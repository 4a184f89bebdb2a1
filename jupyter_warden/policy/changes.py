"""Changing the policy: grants, labels, share links, and paths that move.

Each method is one store transaction that also bumps the policy version,
so every process's engine cache follows. Rules about who may make a
change (``manage`` on the path) are checked by the callers through the
engine; the rules here are about the change itself: subjects must exist,
levels must be known, labels must allow it.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass

from sqlalchemy import String, delete, func, literal, or_, select, update
from sqlalchemy.orm import Session

from ..names import InvalidName, name_key, normalize_name
from ..tokens import bearer_state, token_hash
from ..store import Store, bump_policy_version
from ..store.models import (
    Grant,
    Group,
    LabelDefinition,
    LoginSession,
    PathLabel,
    ShareLink,
    User,
    utcnow,
)
from .engine import GrantRef
from .levels import LEVELS, LINK_LEVELS
from .paths import ancestors, normalize_path

LINK_TOKEN_PREFIX = "wdl_"


class PolicyError(Exception):
    """A refused policy change; the message says why and what to do."""


@dataclass(frozen=True)
class Audited:
    """Who asked for a change: its audit record is written in the change's transaction."""

    log: object  # audit.log.AuditLog
    actor: str
    client: str | None = None
    details: dict | None = None

    def record(self, session: Session, action: str, path: str | None, grant_id=None, **extra):
        details = {**(self.details or {}), **{k: v for k, v in extra.items() if v is not None}}
        self.log.record(
            self.actor, action, "allow", path=path, grant_id=grant_id,
            client=self.client, details=details or None, session=session,
        )


@dataclass(frozen=True)
class LabelInfo:
    name: str
    banner: str | None
    colour: str | None
    no_links: bool
    only_groups: tuple[str, ...]
    path: str | None = None  # where it is set, for labels on a path


@dataclass(frozen=True)
class LinkInfo:
    id: str
    path: str
    level: str
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None
    created_by: str | None
    created: dt.datetime

    def state(self, now: dt.datetime | None = None) -> str:
        return bearer_state(self.revoked_at, self.expires_at, now)


def _ref(g: Grant) -> GrantRef:
    return GrantRef(g.id, g.path, g.subject, g.level, g.not_before, g.not_after)


def _label(d: LabelDefinition, path: str | None = None) -> LabelInfo:
    groups = tuple(g for g in d.only_groups.split() if g)
    return LabelInfo(d.name, d.banner, d.colour, d.no_links, groups, path)


def _path(path: str) -> str:
    try:
        return normalize_path(path)
    except ValueError as e:
        raise PolicyError(str(e)) from None


class Policy:
    """Writes to the policy tables of one store."""

    # Set where users and groups come from elsewhere (JupyterHub): a grant may
    # name one before it first arrives, and its (password-less) record is made.
    create_missing_subjects = False

    def __init__(self, store: Store, on_change=None):
        self.store = store
        # Called after each committed change (the server's engine invalidates).
        self.on_change = on_change or (lambda: None)

    def _changed(self, session: Session) -> None:
        bump_policy_version(session)

    # -- subjects -------------------------------------------------------------

    def subject_key(self, session: Session, subject: str) -> str:
        """The stored form of a subject as written by a person, or PolicyError."""
        kind, _, raw = subject.partition(":")
        if subject == "authenticated":
            return "authenticated"
        if kind not in ("user", "group") or not raw:
            raise PolicyError(
                f"subject {subject!r} is not one of user:NAME, group:NAME or authenticated"
                + (" (share links are made with `link create`)" if kind == "link" else "")
            )
        try:
            key = name_key(normalize_name(raw))
        except InvalidName as e:
            raise PolicyError(str(e)) from None
        table = User if kind == "user" else Group
        if session.scalar(select(table.id).where(table.name_key == key)) is None:
            if not self.create_missing_subjects:
                raise PolicyError(f"there is no {kind} named {raw!r}")
            name = normalize_name(raw)
            session.add(User(name=name, name_key=key, admin=False) if kind == "user" else Group(name=name, name_key=key))
            session.flush()
        return f"{kind}:{key}"

    # -- grants ---------------------------------------------------------------

    def grant(
        self,
        path: str,
        subject: str,
        level: str,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
        by: str | None = None,
        audited: Audited | None = None,
    ) -> GrantRef:
        path = _path(path)
        if level not in LEVELS:
            raise PolicyError(f"unknown level {level!r}: use one of {', '.join(LEVELS)}")
        if not_before and not_after and not_after <= not_before:
            raise PolicyError("the grant's end (not_after) must come after its start (not_before)")
        if not_after and not_after <= utcnow():
            raise PolicyError("the grant's end (not_after) is already past")
        with self.store.transaction() as s:
            key = self.subject_key(s, subject)
            if level != "none":
                self._check_label_rules(s, path, key)
            row = s.scalar(select(Grant).where(Grant.path == path, Grant.subject == key))
            if row is None:
                row = Grant(path=path, subject=key)
                s.add(row)
            row.level = level
            row.not_before = not_before
            row.not_after = not_after
            row.created_by = by
            row.created = utcnow()
            s.flush()
            self._changed(s)
            ref = _ref(row)
            if audited:
                audited.record(s, "grant.create", path, grant_id=ref.id, subject=key, level=level)
        self.on_change()
        return ref

    def revoke(self, path: str, subject: str, audited: Audited | None = None) -> GrantRef:
        path = _path(path)
        with self.store.transaction() as s:
            key = subject if subject.startswith("link:") else self.subject_key(s, subject)
            row = s.scalar(select(Grant).where(Grant.path == path, Grant.subject == key))
            if row is None:
                raise PolicyError(f"{subject} has no grant on '{path or '/'}' itself; see `access`")
            ref = _ref(row)
            s.delete(row)
            self._changed(s)
            if audited:
                audited.record(s, "grant.revoke", path, grant_id=ref.id, subject=key, level=ref.level)
        self.on_change()
        return ref

    def grants_on(self, path: str, inherited: bool = True) -> list[GrantRef]:
        """Grants on ``path`` (and, if ``inherited``, on the folders above it)."""
        path = _path(path)
        chain = ancestors(path) if inherited else [path]
        with self.store.transaction() as s:
            rows = s.scalars(select(Grant).where(Grant.path.in_(chain))).all()
            depth = {p: i for i, p in enumerate(chain)}
            return [_ref(g) for g in sorted(rows, key=lambda g: (depth[g.path], g.subject))]

    def get_grant(self, grant_id: int) -> GrantRef | None:
        with self.store.transaction() as s:
            row = s.get(Grant, grant_id)
            return _ref(row) if row else None

    def set_creator(self, path: str, user_key: str) -> None:
        """The creator of a file gets ``manage`` on it, and nothing stale from before."""
        path = _path(path)
        subject = f"user:{user_key}"
        with self.store.transaction() as s:
            s.execute(delete(Grant).where(Grant.path == path))
            s.execute(delete(PathLabel).where(PathLabel.path == path))
            s.add(Grant(path=path, subject=subject, level="manage", created_by=subject))
            self._changed(s)
        self.on_change()

    # -- paths that move or go ----------------------------------------------

    @staticmethod
    def _subtree(column, path: str):
        # Not LIKE: SQLite's LIKE ignores ASCII case, so 'ALICE/%' matched 'alice/x'.
        if not path:
            return literal(True)
        prefix = path + "/"
        return or_(column == path, func.substr(column, 1, len(prefix)) == prefix)

    def moved(self, old: str, new: str) -> None:
        """Grants, labels and links follow a file or folder to its new path."""
        old, new = _path(old), _path(new)
        if old == new:
            return
        with self.store.transaction() as s:
            # Whatever was recorded at the destination belonged to a file that
            # is gone now (rename refuses to overwrite): drop it first.
            for table in (Grant, PathLabel, ShareLink):
                if table is ShareLink:
                    s.execute(
                        update(ShareLink)
                        .where(self._subtree(ShareLink.path, new))
                        .values(revoked_at=utcnow())
                    )
                else:
                    s.execute(delete(table).where(self._subtree(table.path, new)))
            for table in (Grant, PathLabel, ShareLink):
                s.execute(
                    update(table)
                    .where(self._subtree(table.path, old))
                    .values(path=literal(new, String) + func.substr(table.path, len(old) + 1))
                    .execution_options(synchronize_session=False)
                )
            self._changed(s)
        self.on_change()

    def deleted(self, path: str) -> None:
        """A deleted file takes its grants, labels and links with it."""
        path = _path(path)
        if path == "":
            return
        with self.store.transaction() as s:
            s.execute(delete(Grant).where(self._subtree(Grant.path, path)))
            s.execute(delete(PathLabel).where(self._subtree(PathLabel.path, path)))
            links = s.scalars(select(ShareLink.id).where(self._subtree(ShareLink.path, path))).all()
            if links:
                s.execute(
                    update(ShareLink).where(ShareLink.id.in_(links)).values(revoked_at=utcnow())
                )
                s.execute(delete(Grant).where(Grant.subject.in_([f"link:{i}" for i in links])))
                s.execute(delete(LoginSession).where(LoginSession.link_id.in_(links)))
            self._changed(s)
        self.on_change()

    # -- labels ---------------------------------------------------------------

    def define_label(
        self,
        name: str,
        banner: str | None = None,
        colour: str | None = None,
        no_links: bool = False,
        only_groups: list[str] = (),
        audited: Audited | None = None,
    ) -> LabelInfo:
        try:
            name = normalize_name(name, "label name")
        except InvalidName as e:
            raise PolicyError(str(e)) from None
        with self.store.transaction() as s:
            keys = []
            for g in only_groups:
                keys.append(self.subject_key(s, f"group:{g}").split(":", 1)[1])
            row = s.scalar(select(LabelDefinition).where(LabelDefinition.name == name))
            if row is None:
                row = LabelDefinition(name=name)
                s.add(row)
            row.banner, row.colour, row.no_links = banner, colour, no_links
            row.only_groups = " ".join(keys)
            s.flush()
            for labelled in s.scalars(select(PathLabel.path).where(PathLabel.label_id == row.id)):
                self._check_existing_against(s, labelled, row)
            self._changed(s)
            info = _label(row)
            if audited:
                audited.record(s, "label.define", None, label=name)
        self.on_change()
        return info

    def list_labels(self) -> list[LabelInfo]:
        with self.store.transaction() as s:
            return [_label(d) for d in s.scalars(select(LabelDefinition).order_by(LabelDefinition.name))]

    def set_label(self, path: str, label: str, audited: Audited | None = None) -> LabelInfo:
        path = _path(path)
        with self.store.transaction() as s:
            row = s.scalar(select(LabelDefinition).where(LabelDefinition.name == label))
            if row is None:
                raise PolicyError(
                    f"there is no label named {label!r}; define it first with `label define`"
                )
            self._check_existing_against(s, path, row)
            exists = s.scalar(
                select(PathLabel.id).where(PathLabel.path == path, PathLabel.label_id == row.id)
            )
            if exists is None:
                s.add(PathLabel(path=path, label_id=row.id))
            self._changed(s)
            info = _label(row, path)
            if audited:
                audited.record(s, "label.set", path, label=label)
        self.on_change()
        return info

    def remove_label(self, path: str, label: str, audited: Audited | None = None) -> None:
        path = _path(path)
        with self.store.transaction() as s:
            row = s.scalar(select(LabelDefinition).where(LabelDefinition.name == label))
            found = row and s.scalar(
                select(PathLabel).where(PathLabel.path == path, PathLabel.label_id == row.id)
            )
            if not found:
                raise PolicyError(f"'{path or '/'}' has no label {label!r} of its own")
            s.delete(found)
            self._changed(s)
            if audited:
                audited.record(s, "label.remove", path, label=label)
        self.on_change()

    def labels_on(self, path: str) -> list[LabelInfo]:
        """Labels in force on ``path``: its own and its folders'."""
        path = _path(path)
        with self.store.transaction() as s:
            rows = s.execute(
                select(LabelDefinition, PathLabel.path)
                .join(PathLabel, PathLabel.label_id == LabelDefinition.id)
                .where(PathLabel.path.in_(ancestors(path)))
                .order_by(LabelDefinition.name)
            ).all()
            return [_label(d, p) for d, p in rows]

    def _labels_in_force(self, s: Session, path: str) -> list[LabelDefinition]:
        return list(
            s.scalars(
                select(LabelDefinition)
                .join(PathLabel, PathLabel.label_id == LabelDefinition.id)
                .where(PathLabel.path.in_(ancestors(path)))
            )
        )

    def _check_label_rules(self, s: Session, path: str, subject: str) -> None:
        for label in self._labels_in_force(s, path):
            self._check_one(label, path, subject)

    @staticmethod
    def _check_one(label: LabelDefinition, path: str, subject: str) -> None:
        if subject.startswith("link:") and label.no_links:
            raise PolicyError(
                f"label '{label.name}' on '{path or '/'}' forbids share links; "
                "share with named users or groups instead"
            )
        allowed = label.only_groups.split()
        if allowed and not (subject.startswith("group:") and subject.split(":", 1)[1] in allowed):
            raise PolicyError(
                f"label '{label.name}' on '{path or '/'}' allows grants only to "
                f"{', '.join('group:' + g for g in allowed)}; {subject} is not one of them"
            )

    def _check_existing_against(self, s: Session, path: str, label: LabelDefinition) -> None:
        """Refuse a label (or a stricter label) that grants already in place break."""
        rows = s.scalars(
            select(Grant).where(self._subtree(Grant.path, path), Grant.level != "none")
        ).all()
        for g in rows:
            if g.subject.startswith("user:") and g.level == "manage" and g.created_by == g.subject:
                continue  # a creator's own rights are not a share
            try:
                self._check_one(label, g.path, g.subject)
            except PolicyError as e:
                raise PolicyError(
                    f"{e}; grant #{g.id} ({g.subject} {g.level} on '{g.path or '/'}') "
                    "breaks that rule: revoke it first"
                ) from None

    # -- share links ------------------------------------------------------------

    def create_link(
        self,
        path: str,
        level: str,
        expires_at: dt.datetime | None = None,
        by: str | None = None,
        audited: Audited | None = None,
    ) -> tuple[LinkInfo, str]:
        """A new link; its token is returned this once and stored only hashed."""
        path = _path(path)
        if level not in LINK_LEVELS:
            raise PolicyError(
                f"a share link gives at most {' or '.join(LINK_LEVELS)}, not {level!r}"
            )
        if expires_at is not None and expires_at <= utcnow():
            raise PolicyError("the link's expiry is already past")
        link_id = secrets.token_hex(8)
        token = LINK_TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self.store.transaction() as s:
            self._check_label_rules(s, path, f"link:{link_id}")
            row = ShareLink(
                id=link_id,
                token_hash=token_hash(token),
                path=path,
                level=level,
                expires_at=expires_at,
                created_by=by,
            )
            s.add(row)
            s.add(
                Grant(
                    path=path,
                    subject=f"link:{link_id}",
                    level=level,
                    not_after=expires_at,
                    created_by=by,
                )
            )
            s.flush()
            self._changed(s)
            info = self._link_info(row)
            if audited:
                audited.record(s, "link.create", path, link=link_id, level=level)
        self.on_change()
        return info, token

    @staticmethod
    def _link_info(row: ShareLink) -> LinkInfo:
        return LinkInfo(
            row.id, row.path, row.level, row.expires_at, row.revoked_at, row.created_by, row.created
        )

    def revoke_link(self, link_id: str, audited: Audited | None = None) -> LinkInfo:
        with self.store.transaction() as s:
            row = s.get(ShareLink, link_id)
            if row is None:
                raise PolicyError(f"there is no share link {link_id!r}; see `link list`")
            if row.revoked_at is None:
                row.revoked_at = utcnow()
            s.execute(delete(Grant).where(Grant.subject == f"link:{link_id}"))
            s.execute(delete(LoginSession).where(LoginSession.link_id == link_id))
            self._changed(s)
            info = self._link_info(row)
            if audited:
                audited.record(s, "link.revoke", info.path, link=link_id)
        self.on_change()
        return info

    def get_link(self, link_id: str) -> LinkInfo | None:
        with self.store.transaction() as s:
            row = s.get(ShareLink, link_id)
            return self._link_info(row) if row else None

    def list_links(self, path: str | None = None) -> list[LinkInfo]:
        with self.store.transaction() as s:
            query = select(ShareLink).order_by(ShareLink.created)
            if path is not None:
                query = query.where(self._subtree(ShareLink.path, _path(path)))
            return [self._link_info(r) for r in s.scalars(query)]

    def link_for_token(self, token: str) -> LinkInfo | None:
        """The link a token opens, if it is in force."""
        if not token.startswith(LINK_TOKEN_PREFIX):
            return None
        with self.store.transaction() as s:
            row = s.scalar(select(ShareLink).where(ShareLink.token_hash == token_hash(token)))
            if row is None:
                return None
            info = self._link_info(row)
        return info if info.state() == "active" else None
