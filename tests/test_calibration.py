"""Calibration and lift: rendered checkerboards through a known camera, kiosk files, EXIF, metric lift."""

from __future__ import annotations

import argparse
import io
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from calibration.cli import add_calibrate_parser, calibrate_intrinsics_main, calibrate_placement_main
from calibration.intrinsics import (
    FILM_35MM_DIAGONAL_MM,
    CalibrationError,
    Intrinsics,
    calibrate_intrinsics,
    default_intrinsics,
    intrinsics_from_exif,
    parse_board,
)
from calibration.kiosk import (
    KioskError,
    back_project_mm,
    choose_intrinsics,
    load_kiosk,
    save_intrinsics,
    save_placement,
    undistort_points,
)
from calibration.placement import (
    Placement,
    camera_up_vector,
    floor_distance_mm,
    placement_manual,
    root_depth_mm,
)
from calibration.render import render_board_view, render_calibration_set
from daemon.lift import (
    camera_frame_mm,
    head_forward_of_plumb_mm,
    landmark_height_mm,
    pelvic_height_difference_mm,
    shoulder_height_difference_mm,
)
from daemon.views import BP, ViewPose

BOARD = (9, 6)
SQUARE_MM = 25.0
IMAGE_SIZE = (1280, 960)
# A phone-like camera with visible barrel distortion and an off-centre principal point.
TRUE_CAMERA = Intrinsics(
    fx=1000.0, fy=1008.0, cx=652.0, cy=470.0, dist=np.array([-0.12, 0.05, 0.001, -0.0005, 0.0]),
    source="kiosk", image_size=IMAGE_SIZE,
)


@pytest.fixture(scope="module")
def board_photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """15 rendered board photos plus one photo without a board, as a technician's folder."""
    folder = tmp_path_factory.mktemp("board_photos")
    views = render_calibration_set(TRUE_CAMERA, IMAGE_SIZE, BOARD, SQUARE_MM, count=15, seed=3)
    for index, view in enumerate(views):
        cv2.imwrite(str(folder / f"board_{index:02d}.png"), view.image)
    cv2.imwrite(str(folder / "no_board.jpg"), np.full((IMAGE_SIZE[1], IMAGE_SIZE[0]), 128, np.uint8))
    return folder


def _floor_view(camera_height: float, distance: float, pitch_deg: float, board: tuple[int, int], square_mm: float):
    """A board lying on the floor, centred on the mark, seen by TRUE_CAMERA at a known placement."""
    up = camera_up_vector(pitch_deg)
    forward = np.array([0.0, -math.sin(math.radians(pitch_deg)), math.cos(math.radians(pitch_deg))])
    # Board x along the camera's x, board y away along the floor, board z up: a right-handed frame.
    rotation = np.column_stack([[1.0, 0.0, 0.0], forward, up])
    tvec = -camera_height * up + distance * forward
    rvec = cv2.Rodrigues(rotation)[0].ravel()
    return render_board_view(
        TRUE_CAMERA.camera_matrix, TRUE_CAMERA.dist, IMAGE_SIZE, board, square_mm, rvec, tvec, centred=True
    )


# --- intrinsics --------------------------------------------------------------------------------


def test_checkerboard_calibration_recovers_the_camera(board_photos: Path) -> None:
    result = calibrate_intrinsics(board_photos, BOARD, SQUARE_MM)
    matrix = np.asarray(result["camera_matrix"])
    for got, want in ((matrix[0, 0], TRUE_CAMERA.fx), (matrix[1, 1], TRUE_CAMERA.fy),
                      (matrix[0, 2], TRUE_CAMERA.cx), (matrix[1, 2], TRUE_CAMERA.cy)):
        assert got == pytest.approx(want, rel=0.01)
    assert result["image_size"] == list(IMAGE_SIZE)
    assert result["views_used"] == 15
    assert result["rms"] < 0.5
    assert result["rejected"] == [{"file": "no_board.jpg", "reason": "9x6 board not found"}]
    assert not any("RMS" in w for w in result["warnings"])


