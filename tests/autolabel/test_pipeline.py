"""The whole pipeline on a tiny simulated clip: labels in the store pass a devkit floor, stage caches are
reused, a crash keeps the previous labels, a batch survives a corrupt clip, exports round-trip."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_info

from autolabel import pipeline
from autolabel.cli import main
from autolabel.datasets.model import ClipSource
from autolabel.datasets.nuscenes import load_nuscenes_clip
from autolabel.labels import stored_frame_labels
from autolabel.pipeline import ClipSpec, PipelineConfig, _load_tracks, run_clip
from autolabel.store import ClipKey, open_store
from tracking import TrackingMode

SCENE = "scene-0061"


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    workspace = tmp_path / "workspace"
    monkeypatch.setenv("AUTOLABEL_HOME", str(workspace))
    monkeypatch.delenv("AUTOLABEL_DATABASE_URL", raising=False)
    return workspace


def _run_json(capsys: pytest.CaptureFixture, *args: str) -> dict:
    capsys.readouterr()
    assert main(list(args)) == 0
    return json.loads(capsys.readouterr().out)


def test_run_stores_labels_that_pass_a_floor_and_reuses_caches(simulated_root, home, capsys) -> None:
    source = ["--nuscenes", str(simulated_root), "--scene", SCENE]
    first = _run_json(capsys, "run", *source, "--device", "cpu", "--json")
    assert [s["stage"] for s in first["stages"]] == ["read", "fusion", "detection", "tracking", "refinement", "store"]
    assert not any(s["cached"] for s in first["stages"])
    assert first["tracks"] > 5 and first["boxes"] >= first["tracks"]
    again = _run_json(capsys, "run", *source, "--device", "cpu", "--json")
    cached = {s["stage"]: s["cached"] for s in again["stages"]}
    assert cached == {
        "read": False,
        "fusion": True,
        "detection": True,
        "tracking": True,
        "refinement": True,
        "store": False,
    }
    online = _run_json(capsys, "run", *source, "--device", "cpu", "--mode", "online", "--json")
    cached = {s["stage"]: s["cached"] for s in online["stages"]}
    assert cached["fusion"] and cached["detection"] and not cached["tracking"]
    assert "refinement" not in cached  # the online baseline is not refined
    assert online["parameters_hash"] != again["parameters_hash"]

    # The devkit's TrackingEval of the stored labels: the online baseline's, then the offboard run's again.
    online_metrics = _run_json(capsys, "evaluate", *source, "--json")
    _run_json(capsys, "run", *source, "--device", "cpu", "--json")
    metrics = _run_json(capsys, "evaluate", *source, "--json")
    # Floors well under today's figures (mAP 0.55, AMOTA 0.52, automation 0.37 on this clip), far above an empty
    # result; the offboard tracks beat the online baseline's (AMOTA 0.23, its mAP 0.16) by a wide margin.
    assert metrics["detection"]["mAP"] > 0.1
    assert metrics["tracking"]["amota"] > 0.35
    assert metrics["tracking"]["amota"] > online_metrics["tracking"]["amota"] + 0.15
    assert metrics["detection"]["mAP"] > online_metrics["detection"]["mAP"]
    assert metrics["automation_rate"] > 0.05
    # Nobody has reviewed yet: every stored box is a pending pre-label.
    assert metrics["acceptance"]["pending"] == metrics["acceptance"]["prelabels"] > 0
    assert main(["evaluate", *source]) == 0
    out = capsys.readouterr().out
    assert "devkit mAP" in out and "no review decisions yet" in out


def _assert_stored_flags_match_the_cached_detections(home: Path, tracks: dict[str, dict[str, int]]) -> None:
    """Each stored track's review flags count the cached cross-check flags of its detected boxes (``ok`` left out)."""
    (detections,) = (home / "cache" / "detections").glob("*.npz")
    with np.load(detections) as data:
        per_frame = np.split(data["flags"], np.cumsum(data["counts"])[:-1])
    (refined,) = (home / "cache" / "refined").glob("*.npz")
    expected = {}
    for track in _load_tracks(refined):
        detected = [
            per_frame[f][d] for f, d in zip(track.frame_indices, track.detection_indices, strict=True) if d >= 0
        ]
        expected[str(track.track_id)] = dict(Counter(str(f) for f in detected if f != "ok"))
        assert sum(tracks[str(track.track_id)].values()) <= len(detected)
    assert tracks == expected
    # As many tracks are flagged as the detections say: some when a tracked detection is flagged, else none.
    assert any(tracks.values()) == any(expected.values())


