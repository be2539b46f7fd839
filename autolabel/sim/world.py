"""The simulated world: ground, road paint, static structures, labelled actors and the ego path.

Everything is plain arrays so the numba ray caster and the OpenCV renderer read the same geometry.
All coordinates are in the world frame (x east, y north, z up, metres); time is seconds since the
start of the drive (``t_s``) on a uniform grid ``t_s = k * dt_s``.

Boxes use the project convention (geometric centre, ``l, w, h``, yaw about +z): ``(N, 7)`` rows
``x, y, z, l, w, h, yaw``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np
from scipy.spatial.transform import Rotation

from calibration import SE3


class Surface(IntEnum):
    """Surface material codes (lidar intensity and camera colour depend on them)."""

    GROUND = 0  # grass / dirt off the road
    ROAD = 1  # asphalt
    MARKING = 2  # painted lines
    KERB = 3
    BUILDING = 4
    WALL = 5
    POLE = 6
    VEGETATION = 7
    OBJECT = 8  # a labelled actor (car, pedestrian, ...)
    SKY = 9  # no return


@dataclass(frozen=True, eq=False)
class Ground:
    """Height field ``z(x, y) = slope_x * x + slope_y * y + sum_k a_k sin(fx_k x + fy_k y + phase_k)``.

    Attributes:
        slope: (2,) ``slope_x, slope_y`` (dimensionless, e.g. 0.01 = 1 %).
        waves: (K, 4) rows ``a_m, fx_rad_per_m, fy_rad_per_m, phase_rad`` (gentle undulation).
        road_rects: (R, 5) oriented road rectangles ``cx, cy, length, width, yaw`` (asphalt).
        marking_rects: (M, 5) oriented painted rectangles on the road, same layout.
    """

    slope: np.ndarray
    waves: np.ndarray
    road_rects: np.ndarray
    marking_rects: np.ndarray

    def height(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Ground height (same shape as ``x``)."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        z = self.slope[0] * x + self.slope[1] * y
        for a, fx, fy, phase in self.waves:
            z = z + a * np.sin(fx * x + fy * y + phase)
        return z

    def surface(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Surface code (GROUND, ROAD or MARKING) of ground points; same shape as ``x``."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        out = np.full(x.shape, Surface.GROUND, dtype=np.int8)
        out[_in_rects(x, y, self.road_rects)] = Surface.ROAD
        out[_in_rects(x, y, self.marking_rects)] = Surface.MARKING
        return out


def _in_rects(x: np.ndarray, y: np.ndarray, rects: np.ndarray) -> np.ndarray:
    inside = np.zeros(x.shape, dtype=bool)
    for cx, cy, length, width, yaw in rects:
        c, s = np.cos(yaw), np.sin(yaw)
        dx, dy = x - cx, y - cy
        inside |= (np.abs(c * dx + s * dy) <= length / 2) & (np.abs(-s * dx + c * dy) <= width / 2)
    return inside


@dataclass(frozen=True, eq=False)
class StaticStructures:
    """Unlabelled static geometry as upright boxes (buildings, walls, kerbs, poles, vegetation).

    Attributes:
        boxes: (S, 7) world boxes; bottoms rest on (or sink slightly into) the ground.
        surface: (S,) int8 :class:`Surface` codes.
        colour: (S, 3) uint8 RGB base colour for the camera renderer.
    """

    boxes: np.ndarray
    surface: np.ndarray
    colour: np.ndarray


@dataclass(frozen=True, eq=False)
class Actors:
    """Labelled objects (static and dynamic) with trajectories sampled on the world's time grid.

    Attributes:
        category: A nuScenes category names ("vehicle.car", "human.pedestrian.adult", ...).
        size_lwh: (A, 3) box sizes.
        colour: (A, 3) uint8 RGB, unique per actor (the camera draws the object in it).
        poses: (A, T, 4) ``x, y, z_centre, yaw`` per time step (z is the box's geometric centre).
        has_rider: (A,) bool, for bicycles and motorcycles.
    """

    category: tuple[str, ...]
    size_lwh: np.ndarray
    colour: np.ndarray
    poses: np.ndarray
    has_rider: np.ndarray

    def __len__(self) -> int:
        return len(self.category)


@dataclass(frozen=True, eq=False)
class World:
    """One static world plus the actors and ego path of one drive.

    Attributes:
        dt_s: time step of the trajectory grids.
        ground, structures, actors: geometry (see the classes).
        ego_poses: (T, 6) ``x, y, z, yaw, pitch, roll`` of the ego frame (rear axle on the ground).
    """

    dt_s: float
    ground: Ground
    structures: StaticStructures
    actors: Actors
    ego_poses: np.ndarray

    @property
    def duration_s(self) -> float:
        return (len(self.ego_poses) - 1) * self.dt_s


def interpolate_track(poses: np.ndarray, dt_s: float, t_s: float) -> np.ndarray:
    """Linear interpolation of a ``(T, D)`` pose grid at ``t_s``; columns named ``yaw``-like are not
    special-cased, so callers keep angles unwrapped (continuous) in the grids. Clamped at the ends."""
    k = min(max(t_s / dt_s, 0.0), len(poses) - 1.0)
    k0 = min(int(np.floor(k)), len(poses) - 2) if len(poses) > 1 else 0
    if len(poses) == 1:
        return poses[0].copy()
    a = k - k0
    return (1.0 - a) * poses[k0] + a * poses[k0 + 1]


def _actor_poses_at(actors: Actors, dt_s: float, t_s: float) -> np.ndarray:
    """(A, 4) interpolated actor poses (all tracks share one grid, so one weight serves all)."""
    steps = actors.poses.shape[1]
    if steps == 1:
        return actors.poses[:, 0].copy()
    k = min(max(t_s / dt_s, 0.0), steps - 1.0)
    k0 = min(int(np.floor(k)), steps - 2)
    a = k - k0
    return (1.0 - a) * actors.poses[:, k0] + a * actors.poses[:, k0 + 1]


def actor_boxes_at(actors: Actors, dt_s: float, t_s: float) -> np.ndarray:
    """(A, 7) world boxes of all actors at ``t_s``."""
    if not len(actors):
        return np.zeros((0, 7))
    poses = _actor_poses_at(actors, dt_s, t_s)
    return np.column_stack([poses[:, :3], actors.size_lwh, poses[:, 3]])


def actor_velocities_at(actors: Actors, dt_s: float, t_s: float) -> np.ndarray:
    """(A, 2) world velocities (m/s) by central difference over one grid step."""
    if not len(actors):
        return np.zeros((0, 2))
    a = _actor_poses_at(actors, dt_s, t_s - dt_s / 2)
    b = _actor_poses_at(actors, dt_s, t_s + dt_s / 2)
    return (b[:, :2] - a[:, :2]) / dt_s


def ego_pose_rows_at(world: World, t_s: np.ndarray) -> np.ndarray:
    """(Q, 6) interpolated ``x, y, z, yaw, pitch, roll`` of the ego at times ``t_s`` (Q,)."""
    return np.stack([interpolate_track(world.ego_poses, world.dt_s, float(t)) for t in np.atleast_1d(t_s)])


def world_SE3_ego_at(world: World, t_s: float) -> SE3:
    """The ego pose at ``t_s`` (rotation ``Rz(yaw) Ry(pitch) Rx(roll)``)."""
    x, y, z, yaw, pitch, roll = ego_pose_rows_at(world, np.array([t_s]))[0]
    return SE3(Rotation.from_euler("ZYX", [yaw, pitch, roll]).as_matrix(), (x, y, z))
