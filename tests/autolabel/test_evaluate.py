"""Evaluation: the devkit's detection and tracking evaluators on one simulated clip (through a shadow
dataroot with a custom split), CLEAR-MOT with 3D IoU, and the automation rate."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from autolabel.datasets.model import FrameLabels
from autolabel.datasets.nuscenes import load_nuscenes_clip
from autolabel.evaluate import (
    automation_rate,
    clear_mot,
    nuscenes_detection_metrics,
    nuscenes_tracking_metrics,
    shadow_dataroot,
)
from calibration import EGO_FRAME, Boxes3D, InputError

SCENE = "scene-0061"


@pytest.fixture(scope="module")
def clip(simulated_root):
    return load_nuscenes_clip(simulated_root, SCENE)


def _shifted(labels: FrameLabels, dx_m: float) -> FrameLabels:
    data = labels.boxes.data.copy()
    data[:, 0] += dx_m
    return dataclasses.replace(labels, boxes=Boxes3D(data, EGO_FRAME, labels.boxes.velocity))


def _swap_ids_after(labels: FrameLabels, frame_index: int, cut: int, pair: tuple[str, str]) -> FrameLabels:
    """Exchange the ids of the two tracks of ``pair`` from frame ``cut`` on (two identity switches)."""
    if frame_index < cut:
        return labels
    swap = {pair[0]: pair[1], pair[1]: pair[0]}
    return dataclasses.replace(labels, track_ids=tuple(swap.get(t, t) for t in labels.track_ids))


def test_shadow_dataroot_links_tables_and_names_the_split(clip, tmp_path) -> None:
    root = shadow_dataroot(clip.root, clip.meta["version"], [SCENE], tmp_path)
    version = root / clip.meta["version"]
    assert (version / "sample.json").is_symlink()
    assert (version / "splits.json").read_text() == '{"autolabel_clip": ["scene-0061"]}'
    assert not (clip.root / clip.meta["version"] / "splits.json").exists()  # the real dataroot is untouched
    with pytest.raises(InputError, match="no table folder"):
        shadow_dataroot(clip.root, "v9.9", [SCENE], tmp_path / "other")


def test_ground_truth_scores_perfectly(clip) -> None:
    # Boxes without lidar points are not scored by the devkit (it drops such GT), so leave them out.
    gt = [frame.gt.subset(frame.gt.num_lidar_pts > 0) for frame in clip.frames]
    detection = nuscenes_detection_metrics(clip, gt)
    present = {c.value for f in clip.frames for c in f.gt.categories}
    for name in present & set(detection["per_class_AP"]):
        assert detection["per_class_AP"][name] == pytest.approx(1.0), name
    assert detection["tp_errors"]["trans_err"] == pytest.approx(0.0, abs=1e-6)
    tracking = nuscenes_tracking_metrics(clip, gt)
    assert tracking["amota"] == pytest.approx(1.0)
    assert tracking["ids"] == 0
    every = [frame.gt for frame in clip.frames]
    rate = automation_rate(clip, every)
    assert rate.matched == rate.total > 50
    assert clear_mot(clip, every)["mota"] == pytest.approx(1.0)


def test_errors_show_up_in_every_metric(clip) -> None:
    gt = [frame.gt for frame in clip.frames]
    shifted = [_shifted(labels, 1.5) for labels in gt]
    # 1.5 m off: outside the 0.5/1 m matching radii of the devkit, no longer accepted by a reviewer.
    detection = nuscenes_detection_metrics(clip, shifted)
    assert detection["mAP"] < nuscenes_detection_metrics(clip, gt)["mAP"] - 0.2
    assert automation_rate(clip, shifted).rate < 0.2
    def well_seen_cars(labels: FrameLabels) -> set[str]:
        near = np.linalg.norm(labels.boxes.centers[:, :2], axis=1) < 40.0
        return {
            t
            for t, c, n, ok in zip(labels.track_ids, labels.categories, labels.num_lidar_pts, near, strict=True)
            if c.value == "car" and n > 20 and ok
        }

    cars_everywhere = sorted(set.intersection(*(well_seen_cars(f.gt) for f in clip.frames)))
    pair = (cars_everywhere[0], cars_everywhere[1])
    swapped = [_swap_ids_after(labels, frame.index, 3, pair) for frame, labels in zip(clip.frames, gt, strict=True)]
    mot = clear_mot(clip, swapped)
    assert mot["num_switches"] == 2
    assert nuscenes_tracking_metrics(clip, swapped)["ids"] >= 1


def test_automation_rate_thresholds_by_class(clip) -> None:
    """A car 20 cm short still passes 0.7 IoU; a pedestrian moved by half its width fails 0.5."""
    frame = clip.frames[0]
    gt = frame.gt
    data = gt.boxes.data.copy()
    cars = np.array([c.value == "car" for c in gt.categories])
    walkers = np.array([c.value == "pedestrian" for c in gt.categories])
    assert cars.any() and walkers.any()
    data[cars, 3] -= 0.2
    data[walkers, 1] += data[walkers, 4] * 0.6
    edited = dataclasses.replace(gt, boxes=Boxes3D(data, EGO_FRAME, gt.boxes.velocity))
    labels = [edited] + [f.gt for f in clip.frames[1:]]
    rate = automation_rate(clip, labels)
    assert rate.total - rate.matched == int(walkers.sum())
    with pytest.raises(InputError, match="label sets"):
        automation_rate(clip, labels[:2])
