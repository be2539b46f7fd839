"""Camera renderer: exact silhouettes, occlusion, horizon, near-plane clipping, determinism.

Small hand-built worlds seen by the simulated CAM_FRONT (fx = fy = 1266, cx = 816, cy = 491, at ego
(1.5, 0, 1.55), level, looking along +x) with the ego at the world origin.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from autolabel.sim.render import (
    DEFAULT_STYLE,
    NEAR_M,
    SHIFT,
    RenderStyle,
    actor_silhouette_px,
    render_camera,
)
from autolabel.sim.sensors import simulated_rig
from autolabel.sim.world import Actors, Ground, StaticStructures, Surface, World
from calibration import SE3, WORLD_FRAME, Boxes3D, GeometryError, PinholeCamera

CY_PX = 491
T_STEPS = 3
DT_S = 0.5


@pytest.fixture(scope="module")
def camera() -> PinholeCamera:
    return simulated_rig().camera("CAM_FRONT")


def make_world(
    actor_boxes: list[list[float]] = (),
    actor_colours: list[tuple[int, int, int]] = (),
    structure_boxes: list[list[float]] = (),
    structure_surfaces: list[Surface] = (),
    slope: tuple[float, float] = (0.0, 0.0),
    waves: np.ndarray | None = None,
    road_rects: np.ndarray | None = None,
    marking_rects: np.ndarray | None = None,
) -> World:
    """A world with static actors (boxes ``x, y, z, l, w, h, yaw``) and structures; flat ground by default."""
    ground = Ground(
        slope=np.array(slope, dtype=np.float64),
        waves=np.zeros((0, 4)) if waves is None else waves,
        road_rects=np.zeros((0, 5)) if road_rects is None else road_rects,
        marking_rects=np.zeros((0, 5)) if marking_rects is None else marking_rects,
    )
    s_boxes = np.array(structure_boxes, dtype=np.float64).reshape(-1, 7)
    structures = StaticStructures(
        boxes=s_boxes,
        surface=np.array(structure_surfaces, dtype=np.int8).reshape(-1),
        colour=np.tile(np.array([[150, 150, 150]], np.uint8), (len(s_boxes), 1)),
    )
    a_boxes = np.array(actor_boxes, dtype=np.float64).reshape(-1, 7)
    poses = np.repeat(a_boxes[:, None, [0, 1, 2, 6]], T_STEPS, axis=1)
    actors = Actors(
        category=("vehicle.car",) * len(a_boxes),
        size_lwh=a_boxes[:, 3:6].copy(),
        colour=np.array(actor_colours, dtype=np.uint8).reshape(-1, 3),
        poses=poses,
        has_rider=np.zeros(len(a_boxes), bool),
    )
    return World(DT_S, ground, structures, actors, np.zeros((T_STEPS, 6)))


def hull_mask(camera: PinholeCamera, box: list[float]) -> np.ndarray:
    """(H, W) bool: the convex hull of a box in front of the camera, rasterised independently."""
    corners = Boxes3D(np.array([box]), WORLD_FRAME).corners()[0]
    projection = camera.project_ego(corners)
    assert np.all(projection.depth_m > NEAR_M)
    fixed = np.rint(projection.uv_px * (1 << SHIFT)).astype(np.int32)
    mask = np.zeros((camera.height_px, camera.width_px), np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(fixed), 1, cv2.LINE_8, SHIFT)
    return mask.astype(bool)


def near_clipped_hull_mask(camera: PinholeCamera, box: list[float]) -> np.ndarray:
    """(H, W) bool: hull of the part of a box in front of the near plane (corners + edge crossings)."""
    corners_cam = camera.cam_SE3_ego.transform_points(Boxes3D(np.array([box]), WORLD_FRAME).corners()[0])
    edges = [(0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4), (0, 4), (1, 5), (2, 6), (3, 7)]
    points = [p for p in corners_cam if p[2] >= NEAR_M]
    for a, b in edges:
        za, zb = corners_cam[a, 2] - NEAR_M, corners_cam[b, 2] - NEAR_M
        if za * zb < 0:
            points.append(corners_cam[a] + za / (za - zb) * (corners_cam[b] - corners_cam[a]))
    uv = camera.project_cam(np.array(points), min_depth_m=0.0).uv_px
    fixed = np.rint(uv * (1 << SHIFT)).astype(np.int32)
    mask = np.zeros((camera.height_px, camera.width_px), np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(fixed), 1, cv2.LINE_8, SHIFT)
    return mask.astype(bool)


def boundary(mask: np.ndarray) -> np.ndarray:
    """Pixels within one pixel of the mask's edge."""
    kernel = np.ones((3, 3), np.uint8)
    m = mask.astype(np.uint8)
    return (cv2.dilate(m, kernel) - cv2.erode(m, kernel)).astype(bool)


