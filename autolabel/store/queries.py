"""Reads of the label store: row lookups, the latest-revision query, counts, and rows -> values.

The current box of (track, frame) is the row with the highest revision of that pair, unless that row
is a deletion; :func:`latest_query` selects the highest revisions, deleted or not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import Select, and_, func, select
from sqlalchemy.orm import Session

from autolabel.store.models import BoxRow, ClipRow, FrameRow, RunRow, TrackRow
from autolabel.store.review import ReviewState
from autolabel.store.types import (
    BoxRevision,
    BoxStage,
    ClipInfo,
    ClipKey,
    FrameBoxes,
    FrameRecord,
    Provenance,
    TrackInfo,
)
from calibration import SE3, WORLD_FRAME, Box3D, Boxes3D, InputError

BOX_TABLE = BoxRow.__table__


def clip_row(session: Session, key: ClipKey, *, lock: bool = False, missing_ok: bool = False) -> ClipRow | None:
    """The clip's row; ``lock`` serializes writers of the clip (row lock on Postgres; SQLite locks the file)."""
    query = select(ClipRow).where(ClipRow.source == key.source, ClipRow.name == key.name)
    if lock:
        query = query.with_for_update()
    clip = session.scalars(query).one_or_none()
    if clip is None and not missing_ok:
        raise InputError(f"clip {key}: not in the label store")
    return clip


def track_row(session: Session, clip: ClipRow, track_key: str, what: str) -> TrackRow:
    track = session.scalars(
        select(TrackRow).where(TrackRow.clip_id == clip.id, TrackRow.track_key == track_key)
    ).one_or_none()
    if track is None:
        raise InputError(f"{what}: no such track in the clip")
    return track


def check_frame_index(session: Session, clip: ClipRow, frame_index: int, what: str) -> None:
    count = session.scalar(select(func.count()).select_from(FrameRow).where(FrameRow.clip_id == clip.id))
    if not 0 <= int(frame_index) < count:
        raise InputError(f"{what}: frame index outside the clip's {count} frames")


def latest_box(session: Session, track_id: int, frame_index: int) -> BoxRow | None:
    return session.scalars(
        select(BoxRow)
        .where(BoxRow.track_id == track_id, BoxRow.frame_index == int(frame_index))
        .order_by(BoxRow.revision.desc())
        .limit(1)
    ).one_or_none()


def latest_query(clip_id: int | None) -> Select:
    """Rows of ``boxes`` that are the latest revision of their (track, frame), deleted or not."""
    where = [] if clip_id is None else [BOX_TABLE.c.clip_id == clip_id]
    latest = (
        select(BOX_TABLE.c.track_id, BOX_TABLE.c.frame_index, func.max(BOX_TABLE.c.revision).label("revision"))
        .where(*where)
        .group_by(BOX_TABLE.c.track_id, BOX_TABLE.c.frame_index)
        .subquery()
    )
    return select(BOX_TABLE).join(
        latest,
        and_(
            BOX_TABLE.c.track_id == latest.c.track_id,
            BOX_TABLE.c.frame_index == latest.c.frame_index,
            BOX_TABLE.c.revision == latest.c.revision,
        ),
    )


def current_counts_by_track(session: Session, clip_id: int) -> dict[int, int]:
    current = latest_query(clip_id).where(BOX_TABLE.c.deleted.is_(False)).subquery()
    return dict(session.execute(select(current.c.track_id, func.count()).group_by(current.c.track_id)).all())


def count_current(session: Session, clip_id: int, track_id: int) -> int:
    return current_counts_by_track(session, clip_id).get(track_id, 0)


def live_counts(session: Session, clip_id: int | None) -> dict[int, tuple[int, int]]:
    """Clip id -> (live tracks, current boxes)."""
    current = latest_query(clip_id).where(BOX_TABLE.c.deleted.is_(False)).subquery()
    query = select(current.c.clip_id, func.count(current.c.track_id.distinct()), func.count()).group_by(
        current.c.clip_id
    )
    return {clip: (tracks, boxes) for clip, tracks, boxes in session.execute(query)}


def check_all_accepted(session: Session, clip: ClipRow, what: str) -> None:
    """Raise :class:`InputError` unless every live track (one with a current box) is accepted."""
    counts = current_counts_by_track(session, clip.id)
    pending = [
        f"{t.track_key} ({t.review_state.value})"
        for t in session.scalars(select(TrackRow).where(TrackRow.clip_id == clip.id).order_by(TrackRow.track_key))
        if counts.get(t.id, 0) and t.review_state is not ReviewState.ACCEPTED
    ]
    if pending:
        shown = ", ".join(pending[:10]) + (f" and {len(pending) - 10} more" if len(pending) > 10 else "")
        raise InputError(f"{what}: cannot sign off: {len(pending)} live tracks are not accepted: {shown}")


def pose_json(pose: SE3 | None) -> list[float] | None:
    return None if pose is None else [float(v) for v in pose.as_matrix().reshape(-1)]


def frame_record_of(row: FrameRow) -> FrameRecord:
    pose = None if row.world_SE3_ego is None else SE3.from_matrix(np.array(row.world_SE3_ego).reshape(4, 4))
    return FrameRecord(row.frame_index, row.token, row.timestamp_us, pose)


def load_frames(session: Session, clip_id: int) -> tuple[FrameRecord, ...]:
    rows = session.scalars(select(FrameRow).where(FrameRow.clip_id == clip_id).order_by(FrameRow.frame_index))
    return tuple(frame_record_of(r) for r in rows)


