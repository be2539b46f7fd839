"""Lidar ray caster: hand-built worlds with hand-computed hits, motion distortion, randomness."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from autolabel.sim.lidar import NO_INSTANCE, SimSweep, rotation_zyx, simulate_sweep
from autolabel.sim.sensors import LIDAR_NAME, LidarModel, simulated_rig
from autolabel.sim.world import Actors, Ground, StaticStructures, Surface, World

DT_S = 0.05
EGO_SE3_LIDAR = simulated_rig().lidars[LIDAR_NAME].ego_SE3_lidar
LIDAR_X_M, LIDAR_Z_M = 0.943, 1.84
NOISY = LidarModel(azimuth_steps=1200, range_noise_m=0.02, dropout=0.03)  # pinned: defaults may change
EXACT = dataclasses.replace(NOISY, range_noise_m=0.0, dropout=0.0)
STEPS = EXACT.azimuth_steps
PERIOD_S = EXACT.period_s


def flat_ground(road: np.ndarray | None = None, marking: np.ndarray | None = None) -> Ground:
    return Ground(
        np.zeros(2),
        np.zeros((0, 4)),
        np.zeros((0, 5)) if road is None else road,
        np.zeros((0, 5)) if marking is None else marking,
    )


def structures(boxes: list[list[float]], surfaces: list[Surface]) -> StaticStructures:
    n = len(boxes)
    return StaticStructures(
        np.array(boxes, dtype=np.float64).reshape(n, 7),
        np.array(surfaces, dtype=np.int8).reshape(n),
        np.zeros((n, 3), dtype=np.uint8),
    )


def actors(size_lwh: list[list[float]], poses: np.ndarray) -> Actors:
    n = len(size_lwh)
    return Actors(
        ("vehicle.car",) * n,
        np.array(size_lwh, dtype=np.float64).reshape(n, 3),
        np.zeros((n, 3), dtype=np.uint8),
        poses,
        np.zeros(n, dtype=bool),
    )


def world(
    ego_poses: np.ndarray,
    ground: Ground | None = None,
    static: StaticStructures | None = None,
    dynamic: Actors | None = None,
) -> World:
    n_steps = len(ego_poses)
    return World(
        DT_S,
        flat_ground() if ground is None else ground,
        structures([], []) if static is None else static,
        actors([], np.zeros((0, n_steps, 4))) if dynamic is None else dynamic,
        ego_poses,
    )


def static_ego(n_steps: int = 5, z_m: float = 0.0) -> np.ndarray:
    poses = np.zeros((n_steps, 6))
    poses[:, 2] = z_m
    return poses


def linear_ego(speed_mps: float, n_steps: int = 5, yaw_rate: float = 0.0) -> np.ndarray:
    t = np.arange(n_steps) * DT_S
    poses = np.zeros((n_steps, 6))
    poses[:, 0] = speed_mps * t
    poses[:, 3] = yaw_rate * t
    return poses


def world_SE3_lidar(w: World, times_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3, 3), (N, 3) sensor poses at ``times_s``, computed independently of the module."""
    grid = np.arange(len(w.ego_poses)) * w.dt_s
    cols = np.stack([np.interp(times_s, grid, w.ego_poses[:, c]) for c in range(6)], axis=1)
    ego_rot = Rotation.from_euler("ZYX", cols[:, 3:6]).as_matrix()
    rot = ego_rot @ EGO_SE3_LIDAR.rotation
    return rot, cols[:, :3] + ego_rot @ EGO_SE3_LIDAR.translation


def to_world(w: World, sweep: SimSweep, t_s: float) -> np.ndarray:
    """(N, 3) world points, each transformed with the sensor pose at its own capture time."""
    rot, trans = world_SE3_lidar(w, t_s + sweep.time_offset_s.astype(np.float64))
    return np.einsum("nij,nj->ni", rot, sweep.points[:, :3].astype(np.float64)) + trans


def box_sdf(points: np.ndarray, box: np.ndarray) -> np.ndarray:
    """(N,) signed distance of points to one (7,) box ``x, y, z, l, w, h, yaw``."""
    c, s = np.cos(box[6]), np.sin(box[6])
    d = points - box[:3]
    local = np.stack([c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1], d[:, 2]], axis=1)
    q = np.abs(local) - box[3:6] / 2
    return np.linalg.norm(np.maximum(q, 0.0), axis=1) + np.minimum(q.max(axis=1), 0.0)


