"""Posture measures from one person's landmarks: the front view's balance lines and leg angles, the side
view's craniovertebral, forward-shoulder, plumb-line and head angles.

Definitions, signs, normal ranges and their sources are in docs/measures.md; the code follows it.
Angles are degrees. Pixel coordinates are the upright photo's: x right, y down. Every measure is a
ratio of lengths or an angle, so it does not change when the photo is resized.

Sign conventions (anatomical, so that mirroring the photo flips left/right measures and keeps the rest):
- front line measures (head, shoulder, pelvis, knee): positive when the person's RIGHT side is lower;
- far_tilt: positive when the shoulders lean toward the person's RIGHT over the feet;
- far_left_qang / far_right_qang: positive = varus (knee out of the hip-ankle line, O-leg),
  negative = valgus (X-leg);
- turtle_neck (craniovertebral angle) and round_shoulder (forward shoulder angle): smaller = more forward;
- sar_tilt: positive when the shoulders are ahead of the feet (leaning forward);
- sar_head_tilt: positive when the face points below the horizontal (head flexed, chin down);
- side_part: > 0 facing image right, < 0 facing image left; magnitude = degrees turned away from facing
  the camera (90 = true profile).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from daemon.views import BP, ViewPose

# Landmark confidence below this counts as not seen. BlazePose's visibility and presence are
# probabilities; 0.5 is MediaPipe's own default for drawing a landmark.
MIN_VISIBILITY = 0.5
MIN_PRESENCE = 0.5

# C7 (vertebra prominens) height in the side photo, as a fraction of the way from the ear midpoint
# down to the shoulder-landmark midpoint. Adult anthropometry: tragus to C7 is about 10-12 cm of the
# 17-20 cm between the tragus and the shoulder joint centre (which sits 3-4 cm below the acromion).
C7_ROW_FRACTION = 0.6
# How far behind the ear-shoulder line (at the C7 row) the neck's rear contour may lie, in ear-shoulder
# distances. On the test photos short-haired necks read 0.33-0.52; a contour farther back is hair or
# a collar (0.58-0.88 on the long-haired photos), and the offset fallback below is used instead.
C7_MAX_DEPTH = 0.55
# Without a usable contour, C7 is put this many ear-shoulder distances behind the ear-shoulder line at
# the C7 row: about the median depth of the short-haired necks on the test photos (0.33-0.52).
C7_FALLBACK_OFFSET = 0.4
# The contour is read on rows spread this far (ear-shoulder distances, about +-3-4 cm) above and below
# the C7 row and a straight line fitted to its depth over those rows; C7 is that line at the C7 row. At
# C7 the neck's rear contour turns into the back (it runs at a shallow slope), so a single row, or the
# median of a few, moved by a crop pixel when the photo was mirrored or halved; the fit over the band
# halved that (docs/measures.md, "Stability").
C7_BAND = 0.15
C7_BAND_ROWS = 21
# Mask probability that counts as "person".
MASK_THRESHOLD = 0.5

# Normal ranges, degrees. Sources and reasoning: docs/measures.md.
NORMAL_RANGES: dict[str, tuple[float, float]] = {
    "far_head_bal": (-2.5, 2.5),
    "far_shoulder_bal": (-2.0, 2.0),
    "far_pelvic_bal": (-2.0, 2.0),
    "far_knee_bal": (-2.0, 2.0),
    "far_left_qang": (-3.0, 3.0),
    "far_right_qang": (-3.0, 3.0),
    "far_tilt": (-1.5, 1.5),
    "turtle_neck": (50.0, 70.0),
    "round_shoulder": (52.0, 90.0),
    "sar_tilt": (-1.0, 4.0),
    "sar_head_tilt": (-10.0, 10.0),
}
FRONT_KEYS = (
    "far_head_bal", "far_pelvic_bal", "far_shoulder_bal", "far_left_qang", "far_right_qang",
    "far_knee_bal", "far_tilt",
)
SIDE_KEYS = ("turtle_neck", "round_shoulder", "sar_tilt", "sar_head_tilt")

# Craniovertebral angle below which the head counts as forward (sar_fwd_head = 1). Lau 2009 reports
# about 44-49 degrees in neck-pain groups against 50-55 in controls; 50 is the usual clinical cut-off.
FORWARD_HEAD_CVA_DEG = 50.0

FACE_POINTS = (
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye",
    "right_eye_outer", "mouth_left", "mouth_right",
)


@dataclass
class Measure:
    name: str
    value: float | None
    unit: str
    normal: tuple[float, float]
    status: str  # "normal" | "outside" | "not_measurable"
    reason: str | None
    confidence: float
    # Photo-pixel points the measure was taken between, for drawing (not part of the answer).
    points_px: tuple[tuple[float, float], ...] = ()

    def to_dict(self) -> dict:
        return {
            "value": None if self.value is None else round(float(self.value), 3),
            "unit": self.unit,
            "normal": [float(self.normal[0]), float(self.normal[1])],
            "status": self.status,
            "reason": self.reason,
            "confidence": round(float(self.confidence), 3),
        }


class _NotMeasurable(Exception):
    pass


def _measure(name: str, compute: Callable[[], tuple[float, float, tuple]]) -> Measure:
    normal = NORMAL_RANGES[name]
    try:
        value, confidence, points = compute()
    except _NotMeasurable as exc:
        return Measure(name, None, "deg", normal, "not_measurable", str(exc), 0.0)
    status = "normal" if normal[0] <= value <= normal[1] else "outside"
    return Measure(name, float(value), "deg", normal, status, None, float(confidence), points)


def _site(view: ViewPose, names: tuple[str, ...]) -> tuple[np.ndarray, float]:
    """Mean pixel position of landmarks taken together (a midpoint, or ankle+heel+toe) and its confidence.

    Usable when every landmark is present and inside the photo and at least one is visible: a side
    photo hides the far ear, but the model still places it, and the midpoint is steadier than one ear.
    """
    idx = [BP[n] for n in names]
    pts = view.keypoints_px[idx].astype(np.float64)
    presence = view.presence[idx]
    visibility = view.visibility[idx]
    width, height = view.image_size
    if presence.min() < MIN_PRESENCE:
        raise _NotMeasurable(f"{names[int(presence.argmin())]} not in the photo")
    outside = (pts[:, 0] < 0) | (pts[:, 0] > width - 1) | (pts[:, 1] < 0) | (pts[:, 1] > height - 1)
    if outside.any():
        raise _NotMeasurable(f"{names[int(np.argmax(outside))]} outside the photo")
    if visibility.max() < MIN_VISIBILITY:
        raise _NotMeasurable(f"{' / '.join(names)} not visible")
    return pts.mean(axis=0), float(min(visibility.max(), presence.min()))


def _world(view: ViewPose, names: tuple[str, ...]) -> np.ndarray:
    return view.world_m[[BP[n] for n in names]].astype(np.float64).mean(axis=0)


def _has_world(view: ViewPose) -> bool:
    return view.world_m is not None and bool(np.any(view.world_m)) and bool(np.all(np.isfinite(view.world_m)))


def _line_vs_horizontal(right: np.ndarray, left: np.ndarray) -> float:
    """Angle of the right->left line against the horizontal, positive when the right point is lower.

    |dx| makes it anatomical whichever way the person faces (y down in pixels and in world metres).
    """
    return math.degrees(math.atan2(right[1] - left[1], abs(left[0] - right[0])))


def _front_line(view: ViewPose, right: tuple[str, ...], left: tuple[str, ...], use_world: bool):
    r, cr = _site(view, right)
    lft, cl = _site(view, left)
    angle = _line_vs_horizontal(r, lft)
    if use_world and _has_world(view):
        # Pixel and world lines err differently; their mean was the steadiest on the test photos
        # (shared/spec/accuracy.md). Only valid when the world landmarks are flip-averaged.
        angle = 0.5 * (angle + _line_vs_horizontal(_world(view, right), _world(view, left)))
    return angle, min(cr, cl), (tuple(r), tuple(lft))


def _right_dir_x(view: ViewPose) -> float:
    """+1 when the person's right side is toward image right (facing away), -1 when facing the camera."""
    kp = view.keypoints_px
    dx = (kp[BP["right_shoulder"], 0] - kp[BP["left_shoulder"], 0]) + (
        kp[BP["right_hip"], 0] - kp[BP["left_hip"], 0]
    )
    return 1.0 if dx > 0 else -1.0


