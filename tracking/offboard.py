"""Offboard stages: merge the forward and backward passes, stitch broken tracks, assemble and filter.

Merge: a forward and a backward tracklet are one object when they share at least ``merge_min_share``
of the shorter one's detections (one-to-one, Hungarian on the shared counts). The merged object takes
the union of both tracklets' detections, so it starts where the backward pass first saw the object
(frames a forward tracker spent tentative, or on low-score detections it could not start from, are
recovered) and gaps one pass bridged are bridged. Every (object, detection) claim carries a support:
the number of matches the claiming filter(s) had seen by then, summed when both passes agree. Where
an object claims two detections in one frame, or two objects claim one detection, the higher support
wins. Velocities are support-weighted means of the two passes' filters (a poor man's two-filter smoother:
the pass that has seen more of the object counts more).

Stitch: an object ending and a compatible one starting later are joined when the gap is short enough
and both ends, extrapolated across the gap with their velocities, land within the class's stitch
distance of the other end (one-to-one, Hungarian on that distance; chains are followed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tracking.assemble import ObjectRows, consistent_yaws, make_tracks, run_starts
from tracking.assignment import hungarian
from tracking.config import OffboardConfig
from tracking.tables import ClassTable, ClipArrays
from tracking.tracker import PassRecords
from tracking.types import Track


@dataclass(frozen=True, eq=False)
class Claims:
    """Detections claimed by objects: R rows sorted by object id, then frame.

    Attributes:
        object_ids, frame_indices, keys: (R,) int64.
        velocities: (R, 2) m/s.
        support: (R,) float, matches seen by the claiming filter(s) up to that frame.
    """

    object_ids: np.ndarray
    frame_indices: np.ndarray
    keys: np.ndarray
    velocities: np.ndarray
    support: np.ndarray

    def __len__(self) -> int:
        return int(self.object_ids.shape[0])

    def select(self, rows: np.ndarray) -> Claims:
        return Claims(
            self.object_ids[rows], self.frame_indices[rows], self.keys[rows], self.velocities[rows], self.support[rows]
        )

    def sorted(self) -> Claims:
        return self.select(np.lexsort((self.frame_indices, self.object_ids)))


def time_reversed(records: PassRecords, n_frames: int) -> PassRecords:
    """Records of a pass over reversed frames, back in forward time (frames mapped, velocities negated)."""
    frames = n_frames - 1 - records.frame_indices
    out = PassRecords(
        records.track_ids,
        frames,
        records.detection_indices,
        records.yaws,
        -records.velocities,
        records.hits,
        records.confirmed,
    )
    return out.select(np.lexsort((frames, records.track_ids)))


def shared_detections(ids_a: np.ndarray, keys_a: np.ndarray, ids_b: np.ndarray, keys_b: np.ndarray) -> np.ndarray:
    """(A, B) number of detection keys tracklet a (dense ids 0..A-1) shares with tracklet b (0..B-1)."""
    n_a = int(ids_a.max()) + 1 if ids_a.size else 0
    n_b = int(ids_b.max()) + 1 if ids_b.size else 0
    n_keys = int(max(keys_a.max(initial=-1), keys_b.max(initial=-1))) + 1
    owner_b = np.full(n_keys, -1, dtype=np.int64)
    owner_b[keys_b] = ids_b
    other = owner_b[keys_a]
    both = other >= 0
    counts = np.zeros((n_a, n_b), dtype=np.int64)
    np.add.at(counts, (ids_a[both], other[both]), 1)
    return counts


def match_tracklets(
    ids_f: np.ndarray, keys_f: np.ndarray, ids_b: np.ndarray, keys_b: np.ndarray, min_share: float
) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one (forward, backward) pairs of dense tracklet ids sharing >= ``min_share`` of the shorter one."""
    counts = shared_detections(ids_f, keys_f, ids_b, keys_b)
    len_f = np.bincount(ids_f, minlength=counts.shape[0])
    len_b = np.bincount(ids_b, minlength=counts.shape[1])
    share = counts / np.maximum(np.minimum(len_f[:, None], len_b[None, :]), 1)
    return hungarian(counts.astype(np.float64), (counts > 0) & (share >= min_share))


