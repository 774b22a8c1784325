"""Camera roll and pitch (issue 12): read from the photo's lines or a kiosk placement, taken out of the
landmarks once before measuring (daemon/leveling.py), reported in the answer.

The rotated photos are made at test time from the shared photos: turned about the centre as a camera
rolled by a known angle would see the scene, and zoomed just enough that no empty wedge shows in the
corners (the same zoom for every angle, the unrotated reference included), so no frame edge gives the
answer away.
"""

from __future__ import annotations

import dataclasses
import math
import statistics

import cv2
import numpy as np
import pytest
from conftest import read_photo
from photo_poses import PAIRS, estimate, read

from calibration.intrinsics import Intrinsics, default_intrinsics
from calibration.kiosk import Kiosk
from calibration.placement import Placement
from calibration.roll import CameraTilt, estimate_tilt, line_segments
from daemon import grades, guidance, pose
from daemon.imageio import Decoded
from daemon.measures import FRONT_KEYS, SIDE_KEYS, front_measures, side_measures
from daemon.pipeline import camera_tilt, measure_level, relevel_roll
from daemon.request import AnalyzeRequest

ROLLS = (1.0, -1.0, 2.0, -2.0, 4.0, -4.0)
# Side photos whose backgrounds carry enough straight lines (a wall's floor line, door and wall edges).
LINE_PHOTOS = ("fitlens_p2_side", "fitlens_p4_side", "fitlens_p5_side", "fitlens_p5b_side")
ROLL_TOLERANCE_DEG = 0.5
# The pose stage is not exactly rotation-equivariant, nor even shift-equivariant: resampling a photo
# half a pixel sideways moves single measures by up to 1-2.3 degrees (the head angle and the C7 contour
# most; test_rolled_measures_within_resampling_noise measures it), even though the roll is taken out
# exactly (test_leveling_is_exact). The median over the measures is held to the 0.5 degrees,
# the spread to the photos' own resampling noise, single measures to 3 degrees.
MEDIAN_TOLERANCE_DEG = 0.5
SINGLE_TOLERANCE_DEG = 3.0
# pipeline.relevel_min_roll_deg's default: the second pass with the detector seeing the photo level.
RELEVEL_MIN_ROLL_DEG = 0.5
FRONT_LINES = ("far_head_bal", "far_pelvic_bal", "far_shoulder_bal", "far_knee_bal")
VFOV_DEG = 65.0


def turned(image: np.ndarray, roll_deg: float, zoom_for_deg: float = 4.0, zoom: bool = True) -> np.ndarray:
    """The photo as a camera rolled by roll_deg (> 0: the world's up leans to the image's right) sees it:
    turned clockwise on screen about the centre; zoomed to cover zoom_for_deg without wedges, or with the
    wedges filled by the edge pixels (zoom=False)."""
    height, width = image.shape[:2]
    t = math.radians(zoom_for_deg)
    scale = math.cos(t) + max(height / width, width / height) * math.sin(t) if zoom else 1.0
    matrix = cv2.getRotationMatrix2D(((width - 1) / 2, (height - 1) / 2), -roll_deg, scale)
    return cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _intrinsics(image: np.ndarray):
    return default_intrinsics((image.shape[1], image.shape[0]), VFOV_DEG)


def _lines_tilt(image: np.ndarray, poses) -> CameraTilt:
    intrinsics = _intrinsics(image)
    boxes = [person.box for person in poses.people]
    return estimate_tilt(image, intrinsics.fx, (intrinsics.cx, intrinsics.cy), boxes)


def _differences(measured: dict, reference: dict) -> list[float]:
    return [
        abs(measured[name].value - reference[name].value)
        for name in measured
        if measured[name].value is not None and reference[name].value is not None
    ]


def _levelled_side(backend, image: np.ndarray) -> tuple[CameraTilt, dict, dict]:
    """As the pipeline does it: pose, the roll from the lines, a second pose pass seeing the photo level
    when the roll is confident (pipeline.relevel_roll), the measures levelled; and as taken."""
    poses = estimate(backend, image)
    tilt = _lines_tilt(image, poses)
    tilt.applied = tilt.confident
    as_taken = side_measures(poses.main)
    second_look = relevel_roll(tilt, RELEVEL_MIN_ROLL_DEG)
    if second_look is not None:
        poses = pose.estimate(backend, np.ascontiguousarray(image), flip_test=True, roll_deg=second_look)
    return tilt, measure_level(poses.main, "side", _intrinsics(image), tilt), as_taken


