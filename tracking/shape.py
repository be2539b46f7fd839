"""Box shape from an object's points: L-shape orientation, ground height, and visibility-aware extents.

Everything works in the object frame (x along the heading, y to the left; see :mod:`calibration.boxes`)::

                 left face (+y)
             +-------------------+
   rear face |         o ---> x  | front face        a face is *observed* when the sensor was outside
     (-x)    |         |         |    (+x)           its plane (it could see it) and points hug it
             +---------|---------+
                 right face (-y)

A face counts as observed only when its points spread along it (at least ``min_face_span_fraction`` of the
box there), so the corner of a neighbouring face does not pass for it; its plane is a low quantile of its
points (range noise spreads them), an unobserved end is the robust extreme of all points. Extents the points
fully measure are taken as measured: both faces of an axis observed, or a face *parallel* to the axis
observed (a visible side face spans the whole length; not trusted for round objects of uncertain heading).
Otherwise the measured extent is only a lower bound: the size is the class prior's mean given that bound
(a truncated normal), and the box grows away from the observed face, so it stays anchored where the sensor
saw it (a car seen only from behind keeps its rear face and a prior length).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import label
from scipy.special import erfcx

REAR, FRONT, RIGHT, LEFT = 0, 1, 2, 3  # faces: 2 * axis + (0: low end, 1: high end)
_MIN_EXTENT_M = 0.05
_MIN_CLUSTER_CELL_M, _MAX_CLUSTER_CELL_M = 0.2, 0.6
_FACE_QUANTILE = 0.2  # an observed face's plane: this quantile of its points (range noise spreads them)


@dataclass(frozen=True)
class FitParams:
    """Parameters of :func:`fit_footprint` (see :class:`tracking.RefineConfig` for their meaning)."""

    min_points: int = 10
    min_face_points: int = 4
    min_face_span_fraction: float = 0.3
    face_tolerance_m: float = 0.15
    visibility_margin_m: float = 0.3
    trim: float = 0.01
    max_trim_points: int = 5
    anchor_span_fraction: float = 0.85
    parallel_faces_complete: bool = True  # off for round objects of uncertain heading (pedestrians, cones)


@dataclass(frozen=True, eq=False)
class FootprintFit:
    """A footprint fitted in the object frame.

    Attributes:
        center_xy: (2,) centre of the fitted footprint in the object frame.
        size_lw: (2,) length and width.
        observed: (4,) bool per face (``REAR, FRONT, RIGHT, LEFT``).
        anchored: (2,) bool: the points fix the centre along x / y.
        complete: (2,) bool: the points measure the whole extent along x / y.
        num_points: points used.
    """

    center_xy: np.ndarray
    size_lw: np.ndarray
    observed: np.ndarray
    anchored: np.ndarray
    complete: np.ndarray
    num_points: int


def truncated_prior_mean(lower_bound: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``E[X | X >= lower_bound]`` for ``X ~ N(mean, std^2)``, elementwise: the prior completed by a bound.

    Far below the mean this is the mean; near or above it the bound pushes it up (always >= the bound).
    """
    alpha = (np.asarray(lower_bound, dtype=np.float64) - mean) / std
    hazard = np.sqrt(2.0 / np.pi) / erfcx(alpha / np.sqrt(2.0))  # phi(alpha) / (1 - Phi(alpha)), stable
    return np.maximum(mean + std * hazard, lower_bound)


