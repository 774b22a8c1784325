"""Read a model's I/O (names, shapes, dtypes) from its ONNX file, for every backend.

Only the graph's declared inputs and outputs are read; weights are not parsed beyond what `onnx.load`
needs. A dimension without a fixed size is kept as its symbolic name (the batch, usually).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from engines.base import ModelSpec, TensorSpec


def _tensor_spec(value_info: onnx.ValueInfoProto) -> TensorSpec:
    tensor_type = value_info.type.tensor_type
    shape: list[int | str] = []
    for index, dim in enumerate(tensor_type.shape.dim):
        if dim.HasField("dim_value"):
            shape.append(int(dim.dim_value))
        elif dim.HasField("dim_param") and dim.dim_param:
            shape.append(dim.dim_param)
        else:
            # An anonymous dynamic dimension still needs a name to be told apart from a fixed one.
            shape.append(f"{value_info.name}_dim{index}")
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)).name
    return TensorSpec(name=value_info.name, shape=tuple(shape), dtype=dtype)


def read_model_spec(onnx_path: Path, name: str | None = None) -> ModelSpec:
    """The model's inputs and outputs as its ONNX graph declares them; `name` defaults to the file stem."""
    model = onnx.load(str(onnx_path), load_external_data=False)
    graph = model.graph
    # Old exporters list initializers among the inputs; they are weights, not feeds.
    initializers = {init.name for init in graph.initializer}
    inputs = tuple(_tensor_spec(vi) for vi in graph.input if vi.name not in initializers)
    outputs = tuple(_tensor_spec(vi) for vi in graph.output)
    return ModelSpec(name=name or Path(onnx_path).stem, path=Path(onnx_path), inputs=inputs, outputs=outputs)
