"""Write simulated drives as a genuine nuScenes v1.0 dataroot (all 13 tables, samples/, sweeps/, maps/).

Timing follows nuScenes: lidar sweeps at 20 Hz, every 10th a keyframe (samples at 2 Hz), cameras at
12 Hz, each triggered when the spinning lidar crosses its optical axis, so the keyframe image of each
camera is the one exposed during the keyframe sweep. Point files hold raw points (each in the lidar
frame at its own firing time); ``sim/manifest.json`` says how to recover per-point time from azimuth.

Scenes are named after the official split lists (``nuscenes.utils.splits``) so the unmodified devkit
evaluators pick them: up to 10 scenes use ``v1.0-mini`` names (``mini_train`` then ``mini_val``),
more use ``v1.0-trainval`` names (``train`` then ``val``).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numba
import numpy as np
from scipy.spatial.transform import Rotation

from autolabel.datasets.nuscenes import REQUIRED_TABLES
from autolabel.fileio import atomic_directory
from autolabel.sim.lidar import simulate_sweep
from autolabel.sim.render import actor_silhouette_px, render_camera
from autolabel.sim.scenario import TIME_MARGIN_S, Profile, build_site, build_world
from autolabel.sim.sensors import CAMERA_LAYOUT, LIDAR_NAME, LidarModel, simulated_rig
from autolabel.sim.world import World, actor_boxes_at, actor_velocities_at, world_SE3_ego_at
from calibration import SE3, WORLD_FRAME, Boxes3D, InputError, PinholeCamera, Rig

LIDAR_HZ = 20
CAMERA_HZ = 12
SWEEPS_PER_SAMPLE = 10
EPOCH_US = 1_535_000_000_000_000  # 2018-08-23, in the nuScenes era
ANNOTATION_RANGE_M = 80.0
MOVING_MPS = 0.3

CATEGORIES: tuple[tuple[str, str], ...] = (
    ("animal", "All animals."),
    ("human.pedestrian.adult", "Adult subcategory."),
    ("human.pedestrian.child", "Child subcategory."),
    ("human.pedestrian.construction_worker", "Construction worker"),
    ("human.pedestrian.personal_mobility", "A small electric or self-propelled vehicle."),
    ("human.pedestrian.police_officer", "Police officer."),
    ("human.pedestrian.stroller", "Strollers."),
    ("human.pedestrian.wheelchair", "Wheelchairs."),
    ("movable_object.barrier", "Temporary road barrier placed in the scene."),
    ("movable_object.debris", "Movable object that is left on the driveable surface."),
    ("movable_object.pushable_pullable", "Objects that a pedestrian may push or pull."),
    ("movable_object.trafficcone", "All types of traffic cone."),
    ("static_object.bicycle_rack", "Area or device intended to park or secure the bicycles in a row."),
    ("vehicle.bicycle", "Human or electric powered 2-wheeled vehicle."),
    ("vehicle.bus.bendy", "Bendy bus subcategory."),
    ("vehicle.bus.rigid", "Rigid bus subcategory."),
    ("vehicle.car", "Vehicle designed primarily for personal use."),
    ("vehicle.construction", "Vehicles primarily designed for construction."),
    ("vehicle.emergency.ambulance", "All types of ambulances."),
    ("vehicle.emergency.police", "All types of police vehicles."),
    ("vehicle.motorcycle", "Gasoline or electric powered 2-wheeled vehicle."),
    ("vehicle.trailer", "Any vehicle trailer."),
    ("vehicle.truck", "Vehicles primarily designed to haul cargo."),
)
ATTRIBUTES: tuple[str, ...] = (
    "vehicle.moving",
    "vehicle.stopped",
    "vehicle.parked",
    "cycle.with_rider",
    "cycle.without_rider",
    "pedestrian.sitting_lying_down",
    "pedestrian.standing",
    "pedestrian.moving",
)
# nuScenes visibility bins: token -> (level, upper bound of the visible fraction).
VISIBILITY: tuple[tuple[str, str, float], ...] = (
    ("1", "v0-40", 0.4),
    ("2", "v40-60", 0.6),
    ("3", "v60-80", 0.8),
    ("4", "v80-100", 1.01),
)
LOCATIONS = {
    Profile.URBAN: "singapore-onenorth",
    Profile.HIGHWAY: "boston-seaport",
    Profile.PARKING: "singapore-hollandvillage",
}


@dataclass(frozen=True)
class SimConfig:
    """What to generate. ``scenes`` sites x ``trips`` drives each = scenes * trips nuScenes scenes."""

    scenes: int = 1
    seconds: float = 20.0
    seed: int = 0
    profile: Profile = Profile.URBAN
    trips: int = 1
    lidar: LidarModel = field(default_factory=LidarModel)
    perturb_extrinsics_deg: float = 0.0
    perturb_extrinsics_cm: float = 0.0
    time_offset_ms: float = 0.0
    jpeg_quality: int = 90
    workers: int = 0  # camera render processes; 0 = one per CPU core

    def __post_init__(self) -> None:
        if self.scenes < 1 or self.trips < 1:
            raise InputError(f"simulate: --scenes and --trips must be >= 1, got {self.scenes} and {self.trips}")
        if not 0.5 <= self.seconds <= 600:
            raise InputError(f"simulate: --seconds must be in [0.5, 600], got {self.seconds}")
        if self.perturb_extrinsics_deg < 0 or self.perturb_extrinsics_cm < 0:
            raise InputError("simulate: --perturb-extrinsics needs non-negative degrees and centimetres")


@dataclass(frozen=True)
class SimResult:
    dataroot: Path
    version: str
    scenes: tuple[str, ...]
    samples: int
    sweeps: int
    images: int
    annotations: int


def token(*parts: object) -> str:
    """Deterministic 32-hex token."""
    return hashlib.md5("/".join(map(str, parts)).encode()).hexdigest()


def scene_names(count: int) -> tuple[str, tuple[str, ...]]:
    """Table version and official scene names for ``count`` scenes (see the module docstring)."""
    from nuscenes.utils import splits

    if count <= len(splits.mini_train) + len(splits.mini_val):
        return "v1.0-mini", tuple((splits.mini_train + splits.mini_val)[:count])
    names = splits.train + splits.val
    if count > len(names):
        raise InputError(f"simulate: at most {len(names)} scenes can carry official scene names, asked for {count}")
    return "v1.0-trainval", tuple(names[:count])


def _pose_record(tok: str, timestamp_us: int, pose: SE3) -> dict[str, Any]:
    return {
        "token": tok,
        "timestamp": timestamp_us,
        "rotation": pose.quaternion_wxyz.tolist(),
        "translation": pose.translation.tolist(),
    }


def _camera_phase_s(yaw_deg: float, period_s: float) -> float:
    """Trigger offset of a camera: the clockwise lidar points forward at the sweep time."""
    wrapped = (yaw_deg + 180.0) % 360.0 - 180.0
    return -wrapped / 360.0 * period_s


def perturbed_rig(rig: Rig, deg: float, cm: float, rng: np.random.Generator) -> Rig:
    """The rig with every camera's extrinsics off by ``deg`` about a random axis and ``cm`` in a random direction."""
    cameras = {}
    for name, cam in rig.cameras.items():
        axis, direction = rng.normal(size=3), rng.normal(size=3)
        delta = SE3(
            Rotation.from_rotvec(axis / np.linalg.norm(axis) * np.radians(deg)).as_matrix(),
            direction / np.linalg.norm(direction) * cm / 100.0,
        )
        cameras[name] = PinholeCamera(
            name, cam.intrinsics, cam.width_px, cam.height_px, cam.ego_SE3_cam @ delta, cam.distortion
        )
    return Rig(cameras=cameras, lidars=rig.lidars)


