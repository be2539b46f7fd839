"""Rotating multi-beam lidar ray caster (numba) over a :class:`~autolabel.sim.world.World`.

One sweep is ``lidar.azimuth_steps`` firings spread evenly over one revolution centred on the sweep
timestamp ``t_s``; each firing fires every beam at once::

    firing k:  t_k = t_s - period/2 + k * period/steps           (k = 0 .. steps-1)
    azimuth in the ego frame:  phi_k = pi - 2 pi k / steps       (clockwise seen from above)

           ego +x (forward), fired at t_s (k = steps/2)
                 ^
                 |     the beam turns clockwise: back -> left -> forward -> right -> back
      left  <----+---->  right
                 |
           ego -x (backward), fired at t_s - period/2 (k = 0)

The sensor moves during the sweep (ego pose interpolated at every ``t_k``) and so do the actors
(their pose grids interpolated at every ``t_k``). A point is written in the lidar frame *at its own
capture time* (raw, motion-distorted, as a spinning lidar delivers it): ``direction_lidar * range``.

Intersections: the ground height field (Lipschitz-bounded ray march with a distance-growing minimum
step, the crossing bracket then shrunk below ``GROUND_REFINE_M`` by guarded false position with a
bisection fallback; closed form on a plane) and upright oriented boxes (slab test in the box frame,
after a per-firing bounding-circle cull). The nearest hit wins, so occlusion is real. Rays without
a hit within ``max_range_m`` (the sky) give no point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import MappingProxyType

import numba
import numpy as np

from autolabel.sim.sensors import LidarModel
from autolabel.sim.world import Surface, World
from calibration import SE3

NO_INSTANCE = -1
GROUND_REFINE_M = 5e-4  # ground refinement stops once the bracket along the ray is shorter than this
_MIN_STEP_M = 0.05  # ground march minimum step: _MIN_STEP_M + _MIN_STEP_PER_M * distance
_MIN_STEP_PER_M = 0.01
_MAX_CULL_HALF_ANGLE_RAD = 1.0  # beams of one firing spread wider than this (near-vertical): no cull
_REFINE_SECANT_ITERATIONS = 8  # guarded false-position steps before falling back to bisection
_RECT_CELL_M = 2.0  # grid cell for looking up road / marking rectangles under ground hits

# Intensity (0-255) range per surface; each box/actor draws a consistent value inside its range.
INTENSITY_RANGE = MappingProxyType(
    {
        Surface.GROUND: (2.0, 15.0),
        Surface.ROAD: (5.0, 20.0),
        Surface.MARKING: (60.0, 120.0),
        Surface.KERB: (20.0, 40.0),
        Surface.BUILDING: (20.0, 60.0),
        Surface.WALL: (20.0, 60.0),
        Surface.POLE: (40.0, 90.0),
        Surface.VEGETATION: (3.0, 25.0),
        Surface.OBJECT: (10.0, 80.0),
        Surface.SKY: (0.0, 0.0),
    }
)
INTENSITY_NOISE = 1.5  # sigma of the additive intensity noise
_INCIDENCE_WEIGHT = 0.3  # intensity *= 1 - w + w * |cos(incidence)|
_RANGE_FALLOFF = 0.25  # intensity *= 1 - falloff * range / max_range
_HASH_SALT_STRUCTURE = 0x9E3779B1
_HASH_SALT_ACTOR = 0x85EBCA77
# Surface codes as plain ints (numba freezes module globals into the kernels).
_GROUND = int(Surface.GROUND)
_ROAD = int(Surface.ROAD)
_MARKING = int(Surface.MARKING)
_OBJECT = int(Surface.OBJECT)
_SKY = int(Surface.SKY)


@dataclass(frozen=True, eq=False)
class SimSweep:
    """One simulated lidar sweep, in firing order (firing-major, then beam).

    Attributes:
        points: (N, 5) float32 ``x, y, z, intensity, ring`` in the lidar frame at each point's own
            capture time (nuScenes ``.pcd.bin`` columns; intensity 0-255, ring = beam index).
        time_offset_s: (N,) float32 capture time minus the sweep timestamp, in [-period/2, period/2).
        instance: (N,) int32 index into ``world.actors`` of the actor hit, ``NO_INSTANCE`` otherwise.
        surface: (N,) int8 :class:`Surface` code of what was hit.
    """

    points: np.ndarray
    time_offset_s: np.ndarray
    instance: np.ndarray
    surface: np.ndarray

    def __len__(self) -> int:
        return int(self.points.shape[0])


def firing_offsets_s(lidar: LidarModel) -> np.ndarray:
    """(steps,) float64 firing times minus the sweep timestamp: ``-period/2 + k * period/steps``."""
    k = np.arange(lidar.azimuth_steps, dtype=np.float64)
    return (k - lidar.azimuth_steps / 2.0) * (lidar.period_s / lidar.azimuth_steps)  # exactly 0 at k = steps/2


def ego_poses_at(world: World, times_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``world_SE3_ego`` at ``times_s`` (linear in x, y, z, yaw, pitch, roll; clamped at the ends).

    Returns:
        rotations (N, 3, 3) ``Rz(yaw) Ry(pitch) Rx(roll)`` and translations (N, 3).
    """
    times = np.asarray(times_s, dtype=np.float64).reshape(-1)
    grid = np.arange(len(world.ego_poses), dtype=np.float64) * world.dt_s
    cols = np.stack([np.interp(times, grid, world.ego_poses[:, c]) for c in range(6)], axis=1)
    return rotation_zyx(cols[:, 3], cols[:, 4], cols[:, 5]), cols[:, :3]


