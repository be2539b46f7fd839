"""Calibration QA on simulated dataroots (true rig, extrinsics off by 1 degree / 5 cm, cameras 40 ms
late) and on the real fixtures, which are well calibrated.

The simulator writes raw lidar points (each in the lidar frame at its own firing time; the beam
points forward at the sweep timestamp and turns clockwise once per period). For a camera image the
points are de-skewed with the clip's poses and one revolution centred on the exposure time is kept,
so the points in the camera's view were fired within a few milliseconds of the exposure.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from autolabel.datasets.kitti import load_kitti_clip
from autolabel.datasets.model import CameraImage, Clip, LidarSweep
from autolabel.datasets.nuscenes import load_nuscenes_clip
from autolabel.sim.dataroot import SimConfig, simulate_dataroot
from autolabel.sim.sensors import LidarModel
from calibration import SE3, PinholeCamera, interpolate_pose, interpolate_poses
from fusion.calib_qa import (
    CameraQA,
    ImageSample,
    TimeOffsetQA,
    TimeSample,
    alignment_score,
    check_extrinsics,
    check_time_offset,
)

SCENE = "scene-0061"
SECONDS = 2.0  # four keyframes
SEED = 4
PERIOD_US = round(LidarModel().period_s * 1e6)
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
class Trajectory:
    """The clip's stamped ego poses (sweeps and images); interpolated inside, extrapolated at the ends."""

    def __init__(self, clip: Clip) -> None:
        stamped: dict[int, SE3] = {}
        for frame in clip.frames:
            for sweep in frame.sweeps:
                stamped.setdefault(sweep.timestamp_us, sweep.world_SE3_ego)
            for image in frame.cameras.values():
                stamped.setdefault(image.timestamp_us, image.world_SE3_ego)
        self.times_us = np.array(sorted(stamped), dtype=np.int64)
        self.poses = [stamped[int(t)] for t in self.times_us]

    def at(self, times_us: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(Q, 3, 3) rotations and (Q, 3) translations of ``world_SE3_ego`` at (Q,) times."""
        times = np.asarray(times_us, dtype=np.int64).reshape(-1)
        inside = (times >= self.times_us[0]) & (times <= self.times_us[-1])
        poses: list[SE3 | None] = [None] * len(times)
        for i, pose in zip(
            np.nonzero(inside)[0], interpolate_poses(self.times_us, self.poses, times[inside]), strict=True
        ):
            poses[i] = pose
        for i in np.nonzero(~inside)[0]:
            j = 0 if times[i] < self.times_us[0] else len(self.times_us) - 2
            t0, t1 = int(self.times_us[j]), int(self.times_us[j + 1])
            poses[i] = interpolate_pose(t0, self.poses[j], t1, self.poses[j + 1], int(times[i]))
        return np.stack([p.rotation for p in poses]), np.stack([p.translation for p in poses])

    def pose(self, time_us: int) -> SE3:
        rotations, translations = self.at(np.array([time_us]))
        return SE3(rotations[0], translations[0])


def deskewed_world_points(sweep: LidarSweep, trajectory: Trajectory) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) world points of a raw simulated sweep, each placed with the ego pose at its firing time,
    and (N,) those times in microseconds (``t = t_sweep - wrap(azimuth_ego) / 2 pi * period``)."""
    points = sweep.load_points()
    ego = sweep.ego_SE3_lidar.transform_points(points)[:, :3].astype(np.float64)
    directions = sweep.ego_SE3_lidar.rotate_vectors(points[:, :3].astype(np.float64))
    times_us = sweep.timestamp_us - np.arctan2(directions[:, 1], directions[:, 0]) / (2 * np.pi) * PERIOD_US
    bins, inverse = np.unique(np.round(times_us / 500.0).astype(np.int64) * 500, return_inverse=True)
    rotations, translations = trajectory.at(bins)
    world = np.einsum("nij,nj->ni", rotations[inverse], ego) + translations[inverse]
    return world, times_us


def sim_samples(clip: Clip) -> tuple[dict[str, list[ImageSample]], list[TimeSample]]:
    """Per camera the keyframe images with their points, and every image for the time check."""
    trajectory = Trajectory(clip)
    sweeps = sorted({s.timestamp_us: s for f in clip.frames for s in f.sweeps}.values(), key=lambda s: s.timestamp_us)
    cache = {s.timestamp_us: deskewed_world_points(s, trajectory) for s in sweeps}
    by_camera: dict[str, list[ImageSample]] = {}
    timed: list[TimeSample] = []
    for frame in clip.frames:
        for name, image in frame.cameras.items():
            t_cam = image.timestamp_us
            # One revolution centred on the exposure, from the sweeps around it.
            parts = [w[np.abs(t - t_cam) <= PERIOD_US / 2] for w, t in (cache[s.timestamp_us] for s in sweeps)]
            world = np.concatenate(parts)
            nearest = min(sweeps, key=lambda s: abs(s.timestamp_us - t_cam))
            lidar_world = nearest.world_SE3_ego @ nearest.ego_SE3_lidar
            ego_SE3_world = image.world_SE3_ego.inverse()
            origin = (ego_SE3_world @ lidar_world).translation
            rgb = image.load()
            by_camera.setdefault(name, []).append(
                ImageSample(ego_SE3_world.transform_points(world), rgb, image.camera, origin)
            )
            timed.append(TimeSample(_points_at_offset(world, trajectory, t_cam), rgb, image.camera, origin))
    return by_camera, timed


def _points_at_offset(world: np.ndarray, trajectory: Trajectory, t_cam_us: int) -> Callable[[float], np.ndarray]:
    def points_at(dt_s: float) -> np.ndarray:
        return trajectory.pose(t_cam_us + round(dt_s * 1e6)).inverse().transform_points(world)

    return points_at


def nuscenes_samples(image: CameraImage, sweep: LidarSweep) -> ImageSample:
    """A real nuScenes image with its sweep (motion-compensated to the sweep time) in the image's ego frame."""
    ego_SE3_lidar = image.world_SE3_ego.inverse() @ sweep.world_SE3_ego @ sweep.ego_SE3_lidar
    return ImageSample(
        ego_SE3_lidar.transform_points(sweep.load_points()), image.load(), image.camera, ego_SE3_lidar.translation
    )


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


# ------------------------------------------------------------------------------------------ real data
@pytest.mark.real_data
def test_real_nuscenes_sample_is_not_flagged(nuscenes_sample_root: Path, record_property) -> None:
    clip = load_nuscenes_clip(nuscenes_sample_root, SCENE)
    frame = clip.frames[0]
    results = [check_extrinsics([nuscenes_samples(image, frame.key_sweep)]) for image in frame.cameras.values()]
    # The sweep is motion-compensated to its own time; the cameras fire 0.5-43 ms before it.
    sweep, trajectory = frame.key_sweep, Trajectory(clip)
    world = (sweep.world_SE3_ego @ sweep.ego_SE3_lidar).transform_points(sweep.load_points())
    timed = [
        TimeSample(
            _points_at_offset(world, trajectory, image.timestamp_us),
            sample.image_rgb,
            image.camera,
            sample.lidar_origin_ego,
        )
        for image, sample in ((image, nuscenes_samples(image, sweep)) for image in frame.cameras.values())
    ]
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
