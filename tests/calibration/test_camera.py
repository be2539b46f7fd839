"""PinholeCamera: projections, validity and rays checked against hand-computed pixels."""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np
import pytest

from calibration import SE3, GeometryError, PinholeCamera, Projection

W, H = 1600, 900
K = np.array([[1000.0, 0.0, 800.0], [0.0, 1000.0, 450.0], [0.0, 0.0, 1.0]])
DIST = np.array([-0.2, 0.05, 1e-3, -5e-4])

# Forward-looking camera: camera z = ego x, camera x = -ego y, camera y = -ego z.
# The columns of ego_R_cam are the camera axes written in ego coordinates.
EGO_R_CAM_FRONT = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
CAM_FRONT_POSITION = np.array([1.5, 0.0, 1.6])


def camera(distortion: np.ndarray | None = None, ego_SE3_cam: SE3 | None = None, k: np.ndarray = K) -> PinholeCamera:
    return PinholeCamera(
        "CAM_FRONT",
        k,
        W,
        H,
        SE3.identity() if ego_SE3_cam is None else ego_SE3_cam,
        np.zeros(0) if distortion is None else distortion,
    )


def front_camera(distortion: np.ndarray | None = None) -> PinholeCamera:
    return camera(distortion, SE3(EGO_R_CAM_FRONT, CAM_FRONT_POSITION))


# --------------------------------------------------------------------------------- pinhole projection


def test_project_known_point() -> None:
    # u = fx * x / z + cx = 1000 * 0.1 + 800 = 900; v = fy * y / z + cy = 1000 * 0.05 + 450 = 500
    proj = camera().project_cam(np.array([[1.0, 0.5, 10.0]]))
    assert isinstance(proj, Projection)
    np.testing.assert_allclose(proj.uv_px, [[900.0, 500.0]], atol=1e-9)
    np.testing.assert_allclose(proj.depth_m, [10.0])
    np.testing.assert_array_equal(proj.valid, [True])


def test_project_principal_point_and_quadrants() -> None:
    pts = np.array(
        [
            [0.0, 0.0, 5.0],  # optical axis -> principal point (800, 450)
            [-2.0, 0.0, 4.0],  # left: u = 800 - 500 = 300
            [0.0, -1.0, 2.5],  # up: v = 450 - 400 = 50
            [3.0, 1.5, 6.0],  # u = 800 + 500 = 1300, v = 450 + 250 = 700
        ]
    )
    proj = camera().project_cam(pts)
    np.testing.assert_allclose(proj.uv_px, [[800, 450], [300, 450], [800, 50], [1300, 700]], atol=1e-9)
    np.testing.assert_array_equal(proj.valid, [True, True, True, True])
    np.testing.assert_allclose(proj.depth_m, [5.0, 4.0, 2.5, 6.0])


def test_project_keeps_extra_columns_out_and_accepts_float32() -> None:
    pts = np.array([[1.0, 0.5, 10.0, 0.3], [0.0, 0.0, 1.0, 0.9]], dtype=np.float32)
    proj = camera().project_cam(pts)
    assert proj.uv_px.shape == (2, 2)
    np.testing.assert_allclose(proj.uv_px, [[900.0, 500.0], [800.0, 450.0]], atol=1e-4)


def test_project_with_skew() -> None:
    # skew s = 5: u = fx x' + s y' + cx = 100 + 0.25 + 800 = 900.25 for x' = 0.1, y' = 0.05
    k = K.copy()
    k[0, 1] = 5.0
    cam = camera(k=k)
    proj = cam.project_cam(np.array([[1.0, 0.5, 10.0]]))
    np.testing.assert_allclose(proj.uv_px, [[900.25, 500.0]], atol=1e-9)
    ray = cam.unproject(proj.uv_px)
    np.testing.assert_allclose(ray, [[0.1, 0.05, 1.0]] / np.linalg.norm([0.1, 0.05, 1.0]), atol=1e-12)


