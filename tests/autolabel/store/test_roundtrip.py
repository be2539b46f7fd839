"""Prelabels written by a pipeline run read back exactly, on SQLite and Postgres."""

from __future__ import annotations

import numpy as np
import pytest

from autolabel.categories import Category
from autolabel.store import BoxStage, ClipKey, ReviewState, RunStatus, TrackLabels
from calibration import WORLD_FRAME, Boxes3D, InputError

ATOL = 1e-9


def test_prelabels_round_trip_exactly(store, build):
    frames = build.frames()
    tracks = [build.track("car-1", seed=1), build.track("ped-2", [1, 2, 4], seed=2, category=Category.PEDESTRIAN)]
    result = store.write_prelabels(build.clip, frames, tracks, build.provenance, root="/data/sim")

    assert result.written == ("car-1", "ped-2")
    assert (result.retired, result.kept, result.skipped, dict(result.renamed)) == ((), (), (), {})
    labels = store.current_labels(build.clip)
    assert labels.clip.key == build.clip
    assert labels.clip.root == "/data/sim"
    assert labels.clip.review_state is ReviewState.PRELABELED
    assert (labels.clip.num_frames, labels.clip.num_tracks, labels.clip.num_boxes, labels.clip.num_runs) == (6, 2, 9, 1)

    for stored, given in zip(labels.frames, frames, strict=True):
        assert stored.same_identity(given)
        np.testing.assert_allclose(stored.world_SE3_ego.as_matrix(), given.world_SE3_ego.as_matrix(), atol=ATOL)

    for given in tracks:
        got = labels.track_boxes(given.track_key)
        np.testing.assert_array_equal(got.frame_indices, given.frame_indices)
        assert got.boxes.frame == WORLD_FRAME
        np.testing.assert_allclose(got.boxes.data, given.boxes.data, atol=ATOL, rtol=0)
        np.testing.assert_allclose(got.boxes.velocity, given.boxes.velocity, atol=ATOL, rtol=0)  # NaN == NaN
        np.testing.assert_allclose(got.scores, given.scores, atol=ATOL, rtol=0)
        assert got.stages == given.stages
        np.testing.assert_array_equal(got.revisions, 1)
        assert got.track.category is given.category
        assert got.track.score == pytest.approx(given.score, abs=ATOL)
        assert got.track.review_state is ReviewState.PRELABELED
        assert not got.track.human_touched

    frame_4 = labels.frame_boxes[4]
    assert frame_4.frame_index == 4 and frame_4.timestamp_us == frames[4].timestamp_us
    assert frame_4.track_keys == ("car-1", "ped-2")
    assert frame_4.categories == (Category.CAR, Category.PEDESTRIAN)
    assert len(labels.frame_boxes[0]) == 1 and len(labels.frame_boxes[3]) == 1

    history = store.box_history(build.clip, "car-1", 0)
    assert len(history) == 1
    assert history[0].provenance == build.provenance
    assert history[0].run_id == result.run_id
    assert history[0].confidence == pytest.approx(float(tracks[0].confidences[0]), abs=ATOL)
    assert history[0].author == build.provenance.author

    (run,) = store.runs(build.clip)
    assert (run.run_id, run.status, run.num_tracks, run.num_boxes) == (result.run_id, RunStatus.CURRENT, 2, 9)
    assert run.provenance == build.provenance
    assert run.started_at <= run.finished_at


def test_boxes_without_velocity_and_poseless_frames(store, build):
    frames = [type(f)(f.index, f.token, f.timestamp_us, None) for f in build.frames()]
    track = build.track("t", with_velocity=False)
    store.write_prelabels(build.clip, frames, [track], build.provenance)

    labels = store.current_labels(build.clip)
    assert all(f.world_SE3_ego is None for f in labels.frames)
    got = labels.track_boxes("t")
    assert got.boxes.velocity is None
    np.testing.assert_allclose(got.boxes.data, track.boxes.data, atol=ATOL, rtol=0)


