"""Multi-trip alignment over arrays: static clouds, registration of sampled synthetic towns, box merging, support."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from calibration import SE3, WORLD_FRAME, Boxes3D, InputError, iou_bev
from fusion.multitrip import (
    MAP_FRAME,
    AlignConfig,
    AlignmentStatus,
    GlobalRegistration,
    StaticCloudConfig,
    Support,
    SupportConfig,
    align_trips,
    alignment_quality,
    box_point_counts,
    box_support,
    circular_mean_rad,
    fuse_boxes,
    global_registration,
    merge_static_boxes,
    persistent_voxels,
    register_cloud,
    static_cloud,
)


# ----------------------------------------------------------------------------- a sampled synthetic town
def _ground_height(seed: int):
    rng = np.random.default_rng(seed)
    amplitude, fx, fy, phase = (
        rng.uniform(0.1, 0.3, 3),
        rng.uniform(-0.15, 0.15, 3),
        rng.uniform(-0.15, 0.15, 3),
        rng.uniform(0, 6, 3),
    )

    def height(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return sum(a * np.sin(u * x + v * y + p) for a, u, v, p in zip(amplitude, fx, fy, phase, strict=True))

    return height


def _town(seed: int) -> Boxes3D:
    """Buildings along both sides of a street (x axis) and scattered objects at random headings."""
    rng = np.random.default_rng(seed + 100)
    rows = []
    for side in (-1, 1):
        x = -120.0
        while x < 120:
            length = rng.uniform(8, 20)
            depth, height = rng.uniform(6, 12), rng.uniform(5, 15)
            rows.append([x + length / 2, side * (10 + depth / 2), height / 2, length, depth, height, 0.0])
            x += length + rng.uniform(2, 8)
    for _ in range(40):
        x, y = rng.uniform(-120, 120), rng.choice([-1, 1]) * rng.uniform(4, 8)
        l, w, h = rng.uniform(0.3, 4.5), rng.uniform(0.3, 2.0), rng.uniform(0.8, 3.0)
        rows.append([x, y, h / 2, l, w, h, rng.uniform(-np.pi, np.pi)])
    return Boxes3D(np.array(rows), WORLD_FRAME)


def _sample(seed: int, x_range: tuple[float, float], rng: np.random.Generator, density: float = 3.0) -> np.ndarray:
    """(N, 3) noisy surface samples of town ``seed`` (ground and box sides and tops) with x in ``x_range``."""
    height, boxes = _ground_height(seed), _town(seed)
    x0, x1 = x_range
    n_ground = int(4 * density * (x1 - x0) * 50)  # the ground is the densest part of a lidar cloud
    gx, gy = rng.uniform(x0, x1, n_ground), rng.uniform(-25, 25, n_ground)
    parts = [np.column_stack([gx, gy, height(gx, gy)])]
    for box in boxes:
        cx, cy, cz = box.center
        l, w, h = box.size
        if not x0 - l < cx < x1 + l:
            continue
        faces = [(l, h, (0, w / 2), "x"), (l, h, (0, -w / 2), "x"), (w, h, (l / 2, 0), "y"), (w, h, (-l / 2, 0), "y")]
        local = []
        for a, b, (ox, oy), axis in faces:
            n = int(density * 2 * a * b) + 1
            u, v = rng.uniform(-a / 2, a / 2, n), rng.uniform(-b / 2, b / 2, n)
            local.append(
                np.column_stack([u + ox, np.full(n, oy), v])
                if axis == "x"
                else np.column_stack([np.full(n, ox), u + oy, v])
            )
        n = int(density * l * w) + 1
        local.append(np.column_stack([rng.uniform(-l / 2, l / 2, n), rng.uniform(-w / 2, w / 2, n), np.full(n, h / 2)]))
        pts = np.concatenate(local)
        c, s = np.cos(box.yaw_rad), np.sin(box.yaw_rad)
        base = cz - h / 2 + height(np.array([cx]), np.array([cy]))[0]
        parts.append(
            np.column_stack(
                [cx + c * pts[:, 0] - s * pts[:, 1], cy + s * pts[:, 0] + c * pts[:, 1], base + h / 2 + pts[:, 2]]
            )
        )
    cloud = np.concatenate(parts)
    cloud = cloud[(cloud[:, 0] >= x0) & (cloud[:, 0] <= x1)]
    return cloud + rng.normal(0.0, 0.015, cloud.shape)


def _offset(centre: np.ndarray, yaw_deg: float, shift_m: tuple[float, float, float]) -> SE3:
    """A rigid datum error: turn by ``yaw_deg`` about ``centre`` and shift."""
    return SE3.from_yaw(np.radians(yaw_deg), centre) @ SE3(np.eye(3), shift_m) @ SE3.from_yaw(0.0, -centre)


@pytest.fixture(scope="module")
def trips() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {
        "a": _sample(1, (-60, 20), rng),
        "b": _sample(1, (-20, 60), rng),
        "c": _sample(1, (30, 110), rng),
        "other": _sample(2, (-20, 60), rng),
    }


def _errors(fit: SE3, truth: SE3) -> tuple[float, float]:
    error = fit @ truth.inverse()
    return float(np.linalg.norm(error.translation)), abs(np.degrees(error.yaw_rad))


# ----------------------------------------------------------------------------- registration
def test_register_recovers_a_datum_offset(trips):
    world_SE3_true = _offset(trips["b"].mean(axis=0), 4.0, (2.5, -1.0, 0.3))  # trip b's GNSS frame is off
    reg = register_cloud(world_SE3_true.transform_points(trips["b"]), trips["a"])
    assert reg.status is AlignmentStatus.ALIGNED and reg.status.ok and not reg.warnings
    translation_m, yaw_deg = _errors(reg.map_SE3_world, world_SE3_true.inverse())
    assert translation_m < 0.05 and yaw_deg < 0.1
    assert reg.quality.residual_rms_m < 0.05 and reg.quality.fitness > 0.8
    assert reg.quality.height_offset_m < 0.008
    assert 2.0 < reg.correction_m < 4.0 and reg.correction_deg == pytest.approx(4.0, abs=0.1)
    summary = reg.summary()
    assert summary["status"] == "aligned" and np.shape(summary["map_SE3_world"]) == (4, 4)


def test_global_registration_finds_a_start_for_a_large_offset(trips):
    world_SE3_true = _offset(trips["b"].mean(axis=0), 24.3, (9.0, 6.0, 0.0))
    moved = world_SE3_true.transform_points(trips["b"])
    config = AlignConfig(max_prior_error_deg=30.0)
    starts = global_registration(moved, trips["a"], config)
    assert 1 <= len(starts) <= config.global_candidates
    translation_m, yaw_deg = _errors(starts[0], world_SE3_true.inverse())
    assert translation_m < 1.0 and yaw_deg <= 1.0  # within a yaw step and a pixel or two
    reg = register_cloud(moved, trips["a"], None, config)
    assert reg.status.ok and reg.correction_deg == pytest.approx(24.3, abs=0.1)
    translation_m, yaw_deg = _errors(reg.map_SE3_world, world_SE3_true.inverse())
    assert translation_m < 0.05 and yaw_deg < 0.1
    # Beyond the prior's uncertainty there is nothing to find, and nothing is claimed.
    narrow = register_cloud(moved, trips["a"], None, AlignConfig(max_prior_error_deg=10.0))
    assert not narrow.status.ok and narrow.map_SE3_world.allclose(SE3.identity())


def test_the_prior_starts_the_search(trips):
    world_SE3_true = _offset(trips["b"].mean(axis=0), 3.0, (2.0, 2.0, 0.0))
    prior = world_SE3_true.inverse() @ SE3.from_yaw(0.002, (0.3, -0.2, 0.0))  # GNSS: 40 cm and 0.1 degree off
    config = AlignConfig(global_registration=GlobalRegistration.NEVER)  # a good prior needs no search
    reg = register_cloud(world_SE3_true.transform_points(trips["b"]), trips["a"], prior, config)
    assert reg.status.ok and reg.prior is prior and reg.correction_m < 1.0 and not reg.used_global
    assert _errors(reg.map_SE3_world, world_SE3_true.inverse())[0] < 0.05


def test_another_place_fails_with_a_warning_not_a_transform(trips, caplog):
    world_SE3_true = _offset(trips["other"].mean(axis=0), 3.0, (2.0, 1.0, 0.0))
    with caplog.at_level(logging.WARNING, logger="fusion.multitrip"):
        reg = register_cloud(world_SE3_true.transform_points(trips["other"]), trips["a"])
    assert reg.status is AlignmentStatus.POOR_FIT and not reg.status.ok
    assert reg.map_SE3_world.allclose(SE3.identity()) and reg.warnings
    assert any("registration failed" in r.message for r in caplog.records)


def test_no_overlap_is_reported_as_such(trips):
    far = SE3(np.eye(3), (0.0, 500.0, 0.0)).transform_points(trips["b"])
    reg = register_cloud(far, trips["a"])
    assert reg.status is AlignmentStatus.SMALL_OVERLAP and reg.overlap_m2 == 0.0
    assert "overlap" in reg.warnings[0]


def test_align_trips_chains_through_the_map(trips):
    offsets = [
        SE3.identity(),
        _offset(trips["b"].mean(axis=0), -3.0, (1.5, 2.0, 0.0)),
        _offset(trips["c"].mean(axis=0), 2.0, (-2.0, 1.0, 0.0)),
    ]
    clouds = [t.transform_points(trips[k]) for t, k in zip(offsets, "abc", strict=True)]
    regs = align_trips(clouds, config=AlignConfig(min_overlap_m2=200.0))
    assert [r.status for r in regs] == [AlignmentStatus.REFERENCE, AlignmentStatus.ALIGNED, AlignmentStatus.ALIGNED]
    for reg, world_SE3_true in zip(regs[1:], offsets[1:], strict=True):  # c overlaps only b: it needs b in the map
        translation_m, yaw_deg = _errors(reg.map_SE3_world, world_SE3_true.inverse())
        assert translation_m < 0.05 and yaw_deg < 0.1
    with pytest.raises(InputError):
        align_trips(clouds, priors=[SE3.identity()])


def test_alignment_quality_measures_a_height_offset(trips):
    cloud = trips["a"]
    same = alignment_quality(cloud, cloud, SE3.identity())
    assert same.fitness > 0.999 and same.residual_rms_m < 1e-3 and same.height_offset_m < 1e-6
    lifted = alignment_quality(cloud, cloud, SE3(np.eye(3), (0.0, 0.0, 0.05)))
    assert lifted.height_offset_m == pytest.approx(0.05, abs=0.005)
    assert lifted.residual_rms_m == pytest.approx(0.05, abs=0.015)


# ----------------------------------------------------------------------------- static cloud
def test_static_cloud_keeps_what_persists():
    rng = np.random.default_rng(0)
    wall = np.column_stack([rng.uniform(0, 20, 400), np.full(400, 5.0), rng.uniform(0, 3, 400)])
    parked = np.column_stack([rng.uniform(8, 12, 100), rng.uniform(-3, -1, 100), rng.uniform(0.3, 1.5, 100)])
    times = np.arange(40) * 0.05  # 2 s at 20 Hz
    sweeps = []
    for t in times:
        car = np.column_stack([rng.uniform(-2, 2, 100) + 10.0 * t, rng.uniform(-1, 1, 100), rng.uniform(0.3, 1.5, 100)])
        sweeps.append(np.concatenate([wall, parked, car]) + rng.normal(0, 0.01, (600, 3)))
    cloud = static_cloud(sweeps, times, StaticCloudConfig(output_voxel_m=0.1))
    on_wall = np.abs(cloud[:, 1] - 5.0) < 0.2
    on_parked = (cloud[:, 1] < -0.5) & (cloud[:, 1] > -3.5)
    assert on_wall.sum() > 200 and on_parked.sum() > 50
    assert np.all(on_wall | on_parked)  # the moving car is gone
    keys, origin = persistent_voxels(sweeps, times, StaticCloudConfig(min_span_s=3.0))
    assert len(keys) == 0 and origin.shape == (3,)  # nothing is seen for 3 s in a 2 s trip
    # A labelled moving box removes what it covers, except the ground under it.
    ground = np.column_stack([rng.uniform(8, 12, 200), rng.uniform(-3, -1, 200), np.zeros(200)])
    box = Boxes3D(np.array([[10.0, -2.0, 0.9, 4.0, 2.0, 1.8, 0.0]]), WORLD_FRAME)
    with_ground = [np.concatenate([s, ground]) for s in sweeps]
    cleaned = static_cloud(with_ground, times, StaticCloudConfig(output_voxel_m=0.1), dynamic_boxes=box)
    under = (cleaned[:, 1] < -0.5) & (cleaned[:, 1] > -3.5)
    assert under.sum() > 20 and np.all(cleaned[under, 2] < 0.3)
    with pytest.raises(InputError):
        static_cloud(sweeps, times[:3])


# ----------------------------------------------------------------------------- boxes
def test_circular_mean_by_hand():
    assert circular_mean_rad(np.array([np.pi - 0.1, -np.pi + 0.1])) == pytest.approx(np.pi)
    assert circular_mean_rad(np.array([np.pi - 0.1, -np.pi + 0.3])) == pytest.approx(-np.pi + 0.1)
    # weights 3 : 1 on 0 and pi/2: atan2(1, 3)
    assert circular_mean_rad(np.array([0.0, np.pi / 2]), np.array([3.0, 1.0])) == pytest.approx(np.arctan2(1.0, 3.0))
    with pytest.raises(InputError):
        circular_mean_rad(np.array([0.0, np.pi]))
    with pytest.raises(InputError):
        circular_mean_rad(np.array([]))


def test_fuse_boxes_by_hand():
    boxes = Boxes3D(
        np.array([[0.0, 0.0, 1.0, 4.0, 2.0, 1.5, np.pi - 0.05], [1.0, 2.0, 1.0, 5.0, 2.0, 1.5, -np.pi + 0.15]]),
        MAP_FRAME,
    )
    fused = fuse_boxes(boxes, np.array([3.0, 1.0]))
    x, y, z, l, w, h, yaw = fused.data[0]
    assert (x, y, z) == pytest.approx((0.25, 0.5, 1.0))
    assert (l, w, h) == pytest.approx((4.25, 2.0, 1.5))
    # yaws pi - 0.05 and pi + 0.15 (weights 3 : 1): atan2 of the weighted unit vectors, across the wrap
    expected = np.arctan2(
        3 * np.sin(np.pi - 0.05) + np.sin(np.pi + 0.15), 3 * np.cos(np.pi - 0.05) + np.cos(np.pi + 0.15)
    )
    assert yaw == pytest.approx(expected) and abs(yaw) > 3.1
    # A flipped heading (pi away) is turned back before averaging, not averaged into a sideways box.
    flipped = Boxes3D(
        np.array([[0.0, 0.0, 1.0, 4.0, 2.0, 1.5, 0.1], [0.0, 0.0, 1.0, 4.0, 2.0, 1.5, 0.1 + np.pi]]), MAP_FRAME
    )
    assert fuse_boxes(flipped, np.array([2.0, 1.0])).yaws_rad[0] == pytest.approx(0.1)
    with pytest.raises(InputError):
        fuse_boxes(boxes, np.array([0.0, 0.0]))


def test_merge_joins_the_same_object_across_trips_only():
    rows = np.array(
        [
            [0.0, 0.0, 1.0, 4.0, 2.0, 1.5, 0.0],  # trip 0: car 1
            [0.0, 1.0, 1.0, 4.0, 2.0, 1.5, 0.0],  # trip 0: car 2, overlapping car 1 and trip 1's car 1
            [0.2, 0.1, 1.0, 4.0, 2.0, 1.5, 0.02],  # trip 1: car 1 again
            [30.0, 0.0, 0.5, 0.5, 2.5, 1.0, np.pi / 2],  # trip 1: a barrier only trip 1 labelled
        ]
    )
    boxes = Boxes3D(rows, MAP_FRAME)
    assert iou_bev(boxes[[0]], boxes[[1]])[0, 0] > 0.3 and iou_bev(boxes[[1]], boxes[[2]])[0, 0] > 0.3
    merged = merge_static_boxes(boxes, np.array([0.9, 0.8, 0.6, 0.7]), np.array([0, 0, 1, 1]))
    assert merged.members == ((0, 2), (1,), (3,))
    assert merged.scores.tolist() == pytest.approx([0.9, 0.8, 0.7])
    expected_x = (0.9 * 0.0 + 0.6 * 0.2) / 1.5
    assert merged.boxes.centers[0, 0] == pytest.approx(expected_x)
    assert merged.boxes.frame == MAP_FRAME and len(merged.boxes) == 3
    empty = merge_static_boxes(Boxes3D.empty(MAP_FRAME), np.zeros(0), np.zeros(0, int))
    assert empty.members == () and len(empty.boxes) == 0


def test_box_support_tells_observed_gone_and_unseen_apart():
    rng = np.random.default_rng(1)
    boxes = Boxes3D(
        np.array(
            [
                [0.0, 0.0, 0.9, 4.0, 2.0, 1.8, 0.0],
                [20.0, 0.0, 0.9, 4.0, 2.0, 1.8, 0.0],
                [80.0, 0.0, 0.9, 4.0, 2.0, 1.8, 0.0],
            ]
        ),
        WORLD_FRAME,
    )
    ground = np.column_stack([rng.uniform(-5, 25, 3000), rng.uniform(-5, 5, 3000), rng.normal(0, 0.02, 3000)])
    car = np.column_stack([rng.uniform(-2, 2, 200), rng.uniform(-1, 1, 200), rng.uniform(0.3, 1.7, 200)])
    static = np.concatenate([ground, car])
    on_box, around = box_point_counts(boxes, static)
    assert on_box[0] == 200 and on_box[1] == 0 and around[2] == 0 and around[1] > 100
    counts, support = box_support(boxes, [static], SupportConfig())
    assert support == (Support.OBSERVED, Support.NOT_OBSERVED, Support.OUT_OF_VIEW)
    # One sweep that saw the second car is enough (it may have dropped out of the persistent cloud).
    glimpse = car + np.array([20.0, 0.0, 0.0])
    counts, support = box_support(boxes, [static, glimpse[:10]])
    assert support[1] is Support.OBSERVED and counts[1] == 10
