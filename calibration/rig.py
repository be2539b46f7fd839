"""The sensor rig: named cameras and lidars with their extrinsics in the ego frame."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType

from calibration.camera import PinholeCamera
from calibration.errors import GeometryError
from calibration.se3 import SE3


class SensorKind(str, Enum):
    LIDAR = "lidar"
    CAMERA = "camera"


@dataclass(frozen=True)
class LidarSensor:
    """A lidar and its mounting ``ego_SE3_lidar``."""

    name: str
    ego_SE3_lidar: SE3


@dataclass(frozen=True, eq=False)
class Rig:
    """Named sensors of one vehicle (read-only mappings).

    Attributes:
        cameras: camera name -> :class:`PinholeCamera`, in a stable order.
        lidars: lidar name -> :class:`LidarSensor`.
    """

    cameras: Mapping[str, PinholeCamera] = field(default_factory=dict)
    lidars: Mapping[str, LidarSensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, cam in self.cameras.items():
            if cam.name != name:
                raise GeometryError(f"rig camera key {name!r} does not match the camera's name {cam.name!r}")
        for name, lidar in self.lidars.items():
            if lidar.name != name:
                raise GeometryError(f"rig lidar key {name!r} does not match the lidar's name {lidar.name!r}")
        overlap = set(self.cameras) & set(self.lidars)
        if overlap:
            raise GeometryError(f"sensor names used twice in the rig: {sorted(overlap)}")
        object.__setattr__(self, "cameras", MappingProxyType(dict(self.cameras)))
        object.__setattr__(self, "lidars", MappingProxyType(dict(self.lidars)))

    @property
    def sensor_names(self) -> tuple[str, ...]:
        return (*self.lidars, *self.cameras)

    def kind(self, name: str) -> SensorKind:
        if name in self.cameras:
            return SensorKind.CAMERA
        if name in self.lidars:
            return SensorKind.LIDAR
        raise GeometryError(f"unknown sensor {name!r}; the rig has {list(self.sensor_names)}")

    def ego_SE3_sensor(self, name: str) -> SE3:
        """Extrinsics of any sensor by name."""
        if self.kind(name) is SensorKind.CAMERA:
            return self.cameras[name].ego_SE3_cam
        return self.lidars[name].ego_SE3_lidar

    def camera(self, name: str) -> PinholeCamera:
        if name not in self.cameras:
            raise GeometryError(f"unknown camera {name!r}; the rig has {list(self.cameras)}")
        return self.cameras[name]

    def sensor_SE3_sensor(self, dst: str, src: str) -> SE3:
        """``dst_SE3_src`` between two sensors of the rig."""
        return self.ego_SE3_sensor(dst).inverse() @ self.ego_SE3_sensor(src)
