"""Train the geometric detector's learned class and score models on simulator output; writes
``autolabel/detect/learned_model.npz``.

    python scripts/train_detect_scores.py [--scenes 3] [--seconds 6] [--seed 1] [--cache /tmp/autolabel-bench-detect]

The training suite is simulated and fused exactly as ``scripts/bench_detect.py`` does it (same cache), but from
another seed (1; the benchmark scores seed 0), so the benchmark's scenes are never trained on. Two steps:

1. Class model (:class:`autolabel.detect.learned.ClassModel`): every cluster that reaches classification (hand
   rules, ``learned=False``) is labelled with the class of the GT box holding most of its points (the points moved
   to the keyframe time with that box's velocity; a box grown by ``--margin``), or "none" where no box holds half of
   them. Gradient-boosted trees (scikit-learn's ``GradientBoostingClassifier``, ``--rounds`` of ``--depth``-deep
   trees per output, rows weighted towards class balance by ``--balance``) are fitted and exported to plain arrays
   (the detector evaluates them with a numba kernel; scikit-learn is needed only here).
2. Score model (:class:`autolabel.detect.learned.ScoreModel`): every detection of the detector with that class model
   (hand-set scores, no score threshold) is labelled with the share of the devkit's four centre-distance
   thresholds (0.5, 1, 2, 4 m) at which the devkit's matching counts it a true positive: per class, detections in
   score order take the nearest untaken GT box of their class within the threshold, GT boxes filtered as the devkit
   filters them (at least one lidar point, within the class range), detections beyond the class range left out.
   Per class a logistic regression on the soft labels (Newton's method), pulled (``--shrink``, in detections)
   towards a shared model fitted on all classes at once with one intercept per class, so classes with few
   detections lean on the shared one.

Held-out figures (each fold of scenes scored by models trained on the other folds, ``--folds``) are printed and
stored in the file's ``meta``. The whole run is deterministic.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autolabel.categories import Category  # noqa: E402
from autolabel.datasets.model import Frame, FrameLabels  # noqa: E402
from autolabel.detect import DetectorInput, GeometricConfig, GeometricResult, detect_geometric  # noqa: E402
from autolabel.detect.classify import CLASSES  # noqa: E402
from autolabel.detect.geometric import cloud_sweeps  # noqa: E402
from autolabel.detect.learned import (  # noqa: E402
    MODEL_PATH,
    OUTPUTS,
    SCORE_FEATURES,
    ClassModel,
    LearnedModel,
    ScoreModel,
    TreeEnsemble,
    load_model,
)
from autolabel.sim.scenario import Profile  # noqa: E402
from scripts.bench_detect import DEFAULT_CACHE, SceneData, Suite, load_suite  # noqa: E402

DIST_THS_M = (0.5, 1.0, 2.0, 4.0)
# detection_cvpr_2019 class ranges (m from the ego).
CLASS_RANGE_M: dict[Category, float] = {
    Category.CAR: 50.0,
    Category.TRUCK: 50.0,
    Category.BUS: 50.0,
    Category.TRAILER: 50.0,
    Category.CONSTRUCTION_VEHICLE: 50.0,
    Category.PEDESTRIAN: 40.0,
    Category.MOTORCYCLE: 40.0,
    Category.BICYCLE: 40.0,
    Category.TRAFFIC_CONE: 30.0,
    Category.BARRIER: 30.0,
}
NONE_INDEX = len(OUTPUTS) - 1


@dataclass(frozen=True, eq=False)
class Samples:
    """Training rows: features (N, D), labels (N,) (class index or soft label), class of the row (N,), scene (N,)."""

    features: np.ndarray
    labels: np.ndarray
    classes: np.ndarray
    groups: np.ndarray


def _stack(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]) -> Samples:
    return Samples(*(np.concatenate([p[i] for p in parts]) for i in range(4)))


# ------------------------------------------------------------------------------------------------ labels
def cluster_labels(cloud: np.ndarray, result: GeometricResult, gt: FrameLabels, margin_m: float) -> np.ndarray:
    """(J,) output index (:data:`OUTPUTS`) of every cluster that reached classification: the class of the GT box
    holding most of its points (moved to the keyframe time with the box's velocity; box grown by ``margin_m``) when
    it holds at least half of them, else "none"."""
    members = result.cluster_members
    out = np.full(len(members), NONE_INDEX, dtype=np.int64)
    if not len(members) or not len(gt):
        return out
    sub = cloud[result.candidates]
    owner = np.full(len(sub), -1, dtype=np.int64)
    for j, m in enumerate(members):
        owner[m] = j
    used = owner >= 0
    pts, owner = sub[used], owner[used]
    size = np.bincount(owner, minlength=len(members))
    velocity = np.nan_to_num(gt.boxes.velocity) if gt.boxes.velocity is not None else np.zeros((len(gt), 2))
    best = np.zeros(len(members))
    for i, (box, category) in enumerate(zip(gt.boxes.data, gt.categories, strict=True)):
        if category is Category.OTHER:
            continue
        xy = pts[:, :2] - velocity[i] * pts[:, 4:5] - box[:2]
        c, s = np.cos(box[6]), np.sin(box[6])
        u, v = xy[:, 0] * c + xy[:, 1] * s, -xy[:, 0] * s + xy[:, 1] * c
        inside = (np.abs(u) <= box[3] / 2 + margin_m) & (np.abs(v) <= box[4] / 2 + margin_m)
        share = np.bincount(owner[inside], minlength=len(members)) / np.maximum(size, 1)
        better = (share >= 0.5) & (share > best)
        out[better], best[better] = CLASSES.index(category), share[better]
    return out


def match_labels(
    xy: np.ndarray, categories: tuple[Category, ...], score: np.ndarray, gt: FrameLabels
) -> tuple[np.ndarray, np.ndarray]:
    """Per detection, the share of :data:`DIST_THS_M` at which the devkit would match it, and whether it is scored
    at all (inside its class range).

    Args:
        xy: (K, 2) detection centres in the ego frame; categories, score: (K,) their classes and scores.
        gt: the keyframe's GT boxes (ego frame).
    """
    label = np.zeros(len(xy))
    inside = np.array([np.hypot(*xy[j]) <= CLASS_RANGE_M[c] for j, c in enumerate(categories)], dtype=bool)
    gt_xy = gt.boxes.centers[:, :2]
    gt_ok = np.array(
        [
            n > 0 and np.hypot(*gt_xy[i]) <= CLASS_RANGE_M.get(c, 0.0)
            for i, (c, n) in enumerate(zip(gt.categories, gt.num_lidar_pts, strict=True))
        ],
        dtype=bool,
    ).reshape(-1)
    for category in set(categories):
        dets = [j for j in np.argsort(-score, kind="stable") if categories[j] is category and inside[j]]
        truth = np.flatnonzero(gt_ok & np.array([c is category for c in gt.categories], dtype=bool))
        if not dets or not len(truth):
            continue
        dist = np.hypot(*(xy[dets][:, None, :] - gt_xy[truth][None, :, :]).transpose(2, 0, 1))  # (D, T)
        for threshold in DIST_THS_M:
            taken = np.zeros(len(truth), dtype=bool)
            for row, j in enumerate(dets):
                d = np.where(taken, np.inf, dist[row])
                best = int(np.argmin(d))
                if d[best] < threshold:
                    taken[best] = True
                    label[j] += 1.0 / len(DIST_THS_M)
    return label, inside


def training_clouds(scenes: list[SceneData]) -> Iterator[tuple[int, np.ndarray, Frame]]:
    """(scene index, keyframe cloud, frame) of every keyframe whose cloud the learned models classify (enough
    sweeps, see ``GeometricConfig.learned_min_sweeps``)."""
    config = GeometricConfig()
    for group, scene in enumerate(scenes):
        for cloud, frame in zip(scene.clouds, scene.clip.frames, strict=True):
            if cloud_sweeps(cloud, config.sweep_period_s) >= config.learned_min_sweeps:
                yield group, cloud, frame


def collect_clusters(scenes: list[SceneData], margin_m: float) -> Samples:
    """Class-model rows: every cluster of the hand-rule detector."""
    config = GeometricConfig(learned=False, min_score=0.0)
    parts = []
    for group, cloud, frame in training_clouds(scenes):
        result = detect_geometric(DetectorInput(cloud, frame.timestamp_us), config)
        labels = cluster_labels(cloud, result, frame.gt, margin_m)
        parts.append((result.class_features, labels, labels, np.full(len(labels), group)))
    return _stack(parts)


def collect_detections(scenes: list[SceneData], model_path: Path) -> Samples:
    """Score-model rows: every detection of the detector with the class model at ``model_path`` (hand scores)."""
    config = GeometricConfig(min_score=0.0, learned_model=str(model_path))
    parts = []
    for group, cloud, frame in training_clouds(scenes):
        result = detect_geometric(DetectorInput(cloud, frame.timestamp_us), config)
        found = result.detections
        label, inside = match_labels(found.boxes.centers[:, :2], found.categories, found.scores, frame.gt)
        classes = np.array([CLASSES.index(c) for c in found.categories], dtype=np.int64)
        parts.append((result.score_features[inside], label[inside], classes[inside], np.full(int(inside.sum()), group)))
    return _stack(parts)


# ------------------------------------------------------------------------------------------------ fitting
def standardisation(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    std = features.std(axis=0)
    return features.mean(axis=0), np.where(std > 1e-6, std, 1.0)


def fit_class_model(samples: Samples, balance: float, rounds: int, depth: int, rate: float) -> ClassModel:
    """Gradient-boosted trees (scikit-learn's ``GradientBoostingClassifier``, multinomial deviance, exported to plain
    arrays); each row weighs ``(N / (O n_o)) ** balance`` for the ``n_o`` rows of its output (1: every output weighs
    the same in total, so rare classes are not swallowed by the common ones; 0: plain)."""
    from sklearn.ensemble import GradientBoostingClassifier

    o = len(OUTPUTS)
    counts = np.bincount(samples.labels, minlength=o).astype(np.float64)
    if np.any(counts == 0):
        raise ValueError(f"class model: no training clusters of {[OUTPUTS[i] for i in np.flatnonzero(counts == 0)]}")
    row_weight = (len(samples.labels) / (o * counts)) ** balance
    x = samples.features.astype(np.float32)
    clf = GradientBoostingClassifier(n_estimators=rounds, max_depth=depth, learning_rate=rate, random_state=0)
    clf.fit(x, samples.labels, sample_weight=row_weight[samples.labels])
    trees = [t.tree_ for t in clf.estimators_.ravel()]  # (rounds, O) in round-major order: tree t is output t % O
    size = max(t.node_count for t in trees)

    def table(get, fill, dtype) -> np.ndarray:
        out = np.full((len(trees), size), fill, dtype=dtype)
        for i, t in enumerate(trees):
            out[i, : t.node_count] = get(t)
        return out

    feature = table(lambda t: np.where(t.children_left >= 0, t.feature, -1), -1, np.int16)
    threshold = table(lambda t: t.threshold, 0.0, np.float64)
    left = table(lambda t: t.children_left, -1, np.int16)
    right = table(lambda t: t.children_right, -1, np.int16)
    value = table(lambda t: rate * t.value[:, 0, 0], 0.0, np.float32)
    probe = TreeEnsemble(feature, threshold, left, right, value, np.zeros(o))
    init = clf.decision_function(x[:1])[0] - probe.raw(x[:1])[0]  # the prior's raw values
    model = ClassModel(TreeEnsemble(feature, threshold, left, right, value, init.astype(np.float64)))
    check = x[:: max(1, len(x) // 500)]
    if not np.allclose(model.trees.raw(check), clf.decision_function(check), atol=1e-4):
        raise RuntimeError("class model: the exported trees do not reproduce scikit-learn's outputs")
    return model


def fit_logistic(
    x: np.ndarray, y: np.ndarray, prior: np.ndarray, penalty: np.ndarray, iterations: int = 50
) -> np.ndarray:
    """Weights (D,) of a logistic regression on (N, D) ``x`` and soft labels (N,) minimising the cross-entropy
    plus ``sum(penalty * (w - prior)^2) / 2``, by Newton's method from ``prior``."""
    w = prior.copy()
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ w, -30, 30)))
        grad = x.T @ (p - y) + penalty * (w - prior)
        hess = (x * (p * (1 - p))[:, None]).T @ x + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    return w