def test_calibration_fails_clearly_without_boards(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "blank.png"), np.zeros((100, 100), np.uint8))
    with pytest.raises(CalibrationError, match="blank.png: 9x6 board not found"):
        calibrate_intrinsics(tmp_path, BOARD, SQUARE_MM)


def test_poor_coverage_is_warned(tmp_path: Path) -> None:
    """Boards only in the image centre leave the distortion unlearned at the edges: warn."""
    views = render_calibration_set(
        TRUE_CAMERA, IMAGE_SIZE, BOARD, SQUARE_MM, count=5, seed=5, distance_mm=(1100.0, 1300.0)
    )
    for index, view in enumerate(views):
        cv2.imwrite(str(tmp_path / f"far_{index}.png"), view.image)
    result = calibrate_intrinsics(tmp_path, BOARD, SQUARE_MM)
    assert any("cover" in warning for warning in result["warnings"])
    assert any("only 5 photos" in warning for warning in result["warnings"])


def test_parse_board() -> None:
    assert parse_board("9x6") == (9, 6)
    with pytest.raises(ValueError, match="COLSxROWS"):
        parse_board("9by6")


def test_default_intrinsics_use_the_long_side() -> None:
    portrait = default_intrinsics((3000, 4000), 65.0)
    assert portrait.source == "default"
    assert portrait.fy == pytest.approx(2000.0 / math.tan(math.radians(32.5)))
    assert portrait.fx == portrait.fy
    assert (portrait.cx, portrait.cy) == (1499.5, 1999.5)
    assert default_intrinsics((4000, 3000), 65.0).fx == pytest.approx(portrait.fx)


def _jpeg_with_exif(size: tuple[int, int], tags: dict[int, object]) -> bytes:
    exif = Image.Exif()
    exif_ifd = exif.get_ifd(0x8769)
    exif_ifd.update(tags)
    buffer = io.BytesIO()
    Image.new("RGB", size, (90, 90, 90)).save(buffer, "JPEG", exif=exif)
    return buffer.getvalue()


def test_exif_35mm_focal_length() -> None:
    photo = _jpeg_with_exif((300, 400), {0xA405: 26})
    intrinsics = intrinsics_from_exif(photo, (300, 400))
    assert intrinsics is not None and intrinsics.source == "exif"
    assert intrinsics.fx == pytest.approx(26.0 / FILM_35MM_DIAGONAL_MM * 500.0)
    # The same photo served at twice the size: the focal length in pixels doubles.
    assert intrinsics_from_exif(photo, (600, 800)).fx == pytest.approx(2 * intrinsics.fx)


def test_exif_focal_length_with_focal_plane_resolution() -> None:
    # 4.25 mm lens, 1 um pixels (10000 px/cm) on a 4000 px wide sensor image, photo resized to 1000 px.
    tags = {0x920A: 4.25, 0xA20E: 10000.0, 0xA210: 3, 0xA002: 4000, 0xA003: 3000}
    intrinsics = intrinsics_from_exif(tags, (1000, 750))
    assert intrinsics is not None
    assert intrinsics.fx == pytest.approx(4250.0 / 4)


def test_no_exif_falls_back_to_default() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (300, 400)).save(buffer, "JPEG")
    assert intrinsics_from_exif(buffer.getvalue(), (300, 400)) is None
    chosen = choose_intrinsics((300, 400), kiosk=None, exif_source=buffer.getvalue(), default_vfov_deg=65.0)
    assert chosen.source == "default"


# --- points ----------------------------------------------------------------------------------


def test_point_round_trip_within_a_millimetre() -> None:
    rng = np.random.default_rng(7)
    depth = rng.uniform(1500.0, 4500.0, 200)
    normalized = rng.uniform(-0.5, 0.5, (200, 2))
    points = np.column_stack([normalized * depth[:, None], depth])
    pixels, _ = cv2.projectPoints(points, np.zeros(3), np.zeros(3), TRUE_CAMERA.camera_matrix, TRUE_CAMERA.dist)
    lifted = back_project_mm(pixels.reshape(-1, 2), depth, TRUE_CAMERA)
    assert np.max(np.linalg.norm(lifted - points, axis=1)) < 1.0