def test_points_behind_or_too_close_are_invalid() -> None:
    pts = np.array(
        [
            [1.0, 0.5, -10.0],  # behind
            [0.0, 0.0, 0.0],  # at the centre
            [0.0, 0.0, 0.05],  # closer than min_depth 0.1
            [0.0, 0.0, 0.1],  # exactly min_depth: not strictly in front -> invalid
            [0.0, 0.0, 0.11],
        ]
    )
    proj = camera().project_cam(pts)
    np.testing.assert_array_equal(proj.valid, [False, False, False, False, True])
    np.testing.assert_allclose(proj.depth_m, [-10.0, 0.0, 0.05, 0.1, 0.11])
    assert np.all(np.isfinite(proj.uv_px))  # no division by zero leaks out
    relaxed = camera().project_cam(pts, min_depth_m=0.01)
    np.testing.assert_array_equal(relaxed.valid, [False, False, True, True, True])


def test_points_outside_the_image_are_invalid() -> None:
    pts = np.array(
        [
            [10.0, 0.0, 10.0],  # u = 1800 > 1599.5
            [-10.0, 0.0, 10.0],  # u = -200
            [0.0, 5.0, 10.0],  # v = 950 > 899.5
            [0.0, -5.0, 10.0],  # v = -50
            [7.99, 4.49, 10.0],  # u = 1599, v = 899: last pixel, inside
        ]
    )
    proj = camera().project_cam(pts)
    np.testing.assert_array_equal(proj.valid, [False, False, False, False, True])
    np.testing.assert_allclose(proj.uv_px[0], [1800.0, 450.0], atol=1e-9)  # still reported


def test_inside_image_pixel_convention() -> None:
    # Pixel (0, 0) is the centre of the top-left pixel: the image covers [-0.5, W - 0.5) x [-0.5, H - 0.5).
    cam = camera()
    uv = np.array(
        [[-0.5, -0.5], [-0.5001, 0.0], [0.0, -0.5001], [1599.49, 899.49], [1599.5, 0.0], [0.0, 899.5], [800.0, 450.0]]
    )
    np.testing.assert_array_equal(cam.inside_image(uv), [True, False, False, True, False, False, True])
    np.testing.assert_array_equal(
        cam.inside_image(np.array([[-10.5, 0.0], [1609.4, 0.0], [1609.5, 0.0]]), margin_px=10.0), [True, True, False]
    )


def test_project_bad_shape_raises() -> None:
    with pytest.raises(GeometryError):
        camera().project_cam(np.zeros((3, 2)))
    with pytest.raises(GeometryError):
        camera().project_cam(np.zeros(3))


def test_project_ego_bad_shape_raises_geometry_error() -> None:
    with pytest.raises(GeometryError):
        camera().project_ego(np.zeros(3))


def test_project_ego_too_few_columns_raises() -> None:
    with pytest.raises(GeometryError):
        camera().project_ego(np.zeros((2, 2)))


# --------------------------------------------------------------------------------- extrinsics


def test_ego_to_cam_forward_camera_by_hand() -> None:
    cam = front_camera()
    # ego point (11.5, -1, 2.1): relative to the camera (10, -1, 0.5) in ego axes;
    # camera x = -ego y = 1, camera y = -ego z = -0.5, camera z = ego x = 10
    p_ego = np.array([[11.5, -1.0, 2.1]])
    np.testing.assert_allclose(cam.cam_SE3_ego.transform_points(p_ego), [[1.0, -0.5, 10.0]], atol=1e-12)
    proj = cam.project_ego(p_ego)
    # u = 1000 * 0.1 + 800 = 900 (right of centre: the point is to the ego's right, y < 0)
    # v = 1000 * -0.05 + 450 = 400 (above centre: the point is above the camera)
    np.testing.assert_allclose(proj.uv_px, [[900.0, 400.0]], atol=1e-9)
    np.testing.assert_allclose(proj.depth_m, [10.0], atol=1e-12)
    np.testing.assert_array_equal(proj.valid, [True])


