"""Kalman models: hand-computed predictions and updates, and the block-wise kernels against dense formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tracking import kalman
from tracking.kalman import S7, S8, VZ, YAW, H, L, W, X, Y, Z

# state layout: x y z yaw l w h s7 s8 vz
CV_STATE = np.array([[0.0, 0.0, 0.0, 0.0, 4.0, 2.0, 1.5, 10.0, 5.0, 0.0]])
NOISE = np.array([[0.5, 0.5, 0.5, 1.0]])  # position, yaw, size, velocity std


def test_cv_prediction_by_hand() -> None:
    P = np.eye(10)[None]
    x, P1 = kalman.predict(CV_STATE, P, 0.1, np.array([False]), np.array([2.0]), np.array([0.5]))
    # x += v dt: (10, 5) m/s for 0.1 s.
    np.testing.assert_allclose(x[0], [1.0, 0.5, 0.0, 0.0, 4.0, 2.0, 1.5, 10.0, 5.0, 0.0], atol=1e-15)
    # F P F^T + Q with P = I, dt = 0.1, accel std 2 (qa = 4):
    assert P1[0, X, X] == pytest.approx(1 + 0.01 + 4 * 1e-4 / 4)  # 1 + dt^2 + qa dt^4 / 4 = 1.0101
    assert P1[0, X, S7] == pytest.approx(0.1 + 4 * 1e-3 / 2)  # dt + qa dt^3 / 2 = 0.102
    assert P1[0, S7, X] == pytest.approx(0.102)
    assert P1[0, S7, S7] == pytest.approx(1 + 4 * 0.01)  # 1 + qa dt^2 = 1.04
    assert P1[0, Y, S8] == pytest.approx(0.102)
    assert P1[0, YAW, YAW] == pytest.approx(1 + 0.25 * 0.01)  # yaw-rate std 0.5: 1 + 0.25 dt^2
    assert P1[0, Z, Z] == pytest.approx(1 + 0.01 + 0.25 * 1e-4 / 4)  # vertical accel std 0.5
    assert P1[0, Z, VZ] == pytest.approx(0.1 + 0.25 * 1e-3 / 2)
    assert P1[0, L, L] == pytest.approx(1 + 0.05**2 * 0.1)  # size drift 0.05 m / sqrt(s)
    assert P1[0, X, Y] == 0.0 and P1[0, X, YAW] == 0.0  # no coupling in CV


def test_ctrv_prediction_on_an_arc_by_hand() -> None:
    # speed 10 m/s, yaw rate 0.5 rad/s, heading 0, 1 s: radius v / w = 20 m,
    # x = 20 sin(0.5) = 9.58851, y = 20 (1 - cos(0.5)) = 2.44835, yaw = 0.5.
    x0 = np.array([[0.0, 0.0, 1.0, 0.0, 4.5, 1.9, 1.6, 10.0, 0.5, 0.0]])
    x1, _ = kalman.predict(x0, np.eye(10)[None], 1.0, np.array([True]), np.array([1.0]), np.array([0.1]))
    np.testing.assert_allclose(x1[0, [X, Y, YAW, S7, S8]], [9.588510772084060, 2.448348762192545, 0.5, 10.0, 0.5])
    straight = x0.copy()
    straight[0, S8] = 0.0
    x2, _ = kalman.predict(straight, np.eye(10)[None], 1.0, np.array([True]), np.array([1.0]), np.array([0.1]))
    np.testing.assert_allclose(x2[0, [X, Y, YAW]], [10.0, 0.0, 0.0], atol=1e-12)


@pytest.mark.parametrize("yaw_rate", [0.5, -0.3, 1e-6])
def test_ctrv_jacobian_matches_finite_differences(yaw_rate: float) -> None:
    """P' - Q = F P F^T: a covariance e_i e_i^T propagates to column i of F, which must match d x' / d x_i."""
    x0 = np.array([[3.0, -2.0, 1.0, 0.7, 4.5, 1.9, 1.6, 8.0, yaw_rate, 0.2]])
    args = (np.array([True]), np.array([2.0]), np.array([0.4]))
    dt = 0.5
    _, Q = kalman.predict(x0, np.zeros((1, 10, 10)), dt, *args)
    for i in (X, Y, YAW, S7, S8, Z, VZ):
        P = np.zeros((1, 10, 10))
        P[0, i, i] = 1.0
        _, P1 = kalman.predict(x0, P, dt, *args)
        column = (P1 - Q)[0, :, i] / np.sqrt((P1 - Q)[0, i, i])
        h = 1e-6
        plus, minus = x0.copy(), x0.copy()
        plus[0, i] += h
        minus[0, i] -= h
        numeric = (kalman.predict(plus, P, dt, *args)[0] - kalman.predict(minus, P, dt, *args)[0])[0] / (2 * h)
        np.testing.assert_allclose(column, numeric, atol=1e-5)


def test_update_of_a_diagonal_prior_by_hand() -> None:
    # Prior variance 1 everywhere, detection std 0.5 for position, yaw and size: gain 1 / (1 + 0.25) = 0.8.
    x = np.zeros((1, 10))
    x[0, [L, W, H]] = 1.0
    box = np.array([[1.0, -2.0, 0.5, 2.0, 1.0, 1.0, 0.4]])  # x y z l w h yaw
    x1, P1 = kalman.update(x, np.eye(10)[None], box, np.full((1, 2), np.nan), np.array([False]), NOISE)
    np.testing.assert_allclose(x1[0, [X, Y, Z, YAW, L, W, H]], [0.8, -1.6, 0.4, 0.32, 1.8, 1.0, 1.0])
    np.testing.assert_allclose(x1[0, [S7, S8, VZ]], 0.0)  # uncorrelated with the measured states
    np.testing.assert_allclose(np.diag(P1[0])[[X, Y, Z, YAW, L]], 0.2)  # 1 - 0.8
    np.testing.assert_allclose(np.diag(P1[0])[[S7, S8, VZ]], 1.0)


def _dense_update(
    x: np.ndarray, P: np.ndarray, box: np.ndarray, velocity: np.ndarray | None, ctrv: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Textbook (extended) Kalman update with a dense 10-state H; yaw already aligned."""
    m = 7 if velocity is None else 9
    Hm = np.zeros((m, 10))
    Hm[np.arange(7), np.arange(7)] = 1.0
    z = np.concatenate([box[[0, 1, 2, 6, 3, 4, 5]], [] if velocity is None else velocity])
    h = x[:m].copy()
    r = np.array([0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 1.0, 1.0])[:m]
    if velocity is not None:
        c, s, v = math.cos(x[YAW]), math.sin(x[YAW]), x[S7]
        if ctrv:
            h[7:] = [v * c, v * s]
            Hm[7, [YAW, S7]] = [-v * s, c]
            Hm[8, [YAW, S7]] = [v * c, s]
        else:
            h[7:] = x[[S7, S8]]
            Hm[7, S7] = Hm[8, S8] = 1.0
    innovation = z - h
    innovation[3] = math.remainder(innovation[3], 2 * math.pi)
    S = Hm @ P @ Hm.T + np.diag(r)
    K = P @ Hm.T @ np.linalg.inv(S)
    return x + K @ innovation, (np.eye(10) - K @ Hm) @ P


