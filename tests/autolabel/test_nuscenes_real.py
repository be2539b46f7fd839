"""nuScenes reader and writers on the real one-sample dataroot, checked against the devkit."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from autolabel.categories import Category
from autolabel.datasets.nuscenes import load_nuscenes_clip, open_nuscenes
from autolabel.export.nuscenes import detection_results, write_annotation_tables, write_results
from calibration import EGO_FRAME, Boxes3D, InputError

pytestmark = pytest.mark.real_data
SCENE = "scene-0061"


@pytest.fixture(scope="module")
def clip(nuscenes_sample_root: Path):
    return load_nuscenes_clip(nuscenes_sample_root, SCENE)


@pytest.fixture(scope="module")
def nusc(nuscenes_sample_root: Path):
    return open_nuscenes(nuscenes_sample_root, "v1.0-mini")


def copy_dataroot(src: Path, dst: Path) -> Path:
    """A writable copy of the tables with the sensor files linked (in a temp dir, never the repo)."""
    shutil.copytree(src / "v1.0-mini", dst / "v1.0-mini")
    for linked in ("samples", "maps"):
        (dst / linked).symlink_to((src / linked).resolve())
    return dst


def test_reads_the_sample_with_all_sensors(clip) -> None:
    assert len(clip) == 1 and clip.has_poses and clip.has_gt
    frame = clip.frames[0]
    assert frame.token == "ca9a282c9e77460f8360f564131a8af5"
    assert frame.timestamp_us == 1532402927647951
    assert len(frame.sweeps) == 1 and frame.key_sweep.is_key
    assert frame.key_sweep.num_points == 34688
    points = frame.key_sweep.load_points()
    assert points.shape == (34688, 4) and points.dtype == np.float32
    assert set(frame.cameras) == {
        "CAM_FRONT",
        "CAM_FRONT_LEFT",
        "CAM_FRONT_RIGHT",
        "CAM_BACK",
        "CAM_BACK_LEFT",
        "CAM_BACK_RIGHT",
    }
    assert frame.cameras["CAM_FRONT"].load().shape == (900, 1600, 3)
    # Cameras fire before the lidar while the car drives: each image keeps its own ego pose.
    cam_pose = frame.cameras["CAM_BACK"].world_SE3_ego
    assert 0.0 < np.linalg.norm(cam_pose.translation - frame.world_SE3_ego.translation) < 0.5


def test_ground_truth_categories_and_ids(clip) -> None:
    gt = clip.frames[0].gt
    assert len(gt) == 69 and gt.boxes.frame == EGO_FRAME
    counts = Counter(gt.categories)
    assert counts[Category.PEDESTRIAN] == 30 and counts[Category.BARRIER] == 22 and counts[Category.CAR] == 8
    assert counts[Category.OTHER] == 1  # the pushable_pullable placeholder
    assert len(set(gt.track_ids)) == 69
    assert gt.num_lidar_pts.sum() == 994


def test_gt_boxes_contain_their_lidar_points(clip) -> None:
    """Our ego-frame boxes and ego-frame points reproduce the devkit's num_lidar_pts."""
    frame = clip.frames[0]
    counts = frame.gt.boxes.points_in_boxes(frame.key_sweep.load_points_ego()).sum(axis=0)
    expected = frame.gt.num_lidar_pts
    with_points = expected > 0
    assert np.mean(counts[with_points] >= 1) >= 0.95
    # Boxes are upright in the (about 1.3 degree tilted) ego frame, the devkit's in the world frame:
    # only points on box faces can differ.
    assert np.sum(counts == expected) >= 60
    assert np.all(np.abs(counts - expected) <= np.maximum(3, 0.02 * expected))