def test_a_crash_mid_run_keeps_the_previous_labels(simulated_root, home, monkeypatch) -> None:
    spec = ClipSpec(ClipSource.NUSCENES, simulated_root, SCENE)
    with open_store(f"sqlite:///{home}/labels.db") as store:
        run_clip(spec, home, store, torch.device("cpu"))
        key = ClipKey("nuscenes", SCENE)
        before = stored_frame_labels(store.current_labels(key))
        # (The same run checked for the cross-check's review flags reaching the store.)
        _assert_stored_flags_match_the_cached_detections(
            home, {t.track_key: dict(t.review_flags) for t in store.tracks(key)}
        )

        def broken(*args, **kwargs):
            raise RuntimeError("tracker crashed")

        monkeypatch.setattr("autolabel.pipeline.track_clip", broken)
        with pytest.raises(RuntimeError, match="tracker crashed"):
            run_clip(spec, home, store, torch.device("cpu"), PipelineConfig(tracking_mode=TrackingMode.ONLINE))
        after = stored_frame_labels(store.current_labels(key))
        assert len(store.runs(key)) == 1
    assert [f.track_ids for f in after] == [f.track_ids for f in before]
    for a, b in zip(after, before, strict=True):
        np.testing.assert_array_equal(a.boxes.data, b.boxes.data)


def _blas_threads() -> set[int]:
    return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}


def test_two_worker_processes_store_the_same_labels_as_one(simulated_root, tmp_path, monkeypatch) -> None:
    spec = ClipSpec(ClipSource.NUSCENES, simulated_root, SCENE)
    stored = []
    seen_blas_threads: list[set[int]] = []

    def tracking_output(*args, **kwargs):
        seen_blas_threads.append(_blas_threads())
        return original(*args, **kwargs)

    original = pipeline.tracking_output
    monkeypatch.setattr(pipeline, "tracking_output", tracking_output)
    before = _blas_threads()
    for workers in (1, 2):
        home = tmp_path / f"workers-{workers}"
        with open_store(f"sqlite:///{home}/labels.db") as store:
            run_clip(spec, home, store, torch.device("cpu"), workers=workers)
            stored.append(stored_frame_labels(store.current_labels(ClipKey("nuscenes", SCENE))))
    # The stages parallelise themselves: BLAS runs single-threaded inside a run, and as before after it.
    assert seen_blas_threads == [{1}, {1}] and _blas_threads() == before
    one, two = stored
    assert sum(len(f.track_ids) for f in one) > 0
    assert [f.track_ids for f in two] == [f.track_ids for f in one]
    for a, b in zip(two, one, strict=True):
        np.testing.assert_array_equal(a.boxes.data, b.boxes.data)
        np.testing.assert_array_equal(a.scores, b.scores)


BROKEN_SCENE = "scene-0103"


def _corrupt_copy(root: Path, target: Path) -> Path:
    """A copy of the dataroot (its scene renamed) whose sweep files are missing."""
    target.mkdir()
    version = next(p.name for p in root.iterdir() if p.name.startswith("v1.0"))
    shutil.copytree(root / version, target / version)
    scenes = json.loads((target / version / "scene.json").read_text())
    scenes[0]["name"] = BROKEN_SCENE
    (target / version / "scene.json").write_text(json.dumps(scenes))
    (target / "samples").symlink_to(root / "samples")
    (target / "maps").symlink_to(root / "maps")
    (target / "sweeps").mkdir()
    return target


