"""Scoring labels against a clip's ground truth.

- nuScenes-format clips (real or simulated): the unmodified devkit's ``DetectionEval`` (mAP, NDS, per-class AP)
  and ``TrackingEval`` (AMOTA, AMOTP, IDS, ...). To score exactly the clip's scenes, the evaluators run on a
  *shadow dataroot*: a temporary folder whose table files are symlinks to the real ones plus a custom
  ``splits.json`` naming the clip's scene (the devkit's custom-split mechanism); the user's data is never
  written.
- Any clip with GT (KITTI included): CLEAR-MOT metrics with 3D IoU matching (motmetrics), KITTI-style.
- The automation rate: the share of GT boxes matched by a label of the same class at 3D IoU >= 0.7
  (cars) / 0.5 (other classes), i.e. boxes a reviewer would accept as they are. Once people have reviewed,
  the store's :func:`autolabel.store.acceptance.clip_acceptance` gives the share of pre-label boxes they
  accepted untouched.

:func:`evaluation_metrics` gathers all of them for one clip (what ``autolabel evaluate`` prints).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from autolabel.categories import Category
from autolabel.datasets.model import Clip, ClipSource, FrameLabels
from autolabel.export.nuscenes import (
    TRACKING_CATEGORIES,
    detection_results,
    link_sensor_folders,
    tracking_results,
    write_results,
)
from calibration import InputError, iou_3d

CUSTOM_SPLIT = "autolabel_clip"
DETECTION_CONFIG = "detection_cvpr_2019"
TRACKING_CONFIG = "tracking_nips_2019"


def automation_iou(category: Category) -> float:
    """3D IoU a label needs with its GT box to count as correct (KITTI's car / other thresholds)."""
    return 0.7 if category is Category.CAR else 0.5


@dataclass(frozen=True)
class AutomationRate:
    """How many GT boxes the labels got right.

    Attributes:
        matched: GT boxes matched by a label of the same class at the class's 3D IoU threshold.
        total: GT boxes.
        per_class: class -> (matched, total).
    """

    matched: int
    total: int
    per_class: dict[str, tuple[int, int]]

    @property
    def rate(self) -> float:
        return self.matched / self.total if self.total else float("nan")


def _matches(gt: FrameLabels, labels: FrameLabels, min_iou: Sequence[float]) -> list[tuple[int, int]]:
    """Same-class GT/label pairs maximising total 3D IoU, each at least its GT's ``min_iou``."""
    if len(gt) == 0 or len(labels) == 0:
        return []
    iou = iou_3d(gt.boxes, labels.boxes)
    same = np.array([[g == p for p in labels.categories] for g in gt.categories])
    eligible = same & (iou >= np.asarray(min_iou)[:, None])
    rows, cols = linear_sum_assignment(np.where(eligible, -iou, 0.0))
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if eligible[r, c]]


def automation_rate(clip: Clip, labels_per_frame: Sequence[FrameLabels]) -> AutomationRate:
    """Share of the clip's GT boxes that a label reproduces well enough to accept untouched."""
    _check_labels(clip, labels_per_frame)
    counts: dict[str, list[int]] = {}
    for frame, labels in zip(clip.frames, labels_per_frame, strict=True):
        gt = frame.gt
        thresholds = [automation_iou(c) for c in gt.categories]
        matched = {r for r, _ in _matches(gt, labels, thresholds)}
        for i, category in enumerate(gt.categories):
            entry = counts.setdefault(category.value, [0, 0])
            entry[0] += i in matched
            entry[1] += 1
    per_class = {k: (v[0], v[1]) for k, v in sorted(counts.items())}
    return AutomationRate(sum(v[0] for v in per_class.values()), sum(v[1] for v in per_class.values()), per_class)