def ring(sweep: SimSweep, beam: int) -> np.ndarray:
    return np.flatnonzero(sweep.points[:, 4] == beam)


# --------------------------------------------------------------------------------------------- geometry
def test_flat_ground_rings_hit_at_the_hand_computed_distance() -> None:
    ego_z = 0.3
    height = LIDAR_Z_M + ego_z
    sweep = simulate_sweep(world(static_ego(z_m=ego_z)), EXACT, EGO_SE3_LIDAR, 0.1, seed=0)

    assert sweep.points.dtype == np.float32 and sweep.points.shape[1] == 5
    assert np.all(sweep.surface == Surface.GROUND) and np.all(sweep.instance == NO_INSTANCE)
    elevations = np.radians(EXACT.elevations_deg)
    for beam, e in enumerate(elevations):
        idx = ring(sweep, beam)
        reach = height / np.sin(-e) if e < 0 else np.inf
        if reach > EXACT.max_range_m:  # up into the sky or beyond the maximum range: nothing
            assert len(idx) == 0
            continue
        pts = sweep.points[idx].astype(np.float64)
        assert len(idx) == STEPS
        np.testing.assert_allclose(pts[:, 2], -height, atol=1e-5)
        np.testing.assert_allclose(np.hypot(pts[:, 0], pts[:, 1]), height / np.tan(-e), rtol=1e-6)
        # Forward (lidar +y) at the sweep time, backward at the start, right (lidar +x) a quarter later.
        forward = idx[np.argmax(pts[:, 1])]
        assert sweep.time_offset_s[forward] == 0.0
        np.testing.assert_allclose(sweep.points[forward, :2], [0.0, height / np.tan(-e)], atol=1e-5)
        np.testing.assert_allclose(pts[0, :2], [0.0, -height / np.tan(-e)], atol=1e-5)
        np.testing.assert_allclose(pts[3 * STEPS // 4, :2], [height / np.tan(-e), 0.0], atol=1e-5)
        assert sweep.time_offset_s[idx[0]] == pytest.approx(-PERIOD_S / 2)


def test_wall_face_and_occlusion() -> None:
    face_x = 20.0
    wall = structures([[face_x + 0.5, 0.0, 2.5, 1.0, 40.0, 5.0, 0.0]], [Surface.WALL])
    open_sweep = simulate_sweep(world(static_ego()), EXACT, EGO_SE3_LIDAR, 0.1, seed=0)
    sweep = simulate_sweep(world(static_ego(), static=wall), EXACT, EGO_SE3_LIDAR, 0.1, seed=0)
    pts = EGO_SE3_LIDAR.transform_points(sweep.points[:, :3].astype(np.float64))  # static ego = world

    on_wall = sweep.surface == Surface.WALL
    assert on_wall.sum() > 1000
    np.testing.assert_allclose(pts[on_wall, 0], face_x, atol=1e-4)
    assert np.all(np.abs(pts[on_wall, 1]) <= 20.0 + 1e-4) and np.all(pts[on_wall, 2] <= 5.0 + 1e-4)
    # Forward firing: beam b reaches the face at lidar y = face_x - 0.943, z = y tan(e).
    forward = sweep.time_offset_s == 0.0
    y_lidar = face_x - LIDAR_X_M
    for beam, e in enumerate(np.radians(EXACT.elevations_deg)):
        z_hit = LIDAR_Z_M + y_lidar * np.tan(e)
        if 0.01 < z_hit < 4.99:
            p = sweep.points[forward & (sweep.points[:, 4] == beam)]
            np.testing.assert_allclose(p[0, :3], [0.0, y_lidar, y_lidar * np.tan(e)], atol=1e-4)
    # The ground behind the wall is in its shadow.
    open_pts = EGO_SE3_LIDAR.transform_points(open_sweep.points[:, :3].astype(np.float64))
    shadow = (open_pts[:, 0] > face_x) & (np.abs(open_pts[:, 1]) < 15.0)
    assert shadow.sum() > 300
    assert not np.any((pts[:, 0] > face_x + 1e-4) & (np.abs(pts[:, 1]) < 15.0))
    assert np.all(sweep.surface[pts[:, 0] < face_x - 1e-3] == Surface.GROUND)


# --------------------------------------------------------------------------------------------- timing
def test_moving_ego_distorts_the_wall_by_its_motion() -> None:
    speed, face_x, t_s = 10.0, 30.0, 0.1
    wall = structures([[face_x + 0.5, 0.0, 5.0, 1.0, 80.0, 10.0, 0.0]], [Surface.WALL])
    w = world(linear_ego(speed), static=wall)
    sweep = simulate_sweep(w, EXACT, EGO_SE3_LIDAR, t_s, seed=0)

    offsets = sweep.time_offset_s.astype(np.float64)
    assert np.all(np.diff(offsets) >= 0.0)
    half = np.float32(PERIOD_S / 2)
    assert sweep.time_offset_s.min() >= -half and sweep.time_offset_s.max() < half
    on_wall = sweep.surface == Surface.WALL
    y = sweep.points[on_wall, 1].astype(np.float64)
    # Raw points: the lidar moved by speed * offset when each was captured.
    np.testing.assert_allclose(y + speed * offsets[on_wall], face_x - LIDAR_X_M - speed * t_s, atol=1e-4)
    assert np.ptp(y) > 0.1
    # Forward (lidar x ~ 0, y > 0) is fired at offset ~0.
    front = on_wall & (np.abs(sweep.points[:, 0]) < 0.01)
    assert front.any() and np.all(np.abs(offsets[front]) <= PERIOD_S / STEPS)
    # Per-point poses put the face back at x = face_x; one pose for the sweep would not.
    np.testing.assert_allclose(to_world(w, sweep, t_s)[on_wall, 0], face_x, atol=1e-4)
    rot, trans = world_SE3_lidar(w, np.array([t_s]))
    naive = sweep.points[on_wall, :3].astype(np.float64) @ rot[0].T + trans[0]
    assert np.abs(naive[:, 0] - face_x).max() > 0.05


def test_actor_points_lie_on_the_actor_box_at_their_capture_time() -> None:
    n_steps, t_s = 8, 0.15
    t = np.arange(n_steps) * DT_S
    poses = np.zeros((4, n_steps, 4))
    poses[0] = np.stack([12.0 - 20.0 * t, np.zeros_like(t), np.full_like(t, 0.8), np.zeros_like(t)], 1)  # head-on
    poses[1] = np.stack([15.0 + 0 * t, -8.0 + 10.0 * t, np.full_like(t, 0.8), np.full_like(t, np.pi / 2)], 1)
    poses[2] = np.stack([-10.0 + 0 * t, 4.0 + 0 * t, np.full_like(t, 0.9), 0.3 + 2.0 * t], 1)  # turning
    poses[3] = np.stack([-20.0 + 0 * t, -8.0 + 0 * t, np.full_like(t, 0.9), 0 * t], 1)  # parked
    sizes = [[4.5, 1.9, 1.6], [4.5, 1.9, 1.6], [4.0, 1.8, 1.8], [4.0, 1.8, 1.8]]
    ego = linear_ego(5.0, n_steps, yaw_rate=0.5)
    ego[:, 4], ego[:, 5] = 0.02, -0.01
    w = world(ego, dynamic=actors(sizes, poses))
    sweep = simulate_sweep(w, EXACT, EGO_SE3_LIDAR, t_s, seed=0)

    pts = to_world(w, sweep, t_s)
    capture = t_s + sweep.time_offset_s.astype(np.float64)
    assert np.all((sweep.instance >= 0) == (sweep.surface == Surface.OBJECT))
    assert set(np.unique(sweep.instance[sweep.instance >= 0]).tolist()) == {0, 1, 2, 3}
    for a in range(len(sizes)):
        sel = np.flatnonzero(sweep.instance == a)
        own = np.array([box_sdf(pts[i : i + 1], _actor_box(w, a, capture[i]))[0] for i in sel])
        assert np.abs(own).max() < 1e-3
        if a == 0:  # closing at 20 m/s: the box at the sweep time alone does not explain the points
            assert len(sel) > 100
            assert np.abs(box_sdf(pts[sel], _actor_box(w, a, t_s))).max() > 5e-3


def _actor_box(w: World, a: int, t_s: float) -> np.ndarray:
    grid = np.arange(w.actors.poses.shape[1]) * w.dt_s
    pose = [np.interp(t_s, grid, w.actors.poses[a, :, c]) for c in range(4)]
    return np.array([*pose[:3], *w.actors.size_lwh[a], pose[3]])


def test_wavy_ground_hits_lie_on_the_height_field_with_its_surface_codes() -> None:
    road = np.array([[0.0, 0.0, 200.0, 8.0, 0.2]])
    marking = np.array([[0.0, 0.0, 200.0, 0.3, 0.2], [10.0, 0.0, 3.0, 0.2, 1.0]])
    waves = np.array([[0.2, 0.1, 0.05, 0.3], [0.05, -0.03, 0.2, 1.0]])
    ground = Ground(np.array([0.02, -0.01]), waves, road, marking)
    ego = linear_ego(8.0, 6, yaw_rate=0.2)
    ego[:, 2] = ground.height(ego[:, 0], ego[:, 1])
    w = world(ego, ground=ground)
    t_s = 0.1
    sweep = simulate_sweep(w, EXACT, EGO_SE3_LIDAR, t_s, seed=0)

    pts = to_world(w, sweep, t_s)
    assert len(sweep) > 20000
    assert np.abs(pts[:, 2] - ground.height(pts[:, 0], pts[:, 1])).max() < 1e-3
    expected = ground.surface(pts[:, 0], pts[:, 1])
    assert np.mean(expected == sweep.surface) > 0.999
    assert set(np.unique(sweep.surface)) == {Surface.GROUND, Surface.ROAD, Surface.MARKING}
    intensity = sweep.points[:, 3]
    assert intensity.min() >= 0.0 and intensity.max() <= 255.0
    assert np.median(intensity[sweep.surface == Surface.MARKING]) > 50.0
    assert np.median(intensity[sweep.surface == Surface.ROAD]) < 20.0


# --------------------------------------------------------------------------------------------- randomness
def _busy_world() -> World:
    wall = structures([[25.0, 0.0, 2.5, 1.0, 30.0, 5.0, 0.0]], [Surface.BUILDING])
    poses = np.tile([[10.0, 5.0, 0.8, 0.3]], (5, 1))[None]
    return world(linear_ego(6.0), static=wall, dynamic=actors([[4.5, 1.9, 1.6]], poses))


def test_same_seed_is_byte_identical_and_seeds_differ() -> None:
    w = _busy_world()
    a = simulate_sweep(w, NOISY, EGO_SE3_LIDAR, 0.1, seed=7)
    b = simulate_sweep(w, NOISY, EGO_SE3_LIDAR, 0.1, seed=7)
    c = simulate_sweep(w, NOISY, EGO_SE3_LIDAR, 0.1, seed=8)
    for field in dataclasses.fields(SimSweep):
        assert getattr(a, field.name).tobytes() == getattr(b, field.name).tobytes()
    assert a.points.tobytes() != c.points.tobytes()
    assert a.time_offset_s.dtype == np.float32 and a.instance.dtype == np.int32 and a.surface.dtype == np.int8


def test_dropout_and_range_noise_statistics() -> None:
    w = _busy_world()
    exact = simulate_sweep(w, EXACT, EGO_SE3_LIDAR, 0.1, seed=3)
    dropped = simulate_sweep(w, dataclasses.replace(EXACT, dropout=0.2), EGO_SE3_LIDAR, 0.1, seed=3)
    noisy = simulate_sweep(w, dataclasses.replace(EXACT, range_noise_m=0.05), EGO_SE3_LIDAR, 0.1, seed=3)

    assert len(dropped) / len(exact) == pytest.approx(0.8, abs=0.015)
    assert len(noisy) == len(exact)  # no dropout: the same rays in the same order
    error = np.linalg.norm(noisy.points[:, :3], axis=1) - np.linalg.norm(exact.points[:, :3], axis=1)
    assert np.std(error) == pytest.approx(0.05, rel=0.05)
    assert abs(np.mean(error)) < 0.002
    np.testing.assert_array_equal(noisy.surface, exact.surface)


def test_rotation_matches_scipy_zyx() -> None:
    angles = np.random.default_rng(0).uniform(-3.0, 3.0, (50, 3))
    expected = Rotation.from_euler("ZYX", angles).as_matrix()
    np.testing.assert_allclose(rotation_zyx(angles[:, 0], angles[:, 1], angles[:, 2]), expected, atol=1e-12)