FRAMES_PER_JOB = 12


@dataclass(frozen=True)
class CameraFrame:
    """One image to render: exposure time, output file, keyframe sample index (-1 for sweeps)."""

    t_s: float
    filename: str
    sample_index: int


@dataclass(frozen=True)
class CameraJob:
    camera: str
    frames: tuple[CameraFrame, ...]


_WORKER: dict[str, Any] = {}


def _init_worker(root: Path, jpeg_quality: int, world: World) -> None:
    cv2.setNumThreads(1)  # one process per core already
    _WORKER.update(root=root, jpeg_quality=jpeg_quality, rig=simulated_rig(), world=world)


def _render_job(job: CameraJob) -> list[tuple[np.ndarray, np.ndarray]]:
    """Render, encode and write a job's frames; per frame the actor pixel counts and silhouettes
    (zeros for non-key frames, which need neither)."""
    world: World = _WORKER["world"]
    camera = _WORKER["rig"].cameras[job.camera]
    out = []
    for frame in job.frames:
        pose = world_SE3_ego_at(world, frame.t_s)
        image = render_camera(world, camera, pose, frame.t_s, with_instance=frame.sample_index >= 0)
        bgr = cv2.cvtColor(image.rgb, cv2.COLOR_RGB2BGR)
        ok, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, _WORKER["jpeg_quality"]])
        if not ok:
            raise InputError(f"simulate: JPEG encoding failed for {frame.filename}")
        (_WORKER["root"] / frame.filename).write_bytes(encoded.tobytes())
        counts = np.zeros(len(world.actors))
        silhouette = np.zeros(len(world.actors))
        if frame.sample_index >= 0:
            visible = image.instance[image.instance >= 0].ravel()
            counts = np.bincount(visible, minlength=len(world.actors))[: len(world.actors)].astype(np.float64)
            silhouette = actor_silhouette_px(world, camera, pose, frame.t_s).astype(np.float64)
        out.append((counts, silhouette))
    return out


