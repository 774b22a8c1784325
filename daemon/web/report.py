"""/report/<uuid>: one stored answer as a page a member can read and print on one A4 sheet."""

from __future__ import annotations

import datetime as dt
import io

import segno

from daemon.answer import FRONT_MEASURE_FIELDS, SIDE_MEASURE_FIELDS
from daemon.web import charts, i18n
from daemon.web.pages import render

VIEWS = (("front", "far", FRONT_MEASURE_FIELDS), ("side", "sar", SIDE_MEASURE_FIELDS))


def qr_svg(url: str) -> str:
    """The link as a QR code, SVG text (segno: pure Python, no image library needed).

    omitsize: a viewBox instead of a fixed width and height, so that the pages' CSS scales the whole
    code to its box (with a fixed size, a smaller box showed only the code's top-left corner)."""
    buffer = io.BytesIO()
    segno.make(url, error="m").save(buffer, kind="svg", scale=4, border=2, xmldecl=False, svgns=True,
                                    svgclass="qr", dark="#000", light="#fff", omitsize=True)
    return buffer.getvalue().decode("utf-8")


def _text(value: object, lang: str) -> str:
    """A finding's sentence: a {"en": .., "ko": ..} dict, or a plain string."""
    if isinstance(value, dict):
        return str(value.get(lang) or value.get("en") or "")
    return "" if value is None else str(value)


def view_findings(answer: dict, view: str, prefix: str, lang: str) -> list[dict]:
    """The severity work's `findings` for one view, in whichever documented form is present
    ({"front": [...], "side": [...]} or a flat list with a `view` key); [] when the answer has none."""
    raw = answer.get("findings")
    if isinstance(raw, dict):
        items = raw.get(view) or raw.get(prefix) or []
    elif isinstance(raw, list):
        items = [f for f in raw if isinstance(f, dict) and f.get("view") in (view, prefix, None)]
    else:
        items = []
    findings = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        name = str(item.get("measure", ""))
        severity = str(item.get("severity", ""))
        findings.append({
            "measure": i18n.measure_name(name, lang) if name else "",
            "severity": severity,
            "severity_text": i18n.texts(lang).get(severity, severity),
            "value": item.get("value"),
            "sentence": _text(item.get("sentence", item.get("text", item.get("message"))), lang),
        })
    return findings


def view_score(answer: dict, view: str, prefix: str) -> float | None:
    """The 0-100 posture score of a view, when the answer has one (`score`/`scores` by view, or
    `far_score`/`sar_score`)."""
    for key in ("score", "scores"):
        value = answer.get(key)
        if isinstance(value, dict):
            found = value.get(view, value.get(prefix))
            if isinstance(found, (int, float)):
                return float(found)
    found = answer.get(f"{prefix}_score")
    return float(found) if isinstance(found, (int, float)) else None


def measure_rows(answer: dict, fields: tuple[str, ...], lang: str) -> list[dict]:
    measures = answer.get("measures") or {}
    rows = []
    for name in fields:
        measure = measures.get(name)
        if not isinstance(measure, dict):
            continue
        value = measure.get("value")
        normal = measure.get("normal") or [0.0, 0.0]
        status = str(measure.get("status", "not_measurable"))
        # With severities (measures version 3) an outside value says how far: mild, moderate, severe.
        severity = measure.get("severity")
        shown = severity if status == "outside" and severity in ("mild", "moderate", "severe") else status
        rows.append({
            "name": name,
            "label": i18n.measure_name(name, lang),
            "value": value,
            "unit": "°" if measure.get("unit") == "deg" else str(measure.get("unit", "")),
            "normal": normal,
            "status": status,
            "status_text": i18n.texts(lang).get(shown, shown),
            "colour": charts.STATUS_COLOURS.get(shown, charts.STATUS_COLOURS["not_measurable"]),
            "bar": charts.range_bar(value, (normal[0], normal[1]), shown),
            "meaning": i18n.meaning(name, measure, lang),
        })
    return rows


def _when(created_at: object) -> str:
    if not isinstance(created_at, str):
        return ""
    try:
        return dt.datetime.fromisoformat(created_at).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        return created_at


def render_report(answer: dict, lang: str, link: dict | None, token: str | None = None) -> str:
    """The page; `link` (the member's signed link, shown as a QR code) only for the kiosk and coach,
    `token` when the page was opened through such a link (kept in the language switch)."""
    t = i18n.texts(lang)
    views = []
    for view, prefix, fields in VIEWS:
        photo = answer.get("forigimg" if view == "front" else "sorigimg") or ""
        views.append({
            "key": view,
            "title": t[view],
            "grade": answer.get(f"{prefix}_grade", ""),
            "score": view_score(answer, view, prefix),
            "photo": photo if isinstance(photo, str) else "",
            "rows": measure_rows(answer, fields, lang),
            "findings": view_findings(answer, view, prefix, lang),
        })
    version = answer.get("version") or {}
    expires = None
    if link is not None:
        expires = dt.datetime.fromtimestamp(link["expires"], dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return render(
        "report.html",
        lang=lang,
        t=t,
        uuid=str(answer.get("uuid", "")),
        created=_when(answer.get("created_at")),
        views=views,
        messages=[i18n.guidance_message(str(m), lang) for m in answer.get("message") or []],
        versions=t["versions"].format(
            software=version.get("software", "?"), measures=version.get("measures", "?")
        ),
        link=link,
        link_expires=t["link_expires"].format(date=expires) if expires else "",
        other_lang="ko" if lang == "en" else "en",
        token=token,
    )
