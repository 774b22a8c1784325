"""TensorRT backend: engines built from the ONNX models on first use, cached, run through pinned buffers.

Works with TensorRT 8.6 and 10.x (JetPack 6) through the name-based tensor API (`set_input_shape`,
`set_tensor_address`, `execute_async_v3`); TensorRT 11+ dropped `BuilderFlag.FP16`, so there fp16
engines come from a strongly typed network parsed from an fp16 copy of the ONNX.

`tensorrt` and `pycuda` are imported under guard: this module imports everywhere, and
`unavailable_reason()` says what is missing. The CUDA context belongs to the thread that constructs the
backend (the inference worker); every call pushes it and pops it again, so `run` and `close` work from
any thread.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engines.base import ModelSpec
from engines.engine_cache import (
    buffer_layout,
    build_lock,
    build_plan,
    engine_path,
    key_fields,
    manifest_path,
    model_max_batch,
    new_manifest,
    profile_shapes,
    rebuild_reason,
    tensorrt_major,
    timing_cache_path,
    write_manifest,
)
from engines.files import atomic_write_bytes, sha256_file
from engines.onnx_spec import read_model_spec

try:
    import tensorrt as trt
except (ImportError, OSError) as exc:  # OSError: the module is there but libnvinfer is not
    trt = None
    _TRT_IMPORT_ERROR: str | None = f"module tensorrt not importable ({exc})"
else:
    _TRT_IMPORT_ERROR = None

try:
    import pycuda.driver as cuda
except (ImportError, OSError) as exc:
    cuda = None
    _PYCUDA_IMPORT_ERROR: str | None = f"module pycuda not importable ({exc})"
else:
    _PYCUDA_IMPORT_ERROR = None

if TYPE_CHECKING:
    from daemon.config import EngineConfig

log = logging.getLogger(__name__)

# How often a long build says it is still alive (builds take minutes on a Jetson).
BUILD_HEARTBEAT_S = 30.0


class TensorRTUnavailable(RuntimeError):
    """TensorRT, pycuda or a CUDA device is missing."""


class EngineBuildError(RuntimeError):
    """TensorRT could not parse the ONNX model or build an engine from it."""


def unavailable_reason() -> str | None:
    """Why the TensorRT backend cannot run here, or None when it can (tensorrt, pycuda, a CUDA device)."""
    if trt is None:
        return _TRT_IMPORT_ERROR or "module tensorrt not importable"
    if cuda is None:
        return _PYCUDA_IMPORT_ERROR or "module pycuda not importable"
    try:
        build_plan(trt.__version__, "fp32")
    except ValueError as exc:
        return str(exc)
    try:
        cuda.init()
        count = cuda.Device.count()
    except cuda.Error as exc:
        return f"CUDA driver not usable ({exc})"
    if count < 1:
        return "no CUDA device"
    return None


@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: str  # "8.7" (Orin), "7.2" (Xavier)
    tensorrt_version: str


def gpu_info(device_index: int = 0) -> GpuInfo:
    """Needs `cuda.init()` only, no context."""
    cuda.init()
    device = cuda.Device(device_index)
    major, minor = device.compute_capability()
    return GpuInfo(name=device.name(), compute_capability=f"{major}.{minor}", tensorrt_version=trt.__version__)


# --- TensorRT logging ---------------------------------------------------------------------------------

_trt_logger: Any = None
_trt_logger_lock = threading.Lock()


def trt_logger() -> Any:
    """One process-wide ILogger that forwards TensorRT's messages to `logging` (TensorRT wants one)."""
    global _trt_logger
    with _trt_logger_lock:
        if _trt_logger is None:

            class _ForwardingLogger(trt.ILogger):
                def __init__(self) -> None:
                    trt.ILogger.__init__(self)

                def log(self, severity: Any, msg: str) -> None:
                    if severity in (trt.ILogger.INTERNAL_ERROR, trt.ILogger.ERROR):
                        log.error("TensorRT: %s", msg)
                    elif severity == trt.ILogger.WARNING:
                        log.warning("TensorRT: %s", msg)
                    elif severity == trt.ILogger.INFO:
                        log.debug("TensorRT: %s", msg)

            _trt_logger = _ForwardingLogger()
        return _trt_logger


# --- building -----------------------------------------------------------------------------------------


