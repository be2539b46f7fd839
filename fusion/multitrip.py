"""Multi-trip alignment: static world clouds of several drives through one place, registered into one map frame.

Arrays in, arrays out (no clips, no dataset labels). The steps, each a small function:

1. **Static cloud** of a trip (:func:`static_cloud`): the de-skewed world points of all its sweeps, minus
   dynamic content. A voxel is *persistent* when at least ``min_sweeps`` sweeps spread over at least
   ``min_span_s`` seconds hit it (a car driving by fills a voxel for about half a second, a wall for as long
   as it is in view); points inside the boxes of moving objects (when labels exist) are dropped too, except
   the ground under them. The result is voxel-downsampled (centroids).
2. **Registration** of a trip to the map (:func:`register_cloud`): coarse by the poses (``prior``: identity
   when the trips share a world frame, GNSS otherwise), both clouds cropped to their bird's-eye-view overlap
   under the prior, then multi-scale point-to-plane ICP (the robust ICP of :mod:`fusion.odometry`). A
   global registration (:func:`global_registration`: an exhaustive yaw and shift search, within the prior's
   uncertainty, of the correlation of bird's-eye-view structure images) gives more starts for the same
   ICP, and the best fit is kept.
3. **Quality** (:func:`alignment_quality`) over the overlap, i.e. the trip's points with a map point within
   ``residual_search_m``: ``fitness``, the share of them within ``inlier_distance_m`` of the map surface;
   ``residual_rms_m``, the RMS point-to-plane distance of those inliers; ``height_offset_m``, the typical
   vertical offset between the two clouds' horizontal surfaces per bird's-eye-view cell. Street scenery
   repeats (kerbs, facade lines, pole rows), so a fit slid along the street, or a lookalike street
   elsewhere, still matches most points; the ground's undulation does not repeat. On simulated drives
   ``height_offset_m`` was below 0.009 m for correct fits (tiny tilts of the fit count), 0.010-0.013 m for
   fits slid along the street (the global search's starts beat those) and above 0.022 m for a lookalike
   street of another site. Failed checks (also: the overlap area, the overlap's observability
   (:func:`fusion.odometry.scan_observability`), the correction away from the prior) give a non-ok
   :class:`AlignmentStatus`, warning lines and the prior as the transform: a warning, never a bogus
   transform.
4. **Several trips** (:func:`align_trips`): trip 0 defines the ``map`` frame; every later trip is
   registered to the union of the trips aligned before it (sequential, no joint optimisation).

Static labels across trips, boxes in the map frame: :func:`merge_static_boxes` fuses the same object
labelled in several trips into one box (score-weighted mean centre and size, circular mean yaw) and
:func:`box_support` says whether a trip's lidar shows an object at all::

    map_SE3_world[i]            trip i's world frame -> map (trip 0: its prior, identity by default)
    box_map = box_world_i.transform(map_SE3_world[i], MAP_FRAME)
    box_world_j = box_map.transform(map_SE3_world[j].inverse(), WORLD_FRAME)

Limitations: each trip moves rigidly as a whole (drift within a trip's own poses is not corrected); the
sequential scheme does not spread errors over a loop of trips the way a joint pose graph would; the
thresholds were tuned on simulated 32-beam drives.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import Enum

import numpy as np
import open3d as o3d
from scipy import ndimage
from scipy.spatial import cKDTree

from calibration import SE3, Boxes3D, InputError, iou_bev, wrap_angle_rad
from fusion.odometry import (
    OdometryConfig,
    open3d_cloud,
    register_point_to_plane,
    rotation_angle_deg,
    scan_observability,
    surface_normals,
)

log = logging.getLogger(__name__)

MAP_FRAME = "map"


class AlignmentStatus(str, Enum):
    """Outcome of a trip's registration."""

    REFERENCE = "reference"  # trip 0: defines the map frame
    ALIGNED = "aligned"
    SMALL_OVERLAP = "small_overlap"  # too little common ground to register
    POOR_FIT = "poor_fit"  # too few inliers, too large a residual, or horizontal surfaces that disagree
    DEGENERATE = "degenerate"  # the overlap leaves a direction unconstrained (a featureless corridor)
    FAR_FROM_PRIOR = "far_from_prior"  # the fit moved the trip further from its prior than it can be off

    @property
    def ok(self) -> bool:
        return self in (AlignmentStatus.REFERENCE, AlignmentStatus.ALIGNED)


class GlobalRegistration(str, Enum):
    """When to run the global registration (:func:`global_registration`) for more starts."""

    NEVER = "never"
    AUTO = "auto"  # only when ICP from the prior fails the checks (a fit slid along a street may pass them)
    ALWAYS = "always"  # and keep the best of all fits


class Support(str, Enum):
    """What a trip's lidar says about a box."""

    OBSERVED = "observed"  # enough points above the ground inside the box
    NOT_OBSERVED = "not_observed"  # the trip saw the place but not the object (gone, or hidden)
    OUT_OF_VIEW = "out_of_view"  # the trip has no points near the box at all


# ----------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class StaticCloudConfig:
    """Static world cloud of one trip.

    Attributes:
        voxel_size_m: persistence voxel.
        min_sweeps: a persistent voxel is hit by at least this many sweeps...
        min_span_s: ...whose times spread over at least this long.
        box_margin_m: moving-object boxes grow by this before their points are dropped.
        ground_clearance_m: points less than this above a box's bottom stay (the road under a car).
        output_voxel_m: downsampling voxel of the result (centroids).
    """

    voxel_size_m: float = 0.25
    min_sweeps: int = 3
    min_span_s: float = 1.0
    box_margin_m: float = 0.3
    ground_clearance_m: float = 0.3
    output_voxel_m: float = 0.15

    def __post_init__(self) -> None:
        if self.voxel_size_m <= 0 or self.output_voxel_m <= 0:
            raise InputError("static cloud: voxel sizes must be positive")
        if self.min_sweeps < 1 or self.min_span_s < 0:
            raise InputError("static cloud: need min_sweeps >= 1 and min_span_s >= 0")


