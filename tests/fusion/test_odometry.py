"""Lidar odometry: a ray-cast numpy street (exact), degraded scans, the metrics, and a simulated clip."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from autolabel.datasets.nuscenes import load_nuscenes_clip
from autolabel.sim.dataroot import SimConfig, simulate_dataroot
from autolabel.sim.scenario import Profile
from calibration import SE3, InputError
from fusion.odometry import (
    OdometryConfig,
    TrajectoryAlignment,
    absolute_trajectory_error_m,
    deskew_constant_velocity,
    estimate_odometry,
    path_length_m,
    relative_pose_error,
    spin_time_offsets_s,
)

# ----------------------------------------------------------------------------- a ray-cast street
SENSOR_EGO = np.array([0.9, 0.0, 1.8])
SPEED_MPS, YAW_RATE_RAD_S, RATE_HZ, NUM_SCANS = 8.0, 0.05, 10, 25
# Axis-aligned boxes (x0, y0, z0, x1, y1, z1): building rows with gaps, parked cars, poles.
STREET_BOXES = np.array(
    [
        *[[x0, 12.0, 0.0, x1, 20.0, h] for x0, x1, h in ((-30, 5, 8), (8, 30, 10), (34, 70, 6), (74, 110, 9))],
        *[[x0, -20.0, 0.0, x1, -13.0, h] for x0, x1, h in ((-30, 12, 7), (15, 45, 12), (48, 80, 5), (83, 110, 8))],
        *[[x, 6.0, 0.0, x + 4.5, 7.8, 1.5] for x in (3.0, 17.0, 31.0, 52.0)],
        *[[x, -8.0, 0.0, x + 4.5, -6.2, 1.5] for x in (-6.0, 10.0, 40.0, 61.0)],
        *[[x, 9.5, 0.0, x + 0.3, 9.8, 6.0] for x in np.arange(-10.0, 100.0, 12.0)],
        *[[x, -10.5, 0.0, x + 0.3, -10.2, 6.0] for x in np.arange(-4.0, 100.0, 15.0)],
    ]
)


def street_pose(t_s: float) -> SE3:
    """``world_SE3_ego`` of a car at 8 m/s turning gently left (constant yaw rate)."""
    yaw = YAW_RATE_RAD_S * t_s
    radius = SPEED_MPS / YAW_RATE_RAD_S
    return SE3.from_yaw(yaw, (radius * np.sin(yaw), radius * (1.0 - np.cos(yaw)), 0.0))


def ray_directions_ego() -> np.ndarray:
    """(R, 3) unit rays of a 32-beam spinning lidar, 0.5 degree azimuth steps."""
    elevation = np.radians(np.linspace(-25.0, 10.0, 32))
    azimuth = np.radians(np.arange(0.0, 360.0, 0.5))
    el, az = np.meshgrid(elevation, azimuth, indexing="ij")
    return np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], axis=-1).reshape(-1, 3)


def raycast_scan(world_SE3_ego: SE3, boxes: np.ndarray, rng: np.random.Generator, max_range_m: float = 60.0):
    """(N, 4) float32 points in the ego frame: nearest hit of each ray on the ground (z=0) or a box."""
    directions = world_SE3_ego.rotate_vectors(ray_directions_ego())
    origin = world_SE3_ego.transform_points(SENSOR_EGO[None])[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        hit = np.where(directions[:, 2] < 0, -origin[2] / directions[:, 2], np.inf)
        inverse = 1.0 / directions
        for box in boxes:
            t0, t1 = (box[:3] - origin) * inverse, (box[3:] - origin) * inverse
            near = np.minimum(t0, t1).max(axis=1)
            far = np.maximum(t0, t1).min(axis=1)
            hit = np.where((far >= near) & (near > 0) & (near < hit), near, hit)
    keep = hit < max_range_m
    ranges = hit[keep] + rng.normal(0.0, 0.01, keep.sum())
    points_world = origin + directions[keep] * ranges[:, None]
    points_ego = world_SE3_ego.inverse().transform_points(points_world)
    return np.column_stack([points_ego, np.zeros(len(points_ego))]).astype(np.float32)


def street_clip(replace: dict[int, np.ndarray] | None = None) -> tuple[list[np.ndarray], list[int], list[SE3]]:
    rng = np.random.default_rng(0)
    times_s = np.arange(NUM_SCANS) / RATE_HZ
    poses = [street_pose(t) for t in times_s]
    scans = [raycast_scan(pose, STREET_BOXES, rng) for pose in poses]
    for k, scan in (replace or {}).items():
        scans[k] = scan
    return scans, [round(t * 1e6) for t in times_s], poses


def rotation_deg(pose: SE3) -> float:
    return float(np.degrees(np.linalg.norm(Rotation.from_matrix(pose.rotation).as_rotvec())))


def test_recovers_a_raycast_street_trajectory() -> None:
    scans, times_us, truth = street_clip()
    result = estimate_odometry(scans, times_us)
    assert len(result) == NUM_SCANS
    assert result.world_SE3_ego[0].allclose(SE3.identity())
    assert not result.degraded.any() and result.warnings == ()
    assert np.all(result.fitness[1:] > 0.7) and np.all(result.rmse_m[1:] < 0.06)
    for estimated, true in zip(result.world_SE3_ego, truth, strict=True):
        error = true.inverse() @ estimated
        assert np.linalg.norm(error.translation) < 0.03
        assert rotation_deg(error) < 0.1
    assert absolute_trajectory_error_m(result.world_SE3_ego, truth) < 0.02


def test_is_deterministic() -> None:
    scans, times_us, _ = street_clip()
    a = estimate_odometry(scans[:8], times_us[:8])
    b = estimate_odometry(scans[:8], times_us[:8])
    for pa, pb in zip(a.world_SE3_ego, b.world_SE3_ego, strict=True):
        assert pa.allclose(pb, atol=1e-9)
    np.testing.assert_allclose(a.fitness, b.fitness, atol=1e-12)


@pytest.mark.parametrize("kind", ["ground_only", "noise"])
def test_flags_a_scan_without_structure(kind: str, caplog: pytest.LogCaptureFixture) -> None:
    bad = 12
    rng = np.random.default_rng(1)
    if kind == "ground_only":
        scan = raycast_scan(street_pose(bad / RATE_HZ), np.zeros((0, 6)), rng)
    else:
        scan = np.column_stack([rng.uniform(-40, 40, (20000, 2)), rng.uniform(-2, 6, 20000), np.zeros(20000)])
    scans, times_us, truth = street_clip({bad: scan.astype(np.float32)})
    with caplog.at_level(logging.WARNING, logger="fusion.odometry"):
        result = estimate_odometry(scans, times_us)
    assert result.degraded.tolist() == [k == bad for k in range(NUM_SCANS)]
    assert len(result.warnings) == 1 and f"scan {bad} " in result.warnings[0]
    assert any(f"scan {bad} " in record.getMessage() for record in caplog.records)
    if kind == "ground_only":
        assert result.observability[bad] < OdometryConfig().min_observability
    else:
        assert result.fitness[bad] < OdometryConfig().min_fitness
    # The motion prior bridges the bad scan; the track continues.
    error = truth[-1].inverse() @ result.world_SE3_ego[-1]
    assert np.linalg.norm(error.translation) < 0.05


def test_rejects_bad_input() -> None:
    scan = np.zeros((10, 4), np.float32)
    with pytest.raises(InputError, match="one timestamp per scan"):
        estimate_odometry([scan, scan], [0])
    with pytest.raises(InputError, match="strictly increasing"):
        estimate_odometry([scan, scan], [5, 5])
    with pytest.raises(InputError, match="shape"):
        estimate_odometry([np.zeros((10, 2))], [0])


# ----------------------------------------------------------------------------- de-skew
def test_deskew_undoes_constant_velocity_motion() -> None:
    rng = np.random.default_rng(2)
    omega, velocity = np.array([0.01, -0.02, 0.4]), np.array([8.0, 0.3, 0.05])
    points_at_sweep = rng.uniform(-30, 30, (500, 3))
    dt = rng.uniform(-0.025, 0.025, 500)
    # sweep_SE3_capture(dt) = (exp(dt omega), dt v): a point seen at its capture time is its inverse image.
    captured = np.stack(
        [
            SE3(Rotation.from_rotvec(d * omega).as_matrix(), d * velocity).inverse().transform_points(p[None])[0]
            for p, d in zip(points_at_sweep, dt, strict=True)
        ]
    )
    with_intensity = np.column_stack([captured, np.arange(500.0)])
    restored = deskew_constant_velocity(with_intensity, dt, omega, velocity)
    np.testing.assert_allclose(restored[:, :3], points_at_sweep, atol=1e-9)
    np.testing.assert_array_equal(restored[:, 3], np.arange(500.0))


def test_spin_time_offsets_of_a_clockwise_lidar() -> None:
    origin = (0.943, 0.0, 1.84)
    points = np.array([[10.943, 0.0, 0.0], [0.943, 5.0, 0.0], [0.943, -5.0, 0.0], [-9.0, -1e-9, 0.0]])
    offsets = spin_time_offsets_s(points, origin, 0.05)
    # Forward at the sweep time; the beam turns clockwise (right side later, left side earlier).
    np.testing.assert_allclose(offsets, [0.0, -0.0125, 0.0125, 0.025], atol=1e-9)
    np.testing.assert_allclose(spin_time_offsets_s(points, origin, 0.05, clockwise=False), -offsets, atol=1e-12)


# ----------------------------------------------------------------------------- metrics
def straight_line(n: int, step_m: float) -> list[SE3]:
    return [
        SE3.from_yaw(0.2, (100.0 + k * step_m * np.cos(0.2), 50.0 + k * step_m * np.sin(0.2), 3.0)) for k in range(n)
    ]


def test_metrics_of_a_scaled_trajectory() -> None:
    truth = straight_line(101, 1.0)  # 100 m
    estimated = straight_line(101, 1.01)  # 1 % too long
    assert path_length_m(truth) == pytest.approx(100.0)
    t_percent, r_deg_per_m = relative_pose_error(estimated, truth, distances_m=(10.0, 50.0))
    assert t_percent == pytest.approx(1.0, abs=1e-9)
    assert r_deg_per_m == pytest.approx(0.0, abs=1e-9)
    # Position errors 0.01 k m for k = 0..100: RMSE = 0.01 * sqrt(mean(k^2)).
    expected = 0.01 * np.sqrt(np.mean(np.arange(101.0) ** 2))
    assert absolute_trajectory_error_m(estimated, truth) == pytest.approx(expected, rel=1e-9)


def test_ate_alignments_of_a_turned_trajectory() -> None:
    truth = [SE3.from_yaw(0.01 * k, (k * 1.0, 0.1 * k**1.5, 0.0)) for k in range(50)]
    turn = SE3.from_yaw(0.02)  # positions turned 0.02 rad about the start, orientations right
    estimated = [SE3(pose.rotation, turn.rotation @ pose.translation) for pose in truth]
    end_offset = np.linalg.norm(estimated[-1].translation - truth[-1].translation)
    assert 0.3 * end_offset < absolute_trajectory_error_m(estimated, truth) < end_offset
    assert absolute_trajectory_error_m(estimated, truth, TrajectoryAlignment.RIGID) == pytest.approx(0.0, abs=1e-9)


def test_rpe_needs_a_segment_that_fits() -> None:
    truth = straight_line(11, 1.0)
    with pytest.raises(InputError, match="shorter than every segment"):
        relative_pose_error(truth, truth, distances_m=(50.0,))


# ----------------------------------------------------------------------------- a simulated clip
@pytest.fixture(scope="module")
def sim_clip(tmp_path_factory):
    root = tmp_path_factory.mktemp("odometry") / "nuscenes"
    simulate_dataroot(root, SimConfig(seconds=5.0, seed=1, profile=Profile.URBAN))
    return load_nuscenes_clip(Path(root), "scene-0061")


def test_simulated_clip_within_one_percent(sim_clip) -> None:
    sweeps = [sweep for frame in sim_clip.frames for sweep in frame.sweeps]
    scans = [sweep.load_points_ego() for sweep in sweeps]
    offsets = [
        spin_time_offsets_s(scan, sweep.ego_SE3_lidar.translation, 0.05)
        for scan, sweep in zip(scans, sweeps, strict=True)
    ]
    result = estimate_odometry(scans, [s.timestamp_us for s in sweeps], point_time_offsets_s=offsets)
    assert not result.degraded.any(), result.warnings
    key = [k for k, sweep in enumerate(sweeps) if sweep.is_key]
    estimated = [result.world_SE3_ego[k] for k in key]
    truth = [sweeps[k].world_SE3_ego for k in key]
    travelled = path_length_m(truth)
    assert travelled > 20.0
    t_percent, r_deg_per_m = relative_pose_error(estimated, truth, distances_m=(10.0, 20.0))
    assert t_percent < 1.0
    assert r_deg_per_m < 0.02
    assert absolute_trajectory_error_m(estimated, truth) < 0.01 * travelled