class _BuildProgress:
    """Logs build phases (TensorRT 10+ progress monitor) and a heartbeat every BUILD_HEARTBEAT_S."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.phase = "starting"
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"trt-build-{model}", daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(BUILD_HEARTBEAT_S):
            log.info(
                "building TensorRT engine %s: %.0f s so far (phase: %s)",
                self.model,
                time.monotonic() - self.started,
                self.phase,
            )

    def monitor(self) -> Any:
        """An IProgressMonitor for TensorRT 10+, or None where the API is absent (8.6)."""
        if not hasattr(trt, "IProgressMonitor"):
            return None
        progress = self

        class _Monitor(trt.IProgressMonitor):
            def __init__(self) -> None:
                trt.IProgressMonitor.__init__(self)

            def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
                progress.phase = phase_name
                level = logging.INFO if parent_phase is None else logging.DEBUG
                log.log(level, "building %s: %s (%d steps)", progress.model, phase_name, num_steps)

            def step_complete(self, phase_name: str, step: int) -> bool:
                progress.phase = f"{phase_name} step {step + 1}"
                return True  # False would cancel the build

            def phase_finish(self, phase_name: str) -> None:
                log.debug("building %s: %s done", progress.model, phase_name)

        return _Monitor()

    def __enter__(self) -> None:
        self._thread.start()

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)


def fp16_onnx_bytes(onnx_path: Path) -> bytes:
    """An fp16 copy of the model with fp32 inputs and outputs (TensorRT 11+ strongly typed builds)."""
    try:
        import onnx
        from onnxconverter_common import float16
    except ImportError as exc:
        raise EngineBuildError(
            f"TensorRT {trt.__version__} builds fp16 engines from an fp16 ONNX copy, which needs "
            f"onnxconverter-common ({exc}); install it or set engine.precision = fp32"
        ) from None
    model = onnx.load(str(onnx_path))
    return float16.convert_float_to_float16(model, keep_io_types=True).SerializeToString()


def _network_flags(plan: str) -> int:
    flags = 0
    creation = trt.NetworkDefinitionCreationFlag
    if tensorrt_major(trt.__version__) < 10:
        # 8.6 still needs explicit batch asked for; 10.x makes it the only mode.
        flags |= 1 << int(creation.EXPLICIT_BATCH)
    if plan == "strongly-typed-fp16-onnx" or (
        tensorrt_major(trt.__version__) >= 11 and hasattr(creation, "STRONGLY_TYPED")
    ):
        flags |= 1 << int(creation.STRONGLY_TYPED)
    return flags


def build_serialized_engine(
    spec: ModelSpec, precision: str, workspace_mb: int, max_batch: int, timing_cache_file: Path
) -> bytes:
    """Parse the ONNX, build one engine, keep the timing cache up to date. Minutes on a Jetson."""
    plan = build_plan(trt.__version__, precision)
    logger = trt_logger()
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(plan))
    parser = trt.OnnxParser(network, logger)
    if plan == "strongly-typed-fp16-onnx":
        parsed = parser.parse(fp16_onnx_bytes(spec.path))
    else:
        parsed = parser.parse_from_file(str(spec.path))
    if not parsed:
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"{spec.path.name}: TensorRT's ONNX parser failed: {errors}")

    build_config = builder.create_builder_config()
    build_config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb * (1 << 20))
    if plan == "int8-calibration-cache":
        # Layers the cache has no range for run in fp16 rather than fp32.
        build_config.set_flag(trt.BuilderFlag.INT8)
        build_config.set_flag(trt.BuilderFlag.FP16)
        build_config.int8_calibrator = _cache_calibrator(int8_calibration_cache(spec, timing_cache_file.parent))
    if plan == "fp16-flag":
        if not getattr(builder, "platform_has_fast_fp16", True):  # deprecated in 10.x
            log.warning("%s: this GPU has no fast fp16; building with the FP16 flag anyway", spec.name)
        build_config.set_flag(trt.BuilderFlag.FP16)

    shapes = profile_shapes(spec, max_batch)
    dynamic = {name: s for name, s in shapes.items() if s[0] != s[2]}
    if dynamic:
        profile = builder.create_optimization_profile()
        for name, (min_shape, opt_shape, max_shape) in dynamic.items():
            profile.set_shape(name, min_shape, opt_shape, max_shape)
        build_config.add_optimization_profile(profile)

    cache_bytes = timing_cache_file.read_bytes() if timing_cache_file.exists() else b""
    timing_cache = None
    if cache_bytes:
        try:
            timing_cache = build_config.create_timing_cache(cache_bytes)
        except (RuntimeError, TypeError, ValueError) as exc:
            log.warning("timing cache %s unreadable (%s)", timing_cache_file, exc)
    if timing_cache is None or not build_config.set_timing_cache(timing_cache, ignore_mismatch=False):
        if cache_bytes:
            log.warning("timing cache %s does not fit this TensorRT/GPU; starting an empty one", timing_cache_file)
        cache_bytes = b""
        build_config.set_timing_cache(build_config.create_timing_cache(b""), ignore_mismatch=False)

    log.info(
        "building TensorRT %s engine for %s (%s, profile %s, workspace %d MiB, timing cache %s): "
        "this takes minutes on a Jetson",
        precision,
        spec.name,
        plan,
        {name: [list(s) for s in v] for name, v in shapes.items()},
        workspace_mb,
        "reused" if cache_bytes else "new",
    )
    progress = _BuildProgress(spec.name)
    with progress:
        monitor = progress.monitor()
        if monitor is not None:
            build_config.progress_monitor = monitor
        serialized = builder.build_serialized_network(network, build_config)
        elapsed = time.monotonic() - progress.started
    if serialized is None:
        raise EngineBuildError(f"{spec.name}: TensorRT could not build an engine (its log above says why)")
    atomic_write_bytes(timing_cache_file, bytes(build_config.get_timing_cache().serialize()))
    log.info("built TensorRT engine for %s in %.0f s", spec.name, elapsed)
    return bytes(serialized)


def int8_calibration_cache(spec: ModelSpec, engine_dir: Path) -> Path:
    """The calibration cache beside the engines, written from the int8 ONNX model next to `spec.path`
    (same calibration as ONNX Runtime's int8), rewritten when it differs."""
    from engines.models import INT8_FILES, ONNX_FILES
    from engines.quantize import tensorrt_calibration_cache

    name = next((n for n, f in ONNX_FILES.items() if f == spec.path.name), None)
    int8_path = spec.path.with_name(INT8_FILES[name]) if name else None
    if int8_path is None or not int8_path.is_file():
        raise EngineBuildError(
            f"{spec.name}: engine.precision = int8 needs the int8 models beside {spec.path.name}: "
            "run `skeletond models fetch`"
        )
    cache = Path(engine_dir) / f"{spec.path.stem}.int8.calib"
    data = tensorrt_calibration_cache(int8_path, trt.__version__)
    if not cache.is_file() or cache.read_bytes() != data:
        atomic_write_bytes(cache, data)
    return cache


def _cache_calibrator(cache: Path) -> Any:
    """An int8 calibrator that only reads the cache: TensorRT never asks it for a batch."""

    class _CacheCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: list[str]) -> None:
            return None

        def read_calibration_cache(self) -> bytes:
            return cache.read_bytes()

        def write_calibration_cache(self, data: bytes) -> None:
            pass

    return _CacheCalibrator()


