"""Review states: allowed and refused transitions, sign-off guard, frozen signed-off clips, audit."""

from __future__ import annotations

import pytest

from autolabel.categories import Category
from autolabel.store import AuditAction, ClipKey, ReviewState, ReviewTarget, allowed_transitions
from calibration import Box3D, InputError

S = ReviewState
BOX = Box3D((1.0, 2.0, 0.8), (4.0, 1.8, 1.5), 0.1, "world")


@pytest.fixture
def clip(store, build):
    store.write_prelabels(build.clip, build.frames(), [build.track("a"), build.track("b", [0, 1])], build.provenance)
    return build.clip


def _review_events(store, clip):
    return [
        (e.details["target"], e.track_key, e.details["from"], e.details["to"], e.actor)
        for e in store.audit_log(clip)
        if e.action is AuditAction.REVIEW_STATE_CHANGED
    ]


def _accept_track(store, clip, key, author="rita"):
    store.set_review_state(clip, S.IN_REVIEW, author, track_key=key)
    store.set_review_state(clip, S.ACCEPTED, author, track_key=key)


def test_transition_tables():
    assert allowed_transitions(ReviewTarget.CLIP, S.PRELABELED) == {S.IN_REVIEW}
    assert allowed_transitions(ReviewTarget.CLIP, S.IN_REVIEW) == {S.ACCEPTED, S.REJECTED}
    assert allowed_transitions(ReviewTarget.CLIP, S.REJECTED) == {S.IN_REVIEW}
    assert allowed_transitions(ReviewTarget.CLIP, S.ACCEPTED) == {S.SIGNED_OFF, S.IN_REVIEW}
    assert allowed_transitions(ReviewTarget.CLIP, S.SIGNED_OFF) == {S.IN_REVIEW}
    assert S.SIGNED_OFF not in set().union(*(allowed_transitions(ReviewTarget.TRACK, s) for s in S))


def test_full_review_path_is_audited(store, clip):
    store.set_review_state(clip, S.IN_REVIEW, "rita")
    store.set_review_state(clip, S.REJECTED, "rita", note="boxes too small")
    store.set_review_state(clip, S.IN_REVIEW, "rita")
    store.set_review_state(clip, S.ACCEPTED, "rita")
    with pytest.raises(InputError, match=r"cannot sign off: 2 live tracks are not accepted: a \(prelabeled\), b"):
        store.set_review_state(clip, S.SIGNED_OFF, "sam")
    _accept_track(store, clip, "a")
    store.set_review_state(clip, S.IN_REVIEW, "rita", track_key="b")
    store.set_review_state(clip, S.REJECTED, "rita", track_key="b")
    with pytest.raises(InputError, match=r"1 live tracks are not accepted: b \(rejected\)"):
        store.set_review_state(clip, S.SIGNED_OFF, "sam")
    store.set_review_state(clip, S.IN_REVIEW, "rita", track_key="b")
    store.set_review_state(clip, S.ACCEPTED, "rita", track_key="b")
    assert store.set_review_state(clip, S.SIGNED_OFF, "sam") is S.SIGNED_OFF

    assert store.clip_info(clip).review_state is S.SIGNED_OFF
    assert {t.track_key: t.review_state for t in store.tracks(clip)} == {"a": S.ACCEPTED, "b": S.ACCEPTED}
    assert _review_events(store, clip) == [
        ("clip", None, "prelabeled", "in_review", "rita"),
        ("clip", None, "in_review", "rejected", "rita"),
        ("clip", None, "rejected", "in_review", "rita"),
        ("clip", None, "in_review", "accepted", "rita"),
        ("track", "a", "prelabeled", "in_review", "rita"),
        ("track", "a", "in_review", "accepted", "rita"),
        ("track", "b", "prelabeled", "in_review", "rita"),
        ("track", "b", "in_review", "rejected", "rita"),
        ("track", "b", "rejected", "in_review", "rita"),
        ("track", "b", "in_review", "accepted", "rita"),
        ("clip", None, "accepted", "signed_off", "sam"),
    ]
    rejected = next(e for e in store.audit_log(clip) if e.details.get("to") == "rejected")
    assert rejected.details["note"] == "boxes too small"


