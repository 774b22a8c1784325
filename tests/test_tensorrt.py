"""TensorRT backend: cache keys, manifests, shapes and backend choice without a GPU; parity on one."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import subprocess
import sys
import threading
import types
from pathlib import Path

import numpy as np
import onnx
import pytest
from fake_tensorrt import make_fakes
from gpu import needs_gpu
from onnx import TensorProto, helper, numpy_helper

import engines.tensorrt as trt_backend
from daemon.config import Config, EngineConfig
from engines import backends as select
from engines.base import ModelSpec, TensorSpec
from engines.cli_engines import build_engines, clear_engines, list_engines
from engines.engine_cache import (
    buffer_layout,
    build_plan,
    engine_cache_key,
    engine_path,
    key_fields,
    manifest_path,
    model_max_batch,
    new_manifest,
    profile_shapes,
    read_manifest,
    rebuild_reason,
    timing_cache_path,
    write_manifest,
)
from engines.onnx_spec import read_model_spec

REPO_ROOT = Path(__file__).resolve().parent.parent
RNG = np.random.default_rng(7)
W_LANDMARKS = RNG.standard_normal((3, 195)).astype(np.float32)
W_FLAG = RNG.standard_normal((3, 1)).astype(np.float32)
W_WORLD = RNG.standard_normal((3, 117)).astype(np.float32)


def make_landmark_like_onnx(path: Path, batch: int | str = "batch", initializers_as_inputs: bool = False) -> Path:
    """A tiny model with the landmark model's I/O names and shapes (input [batch,256,256,3])."""
    x = helper.make_tensor_value_info("input_1", TensorProto.FLOAT, [batch, 256, 256, 3])
    outputs = [
        helper.make_tensor_value_info("Identity", TensorProto.FLOAT, [batch, 195]),
        helper.make_tensor_value_info("Identity_1", TensorProto.FLOAT, [batch, 1]),
        helper.make_tensor_value_info("Identity_4", TensorProto.FLOAT, [batch, 117]),
    ]
    weights = [
        numpy_helper.from_array(W_LANDMARKS, "w_landmarks"),
        numpy_helper.from_array(W_FLAG, "w_flag"),
        numpy_helper.from_array(W_WORLD, "w_world"),
    ]
    nodes = [
        helper.make_node("ReduceMean", ["input_1"], ["mean"], axes=[1, 2], keepdims=0),
        helper.make_node("MatMul", ["mean", "w_landmarks"], ["Identity"]),
        helper.make_node("MatMul", ["mean", "w_flag"], ["flag_logit"]),
        helper.make_node("Sigmoid", ["flag_logit"], ["Identity_1"]),
        helper.make_node("MatMul", ["mean", "w_world"], ["Identity_4"]),
    ]
    inputs = [x]
    if initializers_as_inputs:
        inputs += [helper.make_tensor_value_info(w.name, TensorProto.FLOAT, list(w.dims)) for w in weights]
    graph = helper.make_graph(nodes, "landmark_like", inputs, outputs, initializer=weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def expected_outputs(x: np.ndarray) -> dict[str, np.ndarray]:
    mean = x.mean(axis=(1, 2))
    return {
        "Identity": mean @ W_LANDMARKS,
        "Identity_1": 1 / (1 + np.exp(-(mean @ W_FLAG))),
        "Identity_4": mean @ W_WORLD,
    }


@pytest.fixture
def landmark_onnx(tmp_path: Path) -> Path:
    return make_landmark_like_onnx(tmp_path / "pose_landmark_tiny.onnx")


KEY_BASE = {
    "onnx_sha256": "a" * 64,
    "tensorrt_version": "10.3.0",
    "gpu_name": "Orin",
    "compute_capability": "8.7",
    "precision": "fp16",
    "profile": {"input_1": ((1, 256, 256, 3), (2, 256, 256, 3), (4, 256, 256, 3))},
}


# --- ONNX I/O, profiles, buffers ----------------------------------------------------------------------


def test_read_model_spec_reads_io_and_skips_initializers(tmp_path: Path) -> None:
    path = make_landmark_like_onnx(tmp_path / "m.onnx", initializers_as_inputs=True)
    spec = read_model_spec(path, name="landmark")
    assert spec.name == "landmark"
    assert spec.inputs == (TensorSpec("input_1", ("batch", 256, 256, 3), "float32"),)
    assert [(o.name, o.shape) for o in spec.outputs] == [
        ("Identity", ("batch", 195)),
        ("Identity_1", ("batch", 1)),
        ("Identity_4", ("batch", 117)),
    ]
    assert read_model_spec(path).name == "m"


def test_profile_shapes_cover_batch_one_to_max(landmark_onnx: Path) -> None:
    spec = read_model_spec(landmark_onnx)
    assert profile_shapes(spec, 4) == {"input_1": ((1, 256, 256, 3), (2, 256, 256, 3), (4, 256, 256, 3))}
    assert profile_shapes(spec, 1) == {"input_1": ((1, 256, 256, 3), (1, 256, 256, 3), (1, 256, 256, 3))}
    with pytest.raises(ValueError):
        profile_shapes(spec, 0)


def test_profile_of_a_fixed_batch_model_is_its_own_shape(tmp_path: Path) -> None:
    """The converted landmark model has a fixed batch of 1 until its Reshape is patched."""
    spec = read_model_spec(make_landmark_like_onnx(tmp_path / "static.onnx", batch=1))
    assert profile_shapes(spec, 4) == {"input_1": ((1, 256, 256, 3),) * 3}
    assert model_max_batch(spec, 4) == 1
    assert model_max_batch(read_model_spec(make_landmark_like_onnx(tmp_path / "dyn.onnx")), 4) == 4


def test_profile_refuses_dynamic_non_batch_dimension(tmp_path: Path) -> None:
    spec = ModelSpec("odd", tmp_path / "odd.onnx", (TensorSpec("x", ("batch", "height", 3)),), ())
    with pytest.raises(ValueError, match="height"):
        profile_shapes(spec, 4)


def test_buffer_layout_from_onnx_io(landmark_onnx: Path) -> None:
    layout = buffer_layout(read_model_spec(landmark_onnx), 4)
    assert {name: (t.shape, t.nbytes, t.is_input) for name, t in layout.items()} == {
        "input_1": ((4, 256, 256, 3), 4 * 256 * 256 * 3 * 4, True),
        "Identity": ((4, 195), 4 * 195 * 4, False),
        "Identity_1": ((4, 1), 4 * 4, False),
        "Identity_4": ((4, 117), 4 * 117 * 4, False),
    }
    assert buffer_layout(read_model_spec(landmark_onnx), 1)["input_1"].nbytes == 256 * 256 * 3 * 4


# --- cache key and manifest ---------------------------------------------------------------------------


def test_cache_key_changes_with_each_input() -> None:
    base = engine_cache_key(**KEY_BASE)
    assert base == engine_cache_key(**KEY_BASE)
    changed = {
        "onnx_sha256": "b" * 64,
        "tensorrt_version": "8.6.2",
        "gpu_name": "Xavier",
        "compute_capability": "7.2",
        "precision": "fp32",
        "profile": {"input_1": ((1, 256, 256, 3), (2, 256, 256, 3), (2, 256, 256, 3))},
    }
    keys = {base}
    for name, value in changed.items():
        key = engine_cache_key(**{**KEY_BASE, name: value})
        assert key not in keys, f"key did not change with {name}"
        keys.add(key)


def _cached_engine(tmp_path: Path, fields: dict, data: bytes = b"serialized engine bytes") -> Path:
    engine_file = engine_path(tmp_path, "pose_landmark_tiny", "fp16")
    engine_file.write_bytes(data)
    write_manifest(
        manifest_path(engine_file),
        new_manifest(
            fields=fields,
            model="landmark",
            onnx_path=tmp_path / "pose_landmark_tiny.onnx",
            engine_file=engine_file,
            engine_bytes=data,
            build_plan="fp16-flag",
            workspace_mb=1024,
            build_seconds=1.0,
        ),
    )
    return engine_file


def test_manifest_round_trip_and_match(tmp_path: Path) -> None:
    fields = key_fields(**KEY_BASE)
    engine_file = _cached_engine(tmp_path, fields)
    assert engine_file.name == "pose_landmark_tiny.fp16.engine"
    manifest = read_manifest(manifest_path(engine_file))
    assert manifest.key == engine_cache_key(**KEY_BASE)
    assert manifest.key_fields == json.loads(json.dumps(fields))
    assert rebuild_reason(engine_file, fields) is None
    assert not list(tmp_path.glob("*.tmp")), "atomic writes left temporary files"


def test_manifest_invalidated_by_changed_key_names_the_field(tmp_path: Path) -> None:
    """A TensorRT upgrade (JetPack 6.0 -> 6.1) must rebuild, and the log must say why."""
    engine_file = _cached_engine(tmp_path, key_fields(**KEY_BASE))
    upgraded = key_fields(**{**KEY_BASE, "tensorrt_version": "10.7.0"})
    reason = rebuild_reason(engine_file, upgraded)
    assert reason is not None
    assert "cache key changed" in reason and "tensorrt_version '10.3.0' -> '10.7.0'" in reason
    other_profile = key_fields(**{**KEY_BASE, "profile": {"input_1": ((1, 256, 256, 3),) * 3}})
    assert "profile" in (rebuild_reason(engine_file, other_profile) or "")


def test_rebuild_reasons_for_missing_or_damaged_files(tmp_path: Path) -> None:
    fields = key_fields(**KEY_BASE)
    missing = engine_path(tmp_path, "absent", "fp16")
    assert rebuild_reason(missing, fields) == "no engine file absent.fp16.engine"

    engine_file = _cached_engine(tmp_path, fields)
    engine_file.write_bytes(b"serialized engine BYTES")  # same size, other content
    assert "checksum" in (rebuild_reason(engine_file, fields) or "")
    engine_file.write_bytes(b"trunc")
    assert "truncated" in (rebuild_reason(engine_file, fields) or "")

    manifest_path(engine_file).write_text("{not json")
    assert "unreadable manifest" in (rebuild_reason(engine_file, fields) or "")
    manifest_path(engine_file).unlink()
    assert rebuild_reason(engine_file, fields) == "no manifest pose_landmark_tiny.fp16.engine.json"


def test_build_plan_follows_tensorrt_version() -> None:
    assert build_plan("8.6.2.3", "fp16") == "fp16-flag"  # JetPack 6.0
    assert build_plan("10.3.0", "fp16") == "fp16-flag"  # JetPack 6.1/6.2
    assert build_plan("11.0.0", "fp16") == "strongly-typed-fp16-onnx"  # no BuilderFlag.FP16
    assert build_plan("10.3.0", "fp32") == "fp32"
    with pytest.raises(ValueError, match="8.6"):
        build_plan("8.5.2", "fp16")  # JetPack 5.1's TensorRT: not checked (JetPack 5 has Python 3.8)
    assert build_plan("10.3.0", "int8") == "int8-calibration-cache"  # issue 15, unverified on a device
    with pytest.raises(ValueError, match="implicit int8"):
        build_plan("11.0.0", "int8")
    with pytest.raises(ValueError):
        build_plan("10.3.0", "bf16")


def test_timing_cache_name_says_tensorrt_and_gpu(tmp_path: Path) -> None:
    path = timing_cache_path(tmp_path, "10.3.0", "Orin (nvgpu)", "8.7")
    assert path.parent == tmp_path
    assert path.name == "timing-trt10.3.0-Orin_nvgpu-sm8.7.cache"


# --- backend choice and imports without a GPU ---------------------------------------------------------


@pytest.fixture
def without_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trt_backend, "trt", None)
    monkeypatch.setattr(trt_backend, "_TRT_IMPORT_ERROR", "module tensorrt not importable (No module named 'tensorrt')")


