"""The figures behind docs/measures.md's "No band narrower than our own noise" and "Grades on the test
photos" tables, printed as Markdown rows so that they can be re-measured after a change to the pose stage,
the measures or the bands.

    PYTHONPATH=. .venv/bin/python bench/grades_table.py [--skip-noise]

1. Noise: each real pair and the drawn set, as photographed, mirrored and halved (pose stage with the
   production settings: default landmark model, flip testing), and the re-shot pairs; per measure the worst
   disagreement in degrees (after mirroring's sign flips and leg swap) beside its narrowest severity band.
2. Grades: the production pipeline (`Analyzer`, default config) on the same sets: grade (score) per view and
   the findings, most severe first.

Reads the photos from ../shared/testdata at run time; writes nothing.
"""

from __future__ import annotations

import argparse
import base64
import sys
from pathlib import Path

import cv2
import numpy as np

from daemon import pose, severity
from daemon.config import load_config
from daemon.measures import front_measures, side_measures
from daemon.pipeline import Analyzer
from daemon.request import parse_request
from engines.backends import open_backend
from engines.models import model_paths

PHOTOS = Path(__file__).resolve().parent.parent / ".." / "shared" / "testdata" / "photos"
PAIRS = ("fitlens_p1", "fitlens_p2", "fitlens_p3", "fitlens_p4", "fitlens_p5", "fitlens_p5b", "fiton_p1a", "fiton_p1b")
SETS = {pair: (f"front/{pair}_front.jpg", f"side/{pair}_side.jpg") for pair in PAIRS}
SETS["pranjal"] = ("synthetic/pranjal_front.png", "synthetic/pranjal_left.png")
RESHOT = (("fitlens_p5", "fitlens_p5b"), ("fiton_p1a", "fiton_p1b"))
LEFT_RIGHT = {"far_head_bal", "far_pelvic_bal", "far_shoulder_bal", "far_knee_bal", "far_tilt"}
LEG_SWAP = {"far_left_qang": "far_right_qang", "far_right_qang": "far_left_qang"}


def _read(relative: str) -> np.ndarray:
    image = cv2.imread(str(PHOTOS / relative), cv2.IMREAD_COLOR)
    if image is None:
        sys.exit(f"missing test photo: {PHOTOS / relative}")
    return image


def _values(backend, front: np.ndarray, side: np.ndarray) -> dict[str, float | None]:
    f = pose.estimate(backend, np.ascontiguousarray(front), flip_test=True).main
    s = pose.estimate(backend, np.ascontiguousarray(side), flip_test=True).main
    return {name: m.value for name, m in {**front_measures(f), **side_measures(s)}.items()}


def _narrowest_band(name: str) -> float:
    bands = severity.SEVERITY_BANDS[name]
    return min(abs(edges[i + 1] - edges[i]) for edges in (bands.low, bands.high) for i in range(2))


def noise_rows(config) -> list[str]:
    paths = model_paths(config.models.dir, config.models.landmark)
    backend = open_backend({"detector": paths["detector"], "landmark": paths["landmark"]}, config.engine)
    try:
        values = {}
        for name, (front_file, side_file) in SETS.items():
            front, side = _read(front_file), _read(side_file)
            half = [cv2.resize(im, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA) for im in (front, side)]
            values[name] = {
                "orig": _values(backend, front, side),
                "mirror": _values(backend, front[:, ::-1], side[:, ::-1]),
                "half": _values(backend, *half),
            }
    finally:
        backend.close()
    rows = []
    for measure in severity.SEVERITY_BANDS:
        mirror = half = 0.0
        for by_variant in values.values():
            orig = by_variant["orig"][measure]
            if orig is None:
                continue
            mirrored = by_variant["mirror"][LEG_SWAP.get(measure, measure)]
            if mirrored is not None:
                mirror = max(mirror, abs((-mirrored if measure in LEFT_RIGHT else mirrored) - orig))
            if by_variant["half"][measure] is not None:
                half = max(half, abs(by_variant["half"][measure] - orig))
        reshot = []
        for first, second in RESHOT:
            a, b = values[first]["orig"][measure], values[second]["orig"][measure]
            reshot.append("n/a" if a is None or b is None else f"{abs(a - b):.2f}")
        rows.append(f"| `{measure}` | {mirror:.2f} | {half:.2f} | {' | '.join(reshot)} | {_narrowest_band(measure):.1f} |")
    return rows


def grade_rows(config) -> list[str]:
    analyzer = Analyzer(config)
    rows = []
    try:
        for name, (front_file, side_file) in SETS.items():
            payload = {
                "id": "bench@example.com", "uuid": f"grades-{name}",
                "forigimg": base64.b64encode((PHOTOS / front_file).read_bytes()).decode(),
                "sorigimg": base64.b64encode((PHOTOS / side_file).read_bytes()).decode(),
            }
            answer = analyzer.analyze(parse_request(payload))
            described = []
            for view in ("front", "side"):
                items = [f"{f['measure']} {f['value']:.1f} {f['severity']}" for f in answer["findings"][view]]
                items += [f"{m} not measurable" for m in answer["unmeasured"][view]]
                described.append(", ".join(items) or "none")
            rows.append(
                f"| `{name}` | {answer['far_grade']} ({answer['score']['front']}) | "
                f"{answer['sar_grade']} ({answer['score']['side']}) | {'; '.join(described)} |"
            )
    finally:
        analyzer.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skip-noise", action="store_true", help="only the pipeline's grades")
    args = parser.parse_args()
    config = load_config()
    if not args.skip_noise:
        print("| measure | mirror | halving | re-shot p5/p5b | re-shot fiton p1a/p1b | narrowest band |")
        print("|---|---|---|---|---|---|")
        print("\n".join(noise_rows(config)))
        print()
    print("| set | front | side | findings (front; side) |")
    print("|---|---|---|---|")
    print("\n".join(grade_rows(config)))


if __name__ == "__main__":
    main()
