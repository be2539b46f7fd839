"""The geometric detector end to end on ray-cast scenes and on one simulated keyframe."""

from __future__ import annotations

import numpy as np
import pytest

from autolabel.categories import Category
from autolabel.detect import (
    DETECTORS,
    Detections3D,
    Detector,
    DetectorInput,
    GeometricConfig,
    GeometricDetector,
    detect_geometric,
)
from autolabel.detect.geometric import STAGES
from calibration import EGO_FRAME, Boxes3D, InputError, iou_bev

SLOPE = 0.05
PED = (0.7, 0.6, 1.75)


def _match(gt: Boxes3D, found: Detections3D) -> tuple[np.ndarray, np.ndarray]:
    """Best BEV IoU per ground-truth box and the index of that detection (-1 none)."""
    if len(found) == 0:
        return np.zeros(len(gt)), np.full(len(gt), -1)
    iou = iou_bev(gt, found.boxes)
    best = iou.argmax(axis=1)
    return iou[np.arange(len(gt)), best], np.where(iou.max(axis=1) > 0, best, -1)


def _nearest(found: Detections3D, xy: tuple[float, float]) -> int:
    return int(np.argmin(np.hypot(*(found.boxes.centers[:, :2] - xy).T)))


def _detect(cloud) -> object:
    return detect_geometric(DetectorInput(cloud.points, 0))


# --------------------------------------------------------------------------------------------- cars
CARS = (  # x, y, l, w, h, yaw: 9 to 38 m away, seen from every side, none hiding another
    (8.0, 4.0, 4.6, 1.9, 1.6, 0.3),
    (15.0, -6.0, 4.4, 1.8, 1.5, 1.2),
    (24.0, 5.0, 4.8, 2.0, 1.7, -0.4),
    (30.0, -3.0, 4.5, 1.9, 1.6, 0.0),
    (-12.0, 6.0, 4.6, 1.9, 1.6, 2.5),
    (-25.0, -10.0, 4.2, 1.8, 1.5, -2.0),
    (5.0, -25.0, 4.7, 2.0, 1.7, np.pi / 2),
    (-6.0, 20.0, 4.5, 1.9, 1.5, 0.2),
    (-28.0, 24.0, 4.9, 2.0, 1.8, 1.0),
    (38.0, 0.0, 4.6, 1.9, 1.6, -0.8),
)


@pytest.fixture(scope="module")
def parked_cars(synth):
    scene = synth.Scene(synth.boxes(*CARS, slope=SLOPE), slope=SLOPE, kerb_y_m=12.0, kerb_m=0.15)
    return synth.cast(scene)


def test_every_isolated_car_within_40_m_is_found(parked_cars) -> None:
    cloud = parked_cars
    assert np.all(np.bincount(cloud.hit[cloud.hit >= 0], minlength=len(CARS)) >= 30)  # all of them are visible
    found = _detect(cloud).detections
    iou, index = _match(cloud.gt, found)
    assert np.all(iou >= 0.6), iou
    assert all(found.categories[j] is Category.CAR for j in index)
    # Boxes stand on the sloped ground, about as high as the cars.
    matched = found.boxes.data[index]
    bottom = matched[:, 2] - matched[:, 5] / 2
    np.testing.assert_allclose(bottom, cloud.scene.ground_z(*cloud.gt.centers[:, :2].T), atol=0.12)
    np.testing.assert_allclose(matched[:, 5], cloud.gt.data[:, 5], atol=0.35)
    assert len(found) == len(CARS)  # nothing else: the ground and the kerb make no boxes


def test_moving_cars_are_boxed_at_the_keyframe_time_and_headed_along_their_motion(synth) -> None:
    cars = synth.boxes(
        (14.0, 4.0, 4.6, 1.9, 1.6, 0.0), (-10.0, -5.0, 4.5, 1.9, 1.5, np.pi), (6.0, -18.0, 4.4, 1.8, 1.5, 1.2)
    )
    velocity = np.array([[12.0, 0.0], [-8.0, 0.0], [5 * np.cos(1.2), 5 * np.sin(1.2)]])
    cloud = synth.cast(synth.Scene(cars, velocity))
    found = _detect(cloud).detections
    iou, index = _match(cloud.gt, found)
    assert np.all(iou >= 0.6), iou
    heading_error = np.angle(np.exp(1j * (found.boxes.yaws_rad[index] - cloud.gt.yaws_rad)))
    assert np.all(np.abs(heading_error) < np.radians(5)), np.degrees(heading_error)
    np.testing.assert_allclose(found.boxes.velocity[index], velocity, atol=1.0)


