"""Calibration QA: lidar-to-camera edge alignment (Levinson & Thrun 2013) and a time-offset check.

Idea: where the lidar sees a range jump (an object's silhouette) the image has an intensity edge.
Per image (points in the ego frame at the image's exposure time, motion-compensated by the caller):

1. **Depth edges** (:func:`depth_discontinuities`). Scan neighbours are found in the lidar's own
   view (azimuth / elevation about the lidar origin), never in the image, where the lidar-camera
   parallax overlays the rings of near objects. A point whose neighbour along the ring, or on the
   ring above/below, is farther by ``max(min_jump_m, min_relative_jump * range)`` is a foreground
   edge with Levinson's weight ``sqrt(jump)``. The silhouette lies somewhere in the angular gap
   between the two points (a 32-beam ring gap is 1.3 degrees), so an edge is the *segment* across
   that gap, scored by the best map value on it (unbiased, unlike the near point). Left out, because
   lidar and camera see them differently: edges nearer than ``min_edge_range_m``, edges hidden from
   the camera by nearer points, ring-to-ring jumps on the ground or kerbs, and roofs/undersides
   between the two sensors' heights.
2. **Oriented edge maps** (:func:`image_edge_map`). ``|d/du|`` for along-ring edges (vertical image
   edges) and ``|d/dv|`` for across-ring ones, normalised by a high percentile, spread by Levinson's
   inverse distance transform ``D(p) = max_q E(q) * gamma^dist(p, q)`` so the score is smooth.
3. **Score** = weighted mean of ``D`` on the edges over the mean of ``D`` under all lidar points,
   per edge kind, the two kinds averaged: 1 is chance, aligned images score clearly more.

Miscalibration is judged *relative to the extrinsics' own neighbourhood*, not by an absolute score
tuned to one scene (:func:`check_extrinsics`): a well calibrated camera sits at a local maximum of
the score over several frames; a miscalibrated one has a small perturbation (0.5 degree about a
camera axis, 4 cm along one) that scores clearly better, robustly under a bootstrap of the edges.
Edges are found once at the given extrinsics; perturbations only re-project them.

The time-offset check (:func:`check_time_offset`) applies the same idea over time: the caller
supplies the lidar points compensated to the exposure time plus ``dt``; the best ``dt`` of a small
grid must be near 0.

Reliability: one frame is noisy (on the simulator about 8 % of correctly calibrated camera-frames
show a spurious better neighbour); use four or more frames per camera.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import NamedTuple

import cv2
import numpy as np
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from calibration import SE3, GeometryError, PinholeCamera

PointsAtOffset = Callable[[float], np.ndarray]
"""``dt_s -> (N, C>=3)`` ego-frame points at the image time plus ``dt_s`` (same points, same order)."""


class ImageSample(NamedTuple):
    """One image with its lidar points (a plain ``(points, image, camera)`` tuple works too).

    Attributes:
        points_ego: (N, C>=3) lidar points in the ego frame at the image's exposure time.
        image_rgb: (H, W, 3) uint8 RGB.
        camera: the calibrated camera.
        lidar_origin_ego: (3,) the lidar's position in that ego frame, or None (the camera centre).
    """

    points_ego: np.ndarray
    image_rgb: np.ndarray
    camera: PinholeCamera
    lidar_origin_ego: np.ndarray | None = None


class TimeSample(NamedTuple):
    """One image for the time check (a plain ``(points_at_offset, image, camera)`` tuple works too).

    Attributes:
        points_at_offset: ``dt_s -> (N, C>=3)`` ego-frame points at the image time plus ``dt_s``.
        image_rgb: (H, W, 3) uint8 RGB.
        camera: the calibrated camera.
        lidar_origin_ego: (3,) the lidar's position in the image's ego frame, or None.
    """

    points_at_offset: PointsAtOffset
    image_rgb: np.ndarray
    camera: PinholeCamera
    lidar_origin_ego: np.ndarray | None = None


@dataclass(frozen=True)
class EdgeScoreConfig:
    """Parameters of the edge-alignment score.

    Attributes:
        min_depth_m, max_depth_m: camera-depth range of the points used.
        neighbours: nearest points (lidar view) searched for a point's scan-line neighbours.
        vertical_stretch: elevation is multiplied by this before the neighbour search.
        neighbour_radius_deg: farthest (stretched) angular distance of a scan-line neighbour.
        vertical_surface_tol, wall_rings: an across-ring edge needs ``wall_rings`` rings on the other
            side within this relative horizontal distance (an upright surface, not the ground or a kerb).
        sensor_band_margin_m: across-ring edges whose face may lie within this of the heights between
            lidar and camera are not used.
        min_edge_range_m: nearer edges are not used: there the lidar-camera parallax makes the two
            sensors see different silhouettes (a roof the lidar looks across, the camera up at).
        gap_samples: points sampled along each edge's gap (near point to far neighbour's direction).
        kind_weight_cap: an edge kind's (and so an image's) weight is its total edge weight up to this.
        min_jump_m, min_relative_jump: a discontinuity's range jump is at least the larger of these.
        max_jump_m: jumps are capped here before the square root weighting.
        blur_sigma_px: Gaussian blur before the image gradient.
        edge_percentile: gradient magnitudes are divided by this percentile and clipped to 1.
        decay_per_px: ``gamma`` of the inverse distance transform, per full-resolution pixel.
        decay_radius_px: how far (full-resolution pixels) edges are spread.
        map_scale: resolution of the edge map relative to the image (0.5 = half).
    """

    min_depth_m: float = 1.0
    max_depth_m: float = 80.0
    neighbours: int = 4
    vertical_stretch: float = 4.0
    neighbour_radius_deg: float = 1.5
    vertical_surface_tol: float = 0.02
    sensor_band_margin_m: float = 0.1
    wall_rings: int = 2
    min_edge_range_m: float = 5.0
    gap_samples: int = 16
    kind_weight_cap: float = 30.0
    min_jump_m: float = 0.5
    min_relative_jump: float = 0.1
    max_jump_m: float = 10.0
    blur_sigma_px: float = 1.0
    edge_percentile: float = 98.0
    decay_per_px: float = 0.9
    decay_radius_px: float = 40.0
    map_scale: float = 0.5


@dataclass(frozen=True)
class ExtrinsicsCheckConfig:
    """Neighbourhood of the given extrinsics and the decision rule.

    Attributes:
        rotation_steps_deg: rotations about each camera axis, both signs.
        translation_steps_m: translations along each camera axis, both signs.
        rotation_margin: flag when a rotated neighbour beats the score by more than this fraction ...
        translation_margin: ... or a translated one by more than this (translations move near edges
            much and far ones little, so their scores are noisier).
        confidence: ... and it still beats it in this fraction of bootstrap resamplings.
        bootstrap: number of bootstrap resamplings.
        cluster_cell_px: edges are resampled in image cells of this size (one outline's edges move
            together; resampling them one by one would overstate the confidence).
        score: the edge-alignment score parameters.
    """

    rotation_steps_deg: tuple[float, ...] = (0.5,)
    translation_steps_m: tuple[float, ...] = (0.04,)
    rotation_margin: float = 0.03
    translation_margin: float = 0.06
    confidence: float = 0.95
    bootstrap: int = 500
    cluster_cell_px: float = 100.0
    score: EdgeScoreConfig = field(default_factory=EdgeScoreConfig)


@dataclass(frozen=True)
class TimeCheckConfig:
    """Time grid and decision rule of the time-offset check.

    Attributes:
        offsets_s: candidate offsets ``dt`` (must contain 0).
        max_offset_s: flag when the best offset is farther from 0 than this ...
        better_margin: ... and scores better than ``dt = 0`` by more than this fraction.
        score: the edge-alignment score parameters.
    """

    offsets_s: tuple[float, ...] = tuple(np.round(np.arange(-0.06, 0.0601, 0.01), 3).tolist())
    max_offset_s: float = 0.015
    better_margin: float = 0.01
    score: EdgeScoreConfig = field(default_factory=EdgeScoreConfig)


@dataclass(frozen=True)
class CameraQA:
    """Extrinsics check of one camera over several frames.

    Attributes:
        camera: camera name.
        score: edge-alignment score at the given extrinsics (frames averaged by weight).
        best_neighbour_score: score of the perturbation that beats it most (relative to its margin).
        best_delta: that perturbation, e.g. ``"rot_y +0.50 deg"`` or ``"trans_x -0.040 m"``; the
            camera moved by it (``ego_SE3_cam @ delta``), so it points towards a better calibration.
        fraction_better: fraction of perturbations scoring above ``score``.
        flagged: True when that perturbation is clearly and robustly better (the extrinsics look off).
        frames_used: frames with depth edges in view.
        confidence: fraction of bootstrap resamplings in which that perturbation still scores better.
    """

    camera: str
    score: float
    best_neighbour_score: float
    best_delta: str
    fraction_better: float
    flagged: bool
    frames_used: int
    confidence: float


@dataclass(frozen=True)
class TimeOffsetQA:
    """Time-offset check over several images.

    Attributes:
        cameras: names of the cameras whose images were used.
        offsets_s: (K,) the candidate offsets.
        scores: (K,) mean over images of each image's score at ``dt`` relative to its score at 0.
        best_offset_s: the offset with the best score, refined by a parabola through its neighbours.
        flagged: True when the best offset is beyond the threshold and clearly better than 0.
        frames_used: images that had discontinuity points.
    """

    cameras: tuple[str, ...]
    offsets_s: tuple[float, ...]
    scores: tuple[float, ...]
    best_offset_s: float
    flagged: bool
    frames_used: int


# ------------------------------------------------------------------------------------------ pieces
class EdgeKind(IntEnum):
    """Which scan neighbour an edge was found towards."""

    ALONG_RING = 0  # left/right on the ring: a (near) vertical silhouette edge in the image
    ACROSS_RINGS = 1  # the ring above/below: a (near) horizontal silhouette edge


def image_edge_map(image_rgb: np.ndarray, config: EdgeScoreConfig | None = None) -> np.ndarray:
    """Smooth, oriented edge maps of an image.

    A depth edge between two points of a ring crosses the ring, so it is a (near) vertical image
    edge and shows in the horizontal gradient; an edge between rings shows in the vertical one.
    Keeping the two apart stops the many horizontal edges of a facade (window rows) from
    attracting the points of a pole in front of it.

    Args:
        image_rgb: (H, W, 3) uint8 RGB (or (H, W) grey).
        config: score parameters.

    Returns:
        (2, round(H * s), round(W * s)) float32 in [0, 1], ``s = config.map_scale``, indexed by
        :class:`EdgeKind`: ``|d/du|`` for ``ALONG_RING`` edges, ``|d/dv|`` for ``ACROSS_RINGS``.
    """
    cfg = config or EdgeScoreConfig()
    image = np.asarray(image_rgb)
    if image.ndim == 3:
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    elif image.ndim == 2:
        grey = image
    else:
        raise GeometryError(f"image must have shape (H, W, 3) or (H, W), got {image.shape}")
    grey = grey.astype(np.float32)
    if cfg.blur_sigma_px > 0:
        grey = cv2.GaussianBlur(grey, (0, 0), cfg.blur_sigma_px)
    gradients = [np.abs(cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)), np.abs(cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3))]
    if cfg.map_scale != 1.0:
        size = (max(1, round(grey.shape[1] * cfg.map_scale)), max(1, round(grey.shape[0] * cfg.map_scale)))
        gradients = [cv2.resize(g, size, interpolation=cv2.INTER_AREA) for g in gradients]
    scale = float(np.percentile(np.hypot(*gradients), cfg.edge_percentile))
    # Inverse distance transform: each iteration spreads by one map pixel (1 / map_scale image pixels).
    gamma = np.float32(cfg.decay_per_px ** (1.0 / cfg.map_scale))
    kernel = np.ones((3, 3), np.uint8)
    maps = []
    for gradient in gradients:
        spread = np.clip(gradient / scale, 0.0, 1.0).astype(np.float32) if scale > 0 else np.zeros_like(gradient)
        for _ in range(round(cfg.decay_radius_px * cfg.map_scale)):
            spread = np.maximum(spread, gamma * cv2.dilate(spread, kernel))
        maps.append(spread)
    return np.stack(maps)


@dataclass(frozen=True, eq=False)
class DepthEdges:
    """Foreground depth-edge samples of one lidar cloud as seen by one camera.

    Each edge pairs a near point with its farther scan neighbour (along the ring, or on the ring
    above/below). The silhouette lies in the angular gap between the two, so an edge is scored by
    the best edge-map value along that gap (:meth:`segments`), which is unbiased: the near point
    alone sits up to a ring spacing (about 1.3 degrees on a 32-beam lidar) inside the silhouette.

    Attributes:
        visible: (N,) bool, the point projects into the image within the depth range.
        near_index, far_index: (E,) indices of the pair's points.
        weight: (E,) ``sqrt(min(range jump, max_jump_m))``.
        kind: (E,) int8 :class:`EdgeKind`.
        lidar_origin_ego: (3,) the viewpoint the pairs were found from.
    """

    visible: np.ndarray
    near_index: np.ndarray
    far_index: np.ndarray
    weight: np.ndarray
    kind: np.ndarray
    lidar_origin_ego: np.ndarray

    def __len__(self) -> int:
        return len(self.weight)

    def segments(
        self, points_ego: np.ndarray, lidar_origin_ego: np.ndarray | None = None, *, samples: int = 6
    ) -> np.ndarray:
        """(E, samples, 3) points from each near point to its far neighbour's direction at the near range.

        The silhouette lies somewhere on that segment (the gap between two scan neighbours).
        ``points_ego`` (N, C>=3) is the cloud the edges were found in, or the same points moved
        rigidly, with ``lidar_origin_ego`` moved alike.
        """
        origin = self.lidar_origin_ego if lidar_origin_ego is None else np.asarray(lidar_origin_ego, float)
        xyz = np.asarray(points_ego)[:, :3].astype(np.float64)
        near, far = xyz[self.near_index] - origin, xyz[self.far_index] - origin
        near_range = np.linalg.norm(near, axis=1, keepdims=True)
        far_at_near = far * (near_range / np.linalg.norm(far, axis=1, keepdims=True))
        t = np.linspace(0.0, 1.0, samples)[None, :, None]
        return origin + near[:, None, :] * (1.0 - t) + far_at_near[:, None, :] * t


def _first_on_side(side: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column of the first True per row of (N, K) ``side`` and whether the row has one."""
    first = np.argmax(side, axis=1)
    return first, side[np.arange(len(side)), first]