def clear_mot(
    clip: Clip, labels_per_frame: Sequence[FrameLabels], *, min_iou: float = 0.5, categories: Sequence[Category] = ()
) -> dict[str, float]:
    """KITTI-style CLEAR-MOT over the clip: same-class matching at 3D IoU >= ``min_iou``.

    Returns MOTA, MOTP (mean IoU of matches), ID switches, fragmentations, matches, misses, false positives.
    """
    import motmetrics

    _check_labels(clip, labels_per_frame)
    wanted = set(categories)
    acc = motmetrics.MOTAccumulator(auto_id=False)
    gt_ids: dict[str, int] = {}
    pred_ids: dict[str, int] = {}  # motmetrics 1.4 with pandas 2 needs numeric ids
    for frame, labels in zip(clip.frames, labels_per_frame, strict=True):
        gt, pred = frame.gt, labels
        if wanted:
            gt = gt.subset(np.array([c in wanted for c in gt.categories], dtype=bool))
            pred = pred.subset(np.array([c in wanted for c in pred.categories], dtype=bool))
        distance = np.full((len(gt), len(pred)), np.nan)
        if len(gt) and len(pred):
            iou = iou_3d(gt.boxes, pred.boxes)
            same = np.array([[g == p for p in pred.categories] for g in gt.categories])
            distance = np.where(same & (iou >= min_iou), 1.0 - iou, np.nan)
        acc.update(
            [gt_ids.setdefault(t, len(gt_ids)) for t in gt.track_ids],
            [pred_ids.setdefault(t, len(pred_ids)) for t in pred.track_ids],
            distance,
            frameid=frame.index,
        )
    host = motmetrics.metrics.create()
    names = ["mota", "motp", "num_switches", "num_fragmentations", "num_matches", "num_misses", "num_false_positives"]
    summary = host.compute(acc, metrics=names, name="clip")
    row = {name: float(summary[name].iloc[0]) for name in names}
    row["motp_iou"] = 1.0 - row.pop("motp") if np.isfinite(row["motp"]) else float("nan")
    return row


# ------------------------------------------------------------------------------------------ devkit
def _check_labels(clip: Clip, labels_per_frame: Sequence[FrameLabels]) -> None:
    if not clip.has_gt:
        raise InputError(f"clip {clip.name}: no ground truth to evaluate against")
    if len(labels_per_frame) != len(clip):
        raise InputError(f"clip {clip.name}: {len(labels_per_frame)} label sets for {len(clip)} frames")


def _nuscenes_version(clip: Clip) -> str:
    version = clip.meta.get("version")
    if not version:
        raise InputError(f"clip {clip.name}: the nuScenes table version is unknown (clip.meta has no 'version')")
    return version


def shadow_dataroot(dataroot: Path, version: str, scenes: Sequence[str], workdir: Path) -> Path:
    """A folder that reads as ``dataroot`` (symlinked tables and sensor folders) with a custom split
    ``autolabel_clip`` naming ``scenes``; returns its path (inside ``workdir``)."""
    source = Path(dataroot).resolve()
    if not (source / version).is_dir():
        raise InputError(f"{source}: no table folder {version}")
    shadow = Path(workdir) / "dataroot"
    (shadow / version).mkdir(parents=True)
    for table in (source / version).iterdir():
        if table.suffix == ".json" and table.name != "splits.json":
            os.symlink(table, shadow / version / table.name)
    link_sensor_folders(source, shadow)
    (shadow / version / "splits.json").write_text(json.dumps({CUSTOM_SPLIT: list(scenes)}))
    return shadow


@dataclass(frozen=True)
class _DevkitRun:
    """Where one devkit evaluation of a clip runs: the shadow dataroot, the results file, an output folder."""

    version: str
    dataroot: Path
    results: Path
    output: Path


@contextlib.contextmanager
def _devkit_run(clip: Clip, results: dict[str, Any]) -> Iterator[_DevkitRun]:
    """A temporary shadow dataroot of the clip with ``results`` written beside it; devkit prints silenced."""
    version = _nuscenes_version(clip)
    with tempfile.TemporaryDirectory(prefix="autolabel-eval-") as tmp:
        work = Path(tmp)
        run = _DevkitRun(
            version, shadow_dataroot(clip.root, version, [clip.name], work), work / "results.json", work / "out"
        )
        write_results(run.results, results)
        with contextlib.redirect_stdout(io.StringIO()):
            yield run


