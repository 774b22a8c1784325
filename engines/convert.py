"""TFLite -> ONNX conversion, seen from the daemon's side, and the sparse-tensor decoder.

TensorFlow and tf2onnx live only in an isolated venv (`config.models.convert_venv`): this module creates
it, runs `convert_tflite.py` in it, then checks the ONNX files with the daemon's own ONNX Runtime against
the TFLite outputs the script recorded. The CSR decoder is pure numpy so that it can be unit-tested
without TensorFlow; `convert_tflite.py` loads this file by path, hence only stdlib and numpy at the top.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]

CONVERT_SCRIPT = Path(__file__).resolve().parent / "convert_tflite.py"
_VENV_MARKER = "skeleton-convert-pins.json"

# ONNX Runtime vs TFLite on the same random input (models.md measured 1.1e-3 px on landmarks, 1e-3 on
# detector boxes). Landmark xy is what the pipeline uses; the other outputs get looser, scale-aware bounds.
LANDMARK_XY_TOL_PX = 2e-3
DETECTOR_TOL = 1e-3
BATCH_TOL = 2e-4


class ConversionError(RuntimeError):
    """A conversion step failed; the message names the step and the model."""


# ---------------------------------------------------------------------------------------------------------
# Sparse tensors (TFLite sparsity format)


@dataclass(frozen=True)
class SparseDim:
    """One entry of a TFLite tensor's `dim_metadata`, in traversal order."""

    dense_size: int = 0  # DENSE: the dimension's size
    segments: np.ndarray | None = None  # SPARSE_CSR: array_segments (one more than the parent positions)
    indices: np.ndarray | None = None  # SPARSE_CSR: array_indices

    @property
    def is_csr(self) -> bool:
        return self.segments is not None


def densify_sparse(
    values: np.ndarray,
    dense_shape: Sequence[int],
    traversal_order: Sequence[int],
    dim_metadata: Sequence[SparseDim],
    block_map: Sequence[int] = (),
) -> np.ndarray:
    """Decode a TFLite sparse tensor to a dense array, as TFLite's DENSIFY op would.

    `values` are the stored non-zeros in traversal order. Each traversal level is either dense (every
    index, position = parent * size + i) or CSR (the parent position selects a segment of indices).
    Levels beyond the tensor's rank are block dimensions of the original dims named in `block_map`.
    """
    rank = len(dense_shape)
    if len(traversal_order) != len(dim_metadata) or len(traversal_order) != rank + len(block_map):
        raise ValueError(
            f"sparse tensor: {len(traversal_order)} traversal levels, {len(dim_metadata)} dim metadata, "
            f"rank {rank} + {len(block_map)} block dims"
        )
    values = np.asarray(values).reshape(-1)
    positions = np.zeros(1, dtype=np.int64)
    coords: list[np.ndarray] = []  # per traversal level, the index of every leaf reached so far
    for level, dim in enumerate(dim_metadata):
        if dim.is_csr:
            segments = np.asarray(dim.segments, dtype=np.int64)
            indices = np.asarray(dim.indices, dtype=np.int64)
            if positions.size and positions.max() + 1 >= segments.size:
                raise ValueError(f"sparse tensor: level {level} has too few array_segments ({segments.size})")
            starts, ends = segments[positions], segments[positions + 1]
            counts = ends - starts
            if np.any(counts < 0) or (ends.size and ends.max() > indices.size):
                raise ValueError(f"sparse tensor: level {level} array_segments out of order or out of range")
            total = int(counts.sum())
            # The concatenation of range(start, end) for every parent, without a Python loop.
            offsets = np.repeat(np.cumsum(counts) - counts, counts)
            positions = np.arange(total, dtype=np.int64) - offsets + np.repeat(starts, counts)
            coords = [np.repeat(c, counts) for c in coords] + [indices[positions]]
        else:
            size = int(dim.dense_size)
            parents = positions.size
            positions = (positions[:, None] * size + np.arange(size, dtype=np.int64)).reshape(-1)
            coords = [np.repeat(c, size) for c in coords] + [
                np.tile(np.arange(size, dtype=np.int64), parents)
            ]
    if positions.size and positions.max() >= values.size:
        raise ValueError(f"sparse tensor: needs value {positions.max()} but only {values.size} are stored")

    # Back from traversal order to the tensor's own dims; a blocked dim is outer * block + inner.
    block_sizes = {}
    for level, dim_index in enumerate(traversal_order):
        if dim_index >= rank:
            block_sizes[block_map[dim_index - rank]] = int(dim_metadata[level].dense_size)
    full = [np.zeros(positions.size, dtype=np.int64) for _ in range(rank)]
    for level, dim_index in enumerate(traversal_order):
        if dim_index < rank:
            full[dim_index] += coords[level] * block_sizes.get(dim_index, 1)
        else:
            full[block_map[dim_index - rank]] += coords[level]
    for axis, (index, size) in enumerate(zip(full, dense_shape)):
        if index.size and index.max() >= size:
            raise ValueError(f"sparse tensor: index {index.max()} beyond dim {axis} of size {size}")
    dense = np.zeros(tuple(int(s) for s in dense_shape), dtype=values.dtype)
    dense[tuple(full)] = values[positions]
    return dense