def test_undistort_points_keeps_nan_rows() -> None:
    points = np.array([[100.0, 100.0], [np.nan, np.nan]])
    out = undistort_points(points, TRUE_CAMERA)
    assert np.all(np.isfinite(out[0])) and np.all(np.isnan(out[1]))
    plain = Intrinsics(fx=1000, fy=1000, cx=640, cy=480)
    assert np.array_equal(undistort_points(points[:1], plain), points[:1])


def test_intrinsics_scale_to_a_resized_photo() -> None:
    half = TRUE_CAMERA.scaled_to((640, 480))
    assert half.fx == pytest.approx(500.0)
    assert half.cx == pytest.approx((652.0 + 0.5) / 2 - 0.5)
    with pytest.raises(ValueError, match="aspect ratio or orientation"):
        TRUE_CAMERA.scaled_to((960, 1280))


# --- kiosk file --------------------------------------------------------------------------------


def test_kiosk_round_trip(board_photos: Path, tmp_path: Path) -> None:
    kiosk_path = tmp_path / "kiosks" / "front.json"
    save_placement(kiosk_path, placement_manual(3000.0, 1100.0, 5.0))
    save_intrinsics(kiosk_path, calibrate_intrinsics(board_photos, BOARD, SQUARE_MM))
    kiosk = load_kiosk(kiosk_path)
    assert kiosk.intrinsics is not None and kiosk.intrinsics.source == "kiosk"
    assert kiosk.intrinsics.fx == pytest.approx(TRUE_CAMERA.fx, rel=0.01)
    assert kiosk.placement == Placement(3000.0, 1100.0, 5.0, 0.0, "manual", None)
    assert kiosk.views_used == 15
    assert sorted(p.name for p in kiosk_path.parent.iterdir()) == ["front.json"]  # no temp files left
    chosen = choose_intrinsics((640, 480), kiosk=kiosk)
    assert chosen.source == "kiosk" and chosen.fx == pytest.approx(kiosk.intrinsics.fx / 2)
    # A photo in another orientation cannot be from this camera: EXIF or default instead.
    assert choose_intrinsics((480, 640), kiosk=kiosk).source == "default"


GOOD_KIOSK = {
    "version": 1,
    "camera_matrix": [[1000.0, 0.0, 640.0], [0.0, 1000.0, 480.0], [0.0, 0.0, 1.0]],
    "dist_coeffs": [0.0, 0.0, 0.0, 0.0, 0.0],
    "image_size": [1280, 960],
}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"camera_matrix": [[1000.0, 0.0], [0.0, 1000.0]]}, "camera_matrix must be a 3x3"),
        ({"camera_matrix": [[-5.0, 0.0, 640.0], [0.0, 1000.0, 480.0], [0.0, 0.0, 1.0]]}, "must be positive"),
        ({"camera_matrix": [[1000.0, 0.0, 4000.0], [0.0, 1000.0, 480.0], [0.0, 0.0, 1.0]]}, "outside"),
        ({"dist_coeffs": [0.1, 0.2, 0.3]}, "dist_coeffs must hold"),
        ({"image_size": [1280]}, "image_size must be"),
        ({"version": 2}, "version 2 is not supported"),
        ({"placement": {"standing_distance_mm": 3.0}}, "standing_distance_mm: 3.0 is outside"),
        ({"placement": {"standing_distance_mm": "far"}}, "must be a finite number"),
    ],
)
def test_kiosk_validation_errors(tmp_path: Path, change: dict, message: str) -> None:
    path = tmp_path / "kiosk.json"
    path.write_text(json.dumps({**GOOD_KIOSK, **change}))
    with pytest.raises(KioskError, match=message):
        load_kiosk(path)


