"""Benchmark: CPU time per keyframe of mmdet3d models run through our adapter, beside the built-in detector; writes
its section of BENCHMARKS.md with ``--write``. Needs the mmdet3d extra (``make mmdet3d``).

    python scripts/bench_mmdet3d.py [--frames 8] [--cache /tmp/autolabel-bench-detect] [--write]

The models are mmdet3d's own bundled configs with random weights (no weights can be downloaded here), so only the
time is meaningful, not the boxes; a trained checkpoint of the same config costs the same. Inputs are the 10-sweep
keyframe clouds of one simulated urban scene (the detection benchmark's cache), given to
:class:`autolabel.detect.Mmdet3dDetector` with the scene's lidar extrinsic, as the pipeline gives them. Each model
runs every frame once to warm up, then the timed pass; medians over frames.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autolabel.detect import DetectorInput, GeometricDetector, Mmdet3dConfig, Mmdet3dDetector  # noqa: E402
from autolabel.detect.mmdet3d_model import random_weight_checkpoint  # noqa: E402
from autolabel.sim.scenario import Profile  # noqa: E402
from scripts.bench_detect import DEFAULT_CACHE, Suite, load_suite  # noqa: E402
from scripts.bench_simulate import replace_section  # noqa: E402

SECTION = "mmdet3d"
MODELS = {  # name -> config under mmdet3d's bundled configs
    "PointPillars KITTI 3-class": "pointpillars/pointpillars_hv_secfpn_8xb6-160e_kitti-3d-3class.py",
    "PointPillars nuScenes (FPN)": "pointpillars/pointpillars_hv_fpn_sbn-all_8xb4-2x_nus-3d.py",
    "CenterPoint pillar 0.2 nuScenes": "centerpoint/centerpoint_pillar02_second_secfpn_8xb4-cyclic-20e_nus-3d.py",
}


def time_detector(detector, frames: list[DetectorInput]) -> tuple[float, int]:
    """Median milliseconds per frame (after a warm-up pass) and the number of detections of the timed pass."""
    for frame in frames:
        detector.detect(frame)
    times, found = [], 0
    for frame in frames:
        start = time.perf_counter()
        found += len(detector.detect(frame))
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), found


def main(argv: list[str] | None = None) -> int:
    import mmdet3d
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=8, help="keyframes timed per model")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--write", action="store_true", help="write the mmdet3d section of BENCHMARKS.md")
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    args = parser.parse_args(argv)

    suite = Suite(profiles=(Profile.URBAN,), scenes=3, seconds=6.0, seed=0)  # the detection benchmark's cache
    _, scenes = load_suite(args.cache, suite)[Profile.URBAN]
    scene = scenes[0]
    lidar = next(iter(scene.clip.rig.lidars.values()))
    frames = [
        DetectorInput(cloud, frame.timestamp_us, ego_SE3_lidar=lidar.ego_SE3_lidar)
        for cloud, frame in zip(scene.clouds[1 : args.frames + 1], scene.clip.frames[1:], strict=False)
    ]
    points = statistics.median(len(f) for f in frames)
    configs = Path(mmdet3d.__file__).parent / ".mim" / "configs"
    rows = []
    ms, found = time_detector(GeometricDetector(), frames)
    rows.append(("built-in geometric", ms, found))
    with tempfile.TemporaryDirectory() as tmp:
        for name, relative in MODELS.items():
            checkpoint = random_weight_checkpoint(configs / relative, Path(tmp) / "model.pth")
            config = Mmdet3dConfig.from_files(configs / relative, checkpoint, device="cpu", score_threshold=0.1)
            ms, found = time_detector(Mmdet3dDetector(config), frames)
            rows.append((name, ms, found))
            print(f"{name}: {ms:.0f} ms per keyframe", file=sys.stderr)

    command = "python scripts/bench_mmdet3d.py" + (f" --frames {args.frames}" if args.frames != 8 else "") + " --write"
    lines = [
        "## mmdet3d models through the adapter (CPU)",
        "",
        f"`{command}` on {platform.machine()} with {torch.get_num_threads()} torch threads, mmdet3d "
        f"{mmdet3d.__version__}, torch {torch.__version__}. {len(frames)} keyframes of one simulated urban scene "
        f"(10-sweep clouds, median {points:,.0f} points), fed with the scene's lidar extrinsic as the pipeline feeds "
        "them; median per keyframe after a warm-up pass. mmdet3d's bundled configs with **random weights** (nothing "
        "can be downloaded here): times only, the boxes mean nothing. Score threshold 0.1. Random weights score "
        "nearly every anchor alike, so the models' own post-processing (NMS over up to their max_num boxes) takes "
        "far longer than with trained weights: read these as upper bounds.",
        "",
        "| detector | ms per keyframe | keyframes/s | detections (timed pass) |",
        "|---|---:|---:|---:|",
        *(f"| {name} | {ms:.0f} | {1000 / ms:.2f} | {found} |" for name, ms, found in rows),
    ]
    body = "\n".join(lines)
    print(body)
    if args.write:
        replace_section(args.out, SECTION, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
