"""/members/<id>/history: every visit, each measure's trend, and two visits compared.

A change between two visits is flagged only when it is larger than the measure's measurement noise
(`MEASUREMENT_NOISE_DEG`): the largest of three disagreements measured on the test photos with the
default pipeline (heavy model, flip testing), so that re-taking the photos alone never shows as a change:
- mirror: a photo against its mirror image (docs/measures.md, "Stability on the test photos");
- halving: a photo against its half-size copy (same table);
- second shot: the same person photographed twice in one session, fiton_p1a vs p1b and fitlens_p5 vs
  p5b (docs/web.md, "Measurement noise"), the closest the test set comes to test-retest.
"""

from __future__ import annotations

import datetime as dt

from daemon.answer import FRONT_MEASURE_FIELDS, SIDE_MEASURE_FIELDS
from daemon.web import charts, i18n
from daemon.web.pages import render
from daemon.web.report import view_score

MEASURES = FRONT_MEASURE_FIELDS + SIDE_MEASURE_FIELDS

# Degrees: (worst mirror, worst halving, worst second shot) per measure; see the module docstring. Each is
# the larger of two measurements: main's pipeline (measures version 2; docs/measures.md "Stability", and the
# second shots measured for this page, docs/web.md) and the severity work's table (measures version 3,
# docs/measures.md "No band narrower than our own noise"), so the noise holds for either version.
NOISE_SOURCES_DEG: dict[str, tuple[float, float, float]] = {
    "far_head_bal": (0.15, 0.79, 0.29),
    "far_pelvic_bal": (0.19, 0.92, 0.67),
    "far_shoulder_bal": (0.44, 0.81, 1.48),
    "far_left_qang": (0.08, 0.93, 1.20),
    "far_right_qang": (0.57, 1.20, 0.51),
    "far_knee_bal": (0.15, 1.08, 0.45),
    "far_tilt": (0.07, 0.12, 0.05),
    "turtle_neck": (0.18, 0.99, 1.40),
    "round_shoulder": (0.17, 1.66, 2.92),
    "sar_tilt": (0.06, 0.12, 0.01),
    "sar_head_tilt": (0.23, 1.22, 1.16),
}
MEASUREMENT_NOISE_DEG: dict[str, float] = {name: max(parts) for name, parts in NOISE_SOURCES_DEG.items()}


def noise_table() -> dict[str, dict[str, float]]:
    return {
        name: {"mirror": m, "halving": h, "second_shot": s, "noise": MEASUREMENT_NOISE_DEG[name]}
        for name, (m, h, s) in NOISE_SOURCES_DEG.items()
    }


def visits(answers: list[dict]) -> list[dict]:
    """One summary per stored answer, oldest first: no photos, no keypoints (JSON-safe, small)."""
    summaries = []
    for answer in answers:
        measures = answer.get("measures") or {}
        summaries.append({
            "uuid": answer.get("uuid"),
            "created_at": answer.get("created_at"),
            "far_grade": answer.get("far_grade"),
            "sar_grade": answer.get("sar_grade"),
            "score": {
                view: view_score(answer, view, prefix) for view, prefix in (("front", "far"), ("side", "sar"))
            },
            "version": answer.get("version", {}),
            "measures": {
                name: {
                    "value": m.get("value"), "normal": m.get("normal"), "status": m.get("status"),
                }
                for name, m in measures.items() if isinstance(m, dict)
            },
        })
    return summaries


def _distance_from_range(value: float, normal: list[float]) -> float:
    low, high = normal
    return max(low - value, value - high, 0.0)


def comparison(visits: list[dict], first: str | None = None, second: str | None = None) -> dict | None:
    """Two visits side by side (default: the last two), the change per measure and whether it exceeds
    the measure's noise; None with fewer than two visits or an unknown uuid."""
    if len(visits) < 2:
        return None
    by_uuid = {v["uuid"]: v for v in visits}
    a = by_uuid.get(first) if first else visits[-2]
    b = by_uuid.get(second) if second else visits[-1]
    if a is None or b is None:
        return None
    rows = []
    for name in MEASURES:
        ma, mb = a["measures"].get(name) or {}, b["measures"].get(name) or {}
        va, vb = ma.get("value"), mb.get("value")
        noise = MEASUREMENT_NOISE_DEG.get(name)
        row = {"measure": name, "before": va, "after": vb, "change": None, "noise": noise, "flag": None}
        if va is not None and vb is not None and noise is not None:
            change = vb - va
            row["change"] = round(change, 2)
            if abs(change) > noise:
                normal = mb.get("normal") or ma.get("normal")
                if normal:
                    # Better = closer to the normal range (a change inside the range is just "changed").
                    before, after = _distance_from_range(va, normal), _distance_from_range(vb, normal)
                    if after < before:
                        row["flag"] = "better"
                    elif after > before:
                        row["flag"] = "worse"
                    else:
                        row["flag"] = "changed"
                else:
                    row["flag"] = "changed"
        rows.append(row)
    return {"before": a["uuid"], "after": b["uuid"], "rows": rows}


def _axis_labels(visits: list[dict]) -> list[str]:
    """Month-day under each visit, or hour:minute when visits share a day (a coach's repeat shot)."""
    times = []
    for visit in visits:
        try:
            times.append(dt.datetime.fromisoformat(str(visit.get("created_at"))))
        except ValueError:
            times.append(None)
    days = [t.strftime("%m-%d") if t else "?" for t in times]
    if len(set(days)) == len(days):
        return days
    return [t.strftime("%m-%d %H:%M") if t else "?" for t in times] if len(visits) <= 4 else [
        str(index + 1) for index in range(len(visits))]


def render_history(member_id: str, visits: list[dict], compare: dict | None, lang: str) -> str:
    t = i18n.texts(lang)
    labels = _axis_labels(visits)
    visits = [{**v, "when": (v["created_at"] or "")[:16].replace("T", " ")} for v in visits]
    trends = []
    # The 0-100 posture score per view (measures version 3), when the visits have one; band = grade A.
    for view in ("front", "side"):
        points = [(label, v["score"].get(view)) for label, v in zip(labels, visits)]
        if any(value is not None for _, value in points):
            label = f"{t['score']} · {t[view]}"
            trends.append({"name": f"score_{view}", "label": label,
                           "svg": charts.trend(points, (90.0, 100.0), label, fixed_span=(0.0, 100.0))})
    for name in MEASURES:
        points = [(label, (v["measures"].get(name) or {}).get("value")) for label, v in zip(labels, visits)]
        normals = [(v["measures"].get(name) or {}).get("normal") for v in visits]
        normal = next((n for n in reversed(normals) if n), None)
        if normal is None or all(value is None for _, value in points):
            continue
        label = i18n.measure_name(name, lang)
        trends.append({"name": name, "label": label, "svg": charts.trend(points, (normal[0], normal[1]), label)})
    rows = []
    if compare is not None:
        for row in compare["rows"]:
            rows.append({
                **row,
                "label": i18n.measure_name(row["measure"], lang),
                "flag_text": t[f"flag_{row['flag']}"] if row["flag"] else t["within_noise"],
            })
    by_uuid = {v["uuid"]: v for v in visits}
    return render(
        "history.html",
        lang=lang,
        t=t,
        member_id=member_id,
        visits=visits,
        trends=trends,
        compare=compare,
        compare_rows=rows,
        before=by_uuid.get(compare["before"]) if compare else None,
        after=by_uuid.get(compare["after"]) if compare else None,
        other_lang="ko" if lang == "en" else "en",
    )