def test_kiosk_file_errors(tmp_path: Path) -> None:
    with pytest.raises(KioskError, match="does not exist"):
        load_kiosk(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"camera_matrix": [1,')
    with pytest.raises(KioskError, match="not valid JSON"):
        load_kiosk(broken)
    empty = tmp_path / "empty.json"
    empty.write_text("{}")
    with pytest.raises(KioskError, match="neither intrinsics"):
        load_kiosk(empty)


# --- placement ---------------------------------------------------------------------------------


def test_placement_from_a_floor_board(board_photos: Path, tmp_path: Path) -> None:
    kiosk_path = tmp_path / "kiosk.json"
    assert calibrate_intrinsics_main(board_photos, "9x6", SQUARE_MM, kiosk_path, stdout=io.StringIO()) == 0
    view = _floor_view(camera_height=1000.0, distance=1800.0, pitch_deg=12.0, board=(9, 6), square_mm=60.0)
    photo = tmp_path / "floor.png"
    cv2.imwrite(str(photo), view.image)
    assert calibrate_placement_main(kiosk_path, image=photo, board="9x6", square_mm=60.0, stdout=io.StringIO()) == 0
    placement = load_kiosk(kiosk_path).placement
    assert placement is not None and placement.method == "marker"
    assert placement.camera_height_mm == pytest.approx(1000.0, rel=0.01)
    assert placement.standing_distance_mm == pytest.approx(1800.0, rel=0.01)
    assert placement.pitch_deg == pytest.approx(12.0, abs=0.5)
    assert placement.roll_deg == pytest.approx(0.0, abs=0.5)
    assert load_kiosk(kiosk_path).intrinsics is not None  # intrinsics kept


def test_placement_geometry() -> None:
    placement = placement_manual(3000.0, camera_height_mm=1000.0, pitch_deg=10.0)
    up = camera_up_vector(10.0)
    # Hips at lens height: depth along the tilted axis is D cos(pitch).
    assert root_depth_mm(placement, 1000.0) == pytest.approx(3000.0 * math.cos(math.radians(10.0)))
    # The floor point straight ahead at 3 m, seen through the camera, measures 3 m back.
    mark = -1000.0 * up + 3000.0 * np.array([0.0, -math.sin(math.radians(10.0)), math.cos(math.radians(10.0))])
    camera = Intrinsics(fx=1000, fy=1000, cx=640, cy=480)
    pixel = np.array([mark[0] / mark[2] * 1000 + 640, mark[1] / mark[2] * 1000 + 480])
    assert floor_distance_mm(pixel, camera, placement) == pytest.approx(3000.0, rel=1e-6)
    with pytest.raises(ValueError, match="camera_height_mm"):
        placement_manual(3000.0, camera_height_mm=1.1)  # metres typed for millimetres


def test_placement_cli_by_hand_and_errors(tmp_path: Path) -> None:
    kiosk_path = tmp_path / "kiosk.json"
    parser = argparse.ArgumentParser(prog="skeletond")
    add_calibrate_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["calibrate", "placement", "--kiosk", str(kiosk_path), "--distance-mm", "3000", "--camera-height-mm", "1200"]
    )
    assert args.func(args) == 0
    assert load_kiosk(kiosk_path).placement.camera_height_mm == 1200.0
    args = parser.parse_args(["calibrate", "placement", "--kiosk", str(kiosk_path)])
    assert args.func(args) == 2
    args = parser.parse_args(["calibrate", "intrinsics", "--images", str(tmp_path), "--board", "9by6",
                              "--square-mm", "25", "--out", str(tmp_path / "k2.json")])
    assert args.func(args) == 2
    args = parser.parse_args(["calibrate", "show", "--kiosk", str(kiosk_path)])
    assert args.func(args) == 0


# --- lift --------------------------------------------------------------------------------------

# A standing person, metres, hip-centred, x = the person's left (image right in a front view),
# y down, z away from the camera; proportions of a 1.75 m adult.
_SKELETON = {
    "nose": (0.0, -0.68, -0.10), "left_eye_inner": (0.015, -0.715, -0.085), "left_eye": (0.032, -0.715, -0.08),
    "left_eye_outer": (0.048, -0.715, -0.075), "right_eye_inner": (-0.015, -0.715, -0.085),
    "right_eye": (-0.032, -0.715, -0.08), "right_eye_outer": (-0.048, -0.715, -0.075),
    "left_ear": (0.075, -0.70, 0.0), "right_ear": (-0.075, -0.70, 0.0), "mouth_left": (0.025, -0.64, -0.09),
    "mouth_right": (-0.025, -0.64, -0.09), "left_shoulder": (0.19, -0.50, 0.0), "right_shoulder": (-0.19, -0.50, 0.0),
    "left_elbow": (0.23, -0.22, 0.02), "right_elbow": (-0.23, -0.22, 0.02), "left_wrist": (0.25, 0.03, -0.01),
    "right_wrist": (-0.25, 0.03, -0.01), "left_pinky": (0.26, 0.11, -0.01), "right_pinky": (-0.26, 0.11, -0.01),
    "left_index": (0.25, 0.12, -0.03), "right_index": (-0.25, 0.12, -0.03), "left_thumb": (0.23, 0.09, -0.04),
    "right_thumb": (-0.23, 0.09, -0.04), "left_hip": (0.09, 0.0, 0.0), "right_hip": (-0.09, 0.0, 0.0),
    "left_knee": (0.10, 0.44, -0.02), "right_knee": (-0.10, 0.44, -0.02), "left_ankle": (0.10, 0.86, 0.02),
    "right_ankle": (-0.10, 0.86, 0.02), "left_heel": (0.10, 0.90, 0.06), "right_heel": (-0.10, 0.90, 0.06),
    "left_foot_index": (0.12, 0.92, -0.13), "right_foot_index": (-0.12, 0.92, -0.13),
}


def _skeleton_m(height_m: float = 1.75) -> np.ndarray:
    world = np.array([_SKELETON[name] for name in BP], dtype=np.float64)
    return world * (height_m * 1000.0 / landmark_height_mm(world * 1000.0))


def _synthetic_view(camera: Intrinsics, hip_mm: np.ndarray, yaw_deg: float = 10.0, model_scale: float = 1.0):
    """A ViewPose whose pixels are the true skeleton seen by `camera`; world_m at the model's own scale."""
    world_m = _skeleton_m()
    rotation = cv2.Rodrigues(np.array([0.0, math.radians(yaw_deg), 0.0]))[0]
    truth_mm = world_m * 1000.0 @ rotation.T + hip_mm
    pixels, _ = cv2.projectPoints(truth_mm, np.zeros(3), np.zeros(3), camera.camera_matrix, camera.dist)
    view = ViewPose(
        image_size=camera.image_size or (1080, 1920), keypoints_px=pixels.reshape(-1, 2),
        depth_px=np.zeros(33), visibility=np.ones(33), presence=np.ones(33),
        world_m=world_m * model_scale, box=(0.0, 0.0, 1.0, 1.0), score=1.0, pose_flag=1.0,
    )
    return view, truth_mm


PHONE = Intrinsics(fx=1500.0, fy=1500.0, cx=539.5, cy=959.5, dist=np.array([0.05, -0.01, 0.0, 0.0, 0.0]),
                   source="kiosk", image_size=(1080, 1920))
HIP = np.array([60.0, 120.0, 3000.0])


def _head_to_ankle(points_mm: np.ndarray) -> float:
    head = points_mm[[BP["left_eye"], BP["right_eye"]]].mean(axis=0)
    ankle = points_mm[[BP["left_ankle"], BP["right_ankle"]]].mean(axis=0)
    return float(np.linalg.norm(head - ankle))


def test_lift_with_the_request_height() -> None:
    # GHUM's own scale differs from the person's: the lift must rescale to the given height.
    view, truth = _synthetic_view(PHONE, HIP, model_scale=0.92)
    points, info = camera_frame_mm(view, PHONE, height_cm=175.0, standing_distance_mm=None, default_height_cm=170.0)
    assert points.shape == (33, 3)
    assert info["root_depth_mm"] == pytest.approx(3000.0, rel=0.02)
    assert _head_to_ankle(points) == pytest.approx(_head_to_ankle(truth), rel=0.02)
    assert info["depth_source"] == "height" and info["scale_source"] == "height"
    assert info["intrinsics_source"] == "kiosk" and info["fit"] == "solvepnp"
    assert np.max(np.linalg.norm(points - truth, axis=1)) < 60.0
    # Head top (estimated vertex) to ankle: stature less the ankle height, about 0.96 of the height.
    head_top_to_ankle = np.linalg.norm(
        np.array(info["head_top_mm"]) - points[[BP["left_ankle"], BP["right_ankle"]]].mean(axis=0)
    )
    assert head_top_to_ankle == pytest.approx(1750.0, rel=0.05)


def test_lift_from_the_standing_mark_estimates_the_height() -> None:
    view, truth = _synthetic_view(PHONE, HIP, model_scale=1.1)
    points, info = camera_frame_mm(view, PHONE, height_cm=None, standing_distance_mm=3000.0, default_height_cm=160.0)
    assert info["depth_source"] == "standing_mark" and info["scale_source"] == "standing_mark"
    assert info["root_depth_mm"] == 3000.0
    assert info["height_cm"] == pytest.approx(175.0, rel=0.02)
    assert _head_to_ankle(points) == pytest.approx(_head_to_ankle(truth), rel=0.02)
    # The pixels, read with the default height, say the person is nearer: guidance can see that.
    assert info["distance_from_height_mm"] == pytest.approx(3000.0 * 160.0 / 175.0, rel=0.02)


def test_lift_with_default_height_and_default_camera() -> None:
    camera = default_intrinsics((1080, 1920), 65.0)
    view, truth = _synthetic_view(camera, HIP)
    points, info = camera_frame_mm(view, camera, height_cm=None, standing_distance_mm=None, default_height_cm=175.0)
    assert info["intrinsics_source"] == "default" and info["depth_source"] == "default_height"
    assert info["root_depth_mm"] == pytest.approx(3000.0, rel=0.02)
    assert _head_to_ankle(points) == pytest.approx(_head_to_ankle(truth), rel=0.02)


def test_lift_with_a_pitched_kiosk_camera() -> None:
    placement = placement_manual(3000.0, camera_height_mm=1000.0, pitch_deg=8.0)
    up = camera_up_vector(8.0)
    forward = np.cross(up, [1.0, 0.0, 0.0])
    hip_height = 1750.0 * 0.53
    hip = -1000.0 * up + 3000.0 * forward / np.linalg.norm(forward) + hip_height * up
    view, truth = _synthetic_view(PHONE, hip, yaw_deg=0.0)
    points, info = camera_frame_mm(view, PHONE, height_cm=175.0, standing_distance_mm=None, default_height_cm=170.0,
                                   placement=placement)
    assert info["root_depth_mm"] == pytest.approx(hip[2], rel=0.02)
    assert np.max(np.linalg.norm(points - truth, axis=1)) < 60.0
    # The heels (6 cm above the floor in the model) land near the mark.
    assert info["feet_floor_distance_mm"] == pytest.approx(3000.0, rel=0.05)


def test_linear_measures_in_millimetres() -> None:
    points = _skeleton_m() * 1000.0 + np.array([0.0, 0.0, 3000.0])
    points[BP["left_shoulder"], 1] -= 20.0  # y down: raising the left shoulder by 20 mm
    points[BP["right_hip"], 1] -= 8.0
    assert shoulder_height_difference_mm(points) == pytest.approx(20.0)
    assert pelvic_height_difference_mm(points) == pytest.approx(-8.0)
    # The model faces -z (toward the camera, feet pointing at it): forward offset = -(ear z - ankle z).
    assert head_forward_of_plumb_mm(points) == pytest.approx(-_ear_behind_ankle())
    pushed = points.copy()
    pushed[[BP["left_ear"], BP["right_ear"]], 2] -= 50.0  # head 50 mm forward
    assert head_forward_of_plumb_mm(pushed) - head_forward_of_plumb_mm(points) == pytest.approx(50.0)


def _ear_behind_ankle() -> float:
    world = _skeleton_m() * 1000.0
    ear_z = world[[BP["left_ear"], BP["right_ear"]], 2].mean()
    ankle_z = world[[BP["left_ankle"], BP["right_ankle"]], 2].mean()
    return float(ear_z - ankle_z)
