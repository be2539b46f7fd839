"""Alembic environment of the label store.

Run through :func:`autolabel.store.migrate.run_migrations`, which passes an open connection in
``config.attributes["connection"]`` (inside its transaction); there is no alembic.ini. For a new
revision: ``autolabel.store.migrate.alembic_config(url)`` with ``alembic.command.revision(...,
autogenerate=True)``, then review the generated file by hand.
"""

from __future__ import annotations

from alembic import context

from autolabel.store.engine import create_store_engine, writer
from autolabel.store.models import Base


def _configure_and_run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        compare_type=True,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copy
    )
    with context.begin_transaction():
        context.run_migrations()


def run() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _configure_and_run(connection)
        return
    if context.is_offline_mode():
        context.configure(url=context.config.get_main_option("sqlalchemy.url"), target_metadata=Base.metadata)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_store_engine(context.config.get_main_option("sqlalchemy.url"))
    try:
        with writer(engine).begin() as own_connection:
            _configure_and_run(own_connection)
    finally:
        engine.dispose()


run()
