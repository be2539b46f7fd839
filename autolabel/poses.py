"""Ego poses for clips that have none: lidar odometry over every sweep, written back into the clip.

KITTI tracking sequences without oxts (and any source without poses) get ``world_SE3_ego`` for every
sweep, keyframe and camera image from :func:`fusion.odometry.estimate_odometry`; ``world`` is then the
first sweep's ego frame. The quality figures travel with the result into the artifact manifest.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np

from autolabel.datasets.model import Clip, LidarSweep
from calibration import SE3, InputError
from fusion.aggregate import PoseTrack, time_offsets_from_azimuth
from fusion.odometry import OdometryConfig, OdometryResult, estimate_odometry, path_length_m

log = logging.getLogger(__name__)

MAX_REPORTED_WARNINGS = 20


def clip_sweeps(clip: Clip) -> list[LidarSweep]:
    """The clip's distinct sweeps in time order (a sweep listed by two frames counts once)."""
    by_time = {s.timestamp_us: s for f in clip.frames for s in f.sweeps}
    return [by_time[t] for t in sorted(by_time)]


def _pose(track: PoseTrack, timestamp_us: int) -> SE3:
    rotations, translations = track.interpolate(np.array([timestamp_us]))
    return SE3(rotations[0], translations[0])


def with_poses(clip: Clip, track: PoseTrack) -> Clip:
    """The clip with every sweep, frame and image pose taken from ``track`` (interpolated at its time)."""
    frames = []
    for frame in clip.frames:
        sweeps = tuple(dataclasses.replace(s, world_SE3_ego=_pose(track, s.timestamp_us)) for s in frame.sweeps)
        cameras = {
            name: dataclasses.replace(image, world_SE3_ego=_pose(track, image.timestamp_us))
            for name, image in frame.cameras.items()
        }
        frames.append(
            dataclasses.replace(frame, sweeps=sweeps, cameras=cameras, world_SE3_ego=_pose(track, frame.timestamp_us))
        )
    return dataclasses.replace(clip, frames=tuple(frames))


def without_poses(clip: Clip) -> Clip:
    """The clip with every pose removed (to recompute them with odometry, or to evaluate the odometry)."""
    frames = tuple(
        dataclasses.replace(
            frame,
            world_SE3_ego=None,
            sweeps=tuple(dataclasses.replace(s, world_SE3_ego=None) for s in frame.sweeps),
            cameras={n: dataclasses.replace(i, world_SE3_ego=None) for n, i in frame.cameras.items()},
        )
        for frame in clip.frames
    )
    return dataclasses.replace(clip, frames=frames)


def odometry_poses(clip: Clip, config: OdometryConfig | None = None) -> tuple[Clip, OdometryResult]:
    """Estimate ego poses with lidar odometry over all sweeps of ``clip``.

    Sweeps with known per-point timing (``rotation_period_s``) are de-skewed during registration.

    Returns:
        The clip with poses filled in (``world`` = the first sweep's ego frame) and the odometry result,
        one entry per sweep of :func:`clip_sweeps`.
    """
    config = config or OdometryConfig()
    sweeps = clip_sweeps(clip)
    raw = [s.load_points() for s in sweeps]
    scans = [s.ego_SE3_lidar.transform_points(points) for s, points in zip(sweeps, raw, strict=True)]
    timed = [s.rotation_period_s is not None for s in sweeps]
    offsets = None
    if all(timed):
        offsets = [
            time_offsets_from_azimuth(points, s.ego_SE3_lidar, s.rotation_period_s)
            for s, points in zip(sweeps, raw, strict=True)
        ]
    elif any(timed):
        raise InputError(f"clip {clip.name}: only some sweeps give per-point timing; cannot de-skew consistently")
    result = estimate_odometry(scans, [s.timestamp_us for s in sweeps], config, point_time_offsets_s=offsets)
    for line in result.warnings[:MAX_REPORTED_WARNINGS]:
        log.warning("clip %s: odometry degraded at %s", clip.name, line)
    track = PoseTrack.from_poses([s.timestamp_us for s in sweeps], result.world_SE3_ego)
    return with_poses(clip, track), result


def odometry_summary(result: OdometryResult, config: OdometryConfig) -> dict[str, Any]:
    """JSON-ready figures of an odometry run for the manifest and ``autolabel info``."""
    return {
        "source": "lidar odometry (scan-to-map point-to-plane ICP)",
        "steps": len(result),
        "degraded_steps": int(result.degraded.sum()),
        "path_length_m": round(path_length_m(result.world_SE3_ego), 3),
        "median_fitness": float(np.median(result.fitness[1:])) if len(result) > 1 else 1.0,
        "max_rmse_m": float(result.rmse_m.max()),
        "min_observability": float(result.observability.min()),
        "warnings": list(result.warnings[:MAX_REPORTED_WARNINGS]),
        "warnings_total": len(result.warnings),
        "parameters": dataclasses.asdict(config),
    }