class CameraRenderer:
    """Renders one scene's camera jobs in spawned worker processes (``workers > 1``) or inline.

    Spawned (not forked) because the parent runs numba's thread pool; each worker receives the
    scene's world once, through its initializer.
    """

    def __init__(self, root: Path, jpeg_quality: int, world: World, workers: int) -> None:
        self.pool = None
        if workers > 1:
            self.pool = ProcessPoolExecutor(
                workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(root, jpeg_quality, world),
            )
        else:
            _init_worker(root, jpeg_quality, world)

    def __enter__(self) -> CameraRenderer:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)

    def submit(self, jobs: list[CameraJob]) -> list:
        return list(jobs) if self.pool is None else [self.pool.submit(_render_job, job) for job in jobs]

    def collect(self, pending: list):
        for item in pending:
            yield _render_job(item) if self.pool is None else item.result()


def _attribute(world: World, index: int, speed_mps: float) -> str:
    category = world.actors.category[index]
    parked = np.ptp(world.actors.poses[index, :, :2], axis=0).max() < 1e-9
    if category in ("vehicle.bicycle", "vehicle.motorcycle"):
        return "cycle.with_rider" if world.actors.has_rider[index] else "cycle.without_rider"
    if category.startswith("human.pedestrian"):
        return "pedestrian.moving" if speed_mps > MOVING_MPS else "pedestrian.standing"
    if category.startswith("vehicle."):
        if parked:
            return "vehicle.parked"
        return "vehicle.moving" if speed_mps > MOVING_MPS else "vehicle.stopped"
    return ""


def _visibility_token(fraction: float) -> str:
    return next(tok for tok, _, upper in VISIBILITY if fraction < upper)


