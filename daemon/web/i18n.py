"""English and Korean for the pages: measure names, what each value means, guidance, labels.

The answer's `message` list keeps the seed's English sentences (clients parse them); the pages show
them translated where the sentence is known (decisions.md "Languages"). English is the default.
"""

from __future__ import annotations

import re

LANGS = ("en", "ko")
DEFAULT_LANG = "en"


def choose_lang(param: str | None, accept_language: str | None) -> str:
    """`lang` wins; else the first of the browser's languages we have; else English."""
    if param in LANGS:
        return param
    for part in (accept_language or "").split(","):
        code = part.split(";")[0].strip().lower()[:2]
        if code in LANGS:
            return code
    return DEFAULT_LANG


# Page labels.
_TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "report_title": "Posture report",
        "history_title": "Posture history",
        "front": "Front",
        "side": "Side",
        "grade": "Grade",
        "score": "Score",
        "measure": "Measure",
        "value": "Value",
        "normal_range": "Normal range",
        "status": "Status",
        "normal": "normal",
        "outside": "outside the normal range",
        "not_measurable": "not measurable",
        "mild": "mild",
        "moderate": "moderate",
        "severe": "severe",
        "guidance": "Photo notes",
        "no_guidance": "No notes: both photos were good to measure.",
        "findings": "Findings",
        "versions": "Software {software}, measure definitions {measures}",
        "created": "Taken",
        "open_on_phone": "Scan to open this report on your phone",
        "link_expires": "The link works until {date}.",
        "visits": "Visits",
        "no_visits": "No stored visits for this member (none yet, or expired).",
        "trends": "Trends",
        "compare": "Comparison",
        "change": "Change",
        "noise": "Noise",
        "flag_better": "improved",
        "flag_worse": "worse",
        "flag_changed": "changed",
        "within_noise": "within measurement noise",
        "noise_note": (
            "A change is flagged only when it is larger than the measure's measurement noise: the larger of"
            " its worst disagreement between a photo and its mirror or half-size copy, and between two"
            " shots of the same person (docs/measures.md, docs/web.md)."
        ),
        "report_link": "report",
        "lang_switch": "한국어",
        "deg": "°",
        "kiosk_title": "Posture check",
    },
    "ko": {
        "report_title": "자세 분석 결과",
        "history_title": "자세 변화 기록",
        "front": "정면",
        "side": "측면",
        "grade": "등급",
        "score": "점수",
        "measure": "항목",
        "value": "측정값",
        "normal_range": "정상 범위",
        "status": "상태",
        "normal": "정상",
        "outside": "정상 범위 밖",
        "not_measurable": "측정 불가",
        "mild": "경미함",
        "moderate": "중등도",
        "severe": "심함",
        "guidance": "사진 안내",
        "no_guidance": "안내 사항 없음: 두 사진 모두 측정하기에 좋았습니다.",
        "findings": "주요 소견",
        "versions": "소프트웨어 {software}, 측정 정의 {measures}",
        "created": "촬영 시각",
        "open_on_phone": "휴대폰으로 스캔하면 이 결과를 볼 수 있습니다",
        "link_expires": "링크는 {date}까지 유효합니다.",
        "visits": "방문 기록",
        "no_visits": "이 회원의 저장된 기록이 없습니다 (아직 없거나 보관 기간이 지났습니다).",
        "trends": "변화 추이",
        "compare": "비교",
        "change": "변화",
        "noise": "측정 오차",
        "flag_better": "개선",
        "flag_worse": "악화",
        "flag_changed": "변화",
        "within_noise": "측정 오차 이내",
        "noise_note": (
            "측정 오차보다 큰 변화만 표시합니다: 사진과 그 좌우 반전·절반 크기 사본 사이, 그리고 같은 사람을"
            " 다시 찍은 두 사진 사이의 가장 큰 차이 중 큰 값입니다 (docs/measures.md, docs/web.md)."
        ),
        "report_link": "결과",
        "lang_switch": "English",
        "deg": "°",
        "kiosk_title": "자세 측정",
    },
}


def texts(lang: str) -> dict[str, str]:
    return _TEXTS[lang if lang in _TEXTS else DEFAULT_LANG]


