"""OpenCV camera renderer for the simulator: flat-shaded polygons, painter's order, an instance buffer.

The simulated cameras have no distortion, so every planar polygon projects to a polygon and the image
is drawn exactly with ``cv2.fillConvexPoly`` (``LINE_8``, sub-pixel ``shift``): no anti-aliasing, edges
pixel-true. Polygons are clipped in the camera frame against the near plane (``z > NEAR_M``) and a guard
band around the image before projection (Sutherland-Hodgman), so geometry beside the car stays right.

Painter's order (no z-buffer):

1. sky gradient by ray elevation;
2. far-ground band: every ray that descends relative to the ground's mean slope plane (its horizon
   is the slope plane's line at infinity, ``v = cy`` for a level camera on flat ground);
3. ground tiles around the camera (hierarchical grid, far to near), corners on the height field,
   grass colour varying smoothly between green and brown, Lambert-shaded by the tile normal;
4. road asphalt and then road paint, each rectangle cut into chunks that follow the height field and
   lifted by a few centimetres (exact edges, same rectangles as :meth:`Ground.surface`);
5. boxes (static structures and actors at ``t_s``) far to near, camera-facing faces only, each face
   ``base colour x (ambient + diffuse * max(0, n . sun))``; building faces get darker windows.

The box order is the exact front-to-back order of the footprints seen from the camera in top view
(upright boxes with disjoint footprints never cyclically overlap), with the distance to the nearest
point of the footprint as the tie-break and the fallback for overlapping footprints. The instance
buffer receives the same polygons in the same order: actor faces write the actor index, structure
faces ``-1``, so occlusion in ``instance`` matches the RGB image exactly.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass

import cv2
import numpy as np

from autolabel.sim.world import Ground, Surface, World, actor_boxes_at
from calibration import SE3, WORLD_FRAME, Boxes3D, GeometryError, PinholeCamera

NEAR_M = 0.05  # near clipping plane (camera z)
SHIFT = 4  # sub-pixel bits of the polygon vertices handed to OpenCV
_SCALE = float(1 << SHIFT)
_GUARD_PX = 2048.0  # polygons are clipped to the image grown by this much (keeps fixed point small)
_CULL_MARGIN_PX = 1.0
_NO_INSTANCE = -1

Colour = tuple[int, int, int]

# Box faces as corner indices (see calibration.boxes) and outward normals in the box frame. Vertical
# faces list the top edge first, so positions 3 and 2 are the bottom-left and bottom-right corners.
_FACES = np.array([[0, 1, 2, 3], [4, 7, 6, 5], [0, 1, 5, 4], [2, 3, 7, 6], [1, 2, 6, 5], [3, 0, 4, 7]], dtype=np.intp)
_FACE_NORMALS_LOCAL = np.array([[0, 0, 1], [0, 0, -1], [1, 0, 0], [-1, 0, 0], [0, -1, 0], [0, 1, 0]], dtype=np.float64)
_VERTICAL_FACES = np.array([False, False, True, True, True, True])


@dataclass(frozen=True)
class RenderStyle:
    """Colours (RGB) and level of detail of the renderer.

    Attributes:
        sky_horizon, sky_zenith: sky gradient end colours (by ray elevation).
        far_ground: colour of the ground beyond the tiles.
        grass_green, grass_brown: off-road ground, mixed by a smooth deterministic field.
        asphalt, marking: road surface and paint.
        sun: direction towards the sun in the world frame (normalised when used).
        ambient: shading factor of faces turned away from the sun; lit faces reach 1.0.
        ground_levels: ``(cell_m, reach_m)`` from fine to coarse; a cell is split to the finer size when
            the nearest point of it is closer than that level's reach; each size divides the next.
        chunk_m: road and marking rectangles are cut into pieces at most this long (height field).
        road_lift_m, marking_lift_m: lift above the height field (draw order does the rest).
        windows: draw building windows.
        window_shade: window colour = face colour x this.
        window_size_m: ``width, height`` of a window; window_pitch_m: ``horizontal, vertical`` spacing.
    """

    sky_horizon: Colour = (206, 219, 232)
    sky_zenith: Colour = (104, 146, 206)
    far_ground: Colour = (104, 112, 76)
    grass_green: Colour = (80, 114, 54)
    grass_brown: Colour = (118, 104, 70)
    asphalt: Colour = (92, 92, 96)
    marking: Colour = (230, 230, 222)
    sun: tuple[float, float, float] = (0.45, 0.3, 0.84)
    ambient: float = 0.6
    ground_levels: tuple[tuple[float, float], ...] = ((1.0, 20.0), (4.0, 60.0), (8.0, 150.0))
    chunk_m: float = 4.0
    road_lift_m: float = 0.01
    marking_lift_m: float = 0.02
    windows: bool = True
    window_shade: float = 0.5
    window_size_m: tuple[float, float] = (1.4, 1.5)
    window_pitch_m: tuple[float, float] = (3.5, 3.2)


DEFAULT_STYLE = RenderStyle()


@dataclass(frozen=True, eq=False)
class RenderedImage:
    """One rendered camera image.

    Attributes:
        rgb: (H, W, 3) uint8 RGB.
        instance: (H, W) int32 index of the actor drawn at each pixel, -1 elsewhere.
    """

    rgb: np.ndarray
    instance: np.ndarray


@dataclass(frozen=True, eq=False)
class _View:
    """A camera placed in the world, with its clipping and culling planes (camera frame).

    Attributes:
        cam_SE3_world: world -> camera.
        centre: (3,) camera centre in the world.
        k: (3, 3) intrinsics.
        clip_planes: (5, 4) ``n, d`` with ``n . p + d >= 0`` inside: near plane and guard band.
        cull_planes: (5, 4) near plane and the image borders (a polygon outside one is invisible).
    """

    camera: PinholeCamera
    cam_SE3_world: SE3
    centre: np.ndarray
    k: np.ndarray
    clip_planes: np.ndarray
    cull_planes: np.ndarray

    @classmethod
    def create(cls, camera: PinholeCamera, world_SE3_ego: SE3) -> _View:
        if camera.has_distortion:
            raise GeometryError(f"camera {camera.name}: the renderer draws straight edges and needs no distortion")
        world_SE3_cam = world_SE3_ego @ camera.ego_SE3_cam
        k = camera.intrinsics
        near = np.array([0.0, 0.0, 1.0, -NEAR_M])
        w, h = camera.width_px, camera.height_px
        return cls(
            camera=camera,
            cam_SE3_world=world_SE3_cam.inverse(),
            centre=world_SE3_cam.translation.copy(),
            k=k,
            clip_planes=np.vstack([near, _side_planes(k, -0.5 - _GUARD_PX, w - 0.5 + _GUARD_PX, h, _GUARD_PX)]),
            cull_planes=np.vstack(
                [near, _side_planes(k, -0.5 - _CULL_MARGIN_PX, w - 0.5 + _CULL_MARGIN_PX, h, _CULL_MARGIN_PX)]
            ),
        )

    def to_cam(self, points: np.ndarray) -> np.ndarray:
        """(..., 3) world points -> camera frame."""
        flat = np.ascontiguousarray(points, dtype=np.float64).reshape(-1, 3)  # 2-D matmul goes to BLAS
        out = flat @ self.cam_SE3_world.rotation.T + self.cam_SE3_world.translation
        return out.reshape(points.shape)

    def to_fixed(self, points_cam: np.ndarray) -> np.ndarray:
        """(..., 3) camera points in front of the camera -> (..., 2) int32 fixed-point pixels."""
        uvw = np.ascontiguousarray(points_cam).reshape(-1, 3) @ self.k.T
        uv = uvw[:, :2] * (_SCALE / uvw[:, 2:])
        return np.rint(uv).astype(np.int32).reshape((*points_cam.shape[:-1], 2))

    def classify(self, polys_cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(P, V, 3) camera-frame polygons -> (P,) bool ``visible`` (not wholly outside one culling plane)
        and (P,) bool ``direct`` (wholly inside the clipping planes: project without clipping)."""
        p, v = polys_cam.shape[:2]
        planes = np.vstack([self.cull_planes, self.clip_planes])
        vertex_major = np.ascontiguousarray(polys_cam.transpose(1, 0, 2)).reshape(-1, 3)
        d = (planes[:, :3] @ vertex_major.T + planes[:, 3:]).reshape(len(planes), v, p)  # fast reductions
        n_cull = len(self.cull_planes)
        visible = d[:n_cull].max(axis=1).min(axis=0) >= 0.0
        direct = d[n_cull:].min(axis=1).min(axis=0) >= 0.0
        return visible, direct