def rotation_zyx(yaw: np.ndarray, pitch: np.ndarray, roll: np.ndarray) -> np.ndarray:
    """(N, 3, 3) ``Rz(yaw) @ Ry(pitch) @ Rx(roll)`` (scipy ``Rotation.from_euler("ZYX", ...)``, written
    out because scipy's batched constructor costs milliseconds per sweep)."""
    cy, sy = np.cos(yaw), np.sin(yaw)
    cp, sp = np.cos(pitch), np.sin(pitch)
    cr, sr = np.cos(roll), np.sin(roll)
    out = np.empty((len(cy), 3, 3))
    out[:, 0, 0] = cy * cp
    out[:, 0, 1] = cy * sp * sr - sy * cr
    out[:, 0, 2] = cy * sp * cr + sy * sr
    out[:, 1, 0] = sy * cp
    out[:, 1, 1] = sy * sp * sr + cy * cr
    out[:, 1, 2] = sy * sp * cr - cy * sr
    out[:, 2, 0] = -sp
    out[:, 2, 1] = cp * sr
    out[:, 2, 2] = cp * cr
    return out


def simulate_sweep(world: World, lidar: LidarModel, ego_SE3_lidar: SE3, t_s: float, seed: int) -> SimSweep:
    """Cast one sweep centred on ``t_s``; see the module docstring for the timing and frames.

    Randomness (range noise, dropout, intensity noise; one float32 (steps, beams) draw each, in that order)
    comes from ``np.random.default_rng(seed)`` independently of what is hit, so equal seeds give
    byte-identical sweeps and the same seed pairs rays across differently configured models.
    """
    steps = int(lidar.azimuth_steps)
    elevations = np.radians(np.asarray(lidar.elevations_deg, dtype=np.float64).reshape(-1))
    n_beams = len(elevations)
    offsets = firing_offsets_s(lidar)
    times = t_s + offsets

    # Beam directions in the lidar frame; the lidar's azimuth is the ego azimuth minus its mount yaw.
    mount_yaw = math.atan2(ego_SE3_lidar.rotation[1, 0], ego_SE3_lidar.rotation[0, 0])
    azimuth = np.pi - 2.0 * np.pi * np.arange(steps) / steps - mount_yaw  # (K,)
    cos_az, sin_az = np.cos(azimuth), np.sin(azimuth)
    cos_el, sin_el = np.cos(elevations), np.sin(elevations)

    # Sensor pose of every firing: world_SE3_lidar(t_k) = world_SE3_ego(t_k) @ ego_SE3_lidar.
    ego_rot, ego_trans = ego_poses_at(world, times)
    rot = np.ascontiguousarray(ego_rot @ ego_SE3_lidar.rotation)
    origins = np.ascontiguousarray(ego_trans + ego_rot @ ego_SE3_lidar.translation)

    structures, actors, ground = world.structures, world.actors, world.ground
    n_steps = np.asarray(actors.poses).shape[1] if len(actors) else 1
    grid = np.clip(times / world.dt_s, 0.0, max(n_steps - 1.0, 0.0))
    k0 = np.minimum(np.floor(grid).astype(np.int64), max(n_steps - 2, 0))
    alpha = grid - k0 if n_steps > 1 else np.zeros(steps)

    range_m = np.empty((steps, n_beams))
    surface = np.empty((steps, n_beams), dtype=np.int8)
    index = np.empty((steps, n_beams), dtype=np.int32)
    cos_incidence = np.empty((steps, n_beams))
    _cast_sweep(
        origins,
        rot,
        cos_az,
        sin_az,
        cos_el,
        sin_el,
        _prepare_boxes(np.asarray(structures.boxes, dtype=np.float64).reshape(-1, 7)),
        np.ascontiguousarray(structures.surface, dtype=np.int8).reshape(-1),
        np.ascontiguousarray(actors.poses, dtype=np.float64).reshape(len(actors), n_steps, 4),
        np.ascontiguousarray(actors.size_lwh, dtype=np.float64).reshape(-1, 3),
        k0,
        alpha,
        np.ascontiguousarray(ground.slope, dtype=np.float64).reshape(2),
        np.ascontiguousarray(ground.waves, dtype=np.float64).reshape(-1, 4),
        _prepare_rects(ground.road_rects),
        _prepare_rects(ground.marking_rects),
        float(lidar.max_range_m),
        range_m,
        surface,
        index,
        cos_incidence,
    )

    rng = np.random.default_rng(seed)
    range_noise = rng.standard_normal((steps, n_beams), dtype=np.float32)
    keep_draw = rng.random((steps, n_beams), dtype=np.float32)
    intensity_noise = rng.standard_normal((steps, n_beams), dtype=np.float32)

    flat = np.flatnonzero((surface != _SKY) & (keep_draw >= lidar.dropout))  # firing-major ray ids
    firing, beam = np.divmod(flat, n_beams)
    true_range = range_m.ravel()[flat]
    hit_surface = surface.ravel()[flat]
    hit_index = index.ravel()[flat]
    points = np.empty((len(flat), 5), dtype=np.float32)
    measured = true_range + lidar.range_noise_m * range_noise.ravel()[flat]
    horizontal = cos_el[beam] * measured
    points[:, 0] = cos_az[firing] * horizontal
    points[:, 1] = sin_az[firing] * horizontal
    points[:, 2] = sin_el[beam] * measured
    intensity = _intensity(hit_surface, hit_index, true_range, cos_incidence.ravel()[flat], lidar.max_range_m)
    points[:, 3] = np.clip(intensity + INTENSITY_NOISE * intensity_noise.ravel()[flat], 0.0, 255.0)
    points[:, 4] = beam
    instance = np.where(hit_surface == _OBJECT, hit_index, NO_INSTANCE).astype(np.int32)
    return SimSweep(points, offsets[firing].astype(np.float32), instance, hit_surface)


