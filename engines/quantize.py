"""The int8 models: ONNX Runtime static quantization of the fp32 detector and landmark models.

QDQ format (QuantizeLinear/DequantizeLinear pairs that ONNX Runtime fuses into int8 kernels: VNNI / AVX-512
on x86, dot-product on ARM), weights int8 per output channel, activations uint8 with ranges from
calibration on the project's own drawings (engines/calibration_set.py, never a photo). The layers whose
quantization moves the landmarks stay in float: FLOAT_NODES names them, measured layer by layer with
bench/quantize_layers.py (README "int8" says which and why).

Runs in the daemon's own venv (onnxruntime.quantization needs only onnx and numpy), called by `skeletond
models fetch` when the int8 files are missing or stale.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from engines import calibration_set

logger = logging.getLogger(__name__)

# Bump when the recipe below changes (calibration set, method, float layers): the int8 files are redone.
# 2: the landmark calibration crops are cut as the pipeline now cuts them (area-averaged, pose.landmark_input).
QUANTIZATION_REVISION = 2
CALIBRATION_SEED = 15
CALIBRATION_DRAWINGS = 24  # each gives the detector 2 inputs and the landmark model 2 + 2 jittered crops
CALIBRATION_METHOD = "MinMax"

# Nodes kept in float, by model (entries as float_node_names reads them), from the layer measurements
# (bench/quantize_layers.py, README "int8"): the landmark models' five output heads (the last Conv of the
# landmarks, pose flag, segmentation, heatmap and world landmarks, and the trunk's last activation they
# share). Their int8 weights (32-33 dB SQNR, the lowest of the model) alone moved the raw landmarks by
# about 6 of 256 crop px; kept in float: heavy's raw drift 12.7 -> 6.0 px at a 0.55 -> 0.59 time ratio.
_HEADS = tuple(f"output:{name}" for name in ("Identity", "Identity_1", "Identity_2", "Identity_3", "Identity_4"))
FLOAT_NODES: dict[str, tuple[str, ...]] = {"detector": (), "lite": _HEADS, "full": _HEADS, "heavy": _HEADS}


def _affine_jitter(rng: np.random.Generator, roi):
    from daemon.pose import Roi

    scale = rng.uniform(0.9, 1.12)
    return Roi(
        roi.cx + rng.normal(0, 0.04) * roi.side,
        roi.cy + rng.normal(0, 0.04) * roi.side,
        roi.side * scale,
        roi.rotation + rng.normal(0, 0.06),
    )


def calibration_inputs(detector_fp32: Path, count: int = CALIBRATION_DRAWINGS, seed: int = CALIBRATION_SEED
                       ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(detector batches, landmark batches): the inputs the pipeline makes from the drawings.

    The landmark crops come from the fp32 detector's ROI, as in the daemon; a drawing it misses gives a
    crop at the ROI of the drawn figure's own box so that every drawing still counts.
    """
    import onnxruntime as ort

    from daemon import pose

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(detector_fp32), options, providers=["CPUExecutionProvider"])

    class _Detector:
        def run(self, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return dict(zip(["Identity", "Identity_1"], session.run(["Identity", "Identity_1"], inputs)))

    rng = np.random.default_rng(seed + 1)
    detector_batches, landmark_batches = [], []
    for image in calibration_set.drawings(count, seed):
        tensor, _ = pose.detector_input(image)
        detector_batches.append(np.stack([tensor, tensor[:, ::-1]]))
        found = pose.detect(_Detector(), image, 0.5, symmetric=True)
        if found:
            roi = pose.detection_roi(found[0])
        else:
            height, width = image.shape[:2]
            roi = pose.Roi(width / 2, height / 2, 0.9 * height, 0.0)
        landmark_batches.append(pose.landmark_input(image, roi, with_mirror=True))
        landmark_batches.append(pose.landmark_input(image, _affine_jitter(rng, roi), with_mirror=True))
    return detector_batches, landmark_batches


class _Reader:
    """onnxruntime.quantization's CalibrationDataReader over a list of input batches."""

    def __init__(self, batches: Sequence[np.ndarray], input_name: str = "input_1"):
        self._batches = list(batches)
        self._input_name = input_name
        self._iter: Iterator[np.ndarray] = iter(self._batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._iter, None)
        return None if batch is None else {self._input_name: batch}

    def rewind(self) -> None:
        self._iter = iter(self._batches)


def float_node_names(model_path: Path, keep_float: Sequence[str]) -> list[str]:
    """Node names to exclude: each entry of keep_float is a node name, or `op:Type` for every node of a type,
    or `output:NAME` for the nodes that compute a graph output and its last 3 producers."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    nodes = list(model.graph.node)
    names: list[str] = []
    producer = {out: node for node in nodes for out in node.output}
    for entry in keep_float:
        if entry.startswith("op:"):
            names += [n.name for n in nodes if n.op_type == entry[3:]]
        elif entry.startswith("output:"):
            frontier, depth = [entry[7:]], 0
            while frontier and depth < 3:
                nxt = []
                for tensor in frontier:
                    node = producer.get(tensor)
                    if node is not None:
                        names.append(node.name)
                        nxt += list(node.input)
                frontier, depth = nxt, depth + 1
        else:
            names.append(entry)
    return sorted(set(names))


def quantize_model(fp32_path: Path, int8_path: Path, batches: Sequence[np.ndarray],
                   nodes_to_exclude: Sequence[str] = (), method: str = CALIBRATION_METHOD) -> float:
    """Write the QDQ int8 model; returns the seconds it took."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=".quantize-", dir=int8_path.parent) as work:
        prepared = Path(work) / "prepared.onnx"
        # Shape inference and graph fusions first (ONNX Runtime's recommended pre-processing).
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(int8_path),
            _Reader(batches),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=getattr(CalibrationMethod, method),
            nodes_to_exclude=list(nodes_to_exclude),
            extra_options={"CalibTensorRangeSymmetric": False, "ActivationSymmetric": False},
        )
    return time.monotonic() - started


