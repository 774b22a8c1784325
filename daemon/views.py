"""What the pose stage hands to everything after it: one ViewPose per person found in a photo."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# BlazePose's 33 landmarks, in model order.
BLAZEPOSE_NAMES = (
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye",
    "right_eye_outer", "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_pinky",
    "right_pinky", "left_index", "right_index", "left_thumb", "right_thumb", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle", "left_heel", "right_heel",
    "left_foot_index", "right_foot_index",
)
BP = {name: index for index, name in enumerate(BLAZEPOSE_NAMES)}

# Index of each landmark's mirror partner (left <-> right), for flip testing and mirror checks.
BLAZEPOSE_MIRROR = np.array(
    [BP[n.replace("left", "@").replace("right", "left").replace("@", "right")] for n in BLAZEPOSE_NAMES]
)


@dataclass
class ViewPose:
    """One person in one upright photo (EXIF orientation applied).

    Pixel coordinates: x right, y down, in the uploaded photo's own pixels. World landmarks: metres,
    hip-centred, as the landmark model's GHUM head gives them (x right, y down, z away from the camera).
    """

    image_size: tuple[int, int]  # (width, height) of the upright photo
    keypoints_px: np.ndarray  # (33, 2) float
    depth_px: np.ndarray  # (33,) relative depth, pixel scale, smaller = nearer (MediaPipe's z)
    visibility: np.ndarray  # (33,) probability the point is visible (not occluded)
    presence: np.ndarray  # (33,) probability the point is inside the photo
    world_m: np.ndarray  # (33, 3) metres, hip-centred
    box: tuple[float, float, float, float]  # (x, y, w, h) photo px: the segmentation mask (else landmarks)
    score: float  # detector score of this person
    pose_flag: float  # landmark model's person-present probability
    # Segmentation: probability mask on the 256x256 ROI crop, and the 2x3 affine crop -> photo coordinates
    # (continuous: pixel j covers [j, j+1]; see pixel_index_affine).
    mask_roi: np.ndarray | None = None
    roi_to_image: np.ndarray | None = None


def pixel_index_affine(affine: np.ndarray) -> np.ndarray:
    """A 2x3 affine between continuous coordinates (pixel j covers [j, j+1]) rewritten for OpenCV's warps,
    which index pixels by their centres (pixel j at j): index_out = A (index_in + 0.5) + b - 0.5.

    Continuous coordinates make mirroring exact (x -> W - x) and scaling exact (x -> k x), which the
    mirror and halving checks of the measures rely on.
    """
    linear = affine[:, :2]
    return np.hstack([linear, (affine[:, 2] + linear @ np.array([0.5, 0.5]) - 0.5)[:, None]])


@dataclass
class PhotoPoses:
    """Everything the pose stage found in one photo: people ordered main subject first."""

    image_size: tuple[int, int]
    people: list[ViewPose]
    # How many people the detector saw (may exceed len(people) when some had no landmarks).
    detections: int

    @property
    def main(self) -> ViewPose:
        return self.people[0]
