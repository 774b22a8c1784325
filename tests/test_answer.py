"""The complete skeleton-v2 answer on real photos: every seed field with the seed's type, the schema,
EXIF orientation, and mirrored input."""

from __future__ import annotations

import base64
import io
import json

import jsonschema
import numpy as np
import pytest
from conftest import read_photo
from PIL import Image

from daemon.contract import load_schema
from daemon.errors import AnalysisError
from daemon.request import parse_request

SEED_INTS = (
    "far_head_bal_m_", "far_pelvic_bal_m_", "far_shoulder_bal_m_", "far_left_qang_m_", "far_right_qang_m_",
    "far_knee_bal_m_", "far_tilt_m_", "turtle_neck_m_", "round_shoulder_m_", "sar_tilt_m_", "sar_head_tilt_m_",
)


def _payload(front: bytes, side: bytes, **extra) -> dict:
    return {
        "id": "someone@example.com", "uuid": "test-answer",
        "forigimg": base64.b64encode(front).decode(), "sorigimg": base64.b64encode(side).decode(), **extra,
    }


@pytest.fixture(scope="module")
def pair_answer(analyzer):
    front = read_photo("front", "fitlens_p3_front.jpg")
    side = read_photo("side", "fitlens_p3_side.jpg")
    return analyzer.analyze(parse_request(_payload(front, side, height=178)))


def test_answer_matches_the_schema(pair_answer):
    # The package's copy: the schema the OpenAPI document publishes (tests/test_contract.py keeps it equal
    # to ../shared/spec/skeleton-v2.answer.schema.json).
    jsonschema.validate(pair_answer, load_schema("answer"))


def test_every_seed_field_has_the_seed_type(pair_answer):
    answer = pair_answer
    assert answer["state"] == 0 and answer["command"] == "keypoint" and answer["uuid"] == "test-answer"
    for field in ("far_coords", "sar_coords"):
        points = json.loads(answer[field])
        assert len(points) == 22 and all(len(p) == 2 and all(isinstance(v, int) for v in p) for p in points)
    for field in ("far_coords3D", "sar_coords3D"):
        assert np.array(answer[field]).shape == (22, 3)
    assert all(len(person) == 42 for person in answer["pose2df1"])
    assert all(len(person) == 17 for person in answer["pose2df2"] + answer["pose2ds3"])
    assert len(answer["box1"][0]) == 4 and len(answer["box2"][0]) == 4
    assert answer["far_grade"] in "ABCD" and answer["sar_grade"] in "ABCD"
    assert isinstance(answer["side_part"], float) and isinstance(answer["sar_fwd_head"], int)
    for field in SEED_INTS:
        assert isinstance(answer[field], int), field
    assert isinstance(answer["message"], list)
    for field in ("forigimg", "sorigimg"):
        image = Image.open(io.BytesIO(base64.b64decode(answer[field])))
        assert image.format == "JPEG" and max(image.size) <= 1280


def test_keypoints_are_in_the_photos_pixels(pair_answer):
    """Coordinates stay in the uploaded photo's pixels whatever size the annotated photo has."""
    far = np.array(json.loads(pair_answer["far_coords"]))
    x, y, w, h = pair_answer["box1"][0]
    inside = (far[:, 0] >= x - 5) & (far[:, 0] <= x + w + 5) & (far[:, 1] >= y - 5) & (far[:, 1] <= y + h + 5)
    assert inside.mean() > 0.9
    # Head top above the eyes, ankles below the knees (y down).
    assert far[0, 1] < far[18, 1] and far[10, 1] > far[9, 1] and far[13, 1] > far[12, 1]


def test_side_view_hides_far_side_points(pair_answer):
    side = np.array(pair_answer["pose2ds3"][0])
    hidden = np.all(side == -1, axis=1)
    assert 0 < hidden.sum() < 17
    assert not hidden[[0, 1, 14, 15, 16]].any()  # midline points always given


def test_3d_skeleton_is_scaled_by_the_height(pair_answer):
    points = np.array(pair_answer["far_coords3D"])
    head_top, ankles = points[0], (points[10] + points[13]) / 2
    # Head top to mid-ankle is a little under standing height (the heel and sole lie below the ankle).
    assert 0.85 * 1780 < np.linalg.norm(head_top - ankles) < 1.02 * 1780
    assert points[:, 2].min() > 500  # in front of the camera


