"""Ground model: slopes, kerbs, sparse far rings, returns below the road, cars standing on it."""

from __future__ import annotations

import numpy as np
import pytest

from autolabel.detect.ground import GroundConfig, estimate_ground
from calibration import InputError

SLOPE = 0.05  # 5 % up along +x
KERB_Y_M, KERB_M = 6.0, 0.15


@pytest.fixture(scope="module")
def sloped_street(synth):
    cars = synth.boxes(
        (10, -3, 4.6, 1.9, 1.6, 0.1),
        (24, 3, 4.4, 1.8, 1.5, 0.0),
        (32, -4, 4.6, 1.9, 1.6, 0.2),
        (-18, -3, 4.5, 1.9, 1.5, 0.0),
        slope=SLOPE,
    )
    return synth.cast(synth.Scene(cars, slope=SLOPE, kerb_y_m=KERB_Y_M, kerb_m=KERB_M))


def test_ground_points_on_a_slope_with_a_kerb_are_ground(sloped_street) -> None:
    cloud = sloped_street
    heights = estimate_ground(cloud.points).heights(cloud.points)
    ground = cloud.hit < 0
    kerb = ground & (np.abs(cloud.points[:, 1] - KERB_Y_M) < 0.5)
    assert kerb.sum() > 100  # the kerb's face and edges are in the cloud
    assert np.mean(heights[ground] < 0.2) > 0.999
    assert np.all(heights[kerb] < 0.2)
    assert np.mean(np.abs(heights[ground]) < 0.1) > 0.98
    # Car bodies stand out (their lowest returns, within 0.2 m of the road, are the only exception).
    body = (cloud.hit >= 0) & (cloud.points[:, 2] - SLOPE * cloud.points[:, 0] > 0.3)
    assert np.mean(heights[body] > 0.2) > 0.99


def test_ground_height_under_far_cars_follows_the_slope_and_the_kerb(sloped_street) -> None:
    model = estimate_ground(sloped_street.points)
    xy = np.array([[10, -3], [24, 3], [32, -4], [-18, -3], [20, 10], [-30, 15], [40, 0.0]])
    truth = sloped_street.scene.ground_z(xy[:, 0], xy[:, 1])
    np.testing.assert_allclose(model.z_at(xy), truth, atol=0.08)


def test_returns_below_the_road_do_not_pull_the_ground_down(synth) -> None:
    cloud = synth.cast(synth.Scene(np.zeros((0, 7)), slope=SLOPE), sweeps=3)
    rng = np.random.default_rng(1)
    ghosts = np.column_stack(
        [rng.uniform(12.0, 14.0, 40), rng.uniform(-1.0, 1.0, 40), np.full(40, 13 * SLOPE - 0.6), np.zeros((40, 2))]
    ).astype(np.float32)  # a multipath puddle 0.6 m below the road, 2 x 2 m
    model = estimate_ground(np.concatenate([cloud.points, ghosts]))
    assert model.z_at(np.array([[13.0, 0.0]]))[0] == pytest.approx(13 * SLOPE, abs=0.05)


def test_far_car_sides_lined_up_by_the_level_beam_are_not_ground(synth) -> None:
    # A car park: a wall of parked cars 30-34 m ahead hides the ground behind it, and beyond, where only the level
    # beam still reaches over them, the sides of further cars return at the sensor's height (1.84 m) and nothing
    # lower. Such a flat layer must not pass for the road.
    row = [(31.0 + 3.0 * (k % 2), -20.0 + 2.8 * k, 4.6, 1.9, 1.6, np.pi / 2) for k in range(15)]
    cloud = synth.cast(synth.Scene(synth.boxes(*row)), sweeps=3)
    rng = np.random.default_rng(2)
    far = rng.uniform([40.0, -12.0], [48.0, 12.0], (3000, 2))
    level = np.column_stack([far, np.full(3000, 1.84), np.zeros((3000, 2))]).astype(np.float32)
    points = np.concatenate([cloud.points, level])
    heights = estimate_ground(points).heights(level)
    assert np.median(heights) > 1.0
    blind = GroundConfig(max_ground_elevation_deg=90.0)  # every return may be ground: the layer becomes the road
    assert np.median(estimate_ground(points, blind).heights(level)) < 0.3


def test_an_empty_cloud_gives_a_level_ground_and_bad_shapes_are_rejected() -> None:
    model = estimate_ground(np.zeros((0, 5), np.float32))
    assert model.z_at(np.array([[5.0, 5.0], [100.0, 0.0]])).tolist() == [0.0, 0.0]
    with pytest.raises(InputError):
        estimate_ground(np.zeros((10, 2)))
    with pytest.raises(InputError):
        GroundConfig(support=9, lowest_k=8)
