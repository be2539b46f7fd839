"""Grid connected components and open3d DBSCAN on small hand-made clouds."""

from __future__ import annotations

import numpy as np
import pytest

from autolabel.detect.cluster import (
    ClusterConfig,
    ClusterMethod,
    cluster_points,
    grid_clusters,
    group_by_label,
    relabel_by_size,
)
from calibration import InputError


def _blob(cx: float, cy: float, n: int, size_m: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    xy = rng.uniform(-size_m / 2, size_m / 2, (n, 2)) + np.array([cx, cy])
    return np.column_stack([xy, rng.uniform(0.3, 1.5, n), np.zeros((n, 2))]).astype(np.float32)


def test_grid_components_bridge_small_gaps_and_split_at_wider_ones() -> None:
    # Two 1 m blobs 0.2 m apart near the sensor form one cluster; a third 1 m away is another; a lone point is
    # noise (under min_points).
    points = np.concatenate(
        [_blob(5, 0, 200, 1.0, 0), _blob(6.2, 0, 200, 1.0, 1), _blob(8.2, 0, 150, 1.0, 2), [[3, 3, 1, 0, 0]]]
    ).astype(np.float32)
    labels = grid_clusters(points)
    assert set(labels[:400]) == {0}  # the largest cluster is label 0
    assert set(labels[400:550]) == {1}
    assert labels[-1] == -1


def test_the_link_distance_grows_with_range() -> None:
    # A 0.4 m gap separates objects at 10 m (link 0.3 m) but not at 40 m (link 0.48 m), where returns are sparse.
    near = np.concatenate([_blob(10, 0, 100, 0.6, 0), _blob(10.0, 1.0, 100, 0.6, 1)])
    far = np.concatenate([_blob(40, 0, 100, 0.6, 2), _blob(40.0, 1.0, 100, 0.6, 3)])
    assert len(set(grid_clusters(near))) == 2
    assert len(set(grid_clusters(far))) == 1


def test_dbscan_finds_the_same_objects() -> None:
    points = np.concatenate([_blob(5, 0, 200, 1.0, 0), _blob(8, 0, 150, 1.0, 1), _blob(5, 4, 120, 1.0, 2)])
    labels = cluster_points(points, ClusterConfig(method=ClusterMethod.DBSCAN))
    np.testing.assert_array_equal(labels, grid_clusters(points))


def test_group_by_label_and_relabel() -> None:
    labels = relabel_by_size(np.array([7, 7, -1, 3, 7, 3, 9]), min_points=2)
    np.testing.assert_array_equal(labels, [0, 0, -1, 1, 0, 1, -1])
    order, offsets = group_by_label(labels, 2)
    np.testing.assert_array_equal(offsets, [0, 3, 5])
    np.testing.assert_array_equal(order, [0, 1, 4, 3, 5])


def test_bad_input_is_rejected() -> None:
    with pytest.raises(InputError):
        grid_clusters(np.zeros(5))
    with pytest.raises(InputError):
        ClusterConfig(cell_m=0.5, link_min_m=0.3)