def _with_exif_orientation(jpeg: bytes, orientation: int, rotate) -> bytes:
    """The same photo stored sideways with an EXIF tag that says how to turn it upright."""
    image = Image.open(io.BytesIO(jpeg))
    stored = image.transpose(rotate)
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    stored.save(out, "JPEG", quality=95, exif=exif.tobytes())
    return out.getvalue()


def test_exif_rotated_photo_gives_upright_keypoints(analyzer):
    front = read_photo("front", "fitlens_p2_front.jpg")
    side = read_photo("side", "fitlens_p2_side.jpg")
    upright = analyzer.analyze(parse_request(_payload(front, side)))
    # Orientation 6: the stored pixels are turned 90 degrees counter-clockwise; viewers turn them back.
    sideways = _with_exif_orientation(front, 6, Image.Transpose.ROTATE_90)
    rotated = analyzer.analyze(parse_request(_payload(sideways, side)))
    ours = np.array(json.loads(rotated["far_coords"]), float)
    theirs = np.array(json.loads(upright["far_coords"]), float)
    height = upright["box1"][0][3]
    assert np.median(np.linalg.norm(ours - theirs, axis=1)) < 0.01 * height


def test_mirrored_photos_swap_left_and_right(analyzer, pair_answer):
    def mirrored(jpeg: bytes) -> bytes:
        out = io.BytesIO()
        Image.open(io.BytesIO(jpeg)).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(out, "JPEG", quality=95)
        return out.getvalue()

    front = read_photo("front", "fitlens_p3_front.jpg")
    side = read_photo("side", "fitlens_p3_side.jpg")
    width = Image.open(io.BytesIO(front)).size[0]
    answer = analyzer.analyze(parse_request(_payload(mirrored(front), mirrored(side), height=178)))
    ours = np.array(json.loads(answer["far_coords"]), float)
    theirs = np.array(json.loads(pair_answer["far_coords"]), float)
    # 22-layout partners: right shoulder/elbow/wrist/hip/knee/ankle (2-4, 8-10) <-> left (5-7, 11-13),
    # left ear/eye (17, 18) <-> right ear/eye (20, 21).
    swap = [0, 1, 5, 6, 7, 2, 3, 4, 11, 12, 13, 8, 9, 10, 14, 15, 16, 20, 21, 19, 17, 18]
    back = ours[swap]
    back[:, 0] = width - back[:, 0]
    height = pair_answer["box1"][0][3]
    assert np.median(np.linalg.norm(back - theirs, axis=1)) < 0.01 * height
    assert np.sign(answer["side_part"]) == -np.sign(pair_answer["side_part"])


def test_no_person_is_a_processing_error(analyzer):
    blank = io.BytesIO()
    Image.new("RGB", (600, 800), (200, 200, 200)).save(blank, "JPEG")
    with pytest.raises(AnalysisError) as raised:
        analyzer.analyze(parse_request(_payload(read_photo("front", "fitlens_p1_front.jpg"), blank.getvalue())))
    assert raised.value.kind == "processing" and "side" in raised.value.detail
    assert raised.value.to_answer()["data"]["message"] == "processing error"


def test_findings_score_and_severity_extras(pair_answer):
    """fitlens_p3: a craniovertebral angle of about 42 deg is a moderate forward head (below Mostafaee's
    45.5 cut-off): the side view leads with it and grades C; both knees read mildly inward (B)."""
    answer = pair_answer
    side, front = answer["findings"]["side"], answer["findings"]["front"]
    assert side[0]["measure"] == "turtle_neck" and side[0]["severity"] == "moderate"
    assert answer["measures"]["turtle_neck"]["severity"] == "moderate"
    assert answer["sar_grade"] == "C" and answer["far_grade"] == "B"
    assert {f["measure"] for f in front} == {"far_left_qang", "far_right_qang"}
    assert all(f["severity"] == "mild" and f["text"]["en"] and f["text"]["ko"] for f in front)
    assert answer["score"] == {"front": 84, "side": 69}
    assert answer["unmeasured"] == {"front": [], "side": []}
