"""nuScenes v1.0 reader (through ``nuscenes-devkit``): one scene -> one :class:`Clip`.

Each keyframe (sample) becomes a :class:`Frame` whose sweeps are the non-key LIDAR_TOP sweeps since
the previous keyframe followed by the key sweep; every sample_data keeps its own ego pose and
calibration. Ground truth comes from ``sample_annotation`` (global frame, geometric centre,
``size = (w, l, h)``): it is converted here, at the boundary, into ego-frame ``Boxes3D`` with
``(l, w, h)`` order.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from autolabel.categories import category_from_nuscenes
from autolabel.datasets.model import CameraImage, Clip, ClipSource, Frame, FrameLabels, LidarSweep
from calibration import EGO_FRAME, SE3, WORLD_FRAME, Boxes3D, InputError, LidarSensor, PinholeCamera, Rig

LIDAR_CHANNEL = "LIDAR_TOP"
CAMERA_CHANNELS = ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_RIGHT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_FRONT_LEFT")
POINT_FILE_COLUMNS = 5  # x, y, z, intensity, ring index
VERSION_PREFIX = "v1.0-"
REQUIRED_TABLES = (
    "attribute",
    "calibrated_sensor",
    "category",
    "ego_pose",
    "instance",
    "log",
    "map",
    "sample",
    "sample_annotation",
    "sample_data",
    "scene",
    "sensor",
    "visibility",
)


def find_versions(dataroot: Path) -> list[str]:
    """Names of the ``v1.0-*`` table folders under ``dataroot`` that hold a ``scene.json``."""
    if not dataroot.is_dir():
        raise InputError(f"{dataroot}: nuScenes dataroot not found")
    return sorted(
        p.name for p in dataroot.iterdir() if p.name.startswith(VERSION_PREFIX) and (p / "scene.json").is_file()
    )


def resolve_version(dataroot: Path, version: str | None) -> str:
    """The table version to load: the given one, or the only one present."""
    versions = find_versions(dataroot)
    if version is not None:
        if version not in versions:
            raise InputError(f"{dataroot}: version {version!r} not found; available: {versions or 'none'}")
        return version
    if not versions:
        raise InputError(f"{dataroot}: no nuScenes table folder (v1.0-*/scene.json) found")
    if len(versions) > 1:
        raise InputError(f"{dataroot}: several nuScenes versions {versions}; choose one with --version")
    return versions[0]


@lru_cache(maxsize=2)
def open_nuscenes(dataroot: Path, version: str):  # -> nuscenes.nuscenes.NuScenes
    """Load the devkit database once per (dataroot, version); bad tables become :class:`InputError`."""
    from nuscenes.nuscenes import NuScenes

    table_dir = dataroot / version
    missing = [t for t in REQUIRED_TABLES if not (table_dir / f"{t}.json").is_file()]
    if missing:
        raise InputError(f"{table_dir}: missing nuScenes tables {missing}")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return NuScenes(version=version, dataroot=str(dataroot), verbose=False)
    except (AssertionError, KeyError, ValueError, OSError) as exc:
        raise InputError(f"{table_dir}: nuScenes tables could not be loaded ({type(exc).__name__}: {exc})") from exc


def _pose(record: Mapping) -> SE3:
    return SE3.from_quaternion_wxyz(record["rotation"], record["translation"])


def _sample_data_pose(nusc, sd: Mapping) -> tuple[SE3, SE3]:
    """``(world_SE3_ego, ego_SE3_sensor)`` of one sample_data record."""
    return _pose(nusc.get("ego_pose", sd["ego_pose_token"])), _pose(
        nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
    )


SIM_MANIFEST = Path("sim") / "manifest.json"


def lidar_rotation_period_s(dataroot: Path) -> float | None:
    """Per-point timing of a simulated dataroot (its manifest says so); real nuScenes gives none."""
    path = dataroot / SIM_MANIFEST
    if not path.is_file():
        return None
    try:
        return float(json.loads(path.read_text())["config"]["lidar"]["period_s"])
    except (KeyError, ValueError, TypeError) as exc:
        raise InputError(f"{path}: simulator manifest without config.lidar.period_s ({exc})") from exc


def _lidar_sweep(nusc, dataroot: Path, sd: Mapping, period_s: float | None = None) -> LidarSweep:
    world_SE3_ego, ego_SE3_lidar = _sample_data_pose(nusc, sd)
    return LidarSweep(
        sensor=LIDAR_CHANNEL,
        timestamp_us=int(sd["timestamp"]),
        path=dataroot / sd["filename"],
        num_columns=POINT_FILE_COLUMNS,
        world_SE3_ego=world_SE3_ego,
        ego_SE3_lidar=ego_SE3_lidar,
        is_key=bool(sd["is_key_frame"]),
        rotation_period_s=period_s,
    )


def _frame_sweeps(nusc, dataroot: Path, key_sd: Mapping, period_s: float | None) -> tuple[LidarSweep, ...]:
    """Non-key sweeps since the previous keyframe (chronological), then the key sweep."""
    sweeps = [_lidar_sweep(nusc, dataroot, key_sd, period_s)]
    token = key_sd["prev"]
    while token:
        sd = nusc.get("sample_data", token)
        if sd["is_key_frame"]:
            break
        sweeps.append(_lidar_sweep(nusc, dataroot, sd, period_s))
        token = sd["prev"]
    return tuple(reversed(sweeps))


def _camera(nusc, dataroot: Path, sd: Mapping, channel: str) -> CameraImage:
    world_SE3_ego, ego_SE3_cam = _sample_data_pose(nusc, sd)
    calib = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
    intrinsics = np.asarray(calib["camera_intrinsic"], dtype=np.float64)
    if intrinsics.shape != (3, 3):
        raise InputError(f"{dataroot}: calibrated_sensor {calib['token']} of {channel} has no 3x3 camera_intrinsic")
    if not sd.get("width") or not sd.get("height"):
        raise InputError(f"{dataroot}: sample_data {sd['token']} of {channel} has no image width/height")
    camera = PinholeCamera(channel, intrinsics, int(sd["width"]), int(sd["height"]), ego_SE3_cam)
    return CameraImage(camera, int(sd["timestamp"]), dataroot / sd["filename"], world_SE3_ego)


def world_boxes(records: Sequence[Mapping], velocities: Sequence[Sequence[float]]) -> Boxes3D:
    """Global-frame boxes of nuScenes box records (``translation``, ``size`` as ``wlh``, ``rotation`` as a wxyz
    quaternion: annotations and result boxes alike); ``wlh`` -> ``lwh`` here, at the boundary.

    Args:
        velocities: (N, 2) ``vx, vy`` per record (NaN where unknown).
    """
    rows = [[*r["translation"], r["size"][1], r["size"][0], r["size"][2], _pose(r).yaw_rad] for r in records]
    return Boxes3D(
        np.array(rows, dtype=np.float64).reshape(-1, 7),
        WORLD_FRAME,
        np.array(velocities, dtype=np.float64).reshape(-1, 2),
    )


def _ground_truth(nusc, sample: Mapping, ego_SE3_world: SE3) -> FrameLabels:
    """The sample's annotations as ego-frame labels."""
    anns = [nusc.get("sample_annotation", token) for token in sample["anns"]]
    if not anns:
        return FrameLabels.empty()
    boxes_world = world_boxes(anns, [nusc.box_velocity(ann["token"])[:2] for ann in anns])
    attributes = [
        nusc.get("attribute", ann["attribute_tokens"][0])["name"] if ann["attribute_tokens"] else "" for ann in anns
    ]
    return FrameLabels(
        boxes=boxes_world.transform(ego_SE3_world, EGO_FRAME),
        track_ids=tuple(ann["instance_token"] for ann in anns),
        categories=tuple(category_from_nuscenes(ann["category_name"]) for ann in anns),
        scores=np.ones(len(anns)),
        source_categories=tuple(ann["category_name"] for ann in anns),
        attributes=tuple(attributes),
        num_lidar_pts=np.array([ann["num_lidar_pts"] for ann in anns]),
    )


