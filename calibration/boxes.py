"""Oriented 3D boxes: batched :class:`Boxes3D` and a single :class:`Box3D`.

Convention (one place, drawn once)::

            +y (left)
             ^
             |     length l along the box's +x (its heading)
        3 ---|--------- 0        corners 0-3: top face (z + h/2), 4-7: bottom face, same xy order
        |    |          |
        |    c ---------|--->  +x (heading), yaw = angle from the frame's +x, counter-clockwise
        |   centre      |      seen from above (about +z)
        2 ------------- 1
          width w along the box's +y; height h along +z

- ``(x, y, z)`` is the **geometric centre** (not the bottom centre) in the named ``frame``.
- ``size = (l, w, h)`` in metres; ``yaw_rad`` in (-pi, pi].
- Batched layout: ``(N, 7)`` float64 columns ``x, y, z, l, w, h, yaw``; optional ``(N, 2)`` velocity
  ``vx, vy`` in metres per second in the same frame (NaN where unknown).

Boxes are yaw-only (upright): transforms turn the heading by the transform's twist about +z and
drop its tilt, which is how nuScenes and KITTI store them. Other conventions (nuScenes ``wlh``,
mmdet3d bottom centre, KITTI camera boxes) are converted at the adapters in ``autolabel``, nowhere else.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from calibration.errors import GeometryError
from calibration.se3 import SE3

WORLD_FRAME = "world"
EGO_FRAME = "ego"

# Unit-box corner signs in the order drawn above: (x, y, z) multipliers of (l/2, w/2, h/2).
_CORNER_SIGNS = np.array(
    [
        [1, 1, 1],
        [1, -1, 1],
        [-1, -1, 1],
        [-1, 1, 1],
        [1, 1, -1],
        [1, -1, -1],
        [-1, -1, -1],
        [-1, 1, -1],
    ],
    dtype=np.float64,
)


def wrap_angle_rad(angle: np.ndarray | float) -> np.ndarray | float:
    """Wrap angles to (-pi, pi]; angles already in range are returned unchanged (bit-exact)."""
    a = np.asarray(angle, dtype=np.float64)
    wrapped = np.where((a > -np.pi) & (a <= np.pi), a, np.pi - np.mod(np.pi - a, 2.0 * np.pi))
    wrapped = np.where(wrapped <= -np.pi, wrapped + 2.0 * np.pi, wrapped)  # np.mod can round up to 2 pi
    return float(wrapped) if wrapped.ndim == 0 else wrapped


@dataclass(frozen=True)
class Box3D:
    """One upright box; see the module docstring for the convention."""

    center: tuple[float, float, float]
    size: tuple[float, float, float]
    yaw_rad: float
    frame: str
    velocity: tuple[float, float] | None = None

    def as_boxes(self) -> Boxes3D:
        velocity = None if self.velocity is None else np.array([self.velocity], dtype=np.float64)
        return Boxes3D(np.array([[*self.center, *self.size, self.yaw_rad]]), self.frame, velocity)


@dataclass(frozen=True, eq=False)
class Boxes3D:
    """N upright boxes in one frame.

    Attributes:
        data: (N, 7) float64 ``x, y, z, l, w, h, yaw`` (read-only).
        frame: name of the coordinate frame (``"ego"``, ``"world"``, a sensor name).
        velocity: optional (N, 2) float64 ``vx, vy`` in m/s, NaN where unknown (read-only).
    """

    data: np.ndarray
    frame: str
    velocity: np.ndarray | None = None

    def __post_init__(self) -> None:
        data = _as_rows(self.data, 7, "Boxes3D data")
        if not np.all(np.isfinite(data)):
            raise GeometryError("Boxes3D data contain non-finite values")
        if np.any(data[:, 3:6] < 0):
            raise GeometryError("Boxes3D sizes (l, w, h) must be non-negative")
        data[:, 6] = wrap_angle_rad(data[:, 6])
        data.setflags(write=False)
        object.__setattr__(self, "data", data)
        if self.velocity is not None:
            vel = _as_rows(self.velocity, 2, "Boxes3D velocity")
            if vel.shape[0] != data.shape[0]:
                raise GeometryError(f"velocity must have shape ({data.shape[0]}, 2), got {vel.shape}")
            vel.setflags(write=False)
            object.__setattr__(self, "velocity", vel)

    # ----------------------------------------------------------------------------- construction
    @classmethod
    def empty(cls, frame: str, *, with_velocity: bool = False) -> Boxes3D:
        return cls(np.zeros((0, 7)), frame, np.zeros((0, 2)) if with_velocity else None)

    @classmethod
    def from_boxes(cls, boxes: Sequence[Box3D], frame: str) -> Boxes3D:
        if any(b.frame != frame for b in boxes):
            raise GeometryError(f"all boxes must be in frame {frame!r}")
        data = np.array([[*b.center, *b.size, b.yaw_rad] for b in boxes]).reshape(-1, 7)
        has_velocity = any(b.velocity is not None for b in boxes)
        velocity = (
            np.array([b.velocity if b.velocity is not None else (np.nan, np.nan) for b in boxes]).reshape(-1, 2)
            if has_velocity
            else None
        )
        return cls(data, frame, velocity)

    @classmethod
    def concatenate(cls, parts: Iterable[Boxes3D], frame: str) -> Boxes3D:
        parts = list(parts)
        if any(p.frame != frame for p in parts):
            raise GeometryError(f"cannot concatenate boxes of frames {[p.frame for p in parts]} into {frame!r}")
        if not parts:
            return cls.empty(frame)
        data = np.concatenate([p.data for p in parts])
        if all(p.velocity is None for p in parts):
            return cls(data, frame)
        velocity = np.concatenate(
            [p.velocity if p.velocity is not None else np.full((len(p), 2), np.nan) for p in parts]
        )
        return cls(data, frame, velocity)

    # ----------------------------------------------------------------------------- access
    def __len__(self) -> int:
        return int(self.data.shape[0])

    def __getitem__(self, index: int | slice | np.ndarray | Sequence[int]) -> Boxes3D:
        idx = np.atleast_1d(np.arange(len(self))[index])
        velocity = None if self.velocity is None else self.velocity[idx]
        return Boxes3D(self.data[idx], self.frame, velocity)

    def box(self, i: int) -> Box3D:
        row = self.data[i]
        velocity = None if self.velocity is None else (float(self.velocity[i, 0]), float(self.velocity[i, 1]))
        return Box3D(
            (float(row[0]), float(row[1]), float(row[2])),
            (float(row[3]), float(row[4]), float(row[5])),
            float(row[6]),
            self.frame,
            velocity,
        )

    def __iter__(self):
        return (self.box(i) for i in range(len(self)))

    @property
    def centers(self) -> np.ndarray:
        """(N, 3) geometric centres."""
        return self.data[:, :3]

    @property
    def sizes(self) -> np.ndarray:
        """(N, 3) ``l, w, h``."""
        return self.data[:, 3:6]

    @property
    def yaws_rad(self) -> np.ndarray:
        """(N,) yaw angles."""
        return self.data[:, 6]

    @property
    def volumes_m3(self) -> np.ndarray:
        return np.prod(self.sizes, axis=1)

    # ----------------------------------------------------------------------------- geometry
    def corners(self) -> np.ndarray:
        """(N, 8, 3) corners in the order drawn in the module docstring."""
        local = _CORNER_SIGNS[None, :, :] * (self.sizes[:, None, :] / 2.0)
        c, s = np.cos(self.yaws_rad)[:, None], np.sin(self.yaws_rad)[:, None]
        x = c * local[..., 0] - s * local[..., 1]
        y = s * local[..., 0] + c * local[..., 1]
        return np.stack([x, y, local[..., 2]], axis=-1) + self.centers[:, None, :]

    def bev_corners(self) -> np.ndarray:
        """(N, 4, 2) counter-clockwise footprint polygons in the xy-plane (corners 0, 3, 2, 1)."""
        return self.corners()[:, [0, 3, 2, 1], :2]

    def transform(self, dst_SE3_src: SE3, dst_frame: str) -> Boxes3D:
        """Express the boxes in ``dst_frame``.

        Centres take the full transform; yaw and velocity turn by the transform's twist about +z
        (:attr:`SE3.yaw_rad`) and the tilt is dropped, because boxes stay upright. This is exactly
        invertible: ``b.transform(T, f).transform(T.inverse(), b.frame)`` returns ``b``. Under a
        tilt of about 1 degree (real ego poses) the heading error is below 1e-3 rad.
        """
        yaw = dst_SE3_src.yaw_rad
        data = np.column_stack([dst_SE3_src.transform_points(self.centers), self.sizes, self.yaws_rad + yaw])
        velocity = None
        if self.velocity is not None:
            c, s = np.cos(yaw), np.sin(yaw)
            velocity = self.velocity @ np.array([[c, s], [-s, c]])
        return Boxes3D(data, dst_frame, velocity)

    def points_in_boxes(self, points: np.ndarray, *, margin_m: float = 0.0) -> np.ndarray:
        """(M, N) bool mask: point m lies inside (or on) box n, optionally grown by ``margin_m``.

        Args:
            points: (M, C>=3) points in this boxes' frame.
        """
        pts = np.asarray(points)
        if pts.ndim != 2 or pts.shape[1] < 3:
            raise GeometryError(f"points must have shape (M, C>=3), got {pts.shape}")
        mask = np.zeros((pts.shape[0], len(self)), dtype=bool)
        half = self.sizes / 2.0 + margin_m
        c, s = np.cos(self.yaws_rad), np.sin(self.yaws_rad)
        xyz = pts[:, :3].astype(np.float64)
        for n in range(len(self)):
            d = xyz - self.centers[n]
            local_x = c[n] * d[:, 0] + s[n] * d[:, 1]
            local_y = -s[n] * d[:, 0] + c[n] * d[:, 1]
            mask[:, n] = (
                (np.abs(local_x) <= half[n, 0]) & (np.abs(local_y) <= half[n, 1]) & (np.abs(d[:, 2]) <= half[n, 2])
            )
        return mask


def _as_rows(values: np.ndarray, columns: int, what: str) -> np.ndarray:
    """A fresh (N, columns) float64 array; a flat array of 0 or ``columns`` values is one row or none."""
    array = np.array(values, dtype=np.float64, copy=True)
    if array.ndim == 1 and array.size in (0, columns):
        array = array.reshape(-1, columns)
    if array.ndim != 2 or array.shape[1] != columns:
        raise GeometryError(f"{what} must have shape (N, {columns}), got {np.shape(values)}")
    return array


_NEXT_CORNER = np.array([1, 2, 3, 0])


def _rectangle_intersection_areas(rect_a: np.ndarray, rect_b: np.ndarray) -> np.ndarray:
    """(P,) intersection areas of P pairs of rectangles, each (P, 5) ``cx, cy, half_l, half_w, yaw``.

    The intersection of two convex polygons is the convex hull of the corners of each inside the other
    and the crossings of their edges. They are collected with a small tolerance (so shared and collinear
    edges, where OpenCV's clipper fails, come out exact), ordered by angle about their centroid and
    measured by the shoelace formula; everything is vectorised over the pairs.
    """
    p = len(rect_a)
    scale = max(float(np.abs(rect_a[:, :4]).max(initial=0.0)), float(np.abs(rect_b[:, :4]).max(initial=0.0)), 1.0)
    eps = 1e-9 * scale
    signs = np.array([[1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]])  # counter-clockwise

    def corners(rect: np.ndarray) -> np.ndarray:
        c, s = np.cos(rect[:, 4]), np.sin(rect[:, 4])
        local = signs[None] * rect[:, None, 2:4]
        x = rect[:, None, 0] + c[:, None] * local[..., 0] - s[:, None] * local[..., 1]
        y = rect[:, None, 1] + s[:, None] * local[..., 0] + c[:, None] * local[..., 1]
        return np.stack([x, y], axis=-1)

    def inside(points: np.ndarray, rect: np.ndarray) -> np.ndarray:
        """(P, K) whether each of (P, K, 2) points lies in (or on) the rectangle."""
        c, s = np.cos(rect[:, 4])[:, None], np.sin(rect[:, 4])[:, None]
        dx, dy = points[..., 0] - rect[:, None, 0], points[..., 1] - rect[:, None, 1]
        return (np.abs(c * dx + s * dy) <= rect[:, None, 2] + eps) & (
            np.abs(-s * dx + c * dy) <= rect[:, None, 3] + eps
        )

    poly_a, poly_b = corners(rect_a), corners(rect_b)
    da = (poly_a[:, _NEXT_CORNER] - poly_a)[:, :, None, :]  # (P, 4, 1, 2) edge vectors
    db = (poly_b[:, _NEXT_CORNER] - poly_b)[:, None, :, :]
    denom = da[..., 0] * db[..., 1] - da[..., 1] * db[..., 0]  # (P, 4, 4)
    offset = poly_b[:, None, :, :] - poly_a[:, :, None, :]
    parallel = np.abs(denom) <= 1e-12 * scale * scale
    safe = np.where(parallel, 1.0, denom)
    t = (offset[..., 0] * db[..., 1] - offset[..., 1] * db[..., 0]) / safe
    u = (offset[..., 0] * da[..., 1] - offset[..., 1] * da[..., 0]) / safe
    tol = 1e-12
    crossing = ~parallel & (t >= -tol) & (t <= 1 + tol) & (u >= -tol) & (u <= 1 + tol)
    crossings = (poly_a[:, :, None, :] + t[..., None] * da).reshape(p, 16, 2)
    points = np.concatenate([poly_a, poly_b, crossings], axis=1)  # (P, 24, 2)
    valid = np.concatenate([inside(poly_a, rect_b), inside(poly_b, rect_a), crossing.reshape(p, 16)], axis=1)
    count = valid.sum(axis=1)
    centre = (points * valid[..., None]).sum(axis=1) / np.maximum(count, 1)[:, None]
    rel = points - centre[:, None, :]
    angle = np.where(valid, np.arctan2(rel[..., 1], rel[..., 0]), np.inf)
    order = np.argsort(angle, axis=1, kind="stable")
    ordered = np.take_along_axis(rel, order[..., None], axis=1)
    ordered_valid = np.take_along_axis(valid, order, axis=1)
    ordered = np.where(ordered_valid[..., None], ordered, ordered[:, :1, :])  # pad with the first point
    nxt = np.concatenate([ordered[:, 1:], ordered[:, :1]], axis=1)
    area = 0.5 * np.abs(np.sum(ordered[..., 0] * nxt[..., 1] - ordered[..., 1] * nxt[..., 0], axis=1))
    # A degenerate rectangle (no area) contains nothing and is contained by nothing.
    proper = (rect_a[:, 2] * rect_a[:, 3] > eps * eps) & (rect_b[:, 2] * rect_b[:, 3] > eps * eps)
    return np.where((count >= 3) & proper, area, 0.0)


def _bev_intersection_areas(a: Boxes3D, b: Boxes3D) -> np.ndarray:
    """(N, M) footprint intersection areas in m^2 (pairs whose circumcircles overlap are clipped)."""
    areas = np.zeros((len(a), len(b)))
    if len(a) == 0 or len(b) == 0:
        return areas
    radius_a = np.hypot(a.sizes[:, 0], a.sizes[:, 1]) / 2.0
    radius_b = np.hypot(b.sizes[:, 0], b.sizes[:, 1]) / 2.0
    dist = np.linalg.norm(a.centers[:, None, :2] - b.centers[None, :, :2], axis=-1)
    rows, cols = np.nonzero(dist < radius_a[:, None] + radius_b[None, :])
    if len(rows) == 0:
        return areas
    areas[rows, cols] = _paired_intersection_areas(a.data[rows], b.data[cols])
    return areas


def _paired_intersection_areas(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(P,) footprint intersection areas in m^2 of P pairs of (P, 7) box rows."""
    origin = (a[:, :2] + b[:, :2]) / 2.0  # pair-local coordinates: well-conditioned
    rect_a = np.column_stack([a[:, :2] - origin, a[:, 3:5] / 2.0, a[:, 6]])
    rect_b = np.column_stack([b[:, :2] - origin, b[:, 3:5] / 2.0, b[:, 6]])
    return _rectangle_intersection_areas(rect_a, rect_b)


def _iou_from_areas(inter: np.ndarray, area_a: np.ndarray, area_b: np.ndarray) -> np.ndarray:
    union = area_a + area_b - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def iou_bev(a: Boxes3D, b: Boxes3D) -> np.ndarray:
    """(N, M) bird's-eye-view IoU of rotated footprints."""
    _check_same_frame(a, b)
    inter = _bev_intersection_areas(a, b)
    return _iou_from_areas(inter, (a.sizes[:, 0] * a.sizes[:, 1])[:, None], (b.sizes[:, 0] * b.sizes[:, 1])[None, :])


def iou_bev_paired(a: Boxes3D, b: Boxes3D) -> np.ndarray:
    """(N,) bird's-eye-view IoU of the footprints of ``a[i]`` and ``b[i]`` (the diagonal of :func:`iou_bev`,
    without the other N * (N - 1) pairs)."""
    _check_same_frame(a, b)
    if len(a) != len(b):
        raise GeometryError(f"iou_bev_paired needs as many boxes on both sides, got {len(a)} and {len(b)}")
    if len(a) == 0:
        return np.zeros(0)
    inter = _paired_intersection_areas(a.data, b.data)
    return _iou_from_areas(inter, a.sizes[:, 0] * a.sizes[:, 1], b.sizes[:, 0] * b.sizes[:, 1])


def iou_3d(a: Boxes3D, b: Boxes3D) -> np.ndarray:
    """(N, M) 3D IoU of upright rotated boxes (footprint intersection x vertical overlap)."""
    _check_same_frame(a, b)
    inter_bev = _bev_intersection_areas(a, b)
    top = np.minimum((a.centers[:, 2] + a.sizes[:, 2] / 2)[:, None], (b.centers[:, 2] + b.sizes[:, 2] / 2)[None, :])
    bottom = np.maximum((a.centers[:, 2] - a.sizes[:, 2] / 2)[:, None], (b.centers[:, 2] - b.sizes[:, 2] / 2)[None, :])
    inter = inter_bev * np.clip(top - bottom, 0.0, None)
    union = a.volumes_m3[:, None] + b.volumes_m3[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _check_same_frame(a: Boxes3D, b: Boxes3D) -> None:
    if a.frame != b.frame:
        raise GeometryError(f"IoU of boxes in different frames: {a.frame!r} vs {b.frame!r}")
