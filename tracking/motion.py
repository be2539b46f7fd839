"""Static or dynamic: does a track's path move by more than its detector jitter explains?"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

from tracking.refine_config import ClassPrior

_MAD_TO_STD = 1.4826
_SIGNIFICANCE = 5.0  # spread over this many standard deviations of a window median is motion


class MotionKind(str, Enum):
    """How refinement models a track."""

    STATIC = "static"  # one world box for every frame
    DYNAMIC = "dynamic"  # one size, a smooth path


@dataclass(frozen=True)
class MotionEvidence:
    """The decision and what it rests on.

    Attributes:
        kind: static or dynamic.
        displacement_m: largest distance between two medians of consecutive boxes (windows of ``window``).
        jitter_m: robust standard deviation of the detector's position noise (from divided second
            differences, so smooth motion of any speed does not count as noise).
        threshold_m: the displacement above which the track is dynamic.
        speed_mps: displacement over the track's duration.
        window: boxes per median.
    """

    kind: MotionKind
    displacement_m: float
    jitter_m: float
    threshold_m: float
    speed_mps: float
    window: int


def classify_motion(times_s: np.ndarray, centers_xy: np.ndarray, prior: ClassPrior) -> MotionEvidence:
    """Decide static vs dynamic from the detected centres of one track.

    The positions are median-filtered over windows of up to 5 boxes; the track is dynamic when two window
    medians lie farther apart than both the class's ``static_max_displacement_m`` and five standard
    deviations of a window median under the measured jitter. Classes that never move are static.

    Args:
        times_s: (n,) increasing detection times.
        centers_xy: (n, 2) detected BEV centres.
        prior: the track's class prior.
    """
    times = np.asarray(times_s, dtype=np.float64)
    xy = np.asarray(centers_xy, dtype=np.float64)
    n = xy.shape[0]
    if n < 2:
        return MotionEvidence(MotionKind.STATIC, 0.0, 0.0, prior.static_max_displacement_m, 0.0, 1)
    jitter = _jitter_m(times, xy)
    window = int(np.clip(n // 4, 1, 5))
    medians = np.median(np.lib.stride_tricks.sliding_window_view(xy, window, axis=0), axis=-1)
    displacement = float(np.max(np.linalg.norm(medians[:, None, :] - medians[None, :, :], axis=-1)))
    threshold = max(prior.static_max_displacement_m, _SIGNIFICANCE * jitter / np.sqrt(window))
    kind = MotionKind.DYNAMIC if prior.can_move and displacement > threshold else MotionKind.STATIC
    speed = displacement / max(float(times[-1] - times[0]), 1e-6)
    return MotionEvidence(kind, displacement, jitter, threshold, speed, window)


def _jitter_m(times: np.ndarray, xy: np.ndarray) -> float:
    """Robust position noise: normalised divided second differences, MAD over both axes."""
    if xy.shape[0] < 3:
        return 0.0
    dt0, dt1 = np.diff(times)[:-1, None], np.diff(times)[1:, None]
    second = (xy[2:] - xy[1:-1]) / dt1 - (xy[1:-1] - xy[:-2]) / dt0
    noise_gain = np.sqrt(1.0 / dt1**2 + (1.0 / dt0 + 1.0 / dt1) ** 2 + 1.0 / dt0**2)  # std of `second` per unit noise
    return float(_MAD_TO_STD * np.median(np.abs(second / noise_gain)))
