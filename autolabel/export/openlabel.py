"""ASAM OpenLABEL 1.0 export of a clip's labels, validated against the official JSON schema.

Document layout::

    openlabel.metadata             schema_version 1.0.0, annotator, clip name
    openlabel.coordinate_systems   odom (scene, = our world) -> vehicle-iso8855 (= our ego) -> one per sensor,
                                   each sensor with ``pose_wrt_parent`` = ego_SE3_sensor as a row-major 4x4
    openlabel.streams              the lidar(s) and cameras (pinhole intrinsics, distortion, image size)
    openlabel.objects              one per track: name, type (nuScenes detection class), frame intervals
    openlabel.frames[k]            per keyframe: frame_properties (timestamp in seconds, the transform
                                   ``vehicle-iso8855_to_odom`` = world_SE3_ego) and per object a cuboid
                                   ``x, y, z, qx, qy, qz, qw, sx, sy, sz`` in vehicle-iso8855 (geometric
                                   centre; sx, sy, sz = length, width, height; rotation = yaw about +z),
                                   the score, and the velocity when known

In OpenLABEL a transform ``src_to_dst`` maps points of ``src`` into ``dst`` (X_dst = M X_src), and a
coordinate system's ``pose_wrt_parent`` maps its points into its parent: our ``dst_SE3_src`` matrices.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np

from autolabel.datasets.model import Clip, FrameLabels
from autolabel.fileio import atomic_write_json
from calibration import SE3, InputError, wrap_angle_rad

SCHEMA_VERSION = "1.0.0"
SCENE_CS = "odom"
VEHICLE_CS = "vehicle-iso8855"
ONTOLOGY = "https://www.nuscenes.org/object-detection"


@lru_cache(maxsize=1)
def openlabel_schema() -> dict[str, Any]:
    """The vendored OpenLABEL 1.0.0 JSON schema (draft-07)."""
    text = resources.files("autolabel.export").joinpath("schemas/openlabel_json_schema_v1.0.0.json").read_text()
    return json.loads(text)


def validate_openlabel(document: dict[str, Any]) -> None:
    """Raise :class:`InputError` naming the first schema violation (with its JSON path)."""
    validator = jsonschema.Draft7Validator(openlabel_schema())
    error = next(iter(sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))), None)
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        raise InputError(f"OpenLABEL document invalid at {where}: {error.message}")


def _matrix(pose: SE3) -> list[float]:
    return [float(v) for v in pose.as_matrix().reshape(-1)]


def _coordinate_systems(clip: Clip) -> dict[str, Any]:
    rig = clip.rig
    systems: dict[str, Any] = {
        SCENE_CS: {"type": "scene_cs", "parent": "", "children": [VEHICLE_CS]},
        VEHICLE_CS: {"type": "local_cs", "parent": SCENE_CS, "children": list(rig.sensor_names)},
    }
    for name in rig.sensor_names:
        systems[name] = {
            "type": "sensor_cs",
            "parent": VEHICLE_CS,
            "children": [],
            "pose_wrt_parent": {"matrix4x4": _matrix(rig.ego_SE3_sensor(name))},
        }
    return systems


def _streams(clip: Clip) -> dict[str, Any]:
    streams: dict[str, Any] = {
        name: {"type": "lidar", "description": f"{clip.source.value} lidar {name}"} for name in clip.rig.lidars
    }
    for name, camera in clip.rig.cameras.items():
        projection = np.hstack([camera.intrinsics, np.zeros((3, 1))])
        streams[name] = {
            "type": "camera",
            "description": f"{clip.source.value} camera {name}",
            "stream_properties": {
                "intrinsics_pinhole": {
                    "width_px": camera.width_px,
                    "height_px": camera.height_px,
                    "camera_matrix_3x4": [float(v) for v in projection.reshape(-1)],
                    "distortion_coeffs_1xN": [float(v) for v in camera.distortion],
                }
            },
        }
    return streams


def _intervals(frames: Sequence[int]) -> list[dict[str, int]]:
    """Sorted frame indices -> maximal runs of consecutive frames."""
    runs: list[dict[str, int]] = []
    for f in sorted(set(frames)):
        if runs and f == runs[-1]["frame_end"] + 1:
            runs[-1]["frame_end"] = f
        else:
            runs.append({"frame_start": f, "frame_end": f})
    return runs


def cuboid_values(boxes: np.ndarray) -> np.ndarray:
    """(N, 7) ``x, y, z, l, w, h, yaw`` -> (N, 10) OpenLABEL ``x, y, z, qx, qy, qz, qw, sx, sy, sz``."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    half = b[:, 6] / 2.0
    zeros = np.zeros(len(b))
    return np.column_stack([b[:, :3], zeros, zeros, np.sin(half), np.cos(half), b[:, 3:6]])


