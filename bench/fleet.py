"""Throughput of a fleet of 1, 2, 3 daemons behind one broker (issue 13).

    .venv/bin/python bench/fleet.py                  # 1, 2 and 3 daemons, 60 requests each
    .venv/bin/python bench/fleet.py --sizes 1 3 --requests 30 --json fleet.json

Each size: N `skeletond serve` processes in one shared subscription group on the broker (default the
local Mosquitto, 127.0.0.1:1883, under a fresh topic prefix), the lite landmark model without flip test
(as in tests/test_fleet.py, to keep the shared machine usable); a warm-up of 2 requests per daemon, then
a burst of --requests published at once by the reference kiosk client. Prints pairs/s (first publish to
last answer), p50/p95 latency and how the requests were spread (each daemon's `served` count).

On a machine with C cores, N daemons cannot go past about C times one daemon: the figure shows that the
work is spread; docs/fleet.md turns per-device figures into a capacity plan.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from fleet_harness import Fleet, photo_pairs, wait_until

from daemon.fleet.client import KioskClient, request_payload


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def run_size(size: int, requests: int, host: str, port: int, workdir: Path) -> dict:
    pairs = photo_pairs()

    def payloads(count: int, tag: str) -> list[dict]:
        return [request_payload(*pairs[i % len(pairs)], user_id="bench@example.com",
                                uuid=f"{tag}-{i:04d}-{os.urandom(3).hex()}") for i in range(count)]

    with Fleet(workdir / f"n{size}", host, port, size=size, queue_size=4) as fleet:
        with KioskClient(fleet.url, fleet.prefix) as client:
            client.request_many(payloads(2 * size, "warm"), timeout_s=120, attempts=1)
            wait_until(lambda: sum(int(fleet.observer.latest_status(d.daemon_id).get("served", 0))
                                   for d in fleet.daemons) >= 2 * size, 15, "the warm-up in the statuses")
            before = {d.daemon_id: int(fleet.observer.latest_status(d.daemon_id).get("served", 0))
                      for d in fleet.daemons}
            started = time.monotonic()
            outcomes = client.request_many(payloads(requests, "burst"), timeout_s=300, attempts=1)
            wall_s = time.monotonic() - started
        failed = [o.error for o in outcomes.values() if not o.ok]
        if failed:
            raise RuntimeError(f"{len(failed)} requests failed: {failed[:3]}")
        total_before = sum(before.values())
        wait_until(lambda: sum(int(fleet.observer.latest_status(d.daemon_id).get("served", 0))
                               for d in fleet.daemons) >= total_before + requests, 15, "the final statuses")
        spread = [int(fleet.observer.latest_status(d.daemon_id).get("served", 0)) - before[d.daemon_id]
                  for d in fleet.daemons]
    latencies = [o.elapsed_s for o in outcomes.values()]
    return {
        "daemons": size,
        "requests": requests,
        "wall_s": round(wall_s, 2),
        "pairs_per_s": round(requests / wall_s, 2),
        "p50_s": round(percentile(latencies, 0.5), 2),
        "p95_s": round(percentile(latencies, 0.95), 2),
        "spread": spread,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--broker", default="127.0.0.1:1883", help="host:port of a broker with shared subscriptions")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    host, _, port = args.broker.partition(":")
    machine = {"cpu": cpu_model(), "cores": os.cpu_count(), "load_1min": round(os.getloadavg()[0], 2)}
    print(f"machine: {machine['cpu']}, {machine['cores']} cores, load {machine['load_1min']} at start", flush=True)
    print("settings: lite landmark model, no flip test, annotated photos at 320 px, 4 real 1200x1600-class pairs")
    rows = []
    with tempfile.TemporaryDirectory(prefix="skeleton-fleet-bench-") as tmp:
        for size in args.sizes:
            row = run_size(size, args.requests, host, int(port or 1883), Path(tmp))
            rows.append(row)
            print(f"{size} daemon(s): {row['pairs_per_s']:6.2f} pairs/s  ({row['requests']} in {row['wall_s']} s; "
                  f"p50 {row['p50_s']} s, p95 {row['p95_s']} s; spread {row['spread']})", flush=True)
    base = rows[0]["pairs_per_s"]
    for row in rows:
        row["speedup"] = round(row["pairs_per_s"] / base, 2)
    print("\n| daemons | pairs/s | x one daemon | p50 s | p95 s | requests per daemon |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['daemons']} | {row['pairs_per_s']} | {row['speedup']} | {row['p50_s']} | {row['p95_s']} | "
              f"{' / '.join(map(str, row['spread']))} |")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
