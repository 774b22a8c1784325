"""The long contract run: the schemathesis CLI, every phase, against `skeletond serve` (real analyzer).

    .venv/bin/python bench/contract_long.py                    # 500 examples per operation and mode
    .venv/bin/python bench/contract_long.py --max-examples 50  # shorter

Starts the daemon on a free port with a bearer token (so 401 is reachable), a result store in a
temporary folder and a small body limit, then runs `schemathesis run <url>/openapi.json` with every
check except `positive_data_acceptance` (a schema cannot say "a decodable photo of a standing person":
schema-valid random base64 is rightly refused with 400). Prints schemathesis' summary and one line of
figures (operations, cases, failures, time); the exit code is schemathesis'. The normal test run
(tests/test_contract.py) does the same with a small budget through schemathesis' Python API.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TOKEN = "contract-long-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-examples", type=int, default=500, help="per operation and generation mode")
    parser.add_argument("--seed", type=int, help="schemathesis seed (default: a new one each run)")
    args = parser.parse_args()
    schemathesis = Path(sys.executable).parent / "schemathesis"
    with tempfile.TemporaryDirectory(prefix="skeleton-contract-") as tmp:
        port = free_port()
        env = {**os.environ, "PYTHONPATH": str(REPO), "SKELETON_HTTP_TOKEN": TOKEN,
               "SKELETON_STORE_PATH": str(Path(tmp) / "results.sqlite3"),
               "SKELETON_HTTP_MAX_BODY_BYTES": "2000000"}
        env.pop("SKELETON_MQTT_URL", None)
        with open(Path(tmp) / "server.log", "wb") as log:
            server = subprocess.Popen(
                [sys.executable, "-m", "daemon.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
                env=env, stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO),
            )
        try:
            command = [
                str(schemathesis), "run", f"http://127.0.0.1:{port}/openapi.json", "--wait-for-schema", "300",
                "--checks", "all", "--exclude-checks", "positive_data_acceptance",
                "-H", f"Authorization: Bearer {TOKEN}", "--max-examples", str(args.max_examples),
                "--request-timeout", "120", "--workers", "1", "--no-color",
            ]
            if args.seed is not None:
                command += ["--seed", str(args.seed)]
            started = time.monotonic()
            run = subprocess.run(command, check=False, capture_output=True, text=True, cwd=tmp)
            seconds = time.monotonic() - started
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(60)
            except subprocess.TimeoutExpired:
                server.kill()
    output = run.stdout + run.stderr
    print(output[-8000:])
    cases = re.search(r"(\d+) generated", output)
    failures = re.search(r"(\d+) (?:unique )?failures?", output)
    print(f"contract: schemathesis exit {run.returncode}; {cases.group(1) if cases else '?'} cases generated; "
          f"{failures.group(1) if failures else 0} failures; {seconds:.0f} s")
    return run.returncode


if __name__ == "__main__":
    raise SystemExit(main())
