"""The learned class and score models: storage, the tree kernel, the gate over the hand rules, the fallbacks."""

from __future__ import annotations

import numpy as np

from autolabel.categories import Category
from autolabel.detect import DetectorInput, GeometricConfig, detect_geometric
from autolabel.detect.classify import CLASSES, Classification
from autolabel.detect.learned import (
    CLASS_FEATURES,
    MODEL_PATH,
    OUTPUTS,
    SCORE_FEATURES,
    ClassModel,
    LearnedModel,
    ScoreModel,
    TreeEnsemble,
    learned_classification,
    load_model,
)

CAR, PED = CLASSES.index(Category.CAR), CLASSES.index(Category.PEDESTRIAN)


def _stump_ensemble(outputs: int) -> TreeEnsemble:
    """Two depth-1 trees for output 0 (x0 <= 1: +1 else -1; x1 <= 0: +0.5 else +2) and none for the others."""
    feature = np.array([[0, -1, -1], [1, -1, -1]], dtype=np.int16)
    threshold = np.array([[1.0, 0, 0], [0.0, 0, 0]])
    left = np.array([[1, -1, -1], [1, -1, -1]], dtype=np.int16)
    right = np.array([[2, -1, -1], [2, -1, -1]], dtype=np.int16)
    value = np.array([[0, 1.0, -1.0], [0, 0.5, 2.0]], dtype=np.float32)
    # Tree t adds to output t % outputs: with one output both trees are output 0's.
    return TreeEnsemble(feature, threshold, left, right, value, np.arange(outputs, dtype=np.float64))


def test_tree_ensemble_sums_the_leaves_reached() -> None:
    trees = _stump_ensemble(1)
    x = np.array([[0.5, -1.0], [0.5, 3.0], [2.0, -1.0], [2.0, 3.0]])
    np.testing.assert_allclose(trees.raw(x)[:, 0], [0 + 1 + 0.5, 0 + 1 + 2, 0 - 1 + 0.5, 0 - 1 + 2])
    two = _stump_ensemble(2)  # now the second tree belongs to output 1
    np.testing.assert_allclose(two.raw(x), [[1.0, 1.5], [1.0, 3.0], [-1.0, 1.5], [-1.0, 3.0]])
    p = ClassModel(two).predict_proba(x)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    np.testing.assert_allclose(p[0, 0], 1 / (1 + np.exp(0.5)))


def test_models_round_trip_through_one_npz(tmp_path) -> None:
    o, g, f = len(OUTPUTS), len(CLASS_FEATURES), len(SCORE_FEATURES)
    trees = TreeEnsemble(
        np.full((o, 1), -1, np.int16),
        np.zeros((o, 1)),
        np.full((o, 1), -1, np.int16),
        np.full((o, 1), -1, np.int16),
        np.arange(o, dtype=np.float32)[:, None],
        np.zeros(o),
    )
    scores = ScoreModel(np.zeros(f), np.ones(f), np.linspace(-1, 1, len(CLASSES)), np.zeros((len(CLASSES), f)))
    path, again = tmp_path / "model.npz", tmp_path / "again.npz"
    LearnedModel(ClassModel(trees), scores, {"command": "test"}).save(path)
    LearnedModel(ClassModel(trees), scores, {"command": "test"}).save(again)
    assert path.read_bytes() == again.read_bytes()  # equal models, equal files (reproducible training)
    back = LearnedModel.read(path)
    assert back.meta == {"command": "test"}
    x = np.zeros((3, g))
    np.testing.assert_allclose(back.classes.predict_proba(x), ClassModel(trees).predict_proba(x))
    label = np.array([0, 5, 9])
    np.testing.assert_allclose(back.scores.predict(np.zeros((3, f)), label), scores.predict(np.zeros((3, f)), label))


def test_the_committed_model_is_small_and_matches_the_code() -> None:
    assert MODEL_PATH.is_file() and MODEL_PATH.stat().st_size < 300_000
    model = load_model(MODEL_PATH)
    assert model is not None and model.classes is not None and model.scores is not None
    assert "train_detect_scores.py" in model.meta["command"]


def _classification(label: list[int]) -> Classification:
    n = len(label)
    return Classification(np.array(label), np.zeros(n, dtype=bool), np.full(n, 0.5), np.full(n, 0.5))


def test_the_class_model_overrules_the_hand_rules_only_when_sure() -> None:
    proba = np.zeros((4, len(OUTPUTS)))
    proba[0, [CAR, PED]] = 0.9, 0.1  # sure of a car: overrules the hand rules' pedestrian
    proba[1, [CAR, PED]] = 0.6, 0.4  # unsure: the hand rules' pedestrian stays
    proba[2, [CAR, -1]] = 0.4, 0.6  # the hand rules found nothing and the model no object either: dropped
    proba[3, [CAR, -1]] = 0.6, 0.4  # the hand rules found nothing, the model a car (its most probable output)
    plaus = np.ones((4, len(CLASSES), 2))
    hand = _classification([PED, PED, -1, -1])
    result = learned_classification(plaus, proba, hand, min_probability=0.05, confident=0.7)
    assert result.label.tolist() == [CAR, PED, -1, CAR]
    np.testing.assert_allclose(result.likelihood, [0.9, 0.4, 0.4, 0.6])


def test_the_detector_falls_back_to_the_hand_rules(synth, tmp_path) -> None:
    cloud = synth.cast(synth.Scene(synth.boxes((10.0, 4.0, 4.6, 1.9, 1.6, 0.3), (15.0, -5.0, *(0.7, 0.6, 1.75), 0.0))))
    hand = detect_geometric(DetectorInput(cloud.points, 0), GeometricConfig(learned=False)).detections
    missing = GeometricConfig(learned_model=str(tmp_path / "none.npz"))
    same = detect_geometric(DetectorInput(cloud.points, 0), missing).detections
    np.testing.assert_array_equal(same.boxes.data, hand.boxes.data)
    np.testing.assert_array_equal(same.scores, hand.scores)
    learned = detect_geometric(DetectorInput(cloud.points, 0)).detections
    assert sorted(c.value for c in learned.categories) == ["car", "pedestrian"]
    # A single sweep is classified and scored by the hand rules (the models were trained on 10-sweep clouds).
    single = cloud.points[cloud.points[:, 4] == 0]
    one = detect_geometric(DetectorInput(single, 0)).detections
    one_hand = detect_geometric(DetectorInput(single, 0), GeometricConfig(learned=False)).detections
    np.testing.assert_array_equal(one.scores, one_hand.scores)
