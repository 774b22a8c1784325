"""The web app's routes over a real uvicorn with the real Analyzer on real photos: report, history (HTML and
JSON), member erasure checked in the SQLite files, signed report links and the access rule.

The browser tests (layout, print, kiosk) are in tests/test_web_browser.py.
"""

from __future__ import annotations

import re
import sqlite3
import time
from urllib.parse import quote, urlsplit

import httpx
import pytest
from test_http import AUTH, TOKEN, request_json, running_server

from daemon.answer import FRONT_MEASURE_FIELDS, SIDE_MEASURE_FIELDS
from daemon.config import load_config
from daemon.members import MemberKeys
from daemon.service import Service
from daemon.web.history import MEASUREMENT_NOISE_DEG, comparison

MEMBER = "Visitor.Three@Example.com"
PAIRS = ("fitlens_p1", "fitlens_p2", "fitlens_p3")


def photo_pair(name: str) -> tuple[bytes, bytes]:
    from conftest import testdata_path

    return (testdata_path("photos", "front", f"{name}_front.jpg").read_bytes(),
            testdata_path("photos", "side", f"{name}_side.jpg").read_bytes())


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A daemon with a token, three visits of MEMBER (typed three ways) and one of someone else."""
    store_dir = tmp_path_factory.mktemp("web-store")
    config = load_config(overrides={
        "http": {"token": TOKEN}, "store": {"path": str(store_dir / "results.sqlite3")},
    })
    service = Service(config)
    service.start()
    with running_server(service, config) as url, httpx.Client(base_url=url, headers=AUTH, timeout=120) as client:
        for index, (pair, member) in enumerate(zip(PAIRS, (MEMBER, MEMBER.lower(), f" {MEMBER.upper()} "))):
            front, side = photo_pair(pair)
            answer = client.post("/analyze/skeleton-v2",
                                 json=request_json(f"visit-{index}", front, side, id=member))
            assert answer.status_code == 200, answer.text
        front, side = photo_pair("fitlens_p4")
        other = client.post("/analyze/skeleton-v2", json=request_json("other-0", front, side, id="other@example.com"))
        assert other.status_code == 200
        yield {"client": client, "url": url, "service": service, "db": store_dir / "results.sqlite3",
               "store_dir": store_dir}
    service.stop(30)


def test_report_shows_every_measure_both_photos_and_versions(site):
    client = site["client"]
    answer = client.get("/results/visit-0").json()
    for lang, title, name in (("en", "Posture report", "Shoulder balance"), ("ko", "자세 분석 결과", "어깨 균형")):
        page = client.get("/report/visit-0", params={"lang": lang})
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        html = page.text
        assert f'<html lang="{lang}">' in html and title in html and name in html
        for field in FRONT_MEASURE_FIELDS + SIDE_MEASURE_FIELDS:
            assert f'data-measure="{field}"' in html, field
        assert html.count('class="range-bar"') == len(FRONT_MEASURE_FIELDS + SIDE_MEASURE_FIELDS)
        assert f'src="data:image/jpeg;base64,{answer["forigimg"]}"' in html
        assert f'src="data:image/jpeg;base64,{answer["sorigimg"]}"' in html
        assert f'{answer["version"]["software"]}' in html and f'{answer["version"]["measures"]}' in html
        assert f'>{answer["far_grade"]}</b>' in html and f'>{answer["sar_grade"]}</b>' in html
    # The browser's language when no lang parameter is given.
    korean = client.get("/report/visit-0", headers={"Accept-Language": "ko-KR,ko;q=0.9,en;q=0.5"})
    assert '<html lang="ko">' in korean.text


def test_report_refuses_bad_and_unknown_uuids(site):
    client = site["client"]
    assert client.get("/report/no-such-uuid").status_code == 404
    assert client.get("/report/no-such-uuid").json()["data"]["errors"] == "not found"
    assert client.get("/report/" + "x" * 200).status_code == 400


def test_history_json_has_every_visit_and_a_comparison_flagged_by_noise(site):
    client = site["client"]
    reply = client.get(f"/members/{quote(MEMBER)}/history", headers={"Accept": "application/json"})
    assert reply.status_code == 200 and reply.headers["content-type"] == "application/json"
    body = reply.json()
    assert [v["uuid"] for v in body["visits"]] == ["visit-0", "visit-1", "visit-2"]
    assert "forigimg" not in reply.text  # no photos in the history JSON
    compare = body["comparison"]
    assert (compare["before"], compare["after"]) == ("visit-1", "visit-2")
    for row in compare["rows"]:
        assert row["noise"] == MEASUREMENT_NOISE_DEG[row["measure"]]
        if row["change"] is not None:
            assert (row["flag"] is not None) == (abs(row["change"]) > row["noise"])
    # Three different people's photos: some measure must differ beyond its noise.
    assert any(row["flag"] for row in compare["rows"])
    chosen = client.get(f"/members/{quote(MEMBER)}/history", params={"a": "visit-0", "b": "visit-2"},
                        headers={"Accept": "application/json"}).json()["comparison"]
    assert (chosen["before"], chosen["after"]) == ("visit-0", "visit-2")
    other = client.get("/members/other@example.com/history", headers={"Accept": "application/json"}).json()
    assert [v["uuid"] for v in other["visits"]] == ["other-0"]


def test_history_html_has_trends_and_the_comparison(site):
    html = site["client"].get(f"/members/{quote(MEMBER)}/history", params={"lang": "en"}).text
    # One trend per measure taken at least once (all eleven on these photos), and the two view scores.
    assert html.count('class="trend-card"') == len(FRONT_MEASURE_FIELDS + SIDE_MEASURE_FIELDS) + 2
    assert 'data-measure="score_front"' in html and 'data-measure="score_side"' in html
    assert html.count('class="visit-point"') >= 3 * 12  # three visits on (nearly) every trend
    assert html.count('class="compare-row"') == len(FRONT_MEASURE_FIELDS + SIDE_MEASURE_FIELDS)
    assert "measurement noise" in html
    assert 'data-uuid="visit-0"' in html and 'data-uuid="visit-2"' in html


def test_comparison_flags_only_changes_beyond_noise():
    noise = MEASUREMENT_NOISE_DEG["far_shoulder_bal"]
    def visit(uuid, shoulder, tilt):
        return {"uuid": uuid, "measures": {
            "far_shoulder_bal": {"value": shoulder, "normal": [-2.0, 2.0]},
            "far_tilt": {"value": tilt, "normal": [-1.5, 1.5]},
        }}
    tilt_noise = MEASUREMENT_NOISE_DEG["far_tilt"]
    result = comparison([visit("a", 4.0, 0.0), visit("b", 4.0 - noise - 0.05, 0.0 + tilt_noise * 0.9)])
    rows = {r["measure"]: r for r in result["rows"]}
    assert rows["far_shoulder_bal"]["flag"] == "better"
    assert rows["far_tilt"]["flag"] is None
    worse = comparison([visit("a", 2.5, 0.0), visit("b", 2.5 + noise + 0.05, 0.0)])
    assert {r["measure"]: r for r in worse["rows"]}["far_shoulder_bal"]["flag"] == "worse"
    small = comparison([visit("a", 2.5, 0.0), visit("b", 2.5 + noise - 0.05, 0.0)])
    assert {r["measure"]: r for r in small["rows"]}["far_shoulder_bal"]["flag"] is None
    assert comparison([visit("a", 1.0, 0.0)]) is None


def test_pages_need_the_token_and_a_signed_link_opens_one_report(site):
    url = site["url"]
    with httpx.Client(base_url=url, timeout=30) as anonymous:
        for path in ("/report/visit-0", "/report/visit-0/link", f"/members/{quote(MEMBER)}/history"):
            refused = anonymous.get(path)
            assert refused.status_code == 401, path
            assert refused.json()["data"]["errors"] == "unauthorized"
        assert anonymous.delete(f"/members/{quote(MEMBER)}").status_code == 401
        link = site["client"].get("/report/visit-0/link").json()
        assert link["expires"] > time.time() + 3600 and "<svg" in link["qr_svg"]
        parts = urlsplit(link["url"])
        assert parts.path == "/report/visit-0" and parts.query.startswith("t=")
        opened = anonymous.get(f"{parts.path}?{parts.query}")
        assert opened.status_code == 200 and 'data-measure="far_tilt"' in opened.text
        # The token opens only that report, and not once tampered with or expired.
        assert anonymous.get(f"/report/visit-1?{parts.query}").status_code == 403
        token = parts.query[2:]
        assert anonymous.get("/report/visit-0", params={"t": token[:-2] + "AA"}).status_code == 403
        keys = MemberKeys(site["store_dir"])
        expired, _ = keys.sign_report("visit-0", ttl_s=-1)
        assert anonymous.get("/report/visit-0", params={"t": expired}).status_code == 403
        assert anonymous.get(f"/members/{quote(MEMBER)}/history", params={"t": token}).status_code == 401


def test_the_store_keeps_no_address_in_clear(site):
    data = site["db"].read_bytes()
    wal = site["db"].with_name("results.sqlite3-wal")
    if wal.exists():
        data += wal.read_bytes()
    for form in (MEMBER, MEMBER.lower(), "other@example.com"):
        assert form.encode() not in data


def test_erasure_removes_every_result_of_the_member_from_the_database(site):
    client = site["client"]
    answers = [client.get(f"/results/visit-{i}").json() for i in range(3)]
    erased = client.delete(f"/members/{quote(MEMBER.lower())}")
    assert erased.status_code == 200 and erased.json() == {"erased": 3}
    for index in range(3):
        assert client.get(f"/results/visit-{index}").status_code == 404
        assert client.get(f"/report/visit-{index}").status_code == 404
    history = client.get(f"/members/{quote(MEMBER)}/history", headers={"Accept": "application/json"}).json()
    assert history["visits"] == [] and history["comparison"] is None
    assert client.get("/results/other-0").status_code == 200
    with sqlite3.connect(site["db"]) as db:
        uuids = [row[0] for row in db.execute("SELECT uuid FROM results")]
    assert uuids == ["other-0"]
    raw = site["db"].read_bytes()
    wal = site["db"].with_name("results.sqlite3-wal")
    raw += wal.read_bytes() if wal.exists() else b""
    for answer in answers:
        # A stretch of each annotated photo's base64, and the uuid: gone from every file.
        for needle in (answer["forigimg"][1000:1064], answer["sorigimg"][1000:1064], answer["uuid"]):
            assert needle.encode() not in raw
    assert re.search(rb"visit-\d", raw) is None
    assert client.delete("/members/%20").status_code == 400


def test_report_shows_findings_and_scores_when_the_answer_has_them(site):
    """The severity work's extras (docs/measures.md "Findings and score"): shown when present, and their
    absence (a result stored with measures version 2) leaves the page whole."""
    from daemon.web.report import render_report

    answer = site["client"].get("/results/other-0").json()
    real = render_report(answer, "en", None)
    for view in ("front", "side"):
        assert f"{answer['score'][view]}/100" in real
        for finding in answer["findings"][view]:
            assert finding["text"]["en"] in real.replace("&#39;", "'")
    older = {k: v for k, v in answer.items() if k not in ("findings", "score", "unmeasured")}
    older["measures"] = {name: {k: v for k, v in m.items() if k != "severity"} for name, m in answer["measures"].items()}
    plain = render_report(older, "en", None)
    assert 'class="findings"' not in plain and "Score" not in plain
    answer["findings"] = {
        "front": [{"measure": "far_shoulder_bal", "value": 3.444, "unit": "deg", "severity": "mild",
                   "direction": "high", "band": [2.0, 4.5], "normal": [-2.0, 2.0], "region": "head_shoulders",
                   "text": {"en": "Right shoulder lower than the left: mild (3.4°; normal -2 to 2°).",
                            "ko": "오른쪽 어깨가 왼쪽보다 낮습니다: 경미함 (3.4°, 정상 -2~2°)."}}],
        "side": [{"measure": "turtle_neck", "value": 36.9, "severity": "severe", "direction": "low",
                  "text": {"en": "Head held forward of the shoulders: severe.", "ko": "머리가 앞으로: 심함."}}],
    }
    answer["score"] = {"front": 89, "side": 39}
    answer["measures"]["turtle_neck"].update({"value": 36.9, "status": "outside", "severity": "severe"})
    english = render_report(answer, "en", None)
    assert "Right shoulder lower than the left: mild" in english and "Head held forward" in english
    assert ">89</b>" in english and "39/100" in english
    assert 'class="finding severity-severe"' in english
    row = english[english.index('data-measure="turtle_neck"'):]
    assert "severe</td>" in row[:row.index("</tr>") + 5].replace("\n", "")
    korean = render_report(answer, "ko", None)
    assert "오른쪽 어깨가 왼쪽보다 낮습니다" in korean and "심함" in korean
