"""Camera frames made from photos at run time, for the live-capture benchmark and tests (never stored).

A "camera" of `size` (default 1280x720) looks at a grey wall; the photo of the person is pasted at
`scale` of the frame's height, its centre shifted by (shift_x, shift_y) fractions of the frame. Scaling
down walks the person away, shifting moves them off-centre, shifting down cuts the feet off.
"""

from __future__ import annotations

import cv2
import numpy as np

FRAME_SIZE = (1280, 720)


def compose(photo: np.ndarray, scale: float = 1.0, shift_x: float = 0.0, shift_y: float = 0.0,
            size: tuple[int, int] = FRAME_SIZE, seed: int | None = None) -> np.ndarray:
    """The photo scaled so that its height is `scale` x the frame's height, centred then shifted.

    seed: a little sensor noise (sigma 1.5 grey levels), so that consecutive frames differ as a camera's do.
    """
    width, height = size
    frame = np.full((height, width, 3), 118, np.uint8)
    target_h = max(8, round(height * scale))
    target_w = max(8, round(photo.shape[1] * target_h / photo.shape[0]))
    resized = cv2.resize(photo, (target_w, target_h), interpolation=cv2.INTER_AREA)
    x0 = round(width / 2 - target_w / 2 + shift_x * width)
    y0 = round(height / 2 - target_h / 2 + shift_y * height)
    # Paste the part of the photo that falls inside the frame.
    fx0, fy0 = max(0, x0), max(0, y0)
    fx1, fy1 = min(width, x0 + target_w), min(height, y0 + target_h)
    if fx1 > fx0 and fy1 > fy0:
        frame[fy0:fy1, fx0:fx1] = resized[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0]
    if seed is not None:
        noise = np.random.default_rng(seed).normal(0.0, 1.5, frame.shape)
        frame = np.clip(frame + noise, 0, 255).astype(np.uint8)
    return frame


def jpeg(frame: np.ndarray, quality: int = 85) -> bytes:
    ok, encoded = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return encoded.tobytes()
