"""GIoU and centre-distance affinities (hand-computed and against shapely), and the two solvers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from shapely.geometry import Polygon
from shapely.ops import unary_union

from calibration import Boxes3D, GeometryError, iou_bev
from tracking import SolverKind, giou_3d, giou_bev
from tracking.affinity import (
    GATED,
    KIND_CENTER_DISTANCE,
    KIND_GIOU_3D,
    KIND_GIOU_BEV,
    giou_matrix,
    track_detection_scores,
)
from tracking.assignment import assign, greedy, hungarian


def boxes(rows: list[list[float]], frame: str = "world") -> Boxes3D:
    return Boxes3D(np.array(rows, dtype=np.float64), frame)


def test_giou_bev_by_hand() -> None:
    a = boxes([[0, 0, 0, 2, 2, 1, 0]])
    b = boxes(
        [
            [0, 0, 0, 2, 2, 1, 0],  # identical: 1
            [1, 0, 0, 2, 2, 1, 0],  # overlap 2, union 6, hull 3 x 2 = 6: 1/3
            [4, 0, 0, 2, 2, 1, 0],  # apart: union 8, hull 6 x 2 = 12: 0 - 4/12 = -1/3
            [0, 0, 0, 2, 2, 1, math.pi / 2],  # a square turned by 90 degrees is itself: 1
            [1000, 0, 0, 2, 2, 1, 0],  # far: union 8, hull 1002 x 2 = 2004: -1996 / 2004, close to -1
        ]
    )
    np.testing.assert_allclose(giou_bev(a, b)[0], [1.0, 1 / 3, -1 / 3, 1.0, -1996 / 2004], atol=1e-9)


def test_giou_of_a_rotated_square_by_hand() -> None:
    # A 2 x 2 square and the same square turned by 45 degrees: the intersection is the regular octagon of
    # inradius 1, area 8 tan(pi / 8) = 8 (sqrt 2 - 1) = 3.3137; union 8 - 3.3137 = 4.6863; the hull is the
    # regular octagon of the 8 corners (circumradius sqrt 2), area 2 sqrt 2 R^2 = 4 sqrt 2 = 5.6569.
    a = boxes([[0, 0, 0, 2, 2, 1, 0]])
    b = boxes([[0, 0, 0, 2, 2, 1, math.pi / 4]])
    inter = 8 * (math.sqrt(2) - 1)
    union = 8 - inter
    hull = 4 * math.sqrt(2)
    assert giou_bev(a, b)[0, 0] == pytest.approx(inter / union - (hull - union) / hull, abs=1e-12)
    assert iou_bev(a, b)[0, 0] == pytest.approx(inter / union, abs=1e-6)


def test_giou_3d_by_hand() -> None:
    a = boxes([[0, 0, 0, 2, 2, 2, 0]])
    b = boxes([[1, 0, 1, 2, 2, 2, 0]])  # overlap 1 x 2 x 1 = 2, union 16 - 2 = 14, hull 3 x 2 x 3 = 18
    assert giou_3d(a, b)[0, 0] == pytest.approx(2 / 14 - (18 - 14) / 18, abs=1e-12)
    c = boxes([[0, 0, 3, 2, 2, 2, 0]])  # same footprint, 1 m above: union 16, hull 2 x 2 x 5 = 20
    assert giou_3d(a, c)[0, 0] == pytest.approx(-(20 - 16) / 20, abs=1e-12)
    assert giou_bev(a, c)[0, 0] == pytest.approx(1.0)


def test_giou_bev_matches_shapely_on_random_boxes_far_from_the_origin() -> None:
    rng = np.random.default_rng(0)
    data = np.column_stack(
        [
            rng.uniform(-4, 4, (40, 2)) + 5000.0,
            rng.uniform(0, 1, 40),
            rng.uniform(0.3, 6, (40, 3)),
            rng.uniform(-4, 4, 40),
        ]
    )
    a, b = Boxes3D(data[:20], "world"), Boxes3D(data[20:], "world")
    pa, pb = a.bev_corners() - 5000.0, b.bev_corners() - 5000.0
    expected = np.zeros((20, 20))
    for i in range(20):
        for j in range(20):
            A, B = Polygon(pa[i]), Polygon(pb[j])
            inter = A.intersection(B).area
            union = A.area + B.area - inter
            hull = unary_union([A, B]).convex_hull.area
            expected[i, j] = inter / union - (hull - union) / hull
    np.testing.assert_allclose(giou_bev(a, b), expected, atol=1e-9)
    overlapping = expected > 0
    assert overlapping.sum() > 20  # the check covers many overlapping pairs
    np.testing.assert_array_less(giou_bev(a, b) - 1e-9, iou_bev(a, b) + 1e-6)  # GIoU <= IoU


def test_gate_skips_far_pairs_and_frames_must_match() -> None:
    a = np.array([[0, 0, 0, 2, 2, 1, 0], [10, 0, 0, 2, 2, 1, 0]], dtype=np.float64)
    b = np.array([[1, 0, 0, 2, 2, 1, 0]], dtype=np.float64)
    out = giou_matrix(a, b, np.array([5.0, 5.0]), False)
    assert out[0, 0] == pytest.approx(1 / 3) and out[1, 0] == GATED
    with pytest.raises(GeometryError):
        giou_bev(boxes([[0, 0, 0, 1, 1, 1, 0]], "ego"), boxes([[0, 0, 0, 1, 1, 1, 0]]))


def test_track_detection_scores_gate_by_class_and_threshold() -> None:
    # Classes: 0 car, 1 pedestrian; a car track may match cars only. Gates 5 m (car) and 1 m (pedestrian).
    tracks = np.array([[0, 0, 0, 2, 2, 1, 0], [0, 10, 0, 1, 1, 1, 0]], dtype=np.float64)
    dets = np.array([[1, 0, 0, 2, 2, 1, 0], [4, 0, 0, 2, 2, 1, 0], [0.5, 10, 0, 1, 1, 1, 0]], dtype=np.float64)
    args = (np.array([0, 1]), dets, np.array([0, 0, 1]))
    gate, compatible = np.array([5.0, 1.0]), np.eye(2, dtype=bool)
    low = (3, np.full(2, 0.9))  # all three detections count as confident here
    giou, ok = track_detection_scores(tracks, *args, KIND_GIOU_BEV, gate, np.array([0.0, -0.5]), compatible, *low)
    # car-car: 1/3 and -1/3 (threshold 0); pedestrian track vs pedestrian: overlap 0.5, union 1.5, hull 1.5.
    np.testing.assert_allclose(giou, [[1 / 3, -1 / 3, GATED], [GATED, GATED, 1 / 3]])
    assert ok.tolist() == [[True, False, False], [False, False, True]]
    dist, ok = track_detection_scores(
        tracks, *args, KIND_CENTER_DISTANCE, gate, np.array([-2.0, -1.0]), compatible, *low
    )
    np.testing.assert_allclose(dist, [[-1.0, -4.0, GATED], [GATED, GATED, -0.5]])
    assert ok.tolist() == [[True, False, False], [False, False, True]]
    gate_3d, _ = track_detection_scores(tracks, *args, KIND_GIOU_3D, gate, np.zeros(2), compatible, *low)
    np.testing.assert_allclose(gate_3d[0, :2], [1 / 3, -1 / 3])  # same heights: 3D equals BEV here
    # Only the first detection confident: the others face the low-score threshold (0.5 GIoU).
    _, ok = track_detection_scores(tracks, *args, KIND_GIOU_BEV, gate, np.full(2, -0.5), compatible, 1, np.full(2, 0.5))
    assert ok.tolist() == [[True, False, False], [False, False, False]]


# ------------------------------------------------------------------------------------------------ solvers


def test_hungarian_and_greedy_agree_on_a_simple_case() -> None:
    affinity = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.1], [0.0, 0.3, 0.7]])
    admissible = affinity > 0.05
    for solver in SolverKind:
        rows, cols = assign(affinity, admissible, solver)
        np.testing.assert_array_equal(rows, [0, 1, 2])
        np.testing.assert_array_equal(cols, [0, 1, 2])


def test_hungarian_and_greedy_differ_on_a_crafted_case() -> None:
    # Track 0 likes both detections, track 1 only detection 0. Greedy takes the best pair (0, 0) = 0.9 and
    # leaves track 1 alone; Hungarian matches both: (0, 1) + (1, 0) = 0.8 + 0.85 = 1.65.
    affinity = np.array([[0.9, 0.8], [0.85, GATED]])
    admissible = np.array([[True, True], [True, False]])
    rows, cols = greedy(affinity, admissible)
    assert rows.tolist() == [0] and cols.tolist() == [0]
    rows, cols = hungarian(affinity, admissible)
    assert rows.tolist() == [0, 1] and cols.tolist() == [1, 0]


def test_solvers_never_match_inadmissible_pairs_and_handle_empty_input() -> None:
    affinity = np.array([[5.0, -1.0], [-1.0, -2.0]])
    admissible = np.array([[False, True], [False, False]])
    for solver in SolverKind:
        rows, cols = assign(affinity, admissible, solver)
        assert rows.tolist() == [0] and cols.tolist() == [1]
        rows, cols = assign(np.zeros((0, 3)), np.zeros((0, 3), dtype=bool), solver)
        assert rows.size == 0 and cols.size == 0


def test_hungarian_equals_a_plain_linear_sum_assignment_on_random_sparse_cases() -> None:
    rng = np.random.default_rng(5)
    for _ in range(50):
        n, m = rng.integers(1, 12, 2)
        affinity = rng.uniform(-1, 1, (n, m))
        admissible = rng.random((n, m)) < rng.uniform(0.05, 0.5)
        rows, cols = hungarian(affinity, admissible)
        r, c = linear_sum_assignment(np.where(admissible, -affinity, 1e9))
        keep = admissible[r, c]
        assert rows.shape[0] == int(keep.sum())  # as many matches
        assert affinity[rows, cols].sum() == pytest.approx(affinity[r[keep], c[keep]].sum())  # as good
        assert admissible[rows, cols].all() and len(set(cols.tolist())) == len(cols)
        assert (np.diff(rows) > 0).all()