# --------------------------------------------------------------------------------------------- numpy helpers
def _prepare_boxes(boxes: np.ndarray) -> np.ndarray:
    """(N, 7) boxes -> (N, 9) ``x, y, z, cos(yaw), sin(yaw), l/2, w/2, h/2, bounding radius``."""
    out = np.empty((len(boxes), 9))
    out[:, :3] = boxes[:, :3]
    out[:, 3] = np.cos(boxes[:, 6])
    out[:, 4] = np.sin(boxes[:, 6])
    out[:, 5:8] = boxes[:, 3:6] / 2.0
    out[:, 8] = np.hypot(boxes[:, 3], boxes[:, 4]) / 2.0
    return out


def _prepare_rects(rects: np.ndarray) -> np.ndarray:
    """(R, 5) ``cx, cy, length, width, yaw`` -> (R, 8) ``cx, cy, cos, sin, l/2, w/2, aabb_x/2, aabb_y/2``."""
    rects = np.asarray(rects, dtype=np.float64).reshape(-1, 5)
    out = np.empty((len(rects), 8))
    out[:, :2] = rects[:, :2]
    out[:, 2] = np.cos(rects[:, 4])
    out[:, 3] = np.sin(rects[:, 4])
    out[:, 4:6] = rects[:, 2:4] / 2.0
    out[:, 6] = np.abs(out[:, 2]) * out[:, 4] + np.abs(out[:, 3]) * out[:, 5]
    out[:, 7] = np.abs(out[:, 3]) * out[:, 4] + np.abs(out[:, 2]) * out[:, 5]
    return out


