"""The share of pre-label boxes reviewers accepted untouched, from the store's revisions and review states."""

from __future__ import annotations

import math

from autolabel.categories import Category
from autolabel.store import ReviewState
from calibration import Box3D

S = ReviewState
BOX = Box3D((1.0, 2.0, 0.8), (4.0, 1.8, 1.5), 0.1, "world")


def test_outcomes_of_every_prelabel_after_a_rerun_and_a_review(store, build) -> None:
    clip = build.clip
    first = [build.track("a"), build.track("b", [0, 1]), build.track("c", [0, 1, 2], category=Category.PEDESTRIAN)]
    store.write_prelabels(clip, build.frames(), [*first, build.track("d", [0, 1, 2, 3])], build.provenance)
    fresh = store.acceptance(clip)
    assert fresh.counts["pending"] == 6 + 2 + 3 + 4 and fresh.decided == 0 and math.isnan(fresh.rate)

    # A second run replaces the untouched tracks' pre-labels; d loses frames 2 and 3 (pipeline deletions).
    store.write_prelabels(clip, build.frames(), [*first, build.track("d", [0, 1])], build.provenance_2)
    # Review: a has one box moved and one deleted, then is accepted; b is rejected untouched; c has one box
    # moved and is not decided yet; d is untouched and pending; a person draws a missed object in 2 frames.
    store.edit_box(clip, "a", 2, BOX, "rita")
    store.delete_box(clip, "a", 3, "rita")
    for state in (S.IN_REVIEW, S.ACCEPTED):
        store.set_review_state(clip, state, "rita", track_key="a")
    for state in (S.IN_REVIEW, S.REJECTED):
        store.set_review_state(clip, state, "rita", track_key="b")
    store.edit_box(clip, "c", 1, BOX, "rita")
    store.add_track(clip, Category.CAR, "rita", track_key="h", boxes={0: BOX, 1: BOX})

    acceptance = store.acceptance(clip)
    assert acceptance.counts == {"accepted_untouched": 4, "edited": 2, "deleted": 1, "rejected": 2, "pending": 4}
    assert acceptance.added == 2
    assert acceptance.prelabels == 13 and acceptance.decided == 9
    assert acceptance.rate == 4 / 9
    assert acceptance.per_category["pedestrian"] == {
        "accepted_untouched": 0,
        "edited": 1,
        "deleted": 0,
        "rejected": 0,
        "pending": 2,
        "added": 0,
    }
    assert acceptance.per_category["car"]["added"] == 2
    assert acceptance.as_dict()["rate"] == 4 / 9