# --------------------------------------------------------------------------------------------- pedestrians
def test_pedestrians_standing_1_m_from_a_car_stay_separate(synth) -> None:
    car = (10.0, 8.0, 4.6, 1.9, 1.6, 0.0)
    beside = (10.0, 8.0 - 0.95 - 1.0 - PED[1] / 2, *PED, 0.0)  # 1 m from the car's side, in front of it
    ahead = (10.0 + 2.3 + 1.0 + PED[0] / 2, 7.3, *PED, 0.0)  # 1 m from its front bumper
    cloud = synth.cast(synth.Scene(synth.boxes(car, beside, ahead)))
    result = _detect(cloud)
    found = result.detections
    iou, index = _match(cloud.gt, found)
    assert iou[0] >= 0.6 and found.categories[index[0]] is Category.CAR
    for k in (1, 2):
        j = _nearest(found, cloud.gt.centers[k, :2])
        assert found.categories[j] is Category.PEDESTRIAN
        assert np.hypot(*(found.boxes.centers[j, :2] - cloud.gt.centers[k, :2])) < 0.3
    # No detection takes points of both the car and a pedestrian.
    for members in result.members:
        assert len(set(cloud.hit[members]) - {-1}) <= 1


def test_two_pedestrians_walking_side_by_side_are_split(synth) -> None:
    # Shoulder to shoulder (centres 0.75 m apart, 0.2 m between them), walking at 1.4 m/s along +x.
    pair = synth.boxes((10.0, -4.0 - 0.375, *PED, 0.0), (10.0, -4.0 + 0.375, *PED, 0.0))
    cloud = synth.cast(synth.Scene(pair, np.array([[1.4, 0.0], [1.4, 0.0]])))
    result = _detect(cloud)
    assert len(set(result.labels[np.isin(result.candidates, np.flatnonzero(cloud.hit >= 0))])) == 1  # one cluster
    found = result.detections
    peds = [j for j, c in enumerate(found.categories) if c is Category.PEDESTRIAN]
    assert len(peds) == 2
    for k in range(2):
        j = _nearest(found, cloud.gt.centers[k, :2])
        assert j in peds
        assert np.hypot(*(found.boxes.centers[j, :2] - cloud.gt.centers[k, :2])) < 0.25


# --------------------------------------------------------------------------------------------- large vehicles
def test_a_bus_cut_in_two_by_an_occluder_is_one_box(synth) -> None:
    bus = (1.0, 14.0, 11.0, 2.9, 3.4, 0.0)  # broadside, 14 m to the left
    pole = (1.0, 4.0, 0.35, 0.35, 6.0, 0.0)  # its 1.2 m wide shadow cuts the bus's side in two
    cloud = synth.cast(synth.Scene(synth.boxes(bus, pole)))
    result = _detect(cloud)
    bus_points = np.isin(result.candidates, np.flatnonzero(cloud.hit == 0))
    parts = set(result.labels[bus_points]) - {-1}
    assert len(parts) == 2  # the clustering sees two pieces
    found = result.detections
    iou, index = _match(cloud.gt, found)
    assert iou[0] >= 0.6
    assert found.categories[index[0]] is Category.BUS
    assert len(found) == 1  # and the pole is no object


def test_two_cars_parked_nose_to_tail_are_not_merged(synth) -> None:
    # The gap between them is in plain view: no occluder explains it, so they stay two cars.
    cars = synth.boxes((10.0, 6.0, 4.5, 1.9, 1.5, 0.0), (15.7, 6.0, 4.5, 1.9, 1.5, 0.0))
    found = _detect(synth.cast(synth.Scene(cars))).detections
    iou, index = _match(Boxes3D(cars, EGO_FRAME), found)
    assert np.all(iou >= 0.6) and index[0] != index[1]