def fit_score_model(samples: Samples, shrink: float, ridge: float) -> ScoreModel:
    """Per-class logistic regressions pulled towards a shared one (see the module docstring)."""
    mean, scale = standardisation(samples.features)
    z = (samples.features - mean) / scale
    n_classes, n_features = len(CLASSES), z.shape[1]
    x = np.hstack([np.eye(n_classes)[samples.classes], z])
    penalty = np.concatenate([np.full(n_classes, 1e-3), np.full(n_features, ridge)])
    shared = fit_logistic(x, samples.labels, np.zeros(n_classes + n_features), penalty)
    bias, weights = shared[:n_classes].copy(), np.tile(shared[n_classes:], (n_classes, 1))
    for c in range(n_classes):
        rows = samples.classes == c
        if not rows.any():
            continue
        prior = np.concatenate([[bias[c]], weights[c]])
        penalty = np.concatenate([[1e-3], np.full(n_features, shrink)])
        w = fit_logistic(np.hstack([np.ones((int(rows.sum()), 1)), z[rows]]), samples.labels[rows], prior, penalty)
        bias[c], weights[c] = w[0], w[1:]
    return ScoreModel(mean, scale, bias, weights)


def _subset(samples: Samples, rows: np.ndarray) -> Samples:
    return Samples(samples.features[rows], samples.labels[rows], samples.classes[rows], samples.groups[rows])