def test_gt_projection_into_cam_front_matches_devkit(clip, nusc) -> None:
    """Boxes projected with our rig and poses land where the devkit puts them (within a pixel)."""
    from nuscenes.utils.geometry_utils import BoxVisibility, view_points

    frame = clip.frames[0]
    image = frame.cameras["CAM_FRONT"]
    camera = image.camera
    # keyframe ego -> world -> ego at the camera's exposure.
    cam_ego_SE3_ego = image.world_SE3_ego.inverse() @ frame.world_SE3_ego
    boxes_cam_ego = frame.gt.boxes.transform(cam_ego_SE3_ego, EGO_FRAME)
    corners = boxes_cam_ego.corners()
    centres = camera.project_ego(boxes_cam_ego.centers).uv_px
    ours: dict[str, np.ndarray] = {}
    our_centres: dict[str, np.ndarray] = {}
    for i, token in enumerate(frame.gt.track_ids):
        projection = camera.project_ego(corners[i])
        if projection.valid.any():
            ours[token] = projection.uv_px
            our_centres[token] = centres[i]

    sd_token = nusc.get("sample", frame.token)["data"]["CAM_FRONT"]
    with contextlib.redirect_stdout(io.StringIO()):
        _, devkit_boxes, intrinsic = nusc.get_sample_data(sd_token, box_vis_level=BoxVisibility.ANY)
    devkit, devkit_centres = {}, {}
    for box in devkit_boxes:
        instance = nusc.get("sample_annotation", box.token)["instance_token"]
        devkit[instance] = view_points(box.corners(), np.asarray(intrinsic), normalize=True)[:2].T
        devkit_centres[instance] = view_points(box.center[:, None], np.asarray(intrinsic), normalize=True)[:2, 0]
    assert len(devkit) >= 10
    assert set(devkit) <= set(ours)
    for instance, uv in devkit.items():
        # Centres transform exactly; corners agree up to the ego tilt that upright ego-frame boxes drop.
        np.testing.assert_allclose(our_centres[instance], devkit_centres[instance], atol=1e-6)
        extent_px = np.linalg.norm(uv.max(axis=0) - uv.min(axis=0))
        np.testing.assert_allclose(np.sort(ours[instance], axis=0), np.sort(uv, axis=0), atol=0.05 * extent_px)
    inside = [camera.inside_image(uv).any() for uv in ours.values()]
    assert all(inside)


def test_detection_results_round_trip_through_devkit(clip, nusc, tmp_path: Path) -> None:
    from nuscenes.eval.common.loaders import load_gt, load_prediction
    from nuscenes.eval.detection.data_classes import DetectionBox

    path = tmp_path / "results.json"
    write_results(path, detection_results(clip, [clip.frames[0].gt]))
    predictions, meta = load_prediction(str(path), 500, DetectionBox)
    assert meta["use_lidar"] is True
    with contextlib.redirect_stdout(io.StringIO()):
        gt = load_gt(nusc, "mini_train", DetectionBox)
    token = clip.frames[0].token
    pred_boxes, gt_boxes = predictions.boxes[token], gt.boxes[token]
    assert len(pred_boxes) == len(gt_boxes) == 68

    def key(box) -> tuple:
        return tuple(np.round(box.translation, 3))

    gt_by_centre = {key(b): b for b in gt_boxes}
    for pred in pred_boxes:
        ref = gt_by_centre[key(pred)]
        np.testing.assert_allclose(pred.translation, ref.translation, atol=1e-6)
        np.testing.assert_allclose(pred.size, ref.size, atol=1e-9)
        # q and -q are the same rotation.
        assert abs(abs(np.dot(pred.rotation, ref.rotation)) - 1.0) < 1e-9
        assert pred.detection_name == ref.detection_name
        if ref.attribute_name:
            assert pred.attribute_name == ref.attribute_name


def test_annotation_tables_round_trip(clip, nuscenes_sample_root: Path, tmp_path: Path) -> None:
    root = copy_dataroot(nuscenes_sample_root, tmp_path / "copy")
    original = json.loads((root / "v1.0-mini" / "sample_annotation.json").read_text())
    gt = clip.frames[0].gt
    # Drop one box and move another 1 m forward: the tables must say so after the write.
    edited_rows = np.array(gt.boxes.data)
    edited_rows[0, 0] += 1.0
    edited = type(gt)(
        boxes=Boxes3D(edited_rows, EGO_FRAME, gt.boxes.velocity),
        track_ids=gt.track_ids,
        categories=gt.categories,
        scores=gt.scores,
        source_categories=gt.source_categories,
        attributes=gt.attributes,
        num_lidar_pts=gt.num_lidar_pts,
    ).subset(np.arange(len(gt) - 1))
    write_annotation_tables(clip, [edited], root / "v1.0-mini")
    written = json.loads((root / "v1.0-mini" / "sample_annotation.json").read_text())
    assert len(written) == len(original) - 1

    again = load_nuscenes_clip(root, SCENE).frames[0].gt
    assert again.track_ids == edited.track_ids
    assert again.categories == edited.categories
    assert again.source_categories == edited.source_categories
    assert again.attributes == edited.attributes
    np.testing.assert_array_equal(again.num_lidar_pts, edited.num_lidar_pts)
    np.testing.assert_allclose(again.boxes.data, edited.boxes.data, atol=1e-6)


