"""Drive engines.tensorrt against one of NVIDIA's real TensorRT binding modules, checking every call.

Run by tests/test_tensorrt_real.py in a subprocess per TensorRT version (the versions share a module
name), with stub libnvinfer libraries on LD_LIBRARY_PATH (.ci/tensorrt-wheels.sh):

    python tests/real_tensorrt.py <binding module name> <work dir> <site folder>  ->  one JSON report on stdout

The version's site folder goes at the end of sys.path, after the venv's site-packages: it can add the
binding module but never shadow the venv's numpy (or anything else the backend and onnx import).

What is real: the module (`import tensorrt` in engines/tensorrt.py gets it), its version string, its
enums (NetworkDefinitionCreationFlag, BuilderFlag, MemoryPoolType, TensorIOMode, DataType), nptype,
ILogger and IProgressMonitor (the backend subclasses them), Dims, and every class's method signatures.
What is not: without libnvinfer, trt.Builder(...) cannot make a builder (the report records that it
fails the way TensorRT does without a usable GPU), so the objects Builder, Runtime and OnnxParser
return are the stand-ins of tests/fake_tensorrt.py, each wrapped so that every method the backend calls
and every property it reads or sets must exist on the real class it plays, with arguments that bind to
one of the real signatures (names, count, and types: ints, strings, buffers, enums, Dims, TensorRT
classes). pycuda stays a stand-in: the check is about TensorRT's API.
"""

from __future__ import annotations

import importlib
import json
import numbers
import re
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]


# --- pybind11 signatures ------------------------------------------------------------------------------


def _split_params(text: str) -> list[str]:
    """Split a parameter list at top-level commas (types hold brackets: List[int], Optional[...])."""
    parts, depth, current = [], 0, []
    for char in text:
        if char in "[(":
            depth += 1
        elif char in "])":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    if "".join(current).strip():
        parts.append("".join(current).strip())
    return parts


def signatures(function: Any, name: str) -> list[list[tuple[str, str, bool]]]:
    """Each overload's parameters after self, as (name, type, has default), from the pybind11 docstring."""
    doc = getattr(function, "__doc__", None) or ""
    found = []
    for line in doc.splitlines():
        match = re.match(rf"^\s*(?:\d+\.\s+)?{re.escape(name)}\((.*)\)\s*->", line)
        if not match or match.group(1) == "*args, **kwargs":
            continue
        params = []
        for part in _split_params(match.group(1)):
            pname, _, rest = part.partition(":")
            ptype, has_default = rest, False
            if "=" in rest:
                ptype, has_default = rest.split("=", 1)[0], True
            params.append((pname.strip(), ptype.strip(), has_default))
        if params and params[0][0] == "self":
            params = params[1:]
        found.append(params)
    return found