def _unit_hash(index: np.ndarray, salt: int) -> np.ndarray:
    """Deterministic pseudo-random values in [0, 1) per non-negative integer index."""
    x = ((index.astype(np.uint64) + np.uint64(1)) * np.uint64(2654435761)) ^ np.uint64(salt)
    x = (x * np.uint64(0x45D9F3B)) & np.uint64(0xFFFFFFFF)
    x ^= x >> np.uint64(16)
    return x.astype(np.float64) / float(2**32)


def _intensity_table(column: int) -> np.ndarray:
    """(max code + 1,) lower (column 0) or upper (1) intensity bound indexed by Surface code."""
    table = np.zeros(max(Surface) + 1)
    for code, bounds in INTENSITY_RANGE.items():
        table[code] = bounds[column]
    return table


_INTENSITY_LO, _INTENSITY_HI = _intensity_table(0), _intensity_table(1)


def _intensity(
    surface: np.ndarray, index: np.ndarray, range_m: np.ndarray, cos_incidence: np.ndarray, max_range_m: float
) -> np.ndarray:
    """(N,) noise-free intensity of hits: per-surface range, per-object hash, incidence and range falloff."""
    lo, hi = _INTENSITY_LO[surface], _INTENSITY_HI[surface]
    u = np.full(surface.shape, 0.5)
    is_actor = surface == _OBJECT
    is_structure = (index >= 0) & ~is_actor
    u[is_structure] = _unit_hash(index[is_structure], _HASH_SALT_STRUCTURE)
    u[is_actor] = _unit_hash(index[is_actor], _HASH_SALT_ACTOR)
    incidence = 1.0 - _INCIDENCE_WEIGHT + _INCIDENCE_WEIGHT * np.abs(cos_incidence)
    falloff = 1.0 - _RANGE_FALLOFF * np.clip(range_m / max_range_m, 0.0, 1.0)
    return (lo + (hi - lo) * u) * incidence * falloff


# --------------------------------------------------------------------------------------------- numba kernels
@numba.njit(cache=True, inline="always")
def _ground_height(x: float, y: float, slope: np.ndarray, waves: np.ndarray) -> float:
    z = slope[0] * x + slope[1] * y
    for w in range(waves.shape[0]):
        z += waves[w, 0] * math.sin(waves[w, 1] * x + waves[w, 2] * y + waves[w, 3])
    return z


@numba.njit(cache=True, inline="always")
def _ray_above_ground(
    t: float, ox: float, oy: float, oz: float, dx: float, dy: float, dz: float, slope: np.ndarray, waves: np.ndarray
) -> float:
    """Height of the ray point at distance ``t`` above the ground below it."""
    return oz + t * dz - _ground_height(ox + t * dx, oy + t * dy, slope, waves)


