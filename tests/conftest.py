"""Shared fixtures: the test photos live outside the repo, in ../shared/testdata (never copied in)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
TESTDATA = (REPO_ROOT / ".." / "shared" / "testdata").resolve()


def testdata_path(*parts: str) -> Path:
    path = TESTDATA.joinpath(*parts)
    if not path.exists():
        pytest.fail(
            f"test data missing: {path} (the tests read the shared photos from ../shared/testdata "
            "beside the repository; they are never copied into it)"
        )
    return path


# Test modules import this helper; its name must not make pytest collect it as a test.
testdata_path.__test__ = False


@pytest.fixture(scope="session")
def testdata() -> Path:
    return testdata_path()


@pytest.fixture(scope="session")
def config():
    """The default configuration (models from the default models dir or SKELETON_MODELS_DIR)."""
    from daemon.config import load_config

    return load_config()


def _backend(config, landmark: str, precision: str | None = None):
    """ONNX Runtime with the models of `precision` (fp32 | int8; default: what engine.precision gives it)."""
    from engines.models import ModelsMissing, model_paths, model_precision
    from engines.onnxruntime import OnnxRuntimeBackend

    if precision is None:
        precision = model_precision("onnxruntime", config.engine.precision)
    try:
        paths = model_paths(config.models.dir, landmark, precision)
    except ModelsMissing as error:
        pytest.fail(f"{error} (CI runs `skeletond models fetch` before the tests)")
    return OnnxRuntimeBackend({"detector": paths["detector"], "landmark": paths["landmark"]}, config.engine)


@pytest.fixture(scope="module")
def backend(config):
    """ONNX Runtime with the default landmark model, one per test module (closed when the module is done)."""
    instance = _backend(config, config.models.landmark)
    yield instance
    instance.close()


@pytest.fixture(scope="session")
def full_backend(config):
    """ONNX Runtime with the full landmark model: the one MediaPipe's reference outputs were made with."""
    backend = _backend(config, "full")
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def analyzer():
    """The production pipeline with its default settings (heavy model, flip testing)."""
    from daemon.config import load_config
    from daemon.pipeline import Analyzer

    instance = Analyzer(load_config())
    yield instance
    instance.close()


def read_photo(*parts: str) -> bytes:
    return testdata_path("photos", *parts).read_bytes()
