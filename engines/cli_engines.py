"""`skeletond engines build | list | clear`: manage the TensorRT engine cache ahead of time.

Building while making an image (or before a kiosk goes live) spares the first start its minutes of
engine building. Each function returns a process exit code; output goes to `out` (the CLI's stdout).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from engines.engine_cache import (
    ENGINE_SUFFIX,
    MANIFEST_SUFFIX,
    ManifestError,
    build_lock,
    engine_path,
    read_manifest,
    rebuild_reason,
)

if TYPE_CHECKING:
    from daemon.config import Config
    from engines.tensorrt import GpuInfo

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_UNAVAILABLE = 2


def _engine_dir(config: Config) -> Path:
    return Path(config.engine.engine_dir).expanduser()


def build_engines(config: Config, out: TextIO = sys.stdout) -> int:
    """Build (or confirm) an engine for every ONNX file in config.models.dir."""
    from engines.backends import tensorrt_unavailable_reason
    from engines.tensorrt import EngineBuildError, ensure_engines

    models_dir = Path(config.models.dir).expanduser()
    onnx_files = sorted(models_dir.glob("*.onnx"))
    if not onnx_files:
        out.write(f"no ONNX models in {models_dir}: fetch and convert them first (skeletond models fetch)\n")
        return EXIT_FAILED
    missing = tensorrt_unavailable_reason()  # says "no permission ... group video" where that is why
    if missing is not None:
        out.write(f"cannot build TensorRT engines here: tensorrt: {missing}\n")
        return EXIT_UNAVAILABLE
    failures = 0
    for onnx_file in onnx_files:
        out.write(f"{onnx_file.name}: checking the engine cache (a build takes minutes on a Jetson)\n")
        out.flush()
        try:
            outcome = ensure_engines({onnx_file.stem: onnx_file}, config.engine)[onnx_file.stem]
        except (EngineBuildError, ValueError, OSError) as exc:
            failures += 1
            log.error("engine build for %s failed: %s", onnx_file.name, exc)
            out.write(f"{onnx_file.name}: FAILED: {exc}\n")
            continue
        target = engine_path(_engine_dir(config), onnx_file.stem, config.engine.precision)
        out.write(f"{onnx_file.name}: {outcome} -> {target}\n")
    return EXIT_FAILED if failures else EXIT_OK


def _current_status(manifest_onnx: Path, engine_file: Path, config: Config, gpu: GpuInfo | None) -> str:
    """Whether the engine still fits its ONNX file, this TensorRT and this GPU."""
    if gpu is None:
        return "status unknown here"
    from engines.onnx_spec import read_model_spec
    from engines.tensorrt import engine_key_fields

    if not manifest_onnx.exists():
        return f"stale: ONNX {manifest_onnx} no longer exists"
    spec = read_model_spec(manifest_onnx)
    fields = engine_key_fields(spec, config.engine.precision, config.engine.max_batch, gpu)
    reason = rebuild_reason(engine_file, fields)
    return "current" if reason is None else f"stale: {reason}"


def list_engines(config: Config, out: TextIO = sys.stdout) -> int:
    """One line per cached engine: what it was built for, and whether it still fits."""
    from engines.tensorrt import gpu_info, unavailable_reason

    engine_dir = _engine_dir(config)
    engines = sorted(engine_dir.glob(f"*{ENGINE_SUFFIX}")) if engine_dir.is_dir() else []
    if not engines:
        out.write(f"no TensorRT engines in {engine_dir}\n")
        return EXIT_OK
    missing = unavailable_reason()
    gpu = gpu_info() if missing is None else None
    if missing is not None:
        out.write(f"(tensorrt: {missing}: cannot tell whether these engines are current)\n")
    for engine_file in engines:
        manifest_file = engine_file.with_name(engine_file.name[: -len(ENGINE_SUFFIX)] + MANIFEST_SUFFIX)
        size_mb = engine_file.stat().st_size / 1e6
        try:
            manifest = read_manifest(manifest_file)
        except FileNotFoundError:
            out.write(f"{engine_file.name}  {size_mb:.1f} MB  no manifest (will be rebuilt)\n")
            continue
        except ManifestError as exc:
            out.write(f"{engine_file.name}  {size_mb:.1f} MB  {exc}\n")
            continue
        fields = manifest.key_fields
        status = _current_status(Path(manifest.onnx_path), engine_file, config, gpu)
        out.write(
            f"{engine_file.name}  {size_mb:.1f} MB  model {manifest.model}  {fields.get('precision')}  "
            f"TensorRT {fields.get('tensorrt_version')}  {fields.get('gpu_name')} "
            f"(sm {fields.get('compute_capability')})  built {manifest.built_at} in {manifest.build_seconds:.0f} s"
            f"  {status}\n"
        )
    return EXIT_OK


def clear_engines(config: Config, out: TextIO = sys.stdout, timing_cache: bool = False) -> int:
    """Delete cached engines and manifests (and the timing caches with `timing_cache`)."""
    engine_dir = _engine_dir(config)
    if not engine_dir.is_dir():
        out.write(f"no engine folder {engine_dir}\n")
        return EXIT_OK
    patterns = [f"*{ENGINE_SUFFIX}", f"*{MANIFEST_SUFFIX}", ".*.tmp"]
    if timing_cache:
        patterns.append("timing-*.cache")
    removed = 0
    with build_lock(engine_dir):
        for pattern in patterns:
            for path in sorted(engine_dir.glob(pattern)):
                path.unlink(missing_ok=True)
                removed += 1
    out.write(f"removed {removed} file(s) from {engine_dir}\n")
    return EXIT_OK
