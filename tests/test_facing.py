"""A member facing away, a side photo showing the back or the front, and arms held where the front measures
cannot read the body (issue 12), on the real photos (../shared/testdata: the README names
other/h36m_S1_..._back.jpg as a back view; synthetic/pranjal_back.png is a drawn one)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import read_photo
from photo_poses import PAIRS, estimate, read

from daemon import facing
from daemon.request import AnalyzeRequest
from daemon.views import BP

BACK_VIEWS = (("other", "h36m_S1_Directions_1_54138969_000001_back.jpg"), ("synthetic", "pranjal_back.png"))
FRONT_VIEWS = [("front", f"{pair}_front.jpg") for pair in PAIRS] + [
    ("front", "faraz_arsalan2_front.jpg"), ("front", "h36m_S8_WalkDog_1_55011271_000026.jpg"),
    ("synthetic", "pranjal_front.png"),
]
SIDE_VIEWS = [("side", f"{pair}_side.jpg") for pair in PAIRS] + [("side", "faraz_left_side.jpg")]


def _main(backend, folder: str, name: str, mirror: bool = False):
    image = read(folder, name)
    return estimate(backend, image[:, ::-1] if mirror else image).main


@pytest.mark.parametrize("mirror", [False, True])
def test_facing_on_the_real_photos(backend, mirror):
    for folder, name in BACK_VIEWS:
        assert facing.facing(_main(backend, folder, name, mirror)).direction == "away", name
    for folder, name in FRONT_VIEWS:
        assert facing.facing(_main(backend, folder, name, mirror)).direction == "toward", name
    for folder, name in SIDE_VIEWS:
        assert facing.facing(_main(backend, folder, name, mirror)).direction == "profile", name


def _answer(analyzer, front: bytes, side: bytes) -> dict:
    return analyzer.analyze(AnalyzeRequest(id="t", uuid="u", front_image=front, side_image=side))


def test_back_view_in_the_front_slot(analyzer):
    """Before: analysed as a front view with left and right swapped. Now: no front measures, and the
    answer says why; the side photo is still measured."""
    back = read_photo("other", "h36m_S1_Directions_1_54138969_000001_back.jpg")
    answer = _answer(analyzer, back, read_photo("side", "fitlens_p2_side.jpg"))
    assert "In the Front image, The target has their back to the camera; the front photo must show the front." in (
        answer["message"])
    for name in ("far_head_bal", "far_pelvic_bal", "far_shoulder_bal", "far_left_qang", "far_right_qang",
                 "far_knee_bal", "far_tilt"):
        measure = answer["measures"][name]
        assert measure["status"] == "not_measurable" and measure["value"] is None, name
        assert measure["reason"] == "the front photo shows the target's back"
        assert answer[f"{name}_m_"] == 0
    assert any(answer["measures"][name]["value"] is not None for name in ("turtle_neck", "sar_tilt"))
    # The landmarks are still reported (drawn and in pose2df1), as found.
    assert len(answer["pose2df1"]) == 1


@pytest.mark.parametrize(("folder", "name", "text", "reason"), [
    ("front", "fitlens_p3_front.jpg", "In the Side image, The target is facing the camera; the side photo must show the side.",
     "the side photo shows the target's front, not their side"),
    ("synthetic", "pranjal_back.png",
     "In the Side image, The target has their back to the camera; the side photo must show the side.",
     "the side photo shows the target's back, not their side"),
])
def test_front_or_back_view_in_the_side_slot(analyzer, folder, name, text, reason):
    answer = _answer(analyzer, read_photo("front", "fitlens_p3_front.jpg"), read_photo(folder, name))
    assert text in answer["message"]
    for key in ("turtle_neck", "round_shoulder", "sar_tilt", "sar_head_tilt"):
        assert answer["measures"][key]["status"] == "not_measurable"
        assert answer["measures"][key]["reason"] == reason
    assert answer["sar_fwd_head"] == 0
    assert any(answer["measures"][key]["value"] is not None for key in ("far_shoulder_bal", "far_pelvic_bal"))


def test_arms_free_on_the_real_front_photos(backend):
    for folder, name in FRONT_VIEWS:
        assert facing.arms_posture(_main(backend, folder, name)) is None, name


def _moved(view, points: dict[str, np.ndarray]):
    keypoints = view.keypoints_px.copy()
    for name, xy in points.items():
        keypoints[BP[name]] = xy
    return dataclasses.replace(view, keypoints_px=keypoints)


def test_arms_crossed_and_hands_on_hips(backend):
    """A real front pose with the arms moved (there is no such test photo): wrists across the body at
    chest height, or on the hips with the elbows bent out."""
    view = _main(backend, "front", "fitlens_p2_front.jpg")
    kp = view.keypoints_px
    ls, rs, lh, rh = (kp[BP[n]] for n in ("left_shoulder", "right_shoulder", "left_hip", "right_hip"))
    chest = 0.6 * (ls + rs) / 2 + 0.4 * (lh + rh) / 2
    width = ls[0] - rs[0]  # > 0 facing the camera
    crossed = _moved(view, {
        "left_wrist": chest + [-0.3 * width, 0], "right_wrist": chest + [0.3 * width, 0],
        "left_elbow": ls + [0.1 * width, 0.9 * width], "right_elbow": rs + [-0.1 * width, 0.9 * width],
    })
    assert facing.arms_posture(crossed) == "crossed"
    on_hips = _moved(view, {
        "left_wrist": lh + [0.05 * width, -0.05 * width], "right_wrist": rh + [-0.05 * width, -0.05 * width],
        "left_elbow": ls + [0.45 * width, 0.6 * width], "right_elbow": rs + [-0.45 * width, 0.6 * width],
    })
    assert facing.arms_posture(on_hips) == "hands_on_hips"
    mirrored = dataclasses.replace(on_hips, keypoints_px=np.column_stack([view.image_size[0] - on_hips.keypoints_px[:, 0],
                                                                          on_hips.keypoints_px[:, 1]]))
    assert facing.arms_posture(mirrored) == "hands_on_hips"


def test_arms_messages():
    from daemon import guidance

    toward = facing.Facing("toward", 2.0, 1.0, -0.1)
    assert guidance.facing_guidance("Front", "front", toward, "crossed") == [
        "In the Front image, The target's arms are crossed; let the arms hang at the sides."]
    assert guidance.facing_guidance("Front", "front", toward, "hands_on_hips") == [
        "In the Front image, The target's hands are on the hips; let the arms hang at the sides."]
    assert guidance.facing_guidance("Front", "front", toward, None) == []


def test_facing_is_plain_keypoints_in_verdict_out(backend):
    """The verdict needs nothing but the landmarks (the capture path reuses it on live frames)."""
    view = _main(backend, "other", "h36m_S1_Directions_1_54138969_000001_back.jpg")
    bare = dataclasses.replace(view, mask_roi=None, roi_to_image=None)
    assert facing.facing(bare).direction == "away"
    assert facing.wrong_view_reason("front", facing.facing(bare)) == "the front photo shows the target's back"
    assert facing.wrong_view_reason("front", facing.facing(_main(backend, "front", "fitlens_p2_front.jpg"))) is None
    assert facing.wrong_view_reason("side", facing.facing(_main(backend, "side", "fitlens_p2_side.jpg"))) is None