def average_precision(score: np.ndarray, label: np.ndarray) -> float:
    """Area under the precision-recall curve of soft labels ranked by score (a quick proxy of the devkit's AP over
    the detections only: missed GT boxes are not counted)."""
    if label.sum() <= 0:
        return float("nan")
    order = np.argsort(-score, kind="stable")
    tp = np.cumsum(label[order])
    precision = tp / np.arange(1, len(order) + 1)
    return float(np.sum(precision * label[order]) / label.sum())


def held_out_classes(samples: Samples, folds: int, **fit) -> dict[str, dict[str, float]]:
    """Per class: clusters, and the share that models trained on the other scenes (``fit``: the arguments of
    :func:`fit_class_model`) classify right (most probable of the classes, as the detector takes it); scene ``i``
    is in fold ``i % folds``."""
    predicted = np.zeros(len(samples.labels), dtype=np.int64)
    for g in range(folds):
        rows = samples.groups % folds == g
        model = fit_class_model(_subset(samples, ~rows), **fit)
        predicted[rows] = model.predict_proba(samples.features[rows])[:, : len(CLASSES)].argmax(axis=1)
    report = {}
    for o, name in enumerate(OUTPUTS[: len(CLASSES)]):
        rows = samples.labels == o
        if rows.any():
            report[name] = {
                "clusters": int(rows.sum()),
                "held_out_right": round(float(np.mean(predicted[rows] == o)), 3),
            }
    return report