@dataclass(frozen=True)
class AlignConfig:
    """Registration of one trip's static cloud to the map, and its quality checks.

    Attributes:
        scales: ICP stages coarse to fine, ``(voxel_m, max_correspondence_m)``: both clouds are downsampled
            to ``voxel_m`` and ICP runs with that correspondence distance (normals from ``2.5 * voxel_m``).
        icp_iterations: most iterations per stage.
        robust_kernel_scale: Tukey kernel width as a multiple of each stage's correspondence distance.
        overlap_cell_m: bird's-eye-view cell of the overlap test.
        overlap_margin_m: both clouds are cropped to their overlap under the prior, grown by this much.
        min_overlap_m2: less common area than this: ``SMALL_OVERLAP``.
        residual_voxel_m: the quality figures use both clouds downsampled to this voxel...
        residual_normal_radius_m: ...and map normals from this radius (sparse far rings need a wide one).
        residual_search_m: a trip point with a map point within this distance is in the overlap...
        inlier_distance_m: ...and an inlier when within this distance of the map point's tangent plane.
        min_fitness: share of inliers below this: ``POOR_FIT``.
        max_residual_m: RMS point-to-plane distance of the inliers above this: ``POOR_FIT``.
        height_cell_m: bird's-eye-view cell of ``height_offset_m``...
        height_cell_points: ...counted where at least this many horizontal-surface inliers fall...
        min_height_cells: ...and only with at least this many such cells (NaN otherwise: not checked).
        max_height_offset_m: ``height_offset_m`` above this: ``POOR_FIT``.
        min_observability: :func:`fusion.odometry.scan_observability` of the overlap below this: ``DEGENERATE``.
        max_prior_error_m: a fit further than this from the prior (GNSS and datum errors are smaller)...
        max_prior_error_deg: ...or turned more than this: ``FAR_FROM_PRIOR``.
        global_registration: when to run :func:`global_registration` (``ALWAYS``: ICP from a prior several
            metres off can settle on the street slid by a few parked cars, and still pass the checks).
        global_candidates: its best this many peaks are refined (the next only while no fit passes).
        global_resolution_m: pixel of its bird's-eye-view structure images...
        global_yaw_step_deg: ...yaw step of its search...
        global_ground_cell_m: ...cell whose lowest point is the local ground...
        global_min_height_m: ...points this far above it are structure...
        global_blur_px: ...and the images are blurred by this Gaussian sigma.
    """

    scales: tuple[tuple[float, float], ...] = ((1.0, 4.0), (0.5, 1.5), (0.25, 0.6), (0.15, 0.3))
    icp_iterations: int = 40
    robust_kernel_scale: float = 1.0
    overlap_cell_m: float = 2.0
    overlap_margin_m: float = 6.0
    min_overlap_m2: float = 400.0
    residual_voxel_m: float = 0.2
    residual_normal_radius_m: float = 1.0
    residual_search_m: float = 1.0
    inlier_distance_m: float = 0.2
    min_fitness: float = 0.7
    max_residual_m: float = 0.1
    height_cell_m: float = 2.0
    height_cell_points: int = 16
    min_height_cells: int = 20
    max_height_offset_m: float = 0.015
    min_observability: float = 0.01
    max_prior_error_m: float = 20.0
    max_prior_error_deg: float = 20.0
    global_registration: GlobalRegistration = GlobalRegistration.ALWAYS
    global_candidates: int = 3
    global_resolution_m: float = 0.5
    global_yaw_step_deg: float = 1.0
    global_ground_cell_m: float = 4.0
    global_min_height_m: float = 0.5
    global_blur_px: float = 1.0

    def __post_init__(self) -> None:
        if not self.scales or min(min(s) for s in self.scales) <= 0:
            raise InputError("align: scales need positive (voxel_m, max_correspondence_m) pairs")
        if min(self.overlap_cell_m, self.residual_voxel_m, self.residual_search_m, self.inlier_distance_m) <= 0:
            raise InputError("align: overlap cell, residual voxel and distances must be positive")
        if min(self.global_resolution_m, self.global_yaw_step_deg) <= 0 or self.global_candidates < 1:
            raise InputError("align: the global search needs a positive resolution and yaw step, >= 1 candidate")
        object.__setattr__(self, "global_registration", GlobalRegistration(self.global_registration))


@dataclass(frozen=True)
class SupportConfig:
    """When a box counts as seen by a trip.

    Attributes:
        min_points: at least this many points above the ground inside the box: ``OBSERVED``.
        margin_m: the box grows by this (labels and alignment are not exact).
        ground_clearance_m: points less than this above the box's bottom are ground, not object.
        view_radius_m: fewer than ``min_points`` points within this horizontal distance of the centre
            (any height, ground included): ``OUT_OF_VIEW``.
    """

    min_points: int = 5
    margin_m: float = 0.1
    ground_clearance_m: float = 0.25
    view_radius_m: float = 4.0


# ----------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class AlignmentQuality:
    """How well two clouds agree under a transform (:func:`alignment_quality`).

    Attributes:
        fitness: share of the overlap points within ``inlier_distance_m`` of the map surface.
        residual_rms_m: RMS point-to-plane distance of those inliers (the alignment residual; inf without any).
        overlap_points: trip points with a map point within ``residual_search_m``.
        height_offset_m: median over bird's-eye-view cells of the absolute median vertical offset between the
            two clouds' horizontal surfaces (roads, roofs): near 0 when they show the same ground, several
            centimetres for a lookalike street whose ground undulates differently; NaN with too few cells.
        height_cells: cells behind ``height_offset_m``.
    """

    fitness: float = 0.0
    residual_rms_m: float = float("inf")
    overlap_points: int = 0
    height_offset_m: float = float("nan")
    height_cells: int = 0


