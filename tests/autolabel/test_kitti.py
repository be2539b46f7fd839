"""KITTI tracking-layout reader and label_02 exporter: hand-computed geometry, poses, round trips."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from scipy.spatial.transform import Rotation

from autolabel.categories import Category
from autolabel.datasets.kitti import (
    IMAGE_02,
    IMAGE_03,
    META_POSES,
    VELODYNE,
    PoseSource,
    load_kitti_clip,
    parse_kitti_calib,
    poses_from_oxts,
)
from autolabel.datasets.model import ClipSource, FrameLabels
from autolabel.export.kitti import kitti_label_lines, write_kitti_labels
from calibration import EGO_FRAME, SE3, Boxes3D, InputError

EARTH_RADIUS_M = 6378137.0
SEQ = "0000"
# Velodyne (x fwd, y left, z up) -> camera (x right, y down, z fwd).
AXIS_SWAP = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
K_SMALL = np.array([[50.0, 0.0, 32.0], [0.0, 50.0, 24.0], [0.0, 0.0, 1.0]])
SIZE_SMALL = (64, 48)
K_WIDE = np.array([[100.0, 0.0, 100.0], [0.0, 100.0, 50.0], [0.0, 0.0, 1.0]])
SIZE_WIDE = (200, 100)

SHARED_DATA = Path(os.environ.get("AUTOLABEL_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
KITTI_FIXTURE = SHARED_DATA / "kitti_raw_clip"


# ------------------------------------------------------------------------------------------ helpers
def _hstack(rotation: np.ndarray, translation=(0.0, 0.0, 0.0)) -> np.ndarray:
    return np.column_stack([rotation, np.asarray(translation, dtype=np.float64)])


def _standard_calib(K: np.ndarray = K_SMALL, p2_offset=(0.0, 0.0, 0.0)) -> dict[str, np.ndarray]:
    """Axis-swap velodyne->camera, R_rect = I, P2 = K [I | offset], no IMU."""
    return {
        "P2": K @ _hstack(np.eye(3), p2_offset),
        "R_rect": np.eye(3),
        "Tr_velo_cam": _hstack(AXIS_SWAP),
    }


def _tilted_calib() -> dict[str, np.ndarray]:
    """A realistic calib: every matrix slightly rotated, a stereo offset, an IMU with tilt."""
    return {
        "P0": K_WIDE @ _hstack(np.eye(3)),
        "P2": K_WIDE @ _hstack(np.eye(3), (0.06, 0.002, 0.003)),
        "R_rect": Rotation.from_euler("xyz", [0.01, -0.008, 0.005]).as_matrix(),
        "Tr_velo_cam": _hstack(
            Rotation.from_euler("xyz", [0.004, 0.012, -0.006]).as_matrix() @ AXIS_SWAP, (0.01, -0.08, -0.27)
        ),
        "Tr_imu_velo": _hstack(Rotation.from_euler("xyz", [0.02, -0.015, 0.01]).as_matrix(), (-0.81, 0.32, -0.8)),
    }


_OBJECT_SPELLING = {"R_rect": "R0_rect", "Tr_velo_cam": "Tr_velo_to_cam", "Tr_imu_velo": "Tr_imu_to_velo"}


def _write_calib(path: Path, matrices: dict[str, np.ndarray], *, object_style: bool = False) -> Path:
    """Tracking style: ``R_rect 1 2 ...`` (no colon); object style: ``R0_rect: 1 2 ...``."""
    lines = []
    for key, matrix in matrices.items():
        numbers = " ".join(f"{v:.12e}" for v in np.asarray(matrix).reshape(-1))
        lines.append(f"{_OBJECT_SPELLING.get(key, key)}: {numbers}" if object_style else f"{key} {numbers}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def _make_seq(
    split_dir: Path,
    calib: dict[str, np.ndarray],
    *,
    num_frames: int = 3,
    image_size: tuple[int, int] = SIZE_SMALL,
    cameras: tuple[str, ...] = (IMAGE_02,),
    seq: str = SEQ,
) -> Path:
    """A KITTI tracking sequence with random points and blank images; returns the split directory."""
    rng = np.random.default_rng(0)
    _write_calib(split_dir / "calib" / f"{seq}.txt", calib)
    (split_dir / "velodyne" / seq).mkdir(parents=True)
    for camera in cameras:
        (split_dir / camera / seq).mkdir(parents=True)
    for n in range(num_frames):
        points = rng.uniform(-20, 20, size=(50 + n, 4)).astype(np.float32)
        points.tofile(split_dir / "velodyne" / seq / f"{n:06d}.bin")
        for camera in cameras:
            image = np.full((image_size[1], image_size[0], 3), 40 * n, dtype=np.uint8)
            cv2.imwrite(str(split_dir / camera / seq / f"{n:06d}.png"), image)
    return split_dir


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def _oxts_line(lat_deg: float, lon_deg: float, alt_m: float, roll: float, pitch: float, yaw: float) -> str:
    return " ".join(f"{v:.15g}" for v in [lat_deg, lon_deg, alt_m, roll, pitch, yaw, *([0.0] * 24)])


def _kitti_bbox(P2: np.ndarray, bottom, lwh, ry: float, size: tuple[int, int]) -> tuple[float, ...]:
    """The devkit's 2D box: compute_box_3d corners, projected with P2, clipped to the image."""
    length, w, h = lwh
    x = np.array([1, 1, -1, -1, 1, 1, -1, -1]) * length / 2
    y = np.array([0, 0, 0, 0, -1, -1, -1, -1]) * h
    z = np.array([1, -1, -1, 1, 1, -1, -1, 1]) * w / 2
    roty = np.array([[np.cos(ry), 0, np.sin(ry)], [0, 1, 0], [-np.sin(ry), 0, np.cos(ry)]])
    corners = roty @ np.vstack([x, y, z]) + np.asarray(bottom, dtype=np.float64)[:, None]
    uvw = P2 @ np.vstack([corners, np.ones(8)])
    assert np.all(uvw[2] > 0.1), "test boxes must be fully in front of the camera"
    u, v = uvw[0] / uvw[2], uvw[1] / uvw[2]
    return (
        float(np.clip(u.min(), 0, size[0] - 1)),
        float(np.clip(v.min(), 0, size[1] - 1)),
        float(np.clip(u.max(), 0, size[0] - 1)),
        float(np.clip(v.max(), 0, size[1] - 1)),
    )


