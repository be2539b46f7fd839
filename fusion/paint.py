"""Camera painting: colour (and optional per-pixel features) for lidar points, in torch.

The same code runs on CPU and CUDA: the caller resolves a ``torch.device`` once and passes it in.
Points are in the world frame; each camera view carries its own exposure pose, so ego motion between
the lidar and the camera is compensated. Where several cameras see a point, the view in which it lies
closest to the optical axis wins; views of the same camera at several times compete by time, so each
point is painted from the image nearest to its capture time. A coarse depth buffer per view rejects
points hidden behind nearer surfaces (the lidar and the camera do not share a viewpoint).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from calibration import SE3, GeometryError, PinholeCamera

NO_CAMERA = -1


@dataclass(frozen=True, eq=False)
class CameraView:
    """One image to paint from.

    Attributes:
        camera: intrinsics, distortion and size.
        image: (H, W, 3) uint8 RGB.
        cam_SE3_world: world -> camera at the exposure time (``cam_SE3_ego @ ego_SE3_world(t_image)``).
        timestamp_us: exposure time.
        features: optional (H, W, F) float32 feature map sampled like the colours.
    """

    camera: PinholeCamera
    image: np.ndarray
    cam_SE3_world: SE3
    timestamp_us: int
    features: np.ndarray | None = None


@dataclass(frozen=True)
class PaintConfig:
    """Depth-buffer cell size in pixels and the depth tolerance (relative + absolute) for visibility."""

    occlusion_cell_px: int = 8
    occlusion_relative: float = 0.05
    occlusion_margin_m: float = 0.3
    min_depth_m: float = 0.5


@dataclass(frozen=True, eq=False)
class Painted:
    """Per-point paint.

    Attributes:
        rgb: (N, 3) uint8 colour, zeros where unpainted.
        view_index: (N,) int16 index of the view that painted the point, -1 for none.
        features: (N, F) float32 or ``None``.
    """

    rgb: np.ndarray
    view_index: np.ndarray
    features: np.ndarray | None = None

    @property
    def painted(self) -> np.ndarray:
        return self.view_index >= 0


def _project(points_cam: torch.Tensor, camera: PinholeCamera, min_depth_m: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 2) pixels and (N,) validity of camera-frame points, OpenCV distortion model included."""
    z = points_cam[:, 2]
    front = z > min_depth_m
    safe_z = torch.where(front, z, torch.ones_like(z))
    x, y = points_cam[:, 0] / safe_z, points_cam[:, 1] / safe_z
    valid = front
    d = camera.distortion
    if camera.has_distortion:
        k = np.zeros(8)
        k[: min(len(d), 8)] = d[:8]
        k1, k2, p1, p2, k3, k4, k5, k6 = (float(v) for v in k)
        r2 = x * x + y * y
        radial = (1 + k1 * r2 + k2 * r2**2 + k3 * r2**3) / (1 + k4 * r2 + k5 * r2**2 + k6 * r2**3)
        xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
        yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
        valid = valid & (torch.sqrt(r2) < camera.max_model_radius)
        x, y = xd, yd
    kmat = camera.intrinsics
    u = kmat[0, 0] * x + kmat[0, 1] * y + kmat[0, 2]
    v = kmat[1, 1] * y + kmat[1, 2]
    inside = (u >= -0.5) & (u < camera.width_px - 0.5) & (v >= -0.5) & (v < camera.height_px - 0.5)
    return torch.stack([u, v], dim=1), valid & inside