@dataclass(frozen=True)
class Registration:
    """One trip's registration to the map.

    Attributes:
        map_SE3_world: the trip's world frame in the map; the prior when ``status`` is not ok.
        status: outcome; ``status.ok`` says whether ``map_SE3_world`` is a checked fit.
        prior: the coarse transform it started from.
        fit_SE3_world: the fit the checks judged (equal to ``map_SE3_world`` when ok; for diagnosis only).
        quality: agreement of the trip with the map under ``fit_SE3_world``.
        inlier_rmse_m: point-to-plane RMSE of the last ICP stage's correspondences.
        overlap_m2: common bird's-eye-view area under the prior.
        observability: :func:`fusion.odometry.scan_observability` of the overlap.
        correction_m: how far the fit moved the trip from the prior (at the overlap's centre)...
        correction_deg: ...and how much it turned it.
        used_global: whether the kept fit started from the global registration.
        warnings: one line per failed check.
    """

    map_SE3_world: SE3
    status: AlignmentStatus
    prior: SE3
    fit_SE3_world: SE3
    quality: AlignmentQuality = field(default_factory=AlignmentQuality)
    inlier_rmse_m: float = float("inf")
    overlap_m2: float = 0.0
    observability: float = 0.0
    correction_m: float = 0.0
    correction_deg: float = 0.0
    used_global: bool = False
    warnings: tuple[str, ...] = ()

    def summary(self) -> dict[str, object]:
        """JSON-ready figures."""

        def rounded(value: float, digits: int) -> float | None:
            return round(value, digits) if np.isfinite(value) else None

        return {
            "status": self.status.value,
            "fitness": round(self.quality.fitness, 4),
            "residual_rms_m": rounded(self.quality.residual_rms_m, 4),
            "height_offset_m": rounded(self.quality.height_offset_m, 4),
            "overlap_points": self.quality.overlap_points,
            "inlier_rmse_m": rounded(self.inlier_rmse_m, 4),
            "overlap_m2": round(self.overlap_m2, 1),
            "observability": round(self.observability, 4),
            "correction_m": round(self.correction_m, 3),
            "correction_deg": round(self.correction_deg, 3),
            "used_global": self.used_global,
            "map_SE3_world": np.round(self.map_SE3_world.as_matrix(), 6).tolist(),
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True, eq=False)
class MergedBoxes:
    """Boxes of several trips merged into one box per object.

    Attributes:
        boxes: M fused boxes (the input's frame).
        scores: (M,) the best member score.
        members: M tuples of input indices (at most one per group), best score first.
    """

    boxes: Boxes3D
    scores: np.ndarray
    members: tuple[tuple[int, ...], ...]


# ----------------------------------------------------------------------------------- voxels and cells
def _xyz(points: np.ndarray, what: str) -> np.ndarray:
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[1] < 3:
        raise InputError(f"{what}: points must have shape (N, C>=3), got {pts.shape}")
    return pts[:, :3].astype(np.float64, copy=False)


def _voxel_keys(xyz: np.ndarray, voxel_m: float, origin: np.ndarray) -> np.ndarray:
    """(N,) int64 key of each point's voxel (21 bits per axis from ``origin``)."""
    cells = np.floor((xyz - origin) / voxel_m).astype(np.int64)
    if len(cells) and (cells.min() < 0 or cells.max() >= 1 << 21):
        raise InputError(f"static cloud: extent over {(1 << 21) * voxel_m:.0f} m; use a larger voxel")
    return (cells[:, 0] << 42) | (cells[:, 1] << 21) | cells[:, 2]


def _bev_keys(xyz: np.ndarray, cell_m: float) -> np.ndarray:
    """(N,) int64 key of each point's bird's-eye-view cell."""
    cells = np.floor(xyz[:, :2] / cell_m).astype(np.int64) + (1 << 31)
    return (cells[:, 0] << 32) | cells[:, 1]


def _dilate(keys: np.ndarray, cells: int) -> np.ndarray:
    """Unique keys of all cells within ``cells`` (Chebyshev) of the given ones."""
    keys = np.unique(keys)
    offsets = np.arange(-cells, cells + 1, dtype=np.int64)
    shifts = ((offsets[:, None] << 32) + offsets[None, :]).ravel()
    return np.unique((keys[:, None] + shifts[None, :]).ravel())


def _downsample(xyz: np.ndarray, voxel_m: float) -> np.ndarray:
    """(M, 3) voxel centroids."""
    if len(xyz) == 0:
        return np.zeros((0, 3))
    return np.asarray(open3d_cloud(xyz).voxel_down_sample(voxel_m).points)


def _above_ground_in_boxes(boxes: Boxes3D, xyz: np.ndarray, margin_m: float, clearance_m: float) -> np.ndarray:
    """(N, B) inside box b (grown by ``margin_m``) and at least ``clearance_m`` above its bottom."""
    inside = boxes.points_in_boxes(xyz, margin_m=margin_m)
    bottom = boxes.centers[:, 2] - boxes.sizes[:, 2] / 2.0
    return inside & (xyz[:, 2:3] >= bottom[None, :] + clearance_m)