def held_out_scores(samples: Samples, folds: int, shrink: float, ridge: float) -> dict[str, dict[str, float]]:
    hand = samples.features[:, SCORE_FEATURES.index("hand_score")]
    held = np.zeros(len(samples.labels))
    for g in range(folds):
        rows = samples.groups % folds == g
        model = fit_score_model(_subset(samples, ~rows), shrink, ridge)
        held[rows] = model.predict(samples.features[rows], samples.classes[rows])
    report = {}
    for c, category in enumerate(CLASSES):
        rows = samples.classes == c
        if rows.any():
            report[category.value] = {
                "detections": int(rows.sum()),
                "true_positive_share": round(float(samples.labels[rows].mean()), 3),
                "ap_proxy_hand_score": round(average_precision(hand[rows], samples.labels[rows]), 3),
                "ap_proxy_learned_held_out": round(average_precision(held[rows], samples.labels[rows]), 3),
            }
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--margin", type=float, default=0.3, help="GT boxes grown by this to label clusters (m)")
    parser.add_argument("--balance", type=float, default=0.5, help="class balance of the class model's rows (0-1)")
    parser.add_argument("--rounds", type=int, default=100, help="boosting rounds of the class model")
    parser.add_argument("--depth", type=int, default=3, help="depth of the class model's trees")
    parser.add_argument("--rate", type=float, default=0.1, help="learning rate of the class model")
    parser.add_argument("--shrink", type=float, default=30.0, help="pull of the per-class score weights to the shared")
    parser.add_argument("--ridge", type=float, default=1.0, help="L2 penalty of the shared score weights")
    parser.add_argument("--no-class-model", action="store_true", help="keep the hand rules' classes")
    parser.add_argument("--folds", type=int, default=3, help="held-out check: scenes split into this many folds")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--out", type=Path, default=MODEL_PATH)
    args = parser.parse_args(argv)
    suite = Suite(tuple(Profile), args.scenes, args.seconds, args.seed)
    scenes = [scene for _, profile_scenes in load_suite(args.cache, suite).values() for scene in profile_scenes]
    fit = {"balance": args.balance, "rounds": args.rounds, "depth": args.depth, "rate": args.rate}
    meta: dict = {
        "command": (
            f"python scripts/train_detect_scores.py --scenes {args.scenes} --seconds {args.seconds:g} "
            f"--seed {args.seed} --margin {args.margin:g} --balance {args.balance:g} --rounds {args.rounds} "
            f"--depth {args.depth} --rate {args.rate:g} --shrink {args.shrink:g} --ridge {args.ridge:g} "
            f"--folds {args.folds}" + (" --no-class-model" if args.no_class_model else "")
        ),
        "suite": f"{args.scenes} x {args.seconds:g} s scenes per profile ({', '.join(p.value for p in Profile)}), "
        f"seed {args.seed}",
    }
    classes = None
    if not args.no_class_model:
        clusters = collect_clusters(scenes, args.margin)
        meta["class_model"] = held_out_classes(clusters, args.folds, **fit)
        print(json.dumps(meta["class_model"]), file=sys.stderr)
        classes = fit_class_model(clusters, **fit)
    with tempfile.TemporaryDirectory(prefix="train-detect-") as tmp:
        staged = Path(tmp) / "classes.npz"
        LearnedModel(classes, None, {}).save(staged)
        detections = collect_detections(scenes, staged)
        load_model.cache_clear()
    meta["score_model"] = held_out_scores(detections, args.folds, args.shrink, args.ridge)
    meta["labels"] = "score: share of the devkit centre-distance thresholds 0.5/1/2/4 m at which a detection matches"
    for name, row in meta["score_model"].items():
        print(name, row, file=sys.stderr)
    model = LearnedModel(classes, fit_score_model(detections, args.shrink, args.ridge), meta)
    model.save(args.out)
    print(f"wrote {args.out} ({len(detections.labels)} detections)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
