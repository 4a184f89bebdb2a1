"""The tables of the warden's state store.

Every table the server, the CLI and the migrations agree on is declared
here once; alembic revisions in ``migrations/`` create and change them.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    Boolean,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None:
            if value.tzinfo is None:
                raise ValueError("naive datetime given to the store; use UTC")
            value = value.astimezone(dt.timezone.utc)
        return value

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # ``name`` is shown; ``name_key`` (case- and Unicode-folded) is what makes
    # two spellings of one name collide.
    name: Mapped[str] = mapped_column(String(64), nullable=False)
    name_key: Mapped[str] = mapped_column(String(256), nullable=False, unique=True)
    display_name: Mapped[str | None] = mapped_column(String(200))
    password_hash: Mapped[str | None] = mapped_column(Text)
    admin: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    created: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)

    tokens: Mapped[list[ApiToken]] = relationship(
        back_populates="user", cascade="all, delete-orphan", passive_deletes=True
    )
    sessions: Mapped[list[LoginSession]] = relationship(
        back_populates="user", cascade="all, delete-orphan", passive_deletes=True
    )


class Group(Base):
    __tablename__ = "groups"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), nullable=False)
    name_key: Mapped[str] = mapped_column(String(256), nullable=False, unique=True)
    created: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class GroupMember(Base):
    __tablename__ = "group_members"
    __table_args__ = (UniqueConstraint("group_id", "user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    group_id: Mapped[int] = mapped_column(
        ForeignKey("groups.id", ondelete="CASCADE"), nullable=False, index=True
    )
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    # 'hub' for a membership mirrored from JupyterHub (identity/hub.py), which
    # the hub's next answer may take away; NULL for one made here (CLI, API).
    source: Mapped[str | None] = mapped_column(String(16), nullable=True)


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    # SHA-256 of the token: the token is 256 random bits, so a fast hash is
    # enough, and it lets a request find its row by an indexed lookup.
    token_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    note: Mapped[str | None] = mapped_column(String(200))
    created: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_used: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship(back_populates="tokens")


class LoginSession(Base):
    """A browser sign-in, of a user or of a share link's bearer.

    The cookie holds a random id; the row is its truth.
    """

    __tablename__ = "login_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=True, index=True
    )
    link_id: Mapped[str | None] = mapped_column(
        ForeignKey("share_links.id", ondelete="CASCADE"), nullable=True, index=True
    )
    session_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    created: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    client_address: Mapped[str | None] = mapped_column(String(64))

    user: Mapped[User | None] = relationship(back_populates="sessions")


class Grant(Base):
    """A subject's level on a path (and everything below it)."""

    __tablename__ = "grants"
    __table_args__ = (UniqueConstraint("path", "subject"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # A normalised API path: no leading or trailing slash; "" is the root.
    path: Mapped[str] = mapped_column(String(4096), nullable=False, index=True)
    # "user:KEY", "group:KEY", "authenticated" or "link:ID" (KEY = names.name_key).
    subject: Mapped[str] = mapped_column(String(300), nullable=False, index=True)
    level: Mapped[str] = mapped_column(String(20), nullable=False)
    not_before: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    not_after: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_by: Mapped[str | None] = mapped_column(String(300))
    created: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class LabelDefinition(Base):
    __tablename__ = "labels"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    banner: Mapped[str | None] = mapped_column(String(500))
    colour: Mapped[str | None] = mapped_column(String(32))
    no_links: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    # Space-separated group name keys; empty means "any subject".
    only_groups: Mapped[str] = mapped_column(Text, nullable=False, default="")


class PathLabel(Base):
    __tablename__ = "path_labels"
    __table_args__ = (UniqueConstraint("path", "label_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(String(4096), nullable=False, index=True)
    label_id: Mapped[int] = mapped_column(
        ForeignKey("labels.id", ondelete="CASCADE"), nullable=False
    )


class ShareLink(Base):
    __tablename__ = "share_links"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    path: Mapped[str] = mapped_column(String(4096), nullable=False, index=True)
    level: Mapped[str] = mapped_column(String(20), nullable=False)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_by: Mapped[str | None] = mapped_column(String(300))
    created: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class PolicyVersion(Base):
    """One row whose counter goes up with every policy change, in any process."""

    __tablename__ = "policy_version"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class AuditHead(Base):
    """The chain's last sequence number and hash; updating it serialises appends."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    hash: Mapped[str] = mapped_column(String(64), nullable=False)


class AuditRecord(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, nullable=False, unique=True)
    time: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, index=True)
    actor: Mapped[str] = mapped_column(String(300), nullable=False, index=True)
    action: Mapped[str] = mapped_column(String(64), nullable=False)
    path: Mapped[str | None] = mapped_column(String(4096), index=True)
    outcome: Mapped[str] = mapped_column(String(16), nullable=False)
    reason: Mapped[str | None] = mapped_column(Text)
    grant_id: Mapped[int | None] = mapped_column(Integer)
    client: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[str | None] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    hash: Mapped[str] = mapped_column(String(64), nullable=False)


class KernelUid(Base):
    """The host uid a subject's kernels run under (sandbox); one per subject, never reused."""

    __tablename__ = "kernel_uids"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # "user:KEY" or "link:ID", as policy subjects are spelt.
    subject: Mapped[str] = mapped_column(String(300), nullable=False, unique=True)
    uid: Mapped[int] = mapped_column(Integer, nullable=False, unique=True)
    created: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class Secret(Base):
    """A vault entry: its value only as AES-GCM ciphertext under the master key."""

    __tablename__ = "secrets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # One name server-wide: a kernel asks for a secret by name alone.
    name: Mapped[str] = mapped_column(String(128), nullable=False, unique=True)
    # "user:KEY" or "group:KEY"; part of the ciphertext's associated data.
    owner: Mapped[str] = mapped_column(String(300), nullable=False, index=True)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    created_by: Mapped[str | None] = mapped_column(String(300))
    created: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class SecretGrant(Base):
    """A subject (user:KEY, group:KEY or authenticated) that may read a secret in its kernels."""

    __tablename__ = "secret_grants"
    __table_args__ = (UniqueConstraint("secret_id", "subject"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    secret_id: Mapped[int] = mapped_column(
        ForeignKey("secrets.id", ondelete="CASCADE"), nullable=False, index=True
    )
    subject: Mapped[str] = mapped_column(String(300), nullable=False, index=True)
    created_by: Mapped[str | None] = mapped_column(String(300))
    created: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class SealingKey(Base):
    """A named key of the key ring (sealed cells); its material is in SealingKeyVersion."""

    __tablename__ = "sealing_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), nullable=False)
    name_key: Mapped[str] = mapped_column(String(256), nullable=False, unique=True)
    # The version new seals use; older versions stay to open older ciphertexts.
    current_version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    created_by: Mapped[str | None] = mapped_column(String(300))
    created: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class SealingKeyVersion(Base):
    """One version of a key's material: 32 random bytes wrapped by the master key."""

    __tablename__ = "sealing_key_versions"
    __table_args__ = (UniqueConstraint("key_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key_id: Mapped[int] = mapped_column(
        ForeignKey("sealing_keys.id", ondelete="CASCADE"), nullable=False, index=True
    )
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    wrapped: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    created: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class SealingKeyGrant(Base):
    """Who may use (or manage) a key: a subject spelt as in grants ("user:KEY", "group:KEY")."""

    __tablename__ = "sealing_key_grants"
    __table_args__ = (UniqueConstraint("key_id", "subject"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key_id: Mapped[int] = mapped_column(
        ForeignKey("sealing_keys.id", ondelete="CASCADE"), nullable=False, index=True
    )
    subject: Mapped[str] = mapped_column(String(300), nullable=False, index=True)
    # "use" (seal, unseal with manage on the notebook, run) or "manage" (also grant, revoke, rotate).
    role: Mapped[str] = mapped_column(String(16), nullable=False, default="use")
    created_by: Mapped[str | None] = mapped_column(String(300))
    created: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
