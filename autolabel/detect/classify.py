"""Hand-tuned class assignment, amodal box completion and scores for fitted clusters.

Each class has a size prior (nuScenes train-set means, spreads widened for real variety). A cluster's
visible extents ``(L, W)`` (``L >= W``) and height ``H`` are compared with every class under two hypotheses
(the long visible side is the object's length, or its width: a car seen end-on shows only its rear, a
barrier's long side is its nuScenes *width*)::

    size term    max(full(l) full(w), rho_w full(l) partial(w), rho_l partial(l) full(w),
                     rho_l rho_w partial(l) partial(w)) * g(H) * grounded
                 full(x) = Gaussian of x around the prior; partial(x) = 1 below the prior mean, Gaussian above;
                 rho = 1 for a side the object hides itself (seen end-on / broadside), partial_cost when
                 something nearer hides an end of it, free_partial_cost otherwise; g(H) = prior density at the
                 height in [H, H + beam gap at that range] nearest the mean (tops fall between beams);
                 grounded = 0 for clusters without points in their lower half (tree crowns) unless hidden
    motion term  speed above the class's maximum, or a heading across the motion, are penalised

The best ``prior weight * size * motion`` wins; below ``min_likelihood`` the cluster is not an object. Boxes are
then completed to the class size away from the sensor (the hidden side), headed along the motion when moving,
and scored from shape plausibility, points per sweep (point density against range) and L-fit quality.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import MappingProxyType

import numba
import numpy as np

from autolabel.categories import Category
from autolabel.detect.boxfit import LIDAR_XYZ_M, ClusterFits


@dataclass(frozen=True)
class ClassPrior:
    """Size prior of a class: mean and spread of ``l, w, h`` in metres, a prior weight, a speed limit."""

    size_lwh_m: tuple[float, float, float]
    spread_lwh_m: tuple[float, float, float]
    weight: float
    max_speed_mps: float
    heading_from_motion: bool = True


CLASS_PRIORS: MappingProxyType[Category, ClassPrior] = MappingProxyType(
    {
        Category.CAR: ClassPrior((4.63, 1.96, 1.74), (0.55, 0.22, 0.25), 1.0, 45.0),
        Category.TRUCK: ClassPrior((6.93, 2.51, 2.84), (1.6, 0.3, 0.45), 0.5, 40.0),
        Category.BUS: ClassPrior((10.9, 2.94, 3.47), (1.6, 0.2, 0.25), 0.4, 35.0),
        Category.TRAILER: ClassPrior((12.3, 2.9, 3.87), (2.0, 0.2, 0.25), 0.3, 35.0),
        Category.CONSTRUCTION_VEHICLE: ClassPrior((6.37, 2.85, 3.19), (1.0, 0.25, 0.3), 0.3, 15.0),
        Category.PEDESTRIAN: ClassPrior((0.73, 0.67, 1.77), (0.2, 0.2, 0.2), 1.0, 4.0, heading_from_motion=False),
        Category.MOTORCYCLE: ClassPrior((2.11, 0.77, 1.47), (0.25, 0.18, 0.2), 0.5, 40.0),
        Category.BICYCLE: ClassPrior((1.7, 0.6, 1.28), (0.2, 0.15, 0.2), 0.5, 12.0),
        Category.TRAFFIC_CONE: ClassPrior((0.41, 0.41, 1.07), (0.12, 0.12, 0.15), 0.6, 0.7, heading_from_motion=False),
        Category.BARRIER: ClassPrior((0.5, 2.53, 0.98), (0.15, 0.35, 0.15), 0.6, 0.7, heading_from_motion=False),
    }
)
CLASSES: tuple[Category, ...] = tuple(CLASS_PRIORS)
VEHICLES: frozenset[Category] = frozenset(
    {Category.CAR, Category.TRUCK, Category.BUS, Category.TRAILER, Category.CONSTRUCTION_VEHICLE}
)


@dataclass(frozen=True)
class ClassifyConfig:
    """Classification and scoring parameters.

    Attributes:
        partial_cost: ``rho``, the cost of a side seen only in part with something nearer hiding one of its ends.
        free_partial_cost: the cost of a side seen short with nothing hiding its ends.
        min_likelihood: below this the cluster is not an object.
        moving_speed_mps: above this (and with a motion estimate) the heading follows the motion.
        complete_within_sigma: a visible side shorter than ``mean - this * spread`` is completed to the mean.
        points_per_sweep_scale: points per sweep at which the evidence term reaches 1 - 1/e.
        min_occluded_fraction: a cluster with both sides cut short must show this fraction of one of them.
        self_occlusion_sin: a side seen within this |sin| of end-on is hidden by the object itself (no cost).
        sensor_xy_m: lidar position in the ego frame (view rays start there).
        residual_smear_s: moving objects may look longer by their speed times this (imperfect motion correction).
        beam_spacing_deg: elevation step between lidar beams (HDL-32E 1.33).
        top_beam_deg: elevation of the highest beam (HDL-32E 10.67).
    """

    partial_cost: float = 0.3
    free_partial_cost: float = 0.05
    min_likelihood: float = 0.02
    moving_speed_mps: float = 1.0
    complete_within_sigma: float = 1.0
    points_per_sweep_scale: float = 8.0
    min_occluded_fraction: float = 0.4
    self_occlusion_sin: float = 0.35
    sensor_xy_m: tuple[float, float] = LIDAR_XYZ_M[:2]
    residual_smear_s: float = 0.05
    beam_spacing_deg: float = 1.33
    top_beam_deg: float = 10.67


@dataclass(frozen=True, eq=False)
class Classification:
    """Per cluster (K,): class index into :data:`CLASSES` (-1 none), hypothesis (0: long side is the length,
    1: it is the width), and the winning ``prior * size * motion`` and ``size * motion`` likelihoods."""

    label: np.ndarray
    swapped: np.ndarray
    likelihood: np.ndarray
    plausibility: np.ndarray

    def categories(self) -> list[Category | None]:
        return [CLASSES[c] if c >= 0 else None for c in self.label]


def _prior_table() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    mean = np.array([p.size_lwh_m for p in CLASS_PRIORS.values()])
    spread = np.array([p.spread_lwh_m for p in CLASS_PRIORS.values()])
    weight = np.array([p.weight for p in CLASS_PRIORS.values()])
    max_speed = np.array([p.max_speed_mps for p in CLASS_PRIORS.values()])
    heading = np.array([p.heading_from_motion for p in CLASS_PRIORS.values()])
    return mean, spread, weight, max_speed, heading


_MEAN, _SPREAD, _WEIGHT, _MAX_SPEED, _HEADING = _prior_table()
CLASS_WEIGHTS: np.ndarray = _WEIGHT  # (C,) prior weights in the order of CLASSES


def _gauss(x: np.ndarray, mean: np.ndarray, spread: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * ((x - mean) / spread) ** 2)


def size_likelihoods(fits: ClusterFits, config: ClassifyConfig = ClassifyConfig()) -> np.ndarray:
    """(K, C, 2) size term of the clusters' visible extents for each class and both hypotheses.

    See the module docstring; besides:

    - A side hidden by the object itself (the width of a car seen broadside, its length seen end-on) costs
      nothing: ``rho`` fades to 1 as the view ray turns within ``self_occlusion_sin`` of that side's axis. A side
      cut short with nothing nearer hiding its ends (``fits.end_occluded``) costs ``free_partial_cost``.
    - The top of an object falls between beams: its true height lies in ``[H, H + beam gap at its range]``,
      and the height term is the prior's density at the point of that interval nearest the class mean.
    - An object reaching the top beam may be taller than seen; residual motion smear lets moving objects look
      longer; a cluster without points in its lower half (a tree crown) is no object of any class.
    """
    view = np.arctan2(fits.centre[:, 1] - config.sensor_xy_m[1], fits.centre[:, 0] - config.sensor_xy_m[0])
    upper = np.where(_top_truncated(fits, config), np.inf, fits.height + _beam_gap(fits, config))
    out = np.empty((len(fits), len(CLASSES), 2))
    _size_kernel(
        fits.length,
        fits.width,
        fits.height,
        upper,
        fits.speed_mps,
        np.abs(np.sin(view - fits.yaw)),
        fits.low_fraction,
        np.ascontiguousarray(fits.end_occluded, dtype=np.float64),
        _MEAN,
        _SPREAD,
        config.residual_smear_s,
        config.partial_cost,
        config.free_partial_cost,
        config.self_occlusion_sin,
        config.min_occluded_fraction,
        out,
    )
    return out


@numba.njit(cache=True)
def _size_kernel(
    length: np.ndarray,
    width: np.ndarray,
    height: np.ndarray,
    upper: np.ndarray,
    speed: np.ndarray,
    sin_view: np.ndarray,
    low_fraction: np.ndarray,
    end_occluded: np.ndarray,
    mean: np.ndarray,
    spread: np.ndarray,
    smear_s: float,
    rho_occluded: float,
    rho_free: float,
    self_sin: float,
    min_seen: float,
    out: np.ndarray,
) -> None:
    """``out[k, c, h]``: size term of cluster k for class c under hypothesis h (see :func:`size_likelihoods`)."""
    for k in range(len(length)):
        grounded = min(max((low_fraction[k] - 0.05) / 0.15, 0.0), 1.0)
        smear2 = (smear_s * speed[k]) ** 2
        for h in range(2):
            vis_l = length[k] if h == 0 else width[k]
            vis_w = width[k] if h == 0 else length[k]
            # |sin| between the view ray and the hypothesis' length axis, and its width axis.
            sin_l = sin_view[k] if h == 0 else math.sqrt(max(1.0 - sin_view[k] ** 2, 0.0))
            sin_w = math.sqrt(max(1.0 - sin_l**2, 0.0))
            # Cost of a side seen short: none when the object hides it itself, rho when something nearer hides
            # one of its ends, rho_free when nothing does (then it is probably just short).
            rl = rho_occluded if end_occluded[k, h] > 0 else rho_free
            rw = rho_occluded if end_occluded[k, 1 - h] > 0 else rho_free
            rho_l = rl + (1.0 - rl) * min(max(1.0 - sin_l / self_sin, 0.0), 1.0)
            rho_w = rw + (1.0 - rw) * min(max(1.0 - sin_w / self_sin, 0.0), 1.0)
            for c in range(mean.shape[0]):
                ml, mw, mh = mean[c, 0], mean[c, 1], mean[c, 2]
                full_l = math.exp(-0.5 * (vis_l - ml) ** 2 / (spread[c, 0] ** 2 + smear2))
                full_w = math.exp(-0.5 * (vis_w - mw) ** 2 / (spread[c, 1] ** 2 + smear2))
                part_l = 1.0 if vis_l <= ml else full_l
                part_w = 1.0 if vis_w <= mw else full_w
                sides = max(full_l * full_w, rho_w * full_l * part_w, rho_l * part_l * full_w)
                if max(vis_l / ml, vis_w / mw) >= min_seen:  # both cut short (hidden by something else)
                    sides = max(sides, rho_l * rho_w * part_l * part_w)
                nearest = min(max(mh, height[k]), upper[k])
                h_term = math.exp(-0.5 * ((nearest - mh) / spread[c, 2]) ** 2)
                out[k, c, h] = sides * h_term * grounded


def _beam_gap(fits: ClusterFits, config: ClassifyConfig) -> np.ndarray:
    """(K,) vertical distance between two beams at each cluster's range."""
    return fits.range_m * np.tan(np.radians(config.beam_spacing_deg))


