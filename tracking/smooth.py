"""Smoothing of box paths over time: a sparse linear least-squares problem with hard constraints.

For a sequence of K states ``x_k`` (D values each: ``x, y`` of a centre, a yaw, a height) at times ``t_k``
the smoothed sequence minimises::

    sum_i  w_i (a_i . x_{k_i} - b_i)^2 / s_i^2           measurements (any projection a_i of a state)
  + sum_p sum_k |d^n x / dt^n|^2 dt_k / std_p^2          white noise of the n-th time derivative, per penalty p

subject to ``x_k = fixed_k`` for held states (human-fixed keyframes), which are eliminated from the unknowns
so the solution passes through them exactly. With ``n = 2`` this is the MAP estimate of a constant-velocity
model with white acceleration noise (``n = 3``: constant acceleration, white jerk), i.e. what a
Rauch-Tung-Striebel smoother computes; hard constraints, missing frames (no measurement rows: interpolated)
and ends without measurements (extrapolated) come for free. Robust weights ``w_i`` (Huber, re-weighted
twice) tame outlying measurements.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import scipy.sparse
import scipy.sparse.linalg

from calibration import InputError

# Tiny first-difference penalty (per m/s): makes frames without any measurement well-posed (constant
# extension of a single measurement) without visibly biasing anything else.
_RATE_EPSILON = 1e-3
_DENSE_MAX = 200  # up to this many unknowns a dense solve is faster than a sparse factorisation


def smooth_sequence(
    times_s: np.ndarray,
    obs_index: np.ndarray,
    obs_rows: np.ndarray,
    obs_values: np.ndarray,
    obs_std: np.ndarray,
    *,
    penalties: Sequence[tuple[int, float]],
    fixed_index: np.ndarray | None = None,
    fixed_values: np.ndarray | None = None,
    huber_k: float | None = None,
    huber_iterations: int = 2,
) -> np.ndarray:
    """(K, D) smoothed states.

    Args:
        times_s: (K,) strictly increasing times.
        obs_index: (M,) state index of each measurement.
        obs_rows: (M, D) projection of each measurement (e.g. ``[1, 0]`` measures x; a unit vector along a
            box axis measures the centre along that axis).
        obs_values: (M,) measured values; obs_std: (M,) their standard deviations.
        penalties: ``(order, std)`` pairs: white noise of the ``order``-th time derivative with spectral
            density ``std^2`` (units of the state per s^order); ``(2, a)`` is a constant-velocity model with
            acceleration noise ``a``, ``(3, j)`` a constant-acceleration model with jerk noise ``j``.
        fixed_index: (P,) states held exactly at ``fixed_values`` (P, D).
        huber_k: measurements with a normalised residual above this are down-weighted (None: plain least squares).
    """
    times = np.asarray(times_s, dtype=np.float64)
    rows = np.asarray(obs_rows, dtype=np.float64)
    k_states, dims = times.shape[0], rows.shape[1]
    index = np.asarray(obs_index, dtype=np.int64)
    values = np.asarray(obs_values, dtype=np.float64)
    std = np.asarray(obs_std, dtype=np.float64)
    fixed_idx = np.zeros(0, dtype=np.int64) if fixed_index is None else np.asarray(fixed_index, dtype=np.int64)
    fixed_val = np.zeros((0, dims)) if fixed_values is None else np.asarray(fixed_values, dtype=np.float64)
    if k_states == 0:
        return np.zeros((0, dims))
    if np.any(np.diff(times) <= 0):
        raise InputError("smooth_sequence: times must strictly increase")
    if index.shape[0] == 0 and fixed_idx.shape[0] == 0:
        raise InputError("smooth_sequence: needs at least one measurement or fixed state")
    if np.any(std <= 0) or any(p_std <= 0 or order < 1 for order, p_std in penalties):
        raise InputError("smooth_sequence: standard deviations and penalty orders must be positive")

    fixed_cols = (fixed_idx[:, None] * dims + np.arange(dims)).reshape(-1)
    x = np.zeros(k_states * dims)
    x[fixed_cols] = fixed_val.reshape(-1)
    free = np.ones(k_states * dims, dtype=bool)
    free[fixed_cols] = False
    if not free.any():
        return x.reshape(k_states, dims)

    # Normal equations of the free unknowns; small problems go dense (sparse bookkeeping costs more there).
    dense = np.count_nonzero(free) <= _DENSE_MAX
    penalty = _matrix(*_penalty_entries(times, dims, [*penalties, (1, 1.0 / _RATE_EPSILON)]), dense=dense)
    measure_cols = (index[:, None] * dims + np.arange(dims)).reshape(-1)
    measure_entries = (rows.reshape(-1), np.repeat(np.arange(index.shape[0]), dims), measure_cols)
    measure = _matrix(*measure_entries, (index.shape[0], k_states * dims), dense=dense)
    p_free, m_free = penalty[:, free], measure[:, free]
    held = x[~free]
    normal_penalty = p_free.T @ p_free
    rhs_penalty = -(p_free.T @ (penalty[:, ~free] @ held))
    target = values - measure[:, ~free] @ held
    weights = np.ones(index.shape[0])
    for _ in range(1 + (huber_iterations if huber_k is not None else 0)):
        w = weights / std**2
        if dense:
            normal = normal_penalty + m_free.T @ (m_free * w[:, None])
            x[free] = np.linalg.solve(normal, rhs_penalty + m_free.T @ (w * target))
        else:
            normal = (normal_penalty + m_free.T @ scipy.sparse.diags(w) @ m_free).tocsc()
            x[free] = scipy.sparse.linalg.spsolve(normal, rhs_penalty + m_free.T @ (w * target))
        if huber_k is None or index.shape[0] == 0:
            break
        residual = np.abs(measure @ x - values) / std
        weights = np.where(residual <= huber_k, 1.0, huber_k / np.maximum(residual, 1e-12))
    return x.reshape(k_states, dims)


def _penalty_entries(
    times: np.ndarray, dims: int, penalties: Sequence[tuple[int, float]]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
    """Entries ``(values, rows, cols)`` and shape of the derivative penalty rows over the flattened (K * D) states.

    The ``n``-th derivative over states ``k..k+n`` is ``n!`` times their divided difference
    ``sum_j x_j / prod_{i != j} (t_j - t_i)``; its row is weighted by ``sqrt(mean step) / std``.
    """
    k_states, n_rows = times.shape[0], 0
    blocks = [(np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))]
    for order, p_std in penalties:
        if k_states <= order:
            continue
        windows = np.lib.stride_tricks.sliding_window_view(times, order + 1)  # (R, n + 1)
        gaps = windows[:, :, None] - windows[:, None, :]  # t_j - t_i
        np.einsum("rjj->rj", gaps)[...] = 1.0
        coeffs = math.factorial(order) / np.prod(gaps, axis=2)
        mean_step = (windows[:, -1] - windows[:, 0]) / order
        values, rows, cols = _difference_entries(coeffs * (np.sqrt(mean_step) / p_std)[:, None], dims)
        blocks.append((values, rows + n_rows, cols))
        n_rows += coeffs.shape[0] * dims
    values, rows, cols = (np.concatenate(part) for part in zip(*blocks, strict=True))
    return values, rows, cols, (n_rows, k_states * dims)


def _difference_entries(coeffs: np.ndarray, dims: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Entries ``(values, rows, cols)`` of the rows ``sum_j coeffs[r, j] x_{r + j}`` (R, n + 1), one row per
    dimension: row ``r * D + d``, column ``(r + j) * D + d``."""
    n_rows, width = coeffs.shape
    r = np.arange(n_rows)[:, None, None]
    d = np.arange(dims)[None, :, None]
    j = np.arange(width)[None, None, :]
    row_ids = np.broadcast_to(r * dims + d, (n_rows, dims, width))
    col_ids = np.broadcast_to((r + j) * dims + d, (n_rows, dims, width))
    data = np.broadcast_to(coeffs[:, None, :], (n_rows, dims, width))
    return data.reshape(-1), row_ids.reshape(-1), col_ids.reshape(-1)


