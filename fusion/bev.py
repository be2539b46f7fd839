"""Bird's-eye-view rasters of point clouds (torch scatter, CPU or CUDA).

Layout: ``(C, H, W)`` float32 with ``raster[c, iy, ix]`` for the cell
``x in [x_min + ix * res, x_min + (ix + 1) * res)``, ``y in [y_min + iy * res, ...)``: row index grows
with +y (left of the ego), column index with +x (forward). Channels are :data:`BEV_CHANNELS`; empty cells
hold NaN heights, zero density and zero intensity/colour.
"""

from __future__ import annotations

from dataclasses import dataclass

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

    Args:
        rgb: (N, 3) uint8 painted colours; cells average the painted (non-black) points. Without it the
            colour channels are zero.
    """
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[1] < 4:
        raise GeometryError(f"points must have shape (N, C>=4), got {pts.shape}")
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
