"""The built-in geometric lidar detector: one keyframe cloud in, classified and scored boxes out.

Stages (each timed, see :class:`GeometricResult`)::

    ground      grid of local planes on the dense lower envelope -> height above ground per point
    candidates  min_height_m < height < max_height_m, inside max_range_m, outside the ego's own box
    cluster     BEV grid connected components (numba; open3d DBSCAN as the alternative)
    fit         per cluster: smear velocity, motion-corrected L-shape orientation, tight extents; a fast cluster
                whose motion-corrected points fall apart is split (vehicles following each other in a lane
                smear into one cluster); clusters longer than max_cluster_length_m are dropped unless they stand
                as high as a barrier (barrier chains run on for tens of metres)
    chain       a fast object seen end-on leaves one cluster per sweep (1.35 m apart at 27 m/s and 20 Hz);
                such one-sweep fragments are chained newest to oldest by constant-velocity nearest neighbour
                and kept as one cluster where the motion-corrected fit is as compact as a fragment; old
                unchained fragments (where something was) are dropped
    merge       clusters seen only above something nearer (a car behind a car) count as standing on the ground;
                pairs of vehicle parts whose merged fit is a more plausible vehicle and whose gap lies in the
                shadow of something nearer to the sensor (an occluder cut them apart) become one cluster
    split       too-wide pedestrian-height clusters -> k-means into pedestrians; low thin rows of any length ->
                barriers about barrier_spacing_m long (cut at gaps first); still two-wheeler-sized racks ->
                bicycles side by side
    classify    class by size priors and motion (:mod:`autolabel.detect.classify`), overruled by the learned class
                model where it is sure (:mod:`autolabel.detect.learned`); completion to the class size away
                from the sensor, heading from motion; score: the learned P(true positive) (hand-set without a
                model or for clouds of few sweeps); non-maximum suppression on footprints and on points inside
                a better box

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
from pathlib import Path

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
    size_likelihoods,
)
from autolabel.detect.cluster import ClusterConfig, cluster_points, grid_clusters, group_by_label
from autolabel.detect.ground import GroundConfig, GroundModel, estimate_ground
from autolabel.detect.learned import (
    MODEL_PATH,
    SCORE_FEATURES,
    class_features,
    hand_probabilities,
    learned_classification,
    load_model,
    plausibilities,
    score_features,
)
from calibration import EGO_FRAME, Boxes3D, iou_bev

MERGE_SAMPLE_POINTS = 4000  # merge candidates are judged on an even subsample of this many points
VEHICLE_INDEX = np.array(sorted(CLASSES.index(c) for c in VEHICLES))
_VEHICLES_SPLIT = -1  # split proposals whose parts are judged by their best vehicle class
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
        row_height_tolerance_m: clusters standing this close to a barrier's height are tried as rows of barriers
            (and kept when longer than ``max_cluster_length_m``: barrier chains run on for tens of metres).
        max_row_thickness_m: a row of barriers is no thicker than this across its axis.
        row_gap_m: a row is cut where its points leave a gap longer than this along its axis.
        max_rack_size: most two-wheelers one cluster is split into (parked side by side in a rack).
        rack_spacing_m: about how far apart two-wheelers stand in a rack.
        max_vehicle_width_m: a vehicle-high cluster wider than this (across its fitted axis) is tried as vehicles
            parked side by side (0.3 m apart they merge in the clustering).
        side_gap_m: ... cut at empty strips at least this wide, along either fitted axis,
        min_side_part_m: ... into parts at least this wide.
        smear_split_speed_mps: clusters moving faster than this are checked for several objects' smears.
        smear_link_m: link distance of the re-clustering of their motion-corrected points.
        max_smear_length_m: longer clusters (after motion correction) are not checked (walls).
        smear_min_points: a part of a smear split holds at least this many points (a motorcycle entering the
            view behind a near car may hold under one percent of their cluster's points).
        sweep_period_s: time between sweeps (the number of sweeps in a cloud is its dt_s span over this).
        max_speed_mps: fastest object the fragment chaining links.
        max_fragment_age_s: unchained one-sweep fragments captured longer ago than this are dropped.
        chain_tolerance_m: a fragment joins a chain within this distance of its constant-velocity prediction
            (and, for the chain's second fragment, with a shape within this of the first's).
        learned: classify and score with the learned models (:mod:`autolabel.detect.learned`) where trained;
            False: the hand-set rules of :mod:`autolabel.detect.classify`.
        learned_model: path of the learned models' file ("": :data:`autolabel.detect.learned.MODEL_PATH`).
        learned_min_sweeps: clouds of fewer sweeps are classified and scored by the hand-set rules (the learned
            models were trained on 10-sweep clouds; a single sweep is far sparser).
        min_class_probability: with the learned class model, clusters whose class is less probable than this are
            no objects.
        confident_class_probability: the learned class model overrules the hand rules' class where its most
            probable class is at least this probable.
        min_score: detections scoring lower are dropped.
        max_overlap: a detection whose footprint lies more than this fraction (of the smaller footprint) inside a
            higher-scoring one is dropped (fragments of a far object completed into a second box).
        max_contained: a detection with more than this share of its points inside a higher-scoring box (grown by
            ``contained_margin_m``) is dropped (a piece of an object the better box covers).
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
    max_barrier_row_m: float = 120.0
    row_height_tolerance_m: float = 0.35
    max_row_thickness_m: float = 1.0
    row_gap_m: float = 1.0
    max_rack_size: int = 5
    rack_spacing_m: float = 0.8
    max_vehicle_width_m: float = 3.3
    side_gap_m: float = 0.12
    min_side_part_m: float = 1.0
    smear_split_speed_mps: float = 3.0
    smear_link_m: float = 0.8
    max_smear_length_m: float = 40.0
    smear_min_points: int = 20
    sweep_period_s: float = 0.05
    max_speed_mps: float = 45.0
    chain_tolerance_m: float = 0.6
    max_fragment_age_s: float = 0.1
    learned: bool = True
    learned_model: str = ""
    learned_min_sweeps: int = 5
    min_class_probability: float = 0.05
    confident_class_probability: float = 0.7
    min_score: float = 0.02
    max_overlap: float = 0.3
    max_contained: float = 0.5
    contained_margin_m: float = 0.3
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
            ground=replace(base.ground, sensor_xyz_m=tuple(sensor_xyz_m)),
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
        score_features: (K, F) per detection, the features its score is computed from
            (:data:`autolabel.detect.learned.SCORE_FEATURES`).
        clusters: all J clusters that reached classification (objects or not), their fits.
        cluster_members: per cluster, the indices into ``candidates`` of its points.
        class_features: (J, G) the clusters' class-model features (:data:`autolabel.detect.learned.CLASS_FEATURES`).
        stage_ms: wall time per stage in milliseconds (keys: :data:`STAGES`).
    """

    detections: Detections3D
    ground: GroundModel
    heights: np.ndarray
    candidates: np.ndarray
    labels: np.ndarray
    members: tuple[np.ndarray, ...]
    fits: ClusterFits
    score_features: np.ndarray
    clusters: ClusterFits
    cluster_members: tuple[np.ndarray, ...]
    class_features: np.ndarray
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
        members = [order[offsets[k] : offsets[k + 1]] for k in range(len(fits))]
        members, fits = split_smears(sub, sub_h, members, fits, config)
        barrier_h = CLASS_PRIORS[Category.BARRIER].size_lwh_m[2]
        low_row = np.abs(fits.height - barrier_h) < config.row_height_tolerance_m  # may be a barrier chain
        keep = np.flatnonzero(
            ((fits.length <= config.max_cluster_length_m) | low_row) & (fits.height < config.max_height_m - 0.05)
        )
        members = [members[k] for k in keep]
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
        if np.any(fits.length > config.max_cluster_length_m):  # long low clusters that were no barrier rows
            keep = np.flatnonzero(fits.length <= config.max_cluster_length_m)
            members, fits = [members[k] for k in keep], fits.take(keep)
    with timer.stage("classify"):
        fits = ends_occluded(fits, ring, config)
        sweeps = cloud_sweeps(points, config.sweep_period_s)
        learned = config.learned and sweeps >= config.learned_min_sweeps
        model = load_model(Path(config.learned_model or MODEL_PATH)) if learned else None
        plaus = plausibilities(fits, config.classify)
        class_inputs = class_features(fits, plaus, sweeps, config.classify)
        if model is not None and model.classes is not None:
            proba = model.classes.predict_proba(class_inputs)
            hand = classify(fits, config.classify)
            result = learned_classification(
                plaus, proba, hand, config.min_class_probability, config.confident_class_probability
            )
            class_p, none_p = proba[np.arange(len(fits)), np.maximum(result.label, 0)], proba[:, -1]
        else:
            result = classify(fits, config.classify)
            class_p, none_p = hand_probabilities(result)
        ground_z = ground.z_at(fits.centre) if len(fits) else np.zeros(0)
        boxes = complete_boxes(fits, result, ground_z, config.classify)
        features = score_features(fits, result, boxes, sweeps, class_p, none_p, config.classify)
        if model is not None and model.scores is not None and len(fits):
            score = model.scores.predict(features, np.maximum(result.label, 0))
        else:
            score = features[:, SCORE_FEATURES.index("hand_score")]
        score = np.where(result.label >= 0, score, 0.0)
        in_range = np.hypot(boxes[:, 0], boxes[:, 1]) <= config.max_range_m
        chosen = np.flatnonzero((result.label >= 0) & (score >= config.min_score) & in_range)
        chosen = chosen[np.argsort(-score[chosen], kind="stable")]
        chosen = chosen[suppress_overlaps(boxes[chosen], config.max_overlap)]
        chosen = chosen[
            suppress_contained(sub, [members[i] for i in chosen], boxes[chosen], fits.velocity[chosen], config)
        ]
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
        score_features=features[chosen],
        clusters=fits,
        cluster_members=tuple(members),
        class_features=class_inputs,
        stage_ms=timer.ms,
    )


