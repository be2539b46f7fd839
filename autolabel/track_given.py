"""Tracking given detections (``autolabel track``), for teams that already have a detector's output.

- KITTI tracking layout: per sequence ``DETDIR/SEQ.txt`` in label_02 format with a score column and
  track id -1, boxes in the rectified camera frame; the sequence's calib and (when present) poses from
  ``poses/SEQ.txt`` or oxts, else lidar odometry over its velodyne sweeps. Output: label_02 tracking
  results with track ids filled and the KITTI class names kept.
- nuScenes: a detection-results JSON (the devkit's submission format) with its dataroot. Output: a
  tracking-results JSON.

The detections are tracked in the world frame by the offboard tracker (or its online baseline).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autolabel.categories import Category, category_from_nuscenes
from autolabel.datasets.model import Clip, FrameLabels
from autolabel.datasets.nuscenes import world_boxes
from autolabel.labels import frame_labels
from autolabel.poses import odometry_poses
from calibration import EGO_FRAME, WORLD_FRAME, InputError
from tracking import Detections, Track, TrackerConfig, TrackingMode, track_clip


@dataclass(frozen=True, eq=False)
class TrackedClip:
    """A clip's tracking result: per-frame labels (ego frame, track ids) and what was done to get them."""

    clip: Clip
    labels: list[FrameLabels]
    tracks: int
    notes: tuple[str, ...]


def world_detections(clip: Clip, detections: Sequence[FrameLabels]) -> list[Detections]:
    """Per-frame ego-frame detections as the tracker's world-frame input (the clip needs poses)."""
    out = []
    for frame, labels in zip(clip.frames, detections, strict=True):
        world = labels.boxes.transform(frame.world_SE3_ego, WORLD_FRAME)
        out.append(Detections(frame.timestamp_us, world, labels.scores, tuple(c.value for c in labels.categories)))
    return out


def _source_names(tracks: Sequence[Track], detections: Sequence[FrameLabels]) -> dict[int, str]:
    """Per track the most frequent source class name of its detections (e.g. KITTI ``Van`` vs ``Car``)."""
    names = {}
    for track in tracks:
        votes = Counter(
            detections[int(f)].source_categories[int(d)]
            for f, d in zip(track.frame_indices, track.detection_indices, strict=True)
            if d >= 0
        )
        names[track.track_id] = votes.most_common(1)[0][0] if votes else ""
    return names


def track_detections(
    clip: Clip, detections: Sequence[FrameLabels], config: TrackerConfig, mode: TrackingMode
) -> tuple[list[FrameLabels], int]:
    """Track a clip's detections; per-frame labels with track ids and the detections' class names."""
    if len(detections) != len(clip):
        raise InputError(f"clip {clip.name}: {len(detections)} detection sets for {len(clip)} frames")
    tracks = track_clip(world_detections(clip, detections), config, mode)
    poses = [f.world_SE3_ego for f in clip.frames]
    labels = frame_labels(tracks, poses)
    names = _source_names(tracks, detections)
    named = [
        FrameLabels(
            boxes=frame.boxes,
            track_ids=frame.track_ids,
            categories=frame.categories,
            scores=frame.scores,
            source_categories=tuple(names[int(t)] for t in frame.track_ids),
        )
        for frame in labels
    ]
    return named, len(tracks)


def track_kitti_sequence(
    root: Path, seq: str, detections_path: Path, config: TrackerConfig, mode: TrackingMode
) -> TrackedClip:
    """Read one KITTI sequence and its detections, get poses (odometry when missing), track."""
    from autolabel.datasets.kitti import load_kitti_clip, read_kitti_detections

    clip = load_kitti_clip(root, seq)
    notes = []
    if not clip.has_poses:
        clip, odometry = odometry_poses(clip)
        notes.append(
            f"no poses in the dataset: lidar odometry over {len(odometry)} sweeps "
            f"({int(odometry.degraded.sum())} degraded steps)"
        )
    notes.append("refinement against the lidar is not applied yet (tracks keep the detector's boxes)")
    labels, count = track_detections(clip, read_kitti_detections(detections_path, clip), config, mode)
    return TrackedClip(clip, labels, count, tuple(notes))


def read_nuscenes_detections(path: Path) -> dict[str, list[dict[str, Any]]]:
    """The ``results`` of a nuScenes detection submission (sample token -> boxes), checked for the fields used."""
    try:
        payload = json.loads(Path(path).read_text())
        results = payload["results"]
    except FileNotFoundError:
        raise InputError(f"{path}: detection results file not found") from None
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise InputError(f"{path}: not a nuScenes detection-results JSON ({exc})") from None
    required = ("translation", "size", "rotation", "detection_name", "detection_score")
    for token, boxes in results.items():
        for box in boxes:
            missing = [k for k in required if k not in box]
            if missing:
                raise InputError(f"{path}: a box of sample {token} lacks {', '.join(missing)}")
    return results


def nuscenes_frame_detections(clip: Clip, results: dict[str, list[dict[str, Any]]]) -> list[FrameLabels]:
    """Per keyframe of ``clip`` its submitted boxes, converted from the global frame to the ego frame."""
    out = []
    for frame in clip.frames:
        boxes = results.get(frame.token, [])
        world = world_boxes(boxes, [box.get("velocity", [np.nan, np.nan])[:2] for box in boxes])
        names = [box["detection_name"] for box in boxes]
        out.append(
            FrameLabels(
                boxes=world.transform(frame.world_SE3_ego.inverse(), EGO_FRAME),
                track_ids=tuple(f"d{i}" for i in range(len(boxes))),
                categories=tuple(
                    Category(n) if n in Category._value2member_map_ else category_from_nuscenes(n) for n in names
                ),
                scores=np.array([box["detection_score"] for box in boxes], dtype=float),
            )
        )
    return out
