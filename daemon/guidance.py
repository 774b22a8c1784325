"""Capture guidance: what is wrong with how a photo was taken, in the seed's words.

Messages follow the seed's example ("In the Front image, The target is too far."). Each check is a
plain function of the landmarks or the reduced photo; the thresholds below say why they are where they
are (figures measured on ../shared/testdata/photos are in docs/measures.md).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from calibration.roll import CameraTilt
from daemon.facing import Facing
from daemon.measures import MIN_PRESENCE, body_yaw_deg
from daemon.views import BP, PhotoPoses, ViewPose

# The person's landmark extent (eyes to feet) below this fraction of the photo height: too far. A
# well-framed kiosk photo fills 60-90% of the height; below half, a 1600-px photo leaves the head a
# few dozen pixels and the angle measures lose precision.
MIN_PERSON_HEIGHT_FRACTION = 0.5
# Cut off at the top: the head's top lies about 0.7 ear-to-shoulder distances above the ear midpoint
# (12-13 cm over 17-20 cm); 0.5 keeps a photo whose frame only grazes the hair.
HEAD_TOP_ALLOWANCE = 0.5
# When something is cut off and the person spans this much of the frame height, they stand too close
# (rather than the camera being aimed badly).
TOO_CLOSE_HEIGHT_FRACTION = 0.85
# A second person counts when their landmark box is at least this tall relative to the main subject's:
# smaller people are in the background and do not confuse the analysis.
OTHER_PERSON_MIN_RELATIVE_HEIGHT = 0.5
# Front photo: shoulder width over torso height (shoulder midpoint to hip midpoint). Square to the
# camera it is about 0.6-0.75 (joint-centre shoulder width ~0.35 m, torso ~0.5 m); below 0.4 the body is
# turned by 50 degrees or more.
FRONT_MIN_SHOULDER_TORSO_RATIO = 0.4
# Side photo: above this ratio the body is turned 30 degrees or more from profile.
SIDE_MAX_SHOULDER_TORSO_RATIO = 0.35
# The same turns read from the world landmarks' shoulder and hip lines (degrees from square-on).
FRONT_MAX_YAW_DEG = 40.0
SIDE_MIN_YAW_DEG = 55.0
# Mean brightness (0-255) of the person's box in the reduced photo: the test photos read 74-175;
# below 40 the landmark model's visibility scores fall and faces become unreadable.
DARK_MEAN_LUMA = 40.0
# Variance of the Laplacian on the person's box resized to BLUR_REFERENCE_HEIGHT px tall (so that it
# does not depend on the photo's size). Sharp test photos read 215-2650; blurred with a Gaussian of
# sigma = height/300 they read 20-160, with height/150 5-20. 30 flags the visibly blurred.
BLUR_REFERENCE_HEIGHT = 256
BLUR_MIN_LAPLACIAN_VAR = 30.0

# Camera roll (degrees) above which the answer says the camera was tilted: the front line measures'
# normal ranges are +-1.5-2.5 degrees, so a degree of roll is a third to a half of one.
TILT_MESSAGE_DEG = 1.0
# Camera pitch (degrees) above which the answer warns: a 5-degree pitch leans the verticals at the
# photo's edges by about 2 degrees (at a third of the width off centre, 65-degree lens), the size of
# sar_tilt's normal band, so the sagittal measures move visibly.
PITCH_MESSAGE_DEG = 5.0

HEAD_POINTS = ("nose", "left_eye", "right_eye", "left_ear", "right_ear")
FOOT_POINTS = ("left_ankle", "right_ankle", "left_heel", "right_heel", "left_foot_index", "right_foot_index")
MIN_VISIBILITY = 0.5


def _say(view: str, text: str) -> str:
    return f"In the {view} image, {text}"


def _pt(person: ViewPose, name: str) -> np.ndarray:
    return person.keypoints_px[BP[name]].astype(np.float64)


def _mid(person: ViewPose, a: str, b: str) -> np.ndarray:
    return 0.5 * (_pt(person, a) + _pt(person, b))


def shoulder_torso_ratio(person: ViewPose) -> float:
    """Shoulder width over torso height in pixels: ~0.7 square to the camera, ~0.1 in profile."""
    width = abs(_pt(person, "left_shoulder")[0] - _pt(person, "right_shoulder")[0])
    torso = np.linalg.norm(_mid(person, "left_shoulder", "right_shoulder") - _mid(person, "left_hip", "right_hip"))
    return float(width / torso) if torso > 0 else 0.0


def not_facing_camera(person: ViewPose) -> bool:
    """Turned away from square-on: too narrow across the shoulders, or the body's yaw too large."""
    yaw = body_yaw_deg(person)
    return shoulder_torso_ratio(person) < FRONT_MIN_SHOULDER_TORSO_RATIO or (yaw is not None and yaw > FRONT_MAX_YAW_DEG)


