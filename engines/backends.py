"""Which backend runs the models: config.engine.backend (auto | onnxruntime | tensorrt), and why.

Two backends, one explicit dict; each implementation is imported only when chosen, so a machine without
CUDA never imports TensorRT's module, and one without TensorRT never needs it.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from engines.base import Backend

if TYPE_CHECKING:
    from daemon.config import EngineConfig

log = logging.getLogger(__name__)

# backend name -> (module, class); both classes take (model_paths, engine_config).
BACKENDS: dict[str, tuple[str, str]] = {
    "onnxruntime": ("engines.onnxruntime", "OnnxRuntimeBackend"),
    "tensorrt": ("engines.tensorrt", "TensorRTBackend"),
}


def tensorrt_unavailable_reason() -> str | None:
    """Why TensorRT cannot run here (module, pycuda, CUDA device), or None when it can."""
    from engines.tensorrt import unavailable_reason

    return unavailable_reason()


def select_backend(config: EngineConfig) -> tuple[str, str]:
    """The backend to open and the reason, for the start-up log and /healthz."""
    if config.backend in BACKENDS:
        return config.backend, f"engine.backend = {config.backend} in the configuration"
    if config.backend != "auto":
        raise ValueError(f"engine.backend: one of auto, {', '.join(BACKENDS)}; got {config.backend!r}")
    missing = tensorrt_unavailable_reason()
    if missing is None:
        return "tensorrt", "auto: tensorrt, pycuda and a CUDA device are present"
    return "onnxruntime", f"auto: tensorrt: {missing}"


def open_backend(model_paths: dict[str, Path], config: EngineConfig) -> Backend:
    """Construct the selected backend (in the calling thread: the worker that will own the device)."""
    name, reason = select_backend(config)
    log.info("inference backend %s (%s)", name, reason)
    module_name, class_name = BACKENDS[name]
    backend_class = getattr(importlib.import_module(module_name), class_name)
    backend: Backend = backend_class(model_paths, config)
    return backend
