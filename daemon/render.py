"""Annotated photos: the skeleton, the measure lines against their references, each labelled.

The photo is resized first and drawn on after, so a 12 MP photo costs a resize and a few cv2 calls.
Line widths and fonts scale with the output's longest side, so a kiosk screen reads them alike whether
the photo came at 900 or 4000 px.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from daemon.measures import Measure
from daemon.views import BP, ViewPose

# Body connections of BlazePose's 33 landmarks (MediaPipe's POSE_CONNECTIONS without the face).
SKELETON = (
    ("left_shoulder", "right_shoulder"), ("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist"),
    ("right_shoulder", "right_elbow"), ("right_elbow", "right_wrist"), ("left_shoulder", "left_hip"),
    ("right_shoulder", "right_hip"), ("left_hip", "right_hip"), ("left_hip", "left_knee"),
    ("left_knee", "left_ankle"), ("right_hip", "right_knee"), ("right_knee", "right_ankle"),
    ("left_ankle", "left_heel"), ("left_heel", "left_foot_index"), ("left_ankle", "left_foot_index"),
    ("right_ankle", "right_heel"), ("right_heel", "right_foot_index"), ("right_ankle", "right_foot_index"),
    ("left_ear", "left_eye"), ("right_ear", "right_eye"), ("left_eye", "nose"), ("right_eye", "nose"),
)
# BGR colours.
LEFT_COLOUR = (255, 160, 0)  # person's left: blue
RIGHT_COLOUR = (0, 160, 255)  # person's right: orange
CENTRE_COLOUR = (235, 235, 235)
NORMAL_COLOUR = (80, 200, 80)
OUTSIDE_COLOUR = (60, 60, 230)
REFERENCE_COLOUR = (230, 230, 230)
LABEL_TEXT = {
    "far_head_bal": "Head", "far_shoulder_bal": "Shoulder", "far_pelvic_bal": "Pelvis",
    "far_knee_bal": "Knee", "far_tilt": "Tilt", "far_left_qang": "L leg", "far_right_qang": "R leg",
    "turtle_neck": "CVA", "round_shoulder": "Shoulder", "sar_tilt": "Tilt", "sar_head_tilt": "Head",
}
# Angles that are not signed deviations from zero (printed without a "+").
UNSIGNED = ("turtle_neck", "round_shoulder")
# Below this visibility a landmark is drawn as hidden (thin) rather than as seen.
DRAW_MIN_VISIBILITY = 0.5


class _Style:
    def __init__(self, longest_side: int, roll_deg: float = 0.0):
        # The camera's roll taken out of the measures: the reference lines follow the world's horizontal
        # and vertical as they appear in the photo, which is what the values are read against.
        self.roll = math.radians(roll_deg)
        unit = max(longest_side, 200) / 1000.0
        self.line = max(1, round(3 * unit))
        self.thin = max(1, round(1.5 * unit))
        self.radius = max(2, round(5 * unit))
        self.font_scale = 0.9 * unit
        self.font_thickness = max(1, round(2 * unit))
        self.outline = self.font_thickness + max(2, round(3 * unit))
        self.pad = max(2, round(6 * unit))


def _label(img: np.ndarray, text: str, anchor: tuple[float, float], colour, style: _Style) -> None:
    font = cv2.FONT_HERSHEY_SIMPLEX
    (tw, th), _ = cv2.getTextSize(text, font, style.font_scale, style.font_thickness)
    x = int(min(max(anchor[0], style.pad), img.shape[1] - tw - style.pad))
    y = int(min(max(anchor[1], th + style.pad), img.shape[0] - style.pad))
    cv2.putText(img, text, (x, y), font, style.font_scale, (20, 20, 20), style.outline, cv2.LINE_AA)
    cv2.putText(img, text, (x, y), font, style.font_scale, colour, style.font_thickness, cv2.LINE_AA)


def _world_horizontal(style: _Style) -> np.ndarray:
    """The world's horizontal (toward image right) as it appears in the photo."""
    return np.array([math.cos(style.roll), math.sin(style.roll)])


def _world_up(style: _Style) -> np.ndarray:
    """The world's up as it appears in the photo."""
    return np.array([math.sin(style.roll), -math.cos(style.roll)])


def _ipt(p) -> tuple[int, int]:
    return round(p[0]), round(p[1])