def _side_planes(k: np.ndarray, u_min: float, u_max: float, height_px: int, margin_px: float) -> np.ndarray:
    """(4, 4) planes through the camera centre bounding ``u_min <= u <= u_max`` and the grown image rows."""
    fx, s, cx, fy, cy = k[0, 0], k[0, 1], k[0, 2], k[1, 1], k[1, 2]
    v_min, v_max = -0.5 - margin_px, height_px - 0.5 + margin_px
    return np.array(
        [
            [fx, s, cx - u_min, 0.0],
            [-fx, -s, u_max - cx, 0.0],
            [0.0, fy, cy - v_min, 0.0],
            [0.0, -fy, v_max - cy, 0.0],
        ]
    )


def _clip_polygon(poly: np.ndarray, planes: np.ndarray) -> np.ndarray:
    """Sutherland-Hodgman: (V, 3) convex polygon clipped to ``n . p + d >= 0`` for every plane -> (V', 3)."""
    pts = poly
    for plane in planes:
        dist = pts @ plane[:3] + plane[3]
        inside = dist >= 0.0
        if inside.all():
            continue
        if not inside.any():
            return pts[:0]
        out = []
        n = len(pts)
        for a in range(n):
            b = (a + 1) % n
            if inside[a]:
                out.append(pts[a])
            if inside[a] != inside[b]:
                t = dist[a] / (dist[a] - dist[b])
                out.append(pts[a] + t * (pts[b] - pts[a]))
        pts = np.array(out)
    return pts


