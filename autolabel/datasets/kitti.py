"""KITTI tracking-layout reader: calibration, sweeps, images, oxts/odometry poses and label_02 GT.

Layout of a split directory (``.../training``)::

    calib/SEQ.txt           P0..P3, R_rect|R0_rect, Tr_velo_cam|Tr_velo_to_cam, [Tr_imu_velo|Tr_imu_to_velo]
    velodyne/SEQ/%06d.bin   (N, 4) float32 x, y, z, reflectance in the velodyne frame
    image_02/SEQ/%06d.png   rectified left colour camera (image_03, the right one, is optional)
    oxts/SEQ.txt            optional: one GPS/IMU packet (30 numbers) per frame
    poses/SEQ.txt           optional: odometry-format 3x4 poses of rectified camera 0 (12 numbers)
    label_02/SEQ.txt        optional: tracking labels

Frames (all right-handed)::

    velo       velodyne: x forward, y left, z up
    imu        oxts GPS/IMU: x forward, y left, z up. The ego frame when the calib has
               Tr_imu_velo (ego_SE3_velo = inverse(Tr_imu_velo)); otherwise ego = velo.
    cam0rect   rectified camera 0: x right, y down, z forward; cam0rect_SE3_velo = R_rect @ Tr_velo_cam
    image_0k   camera k, rectified: p_camk = p_cam0rect + t_k, t_k = inv(K_k) @ P_k[:, 3], K_k = P_k[:, :3]

KITTI boxes (label_02) have ``(x, y, z)`` at the bottom centre in cam0rect and ``ry`` about
cam0rect's +y (``ry = 0``: heading along +x_cam). They are converted to geometric centres in velo
with ``yaw_velo = -ry - pi/2`` (KITTI's upright approximation: cam y is taken as velo -z) and then
to the ego frame with :meth:`Boxes3D.transform`.

The tracking layout has no timestamps: ``timestamp_us = round(frame_number * 1e6 / frame_rate_hz)``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from scipy.spatial.transform import Rotation

from autolabel.categories import category_from_kitti
from autolabel.datasets.model import CameraImage, Clip, ClipSource, Frame, FrameLabels, LidarSweep
from calibration import (
    EGO_FRAME,
    SE3,
    Boxes3D,
    GeometryError,
    InputError,
    LidarSensor,
    PinholeCamera,
    Rig,
    wrap_angle_rad,
)

# ---------------------------------------------------------------------------------------- layout
SPLIT_DIR = "training"
VELODYNE_DIR = "velodyne"
CALIB_DIR = "calib"
OXTS_DIR = "oxts"
POSES_DIR = "poses"
LABEL_DIR = "label_02"
POINT_SUFFIX = ".bin"
IMAGE_SUFFIX = ".png"
TEXT_SUFFIX = ".txt"
FRAME_NUMBER_FORMAT = "{:06d}"
SEQUENCE_DIGITS = 4
CLIP_NAME_PREFIX = "kitti-"

# ---------------------------------------------------------------------------------------- sensors
VELODYNE = "velodyne"  # lidar name in the rig and the frame name of velodyne-frame boxes
IMAGE_02 = "image_02"  # rectified left colour camera (also its folder name)
IMAGE_03 = "image_03"  # rectified right colour camera (also its folder name)
KITTI_POINT_COLUMNS = 4  # x, y, z, reflectance
CAMERA_PROJECTION_KEYS: dict[str, str] = {IMAGE_02: "P2", IMAGE_03: "P3"}

# ---------------------------------------------------------------------------------------- calib
CALIB_ORTHO_TOL = 1e-3  # calib/pose files store rounded matrices
_CALIB_ALIASES: dict[str, str] = {
    "R0_rect": "R_rect",
    "Tr_velo_to_cam": "Tr_velo_cam",
    "Tr_imu_to_velo": "Tr_imu_velo",
}
_CALIB_SHAPES: dict[str, tuple[int, int]] = {
    "P0": (3, 4),
    "P1": (3, 4),
    "P2": (3, 4),
    "P3": (3, 4),
    "R_rect": (3, 3),
    "Tr_velo_cam": (3, 4),
    "Tr_imu_velo": (3, 4),
}
_CALIB_REQUIRED = ("P2", "R_rect", "Tr_velo_cam")

# ---------------------------------------------------------------------------------------- poses
EARTH_RADIUS_M = 6378137.0  # the KITTI devkit's Mercator radius
OXTS_NUM_VALUES = 30
POSE_NUM_VALUES = 12


class PoseSource(StrEnum):
    """Where a KITTI clip's ego poses came from (``Clip.meta[META_POSES]``)."""

    OXTS = "oxts"
    POSES = "poses"
    MISSING = "missing"