def _dashed(img, a, b, colour, thickness, dash: float) -> None:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    length = float(np.linalg.norm(b - a))
    if length < 1:
        return
    steps = max(1, int(length / dash))
    for i in range(0, steps, 2):
        p0 = a + (b - a) * (i / steps)
        p1 = a + (b - a) * (min(i + 1, steps) / steps)
        cv2.line(img, _ipt(p0), _ipt(p1), colour, thickness, cv2.LINE_AA)


def _value_text(measure: Measure) -> str:
    # Hershey fonts have no degree sign.
    sign = "" if measure.name in UNSIGNED else "+"
    return f"{LABEL_TEXT.get(measure.name, measure.name)} {measure.value:{sign}.1f} deg"


def _colour(measure: Measure):
    return NORMAL_COLOUR if measure.status == "normal" else OUTSIDE_COLOUR


def _draw_skeleton(img, pts, visibility, style: _Style) -> None:
    for a, b in SKELETON:
        ia, ib = BP[a], BP[b]
        seen = min(visibility[ia], visibility[ib]) >= DRAW_MIN_VISIBILITY
        colour = LEFT_COLOUR if a.startswith("left") and b.startswith("left") else (
            RIGHT_COLOUR if a.startswith("right") and b.startswith("right") else CENTRE_COLOUR)
        cv2.line(img, _ipt(pts[ia]), _ipt(pts[ib]), colour, style.line if seen else style.thin, cv2.LINE_AA)
    for i in range(11, 33):
        if visibility[i] >= DRAW_MIN_VISIBILITY:
            cv2.circle(img, _ipt(pts[i]), style.radius, (255, 255, 255), -1, cv2.LINE_AA)


def _front_line(img, measure: Measure, s: float, style: _Style) -> None:
    """A measure line between two points with a horizontal reference from its first (right) point."""
    if measure.value is None or len(measure.points_px) < 2:
        return
    right = np.asarray(measure.points_px[0]) * s
    left = np.asarray(measure.points_px[1]) * s
    length = abs(left[0] - right[0])
    _dashed(img, right, right + math.copysign(length, left[0] - right[0]) * _world_horizontal(style),
            REFERENCE_COLOUR, style.thin, 6 * style.thin)
    cv2.line(img, _ipt(right), _ipt(left), _colour(measure), style.line, cv2.LINE_AA)
    end = left if left[0] > right[0] else right
    _label(img, _value_text(measure), (end[0] + 2 * style.pad, end[1] + style.pad), _colour(measure), style)


def _draw_front(img, view: ViewPose, measures: dict[str, Measure], s: float, style: _Style) -> None:
    for name in ("far_head_bal", "far_shoulder_bal", "far_pelvic_bal", "far_knee_bal"):
        if name in measures:
            _front_line(img, measures[name], s, style)
    tilt = measures.get("far_tilt")
    if tilt is not None and tilt.value is not None and len(tilt.points_px) == 2:
        ankles = np.asarray(tilt.points_px[0]) * s
        shoulders = np.asarray(tilt.points_px[1]) * s
        _dashed(img, ankles, ankles + (ankles[1] - shoulders[1]) * _world_up(style), REFERENCE_COLOUR, style.thin,
                6 * style.thin)
        cv2.line(img, _ipt(ankles), _ipt(shoulders), _colour(tilt), style.thin + 1, cv2.LINE_AA)
        mid = 0.5 * (ankles + shoulders)
        _label(img, _value_text(tilt), (mid[0] + 2 * style.pad, mid[1]), _colour(tilt), style)
    for name in ("far_right_qang", "far_left_qang"):
        leg = measures.get(name)
        if leg is None or leg.value is None or len(leg.points_px) != 3:
            continue
        hip, knee, ankle = (np.asarray(p) * s for p in leg.points_px)
        _dashed(img, hip, ankle, REFERENCE_COLOUR, style.thin, 6 * style.thin)
        offset = -8 * style.pad if name == "far_right_qang" else 2 * style.pad
        _label(img, _value_text(leg), (knee[0] + offset - (80 * style.font_scale if offset < 0 else 0),
                                       knee[1] + 6 * style.pad), _colour(leg), style)


def _angle_from_horizontal(img, origin, end, measure: Measure, style: _Style) -> None:
    """Line origin->end with a horizontal reference from origin toward end, labelled at the origin."""
    length = float(np.linalg.norm(end - origin))
    direction = math.copysign(1.0, end[0] - origin[0]) if end[0] != origin[0] else 1.0
    _dashed(img, origin, origin + direction * length * _world_horizontal(style), REFERENCE_COLOUR, style.thin,
            6 * style.thin)
    cv2.line(img, _ipt(origin), _ipt(end), _colour(measure), style.line, cv2.LINE_AA)
    cv2.circle(img, _ipt(origin), style.radius + 1, _colour(measure), -1, cv2.LINE_AA)


