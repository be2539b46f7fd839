"""Pair affinities of boxes: exact generalised IoU (BEV and 3D) and centre distance, as matrices.

GIoU (Rezatofighi et al. 2019; SimpleTrack's affinity) is ``IoU - (C - U) / C`` with U the union and
C the smallest convex region around both boxes: the convex hull of the two footprints (times the
joint height span in 3D). It lies in [-1, 1] and still ranks boxes that do not overlap, which is what
fast or poorly predicted objects need. Footprint intersections are clipped exactly (Sutherland-Hodgman
on the two rectangles) and hulls built exactly (monotone chain), compiled with numba; a centre-distance
gate skips pairs that cannot match, so the cost stays small for dense scenes.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from calibration import Boxes3D, GeometryError

GATED = -math.inf  # affinity of a pair farther apart than the gate
KIND_GIOU_BEV, KIND_GIOU_3D, KIND_CENTER_DISTANCE = range(3)  # kernel codes of tracking.config.AffinityKind


@numba.njit(cache=True)
def _footprint_offsets(boxes: np.ndarray) -> np.ndarray:
    """(N, 4, 2) counter-clockwise footprint corners relative to each box's centre."""
    n = boxes.shape[0]
    out = np.empty((n, 4, 2))
    signs = ((1.0, -1.0), (1.0, 1.0), (-1.0, 1.0), (-1.0, -1.0))
    for i in range(n):
        c, s = math.cos(boxes[i, 6]), math.sin(boxes[i, 6])
        hl, hw = 0.5 * boxes[i, 3], 0.5 * boxes[i, 4]
        for k in range(4):
            lx, ly = signs[k][0] * hl, signs[k][1] * hw
            out[i, k, 0] = c * lx - s * ly
            out[i, k, 1] = s * lx + c * ly
    return out


@numba.njit(cache=True)
def _polygon_area(poly: np.ndarray, n: int) -> float:
    area = 0.0
    for k in range(n):
        j = (k + 1) % n
        area += poly[k, 0] * poly[j, 1] - poly[j, 0] * poly[k, 1]
    return 0.5 * area


@numba.njit(cache=True)
def _intersection_area(pa: np.ndarray, pb: np.ndarray, poly: np.ndarray, clipped: np.ndarray) -> float:
    """Area of the intersection of two convex counter-clockwise quadrilaterals (4, 2).

    ``poly`` and ``clipped`` are (16, 2) work buffers.
    """
    n = 4
    for k in range(4):
        poly[k, 0], poly[k, 1] = pa[k, 0], pa[k, 1]
    for e in range(4):
        ax, ay = pb[e, 0], pb[e, 1]
        ex, ey = pb[(e + 1) % 4, 0] - ax, pb[(e + 1) % 4, 1] - ay
        m = 0
        for k in range(n):
            prev = k - 1 if k > 0 else n - 1
            px, py = poly[prev, 0], poly[prev, 1]
            qx, qy = poly[k, 0], poly[k, 1]
            dp = ex * (py - ay) - ey * (px - ax)  # >= 0: left of (inside) the edge
            dq = ex * (qy - ay) - ey * (qx - ax)
            if dq >= 0.0:
                if dp < 0.0:
                    t = dp / (dp - dq)
                    clipped[m, 0], clipped[m, 1] = px + t * (qx - px), py + t * (qy - py)
                    m += 1
                clipped[m, 0], clipped[m, 1] = qx, qy
                m += 1
            elif dp >= 0.0:
                t = dp / (dp - dq)
                clipped[m, 0], clipped[m, 1] = px + t * (qx - px), py + t * (qy - py)
                m += 1
        if m < 3:
            return 0.0
        for k in range(m):
            poly[k, 0], poly[k, 1] = clipped[k, 0], clipped[k, 1]
        n = m
    return max(_polygon_area(poly, n), 0.0)


@numba.njit(cache=True, inline="always")
def _turn(p: np.ndarray, i: int, j: int, k: int) -> float:
    """Cross product of p[j] - p[i] and p[k] - p[i] (> 0: a left turn)."""
    return (p[j, 0] - p[i, 0]) * (p[k, 1] - p[i, 1]) - (p[j, 1] - p[i, 1]) * (p[k, 0] - p[i, 0])


