"""The fusion stage on a simulated clip: static geometry coincides across sweeps, paint matches the
objects, artifacts round-trip through zarr and are written atomically."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from autolabel.artifacts import artifact_path, open_artifacts, sweep_arrays, write_artifacts
from autolabel.cli import main
from autolabel.datasets.nuscenes import load_nuscenes_clip
from autolabel.fuse import FuseConfig, camera_views, fuse_clip, sweep_input
from autolabel.sim.dataroot import SimConfig, simulate_dataroot
from autolabel.sim.scenario import Profile, build_site
from autolabel.sim.world import Surface
from calibration import WORLD_FRAME, Boxes3D, InputError
from fusion.aggregate import PoseTrack, sweep_to_world
from fusion.paint import PaintConfig, _choose_views_numba, _choose_views_torch

SEED = 3
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def sim_clip(tmp_path_factory):
    root = simulate_dataroot(tmp_path_factory.mktemp("fuse") / "ds", SimConfig(seconds=2.0, seed=SEED)).dataroot
    return load_nuscenes_clip(root, "scene-0061")


@pytest.fixture(scope="module")
def fused(sim_clip):
    return fuse_clip(sim_clip, CPU)


def _wall_offsets(fused_clip, buildings: Boxes3D) -> tuple[list[float], float]:
    """Per-sweep mean signed distance of building-shell points to the building faces, and the RMS."""
    means, all_d = [], []
    for world in fused_clip.sweep_world:
        shell = buildings.points_in_boxes(world, margin_m=0.25) & ~buildings.points_in_boxes(world, margin_m=-0.25)
        rows, cols = np.nonzero(shell)
        if len(rows) < 200:
            continue
        box = buildings.data[cols]
        d = world[rows, :2] - box[:, :2]
        c, s = np.cos(box[:, 6]), np.sin(box[:, 6])
        lx, ly = c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1]
        dist = np.maximum(np.abs(lx) - box[:, 3] / 2, np.abs(ly) - box[:, 4] / 2)
        means.append(float(dist.mean()))
        all_d.append(dist)
    return means, float(np.sqrt(np.mean(np.concatenate(all_d) ** 2)))


def test_static_walls_from_different_sweeps_coincide(sim_clip, fused) -> None:
    site = build_site(Profile.URBAN, SEED * 1000)
    structures = site.structures
    buildings = Boxes3D(structures.boxes[structures.surface == Surface.BUILDING], WORLD_FRAME)
    means, rms = _wall_offsets(fused, buildings)
    assert len(means) >= 20
    assert max(means) - min(means) < 0.05  # spread of the wall position across sweeps
    assert rms < 0.05
    _, skewed_rms = _wall_offsets(fuse_clip(sim_clip, CPU, FuseConfig(deskew=False)), buildings)
    assert skewed_rms > rms  # de-skew matters: raw points smear the walls


def test_painted_colours_match_the_simulated_objects(sim_clip, fused) -> None:
    manifest = json.loads((sim_clip.root / "sim" / "manifest.json").read_text())
    colours = {tok: np.array(v["colour"], float) for tok, v in manifest["scenes"]["scene-0061"]["instances"].items()}
    key = np.flatnonzero([s.is_key for f in sim_clip.frames for s in f.sweeps])
    matched = total = 0
    for frame, sweep_index in zip(sim_clip.frames, key, strict=True):
        boxes = frame.gt_world()
        inner = Boxes3D(boxes.data - np.array([0, 0, -0.1, 0.3, 0.3, 0.4, 0]), WORLD_FRAME)
        inside = inner.points_in_boxes(fused.sweep_world[sweep_index])
        painted = fused.sweep_view[sweep_index] >= 0
        rows, cols = np.nonzero(inside & painted[:, None])
        rgb = fused.sweep_rgb[sweep_index][rows].astype(float)
        target = np.stack([colours[frame.gt.track_ids[c]] for c in cols])
        cosine = (rgb * target).sum(1) / (np.linalg.norm(rgb, axis=1) * np.linalg.norm(target, axis=1) + 1e-9)
        scale = (rgb * target).sum(1) / (target * target).sum(1)
        matched += int(((cosine > np.cos(np.radians(6))) & (scale > 0.45) & (scale < 1.15)).sum())
        total += len(rows)
    assert total > 200
    assert matched / total > 0.95


def test_cpu_paint_kernel_chooses_like_the_torch_path(sim_clip) -> None:
    """The numba kernels used on CPU and the torch ops used on other devices paint alike (pixel
    rounding may differ for points within float32 noise of a pixel border)."""
    frame = sim_clip.frames[2]
    track = PoseTrack.from_poses(
        [s.timestamp_us for f in sim_clip.frames for s in f.sweeps],
        [s.world_SE3_ego for f in sim_clip.frames for s in f.sweeps],
    )
    inputs = [sweep_input(s, True) for s in frame.sweeps]
    world = np.concatenate([sweep_to_world(x, track) for x in inputs])
    times = np.concatenate([x.timestamp_us + x.time_offset_s * 1e6 for x in inputs])
    views = camera_views(sim_clip, 1) + camera_views(sim_clip, 2)  # two views per camera: time decides
    origin = world.mean(axis=0)
    view_cpu, pixel_cpu = _choose_views_numba(world, origin, views, times, PaintConfig())
    view_torch, pixel_torch = _choose_views_torch(
        (world - origin).astype(np.float32), origin, views, CPU, times, PaintConfig()
    )
    painted = view_cpu >= 0
    assert 0.5 < painted.mean() < 0.95
    assert np.mean(view_cpu == view_torch.numpy()) > 0.9999
    assert np.mean(pixel_cpu[painted] == pixel_torch.numpy()[painted]) > 0.999
    # Each point takes the image of its camera nearest to its capture time.
    view_times = np.array([v.timestamp_us for v in views], float)
    chosen = view_cpu[painted]
    other = np.where(chosen < 6, chosen + 6, chosen - 6)  # the same camera's view of the other frame
    gap = np.abs(times[painted] - view_times[chosen])
    assert np.all(gap <= np.abs(times[painted] - view_times[other]))
    assert set(np.unique(chosen)) == set(range(12))


def test_artifacts_round_trip_one_frame(sim_clip, fused, tmp_path: Path) -> None:
    path = write_artifacts(tmp_path / "clip.zarr", sim_clip, fused, FuseConfig())
    artifacts = open_artifacts(path)
    assert artifacts.num_sweeps == len(fused.sweep_points) and artifacts.num_keyframes == len(sim_clip)
    sweep = artifacts.sweep(7)
    np.testing.assert_array_equal(sweep["points"], fused.sweep_points[7])
    np.testing.assert_array_equal(sweep["rgb"], fused.sweep_rgb[7])
    np.testing.assert_allclose(sweep["world"], fused.sweep_world[7], atol=1e-4)
    np.testing.assert_array_equal(artifacts.keyframe_bev(2), fused.keyframe_bev[2])
    cloud, rgb = artifacts.keyframe_cloud(2)
    start, stop = fused.keyframe_sweeps[2]
    assert len(cloud) == len(rgb) == sum(len(p) for p in fused.sweep_points[start:stop])
    ego = sim_clip.frames[2].world_SE3_ego.inverse().transform_points(np.concatenate(fused.sweep_world[start:stop]))
    np.testing.assert_allclose(cloud[:, :3], ego, atol=1e-3)
    assert (cloud[:, 4] <= 0.03).all() and cloud[:, 4].min() < -0.4  # time column: older sweeps negative
    with pytest.raises(InputError, match="out of range"):
        artifacts.keyframe_cloud(99)
    world = artifacts.world_clouds()  # the whole-clip reader gives the same clouds in the world frame
    assert len(world) == len(sim_clip) and all(w.dtype == np.float32 for w in world)
    np.testing.assert_allclose(world[2][:, :3], np.concatenate(fused.sweep_world[start:stop]), atol=1e-4)
    np.testing.assert_allclose(world[2][:, 3:], cloud[:, 3:], atol=1e-6)


def test_artifacts_read_from_memory_as_from_the_store(sim_clip, fused, tmp_path: Path) -> None:
    arrays = sweep_arrays(fused)
    path = write_artifacts(tmp_path / "clip.zarr", sim_clip, fused, FuseConfig(), arrays=arrays)
    stored, held = open_artifacts(path), open_artifacts(path, arrays)
    assert stored.arrays is None and held.arrays is arrays
    for frame in (0, 2):
        for a, b in zip(stored.keyframe_cloud(frame), held.keyframe_cloud(frame), strict=True):
            np.testing.assert_array_equal(a, b)
    for a, b in zip(stored.world_clouds(), held.world_clouds(), strict=True):
        np.testing.assert_array_equal(a, b)
    for name, value in stored.sweep(7).items():
        np.testing.assert_array_equal(held.sweep(7)[name], value)
    # The held arrays are shared by every reader (and forked workers): read-only, and what readers get is theirs.
    with pytest.raises(ValueError, match="read-only"):
        arrays.points[0, 0] = 1.0
    rgb = held.keyframe_cloud(1)[1]
    rgb[:] = 0
    assert held.keyframe_cloud(1)[1].any()
    other = sweep_arrays(dataclasses.replace(fused, sweep_points=fused.sweep_points[:-1]))
    with pytest.raises(InputError, match="not this store's"):
        open_artifacts(path, other)


def test_interrupted_write_leaves_nothing_that_loads(sim_clip, fused, tmp_path: Path, monkeypatch) -> None:
    import autolabel.artifacts as artifacts_module

    path = write_artifacts(tmp_path / "clip.zarr", sim_clip, fused, FuseConfig())
    calls = []

    def crash(*args, **kwargs):
        calls.append(1)
        if len(calls) % 3 == 0:  # each write dies at its third ragged array
            raise KeyboardInterrupt("simulated crash")
        return original(*args, **kwargs)

    original = artifacts_module._ragged
    monkeypatch.setattr(artifacts_module, "_ragged", crash)
    with pytest.raises(KeyboardInterrupt):
        write_artifacts(path, sim_clip, fused, FuseConfig())
    with pytest.raises(KeyboardInterrupt):
        write_artifacts(tmp_path / "new.zarr", sim_clip, fused, FuseConfig())
    assert open_artifacts(path).num_sweeps == len(fused.sweep_points)  # the old complete version survives
    assert not (tmp_path / "new.zarr").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.zarr"]  # no staging folders left
    (tmp_path / "half.zarr").mkdir()
    with pytest.raises(InputError, match="no complete fusion artifacts"):
        open_artifacts(tmp_path / "half.zarr")


def test_cli_fuse_then_info(sim_clip, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("AUTOLABEL_HOME", str(tmp_path))
    args = ["--nuscenes", str(sim_clip.root), "--scene", "scene-0061"]
    assert main(["fuse", *args, "--device", "cpu", "--sweeps", "5"]) == 0
    assert artifact_path(tmp_path, sim_clip).is_dir()
    capsys.readouterr()
    assert main(["info", *args, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["fusion"]["status"] == "fused"
    manifest = open_artifacts(artifact_path(tmp_path, sim_clip)).manifest
    assert manifest["parameters"]["sweeps_per_keyframe"] == 5 and manifest["device"] == "cpu"