def test_auto_falls_back_to_onnxruntime_with_the_reason(without_tensorrt: None) -> None:
    name, reason = select.select_backend(EngineConfig(backend="auto"))
    assert name == "onnxruntime"
    assert reason.startswith("auto: TensorRT not used, missing module: module tensorrt not importable")


def _modules_present_but_cuda_fails(monkeypatch: pytest.MonkeyPatch, message: str) -> None:
    fake_trt, fake_cuda, _ = make_fakes(expected_outputs)

    def init() -> None:
        raise fake_cuda.Error(message)

    fake_cuda.init = init
    monkeypatch.setattr(trt_backend, "trt", fake_trt)
    monkeypatch.setattr(trt_backend, "cuda", fake_cuda)


def test_reason_names_a_missing_device_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _modules_present_but_cuda_fails(monkeypatch, "cuInit failed:\nno CUDA-capable device is detected")
    reason = select.tensorrt_unavailable_reason(tmp_path)  # an empty /dev
    assert reason.startswith("no device: no NVIDIA GPU device node in") and "runtime: nvidia" in reason
    (tmp_path / "nvidia0").touch(mode=0o666)
    (tmp_path / "nvidiactl").touch(mode=0o666)
    # Nodes there and usable: then the driver's own message, on one line.
    assert select.tensorrt_unavailable_reason(tmp_path) == (
        "unusable: CUDA driver not usable (cuInit failed: no CUDA-capable device is detected)"
    )