def _leg_angle(view: ViewPose, side: str) -> tuple[float, float, tuple]:
    """Frontal hip-knee-ankle deviation from straight; positive = knee lateral of the line (varus)."""
    other = "right" if side == "left" else "left"
    hip, ch = _site(view, (f"{side}_hip",))
    knee, ck = _site(view, (f"{side}_knee",))
    ankle, ca = _site(view, (f"{side}_ankle", f"{side}_heel", f"{side}_foot_index"))
    other_hip, _ = _site(view, (f"{other}_hip",))
    upper = knee - hip
    lower = ankle - knee
    # Deviation = signed angle turned from the thigh's direction to the shank's direction.
    turn = math.degrees(math.atan2(upper[0] * lower[1] - upper[1] * lower[0], float(upper @ lower)))
    axis = ankle - hip
    normal = np.array([-axis[1], axis[0]])
    lateral = hip - other_hip
    knee_offset = float((knee - hip) @ normal)
    if abs(knee_offset) < 1e-12:
        return 0.0, min(ch, ck, ca), (tuple(hip), tuple(knee), tuple(ankle))
    knee_is_lateral = np.sign(knee_offset) == np.sign(float(lateral @ normal))
    value = abs(turn) if knee_is_lateral else -abs(turn)
    return value, min(ch, ck, ca), (tuple(hip), tuple(knee), tuple(ankle))


