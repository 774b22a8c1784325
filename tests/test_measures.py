"""Measures, grades and rendering on synthetic poses whose answers are known (tests/synthetic_pose.py)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from synthetic_pose import front_pose, hide, mirror_view, scale_view, side_pose

from daemon.measures import (
    FRONT_KEYS,
    NORMAL_RANGES,
    SIDE_KEYS,
    forward_head_flag,
    front_measures,
    side_measures,
    side_part,
)
from daemon.render import render_annotated

TOL = 0.01
LEFT_RIGHT = ("far_head_bal", "far_pelvic_bal", "far_shoulder_bal", "far_knee_bal", "far_tilt")


def _values(measures):
    return {name: m.value for name, m in measures.items()}


def test_keys_are_the_contract():
    assert tuple(front_measures(front_pose())) == FRONT_KEYS
    assert tuple(side_measures(side_pose())) == SIDE_KEYS
    assert set(NORMAL_RANGES) == set(FRONT_KEYS) | set(SIDE_KEYS)


def test_upright_symmetric_person_reads_zero():
    for name, value in _values(front_measures(front_pose())).items():
        assert value == pytest.approx(0.0, abs=TOL), name


def test_leaning_3_degrees_right():
    """The shoulders over the feet, toward the person's right (image left): far_tilt = +3."""
    measures = front_measures(front_pose(lean_deg=3.0))
    assert measures["far_tilt"].value == pytest.approx(3.0, abs=TOL)
    assert measures["far_tilt"].status == "outside"
    assert front_measures(front_pose(lean_deg=-1.0))["far_tilt"].value == pytest.approx(-1.0, abs=TOL)


@pytest.mark.parametrize(
    "name, kwarg", [("far_shoulder_bal", "shoulder_tilt_deg"), ("far_pelvic_bal", "pelvic_tilt_deg"),
                    ("far_head_bal", "head_tilt_deg"), ("far_knee_bal", "knee_tilt_deg")]
)
@pytest.mark.parametrize("degrees", [2.5, -4.0])
def test_line_tilts_positive_when_the_right_side_is_lower(name, kwarg, degrees):
    view = front_pose(**{kwarg: degrees})
    assert front_measures(view)[name].value == pytest.approx(degrees, abs=TOL)
    right, left = view.keypoints_px[12], view.keypoints_px[11]
    if name == "far_shoulder_bal":  # + means the right shoulder (image left) is lower (larger y)
        assert (right[1] > left[1]) == (degrees > 0) and right[0] < left[0]


def test_legs_at_known_varus_and_valgus():
    measures = front_measures(front_pose(left_varus_deg=6.0, right_varus_deg=-4.0))
    assert measures["far_left_qang"].value == pytest.approx(6.0, abs=TOL)
    assert measures["far_right_qang"].value == pytest.approx(-4.0, abs=TOL)
    view = front_pose(left_varus_deg=6.0)
    knee, hip = view.keypoints_px[25], view.keypoints_px[23]
    assert knee[0] > hip[0] + (view.keypoints_px[27][0] - hip[0]) * 0.5  # the bowed left knee is out to image right


def test_everything_at_once():
    values = _values(front_measures(front_pose(
        lean_deg=3.0, shoulder_tilt_deg=2.0, pelvic_tilt_deg=-1.5, head_tilt_deg=4.0,
        left_varus_deg=5.0, right_varus_deg=5.0)))
    expected = {"far_tilt": 3.0, "far_shoulder_bal": 2.0, "far_pelvic_bal": -1.5, "far_head_bal": 4.0,
                "far_left_qang": 5.0, "far_right_qang": 5.0}
    for name, value in expected.items():
        assert values[name] == pytest.approx(value, abs=TOL), name


def test_side_view_known_angles_both_facings():
    for facing in (1, -1):
        view = side_pose(facing=facing, cva_deg=44.0, forward_shoulder_deg=48.0, tilt_deg=2.5, head_deg=6.0)
        values = _values(side_measures(view))
        assert values["turtle_neck"] == pytest.approx(44.0, abs=TOL)
        assert values["round_shoulder"] == pytest.approx(48.0, abs=TOL)
        assert values["sar_tilt"] == pytest.approx(2.5, abs=TOL)
        assert values["sar_head_tilt"] == pytest.approx(6.0, abs=TOL)
        assert np.sign(side_part(view)) == facing


def test_side_part_magnitude_is_the_body_turn():
    assert side_part(side_pose(facing=1, yaw_deg=90.0)) == pytest.approx(90.0, abs=TOL)
    assert side_part(side_pose(facing=-1, yaw_deg=70.0)) == pytest.approx(-70.0, abs=TOL)


def test_forward_head_flag():
    assert forward_head_flag(side_measures(side_pose(cva_deg=44.0))) == 1
    assert forward_head_flag(side_measures(side_pose(cva_deg=53.0))) == 0
    hidden = side_measures(hide(side_pose(cva_deg=44.0), "left_ear", "right_ear", presence=0.1))
    assert forward_head_flag(hidden) == 0


def test_c7_fallback_without_mask_still_measures():
    measures = side_measures(side_pose(with_mask=False))
    assert measures["turtle_neck"].value is not None and 0 < measures["turtle_neck"].value < 90