class Checker:
    """Checks calls against the real module's signatures; collects what was checked and what failed."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.checked: set[str] = set()
        self.errors: list[str] = []

    def _type_ok(self, value: Any, ptype: str) -> bool | None:
        """True / False, or None for a type this check does not model."""
        base = ptype.split("[")[0].split(".")[-1]
        if isinstance(value, Checked):
            real_class = getattr(self.real, base, None)
            mine = getattr(self.real, value._trt_name, None)
            return isinstance(real_class, type) and isinstance(mine, type) and issubclass(mine, real_class)
        if base in ("int", "SupportsInt", "SupportsIndex"):  # 11.x annotates ints as typing.SupportsInt
            return isinstance(value, numbers.Integral) and not isinstance(value, bool)
        if base == "str":
            return isinstance(value, str)
        if base == "bool":
            return isinstance(value, bool)
        if base in ("buffer", "Buffer"):
            return isinstance(value, (bytes, bytearray, memoryview))
        if ptype.startswith(f"{self.real.__name__}.") or ".tensorrt." in ptype:
            real_class = getattr(self.real, base, None)
            if not isinstance(real_class, type):
                return None
            if isinstance(value, real_class):
                return True
            if base.startswith("Dims"):
                try:
                    real_class(value)  # the implicit conversion pybind11 applies to a tuple
                except (TypeError, ValueError):
                    return False
                return True
            return False
        return None

    def _binds(self, params: list[tuple[str, str, bool]], args: tuple, kwargs: dict) -> str | None:
        """None when (args, kwargs) bind to `params`, else why not."""
        if len(args) > len(params):
            return f"{len(args)} positional arguments for {len(params)} parameters"
        bound = dict(zip((p[0] for p in params), args, strict=False))
        for key, value in kwargs.items():
            if key not in {p[0] for p in params}:
                return f"no parameter named {key!r}"
            if key in bound:
                return f"{key!r} given twice"
            bound[key] = value
        for pname, ptype, has_default in params:
            if pname not in bound:
                if not has_default:
                    return f"required parameter {pname!r} missing"
                continue
            if self._type_ok(bound[pname], ptype) is False:
                return f"{pname}={bound[pname]!r} is not a {ptype}"
        return None

    def call(self, owner: str, method: str, args: tuple, kwargs: dict) -> None:
        real_class = getattr(self.real, owner)
        function = real_class if method == "__init__" else getattr(real_class, method)
        overloads = signatures(function.__init__ if method == "__init__" else function, method)
        label = f"{owner}.{method}"
        self.checked.add(label)
        if not overloads:
            self.errors.append(f"{label}: no signature readable from the real docstring")
            return
        problems = [self._binds(params, args, kwargs) for params in overloads]
        if all(problem is not None for problem in problems):
            self.errors.append(f"{label}{_show(args, kwargs)} fits no real signature: {'; '.join(problems)}")


def _show(args: tuple, kwargs: dict) -> str:
    shown = [type(a).__name__ if not isinstance(a, (int, str)) else repr(a) for a in args]
    shown += [f"{k}={type(v).__name__}" for k, v in kwargs.items()]
    return f"({', '.join(shown)})"


def _unwrap(value: Any) -> Any:
    return value._fake if isinstance(value, Checked) else value


def _wrap(checker: Checker, value: Any) -> Any:
    if hasattr(value, "trt_name") and not isinstance(value, type):
        return Checked(checker, value)
    return value


class Checked:
    """A stand-in object whose attributes must exist on the real class named by its `trt_name`."""

    def __init__(self, checker: Checker, fake: Any) -> None:
        object.__setattr__(self, "_checker", checker)
        object.__setattr__(self, "_fake", fake)
        object.__setattr__(self, "_trt_name", fake.trt_name)

    def __getattr__(self, attr: str) -> Any:
        checker: Checker = self._checker
        real_class = getattr(checker.real, self._trt_name)
        if not hasattr(real_class, attr):
            raise AttributeError(f"real {self._trt_name} has no {attr!r}")
        real_attr = getattr(real_class, attr)
        if isinstance(real_attr, property):
            checker.checked.add(f"{self._trt_name}.{attr}")
            return _wrap(checker, getattr(self._fake, attr))
        method = getattr(self._fake, attr)

        def checked_method(*args: Any, **kwargs: Any) -> Any:
            checker.call(self._trt_name, attr, args, kwargs)
            result = method(*(_unwrap(a) for a in args), **{k: _unwrap(v) for k, v in kwargs.items()})
            return _wrap(checker, result)

        return checked_method

    def __setattr__(self, attr: str, value: Any) -> None:
        checker: Checker = self._checker
        real_attr = getattr(getattr(checker.real, self._trt_name), attr, None)
        label = f"{self._trt_name}.{attr}"
        checker.checked.add(f"{label} (set)")
        if not isinstance(real_attr, property) or real_attr.fset is None:
            checker.errors.append(f"{label}: not a settable property of the real class")
        setattr(self._fake, attr, _unwrap(value))


class CheckedModule:
    """`tensorrt` for engines.tensorrt: real names only; lib-backed classes are checked stand-ins."""

    def __init__(self, checker: Checker, fake: Any) -> None:
        self._checker = checker
        self._fake = fake

    def __getattr__(self, name: str) -> Any:
        real = self._checker.real
        if not hasattr(real, name):
            raise AttributeError(f"real tensorrt {real.__version__} has no {name!r}")
        self._checker.checked.add(f"tensorrt.{name}")
        value = getattr(self._fake, name, None)
        if value is None:
            return getattr(real, name)
        if isinstance(value, type) and hasattr(value, "trt_name"):
            checker = self._checker

            def construct(*args: Any) -> Checked:
                checker.call(value.trt_name, "__init__", args, {})
                return Checked(checker, value(*(_unwrap(a) for a in args)))

            return construct
        return value


# --- the run ------------------------------------------------------------------------------------------


def main(module_name: str, work: Path) -> dict[str, Any]:
    real = importlib.import_module(module_name)
    sys.modules["tensorrt"] = real  # what `import tensorrt` finds on a Jetson (python3-libnvinfer)
    sys.modules.pop("engines.tensorrt", None)
    import numpy as np
    from fake_tensorrt import make_fakes
    from test_tensorrt import expected_outputs, make_landmark_like_onnx

    import engines.tensorrt as backend
    from daemon.config import EngineConfig
    from engines.engine_cache import build_plan

    report: dict[str, Any] = {"version": real.__version__, "imported_by_backend": backend.trt is real,
                              "numpy": [np.__version__, np.__file__]}
    report["unavailable_reason"] = backend.unavailable_reason()
    report["plans"] = {p: build_plan(real.__version__, p) for p in ("fp16", "fp32")}
    # The real Builder with the backend's real-ILogger subclass: the call binds, then TensorRT reports
    # that it could not create a builder (here: stub libnvinfer, on a device: no usable GPU).
    try:
        real.Builder(backend.trt_logger())
        report["real_builder"] = "created"
    except TypeError as exc:
        report["real_builder"] = f"{type(exc).__name__}: {exc}"

    checker = Checker(real)
    onnx_path = make_landmark_like_onnx(work / "pose_landmark_tiny.onnx")
    runs: dict[str, Any] = {}
    for precision in ("fp16", "fp32"):
        fake_trt, fake_cuda, state = make_fakes(expected_outputs, version=real.__version__, real=real)
        backend.trt = CheckedModule(checker, fake_trt)
        backend.cuda = fake_cuda
        backend._trt_logger = None
        config = EngineConfig(backend="tensorrt", engine_dir=work / f"engines-{precision}", precision=precision)
        trt_backend = backend.TensorRTBackend({"landmark": onnx_path}, config)
        try:
            x = np.random.default_rng(1).random((3, 256, 256, 3), dtype=np.float32)
            out = trt_backend.run("landmark", {"input_1": x})
            run_ok = all(np.allclose(out[k], v, rtol=1e-4, atol=1e-5) for k, v in expected_outputs(x).items())
        finally:
            trt_backend.close()
        build = state.last_build
        runs[precision] = {
            "network_flags": build.network.flags,
            "builder_flags": sorted(str(f) for f in build.config.flags),
            "parsed_bytes": getattr(build.network, "parsed_bytes", None),
            "progress_monitor": getattr(build.config, "progress_monitor", None) is not None,
            "outputs_match": run_ok,
            "manifest": sorted(p.name for p in config.engine_dir.iterdir()),
        }
    report["runs"] = runs
    report["callbacks"] = check_callbacks(real, backend)
    report["checked"] = sorted(checker.checked)
    report["errors"] = checker.errors
    creation = real.NetworkDefinitionCreationFlag
    report["creation_flags"] = {k: int(getattr(creation, k)) for k in dir(creation) if k.isupper()}
    report["negative_controls"] = negative_controls(real)
    report["fake_differs"] = fake_differences(real, make_fakes)
    return report


def fake_differences(real: Any, make_fakes: Any) -> list[str]:
    """Where tests/fake_tensorrt.py's stand-in for this version has other names than the real module."""
    fake, _, _ = make_fakes(lambda x: {}, version=real.__version__)
    differences = []
    creation = {k: int(getattr(real.NetworkDefinitionCreationFlag, k))
                for k in dir(real.NetworkDefinitionCreationFlag) if k in ("EXPLICIT_BATCH", "STRONGLY_TYPED")}
    fake_creation = {k: v for k, v in vars(fake.NetworkDefinitionCreationFlag).items()
                     if k in ("EXPLICIT_BATCH", "STRONGLY_TYPED")}
    if creation != fake_creation:
        differences.append(f"NetworkDefinitionCreationFlag: real {creation}, fake {fake_creation}")
    for label, real_has, fake_has in (
        ("BuilderFlag.FP16", hasattr(real.BuilderFlag, "FP16"), hasattr(fake.BuilderFlag, "FP16")),
        ("Builder.platform_has_fast_fp16", hasattr(real.Builder, "platform_has_fast_fp16"),
         hasattr(fake.Builder, "platform_has_fast_fp16")),
    ):
        if real_has != fake_has:
            differences.append(f"{label}: real {'has' if real_has else 'lacks'} it, the fake does not agree")
    return differences


