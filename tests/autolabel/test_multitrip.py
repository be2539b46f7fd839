"""Multi-trip alignment of simulated drives through one site: registration, label transfer, merging, failure."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from autolabel.categories import Category
from autolabel.datasets.model import Clip
from autolabel.datasets.nuscenes import list_scenes, load_nuscenes_clip
from autolabel.multitrip import (
    MultiTripConfig,
    MultiTripResult,
    Trip,
    align_prepared,
    gt_labels,
    prepare_trip,
    run_multitrip,
    static_objects,
    transfer_static_labels,
    transform_clip,
    with_static_labels,
)
from autolabel.sim.dataroot import SimConfig, simulate_dataroot, token
from calibration import SE3, WORLD_FRAME, Boxes3D, InputError, iou_bev
from fusion.multitrip import AlignmentStatus, Support

# Trip B's whole clip is moved by a datum/GNSS error: 2.5 m and 4 degrees about its centre, 0.3 m up.
PERTURB_YAW_DEG, PERTURB_SHIFT_M = 4.0, (2.0, -1.5, 0.3)
MAX_ACTORS = 500  # more than any simulated world has


@pytest.fixture(scope="module")
def site_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("multitrip") / "site"
    simulate_dataroot(root, SimConfig(seconds=5.0, seed=0, trips=2, workers=1))
    return root


@pytest.fixture(scope="module")
def other_site_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("multitrip") / "other"
    simulate_dataroot(root, SimConfig(seconds=3.0, seed=1, trips=1, workers=1))
    return root


@pytest.fixture(scope="module")
def clips(site_root) -> tuple[Clip, Clip, SE3]:
    """Trip A as recorded, trip B moved by a known rigid error, and that error (``wrong_SE3_world``)."""
    scene_a, scene_b = list_scenes(site_root)
    clip_a, clip_b = load_nuscenes_clip(site_root, scene_a), load_nuscenes_clip(site_root, scene_b)
    centre = np.mean([f.world_SE3_ego.translation for f in clip_b.frames], axis=0)
    wrong_SE3_world = (
        SE3.from_yaw(np.radians(PERTURB_YAW_DEG), centre) @ SE3(np.eye(3), PERTURB_SHIFT_M) @ SE3.from_yaw(0.0, -centre)
    )
    return clip_a, transform_clip(clip_b, wrong_SE3_world), wrong_SE3_world


@pytest.fixture(scope="module")
def prepared(clips) -> tuple[Trip, Trip]:
    """Trip A with its ground truth as labels; trip B unlabelled (it only receives labels)."""
    clip_a, clip_b, _ = clips
    return prepare_trip(clip_a, gt_labels(clip_a)), prepare_trip(clip_b, None)


@pytest.fixture(scope="module")
def result(prepared) -> MultiTripResult:
    return align_prepared(prepared)


def _actor(track_id: str, scene: str) -> int | None:
    """The simulator's actor index behind an instance token of ``scene`` (parked actors are shared by trips)."""
    return next((a for a in range(MAX_ACTORS) if token("instance", scene, a) == track_id), None)


def _alignment_errors(map_SE3_world: SE3, wrong_SE3_world: SE3, points: np.ndarray) -> tuple[float, float, float]:
    """Translation (m) and yaw (deg) of the error transform, and the RMS displacement of ``points`` (m)."""
    error = map_SE3_world @ wrong_SE3_world  # identity when the registration undoes the perturbation
    rms_m = float(np.sqrt(np.mean(np.sum((error.transform_points(points) - points) ** 2, axis=1))))
    return float(np.linalg.norm(error.translation)), abs(np.degrees(error.yaw_rad)), rms_m


