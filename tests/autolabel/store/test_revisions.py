"""Human edits are revisions: nothing is overwritten, history keeps every version with author and time."""

from __future__ import annotations

import numpy as np
import pytest

from autolabel.categories import Category
from autolabel.store import AuditAction, BoxStage
from calibration import Box3D, InputError

EDITED = Box3D((3.25, -1.5, 0.9), (4.5, 2.0, 1.7), 0.25, "world", (1.5, -0.25))


@pytest.fixture
def clip(store, build):
    store.write_prelabels(
        build.clip, build.frames(), [build.track("a", seed=1), build.track("b", seed=2)], build.provenance
    )
    return build.clip


def test_edit_is_a_new_revision_and_current_shows_it(store, clip):
    before = store.current_labels(clip).track_boxes("a")
    revision = store.edit_box(clip, "a", 2, EDITED, "alice")

    assert (revision.revision, revision.stage, revision.author, revision.deleted) == (2, BoxStage.HUMAN, "alice", False)
    assert revision.run_id is None and revision.provenance is None
    labels = store.current_labels(clip)
    after = labels.track_boxes("a")
    np.testing.assert_allclose(after.boxes.data[2], [3.25, -1.5, 0.9, 4.5, 2.0, 1.7, 0.25], atol=1e-12)
    np.testing.assert_allclose(after.boxes.velocity[2], [1.5, -0.25], atol=1e-12)
    assert after.stages[2] is BoxStage.HUMAN and after.revisions[2] == 2
    np.testing.assert_array_equal(np.delete(after.boxes.data, 2, axis=0), np.delete(before.boxes.data, 2, axis=0))
    assert labels.track("a").human_touched and not labels.track("b").human_touched

    history = store.box_history(clip, "a", 2)
    assert [h.revision for h in history] == [1, 2]
    assert history[0].stage is not BoxStage.HUMAN and history[0].provenance is not None
    np.testing.assert_allclose(history[0].box.as_boxes().data, before.boxes[[2]].data, atol=1e-12)
    assert history[1].box == revision.box
    assert history[0].created_at <= history[1].created_at

    entry = store.audit_log(clip)[-1]
    assert (entry.action, entry.actor, entry.track_key, entry.frame_index, entry.revision) == (
        AuditAction.BOX_EDITED, "alice", "a", 2, 2,
    )  # fmt: skip


def test_repeated_edits_and_edit_of_an_empty_frame(store, build):
    store.write_prelabels(build.clip, build.frames(), [build.track("a", [0, 1])], build.provenance)
    store.edit_box(build.clip, "a", 1, EDITED, "alice")
    third = store.edit_box(build.clip, "a", 1, Box3D((0, 0, 0), (1, 1, 1), 0.0, "world"), "bob")
    assert third.revision == 3
    new_frame = store.edit_box(build.clip, "a", 4, EDITED, "bob")
    assert new_frame.revision == 1
    got = store.current_labels(build.clip).track_boxes("a")
    np.testing.assert_array_equal(got.frame_indices, [0, 1, 4])
    assert np.isnan(got.boxes.velocity[1]).all()  # bob's box has no velocity
    assert [h.author for h in store.box_history(build.clip, "a")] == ["pipeline", "pipeline", "alice", "bob", "bob"]


def test_delete_is_a_revision(store, clip):
    deleted = store.delete_box(clip, "a", 3, "alice")
    assert (deleted.revision, deleted.deleted, deleted.stage) == (2, True, BoxStage.HUMAN)

    labels = store.current_labels(clip)
    assert 3 not in labels.track_boxes("a").frame_indices
    assert labels.frame_boxes[3].track_keys == ("b",)
    history = store.box_history(clip, "a", 3)
    assert [(h.revision, h.deleted) for h in history] == [(1, False), (2, True)]
    assert history[1].box == history[0].box  # the deletion keeps the deleted geometry
    with pytest.raises(InputError, match="no current box to delete"):
        store.delete_box(clip, "a", 3, "alice")

    revived = store.edit_box(clip, "a", 3, EDITED, "bob")
    assert revived.revision == 3
    assert 3 in store.current_labels(clip).track_boxes("a").frame_indices
    assert [e.action for e in store.audit_log(clip)][-2:] == [AuditAction.BOX_DELETED, AuditAction.BOX_EDITED]


def test_deleting_every_box_removes_the_track_from_current_labels(store, build):
    store.write_prelabels(build.clip, build.frames(), [build.track("a", [0, 1]), build.track("b")], build.provenance)
    for frame_index in (0, 1):
        store.delete_box(build.clip, "a", frame_index, "alice")
    labels = store.current_labels(build.clip)
    assert [t.track_key for t in labels.tracks] == ["b"]
    assert labels.clip.num_tracks == 1
    assert {t.track_key: t.num_boxes for t in store.tracks(build.clip)} == {"a": 0, "b": 6}


def test_add_track_and_set_category(store, clip):
    info = store.add_track(clip, Category.PEDESTRIAN, "alice", boxes={1: EDITED, 2: EDITED})
    assert (info.track_key, info.num_boxes, info.human_touched) == ("manual-1", 2, True)
    second = store.add_track(clip, Category.BARRIER, "alice", track_key="wall", static=True)
    assert second.num_boxes == 0 and second.static
    with pytest.raises(InputError, match="already exists"):
        store.add_track(clip, Category.CAR, "alice", track_key="a")

    labels = store.current_labels(clip)
    assert labels.frame_boxes[1].track_keys == ("a", "b", "manual-1")
    assert labels.track("manual-1").category is Category.PEDESTRIAN
    assert labels.track_boxes("manual-1").stages == (BoxStage.HUMAN, BoxStage.HUMAN)

    updated = store.set_track_category(clip, "a", Category.TRUCK, "bob")
    assert updated.category is Category.TRUCK and updated.human_touched and updated.num_boxes == 6
    assert store.current_labels(clip).frame_boxes[0].categories[0] is Category.TRUCK
    entry = store.audit_log(clip)[-1]
    assert entry.action is AuditAction.TRACK_CATEGORY_SET and dict(entry.details) == {"from": "car", "to": "truck"}


def test_bad_edits_are_refused(store, clip):
    with pytest.raises(InputError, match="'world' frame"):
        store.edit_box(clip, "a", 0, Box3D((0, 0, 0), (1, 1, 1), 0.0, "ego"), "alice")
    with pytest.raises(InputError, match="no such track"):
        store.edit_box(clip, "zzz", 0, EDITED, "alice")
    with pytest.raises(InputError, match="outside the clip's 6 frames"):
        store.edit_box(clip, "a", 6, EDITED, "alice")
    with pytest.raises(InputError, match="author"):
        store.edit_box(clip, "a", 0, EDITED, " ")
    with pytest.raises(InputError, match="unknown category"):
        store.set_track_category(clip, "a", "dragon", "alice")
    assert all(h.revision == 1 for h in store.box_history(clip, "a"))


def test_concurrent_edits_are_serialized(store, clip):
    import threading

    errors: list[BaseException] = []

    def edit_many(author: str) -> None:
        try:
            for i in range(5):
                store.edit_box(clip, "a", 0, Box3D((float(i), 0.0, 0.0), (4.0, 2.0, 1.5), 0.0, "world"), author)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=edit_many, args=(f"user-{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert [h.revision for h in store.box_history(clip, "a", 0)] == list(range(1, 22))
