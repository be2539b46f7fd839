"""Batched Kalman filters of box tracks: constant velocity (CV) and constant turn rate and velocity (CTRV).

All functions work on T tracks at once (numba kernels loop over the tracks; no Python loop). One state
layout serves both models, so a pass keeps all its tracks in one ``(T, 10)`` array::

    index    0  1  2  3    4  5  6  7      8         9
    CV       x  y  z  yaw  l  w  h  vx     vy        vz      (m, rad, m/s)
    CTRV     x  y  z  yaw  l  w  h  speed  yaw_rate  vz      (speed signed along the heading, rad/s)

A detection measures ``x, y, z, yaw, l, w, h`` and, when the detector gives one, the BEV velocity
``vx, vy`` (linear for CV, ``speed * (cos yaw, sin yaw)`` for CTRV: an extended Kalman update).
Headings are wrapped to (-pi, pi]; a detector's yaw is ambiguous by pi, so a detection's yaw is flipped
towards the track's before the update (:func:`align_yaws`).

No model couples the motion block ``x, y, yaw, s7, s8`` with the vertical block ``z, vz`` or with the
sizes, so covariances stay block-diagonal (starting diagonal); the kernels propagate and update the blocks
separately (a 5 x 5 filter, a 2 x 2 filter and three scalar ones), the same result as the dense formulas.
"""

from __future__ import annotations

import math

import numba
import numpy as np

STATE_DIM = 10
X, Y, Z, YAW, L, W, H, S7, S8, VZ = range(STATE_DIM)  # S7, S8: vx, vy (CV) or speed, yaw_rate (CTRV)
BOX_DIM = 7
MOTION_BLOCK = (X, Y, YAW, S7, S8)  # the states the motion models couple; z/vz and sizes are separate blocks
_NM = len(MOTION_BLOCK)

VERTICAL_ACCEL_STD_MPS2 = 0.5
SIZE_DRIFT_STD_M_PER_SQRT_S = 0.05  # sizes follow a slow random walk (occlusion changes the detected extent)
CTRV_LATERAL_FRACTION = 0.3  # lateral acceleration noise of CTRV as a fraction of the longitudinal one
UNKNOWN_SPEED_STD_MPS = 10.0  # prior of a track born from a detection without velocity
INITIAL_YAW_RATE_STD_RADPS = 1.0
INITIAL_VERTICAL_SPEED_STD_MPS = 0.5
_STRAIGHT_YAW_RATE_RADPS = 1e-4  # below this the CTRV arc is expanded to second order (avoids 0 / 0)


def wrap(angle: np.ndarray) -> np.ndarray:
    """Angles wrapped to (-pi, pi] as an array; angles already inside are unchanged (bit-exact)."""
    a = np.asarray(angle, dtype=np.float64)
    return a - 2.0 * np.pi * np.ceil((a - np.pi) / (2.0 * np.pi))


def align_yaws(detection_yaw_rad: np.ndarray, track_yaw_rad: np.ndarray) -> np.ndarray:
    """(M,) detection yaws turned by pi where they point more than pi/2 away from the track's heading.

    The rule :func:`update_rows` applies before each update.
    """
    flip = np.abs(wrap(detection_yaw_rad - track_yaw_rad)) > np.pi / 2
    return wrap(detection_yaw_rad + np.where(flip, np.pi, 0.0))


def velocities(x: np.ndarray, is_ctrv: np.ndarray) -> np.ndarray:
    """(T, 2) BEV velocities ``vx, vy`` of (T, 10) states."""
    speed = x[:, S7]
    ctrv = np.column_stack([speed * np.cos(x[:, YAW]), speed * np.sin(x[:, YAW])])
    return np.where(is_ctrv[:, None], ctrv, x[:, [S7, S8]])