@pytest.mark.parametrize(
    ("path", "refused"),
    [
        ((), S.ACCEPTED),
        ((), S.SIGNED_OFF),
        ((S.IN_REVIEW,), S.SIGNED_OFF),
        ((S.IN_REVIEW,), S.PRELABELED),
        ((S.IN_REVIEW, S.REJECTED), S.ACCEPTED),
    ],
)
def test_refused_clip_transitions_are_clear_and_not_audited(store, clip, path, refused):
    for state in path:
        store.set_review_state(clip, state, "rita")
    events = len(store.audit_log(clip))
    current = path[-1] if path else S.PRELABELED
    with pytest.raises(
        InputError, match=f"clip {clip}: review state {current.value} -> {refused.value} is not allowed"
    ):
        store.set_review_state(clip, refused, "rita")
    assert store.clip_info(clip).review_state is current
    assert len(store.audit_log(clip)) == events


def test_refused_track_transitions(store, clip):
    with pytest.raises(InputError, match="track 'a': review state prelabeled -> accepted is not allowed"):
        store.set_review_state(clip, S.ACCEPTED, "rita", track_key="a")
    with pytest.raises(InputError, match="signed_off is not allowed"):
        store.set_review_state(clip, S.SIGNED_OFF, "rita", track_key="a")
    with pytest.raises(InputError, match="no such track"):
        store.set_review_state(clip, S.IN_REVIEW, "rita", track_key="nope")
    with pytest.raises(InputError, match="unknown review state"):
        store.set_review_state(clip, "done", "rita")


def _sign_off(store, clip):
    store.set_review_state(clip, S.IN_REVIEW, "rita")
    for key in ("a", "b"):
        _accept_track(store, clip, key)
    store.set_review_state(clip, S.ACCEPTED, "rita")
    store.set_review_state(clip, S.SIGNED_OFF, "sam")


def test_signed_off_clip_is_frozen_until_reopened(store, clip, build):
    _sign_off(store, clip)
    before = store.current_labels(clip)
    refusals = [
        lambda: store.edit_box(clip, "a", 0, BOX, "alice"),
        lambda: store.delete_box(clip, "a", 0, "alice"),
        lambda: store.add_track(clip, Category.CAR, "alice"),
        lambda: store.set_track_category(clip, "a", Category.BUS, "alice"),
        lambda: store.write_prelabels(clip, build.frames(), [build.track("a")], build.provenance_2),
    ]
    for refuse in refusals:
        with pytest.raises(InputError, match="signed_off; its labels are frozen"):
            refuse()
    with pytest.raises(InputError, match="the clip is signed off"):
        store.set_review_state(clip, S.IN_REVIEW, "rita", track_key="a")
    after = store.current_labels(clip)
    assert [fb.revisions.tolist() for fb in after.frame_boxes] == [fb.revisions.tolist() for fb in before.frame_boxes]
    assert len(store.runs(clip)) == 1

    store.set_review_state(clip, S.IN_REVIEW, "sam", note="reopened: wrong class")  # explicit, audited reopen
    with pytest.raises(InputError, match="the track is accepted"):
        store.edit_box(clip, "a", 0, BOX, "alice")
    store.set_review_state(clip, S.IN_REVIEW, "alice", track_key="a")
    assert store.edit_box(clip, "a", 0, BOX, "alice").revision == 2
    assert _review_events(store, clip)[-2:] == [
        ("clip", None, "signed_off", "in_review", "sam"),
        ("track", "a", "accepted", "in_review", "alice"),
    ]


def test_accepted_clip_refuses_edits_and_reruns(store, clip, build):
    store.set_review_state(clip, S.IN_REVIEW, "rita")
    store.set_review_state(clip, S.ACCEPTED, "rita")
    with pytest.raises(InputError, match="clip is accepted"):
        store.edit_box(clip, "b", 0, BOX, "alice")
    with pytest.raises(InputError, match="clip is accepted"):
        store.write_prelabels(clip, build.frames(), [build.track("a")], build.provenance_2)


def test_signed_off_only_reads(store, clip, build):
    other = ClipKey("synthetic", "other-clip")
    store.write_prelabels(other, build.frames(2), [build.track("z", [0, 1])], build.provenance)
    _sign_off(store, clip)

    assert [c.key for c in store.list_clips(state=S.SIGNED_OFF)] == [clip]
    labels = store.current_labels(clip, signed_off_only=True)
    assert labels.clip.review_state is S.SIGNED_OFF
    assert [t.track_key for t in labels.tracks] == ["a", "b"]
    with pytest.raises(InputError, match="is prelabeled, not signed_off"):
        store.current_labels(other, signed_off_only=True)
    assert len(store.current_labels(other).tracks) == 1  # the default read returns the latest revisions

    store.set_review_state(clip, S.IN_REVIEW, "sam")  # reopened: no longer exportable as signed off
    with pytest.raises(InputError, match="is in_review, not signed_off"):
        store.current_labels(clip, signed_off_only=True)
