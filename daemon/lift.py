"""Lift: place the landmark model's 3D skeleton in the camera frame, in millimetres.

BlazePose's GHUM head gives world landmarks in metres, hip-centred, with its own idea of scale. This
step (1) rescales them to the person's standing height, (2) turns them so that their perspective
projection fits the 2D keypoints (cv2.solvePnP over the visible points), and (3) puts the hip centre
at the right depth: the kiosk's calibrated standing mark when known, else the depth at which the
height-scaled skeleton has the photo's pixel size. Camera frame: x right, y down, z away (mm).

Linear measures (mm) read the lifted skeleton along the world's vertical ("up" in camera
coordinates: straight up the picture for a level camera, or from the kiosk's pitch and roll).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import cv2
import numpy as np

from calibration.intrinsics import Intrinsics
from calibration.kiosk import undistort_points
from calibration.placement import Placement, camera_up_vector, floor_distance_mm, root_depth_mm
from daemon.views import BP, ViewPose

logger = logging.getLogger(__name__)

# Standing height per landmark extent. The extent is eye midpoint -> sole midpoint (mean of heels and
# foot tips) in the world landmarks. Anthropometric tables (Drillis, Contini & Bluestein 1964; the
# same proportions in Winter's "Biomechanics and Motor Control of Human Movement") put the eyes at
# 0.936 of stature; the heel and toe landmarks sit about 0.015 of stature above the floor. Hence
# stature = extent / (0.936 - 0.015) = 1.086 x extent. Expect +-2% per person (head shape, shoes).
EYE_HEIGHT_FRACTION = 0.936
SOLE_LANDMARK_FRACTION = 0.015
HEIGHT_PER_EYE_TO_SOLE = 1.0 / (EYE_HEIGHT_FRACTION - SOLE_LANDMARK_FRACTION)

MIN_VISIBILITY = 0.5
MIN_PNP_POINTS = 6
# A fitted rotation further than this from the model's own orientation is a failed fit, not a pose.
MAX_ROTATION_DEG = 60.0
LEVEL_UP = np.array([0.0, -1.0, 0.0])

_EYES = (BP["left_eye"], BP["right_eye"])
_SOLES = (BP["left_heel"], BP["right_heel"], BP["left_foot_index"], BP["right_foot_index"])
_HIPS = (BP["left_hip"], BP["right_hip"])
_SHOULDERS = (BP["left_shoulder"], BP["right_shoulder"])
_ANKLES = (BP["left_ankle"], BP["right_ankle"])
_HEELS = (BP["left_heel"], BP["right_heel"])
_FOOT_TIPS = (BP["left_foot_index"], BP["right_foot_index"])
_EARS = (BP["left_ear"], BP["right_ear"])


def _mid(points: np.ndarray, indices: tuple[int, ...]) -> np.ndarray:
    return points[list(indices)].mean(axis=0)


def landmark_height_mm(world_mm: np.ndarray) -> float:
    """Standing height implied by a skeleton's eye-to-sole extent (see HEIGHT_PER_EYE_TO_SOLE)."""
    extent = float(np.linalg.norm(_mid(world_mm, _EYES) - _mid(world_mm, _SOLES)))
    return extent * HEIGHT_PER_EYE_TO_SOLE


def _fit_pose(
    world_mm: np.ndarray, keypoints_px: np.ndarray, camera_matrix: np.ndarray
) -> tuple[np.ndarray, np.ndarray, float] | None:
    """R, t (camera = R @ world + t) and the RMS reprojection error (px), or None when the fit fails."""
    object_points = np.ascontiguousarray(world_mm, dtype=np.float64)
    image_points = np.ascontiguousarray(keypoints_px, dtype=np.float64)
    try:
        ok, rvec, tvec = cv2.solvePnP(object_points, image_points, camera_matrix, None, flags=cv2.SOLVEPNP_SQPNP)
        if not ok:
            return None
        rvec, tvec = cv2.solvePnPRefineLM(object_points, image_points, camera_matrix, None, rvec, tvec)
    except cv2.error as exc:
        logger.debug("solvePnP failed: %s", exc)
        return None
    rotation, _ = cv2.Rodrigues(rvec)
    tvec = tvec.reshape(3)
    angle = math.degrees(float(np.linalg.norm(rvec)))
    if tvec[2] <= 0 or angle > MAX_ROTATION_DEG:
        logger.debug("solvePnP result rejected: depth %.0f mm, rotation %.0f degrees", tvec[2], angle)
        return None
    projected, _ = cv2.projectPoints(object_points, rvec, tvec, camera_matrix, None)
    rms = float(np.sqrt(np.mean(np.sum((projected.reshape(-1, 2) - image_points) ** 2, axis=1))))
    return rotation, tvec, rms