def test_project_ego_behind_vehicle_is_invalid() -> None:
    cam = front_camera()
    pts = np.array([[-10.0, 0.0, 1.6, 0.5], [30.0, 0.0, 1.6, 0.5], [1.5, 5.0, 1.6, 0.5]])
    proj = cam.project_ego(pts)  # extra intensity column is ignored
    np.testing.assert_allclose(proj.depth_m, [-11.5, 28.5, 0.0], atol=1e-12)
    np.testing.assert_array_equal(proj.valid, [False, True, False])
    np.testing.assert_allclose(proj.uv_px[1], [800.0, 450.0], atol=1e-9)  # straight ahead at camera height


def test_cam_SE3_ego_is_the_inverse() -> None:
    cam = front_camera()
    assert (cam.cam_SE3_ego @ cam.ego_SE3_cam).allclose(SE3.identity(), atol=1e-12)
    np.testing.assert_allclose(cam.cam_SE3_ego.transform_points(CAM_FRONT_POSITION[None]), np.zeros((1, 3)), atol=1e-12)


def test_rays_ego_origin_is_camera_centre() -> None:
    cam = front_camera()
    origin, dirs = cam.rays_ego(np.array([[800.0, 450.0], [900.0, 400.0]]))
    np.testing.assert_allclose(origin, CAM_FRONT_POSITION)
    # principal point looks along ego +x
    np.testing.assert_allclose(dirs[0], [1.0, 0.0, 0.0], atol=1e-12)
    # (900, 400): camera ray (0.1, -0.05, 1) -> ego (1, -0.1, 0.05) (ego x = cam z, ego y = -cam x, ego z = -cam y)
    expected = np.array([1.0, -0.1, 0.05]) / math.sqrt(1.0 + 0.01 + 0.0025)
    np.testing.assert_allclose(dirs[1], expected, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(dirs, axis=1), [1.0, 1.0], atol=1e-12)
    # the ray passes through the ego point that projected to (900, 400)
    t = 10.0 * math.sqrt(1.0125)
    np.testing.assert_allclose(origin + t * dirs[1], [11.5, -1.0, 2.1], atol=1e-9)
    # the returned origin is a copy: mutating it does not touch the camera
    origin[0] = 99.0
    assert cam.ego_SE3_cam.translation[0] == 1.5


# --------------------------------------------------------------------------------- unproject


def test_unproject_by_hand() -> None:
    # (900, 500) -> normalized (0.1, 0.05) -> unit ray (0.1, 0.05, 1) / sqrt(1.0125)
    ray = camera().unproject(np.array([[900.0, 500.0], [800.0, 450.0]]))
    np.testing.assert_allclose(ray[0], np.array([0.1, 0.05, 1.0]) / math.sqrt(1.0125), atol=1e-12)
    np.testing.assert_allclose(ray[1], [0.0, 0.0, 1.0], atol=1e-12)


def test_unproject_project_is_direction() -> None:
    rng = np.random.default_rng(0)
    pts = np.column_stack([rng.uniform(-7, 7, 50), rng.uniform(-4, 4, 50), rng.uniform(9, 60, 50)])
    cam = camera()
    proj = cam.project_cam(pts)
    rays = cam.unproject(proj.uv_px)
    np.testing.assert_allclose(rays, pts / np.linalg.norm(pts, axis=1, keepdims=True), atol=1e-12)


def test_unproject_bad_shape_raises() -> None:
    with pytest.raises(GeometryError):
        camera().unproject(np.zeros((3, 3)))
    with pytest.raises(GeometryError):
        camera().unproject(np.zeros(2))


# --------------------------------------------------------------------------------- distortion


def test_distorted_projection_by_hand() -> None:
    # normalized (x, y) = (0.5, 0.25), r^2 = 0.3125
    # radial = 1 + k1 r^2 + k2 r^4 = 1 - 0.0625 + 0.05 * 0.09765625 = 0.9423828125
    # x_d = x radial + 2 p1 x y + p2 (r^2 + 2 x^2) = 0.47119140625 + 0.00025 - 0.00040625 = 0.47103515625
    # y_d = y radial + p1 (r^2 + 2 y^2) + 2 p2 x y = 0.235595703125 + 0.0004375 - 0.000125 = 0.235908203125
    # u = 1000 x_d + 800, v = 1000 y_d + 450
    proj = camera(DIST).project_cam(np.array([[1.0, 0.5, 2.0]]))
    np.testing.assert_allclose(proj.uv_px, [[1271.03515625, 685.908203125]], atol=1e-9)
    np.testing.assert_array_equal(proj.valid, [True])


