"""3D skeletons on the real photo pairs: scaled by the request's height, and kiosk distance guidance."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from conftest import read_photo

from daemon.config import load_config
from daemon.pipeline import Analyzer, distance_guidance
from daemon.request import parse_request

PAIRS = ("fitlens_p1", "fitlens_p2", "fitlens_p3", "fitlens_p4", "fitlens_p5", "fitlens_p5b", "fiton_p1a", "fiton_p1b")
# Head top to ankle is 96.1% of stature (ankle height 0.039 H, Drillis & Contini 1966).
HEAD_TO_ANKLE_SHARE = 0.961


def _payload(name: str, **extra) -> dict:
    return {
        "id": "x@y.z", "uuid": f"lift-{name}",
        "forigimg": base64.b64encode(read_photo("front", f"{name}_front.jpg")).decode(),
        "sorigimg": base64.b64encode(read_photo("side", f"{name}_side.jpg")).decode(), **extra,
    }


@pytest.mark.parametrize("name", PAIRS)
def test_head_to_ankle_matches_the_given_height(analyzer, name):
    height_mm = 1720.0
    answer = analyzer.analyze(parse_request(_payload(name, height=height_mm / 10)))
    for field in ("far_coords3D", "sar_coords3D"):
        points = np.array(answer[field])
        head_to_ankle = np.linalg.norm(points[0] - (points[10] + points[13]) / 2)
        assert abs(head_to_ankle - HEAD_TO_ANKLE_SHARE * height_mm) <= 0.05 * height_mm, (field, head_to_ankle)
    assert answer["camera"]["front"]["scale_source"] == "height"


def test_distance_guidance_in_metres():
    camera = {"feet_floor_distance_mm": 3600.0}
    assert distance_guidance("Front", camera, 3000.0) == [
        "In the Front image, The target is too far (3.6 m from the camera; the standing mark is at 3.0 m)."
    ]
    assert "too close" in distance_guidance("Side", {"feet_floor_distance_mm": 2200.0}, 3000.0)[0]
    assert distance_guidance("Side", {"feet_floor_distance_mm": 3100.0}, 3000.0) == []
    # Without a floor distance the height-scaled depth is used, but only when the height was given.
    assert distance_guidance("Front", {"scale_source": "default_height", "distance_from_height_mm": 9000.0}, 3000.0) == []


def test_kiosk_file_drives_the_camera_and_distance(tmp_path, analyzer):
    """A kiosk whose standing mark is far nearer than where the subject stands: "too far" in metres."""
    kiosk = tmp_path / "kiosk.json"
    kiosk.write_text(json.dumps({"version": 1, "placement": {"standing_distance_mm": 800.0}}))
    config = load_config(overrides={"calibration": {"kiosks": {"gym": str(kiosk)}, "default_kiosk": "gym"}})
    with_kiosk = Analyzer(config)
    try:
        answer = with_kiosk.analyze(parse_request(_payload("fitlens_p3", height=178)))
    finally:
        with_kiosk.close()
    assert any("The target is too far" in line and " m from the camera" in line for line in answer["message"])
    assert answer["camera"]["front"]["depth_source"] == "standing_mark"
