"""Learned class and score models of the geometric detector, on the hand rules' cluster features.

Both are trained on simulator output by ``scripts/train_detect_scores.py`` (reproducible, deterministic) and stored
as one small ``.npz`` of plain arrays next to this module (:data:`MODEL_PATH`); without the file the detector falls
back to the hand-set rules of :mod:`autolabel.detect.classify`::

    cluster fits --class_features--> ClassModel: boosted trees, softmax over the 10 classes + "none"
                 --> class = most probable of the 10 (dropped under min_class_probability); hypothesis and box as
                     the hand rules make them for that class
    + completed box --score_features--> ScoreModel: per-class logistic regression --> score = P(true positive)

The class model's inputs are the hand rules' own evidence (log size-motion likelihood of every class) plus the raw
extents, point counts, range, motion and shape cues, so it learns where the rules confuse classes (a car's front
corner looks like a pedestrian, a bicycle rack like a car). The score model's target is the share of the nuScenes
devkit's centre-distance thresholds (0.5, 1, 2, 4 m) at which the detection is a true positive.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numba
import numpy as np

from autolabel.detect.boxfit import ClusterFits
from autolabel.detect.classify import (
    _MEAN,
    CLASSES,
    Classification,
    ClassifyConfig,
    _top_truncated,
    motion_likelihoods,
    scores,
    size_likelihoods,
)

MODEL_PATH = Path(__file__).with_name("learned_model.npz")
NONE = "none"  # the class model's extra output: no object
OUTPUTS: tuple[str, ...] = (*(c.value for c in CLASSES), NONE)
CLASS_FEATURES: tuple[str, ...] = (
    *(f"log_likelihood_{c.value}" for c in CLASSES),  # log of the hand rules' size-motion term per class
    "length",  # visible extents (m)
    "width",
    "height",
    "log_points_per_sweep",  # log(1 + points / sweeps)
    "range",  # BEV range / 50 m
    "log_density",  # log(1 + points / sweeps) + 2 log(range / 10 m): returns against the 1/r^2 fall-off
    "speed",  # m/s / 10, at most 3
    "low_fraction",
    "mean_height_ratio",  # mean point height / height
    "quality",  # L-fit quality
    "dt_span",  # capture-time span / 0.5 s, at most 1 (one-sweep fragments are near 0)
    "end_occluded_length",
    "end_occluded_width",
    "top_truncated",  # highest return at the top beam
    "single_sweep",  # the cloud holds one sweep
)
SCORE_FEATURES: tuple[str, ...] = (
    "log_points_per_sweep",
    "range",
    "log_density",
    "log_plausibility",  # log of the class's size-motion term
    "class_probability",  # the class model's probability of the detection's class
    "none_probability",  # and of no object
    "quality",
    "length_ratio",  # visible length / class mean (by the winning hypothesis)
    "width_ratio",  # visible width / class mean
    "height_ratio",  # height / class mean
    "low_fraction",
    "mean_height_ratio",
    "speed",
    "end_occluded_length",
    "end_occluded_width",
    "dt_span",
    "single_sweep",
    "visible_area_ratio",  # visible footprint / completed box footprint
    "top_truncated",
    "hand_score",  # :func:`autolabel.detect.classify.scores`
)


def _standardised(features: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return (features - mean) / scale


@dataclass(frozen=True, eq=False)
class TreeEnsemble:
    """Gradient-boosted regression trees: ``raw[k, o] = init[o] + sum of the leaves reached by x[k] in the trees of
    output o`` (tree ``t`` belongs to output ``t % O``)::

        node n:  x[feature] <= threshold ?  -> left[n]  : right[n]        leaves: left = -1, value = leaf output

    Attributes:
        feature: (T, N) int16 feature index per node (-1 at leaves); nodes past a tree's end are unused.
        threshold: (T, N) float64 split value (features are rounded to float32 first, as they were in training).
        left, right: (T, N) int16 child nodes.
        value: (T, N) float32 leaf values (learning rate included).
        init: (O,) float64 raw value before any tree.
    """

    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    value: np.ndarray
    init: np.ndarray

    def raw(self, features: np.ndarray) -> np.ndarray:
        """(K, O) raw outputs of (K, G) features."""
        out = np.tile(self.init, (len(features), 1))
        x = np.ascontiguousarray(features, dtype=np.float32)
        _tree_sum(x, self.feature, self.threshold, self.left, self.right, self.value, out)
        return out

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}_{k}": getattr(self, k) for k in ("feature", "threshold", "left", "right", "value", "init")}

    @classmethod
    def from_arrays(cls, data: dict[str, np.ndarray], prefix: str) -> TreeEnsemble:
        dtypes = {"feature": np.int16, "threshold": np.float64, "left": np.int16, "right": np.int16}
        dtypes |= {"value": np.float32, "init": np.float64}
        return cls(*(np.ascontiguousarray(data[f"{prefix}_{k}"], dtype=t) for k, t in dtypes.items()))


@numba.njit(cache=True)
def _tree_sum(
    x: np.ndarray,
    feature: np.ndarray,
    threshold: np.ndarray,
    left: np.ndarray,
    right: np.ndarray,
    value: np.ndarray,
    out: np.ndarray,
) -> None:
    """Add every tree's leaf value to ``out[k, t % O]``."""
    outputs = out.shape[1]
    for k in range(x.shape[0]):
        for t in range(feature.shape[0]):
            node = 0
            while left[t, node] >= 0:
                node = left[t, node] if x[k, feature[t, node]] <= threshold[t, node] else right[t, node]
            out[k, t % outputs] += value[t, node]


