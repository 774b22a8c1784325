"""TensorRT engine cache: keys, manifests, shape profiles and buffer layouts. Pure Python, no GPU.

An engine is only valid for the exact ONNX file, TensorRT version, GPU, precision and shape profile it
was built with, so the cache key hashes all of them, and a JSON manifest beside each engine records the
key's fields. When anything differs, `rebuild_reason` says what, and the engine is rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from engines.base import ModelSpec, TensorSpec
from engines.files import atomic_write_bytes, sha256_file

MANIFEST_FORMAT = 1
ENGINE_SUFFIX = ".engine"
MANIFEST_SUFFIX = ".engine.json"
# The batch TensorRT tunes its kernels for: front + side views, the default pipeline's common case.
OPT_BATCH = 2

Shape = tuple[int, ...]
ProfileShapes = dict[str, tuple[Shape, Shape, Shape]]


# --- shapes -------------------------------------------------------------------------------------------


def _is_dynamic(dim: int | str) -> bool:
    return isinstance(dim, str) or dim < 0


def model_max_batch(model_spec: ModelSpec, max_batch: int) -> int:
    """The largest batch one engine run takes: `max_batch`, or the fixed batch of a static model."""
    fixed = [dim for dim in (spec.shape[0] for spec in model_spec.inputs if spec.shape) if isinstance(dim, int)]
    if fixed and len(fixed) == len(model_spec.inputs) and min(fixed) > 0:
        # A model exported with a fixed batch (the converted landmark model before its Reshape is
        # patched) runs a larger batch in chunks of its own size.
        return min(fixed)
    return max_batch


def profile_shapes(model_spec: ModelSpec, max_batch: int) -> ProfileShapes:
    """(min, opt, max) shapes per input: batch 1, OPT_BATCH (or less) and `max_batch`.

    Only the leading (batch) dimension may be dynamic; inputs with a fixed batch get min = opt = max.
    """
    if max_batch < 1:
        raise ValueError(f"max_batch must be at least 1, got {max_batch}")
    opt_batch = min(OPT_BATCH, max_batch)
    shapes: ProfileShapes = {}
    for spec in model_spec.inputs:
        if not spec.shape:
            raise ValueError(f"{model_spec.name}: input {spec.name} is a scalar; a batch dimension is needed")
        rest = spec.shape[1:]
        for dim in rest:
            if _is_dynamic(dim):
                raise ValueError(
                    f"{model_spec.name}: input {spec.name} has a dynamic non-batch dimension {dim!r} "
                    f"in {spec.shape}; only the batch may vary"
                )
        fixed_rest = tuple(int(dim) for dim in rest)
        batch = spec.shape[0]
        if _is_dynamic(batch):
            shapes[spec.name] = ((1, *fixed_rest), (opt_batch, *fixed_rest), (max_batch, *fixed_rest))
        else:
            static = (int(batch), *fixed_rest)
            shapes[spec.name] = (static, static, static)
    return shapes


@dataclass(frozen=True)
class TensorLayout:
    """One I/O tensor's buffer for a given batch."""

    name: str
    shape: Shape
    dtype: str
    nbytes: int
    is_input: bool


def _concrete_shape(spec: TensorSpec, batch: int) -> Shape:
    shape: list[int] = []
    for index, dim in enumerate(spec.shape):
        if not _is_dynamic(dim):
            shape.append(int(dim))
        elif index == 0:
            shape.append(batch)
        else:
            raise ValueError(f"tensor {spec.name} has a dynamic non-batch dimension {dim!r} in {spec.shape}")
    return tuple(shape)


def buffer_layout(model_spec: ModelSpec, batch: int) -> dict[str, TensorLayout]:
    """Shape, dtype and byte size of every input and output at `batch`, from the ONNX I/O."""
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    layout: dict[str, TensorLayout] = {}
    for is_input, specs in ((True, model_spec.inputs), (False, model_spec.outputs)):
        for spec in specs:
            shape = _concrete_shape(spec, batch)
            itemsize = np.dtype(spec.dtype).itemsize
            layout[spec.name] = TensorLayout(
                name=spec.name,
                shape=shape,
                dtype=spec.dtype,
                nbytes=math.prod(shape) * itemsize,
                is_input=is_input,
            )
    return layout


