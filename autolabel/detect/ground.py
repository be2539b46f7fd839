"""Ground estimation for one keyframe cloud: local planes fitted to the dense lower envelope, on two scales.

Seen from above, the cloud falls into square cells (``cell_m``) of a grid centred on the ego::

        +y
         ^    fine cell: the k lowest points -> dense lower envelope (the lowest height that at least
         |    ``support`` of them lie within ``band_m`` above: isolated returns below the road are skipped)
     ----+---->  +x
         |    coarse cell (``coarse_factor`` fine cells a side): its lowest fine envelope

1. Coarse planes: per coarse cell, a plane through the coarse envelopes within ``coarse_window`` cells by
   asymmetric iteratively reweighted least squares: samples above the plane lose weight fast
   (``exp(-(r / above_sigma_m)^2)``), samples far below (``below_cut_m``) are dropped, so the plane settles on
   the lower envelope even where most samples are car bodies. Far from the sensor the ground is seen only on
   beam rings tens of metres apart; the coarse scale still reaches them.
2. Fine planes: per occupied fine cell the same fit over the fine envelopes within ``window_cells``, started
   from the coarse plane; without enough support (``min_support``) the coarse plane stays.

A cell's own envelope is the ground there when it lies within ``[-below_cut_m, +inlier_above_m]`` of its plane
(kerbs and steps stay sharp); otherwise (car bodies, roofs) the plane is. Heights above ground are measured
from that surface, tilted by the plane's slope inside the cell.

Everything runs in numba kernels (``cache=True``); a ~300 k point cloud takes a few milliseconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

from autolabel.detect.boxfit import LIDAR_XYZ_M
from calibration import InputError


@dataclass(frozen=True)
class GroundConfig:
    """Parameters of the ground model.

    Attributes:
        cell_m: fine grid cell size.
        half_extent_m: the grid covers ``[-half_extent_m, half_extent_m]^2`` around the ego.
        lowest_k: lowest points kept per cell.
        support: points needed within ``band_m`` for a dense lower envelope.
        band_m: height band of the dense lower envelope.
        coarse_factor: fine cells per coarse cell side.
        coarse_window: radius (coarse cells) of the coarse plane fit; doubled up to twice without data.
        window_cells: radius (fine cells) of the fine plane fit.
        above_sigma_m: weight scale of samples above the plane.
        below_cut_m: samples further below the plane are outliers; also the lower bound of an own envelope.
        inlier_above_m: a cell's own envelope at most this far above its plane is the ground there.
        min_support: total sample weight a local fit needs.
        ridge: pull of a plane's slopes towards the larger scale's (the whole grid's for coarse planes, the coarse
            plane's for fine ones), in units of sample weight times m^2.
        iterations: reweighting rounds.
        sensor_xyz_m: lidar position in the ego frame.
        max_ground_elevation_deg: returns seen above this elevation from the sensor never enter a cell's lower
            envelope: a ray that level grazes no road below the sensor (in a car park the near-horizontal beam
            lines up the sides of far cars whose ground is hidden, a flat layer the envelope would take for the
            road); they still mark the cell as occupied.
    """

    cell_m: float = 1.0
    half_extent_m: float = 64.0
    lowest_k: int = 8
    support: int = 3
    band_m: float = 0.1
    coarse_factor: int = 4
    coarse_window: int = 2
    window_cells: int = 3
    above_sigma_m: float = 0.1
    below_cut_m: float = 0.3
    inlier_above_m: float = 0.2
    min_support: float = 3.0
    ridge: float = 200.0
    iterations: int = 4
    sensor_xyz_m: tuple[float, float, float] = LIDAR_XYZ_M
    max_ground_elevation_deg: float = -0.3

    def __post_init__(self) -> None:
        if self.cell_m <= 0 or self.half_extent_m <= self.cell_m * self.coarse_factor:
            raise InputError(f"ground grid: need 0 < cell_m, coarse cells inside the grid; got {self}")
        if not 1 <= self.support <= self.lowest_k:
            raise InputError(f"ground grid: need 1 <= support <= lowest_k, got {self.support}, {self.lowest_k}")


@dataclass(frozen=True, eq=False)
class GroundModel:
    """The fitted ground of one cloud (fine grid of ``n x n`` cells, row-major ``ix * n + iy``).

    Attributes:
        origin_m: (x, y) of the grid's lower corner.
        cell_m: fine cell size.
        n: fine cells per side.
        envelope: (C, 3) float64 ``x, y, z`` of each fine cell's dense lower envelope point, NaN where empty.
        weight: (C,) float64 evidence weight of the envelope (0 empty, <1 sparse or scattered).
        plane: (C, 3) float64 ``a, gx, gy``: ground ``z = a + gx (x - cx) + gy (y - cy)`` about the fine cell's
            centre; NaN until needed (cells holding points are fitted at once, others on first use).
        own: (C,) bool: the cell's envelope is the ground there (consistent with its plane).
        coarse: (Cc, 3) float64 coarse-cell planes about the coarse cells' centres.
        config: the parameters used.
    """

    origin_m: tuple[float, float]
    cell_m: float
    n: int
    envelope: np.ndarray
    weight: np.ndarray
    plane: np.ndarray
    own: np.ndarray
    coarse: np.ndarray
    config: GroundConfig

    def heights(self, points: np.ndarray) -> np.ndarray:
        """(N,) float32 height above ground of (N, C>=3) points (outside the grid: the nearest coarse plane).

        Cells without a plane yet are fitted on first use; the model caches them, which changes no result.
        """
        pts = np.asarray(points)
        out = np.empty(len(pts), dtype=np.float32)
        missing = _point_heights(pts, self.envelope, self.plane, self.own, self.coarse, *self._grid(), out)
        if missing:
            cells = self.cells_of(pts[:, :2])
            self._ensure_planes(np.unique(cells[cells >= 0]))
            _point_heights(pts, self.envelope, self.plane, self.own, self.coarse, *self._grid(), out)
        return out

    def z_at(self, xy: np.ndarray) -> np.ndarray:
        """(M,) float64 ground height under (M, 2) positions from the planes (not the envelopes).

        Used for box bottoms: under an object the envelope is the object's lowest edge, the plane is the road.
        """
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        cells = self.cells_of(xy)
        self._ensure_planes(np.unique(cells[cells >= 0]))
        out = np.empty(len(xy))
        _plane_z(xy, self.plane, self.coarse, *self._grid(), out)
        return out

    def cells_of(self, xy: np.ndarray) -> np.ndarray:
        """(M,) int64 fine cell index of (M, 2+) positions, -1 outside the grid."""
        ix = np.floor((xy[:, 0] - self.origin_m[0]) / self.cell_m).astype(np.int64)
        iy = np.floor((xy[:, 1] - self.origin_m[1]) / self.cell_m).astype(np.int64)
        inside = (ix >= 0) & (ix < self.n) & (iy >= 0) & (iy < self.n)
        return np.where(inside, ix * self.n + iy, -1)

    def _grid(self) -> tuple[float, float, float, int, int]:
        return self.origin_m[0], self.origin_m[1], self.cell_m, self.n, self.config.coarse_factor

    def _ensure_planes(self, cells: np.ndarray) -> None:
        todo = cells[np.isnan(self.plane[cells, 0])]
        if len(todo):
            _fit_fine(
                todo.astype(np.int64),
                self.envelope,
                self.weight,
                self.coarse,
                self.plane,
                self.own,
                *self._grid(),
                *_fine_params(self.config),
            )


def estimate_ground(points: np.ndarray, config: GroundConfig = GroundConfig()) -> GroundModel:
    """Fit the ground of a cloud.

    Args:
        points: (N, C>=3) points in the ego frame (z up; the ground need not be level or flat).
        config: grid and fit parameters.

    Returns:
        The model, with planes fitted for every cell that holds a point.
    """
    xyz = np.asarray(points)
    if xyz.ndim != 2 or xyz.shape[1] < 3:
        raise InputError(f"ground: points must have shape (N, C>=3), got {xyz.shape}")
    factor = config.coarse_factor
    n = factor * int(np.ceil(2.0 * config.half_extent_m / (config.cell_m * factor)))
    x0 = y0 = -n * config.cell_m / 2.0
    envelope, weight, occupied = _lower_envelope(
        xyz,
        x0,
        y0,
        config.cell_m,
        n,
        config.lowest_k,
        config.support,
        config.band_m,
        np.asarray(config.sensor_xyz_m, dtype=np.float64),
        math.tan(math.radians(config.max_ground_elevation_deg)),
    )
    samples, sample_weight = _coarse_envelope(envelope, weight, n, factor)
    asym = (config.above_sigma_m, config.below_cut_m, config.ridge, config.iterations)
    coarse = _fit_coarse(
        samples,
        sample_weight,
        n // factor,
        x0,
        y0,
        config.cell_m * factor,
        config.coarse_window,
        config.min_support,
        *asym,
    )
    plane = np.full((n * n, 3), np.nan)
    own = np.zeros(n * n, dtype=np.bool_)
    _fit_fine(
        np.flatnonzero(occupied),
        envelope,
        weight,
        coarse,
        plane,
        own,
        x0,
        y0,
        config.cell_m,
        n,
        factor,
        *_fine_params(config),
    )
    return GroundModel((x0, y0), config.cell_m, n, envelope, weight, plane, own, coarse, config)


def _fine_params(config: GroundConfig) -> tuple[int, float, float, float, float, float, int]:
    return (
        config.window_cells,
        config.min_support,
        config.inlier_above_m,
        config.above_sigma_m,
        config.below_cut_m,
        config.ridge,
        config.iterations,
    )


# ------------------------------------------------------------------------------------------------ kernels
@numba.njit(cache=True)
def _lower_envelope(
    pts: np.ndarray,
    x0: float,
    y0: float,
    cell: float,
    n: int,
    k: int,
    support: int,
    band: float,
    sensor: np.ndarray,
    max_tan_elevation: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per cell: the dense lower envelope point (C, 3), its weight (C,) and whether any point fell in (C,); points
    seen above ``max_tan_elevation`` from the sensor are left out of the envelope."""
    cells = n * n
    low = np.full((cells, k), np.inf, dtype=np.float32)  # the k lowest heights, sorted, and their points
    low_i = np.zeros((cells, k), dtype=np.int32)
    count = np.zeros(cells, dtype=np.int32)
    occupied = np.zeros(cells, dtype=np.bool_)
    inv = 1.0 / cell
    for i in range(pts.shape[0]):
        fx = (pts[i, 0] - x0) * inv
        fy = (pts[i, 1] - y0) * inv
        if not (0.0 <= fx < n and 0.0 <= fy < n):
            continue
        c = int(fx) * n + int(fy)
        occupied[c] = True
        rx, ry = pts[i, 0] - sensor[0], pts[i, 1] - sensor[1]
        if pts[i, 2] - sensor[2] > max_tan_elevation * math.sqrt(rx * rx + ry * ry):
            continue
        count[c] += 1
        zi = np.float32(pts[i, 2])
        if zi >= low[c, k - 1]:
            continue
        j = k - 1
        while j > 0 and low[c, j - 1] > zi:  # insertion into the sorted k lowest
            low[c, j] = low[c, j - 1]
            low_i[c, j] = low_i[c, j - 1]
            j -= 1
        low[c, j] = zi
        low_i[c, j] = i
    envelope = np.full((cells, 3), np.nan)
    weight = np.zeros(cells)
    for c in range(cells):
        m = min(count[c], k)
        if m == 0:
            continue
        need = min(support, m)
        pick = 0
        w = 1.0 if m >= support else 0.3  # sparse cells count less
        found = False
        for j in range(m - need + 1):
            if low[c, j + need - 1] - low[c, j] <= band:
                pick = j
                found = True
                break
        if not found:
            w = 0.3  # scattered heights (a vertical surface): the lowest return, with little weight
        envelope[c, 0] = pts[low_i[c, pick], 0]
        envelope[c, 1] = pts[low_i[c, pick], 1]
        envelope[c, 2] = pts[low_i[c, pick], 2]
        weight[c] = w
    return envelope, weight, occupied


@numba.njit(cache=True)
def _coarse_envelope(envelope: np.ndarray, weight: np.ndarray, n: int, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """Per coarse cell the lowest dense fine envelope (else the lowest sparse one, with its lower weight)."""
    nc = n // factor
    samples = np.full((nc * nc, 3), np.nan)
    sample_weight = np.zeros(nc * nc)
    for ix in range(n):
        for iy in range(n):
            c = ix * n + iy
            w = weight[c]
            if w <= 0:
                continue
            k = (ix // factor) * nc + iy // factor
            better = w > sample_weight[k] or (w == sample_weight[k] and envelope[c, 2] < samples[k, 2])
            if better:
                samples[k, 0], samples[k, 1], samples[k, 2] = envelope[c, 0], envelope[c, 1], envelope[c, 2]
                sample_weight[k] = w
    return samples, sample_weight


@numba.njit(cache=True, inline="always")
def _solve_plane(
    dx: np.ndarray, dy: np.ndarray, z: np.ndarray, w: np.ndarray, m: int, ridge: float, px: float, py: float
) -> tuple[float, float, float]:
    """Weighted least-squares plane ``z = a + gx dx + gy dy``, slopes ridge-regularised towards ``(px, py)``."""
    s0 = sx = sy = sxx = sxy = syy = sz = sxz = syz = 0.0
    for j in range(m):
        wj = w[j]
        if wj <= 0.0:
            continue
        s0 += wj
        sx += wj * dx[j]
        sy += wj * dy[j]
        sxx += wj * dx[j] * dx[j]
        sxy += wj * dx[j] * dy[j]
        syy += wj * dy[j] * dy[j]
        sz += wj * z[j]
        sxz += wj * dx[j] * z[j]
        syz += wj * dy[j] * z[j]
    if s0 <= 1e-9:
        return np.nan, 0.0, 0.0
    sxx += ridge
    syy += ridge
    sxz += ridge * px
    syz += ridge * py
    # Cramer's rule on [[s0, sx, sy], [sx, sxx, sxy], [sy, sxy, syy]] (a, gx, gy) = (sz, sxz, syz).
    det = s0 * (sxx * syy - sxy * sxy) - sx * (sx * syy - sxy * sy) + sy * (sx * sxy - sxx * sy)
    if abs(det) < 1e-12:
        return sz / s0, 0.0, 0.0
    a = sz * (sxx * syy - sxy * sxy) - sx * (sxz * syy - sxy * syz) + sy * (sxz * sxy - sxx * syz)
    gx = s0 * (sxz * syy - syz * sxy) - sz * (sx * syy - sxy * sy) + sy * (sx * syz - sxz * sy)
    gy = s0 * (sxx * syz - sxy * sxz) - sx * (sx * syz - sxz * sy) + sz * (sx * sxy - sxx * sy)
    return a / det, gx / det, gy / det


@numba.njit(cache=True)
def _lower_plane(
    dx: np.ndarray,
    dy: np.ndarray,
    z: np.ndarray,
    w0: np.ndarray,
    m: int,
    a: float,
    gx: float,
    gy: float,
    above_sigma: float,
    below_cut: float,
    ridge: float,
    iterations: int,
    min_support: float,
    px: float,
    py: float,
) -> tuple[float, float, float, float]:
    """Asymmetric IRLS from the plane ``(a, gx, gy)`` (NaN ``a``: start from plain least squares): returns the
    plane through the lower envelope of ``m`` samples and the total weight that supports it. Once the support
    falls below ``min_support`` the samples say nothing (least squares ignores how small the weights are), and
    the last plane is returned with that support. Slopes are pulled towards ``(px, py)``."""
    w = w0[:m].copy()
    if np.isnan(a):
        a, gx, gy = _solve_plane(dx, dy, z, w, m, ridge, px, py)
        if np.isnan(a):
            return np.nan, 0.0, 0.0, 0.0
    support = 0.0
    for _ in range(iterations):
        support = 0.0
        for j in range(m):
            r = z[j] - (a + gx * dx[j] + gy * dy[j])
            if r < -below_cut:
                w[j] = 0.0
            elif r > 0.0:
                w[j] = w0[j] * np.exp(-((r / above_sigma) ** 2))
            else:
                w[j] = w0[j]
            support += w[j]
        if support < min_support:
            return a, gx, gy, support
        a2, gx2, gy2 = _solve_plane(dx, dy, z, w, m, ridge, px, py)
        if np.isnan(a2):
            return a, gx, gy, 0.0
        a, gx, gy = a2, gx2, gy2
    return a, gx, gy, support


@numba.njit(cache=True)
def _fit_coarse(
    samples: np.ndarray,
    sample_weight: np.ndarray,
    nc: int,
    x0: float,
    y0: float,
    cell: float,
    window: int,
    min_support: float,
    above_sigma: float,
    below_cut: float,
    ridge: float,
    iterations: int,
) -> np.ndarray:
    """(Cc, 3) coarse planes about the coarse cells' centres; windows widen (x2, x4) until supported, and
    cells with no data within reach take the plane through all samples (flat z = 0 for an empty grid)."""
    total = 0
    for k in range(nc * nc):
        total += sample_weight[k] > 0
    dx, dy, z, w = np.empty(total), np.empty(total), np.empty(total), np.empty(total)
    m = 0
    for k in range(nc * nc):
        if sample_weight[k] > 0:
            dx[m], dy[m], z[m], w[m] = samples[k, 0], samples[k, 1], samples[k, 2], sample_weight[k]
            m += 1
    ga, ggx, ggy, _ = _lower_plane(
        dx, dy, z, w, m, np.nan, 0.0, 0.0, 4 * above_sigma, 10 * below_cut, ridge, iterations, 0.0, 0.0, 0.0
    )
    if np.isnan(ga):
        ga, ggx, ggy = 0.0, 0.0, 0.0
    out = np.empty((nc * nc, 3))
    cap = (2 * 4 * window + 1) ** 2
    dx, dy, z, w = np.empty(cap), np.empty(cap), np.empty(cap), np.empty(cap)
    for ix in range(nc):
        for iy in range(nc):
            cx, cy = x0 + (ix + 0.5) * cell, y0 + (iy + 0.5) * cell
            a, gx, gy = ga + ggx * cx + ggy * cy, ggx, ggy
            radius = window
            for _ in range(3):
                m = 0
                have = 0.0
                for jx in range(max(ix - radius, 0), min(ix + radius + 1, nc)):
                    for jy in range(max(iy - radius, 0), min(iy + radius + 1, nc)):
                        j = jx * nc + jy
                        if sample_weight[j] > 0:
                            dx[m], dy[m] = samples[j, 0] - cx, samples[j, 1] - cy
                            z[m], w[m] = samples[j, 2], sample_weight[j]
                            have += w[m]
                            m += 1
                if have >= min_support:
                    break
                radius *= 2
            if have >= min_support:
                la, lgx, lgy, support = _lower_plane(
                    dx,
                    dy,
                    z,
                    w,
                    m,
                    np.nan,
                    0.0,
                    0.0,
                    above_sigma,
                    below_cut,
                    ridge,
                    iterations,
                    0.5 * min_support,
                    ggx,
                    ggy,
                )
                if support >= 0.5 * min_support:
                    a, gx, gy = la, lgx, lgy
            k = ix * nc + iy
            out[k, 0], out[k, 1], out[k, 2] = a, gx, gy
    return out


@numba.njit(cache=True, inline="always")
def _coarse_z(coarse: np.ndarray, x: float, y: float, x0: float, y0: float, cell: float, n: int, factor: int) -> tuple:
    """Coarse plane height and slope at (x, y) (clamped to the grid's border cells)."""
    nc = n // factor
    ccell = cell * factor
    ix = min(max(int(np.floor((x - x0) / ccell)), 0), nc - 1)
    iy = min(max(int(np.floor((y - y0) / ccell)), 0), nc - 1)
    k = ix * nc + iy
    cx, cy = x0 + (ix + 0.5) * ccell, y0 + (iy + 0.5) * ccell
    return coarse[k, 0] + coarse[k, 1] * (x - cx) + coarse[k, 2] * (y - cy), coarse[k, 1], coarse[k, 2]


@numba.njit(cache=True)
def _fit_fine(
    cells: np.ndarray,
    envelope: np.ndarray,
    weight: np.ndarray,
    coarse: np.ndarray,
    plane: np.ndarray,
    own: np.ndarray,
    x0: float,
    y0: float,
    cell: float,
    n: int,
    factor: int,
    window: int,
    min_support: float,
    inlier_above: float,
    above_sigma: float,
    below_cut: float,
    ridge: float,
    iterations: int,
) -> None:
    """Fill ``plane[c]`` and ``own[c]`` for every fine cell ``c`` in ``cells``: a local lower-envelope fit started
    from the coarse plane, or the coarse plane itself without enough support."""
    cap = (2 * window + 1) ** 2
    dx, dy, z, w = np.empty(cap), np.empty(cap), np.empty(cap), np.empty(cap)
    for c in cells:
        ix, iy = c // n, c % n
        cx, cy = x0 + (ix + 0.5) * cell, y0 + (iy + 0.5) * cell
        a, gx, gy = _coarse_z(coarse, cx, cy, x0, y0, cell, n, factor)
        m = 0
        for jx in range(max(ix - window, 0), min(ix + window + 1, n)):
            for jy in range(max(iy - window, 0), min(iy + window + 1, n)):
                j = jx * n + jy
                if weight[j] > 0:
                    dx[m], dy[m] = envelope[j, 0] - cx, envelope[j, 1] - cy
                    z[m], w[m] = envelope[j, 2], weight[j]
                    m += 1
        if m > 0:
            la, lgx, lgy, support = _lower_plane(
                dx, dy, z, w, m, a, gx, gy, above_sigma, below_cut, ridge, iterations, min_support, gx, gy
            )
            if support >= min_support:
                a, gx, gy = la, lgx, lgy
        plane[c, 0], plane[c, 1], plane[c, 2] = a, gx, gy
        if weight[c] > 0:
            r = envelope[c, 2] - (a + gx * (envelope[c, 0] - cx) + gy * (envelope[c, 1] - cy))
            own[c] = -below_cut <= r <= inlier_above


@numba.njit(cache=True)
def _point_heights(
    pts: np.ndarray,
    envelope: np.ndarray,
    plane: np.ndarray,
    own: np.ndarray,
    coarse: np.ndarray,
    x0: float,
    y0: float,
    cell: float,
    n: int,
    factor: int,
    out: np.ndarray,
) -> int:
    """Write heights above ground into ``out`` (N,); returns how many points fell in cells without a plane."""
    missing = 0
    for i in range(pts.shape[0]):
        x, y = pts[i, 0], pts[i, 1]
        ix = int(np.floor((x - x0) / cell))
        iy = int(np.floor((y - y0) / cell))
        if ix < 0 or ix >= n or iy < 0 or iy >= n:
            g, _, _ = _coarse_z(coarse, x, y, x0, y0, cell, n, factor)
        else:
            c = ix * n + iy
            if np.isnan(plane[c, 0]):
                missing += 1
                out[i] = np.nan
                continue
            if own[c]:
                g = envelope[c, 2] + plane[c, 1] * (x - envelope[c, 0]) + plane[c, 2] * (y - envelope[c, 1])
            else:
                cx, cy = x0 + (ix + 0.5) * cell, y0 + (iy + 0.5) * cell
                g = plane[c, 0] + plane[c, 1] * (x - cx) + plane[c, 2] * (y - cy)
        out[i] = pts[i, 2] - g
    return missing


@numba.njit(cache=True)
def _plane_z(
    xy: np.ndarray,
    plane: np.ndarray,
    coarse: np.ndarray,
    x0: float,
    y0: float,
    cell: float,
    n: int,
    factor: int,
    out: np.ndarray,
) -> None:
    for i in range(xy.shape[0]):
        x, y = xy[i, 0], xy[i, 1]
        ix = int(np.floor((x - x0) / cell))
        iy = int(np.floor((y - y0) / cell))
        if ix < 0 or ix >= n or iy < 0 or iy >= n:
            out[i], _, _ = _coarse_z(coarse, x, y, x0, y0, cell, n, factor)
        else:
            c = ix * n + iy
            cx, cy = x0 + (ix + 0.5) * cell, y0 + (iy + 0.5) * cell
            out[i] = plane[c, 0] + plane[c, 1] * (x - cx) + plane[c, 2] * (y - cy)