def interior(mask: np.ndarray) -> np.ndarray:
    return cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def render(world: World, camera: PinholeCamera, style: RenderStyle = DEFAULT_STYLE):
    return render_camera(world, camera, SE3.identity(), DT_S, style=style)


def test_single_actor_is_exactly_its_projected_hull_in_its_own_shaded_colour(camera: PinholeCamera) -> None:
    box = [12.0, 0.8, 0.6, 4.5, 1.9, 1.2, 0.4]  # low enough to show its top face, turned to show two sides
    colour = (200, 120, 60)
    image = render(make_world([box], [colour]), camera)

    assert image.rgb.shape == (900, 1600, 3) and image.rgb.dtype == np.uint8
    assert image.instance.shape == (900, 1600) and image.instance.dtype == np.int32
    drawn = image.instance == 0
    expected = hull_mask(camera, box)
    assert set(np.unique(image.instance)) == {-1, 0}
    assert iou(drawn, expected) > 0.995
    assert not np.any((drawn ^ expected) & ~boundary(expected))

    ratio = image.rgb[drawn].astype(np.float64) / np.array(colour, np.float64)  # (N, 3) shading per channel
    rounding = 0.5 / np.array(colour, np.float64)
    assert np.all(np.abs(ratio - ratio.mean(axis=1, keepdims=True)) <= 2 * rounding.max())
    assert ratio.min() >= 0.6 - rounding.max() and ratio.max() <= 1.0 + rounding.max()
    assert len(np.unique(image.rgb[drawn], axis=0)) == 3  # top and two sides, each its own shade


def test_silhouette_matches_the_instance_count_of_an_unoccluded_actor(camera: PinholeCamera) -> None:
    boxes = [[12.0, 0.8, 0.6, 4.5, 1.9, 1.2, 0.4], [25.0, -4.0, 0.9, 0.8, 0.8, 1.8, 0.0]]
    world = make_world(boxes, [(200, 120, 60), (40, 90, 220)])
    image = render(world, camera)
    silhouette = actor_silhouette_px(world, camera, SE3.identity(), DT_S)
    assert silhouette.shape == (2,) and silhouette.dtype == np.int64
    counts = np.array([(image.instance == a).sum() for a in range(2)])
    np.testing.assert_allclose(silhouette, counts, rtol=0.01)
    assert np.all(counts > 0)


def test_silhouette_of_actors_out_of_view_is_zero(camera: PinholeCamera) -> None:
    boxes = [[-10.0, 0.0, 0.8, 4.5, 1.9, 1.6, 0.0], [5.0, 30.0, 0.8, 4.5, 1.9, 1.6, 0.0]]
    world = make_world(boxes, [(200, 0, 0), (0, 200, 0)])
    np.testing.assert_array_equal(actor_silhouette_px(world, camera, SE3.identity(), DT_S), [0, 0])
    assert np.all(render(world, camera).instance == -1)


def test_nearer_actor_hides_the_farther_one_where_they_overlap(camera: PinholeCamera) -> None:
    far = [20.0, 1.0, 1.0, 4.5, 2.0, 2.0, 0.0]
    near = [10.0, 0.0, 0.75, 4.0, 1.8, 1.5, 0.0]
    image = render(make_world([far, near], [(220, 40, 40), (40, 220, 40)]), camera)  # far one listed first
    far_mask, near_mask = hull_mask(camera, far), hull_mask(camera, near)
    overlap = interior(far_mask) & interior(near_mask)
    assert overlap.sum() > 1000
    assert np.all(image.instance[overlap] == 1)
    far_only = interior(far_mask) & ~cv2.dilate(near_mask.astype(np.uint8), np.ones((3, 3))).astype(bool)
    assert far_only.sum() > 1000
    assert np.all(image.instance[far_only] == 0)
    assert iou(image.instance == 1, near_mask) > 0.995


@pytest.mark.parametrize(("wall_height_m", "visible"), [(1.0, True), (4.0, False)])
def test_wall_in_front_hides_an_actor(camera: PinholeCamera, wall_height_m: float, visible: bool) -> None:
    wall = [8.0, 0.0, wall_height_m / 2, 0.3, 10.0, wall_height_m, 0.0]
    actor = [15.0, 0.0, 1.0, 4.0, 2.0, 2.0, 0.0]
    image = render(make_world([actor], [(30, 60, 240)], [wall], [Surface.WALL]), camera)
    wall_mask, actor_mask = hull_mask(camera, wall), hull_mask(camera, actor)
    drawn = image.instance == 0
    assert not np.any(drawn & interior(wall_mask))
    if visible:  # the part above the wall's top edge shows
        above = interior(actor_mask) & ~cv2.dilate(wall_mask.astype(np.uint8), np.ones((3, 3))).astype(bool)
        assert above.sum() > 1000
        assert np.all(drawn[above])
        assert np.all(image.rgb[interior(wall_mask)][:, 0] == image.rgb[interior(wall_mask)][:, 1])  # grey wall
    else:
        assert not drawn.any()


