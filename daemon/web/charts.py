"""Small SVG charts drawn by the daemon (no chart library, no script): a measure's normal range as a bar
with the value marked, and a measure's trend over visits. Numbers only go into attributes, so the SVG
needs no escaping beyond the labels, which are escaped."""

from __future__ import annotations

from html import escape

STATUS_COLOURS = {"normal": "#1b8a3a", "outside": "#c62828", "not_measurable": "#8a8a8a",
                  # the severity of a finding, when the answer carries one (measures version 3)
                  "mild": "#d48806", "moderate": "#e65100", "severe": "#b71c1c"}
BAND_COLOUR = "#cfe9d6"
TRACK_COLOUR = "#eeeeee"


def _scale_span(normal: tuple[float, float], values: list[float]) -> tuple[float, float]:
    """The axis: the normal range with one range width of margin each side, widened to fit the values."""
    low, high = normal
    width = max(high - low, 1.0)
    start, end = low - width, high + width
    for value in values:
        start, end = min(start, value - 0.1 * width), max(end, value + 0.1 * width)
    return start, end


def range_bar(value: float | None, normal: tuple[float, float], status: str, unit: str = "°",
              width: int = 220, height: int = 34) -> str:
    """The normal range as a green band on a grey track, the value as a marker in its status colour."""
    low, high = float(normal[0]), float(normal[1])
    start, end = _scale_span((low, high), [] if value is None else [float(value)])
    pad = 6
    track = width - 2 * pad

    def x(v: float) -> float:
        return pad + (v - start) / (end - start) * track

    colour = STATUS_COLOURS.get(status, STATUS_COLOURS["not_measurable"])
    parts = [
        (f'<svg class="range-bar" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img">'),
        f'<rect x="{pad}" y="10" width="{track}" height="8" rx="4" fill="{TRACK_COLOUR}"/>',
        (f'<rect class="normal-band" x="{x(low):.1f}" y="10" width="{x(high) - x(low):.1f}" height="8" '
        f'fill="{BAND_COLOUR}"/>'),
        f'<text x="{x(low):.1f}" y="31" font-size="9" text-anchor="middle" fill="#555">{low:g}</text>',
        f'<text x="{x(high):.1f}" y="31" font-size="9" text-anchor="middle" fill="#555">{high:g}</text>',
    ]
    if value is not None:
        vx = x(float(value))
        parts.append(
            f'<path class="value-marker" d="M{vx:.1f} 21 l-5 -9 h10 z" transform="translate(0,-9)" '
            f'fill="{colour}" stroke="#fff" stroke-width="1"/>'
        )
        parts.append(f'<line x1="{vx:.1f}" y1="8" x2="{vx:.1f}" y2="20" stroke="{colour}" stroke-width="2.5"/>')
    parts.append("</svg>")
    return "".join(parts)


def trend(points: list[tuple[str, float | None]], normal: tuple[float, float], label: str = "",
          width: int = 260, height: int = 90, fixed_span: tuple[float, float] | None = None) -> str:
    """One measure over visits: the normal band, a line through the measured visits, a dot per visit
    (red outside the range). `points` are (visit label, value or None), oldest first; `fixed_span`
    sets the axis (a 0-100 score) instead of fitting it to the range and the values."""
    low, high = float(normal[0]), float(normal[1])
    values = [v for _, v in points if v is not None]
    start, end = fixed_span if fixed_span is not None else _scale_span((low, high), values)
    left, right, top, bottom = 28, 8, 8, 18
    plot_w, plot_h = width - left - right, height - top - bottom
    count = max(len(points), 1)

    def x(index: int) -> float:
        return left + (plot_w / 2 if count == 1 else index * plot_w / (count - 1))

    def y(v: float) -> float:
        return top + (end - v) / (end - start) * plot_h

    parts = [
        (f'<svg class="trend" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label)}">'),
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fafafa" stroke="#ddd"/>',
        (f'<rect class="normal-band" x="{left}" y="{y(high):.1f}" width="{plot_w}" '
        f'height="{y(low) - y(high):.1f}" fill="{BAND_COLOUR}"/>'),
        f'<text x="{left - 3}" y="{y(high) + 3:.1f}" font-size="9" text-anchor="end" fill="#555">{high:g}</text>',
    ]
    # The band's lower edge labelled unless it would sit on the upper one (a narrow band: a score's A).
    if y(low) - y(high) >= 10:
        parts.append(f'<text x="{left - 3}" y="{y(low) + 3:.1f}" font-size="9" text-anchor="end" fill="#555">{low:g}</text>')
    if fixed_span is not None:
        parts.append(f'<text x="{left - 3}" y="{y(start):.1f}" font-size="9" text-anchor="end" fill="#555">{start:g}</text>')
    line = [(x(i), y(v)) for i, (_, v) in enumerate(points) if v is not None]
    if len(line) > 1:
        path = " ".join(f"{'M' if i == 0 else 'L'}{px:.1f} {py:.1f}" for i, (px, py) in enumerate(line))
        parts.append(f'<path d="{path}" fill="none" stroke="#37474f" stroke-width="1.5"/>')
    for index, (name, value) in enumerate(points):
        # The end labels lean inward so that they stay inside the chart.
        anchor = "middle" if count == 1 else ("start" if index == 0 else "end" if index == count - 1 else "middle")
        parts.append(
            f'<text x="{x(index):.1f}" y="{height - 5}" font-size="9" text-anchor="{anchor}" fill="#555">'
            f"{escape(name)}</text>"
        )
        if value is None:
            continue
        colour = STATUS_COLOURS["normal"] if low <= value <= high else STATUS_COLOURS["outside"]
        parts.append(
            f'<circle class="visit-point" cx="{x(index):.1f}" cy="{y(value):.1f}" r="3.5" fill="{colour}">'
            f"<title>{escape(name)}: {value:.1f}</title></circle>"
        )
    parts.append("</svg>")
    return "".join(parts)
