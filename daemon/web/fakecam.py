"""A video file for Chromium's fake camera (`--use-file-for-fake-video-capture`): the kiosk page tested and
shown on screen without a camera. Written at test time from photos into a temporary folder, never
committed (the test photos show private people).

Format: YUV4MPEG2 (y4m), 4:2:0, which Chromium reads and loops. The person first stands facing the
camera, then turns to the side, each view held long enough for auto-capture.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def letterbox(photo_bgr: np.ndarray, size: tuple[int, int], fill: int = 90) -> np.ndarray:
    """The photo fitted inside a frame of `size` (width, height), centred, grey around it."""
    width, height = size
    scale = min(width / photo_bgr.shape[1], height / photo_bgr.shape[0])
    resized = cv2.resize(photo_bgr, (max(2, round(photo_bgr.shape[1] * scale)), max(2, round(photo_bgr.shape[0] * scale))),
                         interpolation=cv2.INTER_AREA)
    frame = np.full((height, width, 3), fill, np.uint8)
    top, left = (height - resized.shape[0]) // 2, (width - resized.shape[1]) // 2
    frame[top:top + resized.shape[0], left:left + resized.shape[1]] = resized
    return frame


def write_y4m(path: Path, front: Path, side: Path, size: tuple[int, int] = (540, 960), fps: int = 10,
              seconds_each: float = 5.0) -> Path:
    """Front photo for `seconds_each`, then the side photo as long; a portrait camera by default."""
    width, height = size
    if width % 2 or height % 2:
        raise ValueError("y4m 4:2:0 needs an even width and height")
    frames = []
    for photo in (front, side):
        image = cv2.imread(str(photo), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"cannot read {photo}")
        frames.append(cv2.cvtColor(letterbox(image, size), cv2.COLOR_BGR2YUV_I420).tobytes())
    count = max(1, round(seconds_each * fps))
    with open(path, "wb") as handle:
        handle.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode("ascii"))
        for frame in frames:
            for _ in range(count):
                handle.write(b"FRAME\n")
                handle.write(frame)
    return path
