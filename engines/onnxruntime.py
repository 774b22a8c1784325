"""ONNX Runtime backend: CPU everywhere; CUDA / TensorRT execution providers when onnxruntime-gpu has them."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

from daemon.config import EngineConfig

log = logging.getLogger(__name__)

# Preferred order when onnxruntime-gpu is installed; plain onnxruntime only offers the CPU.
_PROVIDER_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def _session_options(threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Spinning pool threads starve the decode/encode threads on a small CPU (models.md: 41 -> 85 ms).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, model_paths: dict[str, Path], config: EngineConfig):
        available = set(ort.get_available_providers())
        self.providers = [p for p in _PROVIDER_ORDER if p in available]
        options = _session_options(config.threads)
        self._sessions: dict[str, ort.InferenceSession] = {}
        for model, path in model_paths.items():
            self._sessions[model] = ort.InferenceSession(str(path), sess_options=options, providers=self.providers)
        self.description = f"onnxruntime {ort.__version__} ({', '.join(self.providers)}, {config.threads} thread(s) a session)"
        log.info("ONNX Runtime backend: %s", self.description)

    def run(self, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        session = self._sessions[model]
        names = [output.name for output in session.get_outputs()]
        # Sessions are safe to run from several threads at once: the two views run side by side.
        return dict(zip(names, session.run(names, inputs)))

    def close(self) -> None:
        self._sessions.clear()