# ----------------------------------------------------------------------------- alignment
def test_alignment_recovers_the_perturbation(result, prepared, clips):
    _, _, wrong_SE3_world = clips
    trip_a, trip_b = result.trips
    assert trip_a.registration.status is AlignmentStatus.REFERENCE
    reg = trip_b.registration
    assert reg.status is AlignmentStatus.ALIGNED and not result.warnings
    translation_m, yaw_deg, rms_m = _alignment_errors(reg.map_SE3_world, wrong_SE3_world, prepared[1].static_world)
    assert translation_m < 0.05 and yaw_deg < 0.1
    assert rms_m < 0.10  # the static cloud lands within 10 cm RMS of where it belongs
    assert reg.quality.residual_rms_m < 0.10 and reg.quality.fitness > 0.7
    assert reg.quality.height_offset_m < 0.008
    summary = result.summary()
    assert summary["trips"][1]["status"] == "aligned" and set(summary["timing_s"]) == {
        "static_clouds",
        "align",
        "transfer",
    }


def test_static_cloud_leaves_moving_things_out(prepared, clips):
    clip_a, _, _ = clips
    trip_a = prepared[0]
    moving = [
        frame.gt.boxes[[k]].transform(frame.world_SE3_ego, WORLD_FRAME)
        for frame in clip_a.frames
        for k, attribute in enumerate(frame.gt.attributes)
        if attribute in ("vehicle.moving", "pedestrian.moving")
    ]
    boxes = Boxes3D.concatenate(moving, WORLD_FRAME)
    inside = boxes.points_in_boxes(trip_a.static_world, margin_m=-0.1)
    bottom = boxes.centers[:, 2] - boxes.sizes[:, 2] / 2
    above_ground = inside & (trip_a.static_world[:, 2:3] > bottom[None, :] + 0.3)
    assert len(boxes) > 10 and above_ground.sum() == 0


# ----------------------------------------------------------------------------- labels
def test_static_objects_are_the_parked_things(clips):
    clip_a, _, _ = clips
    objects, dynamic = static_objects(clip_a, gt_labels(clip_a))
    assert len(objects) > 10 and len(dynamic) > 10
    assert all(o.motion_m <= 0.3 for o in objects)
    attributes = {o.attribute for o in objects}
    assert attributes <= {"vehicle.parked", "cycle.without_rider", ""}
    assert {Category.CAR, Category.BARRIER, Category.TRAFFIC_CONE} <= {o.category for o in objects}


def test_static_labels_of_trip_a_land_on_trip_b_objects(result, clips):
    clip_a, clip_b, _ = clips
    trip_a, trip_b = result.trips
    objects = {o.object_id: o for o in result.objects}
    assert trip_b.static_labels is not None and len(trip_b.static_labels) == len(clip_b)
    ious, unmatched = [], 0
    for frame, labels in zip(clip_b.frames, trip_b.static_labels, strict=True):
        for k, object_id in enumerate(labels.track_ids):
            (source_trip, source_track), *_ = objects[object_id].members
            assert source_trip == trip_a.name
            actor = _actor(source_track, clip_a.name)
            twin = token("instance", clip_b.name, actor)  # the same parked actor in trip B's own ground truth
            if twin not in frame.gt.track_ids:
                unmatched += 1
                continue
            j = frame.gt.track_ids.index(twin)
            ious.append(iou_bev(labels.boxes[[k]], frame.gt.boxes[[j]])[0, 0])
    assert len(ious) >= 20 and unmatched <= 0.1 * len(ious)
    assert min(ious) >= 0.7, sorted(ious)[:5]
    # Labels carry the map object's id in every trip, so one parked car has one track id everywhere.
    assert set(trip_b.observed) <= set(trip_a.contributed)
    assert all(labels.scores.tolist() == [1.0] * len(labels) for labels in trip_b.static_labels)


