"""The mmdet3d adapter: box and point conversions by hand, then (where the extra is installed) against mmdet3d's own
box structures and a PointPillars model with random weights."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from autolabel.categories import Category
from autolabel.cli import EXIT_INPUT_ERROR, main
from autolabel.detect import DetectorInput, Mmdet3dConfig, Mmdet3dDetector, make_detector
from autolabel.detect.mmdet3d_model import (
    LIDAR_FRAME,
    PointLayout,
    boxes_from_mmdet3d,
    boxes_to_mmdet3d,
    categories_of,
    model_points,
    random_weight_checkpoint,
    strip_loaders,
)
from autolabel.pipeline import PipelineConfig
from calibration import EGO_FRAME, SE3, Boxes3D, InputError

HAS_MMDET3D = importlib.util.find_spec("mmdet3d") is not None and importlib.util.find_spec("mmcv") is not None
needs_mmdet3d = pytest.mark.skipif(not HAS_MMDET3D, reason="the mmdet3d extra is not installed (make mmdet3d)")

NUSCENES_PIPELINE = [
    {"type": "LoadPointsFromFile", "coord_type": "LIDAR", "load_dim": 5, "use_dim": 5},
    {"type": "LoadPointsFromMultiSweeps", "sweeps_num": 9, "use_dim": [0, 1, 2, 3, 4], "pad_empty_sweeps": True},
    {"type": "MultiScaleFlipAug3D", "transforms": [{"type": "PointsRangeFilter"}]},
    {"type": "Pack3DDetInputs", "keys": ["points"]},
]
KITTI_PIPELINE = [
    {"type": "LoadPointsFromFile", "coord_type": "LIDAR", "load_dim": 4, "use_dim": 4},
    {"type": "Pack3DDetInputs", "keys": ["points"]},
]


def dyadic_boxes(n: int, seed: int) -> Boxes3D:
    """Boxes whose values are multiples of 1/256 (exact in float32, as mmdet3d stores them)."""
    rng = np.random.default_rng(seed)

    def q(values: np.ndarray) -> np.ndarray:
        return np.round(values * 256.0) / 256.0

    data = np.column_stack(
        [
            q(rng.uniform(-40, 40, (n, 2))),
            q(rng.uniform(-2, 1, n)),
            q(rng.uniform(0.5, 6, (n, 3))),
            q(rng.uniform(-3.1, 3.1, n)),
        ]
    )
    return Boxes3D(data, LIDAR_FRAME, q(rng.uniform(-10, 10, (n, 2))))


def test_mmdet3d_boxes_are_bottom_centred_with_our_size_order_and_yaw() -> None:
    boxes = boxes_from_mmdet3d(np.array([[1.0, 2.0, -1.5, 4.0, 2.0, 1.6, 3.5, 0.5, -0.2]]), LIDAR_FRAME)
    np.testing.assert_allclose(boxes.centers[0], [1.0, 2.0, -0.7])
    np.testing.assert_allclose(boxes.sizes[0], [4.0, 2.0, 1.6])
    np.testing.assert_allclose(boxes.yaws_rad[0], 3.5 - 2 * np.pi)
    np.testing.assert_allclose(boxes.velocity[0], [0.5, -0.2])
    seven = boxes_from_mmdet3d(np.array([[0.0, 0.0, 0.0, 1.0, 1.0, 2.0, 0.0]]), LIDAR_FRAME)
    assert seven.centers[0, 2] == 1.0 and np.isnan(seven.velocity).all()
    with pytest.raises(InputError, match="7 or 9 columns"):
        boxes_from_mmdet3d(np.zeros((1, 8)), LIDAR_FRAME)


def test_box_conversion_round_trip_is_exact() -> None:
    boxes = dyadic_boxes(50, seed=3)
    back = boxes_from_mmdet3d(boxes_to_mmdet3d(boxes), LIDAR_FRAME)
    np.testing.assert_allclose(back.data, boxes.data, atol=1e-12)
    np.testing.assert_allclose(back.velocity, boxes.velocity, atol=1e-12)


def test_strip_loaders_keeps_the_transforms_and_reads_the_point_layout() -> None:
    pipeline, layout = strip_loaders(NUSCENES_PIPELINE)
    assert layout == PointLayout(load_dim=5, use_dim=(0, 1, 2, 3, 4), sweeps_num=9)
    assert [p["type"] for p in pipeline] == ["LoadPointsFromFile", "MultiScaleFlipAug3D", "Pack3DDetInputs"]
    assert pipeline[0]["load_dim"] == 5 and pipeline[0]["use_dim"] == [0, 1, 2, 3, 4]
    assert NUSCENES_PIPELINE[0]["use_dim"] == 5, "the config's own pipeline is left as it was"
    _, kitti = strip_loaders(KITTI_PIPELINE)
    assert kitti == PointLayout(load_dim=4, use_dim=(0, 1, 2, 3), sweeps_num=0)
    with pytest.raises(InputError, match="LoadPointsFromFile"):
        strip_loaders([{"type": "LoadMultiViewImageFromFiles"}])


def test_model_points_are_the_newest_sweeps_in_the_lidar_frame_with_a_positive_time_lag() -> None:
    # Lidar 1 m ahead of the ego origin and 1.8 m up, turned 90 degrees left (nuScenes-like).
    ego_SE3_lidar = SE3.from_yaw(np.pi / 2, (1.0, 0.0, 1.8))
    points = np.array(
        [
            [11.0, 0.0, 0.0, 200.0, 0.0],  # keyframe sweep, 10 m ahead of the lidar
            [1.0, 5.0, 1.8, 10.0, -0.05],  # one sweep older, 5 m left of the lidar
            [1.0, -3.0, 0.8, 20.0, -0.45],  # the 10th sweep
            [1.0, 0.0, 0.0, 30.0, -0.5],  # the 11th: beyond 1 + 9 sweeps
        ],
        dtype=np.float32,
    )
    frame = DetectorInput(points, 0, ego_SE3_lidar=ego_SE3_lidar)
    layout = PointLayout(load_dim=5, use_dim=(0, 1, 2, 3, 4), sweeps_num=9)
    got = model_points(frame, ego_SE3_lidar.inverse(), layout, 0.05, 1.0)
    # lidar x = ego y, lidar y = -(ego x - 1), lidar z = ego z - 1.8
    expected = [[0.0, -10.0, -1.8, 200.0, 0.0], [5.0, 0.0, 0.0, 10.0, 0.05], [-3.0, 0.0, -1.0, 20.0, 0.45]]
    np.testing.assert_allclose(got, expected, atol=1e-5)
    kitti = model_points(frame, SE3.identity(), PointLayout(4, (0, 1, 2, 3), 0), 0.05, 1 / 255)
    np.testing.assert_allclose(kitti, [[11.0, 0.0, 0.0, 200 / 255]], atol=1e-6)


def test_class_names_of_the_shipped_datasets_map_to_our_categories() -> None:
    kitti = categories_of(("Pedestrian", "Cyclist", "Car"))
    assert kitti == (Category.PEDESTRIAN, Category.BICYCLE, Category.CAR)
    nuscenes = ("car", "truck", "construction_vehicle", "bus", "trailer", "barrier", "motorcycle", "bicycle")
    assert categories_of((*nuscenes, "pedestrian", "traffic_cone")) == tuple(
        Category(n) for n in (*nuscenes, "pedestrian", "traffic_cone")
    )
    assert categories_of(("animal",)) == (None,)


def test_a_missing_model_is_a_clear_error(tmp_path: Path, capsys, monkeypatch) -> None:
    with pytest.raises(InputError, match="--config CFG --checkpoint CKPT"):
        make_detector("mmdet3d")
    with pytest.raises(InputError, match="--config CFG --checkpoint CKPT"):
        PipelineConfig(detector="mmdet3d")
    with pytest.raises(InputError, match="unknown detector 'centerpoint'"):
        PipelineConfig(detector="centerpoint")
    with pytest.raises(InputError, match=r"absent\.py: no such file"):
        Mmdet3dConfig.from_files(tmp_path / "absent.py", None)
    cfg = tmp_path / "model.py"
    cfg.write_text("model = dict()\n")
    with pytest.raises(InputError, match=r"absent\.pth: no such file"):
        Mmdet3dConfig.from_files(cfg, tmp_path / "absent.pth")
    code = main(["run", "--nuscenes", str(tmp_path), "--scene", "s", "--detector", "mmdet3d"])
    err = capsys.readouterr().err
    assert code == EXIT_INPUT_ERROR and "--detector mmdet3d needs --config CFG and --checkpoint CKPT" in err
    # Without the extra, the first frame names how to install it.
    monkeypatch.setitem(sys.modules, "mmdet3d.apis", None)
    detector = Mmdet3dDetector(Mmdet3dConfig.from_files(cfg, None))
    with pytest.raises(InputError, match="make mmdet3d"):
        detector.detect(DetectorInput(np.zeros((1, 5), np.float32), 0))


# ------------------------------------------------------------------------------------------ with mmdet3d installed
@pytest.mark.mmdet3d
@needs_mmdet3d
def test_our_boxes_agree_with_mmdet3d_box_structures() -> None:
    import torch
    from mmcv.ops import points_in_boxes_cpu
    from mmdet3d.structures import LiDARInstance3DBoxes

    boxes = dyadic_boxes(40, seed=7)
    theirs = LiDARInstance3DBoxes(torch.as_tensor(boxes_to_mmdet3d(boxes)), box_dim=9)
    back = boxes_from_mmdet3d(theirs.tensor.numpy(), LIDAR_FRAME)
    np.testing.assert_allclose(back.data, boxes.data, atol=1e-6)
    np.testing.assert_allclose(back.velocity, boxes.velocity, atol=1e-6)
    np.testing.assert_allclose(theirs.gravity_center.numpy(), boxes.centers, atol=1e-5)
    # Same solids: every corner of theirs is a corner of ours.
    ours, their_corners = boxes.corners(), theirs.corners.numpy()
    for a, b in zip(ours, their_corners, strict=True):
        distance = np.linalg.norm(a[:, None, :] - b[None, :, :], axis=-1)
        assert distance.min(axis=1).max() < 1e-4
    # Same insides, by mmcv's CPU op on bottom-centred LiDAR boxes (points off the faces by more than float32 noise).
    rng = np.random.default_rng(0)
    points = np.column_stack([rng.uniform(-45, 45, (20000, 2)), rng.uniform(-3, 6, 20000)])
    inside = boxes.points_in_boxes(points)
    near_face = boxes.points_in_boxes(points, margin_m=1e-3) & ~boxes.points_in_boxes(points, margin_m=-1e-3)
    their_inside = points_in_boxes_cpu(
        torch.as_tensor(points, dtype=torch.float32)[None], theirs.tensor[None, :, :7].contiguous()
    )[0].numpy().astype(bool)
    assert inside.sum() > 100
    assert np.array_equal(inside[~near_face.any(axis=1)], their_inside[~near_face.any(axis=1)])


def _pointpillars_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    """mmdet3d's bundled KITTI 3-class PointPillars config and a checkpoint of random weights."""
    import mmdet3d

    configs = Path(mmdet3d.__file__).parent / ".mim" / "configs"
    config = configs / "pointpillars" / "pointpillars_hv_secfpn_8xb6-160e_kitti-3d-3class.py"
    checkpoint = random_weight_checkpoint(config, tmp_path / "pointpillars_random.pth")
    return config, checkpoint