# ----------------------------------------------------------------------------------- static cloud
def persistent_voxels(
    sweeps_world: Sequence[np.ndarray], sweep_time_s: np.ndarray, config: StaticCloudConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Keys of the voxels hit by at least ``min_sweeps`` sweeps spread over ``min_span_s``.

    Args:
        sweeps_world: S arrays (N_s, C>=3) of world points.
        sweep_time_s: (S,) sweep times.

    Returns:
        ``(keys, origin)``: sorted int64 voxel keys and the (3,) origin they are counted from
        (see :func:`_voxel_keys`).
    """
    times = np.asarray(sweep_time_s, dtype=np.float64).reshape(-1)
    if len(times) != len(sweeps_world):
        raise InputError(f"static cloud: {len(sweeps_world)} sweeps but {len(times)} sweep times")
    clouds = [_xyz(s, "static cloud") for s in sweeps_world]
    nonempty = [c for c in clouds if len(c)]
    if not nonempty:
        return np.zeros(0, np.int64), np.zeros(3)
    origin = np.floor(np.min([c.min(axis=0) for c in nonempty], axis=0)) - config.voxel_size_m
    keys, key_time = [], []
    for cloud, t_s in zip(clouds, times, strict=True):
        unique = np.unique(_voxel_keys(cloud, config.voxel_size_m, origin))
        keys.append(unique)
        key_time.append(np.full(len(unique), t_s))
    all_keys, all_times = np.concatenate(keys), np.concatenate(key_time)
    order = np.argsort(all_keys, kind="stable")
    all_keys, all_times = all_keys[order], all_times[order]
    starts = np.flatnonzero(np.concatenate([[True], all_keys[1:] != all_keys[:-1]]))
    count = np.diff(np.append(starts, len(all_keys)))
    span = np.maximum.reduceat(all_times, starts) - np.minimum.reduceat(all_times, starts)
    keep = (count >= config.min_sweeps) & (span >= config.min_span_s)
    return all_keys[starts[keep]], origin


def static_cloud(
    sweeps_world: Sequence[np.ndarray],
    sweep_time_s: np.ndarray,
    config: StaticCloudConfig = StaticCloudConfig(),
    *,
    dynamic_boxes: Boxes3D | None = None,
) -> np.ndarray:
    """The static part of a trip's world cloud.

    Args:
        sweeps_world: S arrays (N_s, C>=3) of de-skewed world points.
        sweep_time_s: (S,) sweep times.
        config: settings.
        dynamic_boxes: boxes of moving objects in the world frame (any times); their points are dropped,
            except the ground under them.

    Returns:
        (M, 3) float64 world points (voxel centroids of the persistent points).
    """
    keys, origin = persistent_voxels(sweeps_world, sweep_time_s, config)
    kept = []
    for sweep in sweeps_world:
        xyz = _xyz(sweep, "static cloud")
        if len(xyz) and len(keys):
            kept.append(xyz[np.isin(_voxel_keys(xyz, config.voxel_size_m, origin), keys)])
    cloud = _downsample(np.concatenate(kept) if kept else np.zeros((0, 3)), config.output_voxel_m)
    if dynamic_boxes is not None and len(dynamic_boxes) and len(cloud):
        moving = _above_ground_in_boxes(dynamic_boxes, cloud, config.box_margin_m, config.ground_clearance_m)
        cloud = cloud[~moving.any(axis=1)]
    return cloud


# ----------------------------------------------------------------------------------- registration
def overlap_masks(
    xyz_a: np.ndarray, xyz_b: np.ndarray, cell_m: float, margin_m: float = 0.0
) -> tuple[np.ndarray, np.ndarray, float]:
    """Which points of two clouds lie over their common bird's-eye-view area.

    A cell is common when both clouds have points in it; points in cells within ``margin_m`` of a common
    cell count too.

    Returns:
        (N_a,) and (N_b,) bool masks and the common area in m^2.
    """
    keys_a, keys_b = _bev_keys(xyz_a, cell_m), _bev_keys(xyz_b, cell_m)
    common = np.intersect1d(keys_a, keys_b)
    area_m2 = float(len(common) * cell_m**2)
    grown = _dilate(common, int(np.ceil(margin_m / cell_m))) if len(common) else common
    return np.isin(keys_a, grown), np.isin(keys_b, grown), area_m2


def _surface_cloud(
    xyz: np.ndarray, voxel_m: float, normal_radius_m: float | None = None
) -> tuple[o3d.geometry.PointCloud, np.ndarray]:
    """The points of ``xyz`` downsampled to ``voxel_m`` that lie on a surface (:func:`fusion.odometry`'s
    test, normals from ``normal_radius_m``, default ``2.5 * voxel_m``): a cloud with normals, and (N, 3) xyz."""
    cloud = open3d_cloud(xyz).voxel_down_sample(voxel_m)
    mask, normals = surface_normals(cloud, _normal_config(voxel_m, normal_radius_m=normal_radius_m))
    points = np.asarray(cloud.points)[mask]
    out = open3d_cloud(points)
    out.normals = o3d.utility.Vector3dVector(np.ascontiguousarray(normals[mask]))
    return out, points


def _normal_config(
    voxel_m: float, config: AlignConfig | None = None, *, normal_radius_m: float | None = None
) -> OdometryConfig:
    """The odometry settings its ICP and normal helpers read, for one scale."""
    return OdometryConfig(
        normal_radius_m=normal_radius_m or 2.5 * voxel_m,
        normal_max_nn=30,
        min_normal_extent_m=0.5 * voxel_m,
        icp_iterations=config.icp_iterations if config else 30,
        robust_kernel_scale=config.robust_kernel_scale if config else 1.0,
    )


@dataclass(frozen=True, eq=False)
class _Target:
    """The map cloud prepared once per registration: surface clouds (with normals) per ICP scale and for the
    quality figures, with a k-d tree of the latter."""

    xyz: np.ndarray
    scales: tuple[o3d.geometry.PointCloud, ...]
    quality_cloud: o3d.geometry.PointCloud
    quality_points: np.ndarray
    quality_tree: cKDTree

    @classmethod
    def build(cls, xyz: np.ndarray, config: AlignConfig, *, for_icp: bool = True) -> _Target:
        quality_cloud, quality_points = _surface_cloud(xyz, config.residual_voxel_m, config.residual_normal_radius_m)
        return cls(
            xyz=xyz,
            scales=tuple(_surface_cloud(xyz, voxel_m)[0] for voxel_m, _ in config.scales) if for_icp else (),
            quality_cloud=quality_cloud,
            quality_points=quality_points,
            quality_tree=cKDTree(quality_points if len(quality_points) else np.zeros((0, 3))),
        )


def _icp(source_xyz: np.ndarray, target: _Target, init: SE3, config: AlignConfig) -> tuple[SE3, float]:
    """Multi-scale point-to-plane ICP of ``source_xyz`` onto the target; ``(target_SE3_source, rmse_m)``."""
    transform, rmse_m = init, float("inf")
    for (voxel_m, distance_m), target_cloud in zip(config.scales, target.scales, strict=True):
        source = _downsample(source_xyz, voxel_m)
        step = register_point_to_plane(source, target_cloud, transform, (distance_m,), _normal_config(voxel_m, config))
        if not np.isfinite(step.rmse_m):
            return transform, float("inf")
        transform, rmse_m = step.world_SE3_ego, step.rmse_m
    return transform, rmse_m


def _standing_xy(xyz: np.ndarray, config: AlignConfig) -> np.ndarray:
    """(K, 2) xy of the points standing ``global_min_height_m`` above the lowest point of their
    ``global_ground_cell_m`` cell: walls, poles, parked cars; not the road."""
    cells = np.floor(xyz[:, :2] / config.global_ground_cell_m).astype(np.int64)
    keys = (cells[:, 0] << 32) + cells[:, 1]
    _, inverse = np.unique(keys, return_inverse=True)
    lowest = np.full(int(inverse.max()) + 1, np.inf)
    np.minimum.at(lowest, inverse, xyz[:, 2])
    return xyz[xyz[:, 2] - lowest[inverse] >= config.global_min_height_m, :2]


def _structure_image(xy: np.ndarray, origin: np.ndarray, shape: tuple[int, int], config: AlignConfig) -> np.ndarray:
    """(H, W) blurred bird's-eye-view occupancy of ``xy`` points, pixel (0, 0) at ``origin``."""
    pixels = np.floor((xy - origin) / config.global_resolution_m).astype(np.int64)
    inside = np.all((pixels >= 0) & (pixels < np.array(shape)), axis=1)
    image = np.zeros(shape)
    image[pixels[inside, 0], pixels[inside, 1]] = 1.0
    return ndimage.gaussian_filter(image, config.global_blur_px)


def global_registration(
    source_xyz: np.ndarray, target_xyz: np.ndarray, config: AlignConfig = AlignConfig()
) -> tuple[SE3, ...]:
    """Coarse ``target_SE3_source`` candidates within the prior's uncertainty, best first.

    The source is expected in the target's frame already (moved by the prior). An exhaustive search over
    yaw (``global_yaw_step_deg`` steps up to ``max_prior_error_deg``, about the source's centre) and
    horizontal shift (up to ``max_prior_error_m``) of the correlation between the two clouds' bird's-eye-view
    images of standing structure (:func:`_standing_xy`; FFT cross-correlation per yaw). Occupancy images compare
    well between trips that saw the street from opposite sides, where local descriptors do not (FPFH
    matches between such trips were 1-4 % right, too few for RANSAC). Up to ``global_candidates`` peaks
    that differ by more than 2 m or 2 degrees are returned, for ICP to refine.
    """
    source, target = _xyz(source_xyz, "global registration"), _xyz(target_xyz, "global registration")
    if len(source) == 0 or len(target) == 0:
        return ()
    source_xy, target_xy = _standing_xy(source, config), _standing_xy(target, config)
    if len(source_xy) == 0 or len(target_xy) == 0:
        return ()
    centre = source_xy.mean(axis=0)
    radius = float(np.linalg.norm(source_xy - centre, axis=1).max())
    margin = config.max_prior_error_m + 2.0 * config.global_resolution_m
    low = np.minimum(target_xy.min(axis=0), centre - radius) - margin
    high = np.maximum(target_xy.max(axis=0), centre + radius) + margin
    shape = tuple(int(n) for n in np.ceil((high - low) / config.global_resolution_m))
    target_image = _structure_image(target_xy, low, shape, config)
    target_spectrum = np.fft.rfft2(target_image)
    reach = int(config.max_prior_error_m / config.global_resolution_m)
    rows = np.r_[0 : reach + 1, shape[0] - reach : shape[0]]
    cols = np.r_[0 : reach + 1, shape[1] - reach : shape[1]]
    peaks: list[tuple[float, float, np.ndarray]] = []  # (score, yaw_rad, shift_m)
    steps = int(np.floor(config.max_prior_error_deg / config.global_yaw_step_deg))
    for yaw_rad in np.radians(np.arange(-steps, steps + 1) * config.global_yaw_step_deg):
        c, s = np.cos(yaw_rad), np.sin(yaw_rad)
        turned = (source_xy - centre) @ np.array([[c, s], [-s, c]]) + centre
        image = _structure_image(turned, low, shape, config)
        norm = np.sqrt(np.sum(image**2) * np.sum(target_image**2))
        if norm <= 0:
            continue
        # corr[d] = sum_p target[p + d] * source[p]: the source moved by d pixels fits the target.
        correlation = np.fft.irfft2(target_spectrum * np.conj(np.fft.rfft2(image)), s=shape)[np.ix_(rows, cols)]
        i, j = np.unravel_index(int(np.argmax(correlation)), correlation.shape)
        shift = np.array(
            [rows[i] - (shape[0] if rows[i] > reach else 0), cols[j] - (shape[1] if cols[j] > reach else 0)]
        )
        peaks.append((float(correlation[i, j] / norm), float(yaw_rad), shift * config.global_resolution_m))
    chosen: list[tuple[float, np.ndarray]] = []
    for _, yaw_rad, shift_m in sorted(peaks, key=lambda peak: -peak[0]):
        if all(abs(yaw_rad - y) > np.radians(2.0) or np.linalg.norm(shift_m - s) > 2.0 for y, s in chosen):
            chosen.append((yaw_rad, shift_m))
        if len(chosen) == config.global_candidates:
            break
    return tuple(
        SE3(np.eye(3), (*shift_m, 0.0)) @ SE3.from_yaw(yaw_rad, (*centre, 0.0)) @ SE3.from_yaw(0.0, (*-centre, 0.0))
        for yaw_rad, shift_m in chosen
    )


def _height_offset(moved: np.ndarray, signed_m: np.ndarray, config: AlignConfig) -> tuple[float, int]:
    """Median over bird's-eye-view cells of |median vertical offset| of horizontal-surface matches."""
    keys = _bev_keys(moved, config.height_cell_m)
    order = np.argsort(keys, kind="stable")
    keys, values = keys[order], signed_m[order]
    starts = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]])) if len(keys) else np.zeros(0, int)
    counts = np.diff(np.append(starts, len(keys)))
    medians = np.array(
        [np.median(values[s : s + c]) for s, c in zip(starts, counts, strict=True) if c >= config.height_cell_points]
    )
    if len(medians) < config.min_height_cells:
        return float("nan"), len(medians)
    return float(np.median(np.abs(medians))), len(medians)


