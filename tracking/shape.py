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

import numba
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
    observed, lo, hi = _observe_faces(
        xy,
        point_frames,
        sensor_xy,
        lo,
        hi,
        extent_scale,
        params.min_face_points,
        params.min_face_span_fraction,
        params.face_tolerance_m,
        params.visibility_margin_m,
    )
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


@numba.njit(cache=True)
def _observe_faces(
    xy: np.ndarray,
    point_frames: np.ndarray,
    sensor_xy: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    extent_scale: np.ndarray,
    min_face_points: int,
    min_face_span_fraction: float,
    face_tolerance_m: float,
    visibility_margin_m: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Observed faces (4,) of (N, 2) points between their robust extremes ``lo, hi`` (2,), and the extremes
    with each observed face's end moved to the face's plane (see :func:`fit_footprint`)."""
    observed = np.zeros(4, dtype=np.bool_)
    planes_lo, planes_hi = lo.copy(), hi.copy()
    face = np.empty(xy.shape[0])
    for axis in range(2):
        for side in range(2):
            edge, sign = (hi[axis], 1.0) if side else (lo[axis], -1.0)
            sees = sign * (sensor_xy[:, axis] - edge) > visibility_margin_m  # the sensor is outside the plane
            count, low, high = 0, np.inf, -np.inf  # a face, not the corner of its neighbour: points spread along it
            for i in range(xy.shape[0]):
                if sees[point_frames[i]] and abs(xy[i, axis] - edge) <= face_tolerance_m:
                    face[count] = xy[i, axis]
                    count += 1
                    low, high = min(low, xy[i, 1 - axis]), max(high, xy[i, 1 - axis])
            spread = high - low if count else 0.0
            observed[2 * axis + side] = (
                count >= min_face_points and spread >= min_face_span_fraction * extent_scale[1 - axis]
            )
            if observed[2 * axis + side]:  # the face's plane: a low quantile of its noisy points, not an extreme
                rank = round((1.0 - _FACE_QUANTILE if side else _FACE_QUANTILE) * (count - 1))
                (planes_hi if side else planes_lo)[axis] = np.partition(face[:count], rank)[rank]
    return observed, planes_lo, planes_hi


def robust_extremes(values: np.ndarray, trim: float, max_trim_points: int) -> tuple[np.ndarray, np.ndarray]:
    """(D,) low and high extremes of (N, D) values, each the k-th from its end, ``k = clip(trim N, 1, max)``.

    A count rather than a quantile: an end that only a few points reach (the far edge of a face seen
    head-on) is not cut back by the trimming of a dense other end.
    """
    k = int(np.clip(np.ceil(trim * values.shape[0]), 1, max(max_trim_points, 1)))
    return _kth_extremes(np.asarray(values, dtype=np.float64), k)


@numba.njit(cache=True)
def _kth_extremes(values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(D,) k-th smallest and k-th largest of each column of (N, D) values (N >= k), in one pass each.

    Keeps the k smallest and largest seen so far sorted (O(N k) at worst: meant for a few points).
    """
    n, d = values.shape
    low, high = np.empty(d), np.empty(d)
    smallest, largest = np.empty(k), np.empty(k)
    for j in range(d):
        smallest[:], largest[:] = np.inf, -np.inf
        for i in range(n):
            v = values[i, j]
            if v < smallest[k - 1]:
                m = k - 1
                while m > 0 and smallest[m - 1] > v:
                    smallest[m] = smallest[m - 1]
                    m -= 1
                smallest[m] = v
            if v > largest[k - 1]:
                m = k - 1
                while m > 0 and largest[m - 1] < v:
                    largest[m] = largest[m - 1]
                    m -= 1
                largest[m] = v
        low[j], high[j] = smallest[k - 1], largest[k - 1]
    return low, high


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
    """(A,) summed variance of the (N, 2) points' distances to their nearest edges, per angle."""
    return _lshape_cost_kernel(pts, np.cos(angles), np.sin(angles))


@numba.njit(cache=True)
def _lshape_cost_kernel(pts: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """(A,) :func:`_lshape_cost` for (A,) cosines and sines of the angles; sums run in point order."""
    n = pts.shape[0]
    cost = np.empty(cos.shape[0])
    p1, p2 = np.empty(n), np.empty(n)
    d1, d2 = np.empty(n), np.empty(n)
    for a in range(cos.shape[0]):
        c, s = cos[a], sin[a]
        for i in range(n):
            p1[i] = pts[i, 0] * c + pts[i, 1] * s
            p2[i] = -pts[i, 0] * s + pts[i, 1] * c
        min1, max1, min2, max2 = p1.min(), p1.max(), p2.min(), p2.max()
        count1 = total1 = total2 = 0.0
        for i in range(n):
            d1[i] = min(p1[i] - min1, max1 - p1[i])
            d2[i] = min(p2[i] - min2, max2 - p2[i])
            if d1[i] <= d2[i]:
                count1 += 1.0
                total1 += d1[i]
            else:
                total2 += d2[i]
        n1, n2 = max(count1, 1.0), max(n - count1, 1.0)
        mean1, mean2 = total1 / n1, total2 / n2
        spread1 = spread2 = 0.0
        for i in range(n):
            if d1[i] <= d2[i]:
                spread1 += (d1[i] - mean1) ** 2
            else:
                spread2 += (d2[i] - mean2) ** 2
        cost[a] = spread1 / n1 + spread2 / n2
    return cost


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
    return float(_ground_level(heights, bin_m))


@numba.njit(cache=True)
def _ground_level(heights: np.ndarray, bin_m: float) -> float:
    """:func:`ground_height_m` of (N,) heights, N >= 1."""
    low = heights.min()
    bins = np.floor((heights - low) / bin_m).astype(np.int64)
    counts = np.zeros(bins.max() + 3)  # one empty bin padded at each end
    for b in bins:
        counts[b + 1] += 1.0
    smooth = counts[:-2] + 2.0 * counts[1:-1] + counts[2:]
    level = np.argmax(smooth >= 0.5 * smooth.max())
    near = heights[np.abs(bins - level) <= 1]
    half = near.shape[0] // 2
    part = np.partition(near, half)  # the median: the middle value, or the mean of the middle two
    return part[half] if near.shape[0] % 2 else (part[:half].max() + part[half]) / 2.0