@pytest.mark.mmdet3d
@needs_mmdet3d
def test_pointpillars_with_random_weights_runs_on_our_frames(tmp_path: Path) -> None:
    import copy

    from mmdet3d.apis import inference_detector, init_model
    from mmengine.config import Config

    config, checkpoint = _pointpillars_checkpoint(tmp_path)
    ego_SE3_lidar = SE3.from_yaw(0.0, (0.8, 0.0, 1.7))
    rng = np.random.default_rng(1)
    xyz = np.column_stack([rng.uniform(0, 60, 30000), rng.uniform(-30, 30, 30000), rng.uniform(-1.7, 1.0, 30000)])
    points = np.column_stack([xyz, rng.uniform(0, 1, 30000), np.zeros(30000)]).astype(np.float32)
    frame = DetectorInput(points, 0, ego_SE3_lidar=ego_SE3_lidar)

    detector = Mmdet3dDetector(Mmdet3dConfig.from_files(config, checkpoint, device="cpu", score_threshold=0.0))
    found = detector.detect(frame)
    assert found.boxes.frame == EGO_FRAME and len(found) > 0
    assert set(found.categories) <= {Category.PEDESTRIAN, Category.BICYCLE, Category.CAR}
    assert np.all((found.scores >= 0) & (found.scores <= 1))

    # The same model called directly on the same points gives the same boxes, converted by mmdet3d's own accessors.
    cfg = Config.fromfile(str(config))
    pipeline, layout = strip_loaders(copy.deepcopy(list(cfg.test_dataloader.dataset.pipeline)))
    cfg.test_dataloader.dataset.pipeline = pipeline
    model = init_model(cfg, str(checkpoint), device="cpu")
    result, _ = inference_detector(model, model_points(frame, ego_SE3_lidar.inverse(), layout, 0.05, 1.0))
    theirs = result.pred_instances_3d.bboxes_3d
    order = np.argsort(-result.pred_instances_3d.scores_3d.numpy(), kind="stable")
    mine = np.argsort(-found.scores, kind="stable")
    centres = ego_SE3_lidar.transform_points(theirs.gravity_center.numpy().astype(np.float64))
    np.testing.assert_allclose(found.boxes.centers[mine], centres[order], atol=1e-5)
    np.testing.assert_allclose(found.boxes.sizes[mine], theirs.dims.numpy()[order], atol=1e-6)
