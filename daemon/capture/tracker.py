"""The live path's pose tracker, as MediaPipe's video-mode pose graph runs it.

Per frame one landmark pass (no flip testing) on an ROI carried over from the previous frame's
landmarks (pose_landmark_cpu.pbtxt's loopback through pose_landmarks_to_roi.pbtxt); the person detector
runs only when there is no ROI (first frame, tracking lost) and every `detect_every` frames, which is
also when a second person is noticed. Keypoints for display are smoothed with a One Euro filter
(landmarks_smoothing_calculator.cc) whose cut-off follows the speed, so the overlay stays steady
standing still and still follows a step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from daemon import pose
from daemon.views import ViewPose
from engines.base import Backend

# A detection overlapping the tracked person this much is the tracked person, not a second one.
SAME_PERSON_IOU = 0.3

# One Euro filter (Casiez et al. 2012) on keypoints in units of the person's height: a 1 Hz cut-off
# at rest hides the model's frame-to-frame jitter (a few tenths of a percent of the height); beta
# opens it up with speed so that a step is followed within a frame or two.
ONE_EURO_MIN_CUTOFF_HZ = 1.0
ONE_EURO_BETA = 10.0
ONE_EURO_DERIVATE_CUTOFF_HZ = 1.0


@dataclass
class TrackedFrame:
    """What the tracker found in one frame."""

    person: ViewPose | None  # the tracked person, in the frame's full pixels
    smoothed_px: np.ndarray | None  # (33, 2) keypoints smoothed for display
    other_boxes: list[np.ndarray]  # other people's body boxes (xmin, ymin, xmax, ymax) at the last detector run
    people: int  # people the detector saw at its last run
    detected: bool  # the detector ran on this frame


def body_box(detection: pose.Detection) -> np.ndarray:
    """A detected person's whole-body box (xmin, ymin, xmax, ymax). The detector's own box is the face's;
    its hip-centre and full-body scale points span the body: a circle around the hips through the scale
    point encloses it, so the body is about twice that radius tall (its width is a guess, 0.8 x the radius)."""
    centre, scale_point = detection.keypoints_px[0], detection.keypoints_px[1]
    radius = float(np.hypot(*(scale_point - centre)))
    return np.array([centre[0] - 0.4 * radius, centre[1] - radius, centre[0] + 0.4 * radius, centre[1] + radius])


def _box_rank(box: np.ndarray, width: int, height: int) -> float:
    """Largest and most central first (the analysis's main-subject rule, on detector boxes)."""
    w, h = box[2] - box[0], box[3] - box[1]
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    d = math.hypot(cx - width / 2, cy - height / 2) / (math.hypot(width, height) / 2)
    return float(w * h * max(0.0, 1.0 - d))


class OneEuroFilter:
    """One Euro filter over an array of positions; `scale` normalises the speed (the person's height)."""

    def __init__(self, min_cutoff: float = ONE_EURO_MIN_CUTOFF_HZ, beta: float = ONE_EURO_BETA,
                 derivate_cutoff: float = ONE_EURO_DERIVATE_CUTOFF_HZ):
        self.min_cutoff, self.beta, self.derivate_cutoff = min_cutoff, beta, derivate_cutoff
        self._value: np.ndarray | None = None
        self._speed: np.ndarray | None = None
        self._time: float | None = None

    @staticmethod
    def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
        tau = 1.0 / (2 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    def reset(self) -> None:
        self._value = self._speed = self._time = None

    def __call__(self, value: np.ndarray, timestamp: float, scale: float) -> np.ndarray:
        value = np.asarray(value, dtype=np.float64) / max(scale, 1e-6)
        if self._value is None or self._time is None or timestamp <= self._time or self._value.shape != value.shape:
            self._value, self._speed, self._time = value, np.zeros_like(value), timestamp
            return value * scale
        dt = timestamp - self._time
        speed = (value - self._value) / dt
        self._speed = self._speed + self._alpha(self.derivate_cutoff, dt) * (speed - self._speed)
        cutoff = self.min_cutoff + self.beta * np.abs(self._speed)
        self._value = self._value + self._alpha(cutoff, dt) * (value - self._value)
        self._time = timestamp
        return self._value * scale


class PoseTracker:
    """Tracks one person across a session's frames; one instance per session, used by one thread at a time."""

    def __init__(self, *, min_score: float, min_presence: float, detect_every: int):
        self.min_score = min_score
        self.min_presence = min_presence
        self.detect_every = max(1, detect_every)
        self._roi: pose.Roi | None = None
        self._size: tuple[int, int] | None = None
        self._since_detect = 0
        self._people = 0
        self._detected_boxes: list[np.ndarray] = []
        self._other_boxes: list[np.ndarray] = []
        self._smoother = OneEuroFilter()

    def reset(self) -> None:
        self._roi = None
        self._smoother.reset()

    def _detect(self, backend: Backend, pixels: np.ndarray) -> pose.Roi | None:
        """Run the detector: the best-ranked person's ROI (None when nobody); every box is kept."""
        height, width = pixels.shape[:2]
        detections = pose.detect(backend, pixels, self.min_score)
        boxes = [body_box(d) for d in detections]
        order = sorted(range(len(detections)), key=lambda i: _box_rank(boxes[i], width, height), reverse=True)
        self._people = len(detections)
        self._since_detect = 0
        self._detected_boxes = [boxes[i] for i in order]
        detections = [detections[i] for i in order]
        return pose.detection_roi(detections[0]) if detections else None

    def step(self, backend: Backend, pixels: np.ndarray, photo_size: tuple[int, int], timestamp: float) -> TrackedFrame:
        """One frame: pixels is the (possibly reduced) BGR frame, photo_size the frame's full size."""
        height, width = pixels.shape[:2]
        if self._size != (width, height):  # a new camera size: the old ROI means nothing here
            self._size = (width, height)
            self.reset()
        detected = False
        if self._roi is None or self._since_detect >= self.detect_every:
            roi = self._detect(backend, pixels)
            detected = True
            if self._roi is None:  # while tracking, the tracked ROI stays: it follows the person better
                self._roi = roi
        self._since_detect += 1
        crop = self._landmarks(backend, pixels, self._roi) if self._roi is not None else None
        if crop is None and not detected:
            # Tracking lost: find the person again on this same frame rather than one frame later.
            self._roi = self._detect(backend, pixels)
            detected = True
            crop = self._landmarks(backend, pixels, self._roi) if self._roi is not None else None
        if crop is None or self._roi is None:
            self._roi = None
            self._smoother.reset()
            return TrackedFrame(None, None, [], self._people, detected)
        scale = (photo_size[0] / width, photo_size[1] / height)
        person = pose.to_view(crop, self._roi, photo_size, 1.0, scale)
        self._roi = pose.landmarks_roi(crop, self._roi)
        if detected:
            # Whichever detection overlaps the tracked person is that person; the rest are other people.
            x, y, w, h = (value / scale[0] for value in person.box)
            tracked_box = np.array([x, y, x + w, y + h])
            overlaps = pose._iou(tracked_box, np.stack(self._detected_boxes)) if self._detected_boxes else []
            self._other_boxes = [box for box, iou in zip(self._detected_boxes, overlaps) if iou < SAME_PERSON_IOU]
        others = [box * scale[0] for box in self._other_boxes]
        extent = float(np.ptp(person.keypoints_px[:, 1])) or 1.0
        smoothed = self._smoother(person.keypoints_px, timestamp, extent)
        return TrackedFrame(person, smoothed, others, self._people, detected)

    def _landmarks(self, backend: Backend, pixels: np.ndarray, roi: pose.Roi) -> pose.CropLandmarks | None:
        outputs = backend.run("landmark", {"input_1": pose.landmark_input(pixels, roi, with_mirror=False)})
        crop = pose.decode_crop(outputs, 0)
        return crop if crop.pose_flag >= self.min_presence else None
