"""`skeletond models fetch`: the pose models from pinned registry packages, verified, converted to ONNX.

Steps: sources (npm tarball, else the PyPI wheel; sha256 pinned in engines/models.py) -> conversion venv
(TensorFlow + tf2onnx, isolated) -> conversion (engines/convert_tflite.py in that venv) -> ONNX Runtime
checks (names, shapes, dynamic batch, parity with TFLite) -> install (atomic renames, manifest last)
-> int8 models beside them (engines/quantize.py, in this venv; only those missing or stale).
A run with everything in place only re-hashes the files and returns.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from engines import convert, models
from engines.files import atomic_write_bytes

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]

DEFAULT_NPM_REGISTRY = "https://registry.npmjs.org"
_DOWNLOAD_TIMEOUT_S = 60


class FetchError(RuntimeError):
    """`models fetch` failed; the message says at which step, with which package, and why."""


def _log_progress(message: str) -> None:
    logger.info("%s", message)


# ---------------------------------------------------------------------------------------------------------
# Sources


def _npm_tarball_url() -> str:
    # Honour a configured mirror the way npm itself does.
    registry = (
        os.environ.get("npm_config_registry") or os.environ.get("NPM_CONFIG_REGISTRY") or DEFAULT_NPM_REGISTRY
    )
    scope_free = models.NPM_PACKAGE.split("/")[-1]
    return f"{registry.rstrip('/')}/{models.NPM_PACKAGE}/-/{scope_free}-{models.NPM_VERSION}.tgz"


def _download(url: str, target: Path) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "skeleton-v2 models fetch"})
    with urllib.request.urlopen(request, timeout=_DOWNLOAD_TIMEOUT_S) as response, open(target, "wb") as out:
        shutil.copyfileobj(response, out, 1 << 20)


def download_npm_package(work: Path, progress: Progress) -> Path:
    """The pinned npm tarball: straight from the registry, else through `npm pack` (npm's own config)."""
    url = _npm_tarball_url()
    target = work / f"{models.NPM_PACKAGE.split('/')[-1]}-{models.NPM_VERSION}.tgz"
    started = time.monotonic()
    try:
        _download(url, target)
        progress(
            f"  downloaded {url} ({target.stat().st_size / 1e6:.1f} MB, {time.monotonic() - started:.1f} s)"
        )
        return target
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        direct_error = f"{url}: {exc}"
    npm = shutil.which("npm")
    if npm is None:
        raise FetchError(f"could not reach the npm registry: {direct_error} (and no `npm` on PATH to retry)")
    progress(f"  direct download failed ({direct_error}); trying `npm pack` (it reads your .npmrc)")
    spec = f"{models.NPM_PACKAGE}@{models.NPM_VERSION}"
    try:
        result = subprocess.run(
            # One retry: the direct download has just failed, so this is a second chance for setups
            # only npm knows how to reach (.npmrc registry, proxy, auth), not for a dead network.
            [npm, "pack", spec, "--loglevel=error", "--fetch-retries=1"],
            cwd=work,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FetchError(
            f"could not reach the npm registry: {direct_error}; `npm pack {spec}`: {exc}"
        ) from None
    packed = sorted(work.glob("*.tgz"))
    if result.returncode != 0 or not packed:
        # npm puts the cause first (code, errno, the failing request); the tail is advice and a log path.
        why = [
            line.removeprefix("npm error ") for line in (result.stderr or result.stdout).strip().splitlines()
        ]
        why = why[:3]
        raise FetchError(
            f"could not reach the npm registry: {direct_error}; `npm pack {spec}`: {' '.join(why)}"
        )
    progress(f"  `npm pack {spec}` ({time.monotonic() - started:.1f} s)")
    return packed[0]


def download_pypi_wheel(work: Path, progress: Progress) -> Path:
    """The pinned mediapipe wheel (any manylinux x86_64 build holds the same .tflite files)."""
    spec = f"{models.PYPI_PACKAGE}=={models.PYPI_VERSION}"
    started = time.monotonic()
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        spec,
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--quiet",
        "--dest",
        str(work),
        # Pinned tags, so that the same wheel comes on any host (a Jetson included).
        "--python-version",
        "3.11",
        "--implementation",
        "cp",
        "--platform",
        "manylinux_2_28_x86_64",
        "--platform",
        "manylinux_2_17_x86_64",
        "--platform",
        "manylinux2014_x86_64",
    ]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FetchError(f"could not download {spec} from PyPI: {exc}") from None
    wheels = sorted(work.glob("mediapipe-*.whl"))
    if result.returncode != 0 or not wheels:
        why = " ".join((result.stderr or result.stdout).strip().splitlines()[-3:])
        raise FetchError(f"could not download {spec} from PyPI (pip download): {why}")
    size_mb = wheels[0].stat().st_size / 1e6
    progress(f"  `pip download {spec}` ({size_mb:.1f} MB, {time.monotonic() - started:.1f} s)")
    return wheels[0]


def _read_member(archive: Path, source: models.SourceFile) -> bytes:
    if source.registry == "npm":
        with tarfile.open(archive, "r:gz") as tar:
            handle = tar.extractfile(source.member)
            if handle is None:
                raise KeyError(source.member)
            return handle.read(source.length) if source.length is not None else handle.read()
    with zipfile.ZipFile(archive) as wheel, wheel.open(source.member) as handle:
        return handle.read(source.length) if source.length is not None else handle.read()


def extract_source(archive: Path, source: models.SourceFile, target: Path) -> str:
    """Copy one pinned file out of a package to `target` (atomically) once its sha256 checks out."""
    try:
        data = _read_member(archive, source)
    except (KeyError, OSError, tarfile.TarError, zipfile.BadZipFile) as exc:
        raise FetchError(f"{source.describe()}: cannot read it from {archive.name}: {exc}") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != source.sha256:
        raise FetchError(
            f"{source.describe()}: sha256 {digest}, pinned {source.sha256} (tampered or wrong version)"
        )
    atomic_write_bytes(target, data)
    return digest


def verify_source_file(name: str, path: Path) -> models.SourceFile:
    """The pinned candidate a kept .tflite matches; FetchError when none does."""
    digest = models.sha256_file(path)
    for candidate in models.SOURCES[name]:
        if candidate.sha256 == digest:
            return candidate
    raise FetchError(f"{path}: sha256 {digest} matches no pinned source of the {name} model")


def ensure_sources(
    sources_dir: Path, progress: Progress, registries: tuple[str, ...] = ("npm", "pypi")
) -> dict:
    """{name: (path, SourceFile)} for the four models; downloads only what is missing or does not verify."""
    sources_dir.mkdir(parents=True, exist_ok=True)
    found: dict[str, tuple[Path, models.SourceFile]] = {}
    for name in models.MODEL_NAMES:
        path = sources_dir / models.SOURCE_FILES[name]
        if path.is_file():
            try:
                found[name] = (path, verify_source_file(name, path))
            except FetchError as exc:
                progress(f"  {exc}: fetching it again")
    if len(found) == len(models.MODEL_NAMES):
        progress(f"  kept sources verified in {sources_dir}")
        return found

    failures: list[str] = []
    downloaders = {"npm": download_npm_package, "pypi": download_pypi_wheel}
    with tempfile.TemporaryDirectory(prefix=".download-", dir=sources_dir) as work:
        for registry in registries:
            wanted = [
                n
                for n in models.MODEL_NAMES
                if n not in found and any(c.registry == registry for c in models.SOURCES[n])
            ]
            if not wanted:
                continue
            try:
                archive = downloaders[registry](Path(work), progress)
            except FetchError as exc:
                failures.append(str(exc))
                progress(f"  {exc}")
                continue
            for name in wanted:
                source = next(c for c in models.SOURCES[name] if c.registry == registry)
                target = sources_dir / models.SOURCE_FILES[name]
                try:
                    extract_source(archive, source, target)
                except FetchError as exc:
                    failures.append(str(exc))
                    progress(f"  {exc}")
                    continue
                found[name] = (target, source)
                progress(f"  {name}: {source.describe()} sha256 ok")
    missing = [n for n in models.MODEL_NAMES if n not in found]
    if missing:
        raise FetchError(f"no verified source for {', '.join(missing)}: " + "; ".join(failures))
    return found


# ---------------------------------------------------------------------------------------------------------
# Files


@contextlib.contextmanager
def _exclusive(models_dir: Path) -> Iterator[None]:
    # Two fetches at once (a CI job and a person) would interleave renames.
    with open(models_dir / ".fetch.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FetchError(f"another `skeletond models fetch` is running on {models_dir}") from None
        yield


def _remove_leftovers(models_dir: Path) -> None:
    """Staging dirs and temp files of a fetch that was killed (we hold the lock: none is in use)."""
    leftovers = [*models_dir.glob(".staging-*"), *models_dir.glob(f"{models.SOURCES_SUBDIR}/.download-*")]
    leftovers += [*models_dir.glob(".*.tmp"), *models_dir.glob(f"{models.SOURCES_SUBDIR}/.*.tmp")]
    for path in leftovers:
        logger.info("removing %s, left by an interrupted fetch", path)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------------------


def fetch_models(
    config: Any, progress: Progress = _log_progress, registries: tuple[str, ...] = ("npm", "pypi")
) -> dict:
    """Make `config.models.dir` hold the four verified ONNX models and their manifest; returns it."""
    started = time.monotonic()
    models_dir = Path(config.models.dir)
    try:
        models_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FetchError(f"cannot create the models directory {models_dir}: {exc}") from None
    with _exclusive(models_dir):
        _remove_leftovers(models_dir)
        problems = models.verify_models(models_dir)
        if not problems:
            manifest = models.read_manifest(models_dir)
            progress(
                f"models in place in {models_dir} (manifest and sha256 verified, "
                f"{time.monotonic() - started:.2f} s)"
            )
            return _ensure_int8(models_dir, manifest, progress)
        logger.info("models fetch needed: %s", "; ".join(problems))

        progress(
            f"[1/5] sources: {models.NPM_PACKAGE}@{models.NPM_VERSION} "
            f"(fallback {models.PYPI_PACKAGE}=={models.PYPI_VERSION}) "
            f"into {models_dir / models.SOURCES_SUBDIR}"
        )
        try:
            sources = ensure_sources(models_dir / models.SOURCES_SUBDIR, progress, registries)
        except FetchError as exc:
            raise FetchError(f"step 1/5 (sources): {exc}") from None

        progress(f"[2/5] conversion venv: {config.models.convert_venv}")
        step_started = time.monotonic()
        try:
            python = convert.ensure_convert_venv(Path(config.models.convert_venv), progress)
        except convert.ConversionError as exc:
            raise FetchError(f"step 2/5 (conversion venv): {exc}") from None
        venv_seconds = time.monotonic() - step_started

        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=models_dir))
        try:
            manifest = _convert_and_verify(models_dir, staging, python, sources, progress)
            manifest["timings_s"]["venv"] = round(venv_seconds, 1)
            progress("[5/5] install: moving the files into place, manifest last")
            for name in models.MODEL_NAMES:
                os.replace(staging / models.ONNX_FILES[name], models_dir / models.ONNX_FILES[name])
            manifest["timings_s"]["total"] = round(time.monotonic() - started, 1)
            atomic_write_bytes(models_dir / models.MANIFEST_NAME, json.dumps(manifest, indent=2).encode() + b"\n")
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        # A log left by an earlier failed run would now mislead.
        (models_dir / "convert.log").unlink(missing_ok=True)
        manifest = _ensure_int8(models_dir, manifest, progress)
        progress(f"models ready in {models_dir} ({time.monotonic() - started:.1f} s)")
        return manifest


