"""The one in-memory model every clip reader produces.

A :class:`Clip` is an ordered sequence of :class:`Frame`; a frame holds its lidar sweeps
(chronological, the frame's own sweep last), its camera images by name (loaded lazily), the ego
pose ``world_SE3_ego`` (``None`` when the source has no poses), the rig and ground truth labels.
Sensor data are read from disk only when asked for (:meth:`LidarSweep.load_points`,
:meth:`CameraImage.load`), with validation that names the file and the problem.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from types import MappingProxyType

import cv2
import numpy as np

from autolabel.categories import Category
from calibration import EGO_FRAME, SE3, WORLD_FRAME, Boxes3D, InputError, PinholeCamera, Rig

POINT_COLUMNS = ("x", "y", "z", "intensity")


class ClipSource(str, Enum):
    NUSCENES = "nuscenes"
    KITTI = "kitti"
    SYNTHETIC = "synthetic"


def read_point_file(path: Path, num_columns: int, *, keep_columns: int = 4) -> np.ndarray:
    """Read a float32 binary point file of ``num_columns`` columns, keep the first ``keep_columns``.

    Returns:
        (N, keep_columns) float32 ``x, y, z, intensity`` in the sensor frame.

    Raises:
        InputError: missing file, size not a multiple of the row size, non-finite values.
    """
    if not path.is_file():
        raise InputError(f"{path}: point file not found")
    size = path.stat().st_size
    row_bytes = 4 * num_columns
    if size % row_bytes:
        raise InputError(
            f"{path}: {size} bytes is not a whole number of {num_columns}-column float32 rows "
            f"(truncated file or wrong column count)"
        )
    points = np.fromfile(path, dtype=np.float32).reshape(-1, num_columns)[:, :keep_columns]
    bad = ~np.isfinite(points).all(axis=1)
    if bad.any():
        raise InputError(f"{path}: {int(bad.sum())} of {len(points)} points contain NaN or infinite values")
    return np.ascontiguousarray(points)


@dataclass(frozen=True)
class LidarSweep:
    """One lidar sweep on disk.

    Attributes:
        sensor: lidar name in the rig.
        timestamp_us: sweep time.
        path: the point file.
        num_columns: float32 columns per point in the file (nuScenes 5, KITTI 4).
        world_SE3_ego: ego pose at the sweep's own time, ``None`` when unknown.
        ego_SE3_lidar: extrinsics valid for this sweep.
        is_key: True for the frame's own (key) sweep.
        rotation_period_s: set when the points are raw from a lidar spinning clockwise (seen from above)
            that points along ego +x at ``timestamp_us``: each point then carries its own capture time,
            ``-wrap(azimuth_ego) / (2 pi) * rotation_period_s`` after the timestamp. ``None``: unknown
            timing (points are taken as captured at ``timestamp_us``).
    """

    sensor: str
    timestamp_us: int
    path: Path
    num_columns: int
    world_SE3_ego: SE3 | None
    ego_SE3_lidar: SE3
    is_key: bool = False
    rotation_period_s: float | None = None

    @property
    def num_points(self) -> int:
        """Point count from the file size (no read); raises on a truncated file."""
        if not self.path.is_file():
            raise InputError(f"{self.path}: point file not found")
        size = self.path.stat().st_size
        if size % (4 * self.num_columns):
            raise InputError(f"{self.path}: {size} bytes is not a whole number of {self.num_columns}-column rows")
        return size // (4 * self.num_columns)

    def load_points(self) -> np.ndarray:
        """(N, 4) float32 ``x, y, z, intensity`` in the lidar frame."""
        return read_point_file(self.path, self.num_columns)

    def load_points_ego(self) -> np.ndarray:
        """(N, 4) float32 points in the ego frame at the sweep's time."""
        return self.ego_SE3_lidar.transform_points(self.load_points())


