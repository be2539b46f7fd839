"""Geometry core: rigid transforms, boxes, cameras, rigs (numpy/scipy/opencv only)."""

from calibration.boxes import EGO_FRAME, WORLD_FRAME, Box3D, Boxes3D, iou_3d, iou_bev, iou_bev_paired, wrap_angle_rad
from calibration.camera import PinholeCamera, Projection
from calibration.errors import AutolabelError, GeometryError, InputError
from calibration.rig import LidarSensor, Rig, SensorKind
from calibration.se3 import SE3, interpolate_pose, interpolate_poses, nearest_rotation

__all__ = [
    "EGO_FRAME",
    "SE3",
    "WORLD_FRAME",
    "AutolabelError",
    "Box3D",
    "Boxes3D",
    "GeometryError",
    "InputError",
    "LidarSensor",
    "PinholeCamera",
    "Projection",
    "Rig",
    "SensorKind",
    "interpolate_pose",
    "interpolate_poses",
    "iou_3d",
    "iou_bev",
    "iou_bev_paired",
    "nearest_rotation",
    "wrap_angle_rad",
]
