"""OpenLABEL 1.0 export: validates against the official schema, round-trips boxes, and its per-frame
odometry transforms take the ego-frame cuboids to the world boxes."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from autolabel.datasets.nuscenes import load_nuscenes_clip
from autolabel.export.openlabel import (
    VEHICLE_CS,
    cuboid_values,
    openlabel_document,
    read_openlabel_boxes,
    validate_openlabel,
    write_openlabel,
)
from calibration import InputError

SCENE = "scene-0061"


def test_cuboid_quaternion_by_hand() -> None:
    values = cuboid_values(np.array([[1.0, 2.0, 3.0, 4.0, 2.0, 1.5, np.pi / 2]]))[0]
    s = np.sqrt(0.5)
    np.testing.assert_allclose(values, [1, 2, 3, 0, 0, s, s, 4, 2, 1.5], atol=1e-12)


def test_document_validates_and_round_trips(synthetic_nuscenes, tmp_path) -> None:
    clip = load_nuscenes_clip(synthetic_nuscenes.root, SCENE)
    labels = [frame.gt for frame in clip.frames]
    path = write_openlabel(tmp_path / "labels.json", clip, labels)
    document = json.loads(path.read_text())
    validate_openlabel(document)  # what was written is valid as read back
    root = document["openlabel"]
    assert root["metadata"]["schema_version"] == "1.0.0"
    # Two tracks: the car in all three keyframes, the barrier in the first two.
    intervals = {obj["name"]: obj["frame_intervals"] for obj in root["objects"].values()}
    assert intervals[synthetic_nuscenes.car_instance] == [{"frame_start": 0, "frame_end": 2}]
    assert intervals[synthetic_nuscenes.barrier_instance] == [{"frame_start": 0, "frame_end": 1}]
    assert {obj["type"] for obj in root["objects"].values()} == {"car", "barrier"}
    boxes = read_openlabel_boxes(document)
    for frame, frame_labels in zip(clip.frames, labels, strict=True):
        for track, box in zip(frame_labels.track_ids, frame_labels.boxes.data, strict=True):
            np.testing.assert_allclose(boxes[frame.index][track], box, atol=1e-9)


def test_odometry_transforms_map_cuboids_to_the_world(synthetic_nuscenes) -> None:
    clip = load_nuscenes_clip(synthetic_nuscenes.root, SCENE)
    document = openlabel_document(clip, [frame.gt for frame in clip.frames])
    root = document["openlabel"]
    assert root["coordinate_systems"]["LIDAR_TOP"]["parent"] == VEHICLE_CS
    for frame in clip.frames:
        properties = root["frames"][str(frame.index)]["frame_properties"]
        assert properties["timestamp"] == pytest.approx(frame.timestamp_us / 1e6)
        (transform,) = properties["transforms"].values()
        world_from_vehicle = np.array(transform["transform_src_to_dst"]["matrix4x4"]).reshape(4, 4)
        ego_centres = np.column_stack([frame.gt.boxes.centers, np.ones(len(frame.gt))])
        np.testing.assert_allclose((world_from_vehicle @ ego_centres.T).T[:, :3], frame.gt_world().centers, atol=1e-9)


def test_invalid_document_is_refused_with_its_path(synthetic_nuscenes) -> None:
    clip = load_nuscenes_clip(synthetic_nuscenes.root, SCENE)
    document = openlabel_document(clip, [frame.gt for frame in clip.frames])
    broken = copy.deepcopy(document)
    del broken["openlabel"]["metadata"]["schema_version"]
    with pytest.raises(InputError, match="metadata"):
        validate_openlabel(broken)
    broken = copy.deepcopy(document)
    broken["openlabel"]["objects"]["not-an-id"] = {"name": "x", "type": "car"}
    with pytest.raises(InputError, match="objects"):
        validate_openlabel(broken)
    with pytest.raises(InputError, match="label sets"):
        openlabel_document(clip, [])
