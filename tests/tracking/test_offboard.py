"""Offboard stages in isolation: pass merging, claim resolution, stitching, gap filling, yaw consistency."""

from __future__ import annotations

import math

import numpy as np
import pytest

from calibration import Boxes3D
from tracking import Detections, TrackerConfig
from tracking.assemble import consistent_yaws, fill_gaps, vote_label
from tracking.offboard import Claims, merge_passes, resolve_claims, stitch, time_reversed
from tracking.tables import ClassTable, ClipArrays
from tracking.tracker import PassRecords


def records(track_ids: list[int], frames: list[int], dets: list[int], hits: list[int] | None = None) -> PassRecords:
    n = len(track_ids)
    return PassRecords(
        np.array(track_ids, dtype=np.int64),
        np.array(frames, dtype=np.int64),
        np.array(dets, dtype=np.int64),
        np.zeros(n),
        np.tile([1.0, 0.0], (n, 1)),
        np.array(hits if hits is not None else list(range(1, n + 1)), dtype=np.int64),
        np.ones(n, dtype=bool),
    )


def clip_of(n_frames: int, dets_per_frame: int, labels: tuple[str, ...] = ("car",)) -> tuple[ClipArrays, ClassTable]:
    """A clip whose detection d of frame k is at x = k + 10 d (1 m per frame at 10 Hz: 10 m/s)."""
    table = ClassTable.build(labels, TrackerConfig())
    frames = [
        Detections(
            k * 100_000,
            Boxes3D(np.array([[k + 10.0 * d, 0.0, 1.0, 4.5, 1.9, 1.6, 0.0] for d in range(dets_per_frame)]), "world"),
            np.full(dets_per_frame, 0.9),
            (labels[0],) * dets_per_frame,
        )
        for k in range(n_frames)
    ]
    return ClipArrays.build(frames, table, "world"), table


def test_merge_unites_a_forward_and_a_backward_tracklet_of_one_object() -> None:
    clip, _ = clip_of(10, 1)
    forward = records([0] * 7, list(range(3, 10)), [0] * 7)  # born late, e.g. after weak detections
    backward = records([5] * 10, list(range(10)), [0] * 10)
    claims = merge_passes(forward, backward, clip, min_share=0.5)
    assert claims.object_ids.tolist() == [0] * 10
    assert claims.frame_indices.tolist() == list(range(10))
    # Support: both passes' hits where they agree (frames 3-9), the backward hits alone before.
    assert claims.support.tolist()[:4] == [1.0, 2.0, 3.0, 4.0 + 1.0]


def test_merge_keeps_unrelated_tracklets_apart() -> None:
    clip, _ = clip_of(10, 2)
    forward = records([0] * 10 + [1] * 10, [*range(10), *range(10)], [0] * 10 + [1] * 10)
    backward = records([0] * 4, [0, 1, 2, 3], [1] * 4)  # shares 4 of its 4 detections with forward 1
    claims = merge_passes(forward, backward, clip, min_share=0.5)
    detection = claims.keys - clip.offsets[claims.frame_indices]  # index within the frame
    assert len(claims) == 20 and np.bincount(claims.object_ids).tolist() == [10, 10]
    assert [sorted(set(detection[claims.object_ids == o].tolist())) for o in (0, 1)] == [[1], [0]]
    forward_only = merge_passes(forward, records([], [], []), clip, min_share=0.5)
    assert len(forward_only) == 20


def test_claim_conflicts_go_to_the_better_supported_claim() -> None:
    # Object 0 claims detections 0 and 1 in frame 4 (support 2 and 5): it keeps detection 1. Object 1
    # claims detection 1 too, with support 3: it loses it to object 0 (5) and keeps frame 5.
    claims = Claims(
        np.array([0, 0, 1, 1]),
        np.array([4, 4, 4, 5]),
        np.array([40, 41, 41, 50]),
        np.zeros((4, 2)),
        np.array([2.0, 5.0, 3.0, 1.0]),
    )
    out = resolve_claims(claims)
    assert list(zip(out.object_ids.tolist(), out.keys.tolist(), strict=True)) == [(0, 41), (1, 50)]


def test_time_reversed_records_come_back_in_forward_time() -> None:
    reversed_pass = records([0, 0, 0], [0, 1, 2], [1, 0, 2])
    out = time_reversed(reversed_pass, 10)
    assert out.frame_indices.tolist() == [7, 8, 9]
    assert out.detection_indices.tolist() == [2, 0, 1]
    np.testing.assert_array_equal(out.velocities, [[-1.0, 0.0]] * 3)


def test_stitch_joins_an_ending_and_a_starting_track_whose_motion_agrees() -> None:
    # Object 0: frames 0-4 at x = k (10 m/s). Object 1: frames 8-9 at x = k (the same car after a gap).
    # Object 2: frames 7-9 at x = 10 + k: 10 m off the extrapolation, not joined.
    clip, table = clip_of(10, 2)
    frames = [0, 1, 2, 3, 4, 8, 9, 7, 8, 9]
    dets = [0, 0, 0, 0, 0, 0, 0, 1, 1, 1]
    claims = Claims(
        np.array([0] * 5 + [1] * 2 + [2] * 3),
        np.array(frames),
        clip.keys(np.array(frames), np.array(dets)),
        np.tile([10.0, 0.0], (10, 1)),
        np.ones(10),
    )
    new_ids = stitch(claims, clip, table, np.zeros(3, dtype=np.int64), max_gap_s=1.0)
    assert new_ids.tolist() == [0, 0, 2]
    assert stitch(claims, clip, table, np.zeros(3, dtype=np.int64), max_gap_s=0.2).tolist() == [0, 1, 2]


