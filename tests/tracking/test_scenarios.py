"""Scripted scenarios end to end, both modes, scored with motmetrics against the scripted truth."""

from __future__ import annotations

import math
from collections.abc import Callable
from enum import Enum

import numpy as np
import pytest
from tracking_scenarios import (
    CAR_SIZE,
    PEDESTRIAN_SIZE,
    FalsePositive,
    MotCounts,
    Scenario,
    build,
    frames_mask,
    mot_counts,
    path,
    script,
    truth_of_track,
)

from calibration import Boxes3D
from tracking import (
    VEHICLE_CLASSES,
    BoxSource,
    Detections,
    LifeCycle,
    OffboardConfig,
    SolverKind,
    Track,
    TrackerConfig,
    TrackingMode,
    frames_of_tracks,
    track_clip,
)

ONLINE, OFFBOARD = TrackingMode.ONLINE, TrackingMode.OFFBOARD


def crossing_cars() -> Scenario:
    # Two cars at 10 m/s on perpendicular roads, both at the junction centre at frame 20 (full overlap).
    a, b = path(40, (-20.0, 0.0), (10.0, 0.0)), path(40, (0.0, -20.0), (0.0, 10.0))
    return build([script(0, "car", *a), script(1, "car", *b)], noise_m=0.05)


def passing_pedestrians() -> Scenario:
    # Head-on at 1.4 m/s each, passing 0.6 m apart (their 0.7 m boxes overlap) around frame 14.
    a, b = path(40, (-4.0, 0.3), (1.4, 0.0)), path(40, (4.0, -0.3), (-1.4, 0.0))
    objects = [script(i, "pedestrian", *p, size=PEDESTRIAN_SIZE) for i, p in enumerate((a, b))]
    return build(objects, noise_m=0.05, seed=1)


@pytest.mark.parametrize("make", [crossing_cars, passing_pedestrians])
def test_crossing_objects_keep_their_ids(make: Callable[[], Scenario]) -> None:
    scenario = make()
    tracks = track_clip(scenario.frames, TrackerConfig(), OFFBOARD)
    assert [truth_of_track(t, scenario) for t in tracks] == [{0}, {1}]
    assert mot_counts(tracks, scenario) == MotCounts(
        num_switches=0, num_fragmentations=0, num_misses=0, num_false_positives=0, num_matches=80
    )
    online = mot_counts(track_clip(scenario.frames, TrackerConfig(), ONLINE), scenario)
    # Online has no switch either, but reports nothing while tentative: frames 0 and 1 of both objects.
    assert (online.num_switches, online.num_misses) == (0, 4)


def occluded_car(first_hidden: int, stop_hidden: int, n_frames: int = 40) -> Scenario:
    xy, yaw = path(n_frames, (0.0, 0.0), (10.0, 0.0))
    seen = ~frames_mask(n_frames, first_hidden, stop_hidden)
    return build([script(0, "car", xy, yaw, seen=seen)], noise_m=0.05)


def test_occlusion_gap_is_bridged_and_interpolated_offboard() -> None:
    scenario = occluded_car(15, 23)  # hidden for 8 frames (0.8 s)
    (track,) = track_clip(scenario.frames, TrackerConfig(), OFFBOARD)
    assert mot_counts([track], scenario).num_fragmentations == 0
    assert track.frame_indices.tolist() == list(range(40))
    assert [s is BoxSource.INTERPOLATED for s in track.sources] == frames_mask(40, 15, 23).tolist()
    assert (track.detection_indices[15:23] == -1).all() and (track.detection_indices[:15] == 0).all()
    truth = scenario.objects[0].boxes()
    np.testing.assert_allclose(track.boxes.data[15:23], truth[15:23], atol=0.1)  # 0.05 m detection noise
    np.testing.assert_allclose(track.boxes.velocity[15:23], [[10.0, 0.0]] * 8, atol=0.2)
    # Online keeps the id through 0.8 s (max age 1 s) but reports nothing while the car is hidden.
    online = track_clip(scenario.frames, TrackerConfig(), ONLINE)
    counts = mot_counts(online, scenario)
    assert len(online) == 1 and (counts.num_switches, counts.num_fragmentations, counts.num_misses) == (0, 1, 10)


