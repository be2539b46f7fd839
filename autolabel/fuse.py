"""The fusion stage of a clip: de-skewed world sweeps, camera paint, keyframe aggregation, BEV rasters.

This module decides the order of work and reads the clip's files; the algorithms live in ``fusion/``.
The result is written by :mod:`autolabel.artifacts`.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch

from autolabel.datasets.model import Clip, LidarSweep
from calibration import InputError
from fusion.aggregate import PoseTrack, SweepInput, combine, point_dt_s, sweep_to_world, time_offsets_from_azimuth
from fusion.bev import BEV_CHANNELS, BevGrid, rasterize, rasterize_parts, xy_extent
from fusion.paint import CameraView, PaintConfig, paint


@dataclass(frozen=True)
class FuseConfig:
    """Parameters of the fusion stage (recorded in the artifact manifest).

    Attributes:
        sweeps_per_keyframe: how many sweeps (the key sweep and the ones before it) form a keyframe cloud.
        deskew: place each point with the ego pose at its own capture time when the source gives timing.
        paint: painting parameters.
        keyframe_bev: raster around each keyframe's ego.
        clip_bev_resolution_m: resolution of the whole-clip world raster.
        prefetch_frames: frames whose sweeps and images are read and decoded ahead, in a background thread,
            while the current frame is computed (0: read in turn).
    """

    sweeps_per_keyframe: int = 10
    deskew: bool = True
    paint: PaintConfig = field(default_factory=PaintConfig)
    keyframe_bev: BevGrid = field(default_factory=BevGrid)
    clip_bev_resolution_m: float = 0.5
    prefetch_frames: int = 2

    def __post_init__(self) -> None:
        if self.sweeps_per_keyframe < 1:
            raise InputError(f"sweeps per keyframe must be >= 1, got {self.sweeps_per_keyframe}")


@dataclass(frozen=True, eq=False)
class FusedSweeps:
    """The per-sweep part of the fusion stage: de-skewed, painted points (before any raster).

    Attributes:
        sweep_points: S arrays (N_s, 4) float32 raw lidar points as read.
        sweep_world: S arrays (N_s, 3) float64 de-skewed world coordinates.
        sweep_time_offset_s: S arrays (N_s,) float32 capture time minus sweep time (zeros when unknown).
        sweep_rgb: S arrays (N_s, 3) uint8 painted colour (zeros where no camera saw the point).
        sweep_view: S arrays (N_s,) int16 camera index into ``clip.rig.cameras`` that painted it, -1 none.
        sweep_timestamp_us, sweep_frame: (S,) sweep time and owning frame index.
        keyframe_sweeps: (F, 2) int half-open range of sweep indices forming each keyframe cloud.
        world_SE3_ego: (F, 4, 4) float64 keyframe ego poses.
    """

    sweep_points: list[np.ndarray]
    sweep_world: list[np.ndarray]
    sweep_time_offset_s: list[np.ndarray]
    sweep_rgb: list[np.ndarray]
    sweep_view: list[np.ndarray]
    sweep_timestamp_us: np.ndarray
    sweep_frame: np.ndarray
    keyframe_sweeps: np.ndarray
    world_SE3_ego: np.ndarray


@dataclass(frozen=True, eq=False)
class FusedClip(FusedSweeps):
    """Everything the fusion stage computed for one clip: its :class:`FusedSweeps` and the BEV rasters.

    Attributes:
        keyframe_bev: (F, C, H, W) float32 rasters in each keyframe's ego frame.
        clip_bev: (C, H, W) float32 world raster of the whole clip on ``clip_bev_grid``.
    """

    keyframe_bev: np.ndarray
    clip_bev: np.ndarray
    clip_bev_grid: BevGrid


def sweep_input(sweep: LidarSweep, deskew: bool) -> SweepInput:
    points = sweep.load_points()
    if sweep.world_SE3_ego is None:
        raise InputError(f"{sweep.path}: sweep has no ego pose (run lidar odometry first)")
    offsets = None
    if deskew and sweep.rotation_period_s is not None:
        offsets = time_offsets_from_azimuth(points, sweep.ego_SE3_lidar, sweep.rotation_period_s)
    return SweepInput(points, sweep.timestamp_us, sweep.world_SE3_ego, sweep.ego_SE3_lidar, offsets)


def camera_views(clip: Clip, frame_index: int) -> list[CameraView]:
    frame = clip.frames[frame_index]
    return [
        CameraView(
            image.camera, image.load(), image.camera.cam_SE3_ego @ image.world_SE3_ego.inverse(), image.timestamp_us
        )
        for image in frame.cameras.values()
        if image.world_SE3_ego is not None
    ]


def _load_frame(clip: Clip, index: int, deskew: bool) -> tuple[list[SweepInput], list[CameraView]]:
    return [sweep_input(sweep, deskew) for sweep in clip.frames[index].sweeps], camera_views(clip, index)


def _prefetched(clip: Clip, config: FuseConfig) -> Iterator[tuple[list[SweepInput], list[CameraView]]]:
    """Each frame's sweeps and decoded images, in order; up to ``prefetch_frames`` ahead in a thread
    (file reads and JPEG decoding release the GIL, so they overlap the numba/torch work)."""
    if config.prefetch_frames < 1:
        for index in range(len(clip)):
            yield _load_frame(clip, index, config.deskew)
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fuse-read") as pool:
        pending: deque[Future] = deque()
        for index in range(len(clip)):
            pending.append(pool.submit(_load_frame, clip, index, config.deskew))
            if len(pending) > config.prefetch_frames:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


@contextmanager
def _torch_threads(device: torch.device) -> Iterator[None]:
    """On CPU torch runs single-threaded here: the per-frame tensors are small, and intra-op threads made
    a 3 s clip take 25.8 s instead of 3.8 s on the 2-core machine while another process was busy."""
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def fuse_clip(
    clip: Clip,
    device: torch.device,
    config: FuseConfig = FuseConfig(),
    progress: Callable[[int, int], None] | None = None,
) -> FusedClip:
    """Run the fusion stage over a clip with poses (see :mod:`fusion.odometry` for clips without):
    :func:`fuse_sweeps`, then :func:`rasterize_fused`."""
    return rasterize_fused(clip, fuse_sweeps(clip, device, config, progress), device, config, progress)


def fuse_sweeps(
    clip: Clip,
    device: torch.device,
    config: FuseConfig = FuseConfig(),
    progress: Callable[[int, int], None] | None = None,
) -> FusedSweeps:
    """De-skew and paint every sweep of a clip with poses, frame by frame (reads run ahead in a thread).

    ``progress(done, total)`` counts sweeps, and then (in :func:`rasterize_fused`) keyframes.
    """
    if not clip.has_poses:
        raise InputError(f"clip {clip.name}: no ego poses; fusion needs world_SE3_ego for every frame")
    with _torch_threads(device):
        sweeps = [(f.index, s) for f in clip.frames for s in f.sweeps]
        track = PoseTrack.from_poses([s.timestamp_us for _, s in sweeps], [s.world_SE3_ego for _, s in sweeps])
        camera_names = list(clip.rig.cameras)
        out: dict[str, list[np.ndarray]] = {k: [] for k in ("points", "world", "offset", "rgb", "view")}
        total = len(sweeps) + len(clip.frames)
        done = 0
        for inputs, views in _prefetched(clip, config):
            # One paint call per frame: its sweeps (back to the previous keyframe) take the frame's images.
            worlds = [sweep_to_world(x, track) for x in inputs]
            offsets = [
                np.zeros(len(x.points), np.float32) if x.time_offset_s is None else x.time_offset_s for x in inputs
            ]
            times_us = np.concatenate(
                [x.timestamp_us + o.astype(np.float64) * 1e6 for x, o in zip(inputs, offsets, strict=True)]
            )
            painted = paint(np.concatenate(worlds), views, device, point_time_us=times_us, config=config.paint)
            view_camera = np.array([camera_names.index(v.camera.name) for v in views] + [-1], dtype=np.int16)
            bounds = np.cumsum([0] + [len(w) for w in worlds])
            for k, (x, world, offset) in enumerate(zip(inputs, worlds, offsets, strict=True)):
                rows = slice(bounds[k], bounds[k + 1])
                out["points"].append(x.points)
                out["world"].append(world)
                out["offset"].append(offset)
                out["rgb"].append(painted.rgb[rows])
                out["view"].append(view_camera[painted.view_index[rows]])
            done += len(inputs)
            if progress:
                progress(done, total)

        key_index = np.array([i for i, (_, s) in enumerate(sweeps) if s.is_key])
        return FusedSweeps(
            sweep_points=out["points"],
            sweep_world=out["world"],
            sweep_time_offset_s=out["offset"],
            sweep_rgb=out["rgb"],
            sweep_view=out["view"],
            sweep_timestamp_us=np.array([s.timestamp_us for _, s in sweeps], dtype=np.int64),
            sweep_frame=np.array([f for f, _ in sweeps], dtype=np.int32),
            keyframe_sweeps=np.column_stack([np.maximum(key_index + 1 - config.sweeps_per_keyframe, 0), key_index + 1]),
            world_SE3_ego=np.stack([f.world_SE3_ego.as_matrix() for f in clip.frames]),
        )


def rasterize_fused(
    clip: Clip,
    sweeps: FusedSweeps,
    device: torch.device,
    config: FuseConfig = FuseConfig(),
    progress: Callable[[int, int], None] | None = None,
) -> FusedClip:
    """The fused clip: ``sweeps`` with a BEV raster per keyframe (its sweeps in its ego frame) and one of the
    whole clip in the world frame."""
    with _torch_threads(device):
        done, total = len(sweeps.sweep_points), len(sweeps.sweep_points) + len(clip.frames)
        timestamps = sweeps.sweep_timestamp_us
        # Filled in place: a list of rasters stacked afterwards would hold them twice (7 MB each by default).
        keyframe_bev = np.empty((len(clip.frames), len(BEV_CHANNELS), *config.keyframe_bev.shape), np.float32)
        for index, (frame, (start, stop)) in enumerate(zip(clip.frames, sweeps.keyframe_sweeps, strict=True)):
            cloud = combine(
                sweeps.sweep_world[start:stop],
                [p[:, 3] for p in sweeps.sweep_points[start:stop]],
                [
                    point_dt_s(t, o, len(o), frame.timestamp_us)
                    for t, o in zip(timestamps[start:stop], sweeps.sweep_time_offset_s[start:stop], strict=True)
                ],
                frame.world_SE3_ego,
            )
            rgb = np.concatenate(sweeps.sweep_rgb[start:stop])
            keyframe_bev[index] = rasterize(cloud, config.keyframe_bev, device, rgb=rgb)
            done += 1
            if progress:
                progress(done, total)
        lo, hi = xy_extent(sweeps.sweep_world)
        res = config.clip_bev_resolution_m
        ground_z = float(np.median([f.world_SE3_ego.translation[2] for f in clip.frames]))
        clip_grid = BevGrid(
            float(np.floor(lo[0])),
            float(np.floor(lo[0]) + np.ceil((hi[0] - lo[0] + 1) / res) * res),
            float(np.floor(lo[1])),
            float(np.floor(lo[1]) + np.ceil((hi[1] - lo[1] + 1) / res) * res),
            ground_z - 5.0,
            ground_z + 20.0,
            res,
        )
        # Sweep by sweep: no (N, 4) copy of the whole clip.
        parts = list(zip(sweeps.sweep_world, [raw[:, 3] for raw in sweeps.sweep_points], sweeps.sweep_rgb, strict=True))
        return FusedClip(
            **{f.name: getattr(sweeps, f.name) for f in dataclasses.fields(FusedSweeps)},
            keyframe_bev=keyframe_bev,
            clip_bev=rasterize_parts(parts, clip_grid, device),
            clip_bev_grid=clip_grid,
        )
