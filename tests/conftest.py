"""Shared fixtures: the licensed real-data fixtures are found by path and never copied into the repo."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("AUTOLABEL_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
NUSCENES_SAMPLE = SHARED_DATA / "nuscenes_real_one_sample"
KITTI_CLIP = SHARED_DATA / "kitti_raw_clip"


def _require(path: Path) -> Path:
    if not path.is_dir():
        pytest.skip(f"real-data fixture {path} is absent (set AUTOLABEL_SHARED_DATA to the shared data folder)")
    return path


@pytest.fixture(scope="session")
def nuscenes_sample_root() -> Path:
    """The real one-keyframe nuScenes dataroot (scene-0061)."""
    return _require(NUSCENES_SAMPLE)


@pytest.fixture(scope="session")
def kitti_clip_root() -> Path:
    """The real 30-frame KITTI raw clip in tracking layout (sequence 0000)."""
    return _require(KITTI_CLIP)
