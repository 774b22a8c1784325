"""Which backend runs the models: config.engine.backend (auto | onnxruntime | tensorrt), and why.

Two backends, one explicit dict; each implementation is imported only when chosen, so a machine without
CUDA never imports TensorRT's module, and one without TensorRT never needs it.
"""

from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from engines.base import Backend

if TYPE_CHECKING:
    from daemon.config import EngineConfig

log = logging.getLogger(__name__)

# backend name -> (module, class); both classes take (model_paths, engine_config).
BACKENDS: dict[str, tuple[str, str]] = {
    "onnxruntime": ("engines.onnxruntime", "OnnxRuntimeBackend"),
    "tensorrt": ("engines.tensorrt", "TensorRTBackend"),
}


# The device nodes the CUDA driver opens: discrete GPUs (nvidia0, nvidiactl), Jetson (nvhost-*, nvmap),
# WSL (dxg). On a Jetson they belong to group `video`, mode 0660.
GPU_DEVICE_NODES = ("nvidiactl", "nvhost-ctrl-gpu", "nvhost-gpu", "nvmap", "dxg")


def _user_name(uid: int) -> str:
    try:
        import pwd  # Unix only, like the device nodes

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return f"uid {uid}"


def _group_name(gid: int) -> str:
    try:
        import grp

        return grp.getgrgid(gid).gr_name
    except (ImportError, KeyError):
        return f"gid {gid}"


def gpu_device_problem(dev_dir: Path = Path("/dev")) -> str | None:
    """"no device: ..." or "no permission: ..." when this process cannot open a GPU's device nodes."""
    nodes = sorted(dev_dir.glob("nvidia[0-9]*")) + [dev_dir / n for n in GPU_DEVICE_NODES if (dev_dir / n).exists()]
    if not nodes:
        return (
            f"no device: no NVIDIA GPU device node in {dev_dir} (nvidia0, nvhost-ctrl-gpu, nvmap); "
            "a container needs the NVIDIA runtime (compose: runtime: nvidia)"
        )
    denied = [node for node in nodes if not os.access(node, os.R_OK | os.W_OK)]
    if not denied:
        return None
    node = denied[0]
    info = node.stat()
    group = _group_name(info.st_gid)
    user = _user_name(os.geteuid()) if hasattr(os, "geteuid") else "this user"
    return (
        f"no permission: user {user} cannot open {node} (group {group}, mode {info.st_mode & 0o777:o}); "
        f"add it to group {group} (usermod -aG {group} {user}; compose group_add; systemd SupplementaryGroups)"
    )


def tensorrt_unavailable_reason(dev_dir: Path = Path("/dev")) -> str | None:
    """Why TensorRT cannot run here, in one line starting with the kind of problem, or None when it can.

    "missing module: ..." (tensorrt or pycuda), "no device: ...", "no permission: ..." (the device nodes;
    on a Jetson the user must be in group video), or "unusable: ..." (driver, TensorRT version).
    """
    from engines import tensorrt as backend

    reason = backend.unavailable_reason()
    if reason is None:
        return None
    if backend.trt is None or backend.cuda is None:
        line = f"missing module: {reason}"
    else:
        line = gpu_device_problem(dev_dir) or f"unusable: {reason}"
    return " ".join(line.split())  # one line, whatever the driver's message holds


def select_backend(config: EngineConfig) -> tuple[str, str]:
    """The backend to open and the reason, for the start-up log and /healthz."""
    if config.backend in BACKENDS:
        return config.backend, f"engine.backend = {config.backend} in the configuration"
    if config.backend != "auto":
        raise ValueError(f"engine.backend: one of auto, {', '.join(BACKENDS)}; got {config.backend!r}")
    missing = tensorrt_unavailable_reason()
    if missing is None:
        return "tensorrt", "auto: tensorrt, pycuda and a CUDA device are present"
    return "onnxruntime", f"auto: TensorRT not used, {missing}"


def open_backend(model_paths: dict[str, Path], config: EngineConfig) -> Backend:
    """Construct the selected backend (in the calling thread: the worker that will own the device)."""
    name, reason = select_backend(config)
    # A Jetson that falls back to the CPU says why at WARNING, in one line.
    level = logging.WARNING if config.backend == "auto" and name != "tensorrt" else logging.INFO
    log.log(level, "inference backend %s (%s)", name, reason)
    module_name, class_name = BACKENDS[name]
    backend_class = getattr(importlib.import_module(module_name), class_name)
    backend: Backend = backend_class(model_paths, config)
    return backend