@numba.njit(cache=True)
def _refine_ground(
    a: float,
    fa: float,
    b: float,
    fb: float,
    ox: float,
    oy: float,
    oz: float,
    dx: float,
    dy: float,
    dz: float,
    slope: np.ndarray,
    waves: np.ndarray,
) -> float:
    """Shrink a bracket ``f(a) > 0 >= f(b)`` below ``GROUND_REFINE_M`` and return its midpoint.

    Each step evaluates the false-position point and a probe half a tolerance past it (which closes
    the bracket at once where the ground is locally flat); after ``_REFINE_SECANT_ITERATIONS`` steps
    it bisects, so the bracket always shrinks.
    """
    iteration = 0
    while b - a > GROUND_REFINE_M:
        if iteration < _REFINE_SECANT_ITERATIONS and fa - fb > 0.0:
            m = min(max((a * fb - b * fa) / (fb - fa), a + 0.1 * GROUND_REFINE_M), b - 0.1 * GROUND_REFINE_M)
        else:
            m = 0.5 * (a + b)
        iteration += 1
        fm = _ray_above_ground(m, ox, oy, oz, dx, dy, dz, slope, waves)
        if fm > 0.0:
            a, fa = m, fm
            probe = m + 0.5 * GROUND_REFINE_M
        else:
            b, fb = m, fm
            probe = m - 0.5 * GROUND_REFINE_M
        if a < probe < b:
            fp = _ray_above_ground(probe, ox, oy, oz, dx, dy, dz, slope, waves)
            if fp > 0.0:
                a, fa = probe, fp
            else:
                b, fb = probe, fp
    return 0.5 * (a + b)


@numba.njit(cache=True)
def _ground_hit(
    ox: float,
    oy: float,
    oz: float,
    dx: float,
    dy: float,
    dz: float,
    slope: np.ndarray,
    waves: np.ndarray,
    t_max: float,
) -> float:
    """Distance along the unit ray to the ground height field, or -1 when none within ``t_max``.

    ``f(t) = ray_z - ground_z`` is a plane term ``h0 + h1 t`` minus waves bounded by ``amp`` whose
    slope along the ray is bounded by ``lip``: a crossing can only lie where ``|h0 + h1 t| <= amp``,
    and from a height ``f > 0`` the next crossing is at least ``f / (lip - h1)`` away. The march
    takes that safe step but at least ``_MIN_STEP_M + _MIN_STEP_PER_M * t``.
    """
    h0 = oz - slope[0] * ox - slope[1] * oy
    h1 = dz - slope[0] * dx - slope[1] * dy
    amp = 0.0
    lip = 0.0
    for w in range(waves.shape[0]):
        amp += abs(waves[w, 0])
        lip += abs(waves[w, 0]) * abs(waves[w, 1] * dx + waves[w, 2] * dy)
    if amp == 0.0:
        if h1 >= 0.0 or h0 <= 0.0:
            return -1.0
        t = h0 / -h1
        return t if t <= t_max else -1.0
    if h1 >= 0.0:
        if h0 > amp:
            return -1.0
        t_lo = 0.0
        t_hi = t_max if h1 == 0.0 else min(t_max, (amp - h0) / h1)
    else:
        t_lo = max(0.0, (h0 - amp) / -h1)
        t_hi = min(t_max, (h0 + amp) / -h1)
    if t_lo > t_hi:
        return -1.0
    rate = lip - h1  # upper bound of -df/dt
    t = t_lo
    f = _ray_above_ground(t, ox, oy, oz, dx, dy, dz, slope, waves)
    if f <= 0.0:
        return -1.0 if t == 0.0 else t  # origin under the ground, or a crest touched exactly
    if rate <= 0.0:
        return -1.0
    while t < t_hi:
        t1 = min(t + max(f / rate, _MIN_STEP_M + _MIN_STEP_PER_M * t), t_hi)
        f1 = _ray_above_ground(t1, ox, oy, oz, dx, dy, dz, slope, waves)
        if f1 <= 0.0:
            return _refine_ground(t, f, t1, f1, ox, oy, oz, dx, dy, dz, slope, waves)
        t, f = t1, f1
    return -1.0


@numba.njit(cache=True, inline="always")
def _slab_axis(
    o: float, d: float, half: float, t_near: float, t_far: float, cos_near: float
) -> tuple[float, float, float]:
    """Clip ``[t_near, t_far]`` by one slab ``|o + t d| <= half``; ``cos_near`` = |d| of the entry slab."""
    if abs(d) < 1e-12:
        if abs(o) > half:
            return math.inf, -math.inf, cos_near
        return t_near, t_far, cos_near
    t1 = (-half - o) / d
    t2 = (half - o) / d
    if t1 > t2:
        t1, t2 = t2, t1
    if t1 > t_near:
        t_near = t1
        cos_near = abs(d)
    return t_near, min(t_far, t2), cos_near