def merge_passes(forward: PassRecords, backward: PassRecords, clip: ClipArrays, min_share: float) -> Claims:
    """Objects from the forward and (forward-time) backward records; see the module docstring."""
    ids_f = np.unique(forward.track_ids, return_inverse=True)[1].reshape(-1)
    ids_b = np.unique(backward.track_ids, return_inverse=True)[1].reshape(-1)
    keys_f = clip.keys(forward.frame_indices, forward.detection_indices)
    keys_b = clip.keys(backward.frame_indices, backward.detection_indices)
    pair_f, pair_b = match_tracklets(ids_f, keys_f, ids_b, keys_b, min_share)

    n_f = int(ids_f.max()) + 1 if ids_f.size else 0
    n_b = int(ids_b.max()) + 1 if ids_b.size else 0
    object_of_f = np.full(n_f, -1, dtype=np.int64)
    object_of_b = np.full(n_b, -1, dtype=np.int64)
    object_of_f[pair_f] = object_of_b[pair_b] = np.arange(pair_f.shape[0])
    lone_f, lone_b = object_of_f < 0, object_of_b < 0
    object_of_f[lone_f] = pair_f.shape[0] + np.arange(int(lone_f.sum()))
    object_of_b[lone_b] = pair_f.shape[0] + int(lone_f.sum()) + np.arange(int(lone_b.sum()))

    claims = Claims(
        np.concatenate([object_of_f[ids_f], object_of_b[ids_b]]),
        np.concatenate([forward.frame_indices, backward.frame_indices]),
        np.concatenate([keys_f, keys_b]),
        np.concatenate([forward.velocities, backward.velocities]),
        np.concatenate([forward.hits, backward.hits]).astype(np.float64),
    )
    return resolve_claims(combine_agreeing(claims))


def _first_of_runs(*columns: np.ndarray) -> np.ndarray:
    """Bool mask of rows whose ``columns`` differ from the previous row's (the rows are sorted by them)."""
    first = np.ones(columns[0].shape[0], dtype=bool)
    if first.size:
        first[1:] = np.any([np.diff(c) != 0 for c in columns], axis=0)
    return first


def combine_agreeing(claims: Claims) -> Claims:
    """One row per (object, detection): supports summed, velocities support-weighted."""
    c = claims.select(np.lexsort((claims.keys, claims.object_ids)))
    first = _first_of_runs(c.object_ids, c.keys)
    starts = np.flatnonzero(first)
    if starts.size == 0:
        return c
    support = np.add.reduceat(c.support, starts)
    velocities = np.add.reduceat(c.velocities * c.support[:, None], starts) / support[:, None]
    return Claims(c.object_ids[starts], c.frame_indices[starts], c.keys[starts], velocities, support)


def resolve_claims(claims: Claims) -> Claims:
    """The best-supported claim per (object, frame), then per detection; sorted by object, then frame."""
    c = claims.select(np.lexsort((-claims.support, claims.frame_indices, claims.object_ids)))
    c = c.select(np.flatnonzero(_first_of_runs(c.object_ids, c.frame_indices)))
    c = c.select(np.lexsort((c.object_ids, -c.support, c.keys)))
    c = c.select(np.flatnonzero(_first_of_runs(c.keys)))
    return c.sorted()


def stitch(claims: Claims, clip: ClipArrays, table: ClassTable, labels: np.ndarray, max_gap_s: float) -> np.ndarray:
    """(N,) new object id for each of the N objects of ``claims`` (dense ids 0..N-1), chains joined.

    Args:
        labels: (N,) class index per object (its vote), for class compatibility and stitch distance.
    """
    first = run_starts(claims.object_ids)
    last = np.concatenate([first[1:] - 1, [len(claims) - 1]])
    n = first.shape[0]
    frame_start, frame_end = claims.frame_indices[first], claims.frame_indices[last]
    start_xy, end_xy = clip.boxes[claims.keys[first], :2], clip.boxes[claims.keys[last], :2]
    start_v, end_v = claims.velocities[first], claims.velocities[last]
    gap_s = (clip.timestamps_us[frame_start][None, :] - clip.timestamps_us[frame_end][:, None]) * 1e-6  # (end, start)
    forward_miss = np.linalg.norm(end_xy[:, None] + end_v[:, None] * gap_s[..., None] - start_xy[None], axis=-1)
    backward_miss = np.linalg.norm(start_xy[None] - start_v[None] * gap_s[..., None] - end_xy[:, None], axis=-1)
    distance = 0.5 * (forward_miss + backward_miss)
    admissible = (
        (frame_start[None, :] > frame_end[:, None])
        & (gap_s <= max_gap_s)
        & table.compatible[labels[:, None], labels[None, :]]
        & (distance <= table.stitch_distance_m[labels][:, None])
    )
    ends, starts = hungarian(-distance, admissible)
    successor = np.full(n, -1, dtype=np.int64)
    successor[ends] = starts
    has_predecessor = np.zeros(n, dtype=bool)
    has_predecessor[starts] = True
    new_ids = np.full(n, -1, dtype=np.int64)
    for head in np.flatnonzero(~has_predecessor):
        node = head
        while node >= 0:
            new_ids[node] = head
            node = successor[node]
    return new_ids


