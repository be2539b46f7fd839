"""Synthetic keyframe clouds for the detector tests: a tiny ray caster and one simulated keyframe.

``cast`` shoots an HDL-32E-like beam pattern from the lidar position over a ground that rises along +x with a
constant slope and steps up by a kerb at ``y >= kerb_y_m``, hitting upright boxes (each moving with its own
velocity), sweep by sweep. Only surfaces facing the sensor and not hidden by nearer ones are hit, with range
noise, so every cloud is "what the sensor sees". Columns ``x, y, z, intensity, dt_s`` as the fusion stage makes
them; ``dt_s`` is ``-k * period`` for sweep ``k`` (sweep 0 is the keyframe's).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import pytest

from autolabel.categories import Category, category_from_nuscenes
from autolabel.sim.lidar import simulate_sweep
from autolabel.sim.scenario import TIME_MARGIN_S, Profile, build_site, build_world
from autolabel.sim.sensors import LIDAR_NAME, LidarModel, simulated_rig
from autolabel.sim.world import actor_boxes_at, actor_velocities_at, world_SE3_ego_at
from calibration import EGO_FRAME, WORLD_FRAME, Boxes3D
from fusion.aggregate import PoseTrack, SweepInput, aggregate

SENSOR_XYZ = np.array([0.943, 0.0, 1.84])
ELEVATIONS_DEG = np.linspace(-30.67, 10.67, 32)


@dataclass(frozen=True)
class SyntheticScene:
    """Boxes (B, 7) at the keyframe time with velocities (B, 2) m/s, on a ground ``z = slope * x`` plus
    ``kerb_m`` where ``y >= kerb_y_m``."""

    boxes: np.ndarray
    velocity: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    slope: float = 0.0
    kerb_y_m: float = np.inf
    kerb_m: float = 0.0

    def ground_z(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self.slope * x + np.where(y >= self.kerb_y_m, self.kerb_m, 0.0)


@dataclass(frozen=True, eq=False)
class SyntheticCloud:
    points: np.ndarray  # (N, 5) float32
    hit: np.ndarray  # (N,) int: box index, -1 ground
    scene: SyntheticScene

    @property
    def gt(self) -> Boxes3D:
        return Boxes3D(self.scene.boxes, EGO_FRAME)


def box_rows(*rows: tuple[float, ...], slope: float = 0.0) -> np.ndarray:
    """(B, 7) boxes from ``(x, y, l, w, h, yaw)`` rows standing on the ground ``z = slope * x``."""
    out = np.array([[x, y, slope * x + h / 2, l, w, h, yaw] for x, y, l, w, h, yaw in rows], dtype=np.float64)
    return out.reshape(-1, 7)


def _ray_boxes(origin: np.ndarray, dirs: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest hit distance (R,) and box index (R,) of rays against upright boxes (slab test in box frames)."""
    best = np.full(len(dirs), np.inf)
    index = np.full(len(dirs), -1)
    for b, (cx, cy, cz, l, w, h, yaw) in enumerate(boxes):
        c, s = np.cos(yaw), np.sin(yaw)
        o = origin - np.array([cx, cy, cz])
        o_local = np.array([c * o[0] + s * o[1], -s * o[0] + c * o[1], o[2]])
        d_local = np.stack([c * dirs[:, 0] + s * dirs[:, 1], -s * dirs[:, 0] + c * dirs[:, 1], dirs[:, 2]], -1)
        half = np.array([l, w, h]) / 2
        with np.errstate(divide="ignore", invalid="ignore"):
            t1 = (-half - o_local) / d_local
            t2 = (half - o_local) / d_local
        t_near = np.nanmax(np.minimum(t1, t2), axis=1)
        t_far = np.nanmin(np.maximum(t1, t2), axis=1)
        hit = (t_near <= t_far) & (t_near > 0) & (t_near < best)
        best[hit], index[hit] = t_near[hit], b
    return best, index


