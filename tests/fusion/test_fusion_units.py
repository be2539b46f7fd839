"""Hand-computed checks of aggregation, de-skew timing, painting and BEV rasters."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from calibration import SE3, GeometryError, PinholeCamera
from fusion.aggregate import (
    PoseTrack,
    SweepInput,
    aggregate,
    sweep_to_world,
    time_offsets_from_azimuth,
    voxel_downsample,
)
from fusion.bev import BEV_CHANNELS, BevGrid, _rasterize_torch, rasterize, rasterize_parts, xy_extent
from fusion.paint import CameraView, paint

CPU = torch.device("cpu")


def test_time_offsets_follow_the_clockwise_rotation() -> None:
    # Lidar frame rotated -90 deg (x right, y forward) like nuScenes: lidar +y is ego +x (forward).
    ego_SE3_lidar = SE3.from_yaw(-np.pi / 2, (1.0, 0.0, 1.8))
    forward, left, right = [0, 10, 0], [-10, 0, 0], [10, 0, 0]
    offsets = time_offsets_from_azimuth(np.array([forward, left, right], dtype=np.float32), ego_SE3_lidar, 0.05)
    # Forward at the timestamp; left (azimuth +90) a quarter turn earlier, right a quarter turn later.
    np.testing.assert_allclose(offsets, [0.0, -0.0125, 0.0125], atol=1e-7)


def test_pose_track_interpolates_and_deskews_a_moving_sweep() -> None:
    track = PoseTrack.from_poses([0, 100_000], [SE3.identity(), SE3.from_yaw(0.2, (1.0, 0.0, 0.0))])
    rotations, translations = track.interpolate(np.array([50_000.0, 100_000.0]))
    np.testing.assert_allclose(translations, [[0.5, 0, 0], [1.0, 0, 0]])
    assert SE3(rotations[0], translations[0]).yaw_rad == pytest.approx(0.1)
    # A point captured 50 ms after a sweep stamped at 0 is placed with the pose at 50 ms.
    sweep = SweepInput(
        np.array([[2.0, 0, 0, 7]], np.float32), 0, SE3.identity(), SE3.identity(), np.array([0.05], np.float32)
    )
    expected = SE3.from_yaw(0.1, (0.5, 0, 0)).transform_points(np.array([[2.0, 0, 0]]))
    np.testing.assert_allclose(sweep_to_world(sweep, track), expected, atol=1e-12)
    np.testing.assert_allclose(sweep_to_world(sweep), [[2.0, 0, 0]])  # no track: no de-skew


def test_aggregate_brings_sweeps_into_the_keyframe_frame_with_time() -> None:
    # The same world point seen from two ego poses 1 m apart lands on one spot in the keyframe frame.
    world_point = np.array([10.0, 2.0, 0.5])
    poses = [SE3.from_yaw(0.0, (0.0, 0.0, 0.0)), SE3.from_yaw(0.1, (1.0, 0.0, 0.0))]
    sweeps = [
        SweepInput(
            np.append(p.inverse().transform_points(world_point[None]), [[5.0]], axis=1).astype(np.float32),
            t,
            p,
            SE3.identity(),
        )
        for p, t in zip(poses, (0, 50_000), strict=True)
    ]
    points, index = aggregate(sweeps, poses[1], 50_000)
    expected = poses[1].inverse().transform_points(world_point[None])[0]
    np.testing.assert_allclose(points[:, :3], [expected, expected], atol=1e-5)
    np.testing.assert_allclose(points[:, 4], [-0.05, 0.0])
    assert points[:, 3].tolist() == [5.0, 5.0] and index.tolist() == [0, 1]


def test_voxel_downsample_keeps_one_point_per_voxel() -> None:
    pts = np.array([[0.01, 0.01, 0], [0.02, 0.03, 0], [0.5, 0, 0], [0.09, 0.09, 0.09]], np.float32)
    assert voxel_downsample(pts, 0.1).tolist() == pts[[0, 2]].tolist()


def _camera() -> PinholeCamera:
    # Looking along world +x from the origin: camera z = x, camera x = -y, camera y = -z.
    ego_SE3_cam = SE3(np.array([[0.0, 0, 1], [-1, 0, 0], [0, -1, 0]]), (0, 0, 0))
    return PinholeCamera("CAM", np.array([[100.0, 0, 50], [0, 100.0, 40], [0, 0, 1]]), 100, 80, ego_SE3_cam)


def test_paint_samples_the_projected_pixel_and_respects_occlusion() -> None:
    camera = _camera()
    image = np.zeros((80, 100, 3), np.uint8)
    image[40, 50] = (10, 20, 30)  # principal point
    image[40, 60] = (200, 0, 0)  # u = 50 + 100 * 1 / 10
    view = CameraView(camera, image, camera.cam_SE3_ego, 0)
    points = np.array(
        [
            [10.0, 0.0, 0.0],  # centre pixel
            [10.0, -1.0, 0.0],  # u = 60
            [30.0, -3.0, 0.0],  # same pixel as the previous one, 20 m behind it: hidden
            [-5.0, 0.0, 0.0],  # behind the camera
            [10.0, 20.0, 0.0],  # outside the image
        ]
    )
    painted = paint(points, [view], CPU)
    assert painted.view_index.tolist() == [0, 0, -1, -1, -1]
    assert painted.rgb[:2].tolist() == [[10, 20, 30], [200, 0, 0]]
    assert painted.rgb[2:].tolist() == [[0, 0, 0]] * 3


def test_paint_picks_the_most_central_view_and_the_nearest_time() -> None:
    camera = _camera()
    red, blue = np.full((80, 100, 3), (255, 0, 0), np.uint8), np.full((80, 100, 3), (0, 0, 255), np.uint8)
    # Second camera turned 10 degrees left: the point straight ahead is off its axis.
    turned = PinholeCamera("CAM2", camera.intrinsics, 100, 80, SE3.from_yaw(np.radians(10)) @ camera.ego_SE3_cam)
    views = [CameraView(camera, red, camera.cam_SE3_ego, 0), CameraView(turned, blue, turned.cam_SE3_ego, 0)]
    assert paint(np.array([[10.0, 0, 0]]), views, CPU).rgb.tolist() == [[255, 0, 0]]
    # Two exposures of one camera: each point takes the one nearest its capture time.
    timed = [CameraView(camera, red, camera.cam_SE3_ego, 0), CameraView(camera, blue, camera.cam_SE3_ego, 100_000)]
    result = paint(np.array([[10.0, 0, 0], [10.0, 0, 0]]), timed, CPU, point_time_us=np.array([10_000, 90_000]))
    assert result.rgb.tolist() == [[255, 0, 0], [0, 0, 255]] and result.view_index.tolist() == [0, 1]


def test_paint_with_features_and_distortion() -> None:
    camera = _camera()
    distorted = PinholeCamera("CAM", camera.intrinsics, 100, 80, camera.ego_SE3_cam, np.array([-0.1, 0.01, 0, 0]))
    features = np.arange(80 * 100 * 2, dtype=np.float32).reshape(80, 100, 2)
    point = np.array([[10.0, -2.0, -1.0]])
    uv = distorted.project_ego(point).uv_px[0]
    painted = paint(
        point, [CameraView(distorted, np.zeros((80, 100, 3), np.uint8), distorted.cam_SE3_ego, 0, features)], CPU
    )
    row, col = round(uv[1]), round(uv[0])
    np.testing.assert_array_equal(painted.features[0], features[row, col])


def test_bev_channels_by_hand() -> None:
    grid = BevGrid(0.0, 2.0, 0.0, 1.0, -5.0, 5.0, 1.0)  # 1 row (y) x 2 columns (x)
    points = np.array([[0.5, 0.5, 1.0, 10.0], [0.2, 0.9, -1.0, 30.0], [1.5, 0.5, 0.0, 4.0], [9.0, 0.5, 0.0, 1.0]])
    rgb = np.array([[100, 0, 0], [0, 0, 0], [0, 50, 0], [1, 1, 1]], np.uint8)
    raster = rasterize(points, grid, CPU, rgb=rgb)
    assert raster.shape == (len(BEV_CHANNELS), 1, 2)
    np.testing.assert_allclose(raster[:, 0, 0], [1.0, -1.0, 2, 20.0, 100, 0, 0])  # unpainted point not averaged
    np.testing.assert_allclose(raster[:, 0, 1], [0.0, 0.0, 1, 4.0, 0, 50, 0])
    empty = rasterize(np.zeros((0, 4)), grid, CPU)
    assert np.isnan(empty[0]).all() and (empty[2] == 0).all()


def test_bev_cpu_kernel_equals_the_torch_path() -> None:
    """The numba kernel used on CPU and the torch scatter path used on other devices agree."""
    rng = np.random.default_rng(0)
    points = np.column_stack([rng.uniform(-60, 60, (20000, 2)), rng.uniform(-6, 6, 20000), rng.uniform(0, 1, 20000)])
    rgb = rng.integers(0, 256, (20000, 3), dtype=np.uint8)
    rgb[::3] = 0  # unpainted
    grid = BevGrid()
    fast = rasterize(points, grid, CPU, rgb=rgb)
    reference = _rasterize_torch(points, grid, CPU, rgb)
    np.testing.assert_allclose(fast, reference, rtol=1e-5, atol=1e-4, equal_nan=True)
    assert np.nansum(fast[2]) == np.sum((np.abs(points[:, :2]) < 51.2).all(axis=1) & (np.abs(points[:, 2]) <= 5.0))


def test_bev_of_parts_equals_the_bev_of_the_stacked_points() -> None:
    rng = np.random.default_rng(1)
    xyz = np.column_stack([rng.uniform(940, 1060, 9000), rng.uniform(-2060, -1940, 9000), rng.uniform(-6, 6, 9000)])
    intensity = rng.uniform(0, 1, 9000).astype(np.float32)
    rgb = rng.integers(0, 256, (9000, 3), dtype=np.uint8)
    rgb[::4] = 0
    grid = BevGrid(940.0, 1060.0, -2060.0, -1940.0, -5.0, 5.0, 0.5)
    whole = rasterize(np.column_stack([xyz, intensity]), grid, CPU, rgb=rgb)
    cuts = [0, 10, 4000, 4000, 9000]  # an empty part included
    parts = [(xyz[a:b], intensity[a:b], rgb[a:b]) for a, b in itertools.pairwise(cuts)]
    np.testing.assert_array_equal(rasterize_parts(parts, grid, CPU), whole)
    lo, hi = xy_extent([p[0] for p in parts])
    np.testing.assert_array_equal(lo, xyz[:, :2].min(axis=0))
    np.testing.assert_array_equal(hi, xyz[:, :2].max(axis=0))
    with pytest.raises(GeometryError, match="at least one point"):
        xy_extent([np.zeros((0, 3))])