# Measure names.
MEASURE_NAMES: dict[str, dict[str, str]] = {
    "far_head_bal": {"en": "Head tilt (front)", "ko": "머리 좌우 기울기"},
    "far_shoulder_bal": {"en": "Shoulder balance", "ko": "어깨 균형"},
    "far_pelvic_bal": {"en": "Pelvic balance", "ko": "골반 균형"},
    "far_knee_bal": {"en": "Knee balance", "ko": "무릎 균형"},
    "far_tilt": {"en": "Body lean (side to side)", "ko": "몸 좌우 기울기"},
    "far_left_qang": {"en": "Left leg alignment", "ko": "왼쪽 다리 정렬"},
    "far_right_qang": {"en": "Right leg alignment", "ko": "오른쪽 다리 정렬"},
    "turtle_neck": {"en": "Forward head (neck angle)", "ko": "거북목 (목 각도)"},
    "round_shoulder": {"en": "Rounded shoulders", "ko": "라운드 숄더 (어깨 말림)"},
    "sar_tilt": {"en": "Body lean (front to back)", "ko": "몸 앞뒤 기울기"},
    "sar_head_tilt": {"en": "Head tilt (side)", "ko": "머리 앞뒤 기울기"},
}


def measure_name(name: str, lang: str) -> str:
    return MEASURE_NAMES.get(name, {}).get(lang) or name


# What a value means, per measure: (when normal, when the value is above the range, when below), each
# with {v} = the distance from level/straight in degrees. Signs as docs/measures.md defines them.
_MEANINGS: dict[str, dict[str, tuple[str, str, str]]] = {
    "far_head_bal": {
        "en": ("Your head is level.", "Your head tilts toward your right shoulder by {v}°.",
               "Your head tilts toward your left shoulder by {v}°."),
        "ko": ("머리가 수평입니다.", "머리가 오른쪽 어깨 쪽으로 {v}° 기울어져 있습니다.",
               "머리가 왼쪽 어깨 쪽으로 {v}° 기울어져 있습니다."),
    },
    "far_shoulder_bal": {
        "en": ("Your shoulders are level.", "Your right shoulder sits lower than your left by {v}°.",
               "Your left shoulder sits lower than your right by {v}°."),
        "ko": ("양쪽 어깨 높이가 같습니다.", "오른쪽 어깨가 왼쪽보다 {v}° 낮습니다.",
               "왼쪽 어깨가 오른쪽보다 {v}° 낮습니다."),
    },
    "far_pelvic_bal": {
        "en": ("Your hips are level.", "Your right hip sits lower than your left by {v}°.",
               "Your left hip sits lower than your right by {v}°."),
        "ko": ("골반이 수평입니다.", "오른쪽 골반이 왼쪽보다 {v}° 낮습니다.", "왼쪽 골반이 오른쪽보다 {v}° 낮습니다."),
    },
    "far_knee_bal": {
        "en": ("Your knees are level.", "Your right knee sits lower than your left by {v}°.",
               "Your left knee sits lower than your right by {v}°."),
        "ko": ("양쪽 무릎 높이가 같습니다.", "오른쪽 무릎이 왼쪽보다 {v}° 낮습니다.",
               "왼쪽 무릎이 오른쪽보다 {v}° 낮습니다."),
    },
    "far_tilt": {
        "en": ("Your body stands upright, not leaning to either side.",
               "Your body leans toward your right by {v}°.", "Your body leans toward your left by {v}°."),
        "ko": ("몸이 좌우로 기울지 않고 곧게 서 있습니다.", "몸이 오른쪽으로 {v}° 기울어져 있습니다.",
               "몸이 왼쪽으로 {v}° 기울어져 있습니다."),
    },
    "far_left_qang": {
        "en": ("Your left leg is straight from hip to ankle.",
               "Your left knee bows outward (O-leg) by {v}°.", "Your left knee angles inward (X-leg) by {v}°."),
        "ko": ("왼쪽 다리가 엉덩이부터 발목까지 곧습니다.", "왼쪽 무릎이 바깥으로 {v}° 휘어 있습니다 (O다리).",
               "왼쪽 무릎이 안쪽으로 {v}° 모여 있습니다 (X다리)."),
    },
    "far_right_qang": {
        "en": ("Your right leg is straight from hip to ankle.",
               "Your right knee bows outward (O-leg) by {v}°.", "Your right knee angles inward (X-leg) by {v}°."),
        "ko": ("오른쪽 다리가 엉덩이부터 발목까지 곧습니다.", "오른쪽 무릎이 바깥으로 {v}° 휘어 있습니다 (O다리).",
               "오른쪽 무릎이 안쪽으로 {v}° 모여 있습니다 (X다리)."),
    },
    "turtle_neck": {
        "en": ("Your head sits well over your shoulders.",
               "Your head is held further back than usual.",
               "Your head sits forward of your shoulders (forward head posture)."),
        "ko": ("머리가 어깨 위에 잘 놓여 있습니다.", "머리가 평소보다 뒤로 젖혀져 있습니다.",
               "머리가 어깨보다 앞으로 나와 있습니다 (거북목 자세)."),
    },
    "round_shoulder": {
        "en": ("Your shoulders are not rolled forward.", "Your shoulders are pulled back further than usual.",
               "Your shoulders are rolled forward (rounded shoulders)."),
        "ko": ("어깨가 앞으로 말려 있지 않습니다.", "어깨가 평소보다 뒤로 젖혀져 있습니다.",
               "어깨가 앞으로 말려 있습니다 (라운드 숄더)."),
    },
    "sar_tilt": {
        "en": ("Your body stands upright from front to back.", "Your body leans forward by {v}°.",
               "Your body leans backward by {v}°."),
        "ko": ("몸이 앞뒤로 곧게 서 있습니다.", "몸이 앞으로 {v}° 기울어져 있습니다.", "몸이 뒤로 {v}° 기울어져 있습니다."),
    },
    "sar_head_tilt": {
        "en": ("Your head is held level, neither chin up nor chin down.", "Your chin is tucked down.",
               "Your chin is raised."),
        "ko": ("머리가 수평으로, 턱이 들리거나 숙여지지 않았습니다.", "턱이 아래로 숙여져 있습니다.",
               "턱이 위로 들려 있습니다."),
    },
}