META_POSES = "poses"
META_SEQUENCE = "kitti_sequence"
META_CAM0RECT_SE3_VELO = "kitti_cam0rect_SE3_velo"  # JSON (4, 4) nested list, exact float repr

# ---------------------------------------------------------------------------------------- labels
DONT_CARE = "DontCare"
LABEL_NUM_COLUMNS = 17  # frame track type trunc occ alpha x1 y1 x2 y2 h w l x y z ry
LABEL_NUM_COLUMNS_SCORED = 18  # ... score


@dataclass(frozen=True, eq=False)
class KittiCalib:
    """One KITTI calib file.

    Attributes:
        P2: (3, 4) projection of rectified cam0 coordinates into image_02 pixels.
        R_rect: (3, 3) rectifying rotation of camera 0.
        Tr_velo_cam: (3, 4) velodyne -> (unrectified) camera 0.
        Tr_imu_velo: (3, 4) IMU/GPS -> velodyne, ``None`` when the file has none.
        P0, P1, P3: (3, 4) projections of the other cameras, ``None`` when absent.
        path: the file it was read from (for messages).
    """

    P2: np.ndarray
    R_rect: np.ndarray
    Tr_velo_cam: np.ndarray
    Tr_imu_velo: np.ndarray | None = None
    P0: np.ndarray | None = None
    P1: np.ndarray | None = None
    P3: np.ndarray | None = None
    path: Path | None = None

    def __post_init__(self) -> None:
        for key, shape in _CALIB_SHAPES.items():
            value = getattr(self, key)
            if value is None:
                continue
            array = np.array(value, dtype=np.float64, copy=True)
            if array.shape != shape or not np.all(np.isfinite(array)):
                raise InputError(f"{self._where}: {key} must be a finite {shape} matrix, got {array.shape}")
            array.setflags(write=False)
            object.__setattr__(self, key, array)

    @property
    def _where(self) -> str:
        return str(self.path) if self.path is not None else "KITTI calib"

    def _se3(self, key: str, matrix: np.ndarray) -> SE3:
        try:
            return SE3.from_matrix(matrix, orthonormalize_tol=CALIB_ORTHO_TOL)
        except GeometryError as exc:
            raise InputError(f"{self._where}: {key} is not a rigid transform: {exc}") from exc

    @cached_property
    def cam0rect_SE3_velo(self) -> SE3:
        """Velodyne -> rectified camera 0: ``R_rect @ Tr_velo_cam``, projected onto SE(3)."""
        return self._se3("R_rect @ Tr_velo_cam", self.R_rect @ self.Tr_velo_cam)

    @cached_property
    def ego_SE3_velo(self) -> SE3:
        """Velodyne -> ego: ``inverse(Tr_imu_velo)`` (ego = IMU), identity without ``Tr_imu_velo``."""
        if self.Tr_imu_velo is None:
            return SE3.identity()
        return self._se3("Tr_imu_velo", self.Tr_imu_velo).inverse()

    def projection(self, camera_name: str) -> np.ndarray:
        """(3, 4) projection matrix of ``image_02``/``image_03``; raises if the file lacks it."""
        key = CAMERA_PROJECTION_KEYS.get(camera_name)
        if key is None:
            raise InputError(f"{self._where}: no projection key for camera {camera_name!r}")
        matrix = getattr(self, key)
        if matrix is None:
            raise InputError(f"{self._where}: camera {camera_name} needs {key}, which the file lacks")
        return matrix

    def camera_offset_m(self, camera_name: str) -> np.ndarray:
        """(3,) ``t = inv(K) @ P[:, 3]``: ``p_cam = p_cam0rect + t`` for a rectified camera."""
        p = self.projection(camera_name)
        return np.linalg.solve(p[:, :3], p[:, 3])

    def camera(self, camera_name: str, width_px: int, height_px: int) -> PinholeCamera:
        """The rectified (distortion-free) camera with ``ego_SE3_cam`` composed through velo and cam0rect."""
        p = self.projection(camera_name)
        ego_SE3_cam0rect = self.ego_SE3_velo @ self.cam0rect_SE3_velo.inverse()
        cam0rect_SE3_cam = SE3(np.eye(3), -self.camera_offset_m(camera_name))
        try:
            ego_SE3_cam = ego_SE3_cam0rect @ cam0rect_SE3_cam
            return PinholeCamera(camera_name, p[:, :3], width_px, height_px, ego_SE3_cam)
        except GeometryError as exc:
            raise InputError(f"{self._where}: camera {camera_name}: {exc}") from exc