def _matrix(
    values: np.ndarray, rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int], *, dense: bool
) -> np.ndarray | scipy.sparse.csr_matrix:
    """The matrix of distinct entries ``(values, rows, cols)``: a dense array or a CSR matrix."""
    if not dense:
        return scipy.sparse.csr_matrix((values, (rows, cols)), shape=shape)
    matrix = np.zeros(shape)
    matrix[rows, cols] = values
    return matrix


def path_velocity(times_s: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """(K, D) velocity of a smoothed path by central differences (second-order one-sided at the ends)."""
    positions = np.asarray(positions, dtype=np.float64)
    if positions.shape[0] < 2:
        return np.zeros_like(positions)
    edge_order = 2 if positions.shape[0] >= 3 else 1  # second-order ends: no half-step lag on curves
    return np.gradient(positions, np.asarray(times_s, dtype=np.float64), axis=0, edge_order=edge_order)


def nearest_turn(angle_rad: np.ndarray, reference_rad: np.ndarray) -> np.ndarray:
    """``angle + 2 pi n`` closest to ``reference`` (unwraps angles next to a reference)."""
    reference = np.asarray(reference_rad, dtype=np.float64)
    return reference + _wrap(np.asarray(angle_rad, dtype=np.float64) - reference)


def nearest_half_turn(angle_rad: np.ndarray, reference_rad: np.ndarray) -> np.ndarray:
    """``angle + pi n`` closest to ``reference``: a heading made consistent with a reference (pi flips)."""
    reference = np.asarray(reference_rad, dtype=np.float64)
    return reference + _wrap(2.0 * (np.asarray(angle_rad, dtype=np.float64) - reference)) / 2.0


def _wrap(angle: np.ndarray) -> np.ndarray:
    return angle - 2.0 * np.pi * np.ceil((angle - np.pi) / (2.0 * np.pi))