def cloud_sweeps(points: np.ndarray, sweep_period_s: float) -> float:
    """How many sweeps an (N, 5) cloud holds: its ``dt_s`` span over the sweep period (at least 1)."""
    span = float(points[:, 4].max() - points[:, 4].min()) if len(points) else 0.0
    return max(1.0, round(span / sweep_period_s))


def suppress_overlaps(boxes: np.ndarray, max_overlap: float) -> np.ndarray:
    """Indices of the (N, 7) boxes (sorted best first) kept by greedy BEV non-maximum suppression on the
    intersection over the smaller footprint."""
    if len(boxes) < 2:
        return np.arange(len(boxes))
    # Only boxes whose circumcircles meet can overlap: the exact intersections are computed among those alone.
    reach = np.hypot(boxes[:, 3], boxes[:, 4]) / 2
    gap = np.hypot(*(boxes[:, None, :2] - boxes[None, :, :2]).transpose(2, 0, 1)) - reach[:, None] - reach[None, :]
    near = gap < 0
    np.fill_diagonal(near, False)
    touching = np.flatnonzero(near.any(axis=1))
    overlap = np.zeros((len(boxes), len(boxes)))
    if len(touching):
        sub = boxes[touching]
        bev = Boxes3D(sub, EGO_FRAME)
        iou = iou_bev(bev, bev)
        area = sub[:, 3] * sub[:, 4]
        inter = iou * (area[:, None] + area[None, :]) / (1.0 + iou)
        overlap[np.ix_(touching, touching)] = inter / np.maximum(np.minimum(area[:, None], area[None, :]), 1e-9)
    keep: list[int] = []
    for i in range(len(boxes)):
        if not near[i].any() or all(overlap[i, j] <= max_overlap for j in keep):
            keep.append(i)
    return np.array(keep, dtype=np.int64)


