"""Rig: sensor lookup and sensor-to-sensor transforms checked by hand."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from calibration import SE3, GeometryError, LidarSensor, PinholeCamera, Rig, SensorKind

K = np.array([[1000.0, 0.0, 800.0], [0.0, 1000.0, 450.0], [0.0, 0.0, 1.0]])

# Columns: the camera's x (right), y (down), z (forward) axes written in ego coordinates.
# Front camera looks along ego +x: cam x = -ego y, cam y = -ego z, cam z = ego x.
EGO_R_FRONT = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
# Left camera looks along ego +y; its right-hand side is the vehicle's front:
# cam x = ego x, cam y = -ego z, cam z = ego y.
EGO_R_LEFT = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])


def cam(name: str, rotation: np.ndarray, position: tuple[float, float, float]) -> PinholeCamera:
    return PinholeCamera(name, K, 1600, 900, SE3(rotation, position))


def make_rig() -> Rig:
    return Rig(
        cameras={
            "CAM_FRONT": cam("CAM_FRONT", EGO_R_FRONT, (1.5, 0.0, 1.6)),
            "CAM_LEFT": cam("CAM_LEFT", EGO_R_LEFT, (1.0, 0.9, 1.6)),
        },
        lidars={"LIDAR_TOP": LidarSensor("LIDAR_TOP", SE3.from_yaw(np.pi / 2, (0.9, 0.0, 1.9)))},
    )


def test_sensor_lookup() -> None:
    rig = make_rig()
    assert rig.sensor_names == ("LIDAR_TOP", "CAM_FRONT", "CAM_LEFT")  # lidars first, then cameras in order
    assert rig.kind("CAM_LEFT") is SensorKind.CAMERA
    assert rig.kind("LIDAR_TOP") is SensorKind.LIDAR
    assert SensorKind.CAMERA == "camera"  # str enum
    assert rig.camera("CAM_FRONT").name == "CAM_FRONT"
    np.testing.assert_array_equal(rig.ego_SE3_sensor("CAM_LEFT").translation, [1.0, 0.9, 1.6])
    np.testing.assert_array_equal(rig.ego_SE3_sensor("LIDAR_TOP").translation, [0.9, 0.0, 1.9])
    assert rig.ego_SE3_sensor("CAM_FRONT") is rig.cameras["CAM_FRONT"].ego_SE3_cam


def test_camera_order_is_stable() -> None:
    rig = Rig(cameras={n: cam(n, EGO_R_FRONT, (0.0, 0.0, 0.0)) for n in ("B", "A", "C")})
    assert list(rig.cameras) == ["B", "A", "C"]
    assert rig.sensor_names == ("B", "A", "C")


def test_empty_rig() -> None:
    rig = Rig()
    assert rig.sensor_names == ()
    with pytest.raises(GeometryError):
        rig.kind("LIDAR_TOP")


def test_sensor_SE3_sensor_between_two_cameras_by_hand() -> None:
    rig = make_rig()
    front_SE3_left = rig.sensor_SE3_sensor("CAM_FRONT", "CAM_LEFT")
    # Left camera centre in ego (1.0, 0.9, 1.6); relative to the front camera (-0.5, 0.9, 0) in ego axes;
    # in front-camera axes: x = -ego y = -0.9, y = -ego z = 0, z = ego x = -0.5
    np.testing.assert_allclose(front_SE3_left.translation, [-0.9, 0.0, -0.5], atol=1e-12)
    # Left camera's axes in front-camera coordinates:
    #   left x = ego +x -> front (0, 0, 1); left y = ego -z -> front (0, 1, 0); left z = ego +y -> front (-1, 0, 0)
    np.testing.assert_allclose(
        front_SE3_left.rotation, [[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]], atol=1e-12
    )
    # A point 10 m in front of the left camera (ego (1.0, 10.9, 1.6)) is 10.9 m to the left of the front
    # camera and 0.5 m behind it: front-camera (-10.9, 0, -0.5).
    np.testing.assert_allclose(
        front_SE3_left.transform_points(np.array([[0.0, 0.0, 10.0]])), [[-10.9, 0.0, -0.5]], atol=1e-12
    )
    # Consistency: left_SE3_front is its inverse, and a sensor to itself is the identity.
    assert (rig.sensor_SE3_sensor("CAM_LEFT", "CAM_FRONT") @ front_SE3_left).allclose(SE3.identity(), atol=1e-12)
    assert rig.sensor_SE3_sensor("CAM_LEFT", "CAM_LEFT").allclose(SE3.identity(), atol=1e-12)


def test_sensor_SE3_sensor_lidar_to_camera_by_hand() -> None:
    rig = make_rig()
    # Lidar yawed 90°: lidar x = ego y. Lidar point (2, 0, 0) -> ego R(2, 0, 0) + (0.9, 0, 1.9) = (0.9, 2, 1.9)
    # In the front camera: relative (-0.6, 2, 0.3) -> cam (x = -2, y = -0.3, z = -0.6) (behind the camera).
    front_SE3_lidar = rig.sensor_SE3_sensor("CAM_FRONT", "LIDAR_TOP")
    np.testing.assert_allclose(
        front_SE3_lidar.transform_points(np.array([[2.0, 0.0, 0.0]])), [[-2.0, -0.3, -0.6]], atol=1e-12
    )


def test_unknown_sensor_raises_with_the_list_of_names() -> None:
    rig = make_rig()
    for call in (rig.kind, rig.ego_SE3_sensor, lambda n: rig.sensor_SE3_sensor(n, "CAM_FRONT")):
        with pytest.raises(GeometryError, match="CAM_BACK") as err:
            call("CAM_BACK")
        message = str(err.value)
        assert "LIDAR_TOP" in message and "CAM_FRONT" in message and "CAM_LEFT" in message
    with pytest.raises(GeometryError, match="CAM_BACK") as err:
        rig.camera("CAM_BACK")
    assert "CAM_FRONT" in str(err.value) and "CAM_LEFT" in str(err.value)
    # a lidar is not a camera
    with pytest.raises(GeometryError, match="LIDAR_TOP"):
        rig.camera("LIDAR_TOP")


def test_key_name_mismatch_raises() -> None:
    with pytest.raises(GeometryError, match="CAM_FRONT_LEFT"):
        Rig(cameras={"CAM_FRONT_LEFT": cam("CAM_FRONT", EGO_R_FRONT, (0.0, 0.0, 0.0))})
    with pytest.raises(GeometryError, match="LIDAR_TOP"):
        Rig(lidars={"lidar": LidarSensor("LIDAR_TOP", SE3.identity())})


def test_name_used_by_camera_and_lidar_raises() -> None:
    with pytest.raises(GeometryError, match="X"):
        Rig(cameras={"X": cam("X", EGO_R_FRONT, (0.0, 0.0, 0.0))}, lidars={"X": LidarSensor("X", SE3.identity())})


def test_mappings_are_read_only_and_copied() -> None:
    cameras = {"CAM_FRONT": cam("CAM_FRONT", EGO_R_FRONT, (1.5, 0.0, 1.6))}
    lidars = {"LIDAR_TOP": LidarSensor("LIDAR_TOP", SE3.identity())}
    rig = Rig(cameras=cameras, lidars=lidars)
    with pytest.raises(TypeError):
        rig.cameras["CAM_LEFT"] = cam("CAM_LEFT", EGO_R_LEFT, (0.0, 0.0, 0.0))  # type: ignore[index]
    with pytest.raises(TypeError):
        del rig.lidars["LIDAR_TOP"]  # type: ignore[attr-defined]
    with pytest.raises(dataclasses.FrozenInstanceError):
        rig.cameras = {}  # type: ignore[misc]
    # mutating the dicts the rig was built from does not change the rig
    cameras["CAM_LEFT"] = cam("CAM_LEFT", EGO_R_LEFT, (0.0, 0.0, 0.0))
    del lidars["LIDAR_TOP"]
    assert list(rig.cameras) == ["CAM_FRONT"]
    assert list(rig.lidars) == ["LIDAR_TOP"]
