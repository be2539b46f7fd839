"""2D-assisted 3D fitting: simulated cars recovered from their projected 2D boxes and from clicks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from autolabel.categories import Category
from autolabel.datasets.nuscenes import load_nuscenes_clip
from autolabel.detect.crosscheck import CameraPose, project_boxes_2d
from autolabel.detect.frustum import (
    FitStatus,
    FrustumConfig,
    fit_from_2d_box,
    fit_from_click,
    fit_without_roof,
    vote_velocity,
)
from autolabel.detect.ground import GroundModel, estimate_ground
from autolabel.fuse import sweep_input
from autolabel.sim.dataroot import SimConfig, simulate_dataroot
from autolabel.sim.sensors import simulated_rig
from calibration import Boxes3D, InputError, iou_bev
from fusion.aggregate import PoseTrack, aggregate

SCENE = "scene-0061"
MAX_RANGE_M = 30.0
MIN_POINTS = 20  # lidar points in a GT box for the car to count as seen
MAX_OCCLUSION = 0.6  # share of a car's 2D box covered by nearer cars' 2D boxes


@dataclass(frozen=True, eq=False)
class Keyframe:
    points: np.ndarray  # (N, 5) keyframe cloud (10 sweeps) in the ego frame
    ground: GroundModel
    gt: Boxes3D
    categories: tuple[Category, ...]
    front: CameraPose  # CAM_FRONT at its exposure pose


@pytest.fixture(scope="module")
def keyframes(tmp_path_factory) -> list[Keyframe]:
    """The 4 keyframes of a simulated 2 s urban drive (lidar only; the images are not needed)."""
    root = simulate_dataroot(tmp_path_factory.mktemp("frustum") / "ds", SimConfig(seconds=2.0, seed=7)).dataroot
    clip = load_nuscenes_clip(root, SCENE)
    out = []
    for frame in clip.frames:
        inputs = [sweep_input(s, deskew=True) for s in frame.sweeps]
        track = PoseTrack.from_poses([s.timestamp_us for s in inputs], [s.world_SE3_ego for s in inputs])
        points, _ = aggregate(inputs, frame.world_SE3_ego, frame.timestamp_us, track)
        front = CameraPose.from_image(frame.cameras["CAM_FRONT"], frame.world_SE3_ego)
        out.append(Keyframe(points, estimate_ground(points), frame.gt.boxes, frame.gt.categories, front))
    return out


def _occlusion(boxes_2d: np.ndarray, ok: np.ndarray, range_m: np.ndarray, i: int) -> float:
    """Share of box i's 2D box covered by the 2D boxes of objects more than 1 m nearer."""
    x1, y1, x2, y2 = boxes_2d[i]
    mask = np.zeros((int(y2 - y1) + 1, int(x2 - x1) + 1), dtype=bool)
    for j in np.flatnonzero(ok & (range_m < range_m[i] - 1.0)):
        a1, b1, a2, b2 = boxes_2d[j] - [x1, y1, x1, y1]
        mask[max(int(b1), 0) : max(int(b2), 0), max(int(a1), 0) : max(int(a2), 0)] = True
    return float(mask.mean())


def _visible_cars(kf: Keyframe) -> list[tuple[int, np.ndarray, float]]:
    """(GT index, 2D box, occlusion) of the cars within 30 m seen in CAM_FRONT."""
    boxes_2d, ok = project_boxes_2d(kf.gt, kf.front)
    range_m = np.hypot(kf.gt.centers[:, 0], kf.gt.centers[:, 1])
    points = kf.gt.points_in_boxes(kf.points, margin_m=0.05).sum(axis=0)
    out = []
    for i, category in enumerate(kf.categories):
        if category is not Category.CAR or range_m[i] > MAX_RANGE_M or not ok[i] or points[i] < MIN_POINTS:
            continue
        occlusion = _occlusion(boxes_2d, ok, range_m, i)
        if occlusion <= MAX_OCCLUSION:
            out.append((i, boxes_2d[i], occlusion))
    return out


def _iou(fit, truth: Boxes3D) -> float:
    return float(iou_bev(fit.box.as_boxes(), truth)[0, 0]) if fit.box is not None else 0.0


def test_every_visible_car_is_recovered_from_its_2d_box(keyframes) -> None:
    ious, report = [], []
    for k, kf in enumerate(keyframes):
        for i, box_2d, occlusion in _visible_cars(kf):
            fit = fit_from_2d_box(kf.front, box_2d, kf.points, Category.CAR, ground=kf.ground)
            assert fit.status is FitStatus.OK and fit.category is Category.CAR
            assert 0.0 < fit.confidence <= 1.0
            ious.append(_iou(fit, kf.gt[i]))
            report.append(f"frame {k} car {i}: occlusion {occlusion:.2f} IoU {ious[-1]:.2f} conf {fit.confidence:.2f}")
    assert len(ious) >= 6, report
    assert min(ious) >= 0.6, report
    assert np.median(ious) >= 0.85, report


