"""Tracks' review flags: stored by a pipeline run, read back, and ordering the review queue."""

from __future__ import annotations

from dataclasses import replace

import pytest

from autolabel.store import ReviewState
from calibration import Box3D, InputError


def _flags(tracks) -> dict[str, dict[str, int]]:
    return {t.track_key: dict(t.review_flags) for t in tracks}


def test_flags_round_trip_and_follow_the_latest_run(store, build):
    a = replace(build.track("a"), review_flags={"low_support": 2, "free_space_conflict": 1, "colour_inconsistent": 0})
    b = build.track("b", [0, 1], origin_xy=(0.0, 20.0))
    store.write_prelabels(build.clip, build.frames(), [a, b], build.provenance)
    expected = {"a": {"free_space_conflict": 1, "low_support": 2}, "b": {}}  # zero counts are not kept
    assert _flags(store.tracks(build.clip)) == expected
    assert _flags(store.current_labels(build.clip).tracks) == expected

    # A re-run sets the flags of the tracks it writes, a human edit leaves them.
    b2 = replace(b, review_flags={"not_visible_in_cameras": 2})
    store.write_prelabels(build.clip, build.frames(), [build.track("a"), b2], build.provenance_2)
    store.edit_box(build.clip, "b", 0, Box3D((1.0, 20.0, 0.8), (4.0, 1.8, 1.5), 0.1, "world"), "alice")
    assert _flags(store.tracks(build.clip)) == {"a": {}, "b": {"not_visible_in_cameras": 2}}


@pytest.mark.parametrize("flags", [{"low_support": -1}, {"low_support": 1.5}, {"": 1}, {"low_support": True}])
def test_bad_flag_counts_are_refused(build, flags):
    with pytest.raises(InputError, match="review flag"):
        replace(build.track("a"), review_flags=flags)


def test_review_queue_puts_the_most_flagged_first_then_low_scores(store, build):
    def track(key, row, score, flags):
        return replace(build.track(key, origin_xy=(0.0, 10.0 * row)), score=score, review_flags=flags)

    first = [
        track("calm-high", 0, 0.9, {}),
        track("calm-low", 1, 0.2, {}),
        track("one-flag", 2, 0.1, {"low_support": 1}),
        track("three-flags", 3, 0.95, {"low_support": 1, "free_space_conflict": 2}),
        track("accepted", 4, 0.1, {"low_support": 5}),
        track("retired", 5, 0.1, {"low_support": 6}),
    ]
    store.write_prelabels(build.clip, build.frames(), first, build.provenance)
    store.set_review_state(build.clip, ReviewState.IN_REVIEW, "rita", track_key="accepted")
    store.set_review_state(build.clip, ReviewState.ACCEPTED, "rita", track_key="accepted")
    # The second run lacks "retired" (its boxes are deleted); "accepted" is human-touched and kept.
    store.write_prelabels(build.clip, build.frames(), first[:4], build.provenance_2)

    queue = store.review_queue(build.clip)
    assert [t.track_key for t in queue] == ["three-flags", "one-flag", "calm-low", "calm-high"]
    assert dict(queue[0].review_flags) == {"free_space_conflict": 2, "low_support": 1}
    assert all(t.review_state is ReviewState.PRELABELED and t.num_boxes == build.num_frames for t in queue)