def test_long_occlusion_switches_online_but_not_offboard() -> None:
    scenario = occluded_car(15, 30, n_frames=50)  # hidden 1.5 s: longer than the online max age (1 s)
    online = track_clip(scenario.frames, TrackerConfig(), ONLINE)
    assert [(t.first_frame, t.last_frame) for t in online] == [(2, 14), (32, 49)]
    assert mot_counts(online, scenario).num_switches == 1
    (track,) = track_clip(scenario.frames, TrackerConfig(), OFFBOARD)
    assert (track.first_frame, track.last_frame, track.num_detected) == (0, 49, 35)
    assert mot_counts([track], scenario).num_switches == 0


def test_stitching_joins_tracks_broken_by_a_gap_longer_than_the_memory() -> None:
    xy, yaw = path(60, (0.0, 0.0), (5.0, 0.0))
    scenario = build([script(0, "car", xy, yaw, seen=~frames_mask(60, 20, 40))], noise_m=0.05)
    short_memory = OffboardConfig(life=LifeCycle(max_age_s=0.5))  # both passes drop the car in the 2 s gap
    (track,) = track_clip(scenario.frames, TrackerConfig(offboard=short_memory), OFFBOARD)
    assert (track.first_frame, track.last_frame, len(track), track.num_detected) == (0, 59, 60, 40)
    np.testing.assert_allclose(track.boxes.centers[20:40, :2], xy[20:40], atol=0.1)
    no_stitch = OffboardConfig(life=LifeCycle(max_age_s=0.5), stitch_max_gap_s=1.0)
    tracks = track_clip(scenario.frames, TrackerConfig(offboard=no_stitch), OFFBOARD)
    assert [(t.first_frame, t.last_frame) for t in tracks] == [(0, 19), (40, 59)]


def test_a_parked_car_track_does_not_jump_to_the_next_bay() -> None:
    # Two cars parked side by side 2.8 m apart; the detector sees the first until frame 9 and the second from
    # frame 12 on. Their boxes are close enough (BEV GIoU -0.19) for the first car's track to take the second
    # car's detections: offboard, the 2.8 m jump of a standing track cuts it into the two cars.
    a, b = path(30, (10.0, 0.0), (0.0, 0.0)), path(30, (10.0, 2.8), (0.0, 0.0))
    objects = [script(0, "car", *a, seen=frames_mask(30, 0, 10)), script(1, "car", *b, seen=frames_mask(30, 12, 30))]
    scenario = build(objects, noise_m=0.05)
    tracks = track_clip(scenario.frames, TrackerConfig(), OFFBOARD)
    assert [(t.first_frame, t.last_frame, t.num_detected) for t in tracks] == [(0, 9, 10), (12, 29, 18)]
    assert [truth_of_track(t, scenario) for t in tracks] == [{0}, {1}]
    no_split = OffboardConfig(split_jump_m=math.inf)
    (joined,) = track_clip(scenario.frames, TrackerConfig(offboard=no_split), OFFBOARD)
    assert truth_of_track(joined, scenario) == {0, 1}


