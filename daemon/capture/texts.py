"""The live guide's texts, by message code and language (the kiosk shows or speaks them).

Codes are the protocol (docs/capture.md); texts may be reworded freely. Directions (left / right) are
the person's own as they see themself on a mirrored preview.
"""

from __future__ import annotations

LANGUAGES = ("en", "ko")

TEXTS: dict[str, dict[str, str]] = {
    "no_person": {
        "en": "Please step in front of the camera.",
        "ko": "카메라 앞에 서 주세요.",
    },
    "several_people": {
        "en": "Only one person, please: others step out of the picture.",
        "ko": "한 사람만 화면에 나오도록 해 주세요.",
    },
    "step_back": {
        "en": "Step back a little.",
        "ko": "조금 뒤로 물러나 주세요.",
    },
    "come_closer": {
        "en": "Come closer.",
        "ko": "조금 더 가까이 와 주세요.",
    },
    "head_cut": {
        "en": "Your head is out of the picture.",
        "ko": "머리가 화면 밖으로 나갔습니다.",
    },
    "feet_cut": {
        "en": "Your feet are out of the picture.",
        "ko": "발이 화면 밖으로 나갔습니다.",
    },
    "move_left": {
        "en": "Move a little to your left.",
        "ko": "왼쪽으로 조금 이동해 주세요.",
    },
    "move_right": {
        "en": "Move a little to your right.",
        "ko": "오른쪽으로 조금 이동해 주세요.",
    },
    "face_camera": {
        "en": "Face the camera squarely.",
        "ko": "카메라를 정면으로 바라봐 주세요.",
    },
    "facing_away": {
        "en": "Turn around to face the camera.",
        "ko": "뒤로 돌아 카메라를 바라봐 주세요.",
    },
    "turn_side": {
        "en": "Turn 90 degrees so that your side faces the camera.",
        "ko": "몸을 90도 돌려 옆모습이 카메라를 향하게 해 주세요.",
    },
    "arms_down": {
        "en": "Let your arms hang relaxed by your sides.",
        "ko": "팔을 편하게 옆으로 내려 주세요.",
    },
    "too_dark": {
        "en": "It is too dark here.",
        "ko": "너무 어둡습니다.",
    },
    "blurred": {
        "en": "The picture is blurred: hold still.",
        "ko": "화면이 흐립니다. 움직이지 말아 주세요.",
    },
    "hold_still": {
        "en": "Hold still.",
        "ko": "그대로 멈춰 주세요.",
    },
}


def text(code: str, lang: str) -> str:
    """The text for `code` in `lang` (English when the language lacks it)."""
    texts = TEXTS[code]
    return texts.get(lang) or texts["en"]


def message(code: str, lang: str) -> dict[str, str]:
    return {"code": code, "text": text(code, lang)}
