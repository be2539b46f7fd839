"""A tiny synthetic nuScenes v1.0 dataroot: 3 keyframes, non-key sweeps between them, one camera.

The ego drives along its heading (yaw 0.3 rad) at 5 m/s; a car drives at 2 m/s along world +x and a
barrier stands still (annotated in the first two keyframes only). Everything the devkit needs is
written, so ``NuScenes`` and its evaluators load it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from autolabel.datasets.nuscenes import REQUIRED_TABLES

EGO_YAW_RAD = 0.3
EGO_SPEED_MPS = 5.0
CAR_VELOCITY_MPS = (2.0, 0.0)
T0_US = 1_600_000_000_000_000
KEY_PERIOD_US = 500_000
SWEEPS_BETWEEN_KEYS = 4
IMAGE_W, IMAGE_H = 64, 48
SCENE_NAME = "scene-0061"  # a v1.0-mini train scene name, so the devkit splits pick it


def token(*parts: object) -> str:
    return hashlib.md5("/".join(map(str, parts)).encode()).hexdigest()


def quat_wxyz(yaw: float, pitch: float = 0.0, roll: float = 0.0) -> list[float]:
    x, y, z, w = Rotation.from_euler("ZYX", [yaw, pitch, roll]).as_quat()
    return [w, x, y, z]


def ego_translation(t_us: int) -> list[float]:
    s = EGO_SPEED_MPS * (t_us - T0_US) / 1e6
    return [100.0 + s * np.cos(EGO_YAW_RAD), 200.0 + s * np.sin(EGO_YAW_RAD), 0.0]


@dataclass(frozen=True)
class SyntheticNuScenes:
    root: Path
    sample_tokens: tuple[str, ...]
    key_times_us: tuple[int, ...]
    car_instance: str
    barrier_instance: str


def write_synthetic_nuscenes(root: Path) -> SyntheticNuScenes:
    tables: dict[str, list[dict]] = {name: [] for name in REQUIRED_TABLES}
    log_tok, scene_tok = token("log"), token("scene")
    tables["log"].append(
        {
            "token": log_tok,
            "logfile": "synthetic-log",
            "vehicle": "sim",
            "date_captured": "2026-11-22",
            "location": "singapore-onenorth",
        }
    )
    (root / "maps").mkdir(parents=True)
    cv2.imwrite(str(root / "maps" / "map.png"), np.zeros((1, 1), np.uint8))
    tables["map"].append(
        {"token": token("map"), "log_tokens": [log_tok], "category": "semantic_prior", "filename": "maps/map.png"}
    )
    for name in ("vehicle.car", "movable_object.barrier", "human.pedestrian.adult"):
        tables["category"].append({"token": token("cat", name), "name": name, "description": name})
    for name in ("vehicle.moving", "vehicle.parked", "pedestrian.moving"):
        tables["attribute"].append({"token": token("attr", name), "name": name, "description": name})
    for level in range(1, 5):
        tables["visibility"].append({"token": str(level), "level": f"v{level}", "description": ""})
    lidar_calib = {
        "token": token("calib", "lidar"),
        "sensor_token": token("sensor", "LIDAR_TOP"),
        "translation": [0.9, 0.0, 1.8],
        "rotation": quat_wxyz(-np.pi / 2),
        "camera_intrinsic": [],
    }
    cam_calib = {
        "token": token("calib", "cam"),
        "sensor_token": token("sensor", "CAM_FRONT"),
        "translation": [1.5, 0.0, 1.5],
        "rotation": [0.5, -0.5, 0.5, -0.5],  # camera z = ego x, camera x = -ego y
        "camera_intrinsic": [[50.0, 0.0, 32.0], [0.0, 50.0, 24.0], [0.0, 0.0, 1.0]],
    }
    tables["calibrated_sensor"] += [lidar_calib, cam_calib]
    tables["sensor"] += [
        {"token": token("sensor", "LIDAR_TOP"), "channel": "LIDAR_TOP", "modality": "lidar"},
        {"token": token("sensor", "CAM_FRONT"), "channel": "CAM_FRONT", "modality": "camera"},
    ]

    key_times = [T0_US + k * KEY_PERIOD_US for k in range(3)]
    sample_tokens = [token("sample", k) for k in range(3)]
    lidar_times = [key_times[0]] + [
        t
        for k in range(1, 3)
        for t in np.linspace(key_times[k - 1], key_times[k], SWEEPS_BETWEEN_KEYS + 2)[1:].astype(int)
    ]
    rng = np.random.default_rng(0)
    for d in ("samples/LIDAR_TOP", "sweeps/LIDAR_TOP", "samples/CAM_FRONT"):
        (root / d).mkdir(parents=True)

    def add_sample_data(channel: str, t_us: int, sample_tok: str, is_key: bool, calib: dict, filename: str) -> dict:
        sd_tok = token("sd", channel, t_us)
        tables["ego_pose"].append(
            {
                "token": sd_tok,
                "timestamp": int(t_us),
                "rotation": quat_wxyz(EGO_YAW_RAD),
                "translation": ego_translation(t_us),
            }
        )
        record = {
            "token": sd_tok,
            "sample_token": sample_tok,
            "ego_pose_token": sd_tok,
            "calibrated_sensor_token": calib["token"],
            "timestamp": int(t_us),
            "fileformat": filename.rsplit(".", 1)[-1],
            "is_key_frame": is_key,
            "height": IMAGE_H if channel.startswith("CAM") else 0,
            "width": IMAGE_W if channel.startswith("CAM") else 0,
            "filename": filename,
            "prev": "",
            "next": "",
        }
        tables["sample_data"].append(record)
        return record

    lidar_records = []
    for t in lidar_times:
        k = int(np.searchsorted(key_times, t))
        is_key = t in key_times
        folder = "samples" if is_key else "sweeps"
        filename = f"{folder}/LIDAR_TOP/sim__LIDAR_TOP__{t}.pcd.bin"
        points = rng.uniform(-20, 20, size=(100 + k, 5)).astype(np.float32)
        points.tofile(root / filename)
        lidar_records.append(add_sample_data("LIDAR_TOP", t, sample_tokens[min(k, 2)], is_key, lidar_calib, filename))
    for a, b in itertools.pairwise(lidar_records):
        a["next"], b["prev"] = b["token"], a["token"]
    for k, t in enumerate(key_times):
        filename = f"samples/CAM_FRONT/sim__CAM_FRONT__{t - 10_000}.jpg"
        cv2.imwrite(str(root / filename), np.full((IMAGE_H, IMAGE_W, 3), 40 * k, np.uint8))
        add_sample_data("CAM_FRONT", t - 10_000, sample_tokens[k], True, cam_calib, filename)

    for k, (tok, t) in enumerate(zip(sample_tokens, key_times, strict=True)):
        tables["sample"].append(
            {
                "token": tok,
                "timestamp": t,
                "scene_token": scene_tok,
                "prev": sample_tokens[k - 1] if k else "",
                "next": sample_tokens[k + 1] if k < 2 else "",
            }
        )
    tables["scene"].append(
        {
            "token": scene_tok,
            "log_token": log_tok,
            "nbr_samples": 3,
            "name": SCENE_NAME,
            "description": "synthetic",
            "first_sample_token": sample_tokens[0],
            "last_sample_token": sample_tokens[-1],
        }
    )

    car, barrier = token("instance", "car"), token("instance", "barrier")
    tracks = {
        car: (
            "vehicle.car",
            "vehicle.moving",
            [4.5, 1.9, 1.6],
            [[110.0 + CAR_VELOCITY_MPS[0] * k * 0.5, 205.0, 0.8] for k in range(3)],
            0.0,
        ),
        barrier: ("movable_object.barrier", "", [0.5, 2.0, 1.0], [[120.0, 195.0, 0.5] for _ in range(2)], 1.2),
    }
    for inst, (category, attribute, wlh, centres, yaw) in tracks.items():
        anns = [token("ann", inst, k) for k in range(len(centres))]
        for k, (ann, centre) in enumerate(zip(anns, centres, strict=True)):
            tables["sample_annotation"].append(
                {
                    "token": ann,
                    "sample_token": sample_tokens[k],
                    "instance_token": inst,
                    "visibility_token": "4",
                    "attribute_tokens": [token("attr", attribute)] if attribute else [],
                    "translation": centre,
                    "size": wlh,
                    "rotation": quat_wxyz(yaw),
                    "prev": anns[k - 1] if k else "",
                    "next": anns[k + 1] if k + 1 < len(anns) else "",
                    "num_lidar_pts": 10 + k,
                    "num_radar_pts": 0,
                }
            )
        tables["instance"].append(
            {
                "token": inst,
                "category_token": token("cat", category),
                "nbr_annotations": len(anns),
                "first_annotation_token": anns[0],
                "last_annotation_token": anns[-1],
            }
        )

    (root / "v1.0-mini").mkdir()
    for name, rows in tables.items():
        (root / "v1.0-mini" / f"{name}.json").write_text(json.dumps(rows))
    return SyntheticNuScenes(root, tuple(sample_tokens), tuple(key_times), car, barrier)


@pytest.fixture()
def synthetic_nuscenes(tmp_path: Path) -> SyntheticNuScenes:
    return write_synthetic_nuscenes(tmp_path / "nuscenes")


@pytest.fixture(scope="session")
def simulated_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3 s simulated urban scene (6 keyframes, all classes) shared by the evaluation and pipeline tests."""
    from autolabel.sim.dataroot import SimConfig, simulate_dataroot

    return simulate_dataroot(tmp_path_factory.mktemp("sim") / "nuscenes", SimConfig(seconds=3.0, seed=7)).dataroot