def list_scenes(dataroot: Path, version: str | None = None) -> list[str]:
    """Scene names of a dataroot, in table order."""
    nusc = open_nuscenes(Path(dataroot), resolve_version(Path(dataroot), version))
    return [scene["name"] for scene in nusc.scene]


def load_nuscenes_clip(dataroot: Path, scene_name: str, *, version: str | None = None) -> Clip:
    """Read one nuScenes scene as a clip.

    Args:
        dataroot: folder holding ``v1.0-*/``, ``samples/``, ``sweeps/``.
        scene_name: e.g. ``"scene-0061"``.
        version: table folder name; default: the only one present.
    """
    dataroot = Path(dataroot)
    version = resolve_version(dataroot, version)
    nusc = open_nuscenes(dataroot, version)
    scenes = {scene["name"]: scene for scene in nusc.scene}
    if scene_name not in scenes:
        raise InputError(f"{dataroot}: unknown scene {scene_name!r}; available: {sorted(scenes)}")
    scene = scenes[scene_name]

    period_s = lidar_rotation_period_s(dataroot)
    frames: list[Frame] = []
    token = scene["first_sample_token"]
    while token:
        sample = nusc.get("sample", token)
        if LIDAR_CHANNEL not in sample["data"]:
            raise InputError(f"{dataroot}: sample {token} of {scene_name} has no {LIDAR_CHANNEL} data")
        key_sd = nusc.get("sample_data", sample["data"][LIDAR_CHANNEL])
        sweeps = _frame_sweeps(nusc, dataroot, key_sd, period_s)
        cameras = {
            ch: _camera(nusc, dataroot, nusc.get("sample_data", sample["data"][ch]), ch)
            for ch in CAMERA_CHANNELS
            if ch in sample["data"]
        }
        key = sweeps[-1]
        rig = Rig(
            cameras={name: image.camera for name, image in cameras.items()},
            lidars={LIDAR_CHANNEL: LidarSensor(LIDAR_CHANNEL, key.ego_SE3_lidar)},
        )
        frames.append(
            Frame(
                index=len(frames),
                token=sample["token"],
                timestamp_us=key.timestamp_us,
                world_SE3_ego=key.world_SE3_ego,
                sweeps=sweeps,
                cameras=cameras,
                rig=rig,
                gt=_ground_truth(nusc, sample, key.world_SE3_ego.inverse()),
            )
        )
        token = sample["next"]
    log = nusc.get("log", scene["log_token"])
    return Clip(
        name=scene_name,
        source=ClipSource.NUSCENES,
        root=dataroot,
        frames=tuple(frames),
        meta={"version": version, "scene_token": scene["token"], "log": log["logfile"], "location": log["location"]},
    )