def test_requiring_overlap_keeps_a_track_off_its_neighbours_detections() -> None:
    # A row of two parked cars 2.8 m apart (GIoU -0.19). The second is occluded (undetected) in frames 10-14,
    # just when the first comes into view. With the default gate (GIoU >= -0.5) the second car's coasting track
    # takes the first car's detections; a gate requiring overlap starts a track of its own for the first car
    # and bridges the second car's gap.
    n = 20
    seen = np.ones(n, dtype=bool)
    seen[10:15] = False
    first, second = path(n, (10.0, 0.0), (0.0, 0.0)), path(n, (10.0, 2.8), (0.0, 0.0))
    scenario = build([script(0, "car", *first, seen=frames_mask(n, 10, n)), script(1, "car", *second, seen=seen)])
    loose = TrackerConfig()
    tracks = track_clip(scenario.frames, loose, OFFBOARD)
    assert mot_counts(tracks, scenario).num_switches == 2
    assert [truth_of_track(t, scenario) for t in tracks] == [{1}, {0}, {0}, {1}]
    overlap = loose.with_class_changes(VEHICLE_CLASSES, min_giou=0.0)
    tracks = track_clip(scenario.frames, overlap, OFFBOARD)
    counts = mot_counts(tracks, scenario)
    assert (counts.num_switches, counts.num_fragmentations, counts.num_misses) == (0, 0, 10)  # the first's unseen
    assert [(t.first_frame, t.last_frame, truth_of_track(t, scenario)) for t in tracks] == [(0, 19, {1}), (10, 19, {0})]
    assert overlap.params_for("pedestrian") == loose.params_for("pedestrian")


def test_car_that_stops_and_starts_keeps_one_track() -> None:
    speed = np.concatenate([np.linspace(10.0, 0.0, 20), np.zeros(20), np.linspace(0.0, 10.0, 20)])
    xy, yaw = path(60, (0.0, 0.0), np.column_stack([speed, np.zeros(60)]))
    scenario = build([script(0, "car", xy, yaw)], noise_m=0.05)
    for mode, first in ((OFFBOARD, 0), (ONLINE, 2)):
        (track,) = track_clip(scenario.frames, TrackerConfig(), mode)
        assert (track.first_frame, track.last_frame, track.num_detected) == (first, 59, 60 - first)
    (track,) = track_clip(scenario.frames, TrackerConfig(), OFFBOARD)
    np.testing.assert_allclose(track.boxes.velocity[25:35], 0.0, atol=0.3)  # standing still
    np.testing.assert_allclose(track.boxes.yaws_rad, 0.0, atol=1e-12)  # heading kept while stopped


def test_pedestrian_turning_90_degrees() -> None:
    # Walks +x at 1.4 m/s, turns left over three frames (30 degrees each), walks +y.
    heading = np.concatenate([np.zeros(20), np.radians([30.0, 60.0]), np.full(18, math.pi / 2)])
    velocity = 1.4 * np.column_stack([np.cos(heading), np.sin(heading)])
    xy, yaw = path(40, (0.0, 0.0), velocity)
    scenario = build([script(0, "pedestrian", xy, yaw, size=PEDESTRIAN_SIZE)], noise_m=0.02)
    for mode in TrackingMode:
        tracks = track_clip(scenario.frames, TrackerConfig(), mode)
        assert len(tracks) == 1 and mot_counts(tracks, scenario).num_switches == 0
    (track,) = track_clip(scenario.frames, TrackerConfig(), OFFBOARD)
    np.testing.assert_allclose(track.boxes.yaws_rad, yaw, atol=1e-12)
    np.testing.assert_allclose(track.boxes.velocity[-5:], [[0.0, 1.4]] * 5, atol=0.15)


def test_false_positives_make_no_tracks() -> None:
    xy, yaw = path(30, (0.0, 0.0), (8.0, 0.0))
    rng = np.random.default_rng(3)
    clutter = [FalsePositive(k, (float(rng.uniform(20, 60)), float(rng.uniform(-30, 30))), 0.3) for k in range(30)]
    clutter.append(FalsePositive(12, (40.0, 40.0), 0.9))  # one confident single-frame false positive
    scenario = build([script(0, "car", xy, yaw)], false_positives=clutter, noise_m=0.05)
    for mode in TrackingMode:
        tracks = track_clip(scenario.frames, TrackerConfig(), mode)
        assert [truth_of_track(t, scenario) for t in tracks] == [{0}]
        assert mot_counts(tracks, scenario).num_false_positives == 0


