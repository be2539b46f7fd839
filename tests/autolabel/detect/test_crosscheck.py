"""Cross-check of boxes against free space and cameras: ray-cast scenes with hand-placed boxes, and the painted
colours of a simulated clip."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from autolabel.artifacts import open_artifacts, write_artifacts
from autolabel.categories import Category
from autolabel.datasets.nuscenes import load_nuscenes_clip
from autolabel.detect import Detections3D
from autolabel.detect.crosscheck import (
    COLOUR_BINS,
    GREY_BINS,
    HUE_BINS,
    CameraPose,
    CrossCheckConfig,
    ReviewFlag,
    camera_visibility,
    colour_bins,
    colour_consistency,
    cross_check,
    free_space_factor,
    project_boxes_2d,
)
from autolabel.fuse import FuseConfig, fuse_clip
from autolabel.sim.dataroot import SimConfig, simulate_dataroot
from autolabel.sim.sensors import simulated_rig
from calibration import EGO_FRAME, Boxes3D, InputError

SENSOR_XY = np.array([0.943, 0.0])
CAR = (12.0, 4.0, 4.6, 1.9, 1.6, 0.3)
WALL = (20.0, -8.0, 0.4, 10.0, 3.0, 0.0)  # 3 m tall, 10 m wide, across the view to the front right
PHANTOM = (-10.0, 5.0, 4.5, 1.9, 1.6, 0.2)  # empty road behind the ego
BEHIND_WALL = (25.0, -8.0, 4.5, 1.9, 1.6, 0.0)  # nothing there, and nothing to see through the wall


def _detections(boxes: np.ndarray, score: float = 0.8) -> Detections3D:
    return Detections3D(Boxes3D(boxes, EGO_FRAME), np.full(len(boxes), score), (Category.CAR,) * len(boxes))


def _rig_cameras() -> list[CameraPose]:
    return [CameraPose.from_rig(camera) for camera in simulated_rig().cameras.values()]


@pytest.fixture(scope="module")
def walled(synth):
    """A car and a wall, and the cross-check of the true car, a phantom on empty road and a box behind the wall."""
    cloud = synth.cast(synth.Scene(synth.boxes(CAR, WALL)))
    return cross_check(_detections(synth.boxes(CAR, PHANTOM, BEHIND_WALL)), cloud.points, None, _rig_cameras())


def test_a_true_car_keeps_its_score(walled) -> None:
    assert walled.flags[0] is ReviewFlag.OK
    assert walled.points_inside[0] > 500 and walled.hit_rays[0] > 50 and walled.free_space_rays[0] == 0
    assert walled.adjusted_scores[0] == pytest.approx(0.8, abs=1e-9)
    assert walled.cameras_visible[0] >= 1 and walled.visible_fraction[0] == 1.0
    assert np.isnan(walled.colour_consistency[0]) and walled.colour_factor[0] == 1.0  # no paint: no evidence


def test_a_phantom_in_free_space_is_down_scored_and_flagged(walled) -> None:
    assert walled.flags[1] is ReviewFlag.FREE_SPACE_CONFLICT
    assert walled.free_space_rays[1] > 50 and walled.hit_rays[1] == 0 and walled.free_space_fraction[1] == 1.0
    assert walled.adjusted_scores[1] < 0.05 * walled.scores[1]


def test_a_box_behind_a_wall_lacks_support_but_is_not_contradicted(walled) -> None:
    assert walled.flags[2] is ReviewFlag.LOW_SUPPORT
    assert walled.points_inside[2] == 0 and walled.free_space_rays[2] == 0
    assert walled.free_space_factor[2] == 1.0
    assert walled.adjusted_scores[2] == pytest.approx(0.8 * CrossCheckConfig().support_floor)
    assert walled.needs_review.tolist() == [False, True, True]


def test_rescored_detections_carry_the_adjusted_scores(synth, walled) -> None:
    detections = _detections(synth.boxes(CAR, PHANTOM, BEHIND_WALL))
    rescored = walled.rescored(detections)
    np.testing.assert_array_equal(rescored.scores, walled.adjusted_scores)
    assert rescored.categories == detections.categories
    with pytest.raises(InputError, match="applied to"):
        walled.rescored(detections.subset(np.array([0])))


def test_no_boxes_and_bad_input(synth) -> None:
    cloud = synth.cast(synth.Scene(synth.boxes(CAR)), sweeps=1)
    empty = cross_check(Detections3D.empty(), cloud.points, None, _rig_cameras())
    assert len(empty) == 0 and empty.adjusted_scores.shape == (0,)
    with pytest.raises(InputError, match="rgb"):
        cross_check(_detections(synth.boxes(CAR)), cloud.points, np.zeros((3, 3), np.uint8))
    with pytest.raises(InputError, match="shape"):
        cross_check(_detections(synth.boxes(CAR)), cloud.points[:, :3])
    with pytest.raises(InputError, match="conflict_fraction"):
        CrossCheckConfig(free_space_tolerance=0.6, conflict_fraction=0.5)


def test_colour_bins() -> None:
    rgb = np.array([[230, 20, 20], [20, 20, 230], [128, 128, 128], [250, 250, 250], [10, 10, 10], [0, 0, 0]])
    bins = colour_bins(rgb.astype(np.uint8))
    assert bins[0] == 0  # red: hue 0
    assert bins[1] == int(240 / 360 * HUE_BINS)  # blue: hue 240 degrees
    assert HUE_BINS <= bins[2] < bins[3] < COLOUR_BINS == HUE_BINS + GREY_BINS  # greys by brightness
    assert bins[4] == HUE_BINS  # dark
    assert bins[5] == -1  # unpainted


def test_colour_consistency_by_hand() -> None:
    hist_in = np.zeros((3, COLOUR_BINS))
    hist_ring = np.zeros((3, COLOUR_BINS))
    hist_in[0, 3], hist_in[0, 4], hist_in[0, 9] = 8, 1, 1  # 9 of 10 within one bin of bin 3 or 4
    hist_ring[0, HUE_BINS + 1] = 10  # grey road around it
    hist_in[1, 3] = 10
    hist_ring[1, 3], hist_ring[1, HUE_BINS] = 6, 4  # the colour continues outside: a box off its object
    hist_in[2, 3] = 3  # too few painted points: unknown
    consistency = colour_consistency(hist_in, hist_ring, min_painted=5)
    assert consistency[0] == pytest.approx(0.9)
    assert consistency[1] == pytest.approx(0.4)
    assert np.isnan(consistency[2])


def test_free_space_factor_is_monotonic() -> None:
    config = CrossCheckConfig()
    fraction = np.linspace(0.0, 1.0, 21)
    factor = free_space_factor(fraction, np.full(21, 100), config)
    assert np.all(np.diff(factor) <= 1e-12)
    assert factor[0] == 1.0 and factor[-1] == 0.0
    assert free_space_factor(np.array([config.conflict_fraction]), np.array([100]), config)[0] == pytest.approx(
        config.free_space_floor
    )
    assert free_space_factor(np.array([1.0]), np.array([config.min_conflict_rays - 1]), config)[0] == 1.0


def test_visibility_follows_the_cameras() -> None:
    boxes = Boxes3D(np.array([[15.0, 0.0, 1.0, 4.5, 1.9, 1.6, 0.0], [0.0, 0.0, 30.0, 1.0, 1.0, 1.0, 0.0]]), EGO_FRAME)
    front = CameraPose.from_rig(simulated_rig().cameras["CAM_FRONT"])
    back = CameraPose.from_rig(simulated_rig().cameras["CAM_BACK"])
    visible, cameras = camera_visibility(boxes, [front, back])
    assert visible.tolist() == [1.0, 0.0]  # ahead: seen; 30 m straight up: not
    assert cameras.tolist() == [1, 0]
    visible, _ = camera_visibility(boxes, [back])
    assert visible[0] == 0.0
    box_2d, ok = project_boxes_2d(boxes, front)
    assert ok.tolist() == [True, False]
    assert 0 <= box_2d[0, 0] < 800 < box_2d[0, 2] < front.camera.width_px


# ------------------------------------------------------------------------------------------------ simulated clip
@dataclass(frozen=True, eq=False)
class PaintedKeyframe:
    points: np.ndarray
    rgb: np.ndarray
    gt: Boxes3D
    categories: tuple[Category, ...]
    cameras: list[CameraPose]


@pytest.fixture(scope="module")
def painted(tmp_path_factory) -> list[PaintedKeyframe]:
    """The 4 painted keyframe clouds of a simulated 2 s drive, read back from its fusion artifacts."""
    tmp = tmp_path_factory.mktemp("crosscheck")
    root = simulate_dataroot(tmp / "ds", SimConfig(seconds=2.0, seed=7)).dataroot
    clip = load_nuscenes_clip(root, "scene-0061")
    artifacts = open_artifacts(
        write_artifacts(tmp / "clip.zarr", clip, fuse_clip(clip, torch.device("cpu")), FuseConfig())
    )
    out = []
    for k, frame in enumerate(clip.frames):
        points, rgb = artifacts.keyframe_cloud(k)
        cameras = [CameraPose.from_image(image, frame.world_SE3_ego) for image in frame.cameras.values()]
        out.append(PaintedKeyframe(points, rgb, frame.gt.boxes, frame.gt.categories, cameras))
    return out


def _shifted_across_view(boxes: Boxes3D, sign: float, distance_m: float = 2.0) -> Boxes3D:
    """The boxes moved ``distance_m`` sideways as seen from the sensor (the object's visible face leaves them)."""
    ray = boxes.centers[:, :2] - SENSOR_XY
    ray /= np.linalg.norm(ray, axis=1, keepdims=True)
    data = np.array(boxes.data, copy=True)
    data[:, :2] += sign * distance_m * np.column_stack([-ray[:, 1], ray[:, 0]])
    return Boxes3D(data, EGO_FRAME, boxes.velocity)


def test_colour_consistency_separates_true_boxes_from_shifted_ones(painted) -> None:
    true, shifted, flagged = [], [], []
    for kf in painted:
        near = np.hypot(*kf.gt.centers[:, :2].T) < 40.0
        gt = Detections3D(kf.gt, np.ones(len(kf.gt)), kf.categories)
        check = cross_check(gt, kf.points, kf.rgb, kf.cameras)
        known = near & np.isfinite(check.colour_consistency)
        true.extend(check.colour_consistency[known])
        for sign in (1.0, -1.0):
            moved = Detections3D(_shifted_across_view(kf.gt, sign), np.ones(len(kf.gt)), kf.categories)
            off = cross_check(moved, kf.points, kf.rgb, kf.cameras)
            shifted.extend(np.nan_to_num(off.colour_consistency[known]))  # no colour evidence left counts as 0
            flagged.extend(off.needs_review[known])
    true, shifted = np.array(true), np.array(shifted)
    auc = np.mean(true[:, None] > shifted[None, :]) + 0.5 * np.mean(true[:, None] == shifted[None, :])
    summary = f"true {np.percentile(true, [10, 50])}, shifted {np.percentile(shifted, [50, 90])}, AUC {auc:.3f}"
    assert len(true) >= 30, summary
    assert np.median(true) >= 0.9 and np.median(shifted) <= 0.3, summary
    assert auc >= 0.9, summary
    assert np.mean(flagged) >= 0.8, f"{np.mean(flagged):.2f} of the shifted boxes flagged"


def test_true_boxes_keep_their_scores_on_a_simulated_clip(painted) -> None:
    kept, total = 0, 0
    for kf in painted:
        check = cross_check(Detections3D(kf.gt, np.ones(len(kf.gt)), kf.categories), kf.points, kf.rgb, kf.cameras)
        assert ReviewFlag.FREE_SPACE_CONFLICT not in check.flags
        supported = (check.points_inside >= CrossCheckConfig().full_support_points) & (
            np.hypot(*kf.gt.centers[:, :2].T) < 40.0
        )
        kept += int(np.sum(check.adjusted_scores[supported] >= 0.9))
        total += int(supported.sum())
    assert total >= 30 and kept >= 0.9 * total, f"{kept} of {total}"
