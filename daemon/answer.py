"""The skeleton-v2 answer: every seed field with the seed's exact type, plus documented extras.

The only place where degrees become the seed's `_m_` integers (thousandths of a degree) and where
arrays become JSON text.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

import numpy as np
import orjson

from daemon import grades, severity
from daemon.layouts import hidden_in_side_view, layout22, layout42
from daemon.measures import Measure
from daemon.views import PhotoPoses

SOFTWARE_VERSION = "0.1.0"
# Bump when a measure's definition changes, so clients comparing visits can tell (docs/measures.md).
MEASURES_VERSION = "3"  # 3: severity bands, findings, scores; grades from severities

FRONT_MEASURE_FIELDS = (
    "far_head_bal", "far_pelvic_bal", "far_shoulder_bal", "far_left_qang", "far_right_qang", "far_knee_bal",
    "far_tilt",
)
SIDE_MEASURE_FIELDS = ("turtle_neck", "round_shoulder", "sar_tilt", "sar_head_tilt")


@dataclass
class ViewResult:
    """Everything answer-worthy about one photo."""

    poses: PhotoPoses
    head_top_px: np.ndarray  # (2,) of the main subject
    points3d_mm: np.ndarray  # (22, 3) of the main subject, camera frame
    camera: dict  # which intrinsics and depth source made the 3D points
    annotated_jpeg_b64: str
    annotated_scale: float


def answer_json(answer: dict) -> bytes:
    """The one serialisation of an answer: HTTP, MQTT, the result store and the CLI all use these bytes."""
    return orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)


def millidegrees(measure: Measure | None) -> int:
    """The seed's int: thousandths of a degree; 0 when not measurable (decisions.md)."""
    if measure is None or measure.value is None:
        return 0
    return round(measure.value * 1000.0)


def _points(array: np.ndarray, digits: int = 2) -> list[list[float]]:
    return [[round(float(v), digits) for v in row] for row in array]


def coords_text(points22: np.ndarray) -> str:
    """far_coords / sar_coords: JSON text of 22 [x, y] integer pixels, as the seed sends it."""
    # json's default separators give the seed's own spacing: "[[1152, 1085], [1162, 1371], ...]".
    return json.dumps([[round(float(x)), round(float(y))] for x, y in points22])


def _layouts22(view: ViewResult) -> list[np.ndarray]:
    """(22, 2) points of each person in the photo, main subject first."""
    return [
        layout22(person, head_top=view.head_top_px if index == 0 else None)
        for index, person in enumerate(view.poses.people)
    ]


def build_answer(
    *,
    uuid: str,
    front: ViewResult,
    side: ViewResult,
    front_measures: dict[str, Measure],
    side_measures: dict[str, Measure],
    far_grade: str,
    sar_grade: str,
    side_part: float,
    sar_fwd_head: int,
    message: list[str],
    model_versions: dict[str, str],
    created_at: dt.datetime | None = None,
) -> dict:
    # The 22-point layout of every person, once; the main subject's head top is already known.
    front22 = _layouts22(front)
    side22 = _layouts22(side)
    far22, sar22 = front22[0], side22[0]

    pose2ds3 = []
    for person, points in zip(side.poses.people, side22):
        points = points[:17].astype(np.float64)
        points[hidden_in_side_view(person)[:17]] = -1.0
        pose2ds3.append(_points(points))

    answer: dict = {
        "uuid": uuid,
        "state": 0,
        "command": "keypoint",
        "data": {"state": 0},
        "forigimg": front.annotated_jpeg_b64,
        "sorigimg": side.annotated_jpeg_b64,
        "far_coords": coords_text(far22),
        "sar_coords": coords_text(sar22),
        "far_grade": far_grade,
        "sar_grade": sar_grade,
        "side_part": float(round(side_part, 3)),
        "sar_fwd_head": int(sar_fwd_head),
        "far_coords3D": _points(front.points3d_mm, 1),
        "sar_coords3D": _points(side.points3d_mm, 1),
    }
    for name in FRONT_MEASURE_FIELDS:
        answer[f"{name}_m_"] = millidegrees(front_measures.get(name))
    for name in SIDE_MEASURE_FIELDS:
        answer[f"{name}_m_"] = millidegrees(side_measures.get(name))
    answer.update({
        "pose2df1": [_points(layout42(person)) for person in front.poses.people],
        "pose2df2": [_points(points[:17]) for points in front22],
        "pose2ds3": pose2ds3,
        "box1": [[round(float(v), 1) for v in person.box] for person in front.poses.people],
        "box2": [[round(float(v), 1) for v in person.box] for person in side.poses.people],
        "message": message,
        # Extras (decisions.md): per-measure detail, versions, time, the annotated photos' scale.
        "measures": {
            name: {**m.to_dict(), "severity": severity.severity(m)}
            for name, m in {**front_measures, **side_measures}.items()
        },
        # What a report leads with (docs/measures.md, "Findings and score"): findings most severe first,
        # a 0-100 score per view, and the measures that could not be taken.
        "findings": {"front": severity.findings(front_measures), "side": severity.findings(side_measures)},
        "score": {"front": grades.score(front_measures), "side": grades.score(side_measures)},
        "unmeasured": {"front": severity.unmeasured(front_measures), "side": severity.unmeasured(side_measures)},
        "annotated_scale": {"front": round(front.annotated_scale, 6), "side": round(side.annotated_scale, 6)},
        "camera": {"front": front.camera, "side": side.camera},
        "version": {"software": SOFTWARE_VERSION, "measures": MEASURES_VERSION, "models": model_versions},
        "created_at": (created_at or dt.datetime.now(dt.timezone.utc)).isoformat(timespec="seconds"),
    })
    return answer