def parse_kitti_calib(path: Path) -> KittiCalib:
    """Read a KITTI calib file (object or tracking key spellings, with or without colons).

    Raises:
        InputError: missing file, unparsable number, wrong number count, duplicate or missing
            required key (P2, R_rect, Tr_velo_cam); the message names the file and the key.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: calibration file not found")
    values: dict[str, np.ndarray] = {}
    for line_no, line in enumerate(path.read_text().splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        key, _, tail = tokens[0].partition(":")
        numbers = ([tail] if tail else []) + tokens[1:]
        key = _CALIB_ALIASES.get(key, key)
        if key not in _CALIB_SHAPES:
            continue  # other keys (e.g. Tr_cam_to_road) are not needed
        if key in values:
            raise InputError(f"{path}:{line_no}: {key} is given twice")
        try:
            array = np.array([float(n) for n in numbers], dtype=np.float64)
        except ValueError as exc:
            raise InputError(f"{path}:{line_no}: {key} has a value that is not a number: {exc}") from exc
        shape = _CALIB_SHAPES[key]
        if array.size != shape[0] * shape[1]:
            expected = shape[0] * shape[1]
            raise InputError(f"{path}:{line_no}: {key} has {array.size} numbers, expected {expected}")
        if not np.all(np.isfinite(array)):
            raise InputError(f"{path}:{line_no}: {key} contains non-finite values")
        values[key] = array.reshape(shape)
    missing = [k for k in _CALIB_REQUIRED if k not in values]
    if missing:
        raise InputError(f"{path}: calibration lacks required key(s) {missing} (found {sorted(values)})")
    return KittiCalib(**values, path=path)


# ---------------------------------------------------------------------------------------- poses
def poses_from_oxts(packets: np.ndarray) -> list[SE3]:
    """IMU poses from oxts packets as the KITTI devkit computes them (``convertOxtsToPose``).

    Mercator projection with ``scale = cos(lat0)`` of the first packet, ``z = alt`` and
    ``R = Rz(yaw) Ry(pitch) Rx(roll)``, re-expressed relative to the first pose.

    Args:
        packets: (N, >=6) ``lat_deg, lon_deg, alt_m, roll_rad, pitch_rad, yaw_rad, ...``.

    Returns:
        N poses ``world_SE3_imu`` with world = the first IMU frame (the first pose is identity).
    """
    data = np.asarray(packets, dtype=np.float64)
    if data.ndim != 2 or data.shape[0] == 0 or data.shape[1] < 6:
        raise InputError(f"oxts packets must have shape (N>=1, >=6), got {data.shape}")
    lat, lon, alt = data[:, 0], data[:, 1], data[:, 2]
    scale = np.cos(np.deg2rad(lat[0]))
    tx = scale * lon * np.pi * EARTH_RADIUS_M / 180.0
    ty = scale * EARTH_RADIUS_M * np.log(np.tan((90.0 + lat) * np.pi / 360.0))
    rotations = Rotation.from_euler("xyz", data[:, 3:6]).as_matrix()  # extrinsic x, y, z = Rz Ry Rx
    mercator_SE3_imu = [SE3(r, (x, y, z)) for r, x, y, z in zip(rotations, tx, ty, alt, strict=True)]
    imu0_SE3_mercator = mercator_SE3_imu[0].inverse()
    return [imu0_SE3_mercator @ pose for pose in mercator_SE3_imu]


def _read_number_rows(path: Path, num_values: int) -> np.ndarray:
    """(N, num_values) float64 rows of a whitespace-separated text file (blank lines skipped)."""
    rows = []
    for line_no, line in enumerate(path.read_text().splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) != num_values:
            raise InputError(f"{path}:{line_no}: {len(tokens)} numbers, expected {num_values}")
        try:
            row = [float(t) for t in tokens]
        except ValueError as exc:
            raise InputError(f"{path}:{line_no}: not a number: {exc}") from exc
        if not np.all(np.isfinite(row)):
            raise InputError(f"{path}:{line_no}: non-finite value")
        rows.append(row)
    return np.array(rows, dtype=np.float64).reshape(-1, num_values)


def _load_poses(split_dir: Path, seq: str, calib: KittiCalib, num_frames: int) -> tuple[list[SE3] | None, PoseSource]:
    """``world_SE3_ego`` per frame (world = the first ego frame) from oxts or poses, else None.

    Line ``i`` of the file belongs to the ``i``-th frame (KITTI numbers frames from 0 without gaps).
    """
    oxts_path = split_dir / OXTS_DIR / f"{seq}{TEXT_SUFFIX}"
    poses_path = split_dir / POSES_DIR / f"{seq}{TEXT_SUFFIX}"
    if oxts_path.is_file():
        if calib.Tr_imu_velo is None:
            raise InputError(f"{oxts_path}: oxts poses are IMU poses and need Tr_imu_velo, which {calib.path} lacks")
        packets = _read_number_rows(oxts_path, OXTS_NUM_VALUES)
        _check_pose_count(oxts_path, len(packets), num_frames)
        return poses_from_oxts(packets), PoseSource.OXTS
    if poses_path.is_file():
        rows = _read_number_rows(poses_path, POSE_NUM_VALUES)
        _check_pose_count(poses_path, len(rows), num_frames)
        ego_SE3_cam0rect = calib.ego_SE3_velo @ calib.cam0rect_SE3_velo.inverse()
        cam0rect_SE3_ego = ego_SE3_cam0rect.inverse()
        poses = []
        for line_no, row in enumerate(rows, start=1):
            try:
                cam0first_SE3_cam0 = SE3.from_matrix(row.reshape(3, 4), orthonormalize_tol=CALIB_ORTHO_TOL)
            except GeometryError as exc:
                raise InputError(f"{poses_path}:{line_no}: not a rigid pose: {exc}") from exc
            poses.append(ego_SE3_cam0rect @ cam0first_SE3_cam0 @ cam0rect_SE3_ego)
        return poses, PoseSource.POSES
    return None, PoseSource.MISSING


def _check_pose_count(path: Path, num_lines: int, num_frames: int) -> None:
    if num_lines != num_frames:
        raise InputError(f"{path}: {num_lines} pose lines for {num_frames} frames (expected one per frame)")


# ---------------------------------------------------------------------------------------- boxes
def kitti_camera_boxes_to_velo(
    bottom_centers_cam: np.ndarray, sizes_lwh: np.ndarray, ry_rad: np.ndarray, cam0rect_SE3_velo: SE3
) -> Boxes3D:
    """KITTI camera boxes -> geometric-centre boxes in the velodyne frame.

    Args:
        bottom_centers_cam: (N, 3) KITTI ``x, y, z`` (bottom centre) in rectified camera 0.
        sizes_lwh: (N, 3) ``l, w, h`` in metres.
        ry_rad: (N,) KITTI ``rotation_y`` about cam0rect +y.
        cam0rect_SE3_velo: ``R_rect @ Tr_velo_cam``.

    Returns:
        N boxes in frame :data:`VELODYNE`, ``yaw = -ry - pi/2``.
    """
    bottom = np.asarray(bottom_centers_cam, dtype=np.float64).reshape(-1, 3)
    sizes = np.asarray(sizes_lwh, dtype=np.float64).reshape(-1, 3)
    centers_cam = bottom - np.column_stack([np.zeros(len(bottom)), sizes[:, 2] / 2.0, np.zeros(len(bottom))])
    centers_velo = cam0rect_SE3_velo.inverse().transform_points(centers_cam)
    yaw = wrap_angle_rad(-np.asarray(ry_rad, dtype=np.float64).reshape(-1) - np.pi / 2.0)
    return Boxes3D(np.column_stack([centers_velo, sizes, yaw]), VELODYNE)


@dataclass(frozen=True)
class KittiLabelRow:
    """One parsed label_02 line (``bbox_px`` = ``x1, y1, x2, y2``; ``score`` None when absent)."""

    frame: int
    track_id: int
    type: str
    truncated: float
    occluded: int
    alpha_rad: float
    bbox_px: tuple[float, float, float, float]
    h_m: float
    w_m: float
    l_m: float
    bottom_center_cam: tuple[float, float, float]
    ry_rad: float
    score: float | None
    line_no: int


def read_kitti_label_file(
    path: Path, *, keep_dont_care: bool = False, detections: bool = False
) -> list[KittiLabelRow]:
    """Parse a KITTI tracking label file (``DontCare`` rows dropped unless asked for).

    ``detections``: a detector's output in the same format, track id ``-1`` allowed and the score
    column required.

    Raises:
        InputError: ``path:line`` of a malformed line (column count, numbers, negative size).
    """
    rows: list[KittiLabelRow] = []
    for line_no, line in enumerate(Path(path).read_text().splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        where = f"{path}:{line_no}"
        if len(tokens) not in (LABEL_NUM_COLUMNS, LABEL_NUM_COLUMNS_SCORED):
            raise InputError(
                f"{where}: {len(tokens)} columns, expected {LABEL_NUM_COLUMNS} or {LABEL_NUM_COLUMNS_SCORED}"
            )
        try:
            frame, track_id = int(tokens[0]), int(tokens[1])
            truncated, occluded = float(tokens[3]), int(float(tokens[4]))
            numbers = [float(t) for t in tokens[5:]]
        except ValueError as exc:
            raise InputError(f"{where}: malformed label line: {exc}") from exc
        if not np.all(np.isfinite(numbers)) or not np.isfinite(truncated):
            raise InputError(f"{where}: non-finite value in label line")
        kind = tokens[2]
        if kind == DONT_CARE and not keep_dont_care:
            continue
        alpha, x1, y1, x2, y2, h, w, length, x, y, z, ry = numbers[:12]
        if kind != DONT_CARE and min(h, w, length) < 0:
            raise InputError(f"{where}: negative box size h={h} w={w} l={length}")
        if frame < 0 or (kind != DONT_CARE and track_id < 0 and not detections):
            raise InputError(f"{where}: negative frame {frame} or track id {track_id}")
        if detections and len(numbers) <= 12:
            raise InputError(f"{where}: a detection line needs the score column ({LABEL_NUM_COLUMNS_SCORED} columns)")
        rows.append(
            KittiLabelRow(
                frame=frame,
                track_id=track_id,
                type=kind,
                truncated=truncated,
                occluded=occluded,
                alpha_rad=alpha,
                bbox_px=(x1, y1, x2, y2),
                h_m=h,
                w_m=w,
                l_m=length,
                bottom_center_cam=(x, y, z),
                ry_rad=ry,
                score=numbers[12] if len(numbers) > 12 else None,
                line_no=line_no,
            )
        )
    return rows


def _labels_from_rows(rows: list[KittiLabelRow], cam0rect_SE3_velo: SE3, ego_SE3_velo: SE3) -> FrameLabels:
    """FrameLabels (ego frame) of one frame's label rows (detections get ids ``d<line number>``)."""
    if not rows:
        return FrameLabels.empty()
    boxes_velo = kitti_camera_boxes_to_velo(
        np.array([r.bottom_center_cam for r in rows]),
        np.array([(r.l_m, r.w_m, r.h_m) for r in rows]),
        np.array([r.ry_rad for r in rows]),
        cam0rect_SE3_velo,
    )
    return FrameLabels(
        boxes=boxes_velo.transform(ego_SE3_velo, EGO_FRAME),
        track_ids=tuple(str(r.track_id) if r.track_id >= 0 else f"d{r.line_no}" for r in rows),
        categories=tuple(category_from_kitti(r.type) for r in rows),
        scores=np.array([1.0 if r.score is None else r.score for r in rows]),
        source_categories=tuple(r.type for r in rows),
        truncation=np.array([r.truncated for r in rows]),
        occlusion=np.array([r.occluded for r in rows]),
    )