def _front_tilt(view: ViewPose) -> tuple[float, float, tuple]:
    shoulders, cs = _site(view, ("left_shoulder", "right_shoulder"))
    ankles, ca = _site(
        view, ("left_ankle", "right_ankle", "left_heel", "right_heel", "left_foot_index", "right_foot_index")
    )
    rise = ankles[1] - shoulders[1]
    toward_right = (shoulders[0] - ankles[0]) * _right_dir_x(view)
    return math.degrees(math.atan2(toward_right, rise)), min(cs, ca), (tuple(ankles), tuple(shoulders))


def front_measures(front: ViewPose, use_world: bool = True) -> dict[str, Measure]:
    """The seven front-view measures. use_world: mix in world landmarks (only when flip-averaged)."""
    view = front
    return {
        "far_head_bal": _measure(
            "far_head_bal", lambda: _front_line(view, ("right_ear",), ("left_ear",), use_world)
        ),
        "far_pelvic_bal": _measure(
            "far_pelvic_bal", lambda: _front_line(view, ("right_hip",), ("left_hip",), False)
        ),
        "far_shoulder_bal": _measure(
            "far_shoulder_bal", lambda: _front_line(view, ("right_shoulder",), ("left_shoulder",), False)
        ),
        "far_left_qang": _measure("far_left_qang", lambda: _leg_angle(view, "left")),
        "far_right_qang": _measure("far_right_qang", lambda: _leg_angle(view, "right")),
        "far_knee_bal": _measure(
            "far_knee_bal", lambda: _front_line(view, ("right_knee",), ("left_knee",), use_world)
        ),
        "far_tilt": _measure("far_tilt", lambda: _front_tilt(view)),
    }


# --- side view -------------------------------------------------------------------------------------


def facing_sign(side: ViewPose) -> float:
    """+1 when the person in a side photo faces image right, -1 when image left.

    The nose ahead of the ears and the toes ahead of the heels: both are plain 2D cues that do not
    depend on the model's left/right labels, which are least reliable in profile.
    """
    kp = side.keypoints_px
    ears = 0.5 * (kp[BP["left_ear"]] + kp[BP["right_ear"]])
    heels = 0.5 * (kp[BP["left_heel"]] + kp[BP["right_heel"]])
    toes = 0.5 * (kp[BP["left_foot_index"]] + kp[BP["right_foot_index"]])
    cue = (kp[BP["nose"], 0] - ears[0]) + (toes[0] - heels[0])
    return 1.0 if cue >= 0 else -1.0


def body_yaw_deg(view: ViewPose) -> float | None:
    """Turn of the shoulder line out of the image plane, 0 (square to the camera) .. 90 (profile).

    From world landmarks (x right, z away): the shoulder line's angle in the x-z plane, folded so that
    the model's left/right labels (unsure in profile) do not matter. None without world landmarks.
    """
    if not _has_world(view):
        return None
    w = view.world_m
    d = w[BP["left_shoulder"]] - w[BP["right_shoulder"]]
    d_hip = w[BP["left_hip"]] - w[BP["right_hip"]]
    dx = abs(float(d[0])) + abs(float(d_hip[0]))
    dz = abs(float(d[2])) + abs(float(d_hip[2]))
    if dx == 0 and dz == 0:
        return None
    return math.degrees(math.atan2(dz, dx))


