"""The label store's tables (SQLAlchemy 2.x declarative; internal: the API returns dataclasses).

::

    clips 1─* frames                      (clip_id, frame_index) primary key
    clips 1─* tracks                      unique (clip_id, track_key)
    clips 1─* pipeline_runs
    tracks 1─* boxes *─1 frames           immutable revisions, unique (track_id, frame_index, revision)
    boxes *─0..1 pipeline_runs            set for pipeline revisions, NULL for human ones
    audit_events *─ clips/tracks/boxes/pipeline_runs

Rows of ``boxes`` are never updated or deleted: the current box of (track, frame) is its highest
revision, and it is absent when that revision has ``deleted`` set. Box geometry is in the world
frame, double precision; unknown velocity is NULL. Enums are stored as their string values.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import Enum

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Double,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy import Enum as SAEnum
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from autolabel.categories import Category
from autolabel.store.review import ReviewState
from autolabel.store.types import MAX_KEY_CHARS, AuditAction, BoxStage, RunStatus

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments an INTEGER PRIMARY KEY; elsewhere box and audit ids are 64-bit.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps no zone: it is stored as UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the label store (use UTC-aware datetimes)")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _enum(enum: type[Enum], name: str) -> SAEnum:
    """A portable (VARCHAR + CHECK) enum column storing the members' values."""
    return SAEnum(
        enum,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=32,
        values_callable=lambda members: [m.value for m in members],
        validate_strings=True,
    )


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class ClipRow(Base):
    __tablename__ = "clips"
    __table_args__ = (UniqueConstraint("source", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(String(MAX_KEY_CHARS))
    name: Mapped[str] = mapped_column(String(MAX_KEY_CHARS))
    root: Mapped[str] = mapped_column(Text)
    review_state: Mapped[ReviewState] = mapped_column(_enum(ReviewState, "review_state"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class FrameRow(Base):
    __tablename__ = "frames"

    clip_id: Mapped[int] = mapped_column(ForeignKey("clips.id", ondelete="CASCADE"), primary_key=True)
    frame_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    token: Mapped[str] = mapped_column(String(255))
    timestamp_us: Mapped[int] = mapped_column(BigInteger)
    # world_SE3_ego as 16 floats, row-major 4x4; NULL when the source has no poses.
    world_SE3_ego: Mapped[list[float] | None] = mapped_column(JSON)


class RunRow(Base):
    __tablename__ = "pipeline_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    clip_id: Mapped[int] = mapped_column(ForeignKey("clips.id", ondelete="CASCADE"), index=True)
    detector: Mapped[str] = mapped_column(String(MAX_KEY_CHARS))
    parameters_hash: Mapped[str] = mapped_column(String(MAX_KEY_CHARS))
    code_version: Mapped[str] = mapped_column(String(MAX_KEY_CHARS))
    author: Mapped[str] = mapped_column(String(MAX_KEY_CHARS))
    status: Mapped[RunStatus] = mapped_column(_enum(RunStatus, "run_status"))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime] = mapped_column(UTCDateTime)
    num_tracks: Mapped[int] = mapped_column(Integer)
    num_boxes: Mapped[int] = mapped_column(Integer)


class TrackRow(Base):
    __tablename__ = "tracks"
    __table_args__ = (UniqueConstraint("clip_id", "track_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    clip_id: Mapped[int] = mapped_column(ForeignKey("clips.id", ondelete="CASCADE"))
    track_key: Mapped[str] = mapped_column(String(MAX_KEY_CHARS))
    category: Mapped[Category] = mapped_column(_enum(Category, "category"))
    score: Mapped[float] = mapped_column(Double)
    review_state: Mapped[ReviewState] = mapped_column(_enum(ReviewState, "review_state"))
    static: Mapped[bool] = mapped_column(Boolean)
    fixed_l_m: Mapped[float | None] = mapped_column(Double)
    fixed_w_m: Mapped[float | None] = mapped_column(Double)
    fixed_h_m: Mapped[float | None] = mapped_column(Double)
    # Set by any human write to the track (box, category, review state, creation): pipeline re-runs keep it.
    human_touched: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Review flag -> number of boxes with it, from the run that last wrote the track ({} when none).
    review_flags: Mapped[dict] = mapped_column(JSON, default=dict, server_default=text("'{}'"))


class BoxRow(Base):
    __tablename__ = "boxes"
    __table_args__ = (
        UniqueConstraint("track_id", "frame_index", "revision"),
        ForeignKeyConstraint(["clip_id", "frame_index"], ["frames.clip_id", "frames.frame_index"], ondelete="CASCADE"),
        Index("ix_boxes_clip_frame", "clip_id", "frame_index"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    clip_id: Mapped[int] = mapped_column(Integer)
    track_id: Mapped[int] = mapped_column(ForeignKey("tracks.id", ondelete="CASCADE"))
    frame_index: Mapped[int] = mapped_column(Integer)
    revision: Mapped[int] = mapped_column(Integer)
    x: Mapped[float] = mapped_column(Double)
    y: Mapped[float] = mapped_column(Double)
    z: Mapped[float] = mapped_column(Double)
    l: Mapped[float] = mapped_column(Double)
    w: Mapped[float] = mapped_column(Double)
    h: Mapped[float] = mapped_column(Double)
    yaw: Mapped[float] = mapped_column(Double)
    vx: Mapped[float | None] = mapped_column(Double)
    vy: Mapped[float | None] = mapped_column(Double)
    score: Mapped[float] = mapped_column(Double)
    confidence: Mapped[float | None] = mapped_column(Double)
    stage: Mapped[BoxStage] = mapped_column(_enum(BoxStage, "box_stage"))
    deleted: Mapped[bool] = mapped_column(Boolean)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("pipeline_runs.id", ondelete="CASCADE"), index=True)
    author: Mapped[str] = mapped_column(String(MAX_KEY_CHARS))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AuditRow(Base):
    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(MAX_KEY_CHARS))
    action: Mapped[AuditAction] = mapped_column(_enum(AuditAction, "audit_action"))
    clip_id: Mapped[int] = mapped_column(ForeignKey("clips.id", ondelete="CASCADE"), index=True)
    track_id: Mapped[int | None] = mapped_column(ForeignKey("tracks.id", ondelete="CASCADE"))
    box_id: Mapped[int | None] = mapped_column(ForeignKey("boxes.id", ondelete="CASCADE"))
    run_id: Mapped[int | None] = mapped_column(ForeignKey("pipeline_runs.id", ondelete="CASCADE"))
    details: Mapped[dict] = mapped_column(JSON)
