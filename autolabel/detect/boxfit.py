"""Per-cluster BEV box fitting: motion from the sweep-time smear, L-shape orientation, tight extents.

For each cluster (points grouped by :func:`autolabel.detect.cluster.group_by_label`):

1. **Motion.** Points carry their capture time ``dt_s`` (<= 0). Over several sweeps a moving object smears
   along its velocity, so a least-squares line of position against time gives it:
   ``v = cov(xy, dt) / var(dt)``. The visible part of an object changes as it moves, which biases that line by
   5-10 %, so above ``min_speed_mps`` the speed (x0.8 .. x1.2) and direction (+-6 degrees) are refined to make
   the motion-corrected points most compact (smallest sum of extents along and across the motion). The points
   are then moved to the keyframe time (``xy - v dt``) before fitting, so the box is the object's, not its
   smear.
2. **Orientation.** L-shape fitting (Zhang et al. 2017, "Efficient L-Shape Fitting for Vehicle Detection
   Using Laser Scanners"): for each angle in [0, 90) degrees project the points on the rotated axes and take
   per axis the box edge the points hug; each point belongs to the nearer of the two edges. The *variance*
   criterion (default) minimises the summed variance of the two groups' distances to their edges; the
   *closeness* criterion maximises ``sum 1 / max(d, d0)`` (it wanders by about 2 degrees on 3 cm noise, the
   variance criterion by a tenth of that). Coarse search, then a fine one around the best angle::

           e2 ^      . . . . .           the visible "L" of a car: its two faces hug two edges
              |      .                   of the rectangle aligned with (e1, e2) at the best angle
              |      .
              +------------> e1

3. **Extents.** Tight min/max of all (motion-corrected) points along the axes; the longer side is the
   length (``yaw`` in [0, pi) along it; heading sign and class-aware completion come later).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import numba
import numpy as np

LOW_EDGE_M = 0.1  # half width of the soft edge between a cluster's lower and upper half
# nuScenes' LIDAR_TOP (and the simulator's) in the ego frame: 0.94 m ahead of the rear axle, 1.84 m up.
LIDAR_XYZ_M: tuple[float, float, float] = (0.943, 0.0, 1.84)


class LShapeCriterion(str, Enum):
    VARIANCE = "variance"
    CLOSENESS = "closeness"


@dataclass(frozen=True)
class FitConfig:
    """Box-fitting parameters.

    Attributes:
        max_fit_points: points per cluster used for the orientation search (an even subsample above this).
        criterion: L-shape criterion.
        coarse_step_deg, fine_step_deg: orientation search steps.
        closeness_floor_m: ``d0`` of the closeness criterion.
        edge_tolerance_m: points this close to the fitted L count towards the fit quality.
        min_dt_std_s: below this spread of capture times a cluster has no motion estimate.
        min_speed_mps: clusters slower than this are not motion-corrected.
        skip_longer_m, skip_taller_m: clusters whose bounding box is longer, or whose height is taller, are no
            objects (walls, buildings, trees): no orientation search (yaw 0, extents axis-aligned).
        sensor_xyz_m: lidar position in the ego frame (for the elevation of a cluster's highest return).
    """

    max_fit_points: int = 160
    criterion: LShapeCriterion = LShapeCriterion.VARIANCE
    coarse_step_deg: float = 3.0
    fine_step_deg: float = 0.5
    closeness_floor_m: float = 0.01
    edge_tolerance_m: float = 0.15
    min_dt_std_s: float = 0.05
    min_speed_mps: float = 0.8
    skip_longer_m: float = 30.0
    skip_taller_m: float = 4.45
    sensor_xyz_m: tuple[float, float, float] = LIDAR_XYZ_M


@dataclass(frozen=True, eq=False)
class ClusterFits:
    """Fitted BEV boxes and features of K clusters (all arrays (K,) unless noted).

    Attributes:
        count: points.
        centre: (K, 2) BEV box centre at the keyframe time.
        length, width: extents along / across ``yaw`` (``length >= width``).
        yaw: direction of the long axis in [0, pi).
        height: highest point above ground.
        mean_height: mean point height above ground.
        velocity: (K, 2) m/s from the smear; NaN without enough spread of capture times.
        quality: fraction of the fitted points within ``edge_tolerance_m`` of the L's two edges.
        low_fraction: fraction of points in the lower half of the cluster's height, with a soft edge of
            ``LOW_EDGE_M`` either side of the half (height profile: a vehicle's sides reach down to the ground, a
            tree crown's do not).
        top_elevation_rad: highest elevation angle of a point seen from the sensor (near the top beam the
            object may be taller than seen).
        bottom_elevation_rad: lowest elevation angle of a point seen from the sensor.
        mean_dt_s: mean capture time of the points (relative to the keyframe).
        dt_span_s: latest minus earliest capture time (about one sweep period or less: a one-sweep fragment).
        end_occluded: (K, 2) whether something nearer hides an end of the (length, width) extent (so the object
            may continue there); 1 (unknown: may be) until a range image says otherwise.
    """

    count: np.ndarray
    centre: np.ndarray
    length: np.ndarray
    width: np.ndarray
    yaw: np.ndarray
    height: np.ndarray
    mean_height: np.ndarray
    velocity: np.ndarray
    quality: np.ndarray
    low_fraction: np.ndarray
    top_elevation_rad: np.ndarray
    bottom_elevation_rad: np.ndarray
    mean_dt_s: np.ndarray
    dt_span_s: np.ndarray
    end_occluded: np.ndarray

    def __len__(self) -> int:
        return len(self.count)

    @property
    def range_m(self) -> np.ndarray:
        """(K,) BEV distance of the box centres from the ego origin."""
        return np.hypot(self.centre[:, 0], self.centre[:, 1])

    @property
    def speed_mps(self) -> np.ndarray:
        """(K,) speed, 0 where unknown."""
        return np.nan_to_num(np.hypot(self.velocity[:, 0], self.velocity[:, 1]))

    def take(self, index: np.ndarray) -> ClusterFits:
        """The fits at integer ``index``."""
        return ClusterFits(*(getattr(self, f)[index] for f in _FIELDS))

    @classmethod
    def concatenate(cls, parts: list[ClusterFits]) -> ClusterFits:
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in _FIELDS))


_FIELDS = (
    "count",
    "centre",
    "length",
    "width",
    "yaw",
    "height",
    "mean_height",
    "velocity",
    "quality",
    "low_fraction",
    "top_elevation_rad",
    "bottom_elevation_rad",
    "mean_dt_s",
    "dt_span_s",
    "end_occluded",
)


def fit_clusters(
    points: np.ndarray,
    heights: np.ndarray,
    order: np.ndarray,
    offsets: np.ndarray,
    config: FitConfig = FitConfig(),
) -> ClusterFits:
    """Fit every cluster.

    Args:
        points: (N, 5) float32 ``x, y, z, intensity, dt_s``.
        heights: (N,) float32 height above ground.
        order, offsets: cluster k owns points ``order[offsets[k]:offsets[k+1]]``.
        config: fitting parameters.
    """
    k = len(offsets) - 1
    out = np.zeros((k, 15))
    _fit_all(
        np.asarray(points),
        np.asarray(heights),
        np.asarray(order, dtype=np.int64),
        np.asarray(offsets, dtype=np.int64),
        config.max_fit_points,
        math.radians(config.coarse_step_deg),
        math.radians(config.fine_step_deg),
        config.closeness_floor_m,
        config.edge_tolerance_m,
        config.min_dt_std_s**2,
        config.min_speed_mps,
        np.asarray(config.sensor_xyz_m, dtype=np.float64),
        config.criterion is LShapeCriterion.VARIANCE,
        config.skip_longer_m,
        config.skip_taller_m,
        out,
    )
    return ClusterFits(
        count=np.diff(offsets).astype(np.int64),
        centre=out[:, 0:2].copy(),
        length=out[:, 2].copy(),
        width=out[:, 3].copy(),
        yaw=out[:, 4].copy(),
        height=out[:, 5].copy(),
        mean_height=out[:, 6].copy(),
        velocity=out[:, 7:9].copy(),
        quality=out[:, 9].copy(),
        low_fraction=out[:, 10].copy(),
        top_elevation_rad=out[:, 11].copy(),
        mean_dt_s=out[:, 12].copy(),
        dt_span_s=out[:, 13].copy(),
        bottom_elevation_rad=out[:, 14].copy(),
        end_occluded=np.ones((k, 2)),
    )


def lshape_yaw(xy: np.ndarray, config: FitConfig = FitConfig()) -> float:
    """Orientation in [0, pi/2) of the best L-shape through (M, 2) BEV points (closeness criterion)."""
    xy = np.asarray(xy, dtype=np.float64)
    centred = xy - xy.mean(axis=0)
    theta, _ = _lshape(
        np.ascontiguousarray(centred[:, 0]),
        np.ascontiguousarray(centred[:, 1]),
        math.radians(config.coarse_step_deg),
        math.radians(config.fine_step_deg),
        config.closeness_floor_m,
        config.edge_tolerance_m,
        config.criterion is LShapeCriterion.VARIANCE,
    )
    return theta


# ------------------------------------------------------------------------------------------------ kernels
@numba.njit(cache=True)
def _lshape_score(
    x: np.ndarray, y: np.ndarray, theta: float, d0: float, tol: float, variance: bool
) -> tuple[float, float]:
    """Score of the L at ``theta`` (higher is better) and the fraction of points within ``tol`` of its edges."""
    c, s = math.cos(theta), math.sin(theta)
    m = len(x)
    lo1 = lo2 = np.inf
    hi1 = hi2 = -np.inf
    sum1 = sum2 = sq1 = sq2 = 0.0
    for i in range(m):
        c1 = c * x[i] + s * y[i]
        c2 = -s * x[i] + c * y[i]
        lo1, hi1 = min(lo1, c1), max(hi1, c1)
        lo2, hi2 = min(lo2, c2), max(hi2, c2)
        sum1 += c1
        sum2 += c2
        sq1 += c1 * c1
        sq2 += c2 * c2
    # Per axis the edge the points lie closer to (in the sum-of-squares sense), as in Zhang et al.:
    # sum (c - lo)^2 < sum (hi - c)^2  <=>  (hi - lo) (2 sum c - m (hi + lo)) > 0.
    use_lo1 = 2.0 * sum1 < m * (hi1 + lo1)
    use_lo2 = 2.0 * sum2 < m * (hi2 + lo2)
    score = 0.0
    near = 0
    s1 = q1 = s2 = q2 = 0.0
    k1 = k2 = 0
    for i in range(m):
        c1 = c * x[i] + s * y[i]
        c2 = -s * x[i] + c * y[i]
        d1 = c1 - lo1 if use_lo1 else hi1 - c1
        d2 = c2 - lo2 if use_lo2 else hi2 - c2
        d = min(d1, d2)
        if d <= tol:
            near += 1
        if not variance:
            score += 1.0 / max(d, d0)
        elif d1 < d2:
            s1 += d1
            q1 += d1 * d1
            k1 += 1
        else:
            s2 += d2
            q2 += d2 * d2
            k2 += 1
    if variance:
        v1 = q1 / k1 - (s1 / k1) ** 2 if k1 > 1 else 0.0
        v2 = q2 / k2 - (s2 / k2) ** 2 if k2 > 1 else 0.0
        score = -(v1 + v2)
    return score, near / max(m, 1)


@numba.njit(cache=True)
def _lshape(
    x: np.ndarray, y: np.ndarray, coarse: float, fine: float, d0: float, tol: float, variance: bool
) -> tuple[float, float]:
    """Best L orientation in [0, pi/2) of centred points, and its fit quality."""
    if len(x) < 3:
        return 0.0, 1.0
    best, best_theta = -np.inf, 0.0
    steps = math.floor((math.pi / 2) / coarse + 0.5)
    for k in range(steps):
        theta = k * coarse
        score, _ = _lshape_score(x, y, theta, d0, tol, variance)
        if score > best:
            best, best_theta = score, theta
    centre = best_theta
    half = math.floor(coarse / fine + 0.5)
    for k in range(-half, half + 1):
        theta = centre + k * fine
        score, _ = _lshape_score(x, y, theta, d0, tol, variance)
        if score > best:
            best, best_theta = score, theta
    best_theta = best_theta % (math.pi / 2)
    _, quality = _lshape_score(x, y, best_theta, d0, tol, variance)
    return best_theta, quality


@numba.njit(cache=True)
def _fit_all(
    pts: np.ndarray,
    heights: np.ndarray,
    order: np.ndarray,
    offsets: np.ndarray,
    max_fit: int,
    coarse: float,
    fine: float,
    d0: float,
    tol: float,
    min_dt_var: float,
    min_speed: float,
    sensor: np.ndarray,
    variance: bool,
    skip_longer: float,
    skip_taller: float,
    out: np.ndarray,
) -> None:
    """Fill ``out`` (K, 15): cx, cy, length, width, yaw, height, mean height, vx, vy, quality, low fraction,
    top elevation, mean dt, dt span, bottom elevation."""
    for k in range(len(offsets) - 1):
        a, b = offsets[k], offsets[k + 1]
        m = b - a
        if m == 0:
            continue
        mx = my = mt = 0.0
        hmax = -np.inf
        hsum = 0.0
        top = -np.inf
        bottom = np.inf
        t_lo, t_hi = np.inf, -np.inf
        x_lo = y_lo = np.inf
        x_hi = y_hi = -np.inf
        for j in range(a, b):
            i = order[j]
            t_lo, t_hi = min(t_lo, pts[i, 4]), max(t_hi, pts[i, 4])
            x_lo, x_hi = min(x_lo, pts[i, 0]), max(x_hi, pts[i, 0])
            y_lo, y_hi = min(y_lo, pts[i, 1]), max(y_hi, pts[i, 1])
            mx += pts[i, 0]
            my += pts[i, 1]
            mt += pts[i, 4]
            hsum += heights[i]
            hmax = max(hmax, heights[i])
            rx, ry = pts[i, 0] - sensor[0], pts[i, 1] - sensor[1]
            tan_el = (pts[i, 2] - sensor[2]) / max(math.sqrt(rx * rx + ry * ry), 0.1)
            top = max(top, tan_el)
            bottom = min(bottom, tan_el)
        mx /= m
        my /= m
        mt /= m
        vtt = vxt = vyt = 0.0
        low = 0.0
        for j in range(a, b):
            i = order[j]
            # Soft edge (LOW_EDGE_M either side of half the height): a sparse cluster's returns come in beam rows,
            # and one row right at half height must not flip the fraction between all and nothing.
            low += min(max((0.5 * hmax + LOW_EDGE_M - heights[i]) / (2.0 * LOW_EDGE_M), 0.0), 1.0)
            dt = pts[i, 4] - mt
            vtt += dt * dt
            vxt += (pts[i, 0] - mx) * dt
            vyt += (pts[i, 1] - my) * dt
        vx = vy = np.nan
        cx_shift = cy_shift = 0.0
        if m >= 6 and vtt / m >= min_dt_var:
            vx, vy = vxt / vtt, vyt / vtt
            if math.hypot(vx, vy) >= min_speed:
                vx, vy = _refine_velocity(pts, order, a, b, vx, vy, max_fit)
                cx_shift, cy_shift = vx, vy
        # Motion-corrected, centred coordinates; the orientation search uses an even subsample.
        theta, quality = 0.0, 0.0
        if max(x_hi - x_lo, y_hi - y_lo) <= skip_longer and hmax <= skip_taller:
            stride = (m + max_fit - 1) // max_fit
            nf = (m + stride - 1) // stride
            fx = np.empty(nf)
            fy = np.empty(nf)
            for f in range(nf):
                i = order[a + f * stride]
                dt = pts[i, 4]
                fx[f] = pts[i, 0] - cx_shift * dt - mx
                fy[f] = pts[i, 1] - cy_shift * dt - my
            theta, quality = _lshape(fx, fy, coarse, fine, d0, tol, variance)
        c, s = math.cos(theta), math.sin(theta)
        lo1 = lo2 = np.inf
        hi1 = hi2 = -np.inf
        for j in range(a, b):
            i = order[j]
            dt = pts[i, 4]
            px = pts[i, 0] - cx_shift * dt - mx
            py = pts[i, 1] - cy_shift * dt - my
            u = c * px + s * py
            v = -s * px + c * py
            lo1, hi1 = min(lo1, u), max(hi1, u)
            lo2, hi2 = min(lo2, v), max(hi2, v)
        mu, mv = (lo1 + hi1) / 2, (lo2 + hi2) / 2
        out[k, 0] = mx + c * mu - s * mv
        out[k, 1] = my + s * mu + c * mv
        e1, e2 = hi1 - lo1, hi2 - lo2
        if e1 >= e2:
            out[k, 2], out[k, 3], out[k, 4] = e1, e2, theta
        else:
            out[k, 2], out[k, 3], out[k, 4] = e2, e1, theta + math.pi / 2
        out[k, 5] = hmax
        out[k, 6] = hsum / m
        out[k, 7], out[k, 8] = vx, vy
        out[k, 9] = quality
        out[k, 10] = low / m
        out[k, 11] = math.atan(top)
        out[k, 12] = mt
        out[k, 13] = t_hi - t_lo
        out[k, 14] = math.atan(bottom)


@numba.njit(cache=True)
def _refine_velocity(
    pts: np.ndarray, order: np.ndarray, a: int, b: int, vx: float, vy: float, max_fit: int
) -> tuple[float, float]:
    """The velocity near ``(vx, vy)`` (speed x0.8 .. x1.2, direction +-6 degrees) whose motion correction leaves
    the cluster most compact: smallest extent along plus across the motion, on an even subsample."""
    m = b - a
    stride = max((m + max_fit - 1) // max_fit, 1)
    speed0, heading0 = math.hypot(vx, vy), math.atan2(vy, vx)
    c, s = math.cos(heading0), math.sin(heading0)
    best, best_vx, best_vy = np.inf, vx, vy
    for si in range(-5, 6):
        speed = speed0 * (1.0 + 0.04 * si)
        for hi in range(-3, 4):
            heading = heading0 + math.radians(2.0) * hi
            ux, uy = speed * math.cos(heading), speed * math.sin(heading)
            lo1 = lo2 = np.inf
            hi1 = hi2 = -np.inf
            for j in range(a, b, stride):
                i = order[j]
                px = pts[i, 0] - ux * pts[i, 4]
                py = pts[i, 1] - uy * pts[i, 4]
                u = c * px + s * py
                v = -s * px + c * py
                lo1, hi1 = min(lo1, u), max(hi1, u)
                lo2, hi2 = min(lo2, v), max(hi2, v)
            cost = (hi1 - lo1) + (hi2 - lo2)
            if cost < best:
                best, best_vx, best_vy = cost, ux, uy
    return best_vx, best_vy
