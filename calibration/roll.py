"""The camera's roll (and, where the photo allows, its pitch) read from the photo's own straight lines.

Rooms are full of true verticals (door frames, wall corners, shelves' uprights) and horizontals (the
floor-wall line, tiles, a wall's edges square to the camera). A camera rolled by r turns all of them by
r; a camera pitched makes the verticals converge on a vanishing point above or below the photo.

Method (docs/measures.md, "Camera roll and pitch"):
1. Line segments from OpenCV's LSD on a grey copy at most ANALYSIS_SIDE px long; segments shorter than
   MIN_SEGMENT_FRACTION of the long side, or touching the person's box (the body's own edges are not
   vertical), are dropped.
2. Near-vertical segments (within MAX_TILT_DEG of the image's vertical) vote for the vertical vanishing
   point: a weighted least-squares point (weights = length) in normalised camera coordinates, with a weak
   prior toward no pitch, refitted on the segments within INLIER_DEG of it (iteratively reweighted).
   The vanishing point IS the world's vertical in camera coordinates, so it gives roll and pitch at once.
   Pitch is only reported when the agreeing verticals spread across the photo (else it cannot be told
   from roll).
3. Near-horizontal segments vote for the roll directly (a wall square to the camera keeps its
   horizontals parallel whatever the pitch); their length-weighted mode, with its support.
4. The verticals decide when they have the support; the horizontals confirm (or, alone, decide with a
   lower confidence). Confidence 0..1 grows with the agreeing segments' total length and falls when
   the two families disagree.

Conventions as calibration/placement.py: roll > 0 when the world's up leans toward the image's right
(the camera turned counter-clockwise as seen from behind it); pitch > 0 when the camera looks down.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

# Long side of the grey copy the lines are found on. LSD's cost grows with the pixels (30-130 ms at 1024
# px on the shared 2-core VM, about a third at 640), but at 640 px the thin floor and wall lines break
# up: on the turned test photos the roll's error grew from 0.24 to 0.54 degrees and one 4-degree-wrong
# reading became confident.
ANALYSIS_SIDE = 1024
# Segments shorter than this fraction of the long side are texture, not structure.
MIN_SEGMENT_FRACTION = 0.04
# Candidates: segments within this many degrees of the image's vertical or horizontal. Larger rolls
# are a photo held sideways on purpose, not a tilted camera.
MAX_TILT_DEG = 12.0
# Each family (verticals, horizontals) keeps at most this many of its longest segments.
MAX_SEGMENTS = 120
# A segment agrees with an estimate when its direction is within this angle of it.
INLIER_DEG = 0.75
# The person's box is grown by this fraction of its size before segments in it are dropped (hair,
# loose clothes, the shadow at the feet).
PERSON_MARGIN = 0.08
# Weak prior on pitch: a segment's direction error (about 0.5 degrees) against a pitch spread of 15
# degrees; it only matters when the verticals cannot tell pitch from roll.
LINE_NOISE_DEG = 0.5
PITCH_PRIOR_DEG = 15.0
# Agreeing segments' total length, in long sides of the photo, at which the confidence reaches 63%.
SUPPORT_SCALE = 0.4
# Pitches searched (degrees): a phone held at the chest or above the head, or a kiosk camera.
PITCH_SEARCH_DEG = 30.0
# Pitch is reported when the lines pin it to within this standard error (degrees).
PITCH_MAX_SD_DEG = 1.5
# A rival reading of the lines (a vote peak more than RIVAL_DISTANCE_DEG away) weaker than this share
# of the best costs no confidence; as strong as the best, it leaves none.
RIVAL_FREE = 0.5
RIVAL_DISTANCE_DEG = 1.25
# Without a pinned pitch, verticals and horizontals that each have this much support (long sides of
# agreeing segments) and read rolls more than AGREEMENT_DEG apart: the confidence is scaled by the factor.
MIN_FAMILY_SUPPORT = 0.1
DISAGREEMENT_FACTOR = 0.25
# Without a pinned pitch: a handheld camera's typical pitch (degrees), and the roll error it may cause
# (degrees) that still leaves the estimate its full confidence.
HANDHELD_PITCH_SD_DEG = 6.0
PITCH_LEAN_OK_DEG = 0.6
# Below this, an estimate is reported but not applied.
MIN_CONFIDENCE = 0.5
# Verticals and horizontals that disagree by more than this lower the confidence.
AGREEMENT_DEG = 1.0


@dataclass
class CameraTilt:
    """How the camera was held: roll and pitch (degrees; None when unknown), where they came from, and
    how sure the estimate is (0..1). `applied`: whether the measures were corrected for it."""

    roll_deg: float | None
    pitch_deg: float | None
    source: str  # "kiosk" | "exif" | "lines" | "none"
    confidence: float
    segments: int = 0
    applied: bool = False
    note: str | None = None

    @property
    def confident(self) -> bool:
        return self.roll_deg is not None and self.confidence >= MIN_CONFIDENCE

    def to_dict(self) -> dict[str, Any]:
        return {
            "roll_deg": None if self.roll_deg is None else round(float(self.roll_deg), 2),
            "pitch_deg": None if self.pitch_deg is None else round(float(self.pitch_deg), 2),
            "source": self.source,
            "confidence": round(float(self.confidence), 3),
            "segments": int(self.segments),
            "applied": bool(self.applied),
            "note": self.note,
        }


def _segments(gray: np.ndarray) -> np.ndarray:
    """(n, 4) x0 y0 x1 y1 of LSD segments."""
    detector = cv2.createLineSegmentDetector(cv2.LSD_REFINE_STD)
    lines = detector.detect(gray)[0]
    if lines is None:
        return np.zeros((0, 4), np.float64)
    return lines.reshape(-1, 4).astype(np.float64)


def _outside_boxes(segments: np.ndarray, boxes: list[tuple[float, float, float, float]]) -> np.ndarray:
    """True for segments with no point (ends, midpoint, quarters) inside any grown box."""
    keep = np.ones(len(segments), bool)
    ts = np.linspace(0.0, 1.0, 5)
    xs = segments[:, 0:1] + ts * (segments[:, 2:3] - segments[:, 0:1])
    ys = segments[:, 1:2] + ts * (segments[:, 3:4] - segments[:, 1:2])
    for x, y, w, h in boxes:
        x0, x1 = x - PERSON_MARGIN * w, x + (1 + PERSON_MARGIN) * w
        y0, y1 = y - PERSON_MARGIN * h, y + (1 + PERSON_MARGIN) * h
        inside = (xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y1)
        keep &= ~inside.any(axis=1)
    return keep


@dataclass
class LineSegments:
    """LSD's segments of one photo: (n, 4) x0 y0 x1 y1 in the analysis copy's pixels, its long side, and
    analysis px per photo px. Finding them is the costly part, and needs no landmarks: the pipeline
    starts it beside the pose stage."""

    segments: np.ndarray
    long_side: float
    to_small: float


def line_segments(image_bgr: np.ndarray) -> LineSegments:
    """LSD on a grey copy of the photo at most ANALYSIS_SIDE px long."""
    height, width = image_bgr.shape[:2]
    factor = min(1.0, ANALYSIS_SIDE / max(width, height))
    gray = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY) if image_bgr.ndim == 3 else image_bgr
    if factor < 1.0:
        gray = cv2.resize(gray, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
    return LineSegments(_segments(gray), float(max(gray.shape[:2])), gray.shape[1] / width)


def estimate_tilt(
    image_bgr: np.ndarray,
    focal_px: float,
    principal_px: tuple[float, float],
    exclude_boxes: list[tuple[float, float, float, float]] = (),  # type: ignore[assignment]
) -> CameraTilt:
    """Roll (and pitch where the verticals allow) of the camera that took image_bgr.

    focal_px, principal_px and exclude_boxes (x, y, w, h: the people) are in image_bgr's pixels.
    """
    return tilt_from_segments(line_segments(image_bgr), focal_px, principal_px, exclude_boxes)


def tilt_from_segments(
    found: LineSegments,
    focal_px: float,
    principal_px: tuple[float, float],
    exclude_boxes: list[tuple[float, float, float, float]] = (),  # type: ignore[assignment]
) -> CameraTilt:
    """estimate_tilt from segments already found (focal, principal point and boxes in photo px)."""
    segments, long_side, to_small = found.segments, found.long_side, found.to_small
    lengths = np.hypot(segments[:, 2] - segments[:, 0], segments[:, 3] - segments[:, 1])
    keep = lengths >= MIN_SEGMENT_FRACTION * long_side
    boxes = [tuple(v * to_small for v in box) for box in exclude_boxes]
    keep &= _outside_boxes(segments, boxes)  # type: ignore[arg-type]
    segments, lengths = segments[keep], lengths[keep]
    if not len(segments):
        return CameraTilt(None, None, "lines", 0.0, 0, note="no straight lines behind the target")

    dx = segments[:, 2] - segments[:, 0]
    dy = segments[:, 3] - segments[:, 1]
    # Each segment's angle off the vertical (top leaning right > 0) or off the horizontal (right end
    # lower > 0): both read as the roll that would explain it on a level, square-on camera.
    up_dx, up_dy = np.where(dy > 0, -dx, dx), np.where(dy > 0, -dy, dy)
    off_vertical = np.degrees(np.arctan2(up_dx, -up_dy))
    off_horizontal = np.degrees(np.arctan2(np.where(dx < 0, -dy, dy), np.abs(dx)))
    vertical = _longest(np.abs(off_vertical) <= MAX_TILT_DEG, lengths)
    horizontal = _longest(np.abs(off_horizontal) <= MAX_TILT_DEG, lengths)
    if vertical.sum() + horizontal.sum() < 2:
        return CameraTilt(None, None, "lines", 0.0, 0, note="too few straight lines behind the target")

    # Midpoints in normalised camera coordinates (of the analysis copy).
    f = focal_px * to_small
    mid_x = ((segments[:, 0] + segments[:, 2]) / 2 - principal_px[0] * to_small) / f
    mid_y = ((segments[:, 1] + segments[:, 3]) / 2 - principal_px[1] * to_small) / f
    weights = lengths / long_side
    votes = _Votes(
        off_vertical[vertical], mid_x[vertical], mid_y[vertical], weights[vertical],
        off_horizontal[horizontal], weights[horizontal],
    )
    # Coarse grid, then a fine one around its best cell.
    coarse_rolls = np.arange(-MAX_TILT_DEG, MAX_TILT_DEG + 1e-9, 0.25)
    pitches = np.arange(-PITCH_SEARCH_DEG, PITCH_SEARCH_DEG + 1e-9, 1.0)
    score = votes.score(coarse_rolls, pitches)
    best_r, best_p = np.unravel_index(int(np.argmax(score)), score.shape)
    rolls = coarse_rolls[best_r] + np.arange(-0.5, 0.5 + 1e-9, 0.02)
    pitches = pitches[best_p] + np.arange(-2.0, 2.0 + 1e-9, 0.1)
    fine = votes.score(rolls, pitches)
    best_r, best_p = np.unravel_index(int(np.argmax(fine)), fine.shape)
    roll, pitch = float(rolls[best_r]), float(pitches[best_p])

    disagreement = False
    v_err, h_err = votes.errors(roll, pitch)
    v_in, h_in = np.abs(v_err) <= INLIER_DEG, np.abs(h_err) <= INLIER_DEG
    support = float(votes.v_weight[v_in].sum() + votes.h_weight[h_in].sum())
    count = int(v_in.sum() + h_in.sum())
    # How well the agreeing segments pin roll and pitch: each vertical's angle moves with roll and with
    # pitch times its sideways offset; a horizontal square to the camera moves with roll only.
    noise = math.radians(LINE_NOISE_DEG) ** 2
    g_v = np.stack([np.ones(int(v_in.sum())), votes.v_x[v_in]], axis=1)
    information = (g_v * votes.v_weight[v_in, None]).T @ g_v / noise
    information[0, 0] += votes.h_weight[h_in].sum() / noise
    information[1, 1] += 1.0 / math.radians(PITCH_PRIOR_DEG) ** 2
    covariance = np.linalg.inv(information)
    pitch_sd = math.degrees(math.sqrt(covariance[1, 1]))
    if pitch_sd > PITCH_MAX_SD_DEG:
        # Pitch not told apart from roll: the roll a camera without pitch would need.
        rolls = np.arange(-MAX_TILT_DEG, MAX_TILT_DEG + 1e-9, 0.02)
        roll = float(rolls[int(np.argmax(votes.score(rolls, np.zeros(1))[:, 0]))])
        pitch_value = None
        # Verticals read without their pitch lean toward it: where the horizontals read another roll,
        # the photo cannot say which is right.
        by_family = {}
        for family, family_weight in (("v", votes.v_weight), ("h", votes.h_weight)):
            profile = votes.score(rolls, np.zeros(1), family)[:, 0]
            if profile.max() >= MIN_FAMILY_SUPPORT and family_weight.sum() > 0:
                by_family[family] = float(rolls[int(np.argmax(profile))])
        if len(by_family) == 2 and abs(by_family["v"] - by_family["h"]) > AGREEMENT_DEG:
            disagreement = True
        v_err, h_err = votes.errors(roll, 0.0)
        v_in, h_in = np.abs(v_err) <= INLIER_DEG, np.abs(h_err) <= INLIER_DEG
        support = float(votes.v_weight[v_in].sum() + votes.h_weight[h_in].sum())
        count = int(v_in.sum() + h_in.sum())
    else:
        pitch_value = pitch
    # Confidence: enough agreeing line length, a roll pinned to a fraction of a degree, and no rival
    # reading of the lines (another peak more than a degree away) nearly as strong.
    # Rivals along the roll alone, at the pitch used: with the pitch free, a far roll with a large pitch
    # can explain verticals bunched on one side as well as the right one.
    profile = votes.score(coarse_rolls, np.array([0.0 if pitch_value is None else pitch_value]))[:, 0]
    far = np.abs(coarse_rolls - roll) > RIVAL_DISTANCE_DEG
    rival = float(profile[far].max()) if far.any() else 0.0
    peak = float(votes.score(np.array([roll]), np.array([0.0 if pitch_value is None else pitch_value]))[0, 0])
    confidence = 1.0 - math.exp(-support / SUPPORT_SCALE)
    ratio = rival / peak if peak > 0 else 1.0
    confidence *= 1.0 - min(1.0, max(0.0, ratio - RIVAL_FREE) / (1.0 - RIVAL_FREE)) ** 2
    if pitch_value is None and support > 0:
        # Without a pinned pitch, verticals off to one side lean by about their offset times the
        # (unknown) pitch: a handheld camera's usual pitch sets how far such a roll can be trusted.
        share = float(votes.v_weight[v_in].sum()) / support
        offset = float(np.average(votes.v_x[v_in], weights=votes.v_weight[v_in])) if v_in.any() else 0.0
        pitch_lean = abs(offset) * share * HANDHELD_PITCH_SD_DEG
        confidence *= min(1.0, PITCH_LEAN_OK_DEG / max(pitch_lean, 1e-9))
    note = None
    if disagreement:
        confidence *= DISAGREEMENT_FACTOR
        note = "the straight lines behind the target disagree"
    elif ratio > RIVAL_FREE:
        note = "the straight lines behind the target point different ways"
    elif confidence < MIN_CONFIDENCE:
        note = "too few straight lines behind the target"
    return CameraTilt(roll, pitch_value, "lines", float(confidence), count, note=note)


def _longest(candidates: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The candidates, cut to the MAX_SEGMENTS longest (a tiled floor gives hundreds; the vote's memory
    grows with them)."""
    if candidates.sum() <= MAX_SEGMENTS:
        return candidates
    cutoff = np.sort(lengths[candidates])[-MAX_SEGMENTS]
    return candidates & (lengths >= cutoff)


