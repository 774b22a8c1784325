"""The live guide: what keeps the person from being photographed for a view, as message codes, and the
hold timer that captures when every condition has held still long enough.

Plain functions of the tracked person and a few frame statistics; the checks and thresholds are the
analysis's own (daemon/guidance.py) wherever they exist, so the live guide and the answer's guidance
agree on what a good photo is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from daemon import guidance
from daemon.facing import arms_posture, facing
from daemon.views import BP, ViewPose

VIEWS = ("front", "side")

# A wrist this far up the torso (0 = hips, 1 = shoulders) means a raised arm (hands on hips sit near 0.1,
# hanging arms below 0).
ARM_RAISED_TORSO_FRACTION = 0.5
# Keypoints used for stillness and centring: the trunk and legs (hands and face move without the posture
# changing, and the model's face points are the least steady).
STILLNESS_POINTS = np.array([BP[name] for name in (
    "left_shoulder", "right_shoulder", "left_hip", "right_hip", "left_knee", "right_knee",
    "left_ankle", "right_ankle", "left_ear", "right_ear",
)])


@dataclass(frozen=True)
class GuideSettings:
    min_height_fraction: float = 0.55
    max_offset_fraction: float = 0.1
    still_tolerance: float = 0.02
    hold_s: float = 1.0
    distance_tolerance: float = 0.15


@dataclass(frozen=True)
class FrameStats:
    """Light and focus on the person's box (None when the box is too small to judge)."""

    brightness: float | None
    sharpness: float | None


def _mid(person: ViewPose, a: str, b: str) -> np.ndarray:
    return 0.5 * (person.keypoints_px[BP[a]] + person.keypoints_px[BP[b]])


def body_centre_x(person: ViewPose) -> float:
    """The trunk's centre (shoulders and hips), which arms held out do not move."""
    return float(0.5 * (_mid(person, "left_shoulder", "right_shoulder")[0] + _mid(person, "left_hip", "right_hip")[0]))


def _arms_raised(person: ViewPose) -> bool:
    shoulders_y = _mid(person, "left_shoulder", "right_shoulder")[1]
    hips_y = _mid(person, "left_hip", "right_hip")[1]
    torso = hips_y - shoulders_y
    if torso <= 0:
        return False
    for wrist in ("left_wrist", "right_wrist"):
        index = BP[wrist]
        if person.visibility[index] < guidance.MIN_VISIBILITY:
            continue
        height_up_torso = (hips_y - person.keypoints_px[index, 1]) / torso
        if height_up_torso > ARM_RAISED_TORSO_FRACTION:
            return True
    return False


def _distance_codes(measured_mm: float | None, mark_mm: float | None, tolerance: float) -> list[str] | None:
    """step_back / come_closer against the kiosk's standing mark; None when there is no mark to judge by."""
    if measured_mm is None or mark_mm is None:
        return None
    if measured_mm > mark_mm * (1 + tolerance):
        return ["come_closer"]
    if measured_mm < mark_mm * (1 - tolerance):
        return ["step_back"]
    return []


def conditions(view: str, person: ViewPose | None, other_boxes: list[np.ndarray], stats: FrameStats,
               settings: GuideSettings, distance_mm: float | None = None, mark_mm: float | None = None) -> list[str]:
    """Message codes that keep `view` from being captured now, most important first (empty = ready).

    other_boxes: other people's xmin, ymin, xmax, ymax (frame px); distance_mm / mark_mm: the person's
    distance and the kiosk's standing mark, when the kiosk is calibrated.
    """
    if person is None:
        return ["no_person"]
    codes: list[str] = []
    main_height = person.box[3]
    if any((box[3] - box[1]) >= guidance.OTHER_PERSON_MIN_RELATIVE_HEIGHT * main_height for box in other_boxes):
        codes.append("several_people")

    head_cut = guidance.head_cut_off(person)
    feet_cut = guidance.feet_cut_off(person)
    fraction = guidance.person_height_fraction(person)
    too_close = (head_cut or feet_cut) and fraction >= guidance.TOO_CLOSE_HEIGHT_FRACTION
    by_mark = _distance_codes(distance_mm, mark_mm, settings.distance_tolerance)
    if by_mark is not None:
        codes += by_mark
    elif too_close:
        codes.append("step_back")
    elif not (head_cut or feet_cut) and fraction < settings.min_height_fraction:
        codes.append("come_closer")
    if not too_close:
        if head_cut:
            codes.append("head_cut")
        if feet_cut:
            codes.append("feet_cut")

    width = person.image_size[0]
    offset = (body_centre_x(person) - width / 2) / width
    if offset < -settings.max_offset_fraction:
        codes.append("move_left")
    elif offset > settings.max_offset_fraction:
        codes.append("move_right")

    if view == "front":
        face = person.visibility[[BP[n] for n in ("nose", "left_eye", "right_eye")]].max()
        if guidance.not_facing_camera(person):
            codes.append("face_camera")
        elif face < guidance.MIN_VISIBILITY or facing(person).direction == "away":
            # The model reports a face from behind too: the analysis's own facing verdict tells a back.
            codes.append("facing_away")
    elif guidance.not_side_on(person):
        codes.append("turn_side")

    if _arms_raised(person) or arms_posture(person) is not None:  # raised, crossed, hands on hips
        codes.append("arms_down")
    if stats.brightness is not None and stats.brightness < guidance.DARK_MEAN_LUMA:
        codes.append("too_dark")
    elif stats.sharpness is not None and stats.sharpness < guidance.BLUR_MIN_LAPLACIAN_VAR:
        codes.append("blurred")
    return codes


def motion(keypoints_px: np.ndarray, anchor_px: np.ndarray, extent_px: float) -> float:
    """How far the trunk and legs moved from `anchor_px`: the median point's distance over the person's
    height (the median ignores one point the model briefly misplaces)."""
    moved = np.linalg.norm(keypoints_px[STILLNESS_POINTS] - anchor_px[STILLNESS_POINTS], axis=1)
    return float(np.median(moved) / max(extent_px, 1.0))


@dataclass
class Candidate:
    """A frame that may become the view's photo."""

    frame: int
    data: bytes
    sharpness: float


class Hold:
    """The hold timer of one view: runs while the person is ready and still; keeps the sharpest frame."""

    def __init__(self, settings: GuideSettings):
        self.settings = settings
        self.started_at: float | None = None
        self._anchor: np.ndarray | None = None
        self.best: Candidate | None = None

    def reset(self) -> None:
        self.started_at = None
        self._anchor = None
        self.best = None

    def update(self, ready: bool, person: ViewPose | None, now: float, candidate: Candidate) -> float | None:
        """Advance with one processed frame; the seconds left before capture (0 = capture now), or None
        when the person is not ready (the timer is reset)."""
        if not ready or person is None:
            self.reset()
            return None
        extent = float(np.ptp(person.keypoints_px[:, 1]))
        if (self._anchor is None or self.started_at is None
                or motion(person.keypoints_px, self._anchor, extent) > self.settings.still_tolerance):
            # Moved (or just arrived): the stillness window starts again at this frame.
            self._anchor = person.keypoints_px.copy()
            self.started_at = now
            self.best = None
        if self.best is None or candidate.sharpness > self.best.sharpness:
            self.best = candidate
        left = self.settings.hold_s - (now - self.started_at)
        # Frame times are floats: a millisecond short of the hold is the hold.
        return left if left > 1e-3 else 0.0