@numba.njit(cache=True)
def _hull_area(p: np.ndarray, hull: np.ndarray) -> float:
    """Area of the convex hull of (P, 2) points, sorted in place (Andrew's monotone chain).

    ``hull`` is a (2 P, 2) work buffer.
    """
    n = p.shape[0]
    for i in range(1, n):  # insertion sort by (x, y)
        x, y = p[i, 0], p[i, 1]
        j = i - 1
        while j >= 0 and (p[j, 0] > x or (p[j, 0] == x and p[j, 1] > y)):
            p[j + 1, 0], p[j + 1, 1] = p[j, 0], p[j, 1]
            j -= 1
        p[j + 1, 0], p[j + 1, 1] = x, y
    k = 0
    for i in range(n):  # lower hull
        hull[k, 0], hull[k, 1] = p[i, 0], p[i, 1]
        while k >= 2 and _turn(hull, k - 2, k - 1, k) <= 0.0:
            hull[k - 1, 0], hull[k - 1, 1] = hull[k, 0], hull[k, 1]
            k -= 1
        k += 1
    lower = k + 1
    for i in range(n - 2, -1, -1):  # upper hull
        hull[k, 0], hull[k, 1] = p[i, 0], p[i, 1]
        while k >= lower and _turn(hull, k - 2, k - 1, k) <= 0.0:
            hull[k - 1, 0], hull[k - 1, 1] = hull[k, 0], hull[k, 1]
            k -= 1
        k += 1
    return max(_polygon_area(hull, k - 1), 0.0)


@numba.njit(cache=True)
def _pair_giou(
    a: np.ndarray,
    b: np.ndarray,
    offsets_a: np.ndarray,
    offsets_b: np.ndarray,
    dx: float,
    dy: float,
    three_d: bool,
    pa: np.ndarray,
    pb: np.ndarray,
    both: np.ndarray,
    poly: np.ndarray,
    clipped: np.ndarray,
    hull_buffer: np.ndarray,
) -> float:
    """GIoU of boxes ``a`` and ``b`` (7,) whose centres differ by (dx, dy); the rest are work buffers.

    Corners are taken relative to ``a``'s centre, so world coordinates far from the origin keep their
    precision.
    """
    for k in range(4):
        pa[k, 0], pa[k, 1] = offsets_a[k, 0], offsets_a[k, 1]
        pb[k, 0], pb[k, 1] = offsets_b[k, 0] + dx, offsets_b[k, 1] + dy
        both[k, 0], both[k, 1] = pa[k, 0], pa[k, 1]
        both[k + 4, 0], both[k + 4, 1] = pb[k, 0], pb[k, 1]
    reach = 0.5 * (math.hypot(a[3], a[4]) + math.hypot(b[3], b[4]))  # sum of the footprints' circumradii
    inter = _intersection_area(pa, pb, poly, clipped) if dx * dx + dy * dy < reach * reach else 0.0
    hull = _hull_area(both, hull_buffer)
    size_a, size_b = a[3] * a[4], b[3] * b[4]  # areas, or volumes in 3D
    if three_d:
        top_a, top_b = a[2] + 0.5 * a[5], b[2] + 0.5 * b[5]
        bottom_a, bottom_b = a[2] - 0.5 * a[5], b[2] - 0.5 * b[5]
        inter *= max(min(top_a, top_b) - max(bottom_a, bottom_b), 0.0)
        hull *= max(top_a, top_b) - min(bottom_a, bottom_b)
        size_a, size_b = size_a * a[5], size_b * b[5]
    union = size_a + size_b - inter
    iou = inter / union if union > 0.0 else 0.0
    return iou - (hull - union) / hull if hull > 0.0 else iou