def _draw_polygons(
    view: _View,
    rgb: np.ndarray,
    polys_world: np.ndarray,
    colours: np.ndarray,
    instance: np.ndarray | None = None,
    ids: np.ndarray | None = None,
    writes_id: np.ndarray | None = None,
) -> None:
    """Fill convex (P, V, 3) world polygons in array order with (P, 3) uint8 ``colours``.

    With ``instance`` given, polygons where ``writes_id`` (P,) bool is set also write ``ids`` (P,) there.
    Invisible polygons are culled, the rest clipped to the near plane and the guard band.
    """
    if len(polys_world) == 0:
        return
    pc = view.to_cam(polys_world)
    visible, direct = view.classify(pc)
    keep = np.flatnonzero(visible)
    if len(keep) == 0:
        return
    pc, direct = pc[keep], direct[keep]
    fixed = view.to_fixed(np.where(direct[:, None, None], pc, 1.0))
    colour_list = colours[keep].astype(np.int64).tolist()
    writes = instance is not None and ids is not None and writes_id is not None
    id_list = ids[keep].tolist() if writes else []
    write_list = writes_id[keep].tolist() if writes else [False] * len(keep)
    for i, is_direct in enumerate(direct.tolist()):
        if is_direct:
            pts = fixed[i]
        else:
            clipped = _clip_polygon(pc[i], view.clip_planes)
            if len(clipped) < 3:
                continue
            pts = view.to_fixed(clipped)
        cv2.fillConvexPoly(rgb, pts, colour_list[i], cv2.LINE_8, SHIFT)
        if write_list[i]:
            cv2.fillConvexPoly(instance, pts, id_list[i], cv2.LINE_8, SHIFT)


def _shade(normals: np.ndarray, style: RenderStyle) -> np.ndarray:
    """(N,) Lambert + ambient shading factors in ``[ambient, 1]`` of (N, 3) unit normals."""
    sun = np.asarray(style.sun, dtype=np.float64)
    sun = sun / np.linalg.norm(sun)
    return style.ambient + (1.0 - style.ambient) * np.clip(normals @ sun, 0.0, 1.0)


def _tint(base: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """(N, 3) colours x (N,) factors -> (N, 3) uint8."""
    return np.clip(np.rint(np.asarray(base, dtype=np.float64) * factor[:, None]), 0, 255).astype(np.uint8)


def _quad_normals(quads: np.ndarray) -> np.ndarray:
    """(N, 3) upward unit normals of (N, 4, 3) nearly planar ground quads (cross of the diagonals)."""
    n = np.cross(quads[:, 2] - quads[:, 0], quads[:, 3] - quads[:, 1])
    n *= np.where(n[:, 2:3] < 0.0, -1.0, 1.0)
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)


# --------------------------------------------------------------------------------------------- sky and ground
def _sky_and_far_ground(view: _View, ground: Ground, style: RenderStyle) -> np.ndarray:
    """(H, W, 3) uint8 background: the far-ground band (every ray that descends relative to the ground's
    slope plane meets it far away) over a sky gradient by the elevation of the centre column's ray."""
    cam = view.camera
    w, h = cam.width_px, cam.height_px
    up_cam = view.cam_SE3_world.rotation @ np.array([-ground.slope[0], -ground.slope[1], 1.0])
    line = np.linalg.inv(view.k).T @ up_cam  # ground where line . (u, v, 1) < 0: the horizon
    rect = np.array([[-1.0, -1.0, 1.0], [w, -1.0, 1.0], [w, h, 1.0], [-1.0, h, 1.0]])
    sky = _clip_polygon(rect, np.append(line, 0.0)[None, :])
    band = _clip_polygon(rect, np.append(-line, 0.0)[None, :])
    rgb = np.zeros((h, w, 3), dtype=np.uint8)
    # Rows wholly below the horizon are covered by the band; the gradient is only needed above.
    sky_rows = 0 if len(sky) < 3 else int(np.clip(np.floor(sky[:, 1].max()) + 2, 0, h))
    if sky_rows:
        rows = np.arange(sky_rows, dtype=np.float64)
        rays = cam.unproject(np.column_stack([np.full_like(rows, view.k[0, 2]), rows]))
        rays = rays @ view.cam_SE3_world.rotation  # camera -> world directions
        t = np.clip(np.arctan2(rays[:, 2], np.hypot(rays[:, 0], rays[:, 1])) / (np.pi / 3.0), 0.0, 1.0) ** 0.7
        horizon, zenith = np.asarray(style.sky_horizon, np.float64), np.asarray(style.sky_zenith, np.float64)
        column = np.rint(horizon + t[:, None] * (zenith - horizon)).astype(np.uint8)
        cv2.resize(column[:, None, :], (w, sky_rows), dst=rgb[:sky_rows], interpolation=cv2.INTER_NEAREST)
    if len(band) >= 3:
        pts = np.rint(band[:, :2] * _SCALE).astype(np.int32)
        cv2.fillConvexPoly(rgb, pts, [int(c) for c in style.far_ground], cv2.LINE_8, SHIFT)
    return rgb


