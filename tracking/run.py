"""The entry point: :func:`track_clip` runs the tracker over a clip's detections in either mode."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from calibration import Boxes3D
from tracking.assemble import ObjectRows, make_tracks
from tracking.config import TrackerConfig
from tracking.offboard import offboard_tracks, time_reversed
from tracking.tables import ClassTable, ClipArrays
from tracking.tracker import PassRecords, run_pass
from tracking.types import BoxSource, Detections, Track, TrackingMode, frames_in_order


def track_clip(
    frames: Sequence[Detections],
    config: TrackerConfig | None = None,
    mode: TrackingMode = TrackingMode.OFFBOARD,
) -> list[Track]:
    """Tracks of the objects in a clip, numbered by first appearance (ids 0, 1, ...).

    Args:
        frames: per-frame detections, strictly increasing in time, all boxes in one frame (``world``).
        config: tracker parameters (defaults: :class:`TrackerConfig`).
        mode: :attr:`TrackingMode.OFFBOARD`: forward and backward passes merged, tracks stitched across
            gaps, gaps interpolated, short or weak tracks removed. :attr:`TrackingMode.ONLINE`: the
            forward pass alone, reporting each confirmed track's detected boxes as an online tracker
            would (nothing before confirmation, nothing interpolated, nothing removed afterwards).
    """
    config = TrackerConfig() if config is None else config
    mode = TrackingMode(mode)
    frame_name = frames_in_order(frames)
    table = ClassTable.build([label for f in frames for label in f.labels], config)
    clip = ClipArrays.build(frames, table, frame_name)
    if mode is TrackingMode.ONLINE:
        return online_tracks(run_pass(clip.frame_arrays(config), table, config, config.online), clip, table)
    life = config.offboard.life
    forward = run_pass(clip.frame_arrays(config), table, config, life)
    backward = run_pass(clip.frame_arrays(config, time_reversed=True), table, config, life)
    return offboard_tracks(forward, time_reversed(backward, len(frames)), clip, table, config.offboard)


def online_tracks(records: PassRecords, clip: ClipArrays, table: ClassTable) -> list[Track]:
    """Tracks of the online mode: the rows reported while confirmed, with the filter's yaws and velocities."""
    reported = records.select(np.flatnonzero(records.confirmed))
    rows = ObjectRows(
        reported.track_ids,
        clip.keys(reported.frame_indices, reported.detection_indices),
        reported.frame_indices,
        reported.yaws,
        reported.velocities,
    )
    return make_tracks(rows, clip, table, interpolate=False)


@dataclass(frozen=True, eq=False)
class FrameTracks:
    """The tracks' boxes in one frame (M of them), e.g. for export or evaluation.

    Attributes:
        track_ids: (M,) int64.
        boxes: M boxes with velocity.
        scores: (M,) per-box scores; track_scores: (M,) their tracks' scores.
        labels: M class names (the tracks' labels).
        sources: M :class:`BoxSource` values.
    """

    frame_index: int
    track_ids: np.ndarray
    boxes: Boxes3D
    scores: np.ndarray
    track_scores: np.ndarray
    labels: tuple[str, ...]
    sources: tuple[BoxSource, ...]


def frames_of_tracks(tracks: Sequence[Track], n_frames: int, frame_name: str = "world") -> list[FrameTracks]:
    """The per-frame view of ``tracks`` for frames 0..n_frames-1 (tracks in the given order)."""
    rows: list[list[tuple[Track, int]]] = [[] for _ in range(n_frames)]
    for track in tracks:
        frame_name = track.boxes.frame
        for i, f in enumerate(track.frame_indices):
            if 0 <= f < n_frames:
                rows[int(f)].append((track, i))
    out = []
    for f, items in enumerate(rows):
        velocity = np.array([t.boxes.velocity[i] for t, i in items]).reshape(-1, 2)
        out.append(
            FrameTracks(
                f,
                np.array([t.track_id for t, _ in items], dtype=np.int64),
                Boxes3D(np.array([t.boxes.data[i] for t, i in items]).reshape(-1, 7), frame_name, velocity),
                np.array([t.scores[i] for t, i in items], dtype=np.float64),
                np.array([t.score for t, _ in items], dtype=np.float64),
                tuple(t.label for t, _ in items),
                tuple(t.sources[i] for t, i in items),
            )
        )
    return out
