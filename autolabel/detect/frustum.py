"""2D-assisted 3D: a box drawn (or a point clicked) on a camera image becomes a 3D box fitted to the lidar.

For the viewer: the reviewer marks an object the detector missed; the lidar points behind the mark are gathered
across the keyframe's sweeps and fitted::

    frustum     points (captured within ``max_age_s`` of the keyframe) whose projection, lens distortion
                included, falls inside the 2D box (grown by ``margin_px``)
    ground      heights above the keyframe's ground model (:mod:`autolabel.detect.ground`); points within
                ``min_height_m .. max_height_m`` are the object candidates
    depth       1D clustering of the candidates' range from the camera: gaps wider than
                ``max(range_gap_m, range_gap_per_m * range)`` separate things seen one behind the other
    BEV         each depth cluster split into BEV connected components (:mod:`autolabel.detect.cluster`, links
                wide enough that the sweeps of a moving object's smear stay together)
    pick        the segment that fills the 2D box best: its projected extent over the box's, both ways, times the
                square root of its share of the frustum's points, times the share of its grown component (below)
                that projects into the box (an occluder in front reaches out of the box; sides of the box at the
                image border are open: an object cut by the image edge continues beyond it); the nearer of
                near-equals
    grow        the segment's BEV component among all candidate points within ``grow_radius_m``
    motion      the object at the image time is the BEV component of the current sweep's points holding the
                segment's; the velocity that moves most older sweeps onto it (a vote, :func:`vote_velocity`)
                decides which older points are the object's smear (and not a neighbour's)
    fit         L-shape fit with smear-aware motion (:mod:`autolabel.detect.boxfit`), orientation searched
                without roof returns (:func:`fit_without_roof`), then the class's size prior
                (:mod:`autolabel.detect.classify`): sides seen shorter than the class are extended away from the
                sensor, the height is the class's clipped to what the beams allow

        image                     top view
      +--------------+           camera  *
      |   +------+   |                  / \\      the frustum of the 2D box; the nearest solid depth
      |   | car  |   |                 /   \\     cluster that fills it is the object
      |   +------+   |                / [#] \\
      +--------------+               /       \\

A click ``(u, v)`` takes windows of growing half-size ``click_windows_px`` around it and, in the first that holds
a segment, picks the segment under the click (nearest first); the image extent of that object's points at the
image time (its BEV component among the current sweep's points) then serves as the 2D box.

Confidence ``evidence * fit * separation * sqrt(plausibility)``: evidence ``1 - exp(-points per sweep /
points_per_sweep_scale)``; fit from the L-shape quality (vehicles only); separation ``0.5 + 0.5 * dominance``,
the picked segment's share of all segments' pick scores; plausibility of the fitted size for the class.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import Enum

import cv2
import numba
import numpy as np

from autolabel.categories import Category
from autolabel.detect.boxfit import ClusterFits, FitConfig, fit_clusters
from autolabel.detect.classify import (
    CLASSES,
    VEHICLES,
    Classification,
    ClassifyConfig,
    classify,
    complete_boxes,
    motion_likelihoods,
    size_likelihoods,
)
from autolabel.detect.cluster import ClusterConfig, grid_clusters, group_by_label
from autolabel.detect.crosscheck import CameraPose
from autolabel.detect.ground import GroundConfig, GroundModel, estimate_ground
from calibration import EGO_FRAME, Box3D, InputError


class FitStatus(str, Enum):
    """Whether a 2D-assisted fit found an object, or why not."""

    OK = "ok"
    NO_POINTS = "no_points"  # no lidar point projects into the 2D box (or near the click)
    NO_OBJECT = "no_object"  # points, but none standing above the ground in a cluster of min_points


@dataclass(frozen=True)
class FrustumConfig:
    """Parameters of 2D-assisted fitting.

    Attributes:
        max_age_s: points captured at most this long before the keyframe are used.
        margin_px: the 2D box is grown by this on each side.
        min_depth_m, max_depth_m: points nearer or farther from the camera are left out.
        min_height_m, max_height_m: band above the ground the object's points lie in.
        range_gap_m, range_gap_per_m: a gap of ``max(range_gap_m, range_gap_per_m * range)`` in range from the
            camera separates two depth clusters.
        min_points: fewer points are no segment.
        near_equal: segments scoring at least this fraction of the best one compete by range (nearest wins).
        grow_radius_m: the picked segment grows over the cloud's candidate points within this of its BEV box.
        roof_band_m: points this close below an object's highest point are roof returns; the orientation is
            searched without them (a beam's arc over a flat roof looks like a diagonal side).
        click_windows_px: half-sizes of the windows tried around a click, in turn.
        sweep_period_s: time between sweeps (points per sweep for the confidence).
        points_per_sweep_scale: points per sweep at which the evidence term reaches 1 - 1/e.
        current_age_s: points captured this close to the keyframe show the object where the image does.
        footprint_margin_m: older points join when, moved with the object, they land within this of the current
            points' BEV bounds.
        max_speed_mps, velocity_step_mps, velocity_cell_m, max_vote_points, vote_first_age_s, static_margin:
            velocity vote (see :func:`vote_velocity`).
        cluster: BEV connected components; links wider than the detector's (0.6-0.8 m), so that the sweeps of a
            moving object's smear (0.4 m apart at 8 m/s) stay one segment.
        footprint_cluster: BEV connected components of the current points (no smear: the detector's links).
        ground, fit, classify: the detector stages' parameters.
    """

    max_age_s: float = 0.5
    margin_px: float = 4.0
    min_depth_m: float = 1.0
    max_depth_m: float = 90.0
    min_height_m: float = 0.2
    max_height_m: float = 4.5
    range_gap_m: float = 0.8
    range_gap_per_m: float = 0.03
    min_points: int = 5
    near_equal: float = 0.6
    grow_radius_m: float = 3.0
    click_windows_px: tuple[float, ...] = (30.0, 60.0, 120.0)
    sweep_period_s: float = 0.05
    points_per_sweep_scale: float = 8.0
    roof_band_m: float = 0.15
    current_age_s: float = 0.05
    footprint_margin_m: float = 0.3
    max_speed_mps: float = 30.0
    velocity_step_mps: float = 0.5
    velocity_cell_m: float = 0.2
    max_vote_points: int = 400
    vote_first_age_s: float = 0.2
    static_margin: float = 0.1
    cluster: ClusterConfig = field(
        default_factory=lambda: ClusterConfig(link_min_m=0.6, link_per_m=0.02, link_max_m=0.8, min_points=1)
    )
    footprint_cluster: ClusterConfig = field(default_factory=lambda: ClusterConfig(min_points=1))
    ground: GroundConfig = field(default_factory=GroundConfig)
    fit: FitConfig = field(default_factory=FitConfig)
    classify: ClassifyConfig = field(default_factory=ClassifyConfig)


@dataclass(frozen=True, eq=False)
class FrustumFit:
    """Result of a 2D-assisted fit.

    Attributes:
        status: ``OK``, or why there is no box.
        box: the fitted box in the keyframe's ego frame (``None`` unless ``OK``); velocity from the smear (NaN
            when the points do not tell).
        confidence: in [0, 1]; 0 without a box.
        category: the hinted class, else the best-fitting one (``None``: no class fits, the box is the tight fit).
        points_used: (M,) int64 indices into the input points of the object's points.
        frustum_points: points that projected into the 2D box (or the click's window).
    """

    status: FitStatus
    box: Box3D | None
    confidence: float
    category: Category | None
    points_used: np.ndarray
    frustum_points: int

    @classmethod
    def failed(cls, status: FitStatus, frustum_points: int = 0) -> FrustumFit:
        return cls(status, None, 0.0, None, np.zeros(0, dtype=np.int64), frustum_points)


@dataclass(frozen=True, eq=False)
class _Segments:
    """Candidate segments in a window: point indices (into the cloud), camera ranges, projected pixel bounds."""

    members: list[np.ndarray]
    range_m: np.ndarray  # (S,) median range from the camera
    bounds_px: np.ndarray  # (S, 4) u_min, v_min, u_max, v_max
    frustum_points: int


def fit_from_2d_box(
    pose: CameraPose,
    box_or_click_px: Sequence[float],
    points_ego: np.ndarray,
    category: Category | None = None,
    config: FrustumConfig = FrustumConfig(),
    ground: GroundModel | None = None,
) -> FrustumFit:
    """Fit a 3D box to the object inside a 2D box ``(x1, y1, x2, y2)`` (or at a click ``(u, v)``).

    Args:
        pose: the camera and its exposure pose relative to the keyframe's ego frame.
        box_or_click_px: 4 values: a 2D box in pixels; 2 values: a click (see :func:`fit_from_click`).
        points_ego: (N, 5) ``x, y, z, intensity, dt_s`` keyframe cloud (nearby sweeps) in the ego frame.
        category: class hint (``None``, or a class without a size prior: the best-fitting class).
        config: parameters.
        ground: the keyframe's ground model (estimated from ``points_ego`` when not given; pass it when fitting
            several boxes in one keyframe).
    """
    values = np.asarray(box_or_click_px, dtype=np.float64).reshape(-1)
    if values.size == 2:
        return fit_from_click(pose, values, points_ego, category, config, ground)
    if values.size != 4 or not np.all(np.isfinite(values)) or values[2] <= values[0] or values[3] <= values[1]:
        raise InputError(f"2D box must be finite (x1, y1, x2, y2) with x2 > x1 and y2 > y1, got {values.tolist()}")
    cloud = _prepare(points_ego, config, ground)
    return _fit_in_box(pose, values + np.array([-1.0, -1.0, 1.0, 1.0]) * config.margin_px, cloud, category, config)


def fit_from_click(
    pose: CameraPose,
    click_px: Sequence[float],
    points_ego: np.ndarray,
    category: Category | None = None,
    config: FrustumConfig = FrustumConfig(),
    ground: GroundModel | None = None,
) -> FrustumFit:
    """Fit a 3D box to the object under a click ``(u, v)`` (arguments as :func:`fit_from_2d_box`).

    Windows of growing half-size ``click_windows_px`` around the click are tried in turn; in the first holding
    segments, the one whose projected bounds contain the click (else the one nearest to it in pixels) wins, the
    nearest in range among those containing it. The image extent of that object at the image time then serves
    as its 2D box, among whose segments only those sharing points with the clicked one compete.
    """
    uv = np.asarray(click_px, dtype=np.float64).reshape(-1)
    if uv.size != 2 or not np.all(np.isfinite(uv)):
        raise InputError(f"click must be finite (u, v), got {uv.tolist()}")
    cloud = _prepare(points_ego, config, ground)
    seen = 0
    for half in config.click_windows_px:
        window = np.array([uv[0] - half, uv[1] - half, uv[0] + half, uv[1] + half])
        segments = _segments(pose, window, cloud, config)
        seen = max(seen, segments.frustum_points)
        if not segments.members:
            continue
        b = segments.bounds_px
        du = np.maximum(np.maximum(b[:, 0] - uv[0], uv[0] - b[:, 2]), 0.0)
        dv = np.maximum(np.maximum(b[:, 1] - uv[1], uv[1] - b[:, 3]), 0.0)
        pick = _nearest_of_best(1.0 / (1.0 + np.hypot(du, dv) / 10.0), segments.range_m, 0.999)
        seed = segments.members[pick]
        grown, _ = _grow([seed], cloud, config)[0]
        # The clicked object's extent in the image from its points at the image time (its older smear may reach
        # into other objects): from here on as if a box had been drawn.
        current = grown[cloud.points[grown, 4] >= -config.current_age_s]
        footprint = _current_footprint(current, seed, cloud.points, config)
        extent_points = footprint if len(footprint) >= config.min_points else grown
        grown_uv, _, valid = _project(pose, cloud.points[extent_points, :3], config)
        if not valid.any():
            continue
        extent = np.concatenate([grown_uv[valid].min(axis=0), grown_uv[valid].max(axis=0)])
        box_px = extent + np.array([-1.0, -1.0, 1.0, 1.0]) * config.margin_px
        return _fit_in_box(pose, box_px, cloud, category, config, clicked=seed)
    return FrustumFit.failed(FitStatus.NO_POINTS if seen == 0 else FitStatus.NO_OBJECT, seen)


# ------------------------------------------------------------------------------------------------ stages
def _fit_in_box(
    pose: CameraPose,
    box_px: np.ndarray,
    cloud: _Cloud,
    category: Category | None,
    config: FrustumConfig,
    clicked: np.ndarray | None = None,
) -> FrustumFit:
    """Pick the object in the (grown) 2D box, gather its points and fit it (see the module docstring); with
    ``clicked`` point indices only segments sharing points with them compete (while any does)."""
    segments = _segments(pose, box_px, cloud, config)
    if segments.frustum_points == 0:
        return FrustumFit.failed(FitStatus.NO_POINTS)
    if not segments.members:
        return FrustumFit.failed(FitStatus.NO_OBJECT, segments.frustum_points)
    width, height = box_px[2] - box_px[0], box_px[3] - box_px[1]
    b = segments.bounds_px
    cover_u = np.clip((np.minimum(b[:, 2], box_px[2]) - np.maximum(b[:, 0], box_px[0])) / width, 0.0, 1.0)
    cover_v = np.clip((np.minimum(b[:, 3], box_px[3]) - np.maximum(b[:, 1], box_px[1])) / height, 0.0, 1.0)
    counts = np.array([len(m) for m in segments.members], dtype=np.float64)
    grown = _grow(segments.members, cloud, config)
    open_box = _open_edges(box_px, pose, config.margin_px + 1.0)
    contained = np.array([_contained(pose, cloud.points[g, :3], open_box, config) for g, _ in grown])
    score = cover_u * cover_v * np.sqrt(counts / counts.sum()) * contained
    if clicked is not None:
        shares = np.array([np.isin(m, clicked).any() for m in segments.members])
        score = np.where(shares, score, 0.0) if shares.any() and score[shares].max() > 0 else score
    pick = _nearest_of_best(score, segments.range_m, config.near_equal)
    members, heights = _follow_motion(segments.members[pick], *grown[pick], pose, box_px, cloud, config)
    dominance = float(score[pick] / max(score.sum(), 1e-12))
    return _fit(members, heights, dominance, cloud, category, config, segments.frustum_points)


def _follow_motion(
    seed: np.ndarray,
    grown: np.ndarray,
    heights: np.ndarray,
    pose: CameraPose,
    box_px: np.ndarray,
    cloud: _Cloud,
    config: FrustumConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """The points of the grown component that belong to the object in the 2D box. Returns indices and heights.

    The object at the image time is its current footprint (:func:`_current_footprint`). Older points join when,
    moved by the object's velocity to the keyframe time, they land in the footprint's BEV bounds (grown by
    ``footprint_margin_m``) and project into the box (sides at the image border open). The velocity is the one
    that lands most older points on the footprint (:func:`vote_velocity`): smear regression alone is fooled
    where another object's older smear touches this one. Without a footprint the seed's smear velocity is used
    and the box alone decides."""
    pts = cloud.points
    window_px = _open_edges(box_px, pose, config.margin_px + 1.0)
    current = pts[grown, 4] >= -config.current_age_s
    anchor = _current_footprint(grown[current], seed, pts, config)
    velocity = np.zeros(2)
    if len(anchor) >= config.min_points:
        anchor_xy = pts[anchor, :2].astype(np.float64)
        old = grown[~current]
        if len(old):
            velocity = vote_velocity(anchor_xy, pts[old, :2].astype(np.float64), pts[old, 4].astype(np.float64), config)
        lo = anchor_xy.min(axis=0) - config.footprint_margin_m
        hi = anchor_xy.max(axis=0) + config.footprint_margin_m
    else:
        fits = _fit_one(pts[seed], cloud.ground.heights(pts[seed]), config.fit)
        velocity = np.nan_to_num(fits.velocity[0])
        if np.hypot(*velocity) < config.fit.min_speed_mps:
            velocity = np.zeros(2)
        lo, hi = np.full(2, -np.inf), np.full(2, np.inf)
    moved = pts[grown, :3].astype(np.float64)
    moved[:, :2] -= velocity[None, :] * pts[grown, 4:5]
    uv, front, _ = _project(pose, moved, config)
    keep = front & _in_window(uv, window_px) & np.all((moved[:, :2] >= lo) & (moved[:, :2] <= hi), axis=1)
    if keep.sum() < config.min_points:
        return seed, cloud.ground.heights(pts[seed])
    return grown[keep], heights[keep]


def _current_footprint(current: np.ndarray, seed: np.ndarray, pts: np.ndarray, config: FrustumConfig) -> np.ndarray:
    """The object's points at the image time: the BEV components of the ``current`` points (captured within
    ``current_age_s``; no smear joins objects there) holding the seed's current points, out-of-image parts
    included. Empty with fewer than ``min_points`` of the seed's."""
    in_seed = np.isin(current, seed, assume_unique=True)
    if in_seed.sum() < config.min_points:
        return current[:0]
    labels = grid_clusters(pts[current], config.footprint_cluster)
    chosen = np.unique(labels[in_seed])
    chosen = chosen[chosen >= 0]
    return current[np.isin(labels, chosen) | in_seed]


