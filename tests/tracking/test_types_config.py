"""Input validation of the value types and the configuration."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from calibration import Boxes3D, InputError
from tracking import (
    BoxSource,
    ClassParams,
    Detections,
    LifeCycle,
    MotionModel,
    OffboardConfig,
    Track,
    TrackerConfig,
    TrackingMode,
    track_clip,
)


def one_box(frame: str = "world") -> Boxes3D:
    return Boxes3D(np.array([[0.0, 0.0, 1.0, 4.0, 2.0, 1.5, 0.0]]), frame)


def test_detections_are_validated_and_frozen() -> None:
    d = Detections(1_000, one_box(), [0.5], ["car"])
    assert d.scores.dtype == np.float64 and not d.scores.flags.writeable and len(d) == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.timestamp_us = 2  # type: ignore[misc]
    with pytest.raises(InputError):
        Detections(0, one_box(), [0.5, 0.6], ["car"])
    with pytest.raises(InputError):
        Detections(0, one_box(), [0.5], ["car", "bus"])
    with pytest.raises(InputError):
        Detections(0, one_box(), [np.nan], ["car"])


def test_clip_frames_must_share_a_frame_and_increase_in_time() -> None:
    a, b = Detections(0, one_box(), [0.9], ["car"]), Detections(0, one_box(), [0.9], ["car"])
    with pytest.raises(InputError, match="increasing"):
        track_clip([a, b])
    with pytest.raises(InputError, match="one frame"):
        track_clip([a, Detections(1, one_box("ego"), [0.9], ["car"])])
    with pytest.raises(ValueError):
        track_clip([a], mode="sideways")  # type: ignore[arg-type]
    assert track_clip([a], mode="online") == []  # a str is accepted for the mode


def test_track_checks_its_arrays() -> None:
    boxes = Boxes3D(np.zeros((2, 7)), "world", np.zeros((2, 2)))
    args = dict(
        track_id=0,
        label="car",
        score=0.5,
        timestamps_us=[0, 1],
        boxes=boxes,
        scores=[0.5, 0.5],
        detection_indices=[0, -1],
    )
    track = Track(frame_indices=[3, 5], sources=("detected", BoxSource.INTERPOLATED), **args)
    assert track.sources == (BoxSource.DETECTED, BoxSource.INTERPOLATED) and len(track) == 2
    assert (track.first_frame, track.last_frame, track.num_detected) == (3, 5, 1)
    assert track.index_of(5) == 1 and track.index_of(4) is None
    states = track.states()
    assert states[1].frame_index == 5 and states[1].source is BoxSource.INTERPOLATED and states[1].detection_index == -1
    with pytest.raises(InputError, match="strictly increasing"):
        Track(frame_indices=[5, 3], sources=("detected", "detected"), **args)
    no_velocity = {**args, "boxes": Boxes3D(np.zeros((2, 7)), "world")}
    with pytest.raises(InputError, match="velocity"):
        Track(frame_indices=[3, 5], sources=("detected", "detected"), **no_velocity)


def test_config_defaults_lookup_and_validation() -> None:
    config = TrackerConfig()
    assert config.params_for("car").motion_model is MotionModel.CTRV
    assert config.params_for("pedestrian").motion_model is MotionModel.CV
    assert config.params_for("hovercraft") == config.fallback_params
    assert config.compatible("car", "truck") and config.compatible("bicycle", "motorcycle")
    assert not config.compatible("car", "pedestrian") and config.compatible("hovercraft", "hovercraft")
    slow = ClassParams(gate_m=1.0)
    assert config.with_class_params("car", slow).params_for("car") == slow
    assert config.with_class_params("hovercraft", slow).params_for("hovercraft") == slow
    tight = config.with_class_changes(("car", "hovercraft"), min_giou=0.2)
    assert tight.params_for("car") == dataclasses.replace(config.params_for("car"), min_giou=0.2)
    assert tight.params_for("hovercraft").min_giou == 0.2 and tight.params_for("truck") == config.params_for("truck")
    with pytest.raises(InputError):
        config.with_class_changes(("car",), min_giou=2.0)
    with pytest.raises(TypeError):
        config.with_class_changes(("car",), gate=1.0)
    assert TrackerConfig(affinity="giou_3d").affinity.value == "giou_3d"  # type: ignore[arg-type]
    with pytest.raises(InputError, match="unique"):
        TrackerConfig(class_params=(("car", slow), ("car", slow)))
    with pytest.raises(InputError, match="one class group"):
        TrackerConfig(class_groups=(("car", "truck"), ("truck", "bus")))
    with pytest.raises(InputError):
        TrackerConfig(low_score_threshold=0.6, high_score_threshold=0.5)
    with pytest.raises(InputError):
        ClassParams(min_giou=1.5)
    with pytest.raises(InputError):
        ClassParams(gate_m=0.0)
    with pytest.raises(InputError):
        LifeCycle(min_hits=0)
    with pytest.raises(InputError):
        OffboardConfig(merge_min_share=0.0)
    assert OffboardConfig().life.max_age_s > LifeCycle().max_age_s  # longer memory offboard
    assert TrackingMode("offboard") is TrackingMode.OFFBOARD
