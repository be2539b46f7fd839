"""Calibration QA of a fused clip: lidar-camera edge alignment per camera and a time-offset check.

The algorithms are in :mod:`fusion.calib_qa`; this module picks the frames, builds the samples from
the fusion stage's de-skewed world points and packs the verdict for the artifact manifest.

For an image exposed at ``t_cam`` the lidar points are those captured within half a revolution of
``t_cam`` (when the source gives per-point timing), else the sweep nearest in time; they are taken
from the world frame into the ego frame at the exposure, so ego motion between lidar and camera is
compensated and only the calibration (or the clock) is left to explain a misfit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from autolabel.datasets.model import Clip, LidarSweep
from autolabel.fuse import FusedSweeps
from calibration import SE3, InputError
from fusion.aggregate import PoseTrack
from fusion.calib_qa import (
    CameraQA,
    ExtrinsicsCheckConfig,
    ImageSample,
    PreparedImages,
    TimeCheckConfig,
    TimeOffsetQA,
    TimeSample,
    check_extrinsics,
    check_time_offset,
)


@dataclass(frozen=True)
class QAConfig:
    """Calibration QA settings.

    Attributes:
        max_frames: keyframes used, evenly spread over the clip (each contributes all its cameras).
        extrinsics: decision rule of the per-camera extrinsics check.
        time: offsets tried by the time check and its decision rule.
    """

    max_frames: int = 4
    extrinsics: ExtrinsicsCheckConfig = field(default_factory=ExtrinsicsCheckConfig)
    time: TimeCheckConfig = field(default_factory=TimeCheckConfig)

    def __post_init__(self) -> None:
        if self.max_frames < 1:
            raise InputError(f"calibration QA needs max_frames >= 1, got {self.max_frames}")


@dataclass(frozen=True)
class ClipQA:
    """Calibration QA verdict of one clip.

    Attributes:
        cameras: one result per camera with images in the used frames.
        time: the time-offset check, ``None`` when skipped (``time_note`` says why).
        frames: keyframe indices used.
        time_note: why the time check was skipped, empty otherwise.
    """

    cameras: tuple[CameraQA, ...]
    time: TimeOffsetQA | None
    frames: tuple[int, ...]
    time_note: str = ""

    @property
    def flagged(self) -> bool:
        return any(c.flagged for c in self.cameras) or (self.time is not None and self.time.flagged)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form for the manifest (``autolabel info`` reads ``cameras[*].flagged``)."""
        return {
            "flagged": self.flagged,
            "frames": list(self.frames),
            "cameras": {c.camera: asdict(c) for c in self.cameras},
            "time": asdict(self.time) if self.time is not None else {"skipped": self.time_note},
        }


def qa_frames(num_frames: int, max_frames: int) -> tuple[int, ...]:
    """Up to ``max_frames`` keyframe indices evenly spread over ``num_frames`` (first and last included)."""
    if num_frames <= max_frames:
        return tuple(range(num_frames))
    return tuple(int(i) for i in np.unique(np.round(np.linspace(0, num_frames - 1, max_frames)).astype(int)))


def _clip_pose_track(clip: Clip) -> PoseTrack:
    stamped: dict[int, SE3] = {}
    for frame in clip.frames:
        for sweep in frame.sweeps:
            stamped.setdefault(sweep.timestamp_us, sweep.world_SE3_ego)
        for image in frame.cameras.values():
            stamped.setdefault(image.timestamp_us, image.world_SE3_ego)
    times = sorted(stamped)
    return PoseTrack.from_poses(times, [stamped[t] for t in times])


def _points_at_offset(world: np.ndarray, track: PoseTrack, t_cam_us: int) -> Callable[[float], np.ndarray]:
    """``dt_s -> (N, 3)`` the world points in the ego frame at ``t_cam_us + dt_s``."""

    def points_at(dt_s: float) -> np.ndarray:
        rotations, translations = track.interpolate(np.array([t_cam_us + dt_s * 1e6]))
        return SE3(rotations[0], translations[0]).inverse().transform_points(world)

    return points_at


def image_samples(
    clip: Clip, fused: FusedSweeps, frames: Sequence[int]
) -> tuple[dict[str, list[ImageSample]], list[TimeSample]]:
    """Per camera the images of ``frames`` with their lidar points, and the same images for the time check."""
    if not clip.has_poses:
        raise InputError(f"clip {clip.name}: calibration QA needs ego poses (run odometry first)")
    track = _clip_pose_track(clip)
    sweeps: list[LidarSweep] = [s for f in clip.frames for s in f.sweeps]
    if len(sweeps) != len(fused.sweep_world):
        raise InputError(f"clip {clip.name}: fused data has {len(fused.sweep_world)} sweeps, the clip {len(sweeps)}")
    sweep_times = fused.sweep_timestamp_us.astype(np.float64)
    periods = {s.rotation_period_s for s in sweeps}
    period_us = None if None in periods else max(periods) * 1e6
    by_camera: dict[str, list[ImageSample]] = {}
    timed: list[TimeSample] = []
    for index in frames:
        for name, image in clip.frames[index].cameras.items():
            t_cam = image.timestamp_us
            nearest = int(np.argmin(np.abs(sweep_times - t_cam)))
            world = fused.sweep_world[nearest]
            if period_us is not None:  # one revolution centred on the exposure, from the sweeps around it
                parts = []
                for k in np.nonzero(np.abs(sweep_times - t_cam) <= period_us)[0]:
                    captured_us = sweep_times[k] + fused.sweep_time_offset_s[k].astype(np.float64) * 1e6
                    parts.append(fused.sweep_world[k][np.abs(captured_us - t_cam) <= period_us / 2])
                if sum(len(p) for p in parts) > 0:  # else the exposure is beyond the clip's sweeps
                    world = np.concatenate(parts)
            ego_SE3_world = image.world_SE3_ego.inverse()
            lidar = sweeps[nearest]
            origin = (ego_SE3_world @ lidar.world_SE3_ego @ lidar.ego_SE3_lidar).translation
            rgb = image.load()
            by_camera.setdefault(name, []).append(
                ImageSample(ego_SE3_world.transform_points(world), rgb, image.camera, origin)
            )
            timed.append(TimeSample(_points_at_offset(world, track, t_cam), rgb, image.camera, origin))
    return by_camera, timed


def calibration_qa(clip: Clip, fused: FusedSweeps, config: QAConfig | None = None) -> ClipQA:
    """Check every camera's extrinsics and the camera clock against the lidar on a few keyframes.

    The time check is skipped when the clip's timestamps were made up from a frame rate (KITTI).
    """
    config = config or QAConfig()
    frames = qa_frames(len(clip), config.max_frames)
    by_camera, timed = image_samples(clip, fused, frames)
    prepared = PreparedImages()  # both checks score the same images with the same points
    cameras = tuple(check_extrinsics(samples, config.extrinsics, prepared) for samples in by_camera.values())
    if clip.timestamps_synthetic:
        return ClipQA(cameras, None, frames, "timestamps are synthetic (made from the frame rate)")
    return ClipQA(cameras, check_time_offset(timed, config.time, prepared), frames)
