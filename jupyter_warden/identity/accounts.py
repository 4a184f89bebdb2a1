"""Built-in accounts: users, groups, passwords, API tokens and sign-in sessions.

Everything here runs in one store transaction per call, so a refused
operation changes nothing. Secrets (passwords, tokens, session ids) are
stored only as hashes: argon2 for passwords, SHA-256 for random tokens.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import hmac
import secrets
import unicodedata
from dataclasses import dataclass, field, replace
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..names import InvalidName, name_key, normalize_name
from ..tokens import bearer_state, token_hash
from ..store import Store, bump_policy_version
from ..store.models import (
    ApiToken,
    Grant,
    Group,
    GroupMember,
    LoginSession,
    SealingKeyGrant,
    ShareLink,
    User,
    utcnow,
)

TOKEN_PREFIX = "wdn_"
MIN_PASSWORD_LENGTH = 8
_TOKEN_USE_RESOLUTION = dt.timedelta(minutes=5)


class AccountError(Exception):
    """A refused account operation; the message says what to do instead."""


@dataclass(frozen=True)
class Account:
    """A signed-in identity as the rest of the server sees it."""

    id: int
    name: str
    display_name: str
    admin: bool
    groups: tuple[str, ...] = ()
    has_password: bool = False
    # Set for the bearer of a share link, who is a guest of one path only.
    link_id: str | None = None
    # A guest's own sign-in (its session's row): two bearers of one link are two guests.
    guest_id: str | None = None
    # When the credential that signed this account in expires (None: not by time).
    valid_until: dt.datetime | None = field(default=None, compare=False)

    @classmethod
    def guest(cls, link_id: str, guest_id: str | None = None) -> Account:
        return cls(id=0, name=f"guest-{link_id}", display_name="Guest (shared link)", admin=False,
                   link_id=link_id, guest_id=guest_id)


@dataclass(frozen=True)
class TokenInfo:
    id: int
    note: str | None
    created: dt.datetime
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None

    def state(self, now: dt.datetime | None = None) -> str:
        return bearer_state(self.revoked_at, self.expires_at, now)


def _valid_name(raw: str, kind: str) -> str:
    try:
        return normalize_name(raw, kind)
    except InvalidName as e:
        raise AccountError(str(e)) from None


class Accounts:
    """The account records in one store, and the operations on them."""

    def __init__(self, store: Store, hasher: PasswordHasher | None = None):
        self.store = store
        self.hasher = hasher or PasswordHasher()
        self._decoy: str | None = None

    @property
    def _decoy_hash(self) -> str:
        # Verified against when the user is unknown or has no password, so a
        # failed sign-in costs the same whether or not the user exists. Made
        # on first use: a CLI command that checks no password skips the cost.
        if self._decoy is None:
            self._decoy = self.hasher.hash(secrets.token_urlsafe(16))
        return self._decoy

    # -- lookups ------------------------------------------------------------

    @staticmethod
    def _find_user(session: Session, name: str) -> User | None:
        try:
            key = name_key(normalize_name(name))
        except InvalidName:
            return None
        return session.scalar(select(User).where(User.name_key == key))

    def _require_user(self, session: Session, name: str) -> User:
        user = self._find_user(session, name)
        if user is None:
            raise AccountError(f"no user named {name!r}; see `jupyter-warden user list`")
        return user

    @staticmethod
    def _find_group(session: Session, name: str) -> Group | None:
        try:
            key = name_key(normalize_name(name))
        except InvalidName:
            return None
        return session.scalar(select(Group).where(Group.name_key == key))

    def _require_group(self, session: Session, name: str) -> Group:
        group = self._find_group(session, name)
        if group is None:
            raise AccountError(f"no group named {name!r}; create it with `jupyter-warden group add`")
        return group

    @staticmethod
    def _account(session: Session, user: User) -> Account:
        groups = session.scalars(
            select(Group.name)
            .join(GroupMember, GroupMember.group_id == Group.id)
            .where(GroupMember.user_id == user.id)
            .order_by(Group.name)
        ).all()
        return Account(
            id=user.id,
            name=user.name,
            display_name=user.display_name or user.name,
            admin=user.admin,
            groups=tuple(groups),
            has_password=user.password_hash is not None,
        )

    def get_user(self, name: str) -> Account | None:
        with self.store.transaction() as s:
            user = self._find_user(s, name)
            return self._account(s, user) if user else None

    def list_users(self) -> list[Account]:
        with self.store.transaction() as s:
            users = s.scalars(select(User).order_by(User.name_key)).all()
            return [self._account(s, u) for u in users]

    # -- users --------------------------------------------------------------

    def _check_password(self, password: str) -> None:
        if len(password) < MIN_PASSWORD_LENGTH:
            raise AccountError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")

    def add_user(
        self,
        name: str,
        password: str | None = None,
        admin: bool = False,
        display_name: str | None = None,
    ) -> Account:
        name = _valid_name(name, "user name")
        if password is not None:
            self._check_password(password)
        password_hash = self.hasher.hash(password) if password is not None else None
        try:
            with self.store.transaction() as s:
                if self._find_user(s, name) is not None:
                    raise AccountError(f"a user named {name!r} (or a case/Unicode twin) exists")
                user = User(
                    name=name,
                    name_key=name_key(name),
                    admin=admin,
                    display_name=display_name,
                    password_hash=password_hash,
                )
                s.add(user)
                s.flush()
                return self._account(s, user)
        except IntegrityError:
            raise AccountError(f"a user named {name!r} (or a case/Unicode twin) exists") from None

    def ensure_user(self, name: str) -> Account:
        """The account for ``name``, created without a password if missing."""
        account = self.get_user(name)
        if account is not None:
            return account
        try:
            return self.add_user(name)
        except AccountError:
            account = self.get_user(name)  # created meanwhile by another request
            if account is None:
                raise
            return account

    def set_password(self, name: str, password: str) -> None:
        """Change a password and end every sign-in session of that user."""
        self._check_password(password)
        password_hash = self.hasher.hash(password)
        with self.store.transaction() as s:
            user = self._require_user(s, name)
            user.password_hash = password_hash
            s.execute(delete(LoginSession).where(LoginSession.user_id == user.id))
            bump_policy_version(s)  # open websockets look their sign-in up again

    def set_admin(self, name: str, admin: bool) -> None:
        with self.store.transaction() as s:
            self._require_user(s, name).admin = admin
            bump_policy_version(s)

    def remove_user(self, name: str) -> None:
        with self.store.transaction() as s:
            user = self._require_user(s, name)
            uid = user.id
            # Explicit deletes as well as ON DELETE CASCADE, so that a SQLite
            # database opened without foreign keys still loses every session.
            s.execute(delete(LoginSession).where(LoginSession.user_id == uid))
            s.execute(delete(ApiToken).where(ApiToken.user_id == uid))
            s.execute(delete(GroupMember).where(GroupMember.user_id == uid))
            # A later account of the same name must not inherit these.
            s.execute(delete(Grant).where(Grant.subject == f"user:{user.name_key}"))
            s.execute(delete(SealingKeyGrant).where(SealingKeyGrant.subject == f"user:{user.name_key}"))
            s.delete(user)
            bump_policy_version(s)

    def verify_password(self, name: str, password: str) -> Account | None:
        """The account if ``password`` is right; None otherwise, in equal time."""
        decoy = self._decoy_hash  # before the lookup, so the first call costs the same either way
        with self.store.transaction() as s:
            user = self._find_user(s, name)
            stored = user.password_hash if user is not None else None
            try:
                self.hasher.verify(stored or decoy, password)
            except (VerificationError, InvalidHashError):
                return None
            if stored is None:
                return None
            if self.hasher.check_needs_rehash(stored):
                user.password_hash = self.hasher.hash(password)
            return self._account(s, user)

    # -- API tokens ---------------------------------------------------------

    def create_token(
        self, name: str, expires_at: dt.datetime | None = None, note: str | None = None
    ) -> tuple[int, str]:
        """A new token for ``name``; the clear value is returned once, never stored."""
        if expires_at is not None and expires_at <= utcnow():
            raise AccountError("the token's expiry is in the past")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self.store.transaction() as s:
            user = self._require_user(s, name)
            row = ApiToken(
                user_id=user.id, token_hash=token_hash(token), expires_at=expires_at, note=note
            )
            s.add(row)
            s.flush()
            return row.id, token

    def list_tokens(self, name: str) -> list[TokenInfo]:
        with self.store.transaction() as s:
            user = self._require_user(s, name)
            rows = s.scalars(
                select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.id)
            ).all()
            return [
                TokenInfo(r.id, r.note, r.created, r.expires_at, r.revoked_at) for r in rows
            ]

    def revoke_token(self, name: str, token_id: int) -> None:
        with self.store.transaction() as s:
            user = self._require_user(s, name)
            row = s.get(ApiToken, token_id)
            if row is None or row.user_id != user.id:
                raise AccountError(f"user {user.name!r} has no token {token_id}")
            if row.revoked_at is None:
                row.revoked_at = utcnow()
                bump_policy_version(s)  # open websockets look their sign-in up again

    def user_for_token(self, token: str) -> Account | None:
        if not token.startswith(TOKEN_PREFIX):
            return None
        now = utcnow()
        with self.store.transaction() as s:
            row = s.scalar(select(ApiToken).where(ApiToken.token_hash == token_hash(token)))
            if row is None or bearer_state(row.revoked_at, row.expires_at, now) != "active":
                return None
            if row.last_used is None or now - row.last_used > _TOKEN_USE_RESOLUTION:
                row.last_used = now
            return replace(self._account(s, row.user), valid_until=row.expires_at)

    # -- sign-in sessions ---------------------------------------------------

    def start_session(
        self,
        user_id: int | None,
        lifetime: dt.timedelta,
        address: str | None,
        link_id: str | None = None,
    ) -> str:
        """A new sign-in session, of a user or (``link_id``) of a link's guest."""
        value = secrets.token_urlsafe(32)
        with self.store.transaction() as s:
            s.add(
                LoginSession(
                    user_id=user_id,
                    link_id=link_id,
                    session_hash=token_hash(value),
                    expires_at=utcnow() + lifetime,
                    client_address=(address or "")[:64] or None,
                )
            )
        return value

    def user_for_session(self, value: str) -> Account | None:
        with self.store.transaction() as s:
            row = s.scalar(
                select(LoginSession).where(LoginSession.session_hash == token_hash(value))
            )
            if row is None:
                return None
            now = utcnow()
            if row.expires_at <= now:
                s.delete(row)
                return None
            if row.link_id is not None:
                link = s.get(ShareLink, row.link_id)
                if link is None or bearer_state(link.revoked_at, link.expires_at, now) != "active":
                    s.delete(row)
                    return None
                until = min(row.expires_at, link.expires_at or row.expires_at)
                return replace(Account.guest(row.link_id, guest_id=str(row.id)), valid_until=until)
            return replace(self._account(s, row.user), valid_until=row.expires_at)

    def end_session(self, value: str) -> None:
        with self.store.transaction() as s:
            ended = s.execute(delete(LoginSession).where(LoginSession.session_hash == token_hash(value)))
            if ended.rowcount:
                bump_policy_version(s)  # open websockets look their sign-in up again

    # -- groups -------------------------------------------------------------

    def add_group(self, name: str) -> str:
        name = _valid_name(name, "group name")
        try:
            with self.store.transaction() as s:
                if self._find_group(s, name) is not None:
                    raise AccountError(f"a group named {name!r} (or a case/Unicode twin) exists")
                s.add(Group(name=name, name_key=name_key(name)))
        except IntegrityError:
            raise AccountError(f"a group named {name!r} (or a case/Unicode twin) exists") from None
        return name

    def list_groups(self) -> dict[str, list[str]]:
        with self.store.transaction() as s:
            groups = s.scalars(select(Group).order_by(Group.name_key)).all()
            return {g.name: self._members(s, g) for g in groups}

    @staticmethod
    def _members(session: Session, group: Group) -> list[str]:
        return list(
            session.scalars(
                select(User.name)
                .join(GroupMember, GroupMember.user_id == User.id)
                .where(GroupMember.group_id == group.id)
                .order_by(User.name_key)
            )
        )

    def change_members(
        self, group_name: str, add: list[str] = (), remove: list[str] = ()
    ) -> list[str]:
        """Add and remove members in one transaction; return the new membership."""
        with self.store.transaction() as s:
            group = self._require_group(s, group_name)
            for name in add:
                user = self._require_user(s, name)
                self._add_member(s, group, user)
            for name in remove:
                user = self._require_user(s, name)
                s.execute(
                    delete(GroupMember).where(
                        GroupMember.group_id == group.id, GroupMember.user_id == user.id
                    )
                )
            s.flush()
            bump_policy_version(s)
            return self._members(s, group)

    @staticmethod
    def _add_member(session: Session, group: Group, user: User) -> None:
        exists = session.scalar(
            select(GroupMember.id).where(
                GroupMember.group_id == group.id, GroupMember.user_id == user.id
            )
        )
        if exists is None:
            session.add(GroupMember(group_id=group.id, user_id=user.id))
        else:
            # Added here by hand: the membership is the warden's own from now
            # on, and no longer follows the hub's (identity/hub.py).
            session.get(GroupMember, exists).source = None

    def sync_hub_user(
        self, name: str, groups: list[str] | None, admin: bool, on_change=None
    ) -> tuple[Account, dict]:
        """The account of a JupyterHub user, created if missing, in step with the hub.

        ``groups`` are the user's hub groups: each becomes a membership marked
        as the hub's (groups are created as needed), and the hub's memberships
        the user no longer has are removed. Memberships made in the warden
        itself are never touched. ``admin`` becomes the account's admin flag.
        One transaction; it writes (and bumps the policy version, so cached
        decisions go) only when something changed, and then calls
        ``on_change(session, changes)`` inside it (the audit record commits with
        the change or not at all). Returns the account and what changed.

        ``groups`` None means the hub did not say (a token without the scope
        to read them): nothing is changed, and the account returned has none
        of its hub memberships, only the warden's own.
        """
        name = _valid_name(name, "user name")
        wanted = {name_key(g): g for g in groups or ()}
        try:
            with self.store.transaction() as s:
                user = self._find_user(s, name)
                changes: dict = {}
                if user is not None and not same_spelling(user.name, name):
                    # Twins (ß and ss, full-width letters) are one account here;
                    # two hub users must never share one.
                    raise AccountError(
                        f"hub user {name!r} can't be told apart from this server's user {user.name!r} "
                        "(names that differ only by case or Unicode form are one user here); "
                        "rename one of them in the hub"
                    )
                if user is None:
                    user = User(name=name, name_key=name_key(name), admin=admin)
                    s.add(user)
                    s.flush()
                    changes["created"] = True
                if user.admin != admin:
                    user.admin = admin
                    changes["admin"] = admin
                current = {
                    g.name_key: (g, m)
                    for g, m in s.execute(
                        select(Group, GroupMember)
                        .join(GroupMember, GroupMember.group_id == Group.id)
                        .where(GroupMember.user_id == user.id)
                    ).all()
                }
                for key, (group, member) in current.items():
                    if groups is not None and member.source == "hub" and key not in wanted:
                        s.delete(member)
                        changes.setdefault("groups_left", []).append(group.name)
                for key, group_name in wanted.items():
                    if key in current:
                        continue
                    group = self._find_group(s, group_name)
                    if group is None:
                        group = Group(name=group_name, name_key=key)
                        s.add(group)
                        s.flush()
                    s.add(GroupMember(group_id=group.id, user_id=user.id, source="hub"))
                    changes.setdefault("groups_joined", []).append(group.name)
                if changes:
                    s.flush()
                    bump_policy_version(s)
                    if on_change is not None:
                        on_change(s, changes)
                account = self._account(s, user)
                if groups is None:
                    own = sorted(g.name for g, m in current.values() if m.source != "hub")
                    account = dataclasses.replace(account, groups=tuple(own))
                return account, changes
        except IntegrityError:
            # Another request of the same user synced at the same moment: once
            # more, now against what it wrote.
            return self.sync_hub_user(name, groups, admin, on_change)

    def import_roster(
        self, group_name: str, roster: Path, create_missing: bool = False
    ) -> tuple[list[str], list[str]]:
        """Add a CSV roster's ``username`` column to a group, all or nothing.

        Unknown users are created without a password when ``create_missing``,
        and otherwise refuse the whole import. Returns (added, created).
        """
        names = read_roster(roster)
        with self.store.transaction() as s:
            group = self._require_group(s, group_name)
            unknown = [n for n in names if self._find_user(s, n) is None]
            if unknown and not create_missing:
                raise AccountError(
                    f"{len(unknown)} user(s) in {roster} do not exist: {', '.join(unknown)}; "
                    "create them first, or pass --create-missing"
                )
            for name in unknown:
                s.add(User(name=name, name_key=name_key(name), admin=False))
            s.flush()
            for name in names:
                self._add_member(s, group, self._find_user(s, name))
            bump_policy_version(s)
            return names, unknown