def engine_key_fields(spec: ModelSpec, precision: str, max_batch: int, gpu: GpuInfo) -> dict[str, Any]:
    onnx_sha256 = sha256_file(spec.path)
    if precision == "int8":
        # The calibration is part of what the engine was built from.
        int8 = spec.path.with_name(spec.path.name.replace(".onnx", ".int8.onnx"))
        onnx_sha256 += f"+int8:{sha256_file(int8) if int8.is_file() else 'absent'}"
    return key_fields(
        onnx_sha256=onnx_sha256,
        tensorrt_version=gpu.tensorrt_version,
        gpu_name=gpu.name,
        compute_capability=gpu.compute_capability,
        precision=precision,
        profile=profile_shapes(spec, max_batch),
    )


def _deserialize(runtime: Any, data: bytes) -> tuple[Any, str | None]:
    try:
        engine = runtime.deserialize_cuda_engine(data)
    except (RuntimeError, TypeError, ValueError) as exc:  # some versions raise, others return None
        return None, f"deserialisation failed: {exc}"
    if engine is None:
        return None, "deserialisation failed (TensorRT's log above says why)"
    return engine, None


def load_or_build_engine(spec: ModelSpec, config: EngineConfig, gpu: GpuInfo, runtime: Any) -> tuple[Any, str]:
    """A deserialised engine for `spec`, from the cache when its key matches, else freshly built.

    Needs a current CUDA context. Returns the engine and what happened ("cached" or "built: <why>").
    """
    engine_dir = Path(config.engine_dir).expanduser()
    engine_file = engine_path(engine_dir, spec.path.stem, config.precision)
    fields = engine_key_fields(spec, config.precision, config.max_batch, gpu)
    with build_lock(engine_dir):
        reason = rebuild_reason(engine_file, fields)
        if reason is None:
            engine, reason = _deserialize(runtime, engine_file.read_bytes())
            if engine is not None:
                log.info("TensorRT engine for %s: cached %s", spec.name, engine_file)
                return engine, "cached"
        log.warning("building TensorRT engine for %s into %s: %s", spec.name, engine_file, reason)
        started = time.monotonic()
        data = build_serialized_engine(
            spec,
            config.precision,
            config.workspace_mb,
            config.max_batch,
            timing_cache_path(engine_dir, gpu.tensorrt_version, gpu.name, gpu.compute_capability),
        )
        engine, error = _deserialize(runtime, data)
        if engine is None:
            raise EngineBuildError(f"{spec.name}: the engine just built does not load: {error}")
        # The engine first, the manifest last: a manifest is only ever beside a complete engine.
        atomic_write_bytes(engine_file, data)
        write_manifest(
            manifest_path(engine_file),
            new_manifest(
                fields=fields,
                model=spec.name,
                onnx_path=spec.path,
                engine_file=engine_file,
                engine_bytes=data,
                build_plan=build_plan(gpu.tensorrt_version, config.precision),
                workspace_mb=config.workspace_mb,
                build_seconds=time.monotonic() - started,
            ),
        )
        return engine, f"built: {reason}"


