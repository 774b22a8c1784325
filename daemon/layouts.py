"""BlazePose's 33 landmarks -> the seed's 22-point, 17-point and 42-point layouts.

The seed's orders are decoded in ../shared/spec/README.md: 22 = the MuCo-3DHP / 3DMPPE 17-joint order plus
5 face points, 42 = SMPL-X's first joints plus face, feet and finger tips. BlazePose has no head top,
thorax, spine, pelvis, collar, jaw, hand or small-toe point; each derived point is defined here once
(README "Keypoint layouts" lists them):

- pelvis      = mean of the hips
- thorax/neck = mean of the shoulders (the neck base)
- spine       = mid-trunk, halfway from pelvis to thorax (spine1/2/3 of SMPL-X at 1/4, 1/2, 3/4)
- head        = mean of the ears (the head's centre in both views)
- head top    = where the head axis (thorax -> head centre, continued) leaves the person's segmentation
                mask; without a mask, head centre + 0.6 x (head centre - thorax)
- collar      = halfway from the neck base to that side's shoulder
- jaw         = mean of the mouth corners
- hand        = mean of wrist, pinky, index and thumb points
- big toe     = BlazePose's foot index point; small toe = the same point (BlazePose has one toe point)
"""

from __future__ import annotations

import cv2
import numpy as np

from daemon.views import BP, ViewPose

# Without a mask: vertex above the ear midpoint, as a fraction of the ear-to-neck-base distance
# (adult head: ear canal to vertex ~12-13 cm, neck base to ear ~20 cm).
HEAD_TOP_FRACTION = 0.6
MASK_THRESHOLD = 0.5

LAYOUT22_NAMES = (
    "head_top", "thorax", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
    "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle", "pelvis",
    "spine", "head", "left_ear", "left_eye", "nose", "right_ear", "right_eye",
)
LAYOUT42_NAMES = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle",
    "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar", "head",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "jaw",
    "left_eye_smplx", "right_eye_smplx", "left_hand", "right_hand", "nose", "right_eye", "left_eye",
    "right_ear", "left_ear", "left_big_toe", "left_small_toe", "left_heel", "right_big_toe",
    "right_small_toe", "right_heel", "left_thumb", "left_index", "right_thumb", "right_index",
)
# Points on the body's midline: never hidden in a side view.
_MIDLINE22 = {"head_top", "thorax", "pelvis", "spine", "head", "nose"}


def _mean(points: np.ndarray, *names: str) -> np.ndarray:
    return points[[BP[name] for name in names]].mean(axis=0)


def head_top_px(view: ViewPose) -> np.ndarray:
    """The vertex: along the head axis from the head centre until the segmentation mask ends."""
    points = view.keypoints_px
    head = _mean(points, "left_ear", "right_ear")
    thorax = _mean(points, "left_shoulder", "right_shoulder")
    axis = head - thorax
    length = float(np.hypot(*axis))
    fallback = head + HEAD_TOP_FRACTION * axis
    if view.mask_roi is None or view.roi_to_image is None or length < 1e-6:
        return fallback
    to_crop = cv2.invertAffineTransform(view.roi_to_image)
    # Sample the head axis from the head centre up to 1.5 head-axis lengths, in crop pixels.
    steps = np.linspace(0.0, 1.5, 151)
    samples = head[None, :] + steps[:, None] * axis[None, :]
    crop = samples @ to_crop[:, :2].T + to_crop[:, 2]
    size = view.mask_roi.shape[0]
    inside = (crop[:, 0] >= 0) & (crop[:, 0] < size) & (crop[:, 1] >= 0) & (crop[:, 1] < size)
    if not inside[0]:
        return fallback
    # Continuous crop coordinates, as the landmarks': mask pixel j covers [j, j+1].
    cols = np.clip(np.floor(crop[:, 0]).astype(int), 0, size - 1)
    rows = np.clip(np.floor(crop[:, 1]).astype(int), 0, size - 1)
    person = (view.mask_roi[rows, cols] > MASK_THRESHOLD) & inside
    if not person[0]:
        return fallback
    # The first sample that leaves the person (or the crop) marks the vertex.
    outside = np.flatnonzero(~person)
    last = (outside[0] - 1) if outside.size else len(steps) - 1
    return samples[max(last, 0)]


