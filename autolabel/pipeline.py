"""One clip through every stage: read -> fuse (odometry when poses are missing) -> detect -> track -> store.

:func:`run_clip` is the one pipeline function; the CLI, the batch executor and the job worker all call it.
Each stage's output is cached in the workspace under a content hash of its inputs and parameters::

    fusion      <home>/clips/<clip-id>.zarr            manifest["cache_key"] = hash(clip files, fusion params, version)
    detection   <home>/cache/detections/<key>.npz      key = hash(fusion key, detector name and params)
                (with each box's cross-check review flag)
    tracking    <home>/cache/tracks/<key>.npz          key = hash(detection key, tracker params, mode)

so re-running after changing only tracking parameters reuses fusion and detection. Labels go to the label
store in one transaction per clip (:meth:`autolabel.store.LabelStore.write_prelabels`), each track with the
counts of its detected boxes' review flags (:func:`track_review_flags`) for the review queue.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import itertools
import json
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from autolabel.artifacts import ClipArtifacts, artifact_path, open_artifacts
from autolabel.categories import Category
from autolabel.datasets.model import Clip, ClipSource
from autolabel.detect import Detections3D, DetectorInput, GeometricDetector, make_detector
from autolabel.detect.crosscheck import CameraPose, CrossCheckConfig, ReviewFlag, cross_check
from autolabel.fileio import atomic_write_bytes
from autolabel.fusion_stage import FusionStageConfig, run_fusion_stage
from autolabel.labels import track_labels
from autolabel.parallel import forked_map
from autolabel.store import ClipKey, FrameRecord, LabelStore, Provenance
from calibration import EGO_FRAME, SE3, WORLD_FRAME, Boxes3D, InputError
from tracking import (
    VEHICLE_CLASSES,
    BoxSource,
    ClipLidar,
    Detections,
    LifeCycle,
    OffboardConfig,
    RefineConfig,
    RefinedTrack,
    Track,
    TrackerConfig,
    TrackingMode,
    refine_tracks,
    track_clip,
)

CACHE_FORMAT = 2  # 2: detection caches hold review flags


class Stage(str, Enum):
    READ = "read"
    FUSION = "fusion"
    DETECTION = "detection"
    TRACKING = "tracking"
    REFINEMENT = "refinement"
    STORE = "store"


@dataclass(frozen=True)
class ClipSpec:
    """Where a clip comes from: a nuScenes dataroot and scene, or a KITTI tracking root and sequence."""

    source: ClipSource
    root: Path
    name: str
    version: str | None = None

    def load(self) -> Clip:
        if self.source is ClipSource.NUSCENES:
            from autolabel.datasets.nuscenes import load_nuscenes_clip

            return load_nuscenes_clip(self.root, self.name, version=self.version)
        if self.source is ClipSource.KITTI:
            from autolabel.datasets.kitti import load_kitti_clip

            return load_kitti_clip(self.root, self.name)
        raise InputError(f"clip source {self.source.value!r} cannot be read by the pipeline")

    def __str__(self) -> str:
        return f"{self.source.value}:{self.root}:{self.name}"


# The tracker on 2 Hz keyframes with the built-in detector's scores (median ~0.35): tracks start from
# detections scoring 0.3 and live from two of them. On a 20 s simulated urban clip this raised offboard
# AMOTA from 0.469 (library defaults) to 0.502 and car AP from 0.49 to 0.58 (scripts/bench_pipeline.py).
# A vehicle track takes a confident detection only where the footprints overlap (GIoU >= 0, the library
# default -0.5 also admits the neighbour in a row of parked cars 0.6 m apart, GIoU about -0.15): where a
# car's own detection was missing, its track took the neighbour's and the two tracks merged. On the tracking
# suite (scripts/bench_tracking.py) car AMOTA went from 0.715 to 0.798 on seed 0 and from 0.757 to 0.796 on
# seed 2 (not tuned on), car ID switches from 13 to 1 and from 11 to 2.
# Both offboard passes confirm a track at its first detection (min_hits 1): a tentative track does not take
# low-score detections, so a sparse far car (one confident detection, then scores of 0.1-0.3) was left to
# the other pass or lost. Car AMOTA 0.805 -> 0.829 on seed 0 and 0.805 -> 0.828 on seed 2, ID switches
# unchanged (1 and 4); one-off detections are still removed by the two-detection minimum.
KEYFRAME_TRACKER = TrackerConfig(
    high_score_threshold=0.3,
    offboard=OffboardConfig(min_detections=2, min_track_score=0.15, life=LifeCycle(min_hits=1, max_age_s=3.0)),
).with_class_changes(VEHICLE_CLASSES, min_giou=0.0)


@dataclass(frozen=True)
class PipelineConfig:
    """All stage parameters (hashed for the caches and the labels' provenance).

    Attributes:
        fusion: poses, fusion and calibration QA.
        detector: name in :data:`autolabel.detect.DETECTORS`.
        detector_config: that detector's own configuration (None: its defaults; the mmdet3d detector needs an
            :class:`autolabel.detect.Mmdet3dConfig`).
        tracker: tracker parameters.
        tracking_mode: offboard (default) or the online baseline.
        cross_check: rescore every detection by its camera and lidar support (free space, colour, points).
        refine: trajectory refinement against the lidar (``None`` keeps the tracker's boxes; the online
            baseline is never refined).
    """

    fusion: FusionStageConfig = field(default_factory=FusionStageConfig)
    detector: str = "geometric"
    detector_config: Any = None
    tracker: TrackerConfig = field(default_factory=lambda: KEYFRAME_TRACKER)
    tracking_mode: TrackingMode = TrackingMode.OFFBOARD
    cross_check: bool = True
    refine: RefineConfig | None = field(default_factory=RefineConfig)

    def __post_init__(self) -> None:
        if self.tracking_mode is TrackingMode.ONLINE and self.refine is not None:
            object.__setattr__(self, "refine", None)
        make_detector(self.detector, self.detector_config)  # an unknown name or a missing model fails here


@dataclass(frozen=True)
class StageReport:
    stage: Stage
    seconds: float
    cached: bool
    detail: str = ""


@dataclass(frozen=True)
class RunSummary:
    """What one clip's run did (JSON-ready through :meth:`as_dict`)."""

    clip: str
    source: str
    run_id: int
    parameters_hash: str
    stages: tuple[StageReport, ...]
    frames: int
    detections: int
    tracks: int
    boxes: int
    artifacts: str

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.stages)

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["stages"] = [{**dataclasses.asdict(s), "stage": s.stage.value} for s in self.stages]
        out["seconds"] = self.seconds
        return out