def _min_depth_near(
    uv_px: np.ndarray, depth_m: np.ndarray, query_px: np.ndarray, half_window_px: np.ndarray, camera: PinholeCamera
) -> np.ndarray:
    """(Q,) smallest depth of the (N,) points ``uv_px`` (N, 2) within ``half_window_px`` (du, dv) of each
    query pixel (Q, 2): a min filter over a sparse depth image at a few pixels' resolution."""
    cell = max(1.0, float(np.min(half_window_px)) / 2.0)
    shape = (int(camera.height_px / cell) + 1, int(camera.width_px / cell) + 1)
    image = np.full(shape, np.finfo(np.float32).max, np.float32)
    col = np.clip(((uv_px[:, 0] + 0.5) / cell).astype(np.intp), 0, shape[1] - 1)
    row = np.clip(((uv_px[:, 1] + 0.5) / cell).astype(np.intp), 0, shape[0] - 1)
    np.minimum.at(image, (row, col), depth_m.astype(np.float32))
    half = np.ceil(np.asarray(half_window_px) / cell).astype(int)
    kernel = np.ones((2 * half[1] + 1, 2 * half[0] + 1), np.uint8)
    image = cv2.erode(image, kernel)
    qc = np.clip(((query_px[:, 0] + 0.5) / cell).astype(np.intp), 0, shape[1] - 1)
    qr = np.clip(((query_px[:, 1] + 0.5) / cell).astype(np.intp), 0, shape[0] - 1)
    return image[qr, qc].astype(np.float64)


