"""One pass of the tracker: life cycle, class gating, two-stage association, step by step."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from calibration import Boxes3D
from tracking import AffinityKind, Detections, LifeCycle, SolverKind, TrackerConfig, TrackState
from tracking.tables import ClassTable, ClipArrays
from tracking.tracker import (
    CONFIRMED,
    DEAD,
    HITS,
    LOST,
    MISSES,
    STATE,
    STREAK,
    TENTATIVE,
    TrackBank,
    advance_life_cycle,
    step,
)

T, C, LO, D = TrackState.TENTATIVE, TrackState.CONFIRMED, TrackState.LOST, TrackState.DEAD
PERIOD_US = 100_000


def frame(k: int, rows: list[list[float]], scores: list[float], labels: list[str]) -> Detections:
    return Detections(k * PERIOD_US, Boxes3D(np.array(rows, dtype=np.float64).reshape(-1, 7), "world"), scores, labels)


def car_at(x: float, y: float = 0.0) -> list[float]:
    return [x, y, 1.0, 4.5, 1.9, 1.6, 0.0]


def run(frames: list[Detections], config: TrackerConfig, life: LifeCycle) -> list[TrackBank]:
    labels = [label for f in frames for label in f.labels] or ["car"]
    table = ClassTable.build(labels, config)
    bank, banks = TrackBank.empty(), []
    for k, f in enumerate(ClipArrays.build(frames, table, "world").frame_arrays(config)):
        bank, _ = step(bank, f, table, config, life, k)
        banks.append(bank)
    return banks


def test_life_cycle_tentative_confirmed_lost_dead() -> None:
    # Seen in frames 0-4 at 10 m/s, then gone. min_hits 3: confirmed at frame 2; max age 0.3 s: lost at
    # frames 5, 6, 7 (last match 0.1, 0.2, 0.3 s ago), dead at frame 8 (0.4 s).
    frames = [frame(k, [car_at(k * 1.0)], [0.9], ["car"]) for k in range(5)]
    frames += [frame(k, [], [], []) for k in range(5, 10)]
    banks = run(frames, TrackerConfig(), LifeCycle(min_hits=3, max_age_s=0.3))
    assert [b.track_states for b in banks] == [(T,), (T,), (C,), (C,), (C,), (LO,), (LO,), (LO,), (), ()]
    assert banks[4].counters[0, HITS] == 5


def test_tentative_track_dies_on_its_first_miss_and_lost_track_recovers() -> None:
    frames = [frame(0, [car_at(0.0)], [0.9], ["car"]), frame(1, [], [], [])]
    assert [b.track_states for b in run(frames, TrackerConfig(), LifeCycle())] == [(T,), ()]
    seen = [0, 1, 2, 4]  # missed at frame 3, matched again at 4
    frames = [frame(k, [car_at(k * 1.0)], [0.9], ["car"]) if k in seen else frame(k, [], [], []) for k in range(5)]
    assert [b.track_states for b in run(frames, TrackerConfig(), LifeCycle())] == [(T,), (T,), (C,), (LO,), (C,)]


def test_advance_life_cycle_by_hand() -> None:
    life = LifeCycle(min_hits=2, max_tentative_misses=1, max_age_s=None, max_age_frames=2)
    # columns: id class state hits streak misses last_hit_us
    counters = np.array(
        [
            [0, 0, TENTATIVE, 1, 1, 0, 0],  # matched: streak 2 -> confirmed
            [1, 0, TENTATIVE, 1, 1, 0, 0],  # missed once: stays tentative (1 miss allowed)
            [2, 0, TENTATIVE, 1, 0, 1, 0],  # missed twice: dead
            [3, 0, CONFIRMED, 5, 5, 0, 0],  # missed: lost
            [4, 0, LOST, 5, 0, 2, 0],  # missed a third frame: dead (max 2 frames)
            [5, 0, LOST, 5, 0, 2, 0],  # matched: confirmed again
        ]
    )
    out = advance_life_cycle(counters, np.array([0, 5]), 700, life)
    assert out[:, STATE].tolist() == [CONFIRMED, TENTATIVE, DEAD, LOST, DEAD, CONFIRMED]
    assert out[:, STREAK].tolist() == [2, 0, 0, 0, 0, 1]
    assert out[:, MISSES].tolist() == [0, 1, 2, 1, 3, 0]
    assert out[:, HITS].tolist() == [2, 1, 1, 5, 5, 6]
    assert out[[0, 5], -1].tolist() == [700, 700]
    assert counters[0, STATE] == TENTATIVE  # input untouched


def test_class_gating_same_class_and_groups() -> None:
    # A confirmed car track; then only a pedestrian (never compatible) or a truck (same group) at its place.
    base = [frame(k, [car_at(k * 1.0)], [0.9], ["car"]) for k in range(3)]
    pedestrian = frame(3, [car_at(3.0)], [0.9], ["pedestrian"])
    banks = run([*base, pedestrian], TrackerConfig(), LifeCycle())
    assert banks[-1].track_states == (LO, T)  # the car missed, the pedestrian starts its own track
    truck = frame(3, [car_at(3.0)], [0.9], ["truck"])
    assert run([*base, truck], TrackerConfig(), LifeCycle())[-1].track_states == (C,)
    no_groups = TrackerConfig(class_groups=())
    assert run([*base, truck], no_groups, LifeCycle())[-1].track_states == (LO, T)


def test_two_stage_association_uses_low_scores_only_for_confirmed_tracks() -> None:
    base = [frame(k, [car_at(k * 1.0)], [0.9], ["car"]) for k in range(3)]
    low = frame(3, [car_at(3.0)], [0.3], ["car"])
    assert run([*base, low], TrackerConfig(), LifeCycle())[-1].track_states == (C,)  # stage 2 match
    single = TrackerConfig(low_score_threshold=0.5)  # detections below 0.5 ignored
    assert run([*base, low], single, LifeCycle())[-1].track_states == (LO,)
    # A tentative track is not extended by a low-score detection, and low scores never start tracks.
    early = [frame(0, [car_at(0.0)], [0.9], ["car"]), frame(1, [car_at(1.0)], [0.3], ["car"])]
    assert run(early, TrackerConfig(), LifeCycle())[-1].track_states == ()
    assert run([frame(0, [car_at(0.0)], [0.3], ["car"])], TrackerConfig(), LifeCycle())[-1].track_states == ()


@pytest.mark.parametrize("affinity", list(AffinityKind))
def test_each_affinity_follows_a_moving_car(affinity: AffinityKind) -> None:
    frames = [frame(k, [car_at(k * 1.5), car_at(k * 1.5, 8.0)], [0.9, 0.9], ["car", "car"]) for k in range(6)]
    last = run(frames, TrackerConfig(affinity=affinity), LifeCycle())[-1]
    assert last.track_states == (C, C)
    np.testing.assert_allclose(last.boxes()[:, :2], [[7.5, 0.0], [7.5, 8.0]], atol=0.05)
    assert last.ids.tolist() == [0, 1]


def test_greedy_and_hungarian_differ_in_a_crafted_frame() -> None:
    # Two standing cars at x = 0 (A) and x = 4.5 (B), then one frame with detections at x = 1.0 and -1.2.
    # Centre distances (gate 4 m): 1.0, A-(-1.2): 1.2, B-1.0: 3.5, B-(-1.2): 5.7 (out).
    # Greedy takes first and B is lost, -1.2 starts a new track; Hungarian matches A-(-1.2), B-1.0.
    frames = [frame(k, [car_at(0.0), car_at(4.5)], [0.9, 0.9], ["car", "car"]) for k in range(4)]
    frames.append(frame(4, [car_at(1.0), car_at(-1.2)], [0.9, 0.9], ["car", "car"]))
    base = TrackerConfig(affinity=AffinityKind.CENTER_DISTANCE)
    greedy = run(frames, dataclasses.replace(base, solver=SolverKind.GREEDY), LifeCycle())[-1]
    assert greedy.track_states == (C, LO, T) and greedy.ids.tolist() == [0, 1, 2]
    hungarian = run(frames, base, LifeCycle())[-1]
    assert hungarian.track_states == (C, C) and hungarian.ids.tolist() == [0, 1]
    assert hungarian.boxes()[0, 0] < 0.0 and hungarian.boxes()[1, 0] < 4.5  # A pulled to -1.2, B to 1.0
