"""Benchmark: the whole pipeline on a simulated nuScenes-like clip; writes its section of BENCHMARKS.md.

    python scripts/bench_pipeline.py [--seconds 20] [--runs 3] [--data DIR]

The scene is simulated once (in a child process, so its memory does not count), then every run is a
cold pipeline run in a fresh child process with an empty workspace (no stage cache): read, fusion
(with calibration QA), built-in detector, offboard tracker, label store. Per-stage wall times are
medians over the runs; peak memory, from one more run, is the largest sum of the proportional set sizes of the
child and its forked workers (sampled). The stored labels are then scored against the simulator's ground truth with the
devkit. ``--data`` reuses a simulated dataroot.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.bench_simulate import replace_section  # noqa: E402

SECTION = "pipeline"
SCENE = "scene-0061"
STAGES = ("read", "fusion", "detection", "tracking", "refinement", "store")

CHILD = """
import json, os, resource, sys, threading, time
from pathlib import Path
import torch
from autolabel.datasets.model import ClipSource
from autolabel.parallel import available_cores
from autolabel.pipeline import ClipSpec, run_clip
from autolabel.store import open_store

def pss_kb(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return next((int(line.split()[1]) for line in f if line.startswith("Pss:")), 0)
    except OSError:
        return 0

def children(pid):
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return found

peak_pss_kb, done = [0], threading.Event()

def sample():  # shared pages are split between the processes sharing them: the sum is the memory in use
    me = os.getpid()
    while not done.wait(0.25):
        peak_pss_kb[0] = max(peak_pss_kb[0], pss_kb(me) + sum(pss_kb(c) for c in children(me)))

# Library imports stay outside the timed call, the devkit's too (the nuScenes reader imports it on first use;
# with sklearn.metrics it takes seconds): a batch worker pays them once, not per clip. Timed and reported apart.
started = time.perf_counter()
import nuscenes.nuscenes  # noqa: F401
devkit_import_s = time.perf_counter() - started

root, home, sampled = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "sample"
sampler = threading.Thread(target=sample, daemon=True)
if sampled:
    sampler.start()
start = time.perf_counter()
with open_store(f"sqlite:///{home}/labels.db") as store:
    spec = ClipSpec(ClipSource.NUSCENES, root, "scene-0061")
    summary = run_clip(spec, home, store, torch.device("cpu"), workers=available_cores())
wall = time.perf_counter() - start
done.set()
if sampled:
    sampler.join()
second_wall = None
if not sampled:  # the same clip again in this process, into a fresh workspace: what a batch worker's next clip costs
    start = time.perf_counter()
    with open_store(f"sqlite:///{home}/second/labels.db") as store:
        run_clip(spec, home / "second", store, torch.device("cpu"), workers=available_cores())
    second_wall = time.perf_counter() - start
print(json.dumps({"summary": summary.as_dict(), "wall_s": wall, "second_wall_s": second_wall,
                  "workers": available_cores(),
                  "devkit_import_s": devkit_import_s,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "pss_mb": peak_pss_kb[0] / 1024}))
"""

EVALUATE = """
import json, sys
from pathlib import Path
from autolabel.datasets.nuscenes import load_nuscenes_clip
from autolabel.evaluate import automation_rate, nuscenes_detection_metrics, nuscenes_tracking_metrics
from autolabel.labels import stored_frame_labels
from autolabel.store import ClipKey, open_store
root, home = Path(sys.argv[1]), Path(sys.argv[2])
clip = load_nuscenes_clip(root, "scene-0061")
with open_store(f"sqlite:///{home}/labels.db") as store:
    labels = stored_frame_labels(store.current_labels(ClipKey("nuscenes", "scene-0061")))
det = nuscenes_detection_metrics(clip, labels)
trk = nuscenes_tracking_metrics(clip, labels)
rate = automation_rate(clip, labels)
print(json.dumps({"mAP": det["mAP"], "NDS": det["NDS"], "car_AP": det["per_class_AP"].get("car"),
                  "pedestrian_AP": det["per_class_AP"].get("pedestrian"), "amota": trk["amota"],
                  "ids": trk["ids"], "automation": rate.rate}))
"""


def cpu_model() -> str:
    """The CPU's model name as the kernel reports it (wall times depend on it as much as on the core count)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "unknown")
    except OSError:
        return platform.processor() or "unknown"


def child(code: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--data", type=Path, default=None, help="an existing simulated dataroot")
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        root = args.data
        if root is None:
            root = Path(tmp) / "sim"
            subprocess.run(
                [sys.executable, "-m", "autolabel.cli", "simulate", "--out", str(root), "--seconds", str(args.seconds)],
                check=True,
                cwd=ROOT,
                capture_output=True,
            )
        runs = []
        for k in range(args.runs):
            home = Path(tmp) / f"home{k}"
            home.mkdir()
            runs.append(child(CHILD, str(root), str(home), "time"))
            print(f"run {k}: {runs[-1]['wall_s']:.1f} s", flush=True)
        # Reading every process's smaps_rollup walks its page tables: the sampler takes CPU from the run it
        # measures, so memory is measured in a run of its own.
        (Path(tmp) / "memory").mkdir()
        memory = child(CHILD, str(root), str(Path(tmp) / "memory"), "sample")
        print(f"memory run: {memory['wall_s']:.1f} s, peak {memory['pss_mb']:.0f} MB", flush=True)
        quality = child(EVALUATE, str(root), str(Path(tmp) / "home0"))
    first = runs[0]["summary"]
    per_stage = {
        stage: statistics.median(s["seconds"] for r in runs for s in r["summary"]["stages"] if s["stage"] == stage)
        for stage in STAGES
    }
    wall = statistics.median(r["wall_s"] for r in runs)
    second = statistics.median(r["second_wall_s"] for r in runs)
    devkit_import = statistics.median(r["devkit_import_s"] for r in runs)
    peak, rss = memory["pss_mb"], memory["rss_mb"]
    workers = runs[0]["workers"]
    command = f"python scripts/bench_pipeline.py --seconds {args.seconds:g} --runs {args.runs}"
    rows = "\n".join(f"| {stage} | {per_stage[stage]:.2f} s |" for stage in STAGES)
    cpus = len(os.sched_getaffinity(0))
    all_runs = ", ".join(f"{r['wall_s']:.1f}" for r in runs)
    body = f"""## Pipeline: one {args.seconds:g} s simulated urban clip, cold (no stage cache), CPU

Command: `{command}` (detection and refinement in {workers} forked worker processes)<br>
Machine: {platform.machine()}, {cpus} CPUs ({cpu_model()}), Python {platform.python_version()};
1-minute load average at the end: {os.getloadavg()[0]:.1f} (the run itself keeps up to {workers} cores busy)

{first["frames"]} keyframes, {first["detections"]} detections, {first["tracks"]} tracks, {first["boxes"]} stored boxes.

| stage | median wall time |
|---|---|
{rows}
| **whole clip** (the run_clip call) | **{wall:.1f} s** (runs {all_runs} s; target <= 10 s) |
| whole clip, second clip in the same process (a batch worker's next clip) | {second:.1f} s |
| **peak memory** (summed proportional set sizes of the process and its workers) | **{peak:.0f} MB** (target < 4 GB) |

Each run is a fresh process that imports its libraries before the timed call, the nuScenes devkit included
(median {devkit_import:.1f} s, most of it the `sklearn.metrics` import of `nuscenes.nuscenes`; a batch worker
pays it once, not per clip). The same process then runs the clip again into an empty workspace (the second-clip
row, median of the runs): the first clip of a process also pays for loading the compiled kernels from their cache
and for the memory it touches first. Peak memory comes from one more run ({memory["wall_s"]:.1f} s), sampled every
0.25 s (the timed runs are not sampled: reading the processes' page tables takes CPU from the run); pages that
forked workers share with the process count once. The process's own peak resident set: {rss:.0f} MB.

Quality of the stored labels against the simulator's ground truth (devkit, this clip): mAP {quality["mAP"]:.3f},
NDS {quality["NDS"]:.3f}, car AP {quality["car_AP"]:.3f}, pedestrian AP {quality["pedestrian_AP"]:.3f},
AMOTA {quality["amota"]:.3f} ({int(quality["ids"])} ID switches), automation rate {quality["automation"]:.3f}.
"""
    replace_section(args.out, SECTION, body)
    print(body)
    return 0


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    sys.exit(main())
