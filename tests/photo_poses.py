"""Pose estimates of the shared test photos with the production settings (default landmark model, flip
testing), cached per process so the measure and guidance tests share one pass per image."""

from __future__ import annotations

import cv2
import numpy as np
from conftest import testdata_path

from daemon import pose
from daemon.views import PhotoPoses

PAIRS = ("fitlens_p1", "fitlens_p2", "fitlens_p3", "fitlens_p4", "fitlens_p5", "fitlens_p5b", "fiton_p1a", "fiton_p1b")
GUIDANCE_SIDE = 512  # longest side of the reduced copy the guidance checks look at, as in the pipeline


def read(*parts: str) -> np.ndarray:
    image = cv2.imread(str(testdata_path("photos", *parts)), cv2.IMREAD_COLOR)
    assert image is not None, parts
    return image


def estimate(backend, image: np.ndarray) -> PhotoPoses:
    return pose.estimate(backend, np.ascontiguousarray(image), flip_test=True)


def small_copy(image: np.ndarray) -> tuple[np.ndarray, float]:
    scale = GUIDANCE_SIDE / max(image.shape[:2])
    return cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA), scale
