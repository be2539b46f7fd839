"""Conversions between the label forms: tracker tracks, the store's rows, and per-frame ego-frame labels.

Tracks and the store hold boxes in the world frame; :class:`FrameLabels` (exports, evaluation) are in
each keyframe's ego frame, through that keyframe's pose.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np

from autolabel.categories import Category
from autolabel.datasets.model import FrameLabels
from autolabel.store import BoxStage, ClipLabels, TrackLabels
from calibration import EGO_FRAME, SE3, WORLD_FRAME, Boxes3D, InputError
from tracking import RefinedTrack, frames_of_tracks


class TrackLike(Protocol):
    """What the conversions read of a track (:class:`tracking.Track` and the pipeline's cached tracks)."""

    track_id: int
    label: str
    score: float
    frame_indices: np.ndarray
    boxes: Boxes3D
    scores: np.ndarray
    sources: tuple


def category_of(label: str) -> Category:
    """A class name as a :class:`Category` (names outside the taxonomy become ``OTHER``)."""
    return Category(label) if label in Category._value2member_map_ else Category.OTHER


def track_labels(
    tracks: Sequence[TrackLike], review_flags: Sequence[Mapping[str, int]] | None = None
) -> list[TrackLabels]:
    """The store's input: one :class:`TrackLabels` per track (classes outside the taxonomy become OTHER).

    Refined tracks also pass their per-box confidences, static flag and one size. ``review_flags`` holds
    per track its flag -> box count (``None``: nothing flagged).
    """
    if review_flags is not None and len(review_flags) != len(tracks):
        raise InputError(f"{len(review_flags)} review flag counts given for {len(tracks)} tracks")
    out = []
    for n, t in enumerate(tracks):
        refined = isinstance(t, RefinedTrack)
        out.append(
            TrackLabels(
                track_key=str(t.track_id),
                category=category_of(t.label),
                score=t.score,
                frame_indices=t.frame_indices,
                boxes=t.boxes,
                scores=t.scores,
                stages=tuple(BoxStage(getattr(s, "value", s)) for s in t.sources),
                confidences=t.confidences if refined else None,
                static=bool(t.static) if refined else False,
                fixed_size_lwh=tuple(float(v) for v in t.size_lwh_m) if refined else None,
                review_flags=review_flags[n] if review_flags is not None else {},
            )
        )
    return out


def frame_labels(tracks: Sequence[TrackLike], poses: Sequence[SE3]) -> list[FrameLabels]:
    """Per keyframe the tracks' boxes in that keyframe's ego frame (for export and evaluation)."""
    out = []
    views = frames_of_tracks(list(tracks), len(poses))  # works on anything with the Track fields it reads
    for view, pose in zip(views, poses, strict=True):
        boxes = Boxes3D(view.boxes.data, WORLD_FRAME, view.boxes.velocity).transform(pose.inverse(), EGO_FRAME)
        out.append(
            FrameLabels(
                boxes=boxes,
                track_ids=tuple(str(t) for t in view.track_ids),
                categories=tuple(category_of(c) for c in view.labels),
                scores=view.scores,
            )
        )
    return out


def stored_frame_labels(labels: ClipLabels) -> list[FrameLabels]:
    """The store's current labels of a clip, per keyframe in its ego frame (track keys as track ids)."""
    out = []
    for record, boxes in zip(labels.frames, labels.frame_boxes, strict=True):
        if record.world_SE3_ego is None:
            raise InputError(f"clip {labels.clip.key}: frame {record.index} has no pose in the store")
        world = Boxes3D(boxes.boxes.data, WORLD_FRAME, boxes.boxes.velocity)
        out.append(
            FrameLabels(
                boxes=world.transform(record.world_SE3_ego.inverse(), EGO_FRAME),
                track_ids=boxes.track_keys,
                categories=boxes.categories,
                scores=boxes.scores,
            )
        )
    return out