def alignment_quality(
    source_xyz: np.ndarray, target_xyz: np.ndarray, target_SE3_source: SE3, config: AlignConfig = AlignConfig()
) -> AlignmentQuality:
    """How well a source cloud, moved by ``target_SE3_source``, agrees with a target cloud.

    Both clouds are downsampled to ``residual_voxel_m``; the target keeps its surface points, with normals
    from ``residual_normal_radius_m``. A source point is in the overlap when a target point lies within
    ``residual_search_m``, and an inlier when it is within ``inlier_distance_m`` of that point's tangent
    plane. Inliers on horizontal surfaces (normal within about 37 degrees of vertical) also give the
    per-cell vertical offsets behind ``height_offset_m``.
    """
    target = _Target.build(_xyz(target_xyz, "quality"), config, for_icp=False)
    return _quality(_xyz(source_xyz, "quality"), target, target_SE3_source, config)


def _quality(source_xyz: np.ndarray, target: _Target, target_SE3_source: SE3, config: AlignConfig) -> AlignmentQuality:
    moved = target_SE3_source.transform_points(_downsample(source_xyz, config.residual_voxel_m))
    if len(moved) == 0 or len(target.quality_points) == 0:
        return AlignmentQuality()
    distance, index = target.quality_tree.query(moved, distance_upper_bound=config.residual_search_m)
    near = np.isfinite(distance)
    if not near.any():
        return AlignmentQuality()
    moved, normals = moved[near], np.asarray(target.quality_cloud.normals)[index[near]]
    signed = np.sum((moved - target.quality_points[index[near]]) * normals, axis=1)
    inlier = np.abs(signed) <= config.inlier_distance_m
    if not inlier.any():
        return AlignmentQuality(overlap_points=len(moved))
    horizontal = inlier & (np.abs(normals[:, 2]) >= 0.8)
    offset_m, cells = _height_offset(moved[horizontal], (signed * np.sign(normals[:, 2]))[horizontal], config)
    return AlignmentQuality(
        fitness=float(inlier.mean()),
        residual_rms_m=float(np.sqrt(np.mean(signed[inlier] ** 2))),
        overlap_points=len(moved),
        height_offset_m=offset_m,
        height_cells=cells,
    )