def test_batch_finishes_the_good_clip_and_names_the_bad_one(simulated_root, home, tmp_path, capsys) -> None:
    broken = _corrupt_copy(simulated_root, tmp_path / "broken")
    args = ["batch", "--nuscenes", str(simulated_root), str(broken), "--workers", "2", "--device", "cpu"]
    assert main([*args, "--json"]) == 1
    captured = capsys.readouterr()
    results = {r["root"]: r for r in json.loads(captured.out)}
    assert results[str(simulated_root)]["outcome"] == "done"
    assert results[str(broken)]["outcome"] == "failed"
    assert "point file not found" in results[str(broken)]["error"]
    assert f"clip {BROKEN_SCENE} ({broken}) failed" in captured.err
    # --resume skips the clip already done with the same parameters; the bad one fails again.
    assert main([*args, "--resume", "--json"]) == 1
    results = {r["root"]: r for r in json.loads(capsys.readouterr().out)}
    assert results[str(simulated_root)]["outcome"] == "skipped"
    assert results[str(broken)]["outcome"] == "failed"
    # The same clip twice in one batch (two copies of a dataset) is refused before anything runs.
    assert main(["batch", "--nuscenes", str(simulated_root), str(simulated_root), "--device", "cpu"]) == 2
    assert "twice" in capsys.readouterr().err


def test_exports_round_trip(simulated_root, home, tmp_path, capsys) -> None:
    source = ["--nuscenes", str(simulated_root), "--scene", SCENE]
    assert main(["run", *source, "--device", "cpu"]) == 0
    with open_store(f"sqlite:///{home}/labels.db") as store:
        stored = stored_frame_labels(store.current_labels(ClipKey("nuscenes", SCENE)))

    out = tmp_path / "export"
    assert main(["export", *source, "--format", "nuscenes", "--out", str(out)]) == 0
    exported = load_nuscenes_clip(out, SCENE)  # our reader takes the exported dataroot...
    for frame, labels in zip(exported.frames, stored, strict=True):
        order = np.argsort([t for t in labels.track_ids])
        boxes = frame.gt.boxes.data
        assert len(boxes) == len(labels)
        # ...and gets the stored boxes back (the instance tokens are derived from the track keys).
        ours = labels.boxes.data[order]
        theirs = boxes[np.argsort([t for t in frame.gt.track_ids])]
        np.testing.assert_allclose(np.sort(theirs, axis=0), np.sort(ours, axis=0), atol=1e-6)
    from nuscenes import NuScenes

    nusc = NuScenes(version=exported.meta["version"], dataroot=str(out), verbose=False)
    scene_samples = {f.token for f in exported.frames}
    assert sum(a["sample_token"] in scene_samples for a in nusc.sample_annotation) == sum(len(f) for f in stored)
    assert (out / "results" / "tracking_results.json").is_file()

    openlabel = tmp_path / "labels.openlabel.json"
    assert main(["export", *source, "--format", "openlabel", "--out", str(openlabel)]) == 0
    document = json.loads(openlabel.read_text())
    assert len(document["openlabel"]["objects"]) == len({t for f in stored for t in f.track_ids})
    assert main(["export", *source, "--format", "nuscenes", "--out", str(out), "--signed-off-only"]) == 2


@pytest.mark.ray
def test_ray_executor_runs_three_clips_on_a_local_two_cpu_instance(simulated_root, home, tmp_path) -> None:
    ray = pytest.importorskip("ray", reason="the ray extra is not installed")
    from autolabel.batch import Executor, Outcome, run_batch
    from autolabel.settings import Settings

    roots = []
    for k, scene in enumerate(("scene-0103", "scene-0553", "scene-0655")):
        copy = tmp_path / f"copy{k}"
        copy.mkdir()
        version = next(p.name for p in simulated_root.iterdir() if p.name.startswith("v1.0"))
        shutil.copytree(simulated_root / version, copy / version)
        scenes = json.loads((copy / version / "scene.json").read_text())
        scenes[0]["name"] = scene
        (copy / version / "scene.json").write_text(json.dumps(scenes))
        for folder in ("samples", "sweeps", "maps"):
            (copy / folder).symlink_to(simulated_root / folder)
        roots.append(ClipSpec(ClipSource.NUSCENES, copy, scene))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        results = run_batch(roots, Settings(), executor=Executor.RAY)
    finally:
        ray.shutdown()
    assert sorted(r.spec.name for r in results) == ["scene-0103", "scene-0553", "scene-0655"]
    assert all(r.outcome is Outcome.DONE for r in results), [r.error for r in results]
    with open_store(f"sqlite:///{home}/labels.db") as store:
        assert {c.key.name for c in store.list_clips()} == {"scene-0103", "scene-0553", "scene-0655"}