class _Tables:
    def __init__(self) -> None:
        self.rows: dict[str, list[dict[str, Any]]] = {name: [] for name in REQUIRED_TABLES}
        for name, description in CATEGORIES:
            self.rows["category"].append({"token": token("category", name), "name": name, "description": description})
        for name in ATTRIBUTES:
            self.rows["attribute"].append({"token": token("attribute", name), "name": name, "description": name})
        for tok, level, upper in VISIBILITY:
            self.rows["visibility"].append(
                {
                    "token": tok,
                    "level": level,
                    "description": f"visibility of whole object is below {min(upper, 1.0):.0%}",
                }
            )
        for name in (LIDAR_NAME, *(c[0] for c in CAMERA_LAYOUT)):
            modality = "lidar" if name == LIDAR_NAME else "camera"
            self.rows["sensor"].append({"token": token("sensor", name), "channel": name, "modality": modality})

    def write(self, table_dir: Path) -> None:
        table_dir.mkdir(parents=True, exist_ok=True)
        for name, rows in self.rows.items():
            (table_dir / f"{name}.json").write_text(json.dumps(rows, indent=0, sort_keys=True))


def _link(records: list[dict[str, Any]]) -> None:
    for a, b in itertools.pairwise(records):
        a["next"], b["prev"] = b["token"], a["token"]


