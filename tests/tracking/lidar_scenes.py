"""Synthetic lidar for refinement tests: points on the faces of boxes a sensor can see, plus flat ground.

A face of an upright box is seen when the sensor lies outside its plane; it gets Poisson many points,
uniform on the face, in proportion to its area times the cosine of the incidence over the squared range
(a spinning lidar's density), with Gaussian range noise. The bottom face is never seen. Ground points are
uniform on ``z = 0`` around the objects, except under them. Sweeps of a keyframe (multi-sweep clouds)
place each object where it was at the sweep's time and carry that time in a ``dt_s`` column.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from calibration import Boxes3D
from tracking import BoxSource, Track
from tracking.lidar import ClipLidar

PERIOD_US = 500_000  # 2 Hz keyframes, as nuScenes samples
T0_US = 1_600_000_000_000_000
SENSOR_HEIGHT_M = 1.84
DENSITY = 4000.0  # points per m^2 of a face seen head-on at 1 m


def box_row(x: float, y: float, size: Sequence[float], yaw: float, ground_z: float = 0.0) -> np.ndarray:
    """(7,) box standing on the ground."""
    return np.array([x, y, ground_z + size[2] / 2.0, size[0], size[1], size[2], yaw])


def face_points(box: np.ndarray, sensor: np.ndarray, rng: np.random.Generator, density: float = DENSITY) -> np.ndarray:
    """(N, 3) points on the faces of ``box`` (7,) that ``sensor`` (3,) sees."""
    center, half, yaw = box[:3], box[3:6] / 2.0, box[6]
    c, s = np.cos(yaw), np.sin(yaw)
    ex, ey, ez = np.array([c, s, 0.0]), np.array([-s, c, 0.0]), np.array([0.0, 0.0, 1.0])
    faces = (  # (normal, offset along the normal, in-plane axes and their half extents)
        (ex, half[0], ey, half[1], ez, half[2]),
        (-ex, half[0], ey, half[1], ez, half[2]),
        (ey, half[1], ex, half[0], ez, half[2]),
        (-ey, half[1], ex, half[0], ez, half[2]),
        (ez, half[2], ex, half[0], ey, half[1]),
    )
    out = []
    for normal, offset, u, hu, v, hv in faces:
        face_center = center + normal * offset
        to_sensor = sensor - face_center
        distance = float(np.linalg.norm(to_sensor))
        cosine = float(normal @ to_sensor) / distance
        if cosine <= 0.0:
            continue
        n = rng.poisson(density * 4.0 * hu * hv * cosine / distance**2)
        a, b = rng.uniform(-1.0, 1.0, (2, n))
        points = face_center + a[:, None] * hu * u + b[:, None] * hv * v
        ray = points - sensor
        ray /= np.linalg.norm(ray, axis=1, keepdims=True)
        out.append(points + ray * rng.normal(0.0, 0.02, (n, 1)))  # range noise
    return np.concatenate(out) if out else np.zeros((0, 3))


def ground_points(
    center_xy: np.ndarray, half_m: float, n: int, boxes: Sequence[np.ndarray], rng: np.random.Generator
) -> np.ndarray:
    """(M, 3) points on z = 0 (noise 2 cm) in a square around ``center_xy``, none under ``boxes``."""
    xy = center_xy + rng.uniform(-half_m, half_m, (n, 2))
    points = np.column_stack([xy, rng.normal(0.0, 0.02, n)])
    if boxes:
        footprints = Boxes3D(np.array([[*b[:2], 0.0, b[3], b[4], 10.0, b[6]] for b in boxes]), "world")
        points = points[~footprints.points_in_boxes(points).any(axis=1)]
    return points


def scene_lidar(
    n_frames: int,
    sensor_at: Callable[[float], np.ndarray],
    boxes_at: Callable[[float], list[np.ndarray]],
    rng: np.random.Generator,
    *,
    sweeps_dt_s: Sequence[float] = (0.0,),
    ground_per_frame: int = 2500,
    ground_half_m: float = 20.0,
) -> ClipLidar:
    """Keyframes every 0.5 s; ``sensor_at(t)`` (3,) and ``boxes_at(t)`` (list of (7,)) at time ``t`` seconds.

    With several ``sweeps_dt_s`` (e.g. 0, -0.1, ...), each keyframe cloud is their union, with a 4th column
    ``dt_s`` (the clip's ``dt_column`` is then 3).
    """
    clouds = []
    for k in range(n_frames):
        t = k * PERIOD_US * 1e-6
        parts = []
        for dt in sweeps_dt_s:
            sensor = sensor_at(t + dt)
            boxes = boxes_at(t + dt)
            share = DENSITY / len(sweeps_dt_s)
            objects = [face_points(b, sensor, rng, share) for b in boxes]
            anchor = np.mean([b[:2] for b in boxes], axis=0) if boxes else sensor[:2]
            ground = ground_points(anchor, ground_half_m, ground_per_frame // len(sweeps_dt_s), boxes, rng)
            cloud = np.concatenate([*objects, ground])
            parts.append(np.column_stack([cloud, np.full(cloud.shape[0], dt)]))
        cloud = np.concatenate(parts).astype(np.float32)
        clouds.append(cloud if len(sweeps_dt_s) > 1 else cloud[:, :3])
    sensors = np.array([sensor_at(k * PERIOD_US * 1e-6) for k in range(n_frames)])
    times = T0_US + PERIOD_US * np.arange(n_frames, dtype=np.int64)
    return ClipLidar(times, tuple(clouds), sensors, dt_column=3 if len(sweeps_dt_s) > 1 else None)


def jittered(
    truth: np.ndarray, rng: np.random.Generator, position_m: float = 0.3, yaw_deg: float = 5.0, size_m: float = 0.3
) -> np.ndarray:
    """(K, 7) detections: truth with uniform noise of the given amplitudes (centre z: a third of ``position_m``)."""
    k = truth.shape[0]
    noise = np.column_stack(
        [
            rng.uniform(-position_m, position_m, (k, 2)),
            rng.uniform(-position_m / 3.0, position_m / 3.0, k),
            rng.uniform(-size_m, size_m, (k, 3)),
            np.deg2rad(rng.uniform(-yaw_deg, yaw_deg, k)),
        ]
    )
    out = truth + noise
    out[:, 3:6] = np.maximum(out[:, 3:6], 0.1)
    return out


def make_track(
    frames: Sequence[int] | np.ndarray,
    boxes: np.ndarray,
    *,
    label: str = "car",
    scores: np.ndarray | float = 0.8,
    track_id: int = 0,
    detected: np.ndarray | None = None,
) -> Track:
    """A tracker-style track over ``frames`` (rows not ``detected`` are interpolated ones)."""
    frames = np.asarray(frames, dtype=np.int64)
    k = frames.shape[0]
    detected = np.ones(k, dtype=bool) if detected is None else np.asarray(detected, dtype=bool)
    score_arr = np.broadcast_to(np.asarray(scores, dtype=np.float64), (k,)).copy()
    return Track(
        track_id=track_id,
        label=label,
        score=float(score_arr[detected].mean()),
        frame_indices=frames,
        timestamps_us=T0_US + PERIOD_US * frames,
        boxes=Boxes3D(boxes, "world", np.zeros((k, 2))),
        scores=score_arr,
        sources=tuple(BoxSource.DETECTED if d else BoxSource.INTERPOLATED for d in detected),
        detection_indices=np.where(detected, 0, -1),
    )