def _label_line(P2, size, frame, track, kind, trunc, occ, lwh, bottom, ry) -> str:
    alpha = float(np.pi - np.mod(np.pi - (ry - np.arctan2(bottom[0], bottom[2])), 2 * np.pi))
    bbox = _kitti_bbox(P2, bottom, lwh, ry, size)
    length, w, h = lwh
    floats = [alpha, *bbox, h, w, length, *bottom, ry]
    return " ".join([str(frame), str(track), kind, str(trunc), str(occ), *(f"{v:.6f}" for v in floats)])


DONT_CARE_LINE = "0 -1 DontCare -1 -1 -10.000000 5.0 5.0 20.0 20.0 -1 -1 -1 -1000 -1000 -1000 -10"

# frame, track, type, truncated, occluded, (l, w, h), bottom centre (x, y, z) in cam0rect, ry
_OBJECTS = [
    (1, 5, "Cyclist", 1, 2, (1.8, 0.6, 1.7), (4.0, 1.5, 20.0), 2.8),
    (0, 1, "Pedestrian", 0, 1, (0.8, 0.6, 1.8), (-2.0, 1.7, 8.0), -1.2),
    (0, 0, "Car", 0, 0, (4.2, 1.7, 1.5), (1.5, 1.6, 12.0), 0.3),
    (1, 0, "Car", 0, 0, (4.2, 1.7, 1.5), (1.4, 1.6, 13.0), 0.31),
    (1, 7, "Van", 2, 3, (5.0, 2.0, 2.2), (-9.0, 1.8, 10.0), -0.5),  # partly outside the image
]


def _original_lines(calib: dict[str, np.ndarray]) -> list[str]:
    return [_label_line(calib["P2"], SIZE_WIDE, *obj) for obj in _OBJECTS]


def _roundtrip_seq(split_dir: Path, pose_kind: PoseSource) -> tuple[Path, list[str]]:
    calib = _tilted_calib()
    _make_seq(split_dir, calib, num_frames=3, image_size=SIZE_WIDE)
    originals = _original_lines(calib)
    _write_lines(split_dir / "label_02" / f"{SEQ}.txt", [DONT_CARE_LINE, *originals])
    if pose_kind is PoseSource.OXTS:
        oxts = [
            _oxts_line(49.0 + 1e-5 * n, 8.4 + 2e-5 * n, 110.0 + 0.1 * n, 0.01, -0.02, 0.3 + 0.05 * n)
            for n in range(3)
        ]
        _write_lines(split_dir / "oxts" / f"{SEQ}.txt", oxts)
    else:
        poses = [
            " ".join(f"{v:.12e}" for v in _hstack(Rotation.from_euler("y", 0.05 * n).as_matrix(), (0, 0, n)).ravel())
            for n in range(3)
        ]
        _write_lines(split_dir / "poses" / f"{SEQ}.txt", poses)
    return split_dir, originals


