"""The pages' Korean for the answer's English guidance sentences (daemon/web/i18n.py): every sentence the
camera-tilt and facing guidance can produce is translated, none is passed through in English."""

from __future__ import annotations

import re

import pytest

from calibration.roll import CameraTilt
from daemon import guidance
from daemon.facing import Facing
from daemon.web.i18n import guidance_message

LATIN = re.compile(r"[A-Za-z]")


def _sentences() -> list[str]:
    sentences = []
    for view in ("Front", "Side"):
        sentences += guidance.tilt_guidance(view, CameraTilt(-2.26, None, "lines", 0.9, 10, applied=True))
        sentences += guidance.tilt_guidance(view, CameraTilt(3.0, None, "lines", 0.2, 2, note="too few straight lines"))
        sentences += guidance.tilt_guidance(view, CameraTilt(None, 70.0, "exif", 0.0, note="the phone pointed down too steeply"))
        sentences += guidance.tilt_guidance(view, CameraTilt(0.0, 9.0, "lines", 0.9, 10, applied=True))
        sentences += guidance.tilt_guidance(view, CameraTilt(0.5, -7.0, "exif", 1.0, applied=True))
    for kind, view in (("front", "Front"), ("side", "Side")):
        for direction in ("away", "toward"):
            verdict = Facing(direction, None, 0.0, None)
            for arms in (None, "crossed", "hands_on_hips"):
                sentences += guidance.facing_guidance(view, kind, verdict, arms)
    return sentences


def test_every_tilt_and_facing_sentence_is_translated():
    sentences = _sentences()
    assert len(set(sentences)) >= 12
    for sentence in sentences:
        korean = guidance_message(sentence, "ko")
        assert not LATIN.search(korean), (sentence, korean)
        assert guidance_message(sentence, "en") == sentence


@pytest.mark.parametrize(("sentence", "korean"), [
    ("In the Front image, The camera was tilted by 2.3 degrees; the measures were corrected for it. Hold the camera level.",
     "정면 사진: 카메라가 2.3도 기울어져 있어 측정값을 보정했습니다. 카메라를 수평으로 들어 주세요."),
    ("In the Side image, The target has their back to the camera; the side photo must show the side.",
     "측면 사진: 등이 카메라를 향해 있습니다. 측면 사진에는 옆모습이 찍혀야 합니다."),
])
def test_numbers_and_words_carried_over(sentence, korean):
    assert guidance_message(sentence, "ko") == korean
