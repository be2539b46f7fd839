"""Pipeline re-runs replace untouched prelabels and keep every human-touched track as it is."""

from __future__ import annotations

import numpy as np
import pytest

from autolabel.categories import Category
from autolabel.store import BoxStage, ReviewState, RunStatus, find_duplicates
from calibration import WORLD_FRAME, Box3D, Boxes3D, InputError

EDITED = Box3D((2.7, 0.05, 0.8), (4.4, 2.0, 1.6), 0.02, "world")


def test_rerun_keeps_human_tracks_and_replaces_untouched_prelabels(store, build):
    clip = build.clip
    frames = build.frames()
    first = store.write_prelabels(
        clip,
        frames,
        [
            build.track("a", origin_xy=(0, 0), seed=1),
            build.track("b", origin_xy=(0, 10), seed=2),
            build.track("c", origin_xy=(0, 20), seed=3),
            build.track("e", origin_xy=(0, 30), seed=4),
        ],
        build.provenance,
    )
    store.edit_box(clip, "a", 2, EDITED, "alice")  # a: human-edited
    store.set_review_state(clip, ReviewState.IN_REVIEW, "rita", track_key="b")  # b: reviewed, no edit
    before = store.current_labels(clip)

    second = store.write_prelabels(
        clip,
        frames,
        [
            build.track("a", origin_xy=(0.2, 0.1), seed=11),  # the same car as the kept track a: a duplicate
            build.track("x", origin_xy=(0.1, 10.1), seed=12),  # the pipeline's new id for the kept car b
            build.track("c", [0, 1, 2], origin_xy=(0.5, 20), seed=13, category=Category.TRUCK),  # untouched c
            build.track("d", origin_xy=(0, 40), seed=14),  # a new object
        ],  # e is gone
        build.provenance_2,
    )
    assert second.written == ("c", "d")
    assert second.retired == ("e",)
    assert second.kept == ("a", "b")
    assert second.skipped == ("a", "x")
    assert dict(second.renamed) == {}

    after = store.current_labels(clip)
    assert [t.track_key for t in after.tracks] == ["a", "b", "c", "d"]
    for key in ("a", "b"):  # kept exactly: same boxes, same revisions
        np.testing.assert_array_equal(after.track_boxes(key).boxes.data, before.track_boxes(key).boxes.data)
        np.testing.assert_array_equal(after.track_boxes(key).revisions, before.track_boxes(key).revisions)
    assert after.track_boxes("a").stages[2] is BoxStage.HUMAN

    c = after.track_boxes("c")
    new_c = build.track("c", [0, 1, 2], origin_xy=(0.5, 20), seed=13)
    np.testing.assert_array_equal(c.frame_indices, [0, 1, 2])
    np.testing.assert_allclose(c.boxes.data, new_c.boxes.data, atol=1e-9, rtol=0)
    np.testing.assert_array_equal(c.revisions, 2)
    assert after.track("c").category is Category.TRUCK
    c_history = store.box_history(clip, "c", 4)
    assert [(h.revision, h.deleted, h.run_id) for h in c_history] == [
        (1, False, first.run_id),
        (2, True, second.run_id),
    ]
    assert c_history[1].provenance == build.provenance_2

    e_history = store.box_history(clip, "e")
    assert len(e_history) == 12 and all(h.deleted for h in e_history if h.revision == 2)
    assert {t.track_key: t.num_boxes for t in store.tracks(clip)}["e"] == 0

    assert [(r.run_id, r.status) for r in store.runs(clip)] == [
        (first.run_id, RunStatus.SUPERSEDED),
        (second.run_id, RunStatus.CURRENT),
    ]
    event = store.audit_log(clip)[-1]
    assert event.run_id == second.run_id
    assert event.details["skipped"] == ["a", "x"] and event.details["retired"] == ["e"]


def test_colliding_key_of_another_object_is_renamed(store, build):
    clip = build.clip
    store.write_prelabels(clip, build.frames(), [build.track("7", origin_xy=(0, 0))], build.provenance)
    store.delete_box(clip, "7", 5, "alice")
    result = store.write_prelabels(clip, build.frames(), [build.track("7", origin_xy=(50, 50))], build.provenance_2)

    renamed = f"7.r{result.run_id}"
    assert dict(result.renamed) == {"7": renamed}
    assert result.written == (renamed,) and result.kept == ("7",)
    labels = store.current_labels(clip)
    assert [t.track_key for t in labels.tracks] == ["7", renamed]
    assert labels.track("7").num_boxes == 5


def test_rerun_with_identical_input_only_adds_revisions(store, build):
    tracks = [build.track("a"), build.track("b", [2, 3])]
    store.write_prelabels(build.clip, build.frames(), tracks, build.provenance)
    first = store.current_labels(build.clip)
    store.write_prelabels(build.clip, build.frames(), tracks, build.provenance)
    second = store.current_labels(build.clip)
    for key in ("a", "b"):
        np.testing.assert_array_equal(second.track_boxes(key).boxes.data, first.track_boxes(key).boxes.data)
        np.testing.assert_array_equal(second.track_boxes(key).revisions, 2)


def test_rerun_frames_must_match(store, build):
    store.write_prelabels(build.clip, build.frames(), [build.track("a")], build.provenance)
    with pytest.raises(InputError, match="frame 0 is \\(token 'other0'"):
        store.write_prelabels(build.clip, build.frames(token_prefix="other"), [], build.provenance_2)
    with pytest.raises(InputError, match="5 frames given but the store has 6"):
        store.write_prelabels(build.clip, build.frames(5), [], build.provenance_2)

    moved = [type(f)(f.index, f.token, f.timestamp_us, None) for f in build.frames()]  # re-estimated (here: no) poses
    store.write_prelabels(build.clip, moved, [build.track("a")], build.provenance_2)
    assert all(f.world_SE3_ego is None for f in store.frames(build.clip))


def test_rerun_allowed_while_in_review(store, build):
    store.write_prelabels(build.clip, build.frames(), [build.track("a")], build.provenance)
    store.set_review_state(build.clip, ReviewState.IN_REVIEW, "rita")
    result = store.write_prelabels(build.clip, build.frames(), [build.track("b")], build.provenance_2)
    assert result.written == ("b",) and result.retired == ("a",)
    assert store.clip_info(build.clip).review_state is ReviewState.IN_REVIEW


def test_find_duplicates_needs_overlap_in_half_the_shared_frames(build):
    track = build.track("n", [0, 1, 2, 3], origin_xy=(0, 0))
    far = track.boxes.data.copy()
    far[:, 1] += 20.0
    kept = {
        0: (track.boxes[[0]], ["k"]),
        1: (track.boxes[[1]], ["k"]),
        2: (Boxes3D(far[[2]], WORLD_FRAME), ["k"]),
        3: (Boxes3D(far[[3]], WORLD_FRAME), ["k"]),
    }
    assert find_duplicates([track], kept) == {"n": "k"}  # 2 of 4 shared frames overlap
    kept[1] = (Boxes3D(far[[1]], WORLD_FRAME), ["k"])
    assert find_duplicates([track], kept) == {}  # 1 of 4
    assert find_duplicates([track], {}) == {}
    assert find_duplicates([track], {5: (track.boxes[[0]], ["k"])}) == {}  # no shared frame
