"""nuScenes reader/writers on a tiny generated multi-keyframe dataroot with known motion."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest

from autolabel.categories import Category
from autolabel.datasets.nuscenes import load_nuscenes_clip, open_nuscenes
from autolabel.export.nuscenes import detection_results, tracking_results, write_annotation_tables, write_results

SCENE = "scene-0061"
EGO_YAW_RAD = 0.3


def test_keyframes_carry_the_sweeps_since_the_previous_keyframe(synthetic_nuscenes) -> None:
    clip = load_nuscenes_clip(synthetic_nuscenes.root, SCENE)
    assert [f.token for f in clip.frames] == list(synthetic_nuscenes.sample_tokens)
    assert [len(f.sweeps) for f in clip.frames] == [1, 5, 5]
    keys = synthetic_nuscenes.key_times_us
    for k, frame in enumerate(clip.frames):
        times = [s.timestamp_us for s in frame.sweeps]
        assert times == sorted(times) and times[-1] == keys[k] == frame.timestamp_us
        assert [s.is_key for s in frame.sweeps] == [False] * (len(times) - 1) + [True]
        if k:
            assert times[0] > keys[k - 1]
        for sweep in frame.sweeps:
            # 5 m/s along yaw 0.3 rad from (100, 200): each sweep has its own ego pose.
            s = 5.0 * (sweep.timestamp_us - keys[0]) / 1e6
            np.testing.assert_allclose(
                sweep.world_SE3_ego.translation, [100 + s * np.cos(0.3), 200 + s * np.sin(0.3), 0]
            )
            assert sweep.load_points().shape == (sweep.num_points, 4)
    assert clip.summary().path_length_m == pytest.approx(5.0, abs=1e-9)
    assert clip.frames[1].cameras["CAM_FRONT"].timestamp_us == keys[1] - 10_000


def test_ground_truth_in_ego_frame_with_velocity(synthetic_nuscenes) -> None:
    clip = load_nuscenes_clip(synthetic_nuscenes.root, SCENE)
    car = synthetic_nuscenes.car_instance
    assert [len(f.gt) for f in clip.frames] == [2, 2, 1]
    assert clip.frames[2].gt.track_ids == (car,)
    frame = clip.frames[1]
    i = frame.gt.track_ids.index(car)
    assert frame.gt.categories[i] is Category.CAR and frame.gt.attributes[i] == "vehicle.moving"
    # World centre (111, 205) seen from the ego at (102.5 cos .3 ..) with yaw 0.3, by hand.
    ego_xy = np.array([100 + 2.5 * np.cos(0.3), 200 + 2.5 * np.sin(0.3)])
    d = np.array([111.0, 205.0]) - ego_xy
    c, s = np.cos(EGO_YAW_RAD), np.sin(EGO_YAW_RAD)
    np.testing.assert_allclose(frame.gt.boxes.centers[i, :2], [c * d[0] + s * d[1], -s * d[0] + c * d[1]], atol=1e-9)
    np.testing.assert_allclose(frame.gt.boxes.sizes[i], [1.9, 4.5, 1.6])  # nuScenes wlh = (4.5, 1.9, 1.6)
    assert frame.gt.boxes.yaws_rad[i] == pytest.approx(-EGO_YAW_RAD)
    # The devkit's centred difference gives (2, 0) m/s in the world; in the ego frame it turns by -0.3 rad.
    np.testing.assert_allclose(frame.gt.boxes.velocity[i], [2 * c, -2 * s], atol=1e-9)
    barrier = frame.gt.track_ids.index(synthetic_nuscenes.barrier_instance)
    np.testing.assert_allclose(frame.gt.boxes.velocity[barrier], [0, 0], atol=1e-9)
    np.testing.assert_allclose(frame.gt_world().centers[i], [111.0, 205.0, 0.8], atol=1e-9)


def test_tables_round_trip_with_linked_tracks(synthetic_nuscenes) -> None:
    root = synthetic_nuscenes.root
    clip = load_nuscenes_clip(root, SCENE)
    labels = [f.gt for f in clip.frames]
    before = {a["token"]: a for a in json.loads((root / "v1.0-mini" / "sample_annotation.json").read_text())}
    write_annotation_tables(clip, labels, root / "v1.0-mini")
    again = load_nuscenes_clip(root, SCENE)
    for old, new in zip(labels, (f.gt for f in again.frames), strict=True):
        assert new.track_ids == old.track_ids and new.categories == old.categories
        assert new.attributes == old.attributes
        np.testing.assert_allclose(new.boxes.data, old.boxes.data, atol=1e-9)
        np.testing.assert_allclose(new.boxes.velocity, old.boxes.velocity, atol=1e-9)
    after = json.loads((root / "v1.0-mini" / "sample_annotation.json").read_text())
    assert len(after) == len(before) == 5
    car_anns = {a["sample_token"]: a for a in after if a["instance_token"] == synthetic_nuscenes.car_instance}
    first, middle, last = (car_anns[t] for t in synthetic_nuscenes.sample_tokens)
    assert (first["prev"], first["next"], middle["next"], last["next"]) == ("", middle["token"], last["token"], "")
    instances = json.loads((root / "v1.0-mini" / "instance.json").read_text())
    assert sorted(i["nbr_annotations"] for i in instances) == [2, 3]


def test_tracking_results_load_in_the_devkit(synthetic_nuscenes, tmp_path) -> None:
    from nuscenes.eval.common.config import config_factory
    from nuscenes.eval.common.loaders import load_prediction
    from nuscenes.eval.tracking.data_classes import TrackingBox

    config_factory("tracking_nips_2019")  # the devkit fills its TRACKING_NAMES when a config is built
    clip = load_nuscenes_clip(synthetic_nuscenes.root, SCENE)
    path = tmp_path / "tracking.json"
    write_results(path, tracking_results(clip, [f.gt for f in clip.frames]))
    predictions, _ = load_prediction(str(path), 500, TrackingBox)
    # The barrier is not a tracking class; the car keeps one id over the three samples.
    boxes = [b for t in synthetic_nuscenes.sample_tokens for b in predictions.boxes[t]]
    assert [b.tracking_name for b in boxes] == ["car"] * 3
    assert {b.tracking_id for b in boxes} == {synthetic_nuscenes.car_instance}
    np.testing.assert_allclose([b.translation[0] for b in boxes], [110.0, 111.0, 112.0], atol=1e-9)
    np.testing.assert_allclose(boxes[1].velocity, [2.0, 0.0], atol=1e-9)


def test_detection_eval_of_ground_truth_is_perfect(synthetic_nuscenes, tmp_path) -> None:
    """The unmodified devkit evaluator scores our GT-as-detections as perfect on the classes present."""
    from nuscenes.eval.common.config import config_factory
    from nuscenes.eval.common.loaders import add_center_dist, load_gt, load_prediction
    from nuscenes.eval.detection.algo import accumulate, calc_ap, calc_tp
    from nuscenes.eval.detection.data_classes import DetectionBox

    clip = load_nuscenes_clip(synthetic_nuscenes.root, SCENE)
    path = tmp_path / "det.json"
    write_results(path, detection_results(clip, [f.gt for f in clip.frames]))
    nusc = open_nuscenes(synthetic_nuscenes.root, "v1.0-mini")
    predictions, _ = load_prediction(str(path), 500, DetectionBox)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = load_gt(nusc, "mini_train", DetectionBox)
    assert len(gt.all) == 5
    cfg = config_factory("detection_cvpr_2019")
    predictions, gt = add_center_dist(nusc, predictions), add_center_dist(nusc, gt)
    for name in ("car", "barrier"):
        metric = accumulate(gt, predictions, name, cfg.dist_fcn_callable, 0.5)
        assert calc_ap(metric, cfg.min_recall, cfg.min_precision) == pytest.approx(1.0)
        # Matching is by centre distance only: size (wlh order), yaw and velocity must agree too.
        for err in ("trans_err", "scale_err", "orient_err") + (("vel_err", "attr_err") if name == "car" else ()):
            assert calc_tp(metric, cfg.min_recall, err) == pytest.approx(0.0, abs=1e-6), err