def side_part(side: ViewPose) -> float:
    """Which way the person in the side photo faces: sign > 0 image right, < 0 image left.

    Magnitude: degrees the body is turned from facing the camera (90 = true profile), from the world
    landmarks' shoulder and hip lines; 90 when no world landmarks are available.
    """
    yaw = body_yaw_deg(side)
    return facing_sign(side) * (90.0 if yaw is None else yaw)


# Where mask pixel j's centre lies in the crop coordinates the landmarks use. The pose stage works in
# continuous coordinates (pixel j covers [j, j + 1]; pose.unmirror maps x -> 256 - x), so the mask value
# of pixel j belongs at j + 0.5. Sampling it at j instead put the mask half a crop pixel off the
# landmarks, in opposite directions for a photo and its mirror: the C7 angles moved by 1-2 degrees under
# mirroring (docs/measures.md, "Stability").
MASK_PIXEL_CENTER = 0.5


def _sample_mask_row(view: ViewPose, xs: np.ndarray, y: float) -> np.ndarray | None:
    """Segmentation probability at photo points (xs, y): bilinear on the ROI mask (no full-size warp),
    in the landmarks' crop coordinates (MASK_PIXEL_CENTER)."""
    if view.mask_roi is None or view.roi_to_image is None:
        return None
    affine = np.vstack([np.asarray(view.roi_to_image, np.float64)[:2], [0.0, 0.0, 1.0]])
    inverse = np.linalg.inv(affine)[:2]
    pts = np.stack([xs, np.full_like(xs, y), np.ones_like(xs)], axis=0)
    u, v = inverse @ pts - MASK_PIXEL_CENTER
    mask = np.asarray(view.mask_roi, np.float32)
    h, w = mask.shape[:2]
    inside = (u >= 0) & (u <= w - 1) & (v >= 0) & (v <= h - 1)
    u = np.clip(u, 0, w - 1)
    v = np.clip(v, 0, h - 1)
    u0 = np.minimum(np.floor(u).astype(int), w - 2)
    v0 = np.minimum(np.floor(v).astype(int), h - 2)
    fu = u - u0
    fv = v - v0
    values = (
        mask[v0, u0] * (1 - fu) * (1 - fv) + mask[v0, u0 + 1] * fu * (1 - fv)
        + mask[v0 + 1, u0] * (1 - fu) * fv + mask[v0 + 1, u0 + 1] * fu * fv
    )
    return np.where(inside, values, 0.0)


def _contour_behind(side: ViewPose, start_x: float, row: float, facing: float, depth: float) -> float | None:
    """Distance behind start_x at which the mask drops below MASK_THRESHOLD on this row (None: not
    within depth, or the start is not on the person)."""
    samples = 256
    offsets = depth * np.linspace(0.0, 1.0, samples)
    values = _sample_mask_row(side, start_x - facing * offsets, row)
    if values is None or values[0] < MASK_THRESHOLD:
        return None
    below = np.nonzero(values < MASK_THRESHOLD)[0]
    if not below.size:
        return None
    i = int(below[0])
    t = (values[i - 1] - MASK_THRESHOLD) / (values[i - 1] - values[i])
    return float(offsets[i - 1] + t * (offsets[i] - offsets[i - 1]))


