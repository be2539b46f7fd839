"""Bird's-eye-view rasters of point clouds (torch scatter, CPU or CUDA).

Layout: ``(C, H, W)`` float32 with ``raster[c, iy, ix]`` for the cell
``x in [x_min + ix * res, x_min + (ix + 1) * res)``, ``y in [y_min + iy * res, ...)``: row index grows
with +y (left of the ego), column index with +x (forward). Channels are :data:`BEV_CHANNELS`; empty cells
hold NaN heights, zero density and zero intensity/colour.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numba
import numpy as np
import torch

from calibration import GeometryError

BEV_CHANNELS = ("height_max_m", "height_min_m", "density", "intensity_mean", "red", "green", "blue")


@dataclass(frozen=True)
class BevGrid:
    """Metric extent and resolution of a raster (default: 102.4 m square at 0.2 m, 512 x 512)."""

    x_min_m: float = -51.2
    x_max_m: float = 51.2
    y_min_m: float = -51.2
    y_max_m: float = 51.2
    z_min_m: float = -5.0
    z_max_m: float = 5.0
    resolution_m: float = 0.2

    def __post_init__(self) -> None:
        if self.resolution_m <= 0 or self.x_max_m <= self.x_min_m or self.y_max_m <= self.y_min_m:
            raise GeometryError(f"invalid BEV grid {self}")

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) = (cells along y, cells along x)."""
        return (
            round((self.y_max_m - self.y_min_m) / self.resolution_m),
            round((self.x_max_m - self.x_min_m) / self.resolution_m),
        )


def rasterize(points: np.ndarray, grid: BevGrid, device: torch.device, *, rgb: np.ndarray | None = None) -> np.ndarray:
    """(C, H, W) float32 raster of (N, C>=4) points ``x, y, z, intensity`` in the grid's frame.

    On CPU a single-pass numba kernel does the work (torch's scatter passes are ~10x slower there);
    elsewhere torch scatter ops on ``device``. Both give the same raster.

    Args:
        rgb: (N, 3) uint8 painted colours; cells average the painted (non-black) points. Without it the
            colour channels are zero.
    """
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[1] < 4:
        raise GeometryError(f"points must have shape (N, C>=4), got {pts.shape}")
    if rgb is not None and np.shape(rgb) != (len(pts), 3):
        raise GeometryError(f"colours must have shape ({len(pts)}, 3), got {np.shape(rgb)}")
    if device.type == "cpu":
        return _rasterize_numba(pts, grid, rgb)
    return _rasterize_torch(pts, grid, device, rgb)


def _rasterize_numba(pts: np.ndarray, grid: BevGrid, rgb: np.ndarray | None) -> np.ndarray:
    colours = np.zeros((0, 3), np.uint8) if rgb is None else np.ascontiguousarray(rgb, dtype=np.uint8)
    points = np.ascontiguousarray(pts[:, :4], dtype=np.float32)
    return _raster_parts([(points[:, :3], points[:, 3], colours)], grid)


def rasterize_parts(
    parts: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], grid: BevGrid, device: torch.device
) -> np.ndarray:
    """:func:`rasterize` of the points of several arrays taken together, without stacking them first.

    Args:
        parts: per array its (N_i, 3) ``x, y, z`` (any float type), (N_i,) intensities and (N_i, 3) uint8 colours.
    """
    if device.type != "cpu":
        xyzi = np.concatenate([np.column_stack([xyz[:, :3], intensity]) for xyz, intensity, _ in parts])
        return _rasterize_torch(xyzi, grid, device, np.concatenate([rgb for _, _, rgb in parts]))
    return _raster_parts(parts, grid)


