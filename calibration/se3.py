"""Rigid transforms: immutable :class:`SE3` and pose interpolation over time.

Naming: ``dst_SE3_src`` maps points expressed in ``src`` into ``dst``::

    p_world = world_SE3_ego.transform_points(p_ego)
    world_SE3_lidar = world_SE3_ego @ ego_SE3_lidar
    ego_SE3_world = world_SE3_ego.inverse()

Rotation maths is delegated to :class:`scipy.spatial.transform.Rotation`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from calibration.errors import GeometryError

_ORTHO_TOL = 1e-6


def _frozen(array: np.ndarray) -> np.ndarray:
    out = np.array(array, dtype=np.float64, copy=True)
    out.setflags(write=False)
    return out


@dataclass(frozen=True, eq=False)
class SE3:
    """A rigid transform ``x -> rotation @ x + translation``.

    Attributes:
        rotation: (3, 3) float64 proper rotation matrix (read-only).
        translation: (3,) float64 translation in metres (read-only).
    """

    rotation: np.ndarray
    translation: np.ndarray

    __array_ufunc__ = None  # ``SE3 @ ndarray`` is a TypeError, not numpy broadcasting

    def __post_init__(self) -> None:
        rotation = np.asarray(self.rotation, dtype=np.float64)
        translation = np.asarray(self.translation, dtype=np.float64).reshape(-1)
        if rotation.shape != (3, 3) or translation.shape != (3,):
            raise GeometryError(
                f"SE3 needs a 3x3 rotation and a 3-vector, got {rotation.shape} and {translation.shape}"
            )
        if not (np.all(np.isfinite(rotation)) and np.all(np.isfinite(translation))):
            raise GeometryError("SE3 rotation/translation contain non-finite values")
        if np.abs(rotation @ rotation.T - np.eye(3)).max() > _ORTHO_TOL or np.linalg.det(rotation) <= 0:
            raise GeometryError("SE3 rotation is not a proper rotation matrix (R R^T != I or det <= 0)")
        object.__setattr__(self, "rotation", _frozen(rotation))
        object.__setattr__(self, "translation", _frozen(translation))

    # ----------------------------------------------------------------------------- constructors
    @classmethod
    def identity(cls) -> SE3:
        return cls(np.eye(3), np.zeros(3))

    @classmethod
    def from_matrix(cls, matrix: np.ndarray, *, orthonormalize_tol: float = 0.0) -> SE3:
        """From a (4, 4) or (3, 4) homogeneous matrix.

        ``orthonormalize_tol > 0`` accepts a rotation block that deviates from orthonormal by at most
        that much (calibration files store rounded matrices) and projects it onto SO(3) by SVD.
        """
        m = np.asarray(matrix, dtype=np.float64)
        if m.shape not in ((4, 4), (3, 4)):
            raise GeometryError(f"SE3.from_matrix needs a 4x4 or 3x4 matrix, got shape {m.shape}")
        if m.shape == (4, 4) and not np.allclose(m[3], [0.0, 0.0, 0.0, 1.0]):
            raise GeometryError(f"SE3.from_matrix: last row must be [0, 0, 0, 1], got {m[3].tolist()}")
        rotation = m[:3, :3]
        if orthonormalize_tol > 0.0:
            rotation = nearest_rotation(rotation, tol=orthonormalize_tol)
        return cls(rotation, m[:3, 3])

    @classmethod
    def from_quaternion_wxyz(cls, quaternion_wxyz: Sequence[float], translation: Sequence[float]) -> SE3:
        """From a unit quaternion in scalar-first ``(w, x, y, z)`` order (nuScenes) and a translation."""
        q = np.asarray(quaternion_wxyz, dtype=np.float64).reshape(-1)
        if q.shape != (4,) or not np.all(np.isfinite(q)):
            raise GeometryError(f"quaternion must be 4 finite numbers (w, x, y, z), got {q.tolist()}")
        norm = np.linalg.norm(q)
        if abs(norm - 1.0) > 1e-3:
            raise GeometryError(f"quaternion {q.tolist()} is not unit length (norm {norm:.6f})")
        rotation = Rotation.from_quat([q[1], q[2], q[3], q[0]]).as_matrix()
        return cls(rotation, translation)

    @classmethod
    def from_rotation(cls, rotation: Rotation, translation: Sequence[float] = (0.0, 0.0, 0.0)) -> SE3:
        return cls(rotation.as_matrix(), translation)

    @classmethod
    def from_yaw(cls, yaw_rad: float, translation: Sequence[float] = (0.0, 0.0, 0.0)) -> SE3:
        """A rotation about +z by ``yaw_rad`` (counter-clockwise seen from above) plus a translation."""
        return cls(Rotation.from_euler("z", yaw_rad).as_matrix(), translation)

    # ----------------------------------------------------------------------------- conversions
    def as_matrix(self) -> np.ndarray:
        """(4, 4) homogeneous matrix (a fresh writable array)."""
        m = np.eye(4)
        m[:3, :3] = self.rotation
        m[:3, 3] = self.translation
        return m

    @property
    def quaternion_wxyz(self) -> np.ndarray:
        """(4,) unit quaternion ``(w, x, y, z)`` with ``w >= 0``."""
        x, y, z, w = Rotation.from_matrix(self.rotation).as_quat()
        q = np.array([w, x, y, z])
        return -q if w < 0 else q

    @property
    def yaw_rad(self) -> float:
        """Twist angle about +z (swing-twist decomposition), in (-pi, pi].

        Equals the heading of the rotated +x axis for yaw-only rotations and differs from it by a
        second-order term under small tilt. Unlike that heading it is exactly antisymmetric:
        ``T.inverse().yaw_rad == -T.yaw_rad``, so upright boxes survive a frame round trip.
        """
        w, _, _, z = self.quaternion_wxyz
        angle = 2.0 * np.arctan2(z, w)
        return float(np.pi - np.mod(np.pi - angle, 2.0 * np.pi))

    # ----------------------------------------------------------------------------- algebra
    def __matmul__(self, other: SE3) -> SE3:
        if not isinstance(other, SE3):
            return NotImplemented
        return SE3(self.rotation @ other.rotation, self.rotation @ other.translation + self.translation)

    def inverse(self) -> SE3:
        rt = self.rotation.T
        return SE3(rt, -rt @ self.translation)

    def transform_points(self, points: np.ndarray) -> np.ndarray:
        """Transform ``(N, C>=3)`` points; columns beyond xyz are carried unchanged.

        Returns a new array of the input's float dtype (float32 stays float32).
        """
        pts = np.asarray(points)
        if pts.ndim != 2 or pts.shape[1] < 3:
            raise GeometryError(f"points must have shape (N, C>=3), got {pts.shape}")
        dtype = pts.dtype if np.issubdtype(pts.dtype, np.floating) else np.float64
        out = np.array(pts, dtype=dtype, copy=True)
        out[:, :3] = pts[:, :3].astype(np.float64) @ self.rotation.T + self.translation
        return out

    def rotate_vectors(self, vectors: np.ndarray) -> np.ndarray:
        """Rotate ``(N, 3)`` direction vectors (no translation)."""
        v = np.asarray(vectors, dtype=np.float64)
        if v.ndim != 2 or v.shape[1] != 3:
            raise GeometryError(f"vectors must have shape (N, 3), got {v.shape}")
        return v @ self.rotation.T

    def allclose(self, other: SE3, *, atol: float = 1e-9) -> bool:
        return bool(
            np.allclose(self.rotation, other.rotation, atol=atol)
            and np.allclose(self.translation, other.translation, atol=atol)
        )

    def __repr__(self) -> str:
        q = np.round(self.quaternion_wxyz, 6).tolist()
        t = np.round(self.translation, 4).tolist()
        return f"SE3(q_wxyz={q}, t={t})"


def nearest_rotation(matrix: np.ndarray, *, tol: float) -> np.ndarray:
    """Project a nearly orthonormal (3, 3) matrix onto SO(3) (SVD); reject deviations above ``tol``."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (3, 3) or not np.all(np.isfinite(m)):
        raise GeometryError(f"rotation block must be a finite 3x3 matrix, got shape {m.shape}")
    deviation = float(np.abs(m @ m.T - np.eye(3)).max())
    if deviation > tol or np.linalg.det(m) <= 0:
        raise GeometryError(f"rotation block is not a rotation (|R R^T - I| = {deviation:.2e}, tol {tol:.0e})")
    u, _, vt = np.linalg.svd(m)
    return u @ np.diag([1.0, 1.0, np.linalg.det(u @ vt)]) @ vt