def ensure_engines(onnx_paths: dict[str, Path], config: EngineConfig) -> dict[str, str]:
    """Build (or confirm) the engine of every model ahead of time; `skeletond engines build`."""
    reason = unavailable_reason()
    if reason is not None:
        raise TensorRTUnavailable(f"tensorrt: {reason}")
    gpu = gpu_info()
    cuda_context = cuda.Device(0).make_context()
    outcomes: dict[str, str] = {}
    try:
        runtime = trt.Runtime(trt_logger())
        for name, path in onnx_paths.items():
            engine, outcomes[name] = load_or_build_engine(read_model_spec(path, name=name), config, gpu, runtime)
            del engine
        del runtime
    finally:
        cuda_context.detach()  # current here, so this destroys and pops it
    return outcomes


# --- running ------------------------------------------------------------------------------------------


@dataclass
class _Buffer:
    host: np.ndarray  # page-locked, shaped for the engine's max batch
    device: Any  # pycuda DeviceAllocation of the same size


@dataclass
class _LoadedEngine:
    spec: ModelSpec
    engine: Any
    context: Any
    max_batch: int
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    buffers: dict[str, _Buffer]


class TensorRTBackend:
    """Backend protocol over TensorRT engines; construct it in the thread that will own the GPU."""

    name = "tensorrt"

    def __init__(self, model_paths: dict[str, Path], config: EngineConfig) -> None:
        reason = unavailable_reason()
        if reason is not None:
            raise TensorRTUnavailable(f"tensorrt: {reason}")
        self._config = config
        self._lock = threading.Lock()
        self._engines: dict[str, _LoadedEngine] = {}
        self._closed = False
        self._gpu = gpu_info()
        # make_context() makes it current in this thread; it is popped at the end of __init__ and pushed
        # around every later call.
        self._cuda_context = cuda.Device(0).make_context()
        try:
            self._stream = cuda.Stream()
            self._runtime = trt.Runtime(trt_logger())
            outcomes = {}
            for model, path in model_paths.items():
                spec = read_model_spec(Path(path), name=model)
                engine, outcomes[model] = load_or_build_engine(spec, config, self._gpu, self._runtime)
                self._engines[model] = self._prepare(spec, engine)
        except BaseException:
            self._free()
            self._cuda_context.detach()
            self._closed = True
            raise
        self._cuda_context.pop()
        self.description = (
            f"TensorRT {self._gpu.tensorrt_version} on {self._gpu.name} (sm {self._gpu.compute_capability}), "
            f"{config.precision}, max batch {config.max_batch}, engines in {config.engine_dir} "
            f"({', '.join(f'{m}: {o}' for m, o in outcomes.items())})"
        )
        log.info("backend: %s", self.description)

    def _prepare(self, spec: ModelSpec, engine: Any) -> _LoadedEngine:
        """Execution context, pinned host buffers and device buffers at the engine's max batch, once."""
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        input_names = tuple(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        output_names = tuple(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        expected_in = tuple(s.name for s in spec.inputs)
        expected_out = tuple(s.name for s in spec.outputs)
        if set(input_names) != set(expected_in) or set(output_names) != set(expected_out):
            raise EngineBuildError(
                f"{spec.name}: engine tensors {input_names} -> {output_names} do not match the ONNX "
                f"model's {expected_in} -> {expected_out}"
            )
        max_batch = model_max_batch(spec, self._config.max_batch)
        context = engine.create_execution_context()
        if context is None:
            raise EngineBuildError(f"{spec.name}: could not create an execution context (GPU memory?)")
        buffers: dict[str, _Buffer] = {}
        for name, layout in buffer_layout(spec, max_batch).items():
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            host = cuda.pagelocked_empty(layout.shape, dtype)
            device = cuda.mem_alloc(max(host.nbytes, 1))
            buffers[name] = _Buffer(host=host, device=device)
            context.set_tensor_address(name, int(device))
        return _LoadedEngine(spec, engine, context, max_batch, input_names, output_names, buffers)

    def run(self, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._closed:
            raise RuntimeError("TensorRT backend is closed")
        loaded = self._engines.get(model)
        if loaded is None:
            raise KeyError(f"no model {model!r} (loaded: {', '.join(self._engines)})")
        if set(inputs) != set(loaded.input_names):
            raise ValueError(f"{model}: inputs {sorted(inputs)}, expected {sorted(loaded.input_names)}")
        batches = {array.shape[0] for array in inputs.values()}
        if len(batches) != 1:
            raise ValueError(f"{model}: inputs disagree on the batch size {sorted(batches)}")
        batch = batches.pop()
        chunks: list[dict[str, np.ndarray]] = []
        with self._lock:
            if self._closed:
                raise RuntimeError("TensorRT backend is closed")
            self._cuda_context.push()
            try:
                for start in range(0, batch, loaded.max_batch):
                    stop = min(start + loaded.max_batch, batch)
                    chunks.append(self._run_chunk(loaded, {n: a[start:stop] for n, a in inputs.items()}))
            finally:
                self._cuda_context.pop()
        if len(chunks) == 1:
            return chunks[0]
        return {name: np.concatenate([c[name] for c in chunks]) for name in loaded.output_names}

    def _run_chunk(self, loaded: _LoadedEngine, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One batch of at most max_batch: copy in, H2D, execute, D2H, one stream, one sync."""
        context = loaded.context
        for name in loaded.input_names:
            array = inputs[name]
            buffer = loaded.buffers[name]
            if array.shape[1:] != buffer.host.shape[1:]:
                raise ValueError(f"{loaded.spec.name}: input {name} shape {array.shape}, expected "
                                 f"(batch, {', '.join(map(str, buffer.host.shape[1:]))})")
            host_view = buffer.host[: array.shape[0]]
            # Copy into the pinned buffer; rebinding it would send pageable memory through a sync copy.
            np.copyto(host_view, array, casting="same_kind")
            if not context.set_input_shape(name, host_view.shape):
                raise ValueError(f"{loaded.spec.name}: TensorRT refused input shape {host_view.shape} for {name}")
            cuda.memcpy_htod_async(buffer.device, host_view, self._stream)
        output_views: dict[str, np.ndarray] = {}
        for name in loaded.output_names:
            buffer = loaded.buffers[name]
            shape = tuple(context.get_tensor_shape(name))
            count = math.prod(shape)
            if count > buffer.host.size or any(d < 0 for d in shape):
                raise RuntimeError(f"{loaded.spec.name}: output {name} shape {shape} does not fit its buffer")
            output_views[name] = buffer.host.reshape(-1)[:count].reshape(shape)
        if not context.execute_async_v3(self._stream.handle):
            raise RuntimeError(f"{loaded.spec.name}: TensorRT execution failed (its log above says why)")
        for name, view in output_views.items():
            cuda.memcpy_dtoh_async(view, loaded.buffers[name].device, self._stream)
        self._stream.synchronize()
        # The pinned buffers are reused by the next call: hand out copies.
        return {name: view.copy() for name, view in output_views.items()}

    def _free(self) -> None:
        """Release TensorRT objects and buffers; the CUDA context must be current."""
        for loaded in self._engines.values():
            for buffer in loaded.buffers.values():
                buffer.device.free()
                # The pinned allocation is the array's base; freeing it now beats waiting for the GC.
                pinned = getattr(buffer.host, "base", None)
                if pinned is not None and hasattr(pinned, "free"):
                    pinned.free()
            loaded.buffers.clear()
            loaded.context = None
            loaded.engine = None
        self._engines.clear()
        self._runtime = None
        self._stream = None

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._cuda_context.push()
            try:
                self._free()
            finally:
                # Current here, so detach destroys the context and pops it, whichever thread calls.
                self._cuda_context.detach()
        log.info("TensorRT backend closed")