# --- keys ---------------------------------------------------------------------------------------------


def key_fields(
    *,
    onnx_sha256: str,
    tensorrt_version: str,
    gpu_name: str,
    compute_capability: str,
    precision: str,
    profile: ProfileShapes,
) -> dict[str, Any]:
    """Everything an engine depends on, as JSON-ready values (the manifest keeps them for diffs)."""
    return {
        "onnx_sha256": onnx_sha256,
        "tensorrt_version": tensorrt_version,
        "gpu_name": gpu_name,
        "compute_capability": compute_capability,
        "precision": precision,
        "profile": {name: [list(shape) for shape in shapes] for name, shapes in sorted(profile.items())},
    }


def engine_cache_key(
    *,
    onnx_sha256: str,
    tensorrt_version: str,
    gpu_name: str,
    compute_capability: str,
    precision: str,
    profile: ProfileShapes,
) -> str:
    """sha256 of the canonical JSON of `key_fields` (hex)."""
    fields = key_fields(
        onnx_sha256=onnx_sha256,
        tensorrt_version=tensorrt_version,
        gpu_name=gpu_name,
        compute_capability=compute_capability,
        precision=precision,
        profile=profile,
    )
    return key_of(fields)


def key_of(fields: dict[str, Any]) -> str:
    canonical = json.dumps({"format": MANIFEST_FORMAT, **fields}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


# --- files --------------------------------------------------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "unknown"


def engine_path(engine_dir: Path, model_stem: str, precision: str) -> Path:
    """One engine per ONNX file and precision; the manifest, not the name, says what it was built for."""
    return Path(engine_dir) / f"{_slug(model_stem)}.{precision}{ENGINE_SUFFIX}"


def manifest_path(engine_file: Path) -> Path:
    return engine_file.with_name(engine_file.name[: -len(ENGINE_SUFFIX)] + MANIFEST_SUFFIX)


def timing_cache_path(engine_dir: Path, tensorrt_version: str, gpu_name: str, compute_capability: str) -> Path:
    """Timing caches are only valid for one TensorRT and GPU, so their name says which."""
    name = f"timing-trt{_slug(tensorrt_version)}-{_slug(gpu_name)}-sm{_slug(compute_capability)}.cache"
    return Path(engine_dir) / name


@dataclass(frozen=True)
class EngineManifest:
    key: str
    key_fields: dict[str, Any]
    model: str
    onnx_path: str
    engine_file: str
    engine_sha256: str
    engine_bytes: int
    build_plan: str
    workspace_mb: int
    build_seconds: float
    built_at: str
    format: int = MANIFEST_FORMAT


def new_manifest(
    *,
    fields: dict[str, Any],
    model: str,
    onnx_path: Path,
    engine_file: Path,
    engine_bytes: bytes,
    build_plan: str,
    workspace_mb: int,
    build_seconds: float,
) -> EngineManifest:
    return EngineManifest(
        key=key_of(fields),
        key_fields=fields,
        model=model,
        onnx_path=str(onnx_path),
        engine_file=engine_file.name,
        engine_sha256=hashlib.sha256(engine_bytes).hexdigest(),
        engine_bytes=len(engine_bytes),
        build_plan=build_plan,
        workspace_mb=workspace_mb,
        build_seconds=round(build_seconds, 1),
        built_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


def write_manifest(path: Path, manifest: EngineManifest) -> None:
    atomic_write_bytes(path, (json.dumps(asdict(manifest), indent=2, sort_keys=True) + "\n").encode())


class ManifestError(ValueError):
    """A manifest file exists but cannot be read as one."""


def read_manifest(path: Path) -> EngineManifest:
    """Raises FileNotFoundError when absent, ManifestError when unreadable."""
    text = Path(path).read_text()
    try:
        data = json.loads(text)
        return EngineManifest(**data)
    except (json.JSONDecodeError, TypeError) as exc:
        raise ManifestError(f"{path}: not a valid engine manifest ({exc})") from None


def _field_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    changes = []
    for name in sorted(set(old) | set(new)):
        if old.get(name) != new.get(name):
            changes.append(f"{name} {old.get(name)!r} -> {new.get(name)!r}")
    return changes


def rebuild_reason(engine_file: Path, fields: dict[str, Any], check_checksum: bool = True) -> str | None:
    """Why the cached engine cannot be used with these key fields, or None if it can.

    Deserialisation can still fail afterwards (a corrupt plan, a TensorRT build that rejects it); the
    caller treats that as one more reason to rebuild.
    """
    manifest_file = manifest_path(engine_file)
    if not engine_file.exists():
        return f"no engine file {engine_file.name}"
    try:
        manifest = read_manifest(manifest_file)
    except FileNotFoundError:
        return f"no manifest {manifest_file.name}"
    except (ManifestError, OSError) as exc:
        return f"unreadable manifest: {exc}"
    if manifest.format != MANIFEST_FORMAT:
        return f"manifest format {manifest.format}, expected {MANIFEST_FORMAT}"
    expected_key = key_of(fields)
    if manifest.key != expected_key:
        changes = _field_changes(manifest.key_fields, fields)
        detail = "; ".join(changes) if changes else "key differs"
        return f"cache key changed: {detail}"
    size = engine_file.stat().st_size
    if size != manifest.engine_bytes:
        return f"engine file is {size} bytes, manifest says {manifest.engine_bytes} (truncated or replaced)"
    if check_checksum and sha256_file(engine_file) != manifest.engine_sha256:
        return "engine file checksum differs from its manifest (corrupt or replaced)"
    return None


@contextlib.contextmanager
def build_lock(engine_dir: Path) -> Iterator[None]:
    """Two daemons (or the daemon and `skeletond engines build`) must not build into one folder at once."""
    engine_dir.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(engine_dir / ".build.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- build plan ---------------------------------------------------------------------------------------


def tensorrt_major(version: str) -> int:
    match = re.match(r"(\d+)", version)
    if not match:
        raise ValueError(f"unreadable TensorRT version {version!r}")
    return int(match.group(1))


def build_plan(tensorrt_version: str, precision: str) -> str:
    """How to build for this TensorRT version and precision.

    - "fp16-flag": TensorRT 8.6/10.x, weak typing with BuilderFlag.FP16 (JetPack 6).
    - "strongly-typed-fp16-onnx": TensorRT 11+, which dropped BuilderFlag.FP16: a strongly typed network
      parsed from an fp16 copy of the ONNX (inputs and outputs kept fp32).
    - "fp32": no reduced precision (strongly typed on 11+, the default elsewhere).
    - "int8-calibration-cache": TensorRT 8.6/10.x, BuilderFlag.INT8 + FP16 with a calibration cache made
      from the int8 ONNX model's ranges (engines/quantize.py); unverified on a device. TensorRT 11 dropped
      implicit int8: there it is refused with the reason.
    """
    if precision not in ("fp16", "fp32", "int8"):
        raise ValueError(f"precision must be fp16, fp32 or int8, got {precision!r}")
    major = tensorrt_major(tensorrt_version)
    if major < 8 or (major == 8 and _minor(tensorrt_version) < 6):
        # 8.5 (JetPack 5) has the name-based API too, but its Python 3.8 rules JetPack 5 out, and no
        # binding older than 8.6 is checked in CI (tests/test_tensorrt_real.py).
        raise ValueError(
            f"TensorRT {tensorrt_version} is older than 8.6, the oldest version this backend is checked with"
        )
    if precision == "fp32":
        return "fp32"
    if precision == "int8":
        if major >= 11:
            raise ValueError(
                f"TensorRT {tensorrt_version} has no implicit int8 (calibration cache) builds: "
                "use engine.precision = fp16"
            )
        return "int8-calibration-cache"
    return "strongly-typed-fp16-onnx" if major >= 11 else "fp16-flag"


def _minor(version: str) -> int:
    parts = version.split(".")
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