def interpolate_pose(t0_us: int, pose0: SE3, t1_us: int, pose1: SE3, query_us: int) -> SE3:
    """Pose at ``query_us`` between two stamped poses: SLERP for rotation, linear for translation.

    Queries outside ``[t0_us, t1_us]`` extrapolate with the same constant-velocity model.
    """
    if t1_us == t0_us:
        if query_us != t0_us:
            raise GeometryError(f"cannot interpolate between two poses with the same timestamp {t0_us} us")
        return pose0
    alpha = (query_us - t0_us) / (t1_us - t0_us)
    rel = Rotation.from_matrix(pose0.rotation.T @ pose1.rotation).as_rotvec()
    rotation = pose0.rotation @ Rotation.from_rotvec(alpha * rel).as_matrix()
    translation = (1.0 - alpha) * pose0.translation + alpha * pose1.translation
    return SE3(rotation, translation)


def interpolate_poses(timestamps_us: np.ndarray, poses: Sequence[SE3], query_us: np.ndarray) -> list[SE3]:
    """Interpolate a stamped trajectory at many query times.

    Args:
        timestamps_us: (K,) strictly increasing int64 timestamps of ``poses``.
        poses: K poses.
        query_us: (Q,) query timestamps inside ``[timestamps_us[0], timestamps_us[-1]]``.

    Returns:
        Q poses (SLERP for rotation, piecewise linear translation).
    """
    ts = np.asarray(timestamps_us, dtype=np.int64)
    q = np.asarray(query_us, dtype=np.int64).reshape(-1)
    if ts.ndim != 1 or len(ts) != len(poses) or len(ts) == 0:
        raise GeometryError(f"need one timestamp per pose, got {ts.shape} timestamps and {len(poses)} poses")
    if np.any(np.diff(ts) <= 0):
        raise GeometryError("pose timestamps must be strictly increasing")
    if len(q) and (q.min() < ts[0] or q.max() > ts[-1]):
        raise GeometryError(f"query times [{q.min()}, {q.max()}] us outside the trajectory [{ts[0]}, {ts[-1]}] us")
    if len(ts) == 1:
        return [poses[0] for _ in q]
    rotations = Rotation.from_matrix(np.stack([p.rotation for p in poses]))
    slerp = Slerp(ts.astype(np.float64), rotations)
    rot_q = slerp(q.astype(np.float64)).as_matrix()
    trans = np.stack([p.translation for p in poses])
    trans_q = np.stack([np.interp(q, ts, trans[:, k]) for k in range(3)], axis=1)
    return [SE3(r, t) for r, t in zip(rot_q, trans_q, strict=True)]
