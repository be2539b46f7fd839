"""A pipeline run is one transaction: a crash leaves the previous labels, readers never see a mix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import autolabel.store.prelabels as prelabels_module
from autolabel.store import RunStatus, open_store

NUM_TRACKS = 6
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def _snapshot(labels) -> dict:
    """Everything that identifies a clip's current labels, comparable with ==."""
    return {
        fb.frame_index: (fb.track_keys, fb.revisions.tolist(), fb.boxes.data.round(12).tolist())
        for fb in labels.frame_boxes
    }


def _tracks(build, shift: float):
    return [build.track(f"t{i}", origin_xy=(shift, 10.0 * i), seed=i) for i in range(NUM_TRACKS)]


def _crash_after(monkeypatch, calls_before_crash: int, during=None) -> None:
    """Make the run's box inserts raise after ``calls_before_crash`` tracks were inserted (uncommitted)."""
    original = prelabels_module.insert_boxes
    calls = {"n": 0}

    def insert_then_crash(session, rows):
        if calls["n"] == calls_before_crash:
            if during is not None:
                during()
            raise RuntimeError("simulated crash in the middle of a pipeline run")
        calls["n"] += 1
        original(session, rows)

    monkeypatch.setattr(prelabels_module, "insert_boxes", insert_then_crash)


def test_crash_mid_run_leaves_previous_labels_intact(store, build, monkeypatch):
    first = store.write_prelabels(build.clip, build.frames(), _tracks(build, 0.0), build.provenance)
    store.edit_box(build.clip, "t0", 1, store.box_history(build.clip, "t1", 1)[0].box, "alice")
    before = store.current_labels(build.clip)
    audit_before = store.audit_log(build.clip)

    _crash_after(monkeypatch, NUM_TRACKS // 2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        store.write_prelabels(build.clip, build.frames(), _tracks(build, 100.0), build.provenance_2)

    after = store.current_labels(build.clip)
    assert _snapshot(after) == _snapshot(before)
    assert after.clip == before.clip
    assert [(r.run_id, r.status) for r in store.runs(build.clip)] == [(first.run_id, RunStatus.CURRENT)]
    assert store.audit_log(build.clip) == audit_before
    assert all(h.run_id in (None, first.run_id) for h in store.box_history(build.clip, "t3"))


def test_crash_in_the_first_run_leaves_no_clip(store, build, monkeypatch):
    _crash_after(monkeypatch, 1)
    with pytest.raises(RuntimeError):
        store.write_prelabels(build.clip, build.frames(), _tracks(build, 0.0), build.provenance)
    assert store.list_clips() == ()
    monkeypatch.undo()
    store.write_prelabels(build.clip, build.frames(), _tracks(build, 0.0), build.provenance)  # the store still works
    assert store.clip_info(build.clip).num_tracks == NUM_TRACKS


def test_other_connection_sees_old_labels_during_a_run_and_new_after(store, url, build, monkeypatch):
    store.write_prelabels(build.clip, build.frames(), _tracks(build, 0.0), build.provenance)
    old = _snapshot(store.current_labels(build.clip))
    seen = []
    original = prelabels_module.insert_boxes
    calls = {"n": 0}

    with open_store(url) as other:  # its own engine and connections, like another process

        def insert_and_peek(session, rows):
            original(session, rows)
            calls["n"] += 1
            if calls["n"] == NUM_TRACKS // 2:
                session.flush()
                seen.append(_snapshot(other.current_labels(build.clip)))
                seen.append(len(other.runs(build.clip)))

        monkeypatch.setattr(prelabels_module, "insert_boxes", insert_and_peek)
        store.write_prelabels(build.clip, build.frames(), _tracks(build, 100.0), build.provenance_2)
        new = _snapshot(other.current_labels(build.clip))

    assert seen == [old, 1]
    assert new != old
    assert new == _snapshot(store.current_labels(build.clip))
    assert all(revisions == [2] * len(revisions) for _, revisions, _ in new.values())


READER = textwrap.dedent(
    """
    import json, sys
    from autolabel.store import ClipKey, open_store
    with open_store(sys.argv[1]) as store:
        labels = store.current_labels(ClipKey(sys.argv[2], sys.argv[3]))
        print(json.dumps({fb.frame_index: fb.revisions.tolist() for fb in labels.frame_boxes}))
    """
)

KILLED_WRITER = textwrap.dedent(
    """
    import os, sys
    import numpy as np
    import autolabel.store.prelabels as prelabels_module
    from autolabel.store import ClipKey, Provenance, TrackLabels, open_store
    from calibration import Boxes3D

    original = prelabels_module.insert_boxes
    calls = []
    def insert_then_die(session, rows):
        original(session, rows)
        calls.append(1)
        if len(calls) == 2:
            session.flush()
            os._exit(9)  # the process dies with the transaction open: no rollback, no cleanup
    prelabels_module.insert_boxes = insert_then_die

    store = open_store(sys.argv[1])
    clip = ClipKey(sys.argv[2], sys.argv[3])
    frames = store.frames(clip)
    data = np.tile([500.0, 0.0, 1.0, 4.0, 2.0, 1.5, 0.0], (len(frames), 1))
    tracks = [
        TrackLabels(f"t{i}", "car", 0.5, np.arange(len(frames)), Boxes3D(data + [0, 10 * i, 0, 0, 0, 0, 0], "world"),
                    np.full(len(frames), 0.5), ["detected"] * len(frames))
        for i in range(4)
    ]
    store.write_prelabels(clip, frames, tracks, Provenance("x", "y", "z"))
    """
)


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=120, env=env, cwd=REPO_ROOT
    )


def test_second_process_reads_old_labels_during_a_sqlite_run(sqlite_store, sqlite_url, build, monkeypatch):
    store = sqlite_store
    store.write_prelabels(build.clip, build.frames(), _tracks(build, 0.0), build.provenance)
    outputs = []
    original = prelabels_module.insert_boxes

    def insert_and_read_from_another_process(session, rows):
        original(session, rows)
        if not outputs:
            session.flush()
            outputs.append(_run(READER, sqlite_url, build.clip.source, build.clip.name))

    monkeypatch.setattr(prelabels_module, "insert_boxes", insert_and_read_from_another_process)
    store.write_prelabels(build.clip, build.frames(), _tracks(build, 100.0), build.provenance_2)

    (reader,) = outputs
    assert reader.returncode == 0, reader.stderr
    assert all(set(revisions) == {1} for revisions in json.loads(reader.stdout).values())
    assert {int(r) for fb in store.current_labels(build.clip).frame_boxes for r in fb.revisions} == {2}


def test_killed_writer_process_leaves_previous_labels(sqlite_store, sqlite_url, build):
    store = sqlite_store
    store.write_prelabels(build.clip, build.frames(), _tracks(build, 0.0), build.provenance)
    before = _snapshot(store.current_labels(build.clip))

    writer = _run(KILLED_WRITER, sqlite_url, build.clip.source, build.clip.name)
    assert writer.returncode == 9, writer.stderr

    with open_store(sqlite_url) as reopened:
        assert _snapshot(reopened.current_labels(build.clip)) == before
        assert len(reopened.runs(build.clip)) == 1
        reopened.write_prelabels(build.clip, build.frames(), _tracks(build, 1.0), build.provenance_2)  # not locked
        assert len(reopened.runs(build.clip)) == 2
    assert np.all(np.concatenate([fb.revisions for fb in store.current_labels(build.clip).frame_boxes]) == 2)