def test_vehicles_parked_side_by_side_are_cut_apart(synth) -> None:
    # A car and two trucks in a parking row seen end-on, 0.55 m and 0.3 m apart: the trucks merge into one cluster
    # 5.3 m wide that fits no class; cut at the empty strip between them it is two trucks.
    row = synth.boxes(
        (5.85, -11.55, 4.9, 2.0, 1.85, np.pi / 2),
        (8.65, -11.36, 6.5, 2.5, 2.85, -np.pi / 2),
        (11.45, -11.48, 7.0, 2.5, 2.9, -np.pi / 2),
    )
    cloud = synth.cast(synth.Scene(row))
    found = _detect(cloud).detections
    iou, index = _match(Boxes3D(row, EGO_FRAME), found)
    assert np.all(iou >= 0.6) and len(set(index.tolist())) == 3, (iou, index)
    assert [found.categories[i] for i in index] == [Category.CAR, Category.TRUCK, Category.TRUCK]
    merged = detect_geometric(DetectorInput(cloud.points, 0), GeometricConfig(max_vehicle_width_m=np.inf))
    assert np.any(merged.detections.boxes.data[:, 4] > 5.0)  # without the cut: one box over both trucks


def test_two_cars_following_closely_at_highway_speed_are_two_boxes(synth) -> None:
    # 7 m apart at 25 m/s: over the cloud's 0.45 s each smears 11 m, so their returns form one cluster.
    cars = synth.boxes((12.0, -4.0, 4.6, 1.9, 1.6, 0.0), (19.0, -4.0, 4.6, 1.9, 1.6, 0.0))
    cloud = synth.cast(synth.Scene(cars, np.array([[25.0, 0.0], [25.0, 0.0]])))
    result = _detect(cloud)
    hit = cloud.hit[result.candidates]
    main = [np.bincount(result.labels[(hit == k) & (result.labels >= 0)]).argmax() for k in range(2)]
    assert main[0] == main[1]  # the clustering sees one smear
    found = result.detections
    iou, index = _match(cloud.gt, found)
    assert np.all(iou >= 0.5) and index[0] != index[1], iou
    assert all(found.categories[j] is Category.CAR for j in index)
    np.testing.assert_allclose(found.boxes.velocity[index], [[25.0, 0.0], [25.0, 0.0]], atol=1.5)


# --------------------------------------------------------------------------------------------- rows
def test_a_barrier_chain_longer_than_any_object_is_split_into_its_barriers(synth) -> None:
    # Twelve touching barriers (nuScenes: the long side is the width): one continuous 30 m wall, 1 m high.
    rows = [(-14.0 + 1.25 + 2.5 * i, 5.0, 0.5, 2.5, 1.0, np.pi / 2) for i in range(12)]
    cloud = synth.cast(synth.Scene(synth.boxes(*rows)))
    found = _detect(cloud).detections
    barriers = [j for j, c in enumerate(found.categories) if c is Category.BARRIER]
    assert len(barriers) == len(found) == 12
    centres = found.boxes.centers[barriers, :2]
    distance = np.hypot(*(cloud.gt.centers[:, None, :2] - centres[None]).transpose(2, 0, 1)).min(axis=1)
    assert np.all(distance < 0.3), distance  # every barrier has a box centred on it
    np.testing.assert_allclose(found.boxes.data[barriers, 4], 2.5, atol=0.3)  # nuScenes width along the row


def test_a_bicycle_rack_is_split_into_bicycles(synth) -> None:
    bikes = [(8.0 + 0.8 * i, -6.0, 1.7, 0.6, 1.28, np.pi / 2) for i in range(4)]  # side by side, 0.2 m apart
    cloud = synth.cast(synth.Scene(synth.boxes(*bikes)))
    found = _detect(cloud).detections
    assert len(found) == 4 and all(c is Category.BICYCLE for c in found.categories)
    distance = np.hypot(*(cloud.gt.centers[:, None, :2] - found.boxes.centers[None, :, :2]).transpose(2, 0, 1))
    assert np.all(distance.min(axis=1) < 0.5), distance.min(axis=1)  # the devkit's tightest match


