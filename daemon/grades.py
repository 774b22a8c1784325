"""A-D grade of one view from how many of its measures fall outside their normal range, and how far.

Rule (docs/measures.md): each measured value outside its range scores 1 point when it lies within one
range-width beyond the nearer limit ("mild") and 2 points beyond that ("marked"); measures that could
not be taken score nothing. Total 0 -> A, 1-2 -> B, 3-4 -> C, 5 or more -> D. With no measure taken at
all there is nothing to grade well: D, and the answer's message says why.
"""

from __future__ import annotations

from daemon.measures import Measure

GRADE_LIMITS = ((0, "A"), (2, "B"), (4, "C"))  # highest total points for each grade; above: "D"
GRADE_NONE_MEASURED = "D"


def deviation_points(measure: Measure) -> int:
    """0 inside the normal range (or not measured), 1 mildly outside, 2 markedly outside."""
    if measure.value is None:
        return 0
    low, high = measure.normal
    excess = max(low - measure.value, measure.value - high, 0.0)
    if excess == 0.0:
        return 0
    # Range width as the yardstick: a 4-degree-wide shoulder range and a 20-degree CVA range are
    # judged alike (a one-sided range such as round_shoulder's uses its own width too).
    return 1 if excess <= (high - low) else 2


def grade(measures: dict[str, Measure]) -> str:
    """The view's grade, "A" (all within range) to "D"."""
    taken = [m for m in measures.values() if m.value is not None]
    if not taken:
        return GRADE_NONE_MEASURED
    points = sum(deviation_points(m) for m in taken)
    for limit, letter in GRADE_LIMITS:
        if points <= limit:
            return letter
    return "D"


def measure_report(measures: dict[str, Measure]) -> dict[str, dict]:
    """Per measure: value, unit, normal range, status, reason, confidence and deviation points."""
    return {
        name: {**m.to_dict(), "points": deviation_points(m)} for name, m in measures.items()
    }
