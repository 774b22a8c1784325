"""Severities and grades on the shared test photos: the drawn forward-head profile grades C or D; mirrored,
half-size and re-shot photos grade as the originals; no band is narrower than what mirroring, halving or
re-shooting moves a measure by (docs/measures.md, "No band narrower than our own noise")."""

from __future__ import annotations

import base64
import json

import jsonschema
import pytest
from conftest import read_photo, testdata_path
from photo_poses import LEFT_RIGHT, LEG_SWAP, PAIRS, estimate, read, variants

from daemon import grades, severity
from daemon.measures import front_measures, side_measures
from daemon.request import parse_request

DRAWN = "pranjal"
# Front/side file names per set: the eight real pairs and the drawn set (front + left profile).
FILES = {pair: (("front", f"{pair}_front.jpg"), ("side", f"{pair}_side.jpg")) for pair in PAIRS}
FILES[DRAWN] = (("synthetic", "pranjal_front.png"), ("synthetic", "pranjal_left.png"))
# The same person photographed again (photos/MANIFEST.md).
RESHOT = (("fitlens_p5", "fitlens_p5b"), ("fiton_p1a", "fiton_p1b"))


@pytest.fixture(scope="module")
def views(backend):
    """set -> variant ("orig" | "mirror" | "half") -> (front measures, side measures)"""
    out = {}
    for name, (front_file, side_file) in FILES.items():
        out[name] = {
            variant: (front_measures(estimate(backend, f).main), side_measures(estimate(backend, s).main))
            for variant, (f, s) in variants(read(*front_file), read(*side_file)).items()
        }
    return out


def _grades(measures_pair) -> tuple[str, str]:
    return grades.grade(measures_pair[0]), grades.grade(measures_pair[1])


def test_drawn_forward_head_profile_grades_c_or_d(views):
    _front, side = views[DRAWN]["orig"]
    assert grades.grade(side) in ("C", "D")
    neck = side["turtle_neck"]
    assert severity.RANK[severity.severity(neck)] >= severity.RANK["moderate"], neck.value
    assert severity.findings(side)[0]["measure"] == "turtle_neck"


@pytest.mark.parametrize("variant", ["mirror", "half"])
def test_mirrored_and_halved_photos_grade_as_the_originals(views, variant):
    for name, by_variant in views.items():
        assert _grades(by_variant[variant]) == _grades(by_variant["orig"]), (name, variant)


def test_reshot_pairs_grade_alike(views):
    for first, second in RESHOT:
        assert _grades(views[first]["orig"]) == _grades(views[second]["orig"]), (first, second)


def _narrowest_band(name: str) -> float:
    bands = severity.SEVERITY_BANDS[name]
    return min(abs(edges[i + 1] - edges[i]) for edges in (bands.low, bands.high) for i in range(2))


def test_no_band_is_narrower_than_our_noise(views):
    """Every measure's disagreement under mirroring, halving and re-shooting stays below its narrowest band."""
    worst: dict[str, float] = {}

    def note(name: str, a: float | None, b: float | None) -> None:
        if a is not None and b is not None:
            worst[name] = max(worst.get(name, 0.0), abs(a - b))

    for by_variant in views.values():
        orig = {**by_variant["orig"][0], **by_variant["orig"][1]}
        mirror = {**by_variant["mirror"][0], **by_variant["mirror"][1]}
        half = {**by_variant["half"][0], **by_variant["half"][1]}
        for name, measure in orig.items():
            if measure.value is None:
                continue
            mirrored = mirror[LEG_SWAP.get(name, name)].value
            note(name, -mirrored if (mirrored is not None and name in LEFT_RIGHT) else mirrored, measure.value)
            note(name, half[name].value, measure.value)
    for first, second in RESHOT:
        a = {**views[first]["orig"][0], **views[first]["orig"][1]}
        b = {**views[second]["orig"][0], **views[second]["orig"][1]}
        for name, measure in a.items():
            note(name, measure.value, b[name].value)
    assert set(worst) == set(severity.SEVERITY_BANDS)
    too_wide = {name: round(d, 2) for name, d in worst.items() if d >= _narrowest_band(name)}
    assert not too_wide, too_wide


def test_answer_of_the_drawn_profile(analyzer):
    """Through the production pipeline: the answer's findings, score and severities, schema-valid."""
    front_file, side_file = FILES[DRAWN]
    payload = {
        "id": "someone@example.com", "uuid": "severity-drawn",
        "forigimg": base64.b64encode(read_photo(*front_file)).decode(),
        "sorigimg": base64.b64encode(read_photo(*side_file)).decode(),
    }
    answer = analyzer.analyze(parse_request(payload))
    schema = json.loads(testdata_path("..", "spec", "skeleton-v2.answer.schema.json").read_text())
    jsonschema.validate(answer, schema)
    assert answer["sar_grade"] in ("C", "D")
    assert answer["measures"]["turtle_neck"]["severity"] in ("moderate", "severe")
    side = answer["findings"]["side"]
    assert side[0]["measure"] == "turtle_neck" and side[0]["text"]["en"] and side[0]["text"]["ko"]
    ranks = [severity.RANK[f["severity"]] for f in side]
    assert ranks == sorted(ranks, reverse=True)
    low, high = grades.GRADE_SCORE_SPANS[answer["sar_grade"]]
    assert low <= answer["score"]["side"] <= high
    assert set(answer["score"]) == set(answer["findings"]) == set(answer["unmeasured"]) == {"front", "side"}
    assert all(entry["severity"] in (*severity.SEVERITIES, severity.NOT_MEASURABLE)
               for entry in answer["measures"].values())
    assert answer["version"]["measures"] == "3"