def test_two_stage_association_recovers_low_score_detections() -> None:
    xy, yaw = path(30, (0.0, 0.0), (8.0, 0.0))
    scores = np.where(frames_mask(30, 10, 13), 0.3, 0.8)  # the detector doubts frames 10-12
    scenario = build([script(0, "car", xy, yaw, score=scores)], noise_m=0.05)
    (track,) = track_clip(scenario.frames, TrackerConfig(), OFFBOARD)
    assert track.sources[10:13] == (BoxSource.DETECTED,) * 3
    np.testing.assert_allclose(track.scores[9:14], [0.8, 0.3, 0.3, 0.3, 0.8])
    (online,) = track_clip(scenario.frames, TrackerConfig(), ONLINE)
    assert online.frame_indices.tolist() == list(range(2, 30))
    one_stage = TrackerConfig(low_score_threshold=0.5)
    (track,) = track_clip(scenario.frames, one_stage, OFFBOARD)
    assert track.sources[10:13] == (BoxSource.INTERPOLATED,) * 3
    (online,) = track_clip(scenario.frames, one_stage, ONLINE)
    assert online.frame_indices.tolist() == [*range(2, 10), *range(13, 30)]


def test_a_track_confirmed_at_its_first_detection_collects_the_low_score_ones() -> None:
    # A far parked car: one confident detection (frame 5) among doubtful ones (0.25). A tentative track takes
    # no low-score detections, so with two hits to confirm both passes lose the car; confirmed at once, the
    # forward pass follows it to the end and the backward pass to the start.
    n = 12
    xy, yaw = path(n, (40.0, 10.0), (0.0, 0.0))
    scenario = build([script(0, "car", xy, yaw, score=np.where(np.arange(n) == 5, 0.8, 0.25))], noise_m=0.05)
    two_hits = TrackerConfig(offboard=OffboardConfig(min_detections=2, life=LifeCycle(min_hits=2, max_age_s=3.0)))
    assert track_clip(scenario.frames, two_hits, OFFBOARD) == []
    at_once = TrackerConfig(offboard=OffboardConfig(min_detections=2, life=LifeCycle(min_hits=1, max_age_s=3.0)))
    (track,) = track_clip(scenario.frames, at_once, OFFBOARD)
    assert track.frame_indices.tolist() == list(range(n)) and track.num_detected == n
    assert mot_counts([track], scenario).num_misses == 0
    # A lone confident detection is still no track: the two-detection minimum removes it.
    lone = build([script(0, "car", xy, yaw, seen=np.arange(n) == 5)], noise_m=0.05)
    assert track_clip(lone.frames, at_once, OFFBOARD) == []


def test_bidirectional_merge_starts_the_track_at_the_first_detection() -> None:
    # The first 5 detections are weak (0.3): forward, low scores cannot start a track, so it is born at
    # frame 5 and reported online from frame 7 (3 hits). The backward pass reaches frames 0-4 through
    # the second association stage, so the offboard track starts at frame 0.
    xy, yaw = path(30, (0.0, 0.0), (8.0, 0.0))
    scenario = build([script(0, "car", xy, yaw, score=np.where(np.arange(30) < 5, 0.3, 0.8))], noise_m=0.05)
    (online,) = track_clip(scenario.frames, TrackerConfig(), ONLINE)
    (offboard,) = track_clip(scenario.frames, TrackerConfig(), OFFBOARD)
    assert online.first_frame == 7 and offboard.first_frame == 0
    assert offboard.frame_indices.tolist() == list(range(30)) and offboard.num_detected == 30
    assert offboard.score == pytest.approx((5 * 0.3 + 25 * 0.8) / 30)
    # Confident from the start: online starts after confirmation, offboard keeps the tentative frames.
    scenario = build([script(0, "car", xy, yaw)], noise_m=0.05)
    assert track_clip(scenario.frames, TrackerConfig(), ONLINE)[0].first_frame == 2
    assert track_clip(scenario.frames, TrackerConfig(), OFFBOARD)[0].first_frame == 0