def xy_extent(arrays: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(2,) lowest and highest x, y over the rows of several (N_i, >=2) arrays (at least one row in all)."""
    lo, hi = np.full(2, np.inf), np.full(2, -np.inf)
    for xy in arrays:
        _extend_extent(xy, lo, hi)
    if not np.all(lo <= hi):
        raise GeometryError("xy_extent needs at least one point")
    return lo, hi


@numba.njit(cache=True, nogil=True)
def _extend_extent(xy: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> None:
    for i in range(xy.shape[0]):
        for k in range(2):
            lo[k] = min(lo[k], xy[i, k])
            hi[k] = max(hi[k], xy[i, k])


def _raster_parts(parts: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], grid: BevGrid) -> np.ndarray:
    h, w = grid.shape
    bounds = np.array([grid.x_min_m, grid.y_min_m, grid.z_min_m, grid.z_max_m, grid.resolution_m], np.float32)
    out = np.zeros((len(BEV_CHANNELS), h * w), np.float32)
    out[0, :] = -np.inf
    out[1, :] = np.inf
    painted = np.zeros(h * w, np.float32)
    for xyz, intensity, rgb in parts:
        _raster_add(out, painted, xyz, intensity, rgb, bounds, h, w)
    _raster_finish(out, painted)
    return out.reshape(len(BEV_CHANNELS), h, w)


@numba.njit(cache=True, nogil=True)
def _raster_add(
    out: np.ndarray,
    painted: np.ndarray,
    xyz: np.ndarray,
    intensity: np.ndarray,
    rgb: np.ndarray,
    bounds: np.ndarray,
    h: int,
    w: int,
) -> None:
    """Accumulate (N, 3) points (in float32, whatever their type), (N,) intensities and (N, 3) or (0, 3) colours
    into the (7, H * W) sums ``out`` and the (H * W,) painted counts."""
    x_min, y_min, z_min, z_max, res = bounds[0], bounds[1], bounds[2], bounds[3], bounds[4]
    with_rgb = rgb.shape[0] > 0
    for i in range(xyz.shape[0]):
        x, y, z = np.float32(xyz[i, 0]), np.float32(xyz[i, 1]), np.float32(xyz[i, 2])
        ix = np.int64(np.floor((x - x_min) / res))
        iy = np.int64(np.floor((y - y_min) / res))
        if ix < 0 or ix >= w or iy < 0 or iy >= h or not (z >= z_min and z <= z_max):
            continue
        c = iy * w + ix
        out[0, c] = max(out[0, c], z)
        out[1, c] = min(out[1, c], z)
        out[2, c] += 1.0
        out[3, c] += np.float32(intensity[i])
        if with_rgb and (np.int32(rgb[i, 0]) + np.int32(rgb[i, 1]) + np.int32(rgb[i, 2])) > 0:
            painted[c] += 1.0
            out[4, c] += rgb[i, 0]
            out[5, c] += rgb[i, 1]
            out[6, c] += rgb[i, 2]


@numba.njit(cache=True, nogil=True)
def _raster_finish(out: np.ndarray, painted: np.ndarray) -> None:
    """Sums to the raster: NaN heights where empty, mean intensity and mean painted colour."""
    for c in range(out.shape[1]):
        count = out[2, c]
        if count == 0:
            out[0, c] = np.nan
            out[1, c] = np.nan
        else:
            out[3, c] /= count
        if painted[c] > 0:
            for k in range(4, 7):
                out[k, c] /= painted[c]


def _rasterize_torch(pts: np.ndarray, grid: BevGrid, device: torch.device, rgb: np.ndarray | None) -> np.ndarray:
    h, w = grid.shape
    p = torch.as_tensor(np.ascontiguousarray(pts[:, :4], dtype=np.float32), device=device)
    ix = torch.floor((p[:, 0] - grid.x_min_m) / grid.resolution_m).long()
    iy = torch.floor((p[:, 1] - grid.y_min_m) / grid.resolution_m).long()
    keep = (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h) & (p[:, 2] >= grid.z_min_m) & (p[:, 2] <= grid.z_max_m)
    n_cells = h * w
    # Points outside the grid go to one spare cell past the end (no boolean indexing: it is slow on CPU).
    cell = torch.where(keep, iy * w + ix, torch.full_like(ix, n_cells))
    z, intensity = p[:, 2], p[:, 3]
    ones = torch.ones_like(z)
    count = torch.zeros(n_cells + 1, device=device).index_add_(0, cell, ones)[:n_cells]
    empty = count == 0
    zmax = torch.full((n_cells + 1,), -float("inf"), device=device).scatter_reduce_(0, cell, z, reduce="amax")
    zmin = torch.full((n_cells + 1,), float("inf"), device=device).scatter_reduce_(0, cell, z, reduce="amin")
    out = torch.zeros((len(BEV_CHANNELS), n_cells), dtype=torch.float32, device=device)
    nan = torch.full((n_cells,), float("nan"), device=device)
    out[0] = torch.where(empty, nan, zmax[:n_cells])
    out[1] = torch.where(empty, nan, zmin[:n_cells])
    out[2] = count
    out[3] = torch.zeros(n_cells + 1, device=device).index_add_(0, cell, intensity)[:n_cells] / count.clamp(min=1)
    if rgb is not None:
        colour = torch.as_tensor(np.ascontiguousarray(rgb), device=device).to(torch.float32)
        painted_cell = torch.where(colour.sum(dim=1) > 0, cell, torch.full_like(cell, n_cells))
        n_painted = torch.zeros(n_cells + 1, device=device).index_add_(0, painted_cell, ones)[:n_cells]
        totals = torch.zeros((n_cells + 1, 3), device=device).index_add_(0, painted_cell, colour)[:n_cells]
        out[4:7] = (totals / n_painted.clamp(min=1)[:, None]).T
    return out.reshape(len(BEV_CHANNELS), h, w).cpu().numpy()
