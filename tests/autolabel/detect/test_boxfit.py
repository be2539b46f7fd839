"""L-shape orientation, tight extents and the smear velocity of single clusters."""

from __future__ import annotations

import numpy as np
import pytest

from autolabel.detect.boxfit import fit_clusters, lshape_yaw
from autolabel.detect.ground import estimate_ground


def _angle_deg(a: float, b: float, period: float) -> float:
    d = (a - b) % period
    return float(np.degrees(min(d, period - d)))


@pytest.mark.parametrize("yaw_deg", [0.0, 17.0, 45.0, 62.0, 89.0])
def test_lshape_finds_the_orientation_of_two_visible_faces(yaw_deg: float) -> None:
    rng = np.random.default_rng(0)
    yaw = np.radians(yaw_deg)
    # The two faces of a 4.5 x 1.9 m car that face a sensor at the origin: its rear and right side.
    rear = np.column_stack([np.zeros(60), rng.uniform(-0.95, 0.95, 60)])
    side = np.column_stack([rng.uniform(0.0, 4.5, 140), np.full(140, -0.95)])
    local = np.concatenate([rear, side]) + rng.normal(0, 0.02, (200, 2))
    c, s = np.cos(yaw), np.sin(yaw)
    xy = local @ np.array([[c, s], [-s, c]]) + (12.0, 5.0)
    assert _angle_deg(lshape_yaw(xy), yaw, np.pi / 2) < 1.0


def test_a_clean_l_shaped_car_gets_its_yaw_and_extents(synth) -> None:
    # Seen from the origin at 26.6 degrees, a car heading -25 degrees shows its rear and its left side.
    car = synth.boxes((12.0, 6.0, 4.6, 1.9, 1.6, np.radians(-25.0)))
    cloud = synth.cast(synth.Scene(car))
    heights = estimate_ground(cloud.points).heights(cloud.points)
    idx = np.flatnonzero((cloud.hit == 0) & (heights > 0.2))
    fit = fit_clusters(cloud.points, heights, idx, np.array([0, len(idx)]))
    assert _angle_deg(fit.yaw[0], np.radians(-25.0), np.pi) < 5.0
    assert fit.length[0] == pytest.approx(4.6, abs=0.15)
    assert fit.width[0] == pytest.approx(1.9, abs=0.15)
    assert fit.height[0] == pytest.approx(1.6, abs=0.1)
    np.testing.assert_allclose(fit.centre[0], [12.0, 6.0], atol=0.1)
    assert fit.quality[0] > 0.9  # the points hug the L
    assert fit.dt_span_s[0] == pytest.approx(0.45)


def test_a_moving_car_is_fitted_at_the_keyframe_time_with_its_velocity(synth) -> None:
    car = synth.boxes((15.0, -4.0, 4.6, 1.9, 1.6, 0.3))
    velocity = 10.0 * np.array([[np.cos(0.3), np.sin(0.3)]])
    cloud = synth.cast(synth.Scene(car, velocity))
    heights = estimate_ground(cloud.points).heights(cloud.points)
    idx = np.flatnonzero((cloud.hit == 0) & (heights > 0.2))
    smeared_length = np.ptp(cloud.points[idx, :2] @ velocity[0] / 10.0)
    assert smeared_length > 8.0  # 0.45 s at 10 m/s smears it to about twice its length
    fit = fit_clusters(cloud.points, heights, idx, np.array([0, len(idx)]))
    np.testing.assert_allclose(fit.velocity[0], velocity[0], atol=0.5)
    assert fit.length[0] == pytest.approx(4.6, abs=0.3)
    np.testing.assert_allclose(fit.centre[0], [15.0, -4.0], atol=0.2)


def test_a_single_sweep_has_no_motion_estimate(synth) -> None:
    cloud = synth.cast(synth.Scene(synth.boxes((10.0, 3.0, 4.6, 1.9, 1.6, 0.0))), sweeps=1)
    idx = np.flatnonzero(cloud.hit == 0)
    fit = fit_clusters(cloud.points, np.ones(len(cloud.points), np.float32), idx, np.array([0, len(idx)]))
    assert np.all(np.isnan(fit.velocity))