def split_jumps(claims: Claims, clip: ClipArrays, min_jump_m: float, speed_ratio: float) -> np.ndarray:
    """(R,) object ids of the sorted ``claims`` with each object cut where it jumps.

    A step between consecutive detections of an object is a jump when it is longer than ``min_jump_m`` and its
    speed exceeds ``speed_ratio`` times the faster of the neighbouring steps' speeds plus 1 m/s (a standing car
    that "moves" 2.8 m in 0.5 s onto the next parking bay and stands again); steady fast motion and smooth
    acceleration are no jumps. Objects of one or two steps are never cut (no neighbouring step to compare).
    """
    ids = claims.object_ids
    if len(ids) < 3:
        return ids.copy()
    xy = clip.boxes[claims.keys, :2]
    t_s = clip.timestamps_us[claims.frame_indices] * 1e-6
    same = np.concatenate([[False], ids[1:] == ids[:-1]])
    step = np.concatenate([[0.0], np.linalg.norm(np.diff(xy, axis=0), axis=1)])
    dt = np.concatenate([[1.0], np.diff(t_s)])
    speed = np.where(same, step / np.maximum(dt, 1e-6), np.nan)
    before = np.concatenate([[np.nan], speed[:-1]])
    after = np.where(np.concatenate([same[1:], [False]]), np.concatenate([speed[1:], [np.nan]]), np.nan)
    neighbour = np.fmax(before, after)  # NaN only where neither neighbouring step exists
    with np.errstate(invalid="ignore"):
        jump = same & (step > min_jump_m) & (speed > speed_ratio * neighbour + 1.0)
    return np.cumsum(~same | jump) - 1


def offboard_tracks(
    forward: PassRecords, backward: PassRecords, clip: ClipArrays, table: ClassTable, config: OffboardConfig
) -> list[Track]:
    """Tracks of the offboard mode from the two passes' records (backward already in forward time)."""
    claims = merge_passes(forward.ever_confirmed(), backward.ever_confirmed(), clip, config.merge_min_share)
    if len(claims) == 0:
        return []
    dense = np.unique(claims.object_ids, return_inverse=True)[1].reshape(-1)
    votes = np.zeros((int(dense.max()) + 1, len(table.labels)))
    np.add.at(votes, (dense, clip.classes[claims.keys]), clip.scores[claims.keys])
    labels = np.argmax(votes, axis=1)
    claims = Claims(dense, claims.frame_indices, claims.keys, claims.velocities, claims.support)
    joined = stitch(claims, clip, table, labels, config.stitch_max_gap_s)
    claims = Claims(joined[dense], claims.frame_indices, claims.keys, claims.velocities, claims.support).sorted()
    cut = split_jumps(claims, clip, config.split_jump_m, config.split_speed_ratio)
    claims = Claims(cut, claims.frame_indices, claims.keys, claims.velocities, claims.support)

    rows = claims.select(np.flatnonzero(_strong_objects(claims.object_ids, clip.scores[claims.keys], config)))
    yaws = consistent_yaws(rows.object_ids, clip.boxes[rows.keys, 6], clip.scores[rows.keys])
    objects = ObjectRows(rows.object_ids, rows.keys, rows.frame_indices, yaws, rows.velocities)
    return make_tracks(objects, clip, table, interpolate=True, max_gap_s=config.interpolate_max_gap_s)


def _strong_objects(object_ids: np.ndarray, scores: np.ndarray, config: OffboardConfig) -> np.ndarray:
    """(R,) bool: the rows of objects with enough detections and a high enough mean score (ids sorted)."""
    dense = np.unique(object_ids, return_inverse=True)[1].reshape(-1)
    count = np.bincount(dense)
    mean_score = np.bincount(dense, weights=scores) / count
    return ((count >= config.min_detections) & (mean_score >= config.min_track_score))[dense]
