"""Camera painting: colour (and optional per-pixel features) for lidar points, in torch.

The same code runs on CPU and CUDA: the caller resolves a ``torch.device`` once and passes it in.
Points are in the world frame; each camera view carries its own exposure pose, so ego motion between
the lidar and the camera is compensated. Where several cameras see a point, the view in which it lies
closest to the optical axis wins; views of the same camera at several times compete by time, so each
point is painted from the image nearest to its capture time. A coarse depth buffer per view rejects
points hidden behind nearer surfaces (the lidar and the camera do not share a viewpoint).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numba
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
    """(2, N) pixels ``u, v`` and (N,) validity of (3, N) camera-frame points, OpenCV distortion included."""
    z = points_cam[2]
    front = z > min_depth_m
    safe_z = torch.where(front, z, torch.ones_like(z))
    x, y = points_cam[0] / safe_z, points_cam[1] / safe_z
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
    return torch.stack([u, v]), valid & inside


@lru_cache(maxsize=64)
def frustum_bounds(camera: PinholeCamera) -> tuple[float, float]:
    """Bounds ``(bx, by)`` with ``|x| < bx z`` and ``|y| < by z`` for every camera-frame point that can
    land in the image (from the undistorted rays through the image border, with a 5 % margin)."""
    w, h = camera.width_px, camera.height_px
    border = np.concatenate(
        [
            np.column_stack([np.linspace(-0.5, w - 0.5, 33), np.full(33, -0.5)]),
            np.column_stack([np.linspace(-0.5, w - 0.5, 33), np.full(33, h - 0.5)]),
            np.column_stack([np.full(33, -0.5), np.linspace(-0.5, h - 0.5, 33)]),
            np.column_stack([np.full(33, w - 0.5), np.linspace(-0.5, h - 0.5, 33)]),
        ]
    )
    rays = camera.unproject(border)
    normalized = np.abs(rays[:, :2] / rays[:, 2:3])
    return float(normalized[:, 0].max() * 1.05 + 0.01), float(normalized[:, 1].max() * 1.05 + 0.01)


def _choose_views_torch(
    local: np.ndarray,
    origin: np.ndarray,
    views: Sequence[CameraView],
    device: torch.device,
    point_time_us: np.ndarray | None,
    config: PaintConfig,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per point the winning view (-1 none) and its flat pixel index, with torch ops on ``device``."""
    n = len(local)
    # (3, N) layout: the 3x3 transform is one addmm (a (N, 3) @ (3, 3) product is ~20x slower on CPU).
    local = torch.as_tensor(np.ascontiguousarray(local.T), device=device)
    times = None if point_time_us is None else torch.as_tensor(np.asarray(point_time_us, np.float64), device=device)
    best_score = torch.full((n,), float("inf"), device=device)
    best_view = torch.full((n,), NO_CAMERA, dtype=torch.int64, device=device)
    best_pixel = torch.zeros((n,), dtype=torch.int64, device=device)
    views_per_camera = Counter(view.camera.name for view in views)
    time_gap = {}
    if times is not None:  # per camera with several views: the smallest |t_point - t_view| over its views
        for view in views:
            name = view.camera.name
            if views_per_camera[name] > 1:
                gap = (times - view.timestamp_us).abs()
                time_gap[name] = torch.minimum(time_gap[name], gap) if name in time_gap else gap
    for index, view in enumerate(views):
        camera = view.camera
        rotation = torch.as_tensor(np.array(view.cam_SE3_world.rotation, dtype=np.float32), device=device)
        shift = view.cam_SE3_world.rotation @ origin + view.cam_SE3_world.translation
        points_cam = torch.addmm(torch.as_tensor(shift[:, None], dtype=torch.float32, device=device), rotation, local)
        # Cheap frustum cull first; the projection, depth buffer and scores run on the candidates only.
        bound_x, bound_y = frustum_bounds(camera)
        x, y, z = points_cam
        near = (z > config.min_depth_m) & (x.abs() < bound_x * z) & (y.abs() < bound_y * z)
        if camera.name in time_gap:
            near &= (times - view.timestamp_us).abs() <= time_gap[camera.name]
        candidates = torch.nonzero(near).squeeze(1)
        if candidates.numel() == 0:
            continue
        points_cam = points_cam[:, candidates]
        uv, valid = _project(points_cam, camera, config.min_depth_m)
        col = uv[0].round().clamp(0, camera.width_px - 1).long()
        row = uv[1].round().clamp(0, camera.height_px - 1).long()
        depth = points_cam[2]
        # Coarse depth buffer: the nearest valid point per cell hides what lies clearly behind it.
        cell_w = (camera.width_px + config.occlusion_cell_px - 1) // config.occlusion_cell_px
        cell = (row // config.occlusion_cell_px) * cell_w + col // config.occlusion_cell_px
        n_cells = cell_w * ((camera.height_px + config.occlusion_cell_px - 1) // config.occlusion_cell_px)
        nearest = torch.full((n_cells,), float("inf"), device=device)
        nearest.scatter_reduce_(0, cell[valid], depth[valid], reduce="amin")
        visible = valid & (depth <= nearest[cell] * (1 + config.occlusion_relative) + config.occlusion_margin_m)
        k = camera.intrinsics
        score = torch.hypot((uv[0] - k[0, 2]) / k[0, 0], (uv[1] - k[1, 2]) / k[1, 1])
        better = visible & (score < best_score[candidates])
        winners = candidates[better]
        best_score[winners] = score[better]
        best_view[winners] = index
        best_pixel[winners] = (row * camera.width_px + col)[better]

    return best_view, best_pixel


def _choose_views_numba(
    points: np.ndarray,
    origin: np.ndarray,
    views: Sequence[CameraView],
    point_time_us: np.ndarray | None,
    config: PaintConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """The CPU twin of :func:`_choose_views_torch` (same rules, two passes per view in numba, float64)."""
    n = len(points)
    local = points if points.dtype == np.float64 else points.astype(np.float64)
    best_score = np.full(n, np.inf)
    best_view = np.full(n, NO_CAMERA, np.int64)
    best_pixel = np.zeros(n, np.int64)
    scratch = (np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.float64), np.empty(n, np.float64))
    times = None if point_time_us is None else np.asarray(point_time_us, np.float64)
    groups: dict[str, list[int]] = {}
    for index, view in enumerate(views):
        groups.setdefault(view.camera.name, []).append(index)
    for index, view in enumerate(views):
        camera = view.camera
        eligible = np.zeros(0, np.bool_)
        group = groups[camera.name]
        if times is not None and len(group) > 1:
            gaps = np.abs(times[None, :] - np.array([views[g].timestamp_us for g in group], np.float64)[:, None])
            eligible = gaps[group.index(index)] <= gaps.min(axis=0)
        pose = view.cam_SE3_world
        k = camera.intrinsics
        distortion = np.zeros(8)
        distortion[: min(camera.distortion.size, 8)] = camera.distortion[:8]
        bound_x, bound_y = frustum_bounds(camera)
        camera_params = np.array(
            [k[0, 0], k[0, 1], k[0, 2], k[1, 1], k[1, 2], camera.width_px, camera.height_px, bound_x, bound_y,
             min(camera.max_model_radius, 1e6) if camera.has_distortion else np.inf],
            np.float64,
        )  # fmt: skip
        rules = np.array(
            [config.min_depth_m, config.occlusion_cell_px, config.occlusion_relative, config.occlusion_margin_m]
        )
        _view_kernel(
            local,
            origin,
            eligible,
            np.ascontiguousarray(pose.rotation),
            pose.rotation @ origin + pose.translation,
            camera_params,
            distortion,
            rules,
            index,
            best_score,
            best_view,
            best_pixel,
            *scratch,
        )
    return best_view, best_pixel


@numba.njit(cache=True, nogil=True)
def _view_kernel(
    points, origin, eligible, rotation, shift, camera, distortion, rules, index, best_score, best_view, best_pixel,
    cand_index, cand_cell, cand_depth, cand_score,
):  # fmt: skip
    """Project every point into one view; the nearest depth per occlusion cell hides what lies behind it;
    a visible point closer to this view's optical axis than to its best view's so far switches to it."""
    fx, skew, cx, fy, cy = camera[0], camera[1], camera[2], camera[3], camera[4]
    width, height, bound_x, bound_y, max_radius = int(camera[5]), int(camera[6]), camera[7], camera[8], camera[9]
    k1, k2, p1, p2, k3, k4, k5, k6 = distortion
    has_distortion = max_radius != np.inf
    min_depth, cell_px, relative, margin = rules[0], int(rules[1]), rules[2], rules[3]
    cells_w = (width + cell_px - 1) // cell_px
    nearest = np.full(cells_w * ((height + cell_px - 1) // cell_px), np.inf)
    gated = eligible.shape[0] > 0
    count = 0
    for i in range(points.shape[0]):
        px, py, pz = points[i, 0] - origin[0], points[i, 1] - origin[1], points[i, 2] - origin[2]
        z = rotation[2, 0] * px + rotation[2, 1] * py + rotation[2, 2] * pz + shift[2]
        if z <= min_depth:
            continue
        x = rotation[0, 0] * px + rotation[0, 1] * py + rotation[0, 2] * pz + shift[0]
        y = rotation[1, 0] * px + rotation[1, 1] * py + rotation[1, 2] * pz + shift[1]
        if abs(x) >= bound_x * z or abs(y) >= bound_y * z or (gated and not eligible[i]):
            continue
        xn, yn = x / z, y / z
        if has_distortion:
            r2 = xn * xn + yn * yn
            if np.sqrt(r2) >= max_radius:
                continue
            radial = (1 + k1 * r2 + k2 * r2 * r2 + k3 * r2 * r2 * r2) / (1 + k4 * r2 + k5 * r2 * r2 + k6 * r2 * r2 * r2)
            xd = xn * radial + 2 * p1 * xn * yn + p2 * (r2 + 2 * xn * xn)
            yd = yn * radial + p1 * (r2 + 2 * yn * yn) + 2 * p2 * xn * yn
            xn, yn = xd, yd
        u = fx * xn + skew * yn + cx
        v = fy * yn + cy
        if not (u >= -0.5 and u < width - 0.5 and v >= -0.5 and v < height - 0.5):
            continue
        col = min(max(int(np.rint(u)), 0), width - 1)
        row = min(max(int(np.rint(v)), 0), height - 1)
        cell = (row // cell_px) * cells_w + col // cell_px
        nearest[cell] = min(nearest[cell], z)
        cand_index[count] = i
        cand_cell[count] = cell * (width * height) + row * width + col  # cell and pixel in one integer
        cand_depth[count] = z
        cand_score[count] = np.hypot((u - cx) / fx, (v - cy) / fy)
        count += 1
    for c in range(count):
        cell, pixel = cand_cell[c] // (width * height), cand_cell[c] % (width * height)
        i = cand_index[c]
        if cand_depth[c] <= nearest[cell] * (1 + relative) + margin and cand_score[c] < best_score[i]:
            best_score[i] = cand_score[c]
            best_view[i] = index
            best_pixel[i] = pixel


def _gather_numba(
    view_index: np.ndarray, pixel: np.ndarray, views: Sequence[CameraView], n_features: int | None
) -> Painted:
    rgb = np.zeros((len(view_index), 3), np.uint8)
    features = np.zeros((len(view_index), n_features), np.float32) if n_features else None
    for index, view in enumerate(views):
        _gather_kernel(view_index, pixel, index, np.ascontiguousarray(view.image).reshape(-1, 3), rgb)
        if features is not None and view.features is not None:
            fmap = np.ascontiguousarray(view.features, dtype=np.float32).reshape(-1, n_features)
            _gather_kernel(view_index, pixel, index, fmap, features)
    return Painted(rgb=rgb, view_index=view_index.astype(np.int16), features=features)


@numba.njit(cache=True, nogil=True)
def _gather_kernel(view_index, pixel, index, values, out):
    """``out[i] = values[pixel[i]]`` where ``view_index[i] == index``."""
    for i in range(view_index.shape[0]):
        if view_index[i] == index:
            out[i] = values[pixel[i]]


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
    n_features = None
    for view in views:
        camera = view.camera
        if view.image.shape[:2] != (camera.height_px, camera.width_px):
            raise GeometryError(
                f"image of {camera.name} is {view.image.shape[:2]}, camera is {camera.height_px}x{camera.width_px}"
            )
        if view.features is not None:
            n_features = n_features or view.features.shape[2]
            if view.features.shape[2] != n_features or view.features.shape[:2] != view.image.shape[:2]:
                raise GeometryError(f"feature map of {view.camera.name} does not match its image or other maps")
    if point_time_us is not None and np.shape(point_time_us) != (n,):
        raise GeometryError(f"point times must have shape ({n},), got {np.shape(point_time_us)}")
    # Coordinates relative to a point near the cloud, so float32 keeps millimetres far from the origin.
    origin = pts[:: max(n // 1024, 1), :3].astype(np.float64).mean(axis=0) if n else np.zeros(3)
    if device.type == "cpu":
        view_index, pixel = _choose_views_numba(pts[:, :3], origin, views, point_time_us, config)
        return _gather_numba(view_index, pixel, views, n_features)
    local = (pts[:, :3] - origin).astype(np.float32)
    best_view, best_pixel = _choose_views_torch(local, origin, views, device, point_time_us, config)

    rgb = torch.zeros((n, 3), dtype=torch.uint8, device=device)
    features = torch.zeros((n, n_features), dtype=torch.float32, device=device) if n_features else None
    for index, view in enumerate(views):
        mine = torch.nonzero(best_view == index).squeeze(1)
        if mine.numel() == 0:
            continue
        pixels = best_pixel.index_select(0, mine)
        image = torch.as_tensor(np.ascontiguousarray(view.image), device=device).reshape(-1, 3)
        rgb.index_copy_(0, mine, image.index_select(0, pixels))
        if features is not None and view.features is not None:
            fmap = torch.as_tensor(np.ascontiguousarray(view.features, dtype=np.float32), device=device)
            features.index_copy_(0, mine, fmap.reshape(-1, n_features).index_select(0, pixels))
    return Painted(
        rgb=rgb.cpu().numpy(),
        view_index=best_view.to(torch.int16).cpu().numpy(),
        features=None if features is None else features.cpu().numpy(),
    )