def test_an_object_gone_from_trip_b_is_flagged_not_transferred(result, prepared):
    trip_a, trip_b = prepared
    registration_b = result.trips[1].registration
    # The largest object trip B sees: take its points out of trip B (it "left before trip B came by").
    gone = max(
        (o for o in result.objects if o.support[trip_b.name] is Support.OBSERVED), key=lambda o: o.points[trip_b.name]
    )
    box_world_b = gone.box.as_boxes().transform(registration_b.map_SE3_world.inverse(), WORLD_FRAME)

    def without_object(points: np.ndarray) -> np.ndarray:
        inside = box_world_b.points_in_boxes(points, margin_m=0.3)[:, 0]
        bottom = box_world_b.centers[0, 2] - box_world_b.sizes[0, 2] / 2
        return points[~(inside & (points[:, 2] > bottom + 0.2))]

    emptied = dataclasses.replace(
        trip_b,
        static_world=without_object(trip_b.static_world),
        key_sweeps_world=tuple(without_object(k) for k in trip_b.key_sweeps_world),
    )
    objects, (_, result_b) = transfer_static_labels([trip_a, emptied], [t.registration for t in result.trips])
    moved = next(o for o in objects if o.members == gone.members)
    assert moved.support[trip_b.name] is Support.NOT_OBSERVED and moved.points[trip_b.name] < 5
    assert moved.object_id in result_b.not_observed and moved.object_id not in result_b.observed
    assert all(moved.object_id not in labels.track_ids for labels in result_b.static_labels)
    assert gone.object_id in result.trips[1].observed  # before: it was there and transferred


def test_objects_labelled_in_both_trips_merge(result, prepared, clips):
    clip_a, clip_b, _ = clips
    trip_a = prepared[0]
    trip_b = dataclasses.replace(prepared[1], static_objects=static_objects(clip_b, gt_labels(clip_b))[0])
    objects, results = transfer_static_labels([trip_a, trip_b], [t.registration for t in result.trips])
    both = [o for o in objects if {t for t, _ in o.members} == {clip_a.name, clip_b.name}]
    assert len(both) >= 5
    for obj in both:  # every merged pair is one simulated actor
        (_, track_a), (_, track_b) = sorted(obj.members)
        assert _actor(track_a, clip_a.name) == _actor(track_b, clip_b.name)
    singles = {_actor(t, n) for o in objects if len(o.members) == 1 for n, t in o.members}
    assert not {_actor(t, n) for o in both for n, t in o.members} & singles  # nothing is both merged and left over
    # Trip B's own frame labels: its static boxes are replaced by the map's, the rest stay.
    result_b = results[1]
    frame = next(i for i, labels in enumerate(result_b.static_labels) if len(labels))
    own = clip_b.frames[frame].gt
    combined = with_static_labels(own, result_b.static_labels[frame], result_b.track_to_object)
    replaced = {t for t in own.track_ids if result_b.track_to_object.get(t) in result_b.static_labels[frame].track_ids}
    assert replaced and not replaced & set(combined.track_ids)
    assert len(combined) == len(own) - len(replaced) + len(result_b.static_labels[frame])


# ----------------------------------------------------------------------------- failure
def test_an_unrelated_site_fails_with_a_warning(clips, other_site_root):
    clip_a, _, _ = clips
    other = load_nuscenes_clip(other_site_root, list_scenes(other_site_root)[0])
    assert other.name == clip_a.name  # same scene name, different place: names are made unique
    result = run_multitrip([clip_a, other])
    reg = result.trips[1].registration
    assert not reg.status.ok and reg.map_SE3_world.allclose(reg.prior)
    assert result.warnings and result.trips[1].name == f"{clip_a.name}#1"
    assert result.trips[1].static_labels is None
    assert all(set(o.support) == {clip_a.name} for o in result.objects)  # the failed trip gives nothing


def test_transform_clip_moves_poses_not_ego_data(clips):
    clip_a, _, _ = clips
    dst_SE3_world = SE3.from_yaw(0.3, (10.0, -5.0, 1.0))
    moved = transform_clip(clip_a, dst_SE3_world)
    frame, original = moved.frames[3], clip_a.frames[3]
    assert frame.world_SE3_ego.allclose(dst_SE3_world @ original.world_SE3_ego)
    assert frame.sweeps[0].world_SE3_ego.allclose(dst_SE3_world @ original.sweeps[0].world_SE3_ego)
    camera = next(iter(frame.cameras))
    assert frame.cameras[camera].world_SE3_ego.allclose(dst_SE3_world @ original.cameras[camera].world_SE3_ego)
    assert np.allclose(frame.gt_world().data, original.gt_world().transform(dst_SE3_world, WORLD_FRAME).data)
    assert frame.gt is original.gt
    with pytest.raises(InputError):
        run_multitrip([clip_a])
    with pytest.raises(InputError):
        MultiTripConfig(merge_iou=1.5)