# ------------------------------------------------------------------------------------------ calib
def test_calib_spellings_with_and_without_colon_are_identical(tmp_path: Path) -> None:
    matrices = _tilted_calib()
    tracking = parse_kitti_calib(_write_calib(tmp_path / "tracking.txt", matrices))
    objects = parse_kitti_calib(_write_calib(tmp_path / "object.txt", matrices, object_style=True))
    # Colon glued to the first number, extra blank lines and an unknown key are fine too.
    glued_text = (tmp_path / "object.txt").read_text().replace(": ", ":") + "\nTr_cam_to_road: 1 2 3\n\n"
    glued_path = tmp_path / "glued.txt"
    glued_path.write_text(glued_text)
    glued = parse_kitti_calib(glued_path)
    for calib in (tracking, objects, glued):
        for key in ("P0", "P2", "R_rect", "Tr_velo_cam", "Tr_imu_velo"):
            np.testing.assert_array_equal(getattr(calib, key), getattr(tracking, key))
            np.testing.assert_allclose(getattr(calib, key), matrices[key], atol=1e-12)
        assert calib.P1 is None and calib.P3 is None
    assert tracking.R_rect.shape == (3, 3) and tracking.P2.shape == (3, 4) and tracking.Tr_velo_cam.shape == (3, 4)


def test_calib_errors_name_file_and_key(tmp_path: Path) -> None:
    missing = tmp_path / "missing.txt"
    with pytest.raises(InputError, match=r"missing\.txt"):
        parse_kitti_calib(missing)
    no_p2 = {k: v for k, v in _standard_calib().items() if k != "P2"}
    path = _write_calib(tmp_path / "nop2.txt", no_p2)
    with pytest.raises(InputError, match=r"nop2\.txt.*P2"):
        parse_kitti_calib(path)
    short = tmp_path / "short.txt"
    short.write_text(
        "P2: " + " ".join(["1"] * 12) + "\nR0_rect: 1 0 0 0 1 0 0 0\nTr_velo_to_cam: " + " ".join(["0"] * 12) + "\n"
    )
    with pytest.raises(InputError, match=r"short\.txt:2: R_rect has 8 numbers, expected 9"):
        parse_kitti_calib(short)
    bad = tmp_path / "bad.txt"
    bad.write_text("P2 1 2 x 4 5 6 7 8 9 10 11 12\n")
    with pytest.raises(InputError, match=r"bad\.txt:1: P2"):
        parse_kitti_calib(bad)


def test_camera_matches_kitti_projection_formula_with_rounded_tilted_calib(tmp_path: Path) -> None:
    calib_matrices = _tilted_calib()
    calib = parse_kitti_calib(_write_calib(tmp_path / "calib.txt", calib_matrices))
    camera = calib.camera(IMAGE_02, *SIZE_WIDE)
    rng = np.random.default_rng(3)
    points_velo = np.column_stack([rng.uniform(3, 60, 500), rng.uniform(-10, 10, 500), rng.uniform(-2, 2, 500)])
    r4, t4 = np.eye(4), np.eye(4)
    r4[:3, :3] = calib_matrices["R_rect"]
    t4[:3] = calib_matrices["Tr_velo_cam"]
    uvw = (calib_matrices["P2"] @ r4 @ t4 @ np.column_stack([points_velo, np.ones(500)]).T).T
    expected = uvw[:, :2] / uvw[:, 2:]
    projection = camera.project_ego(calib.ego_SE3_velo.transform_points(points_velo))
    np.testing.assert_allclose(projection.uv_px, expected, atol=1e-6)
    np.testing.assert_allclose(projection.depth_m, uvw[:, 2], atol=1e-6)


