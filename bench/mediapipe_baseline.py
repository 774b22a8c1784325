"""MediaPipe 0.10.21's own runtime on a front/side pair: the baseline of issue 7.

Runs INSIDE the benchmark-only venv (bench/mediapipe_env.py builds it); imports nothing from the daemon.
What it times per pair, sequentially, as a developer would write it with `mediapipe.solutions.pose`:
decode the front JPEG (cv2.imdecode of the file's bytes, already read into memory), BGR->RGB,
`Pose(static_image_mode=True, model_complexity=2).process(rgb)`, then the same for the side photo.
One Pose object is built once and reused (static image mode runs the detector on every call).

One-shot:      python bench/mediapipe_baseline.py --pair 12mp:F.jpg:S.jpg [--pair ...] --runs 20 --warmup 2
               -> one JSON object on stdout: per pair median/p95/mean ms, decode and process medians.
Interleaved:   add --serve: after loading, prints {"ready": ...}; then each stdin line "NAME COUNT" times
               COUNT pairs of that name and answers one JSON line {"pair": NAME, "ms": [...], ...};
               "quit" or EOF ends it. compare.py uses this to alternate with the daemon under the same load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time


def percentile(values, q):
    """Linear-interpolated percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return float(ordered[0])
    position = (len(ordered) - 1) * q / 100.0
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (position - low))


def summary(values):
    return {
        "n": len(values),
        "median_ms": statistics.median(values),
        "p95_ms": percentile(values, 95),
        "mean_ms": statistics.fmean(values),
        "min_ms": min(values),
    }


class Baseline:
    def __init__(self, complexity: int = 2):
        import cv2
        import mediapipe as mp
        import numpy as np

        self.cv2, self.np, self.mp = cv2, np, mp
        self.pose = mp.solutions.pose.Pose(
            static_image_mode=True, model_complexity=complexity, enable_segmentation=False
        )
        self.pairs: dict[str, tuple[bytes, bytes]] = {}

    def add_pair(self, name: str, front_path: str, side_path: str) -> None:
        with open(front_path, "rb") as f, open(side_path, "rb") as s:
            self.pairs[name] = (f.read(), s.read())

    def one_photo(self, data: bytes):
        cv2 = self.cv2
        start = time.perf_counter()
        bgr = cv2.imdecode(self.np.frombuffer(data, self.np.uint8), cv2.IMREAD_COLOR)
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        decoded = time.perf_counter()
        result = self.pose.process(rgb)
        done = time.perf_counter()
        return (decoded - start) * 1000, (done - decoded) * 1000, result.pose_landmarks is not None

    def one_pair(self, name: str):
        front, side = self.pairs[name]
        start = time.perf_counter()
        front_decode, front_process, front_found = self.one_photo(front)
        side_decode, side_process, side_found = self.one_photo(side)
        total = (time.perf_counter() - start) * 1000
        return total, front_decode + side_decode, front_process + side_process, front_found and side_found

    def time_pairs(self, name: str, count: int) -> dict:
        totals, decodes, processes, found = [], [], [], True
        for _ in range(count):
            total, decode, process, ok = self.one_pair(name)
            totals.append(total)
            decodes.append(decode)
            processes.append(process)
            found = found and ok
        return {"pair": name, "ms": totals, "decode_ms": decodes, "process_ms": processes, "pose_found": found}

    def close(self) -> None:
        self.pose.close()


def _versions(baseline: Baseline) -> dict:
    return {
        "mediapipe": baseline.mp.__version__,
        "numpy": baseline.np.__version__,
        "opencv": baseline.cv2.__version__,
        "python": sys.version.split()[0],
        "pid": os.getpid(),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pair", action="append", required=True, metavar="NAME:FRONT:SIDE",
                        help="a named front/side pair of image files (repeatable)")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2, help="untimed pairs first, for each pair")
    parser.add_argument("--complexity", type=int, default=2, choices=(0, 1, 2))
    parser.add_argument("--serve", action="store_true", help="line protocol on stdin (see the module doc)")
    args = parser.parse_args(argv)

    baseline = Baseline(args.complexity)
    for spec in args.pair:
        name, front, side = spec.split(":", 2)
        baseline.add_pair(name, front, side)
    found = {}
    for name in baseline.pairs:
        for _ in range(max(1, args.warmup)):
            found[name] = baseline.one_pair(name)[3]
    info = {**_versions(baseline), "model_complexity": args.complexity, "pose_found": found}

    if args.serve:
        print(json.dumps({"ready": info}), flush=True)
        for line in sys.stdin:
            words = line.split()
            if not words:
                continue
            if words[0] == "quit":
                break
            try:
                name, count = words[0], int(words[1]) if len(words) > 1 else 1
                print(json.dumps(baseline.time_pairs(name, count)), flush=True)
            except Exception as exc:  # noqa: BLE001 - the caller reads the error
                print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
        baseline.close()
        return 0

    out = {"baseline": info, "runs": args.runs, "pairs": {}}
    for name in baseline.pairs:
        timed = baseline.time_pairs(name, args.runs)
        out["pairs"][name] = {
            **summary(timed["ms"]),
            "decode_median_ms": statistics.median(timed["decode_ms"]),
            "process_median_ms": statistics.median(timed["process_ms"]),
            "pose_found": timed["pose_found"],
        }
    baseline.close()
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