@dataclass(frozen=True)
class CameraImage:
    """One camera image on disk, loaded on demand.

    Attributes:
        camera: the camera model (its name is the image's channel).
        timestamp_us: exposure time.
        path: the image file.
        world_SE3_ego: ego pose at the exposure time, ``None`` when unknown.
    """

    camera: PinholeCamera
    timestamp_us: int
    path: Path
    world_SE3_ego: SE3 | None

    @property
    def name(self) -> str:
        return self.camera.name

    def load(self) -> np.ndarray:
        """(H, W, 3) uint8 RGB; raises if unreadable or not the calibrated size."""
        if not self.path.is_file():
            raise InputError(f"{self.path}: image file not found")
        bgr = cv2.imread(str(self.path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise InputError(f"{self.path}: not a readable image")
        height, width = bgr.shape[:2]
        if (width, height) != (self.camera.width_px, self.camera.height_px):
            raise InputError(
                f"{self.path}: image is {width}x{height} px but camera {self.camera.name} is calibrated "
                f"for {self.camera.width_px}x{self.camera.height_px} px"
            )
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


@dataclass(frozen=True, eq=False)
class FrameLabels:
    """Labelled boxes of one frame (ground truth or pre-labels).

    Attributes:
        boxes: N boxes in the frame's ego frame (velocity in m/s in that frame, NaN if unknown).
        track_ids: N instance/track ids, stable across the clip.
        categories: N detection classes.
        scores: (N,) confidence; 1.0 for ground truth.
        source_categories: N original class names of the source taxonomy ("vehicle.car", "Van"),
            or empty strings where there is none.
        attributes: N nuScenes attribute names or empty strings.
        num_lidar_pts: (N,) int lidar points in the box as given by the source, -1 when unknown.
        truncation: (N,) float in [0, 1] (KITTI ``truncated``), NaN when unknown.
        occlusion: (N,) int KITTI occlusion level 0-3, -1 when unknown.
    """

    boxes: Boxes3D
    track_ids: tuple[str, ...]
    categories: tuple[Category, ...]
    scores: np.ndarray
    source_categories: tuple[str, ...] = ()
    attributes: tuple[str, ...] = ()
    num_lidar_pts: np.ndarray | None = None
    truncation: np.ndarray | None = None
    occlusion: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.boxes)
        if self.boxes.frame != EGO_FRAME:
            raise InputError(f"frame labels must be in the {EGO_FRAME!r} frame, got {self.boxes.frame!r}")
        object.__setattr__(self, "track_ids", tuple(str(t) for t in self.track_ids))
        object.__setattr__(self, "categories", tuple(Category(c) for c in self.categories))
        object.__setattr__(self, "source_categories", tuple(self.source_categories) or ("",) * n)
        object.__setattr__(self, "attributes", tuple(self.attributes) or ("",) * n)
        object.__setattr__(self, "scores", np.asarray(self.scores, dtype=np.float64).reshape(-1))
        defaults = {"num_lidar_pts": (-1, np.int64), "truncation": (np.nan, np.float64), "occlusion": (-1, np.int64)}
        for name, (fill, dtype) in defaults.items():
            value = getattr(self, name)
            array = np.full(n, fill, dtype=dtype) if value is None else np.asarray(value, dtype=dtype).reshape(-1)
            object.__setattr__(self, name, array)
        for name in ("track_ids", "categories", "scores", "source_categories", "attributes", *defaults):
            if len(getattr(self, name)) != n:
                raise InputError(f"frame labels: {name} has {len(getattr(self, name))} entries for {n} boxes")

    @classmethod
    def empty(cls) -> FrameLabels:
        return cls(Boxes3D.empty(EGO_FRAME), (), (), np.zeros(0))

    def __len__(self) -> int:
        return len(self.boxes)

    def subset(self, index: np.ndarray) -> FrameLabels:
        """The labels at integer or boolean ``index``."""
        idx = np.atleast_1d(np.arange(len(self))[index])
        return FrameLabels(
            boxes=self.boxes[idx],
            track_ids=tuple(self.track_ids[i] for i in idx),
            categories=tuple(self.categories[i] for i in idx),
            scores=self.scores[idx],
            source_categories=tuple(self.source_categories[i] for i in idx),
            attributes=tuple(self.attributes[i] for i in idx),
            num_lidar_pts=self.num_lidar_pts[idx],
            truncation=self.truncation[idx],
            occlusion=self.occlusion[idx],
        )


@dataclass(frozen=True, eq=False)
class Frame:
    """One keyframe of a clip.

    Attributes:
        index: position in the clip.
        token: source id of the frame (nuScenes sample token, KITTI frame number).
        timestamp_us: time of the key lidar sweep.
        world_SE3_ego: ego pose at ``timestamp_us``; ``None`` when the source has no poses.
        sweeps: lidar sweeps, chronological, the key sweep last.
        cameras: camera name -> image.
        rig: sensors and calibration valid for this frame.
        gt: ground truth labels, ``None`` when the source has none.
    """

    index: int
    token: str
    timestamp_us: int
    world_SE3_ego: SE3 | None
    sweeps: tuple[LidarSweep, ...]
    cameras: Mapping[str, CameraImage]
    rig: Rig
    gt: FrameLabels | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "cameras", MappingProxyType(dict(self.cameras)))
        if not self.sweeps or not self.sweeps[-1].is_key:
            raise InputError(f"frame {self.token}: needs its key lidar sweep as the last sweep")

    @property
    def key_sweep(self) -> LidarSweep:
        return self.sweeps[-1]

    def gt_world(self) -> Boxes3D | None:
        """Ground truth boxes in the world frame (``None`` without GT or pose)."""
        if self.gt is None or self.world_SE3_ego is None:
            return None
        return self.gt.boxes.transform(self.world_SE3_ego, WORLD_FRAME)


