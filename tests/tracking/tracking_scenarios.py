"""Scripted tracking scenarios with known truth, in the style of nuscenes-devkit's tracking test scenarios.

An :class:`ObjectScript` is one object's true path (centre, yaw per frame), the frames where it exists
and the frames where the detector sees it. :func:`build` turns scripts into per-frame
:class:`tracking.Detections` plus truth ids per detection; :func:`mot_counts` scores tracks against the
truth with motmetrics (2 m centre-distance matching, as nuScenes' tracking evaluation).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import motmetrics as mm
import numpy as np

from calibration import Boxes3D
from tracking import Detections, Track, frames_of_tracks

PERIOD_US = 100_000  # 10 Hz
T0_US = 1_600_000_000_000_000
CAR_SIZE = (4.5, 1.9, 1.6)
PEDESTRIAN_SIZE = (0.7, 0.7, 1.8)
MATCH_DISTANCE_M = 2.0


@dataclass(frozen=True)
class ObjectScript:
    """One object's truth.

    Attributes:
        xy: (F, 2) true centre per frame (F = frames of the clip).
        yaw: (F,) true heading.
        exists: (F,) bool, the object is in the scene (truth for scoring).
        seen: (F,) bool, the detector reports it (subset of ``exists``).
        scores: (F,) detection scores.
        yaw_flips: (F,) bool, the detector reports the heading turned by pi.
    """

    truth_id: int
    label: str
    size: tuple[float, float, float]
    xy: np.ndarray
    yaw: np.ndarray
    exists: np.ndarray
    seen: np.ndarray
    scores: np.ndarray
    yaw_flips: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    z: float = 1.0

    def boxes(self) -> np.ndarray:
        """(F, 7) true boxes."""
        n = self.xy.shape[0]
        return np.column_stack([self.xy, np.full(n, self.z), np.tile(self.size, (n, 1)), self.yaw])


@dataclass(frozen=True)
class Scenario:
    frames: list[Detections]
    truth_ids: list[np.ndarray]  # per frame, (N,) truth id per detection (-1: false positive)
    objects: tuple[ObjectScript, ...]

    @property
    def n_frames(self) -> int:
        return len(self.frames)


def path(
    n_frames: int,
    start_xy: tuple[float, float],
    velocities_xy: np.ndarray | Sequence[float],
    *,
    yaw: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Centres (F, 2) and yaws (F,) of an object starting at ``start_xy`` with per-frame velocities.

    Args:
        velocities_xy: (2,) constant or (F, 2) per-frame velocity in m/s; frame k+1 = frame k + v_k * dt.
        yaw: (F,) headings; by default the direction of motion (kept while standing still).
    """
    dt = PERIOD_US * 1e-6
    v = np.broadcast_to(np.asarray(velocities_xy, dtype=np.float64), (n_frames, 2))
    xy = np.asarray(start_xy, dtype=np.float64) + np.concatenate([[[0.0, 0.0]], np.cumsum(v[:-1] * dt, axis=0)])
    if yaw is None:
        moving = np.hypot(v[:, 0], v[:, 1]) > 1e-9
        heading = np.arctan2(v[:, 1], v[:, 0])
        last = 0.0
        yaw = np.empty(n_frames)
        for k in range(n_frames):
            last = heading[k] if moving[k] else last
            yaw[k] = last
    return xy, np.asarray(yaw, dtype=np.float64)


def script(
    truth_id: int,
    label: str,
    xy: np.ndarray,
    yaw: np.ndarray,
    *,
    size: tuple[float, float, float] = CAR_SIZE,
    exists: np.ndarray | None = None,
    seen: np.ndarray | None = None,
    score: float | np.ndarray = 0.9,
    yaw_flips: np.ndarray | None = None,
) -> ObjectScript:
    n = xy.shape[0]
    exists = np.ones(n, dtype=bool) if exists is None else np.asarray(exists, dtype=bool)
    seen = exists.copy() if seen is None else np.asarray(seen, dtype=bool) & exists
    return ObjectScript(
        truth_id,
        label,
        size,
        xy,
        yaw,
        exists,
        seen,
        np.broadcast_to(np.asarray(score, dtype=np.float64), (n,)).copy(),
        np.zeros(n, dtype=bool) if yaw_flips is None else np.asarray(yaw_flips, dtype=bool),
    )


