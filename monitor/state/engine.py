"""Engine creation for the state store: URL handling, SQLite pragmas and transaction control."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.pool import StaticPool

from monitor.errors import StorageError

#: execution option that makes a SQLite transaction take the write lock up front
WRITE_OPTION = "newsmon_write"

SQLITE_BUSY_TIMEOUT_MS = 10_000
POSTGRES_CONNECT_TIMEOUT_S = 10


def sqlite_url(data_dir: Path) -> str:
    """The default store location: ``sqlite:///<data_dir>/newsmon.db``."""
    return f"sqlite:///{data_dir / 'newsmon.db'}"


def parse_url(url: str) -> URL:
    """Parse ``url``; a plain ``postgresql://`` URL is taken to mean the psycopg 3 driver."""
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError as e:
        # the message would echo the URL, password included
        raise StorageError("invalid state store URL (not a SQLAlchemy database URL)") from e
    if parsed.drivername == "postgresql":
        # SQLAlchemy's default PostgreSQL driver is psycopg2, which newsmon does not install
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def redact(url: URL) -> str:
    """``url`` as text with any password replaced by ``***``, fit for messages and logs."""
    return url.render_as_string(hide_password=True)


def create_engine(url: URL) -> Engine:
    """An engine for ``url`` with newsmon's connection settings; connects lazily."""
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(url)
    if url.get_backend_name() == "postgresql":
        return _postgres_engine(url)
    raise StorageError(
        f"unsupported state store URL {redact(url)}: use sqlite:///... or postgresql+psycopg://..."
    )


def _is_memory(url: URL) -> bool:
    return url.database in (None, "", ":memory:")


def _sqlite_engine(url: URL) -> Engine:
    if _is_memory(url):
        # every connection to ":memory:" would open its own empty database; one shared
        # connection makes the in-memory store behave like a file (single-threaded use only)
        engine = sa.create_engine(
            url, poolclass=StaticPool, connect_args={"check_same_thread": False}
        )
    else:
        _create_parent(url)
        engine = sa.create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
    sa.event.listen(engine, "connect", _sqlite_on_connect)
    sa.event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def _create_parent(url: URL) -> None:
    assert url.database is not None
    parent = Path(url.database).expanduser().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StorageError(
            f"cannot create the directory {parent} of state store {redact(url)}: {e.strerror}"
        ) from e


def _sqlite_on_connect(dbapi_connection: Any, connection_record: Any) -> None:
    # Take BEGIN away from the sqlite3 module: in its legacy mode it starts transactions only
    # at the first INSERT/UPDATE, so a read-then-write (save_drafts) would not be atomic.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        # WAL lets the web/CLI read while the poller writes; foreign keys are off by default
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        # in WAL mode NORMAL is durable against application crashes and much faster than FULL
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    # A deferred transaction that later writes cannot wait for the lock (SQLITE_BUSY at once
    # if another writer committed meanwhile); IMMEDIATE waits up to the busy timeout instead.
    write = conn.get_execution_options().get(WRITE_OPTION, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _postgres_engine(url: URL) -> Engine:
    connect_args: dict[str, Any] = {}
    if "connect_timeout" not in url.query:
        # libpq waits forever for an unreachable host by default
        connect_args["connect_timeout"] = POSTGRES_CONNECT_TIMEOUT_S
    # pre-ping: a long-running service outlives server restarts and idle-connection reaping
    return sa.create_engine(url, pool_pre_ping=True, connect_args=connect_args)
