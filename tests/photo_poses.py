"""Pose estimates of the shared test photos with the production settings (default landmark model, flip
testing), and the mirror/halving helpers the photo tests share."""

from __future__ import annotations

import cv2
import numpy as np
from conftest import testdata_path

from daemon import pose
from daemon.views import PhotoPoses

PAIRS = ("fitlens_p1", "fitlens_p2", "fitlens_p3", "fitlens_p4", "fitlens_p5", "fitlens_p5b", "fiton_p1a", "fiton_p1b")
GUIDANCE_SIDE = 512  # longest side of the reduced copy the guidance checks look at, as in the pipeline
# Mirroring a photo flips the sign of these measures and swaps the legs; the others stay as they were.
LEFT_RIGHT = {"far_head_bal", "far_pelvic_bal", "far_shoulder_bal", "far_knee_bal", "far_tilt"}
LEG_SWAP = {"far_left_qang": "far_right_qang", "far_right_qang": "far_left_qang"}


def read(*parts: str) -> np.ndarray:
    image = cv2.imread(str(testdata_path("photos", *parts)), cv2.IMREAD_COLOR)
    assert image is not None, parts
    return image


def estimate(backend, image: np.ndarray) -> PhotoPoses:
    return pose.estimate(backend, np.ascontiguousarray(image), flip_test=True)


def variants(front: np.ndarray, side: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """"orig" | "mirror" | "half" -> (front, side): the pair, both mirrored, both at half size."""
    return {
        "orig": (front, side),
        "mirror": (front[:, ::-1], side[:, ::-1]),
        "half": tuple(cv2.resize(im, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA) for im in (front, side)),
    }


def small_copy(image: np.ndarray) -> tuple[np.ndarray, float]:
    scale = GUIDANCE_SIDE / max(image.shape[:2])
    return cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA), scale