def test_fill_gaps_by_hand() -> None:
    times = np.arange(6) * 100_000
    boxes = np.array([[0.0, 0.0, 1.0, 4.0, 2.0, 1.5, 3.0], [4.0, 2.0, 1.0, 4.4, 2.0, 1.5, -3.0]])
    objects, frames, out, velocity, scores, detected = fill_gaps(
        np.array([7, 7]), np.array([1, 5]), times, boxes, np.zeros((2, 2)), np.array([0.9, 0.5]), None
    )
    assert objects.tolist() == [7] * 5
    assert frames.tolist() == [1, 2, 3, 4, 5] and detected.tolist() == [True, False, False, False, True]
    np.testing.assert_allclose(out[1:4, :2], [[1.0, 0.5], [2.0, 1.0], [3.0, 1.5]])
    np.testing.assert_allclose(out[1:4, 3], [4.1, 4.2, 4.3])
    # 3.0 -> -3.0 the short way through pi: 2 pi - 6 = 0.2832 rad in 4 steps of 0.0708.
    step = (2 * math.pi - 6.0) / 4
    np.testing.assert_allclose(out[1:4, 6], [3.0 + step, 3.0 + 2 * step, 3.0 + 3 * step - 2 * math.pi], atol=1e-12)
    np.testing.assert_allclose(velocity[1:4], [[10.0, 5.0]] * 3)  # (4, 2) m in 0.4 s
    np.testing.assert_allclose(scores, [0.9, 0.8, 0.7, 0.6, 0.5])
    kept = fill_gaps(np.array([7, 7]), np.array([1, 5]), times, boxes, np.zeros((2, 2)), np.array([0.9, 0.5]), 0.3)
    assert kept[1].tolist() == [1, 5]  # a 0.4 s gap is longer than 0.3 s: left empty


def test_fill_gaps_never_bridges_two_objects() -> None:
    times = np.arange(8) * 100_000
    boxes = np.zeros((4, 7))
    boxes[:, 0] = [0.0, 2.0, 50.0, 53.0]
    objects, frames, out, _, _, detected = fill_gaps(
        np.array([3, 3, 1, 1]), np.array([0, 2, 4, 7]), times, boxes, np.zeros((4, 2)), np.ones(4), None
    )
    assert objects.tolist() == [3, 3, 3, 1, 1, 1, 1]  # grouping kept (object 3 first), no fill from 2 to 4
    assert frames.tolist() == [0, 1, 2, 4, 5, 6, 7]
    np.testing.assert_allclose(out[:, 0], [0.0, 1.0, 2.0, 50.0, 51.0, 52.0, 53.0])
    assert detected.tolist() == [True, False, True, True, False, False, True]


def test_consistent_yaws_follow_the_majority_of_the_detector() -> None:
    raw = np.array([0.1, 0.1 + math.pi, 0.12, 0.15 - math.pi, 0.2])
    one = np.zeros(5, dtype=np.int64)
    np.testing.assert_allclose(consistent_yaws(one, raw, np.ones(5)), [0.1, 0.1, 0.12, 0.15, 0.2], atol=1e-12)
    # The flipped orientation has more score behind it: all turn to it.
    out = consistent_yaws(one, raw, np.array([0.1, 0.9, 0.1, 0.9, 0.1]))
    np.testing.assert_allclose(np.cos(out - (0.1 + math.pi)), [1.0, 1.0, math.cos(0.02), math.cos(0.05), math.cos(0.1)])
    # Two objects: each decides alone; no flip is counted across the boundary.
    two = consistent_yaws(np.array([0, 0, 1, 1]), np.array([0.0, math.pi, math.pi, 0.0]), np.array([1, 0.5, 0.5, 1]))
    np.testing.assert_allclose(np.cos(two), [1.0, 1.0, 1.0, 1.0], atol=1e-12)


def test_vote_label_is_score_weighted() -> None:
    assert vote_label(np.array([0, 1, 1]), np.array([0.9, 0.4, 0.4]), 2) == 0
    assert vote_label(np.array([0, 1, 1]), np.array([0.7, 0.4, 0.4]), 2) == 1
    with pytest.raises(ValueError):
        vote_label(np.array([0]), np.array([1.0, 2.0]), 2)


def test_frame_arrays_order_candidates_and_reverse_time() -> None:
    config = TrackerConfig()  # high 0.5, low 0.1
    table = ClassTable.build(("car",), config)
    boxes = Boxes3D(np.zeros((4, 7)), "world", np.array([[1.0, 2.0]] * 4))
    frames = [
        Detections(0, boxes, [0.3, 0.9, 0.05, 0.6], ("car",) * 4),
        Detections(100_000, Boxes3D.empty("world"), [], ()),
    ]
    clip = ClipArrays.build(frames, table, "world")
    first, second = clip.frame_arrays(config)
    assert first.candidates.tolist() == [1, 3, 0] and first.n_high == 2  # confident first, 0.05 dropped
    assert second.candidates.tolist() == [] and second.n_high == 0
    backward = clip.frame_arrays(config, time_reversed=True)
    assert [f.timestamp_us for f in backward] == [-100_000, 0]
    np.testing.assert_array_equal(backward[1].velocity, [[-1.0, -2.0]] * 4)
    np.testing.assert_array_equal(clip.velocity, [[1.0, 2.0]] * 4)  # the clip is untouched
