"""Per-clip fusion artifacts in zarr v3, written atomically.

Layout of ``<workspace>/clips/<clip-id>.zarr``::

    manifest.json                 versions, parameters, source, counts; written last ("complete": true)
    sweeps/offsets (S+1,) int64   row ranges of each sweep in the ragged arrays below
    sweeps/points  (P, 4) f4      raw lidar points as read (lidar frame), chunked by rows
    sweeps/world   (P, 3) f4      de-skewed world coordinates minus ``world_origin_m`` (attribute)
    sweeps/time_offset_s (P,) f4  capture time minus sweep time
    sweeps/rgb     (P, 3) u1      painted colour (0 where unpainted); sweeps/camera (P,) i2 camera index or -1
    sweeps/timestamp_us, sweeps/frame (S,)
    keyframes/sweep_range (F, 2)  half-open sweep ranges forming each keyframe cloud (its index)
    keyframes/world_SE3_ego (F, 4, 4) f8
    bev/keyframes (F, C, H, W) f4 one chunk per keyframe; bev/clip (C, H, W) f4 (grid in attributes)
    odometry/*                    only when poses came from lidar odometry: per sweep world_SE3_ego (S, 4, 4),
                                  fitness, rmse_m, observability, degraded (summary in the manifest)

Reading one keyframe touches only the chunks holding its rows. The store is written to a temporary
folder beside the target and renamed into place after the manifest, so a crash never leaves a clip
that opens as complete.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import cached_property
from importlib import metadata
from pathlib import Path
from typing import Any

import numba
import numpy as np
import zarr
from zarr.codecs import BloscCodec

from autolabel.datasets.model import Clip
from autolabel.fileio import atomic_directory
from autolabel.fuse import FuseConfig, FusedClip, FusedSweeps
from calibration import SE3, InputError
from fusion.aggregate import combine, point_dt_s
from fusion.bev import BEV_CHANNELS
from fusion.odometry import OdometryResult

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
# 262,144 rows per chunk (4 MB of points): fewer, larger chunks write twice as fast as 65,536-row ones and still
# read a keyframe (~300 k rows) from two or three chunks (20 s simulated clip: write 2.1 s against 4.5-5.0 s,
# 40 keyframe clouds 1.7 against 2.1 s; 2^19 and 2^20 rows were slower at both).
ROWS_PER_CHUNK = 1 << 18
# LZ4 over byte-shuffled values: reads about twice as fast as zarr's default zstd at a smaller size
# (20 s simulated clip, 12.5 M points: 1.0 s against 2.0 s to read the point arrays, 296 against 323 MB).
COMPRESSORS = (BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),)


def clip_id(clip: Clip) -> str:
    """File-system-safe id of a clip: ``<source>-<name>``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{clip.source.value}-{clip.name}")


def artifact_path(home: Path, clip: Clip) -> Path:
    return Path(home) / "clips" / f"{clip_id(clip)}.zarr"


@dataclass(frozen=True, eq=False)
class SweepArrays:
    """The per-point arrays of a clip's sweeps, concatenated in sweep order, exactly as stored under ``sweeps/``.

    Attributes:
        offsets: (S+1,) int64 row ranges of each sweep.
        points: (P, 4) float32 raw lidar points (lidar frame).
        world: (P, 3) float32 de-skewed world coordinates minus ``world_origin_m``.
        time_offset_s: (P,) float32 capture time minus sweep time.
        rgb: (P, 3) uint8 painted colour; camera: (P,) int16 camera index or -1.
        world_origin_m: (3,) float64 whole metres near the mean of the world points.
    """

    offsets: np.ndarray
    points: np.ndarray
    world: np.ndarray
    time_offset_s: np.ndarray
    rgb: np.ndarray
    camera: np.ndarray
    world_origin_m: np.ndarray

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):  # shared with readers (and forked workers): nobody edits them
            getattr(self, field.name).flags.writeable = False


def _concatenated(parts: list[np.ndarray], dtype: str, offset: np.ndarray | None = None) -> np.ndarray:
    """``parts`` stacked along rows into one array of ``dtype`` (minus ``offset``), without temporaries."""
    tail = parts[0].shape[1:] if parts else ()
    out = np.empty((sum(len(p) for p in parts), *tail), dtype)
    row = 0
    for part in parts:
        if offset is None:
            out[row : row + len(part)] = part
        else:
            np.subtract(part, offset, out=out[row : row + len(part)], casting="unsafe")
        row += len(part)
    return out


