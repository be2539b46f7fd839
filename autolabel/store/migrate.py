"""Schema migrations with Alembic; the scripts live in ``autolabel/store/migrations``.

There is no alembic.ini: :func:`alembic_config` sets ``script_location`` in code. :func:`run_migrations`
upgrades a database to the newest revision in one transaction (SQLite and Postgres both have
transactional DDL, so a failed migration leaves the schema as it was) and refuses a database whose
revision this code does not know, which is what a newer autolabel leaves behind.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect

from autolabel.store.engine import writer
from autolabel.store.models import Base
from calibration import InputError

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_PG_MIGRATION_LOCK = 0x4C4142454C53  # arbitrary advisory lock id ("LABELS") held while migrating


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config for the store's scripts (``url`` only for Alembic's own commands)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revision() -> str:
    """The newest schema revision this code knows."""
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    if len(heads) != 1:
        raise RuntimeError(f"label store migrations have {len(heads)} heads {heads}; merge them")
    return heads[0]


def current_revisions(connection: Connection) -> tuple[str, ...]:
    """The database's schema revisions (empty for a database the store never touched)."""
    return tuple(MigrationContext.configure(connection).get_current_heads())


def check_schema_known(connection: Connection, what: str) -> tuple[str, ...]:
    """The database's revisions, after checking that this code knows them.

    Raises:
        InputError: a revision this code does not know (a newer schema), or store tables
            without a recorded revision.
    """
    script = ScriptDirectory.from_config(alembic_config())
    known = {s.revision for s in script.walk_revisions()}
    revisions = current_revisions(connection)
    unknown = [r for r in revisions if r not in known]
    if unknown:
        raise InputError(
            f"{what}: label store schema revision {', '.join(unknown)} is unknown to this code "
            f"(newest known: {head_revision()}); it was probably written by a newer autolabel - upgrade autolabel"
        )
    if not revisions:
        ours = set(Base.metadata.tables) & set(inspect(connection).get_table_names())
        if ours:
            raise InputError(
                f"{what}: has label store tables {sorted(ours)} but no Alembic revision; not a store this code made"
            )
    return revisions


def run_migrations(engine: Engine, *, what: str | None = None) -> str:
    """Upgrade the database of ``engine`` to :func:`head_revision` (no-op when already there).

    Returns:
        the revision the database is at afterwards.
    """
    what = what or f"database {engine.url.render_as_string(hide_password=True)}"
    head = head_revision()
    with engine.connect() as connection:
        revisions = check_schema_known(connection, what)
    if revisions == (head,):
        return head
    with writer(engine).begin() as connection:  # SQLite: BEGIN IMMEDIATE serializes concurrent migrators
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})")
        revisions = check_schema_known(connection, what)  # another process may have migrated meanwhile
        if revisions != (head,):
            config = alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    return head