# ------------------------------------------------------------------------------------------ geometry
def test_hand_computed_box_and_camera_geometry(tmp_path: Path) -> None:
    split = _make_seq(tmp_path / "training", _standard_calib(p2_offset=(0.06, 0.0, 0.0)), num_frames=1)
    # ry = 0 straight ahead at depth 10 (bottom at y = 1.5, h = 1.5); ry = pi/2; one 2 m to the right.
    _write_lines(
        split / "label_02" / f"{SEQ}.txt",
        [
            "0 3 Car 0 0 0 0 0 10 10 1.5 1.6 4.0 0.0 1.5 10.0 0.0",
            f"0 4 Truck 0 0 0 0 0 10 10 3.0 2.5 8.0 2.0 1.0 15.0 {np.pi / 2}",
        ],
    )
    clip = load_kitti_clip(split, SEQ)
    gt = clip.frames[0].gt
    assert gt is not None and gt.boxes.frame == EGO_FRAME
    # cam (0, 1.5 - 0.75, 10) -> velo (z, -x, -y) = (10, 0, -0.75); ego = velo (no Tr_imu_velo).
    np.testing.assert_allclose(gt.boxes.data[0], [10.0, 0.0, -0.75, 4.0, 1.6, 1.5, -np.pi / 2], atol=1e-12)
    # cam (2, 1.0 - 1.5, 15) -> velo (15, -2, 0.5); yaw = -pi/2 - pi/2 = -pi -> wrapped to pi.
    np.testing.assert_allclose(gt.boxes.data[1], [15.0, -2.0, 0.5, 8.0, 2.5, 3.0, np.pi], atol=1e-12)
    assert gt.track_ids == ("3", "4")
    assert gt.categories == (Category.CAR, Category.TRUCK)
    assert gt.source_categories == ("Car", "Truck")
    np.testing.assert_array_equal(gt.scores, [1.0, 1.0])

    camera = clip.rig.camera(IMAGE_02)
    # P2 = K [I | t2], t2 = (0.06, 0, 0): camera 2 sits at cam0rect x = -0.06, i.e. velo y = +0.06.
    np.testing.assert_allclose(camera.ego_SE3_cam.translation, [0.0, 0.06, 0.0], atol=1e-12)
    np.testing.assert_allclose(camera.ego_SE3_cam.rotation, AXIS_SWAP.T, atol=1e-12)
    # ego (10, -0.94, 0.5) -> cam0rect (0.94, -0.5, 10) -> cam2 (1.0, -0.5, 10) -> (32 + 5, 24 - 2.5).
    projection = camera.project_ego(np.array([[10.0, -0.94, 0.5]]))
    np.testing.assert_allclose(projection.uv_px, [[37.0, 21.5]], atol=1e-9)
    assert projection.valid.all()
    assert clip.rig.lidars[VELODYNE].ego_SE3_lidar.allclose(SE3.identity())


def test_clip_structure_timestamps_root_and_seq_forms(tmp_path: Path) -> None:
    split = _make_seq(tmp_path / "kitti" / "training", _standard_calib(), num_frames=3)
    (split / "velodyne" / "0003").mkdir()  # another sequence folder does not matter
    by_parent = load_kitti_clip(tmp_path / "kitti", "0", frame_rate_hz=20.0)
    by_split = load_kitti_clip(split, 0, frame_rate_hz=20.0)
    for clip in (by_parent, by_split):
        assert clip.name == "kitti-0000" and clip.source is ClipSource.KITTI and clip.root == split
        assert clip.timestamps_synthetic and not clip.has_poses and not clip.has_gt
        assert clip.meta[META_POSES] == PoseSource.MISSING.value
        assert [f.token for f in clip.frames] == ["000000", "000001", "000002"]
        assert [f.timestamp_us for f in clip.frames] == [0, 50_000, 100_000]
        for frame in clip.frames:
            assert len(frame.sweeps) == 1 and frame.key_sweep.is_key and frame.key_sweep.sensor == VELODYNE
            assert frame.key_sweep.num_columns == 4 and frame.gt is None and frame.world_SE3_ego is None
            assert set(frame.cameras) == {IMAGE_02}
            assert frame.cameras[IMAGE_02].timestamp_us == frame.timestamp_us
        assert clip.frames[2].key_sweep.load_points().shape == (52, 4)
    assert (by_split.rig.camera(IMAGE_02).width_px, by_split.rig.camera(IMAGE_02).height_px) == SIZE_SMALL


def test_image_03_uses_p3(tmp_path: Path) -> None:
    matrices = _tilted_calib()
    matrices["P3"] = K_WIDE @ _hstack(np.eye(3), (-0.47, 0.001, 0.002))
    split = _make_seq(tmp_path / "training", matrices, num_frames=2, image_size=SIZE_WIDE, cameras=(IMAGE_02, IMAGE_03))
    clip = load_kitti_clip(split, SEQ)
    assert set(clip.frames[1].cameras) == {IMAGE_02, IMAGE_03}
    points_velo = np.array([[10.0, 1.0, 0.5], [25.0, -3.0, -1.0]])
    r4, t4 = np.eye(4), np.eye(4)
    r4[:3, :3], t4[:3] = matrices["R_rect"], matrices["Tr_velo_cam"]
    uvw = (matrices["P3"] @ r4 @ t4 @ np.column_stack([points_velo, np.ones(2)]).T).T
    ego_SE3_velo = clip.rig.lidars[VELODYNE].ego_SE3_lidar
    uv = clip.rig.camera(IMAGE_03).project_ego(ego_SE3_velo.transform_points(points_velo)).uv_px
    np.testing.assert_allclose(uv, uvw[:, :2] / uvw[:, 2:], atol=1e-6)
    # image_03 without P3 in the calib is an error naming the key.
    del matrices["P3"]
    _write_calib(split / "calib" / f"{SEQ}.txt", matrices)
    with pytest.raises(InputError, match="P3"):
        load_kitti_clip(split, SEQ)


