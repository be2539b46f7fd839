"""Offboard multi-object tracking of 3D boxes: Kalman tracks, two-stage association, bidirectional merge.

Entry point :func:`track_clip`; inputs are per-frame :class:`Detections` (boxes in one fixed frame,
normally ``world``), outputs :class:`Track` objects::

    tracks = track_clip(detections_per_frame, TrackerConfig(), TrackingMode.OFFBOARD)
    for view in frames_of_tracks(tracks, len(detections_per_frame)):  # per-frame boxes with track ids
        ...

Stages (modules): per-frame pass with Kalman CV / CTRV models (:mod:`tracking.kalman`), GIoU or centre
distance affinities (:mod:`tracking.affinity`), Hungarian or greedy assignment (:mod:`tracking.assignment`),
two-stage association and the track life cycle (:mod:`tracking.tracker`); offboard: forward/backward
merge, stitching (:mod:`tracking.offboard`), gap interpolation and label vote (:mod:`tracking.assemble`).
Uses only ``calibration``, numpy, scipy and numba.
"""

from tracking.affinity import giou_3d, giou_bev
from tracking.config import (
    DEFAULT_CLASS_PARAMS,
    TWO_WHEELER_CLASSES,
    VEHICLE_CLASSES,
    AffinityKind,
    ClassParams,
    LifeCycle,
    MotionModel,
    OffboardConfig,
    SolverKind,
    TrackerConfig,
)
from tracking.run import FrameTracks, frames_of_tracks, track_clip
from tracking.types import BoxSource, Detections, Track, TrackedBox, TrackingMode, TrackState

__all__ = [
    "DEFAULT_CLASS_PARAMS",
    "TWO_WHEELER_CLASSES",
    "VEHICLE_CLASSES",
    "AffinityKind",
    "BoxSource",
    "ClassParams",
    "Detections",
    "FrameTracks",
    "LifeCycle",
    "MotionModel",
    "OffboardConfig",
    "SolverKind",
    "Track",
    "TrackState",
    "TrackedBox",
    "TrackerConfig",
    "TrackingMode",
    "frames_of_tracks",
    "giou_3d",
    "giou_bev",
    "track_clip",
]