def fit_footprint(
    xy: np.ndarray,
    point_frames: np.ndarray,
    sensor_xy: np.ndarray,
    prior_mean_lw: np.ndarray,
    prior_std_lw: np.ndarray,
    fixed_lw: np.ndarray | None = None,
    params: FitParams = FitParams(),
) -> FootprintFit:
    """Fit length, width and centre to object-frame BEV points seen from known sensor positions.

    Args:
        xy: (N, 2) object points in the object frame (ground removed).
        point_frames: (N,) row of ``sensor_xy`` each point was seen from.
        sensor_xy: (S, 2) sensor positions in the object frame.
        prior_mean_lw, prior_std_lw: (2,) class prior of length and width.
        fixed_lw: (2,) size to keep (only the centre is fitted), or None.
    """
    n = xy.shape[0]
    if n < params.min_points:
        size = np.asarray(prior_mean_lw if fixed_lw is None else fixed_lw, dtype=np.float64)
        no = np.zeros(2, dtype=bool)
        return FootprintFit(np.zeros(2), size, np.zeros(4, dtype=bool), no, no, n)
    lo, hi = robust_extremes(xy, params.trim, params.max_trim_points)
    extent_scale = np.asarray(prior_mean_lw if fixed_lw is None else fixed_lw, dtype=np.float64)
    observed = np.zeros(4, dtype=bool)
    for axis in (0, 1):
        coord, sensor = xy[:, axis], sensor_xy[:, axis]
        for side, sign in ((0, -1.0), (1, 1.0)):
            edge = hi[axis] if side else lo[axis]
            sees = sign * (sensor - edge) > params.visibility_margin_m  # the sensor is outside the face's plane
            on_face = sees[point_frames] & (np.abs(coord - edge) <= params.face_tolerance_m)
            across = xy[on_face, 1 - axis]  # a face, not the corner of its neighbour: its points spread along it
            spread = float(np.ptp(across)) if across.shape[0] else 0.0
            observed[2 * axis + side] = (
                across.shape[0] >= params.min_face_points
                and spread >= params.min_face_span_fraction * extent_scale[1 - axis]
            )
            if observed[2 * axis + side]:  # the face's plane: a low quantile of its noisy points, not an extreme
                face = np.sort(coord[on_face])
                plane = face[round((1.0 - _FACE_QUANTILE if side else _FACE_QUANTILE) * (face.shape[0] - 1))]
                (hi if side else lo)[axis] = plane
    parallel = params.parallel_faces_complete
    complete = np.array(
        [
            (observed[REAR] and observed[FRONT]) or (parallel and (observed[RIGHT] or observed[LEFT])),
            (observed[RIGHT] and observed[LEFT]) or (parallel and (observed[REAR] or observed[FRONT])),
        ]
    )
    extent = np.maximum(hi - lo, _MIN_EXTENT_M)
    if fixed_lw is not None:
        size = np.asarray(fixed_lw, dtype=np.float64)
    else:
        size = np.where(complete, extent, truncated_prior_mean(extent, prior_mean_lw, prior_std_lw))
    center = (lo + hi) / 2.0
    anchored = np.zeros(2, dtype=bool)
    for axis in (0, 1):
        low, high = observed[2 * axis], observed[2 * axis + 1]
        if low and not high:
            center[axis] = lo[axis] + size[axis] / 2.0
        elif high and not low:
            center[axis] = hi[axis] - size[axis] / 2.0
        anchored[axis] = low or high or (complete[axis] and extent[axis] >= params.anchor_span_fraction * size[axis])
    return FootprintFit(center, size, observed, anchored, complete, n)


def robust_extremes(values: np.ndarray, trim: float, max_trim_points: int) -> tuple[np.ndarray, np.ndarray]:
    """(D,) low and high extremes of (N, D) values, each the k-th from its end, ``k = clip(trim N, 1, max)``.

    A count rather than a quantile: an end that only a few points reach (the far edge of a face seen
    head-on) is not cut back by the trimming of a dense other end.
    """
    n = values.shape[0]
    k = int(np.clip(np.ceil(trim * n), 1, max(max_trim_points, 1)))
    ordered = np.sort(values, axis=0)
    return ordered[k - 1].copy(), ordered[n - k].copy()


def lshape_yaw_rad(
    xy: np.ndarray, *, coarse_step_deg: float = 2.0, fine_step_deg: float = 0.2, max_points: int = 400
) -> float:
    """Footprint orientation in [0, pi/2) by the L-shape variance criterion (Zhang et al. 2017).

    For each angle the points are projected on the rotated axes; each point belongs to the nearer of the
    rectangle's edges (per axis the nearer of its two ends), and the angle minimising the summed variance
    of those distances wins: the faces hug the edges. Coarse search over [0, 90) degrees, then a fine one.

    Args:
        xy: (N, 2) BEV points (N >= 3); more than ``max_points`` are evenly subsampled.
    """
    pts = np.asarray(xy, dtype=np.float64)
    if pts.shape[0] > max_points:
        pts = pts[np.linspace(0, pts.shape[0] - 1, max_points).astype(np.int64)]
    pts = pts - pts.mean(axis=0)
    coarse = np.deg2rad(np.arange(0.0, 90.0, coarse_step_deg))
    best = coarse[np.argmin(_lshape_cost(pts, coarse))]
    fine = best + np.deg2rad(np.arange(-coarse_step_deg, coarse_step_deg + 1e-9, fine_step_deg))
    return float(np.mod(fine[np.argmin(_lshape_cost(pts, fine))], np.pi / 2.0))


