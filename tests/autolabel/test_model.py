"""The clip model's validation, point-file reading, atomic writes and device choice."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from autolabel.categories import Category, category_from_kitti, category_from_nuscenes
from autolabel.datasets.model import FrameLabels, read_point_file
from autolabel.fileio import atomic_write_json, atomic_write_text
from autolabel.settings import DeviceChoice, Settings, resolve_device
from calibration import EGO_FRAME, WORLD_FRAME, Boxes3D, InputError


def labels(n: int) -> FrameLabels:
    boxes = Boxes3D(np.tile([1.0, 2.0, 0.5, 4.0, 2.0, 1.5, 0.1], (n, 1)), EGO_FRAME)
    return FrameLabels(boxes, [str(i) for i in range(n)], [Category.CAR] * n, np.ones(n))


def test_frame_labels_defaults_and_subset() -> None:
    lab = labels(3)
    assert lab.source_categories == ("", "", "") and lab.attributes == ("", "", "")
    assert lab.num_lidar_pts.tolist() == [-1, -1, -1] and np.isnan(lab.truncation).all()
    sub = lab.subset(np.array([True, False, True]))
    assert sub.track_ids == ("0", "2") and len(sub.boxes) == 2
    assert len(FrameLabels.empty()) == 0


def test_frame_labels_reject_inconsistent_lengths_and_frames() -> None:
    boxes = Boxes3D(np.zeros((2, 7)), EGO_FRAME)
    with pytest.raises(InputError, match="track_ids has 1 entries for 2 boxes"):
        FrameLabels(boxes, ["a"], [Category.CAR] * 2, np.ones(2))
    with pytest.raises(InputError, match="must be in the 'ego' frame"):
        FrameLabels(Boxes3D(np.zeros((1, 7)), WORLD_FRAME), ["a"], [Category.CAR], np.ones(1))
    with pytest.raises(ValueError, match="'plane' is not a valid Category"):
        FrameLabels(Boxes3D(np.zeros((1, 7)), EGO_FRAME), ["a"], ["plane"], np.ones(1))


def test_category_mappings() -> None:
    assert category_from_nuscenes("human.pedestrian.police_officer") is Category.PEDESTRIAN
    assert category_from_nuscenes("vehicle.bus.bendy") is Category.BUS
    assert category_from_nuscenes("animal") is Category.OTHER
    assert category_from_kitti("Van") is Category.CAR and category_from_kitti("Cyclist") is Category.BICYCLE


def test_read_point_file_validates(tmp_path: Path) -> None:
    good = tmp_path / "good.bin"
    np.arange(20, dtype=np.float32).reshape(4, 5).tofile(good)
    points = read_point_file(good, 5)
    assert points.shape == (4, 4) and points[1].tolist() == [5.0, 6.0, 7.0, 8.0]
    with pytest.raises(InputError, match=r"missing.bin: point file not found"):
        read_point_file(tmp_path / "missing.bin", 5)
    with pytest.raises(InputError, match=r"good.bin: 80 bytes is not a whole number of 3-column"):
        read_point_file(good, 3)
    bad = tmp_path / "inf.bin"
    np.array([[0, 0, 0, np.inf]], dtype=np.float32).tofile(bad)
    with pytest.raises(InputError, match=r"inf.bin: 1 of 1 points contain NaN or infinite"):
        read_point_file(bad, 4)


def test_atomic_write_replaces_whole_file_and_rejects_nan(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "out.json"
    atomic_write_json(path, {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}
    with pytest.raises(ValueError):
        atomic_write_json(path, {"a": float("nan")})
    assert json.loads(path.read_text()) == {"a": 1}  # the failed write left the old file intact
    atomic_write_text(path, "x")
    assert path.read_text() == "x"
    assert [p.name for p in path.parent.iterdir()] == ["out.json"]  # no temp files left behind


def test_device_resolution(monkeypatch) -> None:
    import torch

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(DeviceChoice.AUTO).type in {"cpu", "cuda"}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(InputError, match="no CUDA device"):
        resolve_device("cuda")
    monkeypatch.setenv("AUTOLABEL_DEVICE", "cpu")
    monkeypatch.setenv("AUTOLABEL_HOME", "/tmp/ws")
    settings = Settings()
    assert settings.device is DeviceChoice.CPU and settings.home == Path("/tmp/ws")
