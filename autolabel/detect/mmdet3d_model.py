"""A user's mmdet3d lidar model as a :class:`~autolabel.detect.base.Detector` (the optional ``mmdet3d`` extra).

``DETECTORS["mmdet3d"]`` runs a config + checkpoint (CenterPoint, PointPillars, SECOND, ...) through
``mmdet3d.apis.init_model`` / ``inference_detector`` on our fused keyframe clouds::

    DetectorInput (ego frame, dt_s <= 0, all fused sweeps)
      --model_points--> model's lidar frame, the newest 1 + sweeps_num sweeps, time lag column keyframe - capture
                        (>= 0, as LoadPointsFromMultiSweeps writes it), the config's use_dim columns
      --inference_detector (test pipeline without its file/sweep loaders)--> LiDARInstance3DBoxes
      --boxes_from_mmdet3d--> Boxes3D in the lidar frame --> ego frame; class names --> Category

mmdet3d (1.x) LiDAR boxes are ``x, y, z_bottom, dx, dy, dz, yaw[, vx, vy]``: bottom-centre origin (0.5, 0.5, 0),
``dx`` along the heading, yaw from +x counter-clockwise; ours are geometric centres with the same size order and yaw
(:mod:`calibration.boxes`), so the conversion is a shift of ``dz / 2`` and a yaw wrap. Everything but
:class:`Mmdet3dDetector` works without mmdet3d installed.
"""

from __future__ import annotations

import copy
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autolabel.categories import KITTI_TO_CATEGORY, Category
from autolabel.detect.base import Detections3D, DetectorInput
from calibration import EGO_FRAME, SE3, Boxes3D, InputError
from calibration.boxes import wrap_angle_rad

log = logging.getLogger(__name__)

LIDAR_FRAME = "lidar"
INSTALL_HINT = "install the optional extra with `make mmdet3d` (builds mmcv 2.1.0 once into wheelhouse/)"

# mmdet3d class names (lower-cased) of the datasets it ships configs for -> our categories.
MMDET3D_TO_CATEGORY: dict[str, Category] = {
    # nuScenes (detection classes, the same names as ours)
    **{c.value: c for c in Category if c is not Category.OTHER},
    # KITTI, Waymo (KITTI's type names)
    **{name.lower(): c for name, c in KITTI_TO_CATEGORY.items() if c is not Category.OTHER},
    # Lyft
    "emergency_vehicle": Category.CAR,
    "other_vehicle": Category.TRUCK,
}


@dataclass(frozen=True)
class Mmdet3dConfig:
    """How to run a user's model.

    Attributes:
        config_path: mmdet3d config file (``.py``).
        checkpoint_path: its trained weights (``.pth``); "" runs random weights (tests and benchmarks only).
        checkpoint_sha256: digest of the checkpoint (part of the cache key: new weights re-run detection).
        device: ``cpu``, ``cuda``, ``cuda:1``, ... (``auto`` is resolved before, by
            :func:`autolabel.settings.resolve_device`).
        score_threshold: detections scoring lower are dropped.
        sweep_period_s: time between sweeps; the newest ``1 + sweeps_num`` sweeps are those within
            ``(sweeps_num + 0.5) * sweep_period_s`` of the keyframe.
        intensity_scale: our intensity (the dataset's own: 0-255 for nuScenes, 0-1 for KITTI) times this is fed.
    """

    config_path: str
    checkpoint_path: str = ""
    checkpoint_sha256: str = ""
    device: str = "cpu"
    score_threshold: float = 0.05
    sweep_period_s: float = 0.05
    intensity_scale: float = 1.0

    @classmethod
    def from_files(cls, config_path: Path | str, checkpoint_path: Path | str | None, **options: Any) -> Mmdet3dConfig:
        """Checked paths and the checkpoint's digest; a missing file is an :class:`InputError` naming it."""
        config = Path(config_path)
        if not config.is_file():
            raise InputError(f"mmdet3d config {config}: no such file")
        digest, checkpoint = "", ""
        if checkpoint_path:
            path = Path(checkpoint_path)
            if not path.is_file():
                raise InputError(f"mmdet3d checkpoint {path}: no such file")
            digest, checkpoint = file_sha256(path), str(path.resolve())
        return cls(str(config.resolve()), checkpoint, digest, **options)


