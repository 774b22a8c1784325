"""`skeletond bench`: per-stage and end-to-end times for a front/side pair, beside the bare model time.

Prints medians over --runs after one warm-up, at the photos' own size and upscaled to --megapixels
(gym phones send 12 MP). Figures, not assertions: these machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import time
from pathlib import Path

import cv2
import numpy as np

from daemon.config import Config
from daemon.request import parse_request

DEFAULT_PAIR = ("photos/front/fitlens_p1_front.jpg", "photos/side/fitlens_p1_side.jpg")


def _default_photo(relative: str) -> Path:
    path = Path(__file__).resolve().parent.parent.parent / "shared" / "testdata" / relative
    if not path.exists():
        raise SystemExit(f"no photo given and {path} is missing: pass --front and --side")
    return path


def _upscaled_jpeg(data: bytes, megapixels: float) -> bytes:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    height, width = image.shape[:2]
    factor = (megapixels * 1e6 / (width * height)) ** 0.5
    big = cv2.resize(image, (round(width * factor), round(height * factor)), interpolation=cv2.INTER_CUBIC)
    return cv2.imencode(".jpg", big, [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes()


def _request(front: bytes, side: bytes) -> dict:
    return {
        "id": "bench@localhost", "uuid": "bench",
        "forigimg": base64.b64encode(front).decode("ascii"), "sorigimg": base64.b64encode(side).decode("ascii"),
    }


def bare_model_ms(analyzer, runs: int) -> float:
    """Median of the bare model time: detector + landmark passes of both photos, as the pipeline runs them."""
    times = []
    for index in range(runs + 1):
        start = time.perf_counter()
        analyzer.bare_model_pass()
        if index:  # the first is a warm-up
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def time_analyze(analyzer, payload: bytes | dict, runs: int) -> tuple[list[float], dict[str, list[float]]]:
    """Parse + analyze `payload` runs times after one warm-up: end-to-end ms per run, and ms per stage."""
    totals: list[float] = []
    stages: dict[str, list[float]] = {}
    for index in range(runs + 1):
        start = time.perf_counter()
        analyzer.analyze(parse_request(payload))
        elapsed = (time.perf_counter() - start) * 1000
        if index == 0:
            continue
        totals.append(elapsed)
        for stage, seconds in analyzer.last_timings.items():
            stages.setdefault(stage, []).append(seconds * 1000)
    return totals, stages


def main_bench(args: argparse.Namespace, config: Config) -> int:
    from daemon.pipeline import Analyzer

    if args.backend:
        config.engine.backend = args.backend
    front_path = Path(args.front) if args.front else _default_photo(DEFAULT_PAIR[0])
    side_path = Path(args.side) if args.side else _default_photo(DEFAULT_PAIR[1])
    front, side = front_path.read_bytes(), side_path.read_bytes()
    analyzer = Analyzer(config)
    try:
        print(f"backend: {analyzer.backend.description}; landmark model {config.models.landmark}; "
              f"flip test {config.pipeline.flip_test}; annotated max side {config.pipeline.annotated_max_side}; "
              f"{os.cpu_count()} CPUs; median of {args.runs} runs")
        bare = bare_model_ms(analyzer, args.runs)
        print(f"bare model time (detector + landmarks, both views): {bare:.1f} ms")
        pairs = [("own size", front, side)]
        if args.megapixels:
            pairs.append((f"{args.megapixels:g} MP", _upscaled_jpeg(front, args.megapixels),
                          _upscaled_jpeg(side, args.megapixels)))
        for label, front_bytes, side_bytes in pairs:
            totals, stages = time_analyze(analyzer, _request(front_bytes, side_bytes), args.runs)
            figures = {stage: statistics.median(values) for stage, values in stages.items()}
            figures["end_to_end"] = statistics.median(totals)
            shape = [cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_REDUCED_GRAYSCALE_8).shape for b in (front_bytes, side_bytes)]
            print(f"\npair at {label} (~{shape[0][1] * 8}x{shape[0][0] * 8} and ~{shape[1][1] * 8}x{shape[1][0] * 8} px):")
            for stage, ms in figures.items():
                print(f"  {stage:<12} {ms:8.1f} ms")
            print(f"  end-to-end / bare model: {figures['end_to_end'] / bare:.2f}x")
    finally:
        analyzer.close()
    return 0