def test_distorted_projection_agrees_with_cv2() -> None:
    rng = np.random.default_rng(1)
    pts = np.column_stack([rng.uniform(-6, 6, 200), rng.uniform(-3.5, 3.5, 200), rng.uniform(8, 40, 200)])
    for dist in (DIST, np.array([-0.2, 0.05, 1e-3, -5e-4, 0.01])):
        cam = camera(dist)
        proj = cam.project_cam(pts)
        expected, _ = cv2.projectPoints(pts.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), K, dist)
        np.testing.assert_allclose(proj.uv_px, expected.reshape(-1, 2), atol=1e-6)
        assert proj.valid.all()


def test_zero_distortion_is_pinhole() -> None:
    cam = camera(np.zeros(5))
    assert not cam.has_distortion
    assert camera(DIST).has_distortion
    np.testing.assert_allclose(cam.project_cam(np.array([[1.0, 0.5, 10.0]])).uv_px, [[900.0, 500.0]], atol=1e-9)


def test_distorted_unproject_inverts_projection_near_centre() -> None:
    # Points within normalized radius 0.28 * sqrt2 = 0.4 of the axis (about 400 px around the centre).
    xs, ys = np.meshgrid(np.linspace(-0.28, 0.28, 9), np.linspace(-0.28, 0.28, 9))
    pts = np.column_stack([xs.ravel(), ys.ravel(), np.ones(xs.size)]) * 7.0
    cam = camera(DIST)
    proj = cam.project_cam(pts)
    assert proj.valid.all()
    rays = cam.unproject(proj.uv_px)
    np.testing.assert_allclose(rays, pts / np.linalg.norm(pts, axis=1, keepdims=True), atol=1e-6)


def test_distorted_unproject_inverts_projection_over_the_whole_image() -> None:
    # normalized radius up to sqrt(0.75^2 + 0.42^2) = 0.86; barrel distortion keeps these inside the image
    xs, ys = np.meshgrid(np.linspace(-0.75, 0.75, 11), np.linspace(-0.42, 0.42, 7))
    pts = np.column_stack([xs.ravel(), ys.ravel(), np.ones(xs.size)]) * 5.0
    cam = camera(DIST)
    proj = cam.project_cam(pts)
    assert proj.valid.all()
    rays = cam.unproject(proj.uv_px)
    np.testing.assert_allclose(rays, pts / np.linalg.norm(pts, axis=1, keepdims=True), atol=1e-6)


def test_distorted_points_far_off_axis_are_invalid() -> None:
    cam = camera(DIST)
    # x/z = 3: the undistorted pixel u = 3800 lies beyond the fold-back guard (W + W/2) -> invalid
    # x/z = 1.7: u = 2500, also beyond 2399.5
    pts = np.array([[3.0, 0.0, 1.0], [1.7, 0.0, 1.0], [0.0, 2.0, 1.0], [-30.0, -30.0, 1.0], [1.0, 0.5, -2.0]])
    np.testing.assert_array_equal(cam.project_cam(pts).valid, [False, False, False, False, False])


def test_strong_distortion_inside_turning_radius_is_valid() -> None:
    # k1 = -0.5: r_d = r (1 - 0.5 r^2); at r = 0.2: r_d = 0.196 -> u = 996; at r = 0.7: 0.5285 -> u = 1328.5
    cam = camera(np.array([-0.5, 0.0, 0.0, 0.0]))
    proj = cam.project_cam(np.array([[0.2, 0.0, 1.0], [0.7, 0.0, 1.0], [5.0, 0.0, 1.0]]))
    np.testing.assert_allclose(proj.uv_px[:2], [[996.0, 450.0], [1328.5, 450.0]], atol=1e-9)
    np.testing.assert_array_equal(proj.valid, [True, True, False])


