"""How far outside normal a measure is: normal / mild / moderate / severe, in degrees per measure, and the
plain-language finding (English and Korean) that a report leads with.

Every threshold and its source is in docs/measures.md ("Severity bands"); the code follows it. Each band is
wider than the measure's own noise (mirror, halving and re-shot disagreement on the test photos), so that
re-taking the photos moves a member by at most one band, and only when the value sits on a boundary.
"""

from __future__ import annotations

from dataclasses import dataclass

from daemon.measures import NORMAL_RANGES, Measure

SEVERITIES = ("normal", "mild", "moderate", "severe")
NOT_MEASURABLE = "not_measurable"
RANK = {name: rank for rank, name in enumerate(SEVERITIES)}


@dataclass(frozen=True)
class Bands:
    """Band edges on each side of the normal range, degrees.

    low = (normal_from, mild_from, moderate_from): value >= normal_from is normal (the normal range's lower
    limit), >= mild_from mild, >= moderate_from moderate, below that severe. high mirrors it upward:
    (normal_to, mild_to, moderate_to). A value exactly on an edge takes the milder band, as the normal
    range itself is inclusive.
    """

    low: tuple[float, float, float]
    high: tuple[float, float, float]


def _symmetric(normal: float, mild: float, moderate: float) -> Bands:
    return Bands((-normal, -mild, -moderate), (normal, mild, moderate))


# Sources and the noise check per measure: docs/measures.md, "Severity bands".
SEVERITY_BANDS: dict[str, Bands] = {
    # Frontal lines: normal range (about 1.3 SD of the SAPO normative spread), mild to 3 SD, moderate to
    # 5 SD, severe beyond. SD about 2 deg for the head, 1.5 deg for shoulders, pelvis and knees. (4 SD would
    # leave the shoulders' moderate band 1.5 deg wide: no wider than a re-shot pair's disagreement.)
    "far_head_bal": _symmetric(2.5, 6.0, 10.0),
    "far_shoulder_bal": _symmetric(2.0, 4.5, 7.5),
    "far_pelvic_bal": _symmetric(2.0, 4.5, 7.5),
    "far_knee_bal": _symmetric(2.0, 4.5, 7.5),
    # No published spread for the body axis: steps equal to the normal half-width (10x our noise).
    "far_tilt": _symmetric(1.5, 3.0, 4.5),
    # Hip-knee-ankle deviation: healthy adults 1.2 +- 2.2 deg varus (Moreland 1987); 3-deg steps.
    "far_left_qang": _symmetric(3.0, 6.0, 9.0),
    "far_right_qang": _symmetric(3.0, 6.0, 9.0),
    # Craniovertebral angle: 50 the usual cut-off (Lau 2009 controls 50.6 +- 2.1), 45.5 the published
    # slight / moderate-to-severe cut-off (Mostafaee 2024), 40 about one SD below the neck-pain group's mean
    # (Lau 2009: 43.9 +- 3.6). Above 70 (head held back) has no published norm: 5-deg steps, ours.
    "turtle_neck": Bands((50.0, 45.5, 40.0), (70.0, 75.0, 80.0)),
    # Forward shoulder angle: 52 the protraction threshold; mild to the photogrammetric sample's mean - 1 SD
    # and moderate to mean - 2 SD (Ruivo 2014: 51.4 +- 8.5). Above 90 (shoulder behind C7): ours.
    "round_shoulder": Bands((52.0, 43.0, 34.0), (90.0, 95.0, 100.0)),
    # Sagittal lean and head angle: no published cut-offs for these proxies; 2.5- and 5-deg steps, ours.
    "sar_tilt": Bands((-1.0, -3.5, -6.0), (4.0, 6.5, 9.0)),
    "sar_head_tilt": _symmetric(10.0, 15.0, 20.0),
}

# Body regions for the grade's "several mild findings in one region" rule, and the order of the report.
REGIONS: dict[str, str] = {
    "far_head_bal": "head_shoulders", "far_shoulder_bal": "head_shoulders",
    "far_pelvic_bal": "trunk_pelvis", "far_tilt": "trunk_pelvis",
    "far_left_qang": "legs", "far_right_qang": "legs", "far_knee_bal": "legs",
    "turtle_neck": "head_neck", "sar_head_tilt": "head_neck",
    "round_shoulder": "shoulders",
    "sar_tilt": "trunk",
}
# Measures that describe one posture pattern together count as one finding in a region: both legs bowed
# (or both knocked) is one observation, "O-legs", not two.
FINDING_GROUPS: dict[str, str] = {"far_left_qang": "leg_axis", "far_right_qang": "leg_axis"}

