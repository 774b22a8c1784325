"""Figures for bench/gpu_check.sh on a machine with an NVIDIA GPU and TensorRT (a Jetson or a CUDA host).

    python bench/gpu_check.py parity    # TensorRT (engine.precision, fp16 by default) vs ONNX Runtime fp32
    python bench/gpu_check.py live      # one live-capture frame: detector + one landmark pass, batch 1

parity: every front/side test photo through the whole pose stage (pose.estimate) with each backend;
prints, per photo, the largest landmark difference in photo pixels and in % of the person's height, and
the largest world-landmark difference in mm. ONNX Runtime runs on the CPU, fp32: the reference.

live: what a live-capture frame costs the models once the person is tracked: the detector on one frame
plus one non-flipped landmark pass on a 256x256 crop (pose.model_passes with flip_test off), median and
p95 of --runs after warm-up, for each backend.

Figures, not assertions: send them back with the device, JetPack release and power mode.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from daemon.config import Config, load_config
from daemon.pose import estimate, model_passes
from engines.backends import open_backend
from engines.models import model_paths

TESTDATA = REPO.parent / "shared" / "testdata" / "photos"


def _backend(config: Config, name: str):
    config.engine.backend = name
    paths = model_paths(config.models.dir, config.models.landmark)
    return open_backend({"detector": paths["detector"], "landmark": paths["landmark"]}, config.engine)


def parity(config: Config, compared: str) -> int:
    photos = sorted(TESTDATA.glob("front/*.jpg")) + sorted(TESTDATA.glob("side/*.jpg"))
    if not photos:
        print(f"no test photos in {TESTDATA}")
        return 1
    reference, tensorrt = _backend(config, "onnxruntime"), _backend(config, compared)
    print(f"reference: {reference.description}\ncompared:  {tensorrt.description}")
    worst_px, worst_pct, worst_mm = 0.0, 0.0, 0.0
    try:
        for photo in photos:
            image = cv2.imread(str(photo), cv2.IMREAD_COLOR)
            want, got = estimate(reference, image), estimate(tensorrt, image)
            if not want.people or not got.people:
                print(f"  {photo.parent.name}/{photo.name}: people found: onnxruntime {len(want.people)}, "
                      f"tensorrt {len(got.people)}")
                continue
            a, b = want.main, got.main
            px = float(np.abs(a.keypoints_px - b.keypoints_px).max())
            height = float(np.ptp(a.keypoints_px[:, 1])) or 1.0
            mm = float(np.abs(a.world_m - b.world_m).max() * 1000)
            worst_px, worst_pct, worst_mm = max(worst_px, px), max(worst_pct, 100 * px / height), max(worst_mm, mm)
            print(f"  {photo.parent.name}/{photo.name}: landmarks max {px:.2f} px ({100 * px / height:.2f}% of "
                  f"the person's height), world max {mm:.1f} mm")
    finally:
        reference.close()
        tensorrt.close()
    print(f"parity, worst over {len(photos)} photos: {worst_px:.2f} px, {worst_pct:.2f}% of height, {worst_mm:.1f} mm")
    return 0


def live(config: Config, runs: int, compared: str) -> int:
    for name in dict.fromkeys((compared, "onnxruntime")):
        backend = _backend(config, name)
        try:
            times = []
            for index in range(runs + 3):
                start = time.perf_counter()
                model_passes(backend, flip_test=False)
                if index >= 3:  # warm-up
                    times.append((time.perf_counter() - start) * 1000)
            times.sort()
            p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
            print(f"live frame (detector + one 256x256 landmark pass, batch 1), {backend.description}: "
                  f"median {statistics.median(times):.1f} ms, p95 {p95:.1f} ms over {runs} runs")
        finally:
            backend.close()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("check", choices=("parity", "live"))
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--config", help="skeletond TOML configuration (default: built-in defaults)")
    parser.add_argument("--compare", default="tensorrt", choices=("tensorrt", "onnxruntime"),
                        help="the backend compared with ONNX Runtime (onnxruntime: a dry run without a GPU)")
    args = parser.parse_args()
    config = load_config(Path(args.config)) if args.config else load_config()
    if args.check == "parity":
        return parity(config, args.compare)
    return live(config, args.runs, args.compare)


if __name__ == "__main__":
    raise SystemExit(main())
