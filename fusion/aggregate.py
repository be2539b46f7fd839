"""Multi-sweep aggregation: lidar sweeps brought into one frame over time, with per-point time.

Arrays in, arrays out (no file I/O). A sweep is ``(N, 4)`` float32 ``x, y, z, intensity`` in its lidar
frame plus the poses needed to place it. Output clouds are ``(N, 5)`` float32
``x, y, z, intensity, dt_s`` where ``dt_s`` is the capture time of the point minus the reference time
(negative for older sweeps), so dynamic points stay separable by time.

De-skew: a spinning lidar captures a sweep over one revolution while the vehicle moves. When the
per-point capture time is known (``time_offset_s``), every point is placed with the ego pose at its
own time, interpolated (SLERP + linear) along the sweeps' pose track.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from calibration import SE3, GeometryError

POINT_COLUMNS = ("x", "y", "z", "intensity", "dt_s")
TIME_QUANTUM_US = 100.0


@dataclass(frozen=True, eq=False)
class SweepInput:
    """One lidar sweep with its poses.

    Attributes:
        points: (N, 4) float32 ``x, y, z, intensity`` in the lidar frame (raw).
        timestamp_us: sweep time.
        world_SE3_ego: ego pose at ``timestamp_us``.
        ego_SE3_lidar: extrinsics.
        time_offset_s: (N,) float32 capture time minus ``timestamp_us``, or ``None`` when unknown.
    """

    points: np.ndarray
    timestamp_us: int
    world_SE3_ego: SE3
    ego_SE3_lidar: SE3
    time_offset_s: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class PoseTrack:
    """Ego poses over time for vectorised interpolation.

    Attributes:
        timestamps_us: (K,) strictly increasing.
        rotations: (K, 3, 3) ``world_R_ego``.
        translations: (K, 3) ``world_t_ego``.
    """

    timestamps_us: np.ndarray
    rotations: np.ndarray
    translations: np.ndarray

    @classmethod
    def from_poses(cls, timestamps_us: Sequence[int], poses: Sequence[SE3]) -> PoseTrack:
        ts = np.asarray(timestamps_us, dtype=np.int64)
        order = np.argsort(ts, kind="stable")
        ts = ts[order]
        keep = np.concatenate([[True], np.diff(ts) > 0])  # duplicates (same sweep listed twice) collapse
        idx = order[keep]
        return cls(ts[keep], np.stack([poses[i].rotation for i in idx]), np.stack([poses[i].translation for i in idx]))

    def interpolate(self, t_us: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rotations (Q, 3, 3) and translations (Q, 3) at ``t_us`` (Q,); constant-velocity beyond the ends."""
        t = np.asarray(t_us, dtype=np.float64)
        if len(self.timestamps_us) == 1:
            return (
                np.broadcast_to(self.rotations[0], (len(t), 3, 3)),
                np.broadcast_to(self.translations[0], (len(t), 3)),
            )
        ts = self.timestamps_us.astype(np.float64)
        i = np.clip(np.searchsorted(ts, t, side="right") - 1, 0, len(ts) - 2)
        alpha = (t - ts[i]) / (ts[i + 1] - ts[i])
        r0, r1 = self.rotations[i], self.rotations[i + 1]
        rel = Rotation.from_matrix(np.einsum("nji,njk->nik", r0, r1)).as_rotvec()
        rotations = r0 @ Rotation.from_rotvec(alpha[:, None] * rel).as_matrix()
        translations = self.translations[i] + alpha[:, None] * (self.translations[i + 1] - self.translations[i])
        return rotations, translations


def time_offsets_from_azimuth(points_lidar: np.ndarray, ego_SE3_lidar: SE3, period_s: float) -> np.ndarray:
    """(N,) float32 capture-time offsets of raw points from a lidar spinning clockwise that points along
    ego +x at the sweep timestamp: ``-wrap(azimuth_ego) / (2 pi) * period_s`` in ``[-period/2, period/2]``."""
    directions = ego_SE3_lidar.rotate_vectors(np.asarray(points_lidar)[:, :3].astype(np.float64))
    azimuth = np.arctan2(directions[:, 1], directions[:, 0])
    return (-azimuth / (2.0 * np.pi) * period_s).astype(np.float32)