_NOT_MEASURABLE = {"en": "Could not be measured: {reason}", "ko": "측정할 수 없었습니다: {reason}"}


def meaning(name: str, measure: dict, lang: str) -> str:
    """One plain sentence on what this value means for the member."""
    value = measure.get("value")
    if value is None or measure.get("status") == "not_measurable":
        reason = measure.get("reason") or ""
        return _NOT_MEASURABLE.get(lang, _NOT_MEASURABLE["en"]).format(reason=reason).rstrip(": ")
    sentences = _MEANINGS.get(name, {}).get(lang) or _MEANINGS.get(name, {}).get("en")
    if sentences is None:
        return ""
    low, high = measure.get("normal") or (value, value)
    if low <= value <= high:
        return sentences[0]
    return (sentences[1] if value > high else sentences[2]).format(v=f"{abs(value):.1f}")


# The answer's seed-style English messages, translated for the pages.
_VIEW_KO = {"Front": "정면 사진", "Side": "측면 사진"}
_MESSAGE_KO = {
    "No person was found.": "사람이 보이지 않습니다.",
    "The target is too far.": "너무 멀리 서 있습니다.",
    "The target is too close.": "너무 가까이 서 있습니다.",
    "The target's head is cut off.": "머리가 사진 밖으로 잘렸습니다.",
    "The target's feet are cut off.": "발이 사진 밖으로 잘렸습니다.",
    "The target is not facing the camera.": "카메라를 정면으로 보고 있지 않습니다.",
    "The target is not standing side-on to the camera.": "카메라에 옆모습으로 서 있지 않습니다.",
    "The image is too dark.": "사진이 너무 어둡습니다.",
    "The image is too blurred.": "사진이 흐립니다.",
}
_WHOLE_KO = {"The Front and Side images seem to be swapped.": "정면과 측면 사진이 바뀐 것 같습니다."}
_ARMS_DOWN_KO = "팔을 몸 옆으로 편하게 내려 주세요."
# Sentences with a number or a word in them (camera tilt and pitch, daemon/guidance.py tilt_guidance; the
# photo showing the wrong side, facing_guidance): pattern -> Korean. A named group is filled in from
# _GROUP_KO when the group has a table there (a word), else as it was matched (a number).
_PATTERN_KO = [
    (re.compile(r"^The camera's tilt could not be read from the photo \(.*\); the measures assume the camera was level\.$"),
     "카메라 기울기를 사진에서 읽을 수 없어, 카메라가 수평이었다고 보고 측정했습니다."),
    (re.compile(r"^The camera was tilted by (?P<degrees>[0-9.]+) degrees; the measures were corrected for it\. "
                r"Hold the camera level\.$"),
     "카메라가 {degrees}도 기울어져 있어 측정값을 보정했습니다. 카메라를 수평으로 들어 주세요."),
    (re.compile(r"^The camera was pointed (?P<degrees>[0-9]+) degrees (?P<where>down|up); the tilt measures may read "
                r"a lean that is not there\. Hold the camera at hip height, pointed straight ahead\.$"),
     ("카메라가 {degrees}도 {where} 향해 있었습니다. 기울기 측정값에 실제로 없는 기울어짐이 나타날 수 있습니다. "
      "카메라를 엉덩이 높이에서 정면을 향하게 들어 주세요.")),
    (re.compile(r"^The target has their back to the camera; the (?P<photo>front|side) photo must show the "
                r"(?P<shows>front|side)\.$"),
     "등이 카메라를 향해 있습니다. {photo} 사진에는 {shows}이 찍혀야 합니다."),
    (re.compile(r"^The target is facing the camera; the side photo must show the side\.$"),
     "카메라를 정면으로 보고 있습니다. 측면 사진에는 옆모습이 찍혀야 합니다."),
    (re.compile(r"^The target's arms are crossed; let the arms hang at the sides\.$"), "팔짱을 끼고 있습니다. " + _ARMS_DOWN_KO),
    (re.compile(r"^The target's hands are on the hips; let the arms hang at the sides\.$"),
     "손을 허리에 올리고 있습니다. " + _ARMS_DOWN_KO),
]
_GROUP_KO = {
    "where": {"down": "아래를", "up": "위를"},
    "photo": {"front": "정면", "side": "측면"},
    "shows": {"front": "앞모습", "side": "옆모습"},
}
_VIEW_PREFIX = re.compile(r"^In the (Front|Side) image, (.*)$")