def _labels_per_frame(
    path: Path, frame_numbers: list[int], cam0rect_SE3_velo: SE3, ego_SE3_velo: SE3, *, detections: bool = False
) -> list[FrameLabels]:
    rows_by_frame: dict[int, list[KittiLabelRow]] = {n: [] for n in frame_numbers}
    for row in read_kitti_label_file(path, detections=detections):
        if row.frame not in rows_by_frame:
            raise InputError(f"{path}:{row.line_no}: label of frame {row.frame}, which has no velodyne sweep")
        rows_by_frame[row.frame].append(row)
    return [_labels_from_rows(rows_by_frame[n], cam0rect_SE3_velo, ego_SE3_velo) for n in frame_numbers]


def _load_gt(path: Path, frame_numbers: list[int], calib: KittiCalib) -> list[FrameLabels] | None:
    if not path.is_file():
        return None
    return _labels_per_frame(path, frame_numbers, calib.cam0rect_SE3_velo, calib.ego_SE3_velo)


def read_kitti_detections(path: Path, clip: Clip) -> list[FrameLabels]:
    """A detector's per-frame boxes for a KITTI clip, from a tracking-format file with scores (track id -1),
    in each frame's ego frame; the KITTI type is kept in ``source_categories``."""
    if not Path(path).is_file():
        raise InputError(f"{path}: detection file not found")
    cam0rect_SE3_velo = cam0rect_SE3_velo_from_meta(clip.meta, clip_name=clip.name)
    ego_SE3_velo = clip.rig.lidars[VELODYNE].ego_SE3_lidar
    numbers = [int(f.token) for f in clip.frames]
    return _labels_per_frame(Path(path), numbers, cam0rect_SE3_velo, ego_SE3_velo, detections=True)