def _world_origin(sweep_world: list[np.ndarray]) -> np.ndarray:
    """(3,) whole metres near the mean of all (N_s, 3) world points: stored coordinates are offsets from it."""
    count = sum(len(w) for w in sweep_world)
    if count == 0:
        return np.zeros(3)
    return np.floor(np.sum([w.sum(axis=0) for w in sweep_world], axis=0) / count)


def sweep_arrays(fused: FusedSweeps) -> SweepArrays:
    """The arrays :func:`write_artifacts` stores for ``fused``'s sweeps."""
    sizes = np.array([len(p) for p in fused.sweep_points], dtype=np.int64)
    origin = _world_origin(fused.sweep_world)
    return SweepArrays(
        offsets=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
        points=_concatenated(fused.sweep_points, "float32"),
        world=_concatenated(fused.sweep_world, "float32", origin),
        time_offset_s=_concatenated(fused.sweep_time_offset_s, "float32"),
        rgb=_concatenated(fused.sweep_rgb, "uint8"),
        camera=_concatenated(fused.sweep_view, "int16"),
        world_origin_m=origin,
    )


def _ragged(group: zarr.Group, name: str, data: np.ndarray) -> None:
    chunks = (ROWS_PER_CHUNK, *data.shape[1:])
    group.create_array(name, data=data, chunks=chunks, compressors=COMPRESSORS)


def write_artifacts(
    path: Path,
    clip: Clip,
    fused: FusedClip,
    config: FuseConfig,
    extra: dict[str, Any] | Callable[[], dict[str, Any]] | None = None,
    odometry: OdometryResult | None = None,
    arrays: SweepArrays | None = None,
) -> Path:
    """Write the fused clip to ``path`` atomically (temp folder, manifest last, rename).

    ``extra`` entries go into the manifest (``odometry`` and ``qa`` summaries, the device, ...); given as a
    function, it is called once the arrays are written (it may wait for work done meanwhile). ``odometry``
    per-step figures go into the ``odometry`` group. ``arrays``: ``sweep_arrays(fused)`` when the caller
    keeps them (see :func:`open_artifacts`); made here otherwise.
    """
    path = Path(path)
    arrays = arrays if arrays is not None else sweep_arrays(fused)
    with atomic_directory(path) as staging:
        root = zarr.open_group(store=str(staging), mode="w", zarr_format=3)
        sweeps = root.create_group("sweeps")
        sweeps.create_array("offsets", data=arrays.offsets)
        for name in ("points", "world", "time_offset_s", "rgb", "camera"):
            _ragged(sweeps, name, getattr(arrays, name))
        sweeps.create_array("timestamp_us", data=fused.sweep_timestamp_us)
        sweeps.create_array("frame", data=fused.sweep_frame)
        sweeps.attrs.update({"world_origin_m": arrays.world_origin_m.tolist(), "cameras": list(clip.rig.cameras)})
        keyframes = root.create_group("keyframes")
        keyframes.create_array("sweep_range", data=fused.keyframe_sweeps.astype(np.int64))
        keyframes.create_array("world_SE3_ego", data=fused.world_SE3_ego)
        keyframes.create_array("timestamp_us", data=np.array([f.timestamp_us for f in clip.frames], np.int64))
        bev = root.create_group("bev")
        bev.create_array(
            "keyframes", data=fused.keyframe_bev, chunks=(1, *fused.keyframe_bev.shape[1:]), compressors=COMPRESSORS
        )
        bev.create_array("clip", data=fused.clip_bev, compressors=COMPRESSORS)
        bev.attrs.update(
            {
                "channels": list(BEV_CHANNELS),
                "keyframe_grid": asdict(config.keyframe_bev),
                "clip_grid": asdict(fused.clip_bev_grid),
            }
        )
        if odometry is not None:
            group = root.create_group("odometry")
            group.create_array("world_SE3_ego", data=np.stack([p.as_matrix() for p in odometry.world_SE3_ego]))
            for name in ("fitness", "rmse_m", "observability", "degraded"):
                group.create_array(name, data=np.asarray(getattr(odometry, name)))
        manifest = {
            "complete": True,
            "format_version": FORMAT_VERSION,
            "autolabel_version": metadata.version("autolabel"),
            "zarr_version": zarr.__version__,
            "clip": {
                "name": clip.name,
                "source": clip.source.value,
                "root": str(clip.root),
                "frames": len(clip),
                "meta": dict(clip.meta),
            },
            "parameters": asdict(config),
            "counts": {"sweeps": len(fused.sweep_points), "points": int(arrays.offsets[-1]), "keyframes": len(clip)},
            **((extra() if callable(extra) else extra) or {}),
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1, default=str))
    return path