def test_unknown_scene_lists_available(nuscenes_sample_root: Path) -> None:
    with pytest.raises(InputError, match=r"unknown scene 'scene-9999'.*scene-0061"):
        load_nuscenes_clip(nuscenes_sample_root, "scene-9999")


def test_missing_table_is_named(nuscenes_sample_root: Path, tmp_path: Path) -> None:
    root = copy_dataroot(nuscenes_sample_root, tmp_path / "copy")
    (root / "v1.0-mini" / "calibrated_sensor.json").unlink()
    with pytest.raises(InputError, match=r"v1.0-mini: missing nuScenes tables \['calibrated_sensor'\]"):
        load_nuscenes_clip(root, SCENE)


def test_missing_dataroot_and_ambiguous_version(nuscenes_sample_root: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="nuScenes dataroot not found"):
        load_nuscenes_clip(tmp_path / "nowhere", SCENE)
    root = copy_dataroot(nuscenes_sample_root, tmp_path / "copy")
    shutil.copytree(root / "v1.0-mini", root / "v1.0-trainval")
    with pytest.raises(InputError, match="several nuScenes versions"):
        load_nuscenes_clip(root, SCENE)
    assert len(load_nuscenes_clip(root, SCENE, version="v1.0-trainval")) == 1


def _clip_with_replaced_file(nuscenes_sample_root: Path, tmp_path: Path, relative: str, payload: bytes):
    root = tmp_path / "copy"
    shutil.copytree(nuscenes_sample_root / "v1.0-mini", root / "v1.0-mini")
    shutil.copytree(nuscenes_sample_root / "samples", root / "samples")
    (root / "maps").symlink_to((nuscenes_sample_root / "maps").resolve())
    (root / relative).write_bytes(payload)
    return load_nuscenes_clip(root, SCENE), root / relative


def test_truncated_point_file_is_named(clip, nuscenes_sample_root: Path, tmp_path: Path) -> None:
    relative = str(clip.frames[0].key_sweep.path.relative_to(nuscenes_sample_root))
    data = clip.frames[0].key_sweep.path.read_bytes()
    bad_clip, path = _clip_with_replaced_file(nuscenes_sample_root, tmp_path, relative, data[:-7])
    with pytest.raises(InputError, match=re.escape(path.name) + ".*not a whole number of 5-column float32 rows"):
        bad_clip.frames[0].key_sweep.load_points()
    with pytest.raises(InputError, match=re.escape(path.name)):
        bad_clip.summary()


def test_nan_point_file_is_named(clip, nuscenes_sample_root: Path, tmp_path: Path) -> None:
    relative = str(clip.frames[0].key_sweep.path.relative_to(nuscenes_sample_root))
    points = np.fromfile(clip.frames[0].key_sweep.path, dtype=np.float32).reshape(-1, 5)
    points[[3, 10], 1] = np.nan
    bad_clip, path = _clip_with_replaced_file(nuscenes_sample_root, tmp_path, relative, points.tobytes())
    with pytest.raises(InputError, match=re.escape(path.name) + ": 2 of 34688 points contain NaN"):
        bad_clip.frames[0].key_sweep.load_points()


def test_image_size_mismatch_is_named(clip, nuscenes_sample_root: Path, tmp_path: Path) -> None:
    import cv2

    relative = str(clip.frames[0].cameras["CAM_FRONT"].path.relative_to(nuscenes_sample_root))
    ok, encoded = cv2.imencode(".jpg", np.zeros((450, 800, 3), dtype=np.uint8))
    assert ok
    bad_clip, path = _clip_with_replaced_file(nuscenes_sample_root, tmp_path, relative, encoded.tobytes())
    with pytest.raises(
        InputError, match=re.escape(path.name) + ": image is 800x450 px but camera CAM_FRONT is calibrated for 1600x900"
    ):
        bad_clip.frames[0].cameras["CAM_FRONT"].load()