# ---------------------------------------------------------------------------------------- clip
def _resolve_split_dir(root: Path) -> Path:
    """The directory holding ``velodyne/``: ``root/training`` if present, else ``root``."""
    if (root / SPLIT_DIR).is_dir():
        return root / SPLIT_DIR
    if (root / VELODYNE_DIR).is_dir():
        return root
    raise InputError(f"{root}: not a KITTI tracking root (no {SPLIT_DIR}/ or {VELODYNE_DIR}/ inside)")


def list_sequences(root: Path) -> list[str]:
    """Sequence ids of a KITTI tracking root (the folders under ``velodyne/``), sorted."""
    velo_root = _resolve_split_dir(Path(root)) / VELODYNE_DIR
    return sorted(p.name for p in velo_root.iterdir() if p.is_dir())


def _normalize_seq(seq: str | int) -> str:
    text = str(seq).strip()
    return text.zfill(SEQUENCE_DIGITS) if text.isdigit() else text


def _list_sweep_files(velo_dir: Path) -> list[tuple[int, Path]]:
    """(frame number, path) of the sequence's point files, sorted by number."""
    found = []
    for path in velo_dir.glob(f"*{POINT_SUFFIX}"):
        if not path.stem.isdigit():
            raise InputError(f"{path}: point file name is not a frame number")
        found.append((int(path.stem), path))
    if not found:
        raise InputError(f"{velo_dir}: no {POINT_SUFFIX} point files")
    return sorted(found)


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the image header (no decode)."""
    if not path.is_file():
        raise InputError(f"{path}: image file not found")
    try:
        with Image.open(path) as image:
            return image.size
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"{path}: not a readable image: {exc}") from exc


def _image_paths(split_dir: Path, seq: str, camera_name: str, frame_numbers: list[int]) -> list[Path]:
    folder = split_dir / camera_name / seq
    paths = [folder / f"{FRAME_NUMBER_FORMAT.format(n)}{IMAGE_SUFFIX}" for n in frame_numbers]
    for path in paths:
        if not path.is_file():
            raise InputError(f"{path}: image file not found (every velodyne frame needs one)")
    return paths


def load_kitti_clip(root: Path, seq: str | int, *, frame_rate_hz: float = 10.0) -> Clip:
    """Read one KITTI tracking-layout sequence as a :class:`Clip`.

    Args:
        root: the split directory (holding ``velodyne/``, ``image_02/``, ``calib/``) or its parent
            holding ``training/``.
        seq: sequence id, ``"0000"`` (int-like ids are zero-padded to 4 digits).
        frame_rate_hz: rate used to make timestamps from frame numbers.

    Returns:
        A clip named ``kitti-SEQ`` with one key velodyne sweep per frame, ``image_02`` (and
        ``image_03`` when present), poses from oxts or odometry poses (``meta["poses"]``), and GT
        from ``label_02`` when present.

    Raises:
        InputError: missing sequence (lists those available), calib, images or bad files.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: KITTI root directory not found")
    if not frame_rate_hz > 0:
        raise InputError(f"frame_rate_hz must be positive, got {frame_rate_hz}")
    split_dir = _resolve_split_dir(root)
    seq = _normalize_seq(seq)
    velo_root = split_dir / VELODYNE_DIR
    velo_dir = velo_root / seq
    if not velo_dir.is_dir():
        available = sorted(p.name for p in velo_root.iterdir() if p.is_dir())
        raise InputError(f"{velo_dir}: sequence {seq!r} not found; available sequences: {available}")
    sweep_files = _list_sweep_files(velo_dir)
    frame_numbers = [n for n, _ in sweep_files]
    calib = parse_kitti_calib(split_dir / CALIB_DIR / f"{seq}{TEXT_SUFFIX}")

    ego_SE3_velo = calib.ego_SE3_velo
    image_paths: dict[str, list[Path]] = {}
    cameras: dict[str, PinholeCamera] = {}
    for name in (IMAGE_02, IMAGE_03):
        if name == IMAGE_03 and not (split_dir / name / seq).is_dir():
            continue
        image_paths[name] = _image_paths(split_dir, seq, name, frame_numbers)
        width, height = _image_size(image_paths[name][0])
        cameras[name] = calib.camera(name, width, height)
    rig = Rig(cameras=cameras, lidars={VELODYNE: LidarSensor(VELODYNE, ego_SE3_velo)})

    poses, pose_source = _load_poses(split_dir, seq, calib, len(frame_numbers))
    gt = _load_gt(split_dir / LABEL_DIR / f"{seq}{TEXT_SUFFIX}", frame_numbers, calib)

    frames = []
    for index, (number, bin_path) in enumerate(sweep_files):
        timestamp_us = round(number * 1e6 / frame_rate_hz)
        world_SE3_ego = None if poses is None else poses[index]
        sweep = LidarSweep(
            sensor=VELODYNE,
            timestamp_us=timestamp_us,
            path=bin_path,
            num_columns=KITTI_POINT_COLUMNS,
            world_SE3_ego=world_SE3_ego,
            ego_SE3_lidar=ego_SE3_velo,
            is_key=True,
        )
        _ = sweep.num_points  # fail early on truncated files / wrong column counts (stat only)
        images = {
            name: CameraImage(cameras[name], timestamp_us, paths[index], world_SE3_ego)
            for name, paths in image_paths.items()
        }
        frames.append(
            Frame(
                index=index,
                token=FRAME_NUMBER_FORMAT.format(number),
                timestamp_us=timestamp_us,
                world_SE3_ego=world_SE3_ego,
                sweeps=(sweep,),
                cameras=images,
                rig=rig,
                gt=None if gt is None else gt[index],
            )
        )
    meta = {
        META_SEQUENCE: seq,
        META_POSES: pose_source.value,
        META_CAM0RECT_SE3_VELO: json.dumps(calib.cam0rect_SE3_velo.as_matrix().tolist()),
    }
    return Clip(
        name=f"{CLIP_NAME_PREFIX}{seq}",
        source=ClipSource.KITTI,
        root=split_dir,
        frames=tuple(frames),
        timestamps_synthetic=True,
        meta=meta,
    )


def cam0rect_SE3_velo_from_meta(meta: Mapping[str, str], *, clip_name: str = "clip") -> SE3:
    """The ``cam0rect_SE3_velo`` a KITTI clip stored in its meta (exact floats, JSON)."""
    text = meta.get(META_CAM0RECT_SE3_VELO)
    if text is None:
        raise InputError(
            f"{clip_name}: no KITTI camera-0 calibration (meta key {META_CAM0RECT_SE3_VELO!r}); "
            f"KITTI export needs a clip read by load_kitti_clip"
        )
    try:
        return SE3.from_matrix(np.array(json.loads(text), dtype=np.float64))
    except (ValueError, GeometryError) as exc:
        raise InputError(f"{clip_name}: meta {META_CAM0RECT_SE3_VELO!r} is not a 4x4 rigid transform: {exc}") from exc
