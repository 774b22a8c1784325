"""Where a kiosk camera stands: height above the floor, distance to the standing mark, pitch and roll.

Measured from one photo of a checkerboard lying flat on the floor with its centre on the standing
mark (cv2.solvePnP with the calibrated intrinsics), or entered by hand (tape measure, phone level).

Conventions: camera frame x right, y down, z away from the camera (mm). Pitch > 0 when the camera
looks down; roll > 0 when the world's up direction leans toward the image's right (camera turned
counter-clockwise as seen from behind it). The standing distance is horizontal, on the floor, from the
point under the lens to the centre of the mark.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from calibration.intrinsics import CalibrationError, Intrinsics, board_object_points, find_board_corners

# Plausible kiosk ranges; outside them the numbers are a typo (metres for millimetres) or a bad photo.
CAMERA_HEIGHT_RANGE_MM = (100.0, 3000.0)
STANDING_DISTANCE_RANGE_MM = (500.0, 10000.0)
PITCH_RANGE_DEG = (-60.0, 60.0)
ROLL_RANGE_DEG = (-30.0, 30.0)
MARKER_RMS_WARN_PX = 2.0
# The daemon takes the placement's roll out of the landmarks before measuring (daemon/leveling.py), so a
# rolled camera no longer skews the measures; a degree is still warned about, since the correction is
# only as good as this one photo of the board (and a camera that was knocked crooked may move again).
ROLL_WARN_DEG = 1.0


@dataclass
class Placement:
    standing_distance_mm: float
    camera_height_mm: float | None = None
    pitch_deg: float = 0.0
    roll_deg: float = 0.0
    method: str = "manual"  # "marker" | "manual"
    marker_rms_px: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "standing_distance_mm": round(float(self.standing_distance_mm), 1),
            "camera_height_mm": None if self.camera_height_mm is None else round(float(self.camera_height_mm), 1),
            "pitch_deg": round(float(self.pitch_deg), 3),
            "roll_deg": round(float(self.roll_deg), 3),
            "method": self.method,
            "marker_rms_px": None if self.marker_rms_px is None else round(float(self.marker_rms_px), 3),
        }


def validate_placement(placement: Placement) -> None:
    """Raise ValueError naming the first implausible value."""
    def check(name: str, value: float | None, bounds: tuple[float, float], unit: str) -> None:
        if value is None:
            return
        if not (isinstance(value, (int, float)) and math.isfinite(value) and bounds[0] <= value <= bounds[1]):
            raise ValueError(f"{name}: {value!r} is outside {bounds[0]:g}-{bounds[1]:g} {unit}")

    check("standing_distance_mm", placement.standing_distance_mm, STANDING_DISTANCE_RANGE_MM, "mm")
    check("camera_height_mm", placement.camera_height_mm, CAMERA_HEIGHT_RANGE_MM, "mm")
    check("pitch_deg", placement.pitch_deg, PITCH_RANGE_DEG, "degrees")
    check("roll_deg", placement.roll_deg, ROLL_RANGE_DEG, "degrees")
    if placement.method not in ("marker", "manual"):
        raise ValueError(f"method: 'marker' or 'manual', got {placement.method!r}")


def placement_manual(
    standing_distance_mm: float, camera_height_mm: float | None = None, pitch_deg: float = 0.0, roll_deg: float = 0.0
) -> Placement:
    """A placement measured by hand (tape measure; the phone's level app for the pitch)."""
    placement = Placement(
        standing_distance_mm=float(standing_distance_mm),
        camera_height_mm=None if camera_height_mm is None else float(camera_height_mm),
        pitch_deg=float(pitch_deg), roll_deg=float(roll_deg), method="manual",
    )
    validate_placement(placement)
    return placement


def camera_up_vector(pitch_deg: float = 0.0, roll_deg: float = 0.0) -> np.ndarray:
    """The world's up direction (against gravity) in camera coordinates, unit length."""
    pitch, roll = math.radians(pitch_deg), math.radians(roll_deg)
    return np.array([math.cos(pitch) * math.sin(roll), -math.cos(pitch) * math.cos(roll), -math.sin(pitch)])


def _angles_from_up(up: np.ndarray) -> tuple[float, float]:
    pitch = math.degrees(math.asin(float(np.clip(-up[2], -1.0, 1.0))))
    roll = math.degrees(math.atan2(float(up[0]), float(-up[1])))
    return pitch, roll


def _forward_vector(up: np.ndarray) -> np.ndarray:
    """The horizontal direction the camera looks along, in camera coordinates."""
    axis = np.array([0.0, 0.0, 1.0])
    forward = axis - (axis @ up) * up
    return forward / np.linalg.norm(forward)


def placement_from_marker(
    image: np.ndarray, intrinsics: Intrinsics, board: tuple[int, int], square_mm: float
) -> tuple[Placement, list[str]]:
    """Placement from a photo of a checkerboard lying on the floor, its centre on the standing mark.

    image: the photo (grayscale or BGR), in the calibrated size. Returns the placement and warnings.
    Raises CalibrationError when the board is not found or the pose makes no sense.
    """
    gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    size = (gray.shape[1], gray.shape[0])
    if intrinsics.image_size is not None and tuple(intrinsics.image_size) != size:
        intrinsics = intrinsics.scaled_to(size)
    corners = find_board_corners(gray, board)
    if corners is None:
        raise CalibrationError(
            f"the {board[0]}x{board[1]} board was not found in the floor photo: check the board size, "
            "the light, and that the whole board is in the picture"
        )
    object_points = board_object_points(board, square_mm, centred=True).astype(np.float64)
    camera_matrix = intrinsics.camera_matrix
    dist = np.asarray(intrinsics.dist, dtype=np.float64)
    ok, rvec, tvec = cv2.solvePnP(object_points, corners.astype(np.float64), camera_matrix, dist,
                                  flags=cv2.SOLVEPNP_IPPE)
    if not ok:
        raise CalibrationError("solvePnP failed on the floor board")
    rvec, tvec = cv2.solvePnPRefineLM(object_points, corners.astype(np.float64), camera_matrix, dist, rvec, tvec)
    projected, _ = cv2.projectPoints(object_points, rvec, tvec, camera_matrix, dist)
    rms = float(np.sqrt(np.mean(np.sum((projected.reshape(-1, 2) - corners) ** 2, axis=1))))
    rotation, _ = cv2.Rodrigues(rvec)
    mark = tvec.reshape(3)
    up = rotation[:, 2].copy()
    if up @ mark > 0:  # the board's normal must point to the camera's side of the floor
        up = -up
    height = float(-(up @ mark))
    if height <= 0:
        raise CalibrationError("the floor board appears behind or above the camera")
    foot = -height * up  # the floor point under the lens
    distance = float(np.linalg.norm(mark - foot))
    pitch, roll = _angles_from_up(up)
    placement = Placement(
        standing_distance_mm=distance, camera_height_mm=height, pitch_deg=pitch, roll_deg=roll,
        method="marker", marker_rms_px=rms,
    )
    warnings: list[str] = []
    if rms > MARKER_RMS_WARN_PX:
        warnings.append(f"the floor board fits with {rms:.1f} px error: is it lying flat, and the intrinsics right?")
    if abs(roll) > ROLL_WARN_DEG:
        warnings.append(
            f"the camera is rolled {roll:.1f} degrees: the measures are corrected for it, but level the camera "
            "(re-run this step after moving it)"
        )
    validate_placement(placement)
    return placement, warnings


def mark_in_camera_mm(placement: Placement) -> np.ndarray:
    """The standing mark's centre in camera coordinates, assuming the camera faces it straight on."""
    if placement.camera_height_mm is None:
        return np.array([0.0, 0.0, placement.standing_distance_mm])
    up = camera_up_vector(placement.pitch_deg, placement.roll_deg)
    return -placement.camera_height_mm * up + placement.standing_distance_mm * _forward_vector(up)


def root_depth_mm(placement: Placement, hip_height_mm: float) -> float:
    """Camera depth (z) of the hip centre of a person standing on the mark, hips hip_height_mm above it.

    Without the camera height the standing distance itself is the depth (level camera, hips at lens
    height); with it, the pitch's contribution is accounted for.
    """
    if placement.camera_height_mm is None:
        return float(placement.standing_distance_mm * math.cos(math.radians(placement.pitch_deg)))
    up = camera_up_vector(placement.pitch_deg, placement.roll_deg)
    return float((mark_in_camera_mm(placement) + hip_height_mm * up)[2])


def floor_distance_mm(point_px: np.ndarray, intrinsics: Intrinsics, placement: Placement) -> float | None:
    """Horizontal distance from under the lens to the floor point seen at an undistorted pixel.

    For the heels of a standing person this measures how far they stand, independently of their
    height. None when the camera height is unknown or the pixel looks above the horizon.
    """
    if placement.camera_height_mm is None:
        return None
    ray = np.array([(point_px[0] - intrinsics.cx) / intrinsics.fx, (point_px[1] - intrinsics.cy) / intrinsics.fy, 1.0])
    up = camera_up_vector(placement.pitch_deg, placement.roll_deg)
    along = float(ray @ up)
    if along >= -1e-9:
        return None
    floor_point = ray * (-placement.camera_height_mm / along)
    foot = -placement.camera_height_mm * up
    return float(np.linalg.norm(floor_point - foot))