def vote_velocity(
    anchor_xy: np.ndarray, old_xy: np.ndarray, old_dt_s: np.ndarray, config: FrustumConfig = FrustumConfig()
) -> np.ndarray:
    """(2,) velocity in m/s that moves (M, 2) older points (captured ``old_dt_s`` (M,) < 0 before the keyframe)
    onto most of the BEV cells of the (K, 2) current ``anchor_xy`` points, counted per sweep; 0 unless a motion
    beats standing still by ``static_margin`` (a static object's older points land on its current ones as they
    are).

    Coarse to fine: first the points of the last ``vote_first_age_s`` on a ``velocity_step_mps`` grid up to
    ``max_speed_mps`` (in traffic the older smear of a car ahead lies where its follower is now; the recent
    sweeps do not reach that far), then all points on a 4x finer grid around the best, then 5x finer again."""
    cell = config.velocity_cell_m
    lo = anchor_xy.min(axis=0) - 2 * cell
    shape = np.ceil((anchor_xy.max(axis=0) + 2 * cell - lo) / cell).astype(np.int64) + 1
    occupied = np.zeros(tuple(shape), dtype=np.bool_)
    ij = np.floor((anchor_xy - lo) / cell).astype(np.int64)
    occupied[ij[:, 0], ij[:, 1]] = True
    if len(old_xy) > config.max_vote_points:
        stride = -(-len(old_xy) // config.max_vote_points)
        old_xy, old_dt_s = old_xy[::stride], old_dt_s[::stride]
    sweep = np.round(-old_dt_s / config.sweep_period_s).astype(np.int64).clip(0, 255)
    recent = old_dt_s >= -config.vote_first_age_s
    if not recent.any():
        recent = np.ones(len(old_xy), dtype=bool)
    step = config.velocity_step_mps
    stages = (
        (recent, np.zeros(2), config.max_speed_mps, step),
        (np.ones(len(old_xy), dtype=bool), None, 2.0 * step, step / 4),
        (np.ones(len(old_xy), dtype=bool), None, step / 4, step / 20),
    )
    best = np.zeros(2)
    count = 0
    for use, centre, reach, stage_step in stages:
        centre = best if centre is None else centre
        span = float(np.abs(old_dt_s[use]).max())
        cells = max(math.ceil(stage_step / 2 * span / cell), 1)
        offsets = np.arange(-reach, reach + stage_step / 2, stage_step)
        vx, vy = centre[0] + offsets, centre[1] + offsets
        counts = _vote(old_xy[use], sweep[use], old_dt_s[use], _dilate(occupied, cells), lo, cell, vx, vy)
        a, b = np.unravel_index(np.argmax(counts), counts.shape)
        best, count = np.array([vx[a], vy[b]]), int(counts[a, b])
    still = _vote(old_xy, sweep, old_dt_s, _dilate(occupied, 1), lo, cell, np.zeros(1), np.zeros(1))[0, 0]
    return np.zeros(2) if count <= still * (1.0 + config.static_margin) else best


def _dilate(occupied: np.ndarray, cells: int) -> np.ndarray:
    if cells <= 0:
        return occupied
    kernel = np.ones((2 * cells + 1, 2 * cells + 1), dtype=np.uint8)
    return cv2.dilate(occupied.astype(np.uint8), kernel).astype(np.bool_)


@numba.njit(cache=True)
def _vote(
    xy: np.ndarray,
    sweep: np.ndarray,
    dt: np.ndarray,
    occupied: np.ndarray,
    lo: np.ndarray,
    cell: float,
    vx: np.ndarray,
    vy: np.ndarray,
) -> np.ndarray:
    """(len(vx), len(vy)) distinct (sweep, occupied cell) pairs hit by the points ``xy - v dt``: how much of the
    current footprint each older sweep covers (a dense neighbour's smear cannot outvote the object's sweeps)."""
    out = np.zeros((len(vx), len(vy)), dtype=np.int64)
    nx, ny = occupied.shape
    marks = np.zeros((sweep.max() + 1, nx * ny), dtype=np.int64)
    stamp = 0
    for a in range(len(vx)):
        for b in range(len(vy)):
            stamp += 1
            n = 0
            for i in range(xy.shape[0]):
                fx = (xy[i, 0] - vx[a] * dt[i] - lo[0]) / cell
                fy = (xy[i, 1] - vy[b] * dt[i] - lo[1]) / cell
                if not (0.0 <= fx < nx and 0.0 <= fy < ny):
                    continue
                c = int(fx) * ny + int(fy)
                if occupied[int(fx), int(fy)] and marks[sweep[i], c] != stamp:
                    marks[sweep[i], c] = stamp
                    n += 1
            out[a, b] = n
    return out


@dataclass(frozen=True, eq=False)
class _Cloud:
    """The input cloud, the indices of its recent points and its ground model (heights are computed per subset)."""

    points: np.ndarray  # (N, 5) float32
    recent: np.ndarray  # (R,) int64 indices of the points captured within max_age_s
    recent_xy: np.ndarray  # (R, 2) float32 their BEV positions
    ground: GroundModel

    def candidates(self, index: np.ndarray, config: FrustumConfig) -> tuple[np.ndarray, np.ndarray]:
        """The entries of ``index`` standing in the height band above the ground, and their heights."""
        heights = self.ground.heights(self.points[index])
        keep = (heights > config.min_height_m) & (heights < config.max_height_m)
        return index[keep], heights[keep]


def _prepare(points_ego: np.ndarray, config: FrustumConfig, ground: GroundModel | None) -> _Cloud:
    pts = np.asarray(points_ego)
    if pts.ndim != 2 or pts.shape[1] < 5:
        raise InputError(f"frustum fit: points must have shape (N, 5) x, y, z, intensity, dt_s; got {pts.shape}")
    pts = np.ascontiguousarray(pts[:, :5], dtype=np.float32)
    if ground is None:
        ground = estimate_ground(pts, config.ground)
    recent = np.flatnonzero(pts[:, 4] >= -config.max_age_s)
    return _Cloud(pts, recent, pts[recent, :2], ground)


def _project(pose: CameraPose, points: np.ndarray, config: FrustumConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(M, 2) pixels of (M, 3) ego points, (M,) bool in front within the depth limits (and where the lens model
    is one-to-one), (M,) bool inside the image too."""
    camera = pose.camera
    points_cam = pose.cam_SE3_ego.transform_points(points)
    projection = camera.project_cam(points_cam, min_depth_m=config.min_depth_m)
    depth = projection.depth_m
    front = (depth >= config.min_depth_m) & (depth <= config.max_depth_m)
    if camera.has_distortion:
        safe = np.where(front, depth, 1.0)
        front &= np.hypot(points_cam[:, 0] / safe, points_cam[:, 1] / safe) < camera.max_model_radius
    return projection.uv_px, front, projection.valid & front


def _open_edges(box_px: np.ndarray, pose: CameraPose, tolerance_px: float) -> np.ndarray:
    """The 2D box with every side that reaches the image border opened to infinity: an object cut by the image
    edge continues beyond it."""
    limits = np.array([-0.5, -0.5, pose.camera.width_px - 0.5, pose.camera.height_px - 0.5])
    out = np.array(box_px, dtype=np.float64, copy=True)
    out[:2] = np.where(out[:2] <= limits[:2] + tolerance_px, -np.inf, out[:2])
    out[2:] = np.where(out[2:] >= limits[2:] - tolerance_px, np.inf, out[2:])
    return out


def _in_window(uv: np.ndarray, window_px: np.ndarray) -> np.ndarray:
    return (
        (uv[:, 0] >= window_px[0])
        & (uv[:, 0] <= window_px[2])
        & (uv[:, 1] >= window_px[1])
        & (uv[:, 1] <= window_px[3])
    )


def _wedge(pose: CameraPose, window_px: np.ndarray, points: np.ndarray, margin_rad: float = 0.03) -> np.ndarray:
    """(N,) bool: cheap BEV prefilter of (N, C>=2) points inside the wedge (seen from above, from the camera
    centre) spanned by the window's border rays, widened by ``margin_rad``; all True for wedges near 180 deg."""
    camera = pose.camera
    lo = np.clip(window_px[:2], -0.5, [camera.width_px - 0.5, camera.height_px - 0.5])
    hi = np.clip(window_px[2:], -0.5, [camera.width_px - 0.5, camera.height_px - 0.5])
    t = np.linspace(0.0, 1.0, 9)
    u, v = lo[0] + t * (hi[0] - lo[0]), lo[1] + t * (hi[1] - lo[1])
    border = np.concatenate(
        [
            np.column_stack([u, np.full(9, lo[1])]),
            np.column_stack([u, np.full(9, hi[1])]),
            np.column_stack([np.full(9, lo[0]), v]),
            np.column_stack([np.full(9, hi[0]), v]),
        ]
    )
    ego_SE3_cam = pose.cam_SE3_ego.inverse()
    rays = ego_SE3_cam.rotate_vectors(camera.unproject(border))
    axis = ego_SE3_cam.rotate_vectors(np.array([[0.0, 0.0, 1.0]]))[0]
    axis_az = math.atan2(axis[1], axis[0])
    rel = np.angle(np.exp(1j * (np.arctan2(rays[:, 1], rays[:, 0]) - axis_az)))
    left, right = rel.max() + margin_rad, rel.min() - margin_rad
    if left - right >= math.radians(170.0) or np.any(np.hypot(rays[:, 0], rays[:, 1]) < 1e-3):
        return np.ones(len(points), dtype=bool)
    centre = ego_SE3_cam.translation
    dx = points[:, 0] - np.float32(centre[0])
    dy = points[:, 1] - np.float32(centre[1])
    # Inside: counter-clockwise of the right edge and clockwise of the left edge.
    right_dir, left_dir = axis_az + right, axis_az + left
    return (np.float32(math.cos(right_dir)) * dy - np.float32(math.sin(right_dir)) * dx >= 0) & (
        np.float32(math.cos(left_dir)) * dy - np.float32(math.sin(left_dir)) * dx <= 0
    )


def _segments(pose: CameraPose, window_px: np.ndarray, cloud: _Cloud, config: FrustumConfig) -> _Segments:
    """Depth clusters split into BEV components, of the candidate points projecting into ``window_px``."""
    pts = cloud.points
    ahead = cloud.recent[_wedge(pose, window_px, cloud.recent_xy)]
    uv, _, seen = _project(pose, pts[ahead, :3], config)
    inside = seen & _in_window(uv, window_px)
    frustum = ahead[inside]
    sel, _ = cloud.candidates(frustum, config)
    uv_sel = uv[inside][np.isin(frustum, sel, assume_unique=True)]
    rng = np.linalg.norm(pose.cam_SE3_ego.transform_points(pts[sel, :3]), axis=1)
    members: list[np.ndarray] = []
    ranges: list[float] = []
    bounds: list[np.ndarray] = []
    order = np.argsort(rng, kind="stable")
    gaps = np.diff(rng[order])
    limit = np.maximum(config.range_gap_m, config.range_gap_per_m * rng[order][:-1])
    cuts = np.concatenate([[0], np.flatnonzero(gaps > limit) + 1, [len(order)]])
    for a, b in itertools.pairwise(cuts.tolist()):
        if b - a < config.min_points:
            continue
        part = order[a:b]
        labels = grid_clusters(pts[sel[part]], config.cluster)
        num = int(labels.max()) + 1 if len(labels) else 0
        grouped, offsets = group_by_label(labels, num)
        for k in range(num):
            local = part[grouped[offsets[k] : offsets[k + 1]]]
            if len(local) < config.min_points:
                continue
            members.append(sel[local])
            ranges.append(float(np.median(rng[local])))
            bounds.append(np.concatenate([uv_sel[local].min(axis=0), uv_sel[local].max(axis=0)]))
    return _Segments(members, np.array(ranges), np.array(bounds).reshape(-1, 4), len(frustum))


def _contained(pose: CameraPose, points: np.ndarray, window_px: np.ndarray, config: FrustumConfig) -> float:
    """Share of (M, 3) points projecting into the window (sides at the image border open): an object the 2D box
    was drawn around lies inside it, an occluder in front of it reaches out of it."""
    uv, front, _ = _project(pose, points, config)
    return float(np.mean(front & _in_window(uv, window_px))) if len(points) else 0.0


def _nearest_of_best(score: np.ndarray, range_m: np.ndarray, near_equal: float) -> int:
    """Index of the nearest segment among those scoring at least ``near_equal`` times the best."""
    good = np.flatnonzero(score >= near_equal * score.max())
    return int(good[np.argmin(range_m[good])])


def _grow(seeds: list[np.ndarray], cloud: _Cloud, config: FrustumConfig) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per seed (indices into the cloud), its BEV connected component among the cloud's recent candidate points
    within ``grow_radius_m`` of the seed's BEV bounds: (M,) sorted indices and their (M,) heights above ground."""
    pts = cloud.points
    lows = [pts[seed, :2].min(axis=0) - config.grow_radius_m for seed in seeds]
    highs = [pts[seed, :2].max(axis=0) + config.grow_radius_m for seed in seeds]
    lo, hi = np.min(lows, axis=0), np.max(highs, axis=0)
    x, y = cloud.recent_xy[:, 0], cloud.recent_xy[:, 1]
    box = cloud.recent[(x >= lo[0]) & (x <= hi[0]) & (y >= lo[1]) & (y <= hi[1])]
    near, heights = cloud.candidates(box, config)
    labels = grid_clusters(pts[near], config.cluster)
    near_xy = pts[near, :2]
    out = []
    for seed, seed_lo, seed_hi in zip(seeds, lows, highs, strict=True):
        seed_labels = labels[np.searchsorted(near, seed)]
        seed_labels = seed_labels[seed_labels >= 0]
        if len(seed_labels) == 0:
            out.append((seed, cloud.ground.heights(pts[seed])))
            continue
        keep = np.flatnonzero(labels == np.bincount(seed_labels).argmax())
        xy = near_xy[keep]
        keep = keep[np.all(xy >= seed_lo, axis=1) & np.all(xy <= seed_hi, axis=1)]
        out.append((near[keep], heights[keep]))
    return out


def _fit_one(points: np.ndarray, heights: np.ndarray, config: FitConfig) -> ClusterFits:
    m = len(points)
    return fit_clusters(points, heights, np.arange(m, dtype=np.int64), np.array([0, m], dtype=np.int64), config)


def fit_without_roof(points: np.ndarray, heights: np.ndarray, roof_band_m: float, config: FitConfig) -> ClusterFits:
    """Fit one object's (M, 5) points with heights (M,): orientation and motion from the points below its roof
    band (when at least 10 and a third of them remain), extents of all points at that orientation.

    A lidar beam crossing a flat roof leaves an arc that L-shape fitting takes for a side; the roof lies inside
    the footprint, so leaving it out of the orientation search loses nothing."""
    fits = _fit_one(points, heights, config)
    side = heights < heights.max() - roof_band_m
    if side.sum() < max(10, len(points) // 3) or side.all():
        return fits
    walls = _fit_one(points[side], heights[side], config)
    yaw = float(walls.yaw[0])
    velocity = np.nan_to_num(walls.velocity[0])
    moving = np.hypot(*velocity) >= config.min_speed_mps
    xy = points[:, :2].astype(np.float64) - (velocity[None, :] * points[:, 4:5] if moving else 0.0)
    c, s = math.cos(yaw), math.sin(yaw)
    u, v = c * xy[:, 0] + s * xy[:, 1], -s * xy[:, 0] + c * xy[:, 1]
    mu, mv = (u.min() + u.max()) / 2, (v.min() + v.max()) / 2
    length, width = u.max() - u.min(), v.max() - v.min()
    if width > length:  # the longer side is the length, yaw in [0, pi) along it
        length, width, yaw = width, length, yaw + math.pi / 2
    return replace(
        fits,
        centre=np.array([[c * mu - s * mv, s * mu + c * mv]]),
        length=np.array([length]),
        width=np.array([width]),
        yaw=np.array([yaw % math.pi]),
        velocity=walls.velocity.copy(),
        quality=walls.quality.copy(),
    )


def _fit(
    members: np.ndarray,
    heights: np.ndarray,
    dominance: float,
    cloud: _Cloud,
    category: Category | None,
    config: FrustumConfig,
    frustum_points: int,
) -> FrustumFit:
    """Fit the object's points (``members`` with their ``heights``) and complete the box by the class prior."""
    pts = cloud.points[members]
    m = len(members)
    fits = fit_without_roof(pts, heights, config.roof_band_m, config.fit)
    size = size_likelihoods(fits, config.classify) * motion_likelihoods(fits, config.classify)  # (1, C, 2)
    if category is not None and category in CLASSES:
        label = CLASSES.index(category)
    else:
        label = int(classify(fits, config.classify).label[0])
    if label >= 0:
        swapped = bool(size[0, label].argmax())
        plausibility = float(size[0, label, int(swapped)])
        known = Classification(
            np.array([label]), np.array([swapped]), np.array([plausibility]), np.array([plausibility])
        )
    else:
        plausibility = 0.25  # no class fits: the tight box, with little confidence in its size
        known = Classification(np.array([-1]), np.array([False]), np.zeros(1), np.zeros(1))
    row = complete_boxes(fits, known, cloud.ground.z_at(fits.centre), config.classify)[0]
    velocity = fits.velocity[0]
    box = Box3D(
        (float(row[0]), float(row[1]), float(row[2])),
        (float(row[3]), float(row[4]), float(row[5])),
        float(row[6]),
        EGO_FRAME,
        (float(velocity[0]), float(velocity[1])),
    )
    sweeps = max(1.0, round(float(pts[:, 4].max() - pts[:, 4].min()) / config.sweep_period_s) + 1.0)
    evidence = 1.0 - math.exp(-m / sweeps / config.points_per_sweep_scale)
    chosen = CLASSES[label] if label >= 0 else None
    fit = float(np.clip((fits.quality[0] - 0.1) / 0.5, 0.2, 1.0)) if chosen in VEHICLES else 1.0
    confidence = evidence * fit * (0.5 + 0.5 * dominance) * math.sqrt(min(max(plausibility, 0.0), 1.0))
    return FrustumFit(FitStatus.OK, box, float(confidence), chosen, members.astype(np.int64), frustum_points)
