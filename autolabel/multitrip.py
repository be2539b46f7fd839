"""Multi-trip alignment over clips: static clouds, registration into one map frame, static-label transfer.

Several clips through the same place (simulator ``--trips``, or drives of one route on different days) are
brought into one ``map`` frame (trip 0's world frame) and their static object labels are shared::

    clips ──prepare_trip──> Trip (static world cloud, key sweeps, static objects from labels)
          ──align_trips───> Registration per trip (map_SE3_world, fitness, residual, status)
          ──transfer──────> MapObject per physical object (fused box in the map, who labelled it, who sees it)
                            + per trip and frame FrameLabels of the static objects that trip's lidar shows

A static object is a labelled track that stays put (:func:`static_objects`). The same object labelled in
several trips becomes one :class:`MapObject` with a fused box. A trip receives an object only when its own
lidar shows it (:class:`fusion.multitrip.Support`): a car parked during trip A and gone in trip B is reported
``not_observed`` for B, never pasted into B's frames. Trips whose registration fails (small overlap, poor
fit, a different place) neither give nor receive labels; the reason is in their warnings.

This module reads clips and decides the order of work; the algorithms are in :mod:`fusion.multitrip`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from autolabel.categories import Category
from autolabel.datasets.model import Clip, FrameLabels
from autolabel.fuse import FusedClip, sweep_input
from autolabel.poses import clip_sweeps
from calibration import EGO_FRAME, SE3, WORLD_FRAME, Box3D, Boxes3D, InputError
from fusion.aggregate import PoseTrack, sweep_to_world
from fusion.multitrip import (
    MAP_FRAME,
    AlignConfig,
    Registration,
    StaticCloudConfig,
    Support,
    SupportConfig,
    align_trips,
    box_point_counts,
    box_support,
    fuse_boxes,
    merge_static_boxes,
    static_cloud,
)

log = logging.getLogger(__name__)

# Classes that can stand still for days (pedestrians and "other" never count as static world).
STATIC_CAPABLE: frozenset[Category] = frozenset(
    {
        Category.CAR,
        Category.TRUCK,
        Category.BUS,
        Category.TRAILER,
        Category.CONSTRUCTION_VEHICLE,
        Category.MOTORCYCLE,
        Category.BICYCLE,
        Category.TRAFFIC_CONE,
        Category.BARRIER,
    }
)
# nuScenes attributes of things that are only paused (waiting at a light, ridden): not static across trips.
TRANSIENT_ATTRIBUTES: frozenset[str] = frozenset({"vehicle.moving", "vehicle.stopped", "cycle.with_rider"})


@dataclass(frozen=True)
class MultiTripConfig:
    """Settings of the multi-trip stage.

    Attributes:
        static_cloud: static world cloud of each trip.
        align: registration and its quality checks.
        support: when a trip's lidar shows an object.
        max_static_motion_m: a track whose world box centres stay within this distance of their median
            (horizontally) is static, unless its class or attributes say otherwise.
        merge_iou: boxes of two trips with a BEV IoU above this in the map frame are one object.
        sweep_stride: the static cloud uses every n-th sweep.
        frame_range_m: a transferred object appears in a frame only within this distance of the ego...
        min_frame_points: ...and when that frame's key sweep has at least this many points on it (above the
            ground), like nuScenes annotations.
    """

    static_cloud: StaticCloudConfig = field(default_factory=StaticCloudConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    support: SupportConfig = field(default_factory=SupportConfig)
    max_static_motion_m: float = 0.3
    merge_iou: float = 0.3
    sweep_stride: int = 1
    frame_range_m: float = 80.0
    min_frame_points: int = 1

    def __post_init__(self) -> None:
        if self.sweep_stride < 1 or self.max_static_motion_m < 0 or not 0 < self.merge_iou < 1:
            raise InputError("multi-trip: need sweep_stride >= 1, max_static_motion_m >= 0, 0 < merge_iou < 1")


@dataclass(frozen=True)
class StaticObject:
    """A static object labelled in one trip: one world box for its whole track.

    Attributes:
        track_id: the trip's track / instance id.
        box_world: score-weighted fused box of the track's boxes, in the trip's world frame.
        category, source_category, attribute: of the track's best-scoring box.
        score: the track's best score.
        motion_m: largest horizontal distance of a box centre from the track's median centre.
        frames: boxes in the track.
    """

    track_id: str
    box_world: Box3D
    category: Category
    source_category: str
    attribute: str
    score: float
    motion_m: float
    frames: int


@dataclass(frozen=True, eq=False)
class Trip:
    """One clip prepared for multi-trip alignment.

    Attributes:
        name: unique name among the trips (the clip name, ``#k`` appended on repeats).
        clip: the clip (poses in its own world frame).
        static_world: (M, 3) float64 static cloud in the clip's world frame.
        key_sweeps_world: F arrays (N_f, 3) float64: each frame's key sweep in the world frame.
        static_objects: static objects of the trip's labels (empty without labels).
        prior: coarse ``map_SE3_world`` (identity: the trips share a world frame).
        timing_s: seconds spent reading sweeps and building the static cloud.
    """

    name: str
    clip: Clip
    static_world: np.ndarray
    key_sweeps_world: tuple[np.ndarray, ...]
    static_objects: tuple[StaticObject, ...]
    prior: SE3
    timing_s: float = 0.0


@dataclass(frozen=True, eq=False)
class MapObject:
    """One static object in the map frame, from one or several trips' labels.

    Attributes:
        object_id: ``static-0000``...: the track id every trip's transferred labels carry.
        box: fused box in the ``map`` frame.
        category, source_category, attribute: of the best-scoring member.
        score: best member score.
        members: ``(trip name, track id)`` of each trip's label of it, best score first.
        support: trip name -> what that trip's lidar shows (aligned trips only).
        points: trip name -> the most points above the ground inside the box in one observation of that trip
            (its static cloud or one key sweep).
    """

    object_id: str
    box: Box3D
    category: Category
    source_category: str
    attribute: str
    score: float
    members: tuple[tuple[str, str], ...]
    support: Mapping[str, Support]
    points: Mapping[str, int]

    def __post_init__(self) -> None:
        object.__setattr__(self, "support", MappingProxyType(dict(self.support)))
        object.__setattr__(self, "points", MappingProxyType(dict(self.points)))


@dataclass(frozen=True, eq=False)
class TripResult:
    """What multi-trip alignment made of one trip.

    Attributes:
        name: the trip's name.
        registration: its registration (``registration.status.ok``: it takes part in the map).
        contributed: ids of the map objects its own labels gave.
        observed: ids of the map objects its lidar shows (it receives their labels)...
        not_observed: ...that it saw the place of but not the object (gone, or hidden)...
        out_of_view: ...and that it never came close to.
        static_labels: per frame, the observed map objects in the ego frame (track id = object id);
            ``None`` when the trip did not align.
        track_to_object: the trip's own static track ids -> the map object they became.
    """

    name: str
    registration: Registration
    contributed: tuple[str, ...] = ()
    observed: tuple[str, ...] = ()
    not_observed: tuple[str, ...] = ()
    out_of_view: tuple[str, ...] = ()
    static_labels: tuple[FrameLabels, ...] | None = None
    track_to_object: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "track_to_object", MappingProxyType(dict(self.track_to_object)))


@dataclass(frozen=True, eq=False)
class MultiTripResult:
    """Trips aligned into one map frame and their static objects.

    Attributes:
        trips: one result per trip, in input order (trip 0 defines the map frame).
        objects: the static objects of all aligned trips' labels, merged.
        timing_s: wall time per step (``static_clouds``, ``align``, ``transfer``).
    """

    trips: tuple[TripResult, ...]
    objects: tuple[MapObject, ...]
    timing_s: Mapping[str, float]

    @property
    def warnings(self) -> tuple[str, ...]:
        return tuple(f"{t.name}: {line}" for t in self.trips for line in t.registration.warnings)

    def summary(self) -> dict[str, object]:
        """JSON-ready report: per trip the registration figures and object counts, plus timing."""
        return {
            "frame": MAP_FRAME,
            "trips": [
                {
                    "name": t.name,
                    **t.registration.summary(),
                    "contributed": len(t.contributed),
                    "observed": len(t.observed),
                    "not_observed": list(t.not_observed),
                    "out_of_view": len(t.out_of_view),
                }
                for t in self.trips
            ],
            "objects": len(self.objects),
            "objects_from_several_trips": sum(len({trip for trip, _ in o.members}) > 1 for o in self.objects),
            "timing_s": {k: round(v, 3) for k, v in self.timing_s.items()},
        }


# ----------------------------------------------------------------------------------- clips
def transform_clip(clip: Clip, dst_SE3_world: SE3) -> Clip:
    """The clip with every pose (frames, sweeps, images) expressed in another world frame ``dst``.

    Ego-frame data (points, labels, calibration) are unchanged. Used to put a clip into the map frame
    (``dst_SE3_world = registration.map_SE3_world``) or to fake a GNSS/datum offset in tests.
    """

    def moved(pose: SE3 | None) -> SE3 | None:
        return None if pose is None else dst_SE3_world @ pose

    frames = tuple(
        dataclasses.replace(
            frame,
            world_SE3_ego=moved(frame.world_SE3_ego),
            sweeps=tuple(dataclasses.replace(s, world_SE3_ego=moved(s.world_SE3_ego)) for s in frame.sweeps),
            cameras={n: dataclasses.replace(i, world_SE3_ego=moved(i.world_SE3_ego)) for n, i in frame.cameras.items()},
        )
        for frame in clip.frames
    )
    return dataclasses.replace(clip, frames=frames)


def gt_labels(clip: Clip) -> tuple[FrameLabels, ...] | None:
    """The clip's ground truth per frame, ``None`` when it has none."""
    return tuple(f.gt for f in clip.frames) if clip.has_gt else None


def _track_rows(clip: Clip, labels: Sequence[FrameLabels]) -> dict[str, list[tuple[int, int]]]:
    """Track id -> [(frame index, row)] over the clip."""
    if len(labels) != len(clip):
        raise InputError(f"clip {clip.name}: {len(labels)} label frames for {len(clip)} frames")
    rows: dict[str, list[tuple[int, int]]] = {}
    for f, frame_labels in enumerate(labels):
        for row, track_id in enumerate(frame_labels.track_ids):
            rows.setdefault(track_id, []).append((f, row))
    return rows


def static_objects(
    clip: Clip, labels: Sequence[FrameLabels], config: MultiTripConfig = MultiTripConfig()
) -> tuple[tuple[StaticObject, ...], Boxes3D]:
    """Split a clip's labelled tracks into static objects and the rest.

    A track is static when its class can stand still for days (:data:`STATIC_CAPABLE`), none of its boxes
    carries a transient attribute (:data:`TRANSIENT_ATTRIBUTES`: waiting, moving, ridden) and its world box
    centres stay within ``max_static_motion_m`` of their median.

    Returns:
        The static objects (one fused world box each, in track order of appearance) and the world boxes of
        every other track in every frame (to remove their points from the static cloud).
    """
    if not clip.has_poses:
        raise InputError(f"clip {clip.name}: multi-trip alignment needs poses")
    world = [
        lab.boxes.transform(frame.world_SE3_ego, WORLD_FRAME) for frame, lab in zip(clip.frames, labels, strict=True)
    ]
    objects, dynamic = [], []
    for track_id, rows in _track_rows(clip, labels).items():
        boxes = Boxes3D.concatenate([world[f][[row]] for f, row in rows], WORLD_FRAME)
        scores = np.array([labels[f].scores[row] for f, row in rows])
        attributes = {labels[f].attributes[row] for f, row in rows}
        best_f, best_row = rows[int(np.argmax(scores))]
        category = labels[best_f].categories[best_row]
        motion_m = float(np.linalg.norm(boxes.centers[:, :2] - np.median(boxes.centers[:, :2], axis=0), axis=1).max())
        if (
            category in STATIC_CAPABLE
            and not attributes & TRANSIENT_ATTRIBUTES
            and motion_m <= config.max_static_motion_m
        ):
            objects.append(
                StaticObject(
                    track_id=track_id,
                    box_world=fuse_boxes(boxes, np.maximum(scores, 1e-6)).box(0),
                    category=category,
                    source_category=labels[best_f].source_categories[best_row],
                    attribute=labels[best_f].attributes[best_row],
                    score=float(scores.max()),
                    motion_m=motion_m,
                    frames=len(rows),
                )
            )
        else:
            dynamic.append(boxes)
    return tuple(objects), Boxes3D.concatenate(dynamic, WORLD_FRAME)


def _sweeps_world(clip: Clip, fused: FusedClip | None) -> tuple[list[np.ndarray], np.ndarray]:
    """The clip's de-skewed world sweeps (from ``fused`` when given) and their (S,) timestamps."""
    if fused is not None:
        return list(fused.sweep_world), np.asarray(fused.sweep_timestamp_us, dtype=np.int64)
    sweeps = clip_sweeps(clip)
    track = PoseTrack.from_poses([s.timestamp_us for s in sweeps], [s.world_SE3_ego for s in sweeps])
    world = [sweep_to_world(sweep_input(s, deskew=True), track) for s in sweeps]
    return world, np.array([s.timestamp_us for s in sweeps], dtype=np.int64)


def prepare_trip(
    clip: Clip,
    labels: Sequence[FrameLabels] | None = None,
    config: MultiTripConfig = MultiTripConfig(),
    *,
    prior: SE3 | None = None,
    fused: FusedClip | None = None,
    name: str | None = None,
) -> Trip:
    """Read a clip's sweeps and build what multi-trip alignment needs of it.

    Args:
        clip: a clip with poses.
        labels: per-frame labels (ground truth or auto-labels); ``None``: the trip only receives labels.
        config: settings.
        prior: coarse ``map_SE3_world`` (GNSS, or another map's frame); identity by default.
        fused: the clip's fusion-stage output, to reuse its de-skewed world sweeps instead of reading them.
        name: trip name (default: the clip's).
    """
    start = time.perf_counter()
    if not clip.has_poses:
        raise InputError(f"clip {clip.name}: multi-trip alignment needs poses (run the fusion stage first)")
    objects, dynamic = static_objects(clip, labels, config) if labels is not None else ((), None)
    world, times_us = _sweeps_world(clip, fused)
    by_time = {int(t): k for k, t in enumerate(times_us)}
    missing = [f.index for f in clip.frames if f.key_sweep.timestamp_us not in by_time]
    if missing:
        raise InputError(f"clip {clip.name}: no world sweep for the key sweep of frames {missing}")
    keys = tuple(world[by_time[f.key_sweep.timestamp_us]] for f in clip.frames)
    stride = slice(None, None, config.sweep_stride)
    cloud = static_cloud(world[stride], times_us[stride] / 1e6, config.static_cloud, dynamic_boxes=dynamic)
    log.info("trip %s: static cloud of %d points from %d sweeps", clip.name, len(cloud), len(world[stride]))
    return Trip(
        name=name or clip.name,
        clip=clip,
        static_world=cloud,
        key_sweeps_world=keys,
        static_objects=objects,
        prior=prior or SE3.identity(),
        timing_s=time.perf_counter() - start,
    )


# ----------------------------------------------------------------------------------- transfer
def _observations_map(trip: Trip, registration: Registration) -> list[np.ndarray]:
    """The trip's static cloud and key sweeps in the map frame."""
    return [registration.map_SE3_world.transform_points(x) for x in (trip.static_world, *trip.key_sweeps_world)]


def _frame_labels(
    trip: Trip, map_SE3_world: SE3, objects: Sequence[MapObject], config: MultiTripConfig
) -> tuple[FrameLabels, ...]:
    """Per frame of ``trip``, the given map objects that frame's key sweep shows, in the ego frame."""
    if not objects:
        return tuple(FrameLabels.empty() for _ in trip.clip.frames)
    boxes_map = Boxes3D.from_boxes([o.box for o in objects], MAP_FRAME)
    world_SE3_map = map_SE3_world.inverse()
    out = []
    for frame, key_world in zip(trip.clip.frames, trip.key_sweeps_world, strict=True):
        ego_SE3_world = frame.world_SE3_ego.inverse()
        boxes_ego = boxes_map.transform(ego_SE3_world @ world_SE3_map, EGO_FRAME)
        points_ego = ego_SE3_world.transform_points(key_world)
        on_object, _ = box_point_counts(boxes_ego, points_ego, config.support)
        in_box = boxes_ego.points_in_boxes(points_ego).sum(axis=0)
        keep = np.flatnonzero(
            (np.linalg.norm(boxes_ego.centers[:, :2], axis=1) <= config.frame_range_m)
            & (on_object >= config.min_frame_points)
        )
        out.append(
            FrameLabels(
                boxes=Boxes3D(boxes_ego.data[keep], EGO_FRAME, np.zeros((len(keep), 2))),
                track_ids=tuple(objects[k].object_id for k in keep),
                categories=tuple(objects[k].category for k in keep),
                scores=np.array([objects[k].score for k in keep]),
                source_categories=tuple(objects[k].source_category for k in keep),
                attributes=tuple(objects[k].attribute for k in keep),
                num_lidar_pts=in_box[keep],
            )
        )
    return tuple(out)


def transfer_static_labels(
    trips: Sequence[Trip], registrations: Sequence[Registration], config: MultiTripConfig = MultiTripConfig()
) -> tuple[tuple[MapObject, ...], tuple[TripResult, ...]]:
    """Merge the aligned trips' static objects in the map frame and hand each trip those its lidar shows.

    Returns:
        The map objects and one result per trip (failed trips: their registration only).
    """
    if len(trips) != len(registrations):
        raise InputError(f"multi-trip: {len(trips)} trips but {len(registrations)} registrations")
    aligned = [k for k, reg in enumerate(registrations) if reg.status.ok]
    entries = [(k, obj) for k in aligned for obj in trips[k].static_objects]
    boxes_map = Boxes3D.concatenate(
        [obj.box_world.as_boxes().transform(registrations[k].map_SE3_world, MAP_FRAME) for k, obj in entries],
        MAP_FRAME,
    )
    merged = merge_static_boxes(
        boxes_map,
        np.array([obj.score for _, obj in entries]),
        np.array([k for k, _ in entries], dtype=np.int64),
        config.merge_iou,
    )
    support = {
        k: box_support(merged.boxes, _observations_map(trips[k], registrations[k]), config.support) for k in aligned
    }
    objects = []
    for m, members in enumerate(merged.members):
        best = entries[members[0]][1]
        objects.append(
            MapObject(
                object_id=f"static-{m:04d}",
                box=merged.boxes.box(m),
                category=best.category,
                source_category=best.source_category,
                attribute=best.attribute,
                score=float(merged.scores[m]),
                members=tuple((trips[entries[i][0]].name, entries[i][1].track_id) for i in members),
                support={trips[k].name: support[k][1][m] for k in aligned},
                points={trips[k].name: int(support[k][0][m]) for k in aligned},
            )
        )
    results = []
    for trip, reg in zip(trips, registrations, strict=True):
        if not reg.status.ok:
            results.append(TripResult(trip.name, reg))
            continue

        def ids(state: Support, name: str = trip.name) -> tuple[str, ...]:
            return tuple(o.object_id for o in objects if o.support[name] is state)

        observed = [o for o in objects if o.support[trip.name] is Support.OBSERVED]
        results.append(
            TripResult(
                name=trip.name,
                registration=reg,
                contributed=tuple(o.object_id for o in objects if any(t == trip.name for t, _ in o.members)),
                observed=ids(Support.OBSERVED),
                not_observed=ids(Support.NOT_OBSERVED),
                out_of_view=ids(Support.OUT_OF_VIEW),
                static_labels=_frame_labels(trip, reg.map_SE3_world, observed, config),
                track_to_object={t: o.object_id for o in objects for name, t in o.members if name == trip.name},
            )
        )
        for object_id in results[-1].not_observed:
            members = next(o.members for o in objects if o.object_id == object_id)
            if any(t != trip.name for t, _ in members):
                log.info("trip %s: static object %s (labelled in %s) is not observed", trip.name, object_id, members)
    return tuple(objects), tuple(results)


def with_static_labels(own: FrameLabels, static: FrameLabels, track_to_object: Mapping[str, str]) -> FrameLabels:
    """A frame's own labels with the map's static objects: own boxes of an object in ``static`` are replaced.

    Args:
        own: the trip's labels of the frame.
        static: :attr:`TripResult.static_labels` of the frame.
        track_to_object: :attr:`TripResult.track_to_object`.
    """
    present = set(static.track_ids)
    kept = own.subset(np.array([track_to_object.get(t) not in present for t in own.track_ids], dtype=bool))
    velocity = kept.boxes.velocity if kept.boxes.velocity is not None else np.full((len(kept), 2), np.nan)
    boxes = Boxes3D(
        np.concatenate([kept.boxes.data, static.boxes.data]),
        EGO_FRAME,
        np.concatenate([velocity, np.zeros((len(static), 2))]),
    )
    return FrameLabels(
        boxes=boxes,
        track_ids=kept.track_ids + static.track_ids,
        categories=kept.categories + static.categories,
        scores=np.concatenate([kept.scores, static.scores]),
        source_categories=kept.source_categories + static.source_categories,
        attributes=kept.attributes + static.attributes,
        num_lidar_pts=np.concatenate([kept.num_lidar_pts, static.num_lidar_pts]),
        truncation=np.concatenate([kept.truncation, static.truncation]),
        occlusion=np.concatenate([kept.occlusion, static.occlusion]),
    )


# ----------------------------------------------------------------------------------- the stage
def _unique_names(clips: Sequence[Clip]) -> list[str]:
    seen: Counter[str] = Counter()
    names = []
    for clip in clips:
        names.append(clip.name if not seen[clip.name] else f"{clip.name}#{seen[clip.name]}")
        seen[clip.name] += 1
    return names


def align_prepared(
    trips: Sequence[Trip], config: MultiTripConfig = MultiTripConfig(), *, timing_s: Mapping[str, float] | None = None
) -> MultiTripResult:
    """Register prepared trips into one map frame (trip 0's) and transfer their static labels."""
    if len({t.name for t in trips}) != len(trips):
        raise InputError(f"multi-trip: trip names must be unique, got {[t.name for t in trips]}")
    start = time.perf_counter()
    registrations = align_trips([t.static_world for t in trips], [t.prior for t in trips], config.align)
    aligned_s = time.perf_counter() - start
    objects, results = transfer_static_labels(trips, registrations, config)
    for trip, reg in zip(trips, registrations, strict=True):
        q = reg.quality
        log.info(
            "trip %s: %s, fitness %.3f, residual %.3f m, height offset %.3f m",
            trip.name,
            reg.status.value,
            q.fitness,
            q.residual_rms_m,
            q.height_offset_m,
        )
    timing = {
        **(timing_s or {"static_clouds": sum(t.timing_s for t in trips)}),
        "align": aligned_s,
        "transfer": time.perf_counter() - start - aligned_s,
    }
    return MultiTripResult(results, objects, MappingProxyType(timing))


def run_multitrip(
    clips: Sequence[Clip],
    labels: Sequence[Sequence[FrameLabels] | None] | None = None,
    config: MultiTripConfig = MultiTripConfig(),
    *,
    priors: Sequence[SE3] | None = None,
    fused: Sequence[FusedClip | None] | None = None,
) -> MultiTripResult:
    """Align two or more clips of the same place and share their static object labels.

    Args:
        clips: T >= 2 clips with poses; the first defines the map frame.
        labels: per clip, per-frame labels or ``None`` (default: each clip's ground truth, when it has one).
        config: settings.
        priors: per clip a coarse ``map_SE3_world`` (identity: a shared world frame).
        fused: per clip its fusion-stage output (or ``None``), to reuse its world sweeps.
    """
    if len(clips) < 2:
        raise InputError(f"multi-trip alignment needs at least two clips, got {len(clips)}")
    labels = list(labels) if labels is not None else [gt_labels(c) for c in clips]
    priors = list(priors) if priors is not None else [SE3.identity()] * len(clips)
    fused = list(fused) if fused is not None else [None] * len(clips)
    if not len(labels) == len(priors) == len(fused) == len(clips):
        raise InputError("multi-trip: labels, priors and fused need one entry per clip")
    start = time.perf_counter()
    trips = [
        prepare_trip(clip, lab, config, prior=prior, fused=f, name=name)
        for clip, lab, prior, f, name in zip(clips, labels, priors, fused, _unique_names(clips), strict=True)
    ]
    return align_prepared(trips, config, timing_s={"static_clouds": time.perf_counter() - start})