def _velocity(row) -> tuple[float, float] | None:
    if row.vx is None and row.vy is None:
        return None
    return (np.nan if row.vx is None else row.vx, np.nan if row.vy is None else row.vy)


def box3d_of(row) -> Box3D:
    return Box3D((row.x, row.y, row.z), (row.l, row.w, row.h), row.yaw, WORLD_FRAME, _velocity(row))


CURRENT_COLUMNS = (
    "track_id",
    "frame_index",
    "revision",
    "x",
    "y",
    "z",
    "l",
    "w",
    "h",
    "yaw",
    "vx",
    "vy",
    "score",
    "stage",
)


@dataclass(frozen=True, eq=False)
class CurrentColumns:
    """N current boxes of a clip as columns, sorted by frame index then track key.

    Attributes:
        track_ids, frame_indices, revisions: (N,) int64.
        data: (N, 7) box rows; velocity: (N, 2), NaN where unknown; scores: (N,).
    """

    track_ids: np.ndarray
    frame_indices: np.ndarray
    revisions: np.ndarray
    data: np.ndarray
    velocity: np.ndarray
    scores: np.ndarray
    stages: tuple[BoxStage, ...]

    @classmethod
    def from_rows(cls, rows: Sequence[Sequence], tracks: Mapping[int, TrackRow]) -> CurrentColumns:
        """From rows of :data:`CURRENT_COLUMNS` values."""
        cols = list(zip(*rows, strict=True)) if rows else [()] * len(CURRENT_COLUMNS)
        track_ids = np.array(cols[0], dtype=np.int64)
        frame_indices = np.array(cols[1], dtype=np.int64)
        keys = np.array([tracks[int(t)].track_key for t in track_ids], dtype=str)
        order = np.lexsort((keys, frame_indices)) if len(rows) else np.zeros(0, dtype=np.int64)
        unknown = [[np.nan if v is None else v for v in cols[i]] for i in (10, 11)]
        return cls(
            track_ids=track_ids[order],
            frame_indices=frame_indices[order],
            revisions=np.array(cols[2], dtype=np.int64)[order],
            data=np.array(cols[3:10], dtype=np.float64).reshape(7, -1).T[order],
            velocity=np.array(unknown, dtype=np.float64).reshape(2, -1).T[order],
            scores=np.array(cols[12], dtype=np.float64)[order],
            stages=tuple(BoxStage(cols[13][i]) for i in order),
        )


def frame_boxes_of(frame: FrameRecord, columns: CurrentColumns, tracks: Mapping[int, TrackRow]) -> FrameBoxes:
    start, stop = np.searchsorted(columns.frame_indices, [frame.index, frame.index + 1])
    velocity = columns.velocity[start:stop]
    track_rows = [tracks[int(t)] for t in columns.track_ids[start:stop]]
    return FrameBoxes(
        frame_index=frame.index,
        timestamp_us=frame.timestamp_us,
        boxes=Boxes3D(columns.data[start:stop], WORLD_FRAME, velocity if np.isfinite(velocity).any() else None),
        track_keys=tuple(t.track_key for t in track_rows),
        categories=tuple(t.category for t in track_rows),
        scores=columns.scores[start:stop].copy(),
        stages=columns.stages[start:stop],
        revisions=columns.revisions[start:stop].copy(),
    )


def provenance_of(run: RunRow) -> Provenance:
    return Provenance(run.detector, run.parameters_hash, run.code_version, run.author)


def revision_of(row: BoxRow, track_key: str, provenance: Provenance | None) -> BoxRevision:
    return BoxRevision(
        track_key=track_key,
        frame_index=row.frame_index,
        revision=row.revision,
        box=box3d_of(row),
        score=row.score,
        confidence=row.confidence,
        stage=row.stage,
        deleted=row.deleted,
        author=row.author,
        created_at=row.created_at,
        run_id=row.run_id,
        provenance=provenance,
    )


def track_info_of(row: TrackRow, num_boxes: int) -> TrackInfo:
    size = None if row.fixed_l_m is None else (row.fixed_l_m, row.fixed_w_m, row.fixed_h_m)
    return TrackInfo(
        track_key=row.track_key,
        category=row.category,
        score=row.score,
        review_state=row.review_state,
        static=row.static,
        fixed_size_lwh=size,
        human_touched=row.human_touched,
        num_boxes=num_boxes,
        review_flags=row.review_flags or {},
    )


def clip_info_from(clip: ClipRow, num_frames: int, num_runs: int, num_tracks: int, num_boxes: int) -> ClipInfo:
    return ClipInfo(
        key=ClipKey(clip.source, clip.name),
        root=clip.root,
        review_state=clip.review_state,
        num_frames=num_frames,
        num_tracks=num_tracks,
        num_boxes=num_boxes,
        num_runs=num_runs,
        created_at=clip.created_at,
        updated_at=clip.updated_at,
    )


def clip_info_of(session: Session, clip: ClipRow) -> ClipInfo:
    num_frames = session.scalar(select(func.count()).select_from(FrameRow).where(FrameRow.clip_id == clip.id))
    num_runs = session.scalar(select(func.count()).select_from(RunRow).where(RunRow.clip_id == clip.id))
    tracks, boxes = live_counts(session, clip.id).get(clip.id, (0, 0))
    return clip_info_from(clip, num_frames, num_runs, tracks, boxes)