def file_sha256(path: Path, chunk_bytes: int = 1 << 22) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            sha.update(chunk)
    return sha.hexdigest()


@dataclass(frozen=True)
class PointLayout:
    """What the model's test pipeline loads.

    Attributes:
        load_dim: columns of the point files it was trained on (nuScenes 5: x, y, z, intensity, ring -> time lag).
        use_dim: the columns it uses, in order.
        sweeps_num: older sweeps it adds to the keyframe's (0: a single-sweep model).
    """

    load_dim: int
    use_dim: tuple[int, ...]
    sweeps_num: int


def _as_dims(use_dim: Any) -> tuple[int, ...]:
    return tuple(range(use_dim)) if isinstance(use_dim, int) else tuple(int(d) for d in use_dim)


def strip_loaders(pipeline: list[dict]) -> tuple[list[dict], PointLayout]:
    """The test pipeline without its multi-sweep loader (we feed the fused sweeps), and the point layout it read.

    Args:
        pipeline: the config's ``test_dataloader.dataset.pipeline`` (list of transform dicts).
    """
    if not pipeline or pipeline[0].get("type") != "LoadPointsFromFile":
        first = pipeline[0].get("type") if pipeline else "nothing"
        raise InputError(
            f"mmdet3d config: the test pipeline must start with LoadPointsFromFile (a lidar model); got {first}"
        )
    loader = pipeline[0]
    load_dim = int(loader.get("load_dim", 6))
    use_dim = _as_dims(loader.get("use_dim", [0, 1, 2]))
    kept, sweeps_num = [copy.deepcopy(loader)], 0
    for step in pipeline[1:]:
        if step.get("type") == "LoadPointsFromMultiSweeps":
            sweeps_num = int(step.get("sweeps_num", 10))
            use_dim = _as_dims(step.get("use_dim", [0, 1, 2, 4]))
            continue
        kept.append(copy.deepcopy(step))
    # The points we pass are already the used columns.
    kept[0]["load_dim"] = len(use_dim)
    kept[0]["use_dim"] = list(range(len(use_dim)))
    return kept, PointLayout(load_dim, use_dim, sweeps_num)


def model_points(
    frame: DetectorInput, lidar_SE3_ego: SE3, layout: PointLayout, sweep_period_s: float, intensity_scale: float
) -> np.ndarray:
    """(M, len(use_dim)) float32 model input: the newest ``1 + sweeps_num`` sweeps in the lidar frame.

    Columns before selection by ``use_dim`` are ``x, y, z, intensity * intensity_scale, time lag`` (keyframe minus
    capture time in seconds, 0 for the keyframe sweep) followed by zeros up to ``load_dim``.
    """
    points = frame.points
    keep = points[:, 4] >= -(layout.sweeps_num + 0.5) * sweep_period_s
    points = points[keep]
    columns = np.zeros((len(points), max(layout.load_dim, 5)), dtype=np.float32)
    columns[:, :3] = lidar_SE3_ego.transform_points(points[:, :3].astype(np.float64))
    columns[:, 3] = points[:, 3] * intensity_scale
    columns[:, 4] = -points[:, 4]
    if max(layout.use_dim) >= columns.shape[1]:
        raise InputError(f"mmdet3d config: use_dim {layout.use_dim} exceeds the {columns.shape[1]} point columns")
    return np.ascontiguousarray(columns[:, list(layout.use_dim)])


def boxes_from_mmdet3d(tensor: np.ndarray, frame: str) -> Boxes3D:
    """Our boxes from an (N, 7 or 9) mmdet3d LiDAR box tensor ``x, y, z_bottom, dx, dy, dz, yaw[, vx, vy]``."""
    t = np.asarray(tensor, dtype=np.float64).reshape(len(tensor), -1)
    if t.shape[1] not in (7, 9):
        raise InputError(f"mmdet3d boxes: expected 7 or 9 columns, got {t.shape[1]}")
    data = np.column_stack([t[:, :2], t[:, 2] + t[:, 5] / 2.0, t[:, 3:6], wrap_angle_rad(t[:, 6])])
    velocity = t[:, 7:9] if t.shape[1] == 9 else np.full((len(t), 2), np.nan)
    return Boxes3D(data, frame, velocity)


