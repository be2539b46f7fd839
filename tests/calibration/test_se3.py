"""SE3 and pose interpolation: every expected number below is worked out by hand in the comments."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from calibration import SE3, AutolabelError, GeometryError, interpolate_pose, interpolate_poses, nearest_rotation

C45 = math.cos(math.pi / 4)  # = sin 45° = sqrt(2)/2

# Rotation by +90° about z (counter-clockwise seen from above): x -> y, y -> -x.
RZ90 = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
# Rotation by +90° about x: y -> z, z -> -y.
RX90 = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


# --------------------------------------------------------------------------------- construction


def test_identity_is_eye_and_zero() -> None:
    pose = SE3.identity()
    np.testing.assert_array_equal(pose.rotation, np.eye(3))
    np.testing.assert_array_equal(pose.translation, np.zeros(3))
    np.testing.assert_array_equal(pose.as_matrix(), np.eye(4))


def test_from_yaw_90_maps_x_to_y_and_y_to_minus_x() -> None:
    pose = SE3.from_yaw(math.pi / 2)
    np.testing.assert_allclose(pose.rotation, RZ90, atol=1e-15)
    out = pose.transform_points(np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))
    np.testing.assert_allclose(out, [[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], atol=1e-15)
    assert pose.yaw_rad == pytest.approx(math.pi / 2)


def test_from_yaw_with_translation_rotates_then_translates() -> None:
    # x -> R x + t: (2, 0, 0) -> (0, 2, 0) + (10, 20, 30) = (10, 22, 30)
    pose = SE3.from_yaw(math.pi / 2, (10.0, 20.0, 30.0))
    np.testing.assert_allclose(pose.transform_points(np.array([[2.0, 0.0, 0.0]])), [[10.0, 22.0, 30.0]], atol=1e-12)


@pytest.mark.parametrize("yaw", [0.0, 0.3, -2.5, math.pi / 2, -math.pi / 2, 3.0])
def test_yaw_rad_round_trip(yaw: float) -> None:
    assert SE3.from_yaw(yaw).yaw_rad == pytest.approx(yaw, abs=1e-12)


def test_yaw_rad_of_pure_roll_is_zero() -> None:
    # A roll about x keeps the x axis, so the heading in the xy-plane is still 0.
    assert SE3(RX90, np.zeros(3)).yaw_rad == pytest.approx(0.0, abs=1e-15)


def test_constructor_copies_its_inputs() -> None:
    rotation = RZ90.copy()
    translation = np.array([1.0, 2.0, 3.0])
    pose = SE3(rotation, translation)
    rotation[0, 0] = 99.0
    translation[0] = 99.0
    np.testing.assert_array_equal(pose.rotation, RZ90)
    np.testing.assert_array_equal(pose.translation, [1.0, 2.0, 3.0])


def test_constructor_accepts_lists_and_column_translation() -> None:
    pose = SE3(RZ90.tolist(), np.array([[1.0], [2.0], [3.0]]))
    assert pose.rotation.dtype == np.float64
    np.testing.assert_array_equal(pose.translation, [1.0, 2.0, 3.0])


# --------------------------------------------------------------------------------- immutability


def test_arrays_are_read_only() -> None:
    pose = SE3.from_yaw(0.3, (1.0, 2.0, 3.0))
    assert not pose.rotation.flags.writeable
    assert not pose.translation.flags.writeable
    with pytest.raises(ValueError):
        pose.rotation[0, 0] = 2.0
    with pytest.raises(ValueError):
        pose.translation[0] = 2.0


def test_attribute_assignment_raises() -> None:
    pose = SE3.identity()
    with pytest.raises(dataclasses.FrozenInstanceError):
        pose.translation = np.ones(3)  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        pose.rotation = np.eye(3)  # type: ignore[misc]


def test_as_matrix_is_a_fresh_writable_copy() -> None:
    pose = SE3.from_yaw(0.3, (1.0, 2.0, 3.0))
    m = pose.as_matrix()
    assert m.flags.writeable
    m[0, 3] = 100.0
    assert pose.translation[0] == 1.0


def test_operations_do_not_mutate_operands() -> None:
    a = SE3.from_yaw(0.5, (1.0, 2.0, 3.0))
    b = SE3.from_yaw(-0.2, (4.0, 5.0, 6.0))
    a_m, b_m = a.as_matrix(), b.as_matrix()
    _ = a @ b
    _ = a.inverse()
    _ = a.transform_points(np.ones((3, 3)))
    np.testing.assert_array_equal(a.as_matrix(), a_m)
    np.testing.assert_array_equal(b.as_matrix(), b_m)


# --------------------------------------------------------------------------------- validation


def test_geometry_error_is_an_autolabel_error() -> None:
    assert issubclass(GeometryError, AutolabelError)


@pytest.mark.parametrize(
    "rotation",
    [
        np.diag([1.0, 1.0, -1.0]),  # reflection: orthonormal but det = -1
        2.0 * np.eye(3),  # scaled
        np.array([[1.0, 0.1, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]),  # shear
        np.zeros((3, 3)),
        np.eye(3) + 1e-4,  # "almost" rotation: rejected without orthonormalization
    ],
)
def test_non_rotation_raises(rotation: np.ndarray) -> None:
    with pytest.raises(GeometryError):
        SE3(rotation, np.zeros(3))


@pytest.mark.parametrize(
    ("rotation", "translation"),
    [
        (np.eye(2), np.zeros(3)),
        (np.eye(4), np.zeros(3)),
        (np.eye(3), np.zeros(2)),
        (np.eye(3), np.zeros(4)),
    ],
)
def test_wrong_shapes_raise(rotation: np.ndarray, translation: np.ndarray) -> None:
    with pytest.raises(GeometryError):
        SE3(rotation, translation)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_raises(bad: float) -> None:
    with pytest.raises(GeometryError):
        SE3(np.eye(3), [0.0, bad, 0.0])
    rotation = np.eye(3)
    rotation[1, 2] = bad
    with pytest.raises(GeometryError):
        SE3(rotation, np.zeros(3))


# --------------------------------------------------------------------------------- algebra


def test_composition_order_on_a_point() -> None:
    # a_SE3_b: rotate +90° about z then shift +1 in x; b_SE3_c: shift +1 in x.
    a_SE3_b = SE3.from_yaw(math.pi / 2, (1.0, 0.0, 0.0))
    b_SE3_c = SE3(np.eye(3), (1.0, 0.0, 0.0))
    # c origin -> b: (1, 0, 0) -> a: R(1, 0, 0) + (1, 0, 0) = (0, 1, 0) + (1, 0, 0) = (1, 1, 0)
    a_SE3_c = a_SE3_b @ b_SE3_c
    np.testing.assert_allclose(a_SE3_c.transform_points(np.zeros((1, 3))), [[1.0, 1.0, 0.0]], atol=1e-15)
    np.testing.assert_allclose(a_SE3_c.translation, [1.0, 1.0, 0.0], atol=1e-15)
    np.testing.assert_allclose(a_SE3_c.rotation, RZ90, atol=1e-15)
    # The other order is a different transform: origin -> (1, 0, 0) (+1 in x) -> (2, 0, 0).
    wrong = b_SE3_c @ a_SE3_b
    np.testing.assert_allclose(wrong.transform_points(np.zeros((1, 3))), [[2.0, 0.0, 0.0]], atol=1e-15)
    # c point (0, 1, 0) -> b (1, 1, 0) -> a R(1, 1, 0) + (1, 0, 0) = (-1, 1, 0) + (1, 0, 0) = (0, 1, 0)
    np.testing.assert_allclose(a_SE3_c.transform_points(np.array([[0.0, 1.0, 0.0]])), [[0.0, 1.0, 0.0]], atol=1e-15)


def test_composition_equals_sequential_application() -> None:
    rng = np.random.default_rng(0)
    a = SE3.from_quaternion_wxyz(_unit(rng.normal(size=4)), rng.normal(size=3))
    b = SE3.from_quaternion_wxyz(_unit(rng.normal(size=4)), rng.normal(size=3))
    pts = rng.normal(size=(10, 3))
    np.testing.assert_allclose((a @ b).transform_points(pts), a.transform_points(b.transform_points(pts)), atol=1e-12)


def test_composition_is_associative() -> None:
    a = SE3.from_yaw(0.4, (1.0, 2.0, 3.0))
    b = SE3(RX90, (-1.0, 0.5, 2.0))
    c = SE3.from_yaw(-1.1, (0.0, -3.0, 1.0))
    assert ((a @ b) @ c).allclose(a @ (b @ c), atol=1e-12)


def test_matmul_with_non_se3_raises() -> None:
    with pytest.raises(TypeError):
        _ = SE3.identity() @ "ego"  # type: ignore[operator]
    # With an ndarray, SE3 returns NotImplemented and numpy's __rmatmul__ raises; either way it
    # must not silently produce an array (points go through transform_points).
    with pytest.raises((TypeError, ValueError)):
        _ = SE3.identity() @ np.eye(4)  # type: ignore[operator]


def test_inverse_by_hand() -> None:
    # pose: R = Rz(90°), t = (1, 2, 3). inverse: R^T = Rz(-90°), t' = -R^T t.
    # R^T (1, 2, 3) = (y, -x, z) = (2, -1, 3) -> t' = (-2, 1, -3)
    inv = SE3.from_yaw(math.pi / 2, (1.0, 2.0, 3.0)).inverse()
    np.testing.assert_allclose(inv.rotation, RZ90.T, atol=1e-15)
    np.testing.assert_allclose(inv.translation, [-2.0, 1.0, -3.0], atol=1e-15)
    # The point (1, 2, 3) (the pose's origin in dst) goes back to the origin.
    np.testing.assert_allclose(inv.transform_points(np.array([[1.0, 2.0, 3.0]])), np.zeros((1, 3)), atol=1e-15)


def test_inverse_round_trip() -> None:
    rng = np.random.default_rng(1)
    pose = SE3.from_quaternion_wxyz(_unit(rng.normal(size=4)), rng.normal(size=3) * 100)
    assert (pose @ pose.inverse()).allclose(SE3.identity(), atol=1e-12)
    assert (pose.inverse() @ pose).allclose(SE3.identity(), atol=1e-12)
    assert pose.inverse().inverse().allclose(pose, atol=1e-12)
    pts = rng.normal(size=(5, 3))
    np.testing.assert_allclose(pose.inverse().transform_points(pose.transform_points(pts)), pts, atol=1e-10)


def test_allclose_detects_differences() -> None:
    a = SE3.from_yaw(0.1, (1.0, 0.0, 0.0))
    assert a.allclose(SE3.from_yaw(0.1, (1.0, 0.0, 0.0)))
    assert not a.allclose(SE3.from_yaw(0.1, (1.0, 0.0, 1e-3)))
    assert not a.allclose(SE3.from_yaw(0.1 + 1e-3, (1.0, 0.0, 0.0)))
    assert a.allclose(SE3.from_yaw(0.1, (1.0, 0.0, 1e-3)), atol=1e-2)


# --------------------------------------------------------------------------------- points / vectors


def test_transform_points_keeps_extra_columns_and_float32() -> None:
    pts = np.array([[1.0, 0.0, 0.0, 0.25, 0.05], [0.0, 2.0, 1.0, 0.75, -0.05]], dtype=np.float32)
    before = pts.copy()
    out = SE3.from_yaw(math.pi / 2, (10.0, 0.0, 0.0)).transform_points(pts)
    assert out.dtype == np.float32
    assert out.shape == (2, 5)
    # (1, 0, 0) -> (0, 1, 0) + (10, 0, 0); (0, 2, 1) -> (-2, 0, 1) + (10, 0, 0)
    np.testing.assert_allclose(out[:, :3], [[10.0, 1.0, 0.0], [8.0, 0.0, 1.0]], atol=1e-6)
    np.testing.assert_array_equal(out[:, 3:], before[:, 3:])  # intensity and dt carried bit-exactly
    np.testing.assert_array_equal(pts, before)  # input untouched
    assert out is not pts


def test_transform_points_float64_and_int_input() -> None:
    pose = SE3.from_yaw(0.0, (0.5, 0.0, 0.0))
    out64 = pose.transform_points(np.array([[1.0, 2.0, 3.0]]))
    assert out64.dtype == np.float64
    out_int = pose.transform_points(np.array([[1, 2, 3]]))
    assert out_int.dtype == np.float64  # integers are promoted, not truncated
    np.testing.assert_array_equal(out_int, [[1.5, 2.0, 3.0]])


def test_transform_points_empty() -> None:
    out = SE3.from_yaw(0.3, (1.0, 2.0, 3.0)).transform_points(np.zeros((0, 4), dtype=np.float32))
    assert out.shape == (0, 4)
    assert out.dtype == np.float32


@pytest.mark.parametrize("shape", [(3,), (4, 2), (2, 3, 1)])
def test_transform_points_bad_shape_raises(shape: tuple[int, ...]) -> None:
    with pytest.raises(GeometryError):
        SE3.identity().transform_points(np.zeros(shape))


def test_rotate_vectors_ignores_translation() -> None:
    pose = SE3.from_yaw(math.pi / 2, (100.0, 200.0, 300.0))
    np.testing.assert_allclose(pose.rotate_vectors(np.array([[1.0, 0.0, 0.0]])), [[0.0, 1.0, 0.0]], atol=1e-15)
    with pytest.raises(GeometryError):
        pose.rotate_vectors(np.zeros((2, 4)))


# --------------------------------------------------------------------------------- quaternions


@pytest.mark.parametrize(
    ("q_wxyz", "expected"),
    [
        ((1.0, 0.0, 0.0, 0.0), np.eye(3)),
        ((C45, 0.0, 0.0, C45), RZ90),  # 90° about z: (cos 45°, 0, 0, sin 45°)
        ((C45, C45, 0.0, 0.0), RX90),  # 90° about x
        ((0.0, 1.0, 0.0, 0.0), np.diag([1.0, -1.0, -1.0])),  # 180° about x
        ((0.0, 0.0, 0.0, 1.0), np.diag([-1.0, -1.0, 1.0])),  # 180° about z
        ((-C45, 0.0, 0.0, -C45), RZ90),  # -q is the same rotation
    ],
)
def test_from_quaternion_wxyz_known(q_wxyz: tuple[float, ...], expected: np.ndarray) -> None:
    pose = SE3.from_quaternion_wxyz(q_wxyz, (1.0, 2.0, 3.0))
    np.testing.assert_allclose(pose.rotation, expected, atol=1e-12)
    np.testing.assert_array_equal(pose.translation, [1.0, 2.0, 3.0])


def test_quaternion_wxyz_of_yaw_90() -> None:
    np.testing.assert_allclose(SE3.from_yaw(math.pi / 2).quaternion_wxyz, [C45, 0.0, 0.0, C45], atol=1e-12)


def test_quaternion_wxyz_w_non_negative() -> None:
    # -q in, +q (w >= 0) out.
    q = SE3.from_quaternion_wxyz((-C45, 0.0, 0.0, -C45), (0, 0, 0)).quaternion_wxyz
    np.testing.assert_allclose(q, [C45, 0.0, 0.0, C45], atol=1e-12)
    # Yaw of -3 rad: q = (cos(-1.5), 0, 0, sin(-1.5)); cos(-1.5) = 0.0707 > 0 already.
    q = SE3.from_yaw(-3.0).quaternion_wxyz
    np.testing.assert_allclose(q, [math.cos(-1.5), 0.0, 0.0, math.sin(-1.5)], atol=1e-12)
    # Yaw of +3.5 rad = -2.783 rad: half angle -1.3916, so q = (cos, 0, 0, sin(-1.3916)) with w > 0.
    half = (3.5 - 2 * math.pi) / 2
    np.testing.assert_allclose(SE3.from_yaw(3.5).quaternion_wxyz, [math.cos(half), 0, 0, math.sin(half)], atol=1e-12)


def test_quaternion_round_trip_random() -> None:
    rng = np.random.default_rng(2)
    for _ in range(20):
        q = _unit(rng.normal(size=4))
        q = q if q[0] >= 0 else -q
        out = SE3.from_quaternion_wxyz(q, np.zeros(3)).quaternion_wxyz
        assert out[0] >= 0
        np.testing.assert_allclose(out, q, atol=1e-12)
        assert np.linalg.norm(out) == pytest.approx(1.0)


def test_quaternion_slightly_off_unit_is_normalised() -> None:
    # nuScenes stores quaternions rounded; a norm within 1e-3 of one is accepted and normalised.
    pose = SE3.from_quaternion_wxyz((C45 * 1.0005, 0.0, 0.0, C45 * 1.0005), (0, 0, 0))
    np.testing.assert_allclose(pose.rotation, RZ90, atol=1e-12)


@pytest.mark.parametrize(
    "q",
    [(2.0, 0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 0.0), (1.0, 0.0, 0.0), (1.0, 0.0, 0.0, 0.0, 0.0), (np.nan, 0, 0, 1)],
)
def test_bad_quaternion_raises(q: tuple[float, ...]) -> None:
    with pytest.raises(GeometryError):
        SE3.from_quaternion_wxyz(q, (0.0, 0.0, 0.0))


# --------------------------------------------------------------------------------- matrices


def test_as_matrix_by_hand_and_round_trip() -> None:
    pose = SE3.from_yaw(math.pi / 2, (1.0, 2.0, 3.0))
    expected = np.array([[0.0, -1.0, 0.0, 1.0], [1.0, 0.0, 0.0, 2.0], [0.0, 0.0, 1.0, 3.0], [0.0, 0.0, 0.0, 1.0]])
    np.testing.assert_allclose(pose.as_matrix(), expected, atol=1e-15)
    assert SE3.from_matrix(expected).allclose(pose, atol=1e-15)
    assert SE3.from_matrix(expected[:3]).allclose(pose, atol=1e-15)  # 3x4 accepted too


def test_from_matrix_bad_inputs_raise() -> None:
    with pytest.raises(GeometryError):
        SE3.from_matrix(np.eye(3))
    bad_last_row = np.eye(4)
    bad_last_row[3] = [0.0, 0.0, 1.0, 1.0]
    with pytest.raises(GeometryError):
        SE3.from_matrix(bad_last_row)
    scaled = np.eye(4)
    scaled[:3, :3] *= 1.5
    with pytest.raises(GeometryError):
        SE3.from_matrix(scaled)


def test_from_matrix_orthonormalize_accepts_rounded_matrix() -> None:
    # A yaw of 30° written with 4 decimals, like a calibration file: cos 30° = 0.8660, sin 30° = 0.5.
    rounded = np.array([[0.8660, -0.5, 0.0, 1.0], [0.5, 0.8660, 0.0, 2.0], [0.0, 0.0, 1.0, 3.0], [0.0, 0.0, 0.0, 1.0]])
    # 0.866^2 + 0.25 = 0.999956: a deviation of 4.4e-5 is above the strict 1e-6 check ...
    with pytest.raises(GeometryError):
        SE3.from_matrix(rounded)
    # ... but accepted with a tolerance and projected onto SO(3). The xy block is a scaled rotation
    # s * [[cos a, -sin a], [sin a, cos a]] with a = atan2(0.5, 0.866); its nearest rotation is the
    # rotation by a itself (= 30.0007°, not exactly 30° because 0.866 is rounded).
    pose = SE3.from_matrix(rounded, orthonormalize_tol=1e-3)
    np.testing.assert_allclose(pose.rotation @ pose.rotation.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(pose.rotation) == pytest.approx(1.0, abs=1e-12)
    assert pose.yaw_rad == pytest.approx(math.atan2(0.5, 0.866), abs=1e-12)
    assert pose.yaw_rad == pytest.approx(math.radians(30.0), abs=2e-5)
    np.testing.assert_allclose(pose.rotation[2], [0.0, 0.0, 1.0], atol=1e-12)
    np.testing.assert_array_equal(pose.translation, [1.0, 2.0, 3.0])


def test_from_matrix_orthonormalize_rejects_bad_matrices() -> None:
    scaled = np.eye(4)
    scaled[:3, :3] *= 1.1  # R R^T - I = 0.21 on the diagonal
    with pytest.raises(GeometryError):
        SE3.from_matrix(scaled, orthonormalize_tol=1e-3)
    reflection = np.diag([1.0, -1.0, 1.0, 1.0])  # orthonormal but det = -1
    with pytest.raises(GeometryError):
        SE3.from_matrix(reflection, orthonormalize_tol=1e-3)


def test_nearest_rotation_is_identity_on_rotations_and_validates() -> None:
    np.testing.assert_allclose(nearest_rotation(RZ90, tol=1e-6), RZ90, atol=1e-15)
    # Diagonal 1.0001 -> nearest rotation is the identity.
    np.testing.assert_allclose(nearest_rotation(np.eye(3) * 1.0001, tol=1e-3), np.eye(3), atol=1e-12)
    with pytest.raises(GeometryError):
        nearest_rotation(np.eye(3) * 1.0001, tol=1e-6)
    with pytest.raises(GeometryError):
        nearest_rotation(np.eye(4), tol=1.0)
    with pytest.raises(GeometryError):
        nearest_rotation(np.full((3, 3), np.nan), tol=1.0)


def test_from_rotation_scipy() -> None:
    from scipy.spatial.transform import Rotation

    pose = SE3.from_rotation(Rotation.from_euler("x", 90, degrees=True), (1.0, 0.0, 0.0))
    np.testing.assert_allclose(pose.rotation, RX90, atol=1e-15)
    np.testing.assert_array_equal(pose.translation, [1.0, 0.0, 0.0])


def test_repr_mentions_quaternion_and_translation() -> None:
    text = repr(SE3.from_yaw(0.0, (1.0, 2.0, 3.0)))
    assert "q_wxyz=[1.0, 0.0, 0.0, 0.0]" in text
    assert "t=[1.0, 2.0, 3.0]" in text


# --------------------------------------------------------------------------------- interpolation


def test_interpolate_pose_halfway() -> None:
    pose0 = SE3.from_yaw(0.0, (0.0, 0.0, 0.0))
    pose1 = SE3.from_yaw(math.pi / 2, (2.0, 0.0, 0.0))
    mid = interpolate_pose(1_000_000, pose0, 2_000_000, pose1, 1_500_000)
    assert mid.yaw_rad == pytest.approx(math.pi / 4, abs=1e-12)
    np.testing.assert_allclose(mid.translation, [1.0, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(mid.quaternion_wxyz, [math.cos(math.pi / 8), 0, 0, math.sin(math.pi / 8)], atol=1e-12)


def test_interpolate_pose_quarter_and_endpoints() -> None:
    pose0 = SE3.from_yaw(0.0, (0.0, 0.0, 0.0))
    pose1 = SE3.from_yaw(math.pi / 2, (2.0, 4.0, -8.0))
    q = interpolate_pose(0, pose0, 100, pose1, 25)
    assert q.yaw_rad == pytest.approx(math.pi / 8, abs=1e-12)
    np.testing.assert_allclose(q.translation, [0.5, 1.0, -2.0], atol=1e-12)
    assert interpolate_pose(0, pose0, 100, pose1, 0).allclose(pose0, atol=1e-12)
    assert interpolate_pose(0, pose0, 100, pose1, 100).allclose(pose1, atol=1e-12)


def test_interpolate_pose_extrapolates_with_constant_velocity() -> None:
    pose0 = SE3.from_yaw(0.0, (0.0, 0.0, 0.0))
    pose1 = SE3.from_yaw(math.pi / 4, (1.0, 0.0, 0.0))
    # alpha = 2: yaw 90°, translation (2, 0, 0); alpha = -1: yaw -45°, translation (-1, 0, 0)
    ahead = interpolate_pose(0, pose0, 10, pose1, 20)
    assert ahead.yaw_rad == pytest.approx(math.pi / 2, abs=1e-12)
    np.testing.assert_allclose(ahead.translation, [2.0, 0.0, 0.0], atol=1e-12)
    behind = interpolate_pose(0, pose0, 10, pose1, -10)
    assert behind.yaw_rad == pytest.approx(-math.pi / 4, abs=1e-12)
    np.testing.assert_allclose(behind.translation, [-1.0, 0.0, 0.0], atol=1e-12)


def test_interpolate_pose_takes_the_short_way_round() -> None:
    # From yaw +170° to yaw -170° the short way passes through 180°, not through 0°.
    pose0 = SE3.from_yaw(math.radians(170.0))
    pose1 = SE3.from_yaw(math.radians(-170.0))
    mid = interpolate_pose(0, pose0, 2, pose1, 1)
    assert abs(mid.yaw_rad) == pytest.approx(math.pi, abs=1e-12)


def test_interpolate_pose_rotation_is_relative_to_pose0() -> None:
    # Both poses are rolled 90° about x; the yaw change happens about the rolled body's z.
    # pose0 = Rx90, pose1 = Rx90 @ Rz90; halfway the rotation is Rx90 @ Rz45.
    rz45 = SE3.from_yaw(math.pi / 4).rotation
    pose0 = SE3(RX90, np.zeros(3))
    pose1 = SE3(RX90 @ RZ90, np.zeros(3))
    mid = interpolate_pose(0, pose0, 2, pose1, 1)
    np.testing.assert_allclose(mid.rotation, RX90 @ rz45, atol=1e-12)


def test_interpolate_pose_equal_timestamps() -> None:
    pose = SE3.from_yaw(0.2, (1.0, 2.0, 3.0))
    assert interpolate_pose(5, pose, 5, SE3.identity(), 5).allclose(pose)
    with pytest.raises(GeometryError):
        interpolate_pose(5, pose, 5, SE3.identity(), 6)


def test_interpolate_poses_at_knots_returns_knots() -> None:
    ts = np.array([100, 200, 400], dtype=np.int64)
    poses = [
        SE3.from_yaw(0.0, (0.0, 0.0, 0.0)),
        SE3.from_yaw(0.5, (1.0, 2.0, 0.0)),
        SE3(RX90, (3.0, -1.0, 2.0)),
    ]
    out = interpolate_poses(ts, poses, ts)
    assert len(out) == 3
    for got, want in zip(out, poses, strict=True):
        assert got.allclose(want, atol=1e-12)


def test_interpolate_poses_between_knots_by_hand() -> None:
    ts = np.array([0, 1_000, 3_000])
    poses = [
        SE3.from_yaw(0.0, (0.0, 0.0, 0.0)),
        SE3.from_yaw(math.pi / 2, (2.0, 0.0, 0.0)),
        SE3.from_yaw(math.pi / 2, (2.0, 4.0, 0.0)),
    ]
    out = interpolate_poses(ts, poses, np.array([500, 2_000, 2_500]))
    # 500: halfway in segment 0 -> yaw 45°, (1, 0, 0)
    assert out[0].yaw_rad == pytest.approx(math.pi / 4, abs=1e-12)
    np.testing.assert_allclose(out[0].translation, [1.0, 0.0, 0.0], atol=1e-12)
    # 2000: halfway in segment 1 -> yaw stays 90°, (2, 2, 0); 2500: three quarters -> (2, 3, 0)
    assert out[1].yaw_rad == pytest.approx(math.pi / 2, abs=1e-12)
    np.testing.assert_allclose(out[1].translation, [2.0, 2.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(out[2].translation, [2.0, 3.0, 0.0], atol=1e-12)


def test_interpolate_poses_with_real_nuscenes_timestamps() -> None:
    # nuScenes timestamps are ~1.5e15 us; float64 still resolves 0.25 us there.
    t0 = 1_532_402_927_647_951
    ts = np.array([t0, t0 + 500_000], dtype=np.int64)
    poses = [SE3.from_yaw(0.0, (600.0, 1600.0, 0.0)), SE3.from_yaw(0.2, (605.0, 1600.0, 0.0))]
    (mid,) = interpolate_poses(ts, poses, np.array([t0 + 250_000]))
    assert mid.yaw_rad == pytest.approx(0.1, abs=1e-9)
    np.testing.assert_allclose(mid.translation, [602.5, 1600.0, 0.0], atol=1e-6)


def test_interpolate_poses_single_pose_and_empty_query() -> None:
    pose = SE3.from_yaw(0.3, (1.0, 2.0, 3.0))
    out = interpolate_poses(np.array([10]), [pose], np.array([10, 10]))
    assert len(out) == 2
    assert all(p.allclose(pose) for p in out)
    assert interpolate_poses(np.array([0, 10]), [pose, pose], np.array([], dtype=np.int64)) == []


@pytest.mark.parametrize("query", [[-1], [11], [0, 5, 12]])
def test_interpolate_poses_out_of_range_raises(query: list[int]) -> None:
    poses = [SE3.identity(), SE3.from_yaw(0.1)]
    with pytest.raises(GeometryError):
        interpolate_poses(np.array([0, 10]), poses, np.array(query))


@pytest.mark.parametrize("ts", [[0, 10, 10], [0, 10, 5], [10, 0, 20]])
def test_interpolate_poses_non_increasing_timestamps_raise(ts: list[int]) -> None:
    poses = [SE3.identity(), SE3.from_yaw(0.1), SE3.from_yaw(0.2)]
    with pytest.raises(GeometryError):
        interpolate_poses(np.array(ts), poses, np.array([0]))


def test_interpolate_poses_count_mismatch_raises() -> None:
    with pytest.raises(GeometryError):
        interpolate_poses(np.array([0, 10, 20]), [SE3.identity(), SE3.identity()], np.array([5]))
    with pytest.raises(GeometryError):
        interpolate_poses(np.array([], dtype=np.int64), [], np.array([5]))


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)
