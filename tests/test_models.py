"""The fetched pose models (engines/models.py, engines/fetch.py) and the sparse decoder (engines/convert.py).

Tests on the real models read the configured models dir, which CI fills with `skeletond models fetch`
before the tests: they fail (not skip) when it is missing. Nothing here touches the network or
TensorFlow; tampering happens on copies in tmp_path.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

from daemon.config import load_config
from engines import fetch, models
from engines.convert import SparseDim, densify_sparse

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def config():
    return load_config()


@pytest.fixture(scope="session")
def models_dir(config) -> Path:
    directory = Path(config.models.dir)
    problems = models.verify_models(directory)
    if problems:
        pytest.fail(
            f"pose models missing or modified in {directory}: run `skeletond models fetch` first "
            f"({'; '.join(problems)})"
        )
    return directory


@pytest.fixture(scope="session")
def manifest(models_dir) -> dict:
    return models.read_manifest(models_dir)


def _session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _mirror(models_dir: Path, target: Path, copied: set[str]) -> Path:
    """A models dir in tmp_path: symlinks to the real files, real copies of `copied` (to be tampered)."""
    (target / models.SOURCES_SUBDIR).mkdir(parents=True)
    names = [models.MANIFEST_NAME, *models.ONNX_FILES.values()]
    names += [f"{models.SOURCES_SUBDIR}/{name}" for name in models.SOURCE_FILES.values()]
    for name in names:
        if name in copied:
            shutil.copyfile(models_dir / name, target / name)
        else:
            (target / name).symlink_to(models_dir / name)
    return target


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


# ---------------------------------------------------------------------------------------------------------
# The fetched models


def test_manifest_records_sources_converters_and_hashes(models_dir, manifest):
    assert manifest["converter"]["tensorflow"] == models.TENSORFLOW_VERSION
    assert manifest["converter"]["tf2onnx"] == models.TF2ONNX_VERSION
    assert manifest["converter"]["opset"] == models.OPSET
    assert manifest["converter"]["onnx"]
    for name in models.MODEL_NAMES:
        entry = manifest["models"][name]
        assert entry["file"] == models.ONNX_FILES[name]
        assert entry["sha256"] == models.sha256_file(models_dir / entry["file"])
        assert entry["source"]["sha256"] in models.pinned_source_hashes(name)
        assert entry["source"]["sha256"] == models.sha256_file(models_dir / entry["source"]["file"])
        assert entry["source"]["version"] in (models.NPM_VERSION, models.PYPI_VERSION)


def test_model_paths_and_sha256(config, models_dir, manifest):
    paths = models.model_paths(models_dir, "heavy")
    assert paths == {
        "detector": models_dir / "pose_detection.onnx",
        "landmark": models_dir / "pose_landmark_heavy.onnx",
    }
    assert models.model_paths(config)["landmark"].name == f"pose_landmark_{config.models.landmark}.onnx"
    assert models.model_sha256(paths["landmark"]) == manifest["models"]["heavy"]["sha256"]


# models.md, written out here rather than read from engines/models.py, so a slip there shows up.
SPEC_IO = {
    "detector": (
        {"input_1": ["batch", 224, 224, 3]},
        {"Identity": ["batch", 2254, 12], "Identity_1": ["batch", 2254, 1]},
    ),
    **{
        size: (
            {"input_1": ["batch", 256, 256, 3]},
            {
                "Identity": ["batch", 195],
                "Identity_1": ["batch", 1],
                "Identity_2": ["batch", 256, 256, 1],
                "Identity_3": ["batch", 64, 64, 39],
                "Identity_4": ["batch", 117],
            },
        )
        for size in models.LANDMARK_SIZES
    },
}


@pytest.mark.parametrize("name", models.MODEL_NAMES)
def test_onnx_io_names_and_shapes(models_dir, name):
    session = _session(models_dir / models.ONNX_FILES[name])
    inputs = {t.name: list(t.shape) for t in session.get_inputs()}
    outputs = {t.name: list(t.shape) for t in session.get_outputs()}
    assert (inputs, outputs) == SPEC_IO[name]
    assert all(t.type == "tensor(float)" for t in [*session.get_inputs(), *session.get_outputs()])


@pytest.mark.parametrize("name", models.MODEL_NAMES)
def test_batch_of_two_equals_two_batches_of_one(models_dir, name):
    """Guards the Reshape patch: a batch-1 constant left in the graph breaks or mixes batch rows."""
    session = _session(models_dir / models.ONNX_FILES[name])
    shape = session.get_inputs()[0].shape[1:]
    rng = np.random.default_rng(7)
    low = -1.0 if name == "detector" else 0.0
    batch = rng.uniform(low, 1.0, size=(2, *shape)).astype(np.float32)
    together = session.run(None, {"input_1": batch})
    apart = [session.run(None, {"input_1": batch[i : i + 1]}) for i in range(2)]
    for index, output in enumerate(together):
        assert output.shape[0] == 2
        expected = np.concatenate([apart[0][index], apart[1][index]])
        assert np.max(np.abs(output - expected)) <= 2e-4


def test_second_fetch_is_a_quick_no_op(config, models_dir):
    # No registries: were anything missing, the fetch would fail rather than quietly download.
    quiet_config = copy.deepcopy(config)
    quiet_config.models.dir = models_dir
    lines: list[str] = []
    started = time.monotonic()
    fetch.fetch_models(quiet_config, progress=lines.append, registries=())
    elapsed = time.monotonic() - started
    assert elapsed < 1.0
    assert len(lines) == 1 and "models in place" in lines[0]


def test_modified_output_is_detected(models_dir, tmp_path):
    copy_dir = _mirror(models_dir, tmp_path / "models", {"pose_landmark_lite.onnx"})
    assert models.verify_models(copy_dir) == []
    _flip_last_byte(copy_dir / "pose_landmark_lite.onnx")
    problems = models.verify_models(copy_dir)
    assert len(problems) == 1 and "pose_landmark_lite.onnx" in problems[0] and "sha256" in problems[0]


def test_modified_source_is_detected_and_not_reused(models_dir, tmp_path):
    source = f"{models.SOURCES_SUBDIR}/pose_landmark_heavy.tflite"
    copy_dir = _mirror(models_dir, tmp_path / "models", {source})
    _flip_last_byte(copy_dir / source)
    problems = models.verify_models(copy_dir)
    assert len(problems) == 1 and "pose_landmark_heavy.tflite" in problems[0]
    # With no registry to download from, the tampered file must not be taken as a source.
    lines: list[str] = []
    with pytest.raises(fetch.FetchError, match="no verified source for heavy"):
        fetch.ensure_sources(copy_dir / models.SOURCES_SUBDIR, lines.append, registries=())
    assert any("matches no pinned source" in line for line in lines)


def test_manifest_converted_by_other_tools_is_refetched(models_dir, tmp_path):
    copy_dir = _mirror(models_dir, tmp_path / "models", {models.MANIFEST_NAME})
    manifest = json.loads((copy_dir / models.MANIFEST_NAME).read_text())
    manifest["converter"]["tf2onnx"] = "1.16.1"
    (copy_dir / models.MANIFEST_NAME).write_text(json.dumps(manifest))
    assert any("tf2onnx" in problem for problem in models.verify_models(copy_dir))


# ---------------------------------------------------------------------------------------------------------
# Without the fetched models


def test_missing_models_say_how_to_get_them(tmp_path):
    with pytest.raises(models.ModelsMissing, match=r"run `skeletond models fetch`") as caught:
        models.model_paths(tmp_path, "heavy")
    assert str(tmp_path) in str(caught.value)
    with pytest.raises(ValueError, match="landmark model"):
        models.model_paths(tmp_path, "huge")


def _fake_npm_tarball(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_source_with_wrong_sha256_is_refused(tmp_path):
    lite = models.SOURCES["lite"][0]
    archive = _fake_npm_tarball(tmp_path / "pose.tgz", {lite.member: b"not the pinned model"})
    target = tmp_path / "out" / "pose_landmark_lite.tflite"
    with pytest.raises(fetch.FetchError, match="sha256 .* pinned f17bfbec"):
        fetch.extract_source(archive, lite, target)
    assert not target.exists()


def test_source_takes_only_the_pinned_byte_range(tmp_path):
    # The npm detector is the first bytes of a bigger asset file: only those are hashed and kept.
    payload = b"detector bytes"
    pinned = models.SourceFile(
        "npm", "package/assets.data", hashlib.sha256(payload).hexdigest(), len(payload)
    )
    archive = _fake_npm_tarball(tmp_path / "pose.tgz", {pinned.member: payload + b"other assets"})
    fetch.extract_source(archive, pinned, tmp_path / "detector.tflite")
    assert (tmp_path / "detector.tflite").read_bytes() == payload


def test_library_modules_do_not_import_tensorflow():
    """TensorFlow belongs to the conversion venv only; the daemon must start without it."""
    code = (
        "import sys, engines.models, engines.fetch, engines.convert; "
        "bad = [m for m in ('tensorflow', 'tf2onnx', 'onnx') if m in sys.modules]; "
        "sys.exit(f'imported {bad}' if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------------------------------------------------
# Sparse CSR decoding (TFLite sparsity format)


def test_csr_matrix_row_major():
    expected = np.array([[1, 0, 0, 2], [0, 0, 3, 0], [0, 0, 0, 0]], dtype=np.float16)
    dense = densify_sparse(
        np.array([1, 2, 3], dtype=np.float16),
        dense_shape=(3, 4),
        traversal_order=(0, 1),
        dim_metadata=[
            SparseDim(dense_size=3),
            SparseDim(segments=np.array([0, 2, 3, 3]), indices=np.array([0, 3, 2])),
        ],
    )
    assert dense.dtype == np.float16
    np.testing.assert_array_equal(dense, expected)


def test_csr_matrix_column_major_traversal():
    # Traversal order (1, 0): the outer level walks columns, values are stored column by column.
    expected = np.array([[1, 0, 0, 2], [0, 0, 3, 0], [0, 0, 0, 0]], dtype=np.float32)
    dense = densify_sparse(
        np.array([1, 3, 2], dtype=np.float32),
        dense_shape=(3, 4),
        traversal_order=(1, 0),
        dim_metadata=[
            SparseDim(dense_size=4),
            SparseDim(segments=np.array([0, 1, 1, 2, 3]), indices=np.array([0, 1, 0])),
        ],
    )
    np.testing.assert_array_equal(dense, expected)


def test_block_sparse_matrix():
    # TFLite's block example: 2x2 blocks, one non-zero block per block row.
    dense = densify_sparse(
        np.arange(1, 9, dtype=np.float32),
        dense_shape=(4, 4),
        traversal_order=(0, 1, 2, 3),
        block_map=(0, 1),
        dim_metadata=[
            SparseDim(dense_size=2),
            SparseDim(segments=np.array([0, 1, 2]), indices=np.array([1, 0])),
            SparseDim(dense_size=2),
            SparseDim(dense_size=2),
        ],
    )
    expected = np.array([[0, 0, 1, 2], [0, 0, 3, 4], [5, 6, 0, 0], [7, 8, 0, 0]], dtype=np.float32)
    np.testing.assert_array_equal(dense, expected)


def _encode_like_the_detector(dense: np.ndarray) -> tuple[np.ndarray, list[SparseDim]]:
    """Dense, dense, dense, CSR over a (O, 1, 1, I) kernel: the layout of the detector's 38 tensors."""
    rows = dense.reshape(-1, dense.shape[-1])
    segments, indices, values = [0], [], []
    for row in rows:
        nonzero = np.flatnonzero(row)
        indices.extend(nonzero)
        values.extend(row[nonzero])
        segments.append(len(indices))
    dims = [SparseDim(dense_size=s) for s in dense.shape[:-1]]
    dims.append(
        SparseDim(segments=np.array(segments, dtype=np.uint16), indices=np.array(indices, dtype=np.uint8))
    )
    return np.array(values, dtype=dense.dtype), dims


