"""The vault: secrets owned by a user or a group, encrypted at rest, granted to users and groups.

Values are AES-256-GCM blobs under the server's master key, bound to the
secret's owner and name, so a blob can't be moved to another secret. Nothing
here returns a value except ``read``, which the kernel channel calls for a
kernel's own user. Who may manage a secret, and who may read it, is decided
here and nowhere else (``may_manage``, ``_may_read``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from ..master_key import MasterKey, MasterKeyError
from ..policy.changes import Audited, Policy, PolicyError
from ..policy.engine import Actor
from ..store import Store
from ..store.models import Group, GroupMember, Secret, SecretGrant, User, utcnow

PURPOSE = "secret"
# Names a kernel can also use as environment variable names (secrets.env).
NAME_RULE = "1 to 128 characters: letters, digits and _, not starting with a digit"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}\Z")
MAX_VALUE_BYTES = 64 * 1024


class VaultError(Exception):
    """A refused vault operation; the message says why and what to do."""


class NameTaken(VaultError):
    """The name belongs to a secret the asker does not manage."""


class OwnerRefused(VaultError):
    """The asker may not give a secret to that owner."""


class SecretNotGranted(VaultError):
    """The secret does not exist or is not granted to the asker (the two are not told apart)."""


@dataclasses.dataclass(frozen=True)
class SecretInfo:
    """What may be shown of a secret: never its value."""

    name: str
    owner: str
    grants: tuple[str, ...]
    created_by: str | None
    created: dt.datetime
    updated: dt.datetime
    manageable: bool = True  # the asker may change it (else it is only granted to them)

    def as_json(self) -> dict:
        return {
            "name": self.name,
            "owner": self.owner,
            "grants": list(self.grants) if self.manageable else None,
            "created_by": self.created_by,
            "created": self.created.isoformat(),
            "updated": self.updated.isoformat(),
            "manageable": self.manageable,
        }


def check_name(name) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise VaultError(f"secret name {name!r} is not allowed: use {NAME_RULE}")
    return name


def check_value(value) -> bytes:
    if not isinstance(value, str):
        raise VaultError("a secret's value must be text")
    data = value.encode("utf-8", "surrogatepass")
    if not value:
        raise VaultError("a secret's value can't be empty")
    if len(data) > MAX_VALUE_BYTES:
        raise VaultError(f"a secret's value is at most {MAX_VALUE_BYTES} bytes, not {len(data)}")
    return data


def _context(owner: str, name: str) -> str:
    return f"{owner}\0{name}"


class Vault:
    """The secrets of one store, opened under one master key."""

    def __init__(self, store: Store, master_key: MasterKey, policy: Policy | None = None):
        self.store = store
        self.master_key = master_key
        self.policy = policy or Policy(store)

    # -- who may do what (the vault's whole access rule) -----------------------

    @staticmethod
    def may_manage(actor: Actor | None, owner: str) -> bool:
        """The operator (``None``: the CLI), admins, the owner, and members of an owning group."""
        if actor is None or actor.admin:
            return True
        if actor.link_id:
            return False
        return owner in actor.subjects()

    @staticmethod
    def _may_read(subjects: tuple[str, ...], owner: str, grants: list[str]) -> bool:
        # Admins read only what they own or were granted: managing is not reading.
        return owner in subjects or any(g in subjects for g in grants)

    # -- helpers -----------------------------------------------------------------

    def _row(self, s: Session, name: str) -> Secret | None:
        return s.scalar(select(Secret).where(Secret.name == name))

    def _require(self, s: Session, name: str, actor: Actor | None) -> Secret:
        """The secret, if the actor may manage it; one refusal for 'missing' and 'not yours'."""
        row = self._row(s, check_name(name))
        if row is None or not self.may_manage(actor, row.owner):
            raise SecretNotGranted(
                f"there is no secret {name!r} that you manage; see `jupyter-warden secrets list`"
            )
        return row

    def _owner_key(self, s: Session, owner: str) -> str:
        kind = owner.partition(":")[0]
        if kind not in ("user", "group"):
            raise VaultError(f"a secret's owner is user:NAME or group:NAME, not {owner!r}")
        try:
            return self.policy.subject_key(s, owner)
        except PolicyError as e:
            raise VaultError(str(e)) from None

    @staticmethod
    def _grants(s: Session, secret_id: int) -> list[str]:
        return list(s.scalars(
            select(SecretGrant.subject).where(SecretGrant.secret_id == secret_id).order_by(SecretGrant.subject)
        ))

    def _info(self, s: Session, row: Secret, manageable: bool = True) -> SecretInfo:
        return SecretInfo(row.name, row.owner, tuple(self._grants(s, row.id)), row.created_by,
                          row.created, row.updated, manageable)

    # -- changes (each one transaction, audited inside it) --------------------------

    def set(self, name: str, value: str, actor: Actor | None, owner: str | None = None,
            audited: Audited | None = None) -> tuple[SecretInfo, bool]:
        """Create or replace a secret's value; returns (info, created)."""
        check_name(name)
        data = check_value(value)
        with self.store.transaction() as s:
            row = self._row(s, name)
            owner_key = self._owner_key(s, owner) if owner else None
            if row is not None and not self.may_manage(actor, row.owner):
                # Names are server-wide: say it is taken, never what it holds or who owns it.
                raise NameTaken(f"the secret name {name!r} is taken by someone else; choose another name")
            if owner_key is None:
                if row is not None:
                    owner_key = row.owner
                elif actor is None:
                    raise VaultError("a new secret needs an owner: add --owner user:NAME or --owner group:NAME")
                else:
                    owner_key = actor.subject
            if not self.may_manage(actor, owner_key):
                raise OwnerRefused(f"you can't give a secret to {owner}: own it yourself or "
                                 "give it to a group you are a member of")
            if owner_key.startswith("link:"):
                raise VaultError("a share link's guest can't keep secrets")
            created = row is None
            now = utcnow()
            if created:
                row = Secret(name=name, owner=owner_key, created_by=actor.name if actor else None, created=now)
                s.add(row)
            row.owner = owner_key
            row.ciphertext = self.master_key.encrypt(data, purpose=PURPOSE, context=_context(owner_key, name))
            row.updated = now
            s.flush()
            if audited:
                audited.record(s, "secret.set", None, secret=name, owner=owner_key,
                               op="create" if created else "replace")
            return self._info(s, row), created

    def grant(self, name: str, subject: str, actor: Actor | None, audited: Audited | None = None) -> SecretInfo:
        with self.store.transaction() as s:
            row = self._require(s, name, actor)
            try:
                key = self.policy.subject_key(s, subject)
            except PolicyError as e:
                raise VaultError(str(e)) from None
            exists = s.scalar(select(SecretGrant.id).where(SecretGrant.secret_id == row.id,
                                                           SecretGrant.subject == key))
            if exists is None:
                s.add(SecretGrant(secret_id=row.id, subject=key, created_by=actor.name if actor else None))
                s.flush()
            if audited:
                audited.record(s, "secret.grant", None, secret=name, subject=key)
            return self._info(s, row)

    def revoke(self, name: str, subject: str, actor: Actor | None, audited: Audited | None = None) -> SecretInfo:
        with self.store.transaction() as s:
            row = self._require(s, name, actor)
            try:
                key = self.policy.subject_key(s, subject)
            except PolicyError as e:
                raise VaultError(str(e)) from None
            gone = s.execute(delete(SecretGrant).where(SecretGrant.secret_id == row.id,
                                                       SecretGrant.subject == key)).rowcount
            if not gone:
                raise VaultError(f"{subject} has no grant on secret {name!r}")
            if audited:
                audited.record(s, "secret.revoke", None, secret=name, subject=key)
            return self._info(s, row)

    def remove(self, name: str, actor: Actor | None, audited: Audited | None = None) -> None:
        with self.store.transaction() as s:
            row = self._require(s, name, actor)
            owner = row.owner
            s.delete(row)
            s.flush()
            if audited:
                audited.record(s, "secret.remove", None, secret=name, owner=owner)

    # -- reading -------------------------------------------------------------------

    def list(self, actor: Actor | None) -> list[SecretInfo]:
        """The secrets an actor manages (with their grants) or may read (names and owners only)."""
        with self.store.transaction() as s:
            rows = s.scalars(select(Secret).order_by(Secret.name)).all()
            subjects = () if actor is None else actor.subjects()
            shown = []
            for row in rows:
                if self.may_manage(actor, row.owner):
                    shown.append(self._info(s, row))
                elif self._may_read(subjects, row.owner, self._grants(s, row.id)):
                    shown.append(self._info(s, row, manageable=False))
            return shown

    def subjects_of_user(self, s: Session, user_key: str) -> tuple[str, ...] | None:
        """A user's subjects as the store says now (groups change); None if the user is gone."""
        user_id = s.scalar(select(User.id).where(User.name_key == user_key))
        if user_id is None:
            return None
        groups = s.scalars(select(Group.name_key).join(GroupMember, GroupMember.group_id == Group.id)
                           .where(GroupMember.user_id == user_id))
        return (f"user:{user_key}", *(f"group:{g}" for g in sorted(groups)), "authenticated")

    def read(self, subject: str, name: str) -> str:
        """The value of ``name`` for a kernel of ``subject`` (user:KEY); SecretNotGranted otherwise."""
        refused = SecretNotGranted(
            f"secret {name!r} does not exist or is not granted to you; ask its owner to run "
            f"`jupyter-warden secrets grant {name} --to user:YOU`"
        )
        if not isinstance(name, str) or not _NAME.match(name) or not subject.startswith("user:"):
            raise refused
        with self.store.transaction() as s:
            subjects = self.subjects_of_user(s, subject.split(":", 1)[1])
            row = self._row(s, name)
            if subjects is None or row is None or not self._may_read(subjects, row.owner, self._grants(s, row.id)):
                raise refused
            blob, owner = row.ciphertext, row.owner
        try:
            data = self.master_key.decrypt(blob, purpose=PURPOSE, context=_context(owner, name))
        except MasterKeyError as e:
            raise VaultError(f"secret {name!r} can't be opened: {e}") from None
        return data.decode("utf-8", "surrogatepass")
