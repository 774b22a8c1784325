"""Stand-ins for `tensorrt` and `pycuda.driver`, just enough to drive engines.tensorrt without a GPU.

They check the calling sequence (shapes set before execution, addresses bound, copies through the bound
buffers, context pushed) and compute the tiny test model of test_tensorrt.py with numpy. They say
nothing about the real libraries' behaviour: the GPU tests do.

The stand-in `tensorrt` has the names of the version it plays, as NVIDIA's real bindings do (checked
against them by tests/test_tensorrt_real.py): 8.6 has EXPLICIT_BATCH and no STRONGLY_TYPED; 10.x has
both; 11.x has only STRONGLY_TYPED (= 0), no BuilderFlag.FP16 and no Builder.platform_has_fast_fp16.
With `real` (a real binding module) its enums, ILogger, IProgressMonitor and nptype are the real ones,
and each stand-in class names the real class it plays in `trt_name` (tests/real_tensorrt.py checks
every call against that class's signatures).
"""

from __future__ import annotations

import itertools
import tempfile
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from engines.engine_cache import tensorrt_major
from engines.onnx_spec import read_model_spec


def make_fakes(
    compute: Callable[[np.ndarray], dict[str, np.ndarray]], version: str = "10.3.0", real: Any = None,
    device_io: Any = None,
):
    """(trt, cuda, state): `compute` maps the input batch to the model's outputs.

    device_io: the real `pycuda.driver`, for a run on a real GPU with only TensorRT played: the stand-in
    engine then reads its input from, and writes its outputs to, the real device memory bound with
    set_tensor_address, and "a current context" means a real current CUDA context (the returned `cuda`
    stand-in is then not used)."""
    major = tensorrt_major(version)
    state = types.SimpleNamespace(builds=0, context_stack=[], contexts_alive=0, executions=0, device_memory={})
    addresses = itertools.count(0x1000, 0x1000)

    # --- pycuda.driver ---
    class Error(Exception):
        pass

    class DeviceAllocation:
        def __init__(self, nbytes: int) -> None:
            self.address = next(addresses)
            self.memory = np.zeros(nbytes, np.uint8)
            state.device_memory[self.address] = self
            self.freed = False

        def __int__(self) -> int:
            return self.address

        def free(self) -> None:
            self.freed = True

    class CudaContext:
        def __init__(self) -> None:
            state.contexts_alive += 1
            self.alive = True

        def push(self) -> None:
            state.context_stack.append(self)

        def pop(self) -> None:
            assert state.context_stack and state.context_stack[-1] is self, "pop of a context not current"
            state.context_stack.pop()

        def detach(self) -> None:
            assert state.context_stack and state.context_stack[-1] is self, "detach while not current"
            state.context_stack.pop()
            state.contexts_alive -= 1
            self.alive = False

    class Device:
        def __init__(self, index: int) -> None:
            self.index = index

        @staticmethod
        def count() -> int:
            return 1

        def name(self) -> str:
            return "Fake Orin"

        def compute_capability(self) -> tuple[int, int]:
            return (8, 7)

        def make_context(self) -> CudaContext:
            context = CudaContext()
            context.push()
            return context

    class Stream:
        handle = 0xABC

        def synchronize(self) -> None:
            pass

    def require_context() -> None:
        if device_io is not None:
            assert device_io.Context.get_current() is not None, "CUDA call without a current context"
            return
        assert state.context_stack, "CUDA call without a current context"

    def mem_alloc(nbytes: int) -> DeviceAllocation:
        require_context()
        return DeviceAllocation(nbytes)

    def pagelocked_empty(shape, dtype) -> np.ndarray:
        require_context()
        return np.empty(shape, dtype)

    def memcpy_htod_async(device: DeviceAllocation, host: np.ndarray, stream: Stream) -> None:
        require_context()
        assert host.flags.c_contiguous
        device.memory[: host.nbytes] = host.reshape(-1).view(np.uint8)

    def memcpy_dtoh_async(host: np.ndarray, device: DeviceAllocation, stream: Stream) -> None:
        require_context()
        host.reshape(-1).view(np.uint8)[:] = device.memory[: host.nbytes]

    cuda = types.SimpleNamespace(
        Error=Error,
        init=lambda: None,
        Device=Device,
        Stream=Stream,
        mem_alloc=mem_alloc,
        pagelocked_empty=pagelocked_empty,
        memcpy_htod_async=memcpy_htod_async,
        memcpy_dtoh_async=memcpy_dtoh_async,
    )

    # --- tensorrt ---
    class ILogger:
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

        def __init__(self) -> None:
            pass

    class Network:
        trt_name = "INetworkDefinition"

        def __init__(self, flags: int) -> None:
            self.flags = flags
            self.onnx_path: str | None = None

    class OnnxParser:
        trt_name = "OnnxParser"
        num_errors = 0

        def __init__(self, network: Network, logger: ILogger) -> None:
            self.network = network

        def parse(self, model: bytes, path: str | None = None) -> bool:
            # The plan names an ONNX file (see deserialize_cuda_engine): keep the bytes in one, in a
            # folder that lives as long as the stand-ins.
            if not hasattr(state, "parsed_dir"):
                state.parsed_dir = tempfile.TemporaryDirectory(prefix="fake-trt-")
            path = Path(state.parsed_dir.name) / f"parsed-{len(list(Path(state.parsed_dir.name).iterdir()))}.onnx"
            path.write_bytes(model)
            self.network.onnx_path = str(path)
            self.network.parsed_bytes = len(model)
            return True

        def parse_from_file(self, path: str) -> bool:
            self.network.onnx_path = path
            return True

    class TimingCache:
        trt_name = "ITimingCache"

        def __init__(self, data: bytes) -> None:
            self.data = data

        def serialize(self) -> bytes:
            return b"timing cache"

    class BuilderConfig:
        trt_name = "IBuilderConfig"

        def __init__(self) -> None:
            self.flags: set = set()
            self.profiles: list = []
            self.timing_cache: TimingCache | None = None

        def set_memory_pool_limit(self, pool: str, size: int) -> None:
            self.workspace = size

        def set_flag(self, flag: str) -> None:
            self.flags.add(flag)

        def add_optimization_profile(self, profile: dict) -> int:
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def create_timing_cache(self, data: bytes) -> TimingCache:
            return TimingCache(data)

        def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
            self.timing_cache = cache
            return True

        def get_timing_cache(self) -> TimingCache:
            return self.timing_cache

    class Profile(dict):
        trt_name = "IOptimizationProfile"

        def set_shape(self, name: str, min_shape, opt_shape, max_shape) -> None:
            self[name] = (tuple(min_shape), tuple(opt_shape), tuple(max_shape))

    class Builder:
        trt_name = "Builder"

        def __init__(self, logger: ILogger) -> None:
            pass

        def create_network(self, flags: int) -> Network:
            return Network(flags)

        def create_builder_config(self) -> BuilderConfig:
            return BuilderConfig()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: BuilderConfig) -> bytes:
            state.builds += 1
            state.last_build = types.SimpleNamespace(network=network, config=config)
            return b"plan:" + network.onnx_path.encode()

    class IInt8EntropyCalibrator2:
        def __init__(self) -> None:
            pass

    class TensorIOMode:
        INPUT = "input"
        OUTPUT = "output"

    class ExecutionContext:
        trt_name = "IExecutionContext"

        def __init__(self, engine: Engine) -> None:
            self.engine = engine
            self.addresses: dict[str, int] = {}
            self.input_shapes: dict[str, tuple] = {}

        def set_tensor_address(self, name: str, address: int) -> bool:
            self.addresses[name] = address
            return True

        def set_input_shape(self, name: str, shape) -> bool:
            self.input_shapes[name] = tuple(shape)
            return True

        def _batch(self) -> int:
            return next(iter(self.input_shapes.values()))[0]

        def get_tensor_shape(self, name: str) -> tuple:
            spec = next(s for s in self.engine.spec.outputs if s.name == name)
            return (self._batch(), *spec.shape[1:])

        def execute_async_v3(self, stream_handle: int) -> bool:
            require_context()
            state.executions += 1
            (input_spec,) = self.engine.spec.inputs
            shape = self.input_shapes[input_spec.name]
            if device_io is not None:
                # Synchronous copies on the legacy default stream: they wait for the backend's stream
                # (a blocking stream), as a real engine's kernels on that stream would come after its
                # H2D copy; the backend's D2H copies, queued after this call, see what is written here.
                x = np.empty(shape, np.float32)
                device_io.memcpy_dtoh(x, self.addresses[input_spec.name])
                for name, value in compute(x).items():
                    device_io.memcpy_htod(self.addresses[name], np.ascontiguousarray(value, np.float32))
                return True
            memory = state.device_memory[self.addresses[input_spec.name]].memory
            x = memory[: int(np.prod(shape)) * 4].view(np.float32).reshape(shape)
            for name, value in compute(x).items():
                data = np.ascontiguousarray(value, np.float32).reshape(-1).view(np.uint8)
                state.device_memory[self.addresses[name]].memory[: data.size] = data
            return True

    class Engine:
        trt_name = "ICudaEngine"

        def __init__(self, onnx_path: str) -> None:
            self.spec = read_model_spec(Path(onnx_path))
            self.names = [s.name for s in self.spec.inputs] + [s.name for s in self.spec.outputs]
            self.num_io_tensors = len(self.names)

        def get_tensor_name(self, index: int) -> str:
            return self.names[index]

        def get_tensor_mode(self, name: str) -> str:
            modes = trt.TensorIOMode
            return modes.INPUT if name in {s.name for s in self.spec.inputs} else modes.OUTPUT

        def get_tensor_dtype(self, name: str) -> Any:
            return real.DataType.FLOAT if real is not None else "float32"

        def create_execution_context(self) -> ExecutionContext:
            require_context()
            return ExecutionContext(self)

    class Runtime:
        trt_name = "Runtime"

        def __init__(self, logger: ILogger) -> None:
            pass

        def deserialize_cuda_engine(self, data: bytes) -> Engine | None:
            require_context()
            if not data.startswith(b"plan:"):
                return None
            return Engine(data[len(b"plan:") :].decode())

    if major < 11:
        Builder.platform_has_fast_fp16 = True  # removed in 11.x
    if major < 10:
        creation_flags = types.SimpleNamespace(EXPLICIT_BATCH=0, EXPLICIT_PRECISION=1)
    elif major == 10:
        creation_flags = types.SimpleNamespace(EXPLICIT_BATCH=0, STRONGLY_TYPED=1)
    else:  # 11.x: explicit batch is the only mode, and STRONGLY_TYPED is 0 (ignored: always strongly typed)
        creation_flags = types.SimpleNamespace(STRONGLY_TYPED=0)
    # INT8 + the entropy calibrator: implicit int8 (issue 15), gone in TensorRT 11 as FP16 is.
    builder_flags = types.SimpleNamespace(FP16="fp16", INT8="int8") if major < 11 else types.SimpleNamespace()
    trt = types.SimpleNamespace(
        __version__=version,
        ILogger=ILogger,
        Builder=Builder,
        Runtime=Runtime,
        OnnxParser=OnnxParser,
        TensorIOMode=TensorIOMode,
        NetworkDefinitionCreationFlag=creation_flags,
        MemoryPoolType=types.SimpleNamespace(WORKSPACE="workspace"),
        BuilderFlag=builder_flags,
        nptype=lambda dtype: np.dtype(dtype).type,
    )
    if major < 11:
        trt.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2
    if real is not None:
        for name in ("ILogger", "IProgressMonitor", "TensorIOMode", "NetworkDefinitionCreationFlag",
                     "MemoryPoolType", "BuilderFlag", "DataType", "nptype", "IInt8EntropyCalibrator2"):
            if hasattr(real, name):
                setattr(trt, name, getattr(real, name))
            elif hasattr(trt, name):
                delattr(trt, name)
    return trt, cuda, state
