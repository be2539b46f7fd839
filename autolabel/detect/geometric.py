"""The built-in geometric lidar detector: no learned weights, one keyframe cloud in, classified boxes out.

Stages (each timed, see :class:`GeometricResult`)::

    ground      grid of local planes on the dense lower envelope -> height above ground per point
    candidates  min_height_m < height < max_height_m, inside max_range_m, outside the ego's own box
    cluster     BEV grid connected components (numba; open3d DBSCAN as the alternative)
    fit         per cluster: smear velocity, motion-corrected L-shape orientation, tight extents
    chain       a fast object seen end-on leaves one cluster per sweep (1.35 m apart at 27 m/s and 20 Hz);
                such one-sweep fragments are chained newest to oldest by constant-velocity nearest neighbour
                and kept as one cluster where the motion-corrected fit is as compact as a fragment; old
                unchained fragments (where something was) are dropped
    merge       clusters seen only above something nearer (a car behind a car) count as standing on the ground;
                pairs of vehicle parts whose merged fit is a more plausible vehicle and whose gap lies in the
                shadow of something nearer to the sensor (an occluder cut them apart) become one cluster
    split       too-wide pedestrian-height clusters -> k-means into pedestrians; long low thin clusters ->
                rows of barriers
    classify    class by size priors and motion, completion to the class size away from the sensor,
                heading from motion, score

Boxes come out in the ego frame with velocity (m/s over ground, ego axes; NaN when the cloud has a single
sweep).
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import numba
import numpy as np

from autolabel.categories import Category
from autolabel.detect.base import Detections3D, DetectorInput
from autolabel.detect.boxfit import ClusterFits, FitConfig, fit_clusters
from autolabel.detect.classify import (
    CLASS_PRIORS,
    CLASS_WEIGHTS,
    CLASSES,
    VEHICLES,
    ClassifyConfig,
    classify,
    complete_boxes,
    scores,
    size_likelihoods,
)
from autolabel.detect.cluster import ClusterConfig, cluster_points, group_by_label
from autolabel.detect.ground import GroundConfig, GroundModel, estimate_ground
from calibration import EGO_FRAME, Boxes3D, iou_bev

MERGE_SAMPLE_POINTS = 4000  # merge candidates are judged on an even subsample of this many points
VEHICLE_INDEX = np.array(sorted(CLASSES.index(c) for c in VEHICLES))
STAGES = ("ground", "candidates", "cluster", "fit", "chain", "merge", "split", "classify")


@dataclass(frozen=True)
class GeometricConfig:
    """Parameters of the geometric detector (defaults tuned on simulated nuScenes-like 10-sweep clouds).

    Attributes:
        max_range_m: detections and candidate points within this BEV distance of the ego.
        min_height_m, max_height_m: candidate points lie in this band above the ground.
        ego_box_m: ``x_min, x_max, y_min, y_max`` of the ego vehicle's own body (its returns are dropped).
        max_cluster_length_m: longer clusters (walls, building faces) are not objects.
        merge_gap_m: vehicle parts further apart than this along their common axis are never merged.
        min_merge_likelihood: merged parts must fit a vehicle at least this well (prior weight times size term).
        complete_likelihood: a cluster fitting some class this well is a whole object and is not merged.
        split_below_likelihood: only clusters fitting no class better than this are tried as groups or rows.
        occluded_margin_m: a gap counts as shadowed where something lies this much nearer to the sensor.
        occlusion_bin_deg: azimuth resolution of the nearest-return ring used for the shadow test.
        pedestrian_max_length_m: a pedestrian-height cluster longer than this is tried as a group.
        max_group_size: most pedestrians one cluster is split into.
        barrier_spacing_m: a long, low, thin cluster is split into barriers about this long.
        max_barrier_row_m: longer low thin clusters are walls, not rows of barriers.
        sweep_period_s: time between sweeps (the number of sweeps in a cloud is its dt_s span over this).
        max_speed_mps: fastest object the fragment chaining links.
        max_fragment_age_s: unchained one-sweep fragments captured longer ago than this are dropped.
        chain_tolerance_m: a fragment joins a chain within this distance of its constant-velocity prediction
            (and, for the chain's second fragment, with a shape within this of the first's).
        min_score: detections scoring lower are dropped.
        max_overlap: a detection whose footprint lies more than this fraction (of the smaller footprint) inside a
            higher-scoring one is dropped (fragments of a far object completed into a second box).
    """

    max_range_m: float = 60.0
    min_height_m: float = 0.2
    max_height_m: float = 4.5
    ego_box_m: tuple[float, float, float, float] = (-1.5, 4.0, -1.2, 1.2)
    max_cluster_length_m: float = 20.0
    merge_gap_m: float = 3.0
    min_merge_likelihood: float = 0.05
    complete_likelihood: float = 0.35
    split_below_likelihood: float = 0.15
    occluded_margin_m: float = 0.5
    occlusion_bin_deg: float = 0.25
    pedestrian_max_length_m: float = 1.05
    max_group_size: int = 4
    barrier_spacing_m: float = 2.6
    max_barrier_row_m: float = 16.0
    sweep_period_s: float = 0.05
    max_speed_mps: float = 45.0
    chain_tolerance_m: float = 0.6
    max_fragment_age_s: float = 0.1
    min_score: float = 0.02
    max_overlap: float = 0.3
    ground: GroundConfig = field(default_factory=GroundConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    fit: FitConfig = field(default_factory=FitConfig)
    classify: ClassifyConfig = field(default_factory=ClassifyConfig)

    @classmethod
    def for_lidar(
        cls, sensor_xyz_m: tuple[float, float, float], top_beam_deg: float, beam_spacing_deg: float, **changes
    ) -> GeometricConfig:
        """Defaults for another lidar: its ego-frame position and beam geometry go to every stage that uses them
        (defaults: nuScenes' HDL-32E at (0.943, 0, 1.84) m, top beam 10.67 deg, 1.33 deg between beams)."""
        base = cls(**changes)
        return replace(
            base,
            fit=replace(base.fit, sensor_xyz_m=tuple(sensor_xyz_m)),
            classify=replace(
                base.classify,
                sensor_xy_m=tuple(sensor_xyz_m[:2]),
                top_beam_deg=top_beam_deg,
                beam_spacing_deg=beam_spacing_deg,
            ),
        )


@dataclass(frozen=True, eq=False)
class GeometricResult:
    """Detections plus what led to them (for tests, debugging and benchmarks).

    Attributes:
        detections: the boxes.
        ground: the fitted ground model.
        heights: (N,) float32 height above ground of every input point.
        candidates: (M,) int64 indices of the points that were clustered.
        labels: (M,) int32 cluster of each candidate point before merging and splitting (-1 noise).
        members: per detection, the indices (into the input points) of its points.
        fits: per detection, the cluster's fitted box and features before classification.
        stage_ms: wall time per stage in milliseconds (keys: :data:`STAGES`).
    """

    detections: Detections3D
    ground: GroundModel
    heights: np.ndarray
    candidates: np.ndarray
    labels: np.ndarray
    members: tuple[np.ndarray, ...]
    fits: ClusterFits
    stage_ms: dict[str, float]


class GeometricDetector:
    """The built-in detector (see the module docstring); ``DETECTORS["geometric"]``. Painted colours
    (``DetectorInput.rgb``) are not used yet."""

    def __init__(self, config: GeometricConfig = GeometricConfig()) -> None:
        self.config = config

    def detect(self, frame: DetectorInput) -> Detections3D:
        return detect_geometric(frame, self.config).detections


class _Timer:
    def __init__(self) -> None:
        self.ms: dict[str, float] = dict.fromkeys(STAGES, 0.0)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.ms[name] += (time.perf_counter() - start) * 1e3


def detect_geometric(frame: DetectorInput, config: GeometricConfig = GeometricConfig()) -> GeometricResult:
    """Run every stage on one keyframe cloud."""
    timer = _Timer()
    points = frame.points
    with timer.stage("ground"):
        ground = estimate_ground(points, config.ground)
        heights = ground.heights(points)
    with timer.stage("candidates"):
        x0, x1, y0, y1 = config.ego_box_m
        candidates = _candidates(
            points, heights, config.min_height_m, config.max_height_m, config.max_range_m, x0, x1, y0, y1
        )
        sub, sub_h = points[candidates], heights[candidates]
    with timer.stage("cluster"):
        labels = cluster_points(sub, config.cluster)
        num = int(labels.max()) + 1 if len(labels) else 0
        order, offsets = group_by_label(labels, num)
    with timer.stage("fit"):
        fits = fit_clusters(sub, sub_h, order, offsets, config.fit)
        keep = np.flatnonzero((fits.length <= config.max_cluster_length_m) & (fits.height < config.max_height_m - 0.05))
        members = [order[offsets[k] : offsets[k + 1]] for k in keep]
        fits = fits.take(keep)
    with timer.stage("chain"):
        members, fits = chain_fragments(sub, sub_h, members, fits, config)
        # A one-sweep fragment left unchained and older than max_fragment_age_s shows where something was, not
        # where it is at the keyframe time.
        current = (fits.dt_span_s >= 1.5 * config.sweep_period_s) | (fits.mean_dt_s >= -config.max_fragment_age_s)
        if not current.all():
            keep = np.flatnonzero(current)
            members, fits = [members[k] for k in keep], fits.take(keep)
    with timer.stage("merge"):
        ring = NearestReturns(sub, config.occlusion_bin_deg, config.fit.sensor_xyz_m)
        fits = hidden_bases_grounded(fits, ring, config)
        members, fits = merge_vehicle_parts(sub, sub_h, members, fits, ring, config)
    with timer.stage("split"):
        members, fits = split_groups(sub, sub_h, members, fits, config)
    with timer.stage("classify"):
        fits = ends_occluded(fits, ring, config)
        span = float(points[:, 4].max() - points[:, 4].min()) if len(points) else 0.0
        sweeps = max(1.0, round(span / config.sweep_period_s))
        result = classify(fits, config.classify)
        ground_z = ground.z_at(fits.centre) if len(fits) else np.zeros(0)
        boxes = complete_boxes(fits, result, ground_z, config.classify)
        score = scores(fits, result, sweeps, config.classify)
        in_range = np.hypot(boxes[:, 0], boxes[:, 1]) <= config.max_range_m
        chosen = np.flatnonzero((result.label >= 0) & (score >= config.min_score) & in_range)
        chosen = chosen[np.argsort(-score[chosen], kind="stable")]
        chosen = chosen[suppress_overlaps(boxes[chosen], config.max_overlap)]
        velocity = fits.velocity[chosen]
        detections = Detections3D(
            Boxes3D(boxes[chosen], EGO_FRAME, velocity),
            score[chosen],
            tuple(CLASSES[result.label[i]] for i in chosen),
        )
    return GeometricResult(
        detections=detections,
        ground=ground,
        heights=heights,
        candidates=candidates,
        labels=labels,
        members=tuple(candidates[members[i]] for i in chosen),
        fits=fits.take(chosen),
        stage_ms=timer.ms,
    )


def suppress_overlaps(boxes: np.ndarray, max_overlap: float) -> np.ndarray:
    """Indices of the (N, 7) boxes (sorted best first) kept by greedy BEV non-maximum suppression on the
    intersection over the smaller footprint."""
    if len(boxes) < 2:
        return np.arange(len(boxes))
    bev = Boxes3D(boxes, EGO_FRAME)
    iou = iou_bev(bev, bev)
    area = boxes[:, 3] * boxes[:, 4]
    inter = iou * (area[:, None] + area[None, :]) / (1.0 + iou)
    overlap = inter / np.maximum(np.minimum(area[:, None], area[None, :]), 1e-9)
    keep: list[int] = []
    for i in range(len(boxes)):
        if all(overlap[i, j] <= max_overlap for j in keep):
            keep.append(i)
    return np.array(keep, dtype=np.int64)


# ------------------------------------------------------------------------------------------------ chaining
def chain_fragments(
    points: np.ndarray, heights: np.ndarray, members: list[np.ndarray], fits: ClusterFits, config: GeometricConfig
) -> tuple[list[np.ndarray], ClusterFits]:
    """Join one-sweep fragments of fast objects (see the module docstring).

    Fragments (clusters spanning under 1.5 sweep periods) are visited newest first; each extends the chain whose
    oldest fragment it best continues: a chain of one fragment accepts a similar shape at a
    speed of at most ``max_speed_mps``, a longer chain one within ``chain_tolerance_m`` of its
    constant-velocity prediction. A chain of two or more is kept as one cluster when its motion-corrected fit is
    no larger than its largest fragment plus ``chain_tolerance_m`` on each side.
    """
    frag = np.flatnonzero((fits.dt_span_s < 1.5 * config.sweep_period_s) & (fits.count >= config.cluster.min_points))
    if len(frag) < 2:
        return members, fits
    tol = config.chain_tolerance_m
    frag = frag[np.argsort(-fits.mean_dt_s[frag], kind="stable")]
    # Plain floats: this loop is small, and numpy scalars would dominate its time.
    t = fits.mean_dt_s.tolist()
    cx, cy = fits.centre[:, 0].tolist(), fits.centre[:, 1].tolist()
    length, width, height = fits.length.tolist(), fits.width.tolist(), fits.height.tolist()
    chains: list[list[int]] = []
    for f in frag.tolist():
        best, best_cost = -1, math.inf
        for c, chain in enumerate(chains):
            last = chain[-1]
            dt = t[last] - t[f]
            if dt < 0.5 * config.sweep_period_s:
                continue
            sx, sy = cx[last] - cx[f], cy[last] - cy[f]
            if len(chain) == 1:
                similar = (
                    abs(length[last] - length[f]) <= tol
                    and abs(width[last] - width[f]) <= tol
                    and abs(height[last] - height[f]) <= tol
                )
                shift = math.hypot(sx, sy)
                cost = shift if similar and shift <= config.max_speed_mps * dt else math.inf
            else:
                first = chain[0]
                span = t[first] - t[last]
                vx, vy = (cx[first] - cx[last]) / span, (cy[first] - cy[last]) / span
                cost = math.hypot(sx - vx * dt, sy - vy * dt)
                cost = cost if cost <= tol else math.inf
            if cost < best_cost:
                best, best_cost = c, cost
        if best >= 0:
            chains[best].append(f)
        else:
            chains.append([f])
    chains = [c for c in chains if len(c) >= 2]
    if not chains:
        return members, fits
    unions = [np.concatenate([members[k] for k in chain]) for chain in chains]
    offsets = np.concatenate([[0], np.cumsum([len(u) for u in unions])])
    joined = fit_clusters(points, heights, np.concatenate(unions), offsets, config.fit)
    good = [
        n
        for n, chain in enumerate(chains)
        if joined.length[n] <= fits.length[chain].max() + 2 * tol
        and joined.width[n] <= fits.width[chain].max() + 2 * tol
    ]
    if not good:
        return members, fits
    gone = {k for n in good for k in chains[n]}
    kept = np.array([k for k in range(len(fits)) if k not in gone], dtype=np.int64)
    out_members = [members[k] for k in kept] + [unions[n] for n in good]
    return out_members, ClusterFits.concatenate([fits.take(kept), joined.take(np.array(good))])


# ------------------------------------------------------------------------------------------------ merging
class NearestReturns:
    """Range image of the candidate points seen from the sensor: the nearest BEV range per azimuth bin, and per
    (azimuth, elevation) bin; built on first use.

    Azimuths are binned by a pseudo-angle (monotonic in the azimuth, no trigonometry) into ``360 / bin_deg``
    bins, between 0.64 and 1.27 times ``bin_deg`` wide; elevations by their tangent in ``elevation_step``
    steps from ``TAN_ELEVATION_MIN``.
    """

    def __init__(
        self, points: np.ndarray, bin_deg: float, sensor_xyz: tuple[float, float, float], elevation_step: float = 0.02
    ) -> None:
        self.points = points
        self.bins = round(360.0 / bin_deg)
        self.sensor = tuple(float(v) for v in sensor_xyz)
        self.elevation_step = elevation_step
        self.elevation_bins = int(np.ceil((TAN_ELEVATION_MAX - TAN_ELEVATION_MIN) / elevation_step))
        self._image: np.ndarray | None = None

    def _built(self) -> np.ndarray:
        if self._image is None:
            self._image = _range_image(
                np.asarray(self.points), self.bins, self.elevation_bins, self.elevation_step, *self.sensor
            )
        return self._image

    def nearest(self, xy: np.ndarray) -> np.ndarray:
        """(M,) range of the nearest return in the direction of (M, 2) positions and its two neighbour bins."""
        ring = self._built()[:, -1]
        idx = _pseudo_bins(xy - np.asarray(self.sensor[:2]), self.bins)
        return np.minimum.reduce([ring[(idx + d) % self.bins] for d in (-1, 0, 1)])

    def nearest_below(self, xy: np.ndarray, elevation_rad: np.ndarray, depth: int = 4) -> np.ndarray:
        """(M,) range of the nearest return in the direction of (M, 2) positions within ``depth`` elevation bins
        below ``elevation_rad`` (M,) (and the two neighbour azimuth bins): what the rays just under hit."""
        image = self._built()
        idx = _pseudo_bins(xy - np.asarray(self.sensor[:2]), self.bins)
        top = np.floor((np.tan(elevation_rad) - TAN_ELEVATION_MIN) / self.elevation_step).astype(np.int64)
        out = np.full(len(xy), np.inf)
        for d in (-1, 0, 1):
            for e in range(1, depth + 1):
                rows = np.clip(top - e, 0, self.elevation_bins - 1)
                out = np.minimum(out, image[(idx + d) % self.bins, rows])
        return out

    def range_of(self, xy: np.ndarray) -> np.ndarray:
        """(M,) BEV range of (M, 2) positions from the sensor."""
        return np.hypot(xy[:, 0] - self.sensor[0], xy[:, 1] - self.sensor[1])


TAN_ELEVATION_MIN, TAN_ELEVATION_MAX = -0.7, 0.3  # the range image's elevations (HDL-32E: -0.59 .. 0.19)


def _pseudo_bins(ray: np.ndarray, bins: int) -> np.ndarray:
    """(M,) bin of (M, 2) directions by the pseudo-angle (in [0, 4), monotonic in the azimuth)."""
    p = ray[:, 0] / np.maximum(np.abs(ray[:, 0]) + np.abs(ray[:, 1]), 1e-12)
    angle = np.where(ray[:, 1] >= 0, 1.0 - p, 3.0 + p)
    return np.minimum((angle * (bins / 4.0)).astype(np.int64), bins - 1)


def hidden_bases_grounded(fits: ClusterFits, ring: NearestReturns, config: GeometricConfig) -> ClusterFits:
    """Clusters without points in their lower half (``low_fraction`` under 0.2: tree crowns look like that) whose
    lower part is hidden behind something nearer get ``low_fraction`` 0.5: a car behind a parked car shows
    only its top. Hidden means: at the centre or at either end of the box, the rays just below the cluster's
    lowest return hit something ``occluded_margin_m`` nearer (under a tree crown they hit the ground, which is
    no candidate point, or the trunk, which is no nearer)."""
    low = np.flatnonzero(fits.low_fraction < 0.2)
    if len(low) == 0:
        return fits
    axis = np.stack([np.cos(fits.yaw[low]), np.sin(fits.yaw[low])], -1) * (fits.length[low] / 2)[:, None]
    samples = np.concatenate([fits.centre[low], fits.centre[low] + axis, fits.centre[low] - axis])
    bottom = np.tile(fits.bottom_elevation_rad[low], 3)
    hidden = ring.nearest_below(samples, bottom) < ring.range_of(samples) - config.occluded_margin_m
    hidden = hidden.reshape(3, -1).any(axis=0)
    if not hidden.any():
        return fits
    low_fraction = fits.low_fraction.copy()
    low_fraction[low[hidden]] = 0.5
    return replace(fits, low_fraction=low_fraction)


def ends_occluded(
    fits: ClusterFits, ring: NearestReturns, config: GeometricConfig, beyond_m: float = 0.3
) -> ClusterFits:
    """Fill ``end_occluded``: for the length and the width axis of each box, whether, ``beyond_m`` past either
    end, the nearest return in that direction lies ``occluded_margin_m`` nearer (the object may go on there)."""
    if len(fits) == 0:
        return fits
    occluded = np.zeros((len(fits), 2))
    for axis in range(2):
        yaw = fits.yaw + axis * np.pi / 2
        reach = (fits.length if axis == 0 else fits.width) / 2 + beyond_m
        step = np.stack([np.cos(yaw), np.sin(yaw)], -1) * reach[:, None]
        ends = np.concatenate([fits.centre + step, fits.centre - step])
        hidden = ring.nearest(ends) < ring.range_of(ends) - config.occluded_margin_m
        occluded[:, axis] = hidden.reshape(2, -1).any(axis=0)
    return replace(fits, end_occluded=occluded)


def _gap_is_shadowed(
    points: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    merged: ClusterFits,
    ring: NearestReturns,
    config: GeometricConfig,
) -> bool:
    """True when the stretch between parts ``a`` and ``b`` along the merged box is hidden from the sensor.

    The gap is sampled every 0.2 m on the merged box's face nearest to the sensor; it is shadowed when, for
    most samples, the nearest return in that direction lies ``occluded_margin_m`` nearer than the sample.
    Parts that overlap along the axis need no shadow (nothing separates them there).
    """
    yaw = float(merged.yaw[0])
    axis = np.array([np.cos(yaw), np.sin(yaw)])
    normal = np.array([-axis[1], axis[0]])
    centre = merged.centre[0]
    vel = np.nan_to_num(merged.velocity[0]) if merged.speed_mps[0] >= config.fit.min_speed_mps else np.zeros(2)

    def span(idx: np.ndarray) -> tuple[float, float]:
        idx = idx[:: max(1, len(idx) // MERGE_SAMPLE_POINTS)]
        xy = points[idx, :2] - vel[None, :] * points[idx, 4:5] - centre
        u = xy @ axis
        return float(u.min()), float(u.max())

    (a0, a1), (b0, b1) = span(a), span(b)
    lo, hi = (a1, b0) if a0 <= b0 else (b1, a0)
    if hi - lo <= 0.3:
        return True
    if hi - lo > config.merge_gap_m:
        return False
    side = -np.sign((centre - np.asarray(config.fit.sensor_xyz_m[:2])) @ normal) or 1.0  # the face nearer the sensor
    u = np.arange(lo + 0.1, hi - 0.05, 0.2)
    samples = centre + u[:, None] * axis + side * merged.width[0] / 2 * normal
    shadowed = ring.nearest(samples) < ring.range_of(samples) - config.occluded_margin_m
    return bool(np.mean(shadowed) >= 0.7)


def merge_vehicle_parts(
    points: np.ndarray,
    heights: np.ndarray,
    members: list[np.ndarray],
    fits: ClusterFits,
    ring: NearestReturns,
    config: GeometricConfig,
) -> tuple[list[np.ndarray], ClusterFits]:
    """Merge pairs of vehicle-height clusters, best gain first, while the union fits a vehicle (at least
    ``min_merge_likelihood``) better than either part fits any class and their gap is shadowed (see
    :func:`_gap_is_shadowed`). A merged cluster is tried again with its neighbours, so three parts can join.
    Parts that already make a confident whole object (``complete_likelihood``), have no points low down (tree
    crowns) or come from a single sweep (fragments of fast objects, see :func:`chain_fragments`) are left
    alone."""
    members = list(members)
    own = _best_size_fit(fits, config.classify, VEHICLE_INDEX, vehicles_only=False)
    usable = (
        (fits.height >= 1.2)
        & (fits.low_fraction >= 0.2)
        & (own < config.complete_likelihood)
        & (fits.dt_span_s >= 1.5 * config.sweep_period_s)  # one-sweep fragments are the chaining's
    )
    if usable.sum() < 2:
        return members, fits
    rect = np.column_stack([fits.centre, fits.length, fits.width, fits.yaw])  # (K, 5) rectangles, updated
    replaced: dict[int, ClusterFits] = {}
    version = np.zeros(len(fits), dtype=np.int64)
    heap: list[tuple[float, int, int, int, int, np.ndarray, ClusterFits]] = []

    def consider(pairs: list[tuple[int, int]]) -> None:
        """Fit all candidate unions in one batch; push the ones worth merging."""
        if not pairs:
            return
        unions = [np.concatenate([members[i], members[j]]) for i, j in pairs]
        # Candidates are judged on an even subsample (a near car has tens of thousands of points); an accepted
        # merge is refitted on all of them.
        samples = [u[:: max(1, len(u) // MERGE_SAMPLE_POINTS)] for u in unions]
        offsets = np.concatenate([[0], np.cumsum([len(u) for u in samples])])
        merged = fit_clusters(points, heights, np.concatenate(samples), offsets, config.fit)
        value = _best_size_fit(merged, config.classify, VEHICLE_INDEX, vehicles_only=True)
        base = np.array([max(own[i], own[j]) for i, j in pairs])
        ok = (merged.length <= config.max_cluster_length_m) & (value >= config.min_merge_likelihood) & (value > base)
        for p in np.flatnonzero(ok):
            i, j = pairs[p]
            row = merged.take(np.array([p]))
            if _gap_is_shadowed(points, members[i], members[j], row, ring, config):
                heapq.heappush(
                    heap, (float(base[p] - value[p]), i, int(version[i]), j, int(version[j]), unions[p], row)
                )

    def neighbours(i: int) -> np.ndarray:
        reach = np.hypot(rect[:, 2], rect[:, 3]) / 2
        near = np.hypot(*(rect[:, :2] - rect[i, :2]).T) <= reach + reach[i] + config.merge_gap_m
        near[i] = False
        near &= usable
        candidates = np.flatnonzero(near)
        return candidates[bev_gaps(rect[i], rect[candidates]) <= config.merge_gap_m]

    first = np.flatnonzero(usable)
    gaps = bev_gap_matrix(rect[first])
    height = fits.height[first]
    joinable = (
        (gaps <= config.merge_gap_m)
        & (np.abs(height[:, None] - height[None, :]) <= 1.0)  # parts of one vehicle stand about as high
        & (rect[first, 2][:, None] + rect[first, 2][None, :] + gaps <= config.max_cluster_length_m)
    )
    consider([(int(first[a]), int(first[b])) for a, b in zip(*np.nonzero(np.triu(joinable, 1)), strict=True)])
    while heap:
        _, i, vi, j, vj, union, merged = heapq.heappop(heap)
        if not (usable[i] and usable[j] and version[i] == vi and version[j] == vj):
            continue
        if len(union) > MERGE_SAMPLE_POINTS:
            merged = fit_clusters(points, heights, union, np.array([0, len(union)]), config.fit)
        members[i], replaced[i] = union, merged
        members[j] = np.zeros(0, dtype=np.int64)
        usable[j] = False
        version[i] += 1
        own[i] = float(_best_size_fit(merged, config.classify, VEHICLE_INDEX, vehicles_only=False)[0])
        rect[i] = [*merged.centre[0], merged.length[0], merged.width[0], merged.yaw[0]]
        usable[i] = own[i] < config.complete_likelihood  # a complete vehicle takes no further parts
        if usable[i]:
            consider([(min(i, int(k)), max(i, int(k))) for k in neighbours(i)])
    if not replaced:
        return members, fits
    keep = [k for k in range(len(members)) if len(members[k])]
    plain = np.array([k for k in keep if k not in replaced], dtype=np.int64)
    merged_ids = [k for k in keep if k in replaced]
    out_members = [members[k] for k in plain] + [members[k] for k in merged_ids]
    return out_members, ClusterFits.concatenate([fits.take(plain), *(replaced[k] for k in merged_ids)])


def bev_gap_matrix(rects: np.ndarray) -> np.ndarray:
    """(K, K) pairwise separation of (K, 5) BEV rectangles ``(cx, cy, length, width, yaw)`` (see :func:`bev_gaps`)."""
    c, s = np.cos(rects[:, 4]), np.sin(rects[:, 4])
    axes = np.stack([np.stack([c, s], -1), np.stack([-s, c], -1)], 1)  # (K, 2, 2)
    signs = np.array([[1, 1], [1, -1], [-1, -1], [-1, 1]], dtype=np.float64)
    corners = rects[:, None, :2] + np.einsum("ca,ka,kab->kcb", signs, rects[:, 2:4] / 2, axes)  # (K, 4, 2)
    proj = np.einsum("icb,jtb->ijtc", corners, axes)  # (K rect, K axis owner, 2 axes, 4 corners)
    lo, hi = proj.min(-1), proj.max(-1)  # (K, K, 2)
    own_lo, own_hi = np.diagonal(lo, axis1=0, axis2=1).T, np.diagonal(hi, axis1=0, axis2=1).T  # (K, 2)
    gap_j = np.maximum(lo - own_hi[None], own_lo[None] - hi)  # (i, j, axis of j): i's gap to j along j's axes
    gap = np.maximum(gap_j.max(-1), gap_j.transpose(1, 0, 2).max(-1))
    return np.maximum(gap, 0.0)


def bev_gaps(rect: np.ndarray, others: np.ndarray) -> np.ndarray:
    """(M,) separation of one BEV rectangle ``(cx, cy, length, width, yaw)`` from (M, 5) others: the largest gap
    between their projections on any of the four edge directions (exact for parallel rectangles, a lower bound
    otherwise)."""
    if len(others) == 0:
        return np.zeros(0)
    rows = np.vstack([rect, others])
    c, s = np.cos(rows[:, 4]), np.sin(rows[:, 4])
    axes = np.stack([np.stack([c, s], -1), np.stack([-s, c], -1)], 1)  # (K, 2, 2): each rectangle's two axes
    half = rows[:, 2:4] / 2
    signs = np.array([[1, 1], [1, -1], [-1, -1], [-1, 1]], dtype=np.float64)
    corners = rows[:, None, :2] + np.einsum("ca,ka,kab->kcb", signs, half, axes)  # (K, 4, 2)
    test = np.concatenate([np.broadcast_to(axes[:1], (len(others), 2, 2)), axes[1:]], axis=1)  # (M, 4, 2)
    pa = np.einsum("cb,mtb->mtc", corners[0], test)  # (M, 4 axes, 4 corners)
    pb = np.einsum("mcb,mtb->mtc", corners[1:], test)
    gap = np.maximum(pb.min(-1) - pa.max(-1), pa.min(-1) - pb.max(-1))
    return np.maximum(gap.max(-1), 0.0)


def _best_size_fit(fits: ClusterFits, config: ClassifyConfig, index: np.ndarray, vehicles_only: bool) -> np.ndarray:
    """(K,) best ``prior weight * size likelihood`` over the vehicle classes or over all classes."""
    lik = size_likelihoods(fits, config).max(axis=2) * CLASS_WEIGHTS[None, :]
    return (lik[:, index] if vehicles_only else lik).max(axis=1)


# ------------------------------------------------------------------------------------------------ splitting
def split_groups(
    points: np.ndarray, heights: np.ndarray, members: list[np.ndarray], fits: ClusterFits, config: GeometricConfig
) -> tuple[list[np.ndarray], ClusterFits]:
    """Split pedestrian groups and barrier rows where the parts fit better than the whole fits any class; only
    clusters that fit no class well (``split_below_likelihood``) are tried. All candidate splits are fitted in
    one batch.

    Pedestrian groups: k-means (k = 2 .. ``max_group_size``) on motion-corrected BEV points, seeded along the
    long axis; the smallest k whose parts are all pedestrian-sized is taken if its parts fit pedestrians better
    (on average) than the whole fits anything. Barrier rows: ``round(length / barrier_spacing_m)`` equal
    segments along the axis, taken if they fit barriers better.
    """
    if len(fits) == 0:
        return members, fits
    best = _best_size_fit(fits, config.classify, VEHICLE_INDEX, vehicles_only=False)
    ped_h = CLASS_PRIORS[Category.PEDESTRIAN].size_lwh_m[2]
    barrier_l, barrier_w, barrier_h = CLASS_PRIORS[Category.BARRIER].size_lwh_m
    group = (
        (fits.length > config.pedestrian_max_length_m)
        & (fits.length <= config.max_group_size * 0.9)
        & (fits.width <= 1.8)
        & (np.abs(fits.height - ped_h) < 0.5)
    )
    row = (
        (fits.length > 1.6 * barrier_w)
        & (fits.length <= config.max_barrier_row_m)
        & (fits.width <= 3 * barrier_l)
        & (np.abs(fits.height - barrier_h) < 0.35)
    )
    # Candidate splits: (cluster, class index, parts).
    proposals: list[tuple[int, int, list[np.ndarray]]] = []
    for k in np.flatnonzero((group | row) & (best < config.split_below_likelihood)):
        one = fits.take(np.array([k]))
        if group[k]:
            label = CLASSES.index(Category.PEDESTRIAN)
            proposals += [(int(k), label, parts) for parts in _pedestrian_splits(points, members[k], one, config)]
        else:
            parts = _barrier_split(points, members[k], one, config)
            if parts:
                proposals.append((int(k), CLASSES.index(Category.BARRIER), parts))
    if not proposals:
        return members, fits
    all_parts = [p for _, _, parts in proposals for p in parts]
    part_fits = _fit_parts(points, heights, all_parts, config.fit)
    lik = size_likelihoods(part_fits, config.classify).max(axis=2) * CLASS_WEIGHTS[None, :]
    replaced: dict[int, tuple[list[np.ndarray], ClusterFits]] = {}
    ped = CLASSES.index(Category.PEDESTRIAN)
    decided: set[int] = set()  # clusters whose split (or no split) is settled by their smallest eligible k
    start = 0
    for k, label, parts in proposals:
        rows = np.arange(start, start + len(parts))
        start += len(parts)
        if k in decided or (label == ped and not np.all(part_fits.length[rows] <= config.pedestrian_max_length_m)):
            continue  # settled already, or some part is still too long for one pedestrian: the next k
        decided.add(k)
        if float(lik[rows, label].mean()) > best[k]:
            replaced[k] = (parts, part_fits.take(rows))
    if not replaced:
        return members, fits
    kept = np.array([k for k in range(len(fits)) if k not in replaced], dtype=np.int64)
    out_members = [members[k] for k in kept] + [m for parts, _ in replaced.values() for m in parts]
    return out_members, ClusterFits.concatenate([fits.take(kept), *(f for _, f in replaced.values())])


def _fit_parts(points: np.ndarray, heights: np.ndarray, parts: list[np.ndarray], config: FitConfig) -> ClusterFits:
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in parts])])
    return fit_clusters(points, heights, np.concatenate(parts), offsets, config)


def _pedestrian_splits(
    points: np.ndarray, idx: np.ndarray, fit: ClusterFits, config: GeometricConfig
) -> list[list[np.ndarray]]:
    """Part lists for k = 2 .. max_group_size (stopping where a part gets too few points)."""
    vel = np.nan_to_num(fit.velocity[0]) if fit.speed_mps[0] >= config.fit.min_speed_mps else np.zeros(2)
    xy = points[idx, :2] - vel[None, :] * points[idx, 4:5]
    axis = np.array([np.cos(fit.yaw[0]), np.sin(fit.yaw[0])])
    out = []
    for k in range(2, config.max_group_size + 1):
        seeds = fit.centre[0] + np.linspace(-0.5, 0.5, 2 * k + 1)[1::2, None] * fit.length[0] * axis
        assign = kmeans_assign(xy, seeds)
        parts = [idx[assign == j] for j in range(k)]
        if min(len(p) for p in parts) < config.cluster.min_points:
            break
        out.append(parts)
    return out


def _barrier_split(points: np.ndarray, idx: np.ndarray, fit: ClusterFits, config: GeometricConfig) -> list[np.ndarray]:
    """``round(length / barrier_spacing_m)`` equal segments along the axis (empty when under two)."""
    n = int(np.rint(fit.length[0] / config.barrier_spacing_m))
    if n < 2:
        return []
    axis = np.array([np.cos(fit.yaw[0]), np.sin(fit.yaw[0])])
    u = (points[idx, :2] - fit.centre[0]) @ axis
    edges = np.linspace(-fit.length[0] / 2, fit.length[0] / 2, n + 1)
    segment = np.clip(np.searchsorted(edges, u, side="right") - 1, 0, n - 1)
    parts = [idx[segment == j] for j in range(n)]
    parts = [p for p in parts if len(p) >= config.cluster.min_points]
    return parts if len(parts) >= 2 else []


def kmeans_assign(xy: np.ndarray, seeds: np.ndarray, iterations: int = 10, max_points: int = 400) -> np.ndarray:
    """(M,) int64 Lloyd k-means assignment of (M, 2) points from (k, 2) seeds (deterministic): the centres are
    fitted on an even subsample of at most ``max_points`` points, then every point takes its nearest centre."""
    xy = np.ascontiguousarray(xy, dtype=np.float64)
    stride = max(1, -(-len(xy) // max_points))
    centres = _kmeans(xy[::stride].copy(), np.array(seeds, dtype=np.float64), iterations)
    return _nearest(xy, centres)


# ------------------------------------------------------------------------------------------------ kernels
@numba.njit(cache=True)
def _candidates(
    pts: np.ndarray,
    heights: np.ndarray,
    lo: float,
    hi: float,
    max_range: float,
    ex0: float,
    ex1: float,
    ey0: float,
    ey1: float,
) -> np.ndarray:
    """(M,) int64 indices of points in the height band, within range, outside the ego box."""
    out = np.empty(pts.shape[0], dtype=np.int64)
    m = 0
    r2 = max_range * max_range
    for i in range(pts.shape[0]):
        h = heights[i]
        if not (lo < h < hi):
            continue
        x, y = pts[i, 0], pts[i, 1]
        if x * x + y * y > r2:
            continue
        if ex0 <= x <= ex1 and ey0 <= y <= ey1:
            continue
        out[m] = i
        m += 1
    return out[:m]


@numba.njit(cache=True)
def _range_image(
    pts: np.ndarray, bins: int, elevation_bins: int, step: float, sx: float, sy: float, sz: float
) -> np.ndarray:
    """(bins, elevation_bins + 1) nearest BEV range per pseudo-angle bin (see :func:`_pseudo_bins`) and tangent
    of elevation bin; the last column is the nearest over all elevations."""
    image = np.full((bins, elevation_bins + 1), np.inf)
    scale = bins / 4.0
    for i in range(pts.shape[0]):
        x, y = pts[i, 0] - sx, pts[i, 1] - sy
        p = x / max(abs(x) + abs(y), 1e-12)
        angle = 1.0 - p if y >= 0 else 3.0 + p
        b = min(int(angle * scale), bins - 1)
        r = math.sqrt(x * x + y * y)
        e = math.floor(((pts[i, 2] - sz) / max(r, 0.1) - TAN_ELEVATION_MIN) / step)
        e = min(max(e, 0), elevation_bins - 1)
        if r < image[b, e]:
            image[b, e] = r
        if r < image[b, elevation_bins]:
            image[b, elevation_bins] = r
    return image


@numba.njit(cache=True)
def _nearest(xy: np.ndarray, centres: np.ndarray) -> np.ndarray:
    out = np.empty(len(xy), dtype=np.int64)
    for i in range(len(xy)):
        best, arg = np.inf, 0
        for j in range(len(centres)):
            d = (xy[i, 0] - centres[j, 0]) ** 2 + (xy[i, 1] - centres[j, 1]) ** 2
            if d < best:
                best, arg = d, j
        out[i] = arg
    return out


@numba.njit(cache=True)
def _kmeans(xy: np.ndarray, centres: np.ndarray, iterations: int) -> np.ndarray:
    k = len(centres)
    assign = np.full(len(xy), -1, dtype=np.int64)
    for _ in range(iterations):
        new = _nearest(xy, centres)
        if np.all(new == assign):
            break
        assign = new
        sums = np.zeros((k, 2))
        counts = np.zeros(k)
        for i in range(len(xy)):
            sums[assign[i]] += xy[i]
            counts[assign[i]] += 1
        for j in range(k):
            if counts[j] > 0:
                centres[j] = sums[j] / counts[j]
    return centres
