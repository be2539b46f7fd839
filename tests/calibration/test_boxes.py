"""Boxes3D / Box3D / IoU: expected values are derived by hand in the comments."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from calibration import (
    EGO_FRAME,
    SE3,
    WORLD_FRAME,
    Box3D,
    Boxes3D,
    GeometryError,
    iou_3d,
    iou_bev,
    iou_bev_paired,
    wrap_angle_rad,
)

S2 = math.sqrt(2.0)
EX = np.array([1.0, 0.0, 0.0])
EZ = np.array([0.0, 0.0, 1.0])


def boxes(rows: list[list[float]], frame: str = EGO_FRAME, velocity: list[list[float]] | None = None) -> Boxes3D:
    return Boxes3D(np.array(rows, dtype=np.float64), frame, None if velocity is None else np.array(velocity))


def shoelace(poly: np.ndarray) -> float:
    """Signed area of a polygon; positive when counter-clockwise."""
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


# --------------------------------------------------------------------------------- wrap_angle_rad


@pytest.mark.parametrize(
    ("angle", "expected"),
    [
        (0.0, 0.0),
        (1.0, 1.0),
        (-1.0, -1.0),
        (math.pi, math.pi),  # the closed end of (-pi, pi]
        (-math.pi, math.pi),  # -pi is excluded and maps to +pi
        (3 * math.pi, math.pi),
        (-3 * math.pi, math.pi),
        (1.5 * math.pi, -0.5 * math.pi),
        (-1.5 * math.pi, 0.5 * math.pi),
        (2 * math.pi, 0.0),
        (7.0, 7.0 - 2 * math.pi),  # 0.7168
        (-7.0, -7.0 + 2 * math.pi),
        (100.0, 100.0 - 32 * math.pi),  # 100 / (2 pi) = 15.9 -> 16 turns of 2 pi: -0.531
    ],
)
def test_wrap_angle_rad(angle: float, expected: float) -> None:
    out = wrap_angle_rad(angle)
    assert isinstance(out, float)
    assert out == pytest.approx(expected, abs=1e-12)


def test_wrap_angle_rad_array() -> None:
    out = wrap_angle_rad(np.array([0.0, -math.pi, 1.5 * math.pi, 4.0]))
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, [0.0, math.pi, -0.5 * math.pi, 4.0 - 2 * math.pi], atol=1e-12)


def test_wrap_angle_rad_range_on_a_dense_sweep() -> None:
    angles = np.linspace(-20.0, 20.0, 100_001)
    out = wrap_angle_rad(angles)
    assert np.all(out > -math.pi)
    assert np.all(out <= math.pi)
    # Same direction as the input.
    np.testing.assert_allclose(np.cos(out), np.cos(angles), atol=1e-9)
    np.testing.assert_allclose(np.sin(out), np.sin(angles), atol=1e-9)


def test_wrap_angle_rad_just_above_pi_stays_in_range() -> None:
    just_above_pi = float(np.nextafter(math.pi, 4.0))  # pi + 4.4e-16
    out = wrap_angle_rad(just_above_pi)
    # The true wrapped value is -pi + 4.4e-16, which is not representable; the nearest value in the
    # documented range (-pi, pi] is pi itself (or the float just above -pi); never -pi.
    assert out > -math.pi


# --------------------------------------------------------------------------------- construction


def test_data_is_copied_read_only_and_frozen() -> None:
    raw = np.array([[1.0, 2.0, 3.0, 4.0, 2.0, 1.5, 0.1]])
    b = Boxes3D(raw, EGO_FRAME, np.array([[1.0, 2.0]]))
    raw[0, 0] = 99.0
    assert b.data[0, 0] == 1.0
    assert b.data.dtype == np.float64
    assert not b.data.flags.writeable
    assert not b.velocity.flags.writeable
    with pytest.raises(ValueError):
        b.data[0, 0] = 5.0
    with pytest.raises(ValueError):
        b.velocity[0, 0] = 5.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        b.frame = WORLD_FRAME  # type: ignore[misc]


def test_single_row_vector_is_one_box() -> None:
    b = Boxes3D(np.array([1.0, 2.0, 3.0, 4.0, 2.0, 1.5, 0.1]), EGO_FRAME)
    assert len(b) == 1
    np.testing.assert_array_equal(b.centers, [[1.0, 2.0, 3.0]])


def test_accessors() -> None:
    b = boxes([[1.0, 2.0, 3.0, 4.0, 2.0, 1.5, 0.25], [0.0, 0.0, 0.0, 1.0, 1.0, 1.0, -1.0]])
    np.testing.assert_array_equal(b.centers, [[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    np.testing.assert_array_equal(b.sizes, [[4.0, 2.0, 1.5], [1.0, 1.0, 1.0]])
    np.testing.assert_array_equal(b.yaws_rad, [0.25, -1.0])
    np.testing.assert_allclose(b.volumes_m3, [12.0, 1.0])  # 4 * 2 * 1.5


def test_yaw_is_wrapped_on_construction() -> None:
    b = boxes([[0, 0, 0, 1, 1, 1, 1.5 * math.pi], [0, 0, 0, 1, 1, 1, -math.pi], [0, 0, 0, 1, 1, 1, 7.0]])
    np.testing.assert_allclose(b.yaws_rad, [-0.5 * math.pi, math.pi, 7.0 - 2 * math.pi], atol=1e-12)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("column", [0, 2, 3, 6])
def test_non_finite_raises(bad: float, column: int) -> None:
    row = [1.0, 2.0, 3.0, 4.0, 2.0, 1.5, 0.1]
    row[column] = bad
    with pytest.raises(GeometryError):
        boxes([row])


@pytest.mark.parametrize("column", [3, 4, 5])
def test_negative_size_raises(column: int) -> None:
    row = [1.0, 2.0, 3.0, 4.0, 2.0, 1.5, 0.1]
    row[column] = -0.01
    with pytest.raises(GeometryError):
        boxes([row])


def test_zero_size_is_allowed() -> None:
    assert len(boxes([[0, 0, 0, 0, 0, 0, 0]])) == 1


@pytest.mark.parametrize("shape", [(7, 2), (2, 14), (1, 1, 7)])
def test_bad_shapes_raise(shape: tuple[int, ...]) -> None:
    with pytest.raises(GeometryError):
        Boxes3D(np.ones(shape), EGO_FRAME)


@pytest.mark.parametrize("shape", [(2, 6), (1, 8), (5,)])
def test_bad_shapes_not_divisible_by_seven_raise_geometry_error(shape: tuple[int, ...]) -> None:
    with pytest.raises(GeometryError):
        Boxes3D(np.ones(shape), EGO_FRAME)


def test_empty_data_with_wrong_columns_raise() -> None:
    with pytest.raises(GeometryError):
        Boxes3D(np.zeros((0, 5)), EGO_FRAME)


def test_velocity_wrong_row_count_raises() -> None:
    with pytest.raises(GeometryError):
        boxes([[0, 0, 0, 1, 1, 1, 0], [0, 0, 0, 1, 1, 1, 0]], velocity=[[1.0, 2.0]])
    with pytest.raises(GeometryError):
        boxes([[0, 0, 0, 1, 1, 1, 0], [0, 0, 0, 1, 1, 1, 0]], velocity=[[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])


def test_velocity_odd_size_raises_geometry_error() -> None:
    with pytest.raises(GeometryError):
        boxes([[0, 0, 0, 1, 1, 1, 0]], velocity=[[1.0, 2.0, 3.0]])


def test_velocity_nan_means_unknown_and_is_allowed() -> None:
    b = boxes([[0, 0, 0, 1, 1, 1, 0]], velocity=[[np.nan, np.nan]])
    assert np.isnan(b.velocity).all()


# --------------------------------------------------------------------------------- Box3D


def test_box3d_round_trip() -> None:
    box = Box3D((1.0, 2.0, 3.0), (4.0, 2.0, 1.5), 0.3, WORLD_FRAME, (5.0, -1.0))
    batch = box.as_boxes()
    assert len(batch) == 1
    assert batch.frame == WORLD_FRAME
    np.testing.assert_allclose(batch.data, [[1.0, 2.0, 3.0, 4.0, 2.0, 1.5, 0.3]], rtol=0, atol=1e-15)
    np.testing.assert_array_equal(batch.velocity, [[5.0, -1.0]])
    back = batch.box(0)
    assert back.center == box.center and back.size == box.size and back.velocity == box.velocity
    assert back.yaw_rad == pytest.approx(box.yaw_rad, abs=1e-15)
    assert isinstance(back.center[0], float)
    # Boxes3D -> Box3D -> Boxes3D is exact (the stored yaw is already wrapped).
    np.testing.assert_array_equal(back.as_boxes().data, batch.data)


def test_box3d_round_trip_is_exact() -> None:
    box = Box3D((1.0, 2.0, 3.0), (4.0, 2.0, 1.5), 0.1, WORLD_FRAME, (5.0, -1.0))
    assert wrap_angle_rad(0.1) == 0.1
    assert box.as_boxes().box(0) == box


def test_box3d_without_velocity_and_wrapping() -> None:
    box = Box3D((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), 1.5 * math.pi, EGO_FRAME)
    batch = box.as_boxes()
    assert batch.velocity is None
    assert batch.box(0).velocity is None
    assert batch.box(0).yaw_rad == pytest.approx(-0.5 * math.pi)


def test_box3d_is_frozen() -> None:
    box = Box3D((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), 0.0, EGO_FRAME)
    with pytest.raises(dataclasses.FrozenInstanceError):
        box.yaw_rad = 1.0  # type: ignore[misc]


def test_from_boxes_and_iteration() -> None:
    a = Box3D((1.0, 0.0, 0.0), (4.0, 2.0, 1.5), 0.1, EGO_FRAME, (1.0, 0.0))
    b = Box3D((2.0, 0.0, 0.0), (1.0, 1.0, 1.0), -0.2, EGO_FRAME)
    batch = Boxes3D.from_boxes([a, b], EGO_FRAME)
    np.testing.assert_array_equal(batch.velocity[0], [1.0, 0.0])
    assert np.isnan(batch.velocity[1]).all()  # unknown velocity becomes NaN
    listed = list(batch)
    assert all(isinstance(x, Box3D) for x in listed)
    assert listed[0].center == a.center and listed[0].velocity == a.velocity
    assert listed[0].yaw_rad == pytest.approx(a.yaw_rad, abs=1e-15)
    assert listed[1].center == b.center and listed[1].yaw_rad == pytest.approx(b.yaw_rad, abs=1e-15)
    assert listed[1].velocity is not None and all(math.isnan(v) for v in listed[1].velocity)


def test_from_boxes_without_any_velocity_and_empty() -> None:
    a = Box3D((1.0, 0.0, 0.0), (4.0, 2.0, 1.5), 0.1, EGO_FRAME)
    assert Boxes3D.from_boxes([a], EGO_FRAME).velocity is None
    empty = Boxes3D.from_boxes([], EGO_FRAME)
    assert len(empty) == 0
    assert empty.data.shape == (0, 7)


def test_from_boxes_wrong_frame_raises() -> None:
    a = Box3D((1.0, 0.0, 0.0), (4.0, 2.0, 1.5), 0.1, WORLD_FRAME)
    with pytest.raises(GeometryError):
        Boxes3D.from_boxes([a], EGO_FRAME)


# --------------------------------------------------------------------------------- indexing


def _three() -> Boxes3D:
    return boxes(
        [[0, 0, 0, 1, 1, 1, 0.0], [10, 0, 0, 2, 2, 2, 0.5], [20, 0, 0, 3, 3, 3, -0.5]],
        velocity=[[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]],
    )


def test_indexing_with_mask_int_slice_list() -> None:
    b = _three()
    masked = b[np.array([True, False, True])]
    np.testing.assert_array_equal(masked.centers[:, 0], [0.0, 20.0])
    np.testing.assert_array_equal(masked.velocity[:, 0], [1.0, 3.0])
    assert masked.frame == EGO_FRAME
    single = b[1]
    assert isinstance(single, Boxes3D) and len(single) == 1
    np.testing.assert_array_equal(single.data, [[10, 0, 0, 2, 2, 2, 0.5]])
    assert b[-1].centers[0, 0] == 20.0
    np.testing.assert_array_equal(b[1:].centers[:, 0], [10.0, 20.0])
    np.testing.assert_array_equal(b[[2, 0]].velocity[:, 0], [3.0, 1.0])
    assert len(b[np.zeros(3, dtype=bool)]) == 0
    assert len(b) == 3  # original untouched


def test_indexing_out_of_range_raises() -> None:
    with pytest.raises(IndexError):
        _ = _three()[3]
    with pytest.raises(IndexError):
        _ = _three()[np.array([True, False])]


def test_box_by_index() -> None:
    box = _three().box(1)
    assert box == Box3D((10.0, 0.0, 0.0), (2.0, 2.0, 2.0), 0.5, EGO_FRAME, (2.0, 0.0))


# --------------------------------------------------------------------------------- concatenate / empty


def test_concatenate() -> None:
    a = boxes([[0, 0, 0, 1, 1, 1, 0]], velocity=[[1.0, 2.0]])
    b = boxes([[5, 0, 0, 2, 2, 2, 0], [6, 0, 0, 2, 2, 2, 0]])  # no velocity
    both = Boxes3D.concatenate([a, b], EGO_FRAME)
    assert len(both) == 3
    np.testing.assert_array_equal(both.centers[:, 0], [0.0, 5.0, 6.0])
    np.testing.assert_array_equal(both.velocity[0], [1.0, 2.0])
    assert np.isnan(both.velocity[1:]).all()
    no_vel = Boxes3D.concatenate([b, b], EGO_FRAME)
    assert no_vel.velocity is None and len(no_vel) == 4
    nothing = Boxes3D.concatenate([], WORLD_FRAME)
    assert len(nothing) == 0 and nothing.frame == WORLD_FRAME


def test_concatenate_mixed_frames_raises() -> None:
    a = boxes([[0, 0, 0, 1, 1, 1, 0]], frame=EGO_FRAME)
    b = boxes([[0, 0, 0, 1, 1, 1, 0]], frame=WORLD_FRAME)
    with pytest.raises(GeometryError):
        Boxes3D.concatenate([a, b], EGO_FRAME)
    with pytest.raises(GeometryError):
        Boxes3D.concatenate([a], WORLD_FRAME)


def test_empty_boxes() -> None:
    e = Boxes3D.empty(EGO_FRAME)
    assert len(e) == 0
    assert e.velocity is None
    assert e.corners().shape == (0, 8, 3)
    assert e.bev_corners().shape == (0, 4, 2)
    assert e.volumes_m3.shape == (0,)
    assert list(e) == []
    assert e.points_in_boxes(np.zeros((4, 3))).shape == (4, 0)
    moved = e.transform(SE3.from_yaw(0.3, (1.0, 2.0, 3.0)), WORLD_FRAME)
    assert len(moved) == 0 and moved.frame == WORLD_FRAME
    ev = Boxes3D.empty(EGO_FRAME, with_velocity=True)
    assert ev.velocity is not None and ev.velocity.shape == (0, 2)
    assert ev.transform(SE3.identity(), WORLD_FRAME).velocity.shape == (0, 2)
    other = boxes([[0, 0, 0, 1, 1, 1, 0], [1, 0, 0, 1, 1, 1, 0]])
    assert iou_bev(e, other).shape == (0, 2)
    assert iou_3d(other, e).shape == (2, 0)


# --------------------------------------------------------------------------------- corners


def test_corners_axis_aligned_by_hand() -> None:
    # centre (1, 2, 3), l=4, w=2, h=6: x in [-1, 3], y in [1, 3], z in [0, 6]
    c = boxes([[1.0, 2.0, 3.0, 4.0, 2.0, 6.0, 0.0]]).corners()[0]
    expected = [
        [3, 3, 6],  # 0: front-left top   (+l/2, +w/2, +h/2)
        [3, 1, 6],  # 1: front-right top  (+l/2, -w/2)
        [-1, 1, 6],  # 2: rear-right top
        [-1, 3, 6],  # 3: rear-left top
        [3, 3, 0],  # 4-7: bottom face, same xy order
        [3, 1, 0],
        [-1, 1, 0],
        [-1, 3, 0],
    ]
    np.testing.assert_allclose(c, expected, atol=1e-12)


def test_corners_yaw_90_by_hand() -> None:
    # yaw 90°: the box's +x (length) points along the frame's +y; rotation (x, y) -> (-y, x).
    # local corner 0 (2, 1) -> (-1, 2); 1 (2, -1) -> (1, 2); 2 (-2, -1) -> (1, -2); 3 (-2, 1) -> (-1, -2)
    c = boxes([[0.0, 0.0, 0.0, 4.0, 2.0, 2.0, math.pi / 2]]).corners()[0]
    expected = [[-1, 2, 1], [1, 2, 1], [1, -2, 1], [-1, -2, 1], [-1, 2, -1], [1, 2, -1], [1, -2, -1], [-1, -2, -1]]
    np.testing.assert_allclose(c, expected, atol=1e-12)


def test_corners_yaw_45_by_hand() -> None:
    # square 2 x 2 at yaw 45° around (5, 5): corner 0 local (1, 1) -> (0, sqrt2);
    # corner 1 local (1, -1) -> (sqrt2, 0)
    c = boxes([[5.0, 5.0, 0.0, 2.0, 2.0, 2.0, math.pi / 4]]).corners()[0]
    np.testing.assert_allclose(c[0], [5.0, 5.0 + S2, 1.0], atol=1e-12)
    np.testing.assert_allclose(c[1], [5.0 + S2, 5.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(c[2], [5.0, 5.0 - S2, 1.0], atol=1e-12)
    np.testing.assert_allclose(c[3], [5.0 - S2, 5.0, 1.0], atol=1e-12)


def test_bev_corners_counter_clockwise() -> None:
    b = boxes(
        [
            [0.0, 0.0, 0.0, 4.0, 2.0, 1.0, 0.0],
            [10.0, -3.0, 0.0, 4.0, 2.0, 1.0, 2.5],
            [0.0, 0.0, 0.0, 4.0, 2.0, 1.0, -2.0],
            [0.0, 0.0, 0.0, 1.0, 3.0, 1.0, math.pi],
        ]
    )
    bev = b.bev_corners()
    assert bev.shape == (4, 4, 2)
    for poly, (l, w) in zip(bev, b.sizes[:, :2], strict=True):
        assert shoelace(poly) == pytest.approx(l * w)  # positive: counter-clockwise, area l * w
    # order 0, 3, 2, 1 of the axis-aligned box: (2, 1), (-2, 1), (-2, -1), (2, -1)
    np.testing.assert_allclose(bev[0], [[2, 1], [-2, 1], [-2, -1], [2, -1]], atol=1e-12)


# --------------------------------------------------------------------------------- transform


def test_transform_by_hand_and_back() -> None:
    # ego box at (10, 0, 0.5), yaw 0, velocity (5, 0); world_SE3_ego = yaw 90° + (100, 200, 1).
    # centre -> R (10, 0, 0.5) + t = (0, 10, 0.5) + (100, 200, 1) = (100, 210, 1.5)
    # yaw 0 + 90° = 90°; velocity (5, 0) rotated = (0, 5) (translation does not affect velocity)
    ego = boxes([[10.0, 0.0, 0.5, 4.0, 2.0, 1.5, 0.0]], velocity=[[5.0, 0.0]])
    world_SE3_ego = SE3.from_yaw(math.pi / 2, (100.0, 200.0, 1.0))
    world = ego.transform(world_SE3_ego, WORLD_FRAME)
    assert world.frame == WORLD_FRAME
    np.testing.assert_allclose(world.centers, [[100.0, 210.0, 1.5]], atol=1e-12)
    np.testing.assert_allclose(world.sizes, [[4.0, 2.0, 1.5]])
    np.testing.assert_allclose(world.yaws_rad, [math.pi / 2], atol=1e-12)
    np.testing.assert_allclose(world.velocity, [[0.0, 5.0]], atol=1e-12)
    back = world.transform(world_SE3_ego.inverse(), EGO_FRAME)
    np.testing.assert_allclose(back.data, ego.data, atol=1e-12)
    np.testing.assert_allclose(back.velocity, ego.velocity, atol=1e-12)
    # the original is untouched
    np.testing.assert_array_equal(ego.centers, [[10.0, 0.0, 0.5]])
    assert ego.frame == EGO_FRAME


def test_transform_yaw_adds_frame_yaw_and_wraps() -> None:
    # 135° + 90° = 225° -> wrapped to -135°
    b = boxes([[0, 0, 0, 1, 1, 1, 0.75 * math.pi]])
    out = b.transform(SE3.from_yaw(math.pi / 2), WORLD_FRAME)
    assert out.yaws_rad[0] == pytest.approx(-0.75 * math.pi, abs=1e-12)


def test_transform_corners_agree_with_transformed_corners() -> None:
    rng = np.random.default_rng(3)
    data = np.column_stack([rng.uniform(-50, 50, (6, 3)), rng.uniform(0.5, 5, (6, 3)), rng.uniform(-np.pi, np.pi, 6)])
    b = Boxes3D(data, EGO_FRAME)
    pose = SE3.from_yaw(1.234, (300.0, -20.0, 2.0))
    moved = b.transform(pose, WORLD_FRAME)
    expected = pose.transform_points(b.corners().reshape(-1, 3)).reshape(-1, 8, 3)
    np.testing.assert_allclose(moved.corners(), expected, atol=1e-9)


def test_transform_velocity_nan_stays_nan() -> None:
    b = boxes([[0, 0, 0, 1, 1, 1, 0]], velocity=[[np.nan, np.nan]])
    assert np.isnan(b.transform(SE3.from_yaw(0.3), WORLD_FRAME).velocity).all()


def test_transform_drops_tilt() -> None:
    # A 5° pitch about y tips the heading (1, 0, 0) to (cos 5°, 0, -sin 5°): its xy direction is still +x.
    from scipy.spatial.transform import Rotation

    pitch = SE3.from_rotation(Rotation.from_euler("y", 5, degrees=True))
    out = boxes([[0, 0, 0, 4, 2, 1, 0.0]]).transform(pitch, WORLD_FRAME)
    assert out.yaws_rad[0] == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(out.sizes, [[4, 2, 1]])


# --------------------------------------------------------------------------------- points_in_boxes


def test_points_in_rotated_box() -> None:
    # centre (10, 5, 1), l=4, w=2, h=2, yaw 45°: heading u = (1, 1)/sqrt2, side v = (-1, 1)/sqrt2
    b = boxes([[10.0, 5.0, 1.0, 4.0, 2.0, 2.0, math.pi / 4]])
    u = np.array([1.0, 1.0, 0.0]) / S2
    v = np.array([-1.0, 1.0, 0.0]) / S2
    c = np.array([10.0, 5.0, 1.0])
    pts = np.array(
        [
            c,  # centre: in
            c + 1.9 * u,  # along the length, inside half-length 2: in
            c + 2.1 * u,  # beyond the front face: out
            c - 1.9 * u,  # near the rear face: in
            c + 0.9 * v,  # within half-width 1: in
            c + 1.1 * v,  # beyond the side: out
            c + 1.2 * EX,  # local (0.85, -0.85): in
            # local (1.06, -1.06): out, although it is inside the axis-aligned 4 x 2 footprint
            c + 1.5 * EX,
            c + 0.99 * EZ,  # just below the top: in
            c + 1.01 * EZ,  # above the top: out
            c - 1.01 * EZ,  # below the bottom: out
            c + 1.9 * u + 0.9 * v,  # near a corner: in
            c + 1.9 * u + 1.1 * v,  # next to a corner: out
        ]
    )
    mask = b.points_in_boxes(pts)
    assert mask.shape == (len(pts), 1)
    expected = [True, True, False, True, True, False, True, False, True, False, False, True, False]
    np.testing.assert_array_equal(mask[:, 0], expected)


def test_points_on_the_boundary_are_inside() -> None:
    # Axis-aligned box [-2, 2] x [-1, 1] x [0, 2]: the faces are exact in floating point.
    b = boxes([[0.0, 0.0, 1.0, 4.0, 2.0, 2.0, 0.0]])
    pts = np.array([[2.0, 0.0, 1.0], [-2.0, 1.0, 0.0], [0.0, -1.0, 2.0], [2.0, 1.0, 2.0], [2.0 + 1e-9, 0.0, 1.0]])
    np.testing.assert_array_equal(b.points_in_boxes(pts)[:, 0], [True, True, True, True, False])
    # Rotated box: within 1e-9 of the face in either direction.
    r = boxes([[10.0, 5.0, 1.0, 4.0, 2.0, 2.0, math.pi / 4]])
    u = np.array([1.0, 1.0, 0.0]) / S2
    c = np.array([10.0, 5.0, 1.0])
    on_face = np.array([c + (2 - 1e-9) * u, c + (2 + 1e-9) * u])
    np.testing.assert_array_equal(r.points_in_boxes(on_face)[:, 0], [True, False])


def test_points_in_boxes_margin() -> None:
    b = boxes([[10.0, 5.0, 1.0, 4.0, 2.0, 2.0, math.pi / 4]])
    u = np.array([1.0, 1.0, 0.0]) / S2
    c = np.array([10.0, 5.0, 1.0])
    pts = np.array([c + 2.1 * u, c + 2.3 * u, c + 1.15 * EZ])
    np.testing.assert_array_equal(b.points_in_boxes(pts)[:, 0], [False, False, False])
    # margin 0.2 grows every half-size by 0.2: half-length 2.2, half-height 1.2
    np.testing.assert_array_equal(b.points_in_boxes(pts, margin_m=0.2)[:, 0], [True, False, True])
    # negative margin shrinks: centre still in, 1.9 along the length out (half-length 1.5)
    np.testing.assert_array_equal(b.points_in_boxes(np.array([c, c + 1.9 * u]), margin_m=-0.5)[:, 0], [True, False])


def test_points_in_many_boxes_float32_with_intensity() -> None:
    b = boxes([[0, 0, 0, 2, 2, 2, 0.0], [10, 0, 0, 2, 2, 2, 0.3], [0.5, 0, 0, 2, 2, 2, 0.0]])
    pts = np.array([[0.2, 0.0, 0.0, 0.7], [10.0, 0.5, 0.5, 0.1], [50.0, 0.0, 0.0, 1.0]], dtype=np.float32)
    mask = b.points_in_boxes(pts)
    expected = [[True, False, True], [False, True, False], [False, False, False]]
    np.testing.assert_array_equal(mask, expected)
    assert mask.dtype == bool


@pytest.mark.parametrize("shape", [(3,), (4, 2)])
def test_points_in_boxes_bad_shape_raises(shape: tuple[int, ...]) -> None:
    with pytest.raises(GeometryError):
        boxes([[0, 0, 0, 1, 1, 1, 0]]).points_in_boxes(np.zeros(shape))


# --------------------------------------------------------------------------------- IoU


def test_iou_identical_is_one() -> None:
    b = boxes([[3.0, 4.0, 0.0, 4.2, 1.9, 1.6, 0.7], [-20.0, 7.0, 1.0, 1.0, 1.0, 1.0, 0.0]])
    np.testing.assert_allclose(np.diag(iou_bev(b, b)), [1.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(np.diag(iou_3d(b, b)), [1.0, 1.0], atol=1e-6)
    # the two boxes are 24 m apart: off-diagonals exactly 0
    assert iou_bev(b, b)[0, 1] == 0.0 and iou_3d(b, b)[1, 0] == 0.0


def test_iou_disjoint_and_touching_is_zero() -> None:
    a = boxes([[0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 0.0]])
    far = boxes([[100.0, 0.0, 0.0, 2.0, 2.0, 2.0, 0.0]])
    near = boxes([[2.5, 0.0, 0.0, 2.0, 2.0, 2.0, 0.0]])  # gap of 0.5 m, within the circle pre-check
    touching = boxes([[2.0, 0.0, 0.0, 2.0, 2.0, 2.0, 0.0]])  # shares the edge x = 1
    for other in (far, near, touching):
        assert iou_bev(a, other)[0, 0] == pytest.approx(0.0, abs=1e-7)
        assert iou_3d(a, other)[0, 0] == pytest.approx(0.0, abs=1e-7)


def test_iou_half_overlap_axis_aligned() -> None:
    # 2 x 2 squares shifted by 1 m: intersection 1 x 2 = 2, union 4 + 4 - 2 = 6 -> 1/3
    a = boxes([[0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 0.0]])
    b = boxes([[1.0, 0.0, 0.0, 2.0, 2.0, 2.0, 0.0]])
    assert iou_bev(a, b)[0, 0] == pytest.approx(1 / 3, abs=1e-6)
    # same heights and z: 3D intersection 2 * 2 = 4, union 8 + 8 - 4 = 12 -> 1/3
    assert iou_3d(a, b)[0, 0] == pytest.approx(1 / 3, abs=1e-6)


def test_iou_contained_box() -> None:
    # 1 x 1 x 1 inside 2 x 2 x 2: BEV 1/4, 3D 1/8
    big = boxes([[0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 0.0]])
    small = boxes([[0.3, -0.2, 0.1, 1.0, 1.0, 1.0, 0.6]])
    assert iou_bev(big, small)[0, 0] == pytest.approx(0.25, abs=1e-6)
    assert iou_3d(big, small)[0, 0] == pytest.approx(0.125, abs=1e-6)


def test_iou_rectangle_vs_its_90_degree_rotation() -> None:
    # 4 x 2 vs the same rotated 90° (2 x 4 footprint) about the same centre:
    # intersection 2 x 2 = 4, union 8 + 8 - 4 = 12 -> 1/3
    a = boxes([[0.0, 0.0, 0.0, 4.0, 2.0, 1.0, 0.0]])
    b = boxes([[0.0, 0.0, 0.0, 4.0, 2.0, 1.0, math.pi / 2]])
    assert iou_bev(a, b)[0, 0] == pytest.approx(1 / 3, abs=1e-6)
    # yaw 180° is the same footprint
    c = boxes([[0.0, 0.0, 0.0, 4.0, 2.0, 1.0, math.pi]])
    assert iou_bev(a, c)[0, 0] == pytest.approx(1.0, abs=1e-6)


def _octagon_iou() -> float:
    # A square of side a and the same square rotated 45° about its centre both have inradius a/2.
    # Their intersection is bounded by 8 lines at distance a/2 from the centre with normals every
    # 45°: a regular octagon with inradius r = a/2. A regular n-gon of inradius r has area
    # n r^2 tan(pi/n), so the octagon has 8 (a/2)^2 tan(22.5°) = 2 (sqrt2 - 1) a^2 (= 0.8284 a^2;
    # tan 22.5° = sqrt2 - 1). IoU = 2 (sqrt2 - 1) / (2 - 2 (sqrt2 - 1)) = (sqrt2 - 1) / (2 - sqrt2)
    # = (sqrt2 - 1) / (sqrt2 (sqrt2 - 1)) = 1 / sqrt2.
    return 1.0 / S2


def test_iou_square_vs_45_degree_square() -> None:
    a_side = 3.0
    a = boxes([[1.0, 2.0, 0.0, a_side, a_side, 1.0, 0.0]])
    b = boxes([[1.0, 2.0, 0.0, a_side, a_side, 1.0, math.pi / 4]])
    assert 2 * (S2 - 1) * a_side**2 == pytest.approx(7.4558, abs=1e-4)  # the octagon area for a = 3
    assert iou_bev(a, b)[0, 0] == pytest.approx(_octagon_iou(), abs=1e-6)
    assert iou_3d(a, b)[0, 0] == pytest.approx(_octagon_iou(), abs=1e-6)  # same heights


def test_iou_3d_vertical_offset() -> None:
    # same footprint 2 x 2, heights 2, second box 1 m higher: vertical overlap 1 of 2.
    # intersection 4 * 1 = 4, union 8 + 8 - 4 = 12 -> 1/3; BEV ignores z -> 1
    a = boxes([[0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 0.0]])
    b = boxes([[0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 0.0]])
    assert iou_bev(a, b)[0, 0] == pytest.approx(1.0, abs=1e-6)
    assert iou_3d(a, b)[0, 0] == pytest.approx(1 / 3, abs=1e-6)
    # half footprint and half height: intersection 2 * 1 = 2, union 16 - 2 = 14 -> 1/7
    c = boxes([[1.0, 0.0, 1.0, 2.0, 2.0, 2.0, 0.0]])
    assert iou_3d(a, c)[0, 0] == pytest.approx(1 / 7, abs=1e-6)
    # stacked (touching at z = 1) or apart: 3D IoU 0 while BEV is 1
    d = boxes([[0.0, 0.0, 2.0, 2.0, 2.0, 2.0, 0.0], [0.0, 0.0, 5.0, 2.0, 2.0, 2.0, 0.0]])
    np.testing.assert_allclose(iou_3d(a, d), [[0.0, 0.0]], atol=1e-12)
    np.testing.assert_allclose(iou_bev(a, d), [[1.0, 1.0]], atol=1e-6)


def test_iou_3d_different_heights() -> None:
    # 2 x 2 x 2 at z in [-1, 1] vs 2 x 2 x 4 at z in [0, 4]: overlap 1 m -> 4, union 8 + 16 - 4 = 20
    a = boxes([[0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 0.0]])
    b = boxes([[0.0, 0.0, 2.0, 2.0, 2.0, 4.0, 0.0]])
    assert iou_3d(a, b)[0, 0] == pytest.approx(0.2, abs=1e-6)


def test_iou_matrix_shape_and_symmetry() -> None:
    rng = np.random.default_rng(7)

    def random_boxes(n: int) -> Boxes3D:
        return Boxes3D(
            np.column_stack(
                [
                    rng.uniform(-3, 3, (n, 2)),  # x, y
                    rng.uniform(-0.5, 0.5, n),  # z
                    rng.uniform(0.5, 4, (n, 3)),  # l, w, h
                    rng.uniform(-4, 4, n),  # yaw (wrapped on construction)
                ]
            ),
            EGO_FRAME,
        )

    a, b = random_boxes(7), random_boxes(5)
    bev_ab, bev_ba = iou_bev(a, b), iou_bev(b, a)
    assert bev_ab.shape == (7, 5)
    np.testing.assert_allclose(bev_ab, bev_ba.T, atol=1e-6)
    np.testing.assert_allclose(iou_3d(a, b), iou_3d(b, a).T, atol=1e-6)
    assert np.all((bev_ab >= 0) & (bev_ab <= 1 + 1e-9))
    assert np.any(bev_ab > 0)  # the random boxes do overlap
    i3 = iou_3d(a, b)
    assert np.all((i3 >= 0) & (i3 <= 1 + 1e-9))


def test_iou_far_from_origin_is_exact() -> None:
    # The same scenes as above, 100 km from the origin.
    x0, y0 = 123_456.7, -234_567.8
    half = boxes([[x0, y0, 10.0, 2.0, 2.0, 2.0, 0.0], [x0 + 1.0, y0, 10.0, 2.0, 2.0, 2.0, 0.0]], WORLD_FRAME)
    assert iou_bev(half[0], half[1])[0, 0] == pytest.approx(1 / 3, abs=1e-5)
    assert iou_3d(half[0], half[1])[0, 0] == pytest.approx(1 / 3, abs=1e-5)
    octo = boxes([[x0, y0, 10.0, 1.0, 1.0, 1.0, 0.0], [x0, y0, 10.0, 1.0, 1.0, 1.0, math.pi / 4]], WORLD_FRAME)
    assert iou_bev(octo[0], octo[1])[0, 0] == pytest.approx(_octagon_iou(), abs=1e-5)
    small = boxes([[x0, y0, 10.0, 0.5, 0.4, 1.0, 0.3]], WORLD_FRAME)  # a pedestrian-sized box
    assert iou_bev(small, small)[0, 0] == pytest.approx(1.0, abs=1e-5)
    # 0.5 x 0.4 boxes shifted by 0.1 m along x: intersection 0.4 x 0.4 = 0.16,
    # union 0.2 + 0.2 - 0.16 = 0.24 -> 2/3
    ped = boxes([[x0, y0, 10.0, 0.5, 0.4, 1.0, 0.0], [x0 + 0.1, y0, 10.0, 0.5, 0.4, 1.0, 0.0]], WORLD_FRAME)
    assert iou_bev(ped[0], ped[1])[0, 0] == pytest.approx(2 / 3, abs=1e-5)
    assert iou_3d(ped[0], ped[1])[0, 0] == pytest.approx(2 / 3, abs=1e-5)


def test_iou_zero_size_boxes_are_zero_not_nan() -> None:
    a = boxes([[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 2.0, 2.0, 0.0, 0.0]])
    b = boxes([[0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 0.0]])
    bev = iou_bev(a, b)
    i3 = iou_3d(a, b)
    assert np.all(np.isfinite(bev)) and np.all(np.isfinite(i3))
    assert bev[0, 0] == pytest.approx(0.0, abs=1e-7)
    assert bev[1, 0] == pytest.approx(1.0, abs=1e-6)  # a flat box has a full footprint
    np.testing.assert_allclose(i3, [[0.0], [0.0]], atol=1e-7)  # but no volume
    np.testing.assert_allclose(iou_3d(a, a), np.zeros((2, 2)), atol=1e-7)


def test_iou_different_frames_raise() -> None:
    a = boxes([[0, 0, 0, 1, 1, 1, 0]], EGO_FRAME)
    b = boxes([[0, 0, 0, 1, 1, 1, 0]], WORLD_FRAME)
    with pytest.raises(GeometryError):
        iou_bev(a, b)
    with pytest.raises(GeometryError):
        iou_3d(a, b)


def test_iou_with_shared_and_collinear_edges() -> None:
    """Boxes that share edges (same width and heading, one shorter) are where OpenCV's clipper failed."""
    base = Boxes3D(np.array([[10.0, 5.0, 0.0, 4.5, 1.9, 1.6, 0.3]]), EGO_FRAME)
    for dl in (0.0, 0.2, 1.0):
        shorter = Boxes3D(base.data - np.array([[0, 0, 0, dl, 0, 0, 0]]), EGO_FRAME)
        assert iou_bev(base, shorter)[0, 0] == pytest.approx((4.5 - dl) / 4.5, abs=1e-9)
        assert iou_3d(base, shorter)[0, 0] == pytest.approx((4.5 - dl) / 4.5, abs=1e-9)
    # Side by side, touching along a whole edge: no overlap at all.
    beside = Boxes3D(base.data + np.array([[-1.9 * np.sin(0.3), 1.9 * np.cos(0.3), 0, 0, 0, 0, 0]]), EGO_FRAME)
    assert iou_bev(base, beside)[0, 0] == pytest.approx(0.0, abs=1e-9)
    # Half a length ahead along the heading: a third of the union.
    ahead = Boxes3D(base.data + np.array([[2.25 * np.cos(0.3), 2.25 * np.sin(0.3), 0, 0, 0, 0, 0]]), EGO_FRAME)
    assert iou_bev(base, ahead)[0, 0] == pytest.approx(1.0 / 3.0, abs=1e-9)


