"""Scenario generation: road layouts per profile, static clutter, parked objects and moving agents.

One *site* (static world: ground, roads, structures, parked objects) is drawn from a seed; each
*trip* through it gets its own ego path and its own moving agents, so several drives of the same
place can be aligned. Every random draw comes from ``numpy.random.Generator`` objects seeded from
``(seed, purpose)``, so the same seed gives the same world.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import Enum

import numpy as np

from autolabel.sim.world import Actors, Ground, StaticStructures, Surface, World
from calibration import WORLD_FRAME, Boxes3D, iou_bev


class Profile(str, Enum):
    URBAN = "urban"
    HIGHWAY = "highway"
    PARKING = "parking"


# nuScenes category -> mean (l, w, h) in metres (nuScenes train-set class statistics, rounded).
CLASS_SIZES_LWH: dict[str, tuple[float, float, float]] = {
    "vehicle.car": (4.63, 1.96, 1.74),
    "vehicle.truck": (6.93, 2.51, 2.84),
    "vehicle.bus.rigid": (10.9, 2.94, 3.47),
    "vehicle.trailer": (12.3, 2.90, 3.87),
    "vehicle.construction": (6.37, 2.85, 3.19),
    "human.pedestrian.adult": (0.73, 0.67, 1.77),
    "human.pedestrian.child": (0.52, 0.50, 1.28),
    "vehicle.motorcycle": (2.11, 0.77, 1.47),
    "vehicle.bicycle": (1.70, 0.60, 1.28),
    "movable_object.trafficcone": (0.41, 0.41, 1.07),
    "movable_object.barrier": (0.50, 2.53, 0.98),
}
DT_S = 0.01  # trajectory grid step
ROUTE_STEP_M = 0.25  # spacing of the dense path points
TIME_MARGIN_S = 0.2  # the grid extends past the clip so sweeps and cameras at the ends interpolate


def rng_for(seed: int, *purpose: object) -> np.random.Generator:
    """An independent generator per (seed, purpose): adding a draw elsewhere never shifts this one."""
    digest = hashlib.sha256("/".join(map(str, (seed, *purpose))).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


# --------------------------------------------------------------------------------------- paths
def polyline_path(points: np.ndarray, turn_radius_m: float = 8.0, step_m: float = ROUTE_STEP_M) -> np.ndarray:
    """Dense (P, 2) path through ``points`` with corners rounded by circular arcs (constant turn rate)."""
    pts = np.asarray(points, dtype=np.float64)
    out = [pts[0]]
    for i in range(1, len(pts) - 1):
        a, b, c = pts[i - 1], pts[i], pts[i + 1]
        d_in, d_out = (b - a) / np.linalg.norm(b - a), (c - b) / np.linalg.norm(c - b)
        turn = np.arctan2(d_in[0] * d_out[1] - d_in[1] * d_out[0], d_in @ d_out)
        if abs(turn) < 1e-6:
            out.append(b)
            continue
        r = min(
            turn_radius_m,
            0.45 * np.linalg.norm(b - a) / abs(np.tan(turn / 2)),
            0.45 * np.linalg.norm(c - b) / abs(np.tan(turn / 2)),
        )
        cut = r * abs(np.tan(turn / 2))
        start, end = b - d_in * cut, b + d_out * cut
        normal = np.array([-d_in[1], d_in[0]]) * np.sign(turn)
        centre = start + normal * r
        a0 = np.arctan2(*(start - centre)[::-1])
        arc = np.linspace(0.0, turn, max(int(abs(turn) * r / step_m), 2))
        out.extend(centre + r * np.column_stack([np.cos(a0 + arc), np.sin(a0 + arc)]))
        out.append(end)
    out.append(pts[-1])
    return _resample(np.array(out), step_m)


def _resample(path: np.ndarray, step_m: float) -> np.ndarray:
    seg = np.linalg.norm(np.diff(path, axis=0), axis=1)
    keep = np.concatenate([[True], seg > 1e-9])
    path = path[keep]
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(path, axis=0), axis=1))])
    grid = np.arange(0.0, s[-1] + 1e-9, step_m)
    return np.column_stack([np.interp(grid, s, path[:, 0]), np.interp(grid, s, path[:, 1])])


def follow_path(path: np.ndarray, speeds_mps: np.ndarray, s0_m: float) -> tuple[np.ndarray, np.ndarray]:
    """Positions (T, 2) and continuous yaw (T,) along ``path`` for a speed profile on the time grid.

    Beyond the path's ends the object keeps its end heading and position (it has left the scene).
    """
    s_path = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(path, axis=0), axis=1))])
    s = s0_m + np.concatenate([[0.0], np.cumsum((speeds_mps[1:] + speeds_mps[:-1]) / 2 * DT_S)])
    s = np.clip(s, 0.0, s_path[-1])
    xy = np.column_stack([np.interp(s, s_path, path[:, 0]), np.interp(s, s_path, path[:, 1])])
    tangent = np.gradient(path, axis=0)
    heading = np.unwrap(np.arctan2(tangent[:, 1], tangent[:, 0]))
    return xy, np.interp(s, s_path, heading)


def speed_profile(
    rng: np.random.Generator, steps: int, cruise_mps: float, *, stops: int = 0, accel_mps2: float = 1.5
) -> np.ndarray:
    """(T,) smooth speed: cruise with gentle variation and ``stops`` full stops (accelerate/brake limited)."""
    t = np.arange(steps) * DT_S
    target = cruise_mps * (1.0 + 0.1 * np.sin(2 * np.pi * t / rng.uniform(6.0, 14.0) + rng.uniform(0, 2 * np.pi)))
    for _ in range(stops):
        centre, length = rng.uniform(0.2, 0.8) * t[-1], rng.uniform(1.5, 4.0)
        target[np.abs(t - centre) < length / 2] = 0.0
    speeds = np.empty(steps)
    speeds[0] = target[0]
    dv = accel_mps2 * DT_S
    for k in range(1, steps):
        speeds[k] = speeds[k - 1] + np.clip(target[k] - speeds[k - 1], -dv, dv)
    return np.maximum(speeds, 0.0)


# --------------------------------------------------------------------------------------- site
@dataclass(frozen=True, eq=False)
class StaticActor:
    category: str
    x: float
    y: float
    yaw: float
    size_lwh: tuple[float, float, float]
    has_rider: bool = False


@dataclass(frozen=True, eq=False)
class Site:
    """The static part of a world: shared by every trip through it.

    Attributes:
        lanes: named driving paths (P, 2) in both directions for vehicles.
        walkways: pedestrian paths (P, 2).
        ego_routes: candidate ego routes (P, 2), one per trip (cycled).
    """

    profile: Profile
    ground: Ground
    structures: StaticStructures
    parked: tuple[StaticActor, ...]
    lanes: tuple[np.ndarray, ...]
    walkways: tuple[np.ndarray, ...]
    ego_routes: tuple[np.ndarray, ...]
    cruise_mps: float


class _Builder:
    """Accumulates static boxes, road rectangles and markings while a site is laid out."""

    def __init__(self, rng: np.random.Generator, ground_height) -> None:
        self.rng = rng
        self.height = ground_height
        self.boxes: list[list[float]] = []
        self.surfaces: list[int] = []
        self.colours: list[tuple[int, int, int]] = []
        self.roads: list[list[float]] = []
        self.markings: list[list[float]] = []
        self.parked: list[StaticActor] = []

    def box(
        self,
        x: float,
        y: float,
        l: float,
        w: float,
        h: float,
        yaw: float,
        surface: Surface,
        colour: tuple[int, int, int],
        sink_m: float = 0.1,
    ) -> None:
        base = float(self.height(np.array(x), np.array(y))) - sink_m
        self.boxes.append([x, y, base + (h + sink_m) / 2, l, w, h + sink_m, yaw])
        self.surfaces.append(int(surface))
        self.colours.append(colour)

    def road(self, cx: float, cy: float, length: float, width: float, yaw: float) -> None:
        self.roads.append([cx, cy, length, width, yaw])

    def dashed_line(
        self, x0: float, y0: float, x1: float, y1: float, dash_m: float = 3.0, gap_m: float = 6.0, width_m: float = 0.15
    ) -> None:
        d = np.array([x1 - x0, y1 - y0])
        length = float(np.linalg.norm(d))
        yaw = float(np.arctan2(d[1], d[0]))
        for s in np.arange(0.0, length - dash_m, dash_m + gap_m if gap_m > 0 else dash_m):
            c = np.array([x0, y0]) + d / length * (s + dash_m / 2)
            self.markings.append([c[0], c[1], dash_m, width_m, yaw])

    def kerb(self, x0: float, y0: float, x1: float, y1: float, segment_m: float = 10.0) -> None:
        d = np.array([x1 - x0, y1 - y0])
        length = float(np.linalg.norm(d))
        yaw = float(np.arctan2(d[1], d[0]))
        n = max(int(np.ceil(length / segment_m)), 1)
        for i in range(n):
            c = np.array([x0, y0]) + d * (i + 0.5) / n
            self.box(c[0], c[1], length / n, 0.3, 0.15, yaw, Surface.KERB, (150, 150, 145), sink_m=0.05)

    def building_row(self, x0: float, x1: float, y_edge: float, side: float, yaw: float = 0.0) -> None:
        """Buildings along x in [x0, x1], front face at ``y_edge``, extending towards ``side`` (+1 or -1)."""
        x = x0
        while x < x1:
            length = self.rng.uniform(10.0, 28.0)
            length = min(length, x1 - x)
            if length > 4.0:
                depth, height = self.rng.uniform(8.0, 16.0), self.rng.uniform(6.0, 28.0)
                shade = int(self.rng.integers(120, 210))
                colour = (shade, int(shade * self.rng.uniform(0.85, 1.0)), int(shade * self.rng.uniform(0.75, 0.95)))
                self.box(
                    x + length / 2, y_edge + side * depth / 2, length, depth, height, yaw, Surface.BUILDING, colour
                )
            x += length + self.rng.uniform(2.0, 8.0)

    def pole(self, x: float, y: float, height: float = 7.0) -> None:
        self.box(x, y, 0.25, 0.25, height, 0.0, Surface.POLE, (110, 110, 115))

    def tree(self, x: float, y: float) -> None:
        self.box(x, y, 0.35, 0.35, self.rng.uniform(2.0, 3.5), 0.0, Surface.VEGETATION, (90, 70, 50))
        top = float(self.boxes[-1][2] + self.boxes[-1][5] / 2)
        for _ in range(int(self.rng.integers(2, 5))):
            s = self.rng.uniform(1.5, 3.5)
            cx, cy = x + self.rng.uniform(-1.0, 1.0), y + self.rng.uniform(-1.0, 1.0)
            cz = top + self.rng.uniform(-0.5, 1.5)
            green = int(self.rng.integers(90, 150))
            self.boxes.append([cx, cy, cz, s, s * self.rng.uniform(0.7, 1.0), s * 0.8, self.rng.uniform(0, np.pi)])
            self.surfaces.append(int(Surface.VEGETATION))
            self.colours.append((40, green, 45))

    def bush(self, x: float, y: float) -> None:
        for _ in range(int(self.rng.integers(2, 6))):
            s = self.rng.uniform(0.5, 1.6)
            self.box(
                x + self.rng.uniform(-1.2, 1.2),
                y + self.rng.uniform(-1.2, 1.2),
                s,
                s * self.rng.uniform(0.6, 1.0),
                s * self.rng.uniform(0.5, 1.0),
                self.rng.uniform(0, np.pi),
                Surface.VEGETATION,
                (50, int(self.rng.integers(100, 160)), 50),
            )

    def park(self, category: str, x: float, y: float, yaw: float, *, has_rider: bool = False) -> None:
        mean = np.array(CLASS_SIZES_LWH[category])
        size = tuple(float(v) for v in mean * self.rng.uniform(0.92, 1.08, size=3))
        self.parked.append(StaticActor(category, x, y, yaw, size, has_rider))

    def structures(self) -> StaticStructures:
        return StaticStructures(
            boxes=np.array(self.boxes, dtype=np.float64).reshape(-1, 7),
            surface=np.array(self.surfaces, dtype=np.int8),
            colour=np.array(self.colours, dtype=np.uint8).reshape(-1, 3),
        )


def _ground(rng: np.random.Generator, roads: list, markings: list, slope_scale: float) -> Ground:
    waves = np.column_stack(
        [
            rng.uniform(0.05, 0.25, 3),
            rng.uniform(-1, 1, 3) * 2 * np.pi / rng.uniform(40, 120, 3),
            rng.uniform(-1, 1, 3) * 2 * np.pi / rng.uniform(40, 120, 3),
            rng.uniform(0, 2 * np.pi, 3),
        ]
    )
    return Ground(
        slope=rng.uniform(-1, 1, 2) * slope_scale,
        waves=waves,
        road_rects=np.array(roads, dtype=np.float64).reshape(-1, 5),
        marking_rects=np.array(markings, dtype=np.float64).reshape(-1, 5),
    )


def build_site(profile: Profile, seed: int) -> Site:
    """Lay out the static world of one site."""
    rng = rng_for(seed, "site", profile.value)
    provisional = _ground(
        rng_for(seed, "ground"), [], [], slope_scale={"urban": 0.015, "highway": 0.02, "parking": 0.005}[profile.value]
    )
    b = _Builder(rng, provisional.height)
    layout = {Profile.URBAN: _urban, Profile.HIGHWAY: _highway, Profile.PARKING: _parking}[profile]
    lanes, walkways, routes, cruise = layout(b)
    ground = Ground(
        provisional.slope, provisional.waves, np.array(b.roads).reshape(-1, 5), np.array(b.markings).reshape(-1, 5)
    )
    return Site(profile, ground, b.structures(), tuple(b.parked), lanes, walkways, routes, cruise)


HALF_LANE = 1.75


def _urban(b: _Builder):
    """A four-way intersection of two 2+2-lane streets with parking strips, sidewalks and blocks."""
    span, half = 160.0, 9.5  # street half width: 2 lanes of 3.5 m + 2.5 m parking strip
    b.road(0, 0, 2 * span, 2 * half, 0.0)
    b.road(0, 0, 2 * span, 2 * half, np.pi / 2)
    for sign in (-1, 1):
        for a, z in ((-span, -half - 2), (half + 2, span)):
            b.dashed_line(a, sign * 2 * HALF_LANE, z, sign * 2 * HALF_LANE)  # lane dividers along x
            b.dashed_line(sign * 2 * HALF_LANE, a, sign * 2 * HALF_LANE, z)  # along y
            b.dashed_line(a, sign * 0.2, z, sign * 0.2, dash_m=1.0, gap_m=0.0, width_m=0.12)  # double centre line
            b.dashed_line(sign * 0.2, a, sign * 0.2, z, dash_m=1.0, gap_m=0.0, width_m=0.12)
            for edge in (-half, half):
                b.kerb(a, edge, z, edge)
                b.kerb(edge, a, edge, z)
        for k in range(8):  # zebra crossings
            off = -half + 1.2 + k * 2.4
            b.markings.append([sign * (half + 2.5), off, 3.0, 0.6, 0.0])
            b.markings.append([off, sign * (half + 2.5), 0.6, 3.0, 0.0])
    for sx in (-1, 1):
        for sy in (-1, 1):  # the four blocks
            b.building_row(half + 8, span, sy * (half + 7), sy) if sx > 0 else b.building_row(
                -span, -half - 8, sy * (half + 7), sy
            )
            for s in np.arange(half + 10, span, 25.0):
                b.pole(sx * s, sy * (half + 1.0))
                b.pole(sy * (half + 1.0), sx * s)
            for s in np.arange(half + 14, span, 17.0):
                (b.tree if b.rng.random() < 0.6 else b.bush)(sx * s + b.rng.uniform(-2, 2), sy * (half + 4.5))
                (b.tree if b.rng.random() < 0.6 else b.bush)(sy * (half + 4.5), sx * s + b.rng.uniform(-2, 2))
            b.box(sx * (half + 6), sy * (half + 30), 0.3, 20.0, 1.5, np.pi / 2, Surface.WALL, (170, 160, 150))
    # Parked cars in the strips (not near the junction), a trailer, a work zone, a bicycle rack.
    for side, yaw in ((-1, 0.0), (1, np.pi)):
        for x in np.arange(-span + 20, span - 20, 7.0):
            if abs(x) > 25 and not -60 < x * side < -10 and b.rng.random() < 0.55:
                b.park("vehicle.car", x + b.rng.uniform(-0.5, 0.5), side * (half - 1.25), yaw + b.rng.normal(0, 0.03))
    # Just before the junction, where every trip passes: a work zone, a trailer, a bicycle rack.
    b.park("vehicle.trailer", -52.0, -(half - 1.45), 0.0)
    b.park("vehicle.trailer", 60.0, half - 1.45, np.pi)
    b.park("vehicle.construction", -14.0, half - 1.6, np.pi)
    for i in range(5):
        b.park("movable_object.barrier", -30.0 + 2.6 * i, half - 3.6, np.pi / 2)
    for i in range(7):
        b.park("movable_object.trafficcone", -31.0 + 3.0 * i, half - 4.4 + 0.3 * (i % 2), 0.0)
    for i in range(4):
        b.park("vehicle.bicycle", -40.0 + 0.8 * i, -(half + 2.2), np.pi / 2)
    b.park("vehicle.motorcycle", -26.0, -(half - 0.8), 0.0)
    lanes = []
    for sign, direction in ((-1, 0.0), (1, np.pi)):
        for k in (1, 3):
            y = sign * k * HALF_LANE
            xs = np.array([-span, span]) * (1 if direction == 0.0 else -1)
            lanes.append(polyline_path(np.array([[xs[0], y], [xs[1], y]])))
            lanes.append(polyline_path(np.array([[y * -1, xs[0]], [y * -1, xs[1]]])))
    # Turning lanes through the junction (constant-turn-rate arcs).
    lanes.append(polyline_path(np.array([[-span, -HALF_LANE], [HALF_LANE, -HALF_LANE], [HALF_LANE, span]]), 10.0))
    lanes.append(polyline_path(np.array([[span, HALF_LANE], [HALF_LANE, HALF_LANE], [HALF_LANE, -span]]), 6.0))
    walkways = []
    for sign in (-1, 1):
        walkways.append(polyline_path(np.array([[-span, sign * (half + 2.0)], [span, sign * (half + 2.0)]])))
        walkways.append(polyline_path(np.array([[sign * (half + 2.0), -span], [sign * (half + 2.0), span]])))
        # Crossing the street at the zebra, then turning along the far sidewalk.
        walkways.append(
            polyline_path(
                np.array(
                    [
                        [sign * (half + 2.5), -span / 2],
                        [sign * (half + 2.5), -half - 2],
                        [sign * (half + 2.5), half + 2],
                        [sign * span / 2, half + 2],
                    ]
                ),
                1.0,
            )
        )
    routes = (
        polyline_path(np.array([[-span + 10, -3 * HALF_LANE], [span - 10, -3 * HALF_LANE]])),
        polyline_path(np.array([[span - 10, HALF_LANE], [-span + 10, HALF_LANE]])),
        polyline_path(np.array([[-HALF_LANE, span - 10], [-HALF_LANE, -span + 10]])),
        polyline_path(np.array([[-span + 10, -HALF_LANE], [HALF_LANE, -HALF_LANE], [HALF_LANE, span - 10]]), 10.0),
    )
    return tuple(lanes), tuple(walkways), routes, 8.0


def _highway(b: _Builder):
    """A straight 3+3-lane road with a barrier median, sound walls, sparse vegetation and a work zone."""
    span = 400.0
    b.road(0, 0, 2 * span, 24.0, 0.0)
    for sign in (-1, 1):
        for k in (1, 2):
            b.dashed_line(-span, sign * (1.0 + 3.6 * k), span, sign * (1.0 + 3.6 * k))
        b.dashed_line(-span, sign * 11.9, span, sign * 11.9, dash_m=1.0, gap_m=0.0, width_m=0.2)
        b.kerb(-span, sign * 12.0, span, sign * 12.0)
        for x in np.arange(-span, span, 12.0):
            b.box(x + 6, sign * 20.0, 12.0, 0.4, 4.0, 0.0, Surface.WALL, (180, 175, 165))
        for x in np.arange(-span + 10, span, 50.0):
            b.pole(x, sign * 13.0, 10.0)
        for x in np.arange(-span, span, 23.0):
            if b.rng.random() < 0.5:
                (b.tree if b.rng.random() < 0.5 else b.bush)(x + b.rng.uniform(-5, 5), sign * b.rng.uniform(14.5, 18.0))
    for x in np.arange(-span, span, 2.6):  # concrete median barriers are labelled barriers
        if abs(x) < 60:
            b.park("movable_object.barrier", x, 0.0, np.pi / 2)
    for i in range(10):
        b.park("movable_object.trafficcone", 30.0 + 4.0 * i, -(1.0 + 3.6 * 3) + 0.4 * i, 0.0)
    b.park("vehicle.construction", 60.0, -10.3, 0.0)
    b.park("vehicle.car", -40.0, -10.5, 0.0)
    b.park("vehicle.trailer", -80.0, 10.5, np.pi)
    lanes = []
    for sign, direction in ((-1, 1.0), (1, -1.0)):
        for k in range(3):
            y = sign * (1.0 + 3.6 * k + 1.8)
            lanes.append(polyline_path(np.array([[-span * direction, y], [span * direction, y]])))
    walkways = (polyline_path(np.array([[20.0, -12.5], [80.0, -12.5]])),)
    routes = (
        polyline_path(np.array([[-span + 20, -(1.0 + 1.8 + 3.6)], [span - 20, -(1.0 + 1.8 + 3.6)]])),
        polyline_path(np.array([[span - 20, 1.0 + 1.8], [-span + 20, 1.0 + 1.8]])),
    )
    return tuple(lanes), walkways, routes, 22.0


def _parking(b: _Builder):
    """A parking lot: rows of parked cars either side of aisles, pedestrians walking between them."""
    b.road(0, 0, 120.0, 80.0, 0.0)
    rows = (-30.0, -10.0, 10.0, 30.0)
    for y in rows:
        for x in np.arange(-50.0, 50.0, 2.8):
            b.markings.append([x, y, 0.12, 5.0, 0.0])
            if b.rng.random() < 0.7:
                b.park(
                    "vehicle.car" if b.rng.random() < 0.9 else "vehicle.truck",
                    x + 1.4,
                    y + b.rng.uniform(-0.2, 0.2),
                    np.pi / 2 + (0 if b.rng.random() < 0.5 else np.pi) + b.rng.normal(0, 0.04),
                )
    for x in np.arange(-60.0, 61.0, 20.0):
        b.pole(x, -40.5, 8.0)
        b.pole(x, 40.5, 8.0)
    b.building_row(-60.0, 60.0, 44.0, 1)
    b.building_row(-60.0, 60.0, -44.0, -1)
    for y in (-42.0, 42.0):
        for x in np.arange(-58.0, 58.0, 9.0):
            b.bush(x, y)
    for i in range(5):
        b.park("movable_object.barrier", -62.0, -8.0 + 2.6 * i, 0.0)
        b.park("movable_object.trafficcone", 55.0, -5.0 + 2.5 * i, 0.0)
    b.park("vehicle.bicycle", -55.0, 38.0, 0.0)
    b.park("vehicle.motorcycle", -52.0, 38.0, 0.0)
    b.park("vehicle.trailer", 0.0, -38.0, 0.0)
    b.park("vehicle.construction", 40.0, 38.0, 0.0)
    b.park("vehicle.bus.rigid", -20.0, 38.0, 0.0)
    aisles = (-20.0, 0.0, 20.0)
    lanes = tuple(
        polyline_path(np.array([[-58.0 * d, y + 1.5 * d], [58.0 * d, y + 1.5 * d]])) for y in aisles for d in (1, -1)
    )
    walkways = tuple(
        polyline_path(np.array([[x, -38.0], [x, -20.0], [x + 10, -20.0], [x + 10, 38.0]]), 1.0)
        for x in (-40.0, -5.0, 25.0)
    )
    routes = (
        polyline_path(
            np.array([[-55.0, -18.5], [35.0, -18.5], [45.0, -8.0], [45.0, 8.0], [35.0, 18.5], [-55.0, 18.5]]), 6.0
        ),
        polyline_path(np.array([[55.0, 1.5], [-55.0, 1.5]])),
    )
    return lanes, walkways, routes, 4.0


# --------------------------------------------------------------------------------------- trips
MOVING_MIX: dict[Profile, tuple[tuple[str, float, float], ...]] = {
    # (category, share, cruise speed m/s)
    Profile.URBAN: (
        ("vehicle.car", 0.55, 9.0),
        ("vehicle.truck", 0.1, 8.0),
        ("vehicle.bus.rigid", 0.08, 7.0),
        ("vehicle.motorcycle", 0.12, 10.0),
        ("vehicle.bicycle", 0.15, 4.5),
    ),
    Profile.HIGHWAY: (
        ("vehicle.car", 0.6, 27.0),
        ("vehicle.truck", 0.2, 23.0),
        ("vehicle.bus.rigid", 0.08, 24.0),
        ("vehicle.motorcycle", 0.12, 29.0),
    ),
    Profile.PARKING: (("vehicle.car", 0.8, 3.0), ("vehicle.bicycle", 0.2, 3.0)),
}
PEDESTRIANS: dict[Profile, int] = {Profile.URBAN: 16, Profile.HIGHWAY: 2, Profile.PARKING: 14}
VEHICLES: dict[Profile, int] = {Profile.URBAN: 22, Profile.HIGHWAY: 26, Profile.PARKING: 6}


GOLDEN_ANGLE_DEG = 137.50776
VEGETATION_HUES_DEG = (75.0, 165.0)  # greens are left to plants, so objects never look like bushes


def instance_colour(index: int) -> tuple[int, int, int]:
    """A saturated RGB colour per actor index: golden-angle hues outside the vegetation greens,
    alternating two saturations, so neighbours in index order (and in the scene) look different."""
    low, high = VEGETATION_HUES_DEG
    span = 360.0 - (high - low)
    hue = (index * GOLDEN_ANGLE_DEG) % span
    hue = hue if hue < low else hue + (high - low)
    saturation = (0.95, 0.7, 0.85)[index % 3]
    value = 0.9
    c = value * saturation
    x = c * (1 - abs((hue / 60.0) % 2 - 1))
    m = value - c
    sector = int(hue // 60) % 6
    rgb = [(c, x, 0), (x, c, 0), (0, c, x), (0, x, c), (x, 0, c), (c, 0, x)][sector]
    return tuple(round(255 * (v + m)) for v in rgb)


FOOTPRINT_MARGIN_M = 0.4
CONFLICT_CHECK_STEP_S = 0.1


def _conflicts(track: np.ndarray, size: tuple[float, float, float], others: list[tuple[np.ndarray, tuple]]) -> bool:
    """True when the footprint of ``track`` (T, 3: x, y, yaw) overlaps any other track's at a checked time."""
    stride = max(round(CONFLICT_CHECK_STEP_S / DT_S), 1)
    rows = track[::stride]
    mine = Boxes3D(
        np.column_stack(
            [rows[:, :2], np.zeros(len(rows)), np.tile(np.add(size, FOOTPRINT_MARGIN_M), (len(rows), 1)), rows[:, 2]]
        ),
        WORLD_FRAME,
    )
    for other, other_size in others:
        o = other[::stride]
        theirs = Boxes3D(
            np.column_stack([o[:, :2], np.zeros(len(o)), np.tile(other_size, (len(o), 1)), o[:, 2]]), WORLD_FRAME
        )
        close = (
            np.linalg.norm(rows[:, :2] - o[:, :2], axis=1) < (np.hypot(*size[:2]) + np.hypot(*other_size[:2])) / 2 + 1
        )
        for k in np.nonzero(close)[0]:
            if iou_bev(mine[int(k)], theirs[int(k)])[0, 0] > 0:
                return True
    return False