def suppress_contained(
    points: np.ndarray, members: list[np.ndarray], boxes: np.ndarray, velocity: np.ndarray, config: GeometricConfig
) -> np.ndarray:
    """Indices of the (K, 7) boxes (sorted best first) kept when detections whose points lie mostly
    (``max_contained``) inside a better box (grown by ``contained_margin_m``) are dropped: a piece of an object
    that the best box already covers (the far side of a car seen through a gap) completed into a second box.

    Args:
        points: (N, 5) candidate points; members: per box the indices of its points; velocity: (K, 2) m/s (NaN
            unknown): points are moved to the keyframe time first.
    """
    if len(boxes) < 2:
        return np.arange(len(boxes))
    samples = [m[:: max(1, len(m) // 200)] for m in members]  # an even subsample suffices for a share
    offsets = np.concatenate([[0], np.cumsum([len(m) for m in samples])]).astype(np.int64)
    keep = _contained_keep(
        np.asarray(points),
        np.concatenate(samples).astype(np.int64),
        offsets,
        np.ascontiguousarray(boxes, dtype=np.float64),
        np.nan_to_num(np.asarray(velocity, dtype=np.float64)),
        config.max_contained,
        config.contained_margin_m,
    )
    return np.flatnonzero(keep)


# ------------------------------------------------------------------------------------------------ smears
def split_smears(
    points: np.ndarray, heights: np.ndarray, members: list[np.ndarray], fits: ClusterFits, config: GeometricConfig
) -> tuple[list[np.ndarray], ClusterFits]:
    """Split clusters made of several moving objects whose smears overlap.

    Over the 0.45 s of a 10-sweep cloud a car at 25 m/s smears 11 m, so vehicles following each other in a lane
    closer than that form one cluster. A cluster moving faster than ``smear_split_speed_mps`` is moved to the
    keyframe time with its velocity (``xy - v dt``) and clustered again in BEV with ``smear_link_m``: where that
    leaves two or more parts of at least ``smear_min_points`` points (``cluster.min_points`` on the subsample),
    the parts replace it::

        smeared:   ====car====#####moto#####          corrected:   [car]      [moto]
    """
    # Longer clusters are walls (whose smear "velocity" is the aperture effect of the ego's motion along them).
    fast = np.flatnonzero((fits.speed_mps >= config.smear_split_speed_mps) & (fits.length <= config.max_smear_length_m))
    if len(fast) == 0:
        return members, fits
    link = ClusterConfig(cell_m=config.cluster.cell_m, link_min_m=config.smear_link_m, link_max_m=config.smear_link_m)
    replaced: dict[int, list[np.ndarray]] = {}

    def parts_of(idx: np.ndarray, velocity: np.ndarray, centre: np.ndarray, min_points: int) -> list[np.ndarray]:
        xy = points[idx, :2] - velocity[None, :] * points[idx, 4:5] - centre  # a small grid around the cluster
        reach = float(np.abs(xy).max()) + 2 * config.smear_link_m
        labels = grid_clusters(xy, replace(link, half_extent_m=reach))
        counts = np.bincount(labels[labels >= 0]) if (labels >= 0).any() else np.zeros(0, dtype=np.int64)
        big = np.flatnonzero(counts >= min_points)
        return [idx[labels == j] for j in big] if len(big) >= 2 else []

    for k in fast.tolist():
        idx = members[k]
        # Tried on an even subsample first (most fast clusters are one vehicle); a split is confirmed on all points.
        sample = idx[:: max(1, len(idx) // MERGE_SAMPLE_POINTS)]
        if len(sample) < len(idx) and not parts_of(sample, fits.velocity[k], fits.centre[k], config.cluster.min_points):
            continue
        parts = parts_of(idx, fits.velocity[k], fits.centre[k], config.smear_min_points)
        if parts:
            replaced[k] = parts
    if not replaced:
        return members, fits
    parts = [p for k in replaced for p in replaced[k]]
    part_fits = _fit_parts(points, heights, parts, config.fit)
    kept = np.array([k for k in range(len(fits)) if k not in replaced], dtype=np.int64)
    return [members[k] for k in kept] + parts, ClusterFits.concatenate([fits.take(kept), part_fits])


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
        u = _along(xy, axis)
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
    """Split pedestrian groups, barrier rows and bicycle racks where the parts fit better than the whole fits any
    class; only clusters that fit no class well (``split_below_likelihood``) are tried. All candidate splits are
    fitted in one batch; of a cluster's candidates the one whose parts fit their class best (on average) wins.

    Pedestrian groups: k-means (k = 2 .. ``max_group_size``) on motion-corrected BEV points, seeded along the
    long axis; the smallest k whose parts are all pedestrian-sized is the candidate. Barrier rows: see
    :func:`_barrier_split`. Racks (two-wheelers parked side by side, a still cluster about a bicycle long across and
    a bicycle high): k = 2 .. ``max_rack_size`` equal segments along the long axis, the k that fits best. Vehicles
    side by side (a still, vehicle-high cluster wider than ``max_vehicle_width_m``): see :func:`_side_by_side_splits`;
    their parts are judged by the best vehicle class of each.
    """
    if len(fits) == 0:
        return members, fits
    best = _best_size_fit(fits, config.classify, VEHICLE_INDEX, vehicles_only=False)
    ped_h = CLASS_PRIORS[Category.PEDESTRIAN].size_lwh_m[2]
    barrier_l, barrier_w, barrier_h = CLASS_PRIORS[Category.BARRIER].size_lwh_m
    bike_l, _, bike_h = CLASS_PRIORS[Category.BICYCLE].size_lwh_m
    group = (
        (fits.length > config.pedestrian_max_length_m)
        & (fits.length <= config.max_group_size * 0.9)
        & (fits.width <= 1.8)
        & (np.abs(fits.height - ped_h) < 0.5)
    )
    row = (
        (fits.length > 1.6 * barrier_w)
        & (fits.length <= config.max_barrier_row_m)
        & ((fits.width <= 3 * barrier_l) | (fits.length > config.fit.skip_longer_m))  # no orientation fitted there
        & (np.abs(fits.height - barrier_h) < config.row_height_tolerance_m)
    )
    rack = (
        (fits.length > 1.2)
        & (fits.length <= config.max_rack_size * config.rack_spacing_m + 0.5)
        & (np.abs(fits.width - bike_l) < 0.5)
        & (np.abs(fits.height - bike_h) < 0.4)
        & (fits.speed_mps < config.classify.moving_speed_mps)
    )
    side_by_side = (
        (fits.width > config.max_vehicle_width_m)
        & (fits.height > 1.0)
        & (fits.speed_mps < config.classify.moving_speed_mps)
    )
    ped, barrier = CLASSES.index(Category.PEDESTRIAN), CLASSES.index(Category.BARRIER)
    bicycle = CLASSES.index(Category.BICYCLE)
    # Candidate splits: (cluster, class index or _VEHICLES_SPLIT, parts).
    proposals: list[tuple[int, int, list[np.ndarray]]] = []
    for k in np.flatnonzero((group | row | rack | side_by_side) & (best < config.split_below_likelihood)):
        one = fits.take(np.array([k]))
        if group[k]:
            proposals += [(int(k), ped, parts) for parts in _pedestrian_splits(points, members[k], one, config)]
        if row[k]:
            parts = _barrier_split(points, members[k], config)
            if parts:
                proposals.append((int(k), barrier, parts))
        if rack[k]:
            for n in range(2, config.max_rack_size + 1):
                parts = _equal_segments(points, members[k], one, n, config.cluster.min_points)
                if len(parts) == n:
                    proposals.append((int(k), bicycle, parts))
        if side_by_side[k]:
            splits = _side_by_side_splits(points, members[k], one, config)
            proposals += [(int(k), _VEHICLES_SPLIT, parts) for parts in splits]
    if not proposals:
        return members, fits
    all_parts = [p for _, _, parts in proposals for p in parts]
    part_fits = _fit_parts(points, heights, all_parts, config.fit)
    lik = size_likelihoods(part_fits, config.classify).max(axis=2) * CLASS_WEIGHTS[None, :]
    chosen: dict[int, tuple[float, list[np.ndarray], np.ndarray]] = {}  # cluster -> (mean likelihood, parts, rows)
    settled: set[int] = set()  # clusters whose pedestrian split is settled by their smallest eligible k
    start = 0
    for k, label, parts in proposals:
        rows = np.arange(start, start + len(parts))
        start += len(parts)
        if label == ped:
            if k in settled or not np.all(part_fits.length[rows] <= config.pedestrian_max_length_m):
                continue  # settled already, or some part is still too long for one pedestrian: the next k
            settled.add(k)
        part_lik = lik[rows][:, VEHICLE_INDEX].max(axis=1) if label == _VEHICLES_SPLIT else lik[rows, label]
        value = float(part_lik.mean())
        if value > best[k] and value > chosen.get(k, (-1.0,))[0]:
            chosen[k] = (value, parts, rows)
    if not chosen:
        return members, fits
    kept = np.array([k for k in range(len(fits)) if k not in chosen], dtype=np.int64)
    out_members = [members[k] for k in kept] + [m for _, parts, _ in chosen.values() for m in parts]
    part_rows = np.concatenate([rows for _, _, rows in chosen.values()])
    return out_members, ClusterFits.concatenate([fits.take(kept), part_fits.take(part_rows)])


def _side_by_side_splits(
    points: np.ndarray, idx: np.ndarray, fit: ClusterFits, config: GeometricConfig
) -> list[list[np.ndarray]]:
    """Part lists of a cluster cut at the empty strips (at least ``side_gap_m`` wide) across each of its two fitted
    axes, keeping only cuts that leave parts at least ``min_side_part_m`` wide on both sides (none: no list)::

        ######## ########       two trucks parked 0.3 m apart, seen end-on: one cluster 5.4 m wide
        ######## ########  ->   cut at the strip between them
    """
    out = []
    c, s = np.cos(fit.yaw[0]), np.sin(fit.yaw[0])
    for axis in (np.array([c, s]), np.array([-s, c])):
        u = _along(points[idx, :2] - fit.centre[0], axis)
        order = np.argsort(u, kind="stable")
        su = u[order]
        cuts, start = [], su[0]
        for g in np.flatnonzero(np.diff(su) >= config.side_gap_m) + 1:
            if su[g - 1] - start >= config.min_side_part_m and su[-1] - su[g] >= config.min_side_part_m:
                cuts.append(int(g))
                start = su[g]
        parts = [idx[order[run]] for run in np.split(np.arange(len(su)), cuts)]
        if len(parts) >= 2 and min(len(p) for p in parts) >= config.cluster.min_points:
            out.append(parts)
    return out


def _equal_segments(points: np.ndarray, idx: np.ndarray, fit: ClusterFits, n: int, min_points: int) -> list[np.ndarray]:
    """The points ``idx`` of a cluster cut into ``n`` equal segments along its fitted long axis (segments of fewer
    than ``min_points`` points left out)."""
    axis = np.array([np.cos(fit.yaw[0]), np.sin(fit.yaw[0])])
    u = _along(points[idx, :2] - fit.centre[0], axis)
    segment = np.clip(((u / max(fit.length[0], 1e-9) + 0.5) * n).astype(np.int64), 0, n - 1)
    parts = [idx[segment == j] for j in range(n)]
    return [p for p in parts if len(p) >= min_points]


def _along(xy: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """(M,) projection of (M, 2) points on a 2-vector (element-wise: a BLAS matrix product would start OpenBLAS's
    spinning threads on large arrays and burn a second core for nothing)."""
    return xy[:, 0] * axis[0] + xy[:, 1] * axis[1]


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


def _barrier_split(points: np.ndarray, idx: np.ndarray, config: GeometricConfig) -> list[np.ndarray]:
    """Barriers of a low row (empty when it is no thin row or makes under two parts).

    The row's axis is the principal axis of its BEV points; a row thicker across it than ``max_row_thickness_m``
    (2nd to 98th percentile) is no row. Stretches separated by gaps over ``row_gap_m`` along the axis are split
    apart, and each stretch into ``round(length / barrier_spacing_m)`` (at least one) equal segments::

        ======== ======   ->   |==|==|==| |==|==|     a chain of any length (a median barrier) included
    """
    xy = points[idx[:: max(1, len(idx) // MERGE_SAMPLE_POINTS)], :2].astype(np.float64)
    centre = xy.mean(axis=0)
    _, vectors = np.linalg.eigh(np.cov((xy - centre).T))
    axis = vectors[:, -1]
    across = _along(xy - centre, np.array([-axis[1], axis[0]]))
    if np.percentile(across, 98) - np.percentile(across, 2) > config.max_row_thickness_m:
        return []
    u = _along(points[idx, :2] - centre, axis)
    order = np.argsort(u, kind="stable")
    su = u[order]
    breaks = np.flatnonzero(np.diff(su) > config.row_gap_m) + 1
    parts: list[np.ndarray] = []
    for run in np.split(np.arange(len(su)), breaks):
        lo, hi = su[run[0]], su[run[-1]]
        n = max(1, int(np.rint((hi - lo) / config.barrier_spacing_m)))
        segment = np.minimum(((su[run] - lo) / max(hi - lo, 1e-9) * n).astype(np.int64), n - 1)
        parts += [idx[order[run[segment == j]]] for j in range(n)]
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
def _contained_keep(
    pts: np.ndarray,
    idx: np.ndarray,
    offsets: np.ndarray,
    boxes: np.ndarray,
    velocity: np.ndarray,
    max_share: float,
    margin: float,
) -> np.ndarray:
    """(K,) bool: box k is kept unless more than ``max_share`` of its points lie inside a kept better box."""
    k = len(boxes)
    keep = np.zeros(k, dtype=np.bool_)
    for i in range(k):
        keep[i] = True
        reach_i = 0.5 * math.hypot(boxes[i, 3], boxes[i, 4])
        for j in range(i):
            if not keep[j]:
                continue
            reach_j = 0.5 * math.hypot(boxes[j, 3], boxes[j, 4]) + margin
            if math.hypot(boxes[i, 0] - boxes[j, 0], boxes[i, 1] - boxes[j, 1]) > reach_i + reach_j:
                continue
            c, s = math.cos(boxes[j, 6]), math.sin(boxes[j, 6])
            inside = 0
            for a in range(offsets[i], offsets[i + 1]):
                p = idx[a]
                x = pts[p, 0] - velocity[i, 0] * pts[p, 4] - boxes[j, 0]
                y = pts[p, 1] - velocity[i, 1] * pts[p, 4] - boxes[j, 1]
                if (
                    abs(c * x + s * y) <= 0.5 * boxes[j, 3] + margin
                    and abs(-s * x + c * y) <= 0.5 * boxes[j, 4] + margin
                ):
                    inside += 1
            if inside > max_share * max(offsets[i + 1] - offsets[i], 1):
                keep[i] = False
                break
    return keep


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