def test_long_wall_beside_the_road_does_not_cover_a_car_in_front_of_it(camera: PinholeCamera) -> None:
    # The wall's footprint is nearer to the camera (5.85 m) than the car's (26 m), yet the car stands
    # between the camera and the far part of the wall: footprint visibility order, not distance.
    wall = [30.0, 6.0, 1.5, 60.0, 0.3, 3.0, 0.0]
    car = [30.0, 3.0, 0.75, 4.5, 1.9, 1.5, 0.0]
    world = make_world([car], [(250, 200, 20)], [wall], [Surface.WALL])
    image = render(world, camera)
    car_mask = hull_mask(camera, car)
    wall_mask = near_clipped_hull_mask(camera, wall)  # the wall reaches past the camera
    assert (interior(car_mask) & interior(wall_mask)).sum() > 1000  # they overlap in the image
    assert iou(image.instance == 0, car_mask) > 0.99
    silhouette = actor_silhouette_px(world, camera, SE3.identity(), DT_S)[0]
    assert abs(int((image.instance == 0).sum()) - silhouette) <= 0.01 * silhouette


def test_horizon_of_a_level_camera_on_flat_ground_is_the_principal_row(camera: PinholeCamera) -> None:
    image = render(make_world(), camera)
    column = image.rgb[:, int(camera.intrinsics[0, 2])].astype(int)
    is_sky = column[:, 2] > column[:, 1]  # sky colours are blue, ground colours green / brown
    assert np.all(is_sky[: CY_PX - 1])
    assert not np.any(is_sky[CY_PX + 2 :])
    assert np.all(image.rgb[CY_PX + 2 :, :, 1] > image.rgb[CY_PX + 2 :, :, 2])  # every ground row
    assert np.all(image.rgb[: CY_PX - 1, :, 2] > image.rgb[: CY_PX - 1, :, 1])  # every sky row
    np.testing.assert_array_equal(image.rgb[CY_PX + 2, 0], DEFAULT_STYLE.far_ground)  # beyond the tiles
    assert np.all(image.instance == -1)


def test_horizon_of_an_uphill_slope_rises_by_focal_times_slope(camera: PinholeCamera) -> None:
    image = render(make_world(slope=(0.05, 0.0)), camera)
    horizon_v = CY_PX - 1266.0 * 0.05  # 427.7: the slope plane's line at infinity
    column = image.rgb[:, 816].astype(int)
    is_sky = column[:, 2] > column[:, 1]
    assert np.all(is_sky[: int(horizon_v) - 1])
    assert not np.any(is_sky[int(horizon_v) + 2 :])


def test_box_through_the_near_plane_shows_its_clipped_part_only(camera: PinholeCamera) -> None:
    truck = [1.5, 2.5, 1.2, 10.0, 2.0, 2.4, 0.0]  # from 5 m behind to 5 m ahead of the camera, on its left
    world = make_world([truck], [(180, 60, 200)])
    image = render(world, camera)
    expected = near_clipped_hull_mask(camera, truck)
    drawn = image.instance == 0
    assert expected.sum() > 100_000
    assert iou(drawn, expected) > 0.99
    assert not np.any((drawn ^ expected) & ~boundary(expected))
    silhouette = actor_silhouette_px(world, camera, SE3.identity(), DT_S)[0]
    assert abs(int(drawn.sum()) - silhouette) <= 0.01 * silhouette


def test_road_asphalt_paint_and_grass_show_where_they_lie(camera: PinholeCamera) -> None:
    road = np.array([[0.0, 0.0, 200.0, 8.0, 0.0]])
    marking = np.array([[20.0, 0.0, 3.0, 0.15, 0.0]])
    image = render(make_world(road_rects=road, marking_rects=marking), camera)
    # Straight ahead at 10 m (v = cy + f * 1.55 / 8.5) is asphalt; the dash at 20 m is paint.
    asphalt = image.rgb[round(CY_PX + 1266.0 * 1.55 / 8.5), 816].astype(float) / np.array(DEFAULT_STYLE.asphalt)
    assert np.allclose(asphalt, asphalt[0], atol=0.02) and 0.6 <= asphalt[0] <= 1.0
    assert np.all(image.rgb[round(CY_PX + 1266.0 * 1.55 / 18.5), 816] > 180)
    # Row cy + 250 sees the ground 7.85 m ahead; pixel u = 5 there is 5.0 m to the left: grass.
    grass = image.rgb[CY_PX + 250, 5].astype(int)
    assert grass[1] > grass[2] + 15
    assert np.all(image.rgb.max(axis=2) > 0)  # nothing left unpainted


