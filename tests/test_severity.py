"""Severity bands, grades, findings and scores on synthetic geometry whose angles are known
(tests/synthetic_pose.py): each measure's band edges as docs/measures.md gives them, taken through the
real measure functions just inside and just outside each edge."""

from __future__ import annotations

import pytest
from synthetic_pose import front_pose, hide, side_pose

from daemon import grades, severity
from daemon.measures import NORMAL_RANGES, Measure, front_measures, side_measures

# Edges as docs/measures.md ("Severity bands") states them, with their sources; the code must agree.
DOCUMENTED_EDGES = {
    "turtle_neck": ((50.0, 45.5, 40.0), (70.0, 75.0, 80.0)),  # Lau 2009; Mostafaee 2024 (45.5)
    "round_shoulder": ((52.0, 43.0, 34.0), (90.0, 95.0, 100.0)),  # Ruivo 2014 mean - 1 / - 2 SD
    "far_head_bal": ((-2.5, -6.0, -10.0), (2.5, 6.0, 10.0)),  # SAPO SD 2: 3 and 5 SD
    "far_shoulder_bal": ((-2.0, -4.5, -7.5), (2.0, 4.5, 7.5)),  # SAPO SD 1.5: 3 and 5 SD
    "far_pelvic_bal": ((-2.0, -4.5, -7.5), (2.0, 4.5, 7.5)),
    "far_knee_bal": ((-2.0, -4.5, -7.5), (2.0, 4.5, 7.5)),
    "far_tilt": ((-1.5, -3.0, -4.5), (1.5, 3.0, 4.5)),
    "far_left_qang": ((-3.0, -6.0, -9.0), (3.0, 6.0, 9.0)),  # Moreland 1987 1.2 +- 2.2
    "far_right_qang": ((-3.0, -6.0, -9.0), (3.0, 6.0, 9.0)),
    "sar_tilt": ((-1.0, -3.5, -6.0), (4.0, 6.5, 9.0)),
    "sar_head_tilt": ((-10.0, -15.0, -20.0), (10.0, 15.0, 20.0)),
}

# Synthetic geometry with the named measure set to a value (every other measure neutral).
FRONT_PARAMS = {
    "far_head_bal": "head_tilt_deg", "far_shoulder_bal": "shoulder_tilt_deg", "far_pelvic_bal": "pelvic_tilt_deg",
    "far_knee_bal": "knee_tilt_deg", "far_tilt": "lean_deg", "far_left_qang": "left_varus_deg",
    "far_right_qang": "right_varus_deg",
}
SIDE_PARAMS = {
    "turtle_neck": "cva_deg", "round_shoulder": "forward_shoulder_deg", "sar_tilt": "tilt_deg",
    "sar_head_tilt": "head_deg",
}
NEUTRAL_SIDE = {"cva_deg": 55.0, "forward_shoulder_deg": 60.0}


def _measured(name: str, value: float) -> dict[str, Measure]:
    if name in FRONT_PARAMS:
        return front_measures(front_pose(**{FRONT_PARAMS[name]: value}))
    return side_measures(side_pose(**{**NEUTRAL_SIDE, SIDE_PARAMS[name]: value}))


def _edge_cases():
    """(measure, value, expected severity) just inside and just outside every edge."""
    step = 0.1
    for name, (low, high) in DOCUMENTED_EDGES.items():
        for edges, outward in ((low, -1.0), (high, 1.0)):
            for level, edge in zip(("normal", "mild", "moderate"), edges):
                worse = severity.SEVERITIES[severity.RANK[level] + 1]
                yield name, edge - outward * step, level
                yield name, edge + outward * step, worse


def test_code_follows_the_documented_edges():
    for name, (low, high) in DOCUMENTED_EDGES.items():
        bands = severity.SEVERITY_BANDS[name]
        assert (bands.low, bands.high) == (low, high), name
        assert (low[0], high[0]) == NORMAL_RANGES[name], f"{name}: band edges start at the normal range"
    assert set(DOCUMENTED_EDGES) == set(NORMAL_RANGES) == set(severity.REGIONS) == set(severity.DESCRIPTIONS)


@pytest.mark.parametrize("name, value, expected", list(_edge_cases()))
def test_band_edges_on_synthetic_geometry(name, value, expected):
    measure = _measured(name, value)[name]
    assert measure.value == pytest.approx(value, abs=0.01)
    assert severity.severity(measure) == expected
    others = {n: severity.severity(m) for n, m in _measured(name, value).items() if n != name}
    assert set(others.values()) == {"normal"}, others


def test_an_edge_value_takes_the_milder_band():
    assert severity.classify("turtle_neck", 50.0) == "normal"
    assert severity.classify("turtle_neck", 45.5) == "mild"
    assert severity.classify("turtle_neck", 40.0) == "moderate"
    assert severity.classify("turtle_neck", 39.99) == "severe"
    assert severity.classify("turtle_neck", None) == severity.NOT_MEASURABLE


def _m(name: str, value: float | None) -> Measure:
    normal = NORMAL_RANGES[name]
    status = "not_measurable" if value is None else ("normal" if normal[0] <= value <= normal[1] else "outside")
    return Measure(name, value, "deg", normal, status, None if value is not None else "not seen", 1.0)


def _view(**values) -> dict[str, Measure]:
    return {name: _m(name, value) for name, value in values.items()}


