"""Measures as a level camera would have taken them: the one place where camera roll (and a kiosk's
calibrated pitch) is taken out of the landmarks before measuring.

A camera rolled by r turns every frontal line (head, shoulders, pelvis, knees, the body axis) by r; a
pitched one makes the body's vertical lean toward the vanishing point of the verticals. Rotating the
camera back to level is a homography of the photo, H = K R K^-1 (K: intrinsics, R: camera -> level
camera): applied to the landmarks, the measures read against the world's vertical and horizontal, not
the frame's. For a roll alone H is a rotation about the principal point. World landmarks (metres, in
the camera's axes) turn by R itself.

Conventions as calibration/placement.py: roll > 0 when the world's up leans toward the image's right;
pitch > 0 when the camera looks down.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from calibration.placement import camera_up_vector
from daemon.measures import Measure
from daemon.views import BP, ViewPose

# Below this much roll and pitch (degrees) the landmarks are left as they are (no measurable effect).
MIN_CORRECTION_DEG = 0.05


def leveling_rotation(pitch_deg: float, roll_deg: float) -> np.ndarray:
    """R (3x3): camera coordinates -> the coordinates of a level camera at the same place, looking the
    same way horizontally (x right, y down along gravity, z forward)."""
    down = -camera_up_vector(pitch_deg, roll_deg)
    right = np.array([1.0, 0.0, 0.0]) - down[0] * down
    right /= np.linalg.norm(right)
    forward = np.cross(right, down)
    return np.stack([right, down, forward])


def leveling_homography(camera_matrix: np.ndarray, pitch_deg: float, roll_deg: float) -> np.ndarray:
    """H (3x3) taking photo pixels to the pixels of the level camera (same intrinsics)."""
    k = np.asarray(camera_matrix, np.float64)
    return k @ leveling_rotation(pitch_deg, roll_deg) @ np.linalg.inv(k)


def _apply(h: np.ndarray, points: np.ndarray) -> np.ndarray:
    homogeneous = np.hstack([points, np.ones((len(points), 1))]) @ h.T
    return homogeneous[:, :2] / homogeneous[:, 2:3]


def _local_affine(h: np.ndarray, at: np.ndarray) -> np.ndarray:
    """The homography's first-order (affine) approximation around a point, as a 3x3 matrix."""
    x, y = float(at[0]), float(at[1])
    w = h[2, 0] * x + h[2, 1] * y + h[2, 2]
    u = (h[0, 0] * x + h[0, 1] * y + h[0, 2]) / w
    v = (h[1, 0] * x + h[1, 1] * y + h[1, 2]) / w
    jacobian = np.array([
        [(h[0, 0] - u * h[2, 0]) / w, (h[0, 1] - u * h[2, 1]) / w],
        [(h[1, 0] - v * h[2, 0]) / w, (h[1, 1] - v * h[2, 1]) / w],
    ])
    offset = np.array([u, v]) - jacobian @ np.array([x, y])
    return np.vstack([np.hstack([jacobian, offset[:, None]]), [0.0, 0.0, 1.0]])


def level_view(view: ViewPose, homography: np.ndarray, rotation: np.ndarray) -> tuple[ViewPose, np.ndarray]:
    """The person as the level camera sees them, and the homography to its (grown) frame.

    The frame is grown to hold the whole turned photo (so that turning it does not push a landmark out
    of it); landmarks that lay outside the photo itself are marked absent instead, so the measures'
    "not in the photo" rule still refers to the real photo. The segmentation mask follows through the
    homography's local affine at the neck (where the side measures read it).
    """
    width, height = view.image_size
    corners = _apply(homography, np.array([[0.0, 0.0], [width, 0.0], [0.0, height], [width, height]]))
    low = np.floor(corners.min(axis=0))
    high = np.ceil(corners.max(axis=0))
    shift = np.array([[1.0, 0.0, -low[0]], [0.0, 1.0, -low[1]], [0.0, 0.0, 1.0]])
    h = shift @ homography
    points = view.keypoints_px.astype(np.float64)
    outside = (points[:, 0] < 0) | (points[:, 0] > width - 1) | (points[:, 1] < 0) | (points[:, 1] > height - 1)
    presence = np.where(outside, 0.0, view.presence)
    roi_to_image = None
    if view.roi_to_image is not None:
        neck = 0.5 * (points[BP["left_shoulder"]] + points[BP["right_shoulder"]])
        affine = _local_affine(h, neck)
        roi_to_image = (affine @ np.vstack([np.asarray(view.roi_to_image, np.float64), [0.0, 0.0, 1.0]]))[:2]
    x, y, w, bh = view.box
    box_corners = _apply(h, np.array([[x, y], [x + w, y], [x, y + bh], [x + w, y + bh]], np.float64))
    box_low, box_high = box_corners.min(axis=0), box_corners.max(axis=0)
    world = None if view.world_m is None else np.asarray(view.world_m, np.float64) @ rotation.T
    return replace(
        view,
        image_size=(int(high[0] - low[0]), int(high[1] - low[1])),
        keypoints_px=_apply(h, points),
        presence=presence,
        world_m=world,
        box=(float(box_low[0]), float(box_low[1]), float(box_high[0] - box_low[0]), float(box_high[1] - box_low[1])),
        roi_to_image=roi_to_image,
    ), h


def leveled_measures(
    view: ViewPose,
    measure: Callable[[ViewPose], dict[str, Measure]],
    camera_matrix: np.ndarray,
    pitch_deg: float,
    roll_deg: float,
) -> dict[str, Measure]:
    """`measure` run on the level camera's view of the person; the measures' drawing points are mapped
    back to the photo's pixels (the annotated photo is the photo as taken)."""
    if abs(pitch_deg) < MIN_CORRECTION_DEG and abs(roll_deg) < MIN_CORRECTION_DEG:
        return measure(view)
    rotation = leveling_rotation(pitch_deg, roll_deg)
    homography = leveling_homography(camera_matrix, pitch_deg, roll_deg)
    leveled, h = level_view(view, homography, rotation)
    results = measure(leveled)
    back = np.linalg.inv(h)
    for result in results.values():
        if result.points_px:
            result.points_px = tuple(tuple(p) for p in _apply(back, np.asarray(result.points_px, np.float64)))
    return results
