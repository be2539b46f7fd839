"""Per-frame 3D detection: one :class:`Detector` interface, the built-in geometric detector, a user's mmdet3d model.

``DETECTORS`` lists the available detectors by name; each entry builds a detector from its own config (``None``:
its defaults; the mmdet3d detector has none and needs a :class:`Mmdet3dConfig`).
"""

from __future__ import annotations

from collections.abc import Callable

from autolabel.detect.base import Detections3D, Detector, DetectorInput
from autolabel.detect.geometric import GeometricConfig, GeometricDetector, GeometricResult, detect_geometric
from autolabel.detect.mmdet3d_model import Mmdet3dConfig, Mmdet3dDetector
from calibration import InputError

DETECTORS: dict[str, Callable[..., Detector]] = {
    "geometric": GeometricDetector,
    "mmdet3d": Mmdet3dDetector,
}


def make_detector(name: str, config: object | None = None) -> Detector:
    """The detector ``name`` of :data:`DETECTORS` with ``config`` (None: its defaults)."""
    if name not in DETECTORS:
        raise InputError(f"unknown detector {name!r}; available: {', '.join(sorted(DETECTORS))}")
    return DETECTORS[name]() if config is None else DETECTORS[name](config)


__all__ = [
    "DETECTORS",
    "Detections3D",
    "Detector",
    "DetectorInput",
    "GeometricConfig",
    "GeometricDetector",
    "GeometricResult",
    "Mmdet3dConfig",
    "Mmdet3dDetector",
    "detect_geometric",
    "make_detector",
]
