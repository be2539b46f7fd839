"""Per-frame 3D detection: one :class:`Detector` interface, the built-in geometric detector.

``DETECTORS`` lists the available detectors by name; each entry builds a detector from its own config.
"""

from __future__ import annotations

from collections.abc import Callable

from autolabel.detect.base import Detections3D, Detector, DetectorInput
from autolabel.detect.geometric import GeometricConfig, GeometricDetector, GeometricResult, detect_geometric

DETECTORS: dict[str, Callable[..., Detector]] = {
    "geometric": GeometricDetector,
}

__all__ = [
    "DETECTORS",
    "Detections3D",
    "Detector",
    "DetectorInput",
    "GeometricConfig",
    "GeometricDetector",
    "GeometricResult",
    "detect_geometric",
]
