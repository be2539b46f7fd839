"""Calibration QA on simulated dataroots (true rig, extrinsics off by 1 degree / 5 cm, cameras 40 ms
late) and on the real fixtures, which are well calibrated.

The simulator writes raw lidar points (each in the lidar frame at its own firing time; the beam
points forward at the sweep timestamp and turns clockwise once per period). The samples come from
the fusion stage's de-skewed points through :func:`autolabel.qa.image_samples`: one revolution
centred on each exposure, so the points in the camera's view were fired within a few milliseconds of it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from autolabel.datasets.kitti import load_kitti_clip
from autolabel.datasets.model import Clip
from autolabel.datasets.nuscenes import load_nuscenes_clip
from autolabel.fuse import FuseConfig, fuse_clip
from autolabel.qa import image_samples
from autolabel.sim.dataroot import SimConfig, simulate_dataroot
from calibration import SE3, PinholeCamera
from fusion.calib_qa import (
    CameraQA,
    ImageSample,
    PreparedImages,
    TimeOffsetQA,
    TimeSample,
    alignment_score,
    check_extrinsics,
    check_time_offset,
)

SCENE = "scene-0061"
SECONDS = 2.0  # four keyframes
SEED = 4
CPU = torch.device("cpu")
OFFSET_MS = 40.0
KITTI_FRAME_STEP = 7  # frames 0, 7, 14, 21, 28


# ------------------------------------------------------------------------------------------ fixtures
def _simulate(tmp_path_factory: pytest.TempPathFactory, name: str, **options: float) -> Clip:
    root = tmp_path_factory.mktemp(name) / "nuscenes"
    simulate_dataroot(root, SimConfig(seconds=SECONDS, seed=SEED, **options))
    return load_nuscenes_clip(root, SCENE)


@pytest.fixture(scope="module")
def true_clip(tmp_path_factory: pytest.TempPathFactory) -> Clip:
    return _simulate(tmp_path_factory, "true")


@pytest.fixture(scope="module")
def perturbed_clip(tmp_path_factory: pytest.TempPathFactory) -> Clip:
    return _simulate(tmp_path_factory, "perturbed", perturb_extrinsics_deg=1.0, perturb_extrinsics_cm=5.0)


@pytest.fixture(scope="module")
def late_clip(tmp_path_factory: pytest.TempPathFactory) -> Clip:
    return _simulate(tmp_path_factory, "late", time_offset_ms=OFFSET_MS)


# ------------------------------------------------------------------------------------------ helpers
def sim_samples(clip: Clip) -> tuple[dict[str, list[ImageSample]], list[TimeSample]]:
    """Per camera the keyframe images with their de-skewed points, and every image for the time check."""
    return image_samples(clip, fuse_clip(clip, CPU, FuseConfig(sweeps_per_keyframe=1)), range(len(clip)))


def report(title: str, results: list[CameraQA]) -> str:
    lines = [f"{title}: camera, score, best neighbour (gain), confidence, frames, flagged"]
    for qa in results:
        gain = qa.best_neighbour_score / qa.score - 1.0
        lines.append(
            f"  {qa.camera:16s} {qa.score:7.3f}  {qa.best_delta:18s} ({gain:+.3f})  {qa.confidence:.2f}  "
            f"{qa.frames_used}  {'FLAGGED' if qa.flagged else 'ok'}"
        )
    text = "\n".join(lines)
    print(text)
    return text


def report_time(title: str, qa: TimeOffsetQA) -> str:
    curve = " ".join(f"{dt * 1000:+.0f}:{s:.3f}" for dt, s in zip(qa.offsets_s, qa.scores, strict=True))
    head = f"{title}: best offset {qa.best_offset_s * 1000:+.1f} ms, flagged {qa.flagged}, images {qa.frames_used}"
    text = f"{head}\n  {curve}"
    print(text)
    return text


# ------------------------------------------------------------------------------------------ simulated
@pytest.fixture(scope="module")
def true_samples(true_clip: Clip) -> tuple[dict[str, list[ImageSample]], list[TimeSample]]:
    return sim_samples(true_clip)


def test_true_calibration_is_not_flagged(true_samples, record_property) -> None:
    by_camera, _ = true_samples
    results = [check_extrinsics(samples) for samples in by_camera.values()]
    record_property("true_clip", report("true extrinsics", results))
    assert len(results) == 6
    assert all(qa.frames_used >= 3 for qa in results)
    assert not any(qa.flagged for qa in results), [qa.camera for qa in results if qa.flagged]
    # Aligned lidar depth edges sit on image edges far more than lidar points at large.
    assert all(qa.score > 2.0 for qa in results)


def test_one_degree_five_centimetres_is_flagged(perturbed_clip: Clip, record_property) -> None:
    by_camera, _ = sim_samples(perturbed_clip)
    results = [check_extrinsics(samples) for samples in by_camera.values()]
    record_property("perturbed_clip", report("extrinsics off by 1 deg / 5 cm", results))
    flagged = [qa.camera for qa in results if qa.flagged]
    # This seed flags all six; the edge alignment cannot see every 1 degree error in four frames
    # (a pitch error inside the lidar's 1.3 degree ring gap, or a rotation that the translation
    # error cancels for the visible edges), so allow one camera to pass.
    assert len(flagged) >= 5, flagged


def test_score_drops_away_from_the_true_extrinsics(true_samples) -> None:
    by_camera, _ = true_samples
    points, image, camera, origin = by_camera["CAM_FRONT"][0]
    at_truth = alignment_score(points, image, camera, lidar_origin_ego=origin)
    assert at_truth > 2.0
    for yaw_deg in (-1.0, 1.0):  # about the camera's y axis: the image shifts sideways by 22 px
        delta = SE3(Rotation.from_rotvec([0.0, np.radians(yaw_deg), 0.0]).as_matrix(), np.zeros(3))
        turned = PinholeCamera(
            camera.name, camera.intrinsics, camera.width_px, camera.height_px, camera.ego_SE3_cam @ delta
        )
        assert alignment_score(points, image, turned, lidar_origin_ego=origin) < 0.9 * at_truth


def test_time_offset_is_found(true_samples, late_clip: Clip, record_property) -> None:
    _, true_timed = true_samples
    on_time = check_time_offset(true_timed)
    _, late_timed = sim_samples(late_clip)
    late = check_time_offset(late_timed)
    record_property("time_check", report_time("true clip", on_time) + "\n" + report_time("cameras 40 ms late", late))
    assert not on_time.flagged
    assert abs(on_time.best_offset_s) < 0.01
    assert late.flagged
    # The images were exposed 40 ms before their timestamps: the lidar fits them 40 ms earlier.
    assert late.best_offset_s == pytest.approx(-OFFSET_MS / 1000.0, abs=0.01)


def test_the_checks_share_each_images_preparation(true_samples) -> None:
    # The time check scores the extrinsics check's images with the same points: prepared once, same verdicts.
    by_camera, timed = true_samples
    shared = PreparedImages()
    cameras = [check_extrinsics(samples, prepared_images=shared) for samples in by_camera.values()]
    prepared = len(shared)
    assert prepared == sum(len(samples) for samples in by_camera.values())
    time_qa = check_time_offset(timed, prepared_images=shared)
    assert len(shared) == prepared == len(timed)  # the same images: the time check prepared none of its own
    assert cameras == [check_extrinsics(samples) for samples in by_camera.values()]
    alone = check_time_offset(timed)
    assert time_qa.best_offset_s == pytest.approx(alone.best_offset_s, abs=1e-9)
    np.testing.assert_allclose(time_qa.scores, alone.scores, rtol=1e-9)


# ------------------------------------------------------------------------------------------ real data
@pytest.mark.real_data
def test_real_nuscenes_sample_is_not_flagged(nuscenes_sample_root: Path, record_property) -> None:
    clip = load_nuscenes_clip(nuscenes_sample_root, SCENE)
    # Each image takes the sweep nearest in time (the cameras fire 0.5-43 ms before the key sweep),
    # moved into the ego frame at the exposure.
    by_camera, timed = sim_samples(clip)
    results = [check_extrinsics(samples) for samples in by_camera.values()]
    timing = check_time_offset(timed)
    text = report("real nuScenes sample (1 frame)", results) + "\n" + report_time("real nuScenes sample", timing)
    record_property("nuscenes_real", text)
    assert len(results) == 6
    assert not any(qa.flagged for qa in results), [qa.camera for qa in results if qa.flagged]
    assert all(qa.score > 1.5 for qa in results)
    assert not timing.flagged


@pytest.mark.real_data
def test_real_kitti_clip_is_not_flagged(kitti_clip_root: Path, record_property) -> None:
    clip = load_kitti_clip(kitti_clip_root, "0000")
    samples = []
    for frame in clip.frames[::KITTI_FRAME_STEP]:
        sweep, image = frame.key_sweep, frame.cameras["image_02"]
        samples.append(
            ImageSample(sweep.load_points_ego(), image.load(), image.camera, sweep.ego_SE3_lidar.translation)
        )
    qa = check_extrinsics(samples)
    record_property("kitti_real", report(f"real KITTI clip ({len(samples)} frames)", [qa]))
    assert qa.frames_used == len(samples)
    assert not qa.flagged
    assert qa.score > 1.5