def c7_proxy(side: ViewPose, ears: np.ndarray, shoulders: np.ndarray, facing: float) -> tuple[np.ndarray, str]:
    """C7 in photo pixels: the neck's rear contour (segmentation mask) at the C7 row.

    Row: C7_ROW_FRACTION of the way from the ear midpoint down to the shoulder midpoint. On C7_BAND_ROWS
    rows within +-C7_BAND around it, walk backward from the ear-shoulder line until the bilinear mask
    probability drops below MASK_THRESHOLD (the crossing interpolated between samples); a straight line
    fitted to those depths against the row gives C7's depth at the C7 row. Returns the point and how it
    was found:
    "mask", or "offset" (no mask, or the contour lies too far back to be a neck: hair, a collar).
    """
    reach = float(np.linalg.norm(shoulders - ears))
    row = ears[1] + C7_ROW_FRACTION * (shoulders[1] - ears[1])
    start_x = ears[0] + C7_ROW_FRACTION * (shoulders[0] - ears[0])
    depths, rows = [], []
    for dy in np.linspace(-C7_BAND, C7_BAND, C7_BAND_ROWS) * reach:
        fraction = (row + dy - ears[1]) / (shoulders[1] - ears[1]) if shoulders[1] != ears[1] else C7_ROW_FRACTION
        x = ears[0] + fraction * (shoulders[0] - ears[0])
        depth = _contour_behind(side, x, row + dy, facing, 2 * C7_MAX_DEPTH * reach)
        if depth is not None:
            depths.append(depth + (x - start_x) * facing)
            rows.append(dy)
    if len(depths) > C7_BAND_ROWS // 2:
        _slope, depth = np.polyfit(np.asarray(rows), np.asarray(depths), 1)
        depth = float(depth)
        if depth <= C7_MAX_DEPTH * reach:
            return np.array([start_x - facing * depth, row]), "mask"
    return np.array([start_x - facing * C7_FALLBACK_OFFSET * reach, row]), "offset"


def _side_frame(side: ViewPose):
    ears, ce = _site(side, ("left_ear", "right_ear"))
    shoulders, cs = _site(side, ("left_shoulder", "right_shoulder"))
    facing = facing_sign(side)
    c7, _how = c7_proxy(side, ears, shoulders, facing)
    return ears, shoulders, c7, facing, min(ce, cs)


def _cva(side: ViewPose):
    ears, _shoulders, c7, facing, conf = _side_frame(side)
    forward = (ears[0] - c7[0]) * facing
    return math.degrees(math.atan2(c7[1] - ears[1], forward)), conf, (tuple(c7), tuple(ears))


def _forward_shoulder(side: ViewPose):
    _ears, shoulders, c7, facing, conf = _side_frame(side)
    forward = (shoulders[0] - c7[0]) * facing
    return math.degrees(math.atan2(shoulders[1] - c7[1], forward)), conf, (tuple(c7), tuple(shoulders))


def _sagittal_tilt(side: ViewPose):
    shoulders, cs = _site(side, ("left_shoulder", "right_shoulder"))
    ankles, ca = _site(
        side, ("left_ankle", "right_ankle", "left_heel", "right_heel", "left_foot_index", "right_foot_index")
    )
    forward = (shoulders[0] - ankles[0]) * facing_sign(side)
    return math.degrees(math.atan2(forward, ankles[1] - shoulders[1])), min(cs, ca), (
        tuple(ankles), tuple(shoulders))


def _head_direction_deg(face: np.ndarray, ears: np.ndarray, facing: float) -> float:
    forward = (face[0] - ears[0]) * facing
    return math.degrees(math.atan2(face[1] - ears[1], forward))


def _sagittal_head(side: ViewPose, use_world: bool):
    ears, ce = _site(side, ("left_ear", "right_ear"))
    face, cf = _site(side, FACE_POINTS)
    facing = facing_sign(side)
    angle = _head_direction_deg(face, ears, facing)
    if use_world and _has_world(side):
        # World x runs with image x, so the same facing sign applies; the mean of the two directions
        # halves the jitter of a few-pixel head (shared/spec/accuracy.md).
        world_angle = _head_direction_deg(
            _world(side, FACE_POINTS), _world(side, ("left_ear", "right_ear")), facing
        )
        angle = 0.5 * (angle + world_angle)
    return angle, min(ce, cf), (tuple(ears), tuple(face))


def side_measures(side: ViewPose, use_world: bool = True) -> dict[str, Measure]:
    """The four side-view measures. use_world: mix in world landmarks (only when flip-averaged)."""
    return {
        "turtle_neck": _measure("turtle_neck", lambda: _cva(side)),
        "round_shoulder": _measure("round_shoulder", lambda: _forward_shoulder(side)),
        "sar_tilt": _measure("sar_tilt", lambda: _sagittal_tilt(side)),
        "sar_head_tilt": _measure("sar_head_tilt", lambda: _sagittal_head(side, use_world)),
    }


def forward_head_flag(side_measures: dict[str, Measure]) -> int:
    """sar_fwd_head: 1 when the craniovertebral angle is measured and below FORWARD_HEAD_CVA_DEG."""
    cva = side_measures.get("turtle_neck")
    if cva is None or cva.value is None:
        return 0
    return int(cva.value < FORWARD_HEAD_CVA_DEG)