@numba.njit(cache=True, inline="always")
def _box_hit(
    ox: float, oy: float, oz: float, dx: float, dy: float, dz: float, boxes: np.ndarray, i: int
) -> tuple[float, float]:
    """Entry distance of the unit ray into prepared box ``boxes[i]`` (see ``_prepare_boxes``), -1 when
    missed or starting inside, and ``|cos|`` of the incidence angle on the entered face."""
    c = boxes[i, 3]
    s = boxes[i, 4]
    rx = ox - boxes[i, 0]
    ry = oy - boxes[i, 1]
    t_near, t_far, cos_near = _slab_axis(c * rx + s * ry, c * dx + s * dy, boxes[i, 5], -math.inf, math.inf, 0.0)
    t_near, t_far, cos_near = _slab_axis(-s * rx + c * ry, -s * dx + c * dy, boxes[i, 6], t_near, t_far, cos_near)
    t_near, t_far, cos_near = _slab_axis(oz - boxes[i, 2], dz, boxes[i, 7], t_near, t_far, cos_near)
    if t_near > t_far or t_near <= 0.0:
        return -1.0, 0.0
    return t_near, cos_near


@numba.njit(cache=True, inline="always")
def _circle_in_wedge(
    ox: float,
    oy: float,
    ux: float,
    uy: float,
    sin_half: float,
    cos_half: float,
    boxes: np.ndarray,
    i: int,
    reach: float,
) -> bool:
    """Whether a ray from (ox, oy) inside the horizontal wedge (unit axis u, half angle) can reach the
    bounding cylinder of prepared box ``boxes[i]`` within ``reach`` (conservative)."""
    dx = boxes[i, 0] - ox
    dy = boxes[i, 1] - oy
    radius = boxes[i, 8]
    if dx * dx + dy * dy > (reach + radius) ** 2:
        return False
    along = dx * ux + dy * uy
    perp = abs(dx * uy - dy * ux)
    if along < 0.0 and along * cos_half + perp * sin_half < -radius:
        return False
    return perp * cos_half - abs(along) * sin_half <= radius


@numba.njit(cache=True, inline="always")
def _rect_cells(rects: np.ndarray, i: int, x0: float, y0: float, nx: int, ny: int) -> tuple[int, int, int, int]:
    """Inclusive cell ranges ``ix0, ix1, iy0, iy1`` covered by the bounding box of ``rects[i]``."""
    ix0 = max(math.floor((rects[i, 0] - rects[i, 6] - x0) / _RECT_CELL_M), 0)
    ix1 = min(math.floor((rects[i, 0] + rects[i, 6] - x0) / _RECT_CELL_M), nx - 1)
    iy0 = max(math.floor((rects[i, 1] - rects[i, 7] - y0) / _RECT_CELL_M), 0)
    iy1 = min(math.floor((rects[i, 1] + rects[i, 7] - y0) / _RECT_CELL_M), ny - 1)
    return ix0, ix1, iy0, iy1


@numba.njit(cache=True)
def _rect_grid(rects: np.ndarray, x0: float, y0: float, nx: int, ny: int) -> tuple[np.ndarray, np.ndarray]:
    """Bucket prepared rectangles (see ``_prepare_rects``) into an ``nx x ny`` grid of ``_RECT_CELL_M``
    cells from (x0, y0) by their bounding boxes: cell ``c = ix * ny + iy`` holds
    ``items[start[c]:start[c + 1]]``."""
    counts = np.zeros(nx * ny, dtype=np.int64)
    for i in range(rects.shape[0]):
        ix0, ix1, iy0, iy1 = _rect_cells(rects, i, x0, y0, nx, ny)
        for ix in range(ix0, ix1 + 1):
            for iy in range(iy0, iy1 + 1):
                counts[ix * ny + iy] += 1
    start = np.zeros(nx * ny + 1, dtype=np.int64)
    start[1:] = np.cumsum(counts)
    items = np.empty(start[-1], dtype=np.int64)
    cursor = start[:-1].copy()
    for i in range(rects.shape[0]):
        ix0, ix1, iy0, iy1 = _rect_cells(rects, i, x0, y0, nx, ny)
        for ix in range(ix0, ix1 + 1):
            for iy in range(iy0, iy1 + 1):
                items[cursor[ix * ny + iy]] = i
                cursor[ix * ny + iy] += 1
    return start, items