# ---------------------------------------------------------------------------------------------------------
# The isolated conversion venv


def convert_requirements() -> list[str]:
    from engines import models

    # tensorflow-cpu has x86_64 wheels only; elsewhere (a Jetson) the plain wheel is the CPU build.
    tensorflow = "tensorflow-cpu" if platform.machine().lower() in ("x86_64", "amd64") else "tensorflow"
    return [f"{tensorflow}=={models.TENSORFLOW_VERSION}", f"tf2onnx=={models.TF2ONNX_VERSION}"]


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_convert_venv(venv: Path, progress: Progress) -> Path:
    """Create (or reuse) the venv holding the pinned TensorFlow + tf2onnx; returns its python."""
    requirements = convert_requirements()
    python = venv_python(venv)
    marker = venv / _VENV_MARKER
    try:
        if python.exists() and json.loads(marker.read_text()) == requirements:
            progress(f"  conversion venv ready: {venv} ({', '.join(requirements)})")
            return python
    except (OSError, ValueError):
        pass  # no marker or an unreadable one: (re)install below
    if not python.exists():
        progress(f"  creating the conversion venv {venv}")
        _run_step(
            [sys.executable, "-m", "venv", str(venv)],
            f"could not create the conversion venv {venv}",
        )
    progress(f"  installing {' '.join(requirements)} into {venv} from PyPI (a few minutes the first time)")
    _run_step(
        [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--quiet", *requirements],
        f"could not install {' '.join(requirements)} into {venv} (is PyPI reachable?)",
    )
    marker.write_text(json.dumps(requirements))
    return python


def _run_step(command: list[str], failure: str) -> None:
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise ConversionError(f"{failure}: {exc}") from None
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-15:])
        raise ConversionError(f"{failure} (exit {result.returncode}):\n{tail}")


def run_converter(python: Path, job: dict, work_dir: Path, progress: Progress) -> dict:
    """Run convert_tflite.py in the venv on `job`; returns its report. Streams its progress lines."""
    job_path = work_dir / "job.json"
    report_path = work_dir / "report.json"
    log_path = work_dir / "convert.log"
    job_path.write_text(json.dumps({**job, "report": str(report_path)}, indent=1))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    # The script must not see the daemon's venv packages: only the conversion venv's own.
    env.pop("PYTHONPATH", None)
    with open(log_path, "w") as log:
        try:
            process = subprocess.Popen(
                # -I: without it the script's own directory (engines/) heads sys.path, and a project module
                # named like a stdlib one (as engines/select.py once did) would shadow it.
                [str(python), "-I", str(CONVERT_SCRIPT), str(job_path)],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env=env,
            )
        except OSError as exc:
            raise ConversionError(f"could not start the converter {python}: {exc}") from None
        for line in process.stdout or ():
            line = line.rstrip()
            if line.startswith("progress: "):
                progress("  " + line[len("progress: ") :])
            elif line:
                logger.info("converter: %s", line)
        code = process.wait()
    if code != 0 or not report_path.exists():
        log_text = log_path.read_text(errors="replace").splitlines()
        # The script's own error is its last line; TensorFlow's chatter comes before.
        tail = "\n".join(line for line in log_text[-12:] if line.strip())
        raise ConversionError(f"the converter failed (exit {code}); its log {log_path} ends:\n{tail}")
    return json.loads(report_path.read_text())


