"""Clustering of the non-ground points seen from above: numba grid connected components or open3d DBSCAN.

Grid connected components (the default): points fall into ``cell_m`` cells of a BEV grid; two occupied cells
belong to one cluster when their centres are at most ``link(r)`` apart, where the link distance grows with
the range ``r`` of the cell like the spacing of the returns (``clip(link_per_m * r, link_min_m, link_max_m)``),
so gaps narrower than about ``link(r)`` are bridged and wider ones separate objects::

        . . . . . . .        cell size 0.2 m; near the sensor (link 0.3 m) the 8 neighbours, far away
        . . x x x . .        (link 0.5 m) the 20 within 2 cells; joined by union-find: one pass over the
        . x x o x x .        points, one over the occupied cells
        . . x x x . .
        . . . . . . .

DBSCAN (open3d ``cluster_dbscan``) runs on ``x, y, z * z_scale`` with ``eps_m``; ``z_scale`` 0 makes it a BEV
clustering like the grid one. On ~100 k non-ground points of a 10-sweep keyframe it takes seconds (BEV
neighbourhoods hold thousands of points), so ``voxel_m`` > 0 first keeps one point per ``voxel_m`` cube (BEV
square when ``z_scale`` is 0) and gives every point its voxel's label. Both methods return ``(N,) int32`` labels
``0 .. K-1`` (largest first), -1 for noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import numba
import numpy as np

from calibration import InputError


class ClusterMethod(str, Enum):
    GRID = "grid"
    DBSCAN = "dbscan"


@dataclass(frozen=True)
class ClusterConfig:
    """Clustering parameters.

    Attributes:
        method: grid connected components or open3d DBSCAN.
        cell_m: grid cell size.
        link_min_m, link_per_m, link_max_m: grid cells at range r whose centres are at most
            ``clip(link_per_m * r, link_min_m, link_max_m)`` apart are connected.
        half_extent_m: the grid covers ``[-half_extent_m, half_extent_m]^2``; points outside are noise.
        min_points: clusters with fewer points are noise.
        eps_m: DBSCAN neighbourhood radius.
        dbscan_min_points: DBSCAN core point threshold.
        z_scale: DBSCAN distance weight of z (0: BEV).
        voxel_m: DBSCAN on one point per voxel of this size (0: on every point).
    """

    method: ClusterMethod = ClusterMethod.GRID
    cell_m: float = 0.2
    link_min_m: float = 0.3
    link_per_m: float = 0.012
    link_max_m: float = 0.5
    half_extent_m: float = 64.0
    min_points: int = 5
    eps_m: float = 0.45
    dbscan_min_points: int = 3
    z_scale: float = 0.0
    voxel_m: float = 0.1

    def __post_init__(self) -> None:
        if not 0 < self.cell_m <= self.link_min_m <= self.link_max_m:
            raise InputError(
                f"clustering: need 0 < cell_m <= link_min_m <= link_max_m, got {self.cell_m}, "
                f"{self.link_min_m}, {self.link_max_m}"
            )


def cluster_points(points: np.ndarray, config: ClusterConfig = ClusterConfig()) -> np.ndarray:
    """(N,) int32 cluster labels of (N, C>=3) points by ``config.method``."""
    if config.method is ClusterMethod.DBSCAN:
        return dbscan_clusters(points, config)
    return grid_clusters(points, config)


def grid_clusters(points: np.ndarray, config: ClusterConfig = ClusterConfig()) -> np.ndarray:
    """(N,) int32 labels from connected components of the occupied BEV cells (see the module docstring)."""
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[1] < 2:
        raise InputError(f"clustering: points must have shape (N, C>=2), got {pts.shape}")
    radius = int(np.floor(config.link_max_m / config.cell_m))
    offsets = np.array(
        [(dx, dy) for dx in range(0, radius + 1) for dy in range(-radius, radius + 1) if (dx, dy) > (0, 0)],
        dtype=np.int64,
    ).reshape(-1, 2)
    distance = np.hypot(offsets[:, 0], offsets[:, 1]) * config.cell_m
    keep = np.argsort(distance, kind="stable")
    offsets, distance = offsets[keep], distance[keep]
    n = int(np.ceil(2.0 * config.half_extent_m / config.cell_m))
    origin = -n * config.cell_m / 2.0
    link = (config.link_min_m, config.link_per_m, config.link_max_m)
    labels = _grid_components(pts, origin, config.cell_m, n, offsets, distance, *link)
    return relabel_by_size(labels, config.min_points)


def dbscan_clusters(points: np.ndarray, config: ClusterConfig = ClusterConfig()) -> np.ndarray:
    """(N,) int32 labels from open3d DBSCAN on ``x, y, z * z_scale``."""
    import open3d as o3d  # imported here: open3d takes about a second to import

    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] < 3:
        raise InputError(f"clustering: points must have shape (N, C>=3), got {pts.shape}")
    if len(pts) == 0:
        return np.zeros(0, dtype=np.int32)
    xyz = np.column_stack([pts[:, 0], pts[:, 1], pts[:, 2] * config.z_scale])
    inverse = np.arange(len(xyz))
    if config.voxel_m > 0:
        keys = np.floor(xyz / config.voxel_m).astype(np.int64)
        _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
        xyz = xyz[first]
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(xyz))
    labels = np.asarray(cloud.cluster_dbscan(config.eps_m, config.dbscan_min_points, print_progress=False))
    return relabel_by_size(labels[inverse.reshape(-1)].astype(np.int32), config.min_points)


def relabel_by_size(labels: np.ndarray, min_points: int) -> np.ndarray:
    """Renumber labels ``0 .. K-1`` from the largest cluster down; clusters under ``min_points`` become -1."""
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0 or labels.max() < 0:
        return np.full(len(labels), -1, dtype=np.int32)
    counts = np.bincount(labels[labels >= 0], minlength=int(labels.max()) + 1)
    keep = np.flatnonzero(counts >= min_points)
    order = keep[np.argsort(-counts[keep], kind="stable")]
    mapping = np.full(len(counts) + 1, -1, dtype=np.int32)  # the last slot maps noise (-1) to -1
    mapping[order] = np.arange(len(order), dtype=np.int32)
    return mapping[labels]


def group_by_label(labels: np.ndarray, num_clusters: int) -> tuple[np.ndarray, np.ndarray]:
    """Counting sort of point indices by label.

    Returns:
        order: (M,) int64 indices of the labelled points, cluster by cluster (noise left out).
        offsets: (K+1,) int64; cluster k owns ``order[offsets[k]:offsets[k+1]]``.
    """
    return _group(np.asarray(labels, dtype=np.int32), int(num_clusters))


@numba.njit(cache=True)
def _group(labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(k + 1, dtype=np.int64)
    for lab in labels:
        if lab >= 0:
            offsets[lab + 1] += 1
    for j in range(k):
        offsets[j + 1] += offsets[j]
    fill = offsets[:-1].copy()
    order = np.empty(offsets[k], dtype=np.int64)
    for i in range(len(labels)):
        lab = labels[i]
        if lab >= 0:
            order[fill[lab]] = i
            fill[lab] += 1
    return order, offsets


@numba.njit(cache=True, inline="always")
def _find(parent: np.ndarray, a: int) -> int:
    root = a
    while parent[root] != root:
        root = parent[root]
    while parent[a] != root:  # path compression
        nxt = parent[a]
        parent[a] = root
        a = nxt
    return root


@numba.njit(cache=True)
def _grid_components(
    pts: np.ndarray,
    origin: float,
    cell: float,
    n: int,
    offsets: np.ndarray,
    distance: np.ndarray,
    link_min: float,
    link_per_m: float,
    link_max: float,
) -> np.ndarray:
    """(N,) int64 component id per point (root cell index, not compact), -1 outside the grid.

    ``offsets`` (half-plane neighbour offsets in cells) are sorted by their ``distance`` in metres.
    """
    grid = np.full(n * n, -1, dtype=np.int32)  # occupied cell -> its slot in ``cells``
    cells = np.empty(pts.shape[0], dtype=np.int64)
    point_slot = np.full(pts.shape[0], -1, dtype=np.int64)
    inv = 1.0 / cell
    m = 0
    for i in range(pts.shape[0]):
        fx = (pts[i, 0] - origin) * inv
        fy = (pts[i, 1] - origin) * inv
        if not (0.0 <= fx < n and 0.0 <= fy < n):
            continue
        c = int(fx) * n + int(fy)
        if grid[c] < 0:
            grid[c] = m
            cells[m] = c
            m += 1
        point_slot[i] = grid[c]
    parent = np.arange(m)
    for s in range(m):
        ix, iy = cells[s] // n, cells[s] % n
        r = math.hypot(origin + (ix + 0.5) * cell, origin + (iy + 0.5) * cell)
        link = min(max(link_per_m * r, link_min), link_max) + 1e-9
        for o in range(offsets.shape[0]):
            if distance[o] > link:
                break
            jx, jy = ix + offsets[o, 0], iy + offsets[o, 1]
            if jx < 0 or jx >= n or jy < 0 or jy >= n:
                continue
            t = grid[jx * n + jy]
            if t < 0:
                continue
            ra, rb = _find(parent, s), _find(parent, t)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    out = np.full(pts.shape[0], -1, dtype=np.int64)
    for i in range(pts.shape[0]):
        if point_slot[i] >= 0:
            out[i] = _find(parent, point_slot[i])
    return out
