"""Simulator options: calibration faults with a truth sidecar, several trips through one site, profiles."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from autolabel.cli import EXIT_INPUT_ERROR, main
from autolabel.datasets.nuscenes import load_nuscenes_clip
from autolabel.sim.dataroot import SimConfig, simulate_dataroot
from autolabel.sim.scenario import Profile, build_site, build_world
from calibration import SE3


def _tables(root: Path, version: str = "v1.0-mini") -> dict[str, list[dict]]:
    return {p.stem: json.loads(p.read_text()) for p in (root / version).glob("*.json")}


def test_perturbed_extrinsics_and_time_offset_are_written_with_the_truth(tmp_path: Path) -> None:
    root = simulate_dataroot(
        tmp_path / "faulty",
        SimConfig(seconds=0.5, seed=5, perturb_extrinsics_deg=1.0, perturb_extrinsics_cm=5.0, time_offset_ms=20.0),
    ).dataroot
    clean = simulate_dataroot(tmp_path / "clean", SimConfig(seconds=0.5, seed=5)).dataroot
    manifest = json.loads((root / "sim" / "manifest.json").read_text())
    truth = manifest["scenes"]["scene-0061"]["true_extrinsics"]
    tables = _tables(root)
    channel = {s["token"]: s["channel"] for s in tables["sensor"]}
    for calib in tables["calibrated_sensor"]:
        name = channel[calib["sensor_token"]]
        written = SE3.from_quaternion_wxyz(calib["rotation"], calib["translation"])
        true = SE3.from_quaternion_wxyz(truth[name]["rotation"], truth[name]["translation"])
        delta = true.inverse() @ written
        angle_deg = np.degrees(np.arccos(np.clip((np.trace(delta.rotation) - 1) / 2, -1, 1)))
        if name == "LIDAR_TOP":
            assert angle_deg < 1e-6 and np.linalg.norm(delta.translation) < 1e-9
        else:
            assert angle_deg == pytest.approx(1.0, abs=1e-6)
            assert np.linalg.norm(delta.translation) == pytest.approx(0.05, abs=1e-9)

    # Same images, camera timestamps written 20 ms late; lidar untouched.
    def times(t: dict, modality: str) -> list[int]:
        return sorted(r["timestamp"] for r in t["sample_data"] if (r["fileformat"] == "jpg") == (modality == "camera"))

    clean_tables = _tables(clean)
    assert times(tables, "lidar") == times(clean_tables, "lidar")
    assert np.all(np.array(times(tables, "camera")) - np.array(times(clean_tables, "camera")) == 20_000)
    assert manifest["scenes"]["scene-0061"]["camera_time_offset_ms"] == 20.0


def test_trips_share_the_static_world(tmp_path: Path) -> None:
    result = simulate_dataroot(tmp_path / "trips", SimConfig(seconds=1.0, seed=8, trips=2))
    assert result.scenes == ("scene-0061", "scene-0553")
    first, second = (load_nuscenes_clip(result.dataroot, name) for name in result.scenes)
    manifest = json.loads((result.dataroot / "sim" / "manifest.json").read_text())
    assert [manifest["scenes"][n]["site"] for n in result.scenes] == [0, 0]
    # Different drives: the ego paths differ.
    assert np.linalg.norm(first.frames[0].world_SE3_ego.translation - second.frames[0].world_SE3_ego.translation) > 5

    def world_centres(clip) -> set[tuple]:
        return {tuple(np.round(row[:3], 4)) for f in clip.frames for row in f.gt_world().data}

    shared = world_centres(first) & world_centres(second)
    assert shared  # the same parked objects, at the same world positions, seen on both trips


@pytest.mark.parametrize("profile", [Profile.HIGHWAY, Profile.PARKING])
def test_other_profiles_generate_and_read(profile: Profile, tmp_path: Path) -> None:
    result = simulate_dataroot(tmp_path / profile.value, SimConfig(seconds=0.5, seed=2, profile=profile))
    clip = load_nuscenes_clip(result.dataroot, result.scenes[0])
    assert len(clip) == 1 and len(clip.frames[0].gt) > 5
    assert clip.frames[0].key_sweep.num_points > 10_000


def test_cli_simulate_and_its_errors(tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli"
    assert main(["simulate", "--out", str(out), "--seconds", "0.5", "--seed", "1"]) == 0
    assert "scene-0061" in capsys.readouterr().out
    assert main(["simulate", "--out", str(out), "--seconds", "0.5"]) == EXIT_INPUT_ERROR
    assert "exists and is not empty" in capsys.readouterr().err
    assert main(["simulate", "--out", str(tmp_path / "x"), "--perturb-extrinsics", "1deg"]) == EXIT_INPUT_ERROR
    assert "expects DEG,CM" in capsys.readouterr().err
    assert main(["simulate", "--out", str(tmp_path / "x"), "--seconds", "0"]) == EXIT_INPUT_ERROR
    assert "--seconds must be in" in capsys.readouterr().err


def test_trips_differ_only_in_ego_path_and_moving_agents() -> None:
    site = build_site(Profile.URBAN, 4)
    a, b = build_world(site, 4, 0, 2.0), build_world(site, 4, 1, 2.0)
    assert a.structures is b.structures and a.ground is b.ground
    n = len(site.parked)  # parked objects come first, in site order, on every trip
    assert n > 20 and a.actors.category[:n] == b.actors.category[:n]
    np.testing.assert_array_equal(a.actors.poses[:n], b.actors.poses[:n])
    np.testing.assert_array_equal(a.actors.size_lwh[:n], b.actors.size_lwh[:n])
    assert np.linalg.norm(a.ego_poses[0, :2] - b.ego_poses[0, :2]) > 10
    assert a.actors.poses.shape != b.actors.poses.shape or not np.array_equal(a.actors.poses, b.actors.poses)