def test_a_piece_inside_a_better_box_is_no_second_detection() -> None:
    from autolabel.detect import GeometricConfig
    from autolabel.detect.geometric import suppress_contained

    boxes = np.array([[10.0, 0.0, 0.8, 4.6, 2.0, 1.7, 0.0], [12.0, 0.5, 0.8, 4.6, 2.0, 1.7, 0.0]])
    points = np.zeros((20, 5), np.float32)
    points[:10, :2] = [[10.0 + 0.2 * k, 0.5] for k in range(10)]  # the first box's points
    points[10:, :2] = [[12.0 + 0.05 * k, 0.8] for k in range(10)]  # the second's: inside the first box (x <= 12.3)
    members = [np.arange(10), np.arange(10, 20)]
    no_motion = np.full((2, 2), np.nan)
    assert suppress_contained(points, members, boxes, no_motion, GeometricConfig()).tolist() == [0]
    points[10:, 0] += 1.0  # now mostly beyond the first box's front: a separate object
    assert suppress_contained(points, members, boxes, no_motion, GeometricConfig()).tolist() == [0, 1]


# --------------------------------------------------------------------------------------------- simulator
def test_isolated_cars_of_a_simulated_keyframe_are_found(sim_keyframe) -> None:
    kf = sim_keyframe
    found = detect_geometric(DetectorInput(kf.points, 0)).detections
    counts = np.bincount(kf.instance[kf.instance >= 0], minlength=len(kf.gt))
    cars = np.array([c is Category.CAR for c in kf.categories])
    ranges = np.hypot(*kf.gt.centers[:, :2].T)
    near_other = (iou_bev(kf.gt, kf.gt) > 0).sum(axis=1) > 1  # overlapping actors are not isolated
    grown = Boxes3D(kf.gt.data + np.array([0, 0, 0, 2.0, 2.0, 0, 0]), EGO_FRAME)  # 1 m of free space around
    near_other |= (iou_bev(grown, kf.gt) > 0).sum(axis=1) > 1
    isolated = np.flatnonzero(cars & (ranges <= 40.0) & (counts >= 150) & ~near_other)
    assert len(isolated) >= 3
    iou, _ = _match(kf.gt[isolated], found)
    assert np.all(iou >= 0.6), (isolated, iou)


# --------------------------------------------------------------------------------------------- interface
def test_the_detector_interface() -> None:
    detector = DETECTORS["geometric"]()
    assert isinstance(detector, GeometricDetector)
    assert isinstance(detector, Detector)
    empty = detector.detect(DetectorInput(np.zeros((0, 5), np.float32), 0))
    assert len(empty) == 0 and empty.boxes.frame == EGO_FRAME
    with pytest.raises(InputError):
        DetectorInput(np.zeros((10, 4), np.float32), 0)
    with pytest.raises(InputError):
        DetectorInput(np.zeros((10, 5), np.float32), 0, rgb=np.zeros((9, 3), np.uint8))


def test_detections_are_sorted_scored_and_timed(parked_cars) -> None:
    result = detect_geometric(DetectorInput(parked_cars.points, 0))
    scores = result.detections.scores
    assert np.all(np.diff(scores) <= 0) and np.all((scores > 0) & (scores <= 1))
    assert set(result.stage_ms) == set(STAGES) and all(v >= 0 for v in result.stage_ms.values())
    single = parked_cars.points[parked_cars.points[:, 4] == 0]
    found = detect_geometric(DetectorInput(single, 0)).detections
    assert len(found) >= 8 and np.all(np.isnan(found.boxes.velocity))  # one sweep: no motion estimate


def test_another_lidar_configures_every_stage() -> None:
    from autolabel.detect import GeometricConfig

    config = GeometricConfig.for_lidar((1.0, 0.0, 1.7), top_beam_deg=2.0, beam_spacing_deg=0.4, max_range_m=50.0)
    assert config.fit.sensor_xyz_m == (1.0, 0.0, 1.7) and config.classify.sensor_xy_m == (1.0, 0.0)
    assert (config.classify.top_beam_deg, config.classify.beam_spacing_deg, config.max_range_m) == (2.0, 0.4, 50.0)