@numba.njit(cache=True, inline="always")
def _in_rects(
    x: float, y: float, rects: np.ndarray, start: np.ndarray, items: np.ndarray, x0: float, y0: float, nx: int, ny: int
) -> bool:
    """Whether (x, y) lies in any prepared rectangle of its grid cell (see ``_rect_grid``), edges included."""
    ix = math.floor((x - x0) / _RECT_CELL_M)
    iy = math.floor((y - y0) / _RECT_CELL_M)
    if ix < 0 or iy < 0 or ix >= nx or iy >= ny:
        return False
    c = ix * ny + iy
    for j in range(start[c], start[c + 1]):
        i = items[j]
        dx = x - rects[i, 0]
        dy = y - rects[i, 1]
        if (
            abs(rects[i, 2] * dx + rects[i, 3] * dy) <= rects[i, 4]
            and abs(-rects[i, 3] * dx + rects[i, 2] * dy) <= rects[i, 5]
        ):
            return True
    return False


@numba.njit(cache=True, parallel=True)
def _cast_sweep(
    origins: np.ndarray,
    rot: np.ndarray,
    cos_az: np.ndarray,
    sin_az: np.ndarray,
    cos_el: np.ndarray,
    sin_el: np.ndarray,
    s_boxes: np.ndarray,
    s_surface: np.ndarray,
    a_grid: np.ndarray,
    a_size: np.ndarray,
    a_k0: np.ndarray,
    a_alpha: np.ndarray,
    slope: np.ndarray,
    waves: np.ndarray,
    road: np.ndarray,
    marking: np.ndarray,
    max_range: float,
    out_range: np.ndarray,
    out_surface: np.ndarray,
    out_index: np.ndarray,
    out_cos: np.ndarray,
) -> None:
    """Nearest hit of every ray (K firings x B beams), written into the (K, B) ``out_*`` arrays.

    Args:
        origins, rot: (K, 3) and (K, 3, 3) ``world_SE3_lidar`` of every firing.
        cos_az, sin_az: (K,) firing azimuths and cos_el, sin_el: (B,) beam elevations in the lidar
            frame: beam direction ``(cos_el cos_az, cos_el sin_az, sin_el)``.
        s_boxes, s_surface: (S, 9) prepared static boxes and (S,) Surface codes.
        a_grid, a_size: (A, T, 4) actor pose grids and (A, 3) sizes; a_k0, a_alpha: (K,) grid index
            and weight of every firing time.
        slope, waves, road, marking: ground (road/marking prepared by ``_prepare_rects``).
        out_range: distance (NaN for none); out_surface: Surface code (SKY for none);
        out_index: structure or actor index (-1 for ground or none); out_cos: |cos| of incidence.
    """
    n_firings, n_beams = cos_az.shape[0], cos_el.shape[0]
    n_static = s_boxes.shape[0]
    n_actors = a_size.shape[0]
    # Road and marking rectangles bucketed over the area the sweep can reach.
    x0 = origins[:, 0].min() - max_range - _RECT_CELL_M
    y0 = origins[:, 1].min() - max_range - _RECT_CELL_M
    nx = int((origins[:, 0].max() + max_range + _RECT_CELL_M - x0) / _RECT_CELL_M) + 1
    ny = int((origins[:, 1].max() + max_range + _RECT_CELL_M - y0) / _RECT_CELL_M) + 1
    road_start, road_items = _rect_grid(road, x0, y0, nx, ny)
    mark_start, mark_items = _rect_grid(marking, x0, y0, nx, ny)
    for k in numba.prange(n_firings):
        ox = origins[k, 0]
        oy = origins[k, 1]
        oz = origins[k, 2]
        r = rot[k]
        dirs = np.empty((n_beams, 3))
        for b in range(n_beams):
            lx = cos_el[b] * cos_az[k]
            ly = cos_el[b] * sin_az[k]
            for j in range(3):
                dirs[b, j] = r[j, 0] * lx + r[j, 1] * ly + r[j, 2] * sin_el[b]

        # Horizontal wedge holding all beams of this firing, for the bounding-circle cull.
        ux = r[0, 0] * cos_az[k] + r[0, 1] * sin_az[k]
        uy = r[1, 0] * cos_az[k] + r[1, 1] * sin_az[k]
        norm = math.sqrt(ux * ux + uy * uy)
        cull = norm > 1e-3
        min_cos = 1.0
        if cull:
            ux /= norm
            uy /= norm
            for b in range(n_beams):
                h = math.sqrt(dirs[b, 0] ** 2 + dirs[b, 1] ** 2)
                if h < 1e-3:
                    cull = False
                    break
                min_cos = min(min_cos, (dirs[b, 0] * ux + dirs[b, 1] * uy) / h)
        half = math.acos(max(-1.0, min(1.0, min_cos))) + 1e-9
        cull = cull and half < _MAX_CULL_HALF_ANGLE_RAD
        sin_half = math.sin(half)
        cos_half = math.cos(half)

        s_cand = np.empty(n_static, dtype=np.int64)
        n_s = 0
        for i in range(n_static):
            if not cull or _circle_in_wedge(ox, oy, ux, uy, sin_half, cos_half, s_boxes, i, max_range):
                s_cand[n_s] = i
                n_s += 1
        a_boxes = np.empty((n_actors, 9))
        a_cand = np.empty(n_actors, dtype=np.int64)
        n_a = 0
        k0 = a_k0[k]
        w1 = a_alpha[k]
        k1 = min(k0 + 1, a_grid.shape[1] - 1)
        for i in range(n_actors):
            for j in range(3):
                a_boxes[i, j] = (1.0 - w1) * a_grid[i, k0, j] + w1 * a_grid[i, k1, j]
            yaw = (1.0 - w1) * a_grid[i, k0, 3] + w1 * a_grid[i, k1, 3]
            a_boxes[i, 3] = math.cos(yaw)
            a_boxes[i, 4] = math.sin(yaw)
            for j in range(3):
                a_boxes[i, 5 + j] = 0.5 * a_size[i, j]
            a_boxes[i, 8] = 0.5 * math.sqrt(a_size[i, 0] ** 2 + a_size[i, 1] ** 2)
            if not cull or _circle_in_wedge(ox, oy, ux, uy, sin_half, cos_half, a_boxes, i, max_range):
                a_cand[n_a] = i
                n_a += 1

        for b in range(n_beams):
            dx = dirs[b, 0]
            dy = dirs[b, 1]
            dz = dirs[b, 2]
            best = max_range
            surface = _SKY
            index = -1
            cos_inc = 0.0
            for j in range(n_s):
                t, c = _box_hit(ox, oy, oz, dx, dy, dz, s_boxes, s_cand[j])
                if 0.0 < t <= best:
                    best, surface, index, cos_inc = t, s_surface[s_cand[j]], s_cand[j], c
            for j in range(n_a):
                t, c = _box_hit(ox, oy, oz, dx, dy, dz, a_boxes, a_cand[j])
                if 0.0 < t <= best:
                    best, surface, index, cos_inc = t, _OBJECT, a_cand[j], c
            t = _ground_hit(ox, oy, oz, dx, dy, dz, slope, waves, best)
            if t > 0.0:
                best = t
                x = ox + t * dx
                y = oy + t * dy
                if _in_rects(x, y, marking, mark_start, mark_items, x0, y0, nx, ny):
                    surface = _MARKING
                elif _in_rects(x, y, road, road_start, road_items, x0, y0, nx, ny):
                    surface = _ROAD
                else:
                    surface = _GROUND
                index = -1
                gx = slope[0]
                gy = slope[1]
                for w in range(waves.shape[0]):
                    g = waves[w, 0] * math.cos(waves[w, 1] * x + waves[w, 2] * y + waves[w, 3])
                    gx += g * waves[w, 1]
                    gy += g * waves[w, 2]
                cos_inc = abs(dz - gx * dx - gy * dy) / math.sqrt(1.0 + gx * gx + gy * gy)
            out_range[k, b] = best if surface != _SKY else math.nan
            out_surface[k, b] = surface
            out_index[k, b] = index
            out_cos[k, b] = cos_inc
