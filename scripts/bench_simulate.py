"""Benchmark: wall time to simulate one scene; writes its section of BENCHMARKS.md.

    python scripts/bench_simulate.py [--seconds 20] [--runs 3] [--profile urban]

Reports the median of several runs (fresh output folder each run, numba caches warm after the first).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from autolabel.sim.dataroot import SimConfig, simulate_dataroot
from autolabel.sim.scenario import Profile

ROOT = Path(__file__).resolve().parents[1]
SECTION = "simulate"


def replace_section(path: Path, name: str, body: str) -> None:
    """Replace (or append) the block between ``<!-- name -->`` markers in BENCHMARKS.md."""
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    text = (
        path.read_text() if path.exists() else "# Benchmarks\n\nFigures measured on the project's 2-core CPU machine.\n"
    )
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", choices=[p.value for p in Profile], default=Profile.URBAN.value)
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    args = parser.parse_args()
    config = SimConfig(seconds=args.seconds, seed=0, profile=Profile(args.profile))
    # Warm-up: numba compiles (and caches) the ray caster on the first call.
    with tempfile.TemporaryDirectory() as tmp:
        simulate_dataroot(Path(tmp) / "warm", SimConfig(seconds=0.5, seed=0, profile=config.profile))
    times, result = [], None
    for run in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            result = simulate_dataroot(Path(tmp) / f"run{run}", config)
            times.append(time.perf_counter() - start)
            size_mb = sum(p.stat().st_size for p in result.dataroot.rglob("*") if p.is_file()) / 1e6
        print(f"run {run}: {times[-1]:.1f} s", file=sys.stderr)
    command = f"python scripts/bench_simulate.py --seconds {args.seconds:g} --runs {args.runs} --profile {args.profile}"
    body = (
        f"## Simulator: one {args.seconds:g} s {args.profile} scene\n\n"
        f"Command: `{command}`  \n"
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}\n\n"
        f"| scene | samples | lidar sweeps | images | annotations | output | median wall time | runs |\n"
        f"|---|---|---|---|---|---|---|---|\n"
        f"| {args.seconds:g} s {args.profile} | {result.samples} | {result.sweeps} | {result.images} | "
        f"{result.annotations} | {size_mb:.0f} MB | {statistics.median(times):.1f} s | "
        f"{', '.join(f'{t:.1f}' for t in times)} s |\n"
    )
    replace_section(args.out, SECTION, body)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