def not_side_on(person: ViewPose) -> bool:
    """Turned away from profile: too wide across the shoulders, or the body's yaw too small."""
    yaw = body_yaw_deg(person)
    return shoulder_torso_ratio(person) > SIDE_MAX_SHOULDER_TORSO_RATIO or (yaw is not None and yaw < SIDE_MIN_YAW_DEG)


def person_height_fraction(person: ViewPose) -> float:
    pts = person.keypoints_px
    return float((pts[:, 1].max() - pts[:, 1].min()) / person.image_size[1])


def head_cut_off(person: ViewPose) -> bool:
    idx = [BP[n] for n in HEAD_POINTS]
    if person.presence[idx].min() < MIN_PRESENCE:
        return True
    ears = _mid(person, "left_ear", "right_ear")
    shoulders = _mid(person, "left_shoulder", "right_shoulder")
    head_top = ears[1] - HEAD_TOP_ALLOWANCE * abs(shoulders[1] - ears[1])
    return bool(head_top < 0 or person.keypoints_px[idx, 1].min() < 0)


def feet_cut_off(person: ViewPose) -> bool:
    idx = [BP[n] for n in FOOT_POINTS]
    if person.presence[idx].min() < MIN_PRESENCE:
        return True
    return bool(person.keypoints_px[idx, 1].max() > person.image_size[1] - 1)


def _box_in_small(person: ViewPose, shape: tuple[int, int], scale: float) -> tuple[int, int, int, int] | None:
    x, y, w, h = person.box
    x0 = max(0, math.floor(x * scale))
    y0 = max(0, math.floor(y * scale))
    x1 = min(shape[1], math.ceil((x + w) * scale))
    y1 = min(shape[0], math.ceil((y + h) * scale))
    if x1 - x0 < 4 or y1 - y0 < 4:
        return None
    return x0, y0, x1, y1


def person_gray(person: ViewPose, image_bgr_small: np.ndarray, scale: float) -> np.ndarray | None:
    """The person's box of the small image in grey (None when too small to judge light and focus)."""
    box = _box_in_small(person, image_bgr_small.shape[:2], scale)
    if box is None:
        return None
    x0, y0, x1, y1 = box
    return cv2.cvtColor(image_bgr_small[y0:y1, x0:x1], cv2.COLOR_BGR2GRAY)


def brightness(gray_box: np.ndarray) -> float:
    return float(gray_box.mean())


def sharpness(gray_box: np.ndarray) -> float:
    """Variance of the Laplacian with the box resized to BLUR_REFERENCE_HEIGHT px tall."""
    factor = BLUR_REFERENCE_HEIGHT / gray_box.shape[0]
    interp = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(gray_box, None, fx=factor, fy=factor, interpolation=interp)
    return float(cv2.Laplacian(resized, cv2.CV_64F).var())


