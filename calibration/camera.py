"""Pinhole camera with OpenCV distortion: projection with validity masks and pixel rays.

Camera frame (OpenCV): x right, y down, z forward. Pixel ``(u, v)``: u to the right, v down,
``(0, 0)`` is the centre of the top-left pixel, so the image covers ``[-0.5, W - 0.5) x [-0.5, H - 0.5)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import cv2
import numpy as np

from calibration.errors import GeometryError
from calibration.se3 import SE3

_UNDISTORT_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-14)
_MAX_MODEL_RADIUS = 10.0  # normalised radius (about 84 degrees off-axis) beyond which nothing is projected


@dataclass(frozen=True, eq=False)
class Projection:
    """Result of projecting N points.

    Attributes:
        uv_px: (N, 2) float64 pixel coordinates (meaningless where ``valid`` is False).
        depth_m: (N,) float64 depth along the optical axis (camera z).
        valid: (N,) bool, in front of the camera and inside the image.
    """

    uv_px: np.ndarray
    depth_m: np.ndarray
    valid: np.ndarray


@dataclass(frozen=True, eq=False)
class PinholeCamera:
    """A calibrated camera.

    Attributes:
        name: sensor name (``"CAM_FRONT"``, ``"image_02"``).
        intrinsics: (3, 3) camera matrix ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` in pixels.
        width_px, height_px: image size.
        ego_SE3_cam: extrinsics, camera frame -> ego frame.
        distortion: OpenCV coefficients ``(k1, k2, p1, p2[, k3[, k4, k5, k6]])``; empty = none.
    """

    name: str
    intrinsics: np.ndarray
    width_px: int
    height_px: int
    ego_SE3_cam: SE3
    distortion: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __post_init__(self) -> None:
        k = np.array(self.intrinsics, dtype=np.float64, copy=True)
        if k.shape != (3, 3) or not np.all(np.isfinite(k)):
            raise GeometryError(f"camera {self.name}: intrinsics must be a finite 3x3 matrix, got {k.shape}")
        if k[0, 0] <= 0 or k[1, 1] <= 0 or not np.allclose(k[2], [0, 0, 1]) or k[1, 0] != 0 or k[2, 0] != 0:
            raise GeometryError(f"camera {self.name}: intrinsics are not a pinhole matrix: {k.tolist()}")
        if int(self.width_px) <= 0 or int(self.height_px) <= 0:
            raise GeometryError(
                f"camera {self.name}: image size must be positive, got {self.width_px}x{self.height_px}"
            )
        dist = np.array(self.distortion, dtype=np.float64, copy=True).reshape(-1)
        if dist.size not in (0, 4, 5, 8, 12, 14) or not np.all(np.isfinite(dist)):
            raise GeometryError(
                f"camera {self.name}: distortion must have 0/4/5/8/12/14 finite coefficients, got {dist.size}"
            )
        k.setflags(write=False)
        dist.setflags(write=False)
        object.__setattr__(self, "intrinsics", k)
        object.__setattr__(self, "distortion", dist)
        object.__setattr__(self, "width_px", int(self.width_px))
        object.__setattr__(self, "height_px", int(self.height_px))

    @cached_property
    def max_model_radius(self) -> float:
        """Normalised image radius (tan of the off-axis angle) up to which projection is one-to-one.

        ``r_d(r) = r (1 + k1 r^2 + k2 r^4 + k3 r^6) / (1 + k4 r^2 + k5 r^4 + k6 r^6)``; past its first
        turning point points fold back into the image and must not count as visible.
        """
        if not self.has_distortion:
            return float("inf")
        k = np.zeros(8)
        k[: min(self.distortion.size, 8)] = self.distortion[:8]
        k1, k2, _, _, k3, k4, k5, k6 = k
        r = np.linspace(0.0, _MAX_MODEL_RADIUS, 20001)
        r2 = r * r
        r_d = r * (1 + k1 * r2 + k2 * r2**2 + k3 * r2**3) / (1 + k4 * r2 + k5 * r2**2 + k6 * r2**3)
        turning = np.nonzero(np.diff(r_d) <= 0)[0]
        return float(r[turning[0]]) if turning.size else _MAX_MODEL_RADIUS

    @property
    def has_distortion(self) -> bool:
        return bool(np.any(self.distortion != 0))

    @property
    def cam_SE3_ego(self) -> SE3:
        return self.ego_SE3_cam.inverse()

    def inside_image(self, uv_px: np.ndarray, *, margin_px: float = 0.0) -> np.ndarray:
        """(N,) bool: pixel inside the image grown by ``margin_px`` on each side."""
        u, v = uv_px[:, 0], uv_px[:, 1]
        return (
            (u >= -0.5 - margin_px)
            & (u < self.width_px - 0.5 + margin_px)
            & (v >= -0.5 - margin_px)
            & (v < self.height_px - 0.5 + margin_px)
        )

    def project_cam(self, points_cam: np.ndarray, *, min_depth_m: float = 0.1) -> Projection:
        """Project (N, C>=3) camera-frame points to pixels with a validity mask.

        Points closer than ``min_depth_m`` (or behind) are invalid. With distortion, points whose
        undistorted projection lies far outside the image (where polynomial models fold back) are
        invalid too.
        """
        pts = np.asarray(points_cam)
        if pts.ndim != 2 or pts.shape[1] < 3:
            raise GeometryError(f"points must have shape (N, C>=3), got {pts.shape}")
        xyz = pts[:, :3].astype(np.float64)
        depth = xyz[:, 2]
        in_front = depth > min_depth_m
        safe_z = np.where(in_front, depth, 1.0)
        normalized = xyz[:, :2] / safe_z[:, None]
        k = self.intrinsics
        pinhole_uv = np.column_stack(
            [k[0, 0] * normalized[:, 0] + k[0, 1] * normalized[:, 1] + k[0, 2], k[1, 1] * normalized[:, 1] + k[1, 2]]
        )
        if not self.has_distortion:
            uv = pinhole_uv
            valid = in_front & self.inside_image(uv)
        else:
            homogeneous = np.column_stack([normalized, np.ones(len(xyz))])
            uv, _ = cv2.projectPoints(homogeneous.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), k, self.distortion)
            uv = uv.reshape(-1, 2)
            # Beyond the radius where the radial model stops growing, projections fold back inside.
            within_model = np.hypot(normalized[:, 0], normalized[:, 1]) < self.max_model_radius
            valid = in_front & within_model & self.inside_image(uv)
        return Projection(uv_px=uv, depth_m=depth, valid=valid)

    def project_ego(self, points_ego: np.ndarray, *, min_depth_m: float = 0.1) -> Projection:
        """Project (N, C>=3) ego-frame points; see :meth:`project_cam`."""
        return self.project_cam(self.cam_SE3_ego.transform_points(points_ego), min_depth_m=min_depth_m)

    def unproject(self, uv_px: np.ndarray) -> np.ndarray:
        """(N, 2) pixels -> (N, 3) unit ray directions in the camera frame (distortion removed)."""
        uv = np.asarray(uv_px, dtype=np.float64)
        if uv.ndim != 2 or uv.shape[1] != 2:
            raise GeometryError(f"pixels must have shape (N, 2), got {uv.shape}")
        if self.has_distortion:
            normalized = cv2.undistortPointsIter(
                uv.reshape(-1, 1, 2), self.intrinsics, self.distortion, None, None, _UNDISTORT_CRITERIA
            ).reshape(-1, 2)
        else:
            k = self.intrinsics
            y = (uv[:, 1] - k[1, 2]) / k[1, 1]
            x = (uv[:, 0] - k[0, 2] - k[0, 1] * y) / k[0, 0]
            normalized = np.column_stack([x, y])
        rays = np.column_stack([normalized, np.ones(len(uv))])
        return rays / np.linalg.norm(rays, axis=1, keepdims=True)

    def rays_ego(self, uv_px: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel rays in the ego frame: origin (3,) (the camera centre) and (N, 3) unit directions."""
        return self.ego_SE3_cam.translation.copy(), self.ego_SE3_cam.rotate_vectors(self.unproject(uv_px))