def test_track_attributes_round_trip(store, build):
    base = build.track("cone", [0, 1, 2], category=Category.TRAFFIC_CONE)
    static = TrackLabels(
        base.track_key, base.category, base.score, base.frame_indices, base.boxes, base.scores, base.stages,
        static=True, fixed_size_lwh=(0.4, 0.4, 0.7),
    )  # fmt: skip
    store.write_prelabels(build.clip, build.frames(), [static], build.provenance)
    (info,) = store.tracks(build.clip)
    assert info.static and info.fixed_size_lwh == (0.4, 0.4, 0.7) and info.num_boxes == 3
    assert info.category is Category.TRAFFIC_CONE


def test_list_clips_counts_and_filter(store, build):
    other = ClipKey("nuscenes", "scene-0061")
    store.write_prelabels(build.clip, build.frames(), [build.track("a"), build.track("b", [0])], build.provenance)
    store.write_prelabels(other, build.frames(3), [build.track("x", [0, 2])], build.provenance)

    clips = store.list_clips()
    assert [c.key for c in clips] == [other, build.clip]  # by source, then name
    assert [(c.num_frames, c.num_tracks, c.num_boxes, c.num_runs) for c in clips] == [(3, 1, 2, 1), (6, 2, 7, 1)]
    store.set_review_state(other, ReviewState.IN_REVIEW, "rita")
    assert [c.key for c in store.list_clips(state=ReviewState.IN_REVIEW)] == [other]
    assert store.list_clips(state=ReviewState.SIGNED_OFF) == ()
    assert store.clip_info(build.clip) == clips[1]


def test_unknown_clip_and_invalid_input_are_refused(store, build):
    with pytest.raises(InputError, match="not in the label store"):
        store.current_labels(ClipKey("synthetic", "nope"))
    frames = build.frames()
    with pytest.raises(InputError, match="outside the clip's 6 frames"):
        store.write_prelabels(build.clip, frames, [build.track("a", [0, 6])], build.provenance)
    with pytest.raises(InputError, match="duplicate track keys"):
        store.write_prelabels(build.clip, frames, [build.track("a"), build.track("a")], build.provenance)
    with pytest.raises(InputError, match=r"expected 0\.\.N-1"):
        store.write_prelabels(build.clip, frames[1:], [], build.provenance)
    assert store.list_clips() == ()


def test_track_labels_validation(build):
    track = build.track("a", [0, 1])
    with pytest.raises(InputError, match="'world' frame"):
        TrackLabels("a", Category.CAR, 0.5, [0, 1], Boxes3D(track.boxes.data, "ego"), [0.5, 0.5], ["detected"] * 2)
    with pytest.raises(InputError, match="stages"):
        TrackLabels("a", Category.CAR, 0.5, [0, 1], track.boxes, [0.5, 0.5], [BoxStage.HUMAN] * 2)
    with pytest.raises(InputError, match="strictly increasing"):
        TrackLabels("a", Category.CAR, 0.5, [1, 0], track.boxes, [0.5, 0.5], ["detected"] * 2)
    with pytest.raises(InputError, match="scores must have shape"):
        TrackLabels("a", Category.CAR, 0.5, [0, 1], track.boxes, [0.5], ["detected"] * 2)
    with pytest.raises(InputError, match="track key"):
        TrackLabels("", Category.CAR, 0.5, [0, 1], track.boxes, [0.5, 0.5], ["detected"] * 2)
    with pytest.raises(InputError, match="unknown category 'spaceship'"):
        TrackLabels("a", "spaceship", 0.5, [0, 1], track.boxes, [0.5, 0.5], ["detected"] * 2)


def test_clip_key_takes_the_source_enum():
    from autolabel.datasets.model import ClipSource

    key = ClipKey(ClipSource.NUSCENES, "scene-0061")
    assert key == ClipKey("nuscenes", "scene-0061") and str(key) == "nuscenes/scene-0061"
    with pytest.raises(InputError, match="clip name"):
        ClipKey("nuscenes", "")