# (English, Korean) description of a value below the normal range ("low") and above it ("high"), in the
# measure's anatomical sign convention (docs/measures.md).
DESCRIPTIONS: dict[str, dict[str, tuple[str, str]]] = {
    "far_head_bal": {
        "high": ("Head tilted toward the right", "머리가 오른쪽으로 기울어져 있습니다"),
        "low": ("Head tilted toward the left", "머리가 왼쪽으로 기울어져 있습니다"),
    },
    "far_shoulder_bal": {
        "high": ("Right shoulder lower than the left", "오른쪽 어깨가 왼쪽보다 낮습니다"),
        "low": ("Left shoulder lower than the right", "왼쪽 어깨가 오른쪽보다 낮습니다"),
    },
    "far_pelvic_bal": {
        "high": ("Right hip lower than the left", "오른쪽 골반이 왼쪽보다 낮습니다"),
        "low": ("Left hip lower than the right", "왼쪽 골반이 오른쪽보다 낮습니다"),
    },
    "far_knee_bal": {
        "high": ("Right knee lower than the left", "오른쪽 무릎이 왼쪽보다 낮습니다"),
        "low": ("Left knee lower than the right", "왼쪽 무릎이 오른쪽보다 낮습니다"),
    },
    "far_tilt": {
        "high": ("Body leaning toward the right", "몸이 오른쪽으로 기울어져 있습니다"),
        "low": ("Body leaning toward the left", "몸이 왼쪽으로 기울어져 있습니다"),
    },
    "far_left_qang": {
        "high": ("Left knee bowed outward (O-leg)", "왼쪽 무릎이 바깥으로 휘어 있습니다 (O자 다리)"),
        "low": ("Left knee angled inward (X-leg)", "왼쪽 무릎이 안쪽으로 모여 있습니다 (X자 다리)"),
    },
    "far_right_qang": {
        "high": ("Right knee bowed outward (O-leg)", "오른쪽 무릎이 바깥으로 휘어 있습니다 (O자 다리)"),
        "low": ("Right knee angled inward (X-leg)", "오른쪽 무릎이 안쪽으로 모여 있습니다 (X자 다리)"),
    },
    "turtle_neck": {
        "low": ("Head held forward of the shoulders (forward head posture)",
                "머리가 어깨보다 앞으로 나와 있습니다 (거북목 자세)"),
        "high": ("Head drawn far back over the neck", "머리가 목 위로 많이 젖혀져 있습니다"),
    },
    "round_shoulder": {
        "low": ("Shoulders rounded forward", "어깨가 앞으로 말려 있습니다 (라운드 숄더)"),
        "high": ("Shoulders pulled far back", "어깨가 뒤로 많이 젖혀져 있습니다"),
    },
    "sar_tilt": {
        "high": ("Body leaning forward over the feet", "몸이 발보다 앞으로 기울어져 있습니다"),
        "low": ("Body leaning back over the feet", "몸이 발보다 뒤로 기울어져 있습니다"),
    },
    "sar_head_tilt": {
        "high": ("Head tipped down (chin toward the chest)", "고개가 아래로 숙여져 있습니다"),
        "low": ("Head tipped up (chin raised)", "고개가 위로 들려 있습니다"),
    },
}
SEVERITY_WORDS = {
    "mild": ("mild", "경미함"),
    "moderate": ("moderate", "중등도"),
    "severe": ("severe", "심함"),
}


def classify(name: str, value: float | None) -> str:
    """The severity of one value of the named measure; "not_measurable" when there is no value."""
    if value is None:
        return NOT_MEASURABLE
    bands = SEVERITY_BANDS[name]
    for edges, beyond in ((bands.low, lambda v, e: v < e), (bands.high, lambda v, e: v > e)):
        if beyond(value, edges[0]):
            if not beyond(value, edges[1]):
                return "mild"
            return "moderate" if not beyond(value, edges[2]) else "severe"
    return "normal"


def severity(measure: Measure) -> str:
    return classify(measure.name, measure.value)


def _band_interval(name: str, value: float, level: str) -> tuple[str, list[float | None]]:
    """Which side of normal the value lies on and the [from, to] of its band (None = open)."""
    bands = SEVERITY_BANDS[name]
    side = "low" if value < bands.low[0] else "high"
    edges = bands.low if side == "low" else bands.high
    i = RANK[level]  # 1..3
    outer = edges[i] if i < 3 else None
    inner = edges[i - 1]
    interval = [outer, inner] if side == "low" else [inner, outer]
    return side, interval


def _excess(name: str, value: float, side: str) -> float:
    """Distance beyond the normal limit in units of the mild band's width (orders findings of one severity)."""
    edges = getattr(SEVERITY_BANDS[name], side)
    return abs(value - edges[0]) / abs(edges[1] - edges[0])


def _fmt(value: float) -> str:
    return f"{value:g}"


def finding(measure: Measure) -> dict | None:
    """The report entry for a measure outside its normal range; None when normal or not measured."""
    level = severity(measure)
    if level in ("normal", NOT_MEASURABLE):
        return None
    value = float(measure.value)
    side, interval = _band_interval(measure.name, value, level)
    normal = NORMAL_RANGES[measure.name]
    what_en, what_ko = DESCRIPTIONS[measure.name][side]
    word_en, word_ko = SEVERITY_WORDS[level]
    shown = f"{value:.1f}"
    return {
        "measure": measure.name,
        "value": round(value, 3),
        "unit": "deg",
        "severity": level,
        "direction": side,
        "band": interval,
        "normal": [float(normal[0]), float(normal[1])],
        "region": REGIONS[measure.name],
        "text": {
            "en": f"{what_en}: {word_en} ({shown}°; normal {_fmt(normal[0])} to {_fmt(normal[1])}°).",
            "ko": f"{what_ko}: {word_ko} ({shown}°, 정상 {_fmt(normal[0])}~{_fmt(normal[1])}°).",
        },
    }


def findings(measures: dict[str, Measure]) -> list[dict]:
    """The view's findings, most severe first; within a severity, farthest beyond normal first."""
    order = list(SEVERITY_BANDS)
    out = [f for f in (finding(m) for m in measures.values()) if f is not None]
    out.sort(key=lambda f: (-RANK[f["severity"]], -_excess(f["measure"], f["value"], f["direction"]),
                            order.index(f["measure"])))
    return out


def unmeasured(measures: dict[str, Measure]) -> list[str]:
    """Names of the measures that could not be taken (named in the report, not counted in the grade)."""
    return [name for name, m in measures.items() if m.value is None]
