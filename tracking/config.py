"""Tracker configuration: frozen dataclasses with defaults, per-class parameters as a tuple of pairs.

Per-class values (motion model, gates, thresholds, noise) live in :class:`ClassParams`; a
:class:`TrackerConfig` holds one per known class name plus a fallback for any other name. Defaults
follow SimpleTrack / Poly-MOT practice on nuScenes: GIoU affinity, two-stage association, CTRV for
vehicles and two-wheelers, constant velocity for pedestrians and static objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import Enum

from calibration import InputError

VEHICLE_CLASSES = ("car", "truck", "bus", "trailer", "construction_vehicle")
TWO_WHEELER_CLASSES = ("motorcycle", "bicycle")


class AffinityKind(str, Enum):
    """How a predicted track box and a detection are scored (higher is more alike)."""

    GIOU_BEV = "giou_bev"  # generalised IoU of the footprints, in [-1, 1]
    GIOU_3D = "giou_3d"  # generalised IoU of the upright boxes, in [-1, 1]
    CENTER_DISTANCE = "center_distance"  # minus the BEV distance (m) of the predicted track centre


class SolverKind(str, Enum):
    """How one association stage picks pairs."""

    HUNGARIAN = "hungarian"  # maximum number of admissible pairs, then maximum total affinity
    GREEDY = "greedy"  # best admissible pair first


class MotionModel(str, Enum):
    """Kalman motion model of a track (chosen by the class of its first detection)."""

    CV = "cv"  # constant velocity: x, y, z, yaw, l, w, h, vx, vy, vz
    CTRV = "ctrv"  # constant turn rate and velocity: x, y, z, yaw, l, w, h, speed, yaw_rate, vz


@dataclass(frozen=True)
class ClassParams:
    """Association and motion parameters of one class.

    Attributes:
        motion_model: Kalman model of tracks born with this class.
        gate_m: pairs whose BEV centres (predicted track vs detection) are farther apart are never
            compared; bounds the work of the IoU affinities.
        min_giou: smallest GIoU (BEV or 3D) accepted as a match of a confident detection.
        max_distance_m: largest centre distance accepted with :attr:`AffinityKind.CENTER_DISTANCE`.
        low_score_min_giou, low_score_max_distance_m: the same for low-score detections (second stage):
            stricter, because clutter is mostly low-score and a missed object would otherwise take it.
        stitch_distance_m: offboard stitching accepts two tracks whose motion-extrapolated ends agree
            within this distance.
        accel_std_mps2: process noise, horizontal acceleration.
        yaw_rate_std_radps: process noise of the CV model's heading (a random yaw rate per step).
        yaw_accel_std_radps2: process noise of the CTRV model's yaw rate.
        position_std_m, yaw_std_rad, size_std_m, velocity_std_mps: detection noise.
    """

    motion_model: MotionModel = MotionModel.CV
    gate_m: float = 6.0
    min_giou: float = -0.5
    max_distance_m: float = 2.0
    low_score_min_giou: float = 0.0
    low_score_max_distance_m: float = 1.0
    stitch_distance_m: float = 3.0
    accel_std_mps2: float = 2.0
    yaw_rate_std_radps: float = 0.5
    yaw_accel_std_radps2: float = 0.5
    position_std_m: float = 0.3
    yaw_std_rad: float = 0.2
    size_std_m: float = 0.2
    velocity_std_mps: float = 1.0

    def __post_init__(self) -> None:
        positive = (
            self.gate_m,
            self.max_distance_m,
            self.low_score_max_distance_m,
            self.stitch_distance_m,
            self.accel_std_mps2,
            self.yaw_rate_std_radps,
            self.yaw_accel_std_radps2,
            self.position_std_m,
            self.yaw_std_rad,
            self.size_std_m,
            self.velocity_std_mps,
        )
        if min(positive) <= 0:
            raise InputError(f"ClassParams distances and noise levels must be positive: {self}")
        if not (-1.0 <= self.min_giou <= 1.0 and -1.0 <= self.low_score_min_giou <= 1.0):
            raise InputError(f"ClassParams GIoU thresholds must lie in [-1, 1]: {self}")
        object.__setattr__(self, "motion_model", MotionModel(self.motion_model))


_VEHICLE = ClassParams(
    MotionModel.CTRV,
    gate_m=10.0,
    max_distance_m=4.0,
    low_score_max_distance_m=2.0,
    stitch_distance_m=4.0,
    accel_std_mps2=3.0,
    yaw_accel_std_radps2=0.5,
    position_std_m=0.4,
    yaw_std_rad=0.15,
    size_std_m=0.3,
)
_LARGE_VEHICLE = replace(
    _VEHICLE, gate_m=12.0, max_distance_m=5.0, low_score_max_distance_m=2.5, stitch_distance_m=5.0, size_std_m=0.5
)
_TWO_WHEELER = replace(
    _VEHICLE, gate_m=8.0, max_distance_m=3.0, low_score_max_distance_m=1.5, stitch_distance_m=3.0, size_std_m=0.2
)
_PEDESTRIAN = ClassParams(
    MotionModel.CV,
    gate_m=3.0,
    max_distance_m=1.5,
    low_score_min_giou=-0.2,  # small boxes: a 0.3 m prediction error already costs much overlap
    low_score_max_distance_m=0.8,
    stitch_distance_m=2.0,
    accel_std_mps2=1.5,
    yaw_rate_std_radps=1.0,
    position_std_m=0.2,
    yaw_std_rad=0.4,
    size_std_m=0.1,
)
_STATIC = ClassParams(
    MotionModel.CV,
    gate_m=2.0,
    max_distance_m=1.0,
    low_score_max_distance_m=0.5,
    stitch_distance_m=1.0,
    accel_std_mps2=0.5,
    yaw_rate_std_radps=0.1,
    position_std_m=0.2,
    yaw_std_rad=0.3,
    size_std_m=0.1,
)

DEFAULT_CLASS_PARAMS: tuple[tuple[str, ClassParams], ...] = (
    ("car", _VEHICLE),
    ("truck", _LARGE_VEHICLE),
    ("bus", _LARGE_VEHICLE),
    ("trailer", _LARGE_VEHICLE),
    ("construction_vehicle", _LARGE_VEHICLE),
    ("motorcycle", _TWO_WHEELER),
    ("bicycle", _TWO_WHEELER),
    ("pedestrian", _PEDESTRIAN),
    ("traffic_cone", _STATIC),
    ("barrier", _STATIC),
)


@dataclass(frozen=True)
class LifeCycle:
    """Birth and death of live tracks in one pass.

    Attributes:
        min_hits: consecutive matched frames (the birth frame included) that confirm a track.
        max_tentative_misses: a tentative track dies after more consecutive misses than this.
        max_age_s: a confirmed track dies when its last match is older than this (None: no limit).
        max_age_frames: ... or when it has missed more consecutive frames than this (None: no limit).
    """

    min_hits: int = 3
    max_tentative_misses: int = 0
    max_age_s: float | None = 1.0
    max_age_frames: int | None = None

    def __post_init__(self) -> None:
        if self.min_hits < 1 or self.max_tentative_misses < 0:
            raise InputError(f"LifeCycle needs min_hits >= 1 and max_tentative_misses >= 0: {self}")
        if (self.max_age_s is not None and self.max_age_s < 0) or (
            self.max_age_frames is not None and self.max_age_frames < 0
        ):
            raise InputError(f"LifeCycle max ages must be non-negative: {self}")


@dataclass(frozen=True)
class OffboardConfig:
    """The offboard stages after the two passes.

    Attributes:
        life: life cycle of both passes (a longer memory than online, so occluded objects keep their id).
        merge_min_share: a forward and a backward tracklet are one object when they share at least this
            fraction of the shorter one's detections.
        stitch_max_gap_s: the longest gap (end of one track to start of the next) that stitching joins.
        interpolate_max_gap_s: gaps up to this long are filled with interpolated boxes (None: all gaps).
        split_jump_m: a track is cut between two of its detections farther apart than this whose speed is
            more than ``split_speed_ratio`` times the speed of the neighbouring steps (plus 1 m/s): a jump to
            another object (a parked car's track taking over its neighbour's detections), not motion.
        split_speed_ratio: see ``split_jump_m``.
        min_detections: tracks with fewer detected boxes are removed.
        min_track_score: tracks with a lower track score (mean detection score) are removed.
    """

    life: LifeCycle = field(default_factory=lambda: LifeCycle(min_hits=3, max_age_s=3.0))
    merge_min_share: float = 0.5
    stitch_max_gap_s: float = 5.0
    interpolate_max_gap_s: float | None = None
    split_jump_m: float = 2.0
    split_speed_ratio: float = 3.0
    min_detections: int = 3
    min_track_score: float = 0.25

    def __post_init__(self) -> None:
        if not 0.0 < self.merge_min_share <= 1.0:
            raise InputError(f"OffboardConfig.merge_min_share must lie in (0, 1], got {self.merge_min_share}")
        if self.stitch_max_gap_s < 0 or (self.interpolate_max_gap_s is not None and self.interpolate_max_gap_s < 0):
            raise InputError(f"OffboardConfig gaps must be non-negative: {self}")
        if self.min_detections < 1:
            raise InputError(f"OffboardConfig.min_detections must be >= 1, got {self.min_detections}")


@dataclass(frozen=True)
class TrackerConfig:
    """Everything :func:`tracking.track_clip` needs besides the detections.

    Attributes:
        affinity: pair score used by both association stages.
        solver: assignment algorithm of both stages.
        high_score_threshold: detections at least this confident are associated first (stage 1) and may
            start tracks.
        low_score_threshold: detections below this are ignored; those in between only extend tracks
            that are already confirmed (stage 2, ByteTrack / SimpleTrack).
        class_params: ``(class name, params)`` pairs; names must be unique.
        fallback_params: params of any class not listed.
        class_groups: classes in one group may be matched with each other (e.g. car and truck, which
            detectors confuse); any other pair only with its own class.
        online: life cycle of :attr:`TrackingMode.ONLINE`.
        offboard: the offboard stages (and their life cycle).
    """

    affinity: AffinityKind = AffinityKind.GIOU_BEV
    solver: SolverKind = SolverKind.HUNGARIAN
    high_score_threshold: float = 0.5
    low_score_threshold: float = 0.1
    class_params: tuple[tuple[str, ClassParams], ...] = DEFAULT_CLASS_PARAMS
    fallback_params: ClassParams = field(default_factory=ClassParams)
    class_groups: tuple[tuple[str, ...], ...] = (VEHICLE_CLASSES, TWO_WHEELER_CLASSES)
    online: LifeCycle = field(default_factory=LifeCycle)
    offboard: OffboardConfig = field(default_factory=OffboardConfig)

    def __post_init__(self) -> None:
        object.__setattr__(self, "affinity", AffinityKind(self.affinity))
        object.__setattr__(self, "solver", SolverKind(self.solver))
        if not 0.0 <= self.low_score_threshold <= self.high_score_threshold:
            raise InputError(
                f"need 0 <= low_score_threshold <= high_score_threshold, got "
                f"{self.low_score_threshold} and {self.high_score_threshold}"
            )
        names = [name for name, _ in self.class_params]
        if len(set(names)) != len(names):
            raise InputError(f"TrackerConfig.class_params names must be unique, got {names}")
        grouped = [name for group in self.class_groups for name in group]
        if len(set(grouped)) != len(grouped):
            raise InputError(f"a class may belong to one class group only, got {self.class_groups}")

    def params_for(self, label: str) -> ClassParams:
        """The params of class ``label`` (the fallback when it is not listed)."""
        for name, params in self.class_params:
            if name == label:
                return params
        return self.fallback_params

    def with_class_params(self, label: str, params: ClassParams) -> TrackerConfig:
        """A copy with ``label``'s params replaced (or added)."""
        others = tuple((name, p) for name, p in self.class_params if name != label)
        return replace(self, class_params=(*others, (label, params)))

    def with_class_changes(self, labels: tuple[str, ...], **changes: object) -> TrackerConfig:
        """A copy where the params of each of ``labels`` (listed or not) have ``changes`` applied, e.g.
        ``config.with_class_changes(VEHICLE_CLASSES, min_giou=0.0)``; an unknown field name fails."""
        config = self
        for label in labels:
            config = config.with_class_params(label, replace(config.params_for(label), **changes))
        return config

    def compatible(self, label_a: str, label_b: str) -> bool:
        """Whether a track of class ``label_a`` may be matched with a detection of class ``label_b``."""
        if label_a == label_b:
            return True
        return any(label_a in group and label_b in group for group in self.class_groups)
