"""The TensorRT backend against NVIDIA's real Python bindings (no GPU needed).

- TensorRT 8.6 (JetPack 6.0), 10.3 (JetPack 6.1/6.2) and 11.x: the real binding module, imported with
  stub libnvinfer libraries, drives engines/tensorrt.py; every TensorRT name the backend touches must
  exist with a signature its call fits (tests/real_tensorrt.py), and the version decides the build
  path (explicit batch + FP16 flag, FP16 flag, strongly typed fp16 copy).
- TensorRT-RTX 1.7 (real libraries, builds on the CPU): the backend's engine build runs for real for the
  detector and the heavy landmark model, fp32 and fp16, writing engine, manifest and timing cache.

The wheels live outside the repository (.ci/tensorrt-wheels.sh installs them, .ci/run calls it); where
one is absent, its test skips and says so.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

import engines.tensorrt as trt_backend
from daemon.config import EngineConfig
from engines.engine_cache import engine_path, manifest_path, read_manifest, timing_cache_path
from engines.onnx_spec import read_model_spec

REPO_ROOT = Path(__file__).resolve().parent.parent
# .ci/tensorrt-wheels.sh installs per Python (cp311, ...): the binding modules are compiled for one.
WHEELS = (Path(os.environ.get("SKELETON_TRT_WHEELS", "~/.cache/skeleton-v2/trt-wheels")).expanduser()
          / f"cp{sys.version_info[0]}{sys.version_info[1]}")
RTX_VERSION = "1.7.1.116"

# version -> (fp16 build plan, network flags for fp16, builder flags for fp16, progress monitor, fp16 parses bytes)
BINDINGS = {
    "8.6.1": ("fp16-flag", 1 << 0, ["BuilderFlag.FP16"], False, False),  # EXPLICIT_BATCH asked for
    "10.3.0": ("fp16-flag", 0, ["BuilderFlag.FP16"], True, False),  # explicit batch implied
    "11.4.0.106": ("strongly-typed-fp16-onnx", 1 << 0, [], True, True),  # STRONGLY_TYPED is 0 in 11.x
}

# The calls every version must have checked against its real signatures (more are checked).
CORE_CALLS = {
    "Builder.__init__", "Builder.create_network", "Builder.create_builder_config",
    "Builder.create_optimization_profile", "Builder.build_serialized_network", "OnnxParser.__init__",
    "OnnxParser.parse_from_file", "IBuilderConfig.set_memory_pool_limit", "IBuilderConfig.create_timing_cache",
    "IBuilderConfig.set_timing_cache", "IBuilderConfig.get_timing_cache", "IBuilderConfig.add_optimization_profile",
    "IOptimizationProfile.set_shape", "ITimingCache.serialize", "Runtime.__init__", "Runtime.deserialize_cuda_engine",
    "ICudaEngine.num_io_tensors", "ICudaEngine.get_tensor_name", "ICudaEngine.get_tensor_mode",
    "ICudaEngine.get_tensor_dtype", "ICudaEngine.create_execution_context", "IExecutionContext.set_tensor_address",
    "IExecutionContext.set_input_shape", "IExecutionContext.get_tensor_shape", "IExecutionContext.execute_async_v3",
}


def _installed(name: str) -> Path:
    folder = WHEELS / name
    if not (folder / "READY").exists():
        why = ""
        if (folder / "pip.log").exists():
            lines = (folder / "pip.log").read_text(errors="replace").strip().splitlines()
            why = f" (last install: {lines[-1] if lines else 'no output'})"
        pytest.skip(f"{folder} not installed{why}: run .ci/tensorrt-wheels.sh, which fetches it from PyPI")
    return folder


@pytest.mark.parametrize("version", sorted(BINDINGS))
def test_backend_against_real_bindings(version: str, tmp_path: Path) -> None:
    import numpy

    folder = _installed(version)
    env = dict(os.environ)
    # The bindings' folder is not on PYTHONPATH (which comes before site-packages): real_tensorrt.py
    # appends it, so that the bindings run with this venv's numpy and packages, as the daemon's do.
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "tests")])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(folder / "stub-lib"), env.get("LD_LIBRARY_PATH")]))
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "tests" / "real_tensorrt.py"), "tensorrt_bindings", str(tmp_path),
         str(folder / "site")],
        check=False, capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout)
    plan, network_flags, builder_flags, monitor, parses_bytes = BINDINGS[version]

    assert report["version"] == version and report["imported_by_backend"]
    assert report["numpy"] == [numpy.__version__, numpy.__file__], "the bindings ran with another numpy"
    # The import guard accepts the real module; what is missing then is pycuda (not installed here).
    assert report["unavailable_reason"].startswith("module pycuda not importable")
    assert report["plans"] == {"fp16": plan, "fp32": "fp32"}
    # The real Builder takes the backend's ILogger subclass, then fails as TensorRT does without a GPU.
    assert "nullptr" in report["real_builder"]
    assert report["errors"] == [] and report["callbacks"] == []
    assert report["negative_controls"] and all(report["negative_controls"].values()), report["negative_controls"]
    assert CORE_CALLS <= set(report["checked"]), CORE_CALLS - set(report["checked"])
    assert report["fake_differs"] == []

    fp16, fp32 = report["runs"]["fp16"], report["runs"]["fp32"]
    for run in (fp16, fp32):
        assert run["outputs_match"] and run["progress_monitor"] is monitor
        assert any(name.endswith(".engine.json") for name in run["manifest"])
        assert any(name.startswith("timing-trt") for name in run["manifest"])
    assert fp16["network_flags"] == network_flags and fp16["builder_flags"] == builder_flags
    assert (fp16["parsed_bytes"] or 0) > 0 if parses_bytes else fp16["parsed_bytes"] is None
    assert fp32["builder_flags"] == [] and fp32["parsed_bytes"] is None
    if version.startswith("11."):
        assert "EXPLICIT_BATCH" not in report["creation_flags"]  # what the fake now mirrors


# --- TensorRT-RTX: a real engine build on the CPU ------------------------------------------------------


def _rtx_as_tensorrt(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """TensorRT-RTX injected as `tensorrt` into the backend (the product code is unchanged).

    RTX numbers itself 1.x; its build API is TensorRT 11's (strongly typed only, no FP16 flag, no
    EXPLICIT_BATCH), so it is presented as 11 to take that path. The version string says it is RTX.
    """
    folder = _installed(f"rtx-{RTX_VERSION}")
    monkeypatch.syspath_prepend(str(folder / "site"))
    import tensorrt_rtx_bindings as rtx

    module = types.ModuleType("tensorrt")
    module.__dict__.update({name: getattr(rtx, name) for name in dir(rtx) if not name.startswith("__")})
    module.__version__ = f"11.0.0+rtx{rtx.__version__}"
    monkeypatch.setattr(trt_backend, "trt", module)
    monkeypatch.setattr(trt_backend, "_trt_logger", None)
    return module


class _PlanRuntime:
    """Stands in for trt.Runtime: deserialising needs a GPU (RTX refuses: no CUDA driver here)."""

    def __init__(self) -> None:
        self.plans: list[bytes] = []

    def deserialize_cuda_engine(self, data: bytes) -> Any:
        self.plans.append(data)
        return types.SimpleNamespace(plan_bytes=len(data))


def _models_dir() -> Path:
    from daemon.config import Config

    return Path(os.environ.get("SKELETON_MODELS_DIR", str(Config().models.dir))).expanduser()


# RTX keeps the timing cache API but makes it a no-op (it warns so): the round trip checks the calls only.
@pytest.mark.filterwarnings("ignore:Use Deprecated in TensorRT-RTX:DeprecationWarning")
@pytest.mark.parametrize("model, onnx_name", [("detector", "pose_detection.onnx"),
                                              ("landmark", "pose_landmark_heavy.onnx")])
def test_engine_build_through_tensorrt_rtx_on_the_cpu(
    model: str, onnx_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    onnx_path = _models_dir() / onnx_name
    if not onnx_path.exists():
        pytest.skip(f"needs the converted models: {onnx_path} absent (skeletond models fetch)")
    module = _rtx_as_tensorrt(monkeypatch)
    caplog.set_level(logging.INFO, logger="engines.tensorrt")
    spec = read_model_spec(onnx_path, name=model)
    gpu = trt_backend.GpuInfo(name="CPU (TensorRT-RTX, no GPU)", compute_capability="0.0",
                              tensorrt_version=module.__version__)
    engine_dir = tmp_path / "engines"
    timing = timing_cache_path(engine_dir, gpu.tensorrt_version, gpu.name, gpu.compute_capability)
    sizes = {}
    for precision in ("fp32", "fp16"):
        config = EngineConfig(backend="tensorrt", engine_dir=engine_dir, precision=precision, max_batch=4)
        runtime = _PlanRuntime()
        caplog.clear()
        engine, outcome = trt_backend.load_or_build_engine(spec, config, gpu, runtime)
        assert outcome.startswith("built: no engine file"), outcome
        engine_file = engine_path(engine_dir, onnx_path.stem, precision)
        assert engine_file.read_bytes() == runtime.plans[0] and engine.plan_bytes == len(runtime.plans[0])
        manifest = read_manifest(manifest_path(engine_file))
        fields = manifest.key_fields
        assert fields["tensorrt_version"] == module.__version__ and fields["precision"] == precision
        assert fields["profile"]["input_1"][0][0] == 1
        assert manifest.engine_bytes == len(runtime.plans[0]) and manifest.model == model
        assert manifest.build_plan == ("strongly-typed-fp16-onnx" if precision == "fp16" else "fp32")
        assert timing.stat().st_size > 0
        # The second build reads the timing cache the first one wrote, through RTX's own deserialiser.
        assert ("timing cache reused" in caplog.text) == (precision == "fp16"), caplog.text[-2000:]
        assert "does not fit" not in caplog.text and "unreadable" not in caplog.text
        sizes[precision] = engine_file.stat().st_size

        _, again = trt_backend.load_or_build_engine(spec, config, gpu, _PlanRuntime())
        assert again == "cached"
    # fp16 weights: the strongly typed fp16 copy really reached the engine.
    assert sizes["fp16"] < 0.75 * sizes["fp32"], sizes
