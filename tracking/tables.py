"""Array views of the inputs shared by the passes: per-class parameter columns and per-frame detections."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tracking.config import MotionModel, TrackerConfig
from tracking.types import Detections


@dataclass(frozen=True, eq=False)
class ClassTable:
    """:class:`tracking.config.ClassParams` of C class names as (C,) columns, indexed by class index.

    Attributes:
        labels: C class names; a detection's class index is its label's position here.
        noise_std: (C, 4) detection noise ``position_m, yaw_rad, size_m, velocity_mps``.
        turn_std: (C,) yaw-rate std (CV) or yaw-acceleration std (CTRV).
        compatible: (C, C) bool, a track of class i may match a detection of class j.
    """

    labels: tuple[str, ...]
    is_ctrv: np.ndarray
    gate_m: np.ndarray
    min_giou: np.ndarray
    max_distance_m: np.ndarray
    low_score_min_giou: np.ndarray
    low_score_max_distance_m: np.ndarray
    stitch_distance_m: np.ndarray
    accel_std_mps2: np.ndarray
    turn_std: np.ndarray
    noise_std: np.ndarray
    compatible: np.ndarray

    @classmethod
    def build(cls, labels: Sequence[str], config: TrackerConfig) -> ClassTable:
        names = tuple(sorted(set(labels)))
        params = [config.params_for(name) for name in names]

        def column(attr: str) -> np.ndarray:
            return np.array([getattr(p, attr) for p in params], dtype=np.float64).reshape(-1)

        is_ctrv = np.array([p.motion_model is MotionModel.CTRV for p in params], dtype=bool).reshape(-1)
        return cls(
            labels=names,
            is_ctrv=is_ctrv,
            gate_m=column("gate_m"),
            min_giou=column("min_giou"),
            max_distance_m=column("max_distance_m"),
            low_score_min_giou=column("low_score_min_giou"),
            low_score_max_distance_m=column("low_score_max_distance_m"),
            stitch_distance_m=column("stitch_distance_m"),
            accel_std_mps2=column("accel_std_mps2"),
            turn_std=np.where(is_ctrv, column("yaw_accel_std_radps2"), column("yaw_rate_std_radps")),
            noise_std=np.column_stack(
                [column("position_std_m"), column("yaw_std_rad"), column("size_std_m"), column("velocity_std_mps")]
            ).reshape(-1, 4),
            compatible=np.array([[config.compatible(a, b) for b in names] for a in names], dtype=bool).reshape(
                len(names), len(names)
            ),
        )

    def indices(self, labels: Sequence[str]) -> np.ndarray:
        """(N,) int64 class indices of ``labels`` (all must be in the table)."""
        lookup = {name: i for i, name in enumerate(self.labels)}
        return np.array([lookup[label] for label in labels], dtype=np.int64).reshape(-1)


@dataclass(frozen=True, eq=False)
class FrameArrays:
    """One frame of detections as arrays (a pass's input); views into a :class:`ClipArrays`.

    Attributes:
        boxes: (N, 7) ``x, y, z, l, w, h, yaw``.
        velocity: (N, 2) ``vx, vy``, NaN rows where unknown.
        scores: (N,).
        classes: (N,) int64 class indices into a :class:`ClassTable`.
        candidates: (C,) indices of the detections the tracker uses: first the ``n_high`` confident ones
            (score >= high threshold), then the low-score ones (score >= low threshold), each in input order.
        candidate_boxes: (C, 7) and candidate_classes: (C,) of those detections.
    """

    timestamp_us: int
    boxes: np.ndarray
    velocity: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    candidates: np.ndarray
    n_high: int
    candidate_boxes: np.ndarray
    candidate_classes: np.ndarray


@dataclass(frozen=True, eq=False)
class ClipArrays:
    """All detections of a clip, flat: detection ``i`` of frame ``k`` has key ``offsets[k] + i``.

    Attributes:
        frame_name: coordinate frame of the boxes.
        timestamps_us: (F,) int64 frame times.
        offsets: (F + 1,) int64 first key of each frame (and the total at the end).
        boxes: (D, 7), velocity: (D, 2) (NaN where unknown), scores: (D,), classes: (D,) int64, by key.
    """

    frame_name: str
    timestamps_us: np.ndarray
    offsets: np.ndarray
    boxes: np.ndarray
    velocity: np.ndarray
    scores: np.ndarray
    classes: np.ndarray

    @classmethod
    def build(cls, frames: Sequence[Detections], table: ClassTable, frame_name: str) -> ClipArrays:
        counts = np.array([len(f) for f in frames], dtype=np.int64).reshape(-1)
        unknown = np.full((0, 2), np.nan)
        return cls(
            frame_name,
            np.array([f.timestamp_us for f in frames], dtype=np.int64).reshape(-1),
            np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            np.concatenate([np.zeros((0, 7)), *(f.boxes.data for f in frames)]),
            np.concatenate(
                [
                    unknown,
                    *(np.full((len(f), 2), np.nan) if f.boxes.velocity is None else f.boxes.velocity for f in frames),
                ]
            ),
            np.concatenate([np.zeros(0), *(f.scores for f in frames)]),
            table.indices([label for f in frames for label in f.labels]),
        )

    def keys(self, frame_indices: np.ndarray, detection_indices: np.ndarray) -> np.ndarray:
        """(R,) keys of detections given by frame and index within the frame."""
        return self.offsets[frame_indices] + detection_indices

    def frame_arrays(self, config: TrackerConfig, *, time_reversed: bool = False) -> list[FrameArrays]:
        """Per-frame views for a pass, in time order, or for a backward pass: frames in reverse order with
        time and velocities negated (so the pass runs forward in its own time)."""
        n_frames = self.timestamps_us.shape[0]
        frame_of_key = np.repeat(np.arange(n_frames), np.diff(self.offsets))
        high = self.scores >= config.high_score_threshold
        usable = self.scores >= config.low_score_threshold
        # Candidates sorted by (frame, low score after high, key): each frame's candidates are one run.
        candidate_keys = np.flatnonzero(usable)
        candidate_keys = candidate_keys[
            np.lexsort((candidate_keys, ~high[candidate_keys], frame_of_key[candidate_keys]))
        ]
        bounds = np.searchsorted(frame_of_key[candidate_keys], np.arange(n_frames + 1))
        n_high = np.bincount(frame_of_key[high], minlength=n_frames)
        local = candidate_keys - self.offsets[frame_of_key[candidate_keys]]
        candidate_boxes, candidate_classes = self.boxes[candidate_keys], self.classes[candidate_keys]
        velocity = -self.velocity if time_reversed else self.velocity
        sign = -1 if time_reversed else 1
        frames = []
        for k in range(n_frames):
            a, b = self.offsets[k], self.offsets[k + 1]
            c, d = bounds[k], bounds[k + 1]
            frames.append(
                FrameArrays(
                    sign * int(self.timestamps_us[k]),
                    self.boxes[a:b],
                    velocity[a:b],
                    self.scores[a:b],
                    self.classes[a:b],
                    local[c:d],
                    int(n_high[k]),
                    candidate_boxes[c:d],
                    candidate_classes[c:d],
                )
            )
        return frames[::-1] if time_reversed else frames