def recipe(name: str) -> dict:
    """What makes one model's int8 file: recorded in the manifest, a change re-quantizes that model."""
    return {
        "revision": QUANTIZATION_REVISION,
        "format": "QDQ, weights int8 per channel, activations uint8",
        "calibration": {
            "method": CALIBRATION_METHOD,
            "inputs": "engines/calibration_set.py drawings",
            "drawings": CALIBRATION_DRAWINGS,
            "seed": CALIBRATION_SEED,
        },
        "float_nodes": list(FLOAT_NODES[name]),
    }


def ensure_int8(models_dir: Path, manifest: dict, progress) -> dict:
    """Quantize the models whose int8 file is missing or stale; returns the manifest's int8 section.

    Incremental: a models dir with current int8 files only re-hashes them.
    """
    from engines import models
    from engines.files import sha256_file

    wanted = {name: recipe(name) for name in models.MODEL_NAMES}
    problems = models.verify_int8(models_dir, manifest, wanted)
    entries = dict(manifest.get(models.INT8_KEY, {}))
    stale = [name for name in models.MODEL_NAMES if any(p.startswith(f"{name} int8:") for p in problems)]
    if not stale:
        return entries
    started = time.monotonic()
    detector_batches, landmark_batches = calibration_inputs(models_dir / models.ONNX_FILES["detector"])
    progress(
        f"  calibration inputs: {len(detector_batches)} drawings -> {2 * len(detector_batches)} detector inputs, "
        f"{2 * len(landmark_batches)} landmark crops ({time.monotonic() - started:.1f} s)"
    )
    for name in stale:
        fp32_path = models_dir / models.ONNX_FILES[name]
        int8_path = models_dir / models.INT8_FILES[name]
        batches = detector_batches if name == "detector" else landmark_batches
        excluded = float_node_names(fp32_path, FLOAT_NODES[name])
        staging = int8_path.with_name(f".{int8_path.name}.tmp")
        try:
            seconds = quantize_model(fp32_path, staging, batches, excluded)
            staging.replace(int8_path)
        finally:
            staging.unlink(missing_ok=True)
        entries[name] = {
            "file": models.INT8_FILES[name],
            "sha256": sha256_file(int8_path),
            "bytes": int8_path.stat().st_size,
            "from_sha256": manifest["models"][name]["sha256"],
            "recipe": wanted[name],
            "float_node_count": len(excluded),
            "seconds": round(seconds, 1),
        }
        progress(f"  {name}: {int8_path.name} ({len(excluded)} nodes kept in float, {seconds:.1f} s)")
    return entries


# --- TensorRT int8 from the same calibration ---------------------------------------------------------------


def activation_ranges(int8_path: Path) -> dict[str, float]:
    """{tensor name: absolute range} of every activation the int8 model quantizes (its QuantizeLinear
    nodes' scale and zero point), i.e. the calibration's result, in the fp32 model's tensor names."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(int8_path))
    constants = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    ranges: dict[str, float] = {}
    for node in model.graph.node:
        if node.op_type != "QuantizeLinear" or node.input[1] not in constants or node.input[0] in constants:
            continue
        scale = float(np.asarray(constants[node.input[1]]).reshape(-1)[0])
        zero = int(np.asarray(constants[node.input[2]]).reshape(-1)[0]) if len(node.input) > 2 else 0
        # uint8: the representable interval is scale * ([0, 255] - zero); TensorRT wants its larger side.
        ranges[node.input[0]] = scale * max(zero, 255 - zero)
    return ranges


def tensorrt_calibration_cache(int8_path: Path, tensorrt_version: str) -> bytes:
    """A TensorRT calibration cache (text: a header, then `tensor: big-endian float32 scale in hex`,
    scale = range / 127) holding the int8 model's activation ranges, so TensorRT's implicit int8 build
    uses the same calibration as ONNX Runtime without a calibration pass of its own.

    Tensors TensorRT names differently (fused layers) are absent from the cache; TensorRT then keeps
    those layers in fp16/fp32 (BuilderFlag.FP16 is set with INT8).
    """
    import struct

    parts = [int(p) for p in tensorrt_version.split(".")[:3] if p.isdigit()] + [0, 0, 0]
    header = f"TRT-{parts[0] * 1000 + parts[1] * 100 + parts[2]}-EntropyCalibration2"
    lines = [header]
    for name, amax in sorted(activation_ranges(int8_path).items()):
        lines.append(f"{name}: {struct.pack('>f', max(amax, 1e-8) / 127.0).hex()}")
    return ("\n".join(lines) + "\n").encode()