def _top_truncated(fits: ClusterFits, config: ClassifyConfig) -> np.ndarray:
    """(K,) True where a cluster's highest return came from (near) the top beam: it may be taller than seen."""
    return fits.top_elevation_rad >= np.radians(config.top_beam_deg - config.beam_spacing_deg / 2)


def motion_likelihoods(fits: ClusterFits, config: ClassifyConfig = ClassifyConfig()) -> np.ndarray:
    """(K, C, 2) motion term: speed over the class limit, and heading across the motion for classes whose
    heading follows their motion (hypothesis 0: length along ``yaw``; 1: across it)."""
    speed = fits.speed_mps
    over = np.clip(speed[:, None] - _MAX_SPEED[None, :], 0.0, None)
    term = np.exp(-over)[:, :, None] * np.ones((1, 1, 2))
    moving = speed >= config.moving_speed_mps
    if np.any(moving):
        motion_dir = np.arctan2(fits.velocity[:, 1], fits.velocity[:, 0])
        along = np.abs(np.cos(motion_dir - fits.yaw))  # |cos| between motion and the long side
        align = np.stack([along, np.sqrt(np.clip(1.0 - along**2, 0.0, None))], -1)  # (K, 2) per hypothesis
        # Confidence in the heading grows with speed: at 1 m/s a weak preference, at 3 m/s a firm one.
        strength = np.clip((speed - config.moving_speed_mps) / 2.0, 0.0, 1.0)[:, None] * 0.9
        penalty = 1.0 - strength * (1.0 - align**4)  # (K, 2)
        factor = np.where(_HEADING[None, :, None], penalty[:, None, :], 1.0)
        term = np.where(moving[:, None, None], term * factor, term)
    return term


