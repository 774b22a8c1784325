"""The live guide's conditions and hold timer on synthetic poses, and the tracker on real frames (the full
model, as the live path runs it): detector only when needed, tracking lost and found, a second person."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
from capture_frames import compose, load_photo
from synthetic_pose import front_pose, hide

from daemon.capture import texts
from daemon.capture.guide import Candidate, FrameStats, GuideSettings, Hold, conditions
from daemon.capture.tracker import PoseTracker
from daemon.views import BP

SETTINGS = GuideSettings()
LIT = FrameStats(brightness=120.0, sharpness=400.0)


def moved(view, dx: float = 0.0, dy: float = 0.0, factor: float = 1.0):
    """The same person shifted by (dx, dy) px and scaled about the image centre, in the same frame."""
    centre = np.array(view.image_size, dtype=np.float64) / 2
    points = (view.keypoints_px - centre) * factor + centre + [dx, dy]
    low, high = points.min(0), points.max(0)
    return dataclasses.replace(view, keypoints_px=points,
                               box=(low[0], low[1], high[0] - low[0], high[1] - low[1]))


def test_a_well_placed_person_is_ready_for_the_front_view():
    assert conditions("front", front_pose(), [], LIT, SETTINGS) == []


def test_each_condition_names_its_problem():
    person = front_pose()
    assert conditions("front", None, [], LIT, SETTINGS) == ["no_person"]
    assert conditions("front", moved(person, dx=-250), [], LIT, SETTINGS) == ["move_left"]
    assert conditions("front", moved(person, dx=250), [], LIT, SETTINGS) == ["move_right"]
    assert conditions("front", moved(person, factor=0.6), [], LIT, SETTINGS) == ["come_closer"]
    # Head and feet out of a frame the body overfills: step back (not "head cut", "feet cut").
    assert conditions("front", moved(person, factor=1.6), [], LIT, SETTINGS) == ["step_back"]
    # Only the feet out, the body not overfilling the frame: the feet are named.
    assert conditions("front", moved(person, dy=300), [], LIT, SETTINGS) == ["feet_cut"]
    assert conditions("front", hide(person, "nose", "left_eye", "right_eye"), [], LIT, SETTINGS) == ["facing_away"]
    assert conditions("side", person, [], LIT, SETTINGS) == ["turn_side"]
    raised = dataclasses.replace(person, keypoints_px=person.keypoints_px.copy())
    raised.keypoints_px[BP["left_wrist"]] = raised.keypoints_px[BP["left_shoulder"]] + [60, -50]
    assert conditions("front", raised, [], LIT, SETTINGS) == ["arms_down"]
    assert conditions("front", person, [], FrameStats(20.0, 400.0), SETTINGS) == ["too_dark"]
    assert conditions("front", person, [], FrameStats(120.0, 5.0), SETTINGS) == ["blurred"]


def test_a_second_person_counts_only_when_tall_enough():
    person = front_pose()
    height = person.box[3]
    tall = np.array([800.0, 300.0, 900.0, 300.0 + 0.8 * height])
    small = np.array([800.0, 300.0, 850.0, 300.0 + 0.3 * height])
    assert conditions("front", person, [tall], LIT, SETTINGS) == ["several_people"]
    assert conditions("front", person, [small], LIT, SETTINGS) == []


def test_the_standing_mark_decides_distance_when_the_kiosk_is_calibrated():
    person = front_pose()
    assert conditions("front", person, [], LIT, SETTINGS, distance_mm=3000, mark_mm=2000) == ["come_closer"]
    assert conditions("front", person, [], LIT, SETTINGS, distance_mm=1500, mark_mm=2000) == ["step_back"]
    assert conditions("front", person, [], LIT, SETTINGS, distance_mm=2100, mark_mm=2000) == []
    # Small in the frame but on the mark (a wide-angle camera): the mark wins over the frame.
    assert conditions("front", moved(person, factor=0.6), [], LIT, SETTINGS, distance_mm=2000, mark_mm=2000) == []


def test_hold_counts_down_while_still_restarts_on_a_move_and_keeps_the_sharpest_frame():
    hold = Hold(GuideSettings(hold_s=1.0, still_tolerance=0.02))
    person = front_pose()
    assert hold.update(True, person, 0.0, Candidate(0, b"0", 100.0)) == pytest.approx(1.0)
    assert hold.update(True, moved(person, dx=3), 0.4, Candidate(1, b"1", 300.0)) == pytest.approx(0.6)
    assert hold.update(True, person, 0.8, Candidate(2, b"2", 200.0)) == pytest.approx(0.2)
    assert hold.update(True, person, 1.0, Candidate(3, b"3", 150.0)) == 0.0
    assert hold.best.frame == 1
    # A step (5% of the height) starts the window again, from that frame.
    assert hold.update(True, moved(person, dx=80), 1.1, Candidate(4, b"4", 50.0)) == pytest.approx(1.0)
    assert hold.best.frame == 4
    assert hold.update(False, person, 1.2, Candidate(5, b"5", 900.0)) is None
    assert hold.best is None and hold.started_at is None


def test_every_code_has_english_and_korean_text():
    for code, by_language in texts.TEXTS.items():
        assert set(by_language) == set(texts.LANGUAGES), code
        assert all(text.strip() for text in by_language.values())
    assert texts.message("step_back", "ko") == {"code": "step_back", "text": texts.TEXTS["step_back"]["ko"]}


def _reduced(frame: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.resize(frame, (640, 360), interpolation=cv2.INTER_AREA)


def test_tracker_runs_the_detector_only_when_needed(full_backend):
    front = load_photo("front", "fitlens_p1_front.jpg")
    tracker = PoseTracker(min_score=0.5, min_presence=0.5, detect_every=4)
    detected, boxes = [], []
    for index in range(6):
        # Walking right by 1% of the width a frame: the ROI follows from the landmarks.
        frame = _reduced(compose(front, 0.9, -0.1 + 0.01 * index, seed=index))
        step = tracker.step(full_backend, frame, (1280, 720), index / 30)
        assert step.person is not None and step.person.image_size == (1280, 720)
        detected.append(step.detected)
        boxes.append(step.person.box[0] + step.person.box[2] / 2)
    assert detected == [True, False, False, False, True, False]
    assert all(b > a for a, b in itertools.pairwise(boxes)), boxes
    # Nobody there: tracking is lost (the detector tries on the same frame) ...
    empty = tracker.step(full_backend, _reduced(compose(front, 0.0001)), (1280, 720), 0.3)
    assert empty.person is None and empty.detected
    # ... and found again by the detector on the next frame with a person.
    back = tracker.step(full_backend, _reduced(compose(front, 0.9, seed=9)), (1280, 720), 0.4)
    assert back.person is not None and back.detected


def test_tracker_sees_a_second_person(full_backend):
    front, side = load_photo("front", "fitlens_p1_front.jpg"), load_photo("side", "fitlens_p2_side.jpg")
    frame = compose(front, 0.9, -0.25, seed=1)
    frame[:, 640:] = compose(side, 0.9, 0.25, seed=2)[:, 640:]
    tracker = PoseTracker(min_score=0.5, min_presence=0.5, detect_every=15)
    step = tracker.step(full_backend, _reduced(frame), (1280, 720), 0.0)
    assert step.person is not None and step.people == 2 and len(step.other_boxes) == 1
    assert "several_people" in conditions("front", step.person, step.other_boxes, LIT, SETTINGS)


def test_a_back_to_the_camera_is_told_to_turn_around(full_backend):
    """The model reports a face even from behind; the nose behind the hips gives the back view away."""
    import cv2
    from conftest import testdata_path

    found = {}
    for name in ("pranjal_back.png", "pranjal_front.png"):
        photo = cv2.imread(str(testdata_path("photos", "synthetic", name)), cv2.IMREAD_COLOR)
        tracker = PoseTracker(min_score=0.5, min_presence=0.5, detect_every=15)
        step = tracker.step(full_backend, _reduced(compose(photo, 0.95)), (1280, 720), 0.0)
        assert step.person is not None, name
        found[name] = conditions("front", step.person, step.other_boxes, LIT, SETTINGS)
    assert found["pranjal_back.png"] == ["facing_away"]
    assert "facing_away" not in found["pranjal_front.png"]