# ---------------------------------------------------------------------------------------------------------
# Checks with the daemon's runtime


def _session(path: Path):
    import onnxruntime as ort  # the daemon's runtime; imported here so the decoder needs only numpy

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def check_io(name: str, path: Path) -> dict[str, dict[str, list]]:
    """The ONNX file's declared I/O must be models.md's, with a dynamic batch; returns it."""
    from engines import models

    session = _session(path)
    declared = {
        "inputs": {t.name: list(t.shape) for t in session.get_inputs()},
        "outputs": {t.name: list(t.shape) for t in session.get_outputs()},
    }
    expected = {kind: {k: list(v) for k, v in io.items()} for kind, io in models.EXPECTED_IO[name].items()}
    if declared != expected:
        raise ConversionError(f"{name}: {path.name} declares {declared}, expected {expected}")
    return declared


def verify_against_reference(name: str, path: Path, reference: Path) -> dict[str, float]:
    """ONNX Runtime vs the TFLite outputs recorded by the converter, and batch-N vs batch-1 consistency.

    Raises ConversionError when a tolerance is exceeded; returns the measured differences for the manifest.
    """
    session = _session(path)
    data = np.load(reference)
    samples = [data["input_a"], data["input_b"]]
    input_name = session.get_inputs()[0].name
    output_names = [o.name for o in session.get_outputs()]
    single = [dict(zip(output_names, session.run(None, {input_name: x}))) for x in samples]
    report: dict[str, float] = {}

    for index, outputs in enumerate(single):
        tag = "ab"[index]
        for output in output_names:
            ours, theirs = outputs[output], data[f"{tag}/{output}"]
            if name == "detector":
                diff = float(np.max(np.abs(ours - theirs)))
                _check(name, f"ORT vs TFLite {output}", diff, DETECTOR_TOL)
            elif output == "Identity":
                xy_ours, xy_theirs = ours.reshape(-1, 39, 5)[..., :2], theirs.reshape(-1, 39, 5)[..., :2]
                diff = float(np.max(np.abs(xy_ours - xy_theirs)))
                _check(name, "ORT vs TFLite landmark xy (px)", diff, LANDMARK_XY_TOL_PX)
                # z and the two logits ride along in the same vector, on a similar scale.
                scale = max(1.0, float(np.max(np.abs(theirs))))
                _check(
                    name, "ORT vs TFLite landmark vector", float(np.max(np.abs(ours - theirs))) / scale, 1e-3
                )
            elif output == "Identity_2":
                # Segmentation logits: what matters is which side of 0 each pixel lands.
                flips = float(np.mean(np.sign(ours) != np.sign(theirs)))
                _check(name, "ORT vs TFLite segmentation sign flips (fraction)", flips, 1e-3)
                diff = flips
            else:
                scale = max(1.0, float(np.max(np.abs(theirs))))
                diff = float(np.max(np.abs(ours - theirs)))
                _check(name, f"ORT vs TFLite {output}", diff / scale, 1e-3)
            report[f"ort_vs_tflite/{output}"] = max(report.get(f"ort_vs_tflite/{output}", 0.0), diff)

    # The pipeline runs views x mirrors in one batch (1 to 4): each row must equal its batch-1 run.
    for order in ([0, 1], [0, 1, 1, 0]):
        batch = np.concatenate([samples[i] for i in order])
        outputs = dict(zip(output_names, session.run(None, {input_name: batch})))
        for output in output_names:
            expected = np.concatenate([single[i][output] for i in order])
            if outputs[output].shape != expected.shape:
                raise ConversionError(
                    f"{name}: batch {len(order)} gives {output} of shape {outputs[output].shape}, "
                    f"expected {expected.shape}"
                )
            diff = float(np.max(np.abs(outputs[output] - expected)))
            _check(name, f"batch {len(order)} vs batch 1 {output}", diff, BATCH_TOL)
            key = f"batch_vs_single/{output}"
            report[key] = max(report.get(key, 0.0), diff)
    return report


def _check(name: str, what: str, value: float, limit: float) -> None:
    if not value <= limit:  # written so that NaN fails too
        raise ConversionError(f"{name}: {what} differs by {value:.3g}, limit {limit:g}")
