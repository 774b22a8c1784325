"""The pose models: their names, pinned sources, files, expected tensors and the fetch manifest.

Nothing here imports an inference runtime: the daemon, the fetcher and the conversion script all read it.
Sources and hashes are those of docs in ../shared/spec/models.md, checked on 2026-11-25.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engines.files import sha256_file

logger = logging.getLogger(__name__)

LANDMARK_SIZES = ("lite", "full", "heavy")
MODEL_NAMES = ("detector", "lite", "full", "heavy")

ONNX_FILES = {
    "detector": "pose_detection.onnx",
    "lite": "pose_landmark_lite.onnx",
    "full": "pose_landmark_full.onnx",
    "heavy": "pose_landmark_heavy.onnx",
}
SOURCE_FILES = {
    "detector": "pose_detection.tflite",
    "lite": "pose_landmark_lite.tflite",
    "full": "pose_landmark_full.tflite",
    "heavy": "pose_landmark_heavy.tflite",
}
# The int8 models (engines/quantize.py), made from the fp32 files above by `models fetch`.
INT8_FILES = {name: file.replace(".onnx", ".int8.onnx") for name, file in ONNX_FILES.items()}
INT8_KEY = "int8"  # the manifest's section for them, beside "models" (which older code reads alone)
PRECISIONS = ("fp32", "int8")  # what the ONNX files come in
MANIFEST_NAME = "manifest.json"
SOURCES_SUBDIR = "sources"  # the verified .tflite files, kept so a re-conversion needs no download
MANIFEST_FORMAT = 1

# Pinned registry packages.
NPM_PACKAGE = "@mediapipe/pose"
NPM_VERSION = "0.5.1675469404"
PYPI_PACKAGE = "mediapipe"
PYPI_VERSION = "0.10.21"

# The npm package hides its detector in the first bytes of the packed assets of the web solution.
NPM_DETECTOR_ASSET = "package/pose_solution_packed_assets.data"
NPM_DETECTOR_BYTES = 2962288


@dataclass(frozen=True)
class SourceFile:
    """Where one .tflite lies in a pinned package and what it must hash to."""

    registry: str  # "npm" or "pypi"
    member: str  # path inside the tarball or wheel
    sha256: str
    length: int | None = None  # bytes to take from the start of `member` (None: all of it)

    def describe(self) -> str:
        package = (
            f"{NPM_PACKAGE}@{NPM_VERSION}" if self.registry == "npm" else f"{PYPI_PACKAGE}=={PYPI_VERSION}"
        )
        span = f"[0:{self.length}]" if self.length is not None else ""
        return f"{self.registry} {package} {self.member}{span}"


# Candidates in order of preference. The wheel's detector is a different file from the npm one, with
# outputs that matched exactly (models.md); lite and heavy exist only in the npm package.
SOURCES: dict[str, tuple[SourceFile, ...]] = {
    "detector": (
        SourceFile(
            "npm",
            NPM_DETECTOR_ASSET,
            "a63c614bef30d35947f13be361820b1e4e3bec9cfeebf4d11216a18373108e85",
            NPM_DETECTOR_BYTES,
        ),
        SourceFile(
            "pypi",
            "mediapipe/modules/pose_detection/pose_detection.tflite",
            "9ba9dd3d42efaaba86b4ff0122b06f29c4122e756b329d89dca1e297fd8f866c",
        ),
    ),
    "lite": (
        SourceFile(
            "npm",
            "package/pose_landmark_lite.tflite",
            "f17bfbecadb61c3be1baa8b8d851cc6619c870a87167b32848ad20db306b9d61",
        ),
    ),
    "full": (
        SourceFile(
            "npm",
            "package/pose_landmark_full.tflite",
            "e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f",
        ),
        SourceFile(
            "pypi",
            "mediapipe/modules/pose_landmark/pose_landmark_full.tflite",
            "e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f",
        ),
    ),
    "heavy": (
        SourceFile(
            "npm",
            "package/pose_landmark_heavy.tflite",
            "59e42d71bcd44cbdbabc419f0ff76686595fd265419566bd4009ef703ea8e1fe",
        ),
    ),
}

# Conversion tools, installed only in the isolated conversion venv.
TENSORFLOW_VERSION = "2.21.0"
TF2ONNX_VERSION = "1.17.0"
OPSET = 17
# Bump when the conversion recipe changes (densify, batch patch, canonical bytes): forces a re-conversion.
CONVERSION_REVISION = 2

BATCH = "batch"  # the symbolic name of the dynamic first dimension

# I/O the ONNX files must declare (models.md), the first dimension being the dynamic batch.
_LANDMARK_IO = {
    "inputs": {"input_1": (BATCH, 256, 256, 3)},
    "outputs": {
        "Identity": (BATCH, 195),  # 39 x (x, y, z, visibility logit, presence logit), 256-px space
        "Identity_1": (BATCH, 1),  # pose flag, already a probability
        "Identity_2": (BATCH, 256, 256, 1),  # segmentation logit
        "Identity_3": (BATCH, 64, 64, 39),  # heatmap
        "Identity_4": (BATCH, 117),  # 39 x 3 world landmarks, metres
    },
}
EXPECTED_IO: dict[str, dict[str, dict[str, tuple[int | str, ...]]]] = {
    "detector": {
        "inputs": {"input_1": (BATCH, 224, 224, 3)},
        "outputs": {"Identity": (BATCH, 2254, 12), "Identity_1": (BATCH, 2254, 1)},
    },
    "lite": _LANDMARK_IO,
    "full": _LANDMARK_IO,
    "heavy": _LANDMARK_IO,
}


class ModelsMissing(RuntimeError):
    """The converted models are absent or do not match their manifest."""


def pinned_source_hashes(name: str) -> set[str]:
    return {candidate.sha256 for candidate in SOURCES[name]}


def _models_dir(models_dir_or_config: Any) -> Path:
    # Accept a Config too, so callers holding one need not dig out config.models.dir.
    models = getattr(models_dir_or_config, "models", None)
    if models is not None:
        return Path(models.dir)
    return Path(models_dir_or_config)


def _missing(models_dir: Path, why: str) -> ModelsMissing:
    return ModelsMissing(f"models not found in {models_dir} ({why}): run `skeletond models fetch`")


def read_manifest(models_dir: Path) -> dict[str, Any]:
    """The manifest written by the last successful fetch; ModelsMissing when absent or unreadable."""
    models_dir = _models_dir(models_dir)
    path = models_dir / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise _missing(models_dir, f"no {MANIFEST_NAME}") from None
    except (OSError, ValueError) as exc:
        raise _missing(models_dir, f"{MANIFEST_NAME} unreadable: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise _missing(models_dir, f"{MANIFEST_NAME} has an unknown format")
    return manifest


def model_precision(backend: str, engine_precision: str) -> str:
    """Which ONNX files a backend opens for engine.precision: the int8 ones only for ONNX Runtime at int8
    (TensorRT builds int8 engines from the fp32 files and the int8 files' calibration ranges)."""
    return "int8" if backend == "onnxruntime" and engine_precision == "int8" else "fp32"


def model_paths(models_dir: Any, landmark: str | None = None, precision: str = "fp32") -> dict[str, Path]:
    """{"detector": path, "landmark": path} for the chosen landmark size and precision (fp32 or int8).

    `models_dir` may be the directory or a Config (then `landmark` defaults to config.models.landmark).
    Checks presence only (cheap, at start-up); `verify_models` checks the hashes.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"model precision: one of {', '.join(PRECISIONS)}, got {precision!r}")
    if landmark is None:
        models = getattr(models_dir, "models", None)
        if models is None:
            raise ValueError("model_paths: give `landmark` when passing a directory")
        landmark = models.landmark
    if landmark not in LANDMARK_SIZES:
        raise ValueError(f"landmark model: one of {', '.join(LANDMARK_SIZES)}, got {landmark!r}")
    directory = _models_dir(models_dir)
    manifest = read_manifest(directory)
    files, section = (ONNX_FILES, "models") if precision == "fp32" else (INT8_FILES, INT8_KEY)
    paths = {"detector": directory / files["detector"], "landmark": directory / files[landmark]}
    for path in paths.values():
        if not path.is_file():
            raise _missing(directory, f"{path.name} absent")
        if path.name not in {entry.get("file") for entry in manifest.get(section, {}).values()}:
            raise _missing(directory, f"{path.name} not in {MANIFEST_NAME}")
    return paths


def model_sha256(path: Path) -> str:
    """The manifest's sha256 of a converted model file (the answer's `version` field names it)."""
    path = Path(path)
    manifest = read_manifest(path.parent)
    for section in ("models", INT8_KEY):
        for entry in manifest.get(section, {}).values():
            if entry.get("file") == path.name:
                return str(entry["sha256"])
    raise _missing(path.parent, f"{path.name} not in {MANIFEST_NAME}")


def verify_models(models_dir: Path, check_sources: bool = True) -> list[str]:
    """Every way the models dir differs from a complete, current fetch; empty when all is in place.

    Hashes every output (and source) file: about 0.2 s for the ~125 MB of a full set.
    """
    models_dir = _models_dir(models_dir)
    try:
        manifest = read_manifest(models_dir)
    except ModelsMissing as exc:
        return [str(exc)]
    problems: list[str] = []
    converter = manifest.get("converter", {})
    wanted = {
        "tensorflow": TENSORFLOW_VERSION,
        "tf2onnx": TF2ONNX_VERSION,
        "opset": OPSET,
        "revision": CONVERSION_REVISION,
    }
    for key, value in wanted.items():
        if converter.get(key) != value:
            problems.append(f"converted with {key} {converter.get(key)!r}, pinned {value!r}")
    entries = manifest.get("models", {})
    for name in MODEL_NAMES:
        entry = entries.get(name)
        if entry is None:
            problems.append(f"{name}: not in {MANIFEST_NAME}")
            continue
        if entry.get("file") != ONNX_FILES[name]:
            problems.append(f"{name}: manifest names {entry.get('file')!r}, expected {ONNX_FILES[name]}")
            continue
        source = entry.get("source", {})
        if source.get("sha256") not in pinned_source_hashes(name):
            problems.append(f"{name}: source sha256 {source.get('sha256')} is not a pinned one")
        files = [(models_dir / ONNX_FILES[name], entry.get("sha256"))]
        if check_sources:
            files.append((models_dir / SOURCES_SUBDIR / SOURCE_FILES[name], source.get("sha256")))
        for path, expected in files:
            if not path.is_file():
                problems.append(f"{name}: {path} absent")
            elif sha256_file(path) != expected:
                problems.append(f"{name}: {path} sha256 differs from {MANIFEST_NAME} (modified or corrupt)")
    return problems


def verify_int8(models_dir: Path, manifest: dict[str, Any], recipe: dict[str, Any]) -> list[str]:
    """Every way the int8 files differ from what `recipe` (engines/quantize.py) makes of today's fp32 files.

    An entry is current when its file hashes as recorded, it was made from the fp32 file the manifest
    names now, and with the same recipe (revision, calibration, float layers).
    """
    models_dir = _models_dir(models_dir)
    problems: list[str] = []
    fp32 = manifest.get("models", {})
    entries = manifest.get(INT8_KEY, {})
    for name in MODEL_NAMES:
        entry = entries.get(name)
        if entry is None:
            problems.append(f"{name} int8: not in {MANIFEST_NAME}")
            continue
        path = models_dir / INT8_FILES[name]
        if entry.get("file") != INT8_FILES[name] or not path.is_file():
            problems.append(f"{name} int8: {path} absent")
        elif entry.get("from_sha256") != fp32.get(name, {}).get("sha256"):
            problems.append(f"{name} int8: made from another fp32 file")
        elif entry.get("recipe") != recipe.get(name):
            problems.append(f"{name} int8: made with another quantization recipe")
        elif sha256_file(path) != entry.get("sha256"):
            problems.append(f"{name} int8: {path} sha256 differs from {MANIFEST_NAME} (modified or corrupt)")
    return problems