def photo_guidance(view: str, photo: PhotoPoses, image_bgr_small: np.ndarray, scale: float) -> list[str]:
    """Messages for one photo. view: "Front" or "Side"; scale: small-image px per photo px."""
    messages: list[str] = []
    if not photo.people:
        return [_say(view, "No person was found.")]
    person = photo.main
    main_height = person.box[3]
    others = [p for p in photo.people[1:] if p.box[3] >= OTHER_PERSON_MIN_RELATIVE_HEIGHT * main_height]
    if others:
        messages.append(_say(
            view, "There are several people; only one person should be in the photo. "
                  "The largest, most central person was analysed.",
        ))

    head_cut = head_cut_off(person)
    feet_cut = feet_cut_off(person)
    height_fraction = person_height_fraction(person)
    if (head_cut or feet_cut) and height_fraction >= TOO_CLOSE_HEIGHT_FRACTION:
        messages.append(_say(view, "The target is too close."))
    if head_cut:
        messages.append(_say(view, "The target's head is cut off."))
    if feet_cut:
        messages.append(_say(view, "The target's feet are cut off."))
    if not (head_cut or feet_cut) and height_fraction < MIN_PERSON_HEIGHT_FRACTION:
        messages.append(_say(view, "The target is too far."))

    if view == "Front":
        face_seen = person.visibility[[BP[n] for n in ("nose", "left_eye", "right_eye")]].max() >= MIN_VISIBILITY
        if not_facing_camera(person) or not face_seen:
            messages.append(_say(view, "The target is not facing the camera."))
    elif not_side_on(person):
        messages.append(_say(view, "The target is not standing side-on to the camera."))

    gray = person_gray(person, image_bgr_small, scale)
    if gray is not None:
        if brightness(gray) < DARK_MEAN_LUMA:
            messages.append(_say(view, "The image is too dark."))
        elif sharpness(gray) < BLUR_MIN_LAPLACIAN_VAR:
            # Darkness lowers the Laplacian too; only a lit photo is judged for blur.
            messages.append(_say(view, "The image is too blurred."))
    return messages


def profile_score(person: ViewPose) -> float:
    """How side-on a person stands, 0 (square to the camera) .. 1 (profile), from both cues."""
    ratio_score = 1.0 - min(1.0, shoulder_torso_ratio(person) / 0.7)
    yaw = body_yaw_deg(person)
    return ratio_score if yaw is None else 0.5 * (ratio_score + yaw / 90.0)


def pair_guidance(front: PhotoPoses, side: PhotoPoses) -> list[str]:
    """Messages about the pair: the front and side photos swapped."""
    if not front.people or not side.people:
        return []
    front_person, side_person = front.main, side.main
    if not_facing_camera(front_person) and not_side_on(side_person) and profile_score(front_person) > profile_score(side_person):
        return ["The Front and Side images seem to be swapped."]
    return []



def tilt_guidance(view: str, tilt: CameraTilt | None) -> list[str]:
    """What the answer says about how the camera was held (calibration/roll.py, daemon/leveling.py).

    Nothing for a kiosk's calibrated placement: the member cannot level a fixed camera (`calibrate
    placement` warns the installer instead); the answer's camera.<view>.tilt still reports it."""
    if tilt is None or tilt.source in ("none", "kiosk"):
        return []
    messages: list[str] = []
    if tilt.roll_deg is None or (tilt.source == "lines" and not tilt.confident):
        reason = tilt.note or "too few straight lines behind the target"
        messages.append(_say(
            view, f"The camera's tilt could not be read from the photo ({reason}); "
                  "the measures assume the camera was level.",
        ))
    elif abs(tilt.roll_deg) > TILT_MESSAGE_DEG:
        messages.append(_say(
            view, f"The camera was tilted by {abs(tilt.roll_deg):.1f} degrees; "
                  "the measures were corrected for it. Hold the camera level.",
        ))
    if tilt.pitch_deg is not None and abs(tilt.pitch_deg) > PITCH_MESSAGE_DEG:
        where = "down" if tilt.pitch_deg > 0 else "up"
        messages.append(_say(
            view, f"The camera was pointed {abs(tilt.pitch_deg):.0f} degrees {where}; "
                  "the tilt measures may read a lean that is not there. "
                  "Hold the camera at hip height, pointed straight ahead.",
        ))
    return messages


def facing_guidance(view: str, kind: str, verdict: Facing, arms: str | None = None) -> list[str]:
    """A photo that shows the wrong side of the target (daemon/facing.py), and arms held where the front
    measures cannot read the body."""
    messages: list[str] = []
    if verdict.direction == "away":
        wanted = "front" if kind == "front" else "side"
        messages.append(_say(view, f"The target has their back to the camera; the {kind} photo must show the {wanted}."))
    elif kind == "side" and verdict.direction == "toward":
        messages.append(_say(view, "The target is facing the camera; the side photo must show the side."))
    if arms == "crossed":
        messages.append(_say(view, "The target's arms are crossed; let the arms hang at the sides."))
    elif arms == "hands_on_hips":
        messages.append(_say(view, "The target's hands are on the hips; let the arms hang at the sides."))
    return messages
