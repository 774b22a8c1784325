"""The int8 calibration inputs: drawn people, rendered here, never a photo.

Static quantization needs the range of every activation on inputs like the ones the daemon will see.
The project may only ship or fetch what it owns, so it draws its own: a standing person in front or
side view (head, neck, torso, arms, legs, shoes; skin, clothes and background colours, body proportions,
arm and leg angles, lean, light, blur and sensor noise all varied by a seeded generator) in a room of a
wall and a floor with some clutter. The detector's inputs are the letterboxed drawings (and their
mirrors, as flip testing runs them); the landmark model's are the crops the pipeline itself cuts around
the person the fp32 detector finds (and their mirrors), plus crops at jittered ROIs so the ranges also
cover a detector that is a little off. Deterministic: the same seed gives the same pixels.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

IMAGE_SIZE = (720, 1280)  # (width, height): a portrait kiosk photo, reduced as the pipeline decodes it

_SKIN = np.array(
    [[224, 190, 160], [200, 160, 130], [170, 120, 90], [130, 90, 60], [90, 60, 45], [240, 210, 190]], np.float64
)


def _color(rng: np.random.Generator, low: int = 20, high: int = 235) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(low, high, 3))


def _skin(rng: np.random.Generator) -> tuple[int, int, int]:
    rgb = _SKIN[rng.integers(len(_SKIN))] + rng.normal(0, 8, 3)
    r, g, b = np.clip(rgb, 0, 255)
    return int(b), int(g), int(r)  # BGR


def _limb(image: np.ndarray, a, b, width: float, color) -> None:
    cv2.line(image, (int(a[0]), int(a[1])), (int(b[0]), int(b[1])), color, max(1, int(width)), cv2.LINE_AA)
    for p in (a, b):
        cv2.circle(image, (int(p[0]), int(p[1])), max(1, int(width / 2)), color, -1, cv2.LINE_AA)


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    wall, floor = np.array(_color(rng, 60, 250), np.float32), np.array(_color(rng, 30, 200), np.float32)
    horizon = int(height * rng.uniform(0.72, 0.9))
    image = np.empty((height, width, 3), np.float32)
    shade = np.linspace(rng.uniform(0.8, 1.0), rng.uniform(0.9, 1.15), height)[:, None, None]
    image[:] = wall
    image[horizon:] = floor
    image *= shade
    for _ in range(int(rng.integers(0, 5))):  # doors, frames, furniture
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, horizon))
        x1, y1 = x0 + int(rng.integers(30, width // 2)), y0 + int(rng.integers(30, height // 2))
        cv2.rectangle(image, (x0, y0), (x1, y1), _color(rng), -1 if rng.random() < 0.6 else 4)
    return image


def draw_person(rng: np.random.Generator, size: tuple[int, int] = IMAGE_SIZE) -> np.ndarray:
    """One BGR uint8 drawing of a standing person, front or side view, in a room."""
    width, height = size
    image = _background(rng, width, height)
    stature = height * rng.uniform(0.6, 0.88)
    foot_y = height * rng.uniform(0.9, 0.97)
    cx = width * rng.uniform(0.38, 0.62)
    lean = math.radians(rng.normal(0, 3))
    side = rng.random() < 0.5
    facing = 1.0 if rng.random() < 0.5 else -1.0
    unit = stature / 8.0  # head heights
    skin, shirt, trousers, shoes, hair = _skin(rng), _color(rng), _color(rng), _color(rng, 10, 120), _color(rng, 5, 90)

    def up(fraction: float, dx: float = 0.0) -> np.ndarray:
        # A point `fraction` of the stature above the feet, leaning.
        h = fraction * stature
        return np.array([cx + dx + h * math.sin(lean), foot_y - h * math.cos(lean)])

    shoulder_half = unit * (0.2 if side else rng.uniform(0.85, 1.1))
    hip_half = unit * (0.2 if side else rng.uniform(0.55, 0.75))
    head_c = up(0.935, facing * unit * rng.uniform(0.05, 0.35) if side else 0.0)
    neck = up(0.84)
    shoulders = [up(0.81, -shoulder_half), up(0.81, shoulder_half)]
    hips = [up(0.52, -hip_half), up(0.52, hip_half)]
    limb = unit * rng.uniform(0.32, 0.45)
    # Torso
    torso = np.array([shoulders[0], shoulders[1], hips[1], hips[0]], np.float32)
    if side:
        torso = np.array([up(0.81, -unit * 0.55), up(0.81, unit * 0.6), up(0.52, unit * 0.5), up(0.52, -unit * 0.5)], np.float32)
    cv2.fillPoly(image, [torso.astype(np.int32)], shirt, cv2.LINE_AA)
    _limb(image, neck, head_c, unit * 0.4, skin)
    # Legs
    for k, hip in enumerate(hips):
        spread = (k * 2 - 1) * unit * rng.uniform(0.0, 0.5) * (0.3 if side else 1.0)
        knee = up(0.28, (hip[0] - cx) + spread * 0.5 + (facing * unit * rng.normal(0, 0.15) if side else 0.0))
        ankle = up(0.04, (hip[0] - cx) + spread)
        _limb(image, hip, knee, limb * 1.25, trousers)
        _limb(image, knee, ankle, limb * 1.1, trousers)
        toe = ankle + np.array([facing * unit * 0.55 if side else (k * 2 - 1) * unit * 0.15, unit * 0.12])
        _limb(image, ankle, toe, limb * 0.8, shoes)
    # Arms: a random hang or lift, sleeve then skin.
    for k, shoulder in enumerate(shoulders):
        out = (k * 2 - 1) if not side else facing * rng.choice([-1, 1])
        angle = math.radians(rng.uniform(3, 35) if rng.random() < 0.8 else rng.uniform(35, 95))
        bend = math.radians(rng.uniform(0, 30))
        upper = unit * 1.5
        elbow = shoulder + upper * np.array([out * math.sin(angle), math.cos(angle)])
        wrist = elbow + upper * 0.9 * np.array([out * math.sin(angle + bend), math.cos(angle + bend)])
        _limb(image, shoulder, elbow, limb, shirt)
        _limb(image, elbow, wrist, limb * 0.8, skin if rng.random() < 0.5 else shirt)
        hand = wrist + (wrist - elbow) * 0.18
        cv2.circle(image, (int(hand[0]), int(hand[1])), max(2, int(limb * 0.5)), skin, -1, cv2.LINE_AA)
    # Head, hair and a face
    axes = (int(unit * (0.38 if not side else 0.42)), int(unit * 0.5))
    center = (int(head_c[0]), int(head_c[1]))
    cv2.ellipse(image, center, axes, 0, 0, 360, skin, -1, cv2.LINE_AA)
    cv2.ellipse(image, (center[0] - (int(facing * unit * 0.08) if side else 0), center[1] - int(unit * 0.12)),
                (axes[0] + 2, int(axes[1] * 0.75)), 0, 180, 360, hair, -1, cv2.LINE_AA)
    eye_y = center[1] + int(unit * 0.02)
    eyes = [center[0] + int(facing * unit * 0.25)] if side else [center[0] - int(unit * 0.14), center[0] + int(unit * 0.14)]
    for x in eyes:
        cv2.circle(image, (x, eye_y), max(1, int(unit * 0.04)), (30, 30, 30), -1, cv2.LINE_AA)
    mouth_x = center[0] + (int(facing * unit * 0.22) if side else 0)
    cv2.line(image, (mouth_x - int(unit * 0.08), center[1] + int(unit * 0.28)),
             (mouth_x + int(unit * 0.08), center[1] + int(unit * 0.28)), (60, 60, 150), max(1, int(unit * 0.03)))
    # Light, lens blur, sensor noise.
    image = image * rng.uniform(0.7, 1.2) + rng.uniform(-20, 20)
    image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.5, 1.6))
    image += rng.normal(0, rng.uniform(1, 6), image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def drawings(count: int, seed: int = 15) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [draw_person(rng) for _ in range(count)]