@pytest.mark.parametrize("values, letter", [
    ({"turtle_neck": 55.0, "round_shoulder": 60.0, "sar_tilt": 1.0, "sar_head_tilt": 0.0}, "A"),
    ({"turtle_neck": 48.0, "round_shoulder": 60.0}, "B"),             # one mild
    ({"turtle_neck": 48.0, "round_shoulder": 50.0}, "B"),             # mild, in different regions
    ({"turtle_neck": 48.0, "sar_head_tilt": 12.0}, "C"),              # two mild in the head and neck
    ({"turtle_neck": 44.0, "round_shoulder": 60.0}, "C"),             # one moderate
    ({"turtle_neck": 30.7, "round_shoulder": 50.3}, "D"),             # the drawn profile: one severe
    ({"far_head_bal": 3.0, "far_shoulder_bal": 3.0}, "C"),            # upper-quarter lean: one region
    ({"far_head_bal": 3.0, "far_pelvic_bal": 3.0, "far_left_qang": 4.0}, "B"),  # mild, three regions
    ({"far_left_qang": -4.5, "far_right_qang": -4.9}, "B"),           # both knees in: one finding
    ({"far_left_qang": -4.5, "far_knee_bal": 2.5}, "C"),              # two findings in the legs
    ({"far_shoulder_bal": 2.1, "far_pelvic_bal": 2.1, "far_tilt": 1.6, "far_head_bal": 2.6,
      "far_knee_bal": 2.1}, "C"),                                     # five small: C, not D (version 2: D)
    ({"turtle_neck": None, "round_shoulder": 60.0}, "A"),             # not measurable: not counted
    ({"turtle_neck": None, "round_shoulder": None}, "D"),             # nothing measured
])
def test_grade_rule(values, letter):
    assert grades.grade(_view(**values)) == letter


def test_score_follows_the_severities_and_never_contradicts_the_grade():
    assert grades.score(_view(turtle_neck=55.0, round_shoulder=60.0)) == 100
    assert grades.score(_view(turtle_neck=48.0, round_shoulder=60.0)) == 89  # 92, held in B's span
    assert grades.score(_view(turtle_neck=48.0, round_shoulder=50.0)) == 84
    assert grades.score(_view(turtle_neck=44.0)) == 69  # 80, held in C's span
    assert grades.score(_view(turtle_neck=44.0, sar_head_tilt=-17.0, round_shoulder=40.0)) == 40
    assert grades.score(_view(turtle_neck=30.0)) == 39
    assert grades.score(_view(turtle_neck=30.0, round_shoulder=30.0, sar_tilt=-9.0)) == 0
    assert grades.score(_view(turtle_neck=None)) is None
    spans = grades.GRADE_SCORE_SPANS
    for values in ({"turtle_neck": 48.0, "sar_head_tilt": 12.0}, {"far_left_qang": 10.0},
                   {"far_head_bal": 3.0}, {"far_tilt": 0.0}):
        view = _view(**values)
        low, high = spans[grades.grade(view)]
        assert low <= grades.score(view) <= high


def test_findings_ordered_by_severity_with_both_languages():
    view = _view(turtle_neck=30.7, round_shoulder=50.3, sar_tilt=5.0, sar_head_tilt=None)
    found = severity.findings(view)
    assert [f["measure"] for f in found] == ["turtle_neck", "sar_tilt", "round_shoulder"]
    assert [f["severity"] for f in found] == ["severe", "mild", "mild"]  # sar_tilt is farther beyond its range
    neck = found[0]
    assert neck == {
        "measure": "turtle_neck", "value": 30.7, "unit": "deg", "severity": "severe", "direction": "low",
        "band": [None, 40.0], "normal": [50.0, 70.0], "region": "head_neck", "text": neck["text"],
    }
    assert "forward head" in neck["text"]["en"] and "severe" in neck["text"]["en"] and "30.7" in neck["text"]["en"]
    assert "거북목" in neck["text"]["ko"] and "심함" in neck["text"]["ko"] and "30.7" in neck["text"]["ko"]
    assert found[1]["band"] == [4.0, 6.5] and found[1]["direction"] == "high"
    assert severity.unmeasured(view) == ["sar_head_tilt"]


def test_every_finding_sentence_exists_and_band_holds_its_value():
    for name, (low, high) in DOCUMENTED_EDGES.items():
        for value in (low[0] - 0.5, low[1] - 0.5, low[2] - 0.5, high[0] + 0.5, high[1] + 0.5, high[2] + 0.5):
            found = severity.finding(_m(name, value))
            lo, hi = found["band"]
            assert (lo is None or lo <= value) and (hi is None or value <= hi), (name, value, found["band"])
            assert found["text"]["en"] and found["text"]["ko"] and f"{value:.1f}" in found["text"]["en"]
    assert severity.finding(_m("turtle_neck", 55.0)) is None
    assert severity.finding(_m("turtle_neck", None)) is None


def test_synthetic_views_grade():
    assert grades.grade(front_measures(front_pose())) == "A"
    assert grades.grade(side_measures(side_pose(cva_deg=55.0, forward_shoulder_deg=60.0))) == "A"
    # A 10-degree varus knee is severe whatever else is mild.
    assert grades.grade(front_measures(front_pose(lean_deg=2.0, shoulder_tilt_deg=3.0, left_varus_deg=10.0))) == "D"
    # The drawn forward-head profile's angles: severe forward head.
    assert grades.grade(side_measures(side_pose(cva_deg=30.7, forward_shoulder_deg=50.3))) == "D"
    # A head that cannot be seen is named, not counted.
    hidden = side_measures(hide(side_pose(cva_deg=55.0, forward_shoulder_deg=60.0), "left_ear", "right_ear",
                                presence=0.1))
    assert "turtle_neck" in severity.unmeasured(hidden)
    assert grades.grade(hidden) == "A"