@dataclass(frozen=True, eq=False)
class ClassModel:
    """Boosted trees with a softmax over :data:`OUTPUTS` on the :data:`CLASS_FEATURES`."""

    trees: TreeEnsemble

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """(K, O) probabilities of (K, G) features."""
        logit = self.trees.raw(features)
        logit -= logit.max(axis=1, keepdims=True)
        p = np.exp(logit)
        return p / p.sum(axis=1, keepdims=True)


@dataclass(frozen=True, eq=False)
class ScoreModel:
    """Per-class logistic regression: ``score = sigmoid(bias[c] + weights[c] @ z)``, ``z`` the standardised
    :data:`SCORE_FEATURES`.

    Attributes:
        mean, scale: (F,) standardisation.
        bias: (C,) per class in the order of :data:`CLASSES`; weights: (C, F).
    """

    mean: np.ndarray
    scale: np.ndarray
    bias: np.ndarray
    weights: np.ndarray

    def predict(self, features: np.ndarray, label: np.ndarray) -> np.ndarray:
        """(K,) scores of (K, F) features for class indices ``label`` (K,) (>= 0)."""
        z = _standardised(features, self.mean, self.scale)
        logit = self.bias[label] + np.einsum("kf,kf->k", self.weights[label], z)
        return 1.0 / (1.0 + np.exp(-logit))


@dataclass(frozen=True, eq=False)
class LearnedModel:
    """The class model, the score model (trained on the detector with that class model) and how they were made.

    Either may be None: the hand rules classify (the score model was trained that way) or score. Stored as one
    ``.npz`` of plain arrays (:meth:`save`, :func:`load_model`); ``meta`` is kept as a JSON string in it."""

    classes: ClassModel | None
    scores: ScoreModel | None
    meta: dict

    def save(self, path: Path) -> None:
        arrays: dict[str, np.ndarray] = {
            "outputs": np.array(OUTPUTS),
            "class_features": np.array(CLASS_FEATURES),
            "score_features": np.array(SCORE_FEATURES),
            "meta_json": np.array(json.dumps(self.meta, sort_keys=True)),
        }
        if self.classes is not None:
            arrays |= self.classes.trees.arrays("class")
        if self.scores is not None:
            arrays |= {f"score_{k}": getattr(self.scores, k) for k in ("mean", "scale", "bias", "weights")}
        # A plain .npz (np.load reads it), written with fixed entry times so that equal models are equal files.
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name, array in arrays.items():
                buffer = io.BytesIO()
                np.lib.format.write_array(buffer, np.asarray(array), allow_pickle=False)
                entry = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                entry.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(entry, buffer.getvalue())

    @classmethod
    def read(cls, path: Path) -> LearnedModel:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        names = (tuple(arrays["outputs"]), tuple(arrays["class_features"]), tuple(arrays["score_features"]))
        if names != (OUTPUTS, CLASS_FEATURES, SCORE_FEATURES):
            raise ValueError(f"{path}: classes or features differ from the code's; retrain the learned models")
        classes = ClassModel(TreeEnsemble.from_arrays(arrays, "class")) if "class_init" in arrays else None
        scores = None
        if "score_bias" in arrays:
            scores = ScoreModel(
                *(arrays[f"score_{k}"].astype(np.float64) for k in ("mean", "scale", "bias", "weights"))
            )
        return cls(classes, scores, json.loads(str(arrays["meta_json"])))


@cache
def load_model(path: Path = MODEL_PATH) -> LearnedModel | None:
    """The trained models (read once per path), None where the file is missing."""
    return LearnedModel.read(path) if Path(path).is_file() else None