def openlabel_document(
    clip: Clip, labels_per_frame: Sequence[FrameLabels], *, annotator: str = "autolabel", comment: str = ""
) -> dict[str, Any]:
    """The OpenLABEL document of ``clip`` with one :class:`FrameLabels` (ego frame) per keyframe.

    Object ids are 0..K-1 in order of first appearance; the track id is kept in the object's name.
    """
    if len(labels_per_frame) != len(clip):
        raise InputError(f"clip {clip.name}: {len(labels_per_frame)} label sets for {len(clip)} frames")
    uids: dict[str, int] = {}
    seen: dict[str, list[int]] = {}
    types: dict[str, str] = {}
    frames: dict[str, Any] = {}
    for frame, labels in zip(clip.frames, labels_per_frame, strict=True):
        properties: dict[str, Any] = {"timestamp": frame.timestamp_us / 1e6}
        if frame.world_SE3_ego is not None:
            properties["transforms"] = {
                f"{VEHICLE_CS}_to_{SCENE_CS}": {
                    "src": VEHICLE_CS,
                    "dst": SCENE_CS,
                    "transform_src_to_dst": {"matrix4x4": _matrix(frame.world_SE3_ego)},
                }
            }
        objects: dict[str, Any] = {}
        values = cuboid_values(labels.boxes.data)
        velocity = labels.boxes.velocity
        for i, track in enumerate(labels.track_ids):
            uid = uids.setdefault(track, len(uids))
            seen.setdefault(track, []).append(frame.index)
            types.setdefault(track, labels.categories[i].value)
            data: dict[str, Any] = {
                "cuboid": [{"name": "box3d", "val": [float(v) for v in values[i]], "coordinate_system": VEHICLE_CS}],
                "num": [{"name": "score", "val": float(labels.scores[i])}],
            }
            if velocity is not None and np.all(np.isfinite(velocity[i])):
                data["vec"] = [
                    {"name": "velocity_mps", "val": [float(v) for v in velocity[i]], "coordinate_system": VEHICLE_CS}
                ]
            if labels.attributes[i]:
                data["text"] = [{"name": "attribute", "val": labels.attributes[i]}]
            objects[str(uid)] = {"object_data": data}
        frames[str(frame.index)] = {"frame_properties": properties, "objects": objects}
    document = {
        "openlabel": {
            "metadata": {
                "schema_version": SCHEMA_VERSION,
                "annotator": annotator,
                "name": clip.name,
                "comment": comment or f"{clip.source.value} clip {clip.name} from {clip.root}",
            },
            "ontologies": {"0": ONTOLOGY},
            "coordinate_systems": _coordinate_systems(clip),
            "streams": _streams(clip),
            "objects": {
                str(uid): {
                    "name": track,
                    "type": types[track],
                    "ontology_uid": "0",
                    "frame_intervals": _intervals(seen[track]),
                }
                for track, uid in uids.items()
            },
            "frames": frames,
            "frame_intervals": [{"frame_start": 0, "frame_end": len(clip) - 1}],
        }
    }
    validate_openlabel(document)
    return document


def write_openlabel(path: Path, clip: Clip, labels_per_frame: Sequence[FrameLabels], **options: str) -> Path:
    """Validate and write the document atomically; returns ``path``."""
    document = openlabel_document(clip, labels_per_frame, **options)
    atomic_write_json(Path(path), document, indent=1)
    return Path(path)


def read_openlabel_boxes(document: dict[str, Any]) -> dict[int, dict[str, np.ndarray]]:
    """Per frame index: object name -> (7,) ``x, y, z, l, w, h, yaw`` of its cuboid (for round trips)."""
    root = document["openlabel"]
    names = {uid: obj["name"] for uid, obj in root["objects"].items()}
    out: dict[int, dict[str, np.ndarray]] = {}
    for index, frame in root.get("frames", {}).items():
        boxes = {}
        for uid, obj in frame.get("objects", {}).items():
            val = np.asarray(obj["object_data"]["cuboid"][0]["val"], dtype=np.float64)
            qz, qw = val[5], val[6]
            boxes[names[uid]] = np.array([*val[:3], *val[7:10], wrap_angle_rad(2.0 * np.arctan2(qz, qw))])
        out[int(index)] = boxes
    return out