def frames_mask(n_frames: int, start: int, stop: int) -> np.ndarray:
    """(F,) bool, True for frames ``start <= k < stop``."""
    mask = np.zeros(n_frames, dtype=bool)
    mask[start:stop] = True
    return mask


@dataclass(frozen=True)
class FalsePositive:
    frame: int
    xy: tuple[float, float]
    score: float
    label: str = "car"


def build(
    objects: Sequence[ObjectScript],
    *,
    false_positives: Sequence[FalsePositive] = (),
    noise_m: float = 0.0,
    seed: int = 0,
    with_velocity: bool = False,
) -> Scenario:
    """Per-frame detections of the scripted objects (in truth-id order per frame), false positives last.

    Args:
        noise_m: std of Gaussian noise added to detected centres.
        with_velocity: give detections their true velocity (finite differences of the path).
    """
    rng = np.random.default_rng(seed)
    n_frames = objects[0].xy.shape[0]
    dt = PERIOD_US * 1e-6
    frames, truth_ids = [], []
    for k in range(n_frames):
        rows, velocities, scores, labels, ids = [], [], [], [], []
        for obj in objects:
            if not obj.seen[k]:
                continue
            box = obj.boxes()[k].copy()
            box[:2] += rng.normal(0.0, noise_m, 2) if noise_m > 0 else 0.0
            if obj.yaw_flips[k]:
                box[6] += np.pi
            rows.append(box)
            nxt = min(k + 1, n_frames - 1)
            prv = nxt - 1
            velocities.append((obj.xy[nxt] - obj.xy[prv]) / dt)
            scores.append(obj.scores[k])
            labels.append(obj.label)
            ids.append(obj.truth_id)
        for fp in false_positives:
            if fp.frame == k:
                rows.append(np.array([*fp.xy, 1.0, *CAR_SIZE, 0.0]))
                velocities.append(np.zeros(2))
                scores.append(fp.score)
                labels.append(fp.label)
                ids.append(-1)
        data = np.array(rows).reshape(-1, 7)
        velocity = np.array(velocities).reshape(-1, 2) if with_velocity else None
        frames.append(
            Detections(T0_US + k * PERIOD_US, Boxes3D(data, "world", velocity), np.array(scores), tuple(labels))
        )
        truth_ids.append(np.array(ids, dtype=np.int64))
    return Scenario(frames, truth_ids, tuple(objects))


@dataclass(frozen=True)
class MotCounts:
    num_switches: int
    num_fragmentations: int
    num_misses: int
    num_false_positives: int
    num_matches: int


def mot_counts(tracks: Sequence[Track], scenario: Scenario) -> MotCounts:
    """CLEAR-MOT counts of ``tracks`` against the scripted truth (objects where they exist)."""
    acc = mm.MOTAccumulator(auto_id=True)
    per_frame = frames_of_tracks(tracks, scenario.n_frames)
    for k, view in enumerate(per_frame):
        present = [o for o in scenario.objects if o.exists[k]]
        truth_xy = np.array([o.xy[k] for o in present]).reshape(-1, 2)
        hyp_xy = view.boxes.centers[:, :2]
        distances = mm.distances.norm2squared_matrix(truth_xy, hyp_xy, max_d2=MATCH_DISTANCE_M**2)
        acc.update([o.truth_id for o in present], view.track_ids.tolist(), distances)
    summary = mm.metrics.create().compute(
        acc, metrics=["num_switches", "num_fragmentations", "num_misses", "num_false_positives", "num_matches"]
    )
    row = summary.iloc[0]
    return MotCounts(*(int(row[name]) for name in MotCounts.__dataclass_fields__))


def truth_of_track(track: Track, scenario: Scenario) -> set[int]:
    """Truth ids of the detections a track took (interpolated frames ignored)."""
    return {
        int(scenario.truth_ids[f][d])
        for f, d in zip(track.frame_indices, track.detection_indices, strict=True)
        if d >= 0
    }