def classify(fits: ClusterFits, config: ClassifyConfig = ClassifyConfig()) -> Classification:
    """Best class and hypothesis per cluster."""
    k = len(fits)
    if k == 0:
        empty = np.zeros(0)
        return Classification(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool), empty, empty)
    plaus = size_likelihoods(fits, config) * motion_likelihoods(fits, config)
    weighted = plaus * _WEIGHT[None, :, None]
    flat = weighted.reshape(k, -1).argmax(axis=1)
    label, swapped = np.divmod(flat, 2)
    rows = np.arange(k)
    likelihood = weighted[rows, label, swapped]
    label = np.where(likelihood >= config.min_likelihood, label, -1)
    return Classification(label, swapped.astype(bool), likelihood, plaus[rows, np.maximum(label, 0), swapped])


def complete_boxes(
    fits: ClusterFits,
    result: Classification,
    ground_z: np.ndarray,
    config: ClassifyConfig = ClassifyConfig(),
) -> np.ndarray:
    """(K, 7) boxes ``x, y, z, l, w, h, yaw`` of classified clusters (rows of unclassified ones are the raw fit).

    Sides seen shorter than the class allows are extended to the class mean away from the sensor (the visible
    face stays put); the height is the class mean clipped to what the beams allow; the heading follows the
    motion when moving, else it points forward in the ego frame (|yaw| <= pi/2). Barriers keep nuScenes'
    convention (their long side is the width).

    Args:
        ground_z: (K,) ground height under each centre (the box bottom).
    """
    k = len(fits)
    label = np.maximum(result.label, 0)
    swapped = result.swapped
    yaw = np.where(swapped, fits.yaw + np.pi / 2, fits.yaw)
    vis_l = np.where(swapped, fits.width, fits.length)
    vis_w = np.where(swapped, fits.length, fits.width)
    mean, spread = _MEAN[label], _SPREAD[label]
    centre = fits.centre.copy()
    out_lw = np.stack([vis_l, vis_w], -1)
    known = result.label >= 0
    for axis in range(2):
        short = known & (out_lw[:, axis] < mean[:, axis] - config.complete_within_sigma * spread[:, axis])
        grow = np.where(short, mean[:, axis] - out_lw[:, axis], 0.0)
        direction = np.stack([np.cos(yaw + axis * np.pi / 2), np.sin(yaw + axis * np.pi / 2)], -1)
        sensor_along = ((np.asarray(config.sensor_xy_m) - centre) * direction).sum(-1)  # sensor along the axis
        side = np.where(np.abs(sensor_along) > out_lw[:, axis] / 2, -np.sign(sensor_along), 0.0)
        centre = centre + (side * grow / 2)[:, None] * direction
        out_lw[:, axis] += grow
    # The top lies between the highest return and the next beam up (anywhere above it at the top beam): the
    # class's most likely height in that interval.
    top = np.where(_top_truncated(fits, config), np.inf, fits.height + _beam_gap(fits, config))
    height = np.where(known, np.clip(_MEAN[label, 2], fits.height, top), fits.height)
    height = np.maximum(height, 0.1)
    speed = fits.speed_mps
    moving = (speed >= config.moving_speed_mps) & _HEADING[label] & known
    motion_dir = np.arctan2(np.nan_to_num(fits.velocity[:, 1]), np.nan_to_num(fits.velocity[:, 0]))
    flip_to_motion = np.cos(motion_dir - yaw) < 0
    flip_forward = np.cos(yaw) < -1e-9
    yaw = np.where(np.where(moving, flip_to_motion, flip_forward), yaw + np.pi, yaw)
    walking = (label == CLASSES.index(Category.PEDESTRIAN)) & known & (speed >= config.moving_speed_mps)
    yaw = np.where(walking, motion_dir, yaw)  # a pedestrian's footprint has no telling axis
    yaw = np.arctan2(np.sin(yaw), np.cos(yaw))
    boxes = np.column_stack([centre, ground_z + height / 2, out_lw, height, yaw])
    return boxes.reshape(k, 7)


def scores(
    fits: ClusterFits, result: Classification, sweeps: float, config: ClassifyConfig = ClassifyConfig()
) -> np.ndarray:
    """(K,) confidence in [0, 1]: ``sqrt(size-motion plausibility) * evidence * fit``.

    Evidence is ``1 - exp(-points_per_sweep / scale)``: a box on a handful of returns is a guess. ``fit`` is
    ``clip((quality - 0.1) / 0.5, 0.2, 1)`` of the L-fit quality for vehicles (their points hug an L; bushes
    and tree crowns do not), 1 for other classes (small objects have no L).
    """
    per_sweep = fits.count / max(sweeps, 1.0)
    evidence = 1.0 - np.exp(-per_sweep / config.points_per_sweep_scale)
    is_vehicle = np.array([c in VEHICLES for c in result.categories()], dtype=bool).reshape(-1)
    fit = np.where(is_vehicle, np.clip((fits.quality - 0.1) / 0.5, 0.2, 1.0), 1.0)
    value = np.sqrt(np.clip(result.plausibility, 0.0, 1.0)) * evidence * fit
    return np.where(result.label >= 0, value, 0.0)
