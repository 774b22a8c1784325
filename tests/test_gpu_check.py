"""bench/gpu_check.sh, the one command a Jetson owner runs: without a GPU it stops at once with the reason;
its figures script runs end to end with ONNX Runtime standing in for TensorRT (a dry run)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from engines.backends import tensorrt_unavailable_reason

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_gpu_check_stops_with_the_reason_where_tensorrt_cannot_run() -> None:
    reason = tensorrt_unavailable_reason()
    if reason is None:
        pytest.skip("TensorRT can run here: bench/gpu_check.sh would run for real (minutes)")
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "bench" / "gpu_check.sh")], cwd=REPO_ROOT, capture_output=True, text=True,
        env={**os.environ, "PYTHON": sys.executable}, timeout=120, check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert f"TensorRT not usable: {reason}" in output and "=== 1. this machine" in output
    assert "=== 3." not in output  # nothing GPU-bound was tried


def test_gpu_check_live_figures_dry_run_on_onnxruntime() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "gpu_check.py"), "live", "--runs", "2", "--compare", "onnxruntime"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"live frame \(detector \+ one 256x256 landmark pass, batch 1\), onnxruntime .*: "
                     r"median \d+\.\d ms, p95 \d+\.\d ms over 2 runs", result.stdout), result.stdout
