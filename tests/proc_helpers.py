"""Helpers for tests that run `skeletond serve` and brokers as real processes (tests/test_mqtt.py,
tests/fleet_harness.py). No pytest import: bench/fleet.py uses them through fleet_harness."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

# `skeletond serve`; where the console script is not installed (a bare checkout), the same entry point.
_SKELETOND = Path(sys.executable).parent / "skeletond"
SERVE = (
    [str(_SKELETOND)] if _SKELETOND.exists()
    else [sys.executable, "-c", "import sys; from daemon.cli import main; sys.exit(main(sys.argv[1:]))"]
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition, timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