@dataclass(frozen=True, eq=False)
class ClipArtifacts:
    """Read access to a written clip; arrays are read lazily, a frame at a time.

    ``arrays``: the sweeps' per-point arrays when the process that wrote them still holds them (the pipeline,
    straight after fusion); they are then read from memory instead of being decompressed from the store.
    """

    path: Path
    manifest: dict[str, Any]
    root: zarr.Group
    arrays: SweepArrays | None = None

    @cached_property
    def _layout(self) -> dict[str, np.ndarray]:
        """The small per-sweep and per-keyframe arrays every read needs, read once: ``sweeps/offsets``,
        ``sweeps/timestamp_us``, ``keyframes/sweep_range``, ``keyframes/timestamp_us``, ``keyframes/world_SE3_ego``
        and the (3,) ``world_origin_m`` (one zarr read costs about half a millisecond)."""
        names = ("sweeps/offsets", "sweeps/timestamp_us", "keyframes/sweep_range", "keyframes/timestamp_us")
        layout = {name: self.root[name][:] for name in (*names, "keyframes/world_SE3_ego")}
        layout["world_origin_m"] = np.asarray(self.root["sweeps"].attrs["world_origin_m"], dtype=np.float64)
        for value in layout.values():
            value.flags.writeable = False
        return layout

    @property
    def num_sweeps(self) -> int:
        return int(self._layout["sweeps/offsets"].shape[0] - 1)

    @property
    def num_keyframes(self) -> int:
        return int(self._layout["keyframes/sweep_range"].shape[0])

    @cached_property
    def _stored_per_point(self) -> dict[str, zarr.Array]:
        group = self.root["sweeps"]
        return {name: group[name] for name in ("points", "world", "time_offset_s", "rgb", "camera")}

    def _per_point(self, name: str) -> np.ndarray | zarr.Array:
        """One per-point array of ``sweeps/`` (sliced like a numpy array either way)."""
        return self._stored_per_point[name] if self.arrays is None else getattr(self.arrays, name)

    def _rows(self, sweep: int) -> slice:
        if not 0 <= sweep < self.num_sweeps:
            raise InputError(f"{self.path}: sweep {sweep} out of range (0..{self.num_sweeps - 1})")
        start, stop = self._layout["sweeps/offsets"][sweep : sweep + 2]
        return slice(int(start), int(stop))

    def sweep(self, sweep: int) -> dict[str, np.ndarray]:
        """One sweep's arrays: ``points`` (N, 4), ``world`` (N, 3) float64, ``time_offset_s``, ``rgb``, ``camera``."""
        rows = self._rows(sweep)
        origin = self._layout["world_origin_m"]
        return {
            "points": np.array(self._per_point("points")[rows]),
            "world": self._per_point("world")[rows].astype(np.float64) + origin,
            "time_offset_s": np.array(self._per_point("time_offset_s")[rows]),
            "rgb": np.array(self._per_point("rgb")[rows]),
            "camera": np.array(self._per_point("camera")[rows]),
        }

    def world_SE3_ego(self, frame: int) -> SE3:
        return SE3.from_matrix(self._layout["keyframes/world_SE3_ego"][frame])

    def keyframe_poses(self) -> list[SE3]:
        """Every keyframe's ``world_SE3_ego``."""
        return [SE3.from_matrix(m) for m in self._layout["keyframes/world_SE3_ego"]]

    def keyframe_cloud(self, frame: int) -> tuple[np.ndarray, np.ndarray]:
        """(M, 5) float32 ``x, y, z, intensity, dt_s`` in the keyframe's ego frame and (M, 3) uint8 colours."""
        if not 0 <= frame < self.num_keyframes:
            raise InputError(f"{self.path}: keyframe {frame} out of range (0..{self.num_keyframes - 1})")
        layout = self._layout
        start, stop = (int(v) for v in layout["keyframes/sweep_range"][frame])
        timestamps = layout["sweeps/timestamp_us"][start:stop]
        ref_us = int(layout["keyframes/timestamp_us"][frame])
        # The keyframe's sweeps are consecutive rows of the ragged arrays: one read per array, then split.
        offsets = layout["sweeps/offsets"][start : stop + 1]
        rows = slice(int(offsets[0]), int(offsets[-1]))
        cuts = (offsets[1:-1] - offsets[0]).astype(np.int64)
        world = self._per_point("world")[rows].astype(np.float64) + layout["world_origin_m"]
        intensity = self._per_point("points")[rows][:, 3]
        offsets_s = np.split(self._per_point("time_offset_s")[rows], cuts)
        cloud = combine(
            np.split(world, cuts),
            np.split(intensity, cuts),
            [point_dt_s(int(t), o, len(o), ref_us) for t, o in zip(timestamps, offsets_s, strict=True)],
            self.world_SE3_ego(frame),
        )
        return cloud, np.array(self._per_point("rgb")[rows])

    def world_clouds(self) -> list[np.ndarray]:
        """Per keyframe its multi-sweep cloud in the world frame, (M, 5) float32 ``x, y, z, intensity, dt_s``.

        Reads each ragged array once for all keyframes (whole-clip consumers, e.g. trajectory refinement).
        float32 keeps world coordinates to 1 mm within 16 km of the world origin at half the memory of float64
        (20 s simulated clip: 12.5 M points, 250 MB), filled in one compiled pass per keyframe.
        """
        layout = self._layout
        offsets, origin = layout["sweeps/offsets"], layout["world_origin_m"]
        world = self._per_point("world")[:]
        intensity = np.ascontiguousarray(self._per_point("points")[:, 3])
        time_offset = self._per_point("time_offset_s")[:]
        sweep_times, key_times = layout["sweeps/timestamp_us"], layout["keyframes/timestamp_us"]
        clouds = []
        for (start, stop), ref_us in zip(layout["keyframes/sweep_range"], key_times, strict=True):
            rows = slice(int(offsets[start]), int(offsets[stop]))
            sweep_dt_s = (sweep_times[start:stop] - ref_us) / 1e6
            sweep_rows = np.diff(offsets[start : stop + 1])
            clouds.append(_world_cloud(world[rows], origin, intensity[rows], time_offset[rows], sweep_dt_s, sweep_rows))
        return clouds

    def keyframe_bev(self, frame: int) -> np.ndarray:
        """(C, H, W) float32 raster of one keyframe."""
        return self.root["bev/keyframes"][frame]


