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

Refinement of whole tracks against the clip's world-frame lidar (:mod:`tracking.refine`): static objects get
one world box, dynamic ones one size and a smooth path; gaps are filled, ends extended where the lidar sees the
object, weak tracks removed; :func:`resolve_track` re-runs one track under reviewer fixes::

    refined = refine_tracks(tracks, ClipLidar(timestamps_us, world_points, sensor_xyz_m), RefineConfig())
    fixed = resolve_track(refined[0], lidar, fixed={12: box7})  # one correction, the whole track follows

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
from tracking.lidar import ClipLidar
from tracking.motion import MotionEvidence, MotionKind, classify_motion
from tracking.refine import (
    RefinedTrack,
    refine_kept,
    refine_track,
    refine_tracks,
    remove_duplicates,
    resolve_track,
)
from tracking.refine_config import DEFAULT_CLASS_PRIORS, ClassPrior, RefineConfig
from tracking.run import FrameTracks, frames_of_tracks, track_clip
from tracking.types import BoxSource, Detections, Track, TrackedBox, TrackingMode, TrackState

__all__ = [
    "DEFAULT_CLASS_PARAMS",
    "DEFAULT_CLASS_PRIORS",
    "TWO_WHEELER_CLASSES",
    "VEHICLE_CLASSES",
    "AffinityKind",
    "BoxSource",
    "ClassParams",
    "ClassPrior",
    "ClipLidar",
    "Detections",
    "FrameTracks",
    "LifeCycle",
    "MotionEvidence",
    "MotionKind",
    "MotionModel",
    "OffboardConfig",
    "RefineConfig",
    "RefinedTrack",
    "SolverKind",
    "Track",
    "TrackState",
    "TrackedBox",
    "TrackerConfig",
    "TrackingMode",
    "classify_motion",
    "frames_of_tracks",
    "giou_3d",
    "giou_bev",
    "refine_kept",
    "refine_track",
    "refine_tracks",
    "remove_duplicates",
    "resolve_track",
    "track_clip",
]
