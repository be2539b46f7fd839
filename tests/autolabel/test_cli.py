"""The command line: summaries on stdout, bad input as one line on stderr with exit status 2."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from autolabel.cli import EXIT_INPUT_ERROR, main
from autolabel.store import open_store


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == EXIT_INPUT_ERROR
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("autolabel: error: ")
    for fragment in fragments:
        assert fragment in lines[0]


def test_console_script_help_and_info() -> None:
    exe = shutil.which("autolabel") or str(Path(sys.executable).with_name("autolabel"))
    help_run = subprocess.run([exe, "--help"], capture_output=True, text=True, check=False)
    assert help_run.returncode == 0 and "info" in help_run.stdout and "demo" in help_run.stdout
    info = subprocess.run([exe, "info"], capture_output=True, text=True, check=False)
    assert info.returncode == 0 and "nuscenes-devkit" in info.stdout and "device" in info.stdout


def test_bad_path_is_one_line_without_traceback(tmp_path: Path) -> None:
    exe = shutil.which("autolabel") or str(Path(sys.executable).with_name("autolabel"))
    result = subprocess.run(
        [exe, "info", "--nuscenes", str(tmp_path / "missing"), "--scene", "scene-0061"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == EXIT_INPUT_ERROR
    assert "Traceback" not in result.stderr
    assert_one_line_error(result.returncode, result.stderr, str(tmp_path / "missing"), "not found")


def test_source_option_errors(capsys, tmp_path: Path) -> None:
    code, _, err = run(["info", "--nuscenes", str(tmp_path)], capsys)
    assert_one_line_error(code, err, "--scene")
    code, _, err = run(["info", "--kitti", str(tmp_path)], capsys)
    assert_one_line_error(code, err, "--seq")
    code, _, err = run(
        ["info", "--nuscenes", str(tmp_path), "--scene", "s", "--kitti", str(tmp_path), "--seq", "0"], capsys
    )
    assert_one_line_error(code, err, "one clip source")
    code, _, err = run(["info", "--scene", "scene-0061"], capsys)
    assert_one_line_error(code, err, "dataset root")
    code, _, err = run(["demo", "--data", str(tmp_path / "absent")], capsys)
    assert_one_line_error(code, err, "fixture folder not found")
    code, _, err = run(["run", "--nuscenes", str(tmp_path), "--scene", "s", "--workers", "0"], capsys)
    assert_one_line_error(code, err, "--workers must be at least 1")


def test_info_summarises_a_synthetic_nuscenes_scene(synthetic_nuscenes, capsys) -> None:
    code, out, _ = run(["info", "--nuscenes", str(synthetic_nuscenes.root), "--scene", "scene-0061", "--json"], capsys)
    assert code == 0
    summary = json.loads(out)
    assert summary["num_frames"] == 3 and summary["num_sweeps"] == 11
    assert summary["num_points"] == 100 + 5 * 101 + 5 * 102
    assert summary["num_gt_boxes"] == 5 and summary["num_gt_tracks"] == 2
    assert summary["cameras"] == ["CAM_FRONT"] and summary["has_poses"] is True
    code, out, _ = run(["info", "--nuscenes", str(synthetic_nuscenes.root), "--scene", "scene-0061"], capsys)
    assert code == 0 and "5 boxes, 2 tracks" in out


def test_unknown_scene(synthetic_nuscenes, capsys) -> None:
    code, _, err = run(["info", "--nuscenes", str(synthetic_nuscenes.root), "--scene", "scene-4242"], capsys)
    assert_one_line_error(code, err, "unknown scene 'scene-4242'", "scene-0061")


@pytest.mark.real_data
def test_demo_runs_the_pipeline_on_the_simulated_and_both_real_clips(
    nuscenes_sample_root: Path, kitti_clip_root: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("AUTOLABEL_HOME", str(tmp_path))
    monkeypatch.delenv("AUTOLABEL_DATABASE_URL", raising=False)
    code, out, _ = run(["demo", "--data", str(nuscenes_sample_root.parent)], capsys)
    assert code == 0
    assert "clip scene-0061 (nuscenes)" in out and "34,688" in out and "69 boxes" in out
    assert "clip kitti-0000 (kitti)" in out and "30 over" in out and "missing" in out
    # All three went through every stage; the two nuScenes-format clips have ground truth, scored by the devkit.
    assert out.count("detection") >= 3 and out.count("tracking") >= 3 and out.count("devkit mAP") == 2
    assert "automation rate" in out
    # The simulated scene carries the real sample's name (scene-0061): it has a label store of its own.
    sim_store, real_store = tmp_path / "demo" / "sim-workspace" / "labels.db", tmp_path / "labels.db"
    assert "labels are in" in out and "sim-workspace" in "".join(out.split())
    with open_store(f"sqlite:///{sim_store}") as store:
        assert [(c.key.name, c.num_frames) for c in store.list_clips()] == [("scene-0061", 8)]
    with open_store(f"sqlite:///{real_store}") as store:
        assert sorted((str(c.key), c.num_frames) for c in store.list_clips()) == [
            ("kitti/kitti-0000", 30),
            ("nuscenes/scene-0061", 1),
        ]