# ------------------------------------------------------------------------------------------ poses
def test_oxts_one_metre_north_and_east(tmp_path: Path) -> None:
    lat0, lon0 = 49.0, 8.4
    dlat_deg = 1.0 / EARTH_RADIUS_M * 180.0 / np.pi  # 1 m north (Mercator with scale cos(lat0))
    dlon_deg = 1.0 / (EARTH_RADIUS_M * np.cos(np.deg2rad(lat0))) * 180.0 / np.pi  # 1 m east
    packets = np.zeros((3, 30))
    packets[:, :6] = [
        [lat0, lon0, 100.0, 0.0, 0.0, np.pi / 2],  # facing north
        [lat0 + dlat_deg, lon0, 100.0, 0.0, 0.0, np.pi / 2],  # 1 m north
        [lat0 + dlat_deg, lon0 + dlon_deg, 100.5, 0.0, 0.0, np.pi / 2 + 0.1],  # then 1 m east, 0.5 m up
    ]
    poses = poses_from_oxts(packets)
    assert poses[0].allclose(SE3.identity(), atol=1e-9)
    # Facing north, north is the first IMU frame's +x and east is its -y.
    np.testing.assert_allclose(poses[1].translation, [1.0, 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(poses[2].translation, [1.0, -1.0, 0.5], atol=1e-6)
    assert poses[2].yaw_rad == pytest.approx(0.1, abs=1e-12)

    # Through the reader: ego = IMU, and oxts without Tr_imu_velo is refused.
    matrices = _standard_calib()
    matrices["Tr_imu_velo"] = _hstack(np.eye(3), (-0.8, 0.3, -0.9))
    split = _make_seq(tmp_path / "training", matrices, num_frames=3)
    oxts_path = _write_lines(split / "oxts" / f"{SEQ}.txt", [_oxts_line(*row[:6]) for row in packets])
    clip = load_kitti_clip(split, SEQ)
    assert clip.has_poses and clip.meta[META_POSES] == PoseSource.OXTS.value
    assert clip.frames[0].world_SE3_ego.allclose(SE3.identity(), atol=1e-9)
    np.testing.assert_allclose(clip.frames[1].world_SE3_ego.translation, [1.0, 0.0, 0.0], atol=1e-6)
    assert clip.frames[1].key_sweep.world_SE3_ego is clip.frames[1].world_SE3_ego
    assert clip.frames[1].cameras[IMAGE_02].world_SE3_ego is clip.frames[1].world_SE3_ego
    np.testing.assert_allclose(clip.rig.lidars[VELODYNE].ego_SE3_lidar.translation, [0.8, -0.3, 0.9], atol=1e-12)

    _write_lines(oxts_path, [_oxts_line(*row[:6]) for row in packets[:2]])
    with pytest.raises(InputError, match=r"oxts.*0000\.txt: 2 pose lines for 3 frames"):
        load_kitti_clip(split, SEQ)
    _write_lines(oxts_path, [_oxts_line(*row[:6]) for row in packets])
    _write_calib(split / "calib" / f"{SEQ}.txt", _standard_calib())
    with pytest.raises(InputError, match="Tr_imu_velo"):
        load_kitti_clip(split, SEQ)


def test_odometry_poses_camera_forward_is_ego_forward(tmp_path: Path) -> None:
    split = _make_seq(tmp_path / "training", _standard_calib(), num_frames=3)
    turn = 0.2  # camera 2 rotated about its +y (down) axis: turning right, i.e. ego yaw -0.2
    rows = [
        _hstack(np.eye(3)),
        _hstack(np.eye(3), (0.0, 0.0, 1.0)),
        _hstack(Rotation.from_euler("y", turn).as_matrix(), (0.5, 0.0, 2.0)),
    ]
    _write_lines(split / "poses" / f"{SEQ}.txt", [" ".join(f"{v:.12e}" for v in r.ravel()) for r in rows])
    clip = load_kitti_clip(split, SEQ)
    assert clip.meta[META_POSES] == PoseSource.POSES.value
    assert clip.frames[0].world_SE3_ego.allclose(SE3.identity())
    assert clip.frames[1].world_SE3_ego.allclose(SE3(np.eye(3), [1.0, 0.0, 0.0]), atol=1e-12)
    # cam (0.5, 0, 2) -> ego (2, -0.5, 0).
    np.testing.assert_allclose(clip.frames[2].world_SE3_ego.translation, [2.0, -0.5, 0.0], atol=1e-12)
    assert clip.frames[2].world_SE3_ego.yaw_rad == pytest.approx(-turn, abs=1e-12)


# ------------------------------------------------------------------------------------------ round trip
@pytest.mark.parametrize("pose_kind", [PoseSource.OXTS, PoseSource.POSES])
def test_read_write_read_round_trip(tmp_path: Path, pose_kind: PoseSource) -> None:
    split, originals = _roundtrip_seq(tmp_path / "a" / "training", pose_kind)
    clip = load_kitti_clip(split, SEQ)
    assert clip.has_poses and clip.meta[META_POSES] == pose_kind.value
    assert clip.has_gt and [len(f.gt) for f in clip.frames] == [2, 3, 0]
    assert clip.frames[1].gt.source_categories == ("Cyclist", "Car", "Van")
    np.testing.assert_array_equal(clip.frames[1].gt.truncation, [1.0, 0.0, 2.0])
    np.testing.assert_array_equal(clip.frames[1].gt.occlusion, [2, 0, 3])

    labels = [f.gt for f in clip.frames]
    lines = kitti_label_lines(clip, labels)
    expected = sorted(originals, key=lambda line: (int(line.split()[0]), int(line.split()[1])))
    assert len(lines) == len(expected)
    for written, original in zip(lines, expected, strict=True):
        w_tokens, o_tokens = written.split(), original.split()
        assert len(w_tokens) == len(o_tokens) == 17
        assert w_tokens[:3] == o_tokens[:3]
        assert [int(float(t)) for t in w_tokens[3:5]] == [int(float(t)) for t in o_tokens[3:5]]
        np.testing.assert_allclose([float(t) for t in w_tokens[5:]], [float(t) for t in o_tokens[5:]], atol=2e-6)
    # The Van's 2D box is clipped at the left image border.
    van = next(line for line in lines if " Van " in line).split()
    assert float(van[6]) == 0.0

    split_b = tmp_path / "b" / "training"
    shutil.copytree(split, split_b)
    write_kitti_labels(split_b / "label_02" / f"{SEQ}.txt", clip, labels)
    assert sorted(p.name for p in (split_b / "label_02").iterdir()) == [f"{SEQ}.txt"]  # no temp files left
    clip_b = load_kitti_clip(split_b, SEQ)
    for frame_a, frame_b in zip(clip.frames, clip_b.frames, strict=True):
        a, b = frame_a.gt, frame_b.gt
        assert b is not None and len(a) == len(b)
        order_a, order_b = np.argsort([int(t) for t in a.track_ids]), np.argsort([int(t) for t in b.track_ids])
        a, b = a.subset(order_a), b.subset(order_b)
        assert a.track_ids == b.track_ids and a.categories == b.categories
        assert a.source_categories == b.source_categories
        np.testing.assert_allclose(b.boxes.data[:, :6], a.boxes.data[:, :6], atol=1e-5)
        yaw_error = np.angle(np.exp(1j * (b.boxes.yaws_rad - a.boxes.yaws_rad)))
        np.testing.assert_allclose(yaw_error, 0.0, atol=1e-5)
        np.testing.assert_array_equal(b.occlusion, a.occlusion)
        np.testing.assert_array_equal(b.truncation, a.truncation)


def test_export_track_ids_scores_order_and_hidden_boxes(tmp_path: Path) -> None:
    split = _make_seq(tmp_path / "training", _standard_calib(K_WIDE), num_frames=2, image_size=SIZE_WIDE)
    clip = load_kitti_clip(split, SEQ)

    def labels(rows: list[tuple[str, Category, float, tuple[float, float, float]]]) -> FrameLabels:
        boxes = Boxes3D([[*xyz, 4.0, 1.8, 1.5, 0.0] for *_, xyz in rows], EGO_FRAME)
        return FrameLabels(boxes, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])

    per_frame = [
        labels([("b7", Category.BUS, 0.4, (20.0, 0.0, 0.0)), ("12", Category.CAR, 0.9, (10.0, 0.0, 0.0))]),
        labels(
            [
                ("3", Category.PEDESTRIAN, 0.8, (-10.0, 0.0, 0.0)),
                ("a1", Category.BARRIER, 0.5, (8.0, 2.0, 0.0)),
                ("9", Category.CAR, 0.7, (1.0, 0.0, 0.0)),  # from x = -1 to 3: straddles the camera
            ]
        ),
    ]
    lines = kitti_label_lines(clip, per_frame, include_score=True)
    tokens = [line.split() for line in lines]
    # Numeric ids kept; others numbered after the largest numeric id in first-appearance order.
    assert [(t[0], t[1], t[2]) for t in tokens] == [
        ("0", "12", "Car"),
        ("0", "13", "Tram"),
        ("1", "3", "Pedestrian"),
        ("1", "9", "Car"),
        ("1", "14", "Misc"),
    ]
    assert [float(t[17]) for t in tokens] == [0.9, 0.4, 0.8, 0.7, 0.5]
    assert all(len(t) == 18 and t[3] == "0" and t[4] == "0" for t in tokens)
    # Box behind the camera: no 2D box.
    assert tokens[2][6:10] == ["-1.000000"] * 4
    # Box through the camera: clipped at the near plane, it covers the whole image.
    assert [float(v) for v in tokens[3][6:10]] == [0.0, 0.0, SIZE_WIDE[0] - 1.0, SIZE_WIDE[1] - 1.0]
    # Barrier 8 m ahead, 2 m left: inside the image, not clipped.
    x1, y1, x2, y2 = (float(v) for v in tokens[4][6:10])
    assert 0.0 < x1 < x2 < SIZE_WIDE[0] / 2 and 0.0 < y1 < y2 < SIZE_WIDE[1] - 1
    # Ego yaw 0 (heading +x = camera +z): ry = -pi/2; a centred car has alpha = ry.
    assert float(tokens[0][16]) == pytest.approx(-np.pi / 2, abs=1e-6)
    assert float(tokens[0][5]) == pytest.approx(-np.pi / 2, abs=1e-6)
    # Camera box: bottom centre y = +0.75 (camera y down, box centre at ego z = 0), depth 10.
    assert [float(v) for v in tokens[0][13:16]] == pytest.approx([0.0, 0.75, 10.0], abs=1e-6)
    assert len(kitti_label_lines(clip, per_frame)[0].split()) == 17

    out = tmp_path / "out.txt"
    out.write_text("stale\n")
    write_kitti_labels(out, clip, per_frame)
    assert out.read_text().splitlines() == kitti_label_lines(clip, per_frame)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt", "training"]

    with pytest.raises(InputError, match="2 frames"):
        kitti_label_lines(clip, per_frame[:1])
    with pytest.raises(InputError, match="no KITTI camera-0 calibration"):
        kitti_label_lines(dataclasses.replace(clip, meta={}), per_frame)


# ------------------------------------------------------------------------------------------ bad input
def test_bad_inputs_name_the_file(tmp_path: Path) -> None:
    split = _make_seq(tmp_path / "training", _standard_calib(), num_frames=3)
    velo = split / "velodyne" / SEQ

    with pytest.raises(InputError, match=r"available sequences: \['0000'\]"):
        load_kitti_clip(split, "0042")
    with pytest.raises(InputError, match="nowhere"):
        load_kitti_clip(tmp_path / "nowhere", SEQ)

    calib_path = split / "calib" / f"{SEQ}.txt"
    calib_text = calib_path.read_text()
    calib_path.unlink()
    with pytest.raises(InputError, match=rf"{re.escape(str(calib_path))}: calibration file not found"):
        load_kitti_clip(split, SEQ)
    _write_calib(calib_path, {k: v for k, v in _standard_calib().items() if k != "P2"})
    with pytest.raises(InputError, match=rf"{re.escape(str(calib_path))}: .*P2"):
        load_kitti_clip(split, SEQ)
    calib_path.write_text(calib_text)

    good = (velo / "000001.bin").read_bytes()
    (velo / "000001.bin").write_bytes(b"\0" * (4 * 4 * 10 + 3))  # truncated
    with pytest.raises(InputError, match=r"000001\.bin: 163 bytes"):
        load_kitti_clip(split, SEQ)
    five_columns = np.ones((3, 5), dtype=np.float32)  # 60 bytes: not a whole number of 16-byte rows
    assert five_columns.nbytes % 16
    five_columns.tofile(velo / "000001.bin")
    with pytest.raises(InputError, match=r"000001\.bin: 60 bytes .*4-column"):
        load_kitti_clip(split, SEQ)
    with_nan = np.ones((10, 4), dtype=np.float32)
    with_nan[4, 1] = np.nan
    with_nan.tofile(velo / "000001.bin")
    clip = load_kitti_clip(split, SEQ)  # stat-only checks pass; the read finds the NaN
    with pytest.raises(InputError, match=r"000001\.bin: 1 of 10 points contain NaN"):
        clip.frames[1].key_sweep.load_points()
    (velo / "000001.bin").write_bytes(good)
    (velo / "notes.bin").write_bytes(good)
    with pytest.raises(InputError, match=r"notes\.bin"):
        load_kitti_clip(split, SEQ)
    (velo / "notes.bin").unlink()

    image_1 = split / IMAGE_02 / SEQ / "000001.png"
    cv2.imwrite(str(image_1), np.zeros((SIZE_SMALL[1] + 2, SIZE_SMALL[0], 3), dtype=np.uint8))
    clip = load_kitti_clip(split, SEQ)
    clip.frames[0].cameras[IMAGE_02].load()
    with pytest.raises(InputError, match=r"000001\.png: image is 64x50 px"):
        clip.frames[1].cameras[IMAGE_02].load()
    image_1.unlink()
    with pytest.raises(InputError, match=r"000001\.png: image file not found"):
        load_kitti_clip(split, SEQ)

    empty_split = tmp_path / "empty" / "training"
    (empty_split / "velodyne" / SEQ).mkdir(parents=True)
    with pytest.raises(InputError, match=r"no \.bin point files"):
        load_kitti_clip(empty_split, SEQ)


def test_malformed_label_lines_name_file_and_line(tmp_path: Path) -> None:
    split = _make_seq(tmp_path / "training", _standard_calib(), num_frames=2)
    label_path = split / "label_02" / f"{SEQ}.txt"
    good = "0 3 Car 0 0 0 0 0 10 10 1.5 1.6 4.0 0.0 1.5 10.0 0.0"
    for bad, problem in [
        ("0 4 Car 0 0 0 0 0 10 10 1.5 1.6 4.0 0.0 1.5 10.0", "16 columns"),
        ("0 4 Car 0 0 0 0 0 10 ten 1.5 1.6 4.0 0.0 1.5 10.0 0.0", "malformed"),
        ("0 4 Car 0 0 0 0 0 10 10 1.5 -1.6 4.0 0.0 1.5 10.0 0.0", "negative box size"),
        ("5 4 Car 0 0 0 0 0 10 10 1.5 1.6 4.0 0.0 1.5 10.0 0.0", "frame 5"),
    ]:
        _write_lines(label_path, [good, DONT_CARE_LINE, bad])
        with pytest.raises(InputError, match=rf"{re.escape(str(label_path))}:3: .*{problem}"):
            load_kitti_clip(split, SEQ)
    _write_lines(label_path, [good, DONT_CARE_LINE, good + " 0.25"])
    clip = load_kitti_clip(split, SEQ)
    assert [len(f.gt) for f in clip.frames] == [2, 0]
    np.testing.assert_array_equal(clip.frames[0].gt.scores, [1.0, 0.25])
    assert clip.frames[1].gt is not None


# ------------------------------------------------------------------------------------------ real data
@pytest.mark.real_data
def test_real_kitti_fixture() -> None:
    if not (KITTI_FIXTURE / "training").is_dir():
        pytest.skip(f"KITTI fixture not found at {KITTI_FIXTURE} (set AUTOLABEL_SHARED_DATA)")
    clip = load_kitti_clip(KITTI_FIXTURE, SEQ)
    assert len(clip) == 30 and clip.name == "kitti-0000"
    assert not clip.has_poses and clip.frames[0].gt is None and not clip.has_gt
    assert clip.meta[META_POSES] == PoseSource.MISSING.value
    for frame in clip.frames:
        assert len(frame.sweeps) == 1 and frame.key_sweep.is_key
        assert 111_700 <= frame.key_sweep.num_points <= 114_300

    calib_path = KITTI_FIXTURE / "training" / "calib" / f"{SEQ}.txt"
    calib = parse_kitti_calib(calib_path)
    assert calib.Tr_imu_velo is not None
    r4, t4 = np.eye(4), np.eye(4)
    r4[:3, :3], t4[:3] = calib.R_rect, calib.Tr_velo_cam
    camera = clip.rig.camera(IMAGE_02)
    assert (camera.width_px, camera.height_px) == (1242, 375)
    for index in (0, 29):
        frame = clip.frames[index]
        projection = camera.project_ego(frame.key_sweep.load_points_ego())
        assert 15_000 <= int(projection.valid.sum()) <= 18_000
        depth = projection.depth_m[projection.valid]
        assert depth.min() >= 3.0 and depth.max() <= 80.0
        # Against the README formula in float64 (load_points_ego keeps float32, ~1e-4 px near by).
        points = frame.key_sweep.load_points().astype(np.float64)
        projection = camera.project_ego(frame.key_sweep.ego_SE3_lidar.transform_points(points))
        uvw = (calib.P2 @ r4 @ t4 @ np.column_stack([points[:, :3], np.ones(len(points))]).T).T
        readme_uv = uvw[:, :2] / uvw[:, 2:]
        # The file's matrices are rounded to 7 digits, so R_rect @ Tr_velo_cam is not exactly rigid
        # (|R R^T - I| ~ 5e-8); its nearest rotation moves pixels by at most ~2.3e-5 px here.
        np.testing.assert_allclose(projection.uv_px[projection.valid], readme_uv[projection.valid], atol=1e-4)
        image = frame.cameras[IMAGE_02].load()
        assert image.shape == (375, 1242, 3) and image.dtype == np.uint8
        with Image.open(frame.cameras[IMAGE_02].path) as pil_image:
            np.testing.assert_array_equal(image, np.asarray(pil_image.convert("RGB")))