def _problems(reg: Registration, config: AlignConfig) -> list[tuple[AlignmentStatus, str]]:
    """The failed checks of a registration, each with the status it earns (empty: aligned)."""
    q = reg.quality
    failed: list[tuple[AlignmentStatus, str]] = []
    if reg.correction_m > config.max_prior_error_m or reg.correction_deg > config.max_prior_error_deg:
        failed.append(
            (
                AlignmentStatus.FAR_FROM_PRIOR,
                f"the fit moved {reg.correction_m:.1f} m / {reg.correction_deg:.1f} deg from the prior "
                f"(limits {config.max_prior_error_m:.1f} m / {config.max_prior_error_deg:.1f} deg)",
            )
        )
    if reg.observability < config.min_observability:
        line = f"overlap observability {reg.observability:.4f} < {config.min_observability:.4f}: a direction is free"
        failed.append((AlignmentStatus.DEGENERATE, line))
    if q.fitness < config.min_fitness:
        failed.append((AlignmentStatus.POOR_FIT, f"fitness {q.fitness:.2f} < {config.min_fitness:.2f}"))
    if q.residual_rms_m > config.max_residual_m:
        failed.append((AlignmentStatus.POOR_FIT, f"residual {q.residual_rms_m:.3f} m > {config.max_residual_m:.3f} m"))
    if q.height_offset_m > config.max_height_offset_m:
        line = (
            f"horizontal surfaces disagree by {q.height_offset_m:.3f} m (median over {q.height_cells} cells) "
            f"> {config.max_height_offset_m:.3f} m: a different place, or a bad fit"
        )
        failed.append((AlignmentStatus.POOR_FIT, line))
    return failed


def _judged(
    source_xyz: np.ndarray,
    target: _Target,
    fit: SE3,
    prior: SE3,
    inlier_rmse_m: float,
    overlap_m2: float,
    used_global: bool,
    config: AlignConfig,
) -> Registration:
    """A registration of ``fit`` with its figures and verdict (the prior as the transform when it fails)."""
    moved = fit.transform_points(source_xyz)
    in_overlap, _, _ = overlap_masks(moved, target.xyz, config.overlap_cell_m)
    centre = source_xyz[in_overlap].mean(axis=0) if in_overlap.any() else source_xyz.mean(axis=0)
    overlap = _downsample(moved[in_overlap], 0.5)
    reg = Registration(
        map_SE3_world=fit,
        status=AlignmentStatus.ALIGNED,
        prior=prior,
        fit_SE3_world=fit,
        quality=_quality(source_xyz, target, fit, config),
        inlier_rmse_m=inlier_rmse_m,
        overlap_m2=overlap_m2,
        observability=scan_observability(overlap, _normal_config(0.4)) if len(overlap) else 0.0,
        correction_m=float(np.linalg.norm(fit.transform_points(centre[None]) - prior.transform_points(centre[None]))),
        correction_deg=rotation_angle_deg(fit @ prior.inverse()),
        used_global=used_global,
    )
    problems = _problems(reg, config)
    if not problems:
        return reg
    return replace(reg, map_SE3_world=prior, status=problems[0][0], warnings=tuple(line for _, line in problems))


