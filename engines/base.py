"""The one interface every inference backend implements (ONNX Runtime, TensorRT).

A backend holds a set of named models. `run` takes named input arrays whose first dimension is the batch
(a batch of views and their mirrors) and returns named output arrays with the same batch dimension.
It knows nothing of posture or transports.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int | str, ...]  # a str names a dynamic dimension (the batch)
    dtype: str = "float32"


@dataclass(frozen=True)
class ModelSpec:
    """One model's I/O as the ONNX file declares it."""

    name: str  # "detector", "landmark_heavy", ...
    path: Path
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


class Backend(Protocol):
    name: str  # "onnxruntime" or "tensorrt"
    description: str  # what runs it (providers, device), for logs and /healthz

    def run(self, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch through `model`; safe to call from several threads at once."""
        ...

    def close(self) -> None:
        """Free sessions, engines and device buffers."""
        ...