@pytest.fixture(scope="module")
def line_results(backend):
    """photo -> roll -> (tilt read from the lines, measures levelled with it, measures as taken)."""
    results: dict[str, dict[float, tuple]] = {}
    for name in LINE_PHOTOS:
        original = read("side", f"{name}.jpg")
        results[name] = {roll: _levelled_side(backend, turned(original, roll)) for roll in (0.0, *ROLLS)}
    return results


def test_roll_read_from_lines_within_half_degree(line_results):
    """Every reading of the turned photos gives the turn back within 0.5 degrees; nearly all are confident
    (the zoom that hides the corners also crops lines away: fitlens_p2 turned by -1 degree keeps four
    segments, confidence 0.48, so its roll is reported and, rightly, not applied)."""
    unsure = []
    for name, by_roll in line_results.items():
        base = by_roll[0.0][0]
        assert base.confident, (name, base)
        for roll in ROLLS:
            tilt = by_roll[roll][0]
            assert tilt.source == "lines"
            if not tilt.confident:
                unsure.append((name, roll, tilt.confidence))
            # The photos' own cameras were not level either: the known turn adds to their roll.
            assert tilt.roll_deg - base.roll_deg == pytest.approx(roll, abs=ROLL_TOLERANCE_DEG), (name, roll, tilt)
    assert len(unsure) <= len(line_results) * len(ROLLS) // 10, unsure


def test_side_measures_after_roll_from_lines(line_results):
    """Levelled with the roll read from the lines, the turned photos measure what the unturned one does;
    as taken, the head angle (read against the horizontal) follows the roll."""
    corrected, uncorrected = [], []
    for name, by_roll in line_results.items():
        reference = by_roll[0.0][1]
        for roll in ROLLS:
            _tilt, levelled, as_taken = by_roll[roll]
            differences = _differences(levelled, reference)
            assert max(differences) <= SINGLE_TOLERANCE_DEG, (name, roll, differences)
            corrected += differences
            if abs(roll) == 4.0:
                uncorrected += _differences(as_taken, by_roll[0.0][2])
    assert statistics.median(corrected) <= MEDIAN_TOLERANCE_DEG, statistics.median(corrected)
    # Without the correction the 4-degree photos are off by about the roll.
    assert statistics.median(uncorrected) > 1.5 * statistics.median(corrected), (uncorrected, corrected)


