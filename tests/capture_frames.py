"""Camera frames made at test time from the shared test photos (never written into the repository);
the compositing itself is bench/frames.py's, shared with bench/capture.py."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
from conftest import testdata_path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from frames import FRAME_SIZE, compose, jpeg

__all__ = ["FRAME_SIZE", "compose", "jpeg", "load_photo"]


def load_photo(view: str, name: str) -> np.ndarray:
    pixels = cv2.imread(str(testdata_path("photos", view, name)), cv2.IMREAD_COLOR)
    if pixels is None:
        raise RuntimeError(f"cannot read test photo {view}/{name}")
    return pixels