Progress = Callable[[str, int, int | None], None]


# ------------------------------------------------------------------------------------------ hashing
def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return value


def content_hash(*parts: Any) -> str:
    """Stable 16-hex-digit hash of JSON-able parts (dataclasses, enums, arrays included)."""
    text = json.dumps([_jsonable(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@lru_cache(maxsize=1)
def code_version() -> str:
    """The package version, plus the git commit when running from a checkout; a checkout with uncommitted changes
    adds ``.dirty`` and a hash of them (tracked changes and untracked files), so stage caches made by other
    uncommitted code are not reused."""
    version = metadata.version("autolabel")
    repo = Path(__file__).resolve().parents[1]
    if not (repo / ".git").exists():
        return version

    def git(*args: str) -> bytes:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, check=True).stdout

    try:
        sha = git("rev-parse", "--short=12", "HEAD").decode().strip()
        diff = git("diff", "HEAD", "--binary")
        untracked = git("ls-files", "--others", "--exclude-standard", "-z").split(b"\0")
    except (OSError, subprocess.CalledProcessError):
        return version
    if not diff and not any(untracked):
        return f"{version}+g{sha}"
    digest = hashlib.sha256(diff)
    for name in sorted(n for n in untracked if n):
        path = repo / name.decode()
        if path.is_file():  # contents of small files (sources); size and time of big ones (data dropped in)
            stat = path.stat()
            content = path.read_bytes() if stat.st_size <= 1 << 20 else f"{stat.st_size}:{stat.st_mtime_ns}".encode()
            digest.update(name + b"\0" + content)
    return f"{version}+g{sha}.dirty{digest.hexdigest()[:8]}"


def clip_fingerprint(clip: Clip) -> dict[str, Any]:
    """Identity of a clip's input files: every sweep and image path with its size and modification time."""
    files = [s.path for f in clip.frames for s in f.sweeps] + [i.path for f in clip.frames for i in f.cameras.values()]
    stats = []
    for path in dict.fromkeys(files):
        try:
            st = path.stat()
        except FileNotFoundError:
            kind = "point" if path.suffix == ".bin" else "image"
            raise InputError(f"{path}: {kind} file not found (clip {clip.name})") from None
        stats.append((str(path), st.st_size, st.st_mtime_ns))
    return {
        "source": clip.source.value,
        "name": clip.name,
        "root": str(clip.root),
        "frames": [(f.token, f.timestamp_us) for f in clip.frames],
        "files": hashlib.sha256(json.dumps(stats).encode()).hexdigest(),
    }


# ------------------------------------------------------------------------------------------ caches
def atomic_write_npz(path: Path, **arrays: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


@dataclass(frozen=True, eq=False)
class DetectionStage:
    """The detection stage's output per keyframe: detections (ego frame) and one review flag per detection.

    Attributes:
        detections: per keyframe its B_k detections.
        flags: per keyframe B_k cross-check flags (all ``OK`` without the cross-check).
    """

    detections: tuple[Detections3D, ...]
    flags: tuple[tuple[ReviewFlag, ...], ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "detections", tuple(self.detections))
        object.__setattr__(self, "flags", tuple(tuple(ReviewFlag(f) for f in frame) for frame in self.flags))
        if [len(d) for d in self.detections] != [len(f) for f in self.flags]:
            raise InputError("detection stage: one review flag per detection is needed in every keyframe")


def unflagged(detections: Detections3D) -> tuple[ReviewFlag, ...]:
    """``OK`` for each of a keyframe's detections (no cross-check, or nothing to check)."""
    return (ReviewFlag.OK,) * len(detections)


def track_review_flags(track: Track, flags: Sequence[Sequence[ReviewFlag]]) -> dict[str, int]:
    """Flag value -> how many of the track's detected boxes carry it (``OK`` left out).

    Args:
        track: its ``frame_indices`` (K,) index ``flags``; ``detection_indices`` (K,) index that frame's flags,
            -1 where not detected.
        flags: per keyframe one flag per detection (:attr:`DetectionStage.flags`).
    """
    detected = zip(track.frame_indices, track.detection_indices, strict=True)
    counts = Counter(flags[int(f)][int(d)].value for f, d in detected if d >= 0)
    counts.pop(ReviewFlag.OK.value, None)
    return dict(counts)


def _save_detections(path: Path, stage: DetectionStage) -> None:
    detections = stage.detections
    counts = np.array([len(d) for d in detections], dtype=np.int64)
    boxes = [d.boxes for d in detections]
    velocity = [b.velocity if b.velocity is not None else np.full((len(b), 2), np.nan) for b in boxes] or [
        np.zeros((0, 2))
    ]
    atomic_write_npz(
        path,
        format=np.array(CACHE_FORMAT),
        counts=counts,
        boxes=np.concatenate([b.data for b in boxes] or [np.zeros((0, 7))]),
        velocity=np.concatenate(velocity),
        scores=np.concatenate([d.scores for d in detections] or [np.zeros(0)]),
        categories=np.array([c.value for d in detections for c in d.categories], dtype=str),
        flags=np.array([f.value for frame in stage.flags for f in frame], dtype=str),
    )


def _load_detections(path: Path) -> DetectionStage | None:
    if not path.is_file():
        return None
    with np.load(path) as data:
        if int(data["format"]) != CACHE_FORMAT:
            return None
        bounds = np.concatenate([[0], np.cumsum(data["counts"])])
        out, flags = [], []
        for start, stop in itertools.pairwise(bounds):
            boxes = Boxes3D(data["boxes"][start:stop], EGO_FRAME, data["velocity"][start:stop])
            categories = tuple(Category(str(c)) for c in data["categories"][start:stop])
            out.append(Detections3D(boxes, data["scores"][start:stop], categories))
            flags.append(tuple(ReviewFlag(str(f)) for f in data["flags"][start:stop]))
        return DetectionStage(tuple(out), tuple(flags))


_TRACK_ROW = ("track_id", "frame", "timestamp_us", "x", "y", "z", "l", "w", "h", "yaw", "vx", "vy", "score",
              "detection", "confidence", "points")  # fmt: skip


def _save_tracks(path: Path, tracks: Sequence[Track]) -> None:
    """Tracks (and refined tracks' confidences, static flags, sizes) as flat arrays, atomically."""
    rows = []
    for t in tracks:
        k = len(t)
        refined = isinstance(t, RefinedTrack)
        rows.append(
            np.column_stack(
                [
                    np.full(k, t.track_id),
                    t.frame_indices,
                    t.timestamps_us,
                    t.boxes.data,
                    _velocity(t.boxes),
                    t.scores,
                    t.detection_indices,
                    t.confidences if refined else np.full(k, np.nan),
                    t.num_points if refined else np.full(k, -1),
                ]
            )
        )
    sizes = [t.size_lwh_m if isinstance(t, RefinedTrack) else np.full(3, np.nan) for t in tracks]
    atomic_write_npz(
        path,
        format=np.array(CACHE_FORMAT),
        track_ids=np.array([t.track_id for t in tracks], dtype=np.int64),
        labels=np.array([t.label for t in tracks], dtype=str),
        track_scores=np.array([t.score for t in tracks], dtype=np.float64),
        refined=np.array([isinstance(t, RefinedTrack) for t in tracks], dtype=bool),
        static=np.array([isinstance(t, RefinedTrack) and t.static for t in tracks], dtype=bool),
        sizes=np.array(sizes, dtype=np.float64).reshape(-1, 3),
        rows=np.concatenate(rows).astype(np.float64) if rows else np.zeros((0, len(_TRACK_ROW))),
        sources=np.array([s.value for t in tracks for s in t.sources], dtype=str),
    )


def _velocity(boxes: Boxes3D) -> np.ndarray:
    return boxes.velocity if boxes.velocity is not None else np.full((len(boxes), 2), np.nan)


def _load_tracks(path: Path) -> list[Track] | None:
    if not path.is_file():
        return None
    with np.load(path) as data:
        if int(data["format"]) != CACHE_FORMAT:
            return None
        rows, sources = data["rows"], [str(s) for s in data["sources"]]
        out: list[Track] = []
        for n, track_id in enumerate(data["track_ids"]):
            mine = np.flatnonzero(rows[:, 0] == track_id)
            r = rows[mine]
            fields = {
                "track_id": int(track_id),
                "label": str(data["labels"][n]),
                "score": float(data["track_scores"][n]),
                "frame_indices": r[:, 1].astype(np.int64),
                "timestamps_us": r[:, 2].astype(np.int64),
                "boxes": Boxes3D(r[:, 3:10], WORLD_FRAME, r[:, 10:12]),
                "scores": r[:, 12],
                "sources": tuple(BoxSource(sources[i]) for i in mine),
                "detection_indices": r[:, 13].astype(np.int64),
            }
            if not data["refined"][n]:
                out.append(Track(**fields))
                continue
            out.append(
                RefinedTrack(
                    **fields,
                    confidences=r[:, 14],
                    static=bool(data["static"][n]),
                    size_lwh_m=data["sizes"][n],
                    human_fixed=np.zeros(len(r), dtype=bool),
                    num_points=r[:, 15].astype(np.int64),
                )
            )
        return out


def clip_lidar(artifacts: ClipArtifacts, timestamps_us: Sequence[int]) -> ClipLidar:
    """The refinement's view of the fused clip: per keyframe its multi-sweep cloud in the world frame
    (``x, y, z, intensity, dt_s``) and the ego position standing in for the sensor's."""
    sensors = [pose.translation for pose in artifacts.keyframe_poses()]
    return ClipLidar(
        np.asarray(timestamps_us), tuple(artifacts.world_clouds()), np.array(sensors), dt_column=4, cell_m=2.0
    )


# ------------------------------------------------------------------------------------------ stages
def detections_in_world(detections: Detections3D, world_SE3_ego: SE3, timestamp_us: int) -> Detections:
    """A keyframe's ego-frame detections as the tracker's world-frame input."""
    return Detections(
        timestamp_us,
        detections.boxes.transform(world_SE3_ego, WORLD_FRAME),
        detections.scores,
        tuple(c.value for c in detections.categories),
    )


def tracker_for_clip(config: TrackerConfig, num_frames: int) -> TrackerConfig:
    """The tracker configuration for a clip of ``num_frames`` keyframes: a clip shorter than the minimum
    track length keeps tracks as long as the clip (a one-keyframe clip keeps its detections)."""
    offboard = config.offboard
    if num_frames >= offboard.min_detections:
        return config
    life = dataclasses.replace(offboard.life, min_hits=max(1, min(offboard.life.min_hits, num_frames)))
    shorter = dataclasses.replace(offboard, min_detections=max(1, num_frames), life=life)
    return dataclasses.replace(config, offboard=shorter)


@dataclass(frozen=True, eq=False)
class StageOutput:
    """A stage's result with the cache key it is stored under and whether it came from the cache."""

    value: Any
    key: str
    cached: bool


def fusion_output(
    clip: Clip, home: Path, device: torch.device, config: PipelineConfig, progress: Progress | None = None
) -> StageOutput:
    """The clip's fusion artifacts (:class:`ClipArtifacts`), made unless cached with the same key."""
    key = content_hash("fusion", clip_fingerprint(clip), config.fusion, code_version(), CACHE_FORMAT)
    path = artifact_path(home, clip)
    artifacts = _open_cached_artifacts(path, key)
    if artifacts is not None:
        return StageOutput(artifacts, key, True)
    # The stage's result keeps the sweeps' arrays in memory: detection and refinement read them from there.
    return StageOutput(run_fusion_stage(clip, home, device, config.fusion, progress, key).artifacts, key, False)


def detection_output(
    clip: Clip,
    artifacts: ClipArtifacts,
    fusion_key: str,
    home: Path,
    config: PipelineConfig,
    progress: Progress | None = None,
    workers: int = 1,
) -> StageOutput:
    """The clip's :class:`DetectionStage` (per keyframe detections in the ego frame and their review flags),
    made unless cached; keyframes are spread over ``workers`` processes (built-in detector only)."""
    detector = make_detector(config.detector, config.detector_config)
    # The detector's parameters as hashed: its configuration object (with defaults filled in), when it has one.
    parameters = {"name": config.detector, "config": getattr(detector, "config", None)}
    key = content_hash("detection", fusion_key, parameters, config.cross_check, code_version())
    path = Path(home) / "cache" / "detections" / f"{key}.npz"
    cached = _load_detections(path)
    if cached is not None:
        return StageOutput(cached, key, True)
    lidar = next(iter(clip.rig.lidars.values()), None)
    ego_SE3_lidar = lidar.ego_SE3_lidar if lidar is not None else None
    check = None
    if config.cross_check:
        sensor = tuple(ego_SE3_lidar.translation) if ego_SE3_lidar is not None else CrossCheckConfig().sensor_xyz_m
        check = CrossCheckConfig(sensor_xyz_m=sensor)
    # Camera poses at each exposure relative to the keyframe, when the dataset's poses are the ones used.
    same_poses = clip.has_poses and not config.fusion.recompute_poses

    def detect_keyframe(k: int) -> tuple[Detections3D, tuple[ReviewFlag, ...]]:
        frame = clip.frames[k]
        cloud, rgb = artifacts.keyframe_cloud(k)
        found = detector.detect(DetectorInput(cloud, frame.timestamp_us, rgb, ego_SE3_lidar))
        if check is None or not len(found):
            return found, unflagged(found)
        cameras = [
            CameraPose.from_image(image, frame.world_SE3_ego) if same_poses else CameraPose.from_rig(image.camera)
            for image in frame.cameras.values()
        ]
        checked = cross_check(found, cloud, rgb, cameras, check)
        return checked.rescored(found), checked.flags

    # The built-in detector runs on the CPU and can be forked; a user's model keeps its device in this process.
    workers = workers if isinstance(detector, GeometricDetector) else 1
    detections, flags = [], []
    for k, (found, found_flags) in enumerate(forked_map(detect_keyframe, range(len(clip)), workers)):
        if progress is not None:
            progress(Stage.DETECTION.value, k + 1, len(clip))
        detections.append(found)
        flags.append(found_flags)
    stage = DetectionStage(tuple(detections), tuple(flags))
    _save_detections(path, stage)
    return StageOutput(stage, key, False)


def tracking_output(
    clip: Clip,
    detections: Sequence[Detections3D],
    poses: Sequence[SE3],
    detection_key: str,
    home: Path,
    config: PipelineConfig,
) -> StageOutput:
    """The clip's raw tracks (:class:`tracking.Track`, world frame), made unless cached."""
    key = content_hash("tracking", detection_key, config.tracker, config.tracking_mode, code_version())
    path = Path(home) / "cache" / "tracks" / f"{key}.npz"
    tracks = _load_tracks(path)
    if tracks is not None:
        return StageOutput(tracks, key, True)
    inputs = [
        detections_in_world(d, pose, frame.timestamp_us)
        for d, pose, frame in zip(detections, poses, clip.frames, strict=True)
    ]
    _save_tracks(path, track_clip(inputs, tracker_for_clip(config.tracker, len(clip)), config.tracking_mode))
    return StageOutput(_load_tracks(path), key, False)


def refinement_output(
    clip: Clip,
    artifacts: ClipArtifacts,
    tracks: Sequence[Track],
    tracking_key: str,
    home: Path,
    config: PipelineConfig,
    workers: int = 1,
) -> StageOutput:
    """The refined tracks (:class:`tracking.RefinedTrack`), made unless cached; weak and duplicate tracks are removed.
    Tracks are spread over ``workers`` processes."""
    key = content_hash("refinement", tracking_key, config.refine, code_version())
    path = Path(home) / "cache" / "refined" / f"{key}.npz"
    refined = _load_tracks(path)
    if refined is not None:
        return StageOutput(refined, key, True)
    lidar = clip_lidar(artifacts, [f.timestamp_us for f in clip.frames])
    refine = config.refine
    if len(clip) < refine.min_detections:  # a clip shorter than the minimum track keeps clip-long tracks
        refine = dataclasses.replace(refine, min_detections=max(1, len(clip)))
    _save_tracks(path, refine_tracks(tracks, lidar, refine, lambda fn, items: forked_map(fn, items, workers)))
    return StageOutput(_load_tracks(path), key, False)


def run_clip(
    spec: ClipSpec,
    home: Path,
    store: LabelStore,
    device: torch.device,
    config: PipelineConfig | None = None,
    progress: Progress | None = None,
    workers: int = 1,
) -> RunSummary:
    """Run every stage on one clip (reusing cached stage outputs) and store its labels.

    ``progress(step, done, total)`` reports the stage being worked on. Detection (built-in detector) and
    refinement spread their keyframes and tracks over ``workers`` forked processes (same results as one);
    the CLI gives one per core.
    """
    # The stages spread their work over processes (and threads) themselves; BLAS's own threads only add
    # overhead to their small matrices (one refinement process: 0.94 s of dense solves with two threads, 0.01 s
    # with one, on 2 cores).
    with threadpool_limits(limits=1, user_api="blas"):
        return _run_clip(spec, home, store, device, config or PipelineConfig(), progress, workers)


def _run_clip(
    spec: ClipSpec,
    home: Path,
    store: LabelStore,
    device: torch.device,
    config: PipelineConfig,
    progress: Progress | None,
    workers: int,
) -> RunSummary:
    reports: list[StageReport] = []

    def report(step: str, done: int, total: int | None) -> None:
        if progress is not None:
            progress(step, done, total)

    def timed(stage: Stage, cached: bool, start: float, detail: str = "") -> None:
        reports.append(StageReport(stage, time.perf_counter() - start, cached, detail))

    start = time.perf_counter()
    report(Stage.READ.value, 0, None)
    clip = spec.load()
    timed(Stage.READ, False, start, f"{len(clip)} keyframes")

    start = time.perf_counter()
    fusion = fusion_output(clip, home, device, config, report)
    artifacts: ClipArtifacts = fusion.value
    poses = artifacts.keyframe_poses()
    timed(Stage.FUSION, fusion.cached, start, str(artifacts.path))

    start = time.perf_counter()
    detection = detection_output(clip, artifacts, fusion.key, home, config, report, workers)
    detections = detection.value.detections
    timed(Stage.DETECTION, detection.cached, start, f"{sum(len(d) for d in detections)} boxes")

    start = time.perf_counter()
    report(Stage.TRACKING.value, 0, None)
    tracking = tracking_output(clip, detections, poses, detection.key, home, config)
    tracks: list[Track] = tracking.value
    timed(Stage.TRACKING, tracking.cached, start, f"{len(tracks)} tracks")

    if config.refine is not None:
        start = time.perf_counter()
        report(Stage.REFINEMENT.value, 0, None)
        refinement = refinement_output(clip, artifacts, tracks, tracking.key, home, config, workers)
        tracks = refinement.value
        timed(Stage.REFINEMENT, refinement.cached, start, f"{len(tracks)} tracks")

    start = time.perf_counter()
    report(Stage.STORE.value, 0, None)
    version = code_version()
    parameters_hash = content_hash(config, version)
    frames = [FrameRecord(f.index, f.token, f.timestamp_us, pose) for f, pose in zip(clip.frames, poses, strict=True)]
    result = store.write_prelabels(
        ClipKey(clip.source.value, clip.name),
        frames,
        track_labels(tracks, [track_review_flags(t, detection.value.flags) for t in tracks]),
        Provenance(config.detector, parameters_hash, version),
        root=str(clip.root),
    )
    timed(Stage.STORE, False, start, f"run {result.run_id}")
    return RunSummary(
        clip=clip.name,
        source=clip.source.value,
        run_id=result.run_id,
        parameters_hash=parameters_hash,
        stages=tuple(reports),
        frames=len(clip),
        detections=sum(len(d) for d in detections),
        tracks=len(tracks),
        boxes=sum(len(t.frame_indices) for t in tracks),
        artifacts=str(artifacts.path),
    )


def _open_cached_artifacts(path: Path, key: str) -> ClipArtifacts | None:
    """The artifacts at ``path`` when complete and made from the same inputs and parameters, else ``None``."""
    if not path.exists():
        return None
    try:
        artifacts = open_artifacts(path)
    except InputError:
        return None
    return artifacts if artifacts.manifest.get("cache_key") == key else None
