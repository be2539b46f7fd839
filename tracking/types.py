"""Value types of the tracker: per-frame :class:`Detections` in, :class:`Track` out, and the enums.

Class labels are plain ``str`` (nuScenes detection names: ``car``, ``pedestrian``, ...). A ``str`` Enum
such as ``autolabel``'s ``Category`` may be passed; its value is stored, so labels in and out of the
tracker are plain strings (``str()`` of a mixed-in Enum member is ``"Category.CAR"``, not ``"car"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np

from calibration import Boxes3D, InputError


class TrackingMode(str, Enum):
    """How :func:`tracking.track_clip` runs."""

    ONLINE = "online"  # forward pass only; reports confirmed tracks' boxes as an online tracker would
    OFFBOARD = "offboard"  # forward + backward passes merged, stitched, gap-filled and filtered


class TrackState(str, Enum):
    """Life cycle of a live track: tentative -> confirmed <-> lost -> dead."""

    TENTATIVE = "tentative"  # born, not yet enough consecutive hits
    CONFIRMED = "confirmed"  # matched in its latest frame and confirmed
    LOST = "lost"  # confirmed earlier, missed since (coasting on its motion model)
    DEAD = "dead"  # missed for too long (or never confirmed); removed from the live set


class BoxSource(str, Enum):
    """Where a track's box of one frame comes from."""

    DETECTED = "detected"  # a detection associated to the track in that frame
    INTERPOLATED = "interpolated"  # filled in a gap between two detected frames
    REFINED = "refined"  # set by a later refinement stage (not produced by the tracker)


_BOX_SOURCES: dict[str, BoxSource] = {source.value: source for source in BoxSource}  # str Enum members hash as str


def plain_label(label: str) -> str:
    """The ``str`` value of a class label (an Enum member's value, else the string itself)."""
    return str(label.value) if isinstance(label, Enum) else str(label)


def _frozen(values: np.ndarray, dtype: type) -> np.ndarray:
    array = np.array(values, dtype=dtype, copy=True)
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class Detections:
    """The detector's output for one frame.

    Attributes:
        timestamp_us: capture time of the frame.
        boxes: N boxes in one fixed frame for the whole clip (normally ``world``); the optional
            velocity (N, 2) in m/s may hold NaN rows where unknown.
        scores: (N,) confidences in [0, 1].
        labels: N class names.
    """

    timestamp_us: int
    boxes: Boxes3D
    scores: np.ndarray
    labels: tuple[str, ...]

    def __post_init__(self) -> None:
        scores = _frozen(np.asarray(self.scores).reshape(-1), np.float64)
        labels = tuple(plain_label(label) for label in self.labels)
        n = len(self.boxes)
        if scores.shape != (n,) or len(labels) != n:
            raise InputError(f"Detections: {n} boxes but {scores.size} scores and {len(labels)} labels")
        if not np.all(np.isfinite(scores)):
            raise InputError("Detections: scores must be finite")
        object.__setattr__(self, "timestamp_us", int(self.timestamp_us))
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "labels", labels)

    def __len__(self) -> int:
        return len(self.boxes)

    @classmethod
    def empty(cls, timestamp_us: int, frame: str) -> Detections:
        return cls(timestamp_us, Boxes3D.empty(frame), np.zeros(0), ())


@dataclass(frozen=True, eq=False)
class TrackedBox:
    """One frame of a track (a row of :class:`Track`'s arrays)."""

    frame_index: int
    timestamp_us: int
    box: np.ndarray  # (7,) x, y, z, l, w, h, yaw
    velocity: np.ndarray  # (2,) vx, vy in m/s
    score: float
    source: BoxSource
    detection_index: int  # index into that frame's Detections; -1 unless detected


@dataclass(frozen=True, eq=False)
class Track:
    """One object over time: K frames in increasing order (not necessarily contiguous).

    Attributes:
        track_id: unique within one :func:`tracking.track_clip` result.
        label: class by score-weighted vote of its detections.
        score: track-level confidence (mean score of its detected boxes).
        frame_indices: (K,) int64 indices into the clip's frame sequence, strictly increasing.
        timestamps_us: (K,) int64.
        boxes: K boxes with (K, 2) velocity, in the detections' frame.
        scores: (K,) per-box confidence (detection score, interpolated across gaps).
        sources: K :class:`BoxSource` values.
        detection_indices: (K,) int64 index into each frame's :class:`Detections`, -1 where not detected.
    """

    track_id: int
    label: str
    score: float
    frame_indices: np.ndarray
    timestamps_us: np.ndarray
    boxes: Boxes3D
    scores: np.ndarray
    sources: tuple[BoxSource, ...]
    detection_indices: np.ndarray

    def __post_init__(self) -> None:
        frames = _frozen(self.frame_indices, np.int64)
        k = frames.shape[0]
        if frames.ndim != 1 or np.any(np.diff(frames) <= 0):
            raise InputError(f"Track {self.track_id}: frame indices must be strictly increasing")
        if self.boxes.velocity is None:
            raise InputError(f"Track {self.track_id}: boxes need a velocity")
        for name in ("timestamps_us", "scores", "detection_indices"):
            dtype = np.float64 if name == "scores" else np.int64
            array = _frozen(getattr(self, name), dtype)
            if array.shape != (k,):
                raise InputError(f"Track {self.track_id}: {name} must have shape ({k},), got {array.shape}")
            object.__setattr__(self, name, array)
        if len(self.boxes) != k or len(self.sources) != k:
            raise InputError(
                f"Track {self.track_id}: {k} frames but {len(self.boxes)} boxes, {len(self.sources)} sources"
            )
        object.__setattr__(self, "frame_indices", frames)
        object.__setattr__(self, "label", plain_label(self.label))
        object.__setattr__(self, "sources", tuple(map(_BOX_SOURCES.__getitem__, self.sources)))

    def __len__(self) -> int:
        return int(self.frame_indices.shape[0])

    @property
    def first_frame(self) -> int:
        return int(self.frame_indices[0])

    @property
    def last_frame(self) -> int:
        return int(self.frame_indices[-1])

    @property
    def num_detected(self) -> int:
        return sum(s is BoxSource.DETECTED for s in self.sources)

    def states(self) -> tuple[TrackedBox, ...]:
        """The K frames as :class:`TrackedBox` values."""
        velocity = self.boxes.velocity
        assert velocity is not None
        return tuple(
            TrackedBox(
                int(self.frame_indices[i]),
                int(self.timestamps_us[i]),
                self.boxes.data[i],
                velocity[i],
                float(self.scores[i]),
                self.sources[i],
                int(self.detection_indices[i]),
            )
            for i in range(len(self))
        )

    def index_of(self, frame_index: int) -> int | None:
        """Row of ``frame_index`` in this track's arrays, or None when the track has no box there."""
        i = int(np.searchsorted(self.frame_indices, frame_index))
        return i if i < len(self) and self.frame_indices[i] == frame_index else None


def frames_in_order(frames: Sequence[Detections]) -> str:
    """Check that a clip's detections share one coordinate frame and strictly increase in time.

    Returns:
        The boxes' coordinate frame name (``world`` when the clip is empty).
    """
    if not frames:
        return "world"
    frame = frames[0].boxes.frame
    if any(f.boxes.frame != frame for f in frames):
        raise InputError(f"all detections must be in one frame, got {sorted({f.boxes.frame for f in frames})}")
    times = np.array([f.timestamp_us for f in frames], dtype=np.int64)
    if np.any(np.diff(times) <= 0):
        raise InputError("detection frames must have strictly increasing timestamps")
    return frame