def build_world(site: Site, seed: int, trip: int, seconds: float) -> World:
    """Ego path and moving agents of one trip through ``site``, on a grid covering ``seconds``."""
    rng = rng_for(seed, "trip", trip)
    steps = round((seconds + 2 * TIME_MARGIN_S) / DT_S) + 1
    height = site.ground.height

    # Ego: follows its route from a random start, cruise with occasional stops in town.
    route = site.ego_routes[trip % len(site.ego_routes)]
    ego_speed = speed_profile(
        rng,
        steps,
        site.cruise_mps * rng.uniform(0.8, 1.1),
        stops=int(site.profile is Profile.URBAN and rng.random() < 0.3),
    )
    # Start 30-50 m before the route's closest approach to the site centre (junction / work zone).
    closest = int(np.argmin(np.linalg.norm(route, axis=1))) * ROUTE_STEP_M
    start = max(closest - rng.uniform(30.0, 50.0), 0.0)
    ego_xy, ego_yaw = follow_path(route, ego_speed, start)
    ego_z = height(ego_xy[:, 0], ego_xy[:, 1])
    ego_poses = np.column_stack([ego_xy, ego_z, ego_yaw, *_pitch_roll(height, ego_xy, ego_yaw)])

    categories, sizes, colours, poses, riders = [], [], [], [], []
    # Moving things never overlap the ego or each other (the ego's footprint is a car's).
    movers: list[tuple[np.ndarray, tuple]] = [(np.column_stack([ego_xy, ego_yaw]), (4.9, 2.0, 1.8))]

    def add(category: str, size, xy: np.ndarray, yaw: np.ndarray, rider: bool, moving: bool = True) -> bool:
        track = np.column_stack([xy, yaw])
        if moving:
            if _conflicts(track, size, movers):
                return False
            movers.append((track, size))
        z = height(xy[:, 0], xy[:, 1]) + size[2] / 2
        categories.append(category)
        sizes.append(size)
        colours.append(instance_colour(len(categories) - 1))
        poses.append(np.column_stack([xy, z, yaw]))
        riders.append(rider)
        return True

    for actor in site.parked:
        xy = np.tile([actor.x, actor.y], (steps, 1))
        add(actor.category, actor.size_lwh, xy, np.full(steps, actor.yaw), actor.has_rider, moving=False)

    mix = MOVING_MIX[site.profile]
    shares = np.array([m[1] for m in mix]) / sum(m[1] for m in mix)
    ego_start = ego_xy[0]
    # The first agents cover every moving class close to the ego; the rest follow the mix. A draw that
    # would overlap the ego or another mover is rejected and drawn again (bounded attempts).
    accepted, attempts = 0, 0
    while accepted < VEHICLES[site.profile] and attempts < 4 * VEHICLES[site.profile]:
        attempts += 1
        first_round = accepted < len(mix)
        category, _, cruise = mix[accepted] if first_round else mix[int(rng.choice(len(mix), p=shares))]
        reach_m = 40.0 if first_round else 90.0
        reachable = [lane for lane in site.lanes if np.linalg.norm(lane - ego_start, axis=1).min() < reach_m]
        if not reachable:
            accepted += 1
            continue
        lane = reachable[int(rng.integers(len(reachable)))]
        near = np.nonzero(np.linalg.norm(lane - ego_start, axis=1) < reach_m)[0]
        s0 = float(rng.choice(near)) * ROUTE_STEP_M
        speed = speed_profile(rng, steps, cruise * rng.uniform(0.7, 1.15), stops=int(rng.random() < 0.2))
        xy, yaw = follow_path(lane, speed, s0)
        size = tuple(float(v) for v in np.array(CLASS_SIZES_LWH[category]) * rng.uniform(0.92, 1.08, 3))
        accepted += add(category, size, xy, yaw, category in ("vehicle.bicycle", "vehicle.motorcycle"))
    for _ in range(PEDESTRIANS[site.profile]):
        path = site.walkways[int(rng.integers(len(site.walkways)))]
        near = np.nonzero(np.linalg.norm(path - ego_start, axis=1) < 70.0)[0]
        if not len(near):
            continue
        if rng.random() < 0.5:
            path = path[::-1].copy()
            near = len(path) - 1 - near
        s0 = float(rng.choice(near)) * ROUTE_STEP_M
        speed = speed_profile(rng, steps, rng.uniform(1.0, 1.6), stops=int(rng.integers(0, 3)), accel_mps2=1.0)
        xy, yaw = follow_path(path, speed, s0)
        lateral = rng.uniform(-0.8, 0.8)
        xy = xy + lateral * np.column_stack([-np.sin(yaw), np.cos(yaw)])
        category = "human.pedestrian.child" if rng.random() < 0.1 else "human.pedestrian.adult"
        size = tuple(float(v) for v in np.array(CLASS_SIZES_LWH[category]) * rng.uniform(0.9, 1.1, 3))
        add(category, size, xy, yaw, False)

    actors = Actors(
        category=tuple(categories),
        size_lwh=np.array(sizes, dtype=np.float64).reshape(-1, 3),
        colour=np.array(colours, dtype=np.uint8).reshape(-1, 3),
        poses=np.array(poses, dtype=np.float64).reshape(len(categories), steps, 4),
        has_rider=np.array(riders, dtype=bool),
    )
    return World(DT_S, site.ground, site.structures, actors, ego_poses)


def _pitch_roll(height, xy: np.ndarray, yaw: np.ndarray, half_base_m: float = 1.4) -> tuple[np.ndarray, np.ndarray]:
    """Ego pitch and roll from the ground under the wheels (ZYX convention: nose up = negative pitch)."""
    fwd = np.column_stack([np.cos(yaw), np.sin(yaw)])
    left = np.column_stack([-np.sin(yaw), np.cos(yaw)])
    dz_fwd = height(*(xy + half_base_m * fwd).T) - height(*(xy - half_base_m * fwd).T)
    dz_left = height(*(xy + 0.8 * left).T) - height(*(xy - 0.8 * left).T)
    return -np.arctan2(dz_fwd, 2 * half_base_m), np.arctan2(dz_left, 1.6)
