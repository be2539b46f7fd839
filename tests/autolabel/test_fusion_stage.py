"""The whole fusion stage: odometry for clips without poses, calibration QA, both recorded in the artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from autolabel.artifacts import open_artifacts
from autolabel.cli import main
from autolabel.datasets.kitti import load_kitti_clip
from autolabel.datasets.nuscenes import load_nuscenes_clip
from autolabel.fuse import FuseConfig, fuse_clip
from autolabel.fusion_stage import FusionStageConfig, run_fusion_stage
from autolabel.poses import clip_sweeps, without_poses
from autolabel.qa import QAConfig, qa_frames
from autolabel.sim.dataroot import SimConfig, simulate_dataroot
from calibration import InputError

CPU = torch.device("cpu")
SCENE = "scene-0061"


@pytest.fixture(scope="module")
def sim_clip(tmp_path_factory):
    root = simulate_dataroot(tmp_path_factory.mktemp("stage") / "ds", SimConfig(seconds=2.0, seed=5)).dataroot
    return load_nuscenes_clip(root, SCENE)


@pytest.fixture(scope="module")
def odometry_stage(sim_clip, tmp_path_factory):
    config = FusionStageConfig(fuse=FuseConfig(sweeps_per_keyframe=5), qa=QAConfig(max_frames=2))
    return run_fusion_stage(without_poses(sim_clip), tmp_path_factory.mktemp("home"), CPU, config)


def test_qa_frames_spread_over_the_clip() -> None:
    assert qa_frames(3, 4) == (0, 1, 2)
    assert qa_frames(40, 4) == (0, 13, 26, 39)
    assert qa_frames(40, 1) == (0,)
    with pytest.raises(InputError, match="max_frames"):
        QAConfig(max_frames=0)


def test_without_poses_removes_every_pose(sim_clip) -> None:
    bare = without_poses(sim_clip)
    assert not bare.has_poses
    assert all(s.world_SE3_ego is None for s in clip_sweeps(bare))
    assert all(i.world_SE3_ego is None for f in bare.frames for i in f.cameras.values())
    with pytest.raises(InputError, match="no ego poses"):
        fuse_clip(bare, CPU)


def test_odometry_poses_follow_the_true_drive(sim_clip, odometry_stage) -> None:
    """World is the first sweep's ego frame: the estimate equals first^-1 @ truth up to drift."""
    assert odometry_stage.odometry is not None and not odometry_stage.odometry.degraded.any()
    first = clip_sweeps(sim_clip)[0].world_SE3_ego
    travelled = np.linalg.norm(sim_clip.frames[-1].world_SE3_ego.translation - first.translation)
    assert travelled > 5.0
    for truth, estimate in zip(sim_clip.frames, odometry_stage.clip.frames, strict=True):
        expected = first.inverse() @ truth.world_SE3_ego
        assert np.linalg.norm(estimate.world_SE3_ego.translation - expected.translation) < 0.05
        for image, true_image in zip(estimate.cameras.values(), truth.cameras.values(), strict=True):
            expected_image = first.inverse() @ true_image.world_SE3_ego
            assert np.linalg.norm(image.world_SE3_ego.translation - expected_image.translation) < 0.05


def test_artifacts_record_odometry_and_qa(sim_clip, odometry_stage) -> None:
    artifacts = open_artifacts(odometry_stage.path)
    odometry = artifacts.manifest["odometry"]
    steps = len(clip_sweeps(sim_clip))
    assert odometry["steps"] == steps and odometry["degraded_steps"] == 0
    assert artifacts.root["odometry/world_SE3_ego"].shape == (steps, 4, 4)
    np.testing.assert_array_equal(artifacts.root["odometry/fitness"][:], odometry_stage.odometry.fitness)
    qa = artifacts.manifest["qa"]
    assert qa["frames"] == [0, len(sim_clip) - 1]
    assert len(qa["cameras"]) == 6
    # The simulator's calibration is exact: nothing is flagged, the clock check runs and agrees.
    assert not qa["flagged"], qa
    assert abs(qa["time"]["best_offset_s"]) < 0.01
    assert artifacts.world_SE3_ego(0).allclose(odometry_stage.clip.frames[0].world_SE3_ego, atol=1e-6)


def test_cli_fuse_runs_qa_and_info_shows_it(sim_clip, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("AUTOLABEL_HOME", str(tmp_path))
    args = ["--nuscenes", str(sim_clip.root), "--scene", SCENE]
    assert main(["fuse", *args, "--device", "cpu", "--sweeps", "3", "--qa-frames", "1"]) == 0
    out = capsys.readouterr().out
    assert "calibration QA" in out and "CAM_FRONT" in out and "time offset" in out
    assert main(["info", *args, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["fusion"]["odometry"] is None  # the clip has poses
    assert set(info["fusion"]["qa"]["cameras"]) == set(sim_clip.rig.cameras)
    assert main(["info", *args]) == 0
    assert "calibration QA: ok" in capsys.readouterr().out


@pytest.mark.real_data
def test_real_kitti_clip_gets_odometry_and_passes_qa(kitti_clip_root: Path, tmp_path: Path) -> None:
    clip = load_kitti_clip(kitti_clip_root, "0000")
    assert not clip.has_poses
    stage = run_fusion_stage(clip, tmp_path, CPU, FusionStageConfig(qa=QAConfig(max_frames=3)))
    assert stage.odometry is not None and len(stage.odometry) == len(clip)
    assert not stage.odometry.degraded.any(), stage.odometry.warnings
    assert stage.clip.has_poses
    # The car drives forward along the street: about 1 m per frame over 30 frames at 10 Hz.
    travelled = np.linalg.norm(stage.clip.frames[-1].world_SE3_ego.translation)
    assert 5.0 < travelled < 60.0
    assert stage.qa is not None and [c.camera for c in stage.qa.cameras] == ["image_02"]
    assert not stage.qa.flagged
    assert stage.qa.time is None and "synthetic" in stage.qa.time_note