@pytest.mark.parametrize("ctrv", [False, True])
@pytest.mark.parametrize("with_velocity", [False, True])
def test_blockwise_update_equals_the_dense_formula(ctrv: bool, with_velocity: bool) -> None:
    rng = np.random.default_rng(7)
    boxes = np.column_stack([rng.normal(0, 5, (6, 3)), rng.uniform(1, 5, (6, 3)), rng.uniform(-3, 3, 6)])
    velocity = rng.normal(0, 5, (6, 2))
    is_ctrv = np.full(6, ctrv)
    x, P = kalman.initial_states(boxes, velocity, is_ctrv, np.tile(NOISE, (6, 1)))
    x[:, S8] = rng.normal(0, 0.3, 6) if ctrv else x[:, S8]
    for _ in range(3):  # correlate the blocks' states through the motion model
        x, P = kalman.predict(x, P, 0.1, is_ctrv, np.full(6, 2.0), np.full(6, 0.5))
    det = boxes + rng.normal(0, 0.3, boxes.shape)
    det[:, 6] = x[:, YAW] + rng.uniform(-1.0, 1.0, 6)  # within pi/2 of the track: no flip
    det_velocity = velocity + rng.normal(0, 0.5, (6, 2)) if with_velocity else np.full((6, 2), np.nan)
    x1, P1 = kalman.update(x, P, det, det_velocity, is_ctrv, np.tile(NOISE, (6, 1)))
    for t in range(6):
        xr, Pr = _dense_update(x[t], P[t], det[t], det_velocity[t] if with_velocity else None, ctrv)
        xr[YAW] = math.remainder(xr[YAW], 2 * math.pi)
        np.testing.assert_allclose(x1[t], xr, atol=1e-9)
        np.testing.assert_allclose(P1[t], Pr, atol=1e-9)