def sweep_to_world(sweep: SweepInput, track: PoseTrack | None = None) -> np.ndarray:
    """(N, 3) float64 world coordinates of a sweep's points, de-skewed when timing and a track are given."""
    pts = np.asarray(sweep.points)
    if pts.ndim != 2 or pts.shape[1] < 3:
        raise GeometryError(f"sweep points must have shape (N, C>=3), got {pts.shape}")
    points_ego = sweep.ego_SE3_lidar.transform_points(pts[:, :3].astype(np.float64))
    if sweep.time_offset_s is None or track is None:
        return sweep.world_SE3_ego.transform_points(points_ego)
    # Capture times quantised to TIME_QUANTUM_US: one pose per distinct time (a few hundred per sweep)
    # instead of one per point; 0.1 ms is 3 mm at 30 m/s.
    t_us = sweep.timestamp_us + np.asarray(sweep.time_offset_s, dtype=np.float64) * 1e6
    times, inverse = np.unique(np.round(t_us / TIME_QUANTUM_US), return_inverse=True)
    rotations, translations = track.interpolate(times * TIME_QUANTUM_US)
    return np.einsum("nij,nj->ni", rotations[inverse], points_ego) + translations[inverse]


def point_dt_s(timestamp_us: int, time_offset_s: np.ndarray | None, n: int, ref_timestamp_us: int) -> np.ndarray:
    """(n,) float64 capture time of a sweep's points relative to ``ref_timestamp_us``."""
    dt = (timestamp_us - ref_timestamp_us) / 1e6
    return dt + (np.zeros(n) if time_offset_s is None else np.asarray(time_offset_s, dtype=np.float64))


def combine(
    world_xyz: Sequence[np.ndarray], intensity: Sequence[np.ndarray], dt_s: Sequence[np.ndarray], ref_world_SE3_ego: SE3
) -> np.ndarray:
    """(M, 5) float32 ``x, y, z, intensity, dt_s`` in the reference ego frame from per-sweep world points.

    Args:
        world_xyz: per sweep (N_k, 3) world coordinates (already de-skewed).
        intensity: per sweep (N_k,).
        dt_s: per sweep (N_k,) time relative to the reference time.
    """
    if not world_xyz:
        return np.zeros((0, 5), np.float32)
    xyz = ref_world_SE3_ego.inverse().transform_points(np.concatenate(world_xyz))
    return np.column_stack([xyz, np.concatenate(intensity), np.concatenate(dt_s)]).astype(np.float32)


def aggregate(
    sweeps: Sequence[SweepInput], ref_world_SE3_ego: SE3, ref_timestamp_us: int, track: PoseTrack | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Bring sweeps into the reference ego frame.

    Args:
        sweeps: the sweeps to combine (any order).
        ref_world_SE3_ego: the reference frame (usually the keyframe's ego pose).
        ref_timestamp_us: time that ``dt_s`` is measured from.
        track: ego poses over time for per-point de-skew (sweeps with ``time_offset_s`` use it).

    Returns:
        points: (M, 5) float32 ``x, y, z, intensity, dt_s`` in the reference ego frame.
        sweep_index: (M,) int32 position of each point's sweep in ``sweeps``.
    """
    points = combine(
        [sweep_to_world(s, track) for s in sweeps],
        [np.asarray(s.points)[:, 3] for s in sweeps],
        [point_dt_s(s.timestamp_us, s.time_offset_s, len(s.points), ref_timestamp_us) for s in sweeps],
        ref_world_SE3_ego,
    )
    index = np.concatenate(
        [np.full(len(s.points), k, np.int32) for k, s in enumerate(sweeps)] or [np.zeros(0, np.int32)]
    )
    return points, index


def voxel_downsample(points: np.ndarray, voxel_m: float) -> np.ndarray:
    """Keep the first point of every occupied ``voxel_m`` cube (stable, deterministic); (M, C) -> (K, C)."""
    if voxel_m <= 0:
        raise GeometryError(f"voxel size must be positive, got {voxel_m}")
    keys = np.floor(np.asarray(points)[:, :3] / voxel_m).astype(np.int64)
    _, first = np.unique(keys, axis=0, return_index=True)
    return np.asarray(points)[np.sort(first)]