def same_spelling(a: str, b: str) -> bool:
    """Whether two names are the same but for upper and lower case (not a Unicode twin)."""
    return unicodedata.normalize("NFC", a).lower() == unicodedata.normalize("NFC", b).lower()


def read_roster(path: Path) -> list[str]:
    """The valid, de-duplicated user names of a roster CSV, or AccountError."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            fields = [h.strip().lower() for h in (reader.fieldnames or [])]
            if "username" not in fields:
                raise AccountError(f"{path} has no 'username' column (found: {', '.join(fields) or 'none'})")
            column = reader.fieldnames[fields.index("username")]
            names: list[str] = []
            seen: set[str] = set()
            for line, row in enumerate(reader, start=2):
                raw = (row.get(column) or "").strip()
                if not raw:
                    continue
                try:
                    name = normalize_name(raw, "user name")
                except InvalidName as e:
                    raise AccountError(f"{path}, line {line}: {e}") from None
                if name_key(name) not in seen:
                    seen.add(name_key(name))
                    names.append(name)
    except OSError as e:
        raise AccountError(f"can't read roster {path}: {e.strerror}") from None
    except (UnicodeDecodeError, csv.Error) as e:
        raise AccountError(f"{path} is not a UTF-8 CSV file: {e}") from None
    return names


def constant_time_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