def evaluation_metrics(clip: Clip, labels_per_frame: Sequence[FrameLabels]) -> dict[str, Any]:
    """Every metric that applies to the clip: automation rate, CLEAR-MOT at 3D IoU, and for nuScenes clips the
    devkit's detection (and, with more than one keyframe, tracking) metrics."""
    rate = automation_rate(clip, labels_per_frame)
    metrics: dict[str, Any] = {
        "clip": clip.name,
        "automation_rate": rate.rate,
        "automation_matched": rate.matched,
        "automation_total": rate.total,
        "automation_per_class": {k: {"matched": m, "total": t} for k, (m, t) in rate.per_class.items()},
        "clear_mot_iou": clear_mot(clip, labels_per_frame),
    }
    if clip.source is ClipSource.NUSCENES:
        metrics["detection"] = nuscenes_detection_metrics(clip, labels_per_frame)
        if len(clip) > 1:
            metrics["tracking"] = nuscenes_tracking_metrics(clip, labels_per_frame)
    return metrics


def nuscenes_detection_metrics(clip: Clip, labels_per_frame: Sequence[FrameLabels]) -> dict[str, Any]:
    """The devkit's ``DetectionEval`` on the clip's keyframes: mAP, NDS, per-class AP and TP errors."""
    from nuscenes import NuScenes
    from nuscenes.eval.common.config import config_factory
    from nuscenes.eval.detection.evaluate import DetectionEval

    _check_nuscenes(clip, labels_per_frame)
    if not any(c is not Category.OTHER for labels in labels_per_frame for c in labels.categories):
        return {"mAP": 0.0, "NDS": 0.0, "per_class_AP": {}, "tp_errors": {}, "note": "no labels to score"}
    with _devkit_run(clip, detection_results(clip, labels_per_frame)) as run:
        nusc = NuScenes(version=run.version, dataroot=str(run.dataroot), verbose=False)
        config = config_factory(DETECTION_CONFIG)
        evaluator = DetectionEval(nusc, config, str(run.results), CUSTOM_SPLIT, str(run.output), False)
        metrics, _ = evaluator.evaluate()
    summary = metrics.serialize()
    return {
        "mAP": summary["mean_ap"],
        "NDS": summary["nd_score"],
        "per_class_AP": summary["mean_dist_aps"],
        "tp_errors": summary["tp_errors"],
    }


def nuscenes_tracking_metrics(clip: Clip, labels_per_frame: Sequence[FrameLabels]) -> dict[str, Any]:
    """The devkit's ``TrackingEval`` on the clip: AMOTA, AMOTP, MOTA, IDS, FRAG, per-class AMOTA."""
    from nuscenes.eval.common.config import config_factory
    from nuscenes.eval.tracking.evaluate import TrackingEval

    _check_nuscenes(clip, labels_per_frame)
    if not any(c in TRACKING_CATEGORIES for labels in labels_per_frame for c in labels.categories):
        return {"amota": 0.0, "amotp": float("nan"), "ids": 0, "per_class_amota": {}, "note": "no tracks to score"}
    with _devkit_run(clip, tracking_results(clip, labels_per_frame)) as run:
        config = config_factory(TRACKING_CONFIG)
        evaluator = TrackingEval(
            config, str(run.results), CUSTOM_SPLIT, str(run.output), run.version, str(run.dataroot), verbose=False
        )
        summary = evaluator.main(render_curves=False)
    keys = ("amota", "amotp", "mota", "motp", "ids", "frag", "recall", "tp", "fp", "fn")
    return {
        **{key: summary[key] for key in keys if key in summary},
        "per_class_amota": summary["label_metrics"]["amota"],
    }


def _check_nuscenes(clip: Clip, labels_per_frame: Sequence[FrameLabels]) -> None:
    if clip.source is not ClipSource.NUSCENES:
        raise InputError(f"clip {clip.name}: the nuScenes evaluators need a nuScenes clip, got {clip.source.value}")
    _check_labels(clip, labels_per_frame)
