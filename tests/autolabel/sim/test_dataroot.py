"""``autolabel simulate`` output is a genuine nuScenes dataroot: the devkit loads and scores it."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from autolabel.categories import Category, category_from_nuscenes
from autolabel.datasets.nuscenes import load_nuscenes_clip, open_nuscenes
from autolabel.export.nuscenes import detection_results, tracking_results, write_results
from autolabel.sim.dataroot import SimConfig, simulate_dataroot
from autolabel.sim.scenario import Profile
from calibration import InputError

SECONDS = 2.0
SEED = 3
SCENE = "scene-0061"


@pytest.fixture(scope="module")
def sim_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sim") / "nuscenes"
    simulate_dataroot(root, SimConfig(seconds=SECONDS, seed=SEED, profile=Profile.URBAN))
    return root


@pytest.fixture(scope="module")
def nusc(sim_root: Path):
    return open_nuscenes(sim_root, "v1.0-mini")


def test_tables_are_complete_and_consistent(sim_root: Path, nusc) -> None:
    tables = {p.stem: json.loads(p.read_text()) for p in (sim_root / "v1.0-mini").glob("*.json")}
    assert len(tables) == 13
    by_token = {name: {r["token"]: r for r in rows} for name, rows in tables.items()}
    references = {
        "sample": {"scene_token": "scene"},
        "sample_data": {
            "sample_token": "sample",
            "ego_pose_token": "ego_pose",
            "calibrated_sensor_token": "calibrated_sensor",
        },
        "sample_annotation": {"sample_token": "sample", "instance_token": "instance", "visibility_token": "visibility"},
        "instance": {
            "category_token": "category",
            "first_annotation_token": "sample_annotation",
            "last_annotation_token": "sample_annotation",
        },
        "scene": {"log_token": "log", "first_sample_token": "sample", "last_sample_token": "sample"},
        "calibrated_sensor": {"sensor_token": "sensor"},
    }
    for table, fields in references.items():
        for row in tables[table]:
            for field_name, target in fields.items():
                assert row[field_name] in by_token[target], (table, field_name)
    for ann in tables["sample_annotation"]:
        assert all(a in by_token["attribute"] for a in ann["attribute_tokens"])
    for name in ("sample", "sample_data", "sample_annotation"):
        rows = by_token[name]
        for row in rows.values():
            if row["next"]:
                nxt = rows[row["next"]]
                assert nxt["prev"] == row["token"]
                if name != "sample_annotation":
                    assert nxt["timestamp"] > row["timestamp"]
    # 2 s: 40 sweeps at 20 Hz, 4 keyframes at 2 Hz, 24 frames per camera at 12 Hz.
    sd = tables["sample_data"]
    assert sum(r["fileformat"] == "pcd" for r in sd) == 40
    assert sum(r["fileformat"] == "pcd" and r["is_key_frame"] for r in sd) == 4
    assert sum(r["fileformat"] == "jpg" for r in sd) == 6 * 24
    for sample in nusc.sample:
        assert len(sample["data"]) == 7  # LIDAR_TOP + 6 cameras
        for channel, token in sample["data"].items():
            record = nusc.get("sample_data", token)
            assert record["is_key_frame"] and (sim_root / record["filename"]).is_file(), channel
    for record in sd:
        size = (sim_root / record["filename"]).stat().st_size
        assert size > 0 and (record["fileformat"] != "pcd" or size % 20 == 0)
    categories = {nusc.get("category", i["category_token"])["name"] for i in nusc.instance}
    detection_classes = {category_from_nuscenes(c) for c in categories} - {Category.OTHER}
    assert len(detection_classes) == 10


def test_reader_reads_it_like_real_data(sim_root: Path) -> None:
    clip = load_nuscenes_clip(sim_root, SCENE)
    assert len(clip) == 4 and [len(f.sweeps) for f in clip.frames] == [1, 10, 10, 10]
    assert 25_000 < clip.summary().mean_points_per_sweep < 45_000
    image = clip.frames[1].cameras["CAM_FRONT"].load()
    assert image.shape == (900, 1600, 3)


def test_num_lidar_pts_equals_devkit_points_in_box(nusc) -> None:
    from nuscenes.utils.data_classes import LidarPointCloud
    from nuscenes.utils.geometry_utils import points_in_box

    checked = 0
    for sample in nusc.sample:
        with contextlib.redirect_stdout(io.StringIO()):
            path, boxes, _ = nusc.get_sample_data(sample["data"]["LIDAR_TOP"])
        points = LidarPointCloud.from_file(path).points[:3]
        for box in boxes:
            expected = nusc.get("sample_annotation", box.token)["num_lidar_pts"]
            assert int(points_in_box(box, points).sum()) == expected
            checked += expected > 0
    assert checked > 20


def _colour_match(image: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """(H, W) pixels whose RGB is the colour times a shading factor in [0.5, 1.1] (JPEG tolerant)."""
    pixels = image.astype(np.float64)
    c = colour.astype(np.float64)
    scale = (pixels @ c) / (c @ c)
    cosine = (pixels @ c) / (np.linalg.norm(pixels, axis=-1) * np.linalg.norm(c) + 1e-9)
    return (scale > 0.5) & (scale < 1.1) & (cosine > np.cos(np.radians(4.0)))


def test_projected_gt_boxes_cover_their_object_colour(sim_root: Path, nusc) -> None:
    """CAM_FRONT fires at the keyframe time, so the annotation boxes project exactly onto the objects."""
    from nuscenes.utils.geometry_utils import BoxVisibility, view_points

    manifest = json.loads((sim_root / "sim" / "manifest.json").read_text())
    colours = {
        tok: np.array(v["colour"], dtype=np.float64) for tok, v in manifest["scenes"][SCENE]["instances"].items()
    }
    checked = 0
    for sample in nusc.sample:
        with contextlib.redirect_stdout(io.StringIO()):
            path, boxes, intrinsic = nusc.get_sample_data(sample["data"]["CAM_FRONT"], box_vis_level=BoxVisibility.ALL)
        image = cv2.cvtColor(cv2.imread(path), cv2.COLOR_RGB2BGR)
        for box in boxes:
            ann = nusc.get("sample_annotation", box.token)
            if ann["visibility_token"] != "4" or box.center[2] > 60:
                continue
            hull = view_points(box.corners(), np.asarray(intrinsic), normalize=True)[:2].T
            mask = np.zeros(image.shape[:2], np.uint8)
            cv2.fillConvexPoly(mask, cv2.convexHull(np.round(hull).astype(np.int32)), 1)
            area = int(mask.sum())
            if area < 400:
                continue
            # Look in a window twice the box's image extent: other objects elsewhere may share the hue.
            (u0, v0), (u1, v1) = hull.min(axis=0), hull.max(axis=0)
            du, dv = (u1 - u0) / 2, (v1 - v0) / 2
            window = np.zeros_like(mask, dtype=bool)
            window[max(int(v0 - dv), 0) : int(v1 + dv) + 1, max(int(u0 - du), 0) : int(u1 + du) + 1] = True
            match = _colour_match(image, colours[ann["instance_token"]]) & window
            grown = cv2.dilate(mask, np.ones((5, 5), np.uint8)) > 0
            # The object's colour lies where its box projects and fills most of the box's silhouette.
            assert (match & grown).sum() >= 0.98 * match.sum()
            assert (match & (mask > 0)).sum() >= 0.7 * area
            checked += 1
    assert checked >= 3


def test_devkit_detection_eval_of_ground_truth_gives_map_1(sim_root: Path, nusc, tmp_path: Path) -> None:
    from nuscenes.eval.common.config import config_factory
    from nuscenes.eval.detection.evaluate import DetectionEval

    clip = load_nuscenes_clip(sim_root, SCENE)
    labels = [f.gt.subset(f.gt.num_lidar_pts > 0) for f in clip.frames]  # the devkit drops GT without points
    path = tmp_path / "det.json"
    write_results(path, detection_results(clip, labels))
    with contextlib.redirect_stdout(io.StringIO()):
        metrics, _ = DetectionEval(
            nusc, config_factory("detection_cvpr_2019"), str(path), "mini_train", str(tmp_path / "det"), verbose=False
        ).evaluate()
    assert metrics.mean_ap == pytest.approx(1.0)


def test_devkit_tracking_eval_of_ground_truth_gives_amota_1(sim_root: Path, tmp_path: Path) -> None:
    from nuscenes.eval.common.config import config_factory
    from nuscenes.eval.tracking.evaluate import TrackingEval

    clip = load_nuscenes_clip(sim_root, SCENE)
    labels = [f.gt.subset(f.gt.num_lidar_pts > 0) for f in clip.frames]
    path = tmp_path / "track.json"
    write_results(path, tracking_results(clip, labels))
    with contextlib.redirect_stdout(io.StringIO()):
        summary = TrackingEval(
            config_factory("tracking_nips_2019"),
            str(path),
            "mini_train",
            str(tmp_path / "trk"),
            "v1.0-mini",
            str(sim_root),
            verbose=False,
        ).main()
    assert summary["amota"] == pytest.approx(1.0)


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_gives_identical_files(tmp_path: Path) -> None:
    config = SimConfig(seconds=0.5, seed=11, profile=Profile.HIGHWAY)
    a, b = simulate_dataroot(tmp_path / "a", config), simulate_dataroot(tmp_path / "b", config)
    assert _digest(a.dataroot) == _digest(b.dataroot)
    c = simulate_dataroot(tmp_path / "c", SimConfig(seconds=0.5, seed=12, profile=Profile.HIGHWAY))
    assert _digest(c.dataroot) != _digest(a.dataroot)


def test_refuses_to_overwrite_and_leaves_no_partial_output(tmp_path: Path) -> None:
    out = tmp_path / "existing"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(InputError, match="exists and is not empty"):
        simulate_dataroot(out, SimConfig(seconds=0.5))
    assert (out / "keep.txt").read_text() == "x"
    assert [p.name for p in tmp_path.iterdir()] == ["existing"]
