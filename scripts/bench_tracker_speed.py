"""Benchmark: tracker speed without detection on a synthetic 50-object scene; writes BENCHMARKS.md.

    python scripts/bench_tracker_speed.py [--objects 50] [--frames 200] [--runs 5] [--seed 0] [--write]

The scene: ``--objects`` objects (70 % cars at 5-15 m/s on straight lanes, 30 % pedestrians at 1-2 m/s on
random headings) over ``--frames`` frames at 10 Hz, seen as detections with 0.2 m / 3 deg noise, 10 % of them
missed, plus 5 false positives per frame at random places; scores drawn from 0.3-1.0 (false positives
0.1-0.5). :func:`tracking.track_clip` runs on them with the default :class:`tracking.TrackerConfig` in the
online and the offboard mode; the median wall time of ``--runs`` runs (after one warm-up run) gives the
frames per second. Target (issue 6): >= 1000 frames/s for the offboard tracker on a 50-object scene.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from calibration import Boxes3D  # noqa: E402
from scripts.bench_simulate import replace_section  # noqa: E402
from tracking import Detections, TrackingMode, track_clip  # noqa: E402

SECTION = "tracker-speed"
PERIOD_US = 100_000
CAR_LWH = (4.5, 1.9, 1.6)
PEDESTRIAN_LWH = (0.7, 0.7, 1.75)
FALSE_POSITIVES_PER_FRAME = 5
MISS_RATE = 0.1


def synthetic_scene(num_objects: int, num_frames: int, seed: int) -> list[Detections]:
    """Per-frame world-frame detections of ``num_objects`` moving objects (see the module docstring)."""
    rng = np.random.default_rng(seed)
    is_car = rng.random(num_objects) < 0.7
    start = rng.uniform(-60.0, 60.0, (num_objects, 2))
    lanes = rng.choice([0.0, np.pi / 2, np.pi, -np.pi / 2], num_objects)
    heading = np.where(is_car, lanes, rng.uniform(-np.pi, np.pi, num_objects))
    speed = np.where(is_car, rng.uniform(5.0, 15.0, num_objects), rng.uniform(1.0, 2.0, num_objects))
    velocity = speed[:, None] * np.column_stack([np.cos(heading), np.sin(heading)])
    size = np.where(is_car[:, None], CAR_LWH, PEDESTRIAN_LWH)
    labels_all = np.where(is_car, "car", "pedestrian")
    frames = []
    for k in range(num_frames):
        t = k * PERIOD_US * 1e-6
        seen = rng.random(num_objects) >= MISS_RATE
        n = int(seen.sum())
        xy = start[seen] + velocity[seen] * t + rng.normal(0.0, 0.2, (n, 2))
        yaw = heading[seen] + np.deg2rad(rng.normal(0.0, 3.0, n))
        boxes = np.column_stack([xy, size[seen, 2] / 2.0, size[seen], yaw])
        n_fp = FALSE_POSITIVES_PER_FRAME
        fp = np.column_stack(
            [
                rng.uniform(-80.0, 80.0, (n_fp, 2)),
                np.full(n_fp, CAR_LWH[2] / 2.0),
                np.tile(CAR_LWH, (n_fp, 1)),
                rng.uniform(-np.pi, np.pi, n_fp),
            ]
        )
        scores = np.concatenate([rng.uniform(0.3, 1.0, n), rng.uniform(0.1, 0.5, FALSE_POSITIVES_PER_FRAME)])
        labels = (*labels_all[seen].tolist(), *["car"] * FALSE_POSITIVES_PER_FRAME)
        frames.append(Detections(k * PERIOD_US, Boxes3D(np.vstack([boxes, fp]), "world"), scores, labels))
    return frames


def timed_runs(frames: list[Detections], mode: TrackingMode, runs: int) -> tuple[list[float], int]:
    """Wall seconds of ``runs`` track_clip calls (after a warm-up call) and the number of tracks."""
    tracks = track_clip(frames, mode=mode)
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        track_clip(frames, mode=mode)
        seconds.append(time.perf_counter() - start)
    return seconds, len(tracks)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=50)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write", action="store_true", help="replace the section in BENCHMARKS.md")
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    args = parser.parse_args()
    if args.objects < 1 or args.frames < 2 or args.runs < 1:
        parser.error("--objects >= 1, --frames >= 2 and --runs >= 1 are required")
    frames = synthetic_scene(args.objects, args.frames, args.seed)
    detections = sum(len(f.scores) for f in frames)
    rows = []
    for mode in (TrackingMode.ONLINE, TrackingMode.OFFBOARD):
        seconds, tracks = timed_runs(frames, mode, args.runs)
        median = statistics.median(seconds)
        fps = args.frames / median
        met = "met" if fps >= 1000 else "**unmet**"
        target = f"{met} (>= 1000)" if mode is TrackingMode.OFFBOARD else "-"
        runs = ", ".join(f"{args.frames / s:.0f}" for s in seconds)
        rows.append(f"| {mode.value} | {tracks} | {median * 1e3:.0f} ms | **{fps:.0f}** | {runs} | {target} |")
        print(rows[-1], flush=True)
    command = "python scripts/bench_tracker_speed.py" + (
        f" --objects {args.objects} --frames {args.frames} --runs {args.runs} --seed {args.seed} --write"
    )
    body = f"""## Tracker speed: synthetic {args.objects}-object scene, detection excluded, CPU

Command: `{command}`<br>
Machine: {platform.machine()}, {len(os.sched_getaffinity(0))} CPUs, Python {platform.python_version()}, one process;
1-minute load average at the end: {os.getloadavg()[0]:.1f}

{args.frames} frames at 10 Hz, {detections} detections ({args.objects} objects, 70 % cars and 30 % pedestrians,
10 % of their detections missed, {FALSE_POSITIVES_PER_FRAME} false positives per frame), `track_clip` with the
default `TrackerConfig`; frames/s from the median of {args.runs} runs after a warm-up run.

| mode | tracks | median wall time | frames/s | frames/s of each run | target |
|---|---|---|---|---|---|
{chr(10).join(rows)}
"""
    if args.write:
        replace_section(args.out, SECTION, body)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