def _write_scene(
    root: Path,
    tables: _Tables,
    cfg: SimConfig,
    world: World,
    *,
    scene_name: str,
    site: int,
    trip: int,
    start_us: int,
    written_rig: Rig,
    renderer: CameraRenderer,
    progress: Callable[[int], None],
) -> dict[str, Any]:
    rig = simulated_rig()
    lidar_sensor = rig.lidars[LIDAR_NAME]
    period_s = cfg.lidar.period_s
    n_sweeps = round(cfg.seconds * LIDAR_HZ)
    n_samples = (n_sweeps + SWEEPS_PER_SAMPLE - 1) // SWEEPS_PER_SAMPLE
    log_tok, scene_tok = token("log", cfg.seed, site, trip), token("scene", cfg.seed, scene_name)
    log_name = f"sim-{cfg.profile.value}-s{cfg.seed}-site{site}-trip{trip}"
    date = f"2018-08-{23 + trip % 7:02d}"
    tables.rows["log"].append(
        {
            "token": log_tok,
            "logfile": log_name,
            "vehicle": "sim-ego",
            "date_captured": date,
            "location": LOCATIONS[cfg.profile],
        }
    )
    map_file = f"maps/{token('map', log_tok)}.png"
    cv2.imwrite(str(root / map_file), np.zeros((8, 8), np.uint8))
    tables.rows["map"].append(
        {"token": token("map", log_tok), "log_tokens": [log_tok], "category": "semantic_prior", "filename": map_file}
    )
    calib_tok = {name: token("calib", scene_name, name) for name in rig.sensor_names}
    for name in rig.sensor_names:
        pose = written_rig.ego_SE3_sensor(name)
        cam = written_rig.cameras.get(name)
        tables.rows["calibrated_sensor"].append(
            {
                "token": calib_tok[name],
                "sensor_token": token("sensor", name),
                "translation": pose.translation.tolist(),
                "rotation": pose.quaternion_wxyz.tolist(),
                "camera_intrinsic": cam.intrinsics.tolist() if cam else [],
            }
        )

    sample_toks = [token("sample", scene_name, k) for k in range(n_samples)]
    key_times_s = [TIME_MARGIN_S + k * SWEEPS_PER_SAMPLE / LIDAR_HZ for k in range(n_samples)]
    to_us = lambda t_s: start_us + round(t_s * 1e6)  # noqa: E731
    for k, tok in enumerate(sample_toks):
        tables.rows["sample"].append(
            {"token": tok, "timestamp": to_us(key_times_s[k]), "scene_token": scene_tok, "prev": "", "next": ""}
        )
    _link(tables.rows["sample"][-n_samples:])

    def sample_data(
        channel: str,
        t_written_s: float,
        is_key: bool,
        filename: str,
        sample_index: int,
        size: tuple[int, int],
    ) -> dict[str, Any]:
        tok = token("sd", scene_name, channel, to_us(t_written_s))
        tables.rows["ego_pose"].append(_pose_record(tok, to_us(t_written_s), world_SE3_ego_at(world, t_written_s)))
        record = {
            "token": tok,
            "sample_token": sample_toks[min(sample_index, n_samples - 1)],
            "ego_pose_token": tok,
            "calibrated_sensor_token": calib_tok[channel],
            "timestamp": to_us(t_written_s),
            "fileformat": "pcd" if channel == LIDAR_NAME else "jpg",
            "is_key_frame": is_key,
            "width": size[0],
            "height": size[1],
            "filename": filename,
            "prev": "",
            "next": "",
        }
        tables.rows["sample_data"].append(record)
        return record

    # Camera frames render in worker processes while the lidar is ray cast here.
    n_frames = round(cfg.seconds * CAMERA_HZ)
    frames_per_sample = CAMERA_HZ * SWEEPS_PER_SAMPLE // LIDAR_HZ
    offset_s = cfg.time_offset_ms / 1000.0
    jobs: list[CameraJob] = []
    for name, yaw_deg, _ in CAMERA_LAYOUT:
        frames = []
        for m in range(n_frames):
            t_s = TIME_MARGIN_S + _camera_phase_s(yaw_deg, period_s) + m / CAMERA_HZ
            is_key = m % frames_per_sample == 0
            folder = "samples" if is_key else "sweeps"
            filename = f"{folder}/{name}/{log_name}__{name}__{to_us(t_s + offset_s)}.jpg"
            frames.append(CameraFrame(t_s, filename, -(-m // frames_per_sample) if is_key else -1))
        jobs.extend(CameraJob(name, tuple(frames[a : a + FRAMES_PER_JOB])) for a in range(0, n_frames, FRAMES_PER_JOB))
    pending = renderer.submit(jobs)

    lidar_records, key_sweeps = [], {}
    for k in range(n_sweeps):
        t_s = TIME_MARGIN_S + k / LIDAR_HZ
        is_key = k % SWEEPS_PER_SAMPLE == 0
        folder = "samples" if is_key else "sweeps"
        filename = f"{folder}/{LIDAR_NAME}/{log_name}__{LIDAR_NAME}__{to_us(t_s)}.pcd.bin"
        sweep = simulate_sweep(
            world, cfg.lidar, lidar_sensor.ego_SE3_lidar, t_s, seed=int(token("lidar", scene_name, k)[:8], 16)
        )
        (root / filename).write_bytes(np.ascontiguousarray(sweep.points, dtype=np.float32).tobytes())
        lidar_records.append(sample_data(LIDAR_NAME, t_s, is_key, filename, -(-k // SWEEPS_PER_SAMPLE), (0, 0)))
        if is_key:
            key_sweeps[k // SWEEPS_PER_SAMPLE] = sweep
        progress(1)
    _link(lidar_records)

    visible_px = np.zeros((n_samples, len(world.actors)))
    silhouette_px = np.zeros((n_samples, len(world.actors)))
    for job, results in zip(jobs, renderer.collect(pending), strict=True):
        for frame, (counts, silhouette) in zip(job.frames, results, strict=True):
            if 0 <= frame.sample_index < n_samples:
                visible_px[frame.sample_index] += counts
                silhouette_px[frame.sample_index] += silhouette
        progress(len(job.frames))
    for name, _, _ in CAMERA_LAYOUT:
        camera = rig.cameras[name]
        frames = [f for job in jobs if job.camera == name for f in job.frames]
        records = [
            sample_data(
                name,
                f.t_s + offset_s,
                f.sample_index >= 0,
                f.filename,
                f.sample_index if f.sample_index >= 0 else -(-m // frames_per_sample),
                (camera.width_px, camera.height_px),
            )
            for m, f in enumerate(frames)
        ]
        _link(records)

    annotations = _annotate(
        tables,
        world,
        scene_name,
        sample_toks,
        key_times_s,
        key_sweeps,
        lidar_sensor.ego_SE3_lidar,
        visible_px,
        silhouette_px,
    )
    tables.rows["scene"].append(
        {
            "token": scene_tok,
            "log_token": log_tok,
            "nbr_samples": n_samples,
            "name": scene_name,
            "description": f"simulated {cfg.profile.value} drive, site {site}, trip {trip}",
            "first_sample_token": sample_toks[0],
            "last_sample_token": sample_toks[-1],
        }
    )
    instances = {
        token("instance", scene_name, a): {"category": category, "colour": colour.tolist()}
        for a, (category, colour) in enumerate(zip(world.actors.category, world.actors.colour, strict=True))
    }
    return {
        "instances": instances,
        "site": site,
        "trip": trip,
        "log": log_name,
        "annotations": annotations,
        "sweeps": n_sweeps,
        "images": n_frames * len(CAMERA_LAYOUT),
        "samples": n_samples,
    }


def _annotate(
    tables: _Tables,
    world: World,
    scene_name: str,
    sample_toks: list[str],
    key_times_s: list[float],
    key_sweeps: dict,
    ego_SE3_lidar: SE3,
    visible_px: np.ndarray,
    silhouette_px: np.ndarray,
) -> int:
    """sample_annotation and instance rows: actors near the ego that a lidar point or a pixel shows."""
    by_actor: dict[int, list[dict[str, Any]]] = {}
    for k, (sample_tok, t_s) in enumerate(zip(sample_toks, key_times_s, strict=True)):
        world_SE3_ego = world_SE3_ego_at(world, t_s)
        boxes = Boxes3D(actor_boxes_at(world.actors, world.dt_s, t_s), WORLD_FRAME)
        velocity = actor_velocities_at(world.actors, world.dt_s, t_s)
        # num_lidar_pts as the devkit counts it: the key sweep's points taken as lidar-frame points at the
        # sweep timestamp, inside the annotation box.
        points_world = (world_SE3_ego @ ego_SE3_lidar).transform_points(key_sweeps[k].points[:, :3])
        num_pts = boxes.points_in_boxes(points_world).sum(axis=0)
        distance = np.linalg.norm(boxes.centers[:, :2] - world_SE3_ego.translation[:2], axis=1)
        for a in np.nonzero((distance < ANNOTATION_RANGE_M) & ((num_pts > 0) | (visible_px[k] > 0)))[0]:
            fraction = visible_px[k, a] / silhouette_px[k, a] if silhouette_px[k, a] > 0 else 0.0
            attribute = _attribute(world, int(a), float(np.linalg.norm(velocity[a])))
            x, y, z, l, w, h, yaw = boxes.data[a]
            by_actor.setdefault(int(a), []).append(
                {
                    "token": token("ann", scene_name, a, k),
                    "sample_token": sample_tok,
                    "instance_token": token("instance", scene_name, a),
                    "visibility_token": _visibility_token(fraction),
                    "attribute_tokens": [token("attribute", attribute)] if attribute else [],
                    "translation": [x, y, z],
                    "size": [w, l, h],
                    "rotation": SE3.from_yaw(yaw).quaternion_wxyz.tolist(),
                    "prev": "",
                    "next": "",
                    "num_lidar_pts": int(num_pts[a]),
                    "num_radar_pts": 0,
                }
            )
    for a, anns in sorted(by_actor.items()):
        _link(anns)
        tables.rows["sample_annotation"].extend(anns)
        tables.rows["instance"].append(
            {
                "token": token("instance", scene_name, a),
                "category_token": token("category", world.actors.category[a]),
                "nbr_annotations": len(anns),
                "first_annotation_token": anns[0]["token"],
                "last_annotation_token": anns[-1]["token"],
            }
        )
    return sum(len(anns) for anns in by_actor.values())


def simulate_dataroot(
    out: Path, cfg: SimConfig, *, overwrite: bool = False, progress: Callable[[int, int], None] | None = None
) -> SimResult:
    """Generate ``cfg.scenes * cfg.trips`` scenes into a new dataroot at ``out``, atomically.

    Everything is written to a temporary folder beside ``out`` and renamed into place at the end, so
    an interrupted run never leaves a dataroot that looks complete.
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise InputError(f"{out}: output folder exists and is not empty (pass --overwrite to replace it)")
    version, names = scene_names(cfg.scenes * cfg.trips)
    n_sweeps = round(cfg.seconds * LIDAR_HZ)
    total = len(names) * (n_sweeps + round(cfg.seconds * CAMERA_HZ) * len(CAMERA_LAYOUT))
    done = 0

    def step(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    workers = cfg.workers or os.cpu_count() or 1
    # With render processes on every core, a single-threaded ray caster avoids oversubscription.
    numba_threads = numba.get_num_threads()
    numba.set_num_threads(1 if workers > 1 else numba_threads)
    tables = _Tables()
    manifest: dict[str, Any] = {
        "config": {
            **{k: v for k, v in asdict(cfg).items() if k != "workers"},  # output never depends on workers
            "profile": cfg.profile.value,
            "lidar": {k: np.asarray(v).tolist() for k, v in asdict(cfg.lidar).items()},
        },
        "version": version,
        "scenes": {},
        "lidar_point_time": "t = sweep timestamp - wrap(azimuth_ego) / (2 pi) * period_s, where "
        "azimuth_ego is the point's azimuth in the ego frame (clockwise "
        "rotation, forward at the sweep timestamp)",
    }
    try:
        with atomic_directory(out) as staging:
            for d in (
                "maps",
                "sim",
                f"samples/{LIDAR_NAME}",
                f"sweeps/{LIDAR_NAME}",
                *(f"{f}/{c[0]}" for f in ("samples", "sweeps") for c in CAMERA_LAYOUT),
            ):
                (staging / d).mkdir(parents=True, exist_ok=True)
            scene_index = 0
            for site_index in range(cfg.scenes):
                site_seed = cfg.seed * 1000 + site_index
                site = build_site(cfg.profile, site_seed)
                for trip in range(cfg.trips):
                    name = names[scene_index]
                    world = build_world(site, site_seed, trip, cfg.seconds)
                    rng = np.random.default_rng(int(token("perturb", cfg.seed, name)[:8], 16))
                    true_rig = simulated_rig()
                    written = (
                        perturbed_rig(true_rig, cfg.perturb_extrinsics_deg, cfg.perturb_extrinsics_cm, rng)
                        if cfg.perturb_extrinsics_deg or cfg.perturb_extrinsics_cm
                        else true_rig
                    )
                    start_us = EPOCH_US + scene_index * 3_600_000_000 + trip * 86_400_000_000
                    with CameraRenderer(staging, cfg.jpeg_quality, world, workers) as renderer:
                        info = _write_scene(
                            staging,
                            tables,
                            cfg,
                            world,
                            scene_name=name,
                            site=site_index,
                            trip=trip,
                            start_us=start_us,
                            written_rig=written,
                            renderer=renderer,
                            progress=step,
                        )
                    info["true_extrinsics"] = {
                        n: {
                            "translation": true_rig.ego_SE3_sensor(n).translation.tolist(),
                            "rotation": true_rig.ego_SE3_sensor(n).quaternion_wxyz.tolist(),
                        }
                        for n in true_rig.sensor_names
                    }
                    info["camera_time_offset_ms"] = cfg.time_offset_ms
                    manifest["scenes"][name] = info
                    scene_index += 1
            tables.write(staging / version)
            (staging / "sim" / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
    finally:
        numba.set_num_threads(numba_threads)
    rows = tables.rows
    return SimResult(
        out,
        version,
        names,
        len(rows["sample"]),
        sum(1 for r in rows["sample_data"] if r["fileformat"] == "pcd"),
        sum(1 for r in rows["sample_data"] if r["fileformat"] == "jpg"),
        len(rows["sample_annotation"]),
    )
