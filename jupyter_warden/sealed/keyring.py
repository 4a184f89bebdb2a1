"""The key ring: named sealing keys, their versions, and who may use them.

Each key has versions of 32 random bytes, stored wrapped by the server's
master key (purpose ``key_ring``, context ``NAMEKEY/VERSION``). Rotation
adds a version and makes it current: older ciphertexts stay readable, new
seals use the new version. Keys are granted to ``user:NAME``,
``group:NAME`` or ``authenticated`` with the role ``use`` (run, seal and,
with ``manage`` on the notebook, unseal) or ``manage`` (also grant, revoke
and rotate). Server admins may use and manage every key.

API (what the kernel guard and the handlers call)::

    ring = KeyRing(store, master_key)
    ring.may_use(actor, key_name) -> bool         # policy.Actor; read from the store each call
    ring.open(sealed_cell, cell_id=None) -> str   # clear source, or UnsealError / KeyRingError
    ring.seal(key_name, cell_id, source) -> str   # a placeholder, under the key's current version
    ring.create / grant / revoke / rotate / list_keys / get

Every change takes an ``Audited`` (policy/changes.py) and writes its audit
record in the change's own transaction.
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass

from sqlalchemy import select

from ..master_key import MasterKey, MasterKeyError
from ..names import InvalidName, name_key, normalize_name
from ..policy.changes import Audited, Policy, PolicyError
from ..store import Store
from ..store.models import SealingKey, SealingKeyGrant, SealingKeyVersion, utcnow
from .crypto import UnsealError, decrypt_cell, encrypt_cell, new_key_material
from .placeholder import CELL_ID, SealedCell, format_placeholder

PURPOSE = "key_ring"
ROLES = {
    "use": "Run sealed cells under the key; seal with it; unseal with manage on the notebook.",
    "manage": "All of use, plus granting, revoking and rotating the key.",
}


class KeyRingError(Exception):
    """A refused key ring operation; the message says why and what to do."""


class KeyAccessError(KeyRingError):
    """The caller may not use a key that the operation needs."""


@dataclass(frozen=True)
class KeyInfo:
    name: str
    current_version: int
    versions: tuple[int, ...]
    created: dt.datetime
    created_by: str | None
    grants: tuple[tuple[str, str], ...]  # (subject, role)

    def as_json(self) -> dict:
        return {
            "name": self.name,
            "current_version": self.current_version,
            "versions": list(self.versions),
            "created": self.created.isoformat(),
            "created_by": self.created_by,
            "grants": [{"subject": s, "role": r} for s, r in self.grants],
        }


def _key_name(raw: str) -> str:
    try:
        return normalize_name(raw, "key name")
    except InvalidName as e:
        raise KeyRingError(str(e)) from None


class KeyRing:
    def __init__(self, store: Store, master_key: MasterKey):
        self.store = store
        self.master_key = master_key
        # (name_key, version) -> material. A version's material never changes,
        # so this cache needs no invalidation; grants are never cached.
        self._materials: dict[tuple[str, int], bytes] = {}
        self._lock = threading.Lock()

    # -- reading --------------------------------------------------------------

    def _row(self, s, name: str) -> SealingKey:
        row = s.scalar(select(SealingKey).where(SealingKey.name_key == name_key(_key_name(name))))
        if row is None:
            raise KeyRingError(f"there is no sealing key named {name!r}; see `jupyter-warden keys list`")
        return row

    def _info(self, s, row: SealingKey) -> KeyInfo:
        versions = s.scalars(
            select(SealingKeyVersion.version).where(SealingKeyVersion.key_id == row.id).order_by(SealingKeyVersion.version)
        ).all()
        grants = s.execute(
            select(SealingKeyGrant.subject, SealingKeyGrant.role)
            .where(SealingKeyGrant.key_id == row.id)
            .order_by(SealingKeyGrant.subject)
        ).all()
        return KeyInfo(
            row.name, row.current_version, tuple(versions), row.created, row.created_by,
            tuple((g.subject, g.role) for g in grants),
        )

    def get(self, name: str) -> KeyInfo:
        with self.store.transaction() as s:
            return self._info(s, self._row(s, name))

    def list_keys(self) -> list[KeyInfo]:
        with self.store.transaction() as s:
            return [self._info(s, r) for r in s.scalars(select(SealingKey).order_by(SealingKey.name_key))]

    def _roles(self, actor, name: str) -> set[str]:
        subjects = actor.subjects()
        with self.store.read() as conn:
            rows = conn.execute(
                select(SealingKeyGrant.role)
                .join(SealingKey, SealingKey.id == SealingKeyGrant.key_id)
                .where(SealingKey.name_key == name_key(name), SealingKeyGrant.subject.in_(subjects))
            ).all()
        return {r.role for r in rows}

    def may_use(self, actor, key_name: str) -> bool:
        """May this actor (policy.Actor) run, seal or unseal cells under this key? Asked afresh each time."""
        if actor.admin:
            return True
        try:
            _key_name(key_name)
        except KeyRingError:
            return False
        return bool(self._roles(actor, key_name))

    def may_manage(self, actor, key_name: str) -> bool:
        """May this actor grant, revoke or rotate this key?"""
        if actor.admin:
            return True
        try:
            _key_name(key_name)
        except KeyRingError:
            return False
        return "manage" in self._roles(actor, key_name)

    # -- changing -------------------------------------------------------------

    def _wrap(self, key: str, version: int, material: bytes) -> bytes:
        return self.master_key.encrypt(material, purpose=PURPOSE, context=f"{key}/{version}")

    def create(self, name: str, by: str | None = None, audited: Audited | None = None) -> KeyInfo:
        name = _key_name(name)
        key = name_key(name)
        with self.store.transaction() as s:
            if s.scalar(select(SealingKey.id).where(SealingKey.name_key == key)) is not None:
                raise KeyRingError(f"a sealing key named {name!r} exists already; rotate it with `keys rotate`")
            row = SealingKey(name=name, name_key=key, current_version=1, created_by=by, created=utcnow())
            s.add(row)
            s.flush()
            s.add(SealingKeyVersion(key_id=row.id, version=1, wrapped=self._wrap(key, 1, new_key_material())))
            s.flush()
            info = self._info(s, row)
            if audited:
                audited.record(s, "key.create", None, key=name, version=1)
        return info

    def rotate(self, name: str, audited: Audited | None = None) -> KeyInfo:
        with self.store.transaction() as s:
            row = self._row(s, name)
            version = row.current_version + 1
            s.add(SealingKeyVersion(key_id=row.id, version=version, wrapped=self._wrap(row.name_key, version, new_key_material())))
            row.current_version = version
            s.flush()
            info = self._info(s, row)
            if audited:
                audited.record(s, "key.rotate", None, key=row.name, version=version)
        return info

    def grant(self, name: str, subject: str, role: str = "use", by: str | None = None,
              audited: Audited | None = None) -> KeyInfo:
        if role not in ROLES:
            raise KeyRingError(f"unknown key role {role!r}: use one of {', '.join(ROLES)}")
        with self.store.transaction() as s:
            row = self._row(s, name)
            try:
                stored = Policy(self.store).subject_key(s, subject)
            except PolicyError as e:
                raise KeyRingError(str(e)) from None
            grant = s.scalar(
                select(SealingKeyGrant).where(SealingKeyGrant.key_id == row.id, SealingKeyGrant.subject == stored)
            )
            if grant is None:
                grant = SealingKeyGrant(key_id=row.id, subject=stored)
                s.add(grant)
            grant.role, grant.created_by, grant.created = role, by, utcnow()
            s.flush()
            info = self._info(s, row)
            if audited:
                audited.record(s, "key.grant", None, key=row.name, subject=stored, role=role)
        return info

    def revoke(self, name: str, subject: str, audited: Audited | None = None) -> KeyInfo:
        with self.store.transaction() as s:
            row = self._row(s, name)
            try:
                stored = Policy(self.store).subject_key(s, subject)
            except PolicyError as e:
                raise KeyRingError(str(e)) from None
            grant = s.scalar(
                select(SealingKeyGrant).where(SealingKeyGrant.key_id == row.id, SealingKeyGrant.subject == stored)
            )
            if grant is None:
                raise KeyRingError(f"{subject} has no grant on sealing key {row.name!r}; see `keys list`")
            s.delete(grant)
            s.flush()
            info = self._info(s, row)
            if audited:
                audited.record(s, "key.revoke", None, key=row.name, subject=stored, role=grant.role)
        return info

    # -- sealing and opening ----------------------------------------------------

    def _material(self, name: str, version: int | None = None) -> tuple[str, int, bytes]:
        """(the key's shown name, the version, its material); version None is the current one."""
        with self.store.read() as conn:
            row = conn.execute(
                select(SealingKey.id, SealingKey.name, SealingKey.name_key, SealingKey.current_version)
                .where(SealingKey.name_key == name_key(_key_name(name)))
            ).first()
            if row is None:
                raise KeyRingError(f"there is no sealing key named {name!r} on this server")
            version = row.current_version if version is None else version
            cached = self._materials.get((row.name_key, version))
            if cached is not None:
                return row.name, version, cached
            wrapped = conn.execute(
                select(SealingKeyVersion.wrapped)
                .where(SealingKeyVersion.key_id == row.id, SealingKeyVersion.version == version)
            ).scalar()
        if wrapped is None:
            raise KeyRingError(f"sealing key {row.name!r} has no version {version} on this server")
        try:
            material = self.master_key.decrypt(wrapped, purpose=PURPOSE, context=f"{row.name_key}/{version}")
        except MasterKeyError as e:
            raise KeyRingError(f"sealing key {row.name!r} version {version} can't be unwrapped: {e}") from None
        with self._lock:
            self._materials[(row.name_key, version)] = material
        return row.name, version, material

    def seal(self, key_name: str, cell_id: str, source: str) -> str:
        """The placeholder holding ``source``, sealed under the key's current version for ``cell_id``."""
        if not CELL_ID.match(cell_id or ""):
            raise KeyRingError(f"{cell_id!r} is not a cell id (1 to 64 of a-z A-Z 0-9 _ -)")
        shown, version, material = self._material(key_name)
        return format_placeholder(encrypt_cell(material, shown, version, cell_id, source))

    def open(self, sealed: SealedCell, cell_id: str | None = None) -> str:
        """The clear source of a sealed cell; ``cell_id``, if given, must be the one it was sealed for.

        Raises KeyRingError (no such key or version here) or UnsealError
        (altered, moved, or a different key of the same name). Rights are
        the caller's to check first, with ``may_use``.
        """
        _shown, _version, material = self._material(sealed.key_name, sealed.key_version)
        return decrypt_cell(material, sealed, cell_id)


__all__ = ["KeyAccessError", "KeyInfo", "KeyRing", "KeyRingError", "ROLES", "UnsealError"]