def _draw_side(img, view: ViewPose, measures: dict[str, Measure], s: float, style: _Style) -> None:
    tilt = measures.get("sar_tilt")
    if tilt is not None and tilt.value is not None and len(tilt.points_px) == 2:
        ankles = np.asarray(tilt.points_px[0]) * s
        shoulders = np.asarray(tilt.points_px[1]) * s
        # The plumb line: vertical through the foot, up the whole photo.
        up = _world_up(style)
        below, above = (img.shape[0] - 1 - ankles[1]) / -up[1], ankles[1] / -up[1]
        _dashed(img, ankles - below * up, ankles + above * up, REFERENCE_COLOUR, style.thin, 6 * style.thin)
        cv2.line(img, _ipt(ankles), _ipt(shoulders), _colour(tilt), style.thin + 1, cv2.LINE_AA)
        mid = 0.5 * (ankles + shoulders)
        _label(img, _value_text(tilt), (mid[0] + 2 * style.pad, mid[1]), _colour(tilt), style)
    # The forward-head angle (CVA) and forward-shoulder angle share the C7 point.
    label_y = None
    for name in ("turtle_neck", "round_shoulder"):
        m = measures.get(name)
        if m is None or m.value is None or len(m.points_px) != 2:
            continue
        c7 = np.asarray(m.points_px[0]) * s
        end = np.asarray(m.points_px[1]) * s
        _angle_from_horizontal(img, c7, end, m, style)
        anchor_y = end[1] if name == "turtle_neck" else end[1] + 4 * style.pad
        if label_y is not None:
            anchor_y = max(anchor_y, label_y + 8 * style.pad)
        label_y = anchor_y
        _label(img, _value_text(m), (max(c7[0], end[0]) + 4 * style.pad, anchor_y), _colour(m), style)
    head = measures.get("sar_head_tilt")
    if head is not None and head.value is not None and len(head.points_px) == 2:
        ears = np.asarray(head.points_px[0]) * s
        face = np.asarray(head.points_px[1]) * s
        cv2.line(img, _ipt(ears), _ipt(face), _colour(head), style.thin + 1, cv2.LINE_AA)
        top = ears[1] - 10 * style.pad
        _label(img, _value_text(head), (min(ears[0], face[0]), top), _colour(head), style)


def fit_within(image: np.ndarray, longest: int) -> tuple[np.ndarray, float]:
    """image with its long side at most `longest` (0: unchanged), and the scale applied (the same array
    when nothing needs to change)."""
    height, width = image.shape[:2]
    scale = min(1.0, longest / max(height, width)) if longest > 0 else 1.0
    if scale >= 1.0:
        return image, 1.0
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    # Under 2x, bilinear reads every source pixel's neighbourhood well enough for a display copy and costs a
    # sixth of INTER_AREA (1 vs 7 ms for 3 MP -> 1.2 MP); larger steps need the area average.
    interpolation = cv2.INTER_LINEAR if scale >= 0.5 else cv2.INTER_AREA
    return cv2.resize(image, size, interpolation=interpolation), scale


def render_annotated(
    image_bgr: np.ndarray, view: ViewPose, measures: dict[str, Measure], kind: str, max_side: int,
    roll_deg: float = 0.0,
) -> tuple[np.ndarray, float]:
    """The photo with the analysis drawn on it, longest side <= max_side (0: full size), and its scale
    (annotated px per photo px; image_bgr may be a reduced decode of the photo that view describes).
    roll_deg: the camera roll the measures were corrected for (the reference lines follow it)."""
    img, _ = fit_within(image_bgr, max_side)
    if img is image_bgr:
        img = image_bgr.copy()  # draw on our own copy, never on the caller's pixels
    # Map photo px -> drawn px (image_bgr may be a reduced decode or display copy of the photo).
    s = img.shape[1] / view.image_size[0]
    style = _Style(max(img.shape[:2]), roll_deg)
    pts = view.keypoints_px.astype(np.float64) * s
    _draw_skeleton(img, pts, view.visibility, style)
    if kind == "front":
        _draw_front(img, view, measures, s, style)
    else:
        _draw_side(img, view, measures, s, style)
    return img, s