def test_yaw_flips_of_the_detector_are_undone() -> None:
    xy, yaw = path(30, (0.0, 0.0), (8.0, 4.0))
    flips = np.arange(30) % 3 == 1  # every third detection points backwards
    scenario = build([script(0, "car", xy, yaw, yaw_flips=flips)], noise_m=0.05)
    for mode in TrackingMode:
        (track,) = track_clip(scenario.frames, TrackerConfig(), mode)
        np.testing.assert_allclose(track.boxes.yaws_rad, math.atan2(4.0, 8.0), atol=1e-9)
    (track,) = track_clip(scenario.frames, TrackerConfig(), OFFBOARD)
    np.testing.assert_allclose(track.boxes.velocity[5:-5], [[8.0, 4.0]] * 20, atol=0.5)


def test_detections_with_velocity_track_fast_cars_at_2_hz() -> None:
    # nuScenes keyframe rate: 0.5 s between frames; two cars at 20 m/s in opposite lanes 3.5 m apart move
    # 10 m per frame. The detector's velocity (CenterPoint style) makes even the first prediction right.
    period_us = 500_000
    frames = []
    for k in range(12):
        x_m = 20.0 * k * 0.5
        data = np.array([[x_m, 0.0, 1.0, 4.5, 1.9, 1.6, 0.0], [-x_m, 3.5, 1.0, 4.5, 1.9, 1.6, math.pi]])
        boxes = Boxes3D(data, "world", np.array([[20.0, 0.0], [-20.0, 0.0]]))
        frames.append(Detections(k * period_us, boxes, np.array([0.9, 0.9]), ("car", "car")))
    for mode in TrackingMode:
        tracks = track_clip(frames, TrackerConfig(), mode)
        assert [set(t.detection_indices.tolist()) for t in tracks] == [{0}, {1}]
    tracks = track_clip(frames, TrackerConfig(), OFFBOARD)
    np.testing.assert_allclose(tracks[0].boxes.velocity, [[20.0, 0.0]] * 12, atol=1e-6)
    np.testing.assert_allclose(tracks[1].boxes.velocity, [[-20.0, 0.0]] * 12, atol=1e-6)


def test_hungarian_and_greedy_tracks_agree_on_separated_objects() -> None:
    scenario = crossing_cars()
    for mode in TrackingMode:
        greedy = track_clip(scenario.frames, TrackerConfig(solver=SolverKind.GREEDY), mode)
        hungarian = track_clip(scenario.frames, TrackerConfig(solver=SolverKind.HUNGARIAN), mode)
        assert [t.detection_indices.tolist() for t in greedy] == [t.detection_indices.tolist() for t in hungarian]


class Category(str, Enum):  # stands in for autolabel's Category (tracking must not import it)
    CAR = "car"
    PEDESTRIAN = "pedestrian"


def test_label_is_the_score_weighted_vote_and_enum_labels_pass_through() -> None:
    # A car detected as "truck" in 4 of 20 frames (same class group): one track, labelled car.
    xy, yaw = path(20, (0.0, 0.0), (8.0, 0.0))
    scenario = build([script(0, "car", xy, yaw)], noise_m=0.05)
    frames = [
        Detections(f.timestamp_us, f.boxes, f.scores, ("truck",) if k % 5 == 0 else (Category.CAR,))
        for k, f in enumerate(scenario.frames)
    ]
    (track,) = track_clip(frames, TrackerConfig(), OFFBOARD)
    assert track.label == "car" and type(track.label) is str
    assert frames[1].labels == ("car",) and type(frames[1].labels[0]) is str


def test_short_and_weak_tracks_are_removed_offboard_only() -> None:
    xy, yaw = path(20, (0.0, 0.0), (8.0, 0.0))
    xy2, yaw2 = path(20, (0.0, 20.0), (8.0, 0.0))
    objects = [
        script(0, "car", xy, yaw, seen=frames_mask(20, 0, 3), score=0.9),  # 3 detections: kept (min 3)
        script(1, "car", xy2, yaw2, score=0.55),  # long but weak
    ]
    scenario = build(objects, noise_m=0.05)
    strict = TrackerConfig(offboard=OffboardConfig(min_detections=4, min_track_score=0.6))
    assert track_clip(scenario.frames, strict, OFFBOARD) == []
    kept = track_clip(scenario.frames, TrackerConfig(), OFFBOARD)
    assert [(t.first_frame, t.last_frame) for t in kept] == [(0, 2), (0, 19)]
    assert [(t.first_frame, t.last_frame) for t in track_clip(scenario.frames, strict, ONLINE)] == [(2, 2), (2, 19)]