def _shifted(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    matrix = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(image, matrix, (image.shape[1], image.shape[0]), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def test_rolled_measures_within_resampling_noise(backend, line_results):
    """The turned photos, levelled, differ from the unturned one by the order of the pose stage's own
    noise: the same unturned photo resampled half a pixel off (which no correction can take out) moves
    the measures by about half as much (90th percentiles: 0.6 against 1.1-1.2 degrees, measured
    2026-12-04); the median is held to 0.5 degrees above."""
    noise, turned_off = [], []
    for name, by_roll in line_results.items():
        _, reference, _ = by_roll[0.0]
        image = turned(read("side", f"{name}.jpg"), 0.0)
        for dx, dy in ((0.5, 0.0), (0.0, 0.5)):
            _, shifted, _ = _levelled_side(backend, _shifted(image, dx, dy))
            noise += _differences(shifted, reference)
        for roll in ROLLS:
            turned_off += _differences(by_roll[roll][1], reference)
    noise_p90, turned_p90 = np.percentile(noise, 90), np.percentile(turned_off, 90)
    assert turned_p90 <= 1.5, (turned_p90, noise_p90)
    assert turned_p90 <= max(2.5 * noise_p90, 0.5), (turned_p90, noise_p90)


def _rotate_view(view, roll_deg: float):
    """A ViewPose as a camera rolled by roll_deg about the photo's centre would have produced it, built
    with OpenCV's own rotation (independent of daemon/leveling.py): pixels, world axes and the mask's
    crop-to-photo affine all turned."""
    width, height = view.image_size
    matrix = cv2.getRotationMatrix2D(((width - 1) / 2, (height - 1) / 2), -roll_deg, 1.0)
    linear = matrix[:, :2]
    world = view.world_m.copy()
    world[:, :2] = world[:, :2] @ linear.T
    affine = np.vstack([np.asarray(view.roi_to_image, np.float64), [0, 0, 1]])
    return dataclasses.replace(
        view,
        keypoints_px=view.keypoints_px @ linear.T + matrix[:, 2],
        world_m=world,
        roi_to_image=(np.vstack([matrix, [0, 0, 1]]) @ affine)[:2],
    )


@pytest.mark.parametrize("pair", ["fitlens_p2", "fitlens_p4"])
def test_leveling_is_exact(backend, pair):
    """Landmarks of a real photo turned by a known roll, levelled with that roll: every measure as before
    (within rounding), the C7 contour (mask sampling) included; not levelled, the front lines move by the
    roll."""
    for kind, measure in (("front", front_measures), ("side", side_measures)):
        image = read(kind, f"{pair}_{kind}.jpg")
        view = estimate(backend, image).main
        intrinsics = default_intrinsics(view.image_size, VFOV_DEG)
        reference = measure(view)
        for roll in (2.0, -4.0):
            rotated = _rotate_view(view, roll)
            tilt = CameraTilt(roll, 0.0, "kiosk", 1.0, applied=True)
            levelled = measure_level(rotated, kind, intrinsics, tilt)
            for name, value in levelled.items():
                assert (value.value is None) == (reference[name].value is None), (pair, kind, name)
                if value.value is not None:
                    assert value.value == pytest.approx(reference[name].value, abs=0.05), (pair, kind, name, roll)
            if kind == "front":
                as_taken = measure(rotated)
                moved = [abs(as_taken[n].value - reference[n].value) for n in FRONT_LINES if reference[n].value is not None]
                assert statistics.median(moved) == pytest.approx(abs(roll), abs=0.3), (pair, moved)


def measure_shifts(answer: dict, level: dict, label: tuple) -> list[float]:
    """|answer - level| of every measure both answers give, each held to SINGLE_TOLERANCE_DEG."""
    shifts = []
    for name in (*FRONT_KEYS, *SIDE_KEYS):
        a, b = answer["measures"][name]["value"], level["measures"][name]["value"]
        if a is not None and b is not None:
            assert abs(a - b) <= SINGLE_TOLERANCE_DEG, (*label, name, a, b)
            shifts.append(abs(a - b))
    return shifts


def front_line_shifts(answer: dict, level: dict) -> list[float]:
    """How far the front lines of `answer` lie from the level pair's (what an uncorrected roll moves)."""
    return [
        abs(answer["measures"][n]["value"] - level["measures"][n]["value"]) for n in FRONT_LINES
        if level["measures"][n]["value"] is not None and answer["measures"][n]["value"] is not None
    ]


def _answer(analyzer, front: bytes, side: bytes, kiosk: str | None = None) -> dict:
    return analyzer.analyze(AnalyzeRequest(id="t", uuid="u", front_image=front, side_image=side, kiosk=kiosk))


def _jpeg(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    return data.tobytes()


@pytest.fixture()
def rolled_kiosks(analyzer):
    """Kiosks whose placements carry a known roll (no intrinsics: the photo's own default camera)."""
    names = []
    for roll in (2.0, -4.0, 0.0):
        name = f"rolled_{roll:+.0f}"
        analyzer.kiosks[name] = Kiosk(path=None, intrinsics=None, placement=Placement(
            standing_distance_mm=2500.0, roll_deg=roll))  # type: ignore[arg-type]
        names.append(name)
    yield
    for name in names:
        analyzer.kiosks.pop(name, None)


def test_kiosk_roll_applied_in_the_answer(analyzer, rolled_kiosks):
    """The whole pipeline with a kiosk whose placement says the camera is rolled: the turned pairs measure
    what the level pairs do, the answer's camera says so, and a level kiosk would have read the roll."""
    corrected, uncorrected = [], []
    for pair in ("fitlens_p2", "fitlens_p4", "fitlens_p5"):
        front = read("front", f"{pair}_front.jpg")
        side = read("side", f"{pair}_side.jpg")
        level = _answer(analyzer, _jpeg(front), _jpeg(side), "rolled_+0")
        for roll in (2.0, -4.0):
            images = (_jpeg(turned(front, roll, zoom=False)), _jpeg(turned(side, roll, zoom=False)))
            answer = _answer(analyzer, *images, f"rolled_{roll:+.0f}")
            for view in ("front", "side"):
                tilt = answer["camera"][view]["tilt"]
                assert tilt["source"] == "kiosk" and tilt["applied"] and tilt["roll_deg"] == pytest.approx(roll)
            # The installer was warned at calibration; the member is not asked to level a fixed camera.
            assert not any("The camera was" in message for message in answer["message"])
            corrected += measure_shifts(answer, level, (pair, roll))
            if roll == 2.0:
                uncorrected += front_line_shifts(_answer(analyzer, *images, "rolled_+0"), level)
    assert statistics.median(corrected) <= MEDIAN_TOLERANCE_DEG, corrected
    assert statistics.median(uncorrected) >= 1.5, uncorrected


def test_grades_of_level_pairs_move_at_most_one_step(backend):
    """On the eight real pairs as taken, reading the roll from the photo's lines changes no grade by more
    than one step against measuring them as they are (today's behaviour)."""
    steps = "ABCD"
    for pair in PAIRS:
        for kind in ("front", "side"):
            data = read_photo(kind, f"{pair}_{kind}.jpg")
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            poses = estimate(backend, image)
            intrinsics = _intrinsics(image)
            tilt = camera_tilt(Decoded(image, (image.shape[1], image.shape[0])), poses, intrinsics, None,
                               line_segments(image))
            old = grades.grade((front_measures if kind == "front" else side_measures)(poses.main))
            second_look = relevel_roll(tilt, RELEVEL_MIN_ROLL_DEG)
            if second_look is not None:
                poses = pose.estimate(backend, image, flip_test=True, roll_deg=second_look)
            new = grades.grade(measure_level(poses.main, kind, intrinsics, tilt))
            assert abs(steps.index(new) - steps.index(old)) <= 1, (pair, kind, old, new, tilt)


def test_tilt_guidance_messages():
    assert guidance.tilt_guidance("Front", CameraTilt(0.4, None, "lines", 0.9, 10, applied=True)) == []
    tilted = guidance.tilt_guidance("Front", CameraTilt(-2.26, None, "lines", 0.9, 10, applied=True))
    assert tilted == [
        ("In the Front image, The camera was tilted by 2.3 degrees; the measures were corrected for it. "
        "Hold the camera level.")
    ]
    unsure = guidance.tilt_guidance("Side", CameraTilt(3.0, None, "lines", 0.2, 2, note="too few straight lines"))
    assert unsure == [
        ("In the Side image, The camera's tilt could not be read from the photo (too few straight lines); "
        "the measures assume the camera was level.")
    ]
    pitched = guidance.tilt_guidance("Side", CameraTilt(0.0, 9.0, "lines", 0.9, 10, applied=True))
    assert len(pitched) == 1 and "pointed 9 degrees down" in pitched[0] and "tilt measures may read a lean" in pitched[0]
    assert guidance.tilt_guidance("Front", CameraTilt(2.5, -6.0, "kiosk", 1.0, applied=True)) == []


def pitched(image: np.ndarray, pitch_deg: float, margin: float = 0.2) -> tuple[np.ndarray, Intrinsics]:
    """The photo as the same camera pitched by pitch_deg (> 0: looking down) would take it, on a canvas
    grown by `margin` of the height above and below so nobody leaves the frame; and that camera. A turn
    about the camera's centre is exactly a homography of the photo (K R K^-1); R built here with
    OpenCV's Rodrigues, independently of daemon/leveling.py."""
    height, width = image.shape[:2]
    pad = round(margin * height)
    canvas = cv2.copyMakeBorder(image, pad, pad, 0, 0, cv2.BORDER_REPLICATE)
    focal = (max(width, height) / 2.0) / math.tan(math.radians(VFOV_DEG) / 2.0)
    camera = Intrinsics(fx=focal, fy=focal, cx=(width - 1) / 2, cy=(canvas.shape[0] - 1) / 2, source="kiosk",
                        image_size=(width, canvas.shape[0]))
    rotation, _ = cv2.Rodrigues(np.array([math.radians(pitch_deg), 0.0, 0.0]))
    k = camera.camera_matrix
    homography = k @ rotation @ np.linalg.inv(k)
    warped = cv2.warpPerspective(canvas, homography, (canvas.shape[1], canvas.shape[0]), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REPLICATE)
    return warped, camera


def test_kiosk_pitch_applied(backend):
    """A kiosk camera pitched 8 degrees down, real photos warped as that camera sees them: with the
    placement's pitch taken out, the pairs measure what the level camera's pairs do (median over the
    measures; single measures within the turned photos' bound). On a person in the middle of the frame
    8 degrees of pitch moves the measures less than the model's own noise (0.0-2.1 degrees either way,
    2026-12-04), so that the correction helps is checked exactly on the landmarks
    (test_pitch_leveling_is_exact), not here."""
    corrected = []
    for pair in ("fitlens_p2", "fitlens_p4"):
        for kind, measure in (("front", front_measures), ("side", side_measures)):
            image = read(kind, f"{pair}_{kind}.jpg")
            level, camera = pitched(image, 0.0)
            reference = measure(estimate(backend, level).main)
            tilted, _ = pitched(image, 8.0)
            view = estimate(backend, tilted).main
            levelled = measure_level(view, kind, camera, CameraTilt(0.0, 8.0, "kiosk", 1.0, applied=True))
            corrected += _differences(levelled, reference)
    assert statistics.median(corrected) <= MEDIAN_TOLERANCE_DEG, corrected
    assert max(corrected) <= SINGLE_TOLERANCE_DEG, corrected


# Measures read from the landmarks alone (the others also sample the segmentation mask at the neck).
LANDMARK_ONLY = (*FRONT_KEYS, "sar_tilt", "sar_head_tilt")


@pytest.mark.parametrize("pair", ["fitlens_p2", "fitlens_p4"])
def test_pitch_leveling_is_exact(backend, pair):
    """Landmarks of a real photo as a camera pitched by a known angle would see them (homography K R K^-1
    and world axes turned by R, built here with OpenCV's Rodrigues), levelled with that pitch: the
    measures come back within rounding."""
    for kind, measure in (("front", front_measures), ("side", side_measures)):
        view = estimate(backend, read(kind, f"{pair}_{kind}.jpg")).main
        intrinsics = default_intrinsics(view.image_size, VFOV_DEG)
        reference = measure(view)
        for pitch in (8.0, -6.0):
            rotation, _ = cv2.Rodrigues(np.array([math.radians(pitch), 0.0, 0.0]))
            k = intrinsics.camera_matrix
            homography = k @ rotation @ np.linalg.inv(k)
            points = np.hstack([view.keypoints_px, np.ones((len(view.keypoints_px), 1))]) @ homography.T
            seen = dataclasses.replace(view, keypoints_px=points[:, :2] / points[:, 2:3],
                                       world_m=view.world_m @ rotation.T)
            levelled = measure_level(seen, kind, intrinsics, CameraTilt(0.0, pitch, "kiosk", 1.0, applied=True))
            compared = 0
            for name in LANDMARK_ONLY:
                # A point the pitch pushes out of the frame is absent (its measure None), as in a real photo.
                if name in reference and reference[name].value is not None and levelled[name].value is not None:
                    assert levelled[name].value == pytest.approx(reference[name].value, abs=0.05), (pair, kind, name, pitch)
                    compared += 1
            assert compared >= (4 if kind == "front" else 1), (pair, kind, pitch, compared)


def test_lines_can_be_switched_off(backend):
    """pipeline.level_from_lines = false: nothing read, nothing corrected, nothing said."""
    image = read("side", "fitlens_p4_side.jpg")
    poses = estimate(backend, image)
    decoded = Decoded(image, (image.shape[1], image.shape[0]))
    assert camera_tilt(decoded, poses, _intrinsics(image), None, line_segments(image)).applied  # read
    off = camera_tilt(decoded, poses, _intrinsics(image), None, None)
    assert off.source == "none" and not off.applied and off.roll_deg is None
    assert guidance.tilt_guidance("Side", off) == []
    levelled = measure_level(poses.main, "side", _intrinsics(image), off)
    assert {k: m.value for k, m in levelled.items()} == {k: m.value for k, m in side_measures(poses.main).items()}


def test_annotated_reference_lines_follow_the_roll(backend):
    """The annotated side photo's plumb line follows the world's vertical the measures were read against."""
    from daemon import render

    image = read("side", "fitlens_p2_side.jpg")
    view = estimate(backend, image).main
    measures = side_measures(view)
    blank = np.zeros_like(image)
    colour = np.array(render.REFERENCE_COLOUR, np.uint8)
    ankles_y = measures["sar_tilt"].points_px[0][1]
    for roll in (0.0, 3.0, -3.0):
        drawn, scale = render.render_annotated(blank, view, measures, "side", 0, roll_deg=roll)
        ys, xs = np.nonzero(np.all(drawn == colour, axis=2))
        # The plumb line below the feet: nothing else is drawn there.
        below = ys > ankles_y * scale + 20
        slope = np.polyfit(ys[below], xs[below], 1)[0]
        assert math.degrees(math.atan(-slope)) == pytest.approx(roll, abs=0.3), roll
