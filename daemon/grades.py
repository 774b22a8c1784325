"""A-D grade and 0-100 posture score of one view, from the severities of its findings (daemon/severity.py).

Rule (docs/measures.md, "Grades"): D = any severe finding; C = any moderate finding, or two or more mild
findings in one body region (the two legs' angles count as one finding); B = mild findings only; A = every
measure taken is normal. Measures that could not be taken are named in the answer and do not count. With
no measure taken at all there is nothing to grade well: D, no score, and the answer's message says why.

Score: 100 minus SCORE_PENALTY per finding, held inside the grade's span (GRADE_SCORE_SPANS) so that
the score and the letter never disagree; None when nothing was measured.
"""

from __future__ import annotations

from collections import defaultdict

from daemon import severity
from daemon.measures import Measure

GRADE_NONE_MEASURED = "D"
# Several mild findings in one region outrank a single one: this many make a C.
MILD_IN_ONE_REGION_FOR_C = 2
SCORE_PENALTY = {"normal": 0, "mild": 8, "moderate": 20, "severe": 40}
GRADE_SCORE_SPANS = {"A": (90, 100), "B": (70, 89), "C": (40, 69), "D": (0, 39)}


def _levels(measures: dict[str, Measure]) -> dict[str, str]:
    return {name: severity.severity(m) for name, m in measures.items() if m.value is not None}


def grade(measures: dict[str, Measure]) -> str:
    """The view's grade, "A" (every measure taken is normal) to "D" (a severe finding)."""
    levels = _levels(measures)
    if not levels:
        return GRADE_NONE_MEASURED
    worst = max(severity.RANK[level] for level in levels.values())
    if worst == severity.RANK["severe"]:
        return "D"
    if worst == severity.RANK["moderate"]:
        return "C"
    mild_by_region: dict[str, set[str]] = defaultdict(set)
    for name, level in levels.items():
        if level == "mild":
            mild_by_region[severity.REGIONS[name]].add(severity.FINDING_GROUPS.get(name, name))
    if any(len(groups) >= MILD_IN_ONE_REGION_FOR_C for groups in mild_by_region.values()):
        return "C"
    return "B" if worst == severity.RANK["mild"] else "A"


def score(measures: dict[str, Measure]) -> int | None:
    """0-100 posture score of the view; None when no measure was taken."""
    levels = _levels(measures)
    if not levels:
        return None
    raw = 100 - sum(SCORE_PENALTY[level] for level in levels.values())
    low, high = GRADE_SCORE_SPANS[grade(measures)]
    return int(min(max(raw, low), high))
