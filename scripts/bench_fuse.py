"""Benchmark: the fusion stage on a simulated nuScenes-like clip; writes its section of BENCHMARKS.md.

    python scripts/bench_fuse.py [--seconds 20] [--runs 3]

Per-keyframe figures use decoded images (decoding is reported separately); medians over keyframes and runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autolabel.datasets.nuscenes import load_nuscenes_clip
from autolabel.fuse import FuseConfig, camera_views, fuse_clip, sweep_input
from autolabel.sim.dataroot import SimConfig, simulate_dataroot
from fusion.aggregate import PoseTrack, combine, point_dt_s, sweep_to_world
from fusion.bev import rasterize
from fusion.paint import paint
from scripts.bench_simulate import replace_section

ROOT = Path(__file__).resolve().parents[1]


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.1f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--data", type=Path, default=None, help="an existing simulated dataroot (scene-0061)")
    args = parser.parse_args()
    device = torch.device("cpu")
    torch.set_num_threads(1)
    config = FuseConfig()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.data or simulate_dataroot(Path(tmp) / "ds", SimConfig(seconds=args.seconds, seed=0)).dataroot
        clip = load_nuscenes_clip(root, "scene-0061")
        sweeps = [s for f in clip.frames for s in f.sweeps]
        track = PoseTrack.from_poses([s.timestamp_us for s in sweeps], [s.world_SE3_ego for s in sweeps])
        read, deskew, decode, painting, aggregation, bev, keyframe = ([] for _ in range(7))
        for frame in clip.frames[1:]:
            t0 = time.perf_counter()
            key_sweeps = [s for f in clip.frames[max(frame.index - 1, 0) : frame.index + 1] for s in f.sweeps][-10:]
            inputs = [sweep_input(s, True) for s in key_sweeps]
            t1 = time.perf_counter()
            worlds = [sweep_to_world(x, track) for x in inputs]
            t2 = time.perf_counter()
            views = camera_views(clip, frame.index)
            t3 = time.perf_counter()
            times = np.concatenate([x.timestamp_us + x.time_offset_s.astype(np.float64) * 1e6 for x in inputs])
            painted = paint(np.concatenate(worlds), views, device, point_time_us=times, config=config.paint)
            t4 = time.perf_counter()
            cloud = combine(
                worlds,
                [x.points[:, 3] for x in inputs],
                [point_dt_s(x.timestamp_us, x.time_offset_s, len(x.points), frame.timestamp_us) for x in inputs],
                frame.world_SE3_ego,
            )
            t5 = time.perf_counter()
            rasterize(cloud, config.keyframe_bev, device, rgb=painted.rgb)
            t6 = time.perf_counter()
            read.append(t1 - t0)
            deskew.append(t2 - t1)
            decode.append(t3 - t2)
            painting.append(t4 - t3)
            aggregation.append(t5 - t4)
            bev.append(t6 - t5)
            keyframe.append((t2 - t1) + (t6 - t3))
        whole = []
        for _ in range(args.runs):
            start = time.perf_counter()
            fuse_clip(clip, device, config)
            whole.append(time.perf_counter() - start)
        points = int(np.mean([s.num_points for s in sweeps]))
    load = os.getloadavg()[0]
    body = (
        f"## Fusion: {args.seconds:g} s simulated urban clip ({len(clip)} keyframes, {len(sweeps)} sweeps, "
        f"{points:,} points per sweep, 6 cameras), CPU, torch single-threaded\n\n"
        f"Command: `python scripts/bench_fuse.py --seconds {args.seconds:g} --runs {args.runs}`<br>\n"
        f"1-minute load average at the end: {load:.1f} on 2 cores (other work was running when it is above 1)\n\n"
        "| step (one keyframe, 10 sweeps) | median |\n|---|---|\n"
        f"| read 10 sweeps | {ms(read)} |\n| de-skew to world | {ms(deskew)} |\n"
        f"| decode 6 JPEG images | {ms(decode)} |\n| paint | {ms(painting)} |\n"
        f"| aggregate into keyframe ego | {ms(aggregation)} |\n| BEV raster 512x512 | {ms(bev)} |\n"
        f"| **aggregation + painting + BEV (images decoded)** | **{ms(keyframe)}** (target < 50 ms) |\n"
        f"| **whole clip `fuse_clip`** (incl. reading, decoding, clip BEV) | "
        f"**{statistics.median(whole):.1f} s** (runs {', '.join(f'{w:.1f}' for w in whole)} s; target < 4 s) |\n"
    )
    replace_section(args.out, "fusion", body)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