def _on_wall(step: np.ndarray, has: np.ndarray, horizontal_m: np.ndarray, cfg: EdgeScoreConfig) -> np.ndarray:
    """(N,) bool: the next ``cfg.wall_rings`` rings in direction ``step`` (neighbour index per point,
    valid where ``has``) hit at about each point's own horizontal distance: it lies on an upright
    surface spanning several rings. On the ground (and kerbs) that distance changes from ring to
    ring by ``tan(e) / tan(e + de) - 1``, several per cent beyond ``min_edge_range_m``."""
    ok = np.ones(len(horizontal_m), dtype=bool)
    current = np.arange(len(horizontal_m))
    for _ in range(cfg.wall_rings):
        ok &= has[current]
        current = step[current]
        ok &= np.abs(horizontal_m[current] - horizontal_m) < cfg.vertical_surface_tol * horizontal_m
    return ok


def depth_discontinuities(
    points_ego: np.ndarray,
    camera: PinholeCamera,
    config: EdgeScoreConfig | None = None,
    *,
    lidar_origin_ego: np.ndarray | None = None,
) -> DepthEdges:
    """Foreground depth edges seen by ``camera``.

    Scan neighbours are found in the lidar's own view (azimuth and elevation about
    ``lidar_origin_ego`` and the ego z axis), where rings never overlap; in the camera image they do
    for near objects, because of the parallax between lidar and camera. A near point has an edge
    towards a neighbour whose range is larger by ``max(min_jump_m, min_relative_jump * range)``:

    - along the ring (left/right neighbours): vertical silhouette edges;
    - across rings (the nearest point on the ring above/below) when the rings on the *other* side
      are at about the same horizontal distance (the near point is on an upright surface): top and
      bottom edges. The ground, whose distance also jumps from ring to ring, fails that test, and
      faces between the lidar's and the camera's heights are left out (each sensor sees a
      different outline of them).

    Edges at points the camera cannot see (a much nearer lidar point within one scan spacing of
    them in the image) are dropped.

    Args:
        points_ego: (N, C>=3) points in the ego frame at the image's time.
        camera: the camera.
        config: score parameters.
        lidar_origin_ego: (3,) where the lidar was, in the same ego frame; default the camera centre
            (fine when lidar and camera are close, as in KITTI).

    Returns:
        The edges (E of them) as index pairs into ``points_ego`` with weights and kinds.
    """
    cfg = config or EdgeScoreConfig()
    pts = np.asarray(points_ego)
    if pts.ndim != 2 or pts.shape[1] < 3:
        raise GeometryError(f"points must have shape (N, C>=3), got {pts.shape}")
    xyz = pts[:, :3].astype(np.float64)
    origin = camera.ego_SE3_cam.translation if lidar_origin_ego is None else np.asarray(lidar_origin_ego, float)
    origin = origin.reshape(3).copy()
    proj = camera.project_ego(xyz, min_depth_m=cfg.min_depth_m)
    visible = proj.valid & (proj.depth_m <= cfg.max_depth_m)
    empty = np.zeros(0, np.intp)
    # Candidates: everything in front of the camera (scan neighbours may lie outside the image).
    front = np.nonzero(proj.depth_m > cfg.min_depth_m)[0]
    if not visible.any() or len(front) < 3:
        return DepthEdges(visible, empty, empty, np.zeros(0), np.zeros(0, np.int8), origin)
    rel = xyz[front] - origin
    range_m = np.linalg.norm(rel, axis=1)
    axis = camera.ego_SE3_cam.rotation[:, 2]
    azimuth = np.mod(np.arctan2(rel[:, 1], rel[:, 0]) - np.arctan2(axis[1], axis[0]) + np.pi, 2.0 * np.pi) - np.pi
    horizontal_m = np.hypot(rel[:, 0], rel[:, 1])
    elevation = np.arctan2(rel[:, 2], horizontal_m)
    rows = np.arange(len(front))
    min_jump = np.maximum(cfg.min_jump_m, cfg.min_relative_jump * range_m)
    radius = np.radians(cfg.neighbour_radius_deg)
    k = min(cfg.neighbours + 1, len(front))
    near_parts, far_parts, jump_parts, kind_parts = [], [], [], []

    def add(has: np.ndarray, nbr: np.ndarray, kind: EdgeKind) -> None:
        jump = np.where(has, range_m[nbr] - range_m, 0.0)
        keep = (jump > min_jump) & visible[front] & (range_m >= cfg.min_edge_range_m)
        near_parts.append(front[keep])
        far_parts.append(front[nbr[keep]])
        jump_parts.append(jump[keep])
        kind_parts.append(np.full(int(keep.sum()), int(kind), np.int8))

    # Along the ring: elevation stretched, so the nearest points are the ring's own.
    view = np.column_stack([azimuth, cfg.vertical_stretch * elevation])
    gap, nbr = cKDTree(view).query(view, k=k, distance_upper_bound=radius)
    nbr = np.minimum(nbr[:, 1:], len(front) - 1)
    d_az = np.where(np.isfinite(gap[:, 1:]), azimuth[nbr] - azimuth[:, None], 0.0)
    for side in (d_az < 0, d_az > 0):
        first, has = _first_on_side(side)
        add(has, nbr[rows, first], EdgeKind.ALONG_RING)
    along, has_along = nbr[rows, first], has  # the right-hand neighbour, for the pixel spacing below
    # Across rings: azimuth stretched, so the nearest points are on the rings above and below.
    view = np.column_stack([cfg.vertical_stretch * azimuth, elevation])
    gap, nbr = cKDTree(view).query(view, k=k, distance_upper_bound=radius)
    nbr = np.minimum(nbr[:, 1:], len(front) - 1)
    d_el = elevation[nbr] - elevation[:, None]
    across = np.isfinite(gap[:, 1:]) & (np.abs(d_el) > np.abs(azimuth[nbr] - azimuth[:, None]))
    up_first, has_up = _first_on_side(across & (d_el > 0))
    down_first, has_down = _first_on_side(across & (d_el < 0))
    up, down = nbr[rows, up_first], nbr[rows, down_first]
    # A roof or an underside between the lidar's and the camera's heights is seen from above by one
    # and from below by the other: their silhouettes differ. The face lies somewhere in the gap.
    band = np.sort([origin[2], camera.ego_SE3_cam.translation[2]]) + np.array([-1.0, 1.0]) * cfg.sensor_band_margin_m
    for has, step in (
        (has_up & _on_wall(down, has_down, horizontal_m, cfg), up),
        (has_down & _on_wall(up, has_up, horizontal_m, cfg), down),
    ):
        face_low = np.minimum(rel[:, 2], range_m * np.sin(elevation[step]))
        face_high = np.maximum(rel[:, 2], range_m * np.sin(elevation[step]))
        between = (face_high + origin[2] >= band[0]) & (face_low + origin[2] <= band[1])
        add(has & ~between, step, EdgeKind.ACROSS_RINGS)

    near, far, jump = np.concatenate(near_parts), np.concatenate(far_parts), np.concatenate(jump_parts)
    kind = np.concatenate(kind_parts)
    if len(near) == 0:
        return DepthEdges(visible, empty, empty, np.zeros(0), np.zeros(0, np.int8), origin)
    # Hidden from the camera: a much nearer point within one scan spacing in the image (the lidar
    # looks over a near roof the camera looks up at). Spacings in pixels come from the scan pairs.
    seen = visible[front]
    spacing = []
    for pair, has in ((along, has_along), (up, has_up)):
        ok = has & seen & seen[pair]
        delta = np.abs(proj.uv_px[front[pair[ok]]] - proj.uv_px[front[ok]])
        spacing.append(np.median(delta, axis=0) if ok.any() else np.ones(2))
    half_window = np.maximum(spacing[0], spacing[1])  # (du, dv) in pixels
    nearest = _min_depth_near(proj.uv_px[visible], proj.depth_m[visible], proj.uv_px[near], half_window, camera)
    own = proj.depth_m[near]
    shown = ~(nearest < own * (1.0 - cfg.min_relative_jump) - cfg.min_jump_m)
    weight = np.sqrt(np.minimum(jump[shown], cfg.max_jump_m))
    return DepthEdges(visible, near[shown], far[shown], weight, kind[shown], origin)