def _lshape_cost(pts: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """(A,) summed variance of the points' distances to their nearest edges, per angle."""
    c, s = np.cos(angles), np.sin(angles)
    p1 = pts[:, :1] * c + pts[:, 1:] * s  # (N, A)
    p2 = -pts[:, :1] * s + pts[:, 1:] * c
    d1 = np.minimum(p1 - p1.min(axis=0), p1.max(axis=0) - p1)
    d2 = np.minimum(p2 - p2.min(axis=0), p2.max(axis=0) - p2)
    first = d1 <= d2
    return _masked_variance(d1, first) + _masked_variance(d2, ~first)


def _masked_variance(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    count = np.maximum(mask.sum(axis=0), 1)
    mean = (values * mask).sum(axis=0) / count
    return (((values - mean) ** 2) * mask).sum(axis=0) / count


def object_cluster_mask(xy: np.ndarray, half_lw: np.ndarray, *, min_inside: float = 0.5) -> np.ndarray:
    """(N,) bool: the points of the BEV clusters that belong to the box, not to a neighbour in its margin.

    Points are rasterised into cells and split into 8-connected clusters; a cluster is kept when at least
    ``min_inside`` of its points lie inside the box footprint (``|x|, |y| <= half_lw``), and the cluster
    with the most points inside is always kept. Cells are 0.2 m where points are dense (a parked car 0.4 m
    behind another one is a separate cluster reaching only its margin), larger for sparse points (the
    widest gap expected between N points spread over the two visible faces, at most 0.6 m) so that a far
    object does not fall apart.

    Args:
        xy: (N, 2) points in the box's frame; half_lw: (2,) half length and width.
    """
    if xy.shape[0] == 0:
        return np.zeros(0, dtype=bool)
    n = xy.shape[0]
    widest_gap = 2.0 * float(half_lw[0] + half_lw[1]) / n * np.log(n + 1.0)  # n points on the visible faces
    cell_m = float(np.clip(widest_gap, _MIN_CLUSTER_CELL_M, _MAX_CLUSTER_CELL_M))
    cells = np.floor((xy - xy.min(axis=0)) / cell_m).astype(np.int64)
    grid = np.zeros(cells.max(axis=0) + 1, dtype=bool)
    grid[cells[:, 0], cells[:, 1]] = True
    labels, count = label(grid, structure=np.ones((3, 3), dtype=bool))
    point_labels = labels[cells[:, 0], cells[:, 1]]
    inside = np.all(np.abs(xy) <= half_lw, axis=1)
    total = np.bincount(point_labels, minlength=count + 1)
    within = np.bincount(point_labels, weights=inside, minlength=count + 1)
    keep = (within >= min_inside * np.maximum(total, 1)) & (total > 0)
    keep[int(np.argmax(within))] = True
    return keep[point_labels]


def ground_height_m(z: np.ndarray, *, bin_m: float = 0.1, min_points: int = 8) -> float | None:
    """Height of the ground among points around an object: the lowest dense level of their heights.

    The heights are binned; the lowest bin holding at least half as many points as the fullest one (after a
    1-2-1 smoothing) is the ground, so sparse returns below the road and the object's own or its neighbours'
    points above do not move it. Returns the median height of the points in that bin and its neighbours, or
    None with fewer than ``min_points`` points.
    """
    heights = np.asarray(z, dtype=np.float64)
    if heights.shape[0] < min_points:
        return None
    low = float(heights.min())
    bins = np.floor((heights - low) / bin_m).astype(np.int64)
    counts = np.bincount(bins).astype(np.float64)
    smooth = np.convolve(np.pad(counts, 1), [1.0, 2.0, 1.0], mode="valid")
    level = int(np.argmax(smooth >= 0.5 * smooth.max()))
    near = np.abs(bins - level) <= 1
    return float(np.median(heights[near]))