@dataclass
class _Votes:
    """The candidate segments: verticals (angle, normalised midpoint, weight) and horizontals."""

    v_angle: np.ndarray
    v_x: np.ndarray
    v_y: np.ndarray
    v_weight: np.ndarray
    h_angle: np.ndarray
    h_weight: np.ndarray

    def _vertical_expected(self, roll: np.ndarray, pitch: np.ndarray) -> np.ndarray:
        """Angle off the image vertical of the world's vertical through each vertical segment's midpoint:
        (rolls, pitches, segments)."""
        r = np.radians(roll)[:, None, None]
        p = np.radians(pitch)[None, :, None]
        ux, uy, uz = np.cos(p) * np.sin(r), -np.cos(p) * np.cos(r), -np.sin(p)
        # Image direction of up at m: up_xy - m * up_z.
        ex = ux - self.v_x[None, None, :] * uz
        ey = uy - self.v_y[None, None, :] * uz
        return np.degrees(np.arctan2(ex, -ey))

    def errors(self, roll: float, pitch: float) -> tuple[np.ndarray, np.ndarray]:
        expected = self._vertical_expected(np.array([roll]), np.array([pitch]))[0, 0]
        return self.v_angle - expected, self.h_angle - roll

    def score(self, rolls: np.ndarray, pitches: np.ndarray, families: str = "vh") -> np.ndarray:
        """Kernel vote (rolls, pitches): each segment adds its weight times a Gaussian of its angle error,
        so a few wild segments cannot move the peak."""
        v_err = self.v_angle[None, None, :] - self._vertical_expected(rolls, pitches)
        v_score = (self.v_weight * np.exp(-0.5 * (v_err / INLIER_DEG) ** 2)).sum(axis=2) * ("v" in families)
        h_err = self.h_angle[None, :] - rolls[:, None]
        h_score = (self.h_weight * np.exp(-0.5 * (h_err / INLIER_DEG) ** 2)).sum(axis=1) * ("h" in families)
        # The weak prior toward no pitch breaks the tie when the verticals cannot tell pitch from roll.
        prior = np.exp(-0.5 * (pitches / PITCH_PRIOR_DEG) ** 2)[None, :]
        return (v_score + h_score[:, None]) * (0.9 + 0.1 * prior)
