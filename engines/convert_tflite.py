"""Convert the pose .tflite models to ONNX. Runs INSIDE the isolated conversion venv (TensorFlow, tf2onnx).

Usage: python convert_tflite.py JOB.json   (written by engines/convert.py; see `run_converter`)

For each model: densify the detector's sparse weights (tf2onnx cannot read DENSIFY), check the dense
TFLite model gives the original's outputs, convert with tf2onnx, make the batch dimension dynamic, check
names and shapes, and record TFLite outputs on two random inputs for the caller's ONNX Runtime check.
Progress goes to stdout as "progress: ..." lines; TensorFlow's chatter goes to stderr (the caller's log).
This is the only file of the project that may import TensorFlow.
"""

from __future__ import annotations

import copy
import hashlib
import heapq
import importlib.util
import json
import os
import re
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import onnx
import tensorflow as tf
import tf2onnx
from onnx import numpy_helper
from tensorflow.lite.python import schema_py_generated as schema
from tensorflow.lite.tools import flatbuffer_utils


def _load_decoder():
    # By path, not `import engines.convert`: the project is not installed in this venv, and the package's
    # __init__ may one day import things this venv lacks. convert.py imports only stdlib + numpy at the top.
    spec = importlib.util.spec_from_file_location("_skeleton_convert", Path(__file__).with_name("convert.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while building the class
    spec.loader.exec_module(module)
    return module


_convert = _load_decoder()

BATCH = "batch"
_OPS = {value: key for key, value in vars(schema.BuiltinOperator).items() if not key.startswith("_")}
_NUMPY_TYPES = {
    schema.TensorType.FLOAT32: np.float32,
    schema.TensorType.FLOAT16: np.float16,
    schema.TensorType.INT8: np.int8,
    schema.TensorType.UINT8: np.uint8,
    schema.TensorType.INT32: np.int32,
}


def progress(message: str) -> None:
    print(f"progress: {message}", flush=True)


class StepError(RuntimeError):
    pass


# ---------------------------------------------------------------------------------------------------------
# Detector: sparse -> dense


def _op_name(model, operator) -> str:
    code = model.operatorCodes[operator.opcodeIndex]
    # Old files keep codes < 127 in deprecatedBuiltinCode, new ones in builtinCode.
    return _OPS.get(max(code.builtinCode, code.deprecatedBuiltinCode), "?")


def _segment_array(vector) -> np.ndarray:
    # array_segments / array_indices are a union of Int32Vector, Uint16Vector, Uint8Vector.
    return np.asarray(vector.values, dtype=np.int64)


def densify_model(source: Path, target: Path) -> int:
    """Write `source` with every DENSIFY op replaced by its decoded constant; returns how many."""
    model = flatbuffer_utils.read_model(str(source))
    removed = 0
    for subgraph in model.subgraphs:
        kept = []
        for operator in subgraph.operators:
            if _op_name(model, operator) != "DENSIFY":
                kept.append(operator)
                continue
            sparse = subgraph.tensors[operator.inputs[0]]
            dense_tensor = subgraph.tensors[operator.outputs[0]]
            sparsity = sparse.sparsity
            if sparsity is None:
                raise StepError(f"DENSIFY input {sparse.name!r} carries no sparsity parameters")
            dtype = _NUMPY_TYPES.get(sparse.type)
            if dtype is None:
                raise StepError(f"DENSIFY input {sparse.name!r}: unsupported tensor type {sparse.type}")
            values = np.frombuffer(bytes(bytearray(model.buffers[sparse.buffer].data)), dtype=dtype)
            dims = []
            for meta in sparsity.dimMetadata:
                if meta.format == schema.DimensionType.SPARSE_CSR:
                    dims.append(
                        _convert.SparseDim(
                            segments=_segment_array(meta.arraySegments),
                            indices=_segment_array(meta.arrayIndices),
                        )
                    )
                else:
                    dims.append(_convert.SparseDim(dense_size=int(meta.denseSize)))
            dense = _convert.densify_sparse(
                values,
                [int(d) for d in dense_tensor.shape],
                [int(d) for d in sparsity.traversalOrder],
                dims,
                [int(d) for d in sparsity.blockMap] if sparsity.blockMap is not None else (),
            )
            if dense_tensor.type != sparse.type:
                raise StepError(f"DENSIFY {sparse.name!r}: output type differs from input type")
            buffer = schema.BufferT()
            buffer.data = np.frombuffer(dense.astype(dtype).tobytes(), dtype=np.uint8)
            model.buffers.append(buffer)
            dense_tensor.buffer = len(model.buffers) - 1
            removed += 1
        subgraph.operators = kept
        _drop_unused_tensors(model, subgraph)
    flatbuffer_utils.write_model(model, str(target))
    return removed


def _drop_unused_tensors(model, subgraph) -> None:
    """Remove tensors no op, graph input/output or signature refers to (the sparse originals).

    tf2onnx turns every tensor holding a buffer into a constant, decoding it as dense: a sparse one left
    behind fails the same way the DENSIFY op did.
    """
    used = set(subgraph.inputs) | set(subgraph.outputs)
    for operator in subgraph.operators:
        used.update(int(i) for i in operator.inputs if i >= 0)
        used.update(int(i) for i in operator.outputs if i >= 0)
        if operator.intermediates is not None:
            used.update(int(i) for i in operator.intermediates if i >= 0)
    for signature in model.signatureDefs or []:
        for item in list(signature.inputs or []) + list(signature.outputs or []):
            used.add(int(item.tensorIndex))
    new_index = {}
    kept = []
    for old, tensor in enumerate(subgraph.tensors):
        if old in used:
            new_index[old] = len(kept)
            kept.append(tensor)
    subgraph.tensors = kept

    def remap(indices):
        return [new_index[int(i)] if i >= 0 else int(i) for i in indices]

    subgraph.inputs = remap(subgraph.inputs)
    subgraph.outputs = remap(subgraph.outputs)
    for operator in subgraph.operators:
        operator.inputs = remap(operator.inputs)
        operator.outputs = remap(operator.outputs)
        if operator.intermediates is not None:
            operator.intermediates = remap(operator.intermediates)
    for signature in model.signatureDefs or []:
        for item in list(signature.inputs or []) + list(signature.outputs or []):
            item.tensorIndex = new_index[int(item.tensorIndex)]


# ---------------------------------------------------------------------------------------------------------
# TFLite reference runs


def _tflite_run(path: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    interpreter = tf.lite.Interpreter(model_path=str(path), num_threads=2)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    outputs = {}
    for detail in interpreter.get_output_details():
        outputs[detail["name"]] = interpreter.get_tensor(detail["index"]).copy()
    return outputs


def _random_input(path: Path, seed: int, low: float, high: float) -> np.ndarray:
    interpreter = tf.lite.Interpreter(model_path=str(path))
    shape = interpreter.get_input_details()[0]["shape"]
    return np.random.default_rng(seed).uniform(low, high, size=tuple(shape)).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------
# ONNX: dynamic batch


def _dims(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def make_batch_dynamic(model: onnx.ModelProto) -> int:
    """Turn the fixed batch of 1 into a symbolic "batch"; returns how many Reshape constants changed.

    tf2onnx writes the batch of 1 into the graph's I/O and into the shape constants of Reshapes; a
    Resize with constant `sizes` would pin it too (none here: they use scales), so refuse one.
    """
    graph = model.graph
    for value_info in list(graph.input) + list(graph.output):
        dim = value_info.type.tensor_type.shape.dim[0]
        if dim.dim_param != BATCH and dim.dim_value != 1:
            raise StepError(f"{value_info.name}: first dimension {_dims(value_info)} is not a batch of 1")
        dim.Clear()
        dim.dim_param = BATCH
    # Intermediate shapes were inferred for batch 1; ONNX Runtime re-infers them.
    del graph.value_info[:]
    initializers = {init.name: init for init in graph.initializer}
    patched = 0
    for node in graph.node:
        if node.op_type == "Resize" and len(node.input) > 3 and node.input[3]:
            raise StepError(f"Resize {node.name} uses constant sizes: its batch would stay fixed")
        if node.op_type != "Reshape":
            continue
        shape_init = initializers.get(node.input[1])
        if shape_init is None:
            raise StepError(f"Reshape {node.name}: shape is computed, cannot check its batch")
        shape = numpy_helper.to_array(shape_init).copy()
        if shape.size == 0 or shape[0] != 1:
            continue  # already -1 (inferred) or not batch-leading
        # -1 when it is free (the other dims are per-sample constants); else 0 = copy the input's batch.
        shape[0] = -1 if -1 not in shape else 0
        # A fresh constant per node: tf2onnx shares shape constants between nodes.
        name = f"{node.input[1]}__dynamic_batch_{patched}"
        graph.initializer.append(numpy_helper.from_array(shape.astype(np.int64), name))
        node.input[1] = name
        patched += 1
    return patched


# ---------------------------------------------------------------------------------------------------------
# ONNX: canonical bytes

_GENERATED = re.compile(r"__\d+")  # tf2onnx's counter suffix: pad_const__1073, Identity_2__666


def canonicalize(model: onnx.ModelProto) -> None:
    """Make the file's bytes depend only on the graph, not on the conversion run.

    tf2onnx numbers the names it invents from a global counter and emits nodes in an order that changes
    from run to run (PYTHONHASHSEED does not fix it), so the sha256 would differ on every kiosk. The
    engine cache and the answer's `version` key on that sha256: sort the nodes topologically with ties
    broken by a structural hash, renumber the invented names in that order, sort initializers and
    attributes. Names that came from the TFLite model (and the graph's I/O) are kept.
    """
    graph = model.graph
    protected = {vi.name for vi in [*graph.input, *graph.output]}
    tensor_hash: dict[str, bytes] = {"": b""}
    for vi in graph.input:
        tensor_hash[vi.name] = hashlib.sha256(b"input:" + vi.name.encode()).digest()
    for init in graph.initializer:
        array = numpy_helper.to_array(init)
        tensor_hash[init.name] = hashlib.sha256(
            f"init:{array.dtype}:{array.shape}:".encode() + array.tobytes()
        ).digest()
    for node in graph.node:
        node.attribute.sort(key=lambda attribute: attribute.name)

    def node_key(node) -> bytes:
        digest = hashlib.sha256(f"{node.domain}:{node.op_type}:".encode())
        for attribute in node.attribute:
            digest.update(attribute.SerializeToString())
        for name in node.input:
            digest.update(tensor_hash[name])
        return digest.digest()

    consumers: dict[str, list[int]] = {}
    waiting = []
    for index, node in enumerate(graph.node):
        pending = {name for name in node.input if name not in tensor_hash}
        waiting.append(pending)
        for name in pending:
            consumers.setdefault(name, []).append(index)
    ready = []
    for index, pending in enumerate(waiting):
        if not pending:
            node = graph.node[index]
            heapq.heappush(ready, (node_key(node), "" if _GENERATED.search(node.name) else node.name, index))
    ordered = []
    while ready:
        key, _, index = heapq.heappop(ready)
        node = graph.node[index]
        ordered.append(node)
        for position, name in enumerate(node.output):
            tensor_hash[name] = hashlib.sha256(key + f":{position}".encode()).digest()
            for consumer in consumers.get(name, ()):
                waiting[consumer].discard(name)
                if not waiting[consumer]:
                    other = graph.node[consumer]
                    tie = "" if _GENERATED.search(other.name) else other.name
                    heapq.heappush(ready, (node_key(other), tie, consumer))
    if len(ordered) != len(graph.node):
        raise StepError("canonicalize: the ONNX graph has a cycle or an input nothing produces")

    renamed: dict[str, str] = {}

    def rename(name: str) -> str:
        if not name or name in protected or not _GENERATED.search(name):
            return name
        if name not in renamed:
            renamed[name] = f"t__{len(renamed)}"
        return renamed[name]

    nodes = [copy.deepcopy(node) for node in ordered]
    for node in nodes:
        node.input[:] = [rename(name) for name in node.input]
        node.output[:] = [rename(name) for name in node.output]
        node.name = rename(node.name) if node.name not in protected else node.name
    del graph.node[:]
    graph.node.extend(nodes)
    # Constants nothing reads any more (the batch-1 shapes make_batch_dynamic replaced) go.
    referenced = {name for node in nodes for name in node.input}
    initializers = [copy.deepcopy(init) for init in graph.initializer if rename(init.name) in referenced]
    for init in initializers:
        init.name = rename(init.name)
    initializers.sort(key=lambda init: init.name)
    del graph.initializer[:]
    graph.initializer.extend(initializers)


# ---------------------------------------------------------------------------------------------------------


def convert_one(entry: dict, opset: int, work: Path) -> dict:
    name = entry["name"]
    source = Path(entry["tflite"])
    result: dict = {}
    tflite_for_onnx = source
    low, high = (-1.0, 1.0) if name == "detector" else (0.0, 1.0)
    samples = {tag: _random_input(source, seed, low, high) for tag, seed in (("a", 1), ("b", 2))}

    if entry.get("densify"):
        started = time.monotonic()
        tflite_for_onnx = work / f"{name}.dense.tflite"
        removed = densify_model(source, tflite_for_onnx)
        worst = 0.0
        for x in samples.values():
            original, dense = _tflite_run(source, x), _tflite_run(tflite_for_onnx, x)
            for key in original:
                worst = max(worst, float(np.max(np.abs(original[key] - dense[key]))))
        if worst > 1e-6:
            raise StepError(f"the densified detector differs from the original by {worst:.3g} (TFLite)")
        result["densify"] = {"ops_removed": removed, "max_diff_vs_original": worst}
        progress(
            f"{name}: decoded {removed} sparse tensors, dropped the DENSIFY ops; TFLite outputs match "
            f"the original (max diff {worst:.2g}) [{time.monotonic() - started:.1f} s]"
        )

    started = time.monotonic()
    model, _ = tf2onnx.convert.from_tflite(str(tflite_for_onnx), opset=opset)
    patched = make_batch_dynamic(model)
    canonicalize(model)
    onnx.checker.check_model(model)
    expected = entry["expected_io"]
    inputs = {vi.name: _dims(vi) for vi in model.graph.input}
    outputs = {vi.name: _dims(vi) for vi in model.graph.output}
    if inputs != expected["inputs"] or outputs != expected["outputs"]:
        raise StepError(
            f"ONNX I/O {inputs} -> {outputs}, expected {expected['inputs']} -> {expected['outputs']}"
        )
    onnx.save(model, entry["onnx"])
    result["reshapes_patched"] = patched
    result["onnx_ops"] = sorted({node.op_type for node in model.graph.node})
    progress(
        f"{name}: converted to ONNX (opset {opset}, {len(model.graph.node)} nodes, batch dynamic via "
        f"{patched} Reshape patch{'es' if patched != 1 else ''}) [{time.monotonic() - started:.1f} s]"
    )

    # References from the ORIGINAL .tflite: the ONNX file must match what MediaPipe itself computes.
    arrays = {f"input_{tag}": x for tag, x in samples.items()}
    for tag, x in samples.items():
        for key, value in _tflite_run(source, x).items():
            arrays[f"{tag}/{key}"] = value
    np.savez(entry["reference"], **arrays)
    return result


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    job = json.loads(Path(argv[1]).read_text())
    report: dict = {
        "versions": {
            "tensorflow": tf.__version__,
            "tf2onnx": tf2onnx.__version__,
            "onnx": onnx.__version__,
            "numpy": np.__version__,
            "python": sys.version.split()[0],
        },
        "models": {},
    }
    with tempfile.TemporaryDirectory(prefix="skeleton-convert-") as work:
        for entry in job["models"]:
            try:
                report["models"][entry["name"]] = convert_one(entry, int(job["opset"]), Path(work))
            except Exception as exc:  # noqa: BLE001 - any failure ends the run; name the model and why
                traceback.print_exc()  # the full story for the log; the caller shows the last line
                print(
                    f"converting {entry['name']} ({entry['tflite']}) failed: {type(exc).__name__}: {exc}",
                    file=sys.stderr,
                    flush=True,
                )
                return 1
    Path(job["report"]).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