def initial_states(
    boxes: np.ndarray,
    velocity: np.ndarray,
    is_ctrv: np.ndarray,
    noise_std: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """States (T, 10) and covariances (T, 10, 10) of tracks born from T detections.

    Args:
        boxes: (T, 7) detection boxes.
        velocity: (T, 2) detection velocities, NaN rows where unknown (the speed prior is then wide).
        is_ctrv: (T,) motion model per track.
        noise_std: (T, 4) detection noise ``position_m, yaw_rad, size_m, velocity_mps``.
    """
    t = boxes.shape[0]
    known = np.all(np.isfinite(velocity), axis=1)
    v = np.where(known[:, None], velocity, 0.0)
    c, s = np.cos(boxes[:, 6]), np.sin(boxes[:, 6])
    x = np.zeros((t, STATE_DIM))
    x[:, :BOX_DIM] = boxes[:, [0, 1, 2, 6, 3, 4, 5]]
    x[:, S7] = np.where(is_ctrv, v[:, 0] * c + v[:, 1] * s, v[:, 0])
    x[:, S8] = np.where(is_ctrv, 0.0, v[:, 1])
    speed_var = np.where(known, noise_std[:, 3] ** 2, UNKNOWN_SPEED_STD_MPS**2)
    var = np.empty((t, STATE_DIM))
    var[:, [X, Y, Z]] = noise_std[:, [0]] ** 2
    var[:, YAW] = noise_std[:, 1] ** 2
    var[:, [L, W, H]] = noise_std[:, [2]] ** 2
    var[:, S7] = speed_var
    var[:, S8] = np.where(is_ctrv, INITIAL_YAW_RATE_STD_RADPS**2, speed_var)
    var[:, VZ] = INITIAL_VERTICAL_SPEED_STD_MPS**2
    P = np.zeros((t, STATE_DIM, STATE_DIM))
    P[:, np.arange(STATE_DIM), np.arange(STATE_DIM)] = var
    return x, P


@numba.njit(cache=True, inline="always")
def _wrap1(angle: float) -> float:
    """One angle wrapped to (-pi, pi]; unchanged (bit-exact) when already inside."""
    return angle - 2.0 * math.pi * math.ceil((angle - math.pi) / (2.0 * math.pi))


@numba.njit(cache=True)
def _motion_block(
    x: np.ndarray,
    dt: float,
    ctrv: bool,
    accel_std: float,
    turn_std: float,
    F: np.ndarray,
    Q: np.ndarray,
    G: np.ndarray,
    x_out: np.ndarray,
) -> None:
    """Jacobian ``F`` (5, 5) and process noise ``Q`` (5, 5) of the motion block; moves x, y, yaw of ``x_out``.

    ``G`` is a (5, 3) work buffer for the CTRV noise Jacobian.
    """
    F[:, :] = 0.0
    Q[:, :] = 0.0
    for i in range(_NM):
        F[i, i] = 1.0
    half = 0.5 * dt * dt
    qa = accel_std * accel_std
    if ctrv:
        yaw, v, w = x[YAW], x[S7], x[S8]
        yaw1 = yaw + w * dt
        s0, c0, s1, c1 = math.sin(yaw), math.cos(yaw), math.sin(yaw1), math.cos(yaw1)
        if abs(w) < _STRAIGHT_YAW_RATE_RADPS:  # second-order expansion of the arc in w
            turn = 0.5 * w * dt
            dx, dy = v * dt * (c0 - s0 * turn), v * dt * (s0 + c0 * turn)
            F[0, 3], F[1, 3] = dt * (c0 - s0 * turn), dt * (s0 + c0 * turn)
            F[0, 4], F[1, 4] = -v * s0 * half, v * c0 * half
        else:
            dx, dy = v / w * (s1 - s0), v / w * (c0 - c1)
            F[0, 3], F[1, 3] = (s1 - s0) / w, (c0 - c1) / w
            F[0, 4], F[1, 4] = (v * dt * c1 - dx) / w, (v * dt * s1 - dy) / w
        F[0, 2], F[1, 2], F[2, 4] = -dy, dx, dt
        x_out[X], x_out[Y], x_out[YAW] = x[X] + dx, x[Y] + dy, _wrap1(yaw1)
        # Noise inputs (longitudinal, lateral, yaw acceleration) through G: Q = G diag(var) G^T.
        G[:, :] = 0.0
        G[0, 0], G[1, 0], G[3, 0] = half * c0, half * s0, dt
        G[0, 1], G[1, 1] = -half * s0, half * c0
        G[2, 2], G[4, 2] = half, dt
        var = (qa, (CTRV_LATERAL_FRACTION * accel_std) ** 2, turn_std * turn_std)
        for a in range(_NM):
            for b in range(_NM):
                Q[a, b] = G[a, 0] * G[b, 0] * var[0] + G[a, 1] * G[b, 1] * var[1] + G[a, 2] * G[b, 2] * var[2]
    else:
        F[0, 3], F[1, 4] = dt, dt
        x_out[X], x_out[Y], x_out[YAW] = x[X] + x[S7] * dt, x[Y] + x[S8] * dt, x[YAW]
        for pos, vel in ((0, 3), (1, 4)):
            Q[pos, pos] = qa * half * half
            Q[pos, vel] = Q[vel, pos] = qa * half * dt
            Q[vel, vel] = qa * dt * dt
        Q[2, 2] = turn_std * turn_std * dt * dt


@numba.njit(cache=True)
def _predict_all(
    x: np.ndarray,
    P: np.ndarray,
    dt: float,
    param_rows: np.ndarray,
    is_ctrv: np.ndarray,
    accel_std: np.ndarray,
    turn_std: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Block-wise prediction: the motion block (x, y, yaw, s7, s8), the vertical block (z, vz), the sizes.

    The covariance stays block-diagonal (no model couples the blocks), so blocks are propagated alone.
    Track t uses the parameters of row ``param_rows[t]``.
    """
    x_out, P_out = x.copy(), np.zeros_like(P)
    F, Q, FP, G = np.empty((_NM, _NM)), np.empty((_NM, _NM)), np.empty((_NM, _NM)), np.empty((_NM, 3))
    qz = VERTICAL_ACCEL_STD_MPS2 * VERTICAL_ACCEL_STD_MPS2
    q_size = SIZE_DRIFT_STD_M_PER_SQRT_S * SIZE_DRIFT_STD_M_PER_SQRT_S * dt
    for t in range(x.shape[0]):
        p = param_rows[t]
        _motion_block(x[t], dt, is_ctrv[p], accel_std[p], turn_std[p], F, Q, G, x_out[t])
        for a in range(_NM):  # FP = F P_motion
            for b in range(_NM):
                acc = 0.0
                for c in range(_NM):
                    acc += F[a, c] * P[t, MOTION_BLOCK[c], MOTION_BLOCK[b]]
                FP[a, b] = acc
        for a in range(_NM):  # F P F^T + Q
            for b in range(_NM):
                acc = Q[a, b]
                for c in range(_NM):
                    acc += FP[a, c] * F[b, c]
                P_out[t, MOTION_BLOCK[a], MOTION_BLOCK[b]] = acc
        p_zz, p_zv, p_vv = P[t, Z, Z], P[t, Z, VZ], P[t, VZ, VZ]
        x_out[t, Z] = x[t, Z] + x[t, VZ] * dt
        P_out[t, Z, Z] = p_zz + 2.0 * dt * p_zv + dt * dt * p_vv + qz * dt**4 / 4.0
        P_out[t, Z, VZ] = P_out[t, VZ, Z] = p_zv + dt * p_vv + qz * dt**3 / 2.0
        P_out[t, VZ, VZ] = p_vv + qz * dt * dt
        for i in (L, W, H):
            P_out[t, i, i] = P[t, i, i] + q_size
    return x_out, P_out


def predict(
    x: np.ndarray,
    P: np.ndarray,
    dt_s: float,
    is_ctrv: np.ndarray,
    accel_std_mps2: np.ndarray,
    turn_std: np.ndarray,
    param_rows: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Predict T tracks over ``dt_s``: new states (T, 10) and covariances (T, 10, 10).

    CV moves in a straight line at (vx, vy, vz); process noise is white horizontal acceleration
    (``accel_std_mps2``) on x/vx and y/vy and a random yaw rate (``turn_std``) on yaw.

    CTRV (an extended Kalman filter) moves on a circular arc at its speed and yaw rate (a line when the
    rate is ~0); process noise is longitudinal acceleration (``accel_std_mps2``), lateral acceleration
    (:data:`CTRV_LATERAL_FRACTION` of it) and yaw acceleration (``turn_std``), mapped through the
    noise Jacobian G as Q = G diag G^T.

    Both add vertical-acceleration noise on z/vz and a slow random walk of the sizes.

    Args:
        is_ctrv: (K,) bool motion model; accel_std_mps2, turn_std: (K,) process noise.
        param_rows: (T,) row of those arrays for each track (default: row t for track t, K = T); the
            tracker passes per-class arrays and the tracks' class indices.
    """
    if x.shape[0] == 0:
        return x.copy(), P.copy()
    rows = np.arange(x.shape[0]) if param_rows is None else np.asarray(param_rows, dtype=np.int64)
    return _predict_all(
        np.ascontiguousarray(x, dtype=np.float64),
        np.ascontiguousarray(P, dtype=np.float64),
        float(dt_s),
        rows,
        np.ascontiguousarray(is_ctrv, dtype=np.bool_),
        np.ascontiguousarray(accel_std_mps2, dtype=np.float64),
        np.ascontiguousarray(turn_std, dtype=np.float64),
    )


@numba.njit(cache=True)
def _cholesky_solve(S: np.ndarray, B: np.ndarray, m: int) -> None:
    """Solve S X = B in place of B for symmetric positive definite S (m, m); S is overwritten by L."""
    for j in range(m):
        d = S[j, j]
        for k in range(j):
            d -= S[j, k] * S[j, k]
        d = math.sqrt(d)
        S[j, j] = d
        for i in range(j + 1, m):
            acc = S[i, j]
            for k in range(j):
                acc -= S[i, k] * S[j, k]
            S[i, j] = acc / d
    for c in range(B.shape[1]):
        for i in range(m):  # L y = b
            acc = B[i, c]
            for k in range(i):
                acc -= S[i, k] * B[k, c]
            B[i, c] = acc / S[i, i]
        for i in range(m - 1, -1, -1):  # L^T x = y
            acc = B[i, c]
            for k in range(i + 1, m):
                acc -= S[k, i] * B[k, c]
            B[i, c] = acc / S[i, i]


@numba.njit(cache=True)
def _update_all(
    x: np.ndarray,
    P: np.ndarray,
    rows: np.ndarray,
    boxes: np.ndarray,
    velocity: np.ndarray,
    detection_rows: np.ndarray,
    param_rows: np.ndarray,
    is_ctrv: np.ndarray,
    noise_std: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Update ``x[rows[k]]``, ``P[rows[k]]`` in place with detection ``detection_rows[k]``; see :func:`update_rows`.

    Block-wise like :func:`_predict_all`: the motion block takes x, y, yaw (and vx, vy), the vertical
    block z, each size its own scalar filter.
    """
    n = rows.shape[0]
    aligned_yaws, velocities_out = np.empty(n), np.empty((n, 2))
    Hm, Pm, HP = np.zeros((_NM, _NM)), np.zeros((_NM, _NM)), np.zeros((_NM, _NM))
    Xs, S, innovation = np.zeros((_NM, _NM)), np.zeros((_NM, _NM)), np.zeros(_NM)
    for k in range(n):
        t, d, p = rows[k], detection_rows[k], param_rows[k]
        ctrv = is_ctrv[p]
        r_pos, r_yaw, r_size, r_vel = (
            noise_std[p, 0] ** 2,
            noise_std[p, 1] ** 2,
            noise_std[p, 2] ** 2,
            noise_std[p, 3] ** 2,
        )
        has_velocity = math.isfinite(velocity[d, 0]) and math.isfinite(velocity[d, 1])
        m = _NM if has_velocity else 3
        yaw_innovation = _wrap1(boxes[d, 6] - x[t, YAW])
        if abs(yaw_innovation) > 0.5 * math.pi:  # the detector's heading is ambiguous by pi
            yaw_innovation = _wrap1(yaw_innovation + math.pi)
        aligned_yaws[k] = _wrap1(x[t, YAW] + yaw_innovation)
        Hm[:, :] = 0.0
        Hm[0, 0] = Hm[1, 1] = Hm[2, 2] = 1.0
        innovation[0], innovation[1], innovation[2] = boxes[d, 0] - x[t, X], boxes[d, 1] - x[t, Y], yaw_innovation
        if has_velocity:
            yaw, v = x[t, YAW], x[t, S7]
            c, s = math.cos(yaw), math.sin(yaw)
            if ctrv:  # speed * (cos yaw, sin yaw), linearised
                innovation[3], innovation[4] = velocity[d, 0] - v * c, velocity[d, 1] - v * s
                Hm[3, 2], Hm[3, 3] = -v * s, c
                Hm[4, 2], Hm[4, 3] = v * c, s
            else:
                innovation[3], innovation[4] = velocity[d, 0] - x[t, S7], velocity[d, 1] - x[t, S8]
                Hm[3, 3], Hm[4, 4] = 1.0, 1.0
        for a in range(_NM):
            for b in range(_NM):
                Pm[a, b] = P[t, MOTION_BLOCK[a], MOTION_BLOCK[b]]
        for a in range(m):  # HP = H P
            for b in range(_NM):
                acc = 0.0
                for c in range(_NM):
                    acc += Hm[a, c] * Pm[c, b]
                HP[a, b] = Xs[a, b] = acc
        for a in range(m):  # S = H P H^T + R
            for b in range(m):
                acc = 0.0
                for c in range(_NM):
                    acc += HP[a, c] * Hm[b, c]
                S[a, b] = acc
        S[0, 0] += r_pos
        S[1, 1] += r_pos
        S[2, 2] += r_yaw
        if has_velocity:
            S[3, 3] += r_vel
            S[4, 4] += r_vel
        _cholesky_solve(S, Xs, m)  # Xs = S^-1 H P, so the gain K = Xs^T
        for a in range(_NM):
            acc = 0.0
            for q in range(m):
                acc += Xs[q, a] * innovation[q]
            x[t, MOTION_BLOCK[a]] += acc
        x[t, YAW] = _wrap1(x[t, YAW])
        for a in range(_NM):  # P -= K H P, symmetrised
            for b in range(a, _NM):
                acc_ab, acc_ba = 0.0, 0.0
                for q in range(m):
                    acc_ab += Xs[q, a] * HP[q, b]
                    acc_ba += Xs[q, b] * HP[q, a]
                value = 0.5 * ((Pm[a, b] - acc_ab) + (Pm[b, a] - acc_ba))
                P[t, MOTION_BLOCK[a], MOTION_BLOCK[b]] = P[t, MOTION_BLOCK[b], MOTION_BLOCK[a]] = value
        # Vertical block: z measured, vz inferred (gain (k_z, k_v)).
        p_zz, p_zv, p_vv = P[t, Z, Z], P[t, Z, VZ], P[t, VZ, VZ]
        s_z = p_zz + r_pos
        k_z, k_v = p_zz / s_z, p_zv / s_z
        dz = boxes[d, 2] - x[t, Z]
        x[t, Z] += k_z * dz
        x[t, VZ] += k_v * dz
        P[t, Z, Z] = p_zz - k_z * p_zz
        P[t, Z, VZ] = P[t, VZ, Z] = p_zv - k_z * p_zv
        P[t, VZ, VZ] = p_vv - k_v * p_zv
        for i in range(3):  # sizes l, w, h: scalar filters
            j = L + i
            gain = P[t, j, j] / (P[t, j, j] + r_size)
            x[t, j] += gain * (boxes[d, 3 + i] - x[t, j])
            P[t, j, j] -= gain * P[t, j, j]
        if ctrv:
            velocities_out[k, 0] = x[t, S7] * math.cos(x[t, YAW])
            velocities_out[k, 1] = x[t, S7] * math.sin(x[t, YAW])
        else:
            velocities_out[k, 0], velocities_out[k, 1] = x[t, S7], x[t, S8]
    return aligned_yaws, velocities_out


def update(
    x: np.ndarray,
    P: np.ndarray,
    boxes: np.ndarray,
    velocity: np.ndarray,
    is_ctrv: np.ndarray,
    noise_std: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Kalman update of M tracks with their matched detections (pure; see :func:`update_rows`).

    Returns:
        Posterior states (M, 10) (yaw wrapped) and covariances (M, 10, 10) (symmetrised).
    """
    x_new = np.array(x, dtype=np.float64, copy=True)
    P_new = np.array(P, dtype=np.float64, copy=True)
    update_rows(x_new, P_new, np.arange(x.shape[0]), boxes, velocity, is_ctrv, noise_std)
    return x_new, P_new


def update_rows(
    x: np.ndarray,
    P: np.ndarray,
    rows: np.ndarray,
    boxes: np.ndarray,
    velocity: np.ndarray,
    is_ctrv: np.ndarray,
    noise_std: np.ndarray,
    detection_rows: np.ndarray | None = None,
    param_rows: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Kalman update of rows ``rows`` (M,) of (T, 10) ``x`` and (T, 10, 10) ``P``, in place.

    Each detection's yaw is first turned by pi when it points more than pi/2 away from the track's
    heading (:func:`align_yaws`).

    Args:
        boxes: (D, 7) detections ``x, y, z, l, w, h, yaw``; velocity: (D, 2), a row with a NaN measures
            the box only. Track ``rows[k]`` takes detection ``detection_rows[k]`` (default: k).
        is_ctrv: (K,) motion model; noise_std: (K, 4) detection noise ``position_m, yaw_rad, size_m,
            velocity_mps``. Track ``rows[k]`` uses row ``param_rows[k]`` (default: k); the tracker passes
            per-class arrays and the tracks' class indices.

    Returns:
        The aligned detection yaws (M,) and the posterior velocities ``vx, vy`` (M, 2).
    """
    m = np.asarray(rows).shape[0]
    return _update_all(
        x,
        P,
        np.asarray(rows, dtype=np.int64),
        np.ascontiguousarray(boxes, dtype=np.float64),
        np.ascontiguousarray(velocity, dtype=np.float64),
        np.arange(m) if detection_rows is None else np.asarray(detection_rows, dtype=np.int64),
        np.arange(m) if param_rows is None else np.asarray(param_rows, dtype=np.int64),
        np.ascontiguousarray(is_ctrv, dtype=np.bool_),
        np.ascontiguousarray(noise_std, dtype=np.float64).reshape(-1, 4),
    )
