"""Lidar odometry for clips without poses: scan-to-map point-to-plane ICP (open3d) with a motion prior.

Every scan is cropped (near range: the ego body; far range), voxel-downsampled and registered to a
local map made of the last registered keyframe scans (point-to-plane ICP, coarse-to-fine
correspondence distances, robust Tukey kernel against moving objects). The ICP starts from a
constant-velocity prediction: the previous relative motion scaled by the ratio of the time steps::

    prev_SE3_pred = exp(dt_k / dt_{k-1} * log(prevprev_SE3_prev))      (SLERP + linear translation)
    world_SE3_ego[k] = world_SE3_ego[k-1] @ prev_SE3_cur                 (cur from ICP)

Before any motion is known (the first step) ICP starts from several forward/backward offsets and
keeps the best fit. ``world`` is the first scan's ego frame. Each step reports the ICP ``fitness`` (share of
scan points with a map point within the finest correspondence distance), the point-to-plane
``rmse_m`` of those matches and the scan's ``observability`` (:func:`scan_observability`: about 0
when the scan leaves a direction of motion free, e.g. a bare ground plane). A step failing a
threshold, or whose ICP result jumps far from the prior, is *degraded*: it keeps the motion prior,
is not added to the map, and is reported in ``warnings`` and through ``logging``.

Raw spinning-lidar points are motion-distorted (each point is in the ego frame at its own firing
time); pass per-point time offsets and the scans are de-skewed with the motion estimate first
(:func:`deskew_constant_velocity`, :func:`spin_time_offsets_s`).

Trajectory metrics (:func:`absolute_trajectory_error_m`, :func:`relative_pose_error`) compare an
estimate with ground truth poses, KITTI-odometry style.

Limitation: geometry alone cannot see along-track motion in a featureless corridor (continuous walls,
flat road) and co-moving traffic then pulls the estimate towards "standing still"; nothing here
removes moving objects, and the quality figures do not reliably flag that case (BENCHMARKS.md,
simulated highway).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np
import open3d as o3d
from scipy.spatial.transform import Rotation

from calibration import SE3, GeometryError, InputError

log = logging.getLogger(__name__)

_REG = o3d.pipelines.registration


@dataclass(frozen=True)
class OdometryConfig:
    """Scan-to-map odometry settings (defaults tuned on simulated 32-beam urban and highway drives).

    Attributes:
        voxel_size_m: scan downsampling voxel (source of the ICP).
        map_voxel_size_m: local map downsampling voxel (target of the ICP).
        min_range_m: drop points nearer than this (horizontally) to the ego origin: the ego body.
        max_range_m: drop points farther than this.
        min_height_m: drop points below this ego-frame height (``None`` keeps the ground, which
            pins height, roll and pitch).
        normal_radius_m: normal estimation radius (map and observability).
        normal_max_nn: most neighbours in the normal estimation.
        min_normal_extent_m: points whose neighbourhood spreads less than this across its main
            direction (square root of the middle covariance eigenvalue) have no reliable normal and
            are left out of the map.
        max_correspondence_m: ICP stages, coarse to fine (one ICP run per value).
        initial_correspondence_m: an extra first ICP stage while no motion is known yet.
        initial_guesses_m: while no motion is known yet (the first step), ICP starts from each of these
            offsets along ego x (forward/backward from standing still) and the best fit is kept, so
            sparse scans (2 Hz keyframes: metres apart) still lock on.
        icp_iterations: most iterations per stage.
        robust_kernel_scale: Tukey kernel width of the point-to-plane residuals, as a multiple of each
            stage's correspondence distance (``None``: plain least squares). A fixed narrow kernel
            would zero the weight of every residual when the prior is off by more than its width.
        map_keyframes: the local map holds at most this many keyframe scans...
        map_radius_m: ...within this distance of the current pose.
        keyframe_distance_m: a registered scan becomes a map keyframe after this much motion...
        keyframe_angle_deg: ...or this much rotation since the last keyframe.
        min_points: fewer downsampled points than this: degraded.
        min_fitness: ICP fitness (source points with a map point within the finest distance) below
            this: degraded.
        max_rmse_m: point-to-plane RMSE of those matches above this: degraded.
        min_observability: :func:`scan_observability` below this: degraded (the scan leaves a
            direction of motion unconstrained).
        max_correction_m: ICP ending farther than this from the motion prior: degraded...
        max_correction_deg: ...or turned more than this away from it.
        deskew_iterations: with point time offsets, how many times to de-skew again with the motion
            just estimated and register again (0: de-skew with the prior only).
    """

    voxel_size_m: float = 0.5
    map_voxel_size_m: float = 0.3
    min_range_m: float = 3.0
    max_range_m: float = 80.0
    min_height_m: float | None = None
    normal_radius_m: float = 1.0
    normal_max_nn: int = 20
    min_normal_extent_m: float = 0.25
    max_correspondence_m: tuple[float, ...] = (1.5, 0.5)
    initial_correspondence_m: float = 3.0
    initial_guesses_m: tuple[float, ...] = (0.0, 1.0, -1.0, 2.5, 5.0, 10.0)
    icp_iterations: int = 30
    robust_kernel_scale: float | None = 1.0
    map_keyframes: int = 30
    map_radius_m: float = 60.0
    keyframe_distance_m: float = 1.0
    keyframe_angle_deg: float = 5.0
    min_points: int = 200
    min_fitness: float = 0.3
    max_rmse_m: float = 0.15
    min_observability: float = 0.03
    max_correction_m: float = 1.0
    max_correction_deg: float = 5.0
    deskew_iterations: int = 0

    def __post_init__(self) -> None:
        if self.voxel_size_m <= 0 or self.map_voxel_size_m <= 0:
            raise InputError("odometry: voxel sizes must be positive")
        if not self.max_correspondence_m or min(self.max_correspondence_m) <= 0:
            raise InputError("odometry: max_correspondence_m needs at least one positive distance")
        if not 0 <= self.min_range_m < self.max_range_m:
            raise InputError(
                f"odometry: need 0 <= min_range_m < max_range_m, got {self.min_range_m}, {self.max_range_m}"
            )
        if self.map_keyframes < 1 or self.icp_iterations < 1:
            raise InputError("odometry: map_keyframes and icp_iterations must be >= 1")


@dataclass(frozen=True, eq=False)
class OdometryResult:
    """Per-scan odometry output (F scans).

    Attributes:
        world_SE3_ego: F poses; ``world`` is the first scan's ego frame (the first pose is identity).
        fitness: (F,) ICP inlier fraction of each step (1.0 for the first scan).
        rmse_m: (F,) point-to-plane RMSE of the inlier matches (0.0 for the first scan).
        observability: (F,) :func:`scan_observability` of each scan (near 0: a direction of motion
            the scan cannot pin down).
        degraded: (F,) bool, True where a threshold failed and the pose is the motion prior.
        warnings: one human-readable line per degraded step, naming the scan index and the figures.
        step_time_s: (F,) wall time of each step (informative, not deterministic).
    """

    world_SE3_ego: tuple[SE3, ...]
    fitness: np.ndarray
    rmse_m: np.ndarray
    observability: np.ndarray
    degraded: np.ndarray
    warnings: tuple[str, ...]
    step_time_s: np.ndarray

    def __len__(self) -> int:
        return len(self.world_SE3_ego)


# ----------------------------------------------------------------------------------- motion model
@dataclass(frozen=True)
class _Velocity:
    """Constant body velocity: rotation vector and translation per second, in the ego frame."""

    rotvec_per_s: np.ndarray
    translation_per_s: np.ndarray

    @classmethod
    def zero(cls) -> _Velocity:
        return cls(np.zeros(3), np.zeros(3))

    @classmethod
    def from_motion(cls, prev_SE3_cur: SE3, dt_s: float) -> _Velocity:
        rotvec = Rotation.from_matrix(prev_SE3_cur.rotation).as_rotvec()
        return cls(rotvec / dt_s, prev_SE3_cur.translation / dt_s)

    def motion(self, dt_s: float) -> SE3:
        """``prev_SE3_cur`` after ``dt_s`` seconds (SLERP rotation, linear translation)."""
        return SE3(Rotation.from_rotvec(self.rotvec_per_s * dt_s).as_matrix(), self.translation_per_s * dt_s)


def _rotations_from_rotvecs(rotvecs: np.ndarray) -> np.ndarray:
    """(N, 3, 3) rotation matrices of (N, 3) rotation vectors (Rodrigues, vectorised)."""
    angle = np.linalg.norm(rotvecs, axis=1)
    small = angle < 1e-12
    axis = rotvecs / np.where(small, 1.0, angle)[:, None]
    x, y, z = axis.T
    zero = np.zeros_like(x)
    k = np.stack([zero, -z, y, z, zero, -x, -y, x, zero], axis=1).reshape(-1, 3, 3)
    s, c = np.sin(angle)[:, None, None], (1.0 - np.cos(angle))[:, None, None]
    return np.eye(3)[None] + s * k + c * (k @ k)


def deskew_constant_velocity(
    points_ego: np.ndarray,
    time_offset_s: np.ndarray,
    rotvec_per_s: np.ndarray,
    translation_per_s: np.ndarray,
) -> np.ndarray:
    """Re-express motion-distorted points in the ego frame at the sweep timestamp.

    A point captured ``dt`` after the sweep timestamp is given in the ego frame at its own capture
    time; under a constant body velocity the ego frame at the timestamp sees it at
    ``sweep_SE3_capture(dt) @ p`` with ``sweep_SE3_capture(dt) = (exp(dt * rotvec_per_s), dt * translation_per_s)``
    (the same SLERP + linear model as :func:`calibration.interpolate_pose`).

    Args:
        points_ego: (N, C>=3) points, each in the ego frame at its capture time.
        time_offset_s: (N,) capture time minus the sweep timestamp.
        rotvec_per_s: (3,) ego angular velocity as a rotation vector per second, ego frame.
        translation_per_s: (3,) ego velocity in m/s, ego frame.

    Returns:
        (N, C) points of the input dtype, xyz in the ego frame at the sweep timestamp; other columns kept.
    """
    pts = np.asarray(points_ego)
    dt = np.asarray(time_offset_s, dtype=np.float64).reshape(-1)
    if pts.ndim != 2 or pts.shape[1] < 3 or len(dt) != len(pts):
        raise GeometryError(f"deskew: need (N, C>=3) points and N time offsets, got {pts.shape} and {dt.shape}")
    omega = np.asarray(rotvec_per_s, dtype=np.float64).reshape(3)
    velocity = np.asarray(translation_per_s, dtype=np.float64).reshape(3)
    rotations = _rotations_from_rotvecs(dt[:, None] * omega[None])
    xyz = np.einsum("nij,nj->ni", rotations, pts[:, :3].astype(np.float64)) + dt[:, None] * velocity[None]
    out = np.array(pts, copy=True)
    out[:, :3] = xyz
    return out


def spin_time_offsets_s(
    points_ego: np.ndarray,
    lidar_origin_ego: Sequence[float],
    period_s: float,
    *,
    clockwise: bool = True,
) -> np.ndarray:
    """Per-point capture time offsets of a spinning lidar that points along ego +x at the sweep time.

    ``dt = -wrap(azimuth) / (2 pi) * period_s`` for a clockwise spin (nuScenes, the simulator),
    ``+wrap(azimuth) / (2 pi) * period_s`` for a counter-clockwise one, with ``azimuth`` the
    direction of the point from the lidar origin in the ego frame, wrapped to (-pi, pi].

    Args:
        points_ego: (N, C>=3) points in the ego frame (raw, each at its capture time).
        lidar_origin_ego: (3,) lidar position in the ego frame (``ego_SE3_lidar.translation``).
        period_s: one revolution.

    Returns:
        (N,) float64 offsets in [-period_s/2, period_s/2].
    """
    pts = np.asarray(points_ego, dtype=np.float64)
    origin = np.asarray(lidar_origin_ego, dtype=np.float64).reshape(3)
    azimuth = np.arctan2(pts[:, 1] - origin[1], pts[:, 0] - origin[0])
    sign = -1.0 if clockwise else 1.0
    return sign * azimuth / (2.0 * np.pi) * period_s


# ----------------------------------------------------------------------------------- point clouds
def _crop(points_ego: np.ndarray, config: OdometryConfig) -> np.ndarray:
    """Boolean (N,) mask of the points the odometry uses."""
    xyz = points_ego[:, :3]
    r = np.linalg.norm(xyz[:, :2], axis=1)
    keep = (r >= config.min_range_m) & (r <= config.max_range_m) & np.isfinite(xyz).all(axis=1)
    if config.min_height_m is not None:
        keep &= xyz[:, 2] >= config.min_height_m
    return keep


def open3d_cloud(xyz: np.ndarray) -> o3d.geometry.PointCloud:
    cloud = o3d.geometry.PointCloud()
    cloud.points = o3d.utility.Vector3dVector(np.ascontiguousarray(xyz, dtype=np.float64))
    return cloud


def _downsample(xyz: np.ndarray, voxel_m: float) -> np.ndarray:
    """(M, 3) voxel centroids of (N, 3) points."""
    if len(xyz) == 0:
        return np.zeros((0, 3))
    return np.asarray(open3d_cloud(xyz).voxel_down_sample(voxel_m).points)


def surface_normals(cloud: o3d.geometry.PointCloud, config: OdometryConfig) -> tuple[np.ndarray, np.ndarray]:
    """Which points of ``cloud`` lie on a surface, and its normal there.

    A neighbourhood that is (nearly) a line has no well-defined normal: one far ground ring, or two
    rings a few centimetres apart from two keyframes, where a millimetre of height error tilts the
    normal by degrees and feeds back into roll and pitch drift. Such points (square root of the
    middle covariance eigenvalue below ``config.min_normal_extent_m``) are left out.

    Returns:
        (N,) bool mask of the surface points and (N, 3) unit normals (meaningless where masked out).
    """
    if len(cloud.points) == 0:
        return np.zeros(0, dtype=bool), np.zeros((0, 3))
    cloud.estimate_covariances(
        o3d.geometry.KDTreeSearchParamHybrid(radius=config.normal_radius_m, max_nn=config.normal_max_nn)
    )
    eigenvalues, eigenvectors = np.linalg.eigh(np.asarray(cloud.covariances))  # ascending
    return eigenvalues[:, 1] >= config.min_normal_extent_m**2, eigenvectors[:, :, 0]


def scan_observability(xyz_ego: np.ndarray, config: OdometryConfig) -> float:
    """How well a scan's own surfaces pin down its position: 0 (a free direction) to 1/3 (isotropic).

    The smallest eigenvalue of ``sum(n_i n_i^T) / K`` over the K points of the scan that lie on a
    surface (``n_i`` its unit normal): the share of the surface normals' weight along the least
    constrained direction. A bare ground plane gives 0 (nothing fixes x or y), a straight corridor
    of walls and road only the few along-track facing surfaces (poles, trees, cars) it has; an urban
    street with buildings, cars and poles about 0.2. Normal noise keeps real scans a little above 0.

    Args:
        xyz_ego: (N, 3) (downsampled) scan points in the ego frame.
    """
    mask, normals = surface_normals(open3d_cloud(xyz_ego), config)
    if mask.sum() < 6:
        return 0.0
    n = normals[mask]
    return float(np.linalg.eigvalsh(n.T @ n / len(n))[0])


class _LocalMap:
    """The last keyframe scans in the world frame, merged into one normal-carrying target cloud."""

    def __init__(self, config: OdometryConfig) -> None:
        self.config = config
        self.keyframes: deque[tuple[SE3, np.ndarray]] = deque(maxlen=config.map_keyframes)
        self._target: o3d.geometry.PointCloud | None = None
        self._centre: np.ndarray | None = None

    def add(self, world_SE3_ego: SE3, xyz_ego: np.ndarray) -> None:
        self.keyframes.append((world_SE3_ego, world_SE3_ego.transform_points(xyz_ego)))
        self._target = None

    def last_keyframe_pose(self) -> SE3:
        return self.keyframes[-1][0]

    def target(self, world_SE3_ego: SE3) -> o3d.geometry.PointCloud:
        """The map cloud (surface points with normals) around ``world_SE3_ego``; cached until it changes."""
        centre = world_SE3_ego.translation
        far = self._centre is not None and np.linalg.norm(centre - self._centre) > self.config.map_radius_m / 4
        if self._target is None or far:
            near = [
                xyz
                for pose, xyz in self.keyframes
                if np.linalg.norm(pose.translation - centre) <= self.config.map_radius_m
            ] or [self.keyframes[-1][1]]
            cloud = open3d_cloud(np.concatenate(near)).voxel_down_sample(self.config.map_voxel_size_m)
            mask, normals = surface_normals(cloud, self.config)
            target = open3d_cloud(np.asarray(cloud.points)[mask])
            target.normals = o3d.utility.Vector3dVector(np.ascontiguousarray(normals[mask]))
            self._target, self._centre = target, centre
        return self._target


# ----------------------------------------------------------------------------------- registration
@dataclass(frozen=True)
class _Step:
    world_SE3_ego: SE3
    fitness: float
    rmse_m: float


def register_point_to_plane(
    source_ego: np.ndarray,
    target: o3d.geometry.PointCloud,
    init: SE3,
    distances_m: Sequence[float],
    config: OdometryConfig,
) -> _Step:
    """Point-to-plane ICP of ``source_ego`` (M, 3) against the map from ``init``, one run per distance."""
    if len(source_ego) < 6 or len(target.points) < 6:
        return _Step(init, 0.0, np.inf)
    source = open3d_cloud(source_ego)
    transform = init.as_matrix()
    criteria = _REG.ICPConvergenceCriteria(
        relative_fitness=1e-7, relative_rmse=1e-7, max_iteration=config.icp_iterations
    )
    result = None
    for distance in distances_m:
        if config.robust_kernel_scale:
            estimation = _REG.TransformationEstimationPointToPlane(
                _REG.TukeyLoss(k=config.robust_kernel_scale * distance)
            )
        else:
            estimation = _REG.TransformationEstimationPointToPlane()
        result = _REG.registration_icp(source, target, distance, transform, estimation, criteria)
        transform = np.asarray(result.transformation)
        if not np.all(np.isfinite(transform)):  # a singular system: no usable registration
            return _Step(init, 0.0, np.inf)
    pose = SE3.from_matrix(transform, orthonormalize_tol=1e-6)
    pairs = np.asarray(result.correspondence_set, dtype=np.int64).reshape(-1, 2)
    if len(pairs) == 0:
        return _Step(pose, 0.0, np.inf)
    residual = np.sum(
        (pose.transform_points(source_ego[pairs[:, 0]]) - np.asarray(target.points)[pairs[:, 1]])
        * np.asarray(target.normals)[pairs[:, 1]],
        axis=1,
    )
    return _Step(pose, float(result.fitness), float(np.sqrt(np.mean(residual**2))))


def rotation_angle_deg(pose: SE3) -> float:
    return float(np.degrees(np.linalg.norm(Rotation.from_matrix(pose.rotation).as_rotvec())))


def _problems(
    step: _Step, prior: SE3 | None, num_points: int, observability: float, config: OdometryConfig
) -> list[str]:
    """Why a step is degraded (empty: it is fine)."""
    problems = []
    if num_points < config.min_points:
        problems.append(f"{num_points} points < {config.min_points}")
    if step.fitness < config.min_fitness:
        problems.append(f"fitness {step.fitness:.2f} < {config.min_fitness:.2f}")
    if step.rmse_m > config.max_rmse_m:
        problems.append(f"point-to-plane rmse {step.rmse_m:.3f} m > {config.max_rmse_m:.3f} m")
    if observability < config.min_observability:
        problems.append(f"observability {observability:.4f} < {config.min_observability:.4f}")
    if prior is not None:
        correction = prior.inverse() @ step.world_SE3_ego
        moved_m, turned_deg = float(np.linalg.norm(correction.translation)), rotation_angle_deg(correction)
        if moved_m > config.max_correction_m or turned_deg > config.max_correction_deg:
            problems.append(f"ICP moved {moved_m:.2f} m / {turned_deg:.1f} deg away from the motion prior")
    return problems


def estimate_odometry(
    scans_ego: Sequence[np.ndarray],
    timestamps_us: Sequence[int],
    config: OdometryConfig = OdometryConfig(),
    *,
    point_time_offsets_s: Sequence[np.ndarray] | None = None,
) -> OdometryResult:
    """Scan-to-map lidar odometry.

    Args:
        scans_ego: F scans, each (N_k, C>=3) float32 points in that scan's ego frame.
        timestamps_us: F strictly increasing scan timestamps.
        config: settings.
        point_time_offsets_s: optional F arrays (N_k,) of capture time minus the scan timestamp
            (:func:`spin_time_offsets_s`); when given, each scan is de-skewed under the
            constant-velocity motion estimate before registration.

    Returns:
        Poses ``world_SE3_ego`` with ``world`` = the first scan's ego frame, and per-step quality.

    Raises:
        InputError: no scans, mismatched lengths, non-increasing timestamps, bad point arrays.
    """
    times_us = np.asarray(timestamps_us, dtype=np.int64).reshape(-1)
    if len(scans_ego) == 0 or len(times_us) != len(scans_ego):
        raise InputError(f"odometry: need one timestamp per scan, got {len(scans_ego)} scans, {len(times_us)} times")
    if np.any(np.diff(times_us) <= 0):
        raise InputError("odometry: scan timestamps must be strictly increasing")
    if point_time_offsets_s is not None and len(point_time_offsets_s) != len(scans_ego):
        raise InputError("odometry: need one time-offset array per scan")
    for k, scan in enumerate(scans_ego):
        if np.ndim(scan) != 2 or np.shape(scan)[1] < 3:
            raise InputError(f"odometry: scan {k} must have shape (N, C>=3), got {np.shape(scan)}")

    def prepared(k: int, velocity: _Velocity) -> np.ndarray:
        """(M, 3) cropped, de-skewed, downsampled xyz of scan k."""
        pts = np.asarray(scans_ego[k])
        keep = _crop(pts, config)
        xyz = pts[keep, :3].astype(np.float64)
        if point_time_offsets_s is not None:
            offsets = np.asarray(point_time_offsets_s[k], dtype=np.float64).reshape(-1)
            if len(offsets) != len(pts):
                raise InputError(f"odometry: scan {k} has {len(pts)} points but {len(offsets)} time offsets")
            xyz = deskew_constant_velocity(xyz, offsets[keep], velocity.rotvec_per_s, velocity.translation_per_s)
        return _downsample(xyz, config.voxel_size_m)

    n = len(scans_ego)
    poses: list[SE3] = [SE3.identity()]
    fitness, rmse, observability = np.ones(n), np.zeros(n), np.zeros(n)
    degraded, step_time = np.zeros(n, dtype=bool), np.zeros(n)
    warnings: list[str] = []

    def warn(k: int, problems: list[str], consequence: str) -> None:
        degraded[k] = True
        warnings.append(f"scan {k} (t={times_us[k]} us): {', '.join(problems)}; {consequence}")
        log.warning("odometry degraded at %s", warnings[-1])

    start = time.perf_counter()
    velocity, motion_known = _Velocity.zero(), False
    local_map = _LocalMap(config)
    first = prepared(0, velocity)
    local_map.add(poses[0], first)
    observability[0] = scan_observability(first, config)
    if len(first) < config.min_points or observability[0] < config.min_observability:
        problems = _problems(_Step(poses[0], 1.0, 0.0), None, len(first), observability[0], config)
        warn(0, problems, "the map starts from a poor scan")
    step_time[0] = time.perf_counter() - start

    for k in range(1, n):
        start = time.perf_counter()
        dt_s = (times_us[k] - times_us[k - 1]) / 1e6
        prior = poses[-1] @ velocity.motion(dt_s)
        target = local_map.target(prior)
        xyz = prepared(k, velocity)
        if motion_known:
            step = register_point_to_plane(xyz, target, prior, config.max_correspondence_m, config)
        else:
            # No motion yet: try several forward/backward offsets with a wider first stage, keep the best fit.
            stages = (config.initial_correspondence_m, *config.max_correspondence_m)
            guesses = [prior @ SE3(np.eye(3), (dx, 0.0, 0.0)) for dx in config.initial_guesses_m or (0.0,)]
            steps = [register_point_to_plane(xyz, target, guess, stages, config) for guess in guesses]
            step = max(steps, key=lambda candidate: candidate.fitness)  # first of equals: deterministic
        # De-skew again with the motion just estimated; the very first step also re-de-skews scan 0,
        # which had no motion estimate at all.
        rounds = max(config.deskew_iterations, 1) if not motion_known else config.deskew_iterations
        for _ in range(rounds if point_time_offsets_s is not None else 0):
            velocity_k = _Velocity.from_motion(poses[-1].inverse() @ step.world_SE3_ego, dt_s)
            if k == 1:
                local_map = _LocalMap(config)
                local_map.add(poses[0], prepared(0, velocity_k))
                target = local_map.target(prior)
            xyz = prepared(k, velocity_k)
            step = register_point_to_plane(xyz, target, step.world_SE3_ego, config.max_correspondence_m, config)
        observability[k] = scan_observability(xyz, config)
        fitness[k], rmse[k] = step.fitness, step.rmse_m
        problems = _problems(step, prior if motion_known else None, len(xyz), observability[k], config)
        if problems:
            warn(k, problems, "pose from the constant-velocity prior")
            poses.append(prior)  # keep the velocity; the scan stays out of the map
        else:
            poses.append(step.world_SE3_ego)
            velocity, motion_known = _Velocity.from_motion(poses[-2].inverse() @ poses[-1], dt_s), True
            moved = local_map.last_keyframe_pose().inverse() @ poses[-1]
            if np.linalg.norm(moved.translation) >= config.keyframe_distance_m or (
                rotation_angle_deg(moved) >= config.keyframe_angle_deg
            ):
                local_map.add(poses[-1], xyz)
        step_time[k] = time.perf_counter() - start

    return OdometryResult(
        world_SE3_ego=tuple(poses),
        fitness=fitness,
        rmse_m=rmse,
        observability=observability,
        degraded=degraded,
        warnings=tuple(warnings),
        step_time_s=step_time,
    )


# ----------------------------------------------------------------------------------- metrics
class TrajectoryAlignment(str, Enum):
    """How :func:`absolute_trajectory_error_m` aligns the estimate with the truth."""

    FIRST_POSE = "first_pose"  # both trajectories re-expressed relative to their first pose
    RIGID = "rigid"  # then the best-fit rotation + translation of the positions (Kabsch, no scale)


def _relative_to_first(poses: Sequence[SE3]) -> list[SE3]:
    first_inv = poses[0].inverse()
    return [first_inv @ p for p in poses]


def _check_pair(estimated: Sequence[SE3], truth: Sequence[SE3]) -> None:
    if len(estimated) != len(truth) or len(truth) < 2:
        raise InputError(
            f"trajectory metrics need two equally long trajectories (>= 2 poses), got {len(estimated)} and {len(truth)}"
        )


def absolute_trajectory_error_m(
    estimated: Sequence[SE3],
    truth: Sequence[SE3],
    alignment: TrajectoryAlignment = TrajectoryAlignment.FIRST_POSE,
) -> float:
    """RMSE of the position differences between two trajectories (ATE), in metres.

    ``FIRST_POSE``: both start at their first pose (``first^-1 @ pose``), no fitting: drift shows
    fully. ``RIGID``: additionally the best-fit rigid transform of the estimated positions onto the
    true ones (Kabsch/Umeyama without scale), the usual TUM/evo definition.
    """
    _check_pair(estimated, truth)
    est = np.stack([p.translation for p in _relative_to_first(estimated)])
    ref = np.stack([p.translation for p in _relative_to_first(truth)])
    if TrajectoryAlignment(alignment) is TrajectoryAlignment.RIGID:
        est_c, ref_c = est - est.mean(axis=0), ref - ref.mean(axis=0)
        u, _, vt = np.linalg.svd(ref_c.T @ est_c)
        d = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
        rotation = u @ d @ vt
        est = est_c @ rotation.T + ref.mean(axis=0)
    return float(np.sqrt(np.mean(np.sum((est - ref) ** 2, axis=1))))


def relative_pose_error(
    estimated: Sequence[SE3],
    truth: Sequence[SE3],
    distances_m: Sequence[float] = (10.0, 20.0, 50.0, 100.0),
    *,
    step: int = 1,
) -> tuple[float, float]:
    """KITTI-odometry relative pose error over path segments of the given lengths.

    For every start index ``i`` (every ``step``-th) and length ``L``, the segment ends at the first
    ``j`` whose true path length from ``i`` reaches ``L``; its error is
    ``(truth_i^-1 truth_j)^-1 @ (est_i^-1 est_j)``, divided by the segment's true path length (at
    least ``L``; KITTI divides by ``L``, which overstates the error when poses are sparse). Segments
    running past the end are skipped.

    Returns:
        ``(translation_error_percent, rotation_error_deg_per_m)``: the mean over all segments of the
        error's translation norm / length * 100 and its rotation angle (degrees) / length.

    Raises:
        InputError: mismatched trajectories, or no segment of any requested length fits.
    """
    _check_pair(estimated, truth)
    positions = np.stack([p.translation for p in truth])
    travelled = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(positions, axis=0), axis=1))])
    t_errors, r_errors = [], []
    for i in range(0, len(truth), max(step, 1)):
        for length in distances_m:
            j = int(np.searchsorted(travelled, travelled[i] + length))
            if j >= len(truth):
                continue
            truth_rel = truth[i].inverse() @ truth[j]
            est_rel = estimated[i].inverse() @ estimated[j]
            error = truth_rel.inverse() @ est_rel
            angle = np.linalg.norm(Rotation.from_matrix(error.rotation).as_rotvec())
            segment_m = travelled[j] - travelled[i]
            t_errors.append(np.linalg.norm(error.translation) / segment_m)
            r_errors.append(np.degrees(angle) / segment_m)
    if not t_errors:
        raise InputError(
            f"relative pose error: the trajectory ({travelled[-1]:.1f} m) is shorter than every segment length "
            f"{list(distances_m)} m"
        )
    return float(np.mean(t_errors) * 100.0), float(np.mean(r_errors))


def path_length_m(poses: Sequence[SE3]) -> float:
    """Sum of the distances between consecutive positions."""
    positions = np.stack([p.translation for p in poses])
    return float(np.linalg.norm(np.diff(positions, axis=0), axis=1).sum())