def _ground_cells(view: _View, ground: Ground, levels: tuple[tuple[float, float], ...]) -> np.ndarray:
    """(N, 3) world-aligned square cells ``x0, y0, size`` that may be in view: the disc ``reach`` of the
    coarsest level, split hierarchically where closer than each finer level's reach; cells whose
    bounding box (slope plane +- the wave amplitudes) lies outside the view are dropped at every level."""
    centre_xy = view.centre[:2]
    size, reach = levels[-1]
    lo = np.floor((centre_xy - reach) / size).astype(np.int64)
    hi = np.floor((centre_xy + reach) / size).astype(np.int64)
    ix, iy = np.meshgrid(np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1), indexing="ij")
    cells = np.column_stack([ix.ravel() * size, iy.ravel() * size, np.full(ix.size, size)])
    cells = cells[_cell_distance(cells, centre_xy) < reach]
    amplitude = float(np.abs(np.asarray(ground.waves, np.float64).reshape(-1, 4)[:, 0]).sum())
    cells = cells[_cells_in_view(view, ground, cells, amplitude)]
    for fine, fine_reach in reversed(levels[:-1]):
        split = _cell_distance(cells, centre_xy) < fine_reach
        parents = cells[split]
        k = round(parents[0, 2] / fine) if len(parents) else 1
        offs = np.arange(k) * fine
        ox, oy = np.meshgrid(offs, offs, indexing="ij")
        children = np.column_stack(
            [
                (parents[:, None, 0] + ox.ravel()[None, :]).ravel(),
                (parents[:, None, 1] + oy.ravel()[None, :]).ravel(),
                np.full(len(parents) * k * k, fine),
            ]
        )
        cells = np.vstack([cells[~split], children[_cells_in_view(view, ground, children, amplitude)]])
    return cells


def _cells_in_view(view: _View, ground: Ground, cells: np.ndarray, amplitude_m: float) -> np.ndarray:
    """(N,) bool: the box over a cell between the slope plane -/+ ``amplitude_m`` is not outside the view."""
    x0, y0, s = cells[:, 0], cells[:, 1], cells[:, 2]
    xs = np.concatenate([x0, x0 + s, x0 + s, x0] * 2)
    ys = np.concatenate([y0, y0, y0 + s, y0 + s] * 2)
    zs = ground.slope[0] * xs + ground.slope[1] * ys
    zs[: 4 * len(cells)] -= amplitude_m
    zs[4 * len(cells) :] += amplitude_m
    box = view.to_cam(np.column_stack([xs, ys, zs])).reshape(8, len(cells), 3).transpose(1, 0, 2)
    return view.classify(box)[0]


