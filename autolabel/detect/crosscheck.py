"""Cross-check of detected boxes against the lidar's free space and the cameras: support, rescoring, review flags.

For each box of a keyframe (ego frame)::

    support     lidar points inside the box (above ``bottom_clearance_m``: ground returns under it do not count)
    paint       fraction of those points a camera painted; colour consistency of the painted ones (below)
    cameras     fraction of the box (a 3 x 3 x 3 grid of samples in it) that projects into some image, and
                how many cameras see at least ``camera_min_fraction`` of it
    free space  rays of the recent sweep(s) through the box: a ray that ends inside the box supports it, one that
                passes through and ends beyond contradicts it (the box is empty space); ``free_space_fraction`` =
                pass / (pass + hit)

Free space uses a polar grid around the sensor (azimuth x elevation bins) holding the nearest return per bin
(the nearest return is the conservative one: the ray was free at least up to there). Each box, shrunk by
``shrink_m`` (and raised by ``bottom_shrink_m`` so rays under a car's body do not count), is visited over the
bins its corners span; the stored ray of each bin is tested against the box (slab test)::

        sensor *----------[=====box=====]------x   pass: ends beyond the box -> contradicts it
        sensor *----------[=====x       ]          hit: ends inside (within tolerance) -> supports it
        sensor *-----x    [             ]          occluded: ends before -> says nothing

Colour consistency (painted points only): every colour falls in one of 16 hue bins or, when unsaturated or dark,
one of 3 grey levels. ``purity`` is the share of the box's points in its dominant colour (three neighbouring bins);
``leak`` the share of the points in a ring around the box (from ``ring_gap_m`` to ``ring_gap_m + ring_m`` out, in
BEV) in that same colour. A box around one object is pure and its colour stops at its boundary:
``consistency = purity * (1 - leak)``; a box shifted off its object mixes colours or sees its colour continue
outside. Shading changes brightness, not hue, so one object keeps one colour. Points move with the box's velocity
to the keyframe time, and older points of moving boxes are left out of the colours (they were painted from images
taken after the object had moved).

The adjusted score is ``score * support * colour * free_space`` (factors in [0, 1], see :class:`CrossCheckConfig`),
and one :class:`ReviewFlag` per box names the most serious problem.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

import cv2
import numba
import numpy as np

from autolabel.detect.base import Detections3D
from autolabel.detect.boxfit import LIDAR_XYZ_M
from calibration import SE3, Boxes3D, InputError, PinholeCamera

if TYPE_CHECKING:
    from autolabel.datasets.model import CameraImage

HUE_BINS = 16
GREY_BINS = 3
COLOUR_BINS = HUE_BINS + GREY_BINS
UNPAINTED = -1


class ReviewFlag(str, Enum):
    """The most serious problem the cross-check found with a box (in this order of precedence)."""

    FREE_SPACE_CONFLICT = "free_space_conflict"
    LOW_SUPPORT = "low_support"
    COLOUR_INCONSISTENT = "colour_inconsistent"
    NOT_VISIBLE_IN_CAMERAS = "not_visible_in_cameras"
    OK = "ok"


@dataclass(frozen=True)
class CameraPose:
    """A camera and where it was relative to the keyframe's ego frame when its image was exposed.

    Attributes:
        camera: intrinsics, distortion, size (its ``ego_SE3_cam`` is the rig's and is not used here).
        cam_SE3_ego: keyframe ego frame -> camera frame at the exposure time.
    """

    camera: PinholeCamera
    cam_SE3_ego: SE3

    @classmethod
    def from_rig(cls, camera: PinholeCamera) -> CameraPose:
        """The camera at the keyframe time (no ego motion between the lidar and the exposure)."""
        return cls(camera, camera.cam_SE3_ego)

    @classmethod
    def from_image(cls, image: CameraImage, world_SE3_ego: SE3) -> CameraPose:
        """The camera of ``image`` at its exposure pose, seen from the keyframe ego pose ``world_SE3_ego``."""
        if image.world_SE3_ego is None:
            return cls.from_rig(image.camera)
        return cls(image.camera, image.camera.cam_SE3_ego @ image.world_SE3_ego.inverse() @ world_SE3_ego)


@dataclass(frozen=True)
class CrossCheckConfig:
    """Cross-check parameters.

    Attributes:
        sensor_xyz_m: lidar position in the ego frame (origin of the rays).
        bottom_clearance_m: points lower than this above a box's bottom are ground, not support.
        full_support_points: points inside at which the support factor reaches 1.
        min_support_points: fewer points inside: ``LOW_SUPPORT``.
        support_floor: support factor of an empty box.
        inside_margin_m: points within this outside a box count as inside (surface returns straddle its faces).
        ring_gap_m, ring_m: the ring around a box whose colours are compared with the box's starts this far out
            and is this wide.
        colour_max_shift_m: points of a moving box count for colour only while its motion since their capture
            stays under this (older sweeps were painted from images taken after the object had moved).
        min_painted_points: fewer painted points inside: no colour evidence (colour factor 1, no colour flag).
        min_consistency: below this colour consistency: ``COLOUR_INCONSISTENT``.
        colour_weight: how much a fully inconsistent box loses (colour factor ``1 - colour_weight`` at
            consistency 0, 1 at ``min_consistency * 2`` and above).
        min_saturation, min_value: colours below either (0..255) are greys, binned by value.
        free_space_max_age_s: rays of points captured at most this long before the keyframe (older sweeps were
            taken from elsewhere, and moving objects were elsewhere then).
        azimuth_bin_deg, elevation_bin_deg: polar grid resolution.
        elevation_range_deg: elevations the grid covers (``min, max``).
        shrink_m: boxes are shrunk by this on each side for the free-space test (box and point noise).
        bottom_shrink_m: and raised by this at the bottom (rays under a car's body, ground noise).
        range_tolerance_m: a return within this of the (shrunk) box's entry or exit counts as a hit.
        conflict_fraction: from this free-space fraction on (with ``min_conflict_rays`` passing rays):
            ``FREE_SPACE_CONFLICT``.
        min_conflict_rays: passing rays needed before free space counts at all.
        free_space_tolerance: free-space fractions up to this cost nothing; the factor falls linearly to
            ``free_space_floor`` at ``conflict_fraction`` and to 0 at a fraction of 1.
        free_space_floor: free-space factor at ``conflict_fraction``.
        camera_min_fraction: a camera sees a box when at least this fraction of its samples project into it.
    """

    sensor_xyz_m: tuple[float, float, float] = LIDAR_XYZ_M
    bottom_clearance_m: float = 0.2
    full_support_points: int = 20
    min_support_points: int = 5
    support_floor: float = 0.3
    inside_margin_m: float = 0.1
    ring_gap_m: float = 0.3
    ring_m: float = 0.6
    colour_max_shift_m: float = 0.3
    min_painted_points: int = 8
    min_consistency: float = 0.25
    colour_weight: float = 0.4
    min_saturation: int = 80
    min_value: int = 40
    free_space_max_age_s: float = 0.05
    azimuth_bin_deg: float = 0.4
    elevation_bin_deg: float = 0.5
    elevation_range_deg: tuple[float, float] = (-40.0, 20.0)
    shrink_m: float = 0.2
    bottom_shrink_m: float = 0.4
    range_tolerance_m: float = 0.3
    conflict_fraction: float = 0.5
    min_conflict_rays: int = 5
    free_space_tolerance: float = 0.15
    free_space_floor: float = 0.3
    camera_min_fraction: float = 0.1

    def __post_init__(self) -> None:
        if not 0.0 <= self.free_space_tolerance < self.conflict_fraction <= 1.0:
            raise InputError(
                f"cross-check: need 0 <= free_space_tolerance < conflict_fraction <= 1, got "
                f"{self.free_space_tolerance}, {self.conflict_fraction}"
            )
        if self.azimuth_bin_deg <= 0 or self.elevation_bin_deg <= 0:
            raise InputError("cross-check: polar grid bins must be positive")
        if self.elevation_range_deg[1] <= self.elevation_range_deg[0]:
            raise InputError(f"cross-check: empty elevation range {self.elevation_range_deg}")


@dataclass(frozen=True, eq=False)
class CrossCheck:
    """Per box (all arrays (B,)) evidence, adjusted score and review flag.

    Attributes:
        points_inside: lidar points inside (above the bottom clearance).
        painted_fraction: share of those a camera painted (0 without colours).
        colour_consistency: ``purity * (1 - leak)`` in [0, 1]; NaN without enough painted points.
        visible_fraction: share of the box's samples that project into at least one image.
        cameras_visible: cameras seeing at least ``camera_min_fraction`` of the box.
        free_space_rays: rays through the (shrunk) box that end beyond it.
        hit_rays: rays through it that end inside it.
        free_space_fraction: ``free_space_rays / (free_space_rays + hit_rays)``; 0 without such rays.
        support_factor, colour_factor, free_space_factor: the score factors in [0, 1].
        scores: the detector's scores; adjusted_scores: times the three factors.
        flags: one :class:`ReviewFlag` per box.
    """

    points_inside: np.ndarray
    painted_fraction: np.ndarray
    colour_consistency: np.ndarray
    visible_fraction: np.ndarray
    cameras_visible: np.ndarray
    free_space_rays: np.ndarray
    hit_rays: np.ndarray
    free_space_fraction: np.ndarray
    support_factor: np.ndarray
    colour_factor: np.ndarray
    free_space_factor: np.ndarray
    scores: np.ndarray
    adjusted_scores: np.ndarray
    flags: tuple[ReviewFlag, ...]

    def __len__(self) -> int:
        return len(self.flags)

    @property
    def needs_review(self) -> np.ndarray:
        """(B,) bool: the box carries a flag other than ``OK``."""
        return np.array([f is not ReviewFlag.OK for f in self.flags], dtype=bool)

    def rescored(self, detections: Detections3D) -> Detections3D:
        """``detections`` (the ones checked) with the adjusted scores."""
        if len(detections) != len(self):
            raise InputError(f"cross-check of {len(self)} boxes applied to {len(detections)} detections")
        return Detections3D(detections.boxes, self.adjusted_scores, detections.categories)


def cross_check(
    detections: Detections3D,
    points_ego: np.ndarray,
    rgb: np.ndarray | None = None,
    cameras: Sequence[CameraPose] = (),
    config: CrossCheckConfig = CrossCheckConfig(),
) -> CrossCheck:
    """Cross-check every detected box of one keyframe.

    Args:
        detections: B boxes in the keyframe's ego frame with scores.
        points_ego: (N, 5) ``x, y, z, intensity, dt_s`` keyframe cloud in the same frame.
        rgb: optional (N, 3) uint8 painted colours (zeros where unpainted).
        cameras: the keyframe's cameras with their exposure poses.
        config: parameters.
    """
    points = np.asarray(points_ego)
    if points.ndim != 2 or points.shape[1] < 5:
        raise InputError(f"cross-check: points must have shape (N, 5) x, y, z, intensity, dt_s; got {points.shape}")
    points = np.ascontiguousarray(points[:, :5], dtype=np.float32)
    if rgb is not None and np.shape(rgb) != (len(points), 3):
        raise InputError(f"cross-check: rgb must have shape ({len(points)}, 3), got {np.shape(rgb)}")
    boxes = np.ascontiguousarray(detections.boxes.data, dtype=np.float64)
    b = len(boxes)
    bins = colour_bins(rgb, config) if rgb is not None else np.full(len(points), UNPAINTED, dtype=np.int8)
    inside = np.zeros(b, dtype=np.int64)
    painted = np.zeros(b, dtype=np.int64)
    hist_in = np.zeros((b, COLOUR_BINS), dtype=np.int64)
    hist_ring = np.zeros((b, COLOUR_BINS), dtype=np.int64)
    velocity = np.zeros((b, 2))
    if detections.boxes.velocity is not None:
        velocity = np.ascontiguousarray(np.nan_to_num(detections.boxes.velocity), dtype=np.float64)
    _box_stats(
        points,
        bins,
        boxes,
        velocity,
        config.bottom_clearance_m,
        config.inside_margin_m,
        config.ring_gap_m,
        config.ring_m,
        config.colour_max_shift_m,
        inside,
        painted,
        hist_in,
        hist_ring,
    )
    consistency = colour_consistency(hist_in, hist_ring, config.min_painted_points)
    visible, cams = camera_visibility(detections.boxes, cameras, config.camera_min_fraction)
    passed, hits = free_space_rays(points, detections.boxes, config)
    through = passed + hits
    fraction = np.divide(passed, through, out=np.zeros(b), where=through > 0)
    support = config.support_floor + (1.0 - config.support_floor) * np.minimum(
        inside / max(config.full_support_points, 1), 1.0
    )
    known = np.isfinite(consistency)
    colour = np.where(
        known,
        1.0 - config.colour_weight * np.clip(1.0 - np.nan_to_num(consistency) / (2 * config.min_consistency), 0, 1),
        1.0,
    )
    free = free_space_factor(fraction, passed, config)
    scores = np.asarray(detections.scores, dtype=np.float64)
    flags = tuple(_flag(i, inside, consistency, visible, fraction, passed, config) for i in range(b))
    return CrossCheck(
        points_inside=inside,
        painted_fraction=np.divide(painted, inside, out=np.zeros(b), where=inside > 0),
        colour_consistency=consistency,
        visible_fraction=visible,
        cameras_visible=cams,
        free_space_rays=passed,
        hit_rays=hits,
        free_space_fraction=fraction,
        support_factor=support,
        colour_factor=colour,
        free_space_factor=free,
        scores=scores,
        adjusted_scores=scores * support * colour * free,
        flags=flags,
    )


def _flag(
    i: int,
    inside: np.ndarray,
    consistency: np.ndarray,
    visible: np.ndarray,
    fraction: np.ndarray,
    passed: np.ndarray,
    config: CrossCheckConfig,
) -> ReviewFlag:
    if passed[i] >= config.min_conflict_rays and fraction[i] >= config.conflict_fraction:
        return ReviewFlag.FREE_SPACE_CONFLICT
    if inside[i] < config.min_support_points:
        return ReviewFlag.LOW_SUPPORT
    if np.isfinite(consistency[i]) and consistency[i] < config.min_consistency:
        return ReviewFlag.COLOUR_INCONSISTENT
    if visible[i] <= 0.0:
        return ReviewFlag.NOT_VISIBLE_IN_CAMERAS
    return ReviewFlag.OK


def free_space_factor(fraction: np.ndarray, passed: np.ndarray, config: CrossCheckConfig) -> np.ndarray:
    """(B,) score factor of free-space fractions (B,): 1 up to the tolerance, ``free_space_floor`` at the conflict
    fraction, 0 at 1; boxes with fewer than ``min_conflict_rays`` passing rays keep 1."""
    tol, conflict, floor = config.free_space_tolerance, config.conflict_fraction, config.free_space_floor
    first = 1.0 - (1.0 - floor) * np.clip((fraction - tol) / (conflict - tol), 0.0, 1.0)
    second = floor * np.clip((1.0 - fraction) / max(1.0 - conflict, 1e-9), 0.0, 1.0)
    value = np.where(fraction <= conflict, first, second)
    return np.where(passed >= config.min_conflict_rays, value, 1.0)


# ------------------------------------------------------------------------------------------------ colour
def colour_bins(rgb: np.ndarray, config: CrossCheckConfig = CrossCheckConfig()) -> np.ndarray:
    """(N,) int8 colour bin of (N, 3) uint8 RGB: hue bins ``0 .. 15``, grey levels ``16 .. 18``, -1 unpainted."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8).reshape(-1, 3)
    if len(rgb) == 0:
        return np.zeros(0, dtype=np.int8)
    hsv = cv2.cvtColor(rgb.reshape(-1, 1, 3), cv2.COLOR_RGB2HSV).reshape(-1, 3).astype(np.int32)
    hue = np.minimum(hsv[:, 0] * HUE_BINS // 180, HUE_BINS - 1)  # OpenCV hue is 0..179
    grey = HUE_BINS + np.minimum(hsv[:, 2] * GREY_BINS // 256, GREY_BINS - 1)
    chromatic = (hsv[:, 1] >= config.min_saturation) & (hsv[:, 2] >= config.min_value)
    out = np.where(chromatic, hue, grey)
    return np.where(rgb.any(axis=1), out, UNPAINTED).astype(np.int8)


def _neighbour_window() -> np.ndarray:
    """(K, K) 0/1: bin j lies within one step of bin i (hue bins wrap around, grey levels do not)."""
    window = np.eye(COLOUR_BINS)
    for i in range(HUE_BINS):
        window[i, (i + 1) % HUE_BINS] = window[i, (i - 1) % HUE_BINS] = 1.0
    for i in range(HUE_BINS, COLOUR_BINS):
        window[i, max(i - 1, HUE_BINS) : min(i + 2, COLOUR_BINS)] = 1.0
    return window


_WINDOW = _neighbour_window()


def colour_consistency(hist_in: np.ndarray, hist_ring: np.ndarray, min_painted: int) -> np.ndarray:
    """(B,) ``purity * (1 - leak)`` from (B, K) colour-bin counts inside the boxes and in their rings; NaN where
    fewer than ``min_painted`` points inside count.

    The dominant colour is the window of three neighbouring bins holding most points inside (an object's hue may
    straddle a bin edge); purity and leak are the shares of the inside and ring points in that window."""
    hist_in = np.asarray(hist_in, dtype=np.float64).reshape(-1, COLOUR_BINS)
    hist_ring = np.asarray(hist_ring, dtype=np.float64).reshape(-1, COLOUR_BINS)
    total, ring_total = hist_in.sum(axis=1), hist_ring.sum(axis=1)
    windowed_in = hist_in @ _WINDOW.T  # (B, K): points within one bin of each bin
    dominant = windowed_in.argmax(axis=1)
    rows = np.arange(len(hist_in))
    purity = np.divide(windowed_in[rows, dominant], total, out=np.zeros(len(total)), where=total > 0)
    in_window = (hist_ring @ _WINDOW.T)[rows, dominant]
    leak = np.divide(in_window, ring_total, out=np.zeros(len(total)), where=ring_total > 0)
    return np.where(total >= min_painted, purity * (1.0 - leak), np.nan)


# ------------------------------------------------------------------------------------------------ cameras
_SAMPLE_GRID = np.array([(x, y, z) for x in (-0.4, 0, 0.4) for y in (-0.4, 0, 0.4) for z in (-0.4, 0, 0.4)])


def box_samples(boxes: Boxes3D) -> np.ndarray:
    """(B, 27, 3) points on a 3 x 3 x 3 grid inside each box (at 0 and +-40 % of its extents)."""
    local = _SAMPLE_GRID[None] * boxes.sizes[:, None, :]
    c, s = np.cos(boxes.yaws_rad)[:, None], np.sin(boxes.yaws_rad)[:, None]
    x = c * local[..., 0] - s * local[..., 1]
    y = s * local[..., 0] + c * local[..., 1]
    return np.stack([x, y, local[..., 2]], axis=-1) + boxes.centers[:, None, :]


def camera_visibility(
    boxes: Boxes3D, cameras: Sequence[CameraPose], min_fraction: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """(B,) share of each box's samples projecting into at least one image, (B,) int cameras seeing at least
    ``min_fraction`` of them."""
    b = len(boxes)
    if b == 0 or not cameras:
        return np.zeros(b), np.zeros(b, dtype=np.int64)
    samples = box_samples(boxes).reshape(-1, 3)
    seen = np.zeros((len(cameras), b, len(_SAMPLE_GRID)), dtype=bool)
    for k, pose in enumerate(cameras):
        projection = pose.camera.project_cam(pose.cam_SE3_ego.transform_points(samples))
        seen[k] = projection.valid.reshape(b, -1)
    visible = seen.any(axis=0).mean(axis=1)
    cams = (seen.mean(axis=2) >= min_fraction).sum(axis=0)
    return visible, cams.astype(np.int64)


def project_boxes_2d(boxes: Boxes3D, pose: CameraPose) -> tuple[np.ndarray, np.ndarray]:
    """(B, 4) ``x1, y1, x2, y2`` pixel bounds of the boxes' projected corners, clipped to the image, and (B,) bool:
    every corner lies in front of the camera and the clipped bounds are not empty."""
    b = len(boxes)
    if b == 0:
        return np.zeros((0, 4)), np.zeros(0, dtype=bool)
    corners = boxes.corners().reshape(-1, 3)
    projection = pose.camera.project_cam(pose.cam_SE3_ego.transform_points(corners))
    uv = projection.uv_px.reshape(b, 8, 2)
    front = (projection.depth_m.reshape(b, 8) > 0.1).all(axis=1)
    w, h = pose.camera.width_px, pose.camera.height_px
    lo = np.clip(uv.min(axis=1), -0.5, [w - 0.5, h - 0.5])
    hi = np.clip(uv.max(axis=1), -0.5, [w - 0.5, h - 0.5])
    out = np.column_stack([lo, hi])
    ok = front & (out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1])
    return out, ok


# ------------------------------------------------------------------------------------------------ free space
def free_space_rays(
    points_ego: np.ndarray, boxes: Boxes3D, config: CrossCheckConfig = CrossCheckConfig()
) -> tuple[np.ndarray, np.ndarray]:
    """(B,) int rays passing through each (shrunk) box and ending beyond it, (B,) int rays ending inside it.

    Rays are those of the points captured within ``free_space_max_age_s`` of the keyframe, one per polar-grid bin
    (the nearest return); see the module docstring.
    """
    b = len(boxes)
    passed = np.zeros(b, dtype=np.int64)
    hits = np.zeros(b, dtype=np.int64)
    if b == 0:
        return passed, hits
    pts = np.asarray(points_ego)
    recent = pts[pts[:, 4] >= -config.free_space_max_age_s]
    sensor = np.asarray(config.sensor_xyz_m, dtype=np.float64)
    az_bins = round(360.0 / config.azimuth_bin_deg)
    el_lo, el_hi = (math.radians(v) for v in config.elevation_range_deg)
    el_step = math.radians(config.elevation_bin_deg)
    el_bins = math.ceil((el_hi - el_lo) / el_step)
    grid = _nearest_ray_grid(
        np.ascontiguousarray(recent[:, :3], dtype=np.float64), sensor, az_bins, el_lo, el_step, el_bins
    )
    shrunk = np.array(boxes.data, dtype=np.float64, copy=True)
    shrunk[:, 3:5] = np.maximum(shrunk[:, 3:5] - 2 * config.shrink_m, 0.05)
    top = shrunk[:, 2] + shrunk[:, 5] / 2 - config.shrink_m
    bottom = shrunk[:, 2] - shrunk[:, 5] / 2 + config.bottom_shrink_m
    shrunk[:, 5] = np.maximum(top - bottom, 0.05)
    shrunk[:, 2] = (top + bottom) / 2
    corners = Boxes3D(shrunk, boxes.frame).corners()
    _free_space(
        grid, shrunk, np.ascontiguousarray(corners), sensor, el_lo, el_step, config.range_tolerance_m, passed, hits
    )
    return passed, hits


# ------------------------------------------------------------------------------------------------ kernels
@numba.njit(cache=True)
def _box_stats(
    pts: np.ndarray,
    bins: np.ndarray,
    boxes: np.ndarray,
    velocity: np.ndarray,
    clearance: float,
    margin: float,
    ring_gap: float,
    ring: float,
    max_shift: float,
    inside: np.ndarray,
    painted: np.ndarray,
    hist_in: np.ndarray,
    hist_ring: np.ndarray,
) -> None:
    """Count points inside each box (grown by ``margin``, above its bottom clearance) and the colour bins of the
    painted ones inside and in the ring (between the box grown by ``ring_gap`` and by ``ring_gap + ring``).

    Points move with the box to the keyframe time (``p - v dt``); for colours only points whose shift stays under
    ``max_shift`` count (older sweeps of a moving object were painted from images taken after it had moved)."""
    b = boxes.shape[0]
    cos_yaw = np.cos(boxes[:, 6])
    sin_yaw = np.sin(boxes[:, 6])
    reach2 = np.empty(b)
    speed = np.empty(b)
    for k in range(b):
        speed[k] = math.sqrt(velocity[k, 0] ** 2 + velocity[k, 1] ** 2)
        r = 0.5 * math.sqrt(boxes[k, 3] ** 2 + boxes[k, 4] ** 2) + ring_gap + ring + speed[k] * 1.0
        reach2[k] = r * r
    for i in range(pts.shape[0]):
        x, y, z, dt = pts[i, 0], pts[i, 1], pts[i, 2], pts[i, 4]
        for k in range(b):
            dx, dy = x - boxes[k, 0], y - boxes[k, 1]
            if dx * dx + dy * dy > reach2[k]:
                continue
            dz = z - boxes[k, 2]
            half_h = 0.5 * boxes[k, 5]
            if dz > half_h + margin or dz < -half_h + clearance:
                continue
            dx -= velocity[k, 0] * dt
            dy -= velocity[k, 1] * dt
            lx = abs(cos_yaw[k] * dx + sin_yaw[k] * dy)
            ly = abs(-sin_yaw[k] * dx + cos_yaw[k] * dy)
            hl, hw = 0.5 * boxes[k, 3], 0.5 * boxes[k, 4]
            colour = bins[i] >= 0 and speed[k] * abs(dt) <= max_shift
            if lx <= hl + margin and ly <= hw + margin:
                inside[k] += 1
                if bins[i] >= 0:
                    painted[k] += 1
                if colour:
                    hist_in[k, bins[i]] += 1
            elif colour and (lx > hl + ring_gap or ly > hw + ring_gap):
                outer = ring_gap + ring
                hist_ring[k, bins[i]] += lx <= hl + outer and ly <= hw + outer


@numba.njit(cache=True)
def _nearest_ray_grid(
    xyz: np.ndarray, sensor: np.ndarray, az_bins: int, el_lo: float, el_step: float, el_bins: int
) -> np.ndarray:
    """(az_bins, el_bins, 4) nearest return per bin: range and unit direction from the sensor (range inf: none)."""
    grid = np.full((az_bins, el_bins, 4), np.inf)
    az_scale = az_bins / (2.0 * math.pi)
    for i in range(xyz.shape[0]):
        dx, dy, dz = xyz[i, 0] - sensor[0], xyz[i, 1] - sensor[1], xyz[i, 2] - sensor[2]
        r_bev = math.sqrt(dx * dx + dy * dy)
        r = math.sqrt(r_bev * r_bev + dz * dz)
        if r < 1e-6:
            continue
        a = int((math.atan2(dy, dx) + math.pi) * az_scale) % az_bins
        e = math.floor((math.atan2(dz, r_bev) - el_lo) / el_step)
        if e < 0 or e >= el_bins:
            continue
        if r < grid[a, e, 0]:
            grid[a, e, 0] = r
            grid[a, e, 1] = dx / r
            grid[a, e, 2] = dy / r
            grid[a, e, 3] = dz / r
    return grid


@numba.njit(cache=True, inline="always")
def _slab(o: np.ndarray, d: np.ndarray, half: np.ndarray) -> tuple[float, float]:
    """Entry and exit distance of the ray ``o + t d`` through the axis-aligned box ``|x| <= half`` (entry > exit:
    no intersection)."""
    t_in, t_out = -np.inf, np.inf
    for j in range(3):
        if abs(d[j]) < 1e-12:
            if abs(o[j]) > half[j]:
                return 1.0, 0.0
            continue
        t1 = (-half[j] - o[j]) / d[j]
        t2 = (half[j] - o[j]) / d[j]
        t_in = max(t_in, min(t1, t2))
        t_out = min(t_out, max(t1, t2))
    return t_in, t_out


@numba.njit(cache=True)
def _free_space(
    grid: np.ndarray,
    boxes: np.ndarray,
    corners: np.ndarray,
    sensor: np.ndarray,
    el_lo: float,
    el_step: float,
    tol: float,
    passed: np.ndarray,
    hits: np.ndarray,
) -> None:
    """Per box: classify the stored ray of every bin its corners span (pass / hit / occluded)."""
    az_bins, el_bins = grid.shape[0], grid.shape[1]
    az_step = 2.0 * math.pi / az_bins
    o = np.empty(3)
    d = np.empty(3)
    half = np.empty(3)
    for k in range(boxes.shape[0]):
        cx, cy, cz = boxes[k, 0] - sensor[0], boxes[k, 1] - sensor[1], boxes[k, 2] - sensor[2]
        c, s = math.cos(boxes[k, 6]), math.sin(boxes[k, 6])
        # The sensor inside the box's footprint: every direction crosses it; not a meaningful test.
        if abs(c * cx + s * cy) <= boxes[k, 3] / 2 and abs(-s * cx + c * cy) <= boxes[k, 4] / 2:
            continue
        # Azimuths: the extremes lie at corners (a convex footprint seen from outside). Elevations: at the
        # nearest or farthest footprint distance (the nearest point may lie on an edge), bottom or top.
        centre_az = math.atan2(cy, cx)
        lo_az, hi_az = np.inf, -np.inf
        r_max = 0.0
        for j in range(4):
            px, py = corners[k, j, 0] - sensor[0], corners[k, j, 1] - sensor[1]
            rel = math.atan2(py, px) - centre_az
            rel = (rel + math.pi) % (2.0 * math.pi) - math.pi
            lo_az, hi_az = min(lo_az, rel), max(hi_az, rel)
            r_max = max(r_max, math.sqrt(px * px + py * py))
        ex = max(abs(c * cx + s * cy) - boxes[k, 3] / 2, 0.0)
        ey = max(abs(-s * cx + c * cy) - boxes[k, 4] / 2, 0.0)
        r_min = max(math.sqrt(ex * ex + ey * ey), 1e-3)
        bottom, top = cz - boxes[k, 5] / 2, cz + boxes[k, 5] / 2
        lo_el = min(math.atan2(bottom, r_min), math.atan2(bottom, r_max))
        hi_el = max(math.atan2(top, r_min), math.atan2(top, r_max))
        a0 = math.floor((centre_az + lo_az + math.pi) / az_step)
        a1 = math.floor((centre_az + hi_az + math.pi) / az_step)
        e0 = max(math.floor((lo_el - el_lo) / el_step), 0)
        e1 = min(math.floor((hi_el - el_lo) / el_step), el_bins - 1)
        half[0], half[1], half[2] = boxes[k, 3] / 2, boxes[k, 4] / 2, boxes[k, 5] / 2
        o[0] = -(c * cx + s * cy)
        o[1] = -(-s * cx + c * cy)
        o[2] = -cz
        for a in range(a0, a1 + 1):
            ai = a % az_bins
            for e in range(e0, e1 + 1):
                r = grid[ai, e, 0]
                if not r < np.inf:
                    continue
                gx, gy, gz = grid[ai, e, 1], grid[ai, e, 2], grid[ai, e, 3]
                d[0] = c * gx + s * gy
                d[1] = -s * gx + c * gy
                d[2] = gz
                t_in, t_out = _slab(o, d, half)
                if t_in > t_out or t_out <= 0.0:
                    continue
                if r < t_in - tol:
                    continue  # occluded: ended before the box
                if r > t_out + tol:
                    passed[k] += 1
                else:
                    hits[k] += 1
