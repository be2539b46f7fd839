"""nuScenes writers: detection/tracking result JSON and annotation tables.

Our labels are ego-frame ``Boxes3D`` with ``(l, w, h)``; nuScenes wants global-frame boxes with
``size = (w, l, h)``, a yaw-only ``rotation`` quaternion ``(w, x, y, z)`` and global velocity. The
conversion happens here and in the reader, nowhere else.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from autolabel.categories import CATEGORY_TO_NUSCENES, Category, category_from_nuscenes
from autolabel.datasets.model import Clip, ClipSource, FrameLabels
from autolabel.datasets.nuscenes import open_nuscenes
from autolabel.fileio import atomic_directory, atomic_write_json
from calibration import SE3, WORLD_FRAME, InputError

# Attribute written when a detection has none (the devkit scores attributes only for these classes).
DEFAULT_ATTRIBUTE: dict[Category, str] = {
    Category.CAR: "vehicle.parked",
    Category.TRUCK: "vehicle.parked",
    Category.BUS: "vehicle.moving",
    Category.TRAILER: "vehicle.parked",
    Category.CONSTRUCTION_VEHICLE: "vehicle.parked",
    Category.PEDESTRIAN: "pedestrian.moving",
    Category.MOTORCYCLE: "cycle.without_rider",
    Category.BICYCLE: "cycle.without_rider",
}
_TOKEN_RE = re.compile("[0-9a-f]{32}")
TRACKING_CATEGORIES = (
    Category.CAR,
    Category.TRUCK,
    Category.BUS,
    Category.TRAILER,
    Category.PEDESTRIAN,
    Category.MOTORCYCLE,
    Category.BICYCLE,
)


def _check(clip: Clip, labels_per_frame: Sequence[FrameLabels]) -> None:
    if clip.source is not ClipSource.NUSCENES:
        raise InputError(f"clip {clip.name}: nuScenes output needs a nuScenes clip, got {clip.source.value}")
    if len(labels_per_frame) != len(clip.frames):
        raise InputError(f"clip {clip.name}: {len(labels_per_frame)} label sets for {len(clip.frames)} frames")
    if not clip.has_poses:
        raise InputError(f"clip {clip.name}: nuScenes output needs ego poses")


def _global_records(world_SE3_ego: SE3, labels: FrameLabels) -> list[dict[str, Any]]:
    """Per box: global ``translation``, ``size`` (w, l, h), ``rotation`` (w, x, y, z), ``velocity``."""
    world = labels.boxes.transform(world_SE3_ego, WORLD_FRAME)
    velocity = np.zeros((len(world), 2)) if world.velocity is None else np.nan_to_num(world.velocity)
    records = []
    for row, vel in zip(world.data, velocity, strict=True):
        x, y, z, l, w, h, yaw = (float(v) for v in row)
        records.append(
            {
                "translation": [x, y, z],
                "size": [w, l, h],
                "rotation": SE3.from_yaw(yaw).quaternion_wxyz.tolist(),
                "velocity": [float(vel[0]), float(vel[1])],
            }
        )
    return records


def _result_meta(meta: dict[str, bool] | None) -> dict[str, bool]:
    base = {"use_camera": False, "use_lidar": True, "use_radar": False, "use_map": False, "use_external": False}
    return {**base, **(meta or {})}


def detection_results(
    clip: Clip, labels_per_frame: Sequence[FrameLabels], *, meta: dict[str, bool] | None = None
) -> dict[str, Any]:
    """The nuScenes detection submission dict ``{"meta", "results"}``; ``OTHER`` boxes are dropped."""
    _check(clip, labels_per_frame)
    results: dict[str, list[dict[str, Any]]] = {}
    for frame, labels in zip(clip.frames, labels_per_frame, strict=True):
        boxes = []
        for i, record in enumerate(_global_records(frame.world_SE3_ego, labels)):
            category = labels.categories[i]
            if category is Category.OTHER:
                continue
            attribute = labels.attributes[i] or DEFAULT_ATTRIBUTE.get(category, "")
            boxes.append(
                {
                    "sample_token": frame.token,
                    **record,
                    "detection_name": category.value,
                    "detection_score": float(labels.scores[i]),
                    "attribute_name": attribute,
                }
            )
        results[frame.token] = boxes
    return {"meta": _result_meta(meta), "results": results}


def tracking_results(
    clip: Clip, labels_per_frame: Sequence[FrameLabels], *, meta: dict[str, bool] | None = None
) -> dict[str, Any]:
    """The nuScenes tracking submission dict; only the 7 tracking classes are kept."""
    _check(clip, labels_per_frame)
    results: dict[str, list[dict[str, Any]]] = {}
    for frame, labels in zip(clip.frames, labels_per_frame, strict=True):
        results[frame.token] = [
            {
                "sample_token": frame.token,
                **record,
                "tracking_id": labels.track_ids[i],
                "tracking_name": labels.categories[i].value,
                "tracking_score": float(labels.scores[i]),
            }
            for i, record in enumerate(_global_records(frame.world_SE3_ego, labels))
            if labels.categories[i] in TRACKING_CATEGORIES
        ]
    return {"meta": _result_meta(meta), "results": results}


def write_results(path: Path, results: dict[str, Any]) -> None:
    """Write a detection or tracking result dict as JSON, atomically."""
    atomic_write_json(path, results)


def _token(*parts: str) -> str:
    return hashlib.md5("/".join(parts).encode()).hexdigest()


def _instance_token(clip_name: str, track_id: str) -> str:
    """nuScenes instance tokens are kept; other track ids get a deterministic token per clip."""
    return track_id if _TOKEN_RE.fullmatch(track_id) else _token(clip_name, "instance", track_id)


def _load_table(table_dir: Path, name: str) -> list[dict[str, Any]]:
    path = table_dir / f"{name}.json"
    if not path.is_file():
        raise InputError(f"{path}: nuScenes table not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from exc


def write_annotation_tables(clip: Clip, labels_per_frame: Sequence[FrameLabels], table_dir: Path) -> None:
    """Replace the clip's annotations in a nuScenes table folder (``sample_annotation``, ``instance``).

    Annotations of other scenes are kept. One instance per track id; annotations of a track are
    linked by ``prev``/``next`` in time. Category and attribute tokens come from the folder's own
    ``category.json``/``attribute.json``; ``visibility_token`` is written empty (unknown).
    """
    _check(clip, labels_per_frame)
    table_dir = Path(table_dir)
    annotations = _load_table(table_dir, "sample_annotation")
    instances = _load_table(table_dir, "instance")
    category_token = {c["name"]: c["token"] for c in _load_table(table_dir, "category")}
    attribute_token = {a["name"]: a["token"] for a in _load_table(table_dir, "attribute")}

    clip_samples = {frame.token for frame in clip.frames}
    dropped = {a["token"] for a in annotations if a["sample_token"] in clip_samples}
    kept_annotations = [a for a in annotations if a["token"] not in dropped]
    kept_instances = [i for i in instances if i["first_annotation_token"] not in dropped]

    by_track: dict[str, list[dict[str, Any]]] = {}
    for frame, labels in zip(clip.frames, labels_per_frame, strict=True):
        for i, record in enumerate(_global_records(frame.world_SE3_ego, labels)):
            name = labels.source_categories[i]
            if name not in category_token or category_from_nuscenes(name) is not labels.categories[i]:
                name = CATEGORY_TO_NUSCENES[labels.categories[i]]
            if name not in category_token:
                raise InputError(f"{table_dir}: category {name!r} is not in category.json")
            attribute = labels.attributes[i]
            if attribute and attribute not in attribute_token:
                raise InputError(f"{table_dir}: attribute {attribute!r} is not in attribute.json")
            track = _instance_token(clip.name, labels.track_ids[i])
            by_track.setdefault(track, []).append(
                {
                    "token": _token(clip.name, track, frame.token),
                    "sample_token": frame.token,
                    "instance_token": track,
                    "visibility_token": "",
                    "attribute_tokens": [attribute_token[attribute]] if attribute else [],
                    "translation": record["translation"],
                    "size": record["size"],
                    "rotation": record["rotation"],
                    "prev": "",
                    "next": "",
                    "num_lidar_pts": int(max(labels.num_lidar_pts[i], 0)),
                    "num_radar_pts": 0,
                    "_category": name,
                }
            )

    new_instances = []
    for track, anns in by_track.items():
        for prev, nxt in itertools.pairwise(anns):
            prev["next"], nxt["prev"] = nxt["token"], prev["token"]
        new_instances.append(
            {
                "token": track,
                "category_token": category_token[anns[0].pop("_category")],
                "nbr_annotations": len(anns),
                "first_annotation_token": anns[0]["token"],
                "last_annotation_token": anns[-1]["token"],
            }
        )
        for ann in anns[1:]:
            ann.pop("_category")
    atomic_write_json(
        table_dir / "sample_annotation.json", kept_annotations + [a for anns in by_track.values() for a in anns]
    )
    atomic_write_json(table_dir / "instance.json", kept_instances + new_instances)
    open_nuscenes.cache_clear()  # the devkit database cached by the reader is stale now


SENSOR_FOLDERS = ("samples", "sweeps", "maps")


def link_sensor_folders(source: Path, dataroot: Path) -> None:
    """Symlink the sensor data and map folders of the ``source`` dataroot that exist into ``dataroot``."""
    for folder in SENSOR_FOLDERS:
        if (source / folder).exists():
            os.symlink(source / folder, dataroot / folder)


def export_dataroot(out: Path, clip: Clip, labels_per_frame: Sequence[FrameLabels]) -> Path:
    """A nuScenes dataroot at ``out`` whose annotations of ``clip`` are ``labels_per_frame``.

    The clip's table folder is copied (other scenes keep their annotations), ``samples/``, ``sweeps/`` and
    ``maps/`` are symlinked to the source, the clip's ``sample_annotation``/``instance`` rows are replaced,
    and the detection and tracking result JSONs go to ``out/results/``. Written atomically: a staging
    folder is renamed to ``out`` when complete.
    """
    _check(clip, labels_per_frame)
    version = clip.meta.get("version")
    source = Path(clip.root).resolve()
    if not version or not (source / version).is_dir():
        raise InputError(f"clip {clip.name}: its table folder {source / str(version)} is missing")
    with atomic_directory(Path(out)) as staging:
        tables = staging / version
        tables.mkdir()
        for table in (source / version).glob("*.json"):
            shutil.copyfile(table, tables / table.name)
        link_sensor_folders(source, staging)
        write_annotation_tables(clip, labels_per_frame, tables)
        write_results(staging / "results" / "detection_results.json", detection_results(clip, labels_per_frame))
        write_results(staging / "results" / "tracking_results.json", tracking_results(clip, labels_per_frame))
    return Path(out)
