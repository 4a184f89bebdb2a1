"""The state store: one SQLAlchemy engine over SQLite (WAL) or PostgreSQL.

It owns opening the database, bringing its schema to the current alembic
head (and refusing a schema newer than this code), and the transaction
helper every caller writes through.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DataError,
    DBAPIError,
    IntegrityError,
    ProgrammingError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).with_name("migrations")


class StoreError(Exception):
    """The store refused or failed; the message is meant for a person."""


class StoreUnavailable(StoreError):
    """The database can't be reached, or is locked: callers fail closed."""


class SchemaTooNew(StoreError):
    """The database was written by a newer jupyter-warden."""


def default_state_dir() -> str:
    return os.environ.get("WARDEN_STATE") or str(
        Path.home() / ".local" / "share" / "jupyter-warden"
    )


def default_db_url(state_dir: str | os.PathLike) -> str:
    return f"sqlite:///{Path(state_dir) / 'warden.db'}"


def normalize_db_url(url: str) -> str:
    """Prefer psycopg 3 for PostgreSQL URLs given without a driver."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def _sqlite_pragmas(dbapi_connection, _record):
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # In WAL mode NORMAL never corrupts the database; a power cut may lose the
    # last commits, together with their effects. FULL would fsync on every
    # audit record, and there is one on every request.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def ensure_state_dir(state_dir: str | os.PathLike) -> Path:
    """Create the state folder 0700 (and tighten it if it already exists)."""
    path = Path(state_dir).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.stat().st_mode & 0o077:
        path.chmod(0o700)
    return path


class Store:
    """Holds the engine and hands out transactions."""

    def __init__(self, url: str):
        try:
            self.url = normalize_db_url(url)
            backend = make_url(self.url).get_backend_name()
        except ArgumentError:
            raise StoreError(
                f"{url!r} is not a database URL: use sqlite:///PATH or "
                "postgresql://USER:PASSWORD@HOST/DB"
            ) from None
        kwargs: dict = {"pool_pre_ping": True}
        if backend == "sqlite":
            kwargs["connect_args"] = {"timeout": 5}
        else:
            kwargs["connect_args"] = {"connect_timeout": 5}
        try:
            self.engine: Engine = create_engine(self.url, **kwargs)
        except (ArgumentError, ImportError) as e:
            raise StoreError(
                f"can't use database {self.display_url}: {e}. For PostgreSQL, "
                "install jupyter-warden[postgresql]"
            ) from None
        if backend == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def display_url(self) -> str:
        return make_url(self.url).render_as_string(hide_password=True)

    # -- schema -------------------------------------------------------------

    def _alembic_config(self) -> AlembicConfig:
        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        return cfg

    def head_revision(self) -> str:
        return ScriptDirectory.from_config(self._alembic_config()).get_current_head()

    def current_revision(self) -> str | None:
        with self._unavailable_as_error(), self.engine.connect() as conn:
            heads = MigrationContext.configure(conn).get_current_heads()
        return heads[0] if heads else None

    def upgrade(self) -> None:
        """Migrate to head; refuse a database from a newer jupyter-warden."""
        cfg = self._alembic_config()
        script = ScriptDirectory.from_config(cfg)
        known = {rev.revision for rev in script.walk_revisions()}
        current = self.current_revision()
        if current is not None and current not in known:
            raise SchemaTooNew(
                f"the database at {self.display_url} has schema revision {current}, "
                f"which this jupyter-warden does not know (its newest is "
                f"{script.get_current_head()}): it was written by a newer version. "
                "Upgrade jupyter-warden, or point it at another database."
            )
        with self._unavailable_as_error(), self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    # -- transactions -------------------------------------------------------

    @contextlib.contextmanager
    def _unavailable_as_error(self) -> Iterator[None]:
        try:
            yield
        except (IntegrityError, ProgrammingError, DataError):
            raise  # the caller's mistake, not an outage
        except (DBAPIError, PoolTimeout) as e:
            raise StoreUnavailable(
                f"the warden state database ({self.display_url}) can't be used right now: "
                f"{_first_line(getattr(e, 'orig', e))}. Access is refused until it is back."
            ) from e

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Session]:
        """One database transaction: committed whole, or rolled back whole."""
        with self._unavailable_as_error(), self._sessions() as session, session.begin():
            yield session

    @contextlib.contextmanager
    def read(self) -> Iterator:
        """A plain connection for hot read paths: no ORM objects, no session."""
        with self._unavailable_as_error(), self.engine.connect() as conn:
            yield conn

    def dispose(self) -> None:
        self.engine.dispose()


def _first_line(error: BaseException | None) -> str:
    text = str(error or "unknown error").strip().splitlines()
    return text[0] if text else "unknown error"


__all__ = [
    "SQLAlchemyError",
    "SchemaTooNew",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "default_db_url",
    "default_state_dir",
    "ensure_state_dir",
]


def bump_policy_version(session: Session) -> None:
    """Tell every process (through its next poll) that the policy changed."""
    from sqlalchemy import update

    from .models import PolicyVersion

    session.execute(
        update(PolicyVersion).where(PolicyVersion.id == 1).values(version=PolicyVersion.version + 1)
    )