def test_empty_clips_and_frames() -> None:
    assert track_clip([], TrackerConfig(), OFFBOARD) == []
    empty = [Detections.empty(k * 100_000, "world") for k in range(5)]
    for mode in TrackingMode:
        assert track_clip(empty, TrackerConfig(), mode) == []


def test_frames_of_tracks_view() -> None:
    scenario = occluded_car(3, 5, n_frames=10)
    tracks: list[Track] = track_clip(scenario.frames, TrackerConfig(), OFFBOARD)
    view = frames_of_tracks(tracks, 10)
    assert [len(v.track_ids) for v in view] == [1] * 10
    assert view[3].sources == (BoxSource.INTERPOLATED,) and view[2].sources == (BoxSource.DETECTED,)
    assert view[3].labels == ("car",) and view[3].boxes.frame == "world"
    np.testing.assert_allclose(view[4].boxes.data, tracks[0].boxes.data[[4]])


def dense_scene(seed: int) -> Scenario:
    """30 objects (2/3 cars) on straight lines at 0-12 m/s in a 100 m square, 10 % of detections
    dropped, 0.1 m noise, 5 low-score clutter detections per frame; 60 frames."""
    rng = np.random.default_rng(seed)
    n, objects = 60, []
    for i in range(30):
        start, heading, speed = rng.uniform(-50, 50, 2), rng.uniform(-math.pi, math.pi), rng.uniform(0, 12)
        xy, yaw = path(n, tuple(start), (speed * math.cos(heading), speed * math.sin(heading)), yaw=np.full(n, heading))
        label, size = ("car", CAR_SIZE) if i % 3 else ("pedestrian", PEDESTRIAN_SIZE)
        objects.append(script(i, label, xy, yaw, size=size, seen=rng.random(n) > 0.1, score=rng.uniform(0.4, 0.95, n)))
    clutter = [
        FalsePositive(k, (float(rng.uniform(-60, 60)), float(rng.uniform(-60, 60))), float(rng.uniform(0.1, 0.45)))
        for k in range(n)
        for _ in range(5)
    ]
    return build(objects, false_positives=clutter, noise_m=0.1, seed=seed)


def test_dense_scene_offboard_has_no_switches_and_misses_only_undetected_ends() -> None:
    scenario = dense_scene(0)
    tracks = track_clip(scenario.frames, TrackerConfig(), OFFBOARD)
    # Frames before an object's first or after its last detection cannot be recovered (nothing to
    # interpolate from); every other frame of every object is tracked.
    undetected_ends = sum(int(np.argmax(o.seen)) + int(np.argmax(o.seen[::-1])) for o in scenario.objects)
    assert undetected_ends == 6
    assert mot_counts(tracks, scenario) == MotCounts(
        num_switches=0, num_fragmentations=0, num_misses=6, num_false_positives=0, num_matches=30 * 60 - 6
    )
    assert sorted(tuple(truth_of_track(t, scenario)) for t in tracks) == [(i,) for i in range(30)]  # pure tracks
    for mode in TrackingMode:
        used = [
            (int(f), int(d))
            for t in track_clip(scenario.frames, TrackerConfig(), mode)
            for f, d in zip(t.frame_indices, t.detection_indices, strict=True)
            if d >= 0
        ]
        assert len(used) == len(set(used))  # a detection belongs to one track at most
    online = mot_counts(track_clip(scenario.frames, TrackerConfig(), ONLINE), scenario)
    assert online.num_switches == 0 and online.num_fragmentations > 100  # online reports no gaps
