"""Writes of pipeline runs: box revision rows, frame checks, and the re-run policy.

See :mod:`autolabel.store.store` for the policy; :func:`write_run` applies it inside the caller's
transaction. :func:`insert_boxes` is the one place box rows are inserted.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime

import numpy as np
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from autolabel.store.models import BoxRow, ClipRow, FrameRow, RunRow, TrackRow
from autolabel.store.queries import frame_record_of, latest_query, pose_json
from autolabel.store.review import ReviewState
from autolabel.store.types import (
    MAX_KEY_CHARS,
    BoxStage,
    FrameRecord,
    PrelabelResult,
    Provenance,
    TrackLabels,
)
from calibration import WORLD_FRAME, Box3D, Boxes3D, InputError, iou_bev

DUPLICATE_IOU = 0.5  # BEV IoU above which a new pipeline box overlaps a kept (human-touched) track's box


DUPLICATE_FRAME_FRACTION = 0.5  # ... in at least this fraction of their shared frames -> duplicate


def insert_boxes(session: Session, rows: list[dict]) -> None:
    """Insert box revision rows (one executemany); tests patch this to crash half-way through a run."""
    if rows:
        session.execute(insert(BoxRow), rows)


def box_dict(
    clip_id: int,
    track_id: int,
    frame_index: int,
    revision: int,
    geometry: Mapping[str, float | None],
    score: float,
    confidence: float | None,
    stage: BoxStage,
    run_id: int | None,
    author: str,
    created_at: datetime,
    *,
    deleted: bool = False,
) -> dict:
    return {
        "clip_id": clip_id,
        "track_id": track_id,
        "frame_index": int(frame_index),
        "revision": int(revision),
        **geometry,
        "score": float(score),
        "confidence": confidence,
        "stage": stage,
        "deleted": deleted,
        "run_id": run_id,
        "author": author,
        "created_at": created_at,
    }


def _optional(value: float) -> float | None:
    return None if not np.isfinite(value) else float(value)


def box_geometry(data_row: np.ndarray, velocity_row: np.ndarray | None) -> dict[str, float | None]:
    """Column values of one ``x, y, z, l, w, h, yaw`` row and its optional ``vx, vy`` (NaN -> NULL)."""
    x, y, z, l, w, h, yaw = (float(v) for v in data_row)
    vx, vy = (None, None) if velocity_row is None else (_optional(velocity_row[0]), _optional(velocity_row[1]))
    return {"x": x, "y": y, "z": z, "l": l, "w": w, "h": h, "yaw": yaw, "vx": vx, "vy": vy}


def geometry_of(row) -> dict[str, float | None]:
    return {name: getattr(row, name) for name in ("x", "y", "z", "l", "w", "h", "yaw", "vx", "vy")}


def box_values(box: Box3D, what: str) -> dict[str, float | None]:
    if box.frame != WORLD_FRAME:
        raise InputError(f"{what}: box must be in the {WORLD_FRAME!r} frame, got {box.frame!r}")
    boxes = box.as_boxes()  # validates (finite, non-negative size) and wraps the yaw
    return box_geometry(boxes.data[0], None if boxes.velocity is None else boxes.velocity[0])


def check_tracks(tracks: Sequence[TrackLabels], num_frames: int, what: str) -> None:
    keys = [t.track_key for t in tracks]
    if len(set(keys)) != len(keys):
        duplicated = sorted({k for k in keys if keys.count(k) > 1})
        raise InputError(f"{what}: duplicate track keys {duplicated[:10]}")
    for track in tracks:
        if track.frame_indices[-1] >= num_frames:
            raise InputError(
                f"{what} track {track.track_key!r}: frame index {int(track.frame_indices[-1])} "
                f"is outside the clip's {num_frames} frames"
            )


def sync_frames(session: Session, clip: ClipRow, frames: Sequence[FrameRecord], what: str) -> None:
    """Store the frames on the first run; later runs must match them (poses may be updated)."""
    stored = list(session.scalars(select(FrameRow).where(FrameRow.clip_id == clip.id).order_by(FrameRow.frame_index)))
    if not stored:
        session.add_all(
            FrameRow(
                clip_id=clip.id,
                frame_index=f.index,
                token=f.token,
                timestamp_us=f.timestamp_us,
                world_SE3_ego=pose_json(f.world_SE3_ego),
            )
            for f in frames
        )
        session.flush()
        return
    if len(stored) != len(frames):
        raise InputError(
            f"{what}: {len(frames)} frames given but the store has {len(stored)}; a clip's frames are fixed"
        )
    for row, frame in zip(stored, frames, strict=True):
        if not frame_record_of(row).same_identity(frame):
            raise InputError(
                f"{what}: frame {frame.index} is (token {frame.token!r}, {frame.timestamp_us} us) but the store has "
                f"(token {row.token!r}, {row.timestamp_us} us); a clip's frames are fixed"
            )
        pose = pose_json(frame.world_SE3_ego)
        if pose != row.world_SE3_ego:
            row.world_SE3_ego = pose


def write_run(
    session: Session,
    clip: ClipRow,
    run: RunRow,
    tracks: Sequence[TrackLabels],
    provenance: Provenance,
    duplicate_iou: float,
) -> PrelabelResult:
    """The body of :meth:`LabelStore.write_prelabels` after the clip, frames and run rows exist."""
    existing = {t.track_key: t for t in session.scalars(select(TrackRow).where(TrackRow.clip_id == clip.id))}
    latest: dict[int, dict[int, object]] = defaultdict(dict)  # track id -> frame -> latest revision row
    for row in session.execute(latest_query(clip.id)):
        latest[row.track_id][row.frame_index] = row
    kept = {key: t for key, t in existing.items() if t.human_touched}
    kept_boxes = _current_boxes_by_frame({key: latest.get(t.id, {}) for key, t in kept.items()})
    duplicates = find_duplicates(tracks, kept_boxes, duplicate_iou)
    taken = set(existing)
    now = run.started_at
    written: list[str] = []
    skipped: list[str] = []
    renamed: dict[str, str] = {}
    num_boxes = 0
    for labels in tracks:
        if labels.track_key in duplicates:
            skipped.append(labels.track_key)
            continue
        key = labels.track_key
        if key in kept:
            key = _free_key(key, taken, run.id)
            renamed[labels.track_key] = key
        track = existing.get(key)
        if track is None:
            track = TrackRow(
                clip_id=clip.id,
                track_key=key,
                review_state=ReviewState.PRELABELED,
                human_touched=False,
                created_at=now,
            )
            session.add(track)
            existing[key] = track
            taken.add(key)
        track.category = labels.category
        track.score = labels.score
        track.static = labels.static
        track.fixed_l_m, track.fixed_w_m, track.fixed_h_m = labels.fixed_size_lwh or (None, None, None)
        track.review_flags = dict(labels.review_flags)
        track.updated_at = now
        session.flush()
        previous = latest.get(track.id, {})
        rows = _track_rows(clip.id, track.id, labels, previous, run.id, provenance.author, now)
        rows += _retire_rows(
            clip.id, track.id, previous, set(labels.frame_indices.tolist()), run.id, provenance.author, now
        )
        insert_boxes(session, rows)
        num_boxes += len(labels)
        written.append(key)
    retired: list[str] = []
    written_keys = set(written)
    for key, track in existing.items():
        if track.human_touched or key in written_keys:
            continue
        rows = _retire_rows(clip.id, track.id, latest.get(track.id, {}), set(), run.id, provenance.author, now)
        if rows:
            insert_boxes(session, rows)
            retired.append(key)
    run.num_boxes = num_boxes
    return PrelabelResult(
        run_id=run.id,
        written=tuple(written),
        retired=tuple(sorted(retired)),
        kept=tuple(sorted(kept)),
        skipped=tuple(skipped),
        renamed=renamed,
    )


def _track_rows(
    clip_id: int,
    track_id: int,
    labels: TrackLabels,
    previous: Mapping[int, object],
    run_id: int,
    author: str,
    now: datetime,
) -> list[dict]:
    velocity = labels.boxes.velocity
    confidences = labels.confidences
    rows = []
    for k, frame_index in enumerate(labels.frame_indices.tolist()):
        before = previous.get(frame_index)
        rows.append(
            box_dict(
                clip_id,
                track_id,
                frame_index,
                1 if before is None else before.revision + 1,
                box_geometry(labels.boxes.data[k], None if velocity is None else velocity[k]),
                labels.scores[k],
                None if confidences is None else _optional(confidences[k]),
                labels.stages[k],
                run_id,
                author,
                now,
            )
        )
    return rows


def _retire_rows(
    clip_id: int,
    track_id: int,
    previous: Mapping[int, object],
    keep_frames: set[int],
    run_id: int,
    author: str,
    now: datetime,
) -> list[dict]:
    """Deletion revisions for the track's current boxes outside ``keep_frames``."""
    return [
        box_dict(
            clip_id,
            track_id,
            frame_index,
            row.revision + 1,
            geometry_of(row),
            row.score,
            row.confidence,
            row.stage,
            run_id,
            author,
            now,
            deleted=True,
        )
        for frame_index, row in sorted(previous.items())
        if frame_index not in keep_frames and not row.deleted
    ]


