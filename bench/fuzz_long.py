"""The long fuzzing run: tests/test_fuzz.py with a large hypothesis budget; prints cases, failures, time.

    .venv/bin/python bench/fuzz_long.py                   # 2000 examples per property (~25 min, 2 cores)
    .venv/bin/python bench/fuzz_long.py --examples 300    # a shorter one

The normal test run (CI) uses 40 examples per property. Here the examples are not derandomized: each
run explores new inputs. A failure prints hypothesis' minimal failing example; the exit code is pytest's.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=2000, help="hypothesis examples per property")
    parser.add_argument("--hang-s", type=float, default=30.0, help="one call running longer is a hang")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "fuzz.json"
        env = {**os.environ, "SKELETON_FUZZ_EXAMPLES": str(args.examples), "SKELETON_FUZZ_REPORT": str(report),
               "SKELETON_FUZZ_HANG_S": str(args.hang_s), "PYTHONPATH": str(REPO)}
        started = time.monotonic()
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore::UserWarning",
             "tests/test_fuzz.py"], check=False, cwd=REPO, env=env, capture_output=True, text=True,
        )
        seconds = time.monotonic() - started
        counts = json.loads(report.read_text()) if report.exists() else {}
    tail = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else ""
    failed = int(m.group(1)) if (m := re.search(r"(\d+) failed", tail)) else 0
    passed = int(m.group(1)) if (m := re.search(r"(\d+) passed", tail)) else 0
    figures = {
        "examples_per_property": args.examples, "properties_passed": passed, "properties_failed": failed,
        "parse_cases": counts.get("parse_cases", 0), "parse_refused": counts.get("parse_refused", 0),
        "decode_cases": counts.get("decode_cases", 0), "decode_refused": counts.get("decode_refused", 0),
        "slowest_call_ms": counts.get("slowest_ms", 0), "seconds": round(seconds, 1),
    }
    if failed:
        print(run.stdout[-6000:])
    print(f"fuzzing: {figures['parse_cases']} parser cases ({figures['parse_refused']} refused in the seed's "
          f"error shape, the rest parsed), {figures['decode_cases']} decoder cases ({figures['decode_refused']} "
          f"refused, the rest decoded); {failed} failing properties of {failed + passed}; slowest call "
          f"{figures['slowest_call_ms']} ms; {seconds:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return run.returncode


if __name__ == "__main__":
    raise SystemExit(main())