def _sample(edge_map: np.ndarray, uv_px: np.ndarray, map_scale: float) -> np.ndarray:
    """(N,) bilinear samples of ``edge_map`` at full-resolution pixels ``uv_px`` (N, 2)."""
    h, w = edge_map.shape
    xy = (uv_px + 0.5) * map_scale - 0.5
    x = np.clip(xy[:, 0], 0.0, w - 1.0)
    y = np.clip(xy[:, 1], 0.0, h - 1.0)
    x0 = np.clip(np.floor(x).astype(np.intp), 0, max(w - 2, 0))
    y0 = np.clip(np.floor(y).astype(np.intp), 0, max(h - 2, 0))
    fx, fy = x - x0, y - y0
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    top = edge_map[y0, x0] * (1 - fx) + edge_map[y0, x1] * fx
    bottom = edge_map[y1, x0] * (1 - fx) + edge_map[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


@dataclass(frozen=True, eq=False)
class _Prepared:
    """One image ready for scoring.

    The score of an image is linear in the per-edge values ``v_e`` (the best edge-map value along
    each edge's gap): ``score = sum_e coeff_e * v_e``. The coefficients are fixed at the given
    extrinsics, so perturbations compare the edge term alone:
    ``coeff_e = c_k / (sum_k c_k) * w_e / (W_k * background_k)`` for an edge of kind ``k``, with
    ``W_k`` the kind's total edge weight, ``c_k = min(W_k, kind_weight_cap)`` and ``background_k``
    the kind's map averaged under all visible points. Each kind thus counts alike (a roof line's
    many points cannot drown the few vertical edges that carry the horizontal alignment) unless
    it has few edges.

    Attributes:
        camera: the camera as given.
        edge_map: (2, h, w) float32, see :func:`image_edge_map`.
        edges: the depth edges.
        edge_points: (E, S, 3) gap segments of the edges (ego frame).
        coeff: (E,) score coefficients.
        weight: how much the image counts among several (``sum_k c_k``).
    """

    camera: PinholeCamera
    edge_map: np.ndarray
    edges: DepthEdges
    edge_points: np.ndarray
    coeff: np.ndarray
    weight: float


def _prepare(
    points_ego: np.ndarray,
    image_rgb: np.ndarray,
    camera: PinholeCamera,
    cfg: EdgeScoreConfig,
    lidar_origin_ego: np.ndarray | None,
) -> _Prepared:
    image = np.asarray(image_rgb)
    if image.shape[:2] != (camera.height_px, camera.width_px):
        raise GeometryError(
            f"image of camera {camera.name} is {image.shape[1]}x{image.shape[0]} px, "
            f"calibrated for {camera.width_px}x{camera.height_px} px"
        )
    edges = depth_discontinuities(points_ego, camera, cfg, lidar_origin_ego=lidar_origin_ego)
    xyz = np.asarray(points_ego)[:, :3].astype(np.float64)
    edge_map = image_edge_map(image, cfg)
    uv = camera.project_ego(xyz[edges.visible]).uv_px
    coeff = np.zeros(len(edges))
    kind_weight = {}
    for kind in EdgeKind:
        mine = edges.kind == kind
        total = float(edges.weight[mine].sum())
        background = float(np.mean(_sample(edge_map[kind], uv, cfg.map_scale))) if len(uv) else 0.0
        if total > 0 and background > 0:
            kind_weight[kind] = min(total, cfg.kind_weight_cap)
            coeff[mine] = kind_weight[kind] * edges.weight[mine] / (total * background)
    weight = float(sum(kind_weight.values()))
    if weight > 0:
        coeff /= weight
    segments = edges.segments(xyz, samples=cfg.gap_samples)
    return _Prepared(camera, edge_map, edges, segments, coeff, weight)


class PreparedImages:
    """Depth edges and edge maps of images, computed once for the checks that share them.

    :func:`check_extrinsics` and :func:`check_time_offset` of one clip score the same images with the same
    lidar points (at offset 0): given one instance, each image is prepared once. Only for samples built from
    the same image array and points (as :func:`autolabel.qa.image_samples` builds them); the image array's
    identity, its camera and the score parameters are the key.
    """

    def __init__(self) -> None:
        self._prepared: dict[tuple[int, str, EdgeScoreConfig], tuple[np.ndarray, _Prepared]] = {}

    def __len__(self) -> int:
        """Images prepared so far."""
        return len(self._prepared)

    def get(self, sample: ImageSample, cfg: EdgeScoreConfig) -> _Prepared:
        """The sample image's depth edges and edge map, prepared on first request."""
        key = (id(sample.image_rgb), sample.camera.name, cfg)
        if key not in self._prepared:  # the image is kept with its result: its id cannot be reused meanwhile
            prepared = _prepare(sample.points_ego, sample.image_rgb, sample.camera, cfg, sample.lidar_origin_ego)
            self._prepared[key] = (sample.image_rgb, prepared)
        return self._prepared[key][1]


def _edge_values(
    prep: _Prepared, cam_SE3_ego: SE3, cfg: EdgeScoreConfig, segments: np.ndarray | None = None
) -> np.ndarray:
    """(E,) best oriented edge-map value along each edge's gap under ``cam_SE3_ego`` (0 if out of view).

    ``segments`` (E, S, 3), if given, replaces the prepared gap segments (the points moved)."""
    points = prep.edge_points if segments is None else segments
    num_edges, num_samples = points.shape[:2]
    if num_edges == 0:
        return np.zeros(0)
    proj = prep.camera.project_cam(cam_SE3_ego.transform_points(points.reshape(-1, 3)), min_depth_m=cfg.min_depth_m)
    valid = proj.valid.reshape(num_edges, num_samples)
    values = np.zeros((num_edges, num_samples))
    for kind in EdgeKind:
        mine = np.repeat(prep.edges.kind == kind, num_samples)
        values.reshape(-1)[mine] = _sample(prep.edge_map[kind], proj.uv_px[mine], cfg.map_scale)
    return np.where(valid, values, 0.0).max(axis=1)


def _moved_segments(prep: _Prepared, points_ego: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(E, S, 3) gap segments from ``points_ego`` (the ``reference`` points moved, same order); the lidar
    origin follows the least-squares rigid motion from ``reference`` to ``points_ego``."""
    xyz = np.asarray(points_ego)[:, :3].astype(np.float64)
    used = np.unique(np.concatenate([prep.edges.near_index, prep.edges.far_index]))
    src, dst = reference[used], xyz[used]
    src_c, dst_c = src.mean(axis=0), dst.mean(axis=0)
    u, _, vt = np.linalg.svd((src - src_c).T @ (dst - dst_c))
    rotation = (u @ np.diag([1.0, 1.0, np.linalg.det(u @ vt)]) @ vt).T
    origin = rotation @ (prep.edges.lidar_origin_ego - src_c) + dst_c
    return prep.edges.segments(xyz, origin, samples=prep.edge_points.shape[1])


def alignment_score(
    points_ego: np.ndarray,
    image_rgb: np.ndarray,
    camera: PinholeCamera,
    config: EdgeScoreConfig | None = None,
    *,
    lidar_origin_ego: np.ndarray | None = None,
) -> float:
    """Edge-alignment score of one image (see the module docstring); NaN without depth edges in view.

    Args:
        points_ego: (N, C>=3) lidar points in the ego frame at the image's exposure time.
        image_rgb: (H, W, 3) uint8 RGB image of ``camera``.
        camera: the calibrated camera (its ``ego_SE3_cam`` is what is scored).
        config: score parameters.
        lidar_origin_ego: (3,) the lidar's position in the same ego frame (see
            :func:`depth_discontinuities`).

    Returns:
        Mean oriented edge-map value at the depth edges over its mean under all lidar points
        (1 = chance, higher = better aligned).
    """
    cfg = config or EdgeScoreConfig()
    prep = _prepare(points_ego, image_rgb, camera, cfg, lidar_origin_ego)
    if prep.weight == 0:
        return float("nan")
    return float(prep.coeff @ _edge_values(prep, camera.cam_SE3_ego, cfg))


# ------------------------------------------------------------------------------------------ checks
def _perturbations(cfg: ExtrinsicsCheckConfig) -> list[tuple[str, bool, SE3]]:
    """``(description, is_rotation, delta)`` for each step about / along each camera axis, both signs;
    a perturbed camera is ``ego_SE3_cam @ delta``."""
    out = []
    for axis, name in enumerate("xyz"):
        for step in cfg.rotation_steps_deg:
            for sign in (1.0, -1.0):
                rotvec = np.zeros(3)
                rotvec[axis] = np.radians(sign * step)
                delta = SE3(Rotation.from_rotvec(rotvec).as_matrix(), np.zeros(3))
                out.append((f"rot_{name} {sign * step:+.2f} deg", True, delta))
        for step in cfg.translation_steps_m:
            for sign in (1.0, -1.0):
                t = np.zeros(3)
                t[axis] = sign * step
                out.append((f"trans_{name} {sign * step:+.3f} m", False, SE3(np.eye(3), t)))
    return out


def _edge_clusters(prepared: Sequence[_Prepared], cell_px: float) -> np.ndarray:
    """(sum E,) cluster id of every edge: its frame and the image cell of its near point. Edges of
    one object outline move together, so the bootstrap resamples cells, not edges."""
    keys = []
    for f, prep in enumerate(prepared):
        uv = prep.camera.project_ego(prep.edge_points[:, 0, :]).uv_px
        cells = np.floor(np.clip(uv, 0.0, None) / cell_px).astype(np.int64)
        keys.append(np.column_stack([np.full(len(cells), f), cells]))
    return np.unique(np.concatenate(keys), axis=0, return_inverse=True)[1].reshape(-1)


def check_extrinsics(
    samples: Sequence[ImageSample | tuple],
    config: ExtrinsicsCheckConfig | None = None,
    prepared_images: PreparedImages | None = None,
) -> CameraQA:
    """Is one camera's extrinsics a local maximum of the edge-alignment score?

    The clip score is the frames' scores averaged by their weight (capped edge weight). Every
    perturbation of :func:`_perturbations` is scored alike; the camera is flagged when the best
    one beats the given extrinsics by more than its margin (rotations and translations have their
    own) *and* does so robustly: in at least ``confidence`` of bootstrap resamplings of the edges
    (resampled by image cell, since one outline's edges move together) it is still better.

    Args:
        samples: frames of one camera (:class:`ImageSample` or ``(points_ego, image_rgb, camera)``);
            the cameras must share name and extrinsics.
        config: neighbourhood and decision rule.
        prepared_images: shares the images' preparation with the time check (see :class:`PreparedImages`).

    Returns:
        The camera's QA; with no usable frame the scores are NaN and it is not flagged.
    """
    cfg = config or ExtrinsicsCheckConfig()
    if not samples:
        raise GeometryError("check_extrinsics needs at least one (points, image, camera) sample")
    items = [ImageSample(*sample) for sample in samples]
    camera = items[0].camera
    for item in items:
        if item.camera.name != camera.name or not item.camera.ego_SE3_cam.allclose(camera.ego_SE3_cam):
            raise GeometryError(f"check_extrinsics: samples mix cameras {camera.name!r} and {item.camera.name!r}")
    images = PreparedImages() if prepared_images is None else prepared_images
    prepared = [images.get(item, cfg.score) for item in items]
    prepared = [p for p in prepared if p.weight > 0]
    if not prepared:
        return CameraQA(camera.name, float("nan"), float("nan"), "", 0.0, False, 0, float("nan"))
    # Contribution of every edge of every frame to the clip score, at the given extrinsics and at
    # each perturbation (a perturbed camera sees the ego frame through delta^-1 @ cam_SE3_ego).
    frame_weight = np.array([p.weight for p in prepared])
    coeff = np.concatenate([p.coeff * w for p, w in zip(prepared, frame_weight / frame_weight.sum(), strict=True)])
    deltas = _perturbations(cfg)
    poses = [camera.cam_SE3_ego] + [delta.inverse() @ camera.cam_SE3_ego for _, _, delta in deltas]
    contrib = np.stack([coeff * np.concatenate([_edge_values(p, pose, cfg.score) for p in prepared]) for pose in poses])
    totals = contrib.sum(axis=1)
    score, neighbours = float(totals[0]), totals[1:]
    margins = np.array([cfg.rotation_margin if is_rot else cfg.translation_margin for _, is_rot, _ in deltas])
    gain = neighbours / score - 1.0
    best = int(np.argmax(gain - margins))
    # Bootstrap over image cells: how often does the best perturbation still beat the extrinsics?
    clusters = _edge_clusters(prepared, cfg.cluster_cell_px)
    per_cluster = np.stack([np.bincount(clusters, weights=contrib[i]) for i in (0, best + 1)])
    rng = np.random.default_rng(0)
    counts = rng.multinomial(
        per_cluster.shape[1], np.full(per_cluster.shape[1], 1.0 / per_cluster.shape[1]), size=cfg.bootstrap
    )
    resampled = counts @ per_cluster.T  # (B, 2): base, best
    still_better = float(np.mean(resampled[:, 1] > resampled[:, 0]))
    return CameraQA(
        camera=camera.name,
        score=score,
        best_neighbour_score=float(neighbours[best]),
        best_delta=deltas[best][0],
        fraction_better=float(np.mean(neighbours > score)),
        flagged=bool(gain[best] > margins[best] and still_better >= cfg.confidence),
        frames_used=len(prepared),
        confidence=still_better,
    )


def check_time_offset(
    samples: Sequence[TimeSample | tuple],
    config: TimeCheckConfig | None = None,
    prepared_images: PreparedImages | None = None,
) -> TimeOffsetQA:
    """Which small time shift of the lidar best aligns it with the images?

    Args:
        samples: images (:class:`TimeSample` or ``(points_at_offset, image_rgb, camera)``);
            ``points_at_offset(dt_s)`` returns the (N, C>=3) ego-frame points motion-compensated to
            the image's ego pose at exposure time plus ``dt_s`` (the same points in the same order
            for every ``dt_s``). A negative best offset means the images were taken earlier than
            their timestamps say.
        config: the grid and decision rule.
        prepared_images: shares the images' preparation with the extrinsics check (see :class:`PreparedImages`).
    """
    cfg = config or TimeCheckConfig()
    offsets = np.asarray(cfg.offsets_s, dtype=np.float64)
    if not np.any(offsets == 0.0) or np.any(np.diff(offsets) <= 0):
        raise GeometryError(f"time offsets must increase strictly and contain 0, got {cfg.offsets_s}")
    items = [TimeSample(*sample) for sample in samples]
    images = PreparedImages() if prepared_images is None else prepared_images
    curves, weights = [], []
    for points_at, image, camera, origin in items:
        reference = np.asarray(points_at(0.0))[:, :3].astype(np.float64)
        prep = images.get(ImageSample(reference, image, camera, origin), cfg.score)
        if prep.weight == 0:
            continue
        curve = np.array(
            [
                prep.coeff
                @ _edge_values(
                    prep, camera.cam_SE3_ego, cfg.score, _moved_segments(prep, points_at(float(dt)), reference)
                )
                for dt in offsets
            ]
        )
        zero = curve[offsets == 0.0][0]
        if zero > 0:
            curves.append(curve / zero)
            weights.append(prep.weight)
    names = tuple(dict.fromkeys(item.camera.name for item in items))
    if not curves:
        return TimeOffsetQA(names, tuple(offsets.tolist()), tuple([float("nan")] * len(offsets)), 0.0, False, 0)
    mean = np.average(curves, axis=0, weights=weights)
    best = int(np.argmax(mean))
    best_offset = float(offsets[best])
    if 0 < best < len(offsets) - 1:  # parabola through the best grid point and its neighbours
        y0, y1, y2 = mean[best - 1 : best + 2]
        denom = y0 - 2.0 * y1 + y2
        if denom < 0:
            shift = 0.5 * (y0 - y2) / denom
            step = offsets[best + 1] - offsets[best] if shift > 0 else offsets[best] - offsets[best - 1]
            best_offset += float(np.clip(shift, -0.5, 0.5) * step)
    flagged = abs(best_offset) > cfg.max_offset_s and mean[best] > 1.0 + cfg.better_margin
    return TimeOffsetQA(names, tuple(offsets.tolist()), tuple(mean.tolist()), best_offset, bool(flagged), len(curves))
