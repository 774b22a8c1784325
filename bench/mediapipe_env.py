"""The benchmark-only MediaPipe environment: `mediapipe==0.10.21` (needs numpy<2) in its own venv.

MediaPipe is the runtime a developer would otherwise pick; issue 7 measures the daemon against it. It is
never a dependency of the daemon: it lives in `~/.cache/skeleton-v2/bench-mediapipe-venv` (or
$SKELETON_BENCH_MEDIAPIPE_VENV). Building it is idempotent: a venv that already imports mediapipe 0.10.21
with numpy<2 and holds the verified heavy landmark model is left as it is.

`model_complexity=2` (heavy) would try to download `pose_landmark_heavy.tflite` at first use and fail
offline (../shared/spec/models.md), so the file fetched by `skeletond models fetch` (from the pinned npm
package, sha256-checked) is copied into the venv's `mediapipe/modules/pose_landmark/` first.

    .venv/bin/python bench/mediapipe_env.py            # build (or check) the venv; prints its python
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

MEDIAPIPE_VERSION = "0.10.21"
HEAVY_SHA256 = "59e42d71bcd44cbdbabc419f0ff76686595fd265419566bd4009ef703ea8e1fe"
# mediapipe 0.10.21 depends on opencv-contrib-python; its 4.12+ wheels need numpy>=2, so cap it.
REQUIREMENTS = [f"mediapipe=={MEDIAPIPE_VERSION}", "numpy<2", "opencv-contrib-python<4.11"]

# The check run inside the venv: versions, and where the pose_landmark module folder is.
_PROBE = (
    "import json, os, numpy, cv2, mediapipe; "
    "print(json.dumps({'mediapipe': mediapipe.__version__, 'numpy': numpy.__version__, "
    "'opencv': cv2.__version__, "
    "'pose_landmark_dir': os.path.join(os.path.dirname(mediapipe.__file__), 'modules', 'pose_landmark')}))"
)


class MediapipeEnvError(RuntimeError):
    """The MediaPipe venv could not be built or checked (the reason is the message)."""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "skeleton-v2"


def default_venv_dir() -> Path:
    return Path(os.environ.get("SKELETON_BENCH_MEDIAPIPE_VENV") or cache_dir() / "bench-mediapipe-venv")


def default_heavy_source() -> Path:
    models = os.environ.get("SKELETON_MODELS_DIR")
    return (Path(models) if models else cache_dir() / "models") / "sources" / "pose_landmark_heavy.tflite"


def sha256_of(path: Path) -> str:
    from engines.files import sha256_file

    return sha256_file(path)


def venv_python(venv_dir: Path) -> Path:
    return venv_dir / "bin" / "python"


def _probe(python: Path) -> dict | None:
    """Versions inside the venv, or None when mediapipe does not import there."""
    import json

    if not python.exists():
        return None
    try:
        done = subprocess.run([str(python), "-c", _PROBE], capture_output=True, text=True, check=False, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None


def _ready(info: dict | None) -> bool:
    return bool(info) and info["mediapipe"] == MEDIAPIPE_VERSION and int(info["numpy"].split(".")[0]) < 2


def _install_heavy(info: dict, heavy_source: Path, log) -> Path:
    target = Path(info["pose_landmark_dir"]) / "pose_landmark_heavy.tflite"
    if target.exists() and sha256_of(target) == HEAVY_SHA256:
        return target
    if not heavy_source.exists():
        raise MediapipeEnvError(
            f"{heavy_source} is missing: run `skeletond models fetch` first (MediaPipe's heavy model would "
            "otherwise be downloaded at first use, which fails offline)"
        )
    found = sha256_of(heavy_source)
    if found != HEAVY_SHA256:
        raise MediapipeEnvError(f"{heavy_source}: sha256 {found}, expected {HEAVY_SHA256}")
    log(f"copying {heavy_source} -> {target}")
    tmp = target.with_suffix(".tflite.tmp")
    shutil.copyfile(heavy_source, tmp)
    if sha256_of(tmp) != HEAVY_SHA256:
        tmp.unlink(missing_ok=True)
        raise MediapipeEnvError(f"copy of {heavy_source} to {target} does not match its sha256")
    os.replace(tmp, target)
    return target


def ensure_mediapipe_venv(
    venv_dir: Path | None = None,
    heavy_source: Path | None = None,
    *,
    log=lambda message: print(message, file=sys.stderr),
    pip_timeout_s: float = 1800,
) -> Path:
    """Build (or check) the venv; its python. Raises MediapipeEnvError with the reason on failure."""
    venv_dir = Path(venv_dir or default_venv_dir())
    heavy_source = Path(heavy_source or default_heavy_source())
    python = venv_python(venv_dir)
    info = _probe(python)
    if not _ready(info):
        if not python.exists():
            log(f"creating {venv_dir}")
            try:
                venv.EnvBuilder(with_pip=True, clear=venv_dir.exists()).create(venv_dir)
            except Exception as exc:  # any failure is reported as the reason
                raise MediapipeEnvError(f"cannot create the venv {venv_dir}: {exc}") from exc
        log(f"installing {' '.join(REQUIREMENTS)} into {venv_dir} (about 1 GB, a few minutes)")
        command = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", *REQUIREMENTS]
        try:
            done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=pip_timeout_s)
        except subprocess.TimeoutExpired as exc:
            raise MediapipeEnvError(f"pip install timed out after {pip_timeout_s:.0f} s") from exc
        if done.returncode != 0:
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
            raise MediapipeEnvError(f"pip install {' '.join(REQUIREMENTS)} failed:\n{tail}")
        info = _probe(python)
        if not _ready(info):
            probe = subprocess.run([str(python), "-c", _PROBE], capture_output=True, text=True, check=False)
            tail = "\n".join(probe.stderr.strip().splitlines()[-10:])
            raise MediapipeEnvError(f"mediapipe {MEDIAPIPE_VERSION} with numpy<2 does not import: {info or tail}")
    _install_heavy(info, heavy_source, log)
    return python


def describe(venv_dir: Path | None = None) -> dict | None:
    """Versions in the venv (None when it is not usable)."""
    return _probe(venv_python(Path(venv_dir or default_venv_dir())))


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--venv", type=Path, help=f"venv folder (default {default_venv_dir()})")
    parser.add_argument("--heavy", type=Path, help=f"pose_landmark_heavy.tflite (default {default_heavy_source()})")
    args = parser.parse_args(argv)
    try:
        python = ensure_mediapipe_venv(args.venv, args.heavy)
    except MediapipeEnvError as exc:
        print(f"mediapipe venv: {exc}", file=sys.stderr)
        return 1
    print(python)
    print(describe(python.parent.parent))
    return 0


if __name__ == "__main__":
    sys.exit(main())