def paint(
    points_world: np.ndarray,
    views: Sequence[CameraView],
    device: torch.device,
    *,
    point_time_us: np.ndarray | None = None,
    config: PaintConfig = PaintConfig(),
) -> Painted:
    """Paint (N, C>=3) world points from ``views``.

    Args:
        points_world: (N, C>=3) world coordinates (float64 recommended for large coordinates).
        views: images with their exposure poses; several views of the same camera name compete by time.
        device: where the tensors live.
        point_time_us: (N,) capture times; without it every view of a camera is eligible.
    """
    pts = np.asarray(points_world)
    if pts.ndim != 2 or pts.shape[1] < 3:
        raise GeometryError(f"points must have shape (N, C>=3), got {pts.shape}")
    n = len(pts)
    origin = pts[:, :3].mean(axis=0) if n else np.zeros(3)
    local = torch.as_tensor((pts[:, :3] - origin).astype(np.float32), device=device)
    times = None if point_time_us is None else torch.as_tensor(np.asarray(point_time_us, np.float64), device=device)
    n_features = None
    for view in views:
        if view.features is not None:
            n_features = n_features or view.features.shape[2]
            if view.features.shape[2] != n_features or view.features.shape[:2] != view.image.shape[:2]:
                raise GeometryError(f"feature map of {view.camera.name} does not match its image or other maps")

    best_score = torch.full((n,), float("inf"), device=device)
    best_view = torch.full((n,), NO_CAMERA, dtype=torch.int64, device=device)
    best_pixel = torch.zeros((n,), dtype=torch.int64, device=device)
    time_gap = {}
    if times is not None:  # per camera name: the smallest |t_point - t_view| over its views
        for view in views:
            gap = (times - view.timestamp_us).abs()
            name = view.camera.name
            time_gap[name] = torch.minimum(time_gap[name], gap) if name in time_gap else gap
    for index, view in enumerate(views):
        camera = view.camera
        if view.image.shape[:2] != (camera.height_px, camera.width_px):
            raise GeometryError(
                f"image of {camera.name} is {view.image.shape[:2]}, camera is {camera.height_px}x{camera.width_px}"
            )
        rotation = torch.as_tensor(np.array(view.cam_SE3_world.rotation, dtype=np.float32), device=device)
        shift = view.cam_SE3_world.rotation @ origin + view.cam_SE3_world.translation
        points_cam = local @ rotation.T + torch.as_tensor(shift, dtype=torch.float32, device=device)
        uv, valid = _project(points_cam, camera, config.min_depth_m)
        if times is not None:
            valid &= (times - view.timestamp_us).abs() <= time_gap[camera.name]
        col = uv[:, 0].round().clamp(0, camera.width_px - 1).long()
        row = uv[:, 1].round().clamp(0, camera.height_px - 1).long()
        depth = points_cam[:, 2]
        # Coarse depth buffer: the nearest valid point per cell hides what lies clearly behind it.
        cell_w = (camera.width_px + config.occlusion_cell_px - 1) // config.occlusion_cell_px
        cell = (row // config.occlusion_cell_px) * cell_w + col // config.occlusion_cell_px
        n_cells = cell_w * ((camera.height_px + config.occlusion_cell_px - 1) // config.occlusion_cell_px)
        nearest = torch.full((n_cells,), float("inf"), device=device)
        nearest.scatter_reduce_(0, cell[valid], depth[valid], reduce="amin")
        visible = valid & (depth <= nearest[cell] * (1 + config.occlusion_relative) + config.occlusion_margin_m)
        k = camera.intrinsics
        score = torch.hypot((uv[:, 0] - k[0, 2]) / k[0, 0], (uv[:, 1] - k[1, 2]) / k[1, 1])
        better = visible & (score < best_score)
        best_score = torch.where(better, score, best_score)
        best_view = torch.where(better, torch.full_like(best_view, index), best_view)
        best_pixel = torch.where(better, row * camera.width_px + col, best_pixel)

    rgb = torch.zeros((n, 3), dtype=torch.uint8, device=device)
    features = torch.zeros((n, n_features), dtype=torch.float32, device=device) if n_features else None
    for index, view in enumerate(views):
        mine = best_view == index
        if not bool(mine.any()):
            continue
        image = torch.as_tensor(np.ascontiguousarray(view.image), device=device).reshape(-1, 3)
        rgb[mine] = image[best_pixel[mine]]
        if features is not None and view.features is not None:
            fmap = torch.as_tensor(np.ascontiguousarray(view.features, dtype=np.float32), device=device)
            features[mine] = fmap.reshape(-1, n_features)[best_pixel[mine]]
    return Painted(
        rgb=rgb.cpu().numpy(),
        view_index=best_view.to(torch.int16).cpu().numpy(),
        features=None if features is None else features.cpu().numpy(),
    )
