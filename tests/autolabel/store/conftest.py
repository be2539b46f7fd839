"""Fixtures of the label store tests: a store per test on SQLite and, where available, on Postgres.

The Postgres cluster is a throw-away one (``initdb`` + ``pg_ctl`` from the machine's PostgreSQL,
Unix socket only, no TCP port), started once per session; each test gets a fresh database. Tests
skip with a reason when the binaries or the psycopg driver are absent.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from autolabel.categories import Category
from autolabel.store import BoxStage, ClipKey, FrameRecord, LabelStore, Provenance, TrackLabels, open_store
from calibration import SE3, WORLD_FRAME, Boxes3D

CLIP = ClipKey("synthetic", "store-clip")
NUM_FRAMES = 6
T0_US = 1_600_000_000_000_000
FRAME_PERIOD_US = 100_000
PROVENANCE = Provenance("geometric", "params-aaaa", "0.1.0+test")
PROVENANCE_2 = Provenance("geometric", "params-bbbb", "0.1.1+test")
POSTGRES_USER = "postgres"  # initdb refuses to run as root: as root the cluster runs as this user


def make_frames(num_frames: int = NUM_FRAMES, *, token_prefix: str = "tok") -> list[FrameRecord]:
    return [
        FrameRecord(i, f"{token_prefix}{i}", T0_US + i * FRAME_PERIOD_US, SE3.from_yaw(0.05 * i, (10.0 + i, 5.0, 0.1)))
        for i in range(num_frames)
    ]


def make_track(
    key: str,
    frame_indices: Sequence[int] = range(NUM_FRAMES),
    *,
    origin_xy: tuple[float, float] = (0.0, 0.0),
    category: Category = Category.CAR,
    seed: int = 0,
    with_velocity: bool = True,
) -> TrackLabels:
    """A car driving along +x from ``origin_xy``, with irrational-looking floats to test exact storage."""
    frames = np.asarray(list(frame_indices), dtype=np.int64)
    rng = np.random.default_rng(seed)
    k = len(frames)
    data = np.column_stack(
        [
            origin_xy[0] + 1.3 * frames + rng.uniform(-0.01, 0.01, k),
            origin_xy[1] + rng.uniform(-0.01, 0.01, k),
            0.8 + rng.uniform(-0.01, 0.01, k),
            np.full(k, 4.2) + rng.uniform(0, 0.1, k),
            np.full(k, 1.9) + rng.uniform(0, 0.1, k),
            np.full(k, 1.6) + rng.uniform(0, 0.1, k),
            -3.0 + 1.1 * frames + rng.uniform(-0.01, 0.01, k),  # the same heading per frame for every seed
        ]
    )
    velocity = rng.normal(size=(k, 2)) if with_velocity else None
    if velocity is not None and k > 1:
        velocity[1] = np.nan  # unknown velocity in one frame
    stages = [BoxStage.DETECTED if i % 3 else BoxStage.INTERPOLATED for i in range(k)]
    return TrackLabels(
        track_key=key,
        category=category,
        score=float(rng.uniform(0.5, 1.0)),
        frame_indices=frames,
        boxes=Boxes3D(data, WORLD_FRAME, velocity),
        scores=rng.uniform(0.1, 1.0, k),
        stages=stages,
        confidences=rng.uniform(0.0, 1.0, k),
    )


# ------------------------------------------------------------------------------------- Postgres
def _postgres_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    candidates = [Path(found).resolve().parent] if found else []
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file() and (folder / "postgres").is_file():
            return folder
    return None


def _as_cluster_user(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", POSTGRES_USER, "--", *command]


@pytest.fixture(scope="session")
def postgres_socket_dir() -> Iterator[str]:
    """A temporary Postgres cluster listening on a Unix socket in a temporary folder."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip('the psycopg driver is not installed (pip install "psycopg[binary]")')
    bin_dir = _postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found on this machine")
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser: initdb cannot run as root")
        try:
            import pwd

            user = pwd.getpwnam(POSTGRES_USER)
        except KeyError:
            pytest.skip(f"running as root and there is no {POSTGRES_USER!r} user to run the cluster")
    base = Path(tempfile.mkdtemp(prefix="autolabel-pg-"))  # not under pytest's 0700 root-owned tmp
    if os.geteuid() == 0:
        os.chown(base, user.pw_uid, user.pw_gid)
    data = base / "data"
    log = base / "server.log"
    try:
        subprocess.run(
            _as_cluster_user([str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "autolabel", "--no-sync"]),
            check=True,
            capture_output=True,
            timeout=120,
        )
        options = f"-k {base} -c listen_addresses='' -F -c fsync=off -c full_page_writes=off"
        subprocess.run(
            _as_cluster_user(
                [str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(log), "-w", "-t", "60", "start"]
            ),
            check=True,
            capture_output=True,
            timeout=120,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
        details = getattr(error, "stderr", b"") or b""
        shutil.rmtree(base, ignore_errors=True)
        pytest.skip(f"could not start a temporary Postgres cluster: {error}: {details.decode(errors='replace')}")
    try:
        yield str(base)
    finally:
        subprocess.run(
            _as_cluster_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(base, ignore_errors=True)


_database_numbers = itertools.count()


def _create_database(socket_dir: str) -> str:
    import sqlalchemy as sa

    name = f"store_test_{os.getpid()}_{next(_database_numbers)}"
    admin = sa.create_engine(f"postgresql+psycopg://autolabel@/postgres?host={socket_dir}")
    try:
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql(f"CREATE DATABASE {name}")
    finally:
        admin.dispose()
    return f"postgresql+psycopg://autolabel@/{name}?host={socket_dir}"


@pytest.fixture
def postgres_empty_url(postgres_socket_dir: str) -> str:
    """A fresh, empty database in the session's cluster."""
    return _create_database(postgres_socket_dir)


@pytest.fixture(scope="session")
def postgres_shared_url(postgres_socket_dir: str) -> str:
    """One migrated database for the behavioural tests (emptied before each by :func:`postgres_url`)."""
    url = _create_database(postgres_socket_dir)
    open_store(url).close()
    return url


@pytest.fixture
def postgres_url(postgres_shared_url: str) -> str:
    """The shared migrated database with every table emptied (much faster than a new database)."""
    import sqlalchemy as sa

    from autolabel.store.models import Base

    engine = sa.create_engine(postgres_shared_url)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(f"TRUNCATE {', '.join(Base.metadata.tables)} RESTART IDENTITY CASCADE")
    finally:
        engine.dispose()
    return postgres_shared_url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'workspace' / 'labels.db'}"


@pytest.fixture
def sqlite_empty_url(sqlite_url: str) -> str:
    return sqlite_url


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def url(backend: str, request: pytest.FixtureRequest) -> str:
    """The URL of a migrated, empty store on each backend."""
    return request.getfixturevalue(f"{backend}_url")


@pytest.fixture
def empty_url(backend: str, request: pytest.FixtureRequest) -> str:
    """The URL of an empty database (no schema) on each backend."""
    return request.getfixturevalue(f"{backend}_empty_url")


@pytest.fixture
def store(url: str) -> Iterator[LabelStore]:
    with open_store(url) as opened:
        yield opened


@pytest.fixture
def sqlite_store(sqlite_url: str) -> Iterator[LabelStore]:
    with open_store(sqlite_url) as opened:
        yield opened


@pytest.fixture
def build() -> SimpleNamespace:
    """The builders and constants above, for tests (conftest modules are not importable)."""
    return SimpleNamespace(
        clip=CLIP,
        frames=make_frames,
        track=make_track,
        provenance=PROVENANCE,
        provenance_2=PROVENANCE_2,
        num_frames=NUM_FRAMES,
    )
