"""Database URL resolution and engine setup (SQLite pragmas, write transactions).

SQLite: foreign keys on, WAL journal (readers never block the writer and see the last commit),
and transactions begun by us, not by pysqlite: reads use ``BEGIN`` (a consistent snapshot), writes
``BEGIN IMMEDIATE`` (the write lock is taken up front, so two writers queue on the busy timeout
instead of failing half-way through a read-then-write). Postgres: writers lock the clip row
(``SELECT ... FOR UPDATE``) in the store, so writes to one clip are serialized.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import StaticPool

from autolabel.settings import Settings
from calibration import InputError

DEFAULT_DATABASE_FILE = "labels.db"
SQLITE_BUSY_TIMEOUT_S = 30.0
WRITE_OPTION = "autolabel_write"  # execution option: this connection's transactions write


def default_database_url(settings: Settings | None = None) -> str:
    """``AUTOLABEL_DATABASE_URL`` if set, else the SQLite file ``<AUTOLABEL_HOME>/labels.db``."""
    settings = settings or Settings()
    if settings.database_url:
        return settings.database_url
    return f"sqlite:///{(Path(settings.home) / DEFAULT_DATABASE_FILE).resolve()}"


def is_sqlite(engine: Engine | Connection) -> bool:
    return engine.dialect.name == "sqlite"


def create_store_engine(url: str) -> Engine:
    """An engine for ``url``; a SQLite file's folder is created.

    Raises:
        InputError: malformed URL or a driver that is not installed.
    """
    try:
        sa_url = make_url(url)
    except ArgumentError as error:
        raise InputError(f"database URL {url!r}: {error}") from None
    if sa_url.get_backend_name() != "sqlite":
        try:
            return create_engine(sa_url, pool_pre_ping=True)
        except (ImportError, ArgumentError) as error:
            raise InputError(f"database URL {sa_url.render_as_string(hide_password=True)}: {error}") from None
    database = sa_url.database or ""
    in_memory = database in ("", ":memory:") or "mode=memory" in str(sa_url.query)
    if not in_memory:
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    kwargs: dict = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    if in_memory:
        kwargs.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
    engine = create_engine(sa_url, **kwargs)
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def writer(engine: Engine) -> Engine:
    """The same engine whose transactions are write transactions (``BEGIN IMMEDIATE`` on SQLite)."""
    return engine.execution_options(**{WRITE_OPTION: True})


def _sqlite_on_connect(dbapi_connection, _record) -> None:
    dbapi_connection.isolation_level = None  # autocommit in the driver: _sqlite_on_begin emits BEGIN
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


def _sqlite_on_begin(connection: Connection) -> None:
    immediate = connection.get_execution_options().get(WRITE_OPTION, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