def test_mirroring_flips_left_right_and_swaps_legs():
    view = front_pose(lean_deg=3.0, shoulder_tilt_deg=2.0, pelvic_tilt_deg=-1.5, head_tilt_deg=4.0,
                      knee_tilt_deg=1.0, left_varus_deg=5.0, right_varus_deg=-2.0)
    original = _values(front_measures(view))
    mirrored = _values(front_measures(mirror_view(view)))
    for name in LEFT_RIGHT:
        assert mirrored[name] == pytest.approx(-original[name], abs=TOL), name
    assert mirrored["far_left_qang"] == pytest.approx(original["far_right_qang"], abs=TOL)
    assert mirrored["far_right_qang"] == pytest.approx(original["far_left_qang"], abs=TOL)


def test_mirroring_keeps_side_measures_and_flips_side_part():
    view = side_pose(facing=1, cva_deg=47.0, forward_shoulder_deg=50.0, tilt_deg=-2.0, head_deg=-5.0, yaw_deg=80.0)
    mirrored = mirror_view(view)
    for name, value in _values(side_measures(view)).items():
        assert side_measures(mirrored)[name].value == pytest.approx(value, abs=TOL), name
    assert side_part(mirrored) == pytest.approx(-side_part(view), abs=TOL)


def test_mask_read_the_same_from_a_mirrored_crop():
    """The mask array flipped (as pose.unmirror flips the mirrored pass's mask) with the crop mapping
    u -> 256 - u (as it flips the landmarks) is the same photo: C7, and so every side measure, must not
    move. A half-pixel mismatch between the mask's and the landmarks' coordinates moved C7 here."""
    view = side_pose(facing=-1, cva_deg=47.0, forward_shoulder_deg=50.0)
    flipped = hide(view)
    flipped.mask_roi = np.ascontiguousarray(view.mask_roi[:, ::-1])
    crop_flip = np.array([[-1.0, 0.0, 256.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    flipped.roi_to_image = (np.vstack([view.roi_to_image, [0.0, 0.0, 1.0]]) @ crop_flip)[:2]
    for name, value in _values(side_measures(view)).items():
        assert side_measures(flipped)[name].value == pytest.approx(value, abs=TOL), name


@pytest.mark.parametrize("factor", [0.5, 0.25, 3.0])
def test_scaling_changes_nothing(factor):
    front = front_pose(lean_deg=3.0, shoulder_tilt_deg=2.0, left_varus_deg=4.0)
    side = side_pose(cva_deg=46.0, tilt_deg=1.0)
    for measure_fn, view in ((front_measures, front), (side_measures, side)):
        for name, value in _values(measure_fn(view)).items():
            assert measure_fn(scale_view(view, factor))[name].value == pytest.approx(value, abs=TOL), name
    assert side_part(scale_view(side, factor)) == pytest.approx(side_part(side), abs=TOL)


def test_hidden_points_are_not_measurable():
    measures = front_measures(hide(front_pose(), "left_knee"))
    for name in ("far_knee_bal", "far_left_qang"):
        assert measures[name].status == "not_measurable" and measures[name].value is None
        assert "left_knee" in measures[name].reason
    assert measures["far_right_qang"].status == "normal"
    # Feet cut off: the ankle group leaves the photo.
    view = front_pose()
    view.keypoints_px[[27, 29, 31], 1] = view.image_size[1] + 40
    cut = front_measures(view)
    assert cut["far_left_qang"].status == "not_measurable" and "outside the photo" in cut["far_left_qang"].reason
    assert cut["far_tilt"].status == "not_measurable"
    # A side photo hides the far ear: the midpoint still counts while one ear is seen.
    side = hide(side_pose(), "right_ear")
    assert side_measures(side)["turtle_neck"].value is not None
    assert side_measures(hide(side, "left_ear"))["turtle_neck"].status == "not_measurable"


def test_to_dict_shape():
    entry = front_measures(front_pose(lean_deg=3.0))["far_tilt"].to_dict()
    assert set(entry) == {"value", "unit", "normal", "status", "reason", "confidence"}
    assert entry["unit"] == "deg" and entry["status"] == "outside" and entry["value"] == pytest.approx(3.0)


@pytest.mark.parametrize("max_side, expected", [(1600, (1600, 800)), (500, (500, 250)), (0, (2000, 1000))])
def test_render_size_and_scale(max_side, expected):
    view = front_pose(lean_deg=3.0)
    image = np.full((2000, 1000, 3), 100, np.uint8)
    out, scale = render_annotated(image, view, front_measures(view), "front", max_side)
    assert out.shape[:2] == expected and scale == pytest.approx(expected[0] / 2000)
    assert out.dtype == np.uint8 and (out != 100).any()
    assert (image == 100).all(), "the input photo is left untouched"


def test_render_is_fast():
    """Drawing at 1600 px takes a few ms; the resize of a 12 MP photo is the rest."""
    front, side = front_pose(lean_deg=3.0), side_pose(cva_deg=45.0)
    image = np.full((1600, 800, 3), 100, np.uint8)
    front_m, side_m = front_measures(front), side_measures(side)
    render_annotated(image, front, front_m, "front", 1600)
    start = time.perf_counter()
    for _ in range(10):
        render_annotated(image, scale_view(front, 0.8), front_m, "front", 1600)
        render_annotated(image, scale_view(side, 0.8), side_m, "side", 1600)
    assert (time.perf_counter() - start) / 20 < 0.02
