"""One-to-one assignment of tracks to detections from an affinity matrix (higher is better)."""

from __future__ import annotations

import numba
import numpy as np
from scipy.optimize import linear_sum_assignment

from tracking.config import SolverKind

_INADMISSIBLE_COST = 1e9  # far above any |affinity|, so the solver never trades an admissible pair for it


@numba.njit(cache=True)
def _isolated_pairs(admissible: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split the bipartite graph of admissible pairs into isolated edges and the rest.

    Returns:
        rows and cols of the edges whose row and column have no other admissible pair (they match each
        other in any optimal assignment), and the rows and cols of every other admissible pair.
    """
    n, m = admissible.shape
    row_degree, col_degree = np.zeros(n, dtype=np.int64), np.zeros(m, dtype=np.int64)
    row_partner = np.zeros(n, dtype=np.int64)
    for i in range(n):
        for j in range(m):
            if admissible[i, j]:
                row_degree[i] += 1
                col_degree[j] += 1
                row_partner[i] = j
    isolated_col = np.zeros(m, dtype=np.bool_)
    iso_rows, iso_cols = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
    other_rows, other_cols = np.empty(n, dtype=np.int64), np.empty(m, dtype=np.int64)
    n_iso = n_rows = n_cols = 0
    for i in range(n):
        if row_degree[i] == 1 and col_degree[row_partner[i]] == 1:
            iso_rows[n_iso], iso_cols[n_iso] = i, row_partner[i]
            isolated_col[row_partner[i]] = True
            n_iso += 1
        elif row_degree[i] > 0:
            other_rows[n_rows] = i
            n_rows += 1
    for j in range(m):
        if col_degree[j] > 0 and not isolated_col[j]:
            other_cols[n_cols] = j
            n_cols += 1
    return iso_rows[:n_iso], iso_cols[:n_iso], other_rows[:n_rows], other_cols[:n_cols]


def hungarian(affinity: np.ndarray, admissible: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs maximising first the number of admissible matches, then their total affinity.

    Pairs whose row and column have no other admissible pair are matched directly (the common case
    with gating); ``scipy.optimize.linear_sum_assignment`` solves the rest, with a large cost on
    inadmissible pairs. The split is exact: those pairs are components of their own.

    Args:
        affinity: (T, D) scores.
        admissible: (T, D) bool; only these pairs may be matched.

    Returns:
        rows (K,) and cols (K,) int64 of the matched pairs, rows increasing.
    """
    iso_rows, iso_cols, rows, cols = _isolated_pairs(np.ascontiguousarray(admissible))
    if rows.shape[0] == 0:
        return iso_rows, iso_cols
    sub_ok = admissible[np.ix_(rows, cols)]
    r, c = linear_sum_assignment(np.where(sub_ok, -affinity[np.ix_(rows, cols)], _INADMISSIBLE_COST))
    keep = sub_ok[r, c]
    all_rows, all_cols = np.concatenate([iso_rows, rows[r[keep]]]), np.concatenate([iso_cols, cols[c[keep]]])
    order = np.argsort(all_rows)
    return all_rows[order], all_cols[order]


@numba.njit(cache=True)
def _take_in_order(rows: np.ndarray, cols: np.ndarray, n_rows: int, n_cols: int) -> np.ndarray:
    """(K,) bool: pair k is taken when neither its row nor its column was taken by an earlier pair."""
    row_used, col_used = np.zeros(n_rows, dtype=np.bool_), np.zeros(n_cols, dtype=np.bool_)
    taken = np.zeros(rows.shape[0], dtype=np.bool_)
    for k in range(rows.shape[0]):
        if not row_used[rows[k]] and not col_used[cols[k]]:
            row_used[rows[k]] = col_used[cols[k]] = taken[k] = True
    return taken


def greedy(affinity: np.ndarray, admissible: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs picked best-first among admissible ones (ties by row, then column); rows increasing."""
    rows, cols = np.nonzero(admissible)
    order = np.argsort(-affinity[rows, cols], kind="stable")
    rows, cols = rows[order], cols[order]
    taken = _take_in_order(rows, cols, admissible.shape[0], admissible.shape[1])
    rows, cols = rows[taken], cols[taken]
    order = np.argsort(rows)
    return rows[order].astype(np.int64), cols[order].astype(np.int64)


def assign(affinity: np.ndarray, admissible: np.ndarray, solver: SolverKind) -> tuple[np.ndarray, np.ndarray]:
    """Matched (rows, cols) of (T, D) ``affinity`` restricted to ``admissible`` pairs by ``solver``."""
    if solver is SolverKind.GREEDY:
        return greedy(affinity, admissible)
    return hungarian(affinity, admissible)