def test_ground_tiles_cover_every_pixel_below_the_horizon_band_in_every_camera() -> None:
    # Rows more than 20 px under the horizon see ground closer than 100 m: tiles, never the far band.
    world = make_world(waves=np.array([[0.2, 0.1, 0.05, 0.0]]))
    for channel, cam in simulated_rig().cameras.items():
        image = render_camera(world, cam, SE3.identity(), DT_S)
        cy = int(cam.intrinsics[1, 2])
        below = image.rgb[cy + 20 :]
        far = np.all(below == np.array(DEFAULT_STYLE.far_ground, np.uint8), axis=-1)
        assert not far.any(), channel
        assert np.all(below[..., 1] > below[..., 2]), channel  # grass everywhere


def test_building_windows_keep_the_instance_buffer_consistent(camera: PinholeCamera) -> None:
    building = [30.0, 0.0, 6.0, 10.0, 20.0, 12.0, 0.0]
    actor = [40.0, 0.0, 1.0, 4.0, 2.0, 2.0, 0.0]  # hidden behind the building
    world = make_world([actor], [(250, 0, 0)], [building], [Surface.BUILDING])
    with_windows = render(world, camera)
    without = render(world, camera, RenderStyle(windows=False))
    np.testing.assert_array_equal(with_windows.instance, without.instance)
    assert np.all(with_windows.instance == -1)
    face = interior(hull_mask(camera, building))
    colours = np.unique(with_windows.rgb[face], axis=0)
    assert len(colours) == 2 and len(np.unique(without.rgb[face], axis=0)) == 1
    np.testing.assert_allclose(colours.min(axis=0), np.rint(colours.max(axis=0) * 0.5), atol=1)


def test_rendering_is_deterministic_for_a_full_scene() -> None:
    rng = np.random.default_rng(7)
    xs, yaws = rng.uniform(-60, 60, 20), rng.normal(0, 0.1, 20)
    actors = [[xs[k], 2.0 * (-1) ** k, 0.8, 4.5, 1.9, 1.6, yaws[k]] for k in range(20) if abs(xs[k]) > 6]
    structures = [[x, side * 14.0, 5.0, 12.0, 8.0, 10.0, 0.0] for x in range(-60, 61, 15) for side in (-1, 1)]
    structures += [[x, side * 5.5, 3.0, 0.3, 0.3, 6.0, 0.0] for x in range(-60, 61, 20) for side in (-1, 1)]
    surfaces = [Surface.BUILDING] * 18 + [Surface.POLE] * 14
    world = make_world(
        actors,
        [tuple(c) for c in rng.integers(20, 250, (len(actors), 3))],
        structures,
        surfaces,
        slope=(0.01, -0.005),
        waves=np.array([[0.2, 0.05, 0.02, 0.3]]),
        road_rects=np.array([[0.0, 0.0, 300.0, 8.0, 0.0]]),
        marking_rects=np.array([[x, 0.0, 3.0, 0.15, 0.0] for x in range(-100, 100, 9)]),
    )
    pose = SE3.from_yaw(0.05, (0.3, -2.0, 0.1))
    for channel, cam in simulated_rig().cameras.items():
        first = render_camera(world, cam, pose, 0.7)
        second = render_camera(world, cam, pose, 0.7)
        np.testing.assert_array_equal(first.rgb, second.rgb, err_msg=channel)
        np.testing.assert_array_equal(first.instance, second.instance, err_msg=channel)
        assert first.instance.min() >= -1 and first.instance.max() < len(actors)
        assert np.all(first.rgb.max(axis=2) > 0), channel  # every pixel painted
        seen = np.bincount(first.instance[first.instance >= 0], minlength=len(actors))
        silhouette = actor_silhouette_px(world, cam, pose, 0.7)
        assert np.all(seen <= silhouette * 1.01 + 2), channel  # visibility never above 1


def test_a_distorted_camera_is_refused(camera: PinholeCamera) -> None:
    distorted = PinholeCamera(
        "CAM_X", camera.intrinsics, camera.width_px, camera.height_px, camera.ego_SE3_cam, np.array([0.1, 0, 0, 0])
    )
    with pytest.raises(GeometryError):
        render(make_world(), distorted)
