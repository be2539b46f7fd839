"""Benchmark: lidar odometry on simulated drives (poses known); writes its section of BENCHMARKS.md.

    python scripts/bench_odometry.py [--seconds 20] [--seed 0] [--profiles urban highway]

Per profile one scene is simulated, its poses are hidden from the odometry and used as truth. Three
inputs are compared: every 20 Hz sweep de-skewed (the recommended use), every sweep raw
(motion-distorted), and only the 2 Hz keyframe sweeps de-skewed. Errors are measured at the
keyframes: ATE after aligning the first pose (drift shows fully) and after a best-fit rigid
alignment, and the KITTI-style relative pose error over 10/20/50/100 m segments (those that fit).
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autolabel.datasets.model import LidarSweep  # noqa: E402
from autolabel.datasets.nuscenes import load_nuscenes_clip  # noqa: E402
from autolabel.sim.dataroot import SimConfig, simulate_dataroot  # noqa: E402
from autolabel.sim.scenario import Profile  # noqa: E402
from fusion.odometry import (  # noqa: E402
    TrajectoryAlignment,
    absolute_trajectory_error_m,
    estimate_odometry,
    path_length_m,
    relative_pose_error,
    spin_time_offsets_s,
)
from scripts.bench_simulate import replace_section  # noqa: E402

SECTION = "odometry"
SEGMENTS_M = (10.0, 20.0, 50.0, 100.0)


@dataclass(frozen=True)
class Row:
    profile: str
    variant: str
    scans: int
    distance_m: float
    ate_m: float
    ate_rigid_m: float
    rpe_percent: float
    rpe_deg_per_m: float
    segments: str
    degraded: int
    median_ms: float
    total_s: float


def run_variant(profile: str, variant: str, sweeps: list[LidarSweep], period_s: float) -> Row:
    keyframes_only, deskew = variant.startswith("2 Hz"), "de-skewed" in variant
    used = [s for s in sweeps if s.is_key] if keyframes_only else sweeps
    scans = [s.load_points_ego() for s in used]
    offsets = (
        [spin_time_offsets_s(p, s.ego_SE3_lidar.translation, period_s) for p, s in zip(scans, used, strict=True)]
        if deskew
        else None
    )
    start = time.perf_counter()
    result = estimate_odometry(scans, [s.timestamp_us for s in used], point_time_offsets_s=offsets)
    total_s = time.perf_counter() - start
    key = [k for k, s in enumerate(used) if s.is_key]
    estimated = [result.world_SE3_ego[k] for k in key]
    truth = [used[k].world_SE3_ego for k in key]
    distance = path_length_m([s.world_SE3_ego for s in sweeps])
    segments = tuple(length for length in SEGMENTS_M if length < distance)
    rpe_percent, rpe_deg_per_m = relative_pose_error(estimated, truth, segments)
    return Row(
        profile=profile,
        variant=variant,
        scans=len(used),
        distance_m=distance,
        ate_m=absolute_trajectory_error_m(estimated, truth),
        ate_rigid_m=absolute_trajectory_error_m(estimated, truth, TrajectoryAlignment.RIGID),
        rpe_percent=rpe_percent,
        rpe_deg_per_m=rpe_deg_per_m,
        segments="/".join(f"{s:g}" for s in segments),
        degraded=int(result.degraded.sum()),
        median_ms=1000.0 * statistics.median(result.step_time_s[1:].tolist()),
        total_s=total_s,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profiles", nargs="+", choices=[p.value for p in Profile], default=["urban", "highway"])
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # per-scan degradation warnings are counted in the table
    rows: list[Row] = []
    for profile in args.profiles:
        config = SimConfig(seconds=args.seconds, seed=args.seed, profile=Profile(profile))
        with tempfile.TemporaryDirectory() as tmp:
            result = simulate_dataroot(Path(tmp) / "nuscenes", config)
            clip = load_nuscenes_clip(result.dataroot, result.scenes[0])
            sweeps = [sweep for frame in clip.frames for sweep in frame.sweeps]
            for variant in ("20 Hz sweeps, de-skewed", "20 Hz sweeps, raw", "2 Hz keyframes, de-skewed"):
                rows.append(run_variant(profile, variant, sweeps, config.lidar.period_s))
                print(rows[-1], file=sys.stderr)
    command = (
        f"python scripts/bench_odometry.py --seconds {args.seconds:g} --seed {args.seed} "
        f"--profiles {' '.join(args.profiles)}"
    )
    lines = [
        f"## Lidar odometry: simulated {args.seconds:g} s drives, seed {args.seed}",
        "",
        f"Command: `{command}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"`fusion.odometry` defaults (scan-to-map point-to-plane ICP, open3d)",
        "",
        "Errors at the 2 Hz keyframes against the simulator's exact poses. ATE: position RMSE after "
        "aligning the first pose (drift shows fully) / after a best-fit rigid alignment. RPE: KITTI-style "
        "mean over all segments of the listed lengths, per metre of true path. Target: RPE < 1 %.",
        "",
        "| profile | input | scans | distance | ATE (first pose) | ATE (rigid) | RPE | RPE rotation | "
        "segments | degraded | median time per scan | total |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r.profile} | {r.variant} | {r.scans} | {r.distance_m:.1f} m | {r.ate_m:.3f} m | {r.ate_rigid_m:.3f} m | "
        f"{r.rpe_percent:.3f} % | {r.rpe_deg_per_m:.5f} deg/m | {r.segments} m | {r.degraded} | "
        f"{r.median_ms:.0f} ms | {r.total_s:.0f} s |"
        for r in rows
    ]
    failing = [f"{r.profile} ({r.variant})" for r in rows if not r.rpe_percent < 1.0]
    lines += ["", f"Above the 1 % target: {', '.join(failing) if failing else 'none'}."]
    if any(r.profile == Profile.HIGHWAY.value for r in rows if not r.rpe_percent < 1.0):
        lines += [
            "",
            "The simulated highway is a corridor without along-track geometry (continuous sound walls, flat road, "
            "a pole pair every 50 m, sparse trees) full of co-moving traffic: ICP has almost nothing that fixes the "
            'along-track motion and is pulled towards "standing still" by the traffic from the first scans, before '
            "any quality check fails; the degradation warnings come later. Geometry-only scan-to-map ICP cannot fix "
            "this; moving-object removal, lane-marking intensity or a per-scan speed measurement (wheel odometry) as "
            "an ICP constraint would be needed.",
        ]
    body = "\n".join(lines) + "\n"
    replace_section(args.out, SECTION, body)
    print(body)
    return 0 if all(np.isfinite(r.rpe_percent) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