def test_auto_fallback_is_logged_once_at_warning_with_the_reason(
    without_tensorrt: None, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Opened:
        def __init__(self, model_paths: dict, config: EngineConfig) -> None:
            self.description = "stand-in"

    module = types.ModuleType("stand_in_backend")
    module.Opened = Opened  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "stand_in_backend", module)
    monkeypatch.setitem(select.BACKENDS, "onnxruntime", ("stand_in_backend", "Opened"))
    caplog.set_level(logging.INFO, logger="engines.backends")
    select.open_backend({}, EngineConfig(backend="auto"))
    (record,) = [r for r in caplog.records if r.name == "engines.backends"]
    assert record.levelno == logging.WARNING and "\n" not in record.getMessage()
    assert "onnxruntime (auto: TensorRT not used, missing module: module tensorrt not importable" in record.getMessage()


def test_auto_picks_tensorrt_when_it_can_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trt_backend, "unavailable_reason", lambda: None)
    assert select.select_backend(EngineConfig(backend="auto"))[0] == "tensorrt"


def test_explicit_backend_is_taken_as_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_probe() -> str:
        raise AssertionError("an explicit choice must not probe TensorRT")

    monkeypatch.setattr(select, "tensorrt_unavailable_reason", no_probe)
    assert select.select_backend(EngineConfig(backend="onnxruntime"))[0] == "onnxruntime"
    assert select.select_backend(EngineConfig(backend="tensorrt"))[0] == "tensorrt"
    with pytest.raises(ValueError):
        select.select_backend(EngineConfig(backend="cuda"))