def check_callbacks(real: Any, backend: Any) -> list[str]:
    """TensorRT calls the backend's ILogger and IProgressMonitor overrides: their parameters must be the
    real base class's (names and count), and the logger must take every real severity."""
    import inspect

    problems = []
    backend.trt = real
    backend._trt_logger = None
    logger = backend.trt_logger()
    overrides = [(real.ILogger, type(logger), "log")]
    if hasattr(real, "IProgressMonitor"):
        monitor = backend._BuildProgress("probe").monitor()
        overrides += [(real.IProgressMonitor, type(monitor), m) for m in ("phase_start", "step_complete", "phase_finish")]
    for base, mine, method in overrides:
        (params,) = signatures(getattr(base, method), method)
        ours = list(inspect.signature(getattr(mine, method)).parameters)[1:]
        if ours != [p[0] for p in params]:
            problems.append(f"{base.__name__}.{method}: ours takes {ours}, TensorRT passes {[p[0] for p in params]}")
    for severity in ("INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE"):
        logger.log(getattr(real.ILogger, severity), "probe")
    return problems


def negative_controls(real: Any) -> dict[str, bool]:
    """Calls the check must refuse, so that a silent check cannot pass: name -> refused."""
    checker = Checker(real)
    cache = Checked(checker, type("TimingCache", (), {"trt_name": "ITimingCache"})())
    controls = {
        "misspelt keyword": ("IBuilderConfig", "set_timing_cache", (cache,), {"ignore_mismatches": False}),
        "missing argument": ("IBuilderConfig", "set_timing_cache", (cache,), {}),
        "wrong enum": ("IBuilderConfig", "set_memory_pool_limit", (real.TensorIOMode.INPUT, 1 << 20), {}),
        "string for int": ("IExecutionContext", "execute_async_v3", ("0",), {}),
        "bad Dims": ("IOptimizationProfile", "set_shape", ("x", ("a",), (1,), (1,)), {}),
    }
    refused = {}
    for name, (owner, method, args, kwargs) in controls.items():
        before = len(checker.errors)
        checker.call(owner, method, args, kwargs)
        refused[name] = len(checker.errors) > before
    return refused


if __name__ == "__main__":
    sys.path.append(sys.argv[3])
    print(json.dumps(main(sys.argv[1], Path(sys.argv[2])), indent=1, default=str))
