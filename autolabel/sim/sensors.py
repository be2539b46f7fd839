"""The simulated vehicle's sensors: a nuScenes-like rig (HDL-32E style lidar, six 1600x900 cameras)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.transform import Rotation

from calibration import SE3, LidarSensor, PinholeCamera, Rig

LIDAR_NAME = "LIDAR_TOP"
IMAGE_W_PX, IMAGE_H_PX = 1600, 900

# (channel, yaw of the optical axis in the ego frame in degrees, focal length px) as on nuScenes' cars.
CAMERA_LAYOUT: tuple[tuple[str, float, float], ...] = (
    ("CAM_FRONT", 0.0, 1266.0),
    ("CAM_FRONT_RIGHT", -55.0, 1260.0),
    ("CAM_BACK_RIGHT", -110.0, 1260.0),
    ("CAM_BACK", 180.0, 809.0),
    ("CAM_BACK_LEFT", 110.0, 1256.0),
    ("CAM_FRONT_LEFT", 55.0, 1272.0),
)
CAMERA_MOUNT_RADIUS_M = 0.5  # cameras sit on a ring around (1.0, 0, 1.55) in the ego frame
CAMERA_MOUNT_CENTRE = np.array([1.0, 0.0, 1.55])


def hdl32_elevations_deg() -> np.ndarray:
    """(32,) beam elevations of an HDL-32E: -30.67 to +10.67 degrees in 4/3 degree steps."""
    return np.linspace(-30.67, 10.67, 32)


@dataclass(frozen=True, eq=False)
class LidarModel:
    """Rotating multi-beam lidar.

    Attributes:
        elevations_deg: (B,) beam elevation angles; the ring index of a point is its beam index.
        azimuth_steps: firings per revolution (rays per beam per sweep).
        period_s: one revolution (20 Hz -> 0.05 s).
        max_range_m: no return beyond this.
        range_noise_m: Gaussian range noise sigma.
        dropout: probability of losing a return.
    """

    elevations_deg: np.ndarray = field(default_factory=hdl32_elevations_deg)
    azimuth_steps: int = 1100  # about 0.33 degrees: ~34 k returns per sweep in town, like nuScenes
    period_s: float = 0.05
    max_range_m: float = 90.0
    range_noise_m: float = 0.02
    dropout: float = 0.03


def camera_ego_SE3_cam(yaw_deg: float) -> SE3:
    """A camera looking along ego yaw ``yaw_deg``, level, optical centre on the mounting ring."""
    # Camera axes in the ego frame for yaw 0: z_cam = +x_ego, x_cam = -y_ego, y_cam = -z_ego.
    base = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    yaw = Rotation.from_euler("z", yaw_deg, degrees=True).as_matrix()
    rotation = yaw @ base
    offset = CAMERA_MOUNT_CENTRE + CAMERA_MOUNT_RADIUS_M * np.array(
        [np.cos(np.radians(yaw_deg)), np.sin(np.radians(yaw_deg)), 0.0]
    )
    return SE3(rotation, offset)


def simulated_rig() -> Rig:
    """The rig every simulated scene uses (calibrated_sensor records are written from it)."""
    cameras = {}
    for name, yaw_deg, focal_px in CAMERA_LAYOUT:
        intrinsics = np.array([[focal_px, 0.0, 816.0], [0.0, focal_px, 491.0], [0.0, 0.0, 1.0]])
        cameras[name] = PinholeCamera(name, intrinsics, IMAGE_W_PX, IMAGE_H_PX, camera_ego_SE3_cam(yaw_deg))
    # nuScenes' LIDAR_TOP: x right, y forward, z up (rotated -90 degrees about z from the ego frame).
    ego_SE3_lidar = SE3.from_yaw(-np.pi / 2, (0.943, 0.0, 1.84))
    return Rig(cameras=cameras, lidars={LIDAR_NAME: LidarSensor(LIDAR_NAME, ego_SE3_lidar)})