@numba.njit(cache=True)
def giou_matrix(a: np.ndarray, b: np.ndarray, gate_m: np.ndarray, three_d: bool) -> np.ndarray:
    """(N, M) GIoU of boxes (N, 7) and (M, 7); :data:`GATED` where BEV centres are farther than ``gate_m[i]``."""
    n, m = a.shape[0], b.shape[0]
    out = np.full((n, m), GATED)
    offsets_a, offsets_b = _footprint_offsets(a), _footprint_offsets(b)
    pa, pb, both = np.empty((4, 2)), np.empty((4, 2)), np.empty((8, 2))
    poly, clipped, hull_buffer = np.empty((16, 2)), np.empty((16, 2)), np.empty((16, 2))
    for i in range(n):
        for j in range(m):
            dx, dy = b[j, 0] - a[i, 0], b[j, 1] - a[i, 1]
            if dx * dx + dy * dy <= gate_m[i] * gate_m[i]:
                out[i, j] = _pair_giou(
                    a[i], b[j], offsets_a[i], offsets_b[j], dx, dy, three_d, pa, pb, both, poly, clipped, hull_buffer
                )
    return out


@numba.njit(cache=True)
def track_detection_scores(
    tracks: np.ndarray,
    track_classes: np.ndarray,
    detections: np.ndarray,
    detection_classes: np.ndarray,
    kind: int,
    gate_m: np.ndarray,
    threshold: np.ndarray,
    compatible: np.ndarray,
    n_high: int,
    low_threshold: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Affinity (T, D) and admissibility (T, D) of predicted track boxes and detection boxes.

    Only class-compatible pairs within the gate are scored (others hold :data:`GATED`); a scored pair is
    admissible when its affinity reaches the track class's threshold: ``threshold`` for the first
    ``n_high`` detections, ``low_threshold`` for the others.

    Args:
        tracks: (T, 7) boxes; track_classes: (T,) class indices.
        detections: (D, 7) boxes; detection_classes: (D,) class indices.
        kind: :data:`KIND_GIOU_BEV`, :data:`KIND_GIOU_3D` or :data:`KIND_CENTER_DISTANCE` (affinity =
            minus the distance).
        gate_m, threshold, low_threshold: (C,) per class; compatible: (C, C) bool.
    """
    n, m = tracks.shape[0], detections.shape[0]
    affinity = np.full((n, m), GATED)
    admissible = np.zeros((n, m), dtype=np.bool_)
    offsets_a, offsets_b = _footprint_offsets(tracks), _footprint_offsets(detections)
    pa, pb, both = np.empty((4, 2)), np.empty((4, 2)), np.empty((8, 2))
    poly, clipped, hull_buffer = np.empty((16, 2)), np.empty((16, 2)), np.empty((16, 2))
    for i in range(n):
        c = track_classes[i]
        gate2 = gate_m[c] * gate_m[c]
        for j in range(m):
            if not compatible[c, detection_classes[j]]:
                continue
            dx, dy = detections[j, 0] - tracks[i, 0], detections[j, 1] - tracks[i, 1]
            d2 = dx * dx + dy * dy
            if d2 > gate2:
                continue
            if kind == KIND_CENTER_DISTANCE:
                value = -math.sqrt(d2)
            else:
                value = _pair_giou(
                    tracks[i],
                    detections[j],
                    offsets_a[i],
                    offsets_b[j],
                    dx,
                    dy,
                    kind == KIND_GIOU_3D,
                    pa,
                    pb,
                    both,
                    poly,
                    clipped,
                    hull_buffer,
                )
            affinity[i, j] = value
            admissible[i, j] = value >= (threshold[c] if j < n_high else low_threshold[c])
    return affinity, admissible


def _checked(a: Boxes3D, b: Boxes3D) -> tuple[np.ndarray, np.ndarray]:
    if a.frame != b.frame:
        raise GeometryError(f"GIoU of boxes in different frames: {a.frame!r} vs {b.frame!r}")
    return np.ascontiguousarray(a.data), np.ascontiguousarray(b.data)


def giou_bev(a: Boxes3D, b: Boxes3D) -> np.ndarray:
    """(N, M) bird's-eye-view generalised IoU of rotated footprints, in [-1, 1]."""
    da, db = _checked(a, b)
    return giou_matrix(da, db, np.full(len(a), np.inf), False)


def giou_3d(a: Boxes3D, b: Boxes3D) -> np.ndarray:
    """(N, M) generalised IoU of upright rotated boxes, in [-1, 1]."""
    da, db = _checked(a, b)
    return giou_matrix(da, db, np.full(len(a), np.inf), True)