# ------------------------------------------------------------------------------------------------ features
def _common(fits: ClusterFits, sweeps: float) -> dict[str, np.ndarray]:
    k = len(fits)
    per_sweep = np.log1p(fits.count / max(sweeps, 1.0))
    return {
        "log_points_per_sweep": per_sweep,
        "range": fits.range_m / 50.0,
        "log_density": per_sweep + 2.0 * np.log(np.maximum(fits.range_m, 1.0) / 10.0),
        "speed": np.minimum(fits.speed_mps / 10.0, 3.0),
        "low_fraction": fits.low_fraction,
        "mean_height_ratio": fits.mean_height / np.maximum(fits.height, 1e-3),
        "quality": fits.quality,
        "dt_span": np.minimum(fits.dt_span_s / 0.5, 1.0),
        "end_occluded_length": fits.end_occluded[:, 0],
        "end_occluded_width": fits.end_occluded[:, 1],
        "single_sweep": np.full(k, float(sweeps <= 1.0)),
    }


def plausibilities(fits: ClusterFits, config: ClassifyConfig) -> np.ndarray:
    """(K, C, 2) the hand rules' size times motion term per class and hypothesis."""
    return size_likelihoods(fits, config) * motion_likelihoods(fits, config)


def class_features(fits: ClusterFits, plaus: np.ndarray, sweeps: float, config: ClassifyConfig) -> np.ndarray:
    """(K, G) :data:`CLASS_FEATURES` of clusters with their (K, C, 2) :func:`plausibilities`."""
    common = _common(fits, sweeps)
    columns = {
        **{f"log_likelihood_{c.value}": np.log(plaus[:, i].max(axis=1) + 1e-3) for i, c in enumerate(CLASSES)},
        "length": fits.length,
        "width": fits.width,
        "height": fits.height,
        "top_truncated": _top_truncated(fits, config).astype(np.float64),
        **common,
    }
    return np.column_stack([columns[name] for name in CLASS_FEATURES]).reshape(len(fits), len(CLASS_FEATURES))


def learned_classification(
    plaus: np.ndarray, proba: np.ndarray, hand: Classification, min_probability: float, confident: float
) -> Classification:
    """Per cluster the most probable of the 10 classes by (K, O) class-model probabilities, where that probability
    reaches ``confident`` or the hand rules found no class; else the hand rules' class (the model overrules them
    only when sure: its training world is a simulator). Clusters whose class is less probable than
    ``min_probability``, or that the hand rules reject and the model finds most probably no object, are no objects
    (-1). The hypothesis is the one the hand rules' (K, C, 2) plausibilities
    prefer for the class; ``likelihood`` is the class probability."""
    rows = np.arange(len(proba))
    label = proba[:, : len(CLASSES)].argmax(axis=1)
    label = np.where((proba[rows, label] < confident) & (hand.label >= 0), hand.label, label)
    likelihood = proba[rows, label]
    swapped = plaus[rows, label].argmax(axis=1).astype(bool)
    plausibility = plaus[rows, label, swapped.astype(np.int64)]
    rejected = (hand.label < 0) & (proba.argmax(axis=1) == len(CLASSES))  # neither sees an object
    label = np.where((likelihood >= min_probability) & ~rejected, label, -1)
    return Classification(label, swapped, likelihood, plausibility)


def score_features(
    fits: ClusterFits,
    result: Classification,
    boxes: np.ndarray,
    sweeps: float,
    class_probability: np.ndarray,
    none_probability: np.ndarray,
    config: ClassifyConfig,
) -> np.ndarray:
    """(K, F) :data:`SCORE_FEATURES` of classified clusters, their completed (K, 7) boxes and class-model
    probabilities (K,) of their class and of no object."""
    label = np.maximum(result.label, 0)
    vis_l = np.where(result.swapped, fits.width, fits.length)
    vis_w = np.where(result.swapped, fits.length, fits.width)
    mean = _MEAN[label]
    area = np.maximum(boxes[:, 3] * boxes[:, 4], 1e-6)
    columns = {
        **_common(fits, sweeps),
        "log_plausibility": np.log(np.clip(result.plausibility, 0.0, 1.0) + 1e-3),
        "class_probability": class_probability,
        "none_probability": none_probability,
        "length_ratio": vis_l / mean[:, 0],
        "width_ratio": vis_w / mean[:, 1],
        "height_ratio": fits.height / mean[:, 2],
        "visible_area_ratio": np.minimum(vis_l * vis_w / area, 1.0),
        "top_truncated": _top_truncated(fits, config).astype(np.float64),
        "hand_score": scores(fits, result, sweeps, config),
    }
    return np.column_stack([columns[name] for name in SCORE_FEATURES]).reshape(len(fits), len(SCORE_FEATURES))


def hand_probabilities(result: Classification) -> tuple[np.ndarray, np.ndarray]:
    """Stand-ins for the class model's probabilities where the hand rules classify: the winning weighted
    likelihood and its complement."""
    p = np.clip(result.likelihood, 0.0, 1.0)
    return p, 1.0 - p