@numba.njit(cache=True)
def _world_cloud(
    world: np.ndarray,
    origin: np.ndarray,
    intensity: np.ndarray,
    time_offset_s: np.ndarray,
    sweep_dt_s: np.ndarray,
    sweep_rows: np.ndarray,
) -> np.ndarray:
    """(M, 5) float32 ``x, y, z, intensity, dt_s`` of one keyframe in one pass over its M rows: stored world
    offsets (M, 3) plus ``origin`` (3,), ``intensity`` (M,), and each row's sweep time relative to the keyframe
    (``sweep_dt_s`` (K,) for runs of ``sweep_rows`` (K,) rows) plus its ``time_offset_s`` (M,)."""
    out = np.empty((world.shape[0], 5), dtype=np.float32)
    row = 0
    for sweep in range(sweep_dt_s.shape[0]):
        for _ in range(sweep_rows[sweep]):
            for axis in range(3):
                out[row, axis] = np.float64(world[row, axis]) + origin[axis]
            out[row, 3] = intensity[row]
            out[row, 4] = sweep_dt_s[sweep] + np.float64(time_offset_s[row])
            row += 1
    return out


def open_artifacts(path: Path, arrays: SweepArrays | None = None) -> ClipArtifacts:
    """Open a complete artifact store; a missing, partial or foreign folder is an :class:`InputError`.

    ``arrays``: the :class:`SweepArrays` this store was just written from, kept in memory for the readers.
    """
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise InputError(f"{path}: no complete fusion artifacts (manifest missing; run `autolabel fuse`)")
    manifest = json.loads(manifest_path.read_text())
    if not manifest.get("complete") or manifest.get("format_version") != FORMAT_VERSION:
        raise InputError(f"{path}: artifacts are incomplete or of another format version")
    artifacts = ClipArtifacts(path, manifest, zarr.open_group(store=str(path), mode="r"), arrays)
    if arrays is not None and len(arrays.offsets) != artifacts.num_sweeps + 1:
        raise InputError(f"{path}: the arrays held in memory are not this store's ({len(arrays.offsets) - 1} sweeps)")
    return artifacts