def test_iou_matches_shapely_on_random_pairs() -> None:
    import shapely

    rng = np.random.default_rng(3)
    n = 400
    a = np.column_stack([rng.uniform(-3, 3, (n, 2)), np.zeros(n), rng.uniform(0.3, 5, (n, 3)), rng.uniform(-4, 4, n)])
    b = a.copy()
    b[:, :2] += rng.normal(0, 1.0, (n, 2)) * (rng.uniform(size=(n, 1)) < 0.7)
    b[:, 3:5] *= np.where(rng.uniform(size=(n, 1)) < 0.5, rng.uniform(0.7, 1.3, (n, 2)), 1.0)
    b[:, 6] += rng.choice([0.0, np.pi / 2, np.pi, 0.1], n) * (rng.uniform(size=n) < 0.6)
    boxes_a, boxes_b = Boxes3D(a, EGO_FRAME), Boxes3D(b, EGO_FRAME)
    ours = np.diag(iou_bev(boxes_a, boxes_b))
    np.testing.assert_allclose(iou_bev_paired(boxes_a, boxes_b), ours, atol=1e-12)
    assert iou_bev_paired(boxes_a[:0], boxes_b[:0]).shape == (0,)
    with pytest.raises(GeometryError, match="as many"):
        iou_bev_paired(boxes_a, boxes_b[:3])
    pa, pb = shapely.polygons(boxes_a.bev_corners()), shapely.polygons(boxes_b.bev_corners())
    inter = shapely.area(shapely.intersection(pa, pb))
    expected = inter / (shapely.area(pa) + shapely.area(pb) - inter)
    np.testing.assert_allclose(ours, expected, atol=1e-9)
