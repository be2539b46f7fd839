"""Benchmark of the geometric detector on simulated 10-sweep keyframes (lidar only, exact ground truth).

``python -m autolabel.detect.benchmark [--profiles urban highway parking] [--runs 10] [--dbscan-full]`` prints
markdown: the clustering comparison (numba grid connected components vs open3d DBSCAN, time and segmentation
quality on the same non-ground points), the time per stage and per keyframe, and detection recall/precision
per class. Quality uses the simulator's per-point actor ids: an actor (>= 20 candidate points) is *segmented*
when one cluster holds >= 90 % of its points and >= 90 % of that cluster's points are the actor's, *split* when
no cluster holds 90 % of it, *merged* when its main cluster is mostly something else.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from autolabel.categories import Category, category_from_nuscenes
from autolabel.detect.base import DetectorInput
from autolabel.detect.cluster import ClusterConfig, ClusterMethod, cluster_points
from autolabel.detect.geometric import STAGES, GeometricConfig, detect_geometric
from autolabel.sim.lidar import simulate_sweep
from autolabel.sim.scenario import TIME_MARGIN_S, Profile, build_site, build_world
from autolabel.sim.sensors import LIDAR_NAME, LidarModel, simulated_rig
from autolabel.sim.world import actor_boxes_at, world_SE3_ego_at
from calibration import EGO_FRAME, WORLD_FRAME, Boxes3D, iou_bev
from fusion.aggregate import PoseTrack, SweepInput, aggregate


@dataclass(frozen=True, eq=False)
class Keyframe:
    """A simulated keyframe: (N, 5) cloud in the ego frame, (N,) actor id per point (-1 none), GT boxes."""

    name: str
    points: np.ndarray
    instance: np.ndarray
    gt: Boxes3D
    categories: tuple[Category, ...]


def simulate_keyframe(profile: Profile, seed: int, key_time_s: float = 1.0, sweeps: int = 10) -> Keyframe:
    """Ray-cast ``sweeps`` sweeps of a simulated drive and aggregate them (de-skewed) into the ego frame."""
    site = build_site(profile, seed * 1000)
    world = build_world(site, seed * 1000, 0, key_time_s + 1.0)
    lidar = LidarModel()
    ego_SE3_lidar = simulated_rig().lidars[LIDAR_NAME].ego_SE3_lidar
    key_t = TIME_MARGIN_S + key_time_s
    inputs, instance = [], []
    for k in range(sweeps):
        t = key_t - (sweeps - 1 - k) * lidar.period_s
        sweep = simulate_sweep(world, lidar, ego_SE3_lidar, t, seed=k)
        pose = world_SE3_ego_at(world, t)
        inputs.append(SweepInput(sweep.points[:, :4], round(t * 1e6), pose, ego_SE3_lidar, sweep.time_offset_s))
        instance.append(sweep.instance)
    track = PoseTrack.from_poses([s.timestamp_us for s in inputs], [s.world_SE3_ego for s in inputs])
    ref = world_SE3_ego_at(world, key_t)
    points, _ = aggregate(inputs, ref, round(key_t * 1e6), track)
    gt = Boxes3D(actor_boxes_at(world.actors, world.dt_s, key_t), WORLD_FRAME).transform(ref.inverse(), EGO_FRAME)
    categories = tuple(category_from_nuscenes(c) for c in world.actors.category)
    return Keyframe(f"{profile.value} seed {seed}", points, np.concatenate(instance), gt, categories)


# ------------------------------------------------------------------------------------------------ clustering
def segmentation_quality(labels: np.ndarray, instance: np.ndarray, min_points: int = 20) -> dict[str, int]:
    """Counts of actors segmented / split / merged (see the module docstring) from per-point cluster labels."""
    out = {"actors": 0, "segmented": 0, "split": 0, "merged": 0}
    for actor in np.unique(instance[instance >= 0]):
        mine = instance == actor
        if mine.sum() < min_points:
            continue
        out["actors"] += 1
        own = labels[mine]
        own = own[own >= 0]
        if len(own) == 0:
            out["split"] += 1
            continue
        main = np.bincount(own).argmax()
        completeness = np.sum(own == main) / mine.sum()
        purity = np.sum(mine & (labels == main)) / np.sum(labels == main)
        if completeness < 0.9:
            out["split"] += 1
        elif purity < 0.9:
            out["merged"] += 1
        else:
            out["segmented"] += 1
    return out


def _timed(fn: Callable[[], np.ndarray], runs: int) -> tuple[np.ndarray, float]:
    fn()  # compile / warm up
    times = []
    result = None
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return result, float(np.median(times)) * 1e3


def compare_clustering(frames: list[Keyframe], runs: int, dbscan_full: bool) -> list[str]:
    """Markdown rows: method, time per keyframe, clusters, actors segmented / split / merged."""
    config = GeometricConfig()
    methods: list[tuple[str, ClusterConfig, int]] = [
        ("grid connected components (numba, default)", ClusterConfig(), runs),
        ("open3d DBSCAN, BEV, 0.1 m voxels, eps 0.45", ClusterConfig(method=ClusterMethod.DBSCAN), max(1, runs // 5)),
        (
            "open3d DBSCAN, 3D, 0.1 m voxels, eps 0.5",
            ClusterConfig(method=ClusterMethod.DBSCAN, z_scale=1.0, eps_m=0.5),
            max(1, runs // 5),
        ),
    ]
    if dbscan_full:
        methods.append(
            ("open3d DBSCAN, BEV, every point, eps 0.45", ClusterConfig(method=ClusterMethod.DBSCAN, voxel_m=0.0), 1)
        )
    rows = [
        "| method | time per keyframe | clusters | actors segmented | split | merged |",
        "|---|---|---|---|---|---|",
    ]
    for name, cluster_config, n in methods:
        total_ms, clusters, quality = 0.0, 0, {"actors": 0, "segmented": 0, "split": 0, "merged": 0}
        for frame in frames:
            result = detect_geometric(DetectorInput(frame.points, 0), config)
            sub = frame.points[result.candidates]
            labels, ms = _timed(lambda sub=sub, cc=cluster_config: cluster_points(sub, cc), n)
            total_ms += ms
            clusters += int(labels.max()) + 1
            for key, value in segmentation_quality(labels, frame.instance[result.candidates]).items():
                quality[key] += value
        k = len(frames)
        rows.append(
            f"| {name} | {total_ms / k:.1f} ms | {clusters / k:.0f} | {quality['segmented']}/{quality['actors']} "
            f"| {quality['split']} | {quality['merged']} |"
        )
    return rows


# ------------------------------------------------------------------------------------------------ detection
def time_stages(frames: list[Keyframe], runs: int) -> list[str]:
    """Markdown rows: median wall time per stage and in total, per keyframe."""
    rows = [
        "| keyframe | points | " + " | ".join(STAGES) + " | total | keyframes/s |",
        "|---" * (len(STAGES) + 4) + "|",
    ]
    for frame in frames:
        cloud = DetectorInput(frame.points, 0)
        detect_geometric(cloud)
        stages, totals = [], []
        for _ in range(runs):
            start = time.perf_counter()
            result = detect_geometric(cloud)
            totals.append(time.perf_counter() - start)
            stages.append([result.stage_ms[s] for s in STAGES])
        median = np.median(stages, axis=0)
        total = float(np.median(totals)) * 1e3
        cells = " | ".join(f"{v:.1f}" for v in median)
        rows.append(f"| {frame.name} | {len(frame.points)} | {cells} | {total:.1f} ms | {1e3 / total:.0f} |")
    return rows


def detection_quality(frames: list[Keyframe], max_range_m: float = 50.0, min_points: int = 20) -> list[str]:
    """Markdown rows per class: visible GT boxes, found (BEV IoU >= 0.5, any class / right class), false
    detections (no GT box overlaps them) and their mean score against the mean score of true ones."""
    stats: dict[Category, dict[str, float]] = {}
    true_scores, false_scores = [], []
    for frame in frames:
        found = detect_geometric(DetectorInput(frame.points, 0)).detections
        counts = np.bincount(frame.instance[frame.instance >= 0], minlength=len(frame.gt))
        ranges = np.hypot(*frame.gt.centers[:, :2].T)
        visible = np.flatnonzero((counts >= min_points) & (ranges <= max_range_m))
        iou = iou_bev(frame.gt[visible], found.boxes) if len(found) and len(visible) else np.zeros((len(visible), 0))
        for row, g in enumerate(visible):
            s = stats.setdefault(frame.categories[g], dict.fromkeys(("gt", "found", "right", "false"), 0.0))
            s["gt"] += 1
            if iou.shape[1] and iou[row].max() >= 0.5:
                s["found"] += 1
                s["right"] += found.categories[int(iou[row].argmax())] is frame.categories[g]
        overlaps = iou_bev(found.boxes, frame.gt).max(axis=1) if len(frame.gt) else np.zeros(len(found))
        for j in range(len(found)):
            (true_scores if overlaps[j] > 0 else false_scores).append(found.scores[j])
            if overlaps[j] == 0:
                s = stats.setdefault(found.categories[j], dict.fromkeys(("gt", "found", "right", "false"), 0.0))
                s["false"] += 1
    rows = ["| class | visible GT | found (IoU >= 0.5) | right class | false detections |", "|---|---|---|---|---|"]
    for category in Category:
        if category in stats:
            s = stats[category]
            rows.append(
                f"| {category.value} | {s['gt']:.0f} | {s['found']:.0f} | {s['right']:.0f} | {s['false']:.0f} |"
            )
    rows.append("")
    rows.append(
        f"Mean score: detections overlapping a GT box {np.mean(true_scores or [0]):.2f} ({len(true_scores)}), "
        f"false detections {np.mean(false_scores or [0]):.2f} ({len(false_scores)})."
    )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", nargs="+", default=["urban", "highway", "parking"])
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--dbscan-full", action="store_true", help="also DBSCAN on every point (tens of seconds)")
    args = parser.parse_args(argv)
    frames = [simulate_keyframe(Profile(p), args.seed) for p in args.profiles]
    print(f"Machine: {platform.machine()}, Python {platform.python_version()}; simulated 10-sweep keyframes\n")
    print("### Clustering: grid connected components vs DBSCAN (same non-ground points)\n")
    print("\n".join(compare_clustering(frames, args.runs, args.dbscan_full)))
    print("\n### Time per stage (ms, median) and per keyframe\n")
    print("\n".join(time_stages(frames, args.runs)))
    print("\n### Detection quality (within 50 m, >= 20 lidar points)\n")
    print("\n".join(detection_quality(frames)))


if __name__ == "__main__":
    main()