def _ensure_int8(models_dir: Path, manifest: dict, progress: Progress) -> dict:
    """The int8 models beside the fp32 ones (engines/quantize.py): made only when missing or stale.

    A failure here leaves the fp32 models (the default) usable: it is reported, not raised; the daemon
    refuses engine.precision = int8 at start while the int8 files are missing.
    """
    from engines import quantize

    started = time.monotonic()
    try:
        entries = quantize.ensure_int8(models_dir, manifest, progress)
    except Exception as exc:  # onnxruntime.quantization raises exceptions of many kinds
        progress(f"int8 models NOT made ({type(exc).__name__}: {exc}); the fp32 models are ready")
        logger.warning("int8 quantization failed", exc_info=True)
        return manifest
    if entries != manifest.get(models.INT8_KEY):
        manifest = {**manifest, models.INT8_KEY: entries}
        atomic_write_bytes(models_dir / models.MANIFEST_NAME, json.dumps(manifest, indent=2).encode() + b"\n")
        progress(f"int8 models ready ({time.monotonic() - started:.1f} s)")
    return manifest


def _convert_and_verify(
    models_dir: Path, staging: Path, python: Path, sources: dict, progress: Progress
) -> dict:
    progress(f"[3/5] converting to ONNX with tf2onnx {models.TF2ONNX_VERSION} (opset {models.OPSET})")
    step_started = time.monotonic()
    job = {
        "opset": models.OPSET,
        "models": [
            {
                "name": name,
                "tflite": str(sources[name][0]),
                "onnx": str(staging / models.ONNX_FILES[name]),
                "reference": str(staging / f"{name}.reference.npz"),
                # The detector's weights are sparse (DENSIFY ops tf2onnx cannot convert).
                "densify": name == "detector",
                "expected_io": {
                    k: {n: list(s) for n, s in v.items()} for k, v in models.EXPECTED_IO[name].items()
                },
            }
            for name in models.MODEL_NAMES
        ],
    }
    try:
        report = convert.run_converter(python, job, staging, progress)
    except convert.ConversionError as exc:
        # Keep the converter's log where a person can read it; the staging dir goes away.
        log = staging / "convert.log"
        if log.exists():
            shutil.copyfile(log, models_dir / "convert.log")
        message = str(exc).replace(str(log), str(models_dir / "convert.log"))
        raise FetchError(
            f"step 3/5 (conversion): {message}\n(a broken conversion venv? delete {python.parent.parent} "
            "and run `skeletond models fetch` again)"
        ) from None
    convert_seconds = time.monotonic() - step_started

    progress(
        "[4/5] checking the ONNX files with ONNX Runtime (names, shapes, batch 2 and 4, parity with TFLite)"
    )
    step_started = time.monotonic()
    entries: dict[str, Any] = {}
    for name in models.MODEL_NAMES:
        onnx_path = staging / models.ONNX_FILES[name]
        try:
            io = convert.check_io(name, onnx_path)
            diffs = convert.verify_against_reference(name, onnx_path, staging / f"{name}.reference.npz")
        except convert.ConversionError as exc:
            raise FetchError(f"step 4/5 (ONNX Runtime check): {exc}") from None
        source = sources[name][1]
        worst_batch = max(v for k, v in diffs.items() if k.startswith("batch_vs_single/"))
        if name == "detector":
            parity = f"max {max(diffs['ort_vs_tflite/Identity'], diffs['ort_vs_tflite/Identity_1']):.2g}"
        else:
            parity = f"landmark xy max {diffs['ort_vs_tflite/Identity']:.2g} px"
        progress(
            f"  {name}: I/O as expected, batch dynamic; ORT vs TFLite {parity}, "
            f"batch 2/4 vs 1 max {worst_batch:.2g}"
        )
        entries[name] = {
            "file": models.ONNX_FILES[name],
            "sha256": models.sha256_file(onnx_path),
            "bytes": onnx_path.stat().st_size,
            "source": {
                "registry": source.registry,
                "package": models.NPM_PACKAGE if source.registry == "npm" else models.PYPI_PACKAGE,
                "version": models.NPM_VERSION if source.registry == "npm" else models.PYPI_VERSION,
                "member": source.member,
                "length": source.length,
                "file": f"{models.SOURCES_SUBDIR}/{models.SOURCE_FILES[name]}",
                "sha256": source.sha256,
            },
            "io": io,
            "conversion": report["models"].get(name, {}),
            "checks": {k: float(f"{v:.3g}") for k, v in diffs.items()},
        }
    verify_seconds = time.monotonic() - step_started
    versions = report["versions"]
    return {
        "format": models.MANIFEST_FORMAT,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "converter": {
            "tensorflow": versions["tensorflow"],
            "tf2onnx": versions["tf2onnx"],
            "onnx": versions["onnx"],
            "numpy": versions["numpy"],
            "python": versions["python"],
            "opset": models.OPSET,
            "revision": models.CONVERSION_REVISION,
            "platform": platform.machine(),
        },
        "models": entries,
        "timings_s": {"convert": round(convert_seconds, 1), "verify": round(verify_seconds, 1)},
    }


def main_fetch(config: Any) -> int:
    """CLI entry for `skeletond models fetch`: progress on stdout, the error on stderr, an exit code."""

    def show(message: str) -> None:
        print(message, flush=True)

    try:
        fetch_models(config, progress=show)
    except FetchError as exc:
        print(f"models fetch failed: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("models fetch interrupted; nothing was half-installed", file=sys.stderr, flush=True)
        return 130
    return 0