def _ray_ground(origin: np.ndarray, dirs: np.ndarray, scene: SyntheticScene) -> np.ndarray:
    """Nearest hit distance (R,) of rays on the sloped ground with its kerb (road, kerb top, kerb face)."""
    best = np.full(len(dirs), np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        for offset, upper in ((0.0, False), (scene.kerb_m, True)):
            t = (offset + scene.slope * origin[0] - origin[2]) / (dirs[:, 2] - scene.slope * dirs[:, 0])
            y = origin[1] + t * dirs[:, 1]
            ok = (t > 0) & ((y >= scene.kerb_y_m) if upper else (y < scene.kerb_y_m))
            best = np.where(ok & (t < best), t, best)
        if np.isfinite(scene.kerb_y_m):
            t = (scene.kerb_y_m - origin[1]) / dirs[:, 1]
            p = origin[None] + t[:, None] * dirs
            base = scene.slope * p[:, 0]
            ok = (t > 0) & (p[:, 2] >= base) & (p[:, 2] <= base + scene.kerb_m)
            best = np.where(ok & (t < best), t, best)
    return best


def cast(
    scene: SyntheticScene,
    sweeps: int = 10,
    period_s: float = 0.05,
    azimuth_steps: int = 1100,
    noise_m: float = 0.02,
    max_range_m: float = 80.0,
    seed: int = 0,
) -> SyntheticCloud:
    """Cast ``sweeps`` sweeps of the scene (boxes move by ``velocity * dt``) into one keyframe cloud."""
    rng = np.random.default_rng(seed)
    elevation = np.radians(ELEVATIONS_DEG)
    clouds, hits = [], []
    velocity = scene.velocity if len(scene.velocity) else np.zeros((len(scene.boxes), 2))
    for k in range(sweeps):
        dt = -k * period_s
        azimuth = (np.arange(azimuth_steps) + rng.uniform()) * (2 * np.pi / azimuth_steps)
        el, az = np.meshgrid(elevation, azimuth)
        dirs = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], -1).reshape(-1, 3)
        boxes = scene.boxes.copy()
        boxes[:, :2] += velocity * dt
        t_box, index = _ray_boxes(SENSOR_XYZ, dirs, boxes)
        t_ground = _ray_ground(SENSOR_XYZ, dirs, scene)
        t = np.minimum(t_box, t_ground)
        keep = t < max_range_m
        t = t[keep] + noise_m * rng.standard_normal(int(keep.sum()))
        xyz = SENSOR_XYZ + t[:, None] * dirs[keep]
        hit = np.where(t_box[keep] <= t_ground[keep], index[keep], -1)
        cloud = np.column_stack([xyz, np.full(len(xyz), 20.0), np.full(len(xyz), dt)])
        clouds.append(cloud)
        hits.append(hit)
    return SyntheticCloud(np.concatenate(clouds).astype(np.float32), np.concatenate(hits), scene)


@pytest.fixture(scope="session")
def synth() -> SimpleNamespace:
    """The helpers for test modules (``--import-mode=importlib`` cannot import conftest): ``synth.Scene``,
    ``synth.boxes`` (:func:`box_rows`) and ``synth.cast`` (:func:`cast`)."""
    return SimpleNamespace(Scene=SyntheticScene, boxes=box_rows, cast=cast)


# --------------------------------------------------------------------------------------------- simulated keyframe
@dataclass(frozen=True, eq=False)
class SimKeyframe:
    points: np.ndarray  # (N, 5) float32 keyframe cloud in the ego frame (10 de-skewed sweeps)
    instance: np.ndarray  # (N,) actor hit, -1 none
    gt: Boxes3D  # (A,) actor boxes in the ego frame at the keyframe time
    categories: tuple[Category, ...]
    speed_mps: np.ndarray  # (A,)


@pytest.fixture(scope="session")
def sim_keyframe() -> SimKeyframe:
    """One 10-sweep keyframe of a simulated urban drive (lidar only: no cameras are rendered, about 1 s)."""
    site_seed = 3000
    site = build_site(Profile.URBAN, site_seed)
    world = build_world(site, site_seed, 0, 2.0)
    lidar = LidarModel()
    ego_SE3_lidar = simulated_rig().lidars[LIDAR_NAME].ego_SE3_lidar
    key_t = TIME_MARGIN_S + 1.0
    sweeps, instance = [], []
    for k in range(10):
        t = key_t - (9 - k) * lidar.period_s
        sweep = simulate_sweep(world, lidar, ego_SE3_lidar, t, seed=k)
        sweeps.append(
            SweepInput(
                sweep.points[:, :4], round(t * 1e6), world_SE3_ego_at(world, t), ego_SE3_lidar, sweep.time_offset_s
            )
        )
        instance.append(sweep.instance)
    track = PoseTrack.from_poses([s.timestamp_us for s in sweeps], [s.world_SE3_ego for s in sweeps])
    ref = world_SE3_ego_at(world, key_t)
    points, _ = aggregate(sweeps, ref, round(key_t * 1e6), track)
    gt = Boxes3D(actor_boxes_at(world.actors, world.dt_s, key_t), WORLD_FRAME).transform(ref.inverse(), EGO_FRAME)
    speed = np.hypot(*actor_velocities_at(world.actors, world.dt_s, key_t).T)
    categories = tuple(category_from_nuscenes(c) for c in world.actors.category)
    return SimKeyframe(points, np.concatenate(instance), gt, categories, speed)