def boxes_to_mmdet3d(boxes: Boxes3D) -> np.ndarray:
    """(N, 9) mmdet3d LiDAR box tensor of our boxes (velocity NaN where we have none)."""
    velocity = boxes.velocity if boxes.velocity is not None else np.full((len(boxes), 2), np.nan)
    c, s = boxes.centers, boxes.sizes
    return np.column_stack([c[:, :2], c[:, 2] - s[:, 2] / 2.0, s, boxes.yaws_rad, velocity])


def categories_of(class_names: tuple[str, ...]) -> tuple[Category | None, ...]:
    """Our category per model class name (None: not one of ours, such detections are dropped)."""
    return tuple(MMDET3D_TO_CATEGORY.get(name.lower()) for name in class_names)


class Mmdet3dDetector:
    """``DETECTORS["mmdet3d"]``: a user's mmdet3d lidar model. The model is loaded on the first frame."""

    def __init__(self, config: Mmdet3dConfig | None = None) -> None:
        if config is None:
            raise InputError("the mmdet3d detector needs a model: --config CFG --checkpoint CKPT")
        self.config = config
        self._model: Any = None
        self._infer: Any = None  # mmdet3d.apis.inference_detector, imported with the model
        self._layout: PointLayout | None = None
        self._categories: tuple[Category | None, ...] = ()

    def _load(self) -> None:
        try:
            from mmdet3d.apis import inference_detector, init_model
            from mmengine.config import Config
        except ImportError as error:
            raise InputError(f"the mmdet3d detector needs mmdet3d ({error}); {INSTALL_HINT}") from error
        cfg = Config.fromfile(self.config.config_path)
        pipeline, layout = strip_loaders(list(cfg.test_dataloader.dataset.pipeline))
        cfg.test_dataloader.dataset.pipeline = pipeline
        model = init_model(cfg, self.config.checkpoint_path or None, device=self.config.device)
        meta = getattr(model, "dataset_meta", None) or {"classes": cfg.get("class_names", ())}  # no checkpoint
        names = tuple(meta.get("classes", ()))
        self._categories = categories_of(names)
        unknown = [n for n, c in zip(names, self._categories, strict=True) if c is None]
        if unknown:
            log.warning("mmdet3d model classes without a category of ours are dropped: %s", ", ".join(unknown))
        self._model, self._layout, self._infer = model, layout, inference_detector

    def detect(self, frame: DetectorInput) -> Detections3D:
        if self._model is None:
            self._load()
        assert self._layout is not None
        ego_SE3_lidar = frame.ego_SE3_lidar if frame.ego_SE3_lidar is not None else SE3.identity()
        points = model_points(
            frame, ego_SE3_lidar.inverse(), self._layout, self.config.sweep_period_s, self.config.intensity_scale
        )
        result, _ = self._infer(self._model, points)
        found = result.pred_instances_3d
        tensor = found.bboxes_3d.tensor.detach().cpu().numpy()
        scores = found.scores_3d.detach().cpu().numpy().astype(np.float64)
        labels = found.labels_3d.detach().cpu().numpy()
        categories = [self._categories[k] if 0 <= k < len(self._categories) else None for k in labels]
        known = np.array([c is not None for c in categories], dtype=bool).reshape(-1)
        keep = np.flatnonzero(known & (scores >= self.config.score_threshold))
        boxes = boxes_from_mmdet3d(tensor[keep], LIDAR_FRAME).transform(ego_SE3_lidar, EGO_FRAME)
        return Detections3D(boxes, scores[keep], tuple(categories[k] for k in keep))


def random_weight_checkpoint(config_path: Path, out: Path, seed: int = 0) -> Path:
    """A checkpoint at ``out`` of the config's model with seeded random weights and its class names (tests and
    benchmarks: no trained weights can be downloaded)."""
    import torch
    from mmdet3d.apis import init_model
    from mmengine.config import Config

    torch.manual_seed(seed)
    model = init_model(str(config_path), None, device="cpu")
    meta = {"dataset_meta": {"classes": list(Config.fromfile(str(config_path)).class_names)}}
    torch.save({"state_dict": model.state_dict(), "meta": meta}, out)
    return out
