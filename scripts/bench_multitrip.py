"""Benchmark: multi-trip alignment of simulated drives through one site; prints a markdown report.

    python scripts/bench_multitrip.py [--seconds 5] [--seed 0] [--dataroot DIR] [--other-dataroot DIR]

Two trips through one simulated site (``--trips 2``) share the simulator's world frame. Trip B's whole
clip is moved by a known rigid error (a GNSS/datum offset: a yaw about its centre plus a shift) of
several sizes, and :mod:`autolabel.multitrip` must undo it. Reported: the error left (translation,
yaw, RMS displacement of trip B's static cloud), the alignment quality figures, whether the global
registration was needed, wall time, and how well trip A's ground-truth static labels transferred into
trip B's frames match trip B's own ground truth of the same simulated actors (BEV IoU). Last, a drive
through another site (another seed, same street template) must be rejected. Prints only; nothing is
written.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autolabel.datasets.nuscenes import list_scenes, load_nuscenes_clip  # noqa: E402
from autolabel.multitrip import (  # noqa: E402
    MultiTripResult,
    align_prepared,
    gt_labels,
    prepare_trip,
    run_multitrip,
    transform_clip,
)
from autolabel.sim.dataroot import SimConfig, simulate_dataroot, token  # noqa: E402
from calibration import SE3, iou_bev  # noqa: E402

OFFSETS = ((2.5, 4.0), (6.0, 10.0), (12.0, 18.0))  # (shift m, yaw deg), within the default prior bounds


def label_ious(result: MultiTripResult, clip_a_name: str, clip_b) -> tuple[list[float], int]:
    """BEV IoU of every transferred label in trip B with trip B's ground truth of the same actor."""
    actors = {token("instance", clip_a_name, a): a for a in range(1000)}
    objects = {o.object_id: o for o in result.objects}
    ious, unmatched = [], 0
    for frame, labels in zip(clip_b.frames, result.trips[1].static_labels or (), strict=False):
        for k, object_id in enumerate(labels.track_ids):
            twin = token("instance", clip_b.name, actors[objects[object_id].members[0][1]])
            if twin in frame.gt.track_ids:
                ious.append(float(iou_bev(labels.boxes[[k]], frame.gt.boxes[[frame.gt.track_ids.index(twin)]])[0, 0]))
            else:
                unmatched += 1
    return ious, unmatched


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dataroot", type=Path, help="an existing 2-trip simulated dataroot (else simulated)")
    parser.add_argument("--other-dataroot", type=Path, help="a dataroot of another site (else simulated)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)

    with tempfile.TemporaryDirectory() as tmp:
        root, other_root = args.dataroot, args.other_dataroot
        start = time.perf_counter()
        if root is None:
            root = Path(tmp) / "site"
            simulate_dataroot(root, SimConfig(seconds=args.seconds, seed=args.seed, trips=2))
        if other_root is None:
            other_root = Path(tmp) / "other"
            simulate_dataroot(other_root, SimConfig(seconds=args.seconds, seed=args.seed + 1, trips=1))
        simulate_s = time.perf_counter() - start
        scene_a, scene_b = list_scenes(root)[:2]
        clip_a, clip_b = load_nuscenes_clip(root, scene_a), load_nuscenes_clip(root, scene_b)
        centre = np.mean([f.world_SE3_ego.translation for f in clip_b.frames], axis=0)

        print(f"## Multi-trip alignment: simulated {args.seconds:g} s urban trips, seed {args.seed}\n")
        print(f"Command: `python scripts/bench_multitrip.py --seconds {args.seconds:g} --seed {args.seed}`  ")
        print(
            f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
            f"`autolabel.multitrip` defaults; simulation {simulate_s:.0f} s (not counted below)\n"
        )
        print(
            "| offset of trip B | translation error | yaw error | RMS displacement | fitness | residual RMS "
            "| height offset | global | status | static clouds | align | transfer | label IoU min / median (n) "
            "| not observed in B |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        trip_a = prepare_trip(clip_a, gt_labels(clip_a))
        for shift_m, yaw_deg in OFFSETS:
            wrong_SE3_world = (
                SE3.from_yaw(np.radians(yaw_deg), centre)
                @ SE3(np.eye(3), (0.8 * shift_m, -0.6 * shift_m, 0.3))
                @ SE3.from_yaw(0.0, -centre)
            )
            clip_b_moved = transform_clip(clip_b, wrong_SE3_world)
            trip_b = prepare_trip(clip_b_moved, None)
            result = align_prepared([trip_a, trip_b], timing_s={"static_clouds": trip_a.timing_s + trip_b.timing_s})
            reg = result.trips[1].registration
            error = reg.map_SE3_world @ wrong_SE3_world
            shown = error.transform_points(trip_b.static_world) - trip_b.static_world
            rms_m = float(np.sqrt(np.mean(np.sum(shown**2, axis=1))))
            ious, unmatched = label_ious(result, clip_a.name, clip_b_moved)
            iou_text = f"{min(ious):.3f} / {np.median(ious):.3f} ({len(ious)}, {unmatched} without GT)" if ious else "-"
            q, t = reg.quality, result.timing_s
            print(
                f"| {np.hypot(0.8 * shift_m, 0.6 * shift_m):.1f} m, {yaw_deg:g} deg "
                f"| {np.linalg.norm(error.translation) * 100:.1f} cm | {abs(np.degrees(error.yaw_rad)):.4f} deg "
                f"| {rms_m * 100:.1f} cm | {q.fitness:.3f} | {q.residual_rms_m * 100:.1f} cm "
                f"| {q.height_offset_m * 100:.2f} cm | {'yes' if reg.used_global else 'no'} | {reg.status.value} "
                f"| {t['static_clouds']:.1f} s | {t['align']:.1f} s | {t['transfer']:.1f} s | {iou_text} "
                f"| {len(result.trips[1].not_observed)} |"
            )
        other = load_nuscenes_clip(other_root, list_scenes(other_root)[0])
        start = time.perf_counter()
        result = run_multitrip([clip_a, other])
        reg = result.trips[1].registration
        print(
            f"\nAnother site (seed {args.seed + 1}, same street template): status `{reg.status.value}` in "
            f"{time.perf_counter() - start:.1f} s; fitness {reg.quality.fitness:.3f}, residual "
            f"{reg.quality.residual_rms_m * 100:.1f} cm, height offset {reg.quality.height_offset_m * 100:.2f} cm; "
            f"warnings: {'; '.join(reg.warnings)}"
        )


if __name__ == "__main__":
    main()