def test_strong_distortion_fold_back_is_invalid() -> None:
    # k1 = -0.5: r_d = r - 0.5 r^3 has d r_d / d r = 1 - 1.5 r^2 = 0 at r* = sqrt(2/3) = 0.816, where
    # r_d peaks at 0.544; beyond r* the model folds back towards the centre:
    #   r = 1.0 -> r_d = 0.5 -> u = 1300; r = 1.3 -> r_d = 0.2015 -> u = 1001.5;
    #   r = 1.5 -> r_d = -0.1875 -> u = 612.5 (left of centre for a point on the right!)
    # All three are inside the image although the true direction is 45°..56° off axis; they must be
    # invalid, or the camera paints lidar points with the wrong pixels.
    cam = camera(np.array([-0.5, 0.0, 0.0, 0.0]))
    proj = cam.project_cam(np.array([[1.0, 0.0, 1.0], [1.3, 0.0, 1.0], [1.5, 0.0, 1.0]]))
    np.testing.assert_allclose(proj.uv_px, [[1300.0, 450.0], [1001.5, 450.0], [612.5, 450.0]], atol=1e-9)
    np.testing.assert_array_equal(proj.valid, [False, False, False])


# --------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "k",
    [
        np.array([[0.0, 0.0, 800.0], [0.0, 1000.0, 450.0], [0.0, 0.0, 1.0]]),  # fx = 0
        np.array([[1000.0, 0.0, 800.0], [0.0, -1000.0, 450.0], [0.0, 0.0, 1.0]]),  # fy < 0
        np.array([[1000.0, 0.0, 800.0], [0.0, 1000.0, 450.0], [0.0, 0.0, 2.0]]),  # last row
        np.array([[1000.0, 0.0, 800.0], [0.0, 1000.0, 450.0], [0.1, 0.0, 1.0]]),  # last row
        np.array([[1000.0, 0.0, 800.0], [1.0, 1000.0, 450.0], [0.0, 0.0, 1.0]]),  # K[1, 0] != 0
        np.array([[np.nan, 0.0, 800.0], [0.0, 1000.0, 450.0], [0.0, 0.0, 1.0]]),
        np.eye(4),
        np.eye(3)[:2],
    ],
)
def test_invalid_intrinsics_raise(k: np.ndarray) -> None:
    with pytest.raises(GeometryError, match="CAM_FRONT"):
        camera(k=k)


@pytest.mark.parametrize(("width", "height"), [(0, 900), (1600, 0), (-1, 900), (1600, -900)])
def test_invalid_image_size_raises(width: int, height: int) -> None:
    with pytest.raises(GeometryError, match="CAM_FRONT"):
        PinholeCamera("CAM_FRONT", K, width, height, SE3.identity())


@pytest.mark.parametrize(
    "dist", [np.zeros(1), np.zeros(3), np.zeros(6), np.zeros(7), np.array([np.nan, 0, 0, 0]), np.array([np.inf] * 5)]
)
def test_invalid_distortion_raises(dist: np.ndarray) -> None:
    with pytest.raises(GeometryError, match="CAM_FRONT"):
        camera(dist)


@pytest.mark.parametrize("n", [0, 4, 5, 8, 12, 14])
def test_valid_distortion_lengths(n: int) -> None:
    assert camera(np.zeros(n)).distortion.shape == (n,)


def test_camera_is_immutable_and_copies_inputs() -> None:
    k = K.copy()
    dist = DIST.copy()
    cam = PinholeCamera("CAM_FRONT", k, 1600.0, 900.0, SE3.identity(), dist)  # type: ignore[arg-type]
    k[0, 0] = 1.0
    dist[0] = 0.0
    assert cam.intrinsics[0, 0] == 1000.0
    assert cam.distortion[0] == -0.2
    assert isinstance(cam.width_px, int) and cam.width_px == 1600
    assert not cam.intrinsics.flags.writeable
    assert not cam.distortion.flags.writeable
    with pytest.raises(ValueError):
        cam.intrinsics[0, 0] = 2.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        cam.width_px = 10  # type: ignore[misc]
