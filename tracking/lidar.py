"""The clip's lidar as refinement sees it: per-keyframe world-frame point arrays with a BEV grid index.

Arrays in, nothing read from disk. Points of frame ``f`` are the fusion stage's cloud of that keyframe in
the world frame (``(N_f, C>=3)``, columns ``x, y, z, ...``). When a column holds the per-point capture time
relative to the keyframe (``dt_s``, as in fusion's ``x, y, z, intensity, dt_s`` multi-sweep clouds), name it
with ``dt_column``: a moving object's points, smeared along its path over the sweeps, are then moved back
to the keyframe time with the object's velocity (``xy - v * dt_s``) before its box is fitted.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numba
import numpy as np

from calibration import WORLD_FRAME, InputError


@dataclass(frozen=True, eq=False)
class _GridIndex:
    """Points of one frame sorted by BEV cell: cell ``(i, j)`` holds ``order[start:end]``."""

    keys: np.ndarray  # (N,) sorted cell keys ``(i - i0) * n_j + (j - j0)``
    order: np.ndarray  # (N,) point index of each sorted key
    i0: int
    j0: int
    n_i: int
    n_j: int


@dataclass(frozen=True, eq=False)
class ClipLidar:
    """World-frame lidar of F keyframes.

    Attributes:
        timestamps_us: (F,) keyframe times, strictly increasing (the frames tracks index into).
        points: F arrays (N_f, C>=3) of world-frame points ``x, y, z, ...``.
        sensor_xyz_m: (F, 3) world position of the lidar at each keyframe (the ego position is close
            enough): decides which faces of an object the sensor could see.
        dt_column: column of the per-point capture time minus the keyframe time in seconds, or None.
        frame: name of the points' frame (tracks must be in the same frame).
        cell_m: BEV cell size of the spatial index.
    """

    timestamps_us: np.ndarray
    points: tuple[np.ndarray, ...]
    sensor_xyz_m: np.ndarray
    dt_column: int | None = None
    frame: str = WORLD_FRAME
    cell_m: float = 4.0

    def __post_init__(self) -> None:
        times = np.array(self.timestamps_us, dtype=np.int64).reshape(-1)
        if np.any(np.diff(times) <= 0):
            raise InputError("ClipLidar: keyframe timestamps must strictly increase")
        points = tuple(np.asarray(p) for p in self.points)
        if len(points) != times.shape[0]:
            raise InputError(f"ClipLidar: {times.shape[0]} timestamps but {len(points)} point arrays")
        min_columns = 3 if self.dt_column is None else max(3, self.dt_column + 1)
        for f, p in enumerate(points):
            if p.ndim != 2 or p.shape[1] < min_columns:
                raise InputError(f"ClipLidar: frame {f} points must have shape (N, >={min_columns}), got {p.shape}")
        sensor = np.array(self.sensor_xyz_m, dtype=np.float64).reshape(-1, 3)
        if sensor.shape[0] != times.shape[0] or not np.all(np.isfinite(sensor)):
            raise InputError(f"ClipLidar: sensor_xyz_m must be finite with shape ({times.shape[0]}, 3)")
        if self.cell_m <= 0:
            raise InputError(f"ClipLidar.cell_m must be positive, got {self.cell_m}")
        times.setflags(write=False)
        sensor.setflags(write=False)
        object.__setattr__(self, "timestamps_us", times)
        object.__setattr__(self, "points", points)
        object.__setattr__(self, "sensor_xyz_m", sensor)

    @classmethod
    def without_points(cls, timestamps_us: np.ndarray, sensor_xyz_m: np.ndarray | None = None) -> ClipLidar:
        """A clip with no lidar: refinement then smooths and completes the detections alone."""
        times = np.asarray(timestamps_us, dtype=np.int64).reshape(-1)
        sensor = np.zeros((times.shape[0], 3)) if sensor_xyz_m is None else sensor_xyz_m
        return cls(times, tuple(np.zeros((0, 3), dtype=np.float32) for _ in times), sensor)

    def __len__(self) -> int:
        return int(self.timestamps_us.shape[0])

    @cached_property
    def _index(self) -> tuple[_GridIndex, ...]:
        """Per-frame BEV grid indexes, built on first use (one sort per frame)."""
        return tuple(_build_index(p, self.cell_m) for p in self.points)

    @cached_property
    def max_abs_dt_s(self) -> np.ndarray:
        """(F,) largest ``|dt_s|`` of each frame's points (zeros without a ``dt_column``)."""
        if self.dt_column is None:
            return np.zeros(len(self))
        return np.array([float(np.abs(p[:, self.dt_column]).max(initial=0.0)) for p in self.points])

    def points_near(self, frame_index: int, xy_min: np.ndarray, xy_max: np.ndarray) -> np.ndarray:
        """(M, C) float64 points of one frame whose cell overlaps the BEV rectangle [xy_min, xy_max].

        A superset of the points inside the rectangle (whole cells); callers test the exact shape.
        """
        points = self.points[frame_index]
        starts, ends = self._cell_ranges(frame_index, xy_min, xy_max)
        order = self._index[frame_index].order
        runs = [order[a:b] for a, b in zip(starts, ends, strict=True)]
        picked = np.concatenate(runs) if runs else np.zeros(0, dtype=np.int64)
        return points[picked].astype(np.float64)

    def points_in(self, frame_index: int, xy_min: np.ndarray, xy_max: np.ndarray) -> np.ndarray:
        """(M, C) float64 points of one frame inside the BEV rectangle [xy_min, xy_max] (bounds included).

        The points of :meth:`points_near` that lie inside, in the same order, without copying the others.
        """
        starts, ends = self._cell_ranges(frame_index, xy_min, xy_max)
        lo, hi = np.asarray(xy_min, dtype=np.float64), np.asarray(xy_max, dtype=np.float64)
        return _take_inside(self.points[frame_index], self._index[frame_index].order, starts, ends, lo, hi)

    def _cell_ranges(self, frame_index: int, xy_min: np.ndarray, xy_max: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(R,) starts and ends into the frame's sorted ``order``: the runs of cells overlapping the rectangle."""
        index, none = self._index[frame_index], np.zeros(0, dtype=np.int64)
        if self.points[frame_index].shape[0] == 0:
            return none, none
        lo = np.floor(np.asarray(xy_min, dtype=np.float64) / self.cell_m).astype(np.int64) - (index.i0, index.j0)
        hi = np.floor(np.asarray(xy_max, dtype=np.float64) / self.cell_m).astype(np.int64) - (index.i0, index.j0)
        lo = np.maximum(lo, 0)
        hi = np.minimum(hi, (index.n_i - 1, index.n_j - 1))
        if np.any(hi < lo):
            return none, none
        rows = np.arange(lo[0], hi[0] + 1) * index.n_j
        starts = np.searchsorted(index.keys, rows + lo[1], side="left")
        return starts, np.searchsorted(index.keys, rows + hi[1], side="right")


@numba.njit(cache=True)
def _take_inside(
    points: np.ndarray, order: np.ndarray, starts: np.ndarray, ends: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> np.ndarray:
    """(M, C) float64 rows ``points[order[starts[r]:ends[r]]]`` (runs in turn) whose x, y lie in [lo, hi] (2,)."""
    total = 0
    for r in range(starts.shape[0]):
        total += ends[r] - starts[r]
    out = np.empty((total, points.shape[1]), dtype=np.float64)
    m = 0
    for r in range(starts.shape[0]):
        for i in order[starts[r] : ends[r]]:
            x, y = np.float64(points[i, 0]), np.float64(points[i, 1])
            if lo[0] <= x <= hi[0] and lo[1] <= y <= hi[1]:
                out[m] = points[i]
                m += 1
    return out[:m].copy()


def _build_index(points: np.ndarray, cell_m: float) -> _GridIndex:
    if points.shape[0] == 0:
        empty = np.zeros(0, dtype=np.int64)
        return _GridIndex(empty, empty, 0, 0, 1, 1)
    keys, i0, j0, n_i, n_j = _cell_keys(points, cell_m)
    # A counting sort is O(N), 3-5x faster than argsort on a keyframe cloud; a few points far apart make more
    # cells than points, which the argsort handles better.
    few_cells = n_i * n_j <= 4 * keys.shape[0]
    order = _counting_sort_order(keys, n_i * n_j) if few_cells else np.argsort(keys, kind="stable")
    return _GridIndex(keys[order], order, i0, j0, n_i, n_j)


@numba.njit(cache=True)
def _counting_sort_order(keys: np.ndarray, num_keys: int) -> np.ndarray:
    """(N,) stable sorting permutation of N keys in ``[0, num_keys)`` (counting sort)."""
    starts = np.zeros(num_keys + 1, dtype=np.int64)
    for key in keys:
        starts[key + 1] += 1
    for k in range(num_keys):
        starts[k + 1] += starts[k]
    order = np.empty(keys.shape[0], dtype=np.int64)
    for p in range(keys.shape[0]):
        order[starts[keys[p]]] = p
        starts[keys[p]] += 1
    return order


@numba.njit(cache=True)
def _cell_keys(points: np.ndarray, cell_m: float) -> tuple[np.ndarray, int, int, int, int]:
    """(N,) cell key ``(i - i0) * n_j + (j - j0)`` of each of N >= 1 points, with ``i0, j0, n_i, n_j``."""
    n = points.shape[0]
    cells = np.empty((n, 2), dtype=np.int64)
    for p in range(n):
        cells[p, 0] = np.int64(np.floor(np.float64(points[p, 0]) / cell_m))
        cells[p, 1] = np.int64(np.floor(np.float64(points[p, 1]) / cell_m))
    i0, j0 = cells[:, 0].min(), cells[:, 1].min()
    n_j = cells[:, 1].max() - j0 + 1
    keys = (cells[:, 0] - i0) * n_j + (cells[:, 1] - j0)
    return keys, i0, j0, cells[:, 0].max() - i0 + 1, n_j