def layout22(view: ViewPose, points: np.ndarray | None = None, head_top: np.ndarray | None = None) -> np.ndarray:
    """(22, D) points in the seed's far_coords / sar_coords order, from (33, D) BlazePose points."""
    p = view.keypoints_px if points is None else points
    pelvis = _mean(p, "left_hip", "right_hip")
    thorax = _mean(p, "left_shoulder", "right_shoulder")
    top = head_top if head_top is not None else head_top_px(view)
    rows = [
        top, thorax, p[BP["right_shoulder"]], p[BP["right_elbow"]], p[BP["right_wrist"]],
        p[BP["left_shoulder"]], p[BP["left_elbow"]], p[BP["left_wrist"]], p[BP["right_hip"]],
        p[BP["right_knee"]], p[BP["right_ankle"]], p[BP["left_hip"]], p[BP["left_knee"]], p[BP["left_ankle"]],
        pelvis, (pelvis + thorax) / 2, _mean(p, "left_ear", "right_ear"), p[BP["left_ear"]], p[BP["left_eye"]],
        p[BP["nose"]], p[BP["right_ear"]], p[BP["right_eye"]],
    ]
    return np.stack(rows)


def layout42(view: ViewPose) -> np.ndarray:
    """(42, 2) pixel points in the SMPL-X-like order of pose2df1."""
    p = view.keypoints_px
    pelvis = _mean(p, "left_hip", "right_hip")
    neck = _mean(p, "left_shoulder", "right_shoulder")

    def spine(fraction: float) -> np.ndarray:
        return pelvis + fraction * (neck - pelvis)

    def hand(side: str) -> np.ndarray:
        return _mean(p, f"{side}_wrist", f"{side}_pinky", f"{side}_index", f"{side}_thumb")

    rows = [
        pelvis, p[BP["left_hip"]], p[BP["right_hip"]], spine(0.25), p[BP["left_knee"]], p[BP["right_knee"]],
        spine(0.5), p[BP["left_ankle"]], p[BP["right_ankle"]], spine(0.75), p[BP["left_foot_index"]],
        p[BP["right_foot_index"]], neck, (neck + p[BP["left_shoulder"]]) / 2, (neck + p[BP["right_shoulder"]]) / 2,
        _mean(p, "left_ear", "right_ear"), p[BP["left_shoulder"]], p[BP["right_shoulder"]], p[BP["left_elbow"]],
        p[BP["right_elbow"]], p[BP["left_wrist"]], p[BP["right_wrist"]], _mean(p, "mouth_left", "mouth_right"),
        p[BP["left_eye"]], p[BP["right_eye"]], hand("left"), hand("right"), p[BP["nose"]], p[BP["right_eye"]],
        p[BP["left_eye"]], p[BP["right_ear"]], p[BP["left_ear"]], p[BP["left_foot_index"]],
        p[BP["left_foot_index"]], p[BP["left_heel"]], p[BP["right_foot_index"]], p[BP["right_foot_index"]],
        p[BP["right_heel"]], p[BP["left_thumb"]], p[BP["left_index"]], p[BP["right_thumb"]], p[BP["right_index"]],
    ]
    return np.stack(rows)


def hidden_in_side_view(view: ViewPose, min_visibility: float = 0.5, depth_margin: float = 0.05) -> np.ndarray:
    """(22,) bool: points of the seed's 22 layout on the far side of the body in a side photo.

    A left/right point is hidden when the model says it is occluded (visibility < 0.5), or when it is the
    farther of its pair by more than 5% of the person's height in depth (the body stands between it and
    the camera). Midline points are never hidden.
    """
    vis = view.visibility
    depth = view.depth_px
    body_height = max(view.box[3], 1.0)
    hidden = np.zeros(22, bool)
    for index, name in enumerate(LAYOUT22_NAMES):
        if name in _MIDLINE22:
            continue
        side, _, part = name.partition("_")
        other = ("left" if side == "right" else "right") + "_" + part
        if vis[BP[name]] < min_visibility or depth[BP[name]] - depth[BP[other]] > depth_margin * body_height:
            hidden[index] = True
    return hidden