def guidance_message(message: str, lang: str) -> str:
    """A seed-style message in `lang` (known sentences translated, others as they are)."""
    if lang != "ko":
        return message
    if message in _WHOLE_KO:
        return _WHOLE_KO[message]
    match = _VIEW_PREFIX.match(message)
    if match is None:
        return message
    view, rest = match.groups()
    if rest in _MESSAGE_KO:
        return f"{_VIEW_KO[view]}: {_MESSAGE_KO[rest]}"
    for pattern, korean in _PATTERN_KO:
        found = pattern.match(rest)
        if found is not None:
            words = {name: _GROUP_KO[name][value] if name in _GROUP_KO else value
                     for name, value in found.groupdict().items()}
            return f"{_VIEW_KO[view]}: {korean.format(**words)}"
    if rest.startswith("There are several people"):
        return f"{_VIEW_KO[view]}: 여러 사람이 보입니다. 한 사람만 찍혀야 합니다. 가장 크고 가운데에 있는 사람을 분석했습니다."
    return f"{_VIEW_KO[view]}: {rest}"


def kiosk_texts() -> dict[str, dict[str, str]]:
    """Labels the kiosk script needs in both languages (it switches without a reload)."""
    keys = {
        "en": {
            "start": "Start", "restart": "Start again", "capture_now": "Take photo now",
            "front_prompt": "Face the camera and stand on the mark",
            "side_prompt": "Turn to your side",
            "hold": "Hold still", "captured_front": "Front photo taken", "captured_side": "Side photo taken",
            "analysing": "Analysing…", "camera_error": "The camera could not be opened",
            "connection_lost": "Connection lost", "scan": "Scan to open your report on your phone",
            "member_id": "Member e-mail", "height": "Height (cm)", "error": "Something went wrong",
        },
        "ko": {
            "start": "시작", "restart": "다시 시작", "capture_now": "지금 촬영",
            "front_prompt": "카메라를 보고 표시된 자리에 서 주세요",
            "side_prompt": "옆으로 돌아서 주세요",
            "hold": "움직이지 마세요", "captured_front": "정면 사진을 찍었습니다",
            "captured_side": "측면 사진을 찍었습니다", "analysing": "분석 중…",
            "camera_error": "카메라를 열 수 없습니다", "connection_lost": "연결이 끊어졌습니다",
            "scan": "휴대폰으로 스캔하면 결과를 볼 수 있습니다", "member_id": "회원 이메일",
            "height": "키 (cm)", "error": "문제가 발생했습니다",
        },
    }
    return keys
