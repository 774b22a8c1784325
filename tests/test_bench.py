"""Smoke tests of bench/'s pure helpers (no server, no MediaPipe, no timing assertions)."""

from __future__ import annotations

import base64
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import compare
import mediapipe_env


def test_percentile_and_summary():
    assert compare.percentile([5.0], 95) == 5.0
    assert compare.percentile([1, 2, 3, 4, 5], 50) == 3.0
    assert compare.percentile(list(range(101)), 95) == pytest.approx(95.0)
    with pytest.raises(ValueError):
        compare.percentile([], 50)
    summary = compare.summarize([10.0, 20.0, 30.0, 40.0])
    assert summary["n"] == 4 and summary["median_ms"] == 25.0 and summary["min_ms"] == 10.0
    assert summary["p95_ms"] == pytest.approx(38.5)
    assert compare.summarize([]) is None


def test_ratio_verdict_growth_slope():
    assert compare.ratio(50.0, 100.0) == 0.5
    assert compare.ratio(None, 100.0) is None and compare.ratio(1.0, 0) is None
    assert compare.verdict(0.6, 0.6) == "PASS"
    assert compare.verdict(5.0, 5.0, strict=True) == "FAIL"
    assert compare.verdict(None, 1.0) == "n/a"
    assert compare.growth_pct(500.0, 525.0) == 5.0
    assert compare.growth_pct(None, 1.0) is None
    assert compare.slope_per_1000([(0, 100.0), (500, 101.0), (1000, 102.0)]) == pytest.approx(2.0)
    assert compare.slope_per_1000([(0, 1.0)]) is None


def test_proc_status_and_cpu_model():
    text = "Name:\tpython\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\nThreads:\t4\n"
    memory = compare.parse_proc_status(text)
    assert memory == {"VmHWM": 200.0, "VmRSS": 100.0}
    own = compare.read_memory_mb(__import__("os").getpid())
    assert own["VmRSS"] > 0
    assert compare.cpu_model("processor\t: 0\nmodel name\t: Some CPU @ 2GHz\n") == "Some CPU @ 2GHz"
    info = compare.machine_info()
    assert info["os_cpu_count"] and info["cpu_model"]


def test_request_template_uuid_and_answer_check():
    template = compare.request_template(b"\xff\xd8front", b"\xff\xd8side")
    body = compare.with_uuid(template, "abc-123")
    payload = orjson.loads(body)
    assert payload["uuid"] == "abc-123" and payload["id"]
    assert base64.b64decode(payload["forigimg"]) == b"\xff\xd8front"
    assert compare.UUID_PLACEHOLDER.encode() not in body

    photo = "A" * 2000
    good = orjson.dumps({"uuid": "u1", "state": 0, "forigimg": photo, "sorigimg": photo})
    assert compare.check_answer(good, "u1") is None
    assert "uuid" in compare.check_answer(good, "u2")
    assert "sorigimg" in compare.check_answer(orjson.dumps({"uuid": "u1", "state": 0, "forigimg": photo}), "u1")
    error = orjson.dumps({"data": {"state": -1, "errors": "server busy"}})
    assert "server busy" in compare.check_answer(error, "u1")
    assert compare.check_answer(b"<html>", "u1").startswith("not JSON")


def test_photo_shapes():
    portrait = np.zeros((160, 120, 3), np.uint8)
    assert compare.scaled_to_megapixels(portrait, 0.0768).shape[:2] == (320, 240)
    assert compare.kiosk_frame(portrait, 54, 96).shape == (96, 54, 3)
    assert compare.kiosk_frame(np.zeros((100, 400, 3), np.uint8), 54, 96).shape == (96, 54, 3)
    assert compare.with_grain(portrait, 0) is portrait
    noisy = compare.with_grain(portrait, 4.0)
    assert noisy.shape == portrait.shape and noisy.dtype == np.uint8 and noisy.any()


def test_report_without_baseline_or_server():
    results = {
        "machine": {"cpu_model": "Test CPU", "os_cpu_count": 2},
        "settings": {"runs": 3, "quick": True},
        "errors": {"mediapipe": "MediapipeEnvError: no network"},
        "pair_1080p": {"http_end_to_end": {"median_ms": 30.0, "p95_ms": 33.0},
                       "bare_model": {"median_ms": 25.0, "p95_ms": 26.0}, "ratio": 1.2},
        "memory": {"after_load_mb": {"VmRSS": 400.0}, "final_mb": {"VmHWM": 450.0},
                   "run": {"requests": 10, "pairs": ["1080p"], "growth_pct": 1.0}},
    }
    verdicts = compare.evaluate(results)
    assert verdicts["ratio_12mp_vs_mediapipe"]["verdict"] == "n/a"
    assert verdicts["ratio_1080p_vs_bare_model"]["verdict"] == "PASS"
    assert verdicts["rss_peak_mb"]["verdict"] == "PASS"
    assert verdicts["rss_growth_pct"]["verdict"] == "PASS"
    report = compare.format_report(results)
    assert "MISSING" in report and "Test CPU" in report and "1.200" in report


def test_mediapipe_env_helpers(tmp_path):
    sample = tmp_path / "x.bin"
    sample.write_bytes(b"abc")
    assert mediapipe_env.sha256_of(sample) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert mediapipe_env._ready({"mediapipe": "0.10.21", "numpy": "1.26.4"})
    assert not mediapipe_env._ready({"mediapipe": "0.10.21", "numpy": "2.0.0"})
    assert not mediapipe_env._ready(None)
    assert mediapipe_env.describe(tmp_path / "no-venv") is None
    with pytest.raises(mediapipe_env.MediapipeEnvError, match="sha256"):
        mediapipe_env._install_heavy({"pose_landmark_dir": str(tmp_path)}, sample, log=lambda _: None)


def test_cpu_features_name_the_onnxruntime_kernels():
    """The benchmark prints which int8 / fp32 kernel family the CPU's flags select in ONNX Runtime."""
    from compare import onnxruntime_kernels

    vnni = onnxruntime_kernels({"avx2", "fma", "avx512f", "avx512bw", "avx512_vnni"})
    assert vnni == {"fp32": "AVX512F", "int8": "AVX512-VNNI"}
    amx = onnxruntime_kernels({"avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "amx_int8", "amx_tile"})
    assert amx["int8"].startswith("AMX") and "AVX512-VNNI" in amx["int8"]
    assert onnxruntime_kernels({"avx2", "fma"})["int8"].startswith("AVX2")