def test_a_click_at_the_projected_centre_finds_the_car(keyframes) -> None:
    ious, report = [], []
    for k, kf in enumerate(keyframes):
        for i, _, occlusion in _visible_cars(kf):
            projection = kf.front.camera.project_cam(kf.front.cam_SE3_ego.transform_points(kf.gt.centers[i : i + 1]))
            # The centre of a partly hidden car may fall on what hides it, that of a cut one outside the image.
            if occlusion > 0.2 or not projection.valid[0]:
                continue
            fit = fit_from_2d_box(kf.front, projection.uv_px[0], kf.points, Category.CAR, ground=kf.ground)
            ious.append(_iou(fit, kf.gt[i]))
            report.append(f"frame {k} car {i}: IoU {ious[-1]:.2f}")
    assert len(ious) >= 4, report
    assert min(ious) >= 0.6, report


def test_without_a_hint_the_class_comes_from_the_size(keyframes) -> None:
    kf = keyframes[0]
    i, box_2d, _ = _visible_cars(kf)[0]
    fit = fit_from_2d_box(kf.front, box_2d, kf.points, ground=kf.ground)
    assert fit.category is Category.CAR
    assert _iou(fit, kf.gt[i]) >= 0.6


def test_an_empty_2d_box_says_no_points(keyframes) -> None:
    kf = keyframes[0]
    sky = (700.0, 0.0, 900.0, 40.0)  # the top of the image: above the lidar's highest beam
    fit = fit_from_2d_box(kf.front, sky, kf.points, Category.CAR, ground=kf.ground)
    assert fit.status is FitStatus.NO_POINTS
    assert fit.box is None and fit.confidence == 0.0 and len(fit.points_used) == 0
    click = fit_from_click(kf.front, (800.0, 10.0), kf.points, ground=kf.ground)
    assert click.status is FitStatus.NO_POINTS and click.box is None


def test_a_box_on_bare_road_says_no_object(synth) -> None:
    cloud = synth.cast(synth.Scene(np.zeros((0, 7))), sweeps=2)
    front = CameraPose.from_rig(simulated_rig().cameras["CAM_FRONT"])
    fit = fit_from_2d_box(front, (700.0, 700.0, 900.0, 850.0), cloud.points)
    assert fit.status is FitStatus.NO_OBJECT
    assert fit.box is None and fit.confidence == 0.0 and fit.frustum_points > 0


def test_bad_input_is_refused(synth) -> None:
    cloud = synth.cast(synth.Scene(np.zeros((0, 7))), sweeps=1)
    front = CameraPose.from_rig(simulated_rig().cameras["CAM_FRONT"])
    with pytest.raises(InputError, match="x2 > x1"):
        fit_from_2d_box(front, (900.0, 700.0, 700.0, 850.0), cloud.points)
    with pytest.raises(InputError, match="2D box"):
        fit_from_2d_box(front, (1.0, 2.0, 3.0), cloud.points)
    with pytest.raises(InputError, match="click"):
        fit_from_click(front, (np.nan, 3.0), cloud.points)
    with pytest.raises(InputError, match="shape"):
        fit_from_2d_box(front, (700.0, 700.0, 900.0, 850.0), cloud.points[:, :3])


def test_a_car_cut_by_the_image_edge_keeps_its_hidden_part(synth) -> None:
    # A parked car at the right edge of CAM_FRONT's view: most of it lies outside the image.
    car = synth.boxes((12.0, -6.5, 4.6, 1.9, 1.6, 0.0))
    cloud = synth.cast(synth.Scene(car))
    front = CameraPose.from_rig(simulated_rig().cameras["CAM_FRONT"])
    box_2d, ok = project_boxes_2d(cloud.gt, front)
    assert ok[0] and box_2d[0, 2] >= front.camera.width_px - 1  # truncated on the right
    fit = fit_from_2d_box(front, box_2d[0], cloud.points, Category.CAR)
    assert _iou(fit, cloud.gt) >= 0.85  # 0.70 with the box closed at the image border


def test_the_roof_arc_does_not_tilt_a_car_seen_from_behind(synth) -> None:
    # 16 m ahead and 3 m to the side: the rear face and one beam's arc over the roof, which L-shape fitting
    # alone takes for a diagonal side.
    car = synth.boxes((16.0, -3.0, 4.9, 1.9, 1.6, 0.0))
    cloud = synth.cast(synth.Scene(car), sweeps=1)
    heights = estimate_ground(cloud.points).heights(cloud.points)
    own = (cloud.hit == 0) & (heights > 0.2)
    fit = fit_without_roof(cloud.points[own], heights[own], FrustumConfig().roof_band_m, FrustumConfig().fit)
    yaw = float(fit.yaw[0]) % (np.pi / 2)
    assert min(yaw, np.pi / 2 - yaw) < np.radians(3.0)


def test_the_velocity_vote_follows_the_smear() -> None:
    rng = np.random.default_rng(1)
    # A car's visible L (rear and side) at the keyframe, and nine older sweeps of it.
    rear = np.column_stack([np.zeros(40), rng.uniform(-0.95, 0.95, 40)])
    side = np.column_stack([rng.uniform(0, 4.5, 90), np.full(90, -0.95)])
    face = np.concatenate([rear, side]) + np.array([10.0, 5.0])
    dt = np.repeat(-0.05 * np.arange(1, 10), len(face))
    for velocity in (np.array([8.0, -1.0]), np.zeros(2)):
        old = np.tile(face, (9, 1)) + velocity * dt[:, None] + rng.normal(0, 0.02, (len(dt), 2))
        found = vote_velocity(face, old, dt)
        assert np.allclose(found, velocity, atol=0.3), (velocity, found)