def _cell_distance(cells: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """(N,) distance from ``xy`` to the nearest point of each square cell."""
    half = cells[:, 2] / 2.0
    d = np.maximum(np.abs(xy - (cells[:, :2] + half[:, None])) - half[:, None], 0.0)
    return np.hypot(d[:, 0], d[:, 1])


def _grass_mix(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(N,) smooth deterministic green (0) to brown (1) mix of the off-road ground."""
    m = 0.5 + 0.3 * np.sin(0.043 * x + 0.8) * np.sin(0.061 * y + 0.3) + 0.2 * np.sin(0.013 * x - 0.021 * y + 1.7)
    return np.clip(m, 0.0, 1.0)


def _draw_ground_tiles(view: _View, rgb: np.ndarray, ground: Ground, style: RenderStyle) -> None:
    cells = _ground_cells(view, ground, style.ground_levels)
    x0, y0, s = cells[:, 0], cells[:, 1], cells[:, 2]
    xs = np.stack([x0, x0 + s, x0 + s, x0], axis=1)
    ys = np.stack([y0, y0, y0 + s, y0 + s], axis=1)
    zs = _stitched_heights(ground, cells, xs, ys, style.ground_levels)
    quads = np.stack([xs, ys, zs], axis=-1)  # (N, 4, 3) counter-clockwise
    cx, cy = x0 + s / 2.0, y0 + s / 2.0
    order = np.argsort(-np.hypot(cx - view.centre[0], cy - view.centre[1]), kind="stable")
    mix = _grass_mix(cx, cy)[:, None]
    base = (1.0 - mix) * np.asarray(style.grass_green, np.float64) + mix * np.asarray(style.grass_brown, np.float64)
    colours = _tint(base, _shade(_quad_normals(quads), style))
    _draw_polygons(view, rgb, quads[order], colours[order])


def _stitched_heights(
    ground: Ground, cells: np.ndarray, xs: np.ndarray, ys: np.ndarray, levels: tuple[tuple[float, float], ...]
) -> np.ndarray:
    """(N, 4) corner heights of the cells: the height field, except where a corner of a finer cell lies on
    the edge of a coarser neighbour (a T-junction), where it takes that straight edge's height, so the
    tiles meet without cracks."""
    zs = ground.height(xs, ys)
    for fine, coarse in itertools.pairwise(size for size, _ in levels):
        is_coarse = cells[:, 2] == coarse
        fine_rows = np.flatnonzero(cells[:, 2] == fine)
        if not is_coarse.any() or len(fine_rows) == 0:
            continue
        # Occupancy grid of the coarse cells (indices offset by one so neighbours of the border stay inside).
        ix, iy = (
            np.rint(cells[is_coarse, 0] / coarse).astype(np.int64),
            np.rint(cells[is_coarse, 1] / coarse).astype(np.int64),
        )
        origin = np.array([ix.min() - 1, iy.min() - 1])
        present = np.zeros((ix.max() - origin[0] + 2, iy.max() - origin[1] + 2), dtype=bool)
        present[ix - origin[0], iy - origin[1]] = True
        gx, gy = xs[fine_rows] / coarse, ys[fine_rows] / coarse  # (F, 4) corners in coarse-grid units
        for vertical in (True, False):  # corners on grid lines x = k, then on grid lines y = k
            across, along = (gx, gy) if vertical else (gy, gx)
            k, j = np.rint(across), np.floor(along)
            on_line = (np.abs(across - k) < 1e-9) & (np.abs(along - np.rint(along)) > 1e-9)
            sides = [(k - 1, j), (k, j)] if vertical else [(j, k - 1), (j, k)]  # the two cells sharing the edge
            snap = on_line & (_lookup(present, origin, *sides[0]) | _lookup(present, origin, *sides[1]))
            if not snap.any():
                continue
            t = along[snap] - j[snap]
            line_m, start_m = k[snap] * coarse, j[snap] * coarse
            if vertical:
                z0, z1 = ground.height(line_m, start_m), ground.height(line_m, start_m + coarse)
            else:
                z0, z1 = ground.height(start_m, line_m), ground.height(start_m + coarse, line_m)
            block = zs[fine_rows]
            block[snap] = (1.0 - t) * z0 + t * z1
            zs[fine_rows] = block
    return zs


def _lookup(grid: np.ndarray, origin: np.ndarray, ix: np.ndarray, iy: np.ndarray) -> np.ndarray:
    """``grid[ix - origin_x, iy - origin_y]`` for (float, integral) indices; False outside the grid."""
    gx, gy = ix.astype(np.int64) - origin[0], iy.astype(np.int64) - origin[1]
    inside = (gx >= 0) & (gx < grid.shape[0]) & (gy >= 0) & (gy < grid.shape[1])
    return inside & grid[np.where(inside, gx, 0), np.where(inside, gy, 0)]


def _rect_chunks(
    rects: np.ndarray, centre_xy: np.ndarray, reach_m: float, chunk_m: float, split_width: bool
) -> np.ndarray:
    """(N, 4, 2) pieces (at most ``chunk_m`` long, and wide if ``split_width``) of the oriented rectangles
    ``cx, cy, length, width, yaw`` that lie within ``reach_m`` of ``centre_xy`` along each rectangle's axis."""
    if len(rects) == 0:
        return np.zeros((0, 4, 2))
    c, s = np.cos(rects[:, 4]), np.sin(rects[:, 4])
    along = np.column_stack([c, s])
    across = np.column_stack([-s, c])
    rel = centre_xy - rects[:, :2]
    t_cam = np.einsum("ij,ij->i", rel, along)
    half_l, half_w = rects[:, 2] / 2.0, rects[:, 3] / 2.0
    lo, hi = np.maximum(-half_l, t_cam - reach_m), np.minimum(half_l, t_cam + reach_m)
    keep = (lo < hi) & (np.abs(np.einsum("ij,ij->i", rel, across)) - half_w < reach_m)
    k0 = np.floor((lo + half_l) / chunk_m).astype(np.int64)
    k1 = np.maximum(np.ceil((hi + half_l) / chunk_m).astype(np.int64), k0 + 1)
    n_l = np.where(keep, k1 - k0, 0)
    n_w = (
        np.maximum(np.ceil(rects[:, 3] / chunk_m).astype(np.int64), 1) if split_width else np.ones(len(rects), np.int64)
    )
    counts = n_l * n_w
    r = np.repeat(np.arange(len(rects)), counts)
    q = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    il, iw = q // n_w[r], q % n_w[r]
    s0 = np.clip(-half_l[r] + (k0[r] + il) * chunk_m, -half_l[r], half_l[r])
    s1 = np.clip(s0 + chunk_m, -half_l[r], half_l[r])
    step_w = rects[r, 3] / n_w[r]
    w0 = -half_w[r] + iw * step_w
    w1 = w0 + step_w
    ss = np.stack([s0, s1, s1, s0], axis=1)[..., None]
    ww = np.stack([w0, w0, w1, w1], axis=1)[..., None]
    return rects[r, None, :2] + ss * along[r, None, :] + ww * across[r, None, :]


def _draw_ground_rects(
    view: _View,
    rgb: np.ndarray,
    ground: Ground,
    rects: np.ndarray,
    colour: Colour,
    lift_m: float,
    split_width: bool,
    style: RenderStyle,
) -> None:
    """Draw oriented ground rectangles as chunks on the height field, far to near."""
    reach = style.ground_levels[-1][1]
    xy = _rect_chunks(
        np.asarray(rects, dtype=np.float64).reshape(-1, 5), view.centre[:2], reach, style.chunk_m, split_width
    )
    if len(xy) == 0:
        return
    quads = np.concatenate([xy, ground.height(xy[..., 0], xy[..., 1])[..., None] + lift_m], axis=-1)
    centres = xy.mean(axis=1)
    order = np.argsort(-np.hypot(*(centres - view.centre[:2]).T), kind="stable")
    colours = _tint(
        np.broadcast_to(np.asarray(colour, np.float64), (len(quads), 3)), _shade(_quad_normals(quads), style)
    )
    _draw_polygons(view, rgb, quads[order], colours[order])


# --------------------------------------------------------------------------------------------- boxes
def _box_order(boxes: np.ndarray, camera_xy: np.ndarray) -> np.ndarray:
    """Far-to-near drawing order of upright (N, 7) world boxes seen from ``camera_xy`` (top view).

    Box ``a`` must be drawn before ``b`` when a ray from the camera meets ``b``'s footprint first. For
    disjoint convex footprints this relation has no cycles and is the same on every common ray, so one
    ray per pair (the middle of their shared angular interval) decides it. Among free boxes the one whose
    footprint's nearest point is farthest goes first (then the farther centre, then the lower index);
    cycles (overlapping footprints) fall back to that order, and boxes over the camera are drawn last.
    """
    m = len(boxes)
    rel = boxes[:, :2] - camera_xy
    c, s = np.cos(boxes[:, 6]), np.sin(boxes[:, 6])
    half = boxes[:, 3:5] / 2.0
    # Camera in each box's frame; distance to the nearest point of the footprint.
    cam_local = np.column_stack([-(c * rel[:, 0] + s * rel[:, 1]), s * rel[:, 0] - c * rel[:, 1]])
    near_dist = np.hypot(*np.maximum(np.abs(cam_local) - half, 0.0).T)
    priority = np.lexsort((np.arange(m), -np.hypot(rel[:, 0], rel[:, 1]), -near_dist))  # farthest first
    rank = np.empty(m, np.int64)
    rank[priority] = np.arange(m)

    # Angular interval of each footprint: the bearings of its corners around the bearing of its centre.
    signs = np.array([[1.0, 1.0], [1.0, -1.0], [-1.0, -1.0], [-1.0, 1.0]])
    lx, ly = signs[:, 0] * half[:, 0:1], signs[:, 1] * half[:, 1:2]  # (N, 4)
    corner_x = rel[:, 0:1] + c[:, None] * lx - s[:, None] * ly
    corner_y = rel[:, 1:2] + s[:, None] * lx + c[:, None] * ly
    bearing = np.arctan2(rel[:, 1], rel[:, 0])
    offsets = _wrap(np.arctan2(corner_y, corner_x) - bearing[:, None])
    start = _wrap(bearing + offsets.min(axis=1))
    width = offsets.max(axis=1) - offsets.min(axis=1)  # < pi for a box not over the camera
    i, j, d = _overlapping_intervals(start, width, np.flatnonzero(near_dist > 0.0))
    ray = start[i] + 0.5 * (d + np.minimum(width[i], d + width[j]))  # middle of the shared interval
    ray_x, ray_y = np.cos(ray), np.sin(ray)
    i_first = _ray_entry(cam_local[i], c[i], s[i], half[i], ray_x, ray_y) < _ray_entry(
        cam_local[j], c[j], s[j], half[j], ray_x, ray_y
    )
    before, after = np.where(i_first, j, i), np.where(i_first, i, j)

    # Kahn's algorithm over "before -> after", farthest free box first (plain lists: a few hundred nodes).
    by_parent = np.argsort(before, kind="stable")
    bounds = np.searchsorted(before[by_parent], np.arange(m + 1)).tolist()
    children_flat = after[by_parent].tolist()
    indegree = np.bincount(after, minlength=m).tolist()
    rank_list, priority_list = rank.tolist(), priority.tolist()
    heap = [rank_list[n] for n in range(m) if indegree[n] == 0]
    heapq.heapify(heap)
    done = [False] * m
    order: list[int] = []
    fallback = iter(priority_list)
    while len(order) < m:
        if heap:
            node = priority_list[heapq.heappop(heap)]
            if done[node]:
                continue
        else:  # a cycle (overlapping footprints): take the farthest box not drawn yet
            node = next(n for n in fallback if not done[n])
        done[node] = True
        order.append(node)
        for kid in children_flat[bounds[node] : bounds[node + 1]]:
            indegree[kid] -= 1
            if indegree[kid] == 0 and not done[kid]:
                heapq.heappush(heap, rank_list[kid])
    return np.array(order, dtype=np.intp)


def _overlapping_intervals(
    start: np.ndarray, width: np.ndarray, candidates: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs of overlapping angular intervals ``[start, start + width)`` (starts in [-pi, pi), widths < pi)
    among ``candidates``, each pair once: (K,) ``i``, (K,) ``j`` with ``j``'s start inside ``i``'s interval,
    and (K,) ``d`` = start of ``j`` - start of ``i`` in [0, width_i). Sweep over sorted starts, with every
    interval repeated one turn later so that pairs across the +-pi seam are found too."""
    ids = np.concatenate([candidates, candidates])
    starts = np.concatenate([start[candidates], start[candidates] + 2.0 * np.pi])
    sort = np.argsort(starts, kind="stable")
    ids, starts = ids[sort], starts[sort]
    first = np.flatnonzero(sort < len(candidates))  # sorted positions of the unshifted copies
    stop = np.searchsorted(starts, starts[first] + width[ids[first]], side="left")
    counts = np.maximum(stop - first - 1, 0)
    pos_i = np.repeat(first, counts)
    pos_j = pos_i + 1 + np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    i, j = ids[pos_i], ids[pos_j]
    keep = i != j
    return i[keep], j[keep], (starts[pos_j] - starts[pos_i])[keep]


def _wrap(angle: np.ndarray) -> np.ndarray:
    """Angles wrapped to [-pi, pi)."""
    return np.remainder(angle + np.pi, 2.0 * np.pi) - np.pi


def _ray_entry(
    origin_local: np.ndarray, c: np.ndarray, s: np.ndarray, half: np.ndarray, ray_x: np.ndarray, ray_y: np.ndarray
) -> np.ndarray:
    """(P,) distance along world rays ``(ray_x, ray_y)`` from the camera to where they enter rectangles
    (slab method in each rectangle's frame: (P, 2) camera position, yaw cos/sin (P,), half sizes (P, 2))."""
    dx, dy = c * ray_x + s * ray_y, -s * ray_x + c * ray_y
    with np.errstate(divide="ignore", invalid="ignore"):
        tx0, tx1 = (-half[:, 0] - origin_local[:, 0]) / dx, (half[:, 0] - origin_local[:, 0]) / dx
        ty0, ty1 = (-half[:, 1] - origin_local[:, 1]) / dy, (half[:, 1] - origin_local[:, 1]) / dy
    enter = np.maximum(np.fmin(tx0, tx1), np.fmin(ty0, ty1))
    return np.nan_to_num(enter, nan=0.0)


def _windows(quads: np.ndarray, style: RenderStyle) -> tuple[np.ndarray, np.ndarray]:
    """Window rectangles in the plane of vertical (F, 4, 3) faces (top edge first, bottoms possibly cut by
    the ground): (N, 4, 3) quads and (N,) index of the face each belongs to."""
    (win_w, win_h), (pitch_w, pitch_h) = style.window_size_m, style.window_pitch_m
    bottom_a, bottom_b = quads[:, 3], quads[:, 2]
    width = np.linalg.norm(bottom_b[:, :2] - bottom_a[:, :2], axis=1)
    z_bottom = np.maximum(bottom_a[:, 2], bottom_b[:, 2])
    height = quads[:, 0, 2] - z_bottom
    n_c = np.floor(width / pitch_w).astype(np.int64)  # window columns, centred on the face
    n_r = np.floor(height / pitch_h).astype(np.int64)  # floors, one window row centred in each
    counts = np.where((n_c > 0) & (n_r > 0), n_c * n_r, 0)
    f = np.repeat(np.arange(len(quads)), counts)
    if len(f) == 0:
        return np.zeros((0, 4, 3)), f
    q = np.arange(len(f)) - np.repeat(np.cumsum(counts) - counts, counts)
    col, row = q % n_c[f], q // n_c[f]
    e_u = (bottom_b - bottom_a)[f] / np.maximum(width[f], 1e-9)[:, None]
    e_u[:, 2] = 0.0
    u0 = (width[f] - n_c[f] * pitch_w) / 2.0 + (pitch_w - win_w) / 2.0 + col * pitch_w
    z0 = z_bottom[f] + row * pitch_h + (pitch_h - win_h) / 2.0
    du = np.array([0.0, win_w, win_w, 0.0])
    dz = np.array([0.0, 0.0, win_h, win_h])
    corners = bottom_a[f][:, None, :] + (u0[:, None] + du[None, :])[..., None] * e_u[:, None, :]
    corners[..., 2] = z0[:, None] + dz[None, :]
    return corners, f


def _render_boxes(
    view: _View, rgb: np.ndarray, instance: np.ndarray | None, world: World, t_s: float, style: RenderStyle
) -> None:
    """Draw the camera-facing faces (and windows) of structures and actors in visibility order into
    ``rgb`` and (actor index / -1) into ``instance``."""
    structures = world.structures
    actor_boxes = actor_boxes_at(world.actors, world.dt_s, t_s)
    n_s = len(structures.boxes)
    boxes = np.vstack([np.asarray(structures.boxes, np.float64).reshape(-1, 7), actor_boxes.reshape(-1, 7)])
    if len(boxes) == 0:
        return
    colours = np.vstack([np.asarray(structures.colour).reshape(-1, 3), np.asarray(world.actors.colour).reshape(-1, 3)])
    ids = np.concatenate([np.full(n_s, _NO_INSTANCE), np.arange(len(actor_boxes))])
    is_building = np.concatenate([np.asarray(structures.surface) == Surface.BUILDING, np.zeros(len(actor_boxes), bool)])
    corners = Boxes3D(boxes, WORLD_FRAME).corners()  # (N, 8, 3)
    # Structures sink into the ground: their visible sides end at the height field.
    if n_s:
        bottom = corners[:n_s, 4:, :]
        ground_z = world.ground.height(bottom[..., 0], bottom[..., 1])
        bottom[..., 2] = np.clip(ground_z, bottom[..., 2], corners[:n_s, :4, 2])

    keep = np.flatnonzero(view.classify(view.to_cam(corners))[0])
    if len(keep) == 0:
        return
    boxes, corners, colours, ids, is_building = boxes[keep], corners[keep], colours[keep], ids[keep], is_building[keep]

    order = _box_order(boxes, view.centre[:2])
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))

    c, s = np.cos(boxes[:, 6]), np.sin(boxes[:, 6])
    rot = np.zeros((len(boxes), 3, 3))
    rot[:, 0, 0], rot[:, 0, 1], rot[:, 1, 0], rot[:, 1, 1], rot[:, 2, 2] = c, -s, s, c, 1.0
    normals = np.einsum("nij,fj->nfi", rot, _FACE_NORMALS_LOCAL)  # (N, 6, 3)
    quads = corners[:, _FACES, :]  # (N, 6, 4, 3)
    facing = np.einsum("nfk,nfk->nf", normals, view.centre - quads.mean(axis=2)) > 0.0
    box_i, face_i = np.nonzero(facing)
    face_quads, face_normals = quads[box_i, face_i], normals[box_i, face_i]
    shade = _shade(face_normals, style)
    face_colours = _tint(colours[box_i], shade)

    polys = [face_quads]
    poly_colours = [face_colours]
    poly_rank = [rank[box_i]]
    poly_slot = [face_i]
    poly_ids = [ids[box_i]]
    poly_writes = [np.ones(len(box_i), bool)]
    if style.windows:
        wall = is_building[box_i] & _VERTICAL_FACES[face_i]
        win, f = _windows(face_quads[wall], style)
        src = np.flatnonzero(wall)[f]
        polys.append(win)
        poly_colours.append(_tint(face_colours[src], np.full(len(src), style.window_shade)))
        poly_rank.append(rank[box_i[src]])
        poly_slot.append(np.full(len(src), len(_FACES)))
        poly_ids.append(np.full(len(src), _NO_INSTANCE))
        poly_writes.append(np.zeros(len(src), bool))  # the building face already wrote -1 there
    all_rank, all_slot = np.concatenate(poly_rank), np.concatenate(poly_slot)
    draw = np.lexsort((np.arange(len(all_rank)), all_slot, all_rank))
    all_ids, all_writes = np.concatenate(poly_ids)[draw], np.concatenate(poly_writes)[draw]
    is_actor = all_ids != _NO_INSTANCE
    all_writes[: int(np.argmax(is_actor)) if is_actor.any() else len(all_writes)] = False  # nothing to hide yet
    _draw_polygons(
        view,
        rgb,
        np.concatenate(polys)[draw],
        np.concatenate(poly_colours)[draw],
        instance,
        all_ids,
        all_writes,
    )


# --------------------------------------------------------------------------------------------- public API
def render_camera(
    world: World,
    camera: PinholeCamera,
    world_SE3_ego: SE3,
    t_s: float,
    *,
    style: RenderStyle = DEFAULT_STYLE,
    with_instance: bool = True,
) -> RenderedImage:
    """Render one camera image of ``world`` at ``t_s`` with the ego at ``world_SE3_ego``.

    Returns:
        :class:`RenderedImage` with ``rgb`` (H, W, 3) uint8 and ``instance`` (H, W) int32 (actor index or -1);
        ``with_instance=False`` skips the instance buffer (all -1) to save time.
    """
    view = _View.create(camera, world_SE3_ego)
    ground = world.ground
    rgb = _sky_and_far_ground(view, ground, style)
    instance = np.full((camera.height_px, camera.width_px), _NO_INSTANCE, dtype=np.int32)
    _draw_ground_tiles(view, rgb, ground, style)
    _draw_ground_rects(view, rgb, ground, ground.road_rects, style.asphalt, style.road_lift_m, True, style)
    _draw_ground_rects(view, rgb, ground, ground.marking_rects, style.marking, style.marking_lift_m, False, style)
    _render_boxes(view, rgb, instance if with_instance else None, world, t_s, style)
    return RenderedImage(rgb=rgb, instance=instance)


def actor_silhouette_px(world: World, camera: PinholeCamera, world_SE3_ego: SE3, t_s: float) -> np.ndarray:
    """(A,) int64 pixel count of each actor's unoccluded silhouette in the image.

    The silhouette is the convex hull of the actor box's corners after clipping the box to the near
    plane, projected and rasterised with the renderer's fill rule and clipped to the image, so an
    unoccluded actor's ``instance`` pixel count matches it (visibility = visible pixels / silhouette).
    """
    view = _View.create(camera, world_SE3_ego)
    boxes = actor_boxes_at(world.actors, world.dt_s, t_s)
    out = np.zeros(len(boxes), dtype=np.int64)
    if len(boxes) == 0:
        return out
    corners_cam = view.to_cam(Boxes3D(boxes, WORLD_FRAME).corners())  # (A, 8, 3)
    visible, direct = view.classify(corners_cam)
    fixed = view.to_fixed(np.where(direct[:, None, None], corners_cam, 1.0))
    size = np.array([camera.width_px, camera.height_px])
    for a in np.flatnonzero(visible).tolist():
        if direct[a]:
            pts = fixed[a]
        else:  # vertices of the box clipped to the near plane and the guard band
            pieces = [_clip_polygon(corners_cam[a][face], view.clip_planes) for face in _FACES]
            vertices = np.vstack([p for p in pieces if len(p)] or [np.zeros((0, 3))])
            if len(vertices) < 3:
                continue
            pts = view.to_fixed(vertices)
        hull = cv2.convexHull(pts.reshape(-1, 1, 2)).reshape(-1, 2)
        lo = np.maximum(hull.min(axis=0) // (1 << SHIFT) - 1, 0)
        hi = np.minimum(hull.max(axis=0) // (1 << SHIFT) + 2, size)
        if np.any(hi <= lo):
            continue
        mask = np.zeros((int(hi[1] - lo[1]), int(hi[0] - lo[0])), dtype=np.uint8)
        cv2.fillConvexPoly(mask, hull - (lo * (1 << SHIFT)).astype(np.int32), 1, cv2.LINE_8, SHIFT)
        out[a] = int(np.count_nonzero(mask))
    return out