def test_csr_round_trip_on_a_conv_kernel():
    rng = np.random.default_rng(3)
    kernel = rng.normal(size=(16, 1, 1, 24)).astype(np.float16)
    kernel[rng.random(kernel.shape) < 0.75] = 0  # the detector's tensors are mostly zeros
    values, dims = _encode_like_the_detector(kernel)
    np.testing.assert_array_equal(densify_sparse(values, kernel.shape, (0, 1, 2, 3), dims), kernel)


def test_malformed_sparse_tensor_is_refused():
    with pytest.raises(ValueError, match="only 2 are stored"):
        densify_sparse(
            np.array([1, 2], dtype=np.float32),
            (2, 2),
            (0, 1),
            [SparseDim(dense_size=2), SparseDim(segments=np.array([0, 2, 3]), indices=np.array([0, 1, 1]))],
        )
    with pytest.raises(ValueError, match="beyond dim 1"):
        densify_sparse(
            np.array([1.0], dtype=np.float32),
            (2, 2),
            (0, 1),
            [SparseDim(dense_size=2), SparseDim(segments=np.array([0, 1, 1]), indices=np.array([5]))],
        )
    with pytest.raises(ValueError, match="traversal levels"):
        densify_sparse(np.zeros(1, dtype=np.float32), (2, 2), (0,), [SparseDim(dense_size=2)])