def test_detection_yaw_opposite_to_the_track_is_flipped_before_the_update() -> None:
    assert kalman.align_yaws(np.array([0.1 + math.pi - 0.05]), np.array([0.1]))[0] == pytest.approx(0.05)
    assert kalman.align_yaws(np.array([-3.0]), np.array([3.0]))[0] == pytest.approx(-3.0)  # 0.28 rad apart
    assert kalman.align_yaws(np.array([0.0]), np.array([math.pi]))[0] == pytest.approx(math.pi)
    x = CV_STATE.copy()
    x[0, YAW] = 0.2
    P = np.eye(10)[None]
    box = np.array([[0.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.3 + math.pi]])  # heading 0.3 seen backwards
    rows = np.array([0])
    yaws, _ = kalman.update_rows(x, P, rows, box, np.full((1, 2), np.nan), np.array([False]), NOISE)
    assert yaws[0] == pytest.approx(0.3)
    assert x[0, YAW] == pytest.approx(0.2 + 0.8 * 0.1)  # gain 0.8 towards 0.3, not towards 0.3 + pi


def test_velocity_measurement_sets_the_speed_of_both_models() -> None:
    boxes = np.array([[0.0, 0.0, 0.0, 4.0, 2.0, 1.5, math.pi / 2]] * 2)
    is_ctrv = np.array([False, True])
    x, P = kalman.initial_states(boxes, np.array([[0.0, 6.0], [0.0, 6.0]]), is_ctrv, np.tile(NOISE, (2, 1)))
    np.testing.assert_allclose(x[:, [S7, S8]], [[0.0, 6.0], [6.0, 0.0]], atol=1e-12)  # CV: vx vy; CTRV: speed, rate
    np.testing.assert_allclose(kalman.velocities(x, is_ctrv), [[0.0, 6.0], [0.0, 6.0]], atol=1e-12)
    _, P_unknown = kalman.initial_states(boxes, np.full((2, 2), np.nan), is_ctrv, np.tile(NOISE, (2, 1)))
    assert P_unknown[0, S7, S7] == kalman.UNKNOWN_SPEED_STD_MPS**2
    assert P[0, S7, S7] == 1.0  # velocity std 1 m/s


def test_wrap_keeps_angles_in_range_bit_exact() -> None:
    angles = np.array([0.0, 1.0, math.pi, -math.pi, 3 * math.pi, 1.5 * math.pi, -7.0])
    expected = [0.0, 1.0, math.pi, math.pi, math.pi, -0.5 * math.pi, -7.0 + 2 * math.pi]
    np.testing.assert_allclose(kalman.wrap(angles), expected, atol=1e-12)
    assert kalman.wrap(np.array([1.0]))[0] == 1.0