@dataclass(frozen=True)
class ClipSummary:
    name: str
    source: ClipSource
    num_frames: int
    num_sweeps: int
    cameras: tuple[str, ...]
    num_images: int
    num_points: int
    mean_points_per_sweep: float
    num_gt_boxes: int | None
    num_gt_tracks: int | None
    duration_s: float
    has_poses: bool
    path_length_m: float | None


@dataclass(frozen=True, eq=False)
class Clip:
    """An ordered sequence of frames from one drive.

    Attributes:
        name: scene name / sequence id.
        source: which reader made it.
        root: the dataset root it was read from.
        frames: the keyframes in time order.
        timestamps_synthetic: True when the source has no timestamps and they were made from a rate.
        meta: source-specific facts (devkit version, dataroot version, ...).
    """

    name: str
    source: ClipSource
    root: Path
    frames: tuple[Frame, ...]
    timestamps_synthetic: bool = False
    meta: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.frames:
            raise InputError(f"clip {self.name} ({self.root}): no frames")
        times = [f.timestamp_us for f in self.frames]
        if any(b <= a for a, b in itertools.pairwise(times)):
            raise InputError(f"clip {self.name} ({self.root}): frame timestamps are not strictly increasing")
        object.__setattr__(self, "meta", MappingProxyType(dict(self.meta)))

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def has_poses(self) -> bool:
        return all(f.world_SE3_ego is not None for f in self.frames)

    @property
    def has_gt(self) -> bool:
        return all(f.gt is not None for f in self.frames)

    @property
    def rig(self) -> Rig:
        """The rig of the first frame (readers use one rig per clip)."""
        return self.frames[0].rig

    def summary(self) -> ClipSummary:
        """Counts over the clip; point counts come from file sizes, not reads."""
        sweeps = [s for f in self.frames for s in f.sweeps]
        num_points = sum(s.num_points for s in sweeps)
        gt_boxes = sum(len(f.gt) for f in self.frames) if self.has_gt else None
        gt_tracks = len({t for f in self.frames for t in f.gt.track_ids}) if self.has_gt else None
        path_length = None
        if self.has_poses:
            centres = np.stack([f.world_SE3_ego.translation for f in self.frames])
            path_length = float(np.linalg.norm(np.diff(centres, axis=0), axis=1).sum())
        return ClipSummary(
            name=self.name,
            source=self.source,
            num_frames=len(self.frames),
            num_sweeps=len(sweeps),
            cameras=tuple(self.rig.cameras),
            num_images=sum(len(f.cameras) for f in self.frames),
            num_points=num_points,
            mean_points_per_sweep=num_points / max(len(sweeps), 1),
            num_gt_boxes=gt_boxes,
            num_gt_tracks=gt_tracks,
            duration_s=(self.frames[-1].timestamp_us - self.frames[0].timestamp_us) / 1e6,
            has_poses=self.has_poses,
            path_length_m=path_length,
        )
