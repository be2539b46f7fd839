"""The one detector interface: a keyframe cloud in, 3D boxes with classes and scores out.

Every detector (the built-in geometric one, an mmdet3d model) takes a :class:`DetectorInput` and returns
:class:`Detections3D`, both in the keyframe's ego frame (x forward, y left, z up; boxes by the convention of
:mod:`calibration.boxes`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from autolabel.categories import Category
from calibration import EGO_FRAME, SE3, Boxes3D, InputError

POINT_COLUMNS = ("x", "y", "z", "intensity", "dt_s")


@dataclass(frozen=True, eq=False)
class DetectorInput:
    """One keyframe cloud as the fusion stage forms it.

    Attributes:
        points: (N, 5) float32 ``x, y, z, intensity, dt_s`` in the keyframe's ego frame; ``dt_s <= 0`` is the
            capture time minus the keyframe time (older sweeps negative), so moving objects smear along it.
        timestamp_us: keyframe time.
        rgb: optional (N, 3) uint8 painted colour (zeros where no camera saw the point).
        ego_SE3_lidar: optional pose of the lidar in the ego frame, for models that work in the sensor's frame
            (an mmdet3d model); None: the lidar frame is the ego frame.
    """

    points: np.ndarray
    timestamp_us: int
    rgb: np.ndarray | None = None
    ego_SE3_lidar: SE3 | None = None

    def __post_init__(self) -> None:
        points = np.asarray(self.points)
        if points.ndim != 2 or points.shape[1] < 5:
            raise InputError(
                f"detector input: points must have shape (N, 5) x, y, z, intensity, dt_s; got {points.shape}"
            )
        object.__setattr__(self, "points", np.ascontiguousarray(points[:, :5], dtype=np.float32))
        if self.rgb is not None:
            rgb = np.asarray(self.rgb)
            if rgb.shape != (len(points), 3):
                raise InputError(f"detector input: rgb must have shape ({len(points)}, 3), got {rgb.shape}")
            object.__setattr__(self, "rgb", np.ascontiguousarray(rgb, dtype=np.uint8))

    def __len__(self) -> int:
        return int(self.points.shape[0])


@dataclass(frozen=True, eq=False)
class Detections3D:
    """N detected boxes of one keyframe.

    Attributes:
        boxes: N boxes in the ego frame; ``velocity`` (N, 2) m/s over ground expressed in ego axes, NaN where
            the detector does not estimate it.
        scores: (N,) float64 confidence in [0, 1].
        categories: N detection classes.
    """

    boxes: Boxes3D
    scores: np.ndarray
    categories: tuple[Category, ...]

    def __post_init__(self) -> None:
        if self.boxes.frame != EGO_FRAME:
            raise InputError(f"detections must be in the {EGO_FRAME!r} frame, got {self.boxes.frame!r}")
        scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        categories = tuple(Category(c) for c in self.categories)
        if not len(scores) == len(categories) == len(self.boxes):
            raise InputError(
                f"detections: {len(self.boxes)} boxes, {len(scores)} scores and {len(categories)} categories"
            )
        scores.setflags(write=False)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "categories", categories)

    @classmethod
    def empty(cls) -> Detections3D:
        return cls(Boxes3D.empty(EGO_FRAME, with_velocity=True), np.zeros(0), ())

    def __len__(self) -> int:
        return len(self.boxes)

    def subset(self, index: np.ndarray) -> Detections3D:
        """The detections at integer or boolean ``index``."""
        idx = np.atleast_1d(np.arange(len(self))[index])
        return Detections3D(self.boxes[idx], self.scores[idx], tuple(self.categories[i] for i in idx))


@runtime_checkable
class Detector(Protocol):
    """Anything that turns a keyframe cloud into boxes."""

    def detect(self, frame: DetectorInput) -> Detections3D: ...
