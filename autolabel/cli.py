"""The ``autolabel`` command line.

Every bad input surfaces as one line on stderr and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from importlib import metadata
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from autolabel.datasets.model import Clip, ClipSummary
from autolabel.settings import DeviceChoice, Settings, resolve_device
from autolabel.sim.scenario import Profile
from calibration import AutolabelError, InputError

EXIT_INPUT_ERROR = 2
EXIT_INTERRUPTED = 130
DEMO_NUSCENES = ("nuscenes_real_one_sample", "scene-0061")
DEMO_KITTI = ("kitti_raw_clip", "0000")
REPORTED_PACKAGES = (
    "autolabel",
    "numpy",
    "scipy",
    "torch",
    "numba",
    "opencv-python-headless",
    "open3d",
    "nuscenes-devkit",
    "zarr",
    "fastapi",
    "pydantic",
)


def _add_source_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("clip source (one of)")
    group.add_argument("--nuscenes", type=Path, metavar="DATAROOT", help="nuScenes dataroot (v1.0-* tables)")
    group.add_argument("--scene", help="nuScenes scene name, e.g. scene-0061")
    group.add_argument("--version", help="nuScenes table folder (default: the only v1.0-* present)")
    group.add_argument("--kitti", type=Path, metavar="ROOT", help="KITTI tracking root (training/ or its parent)")
    group.add_argument("--seq", help="KITTI sequence, e.g. 0000")


def _add_pipeline_options(parser: argparse.ArgumentParser) -> None:
    from autolabel.detect import DETECTORS

    parser.add_argument(
        "--device",
        choices=[d.value for d in DeviceChoice],
        default=None,
        help="compute device (default: AUTOLABEL_DEVICE or auto)",
    )
    parser.add_argument("--detector", choices=sorted(DETECTORS), default="geometric")
    model = parser.add_argument_group("mmdet3d model (--detector mmdet3d; needs the mmdet3d extra)")
    model.add_argument("--config", type=Path, metavar="CFG", help="mmdet3d config file")
    model.add_argument("--checkpoint", type=Path, metavar="CKPT", help="its checkpoint (.pth)")
    model.add_argument(
        "--score-threshold", type=float, default=0.05, help="drop the model's detections below (default 0.05)"
    )
    model.add_argument(
        "--intensity-scale",
        type=float,
        default=1.0,
        help="multiply intensities by this before the model (when it was trained on another scale)",
    )
    parser.add_argument("--mode", choices=["offboard", "online"], default="offboard", help="tracking mode")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autolabel", description="Offboard 4D/BEV auto-labeling of lidar+camera clips."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = sub.add_parser("info", help="summarise a clip, or show the installation and settings")
    _add_source_options(info)
    info.add_argument("--json", action="store_true", help="print the summary as JSON")

    sim = sub.add_parser("simulate", help="generate synthetic drives with exact ground truth as a nuScenes dataroot")
    sim.add_argument("--out", type=Path, required=True, metavar="DATAROOT", help="new dataroot folder")
    sim.add_argument("--scenes", type=int, default=1, help="number of sites (default 1)")
    sim.add_argument(
        "--trips", type=int, default=1, help="drives through each site (default 1); scenes = sites x trips"
    )
    sim.add_argument("--seconds", type=float, default=20.0, help="length of each scene (default 20)")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--profile", choices=[p.value for p in Profile], default=Profile.URBAN.value)
    sim.add_argument(
        "--perturb-extrinsics", metavar="DEG,CM", help="write camera extrinsics off by DEG degrees and CM cm"
    )
    sim.add_argument("--time-offset-ms", type=float, default=0.0, help="write camera timestamps off by this much")
    sim.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")

    fuse = sub.add_parser("fuse", help="build a clip's 4D fusion artifacts (world sweeps, paint, BEV) in the workspace")
    _add_source_options(fuse)
    fuse.add_argument(
        "--device",
        choices=[d.value for d in DeviceChoice],
        default=None,
        help="compute device (default: AUTOLABEL_DEVICE or auto)",
    )
    fuse.add_argument("--sweeps", type=int, default=10, help="sweeps per keyframe cloud (default 10)")
    fuse.add_argument("--qa-frames", type=int, default=4, help="keyframes used by the calibration QA (default 4)")
    fuse.add_argument("--no-qa", action="store_true", help="skip the calibration QA")
    fuse.add_argument(
        "--odometry", action="store_true", help="estimate poses with lidar odometry even when the clip has them"
    )

    run = sub.add_parser("run", help="run the whole pipeline on one clip and store its pre-labels")
    _add_source_options(run)
    _add_pipeline_options(run)
    run.add_argument(
        "--workers", type=int, default=None, help="processes for detection and refinement (default: one per core)"
    )
    run.add_argument("--json", action="store_true", help="print the run summary as JSON")

    batch = sub.add_parser("batch", help="run the pipeline over many clips (local processes or a Ray cluster)")
    batch.add_argument("--nuscenes", nargs="+", metavar="DATAROOT", help="nuScenes dataroots (globs allowed)")
    batch.add_argument("--scenes", help="comma-separated scene names (default: every scene)")
    batch.add_argument("--version", help="nuScenes table folder (default: the only v1.0-* present)")
    batch.add_argument("--kitti", nargs="+", metavar="ROOT", help="KITTI tracking roots (globs allowed)")
    batch.add_argument("--seqs", help="comma-separated sequences (default: every sequence)")
    batch.add_argument("--executor", choices=["local", "ray"], default="local")
    batch.add_argument("--address", help="Ray cluster address (default: start a local Ray instance)")
    batch.add_argument("--workers", type=int, default=None, help="local worker processes (default: CPU count)")
    batch.add_argument("--resume", action="store_true", help="skip clips already done with the same parameters")
    batch.add_argument("--json", action="store_true", help="print the per-clip results as JSON")
    _add_pipeline_options(batch)

    evaluate = sub.add_parser("evaluate", help="score a clip's stored labels against its ground truth")
    _add_source_options(evaluate)
    evaluate.add_argument("--json", action="store_true", help="print the metrics as JSON")

    export = sub.add_parser("export", help="export a clip's stored labels (nuScenes, KITTI or OpenLABEL)")
    _add_source_options(export)
    export.add_argument("--format", choices=["nuscenes", "kitti", "openlabel"], required=True)
    export.add_argument("--out", type=Path, required=True, help="output folder (nuscenes) or file (kitti, openlabel)")
    export.add_argument("--signed-off-only", action="store_true", help="refuse unless the clip is signed off")
    export.add_argument(
        "--in-image-only", action="store_true", help="KITTI: only objects whose box projects into image_02"
    )

    track = sub.add_parser(
        "track", help="track a detector's output: KITTI tracking-format files or a nuScenes detection JSON"
    )
    track.add_argument("--kitti", type=Path, metavar="ROOT", help="KITTI tracking root (calib, poses/oxts, velodyne)")
    track.add_argument("--seqs", help="comma-separated KITTI sequences (default: every sequence)")
    track.add_argument("--nuscenes", type=Path, metavar="DATAROOT", help="nuScenes dataroot of the detections")
    track.add_argument("--scenes", help="comma-separated nuScenes scenes (default: every scene)")
    track.add_argument("--version", help="nuScenes table folder (default: the only v1.0-* present)")
    track.add_argument(
        "--detections", type=Path, required=True, help="KITTI: folder of SEQ.txt files; nuScenes: results JSON"
    )
    track.add_argument(
        "--out", type=Path, required=True, help="KITTI: folder for label_02 SEQ.txt; nuScenes: results JSON"
    )
    track.add_argument("--mode", choices=["offboard", "online"], default="offboard", help="tracking mode")

    demo = sub.add_parser("demo", help="read the bundled real fixtures (nuScenes + KITTI) and summarise them")
    demo.add_argument("--data", type=Path, default=None, help="fixture folder (default: AUTOLABEL_SHARED_DATA)")
    demo.add_argument("--no-sim", action="store_true", help="skip the simulated clip")
    demo.add_argument("--no-real", action="store_true", help="skip the real fixtures")
    return parser


def load_clip(args: argparse.Namespace) -> Clip | None:
    """The clip named by the source options (see :func:`clip_spec`), or ``None`` when none was given."""
    if args.nuscenes is None and args.kitti is None:
        if args.scene or args.seq:
            raise InputError("--scene/--seq need a dataset root (--nuscenes DATAROOT or --kitti ROOT)")
        return None
    return clip_spec(args).load()


def summary_table(clip: Clip, summary: ClipSummary) -> Table:
    table = Table(title=f"clip {summary.name} ({summary.source.value})", show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value")
    table.add_row("root", str(clip.root))
    table.add_row(
        "frames",
        f"{summary.num_frames} over {summary.duration_s:.2f} s"
        + (" (timestamps from frame rate)" if clip.timestamps_synthetic else ""),
    )
    table.add_row("lidar sweeps", f"{summary.num_sweeps} ({', '.join(clip.rig.lidars)})")
    table.add_row("points", f"{summary.num_points:,} ({summary.mean_points_per_sweep:,.0f} per sweep)")
    cams = ", ".join(f"{n} {c.width_px}x{c.height_px}" for n, c in clip.rig.cameras.items())
    table.add_row("cameras", f"{len(summary.cameras)}: {cams}")
    table.add_row("images", str(summary.num_images))
    poses = f"yes, path {summary.path_length_m:.1f} m" if summary.has_poses else "missing (to be estimated)"
    table.add_row("ego poses", poses)
    if summary.num_gt_boxes is None:
        table.add_row("ground truth", "none")
    else:
        counts = Counter(c.value for f in clip.frames for c in f.gt.categories)
        per_class = ", ".join(f"{name} {n}" for name, n in counts.most_common())
        table.add_row("ground truth", f"{summary.num_gt_boxes} boxes, {summary.num_gt_tracks} tracks ({per_class})")
    return table


def _installation_table(settings: Settings) -> Table:
    table = Table(title="autolabel installation", show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value")
    for name in REPORTED_PACKAGES:
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            version = "not installed"
        table.add_row(name, version)
    table.add_row("device", f"{settings.device.value} -> {resolve_device(settings.device)}")
    table.add_row("workspace", str(settings.home.resolve()))
    table.add_row(
        "shared data", f"{settings.shared_data.resolve()}" + ("" if settings.shared_data.is_dir() else " (absent)")
    )
    return table


def cmd_info(args: argparse.Namespace, console: Console, settings: Settings) -> int:
    clip = load_clip(args)
    if clip is None:
        console.print(_installation_table(settings))
        return 0
    summary = clip.summary()
    fusion = _fusion_status(settings, clip)
    if args.json:
        print(json.dumps({**asdict(summary), "fusion": fusion}, default=str, indent=2))
    else:
        table = summary_table(clip, summary)
        table.add_row(
            "fusion",
            fusion.get("status", "")
            if "path" not in fusion
            else f"{fusion['status']} ({fusion['path']}){_qa_text(fusion)}",
        )
        console.print(table)
        if fusion.get("qa"):
            console.print(qa_table(fusion["qa"]))
    return 0


def _fusion_status(settings: Settings, clip: Clip) -> dict:
    """What the workspace holds for this clip: artifact path, odometry and calibration QA results."""
    from autolabel.artifacts import artifact_path, open_artifacts

    path = artifact_path(settings.home, clip)
    if not path.exists():
        return {"status": "not fused (run `autolabel fuse`)"}
    try:
        manifest = open_artifacts(path).manifest
    except InputError as exc:
        return {"status": f"unusable: {exc}", "path": str(path)}
    return {"status": "fused", "path": str(path), "odometry": manifest.get("odometry"), "qa": manifest.get("qa")}


def _qa_text(fusion: dict) -> str:
    parts = []
    if fusion.get("odometry"):
        odo = fusion["odometry"]
        parts.append(f"odometry: {odo.get('degraded_steps', 0)} degraded steps")
    if fusion.get("qa"):
        flagged = [c for c, v in fusion["qa"].get("cameras", {}).items() if v.get("flagged")]
        if fusion["qa"].get("time", {}).get("flagged"):
            flagged.append("camera clock")
        parts.append("calibration QA: " + (f"flagged {', '.join(flagged)}" if flagged else "ok"))
    return "; " + "; ".join(parts) if parts else ""


def cmd_fuse(args: argparse.Namespace, console: Console, settings: Settings) -> int:
    from autolabel.fuse import FuseConfig
    from autolabel.fusion_stage import FusionStageConfig, run_fusion_stage
    from autolabel.qa import QAConfig

    clip = load_clip(args)
    if clip is None:
        raise InputError("fuse needs a clip source: --nuscenes DATAROOT --scene NAME or --kitti ROOT --seq SEQ")
    device = resolve_device(args.device or settings.device)
    config = FusionStageConfig(
        fuse=FuseConfig(sweeps_per_keyframe=args.sweeps),
        qa=None if args.no_qa else QAConfig(max_frames=args.qa_frames),
        recompute_poses=args.odometry,
    )
    with progress_bar(console) as bar:
        task = bar.add_task(f"{clip.name} on {device}", total=None)

        def progress(step: str, done: int, total: int | None) -> None:
            bar.update(task, description=f"{clip.name}: {step} on {device}", completed=done, total=total)

        result = run_fusion_stage(clip, settings.home, device, config, progress)
    painted = float(np.mean(np.concatenate(result.fused.sweep_view) >= 0))
    console.print(
        f"wrote {result.path}: {len(result.fused.sweep_points)} sweeps, {len(clip)} keyframes, "
        f"{painted:.0%} of points painted"
    )
    if result.odometry is not None:
        odo = result.odometry
        console.print(
            f"poses from lidar odometry: {len(odo)} steps, {int(odo.degraded.sum())} degraded, "
            f"median ICP fitness {np.median(odo.fitness[1:]) if len(odo) > 1 else 1.0:.2f}"
        )
        for line in odo.warnings[:5]:
            console.print(f"[yellow]odometry warning[/]: {line}")
    if result.qa is not None:
        console.print(qa_table(result.qa.as_dict()))
    return 0


def qa_table(qa: dict) -> Table:
    """Calibration QA as a table: one row per camera, then the time check."""
    table = Table(title="calibration QA" + (" [red]FLAGGED[/]" if qa["flagged"] else ""))
    for column in ("camera", "score", "best neighbour", "confidence", "frames", "verdict"):
        table.add_column(column)
    for name, cam in qa["cameras"].items():
        gain = cam["best_neighbour_score"] / cam["score"] - 1.0 if cam["score"] else float("nan")
        table.add_row(
            name,
            f"{cam['score']:.3f}",
            f"{cam['best_delta']} ({gain:+.3f})",
            f"{cam['confidence']:.2f}",
            str(cam["frames_used"]),
            "[red]extrinsics look off[/]" if cam["flagged"] else "ok",
        )
    time = qa["time"]
    if "skipped" in time:
        table.add_row("time offset", "", "", "", "", f"skipped: {time['skipped']}")
    else:
        verdict = "[red]clock looks off[/]" if time["flagged"] else "ok"
        table.add_row(
            "time offset", "", f"best {time['best_offset_s'] * 1000:+.1f} ms", "", str(time["frames_used"]), verdict
        )
    return table


def _pipeline_config(args: argparse.Namespace, settings: Settings):  # -> PipelineConfig
    from autolabel.detect import Mmdet3dConfig
    from autolabel.pipeline import PipelineConfig
    from tracking import TrackingMode

    detector_config = None
    if args.detector == "mmdet3d":
        if args.config is None or args.checkpoint is None:
            raise InputError("--detector mmdet3d needs --config CFG and --checkpoint CKPT")
        detector_config = Mmdet3dConfig.from_files(
            args.config,
            args.checkpoint,
            device=str(resolve_device(args.device or settings.device)),
            score_threshold=args.score_threshold,
            intensity_scale=args.intensity_scale,
        )
    elif args.config is not None or args.checkpoint is not None:
        raise InputError("--config and --checkpoint are for --detector mmdet3d")
    return PipelineConfig(
        detector=args.detector, detector_config=detector_config, tracking_mode=TrackingMode(args.mode)
    )


def clip_spec(args: argparse.Namespace):  # -> ClipSpec
    """The clip named by the source options as a pipeline :class:`ClipSpec`."""
    from autolabel.datasets.model import ClipSource
    from autolabel.pipeline import ClipSpec

    if (args.nuscenes is None) == (args.kitti is None):
        raise InputError("give one clip source: --nuscenes DATAROOT --scene NAME or --kitti ROOT --seq SEQ")
    if args.nuscenes is not None:
        if not args.scene:
            raise InputError("--nuscenes needs --scene NAME")
        return ClipSpec(ClipSource.NUSCENES, args.nuscenes, args.scene, args.version)
    if not args.seq:
        raise InputError("--kitti needs --seq SEQ")
    return ClipSpec(ClipSource.KITTI, args.kitti, args.seq)


def stage_table(summary) -> Table:  # summary: RunSummary
    table = Table(title=f"{summary.source} {summary.clip}: run {summary.run_id}", title_justify="left")
    for column in ("stage", "seconds", "cached", "detail"):
        table.add_column(column)
    for report in summary.stages:
        table.add_row(report.stage.value, f"{report.seconds:.2f}", "yes" if report.cached else "", report.detail)
    table.add_row("total", f"{summary.seconds:.2f}", "", f"{summary.tracks} tracks, {summary.boxes} boxes")
    return table


def _run_with_progress(
    spec, settings: Settings, store, device, config, console: Console, workers: int | None = None
):  # -> RunSummary
    """:func:`autolabel.pipeline.run_clip` with a progress bar naming the stage; ``workers`` processes
    (default one per core)."""
    from autolabel.parallel import available_cores
    from autolabel.pipeline import run_clip

    with progress_bar(console) as bar:
        task = bar.add_task(spec.name, total=None)

        def progress(step: str, done: int, total: int | None) -> None:
            bar.update(task, description=f"{spec.name}: {step}", completed=done, total=total)

        return run_clip(spec, settings.home, store, device, config, progress, workers or available_cores())


def cmd_run(args: argparse.Namespace, console: Console, settings: Settings) -> int:
    from autolabel.store import open_store

    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers must be at least 1, got {args.workers}")
    spec = clip_spec(args)
    config = _pipeline_config(args, settings)
    device = resolve_device(args.device or settings.device)
    with open_store(settings.database_url, settings=settings) as store:
        summary = _run_with_progress(spec, settings, store, device, config, console, args.workers)
    if args.json:
        print(json.dumps(summary.as_dict(), indent=2))
    else:
        console.print(stage_table(summary))
    return 0


def cmd_batch(args: argparse.Namespace, console: Console, settings: Settings) -> int:
    from autolabel.batch import Executor, Outcome, discover_clips, run_batch
    from autolabel.datasets.model import ClipSource

    specs = []
    if args.nuscenes:
        names = args.scenes.split(",") if args.scenes else []
        specs += discover_clips(ClipSource.NUSCENES, args.nuscenes, names, version=args.version)
    if args.kitti:
        specs += discover_clips(ClipSource.KITTI, args.kitti, args.seqs.split(",") if args.seqs else [])
    if not specs:
        raise InputError("batch needs clips: --nuscenes DATAROOT... [--scenes] and/or --kitti ROOT... [--seqs]")
    with progress_bar(console) as bar:
        task = bar.add_task(f"{len(specs)} clips ({args.executor})", total=len(specs))
        results = run_batch(
            specs,
            settings,
            _pipeline_config(args, settings),
            executor=Executor(args.executor),
            workers=args.workers,
            resume=args.resume,
            ray_address=args.address,
            on_result=lambda result: bar.advance(task),
        )
    failed = [r for r in results if r.outcome is Outcome.FAILED]
    if args.json:
        print(json.dumps([r.as_dict() for r in results], indent=2))
    else:
        table = Table(title=f"batch: {len(results)} clips, {len(failed)} failed", title_justify="left")
        for column in ("clip", "root", "outcome", "seconds", "tracks", "error"):
            table.add_column(column)
        for r in results:
            table.add_row(
                r.spec.name,
                str(r.spec.root),
                r.outcome.value,
                f"{r.summary.seconds:.1f}" if r.summary else "",
                str(r.summary.tracks) if r.summary else "",
                r.error.splitlines()[0] if r.error else "",
            )
        console.print(table)
    for r in failed:
        print(f"autolabel: clip {r.spec.name} ({r.spec.root}) failed: {r.error.splitlines()[0]}", file=sys.stderr)
    return 1 if failed else 0


def _stored_labels(clip: Clip, settings: Settings, *, signed_off_only: bool = False):  # -> list[FrameLabels]
    from autolabel.labels import stored_frame_labels
    from autolabel.store import ClipKey, open_store

    with open_store(settings.database_url, settings=settings) as store:
        labels = store.current_labels(ClipKey(clip.source.value, clip.name), signed_off_only=signed_off_only)
    frame_labels = stored_frame_labels(labels)
    if len(frame_labels) != len(clip):
        raise InputError(f"clip {clip.name}: the store has {len(frame_labels)} frames, the clip {len(clip)}")
    return frame_labels


def cmd_evaluate(args: argparse.Namespace, console: Console, settings: Settings) -> int:
    from autolabel.evaluate import evaluation_metrics
    from autolabel.store import ClipKey, open_store

    clip = load_clip(args)
    if clip is None:
        raise InputError("evaluate needs a clip source: --nuscenes DATAROOT --scene NAME or --kitti ROOT --seq SEQ")
    if not clip.has_gt:
        raise InputError(f"clip {clip.name}: no ground truth to evaluate against")
    labels = _stored_labels(clip, settings)
    with open_store(settings.database_url, settings=settings) as store:
        acceptance = store.acceptance(ClipKey(clip.source.value, clip.name))
    metrics = {**evaluation_metrics(clip, labels), "acceptance": acceptance.as_dict()}
    if args.json:
        print(json.dumps(metrics, indent=2, default=float))
    else:
        console.print(evaluation_table(metrics))
    return 0


def cmd_export(args: argparse.Namespace, console: Console, settings: Settings) -> int:
    clip = load_clip(args)
    if clip is None:
        raise InputError("export needs a clip source: --nuscenes DATAROOT --scene NAME or --kitti ROOT --seq SEQ")
    labels = _stored_labels(clip, settings, signed_off_only=args.signed_off_only)
    if args.format == "openlabel":
        from autolabel.export.openlabel import write_openlabel

        write_openlabel(args.out, clip, labels)
    elif args.format == "kitti":
        from autolabel.export.kitti import write_kitti_labels

        write_kitti_labels(args.out, clip, labels, in_image_only=args.in_image_only)
    else:
        from autolabel.export.nuscenes import export_dataroot

        export_dataroot(args.out, clip, labels)
    console.print(f"wrote {args.format} labels of {clip.name} ({sum(len(f) for f in labels)} boxes) to {args.out}")
    return 0


def cmd_track(args: argparse.Namespace, console: Console, settings: Settings) -> int:
    from autolabel.track_given import (
        nuscenes_frame_detections,
        read_nuscenes_detections,
        track_detections,
        track_kitti_sequence,
    )
    from tracking import TrackerConfig, TrackingMode

    if (args.kitti is None) == (args.nuscenes is None):
        raise InputError("track needs one dataset: --kitti ROOT [--seqs] or --nuscenes DATAROOT [--scenes]")
    mode, config = TrackingMode(args.mode), TrackerConfig()
    table = Table(title=f"tracking given detections ({mode.value})", title_justify="left")
    for column in ("clip", "frames", "detections", "tracks", "notes"):
        table.add_column(column)
    if args.kitti is not None:
        from autolabel.datasets.kitti import list_sequences
        from autolabel.export.kitti import write_kitti_labels

        seqs = args.seqs.split(",") if args.seqs else list_sequences(args.kitti)
        for seq in seqs:
            seq_file = args.detections / f"{seq.zfill(4) if seq.isdigit() else seq}.txt"
            result = track_kitti_sequence(args.kitti, seq, seq_file, config, mode)
            write_kitti_labels(args.out / seq_file.name, result.clip, result.labels, include_score=True)
            boxes = sum(len(f) for f in result.labels)
            table.add_row(
                result.clip.name, str(len(result.clip)), str(boxes), str(result.tracks), "; ".join(result.notes)
            )
    else:
        from autolabel.datasets.nuscenes import list_scenes, load_nuscenes_clip
        from autolabel.export.nuscenes import tracking_results, write_results

        results = read_nuscenes_detections(args.detections)
        merged: dict = {"meta": None, "results": {}}
        scenes = args.scenes.split(",") if args.scenes else list_scenes(args.nuscenes, args.version)
        for scene in scenes:
            clip = load_nuscenes_clip(args.nuscenes, scene, version=args.version)
            detections = nuscenes_frame_detections(clip, results)
            labels, count = track_detections(clip, detections, config, mode)
            scene_results = tracking_results(clip, labels)
            merged["meta"] = scene_results["meta"]
            merged["results"].update(scene_results["results"])
            table.add_row(scene, str(len(clip)), str(sum(len(d) for d in detections)), str(count), "")
        write_results(args.out, merged)
    console.print(table)
    console.print(f"wrote {args.out}")
    return 0


DEMO_SIM_SECONDS = 4.0


def evaluation_table(metrics: dict) -> Table:
    """The table of :func:`autolabel.evaluate.evaluation_metrics` (plus ``acceptance`` where present)."""
    table = Table(title=f"evaluation of {metrics['clip']} (stored labels vs ground truth)", title_justify="left")
    table.add_column("metric")
    table.add_column("value")
    if "detection" in metrics:
        detection = metrics["detection"]
        table.add_row("devkit mAP / NDS", f"{detection['mAP']:.3f} / {detection['NDS']:.3f}")
        table.add_row("  AP per class", ", ".join(f"{k} {v:.2f}" for k, v in detection["per_class_AP"].items()))
    if "tracking" in metrics:
        tracking = metrics["tracking"]
        table.add_row("devkit AMOTA / AMOTP", f"{tracking['amota']:.3f} / {tracking['amotp']:.3f}")
        table.add_row("  ID switches", str(int(tracking["ids"])))
    mot = metrics["clear_mot_iou"]
    table.add_row("MOTA (3D IoU >= 0.5)", f"{mot['mota']:.3f}")
    table.add_row("  ID switches / fragmentations", f"{int(mot['num_switches'])} / {int(mot['num_fragmentations'])}")
    table.add_row(
        "automation rate (IoU 0.7 car / 0.5 other)",
        f"{metrics['automation_matched']}/{metrics['automation_total']} = {metrics['automation_rate']:.3f}",
    )
    acceptance = metrics.get("acceptance")
    if acceptance and acceptance["decided"]:
        table.add_row(
            "pre-labels accepted untouched",
            f"{acceptance['accepted_untouched']}/{acceptance['decided']} = {acceptance['rate']:.3f} "
            f"(edited {acceptance['edited']}, deleted {acceptance['deleted']}, rejected {acceptance['rejected']}, "
            f"added {acceptance['added']}, pending {acceptance['pending']})",
        )
    elif acceptance:
        table.add_row("pre-labels accepted untouched", f"no review decisions yet ({acceptance['pending']} pending)")
    return table


def cmd_demo(args: argparse.Namespace, console: Console, settings: Settings) -> int:
    """The main job end to end: a simulated clip and the real fixtures through the whole pipeline."""
    from autolabel.datasets.model import ClipSource
    from autolabel.evaluate import evaluation_metrics
    from autolabel.pipeline import ClipSpec, PipelineConfig
    from autolabel.store import open_store

    data = args.data or settings.shared_data
    if args.data is not None and not data.is_dir():
        raise InputError(f"{data}: fixture folder not found (set AUTOLABEL_SHARED_DATA or pass --data)")
    device = resolve_device(settings.device)
    runs: list[tuple[ClipSpec, Settings]] = []
    if not args.no_sim:
        from autolabel.sim.dataroot import SimConfig, simulate_dataroot

        root = Path(settings.home) / "demo" / f"sim-urban-{DEMO_SIM_SECONDS:g}s"
        if not root.is_dir():
            with progress_bar(console) as bar:
                task = bar.add_task("simulating a short urban scene", total=None)
                simulate_dataroot(
                    root,
                    SimConfig(seconds=DEMO_SIM_SECONDS, seed=0),
                    progress=lambda done, total: bar.update(task, completed=done, total=total),
                )
        # The simulator names its scenes after official nuScenes ones (scene-0061, like the real sample), so the
        # simulated clip gets a workspace (label store and artifacts) of its own: two clips never share a name.
        sim_settings = settings.model_copy(update={"home": root.parent / "sim-workspace", "database_url": None})
        runs.append((ClipSpec(ClipSource.NUSCENES, root, "scene-0061"), sim_settings))
    if not args.no_real:
        if data.is_dir():
            runs.append((ClipSpec(ClipSource.NUSCENES, data / DEMO_NUSCENES[0], DEMO_NUSCENES[1]), settings))
            runs.append((ClipSpec(ClipSource.KITTI, data / DEMO_KITTI[0], DEMO_KITTI[1]), settings))
        else:
            console.print(f"[yellow]{data}: no real fixtures here; only the simulated clip runs[/]")
    for spec, run_settings in runs:
        with open_store(run_settings.database_url, settings=run_settings) as store:
            clip = spec.load()
            console.print(summary_table(clip, clip.summary()))
            summary = _run_with_progress(spec, run_settings, store, device, PipelineConfig(), console)
            console.print(stage_table(summary))
            if clip.has_gt:
                console.print(evaluation_table(evaluation_metrics(clip, _stored_labels(clip, run_settings))))
    stores = dict.fromkeys(s.database_url or str(Path(s.home) / "labels.db") for _, s in runs)
    console.print(
        f"labels are in {' and '.join(stores) or 'no store (nothing ran)'}; next: "
        "`autolabel evaluate ...`, `autolabel export --format nuscenes|kitti|openlabel ...` "
        "(the review viewer is not built yet)"
    )
    return 0


def progress_bar(console: Console) -> Progress:
    """The progress bar of long commands: description, bar, done/total, elapsed and remaining time."""
    columns = (
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    return Progress(*columns, console=console, transient=True)


def parse_perturbation(text: str | None) -> tuple[float, float]:
    """``"DEG,CM"`` -> (degrees, centimetres); ``None`` -> no perturbation."""
    if text is None:
        return 0.0, 0.0
    try:
        deg, cm = (float(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"--perturb-extrinsics expects DEG,CM (for example 1,5), got {text!r}") from None
    return deg, cm


def cmd_simulate(args: argparse.Namespace, console: Console, settings: Settings) -> int:
    from autolabel.sim.dataroot import SimConfig, simulate_dataroot

    deg, cm = parse_perturbation(args.perturb_extrinsics)
    config = SimConfig(
        scenes=args.scenes,
        seconds=args.seconds,
        seed=args.seed,
        profile=Profile(args.profile),
        trips=args.trips,
        perturb_extrinsics_deg=deg,
        perturb_extrinsics_cm=cm,
        time_offset_ms=args.time_offset_ms,
    )
    with progress_bar(console) as bar:
        task = bar.add_task("simulating sensor frames", total=None)
        result = simulate_dataroot(
            args.out,
            config,
            overwrite=args.overwrite,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    console.print(
        f"wrote {result.dataroot} ({result.version}): scenes {', '.join(result.scenes)}; {result.samples} samples, "
        f"{result.sweeps} lidar sweeps, {result.images} images, {result.annotations} annotations"
    )
    return 0


COMMANDS = {
    "info": cmd_info,
    "demo": cmd_demo,
    "simulate": cmd_simulate,
    "fuse": cmd_fuse,
    "run": cmd_run,
    "batch": cmd_batch,
    "evaluate": cmd_evaluate,
    "export": cmd_export,
    "track": cmd_track,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console()
    try:
        settings = Settings()
        return COMMANDS[args.command](args, console, settings)
    except AutolabelError as exc:
        print(f"autolabel: error: {exc}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except KeyboardInterrupt:
        print("autolabel: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
