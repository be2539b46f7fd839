"""From per-frame rows of objects to :class:`Track` values: label vote, consistent yaw, gap filling.

Everything works on the flat rows of all objects at once (sorted by object, then frame); only the
final split into :class:`Track` values loops over objects.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from calibration import Boxes3D
from tracking.kalman import wrap
from tracking.tables import ClassTable, ClipArrays
from tracking.types import BoxSource, Track


@dataclass(frozen=True, eq=False)
class ObjectRows:
    """The detected frames of several objects: R rows sorted by object id, then frame.

    Attributes:
        object_ids: (R,) int64 (any values; equal for the rows of one object).
        keys: (R,) detection keys into a :class:`ClipArrays`.
        frame_indices: (R,) int64.
        yaws: (R,) heading per row (may differ from the detection's by pi).
        velocities: (R, 2) m/s.
    """

    object_ids: np.ndarray
    keys: np.ndarray
    frame_indices: np.ndarray
    yaws: np.ndarray
    velocities: np.ndarray

    def __len__(self) -> int:
        return int(self.object_ids.shape[0])

    def select(self, rows: np.ndarray) -> ObjectRows:
        return ObjectRows(
            self.object_ids[rows], self.keys[rows], self.frame_indices[rows], self.yaws[rows], self.velocities[rows]
        )


def run_starts(ids: np.ndarray) -> np.ndarray:
    """(G,) first row of each run of equal values in ``ids``."""
    if ids.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate([[0], np.flatnonzero(ids[1:] != ids[:-1]) + 1])


def vote_label(classes: np.ndarray, scores: np.ndarray, n_classes: int) -> int:
    """Class index with the largest summed score (ties: the lower index)."""
    return int(np.argmax(np.bincount(classes, weights=scores, minlength=n_classes)))


def consistent_yaws(object_ids: np.ndarray, yaws_rad: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(R,) yaws turned by pi where needed so that each object's consecutive headings differ by <= pi/2.

    Of an object's two possible orientations, the one agreeing with more ``weights`` (detection scores)
    of its input yaws is kept: a detector that is right most of the time sets the heading.

    Args:
        object_ids: (R,) sorted object ids; yaws_rad: (R,); weights: (R,).
    """
    if yaws_rad.shape[0] == 0:
        return yaws_rad
    same = object_ids[1:] == object_ids[:-1]
    flips = np.concatenate([[0], (same & (np.abs(wrap(np.diff(yaws_rad))) > np.pi / 2)).astype(np.int64)])
    starts = run_starts(object_ids)
    run = np.cumsum(np.concatenate([[0], ~same]))  # run index of each row
    flip_count = np.cumsum(flips)
    parity = (flip_count - flip_count[starts][run]) % 2
    flipped_weight = np.bincount(run, weights=weights * parity)
    kept_weight = np.bincount(run, weights=weights * (1 - parity))
    parity = (parity + (flipped_weight > kept_weight)[run]) % 2
    return wrap(yaws_rad + np.pi * parity)


def fill_gaps(
    object_ids: np.ndarray,
    frame_indices: np.ndarray,
    timestamps_us: np.ndarray,
    boxes: np.ndarray,
    velocities: np.ndarray,
    scores: np.ndarray,
    max_gap_s: float | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Interpolate the frames missing between an object's detected frames.

    Positions, sizes and scores are linear in time, yaw follows the shorter arc and the velocity is the
    mean velocity across the gap.

    Args:
        object_ids, frame_indices: (R,) rows sorted by object, then frame.
        timestamps_us: (F,) times of all frames of the clip.
        boxes: (R, 7), velocities: (R, 2), scores: (R,).
        max_gap_s: longer gaps stay empty (None: fill all).

    Returns:
        object_ids, frame_indices, boxes, velocities, scores and a ``detected`` bool mask, with the filled
        rows inserted (sorted by object, then frame).
    """
    gaps = np.diff(frame_indices) - 1
    fill = (object_ids[1:] == object_ids[:-1]) & (gaps > 0)
    if max_gap_s is not None:
        fill &= np.diff(timestamps_us[frame_indices]) * 1e-6 <= max_gap_s
    detected = np.ones(frame_indices.shape[0], dtype=bool)
    if not fill.any():
        return object_ids, frame_indices, boxes, velocities, scores, detected
    counts = np.where(fill, gaps, 0)
    before = np.repeat(np.arange(counts.shape[0]), counts)  # the detected row before each filled one
    after = before + 1
    frames = frame_indices[before] + np.arange(before.shape[0]) - np.repeat(np.cumsum(counts) - counts, counts) + 1
    t0, t1 = timestamps_us[frame_indices[before]], timestamps_us[frame_indices[after]]
    alpha = ((timestamps_us[frames] - t0) / (t1 - t0))[:, None]
    b0, b1 = boxes[before], boxes[after]
    filled = b0 + alpha * (b1 - b0)
    filled[:, 6] = wrap(b0[:, 6] + alpha[:, 0] * wrap(b1[:, 6] - b0[:, 6]))
    filled_velocity = (b1[:, :2] - b0[:, :2]) / ((t1 - t0) * 1e-6)[:, None]
    filled_scores = scores[before] + alpha[:, 0] * (scores[after] - scores[before])
    # Rows are grouped by object, not necessarily by increasing id: a filled row goes between its "before"
    # and "after" rows (position before + step / (gap + 2), strictly inside (before, before + 1)).
    position = np.concatenate([np.arange(frame_indices.shape[0]), before]).astype(np.float64)
    position[frame_indices.shape[0] :] += (frames - frame_indices[before]) / (gaps[before] + 2)
    order = np.argsort(position, kind="stable")
    return (
        np.concatenate([object_ids, object_ids[before]])[order],
        np.concatenate([frame_indices, frames])[order],
        np.concatenate([boxes, filled])[order],
        np.concatenate([velocities, filled_velocity])[order],
        np.concatenate([scores, filled_scores])[order],
        np.concatenate([detected, np.zeros(frames.shape[0], dtype=bool)])[order],
    )


_SOURCE_OF_DETECTED = np.array([BoxSource.INTERPOLATED, BoxSource.DETECTED], dtype=object)


def make_tracks(
    rows: ObjectRows, clip: ClipArrays, table: ClassTable, *, interpolate: bool, max_gap_s: float | None = None
) -> list[Track]:
    """One :class:`Track` per object of ``rows``, numbered 0, 1, ... by first appearance (frame, detection).

    Boxes are the detections' with the rows' yaws, scores the detections'; the label is the
    score-weighted vote and the track score the mean detection score. With ``interpolate``, gaps up to
    ``max_gap_s`` are filled (:func:`fill_gaps`).
    """
    if len(rows) == 0:
        return []
    starts = run_starts(rows.object_ids)
    run = np.repeat(np.arange(starts.shape[0]), np.diff([*starts.tolist(), len(rows)]))  # object of each row
    rank = np.empty(starts.shape[0], dtype=np.int64)
    rank[np.argsort(rows.keys[starts], kind="stable")] = np.arange(starts.shape[0])
    order = np.lexsort((rows.frame_indices, rank[run]))
    rows, track_ids = rows.select(order), rank[run][order]

    scores = clip.scores[rows.keys]
    classes = clip.classes[rows.keys]
    n_tracks = starts.shape[0]
    votes = np.zeros((n_tracks, len(table.labels)))
    np.add.at(votes, (track_ids, classes), scores)
    labels = np.argmax(votes, axis=1)
    track_scores = np.bincount(track_ids, weights=scores) / np.bincount(track_ids)
    boxes = clip.boxes[rows.keys].copy()
    boxes[:, 6] = rows.yaws
    frames, velocities, detected = rows.frame_indices, rows.velocities, np.ones(len(rows), dtype=bool)
    detection_indices = rows.keys - clip.offsets[rows.frame_indices]
    if interpolate:
        track_ids, frames, boxes, velocities, scores, detected = fill_gaps(
            track_ids, frames, clip.timestamps_us, boxes, velocities, scores, max_gap_s
        )
        filled_indices = np.full(frames.shape[0], -1, dtype=np.int64)
        filled_indices[detected] = detection_indices
        detection_indices = filled_indices
    sources = _SOURCE_OF_DETECTED[detected.astype(np.int64)]
    bounds = [*run_starts(track_ids).tolist(), frames.shape[0]]
    tracks = []
    for i in range(n_tracks):
        a, b = bounds[i], bounds[i + 1]
        tracks.append(
            Track(
                track_id=i,
                label=table.labels[labels[i]],
                score=float(track_scores[i]),
                frame_indices=frames[a:b],
                timestamps_us=clip.timestamps_us[frames[a:b]],
                boxes=Boxes3D(boxes[a:b], clip.frame_name, velocities[a:b]),
                scores=scores[a:b],
                sources=tuple(sources[a:b]),
                detection_indices=detection_indices[a:b],
            )
        )
    return tracks
