"""Alembic schema: the migration creates exactly the models' schema; unknown revisions are refused."""

from __future__ import annotations

import sqlite3
from dataclasses import replace

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from autolabel.settings import Settings
from autolabel.store import head_revision, open_store, run_migrations
from autolabel.store.engine import create_store_engine, default_database_url, writer
from autolabel.store.migrate import MIGRATIONS_DIR, alembic_config, current_revisions
from autolabel.store.models import Base
from calibration import InputError


def _json_default_differs(context, inspected_column, metadata_column, inspected, metadata, rendered) -> bool | None:
    """Postgres has no ``json = json``, so Alembic's server-side comparison of JSON defaults fails: compare
    their text (Postgres reports ``'{}'::json``); other columns get Alembic's own comparison (``None``)."""
    if not isinstance(metadata_column.type, sa.JSON) or inspected is None or rendered is None:
        return None
    return inspected.removesuffix("::json") != rendered


def _diff(engine: sa.Engine) -> list:
    with engine.connect() as connection:
        options = {"compare_type": True, "compare_server_default": _json_default_differs}
        context = MigrationContext.configure(connection, opts=options)
        return compare_metadata(context, Base.metadata)


def test_migrated_schema_equals_the_models(empty_url):
    engine = create_store_engine(empty_url)
    try:
        assert run_migrations(engine) == head_revision()
        assert _diff(engine) == []
        with engine.connect() as connection:
            assert current_revisions(connection) == (head_revision(),)
    finally:
        engine.dispose()


def test_downgrade_to_base_and_upgrade_again(empty_url):
    engine = create_store_engine(empty_url)
    try:
        run_migrations(engine)
        with writer(engine).begin() as connection:
            config = alembic_config()
            config.attributes["connection"] = connection
            command.downgrade(config, "base")
        assert set(sa.inspect(engine).get_table_names()) <= {"alembic_version"}
        run_migrations(engine)
        assert _diff(engine) == []
    finally:
        engine.dispose()


def test_newer_schema_revision_is_refused(empty_url, build):
    url = empty_url
    with open_store(url) as store:
        store.write_prelabels(build.clip, build.frames(), [build.track("a")], build.provenance)
    engine = create_store_engine(url)
    with writer(engine).begin() as connection:
        connection.execute(sa.text("UPDATE alembic_version SET version_num = '0042_from_the_future'"))
    engine.dispose()
    with pytest.raises(InputError, match=r"revision 0042_from_the_future is unknown to this code.*upgrade autolabel"):
        open_store(url)


def test_store_tables_without_revision_are_refused(sqlite_url):
    engine = create_store_engine(sqlite_url)
    Base.metadata.create_all(engine)
    engine.dispose()
    with pytest.raises(InputError, match="no Alembic revision"):
        open_store(sqlite_url)


def test_no_alembic_ini_and_one_head():
    assert (MIGRATIONS_DIR / "env.py").is_file()
    assert not (MIGRATIONS_DIR.parents[2] / "alembic.ini").exists()
    assert head_revision() == "0002"


def test_default_url_is_a_sqlite_file_in_the_workspace(tmp_path, monkeypatch, build):
    monkeypatch.setenv("AUTOLABEL_HOME", str(tmp_path / "ws"))
    monkeypatch.delenv("AUTOLABEL_DATABASE_URL", raising=False)
    assert default_database_url() == f"sqlite:///{(tmp_path / 'ws' / 'labels.db').resolve()}"
    with open_store() as store:
        store.write_prelabels(build.clip, build.frames(), [build.track("a")], build.provenance)
    assert (tmp_path / "ws" / "labels.db").is_file()

    other = tmp_path / "elsewhere.db"
    monkeypatch.setenv("AUTOLABEL_DATABASE_URL", f"sqlite:///{other}")
    assert default_database_url() == f"sqlite:///{other}"
    assert default_database_url(Settings(database_url="postgresql+psycopg://u@h/db")) == "postgresql+psycopg://u@h/db"
    with open_store() as store:
        assert store.list_clips() == ()
    assert other.is_file()


def test_sqlite_runs_in_wal_mode_with_foreign_keys(sqlite_store, sqlite_url, build):
    sqlite_store.write_prelabels(build.clip, build.frames(), [build.track("a")], build.provenance)
    path = sqlite_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    engine = create_store_engine(sqlite_url)
    try:
        with pytest.raises(sa.exc.IntegrityError, match="FOREIGN KEY"), writer(engine).begin() as connection:
            connection.execute(sa.text("INSERT INTO frames VALUES (999, 0, 'x', 0, NULL)"))
    finally:
        engine.dispose()


def test_bad_urls_are_input_errors():
    with pytest.raises(InputError, match="database URL"):
        open_store("not a url")
    with pytest.raises(InputError, match="database URL"):
        open_store("nosuchdialect://x/y")


def test_concurrent_first_opens_migrate_once(empty_url):
    import threading

    errors: list[BaseException] = []

    def open_and_close() -> None:
        try:
            open_store(empty_url).close()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=open_and_close) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    engine = create_store_engine(empty_url)
    try:
        with engine.connect() as connection:
            assert current_revisions(connection) == (head_revision(),)
    finally:
        engine.dispose()


def _table_0001(name: str, *columns: str) -> sa.TableClause:
    """A lightweight table of revision 0001's columns (``created_at`` and ``updated_at`` as UTC times)."""
    from autolabel.store.models import UTCDateTime

    times = (sa.column("created_at", UTCDateTime()), sa.column("updated_at", UTCDateTime()))
    return sa.table(name, *(sa.column(c) for c in columns), *times)


def test_upgrade_from_0001_gives_old_tracks_no_review_flags(empty_url, build):
    from datetime import UTC, datetime

    clips = _table_0001("clips", "id", "source", "name", "root", "review_state")
    tracks = _table_0001(
        "tracks", "clip_id", "track_key", "category", "score", "review_state", "static", "human_touched"
    )
    times = {"created_at": datetime(2026, 1, 2, tzinfo=UTC), "updated_at": datetime(2026, 1, 2, tzinfo=UTC)}
    engine = create_store_engine(empty_url)
    try:
        with writer(engine).begin() as connection:
            config = alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, "0001")
            clip = {"source": build.clip.source, "name": build.clip.name, "root": "", "review_state": "prelabeled"}
            connection.execute(sa.insert(clips).values(**clip, **times))
            clip_id = connection.scalar(sa.select(clips.c.id))
            track = {"track_key": "old", "category": "car", "score": 0.5, "review_state": "prelabeled"}
            flags = {"static": False, "human_touched": False}
            connection.execute(sa.insert(tracks).values(clip_id=clip_id, **track, **flags, **times))
        with engine.connect() as connection:
            assert current_revisions(connection) == ("0001",)
        assert run_migrations(engine) == head_revision() == "0002"
        assert _diff(engine) == []
    finally:
        engine.dispose()
    with open_store(empty_url) as store:
        (old,) = store.tracks(build.clip)
        assert (old.track_key, dict(old.review_flags)) == ("old", {})
        # The upgraded store takes flags as a new one does.
        flagged = replace(build.track("new", [0, 1]), review_flags={"low_support": 2})
        store.write_prelabels(build.clip, build.frames(), [flagged], build.provenance)
        assert {t.track_key: dict(t.review_flags) for t in store.tracks(build.clip)} == {
            "new": {"low_support": 2},
            "old": {},
        }
