"""Export per-frame labels of a KITTI clip as KITTI tracking ``label_02`` text.

One line per box, sorted by frame number, then track id::

    frame track_id type truncated occluded alpha x1 y1 x2 y2 h w l x y z ry [score]

The conversion is the exact inverse of :mod:`autolabel.datasets.kitti`:

- ego -> velodyne with ``Boxes3D.transform(velo_SE3_ego)`` (exactly invertible);
- velodyne -> rectified camera 0 with ``cam0rect_SE3_velo``, which the reader stores in
  ``Clip.meta`` (the rig alone cannot give it: ``P2[:, 3]`` is not kept in the camera model);
- bottom centre ``y + h/2``, ``ry = wrap(-yaw_velo - pi/2)``, ``alpha = wrap(ry - arctan2(x, z))``.

The 2D box is the image_02 extent of the KITTI-convention 3D box (near-plane clipped), clipped to
``[0, W-1] x [0, H-1]``; ``-1 -1 -1 -1`` when it is not in the image.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from autolabel.categories import CATEGORY_TO_KITTI, KITTI_TO_CATEGORY, Category
from autolabel.datasets.kitti import IMAGE_02, VELODYNE, cam0rect_SE3_velo_from_meta
from autolabel.datasets.model import Clip, ClipSource, FrameLabels
from autolabel.fileio import atomic_write_text
from calibration import InputError, PinholeCamera, wrap_angle_rad

FLOAT_FORMAT = "{:.6f}"
NO_BBOX_PX = (-1.0, -1.0, -1.0, -1.0)
NEAR_PLANE_M = 0.1  # 3D boxes are clipped at this camera depth before taking their image extent

# Corners of a KITTI camera box about its bottom centre, as the KITTI devkit orders them:
# x along l, y up is -h (camera y points down), z along w. Rotated by ry about camera +y.
_KITTI_CORNER_SIGNS = np.array(
    [
        [1, 0, 1],
        [1, 0, -1],
        [-1, 0, -1],
        [-1, 0, 1],
        [1, -1, 1],
        [1, -1, -1],
        [-1, -1, -1],
        [-1, -1, 1],
    ],
    dtype=np.float64,
)
_BOX_EDGES = np.array([[0, 1], [1, 2], [2, 3], [3, 0], [4, 5], [5, 6], [6, 7], [7, 4], [0, 4], [1, 5], [2, 6], [3, 7]])


def kitti_corners_cam(bottom_centers_cam: np.ndarray, sizes_lwh: np.ndarray, ry_rad: np.ndarray) -> np.ndarray:
    """(N, 8, 3) corners of KITTI camera boxes in rectified camera 0 (devkit ``compute_box_3d``).

    Args:
        bottom_centers_cam: (N, 3) bottom centres. sizes_lwh: (N, 3). ry_rad: (N,).
    """
    sizes = np.asarray(sizes_lwh, dtype=np.float64).reshape(-1, 3)
    local = (
        _KITTI_CORNER_SIGNS[None] * np.stack([sizes[:, 0] / 2.0, sizes[:, 2], sizes[:, 1] / 2.0], axis=1)[:, None, :]
    )
    c, s = np.cos(ry_rad)[:, None], np.sin(ry_rad)[:, None]
    x = c * local[..., 0] + s * local[..., 2]
    z = -s * local[..., 0] + c * local[..., 2]
    bottom = np.asarray(bottom_centers_cam, dtype=np.float64).reshape(-1, 3)
    return np.stack([x, local[..., 1], z], axis=-1) + bottom[:, None, :]


def image_bbox_px(corners_cam: np.ndarray, camera: PinholeCamera) -> np.ndarray:
    """(N, 4) ``x1, y1, x2, y2`` image extents of boxes given by (N, 8, 3) camera-frame corners.

    The box is clipped at :data:`NEAR_PLANE_M` (edges crossing it contribute their crossing point),
    the extent is clipped to ``[0, W-1] x [0, H-1]``; rows are -1 where nothing is in view.
    """
    out = np.tile(np.array(NO_BBOX_PX), (len(corners_cam), 1))
    for n, corners in enumerate(corners_cam):
        depth = corners[:, 2]
        points = [corners[depth >= NEAR_PLANE_M]]
        a, b = corners[_BOX_EDGES[:, 0]], corners[_BOX_EDGES[:, 1]]
        crossing = (a[:, 2] - NEAR_PLANE_M) * (b[:, 2] - NEAR_PLANE_M) < 0
        if crossing.any():
            t = (NEAR_PLANE_M - a[crossing, 2]) / (b[crossing, 2] - a[crossing, 2])
            points.append(a[crossing] + t[:, None] * (b[crossing] - a[crossing]))
        pts = np.concatenate(points)
        if len(pts) == 0:
            continue
        uv = camera.project_cam(pts, min_depth_m=0.0).uv_px
        lo, hi = uv.min(axis=0), uv.max(axis=0)
        size_max = np.array([camera.width_px - 1, camera.height_px - 1], dtype=np.float64)
        if np.any(hi < 0) or np.any(lo > size_max):
            continue
        out[n] = np.concatenate([np.clip(lo, 0, size_max), np.clip(hi, 0, size_max)])
    return out


def _kitti_track_numbers(labels_per_frame: Sequence[FrameLabels]) -> dict[str, int]:
    """Track id -> KITTI int: non-negative integer strings kept, others numbered after them in order."""
    ids = [t for labels in labels_per_frame for t in labels.track_ids]
    numeric = {t: int(t) for t in ids if t.isascii() and t.isdigit()}
    next_number = max(numeric.values(), default=-1) + 1
    mapping = dict(numeric)
    for t in ids:
        if t not in mapping:
            mapping[t] = next_number
            next_number += 1
    return mapping


def _kitti_type(source_category: str, category: Category) -> str:
    return source_category if source_category in KITTI_TO_CATEGORY else CATEGORY_TO_KITTI[category]


def _format_truncated(value: float) -> str:
    if not np.isfinite(value):
        return "0"
    return str(int(value)) if float(value).is_integer() else FLOAT_FORMAT.format(value)


def kitti_label_lines(
    clip: Clip, labels_per_frame: Sequence[FrameLabels], *, include_score: bool = False, in_image_only: bool = False
) -> list[str]:
    """KITTI tracking label lines (no newlines) of ``labels_per_frame[i]`` for ``clip.frames[i]``.

    Frame numbers are the KITTI tokens for KITTI clips, else the frame index. ``include_score``
    appends the score column (detections). Every object is written (its 2D box -1 when it is not in
    image_02) unless ``in_image_only``.

    Raises:
        InputError: label count differs from the frame count, or the clip has no KITTI calibration.
    """
    if len(labels_per_frame) != len(clip.frames):
        raise InputError(f"clip {clip.name}: {len(labels_per_frame)} label sets for {len(clip.frames)} frames")
    cam0rect_SE3_velo = cam0rect_SE3_velo_from_meta(clip.meta, clip_name=clip.name)
    track_numbers = _kitti_track_numbers(labels_per_frame)
    keyed_lines: list[tuple[int, int, int, str]] = []
    for frame, labels in zip(clip.frames, labels_per_frame, strict=True):
        if len(labels) == 0:
            continue
        frame_number = int(frame.token) if clip.source is ClipSource.KITTI else frame.index
        ego_SE3_velo = frame.rig.lidars[VELODYNE].ego_SE3_lidar
        camera = frame.rig.camera(IMAGE_02)
        boxes_velo = labels.boxes.transform(ego_SE3_velo.inverse(), VELODYNE)
        centers_cam = cam0rect_SE3_velo.transform_points(boxes_velo.centers)
        l_m, w_m, h_m = boxes_velo.sizes.T
        bottom_cam = centers_cam + np.column_stack([np.zeros(len(h_m)), h_m / 2.0, np.zeros(len(h_m))])
        ry = np.asarray(wrap_angle_rad(-boxes_velo.yaws_rad - np.pi / 2.0))
        alpha = np.asarray(wrap_angle_rad(ry - np.arctan2(bottom_cam[:, 0], bottom_cam[:, 2])))
        corners_cam0rect = kitti_corners_cam(bottom_cam, boxes_velo.sizes, ry)
        cam_SE3_cam0rect = camera.cam_SE3_ego @ ego_SE3_velo @ cam0rect_SE3_velo.inverse()
        corners_cam = cam_SE3_cam0rect.transform_points(corners_cam0rect.reshape(-1, 3)).reshape(-1, 8, 3)
        bboxes = image_bbox_px(corners_cam, camera)
        for i in range(len(labels)):
            if in_image_only and bboxes[i][0] < 0:
                continue
            track = track_numbers[labels.track_ids[i]]
            occluded = int(labels.occlusion[i]) if labels.occlusion[i] >= 0 else 0
            floats = [alpha[i], *bboxes[i], h_m[i], w_m[i], l_m[i], *bottom_cam[i], ry[i]]
            if include_score:
                floats.append(labels.scores[i])
            fields = [
                str(frame_number),
                str(track),
                _kitti_type(labels.source_categories[i], labels.categories[i]),
                _format_truncated(float(labels.truncation[i])),
                str(occluded),
                *(FLOAT_FORMAT.format(float(v) + 0.0) for v in floats),
            ]
            keyed_lines.append((frame_number, track, len(keyed_lines), " ".join(fields)))
    return [line for *_, line in sorted(keyed_lines)]


def write_kitti_labels(
    path: Path,
    clip: Clip,
    labels_per_frame: Sequence[FrameLabels],
    *,
    include_score: bool = False,
    in_image_only: bool = False,
) -> None:
    """Write :func:`kitti_label_lines` to ``path`` atomically."""
    path = Path(path)
    lines = kitti_label_lines(clip, labels_per_frame, include_score=include_score, in_image_only=in_image_only)
    text = "".join(f"{line}\n" for line in lines)
    atomic_write_text(path, text)