def _better(a: Registration, b: Registration) -> bool:
    """Whether ``a`` is the better fit: passing the checks first, then the lower residual x (1 - fitness)."""
    if a.status.ok != b.status.ok:
        return a.status.ok
    score_a = a.quality.residual_rms_m * (1.0 - a.quality.fitness + 1e-3)
    return score_a < b.quality.residual_rms_m * (1.0 - b.quality.fitness + 1e-3)


def register_cloud(
    source_world: np.ndarray,
    target_map: np.ndarray,
    prior: SE3 | None = None,
    config: AlignConfig = AlignConfig(),
) -> Registration:
    """Register a trip's static cloud to the map.

    Args:
        source_world: (N, C>=3) the trip's static cloud in its world frame.
        target_map: (M, C>=3) the map cloud.
        prior: coarse ``map_SE3_world`` (poses or GNSS); identity when the frames are shared.
        config: settings.

    Returns:
        The registration; when a check fails its ``map_SE3_world`` is the prior and ``warnings`` say why
        (also logged).
    """
    prior = prior or SE3.identity()
    source, target = _xyz(source_world, "register"), _xyz(target_map, "register")
    in_source, in_target, overlap_m2 = overlap_masks(
        prior.transform_points(source), target, config.overlap_cell_m, config.overlap_margin_m
    )
    if overlap_m2 < config.min_overlap_m2:
        line = f"overlap {overlap_m2:.0f} m^2 < {config.min_overlap_m2:.0f} m^2 under the prior"
        best = Registration(prior, AlignmentStatus.SMALL_OVERLAP, prior, prior, overlap_m2=overlap_m2, warnings=(line,))
    else:
        source, prepared = source[in_source], _Target.build(target[in_target], config)
        fit, rmse_m = _icp(source, prepared, prior, config)
        best = _judged(source, prepared, fit, prior, rmse_m, overlap_m2, False, config)
        mode = config.global_registration
        if mode is GlobalRegistration.ALWAYS or (mode is GlobalRegistration.AUTO and not best.status.ok):
            for k, start in enumerate(global_registration(prior.transform_points(source), prepared.xyz, config)):
                if k > 0 and best.status.ok:
                    break
                fit, rmse_m = _icp(source, prepared, start @ prior, config)
                candidate = _judged(source, prepared, fit, prior, rmse_m, overlap_m2, True, config)
                best = candidate if _better(candidate, best) else best
    for line in best.warnings:
        log.warning("multi-trip registration failed (%s): %s", best.status.value, line)
    return best


def align_trips(
    clouds_world: Sequence[np.ndarray],
    priors: Sequence[SE3] | None = None,
    config: AlignConfig = AlignConfig(),
) -> tuple[Registration, ...]:
    """Register several trips' static clouds into one map frame (trip 0's world frame moved by its prior).

    Trip ``i > 0`` is registered to the union of trip 0 and the later trips that aligned before ``i``.

    Args:
        clouds_world: T arrays (N_t, C>=3), each trip's static cloud in its own world frame.
        priors: T coarse ``map_SE3_world`` (identity when omitted: the trips share a world frame).
        config: settings.

    Returns:
        T registrations; the first has status ``REFERENCE`` and its prior as the transform.
    """
    if len(clouds_world) < 1:
        raise InputError("multi-trip alignment needs at least one trip")
    priors = list(priors) if priors is not None else [SE3.identity()] * len(clouds_world)
    if len(priors) != len(clouds_world):
        raise InputError(f"multi-trip alignment: {len(clouds_world)} clouds but {len(priors)} priors")
    reference = AlignmentQuality(fitness=1.0, residual_rms_m=0.0, height_offset_m=0.0)
    results = [Registration(priors[0], AlignmentStatus.REFERENCE, priors[0], priors[0], reference)]
    map_parts = [priors[0].transform_points(_xyz(clouds_world[0], "align"))]
    for cloud, prior in zip(clouds_world[1:], priors[1:], strict=True):
        target = map_parts[0] if len(map_parts) == 1 else _downsample(np.concatenate(map_parts), config.scales[-1][0])
        results.append(register_cloud(cloud, target, prior, config))
        if results[-1].status.ok:
            map_parts.append(results[-1].map_SE3_world.transform_points(_xyz(cloud, "align")))
    return tuple(results)