def _depth_from_extent(world_mm: np.ndarray, keypoints_px: np.ndarray, focal_px: float) -> float:
    """Fallback depth: focal * metric length / pixel length, over the shoulder-to-ankle extent."""
    metric = float(np.linalg.norm(_mid(world_mm, _SHOULDERS) - _mid(world_mm, _ANKLES)))
    pixels = float(np.linalg.norm(_mid(keypoints_px, _SHOULDERS) - _mid(keypoints_px, _ANKLES)))
    if pixels < 1.0:
        raise ValueError("the person's shoulder-to-ankle extent is under one pixel")
    return focal_px * metric / pixels


def camera_frame_mm(
    view: ViewPose,
    intrinsics: Intrinsics,
    height_cm: float | None,
    standing_distance_mm: float | None,
    default_height_cm: float,
    placement: Placement | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """The view's 33 landmarks in the camera frame (mm), and how they were placed.

    height_cm: the request's height (None when absent). standing_distance_mm: the kiosk's horizontal
    distance from the camera to the standing mark (None without a kiosk placement); `placement`, when
    given, supplies it together with the camera height and pitch for an exact hip depth.

    Scale: the request's height, else (with a standing mark) the scale at which the skeleton fits the
    pixels at the mark's depth, else default_height_cm. Depth of the hip centre: the standing mark,
    else the depth at which the scaled skeleton fits the pixels. info names the sources, the height
    used or estimated, and independent distance measurements for guidance.
    """
    if placement is not None and standing_distance_mm is None:
        standing_distance_mm = placement.standing_distance_mm
    if placement is None and standing_distance_mm is not None:
        placement = Placement(standing_distance_mm=float(standing_distance_mm))

    if intrinsics.image_size is not None and tuple(intrinsics.image_size) != tuple(view.image_size):
        intrinsics = intrinsics.scaled_to(view.image_size)
    keypoints = undistort_points(view.keypoints_px, intrinsics)
    world = np.asarray(view.world_m, dtype=np.float64) * 1000.0
    world = world - _mid(world, _HIPS)
    natural_height_mm = landmark_height_mm(world)
    if not natural_height_mm > 0:
        raise ValueError("the world landmarks have no extent")
    camera_matrix = intrinsics.camera_matrix

    finite = np.all(np.isfinite(keypoints), axis=1) & np.all(np.isfinite(world), axis=1)
    visible = finite & (np.asarray(view.visibility) >= MIN_VISIBILITY)
    used = visible if visible.sum() >= MIN_PNP_POINTS else finite
    fit = _fit_pose(world[used], keypoints[used], camera_matrix) if used.sum() >= MIN_PNP_POINTS else None
    if fit is not None:
        rotation, translation, rms_px = fit
        fit_method = "solvepnp"
        # Depth of the hip centre at which the skeleton, at its own model scale, fits the pixels.
        unit_depth = float(translation[2])
    else:
        rotation, rms_px = np.eye(3), None
        fit_method = "extent"
        unit_depth = _depth_from_extent(world, keypoints, float(intrinsics.fy))

    request_height_mm = None if height_cm is None else float(height_cm) * 10.0
    assumed_height_mm = request_height_mm if request_height_mm is not None else float(default_height_cm) * 10.0
    scale = assumed_height_mm / natural_height_mm
    distance_from_height_mm = unit_depth * scale  # what the pixels say, given the height

    hip_height_mm = float(np.linalg.norm(_mid(world, _SOLES))) * scale + SOLE_LANDMARK_FRACTION * assumed_height_mm
    if placement is not None:
        root_depth = root_depth_mm(placement, hip_height_mm)
        depth_source = "standing_mark"
        if request_height_mm is None:
            scale = root_depth / unit_depth
            scale_source = "standing_mark"
        else:
            scale_source = "height"
    else:
        root_depth = distance_from_height_mm
        depth_source = scale_source = "height" if request_height_mm is not None else "default_height"

    hip_px = _mid(keypoints, _HIPS)
    root = np.array([
        (hip_px[0] - intrinsics.cx) / intrinsics.fx * root_depth,
        (hip_px[1] - intrinsics.cy) / intrinsics.fy * root_depth,
        root_depth,
    ])
    points_mm = scale * world @ rotation.T + root

    info: dict[str, Any] = {
        "intrinsics_source": intrinsics.source,
        "depth_source": depth_source,
        "scale_source": scale_source,
        "fit": fit_method,
        "fit_rms_px": None if rms_px is None else round(rms_px, 2),
        "points_used": int(used.sum()),
        "rotation_deg": round(math.degrees(float(np.linalg.norm(cv2.Rodrigues(rotation)[0]))), 2),
        "height_cm": round(scale * natural_height_mm / 10.0, 1),
        "root_depth_mm": round(root_depth, 1),
        "distance_from_height_mm": round(distance_from_height_mm, 1),
        "feet_floor_distance_mm": None,
        "head_top_mm": [round(float(v), 1) for v in head_top_mm(points_mm, scale * natural_height_mm)],
    }
    if placement is not None and placement.camera_height_mm is not None:
        heels_px = _mid(keypoints, _HEELS)
        distance = floor_distance_mm(heels_px, intrinsics, placement)
        info["feet_floor_distance_mm"] = None if distance is None else round(distance, 1)
    return points_mm, info


def head_top_mm(points_mm: np.ndarray, height_mm: float) -> np.ndarray:
    """The vertex (top of the head), which BlazePose lacks: above the eye midpoint along the head's
    axis (shoulder midpoint -> ear midpoint) by the eye-to-vertex share of stature (1 - 0.936)."""
    axis = _mid(points_mm, _EARS) - _mid(points_mm, _SHOULDERS)
    norm = float(np.linalg.norm(axis))
    if norm < 1e-6:
        raise ValueError("the head axis has no length")
    return _mid(points_mm, _EYES) + axis / norm * (1.0 - EYE_HEIGHT_FRACTION) * height_mm


def _up(up: np.ndarray | None) -> np.ndarray:
    vector = LEVEL_UP if up is None else np.asarray(up, dtype=np.float64)
    return vector / np.linalg.norm(vector)


def up_vector(placement: Placement | None) -> np.ndarray:
    """The world's up direction in camera coordinates: from the kiosk placement, or a level camera."""
    if placement is None:
        return LEVEL_UP.copy()
    return camera_up_vector(placement.pitch_deg, placement.roll_deg)


def _horizontal(vector: np.ndarray, up: np.ndarray) -> np.ndarray:
    return vector - (vector @ up) * up


def facing_direction(points_mm: np.ndarray, up: np.ndarray | None = None) -> np.ndarray:
    """Unit horizontal direction the person faces, from heel to foot tip (both feet averaged)."""
    up = _up(up)
    forward = _horizontal(_mid(points_mm, _FOOT_TIPS) - _mid(points_mm, _HEELS), up)
    norm = float(np.linalg.norm(forward))
    if norm < 1e-6:
        raise ValueError("the feet give no facing direction")
    return forward / norm


def head_forward_of_plumb_mm(points_mm: np.ndarray, up: np.ndarray | None = None, reference: str = "ankle") -> float:
    """Side view: how far the ear (midpoint of both) stands in front of the plumb line (mm).

    The plumb line is vertical through the ankle (lateral malleolus, Kendall's posture line) or, with
    reference="shoulder", through the shoulder. Forward = the way the feet point. > 0: head forward.
    An ideal posture puts the ear about over the plumb line (slightly in front of the ankle).
    """
    up = _up(up)
    anchors = {"ankle": _ANKLES, "shoulder": _SHOULDERS}
    if reference not in anchors:
        raise ValueError(f"reference: 'ankle' or 'shoulder', got {reference!r}")
    offset = _mid(points_mm, _EARS) - _mid(points_mm, anchors[reference])
    return float(_horizontal(offset, up) @ facing_direction(points_mm, up))


def shoulder_height_difference_mm(points_mm: np.ndarray, up: np.ndarray | None = None) -> float:
    """Left shoulder minus right shoulder height (mm, the subject's sides); > 0: left higher."""
    up = _up(up)
    return float((points_mm[BP["left_shoulder"]] - points_mm[BP["right_shoulder"]]) @ up)


def pelvic_height_difference_mm(points_mm: np.ndarray, up: np.ndarray | None = None) -> float:
    """Left hip minus right hip height (mm, the subject's sides); > 0: left higher."""
    up = _up(up)
    return float((points_mm[BP["left_hip"]] - points_mm[BP["right_hip"]]) @ up)
