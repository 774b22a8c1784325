"""Which way a person faces the camera, and how their arms are held: plain verdicts from one person's
landmarks, for the pipeline's guidance and for any other caller (the live capture path).

Facing (issue 12): a back view given as the front photo was analysed as a front view with left and
right swapped. BlazePose labels a back view anatomically (the person's left shoulder at the image's
left), and its world landmarks put the nose behind the ears. Two independent cues, both required:
- left/right order: the person's left shoulder and hip to the image's right of their right ones when
  they face the camera, to the left when they turn their back (folded over shoulders and hips);
- depth: the nose nearer the camera than the ear midpoint (world z, metres) when they face it, farther
  when they turn their back. On the test photos: -0.08 .. -0.13 m facing, +0.13 / +0.14 m turned away,
  -0.01 .. +0.01 m in profile.
A body turned by more than PROFILE_MIN_YAW_DEG (world shoulder and hip lines) is in profile.

Arms: the front measures assume arms hanging free or held out (A-pose); crossed arms and hands on the
hips move the shoulders and hide the hips' outline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from daemon.measures import body_yaw_deg
from daemon.views import BP, ViewPose

# Turned this far from square-on (degrees), the body is in profile: neither toward nor away. The side
# photos of the test pairs read 80-90, the fronts 0-2, the back views 4-25.
PROFILE_MIN_YAW_DEG = 55.0
# The nose must lie this far (metres) in front of or behind the ear midpoint to count as a cue; in
# profile it is within 0.01 m.
NOSE_DEPTH_MIN_M = 0.04
# The shoulders' and hips' left/right order counts when their summed image-x spread is at least this
# fraction of the torso height (square-on about 1.0; in profile under 0.15).
ORDER_MIN_FRACTION = 0.25
# Hands on hips: each wrist within this many torso heights of its own hip, the elbow bent to at most
# ELBOW_BENT_MAX_DEG (hanging arms: 160-180) and out beyond the shoulder by this fraction of the
# shoulder width.
HIP_HAND_MAX_DISTANCE = 0.3
ELBOW_BENT_MAX_DEG = 130.0
ELBOW_OUT_MIN_FRACTION = 0.2
# Arms crossed: each wrist past the body's midline toward the other side by this fraction of the
# shoulder width, between the shoulders and the hips.
CROSS_MIN_FRACTION = 0.1


@dataclass
class Facing:
    """"toward" (facing the camera), "away" (back to the camera), "profile", or "unknown" (cues disagree),
    with the cues it rests on."""

    direction: str
    yaw_deg: float | None
    order: float  # > 0: left/right as seen from the front; < 0: as seen from behind (torso heights)
    nose_depth_m: float | None  # nose z minus ear-midpoint z; < 0: nose nearer the camera


def _x(view: ViewPose, name: str) -> float:
    return float(view.keypoints_px[BP[name], 0])


def _torso_height(view: ViewPose) -> float:
    kp = view.keypoints_px
    shoulders = 0.5 * (kp[BP["left_shoulder"]] + kp[BP["right_shoulder"]])
    hips = 0.5 * (kp[BP["left_hip"]] + kp[BP["right_hip"]])
    return float(np.linalg.norm(shoulders - hips))


def facing(view: ViewPose) -> Facing:
    """Which way the person faces the camera (see the module's notes)."""
    yaw = body_yaw_deg(view)
    torso = _torso_height(view)
    spread = (_x(view, "left_shoulder") - _x(view, "right_shoulder")) + (_x(view, "left_hip") - _x(view, "right_hip"))
    order = spread / torso if torso > 0 else 0.0
    nose_depth = None
    world = view.world_m
    if world is not None and np.all(np.isfinite(world)) and np.any(world):
        nose_depth = float(world[BP["nose"], 2] - 0.5 * (world[BP["left_ear"], 2] + world[BP["right_ear"], 2]))
    if yaw is not None and yaw >= PROFILE_MIN_YAW_DEG:
        return Facing("profile", yaw, order, nose_depth)
    order_cue = 0 if abs(order) < ORDER_MIN_FRACTION else (1 if order > 0 else -1)
    depth_cue = 0 if nose_depth is None or abs(nose_depth) < NOSE_DEPTH_MIN_M else (1 if nose_depth < 0 else -1)
    # Both cues must agree: a body half-turned (one cue unsure) is left to the turn checks in guidance.
    if order_cue == depth_cue == -1:
        direction = "away"
    elif order_cue == depth_cue == 1:
        direction = "toward"
    elif order_cue == depth_cue == 0:
        direction = "profile"
    else:
        direction = "unknown"
    return Facing(direction, yaw, order, nose_depth)


def wrong_view_reason(kind: str, verdict: Facing) -> str | None:
    """Why a photo cannot give its view's measures, or None: a front photo must show the front, a side
    photo the side."""
    if kind == "front" and verdict.direction == "away":
        return "the front photo shows the target's back"
    if kind == "side" and verdict.direction == "away":
        return "the side photo shows the target's back, not their side"
    if kind == "side" and verdict.direction == "toward":
        return "the side photo shows the target's front, not their side"
    return None


def arms_posture(view: ViewPose) -> str | None:
    """"crossed", "hands_on_hips", or None (arms free) for a person facing the camera."""
    kp = view.keypoints_px.astype(np.float64)
    torso = _torso_height(view)
    shoulder_width = abs(_x(view, "left_shoulder") - _x(view, "right_shoulder"))
    if torso <= 0 or shoulder_width <= 0:
        return None
    mid_x = 0.25 * (_x(view, "left_shoulder") + _x(view, "right_shoulder") + _x(view, "left_hip") + _x(view, "right_hip"))
    top = 0.5 * (kp[BP["left_shoulder"], 1] + kp[BP["right_shoulder"], 1])
    bottom = 0.5 * (kp[BP["left_hip"], 1] + kp[BP["right_hip"], 1])
    # Image direction of the person's left side (+1: image right, as when facing the camera).
    left_dir = 1.0 if _x(view, "left_shoulder") > _x(view, "right_shoulder") else -1.0

    def crossed(side: str) -> bool:
        toward_other = -left_dir if side == "left" else left_dir
        wrist = kp[BP[f"{side}_wrist"]]
        past_midline = (wrist[0] - mid_x) * toward_other >= CROSS_MIN_FRACTION * shoulder_width
        return bool(past_midline and top <= wrist[1] <= bottom)

    def on_hip(side: str) -> bool:
        outward = left_dir if side == "left" else -left_dir
        near_hip = np.linalg.norm(kp[BP[f"{side}_wrist"]] - kp[BP[f"{side}_hip"]]) <= HIP_HAND_MAX_DISTANCE * torso
        shoulder, elbow, wrist = (kp[BP[f"{side}_{joint}"]] for joint in ("shoulder", "elbow", "wrist"))
        upper, fore = shoulder - elbow, wrist - elbow
        norms = float(np.linalg.norm(upper) * np.linalg.norm(fore))
        if norms == 0:
            return False
        bend = math.degrees(math.acos(float(np.clip(upper @ fore / norms, -1.0, 1.0))))
        elbow_out = (elbow[0] - shoulder[0]) * outward
        return bool(near_hip and bend <= ELBOW_BENT_MAX_DEG and elbow_out >= ELBOW_OUT_MIN_FRACTION * shoulder_width)

    if crossed("left") and crossed("right"):
        return "crossed"
    if on_hip("left") and on_hip("right"):
        return "hands_on_hips"
    return None


def withhold(measures: dict, reason: str) -> dict:
    """The view's measures, each marked not measurable for `reason` (the seed's convention: value None,
    reported as 0, named in the answer's messages)."""
    return {
        name: replace(m, value=None, status="not_measurable", reason=reason, confidence=0.0, points_px=())
        for name, m in measures.items()
    }