# ----------------------------------------------------------------------------------- boxes
def circular_mean_rad(angles_rad: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Weighted circular mean of angles, in (-pi, pi]: ``atan2(sum w sin a, sum w cos a)``.

    Raises:
        InputError: no angles, or weights that cancel (e.g. two opposite angles with equal weight).
    """
    angles = np.asarray(angles_rad, dtype=np.float64).reshape(-1)
    w = np.ones_like(angles) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    if len(angles) == 0 or len(w) != len(angles):
        raise InputError(f"circular mean needs angles and as many weights, got {len(angles)} and {len(w)}")
    s, c = float(np.sum(w * np.sin(angles))), float(np.sum(w * np.cos(angles)))
    if np.hypot(s, c) < 1e-12 * max(float(np.sum(np.abs(w))), 1e-300):
        raise InputError("circular mean of angles that cancel out is undefined")
    return float(wrap_angle_rad(np.arctan2(s, c)))


def fuse_boxes(boxes: Boxes3D, weights: np.ndarray) -> Boxes3D:
    """One box from several boxes of the same object: weighted mean centre and size, circular mean yaw.

    Headings more than 90 degrees from the heaviest box's are turned by pi first (a heading flip draws the
    same footprint; averaging it in would turn the box sideways).

    Args:
        boxes: N >= 1 boxes in one frame.
        weights: (N,) non-negative, not all zero (e.g. label scores).

    Returns:
        One box in ``boxes.frame`` (no velocity: the object stands still).
    """
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if len(boxes) == 0 or len(w) != len(boxes) or np.any(w < 0) or w.sum() <= 0:
        raise InputError(f"fuse boxes: need N >= 1 boxes and N non-negative weights with a positive sum, got {w}")
    reference = boxes.yaws_rad[int(np.argmax(w))]
    yaws = boxes.yaws_rad.copy()
    flipped = np.abs(wrap_angle_rad(yaws - reference)) > np.pi / 2
    yaws[flipped] += np.pi
    centre = np.average(boxes.centers, axis=0, weights=w)
    size = np.average(boxes.sizes, axis=0, weights=w)
    return Boxes3D(np.array([[*centre, *size, circular_mean_rad(yaws, w)]]), boxes.frame)


def merge_static_boxes(
    boxes: Boxes3D, scores: np.ndarray, groups: np.ndarray, iou_threshold: float = 0.3
) -> MergedBoxes:
    """Merge boxes of the same objects labelled in several groups (trips) into one box each.

    Pairs from different groups with BEV IoU above ``iou_threshold`` are joined, highest IoU first, unless
    the join would put two boxes of one group into one object (a trip's own objects stay apart). Each
    object's box is :func:`fuse_boxes` of its members weighted by score.

    Args:
        boxes: N static boxes in one (map) frame.
        scores: (N,) confidences (weights of the fusion).
        groups: (N,) int group (trip) of each box.

    Returns:
        The objects, ordered by their first member.
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    groups = np.asarray(groups).reshape(-1)
    n = len(boxes)
    if len(scores) != n or len(groups) != n:
        raise InputError(f"merge: {n} boxes but {len(scores)} scores and {len(groups)} groups")
    if n == 0:
        return MergedBoxes(Boxes3D.empty(boxes.frame), np.zeros(0), ())
    iou = iou_bev(boxes, boxes)
    rows, cols = np.nonzero(np.triu(iou > iou_threshold, k=1) & (groups[:, None] != groups[None, :]))
    root = np.arange(n)
    members: dict[int, set[int]] = {i: {i} for i in range(n)}

    def find(i: int) -> int:
        while root[i] != i:
            root[i] = root[root[i]]
            i = int(root[i])
        return i

    for k in np.argsort(-iou[rows, cols], kind="stable"):
        a, b = find(int(rows[k])), find(int(cols[k]))
        if a == b or set(groups[list(members[a])]) & set(groups[list(members[b])]):
            continue
        a, b = min(a, b), max(a, b)
        root[b] = a
        members[a] |= members.pop(b)
    objects = sorted(members.values(), key=min)
    ordered = [tuple(sorted(m, key=lambda i: (-scores[i], i))) for m in objects]
    fused = [fuse_boxes(boxes[list(m)], np.maximum(scores[list(m)], 1e-6)) for m in ordered]
    return MergedBoxes(
        Boxes3D.concatenate(fused, boxes.frame),
        np.array([scores[list(m)].max() for m in ordered]),
        tuple(ordered),
    )


def box_point_counts(
    boxes: Boxes3D, points: np.ndarray, config: SupportConfig = SupportConfig()
) -> tuple[np.ndarray, np.ndarray]:
    """Points on and around each box in one point cloud.

    Args:
        boxes: N boxes in the points' frame.
        points: (M, C>=3) points.

    Returns:
        (N,) int points inside each box (grown by ``margin_m``) at least ``ground_clearance_m`` above its
        bottom, and (N,) int points within ``view_radius_m`` of its centre horizontally (any height).
    """
    xyz = _xyz(points, "box support")
    on_box, around = np.zeros(len(boxes), np.int64), np.zeros(len(boxes), np.int64)
    if len(boxes) == 0 or len(xyz) == 0:
        return on_box, around
    reach = np.maximum(np.hypot(boxes.sizes[:, 0], boxes.sizes[:, 1]) / 2 + config.margin_m, config.view_radius_m)
    candidates = cKDTree(xyz[:, :2]).query_ball_point(boxes.centers[:, :2], reach)
    for i, rows in enumerate(candidates):
        local = xyz[rows]
        if len(local):
            around[i] = np.count_nonzero(
                np.linalg.norm(local[:, :2] - boxes.centers[i, :2], axis=1) <= config.view_radius_m
            )
            on_box[i] = np.count_nonzero(
                _above_ground_in_boxes(boxes[i], local, config.margin_m, config.ground_clearance_m)
            )
    return on_box, around


def box_support(
    boxes: Boxes3D, observations: Sequence[np.ndarray], config: SupportConfig = SupportConfig()
) -> tuple[np.ndarray, tuple[Support, ...]]:
    """What one trip's lidar shows of each box, over several observations of the place.

    An object is ``OBSERVED`` when one observation (the trip's static cloud, one of its sweeps) has at least
    ``min_points`` points on it (:func:`box_point_counts`); otherwise ``NOT_OBSERVED`` when one observation
    has that many points around it (the trip saw the place: the object is gone or hidden), else
    ``OUT_OF_VIEW``. Objects seen only briefly (a bicycle passed close by) drop out of the persistent
    static cloud but not out of the sweep they were seen in.

    Args:
        boxes: N boxes in the observations' frame.
        observations: arrays (M_k, C>=3) of points.

    Returns:
        (N,) int the most points on each box in one observation, and N :class:`Support`.
    """
    on_box, around = np.zeros(len(boxes), np.int64), np.zeros(len(boxes), np.int64)
    for points in observations:
        on, near = box_point_counts(boxes, points, config)
        on_box, around = np.maximum(on_box, on), np.maximum(around, near)
    support = tuple(
        Support.OBSERVED
        if on >= config.min_points
        else (Support.NOT_OBSERVED if near >= config.min_points else Support.OUT_OF_VIEW)
        for on, near in zip(on_box, around, strict=True)
    )
    return on_box, support