def test_open_backend_imports_the_chosen_class_lazily(monkeypatch: pytest.MonkeyPatch) -> None:
    created = {}

    class FakeBackend:
        name = "onnxruntime"
        description = "fake"

        def __init__(self, model_paths: dict, config: EngineConfig) -> None:
            created["args"] = (model_paths, config)

    fake_module = types.ModuleType("fake_onnxruntime_backend")
    fake_module.FakeBackend = FakeBackend  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_onnxruntime_backend", fake_module)
    monkeypatch.setitem(select.BACKENDS, "onnxruntime", ("fake_onnxruntime_backend", "FakeBackend"))
    config = EngineConfig(backend="onnxruntime")
    backend = select.open_backend({"landmark": Path("x.onnx")}, config)
    assert isinstance(backend, FakeBackend)
    assert created["args"] == ({"landmark": Path("x.onnx")}, config)


def test_tensorrt_backend_refuses_with_what_is_missing(without_tensorrt: None, landmark_onnx: Path) -> None:
    with pytest.raises(trt_backend.TensorRTUnavailable, match="module tensorrt not importable"):
        trt_backend.TensorRTBackend({"landmark": landmark_onnx}, EngineConfig())


def test_modules_import_without_tensorrt_or_pycuda() -> None:
    """Guards the guarded imports: a machine without CUDA must import every engines module.

    Runs in a fresh interpreter where `import tensorrt` / `import pycuda` fail even if installed.
    """
    script = (
        "import sys\n"
        "for blocked in ('tensorrt', 'pycuda', 'pycuda.driver'):\n"
        "    sys.modules[blocked] = None\n"
        "import engines.tensorrt, engines.backends, engines.cli_engines, engines.engine_cache\n"
        "assert engines.tensorrt.trt is None and engines.tensorrt.cuda is None\n"
        "print(engines.tensorrt.unavailable_reason())\n"
        "print(engines.backends.select_backend(__import__('daemon.config').config.EngineConfig())[1])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    reason, selection = result.stdout.splitlines()
    assert reason.startswith("module tensorrt not importable")
    assert selection.startswith("auto: TensorRT not used, missing module: module tensorrt not importable")


# --- skeletond engines build | list | clear -----------------------------------------------------------


def _config(tmp_path: Path) -> Config:
    config = Config()
    config.models.dir = tmp_path / "models"
    config.engine.engine_dir = tmp_path / "engines"
    return config


def test_engines_build_without_models_or_tensorrt(tmp_path: Path, without_tensorrt: None) -> None:
    config = _config(tmp_path)
    out = io.StringIO()
    assert build_engines(config, out) == 1
    assert "no ONNX models" in out.getvalue()
    config.models.dir.mkdir()
    make_landmark_like_onnx(config.models.dir / "pose_landmark_tiny.onnx")
    out = io.StringIO()
    assert build_engines(config, out) == 2
    assert "tensorrt: missing module: module tensorrt not importable" in out.getvalue()


def test_engines_list_and_clear(tmp_path: Path, without_tensorrt: None) -> None:
    config = _config(tmp_path)
    out = io.StringIO()
    assert list_engines(config, out) == 0
    assert "no TensorRT engines" in out.getvalue()

    engine_dir = config.engine.engine_dir
    engine_dir.mkdir()
    _cached_engine(engine_dir, key_fields(**KEY_BASE))
    (engine_dir / "orphan.fp16.engine").write_bytes(b"x")
    timing = timing_cache_path(engine_dir, "10.3.0", "Orin", "8.7")
    timing.write_bytes(b"t")
    out = io.StringIO()
    assert list_engines(config, out) == 0
    text = out.getvalue()
    assert "pose_landmark_tiny.fp16.engine" in text and "TensorRT 10.3.0" in text and "Orin" in text
    assert "orphan.fp16.engine" in text and "no manifest" in text

    out = io.StringIO()
    assert clear_engines(config, out) == 0
    assert sorted(p.name for p in engine_dir.iterdir() if not p.name.startswith(".")) == [timing.name]
    assert clear_engines(config, io.StringIO(), timing_cache=True) == 0
    assert not timing.exists()


# --- the backend's calling sequence, against stand-ins for tensorrt and pycuda -------------------------


@pytest.fixture
def fake_gpu(monkeypatch: pytest.MonkeyPatch):
    fake_trt, fake_cuda, state = make_fakes(expected_outputs)
    monkeypatch.setattr(trt_backend, "trt", fake_trt)
    monkeypatch.setattr(trt_backend, "cuda", fake_cuda)
    monkeypatch.setattr(trt_backend, "_trt_logger", None)
    return state


def test_backend_builds_caches_and_runs_through_pinned_buffers(
    tmp_path: Path, landmark_onnx: Path, fake_gpu, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="engines.tensorrt")
    config = EngineConfig(backend="tensorrt", engine_dir=tmp_path / "engines", workspace_mb=256, max_batch=4)
    backend = trt_backend.TensorRTBackend({"landmark": landmark_onnx}, config)
    assert fake_gpu.builds == 1 and "built: no engine file" in backend.description
    assert fake_gpu.context_stack == [], "the CUDA context must be popped after construction"
    build = fake_gpu.last_build
    assert build.network.flags == 0  # TensorRT 10: explicit batch is implied
    assert build.config.flags == {"fp16"} and build.config.workspace == 256 << 20
    assert build.config.profiles == [{"input_1": ((1, 256, 256, 3), (2, 256, 256, 3), (4, 256, 256, 3))}]
    assert (config.engine_dir / "timing-trt10.3.0-Fake_Orin-sm8.7.cache").read_bytes() == b"timing cache"

    pinned_input = backend._engines["landmark"].buffers["input_1"].host
    x = RNG.random((2, 256, 256, 3), dtype=np.float32)
    out = backend.run("landmark", {"input_1": x})
    assert backend._engines["landmark"].buffers["input_1"].host is pinned_input, "pinned buffer rebound"
    np.testing.assert_array_equal(pinned_input[:2], x)
    for name, want in expected_outputs(x).items():
        np.testing.assert_allclose(out[name], want, rtol=1e-5, atol=1e-6)

    executions = fake_gpu.executions
    x6 = RNG.random((6, 256, 256, 3), dtype=np.float32)
    out6 = backend.run("landmark", {"input_1": x6})  # over max_batch: two chunks
    assert fake_gpu.executions == executions + 2
    np.testing.assert_allclose(out6["Identity_4"], expected_outputs(x6)["Identity_4"], rtol=1e-5, atol=1e-6)

    results: list[dict] = []
    worker = threading.Thread(target=lambda: results.append(backend.run("landmark", {"input_1": x})))
    worker.start()
    worker.join()
    np.testing.assert_array_equal(results[0]["Identity"], out["Identity"])
    with pytest.raises(ValueError, match="input_1"):
        backend.run("landmark", {"input_1": np.zeros((1, 128, 128, 3), np.float32)})
    with pytest.raises(KeyError):
        backend.run("detector", {"input_1": x})

    backend.close()
    backend.close()
    assert fake_gpu.contexts_alive == 0 and fake_gpu.context_stack == []
    with pytest.raises(RuntimeError, match="closed"):
        backend.run("landmark", {"input_1": x})

    caplog.clear()
    trt_backend.TensorRTBackend({"landmark": landmark_onnx}, config).close()
    assert fake_gpu.builds == 1 and "cached" in caplog.text


def _real_cuda_reason() -> str | None:
    """Why the backend's CUDA side cannot be run for real here (pycuda and a CUDA device), or None."""
    try:
        import pycuda.driver as real_cuda
    except Exception as exc:  # noqa: BLE001 - any import failure means no real CUDA here
        return f"module pycuda not importable ({exc})"
    try:
        real_cuda.init()
        count = real_cuda.Device.count()
    except real_cuda.Error as exc:
        return f"CUDA driver not usable ({exc})"
    return None if count > 0 else "no CUDA device"


REAL_CUDA_MISSING = _real_cuda_reason()


@pytest.mark.gpu
@pytest.mark.skipif(REAL_CUDA_MISSING is not None, reason=f"needs pycuda with a CUDA device: {REAL_CUDA_MISSING}")
def test_backend_cuda_side_on_a_real_gpu(tmp_path: Path, landmark_onnx: Path, monkeypatch) -> None:
    """The backend's own CUDA code on a real GPU through real pycuda (context made, popped, pushed per call
    and detached; page-locked host buffers; device buffers bound by address; async copies on one stream;
    chunks over max_batch; a call from another thread), with only TensorRT played by the stand-in, whose
    engine computes the tiny test model from the real device memory. Where TensorRT itself is installed,
    test_fp16_engine_matches_onnxruntime and the other GPU tests run the real engines."""
    import pycuda.driver as real_cuda

    fake_trt, _, state = make_fakes(expected_outputs, device_io=real_cuda)
    monkeypatch.setattr(trt_backend, "trt", fake_trt)
    monkeypatch.setattr(trt_backend, "cuda", real_cuda)
    monkeypatch.setattr(trt_backend, "_trt_logger", None)
    config = EngineConfig(backend="tensorrt", engine_dir=tmp_path / "engines", max_batch=4)
    backend = trt_backend.TensorRTBackend({"landmark": landmark_onnx}, config)
    assert real_cuda.Context.get_current() is None, "the CUDA context must be popped after construction"
    pinned = backend._engines["landmark"].buffers["input_1"].host
    assert type(pinned.base).__name__ == "HostAllocation", "the input buffer is not page-locked"
    x = RNG.random((2, 256, 256, 3), dtype=np.float32)
    out = backend.run("landmark", {"input_1": x})
    for name, want in expected_outputs(x).items():
        np.testing.assert_allclose(out[name], want, rtol=1e-5, atol=1e-6)
    x6 = RNG.random((6, 256, 256, 3), dtype=np.float32)  # over max_batch: two chunks
    out6 = backend.run("landmark", {"input_1": x6})
    assert state.executions == 3
    for name, want in expected_outputs(x6).items():
        np.testing.assert_allclose(out6[name], want, rtol=1e-5, atol=1e-6)
    results: list[dict] = []
    worker = threading.Thread(target=lambda: results.append(backend.run("landmark", {"input_1": x})))
    worker.start()
    worker.join()
    np.testing.assert_array_equal(results[0]["Identity"], out["Identity"])
    backend.close()
    assert real_cuda.Context.get_current() is None


def test_backend_rebuilds_on_changed_key_and_unreadable_plan(
    tmp_path: Path, landmark_onnx: Path, fake_gpu, caplog: pytest.LogCaptureFixture
) -> None:
    config = EngineConfig(engine_dir=tmp_path / "engines")
    trt_backend.TensorRTBackend({"landmark": landmark_onnx}, config).close()
    engine_file = engine_path(config.engine_dir, landmark_onnx.stem, "fp16")
    manifest_file = manifest_path(engine_file)

    manifest = json.loads(manifest_file.read_text())
    manifest["key_fields"]["tensorrt_version"] = "8.6.2"
    manifest["key"] = "0" * 64
    manifest_file.write_text(json.dumps(manifest))
    caplog.set_level(logging.WARNING, logger="engines.tensorrt")
    trt_backend.TensorRTBackend({"landmark": landmark_onnx}, config).close()
    assert fake_gpu.builds == 2
    assert "cache key changed: tensorrt_version '8.6.2' -> '10.3.0'" in caplog.text

    garbage = b"not a plan"
    engine_file.write_bytes(garbage)
    manifest = json.loads(manifest_file.read_text())
    manifest.update(engine_bytes=len(garbage), engine_sha256=hashlib.sha256(garbage).hexdigest())
    manifest_file.write_text(json.dumps(manifest))
    caplog.clear()
    trt_backend.TensorRTBackend({"landmark": landmark_onnx}, config).close()
    assert fake_gpu.builds == 3 and "deserialisation failed" in caplog.text
    assert fake_gpu.contexts_alive == 0


def test_fixed_batch_model_runs_in_chunks_of_one(tmp_path: Path, fake_gpu) -> None:
    onnx_path = make_landmark_like_onnx(tmp_path / "static.onnx", batch=1)
    backend = trt_backend.TensorRTBackend({"landmark": onnx_path}, EngineConfig(engine_dir=tmp_path / "e"))
    try:
        assert fake_gpu.last_build.config.profiles == []  # nothing dynamic to profile
        x = RNG.random((3, 256, 256, 3), dtype=np.float32)
        out = backend.run("landmark", {"input_1": x})
        assert fake_gpu.executions == 3
        np.testing.assert_allclose(out["Identity"], expected_outputs(x)["Identity"], rtol=1e-5, atol=1e-6)
    finally:
        backend.close()


def test_tensorrt_86_asks_for_explicit_batch(tmp_path: Path, landmark_onnx: Path, monkeypatch) -> None:
    fake_trt, fake_cuda, state = make_fakes(expected_outputs, version="8.6.1")
    monkeypatch.setattr(trt_backend, "trt", fake_trt)
    monkeypatch.setattr(trt_backend, "cuda", fake_cuda)
    monkeypatch.setattr(trt_backend, "_trt_logger", None)
    trt_backend.TensorRTBackend({"landmark": landmark_onnx}, EngineConfig(engine_dir=tmp_path / "e")).close()
    assert state.last_build.network.flags == 1 << 0 and state.last_build.config.flags == {"fp16"}


def test_tensorrt_11_takes_the_strongly_typed_path(tmp_path: Path, landmark_onnx: Path, monkeypatch) -> None:
    fake_trt, fake_cuda, state = make_fakes(expected_outputs, version="11.0.0")
    monkeypatch.setattr(trt_backend, "trt", fake_trt)
    monkeypatch.setattr(trt_backend, "cuda", fake_cuda)
    monkeypatch.setattr(trt_backend, "_trt_logger", None)
    called = {}

    def fp16_copy(path: Path) -> bytes:
        called["path"] = path
        raise trt_backend.EngineBuildError("stop here: the fp16 copy was asked for")

    monkeypatch.setattr(trt_backend, "fp16_onnx_bytes", fp16_copy)
    with pytest.raises(trt_backend.EngineBuildError, match="fp16 copy"):
        trt_backend.TensorRTBackend({"landmark": landmark_onnx}, EngineConfig(engine_dir=tmp_path / "e"))
    assert called["path"] == landmark_onnx
    assert state.contexts_alive == 0 and state.context_stack == [], "a failed start must free the context"


def test_engines_build_and_list_with_stand_ins(tmp_path: Path, fake_gpu) -> None:
    config = _config(tmp_path)
    config.models.dir.mkdir()
    onnx_path = make_landmark_like_onnx(config.models.dir / "pose_landmark_tiny.onnx")
    out = io.StringIO()
    assert build_engines(config, out) == 0
    assert "built: no engine file" in out.getvalue() and fake_gpu.contexts_alive == 0
    out = io.StringIO()
    assert build_engines(config, out) == 0
    assert "cached" in out.getvalue() and fake_gpu.builds == 1

    out = io.StringIO()
    list_engines(config, out)
    assert "pose_landmark_tiny.fp16.engine" in out.getvalue() and "current" in out.getvalue()
    make_landmark_like_onnx(onnx_path, batch=1)  # the ONNX changed since the build
    out = io.StringIO()
    list_engines(config, out)
    assert "stale: cache key changed: onnx_sha256" in out.getvalue()


# --- on a GPU -----------------------------------------------------------------------------------------


@needs_gpu
def test_tensorrt_runs_and_rebuilds_on_changed_key(
    tmp_path: Path, landmark_onnx: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = EngineConfig(backend="tensorrt", engine_dir=tmp_path / "engines", workspace_mb=256, max_batch=4)
    caplog.set_level(logging.INFO, logger="engines.tensorrt")
    backend = trt_backend.TensorRTBackend({"landmark": landmark_onnx}, config)
    try:
        for batch in (1, 2, 4, 6):  # 6 > max_batch: run in chunks
            x = RNG.random((batch, 256, 256, 3), dtype=np.float32)
            out = backend.run("landmark", {"input_1": x})
            for name, want in expected_outputs(x).items():
                assert out[name].shape == want.shape
                np.testing.assert_allclose(out[name], want, atol=2e-2, rtol=2e-2)
    finally:
        backend.close()
    engine_file = engine_path(config.engine_dir, landmark_onnx.stem, "fp16")
    assert "built: no engine file" in caplog.text
    assert any(config.engine_dir.glob("timing-*.cache"))

    caplog.clear()
    trt_backend.TensorRTBackend({"landmark": landmark_onnx}, config).close()
    assert "cached" in caplog.text and "building" not in caplog.text

    manifest_file = manifest_path(engine_file)
    manifest = json.loads(manifest_file.read_text())
    manifest["key_fields"]["tensorrt_version"] = "8.6.0"
    manifest["key"] = "0" * 64
    manifest_file.write_text(json.dumps(manifest))
    caplog.clear()
    trt_backend.TensorRTBackend({"landmark": landmark_onnx}, config).close()
    assert "cache key changed: tensorrt_version '8.6.0'" in caplog.text

    engine_file.write_bytes(b"\0" * 64)  # a plan this TensorRT cannot read, with a matching manifest
    data = engine_file.read_bytes()
    manifest = json.loads(manifest_file.read_text())
    manifest["engine_bytes"] = len(data)
    manifest["engine_sha256"] = hashlib.sha256(data).hexdigest()
    manifest_file.write_text(json.dumps(manifest))
    caplog.clear()
    trt_backend.TensorRTBackend({"landmark": landmark_onnx}, config).close()
    assert "deserialisation failed" in caplog.text


def _models_dir() -> Path:
    return Path(os.environ.get("SKELETON_MODELS_DIR", str(Config().models.dir))).expanduser()


def _landmark_crops(testdata: Path) -> np.ndarray:
    """Square 256 px crops around the person in a front and a side photo, from the reference landmarks."""
    from PIL import Image

    crops = []
    for view in ("front", "side"):
        reference = min((testdata / "reference" / "heavy" / view).glob("*.json"))
        photo = next((testdata / "photos" / view).glob(reference.stem + ".*"))
        points = np.asarray(json.loads(reference.read_text())["landmarks_px"])[:, :2]
        centre = (points.min(axis=0) + points.max(axis=0)) / 2
        half = (points.max(axis=0) - points.min(axis=0)).max() * 0.625
        box = (*(centre - half), *(centre + half))
        image = Image.open(photo).convert("RGB").crop(tuple(int(v) for v in box)).resize((256, 256))
        crops.append(np.asarray(image, dtype=np.float32) / 255.0)
    return np.stack(crops)


@needs_gpu
def test_parity_tensorrt_fp16_against_onnxruntime_fp32(tmp_path: Path, testdata: Path) -> None:
    """Landmarks within 1 px of the 256 px input, world landmarks within 5 mm."""
    import onnxruntime as ort

    landmark_onnx = _models_dir() / "pose_landmark_heavy.onnx"
    if not landmark_onnx.exists():
        pytest.skip(f"needs the converted models: {landmark_onnx} absent (skeletond models fetch)")
    crops = _landmark_crops(testdata)
    session = ort.InferenceSession(str(landmark_onnx), providers=["CPUExecutionProvider"])
    want = {"Identity": [], "Identity_4": []}
    for crop in crops:  # the converted model may have a fixed batch of 1
        identity, world = session.run(["Identity", "Identity_4"], {"input_1": crop[None]})
        want["Identity"].append(identity[0])
        want["Identity_4"].append(world[0])

    config = EngineConfig(backend="tensorrt", engine_dir=tmp_path / "engines", precision="fp16")
    backend = trt_backend.TensorRTBackend({"landmark": landmark_onnx}, config)
    try:
        got = backend.run("landmark", {"input_1": crops})
    finally:
        backend.close()
    xy_got = got["Identity"].reshape(len(crops), 39, 5)[:, :33, :2]
    xy_want = np.stack(want["Identity"]).reshape(len(crops), 39, 5)[:, :33, :2]
    world_got = got["Identity_4"].reshape(len(crops), 39, 3)[:, :33]
    world_want = np.stack(want["Identity_4"]).reshape(len(crops), 39, 3)[:, :33]
    assert np.abs(xy_got - xy_want).max() <= 1.0
    assert np.abs(world_got - world_want).max() <= 0.005


def test_int8_build_reads_the_calibration_cache_of_the_int8_model(tmp_path: Path, fake_gpu, config) -> None:
    """engine.precision = int8 (issue 15, unverified on a device): INT8 + FP16 flags, and a calibrator that
    hands TensorRT the cache written next to the engines from the int8 ONNX model's ranges."""
    from engines import models
    from engines.quantize import tensorrt_calibration_cache

    fp32 = Path(config.models.dir) / models.ONNX_FILES["detector"]
    engine_dir = tmp_path / "engines"
    engine_dir.mkdir()
    trt_backend.build_serialized_engine(
        read_model_spec(fp32, "detector"), "int8", 256, 4, engine_dir / "timing.cache"
    )
    build = fake_gpu.last_build
    assert build.config.flags == {"int8", "fp16"}
    cache = engine_dir / "pose_detection.int8.calib"
    expected = tensorrt_calibration_cache(Path(config.models.dir) / models.INT8_FILES["detector"], "10.3.0")
    assert cache.read_bytes() == expected
    assert build.config.int8_calibrator.read_calibration_cache() == expected
    assert build.config.int8_calibrator.get_batch(["input_1"]) is None  # never calibrates on the device


def test_int8_build_without_the_int8_models_says_how_to_get_them(tmp_path: Path, landmark_onnx: Path, fake_gpu) -> None:
    with pytest.raises(trt_backend.EngineBuildError, match="models fetch"):
        trt_backend.build_serialized_engine(
            read_model_spec(landmark_onnx, "landmark"), "int8", 256, 4, tmp_path / "timing.cache"
        )
