"""``autolabel track``: tracking a detector's output given in KITTI tracking files or a nuScenes JSON."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from autolabel.cli import main
from autolabel.datasets.kitti import read_kitti_label_file
from autolabel.datasets.nuscenes import load_nuscenes_clip
from autolabel.export.nuscenes import detection_results, write_results
from calibration import InputError

SEQ = "0003"
FRAMES = 8
AXIS_SWAP = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])  # velodyne -> camera axes
K = np.array([[100.0, 0.0, 100.0], [0.0, 100.0, 50.0], [0.0, 0.0, 1.0]])


def _kitti_root(root: Path) -> Path:
    """An 8-frame KITTI tracking sequence: calib, a still ego (identity poses), random points, blank images."""
    split = root / "training"
    (split / "calib").mkdir(parents=True)
    matrices = {"P2": K @ np.column_stack([np.eye(3), np.zeros(3)]), "R_rect": np.eye(3)}
    matrices["Tr_velo_cam"] = np.column_stack([AXIS_SWAP, np.zeros(3)])
    text = "".join(f"{k} {' '.join(f'{v:.12e}' for v in m.ravel())}\n" for k, m in matrices.items())
    (split / "calib" / f"{SEQ}.txt").write_text(text)
    (split / "velodyne" / SEQ).mkdir(parents=True)
    (split / "image_02" / SEQ).mkdir(parents=True)
    (split / "poses").mkdir()
    identity = " ".join(f"{v:.1f}" for v in np.column_stack([np.eye(3), np.zeros(3)]).ravel())
    (split / "poses" / f"{SEQ}.txt").write_text(f"{identity}\n" * FRAMES)
    rng = np.random.default_rng(0)
    for n in range(FRAMES):
        rng.uniform(-20, 20, size=(100, 4)).astype(np.float32).tofile(split / "velodyne" / SEQ / f"{n:06d}.bin")
        cv2.imwrite(str(split / "image_02" / SEQ / f"{n:06d}.png"), np.zeros((100, 200, 3), np.uint8))
    return root


def _detection_lines() -> tuple[list[str], dict[str, list[tuple[int, float]]]]:
    """A Van driving away along the camera's z and two pedestrians crossing paths in x, listed in a
    different order every frame, with track id -1 and scores; returns the lines and the truth per object."""
    lines, truth = [], {"van": [], "walker_a": [], "walker_b": []}
    for n in range(FRAMES):
        objects = [
            ("van", "Van", (4.8, 1.9, 2.1), (2.0, 1.7, 10.0 + 1.0 * n), 0.0, 0.9),
            ("walker_a", "Pedestrian", (0.6, 0.6, 1.7), (-3.0 + 0.5 * n, 1.7, 8.0), -np.pi / 2, 0.8),
            ("walker_b", "Pedestrian", (0.6, 0.6, 1.7), (3.0 - 0.5 * n, 1.7, 9.0), np.pi / 2, 0.7),
        ]
        order = [objects[i] for i in np.random.default_rng(n).permutation(3)]
        for name, kind, (length, w, h), (x, y, z), ry, score in order:
            truth[name].append((n, z))
            numbers = [-10.0, -1, -1, -1, -1, h, w, length, x, y, z, ry, score]
            lines.append(" ".join([str(n), "-1", kind, "0", "0", *(f"{v:.6f}" for v in numbers)]))
    return lines, truth


def test_kitti_detections_get_consistent_track_ids_and_keep_class_names(tmp_path: Path, capsys) -> None:
    root = _kitti_root(tmp_path / "kitti")
    lines, truth = _detection_lines()
    detections = tmp_path / "detections"
    detections.mkdir()
    (detections / f"{SEQ}.txt").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    args = ["track", "--kitti", str(root), "--seqs", SEQ, "--detections", str(detections), "--out", str(out)]
    assert main(args) == 0
    rows = read_kitti_label_file(out / f"{SEQ}.txt")
    assert {r.type for r in rows} == {"Van", "Pedestrian"}
    assert all(r.score is not None for r in rows)
    # Every object keeps one id over all 8 frames (the walkers pass each other at frame 6 without a switch).
    ids: dict[str, set[int]] = {name: set() for name in truth}
    for row in rows:
        z = row.bottom_center_cam[2]
        name = "van" if row.type == "Van" else ("walker_a" if z < 8.5 else "walker_b")
        ids[name].add(row.track_id)
    assert all(len(v) == 1 for v in ids.values()), ids
    assert len({next(iter(v)) for v in ids.values()}) == 3
    assert len(rows) == 3 * FRAMES


def test_kitti_detection_lines_need_a_score(tmp_path: Path) -> None:
    path = tmp_path / "bad.txt"
    path.write_text("0 -1 Car 0 0 -10 -1 -1 -1 -1 1.5 1.7 4.2 1 1.6 12 0.3\n")
    with pytest.raises(InputError, match="score column"):
        read_kitti_label_file(path, detections=True)


def test_nuscenes_detection_json_becomes_tracking_results(synthetic_nuscenes, tmp_path: Path) -> None:
    from nuscenes.eval.common.config import config_factory
    from nuscenes.eval.common.loaders import load_prediction
    from nuscenes.eval.tracking.data_classes import TrackingBox

    clip = load_nuscenes_clip(synthetic_nuscenes.root, "scene-0061")
    detections = tmp_path / "detections.json"
    write_results(detections, detection_results(clip, [f.gt for f in clip.frames]))
    out = tmp_path / "tracks.json"
    args = ["track", "--nuscenes", str(synthetic_nuscenes.root), "--detections", str(detections), "--out", str(out)]
    assert main(args) == 0
    config_factory("tracking_nips_2019")  # fills the devkit's tracking class list
    predictions, _ = load_prediction(str(out), 500, TrackingBox)
    boxes = [b for t in synthetic_nuscenes.sample_tokens for b in predictions.boxes[t]]
    assert [b.tracking_name for b in boxes] == ["car"] * 3  # the barrier is not a tracking class
    assert len({b.tracking_id for b in boxes}) == 1
    np.testing.assert_allclose([b.translation[0] for b in boxes], [110.0, 111.0, 112.0], atol=1e-6)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"results": {"x": [{"translation": [0, 0, 0]}]}}))
    assert main([*args[:-4], "--detections", str(bad), "--out", str(out)]) == 2