def _free_key(key: str, taken: set[str], run_id: int) -> str:
    """``<key>.r<run_id>`` (then ``.2``, ``.3``, ...), cut to fit the key length, not in ``taken``."""
    suffix = f".r{run_id}"
    candidate = key[: MAX_KEY_CHARS - len(suffix)] + suffix
    n = 2
    while candidate in taken:
        extra = f"{suffix}.{n}"
        candidate = key[: MAX_KEY_CHARS - len(extra)] + extra
        n += 1
    taken.add(candidate)
    return candidate


def _current_boxes_by_frame(latest_by_key: Mapping[str, Mapping[int, object]]) -> dict[int, tuple[Boxes3D, list[str]]]:
    """Frame -> (current boxes, their track keys) of the given tracks."""
    by_frame: dict[int, list[tuple[str, object]]] = defaultdict(list)
    for key, rows in latest_by_key.items():
        for frame_index, row in rows.items():
            if not row.deleted:
                by_frame[frame_index].append((key, row))
    return {
        frame_index: (
            Boxes3D(np.array([[r.x, r.y, r.z, r.l, r.w, r.h, r.yaw] for _, r in items]), WORLD_FRAME),
            [key for key, _ in items],
        )
        for frame_index, items in by_frame.items()
    }


def find_duplicates(
    tracks: Sequence[TrackLabels],
    kept_boxes: Mapping[int, tuple[Boxes3D, Sequence[str]]],
    iou_threshold: float = DUPLICATE_IOU,
) -> dict[str, str]:
    """Input track key -> key of the kept track it duplicates.

    A track duplicates a kept track when their BEV IoU reaches ``iou_threshold`` in at least
    :data:`DUPLICATE_FRAME_FRACTION` of the frames where both have a box; with several candidates the
    one with the highest such fraction wins.

    Args:
        kept_boxes: frame index -> (M boxes in world, M track keys) of the kept tracks.
    """
    kept_index = {key: j for j, key in enumerate(sorted({k for _, keys in kept_boxes.values() for k in keys}))}
    shared = np.zeros((len(tracks), len(kept_index)), dtype=np.int64)  # frames where both have a box
    hits = np.zeros_like(shared)  # ... of which overlapping
    new_by_frame: dict[int, list[tuple[int, int]]] = defaultdict(list)  # frame -> (input track, its box row)
    for i, track in enumerate(tracks):
        for k, frame_index in enumerate(track.frame_indices.tolist()):
            if frame_index in kept_boxes:
                new_by_frame[frame_index].append((i, k))
    for frame_index, items in new_by_frame.items():
        kept, kept_keys = kept_boxes[frame_index]
        new = Boxes3D(np.stack([tracks[i].boxes.data[k] for i, k in items]), WORLD_FRAME)
        rows, cols = np.ix_([i for i, _ in items], [kept_index[key] for key in kept_keys])
        shared[rows, cols] += 1
        hits[rows, cols] += iou_bev(new, kept) >= iou_threshold
    fraction = np.divide(hits, shared, out=np.zeros(shared.shape), where=shared > 0)
    fraction[(hits == 0) | (fraction < DUPLICATE_FRAME_FRACTION)] = -1.0
    keys = list(kept_index)
    duplicates: dict[str, str] = {}
    for i, track in enumerate(tracks):
        if fraction.shape[1] and fraction[i].max() >= 0.0:
            duplicates[track.track_key] = keys[int(np.argmax(fraction[i]))]
    return duplicates
