"""The int8 models against the fp32 ones on every test photo (issue 15's accuracy bars).

Bars for the default precision: median landmark distance at most 0.3% of the person's height on every
photo, and every measure within 0.5 degrees of fp32 on the eight real pairs. int8 is the default only if
it holds them; otherwise fp32 stays the default and int8's cost (README "int8") must not grow beyond the
figures written there (INT8_COST below), so a worse quantization recipe fails here.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TESTDATA, _backend
from photo_poses import PAIRS, estimate, read

from daemon.config import EngineConfig
from daemon.measures import front_measures, side_measures
from engines import models, quantize
from engines.models import model_precision

MEDIAN_BAR = 0.003  # of the person's height
MEASURE_BAR_DEG = 0.5
# What int8 costs today (README "int8"), with a margin for other CPUs' int8 kernels: the test fails when
# a recipe change makes it worse. The worst photo's median landmark distance, and the median and 90th
# percentile of the measures' differences: the single worst measure is not guarded, since one landmark
# that int8 puts on the wrong knee moves a measure by tens of degrees (fiton_p1a's far_knee_bal, 36 deg).
# "missed": photos where int8 finds nobody that fp32 finds (both back views, the h36m frame and the drawn
# one: their pose flag falls below 0.5). Measured 2026-12-04 (Intel Xeon, AVX512-VNNI + AMX, ONNX Runtime 1.32, the versions in
# deploy/constraints.txt, recipe revision 2: calibrated on area-averaged crops): 2 missed; 0.79%;
# 0.95 and 8.1 deg (one more miss allowed for other CPUs' kernels).
INT8_COST = {"missed": 3, "median": 0.009, "measure_median_deg": 2.0, "measure_p90_deg": 12.0}
PHOTOS = sorted(
    str(path.relative_to(TESTDATA / "photos"))
    for pattern in ("*/*.jpg", "*/*.png") for path in (TESTDATA / "photos").glob(pattern)
    if path.parent.name != "annotations"
)


@pytest.fixture(scope="module")
def backends(config):
    landmark = config.models.landmark
    pair = {precision: _backend(config, landmark, precision) for precision in ("fp32", "int8")}
    yield pair
    for backend in pair.values():
        backend.close()


def _median_fraction(reference: np.ndarray, other: np.ndarray) -> float:
    height = reference[:, 1].max() - reference[:, 1].min()
    return float(np.median(np.linalg.norm(reference - other, axis=1)) / height)


def test_int8_files_are_current(config):
    """`models fetch` made every int8 file from today's fp32 file with today's recipe; hashes hold."""
    manifest = models.read_manifest(config.models.dir)
    wanted = {name: quantize.recipe(name) for name in models.MODEL_NAMES}
    assert models.verify_int8(config.models.dir, manifest, wanted) == []
    for name in models.MODEL_NAMES:
        entry = manifest[models.INT8_KEY][name]
        assert entry["from_sha256"] == manifest["models"][name]["sha256"]
        assert entry["sha256"] != manifest["models"][name]["sha256"]


@pytest.fixture(scope="module")
def landmark_errors(backends):
    """photo -> median landmark distance of int8 vs fp32, as a fraction of the person's height."""
    errors = {}
    for relative in PHOTOS:
        image = read(*relative.split("/"))
        reference = estimate(backends["fp32"], image)
        other = estimate(backends["int8"], image)
        if not reference.people:
            continue
        if not other.people:
            # int8 finds nobody where fp32 finds someone: the worst possible distance, counted as such.
            errors[relative] = float("inf")
            continue
        ours = reference.main.keypoints_px
        theirs = min(other.people, key=lambda p: np.median(np.linalg.norm(p.keypoints_px - ours, axis=1)))
        errors[relative] = _median_fraction(ours, theirs.keypoints_px)
    assert len(errors) >= 25
    return errors


@pytest.fixture(scope="module")
def measure_errors(backends):
    """(pair, measure) -> |int8 - fp32| on the eight real pairs."""
    errors = {}
    for pair in PAIRS:
        images = read("front", f"{pair}_front.jpg"), read("side", f"{pair}_side.jpg")
        values = {}
        for precision, backend in backends.items():
            front, side = (estimate(backend, image).main for image in images)
            values[precision] = {**front_measures(front), **side_measures(side)}
        for name, measure in values["fp32"].items():
            other = values["int8"][name]
            if measure.value is not None and other.value is not None:
                errors[(pair, name)] = abs(other.value - measure.value)
    return errors


def test_default_precision_is_chosen_by_the_bars(landmark_errors, measure_errors):
    worst_photo = max(landmark_errors, key=landmark_errors.get)
    worst_measure = max(measure_errors, key=measure_errors.get)
    holds = landmark_errors[worst_photo] <= MEDIAN_BAR and measure_errors[worst_measure] <= MEASURE_BAR_DEG
    default = model_precision("onnxruntime", EngineConfig().precision)
    summary = (
        f"int8 vs fp32: worst median {landmark_errors[worst_photo]:.3%} of height ({worst_photo}), "
        f"worst measure {measure_errors[worst_measure]:.2f} deg {worst_measure}"
    )
    photos, measures = sorted(landmark_errors.values()), sorted(measure_errors.values())
    print(
        f"{summary}; over {len(photos)} photos median {np.median(photos):.3%}, over {len(measures)} measures "
        f"median {np.median(measures):.2f} deg, 90th percentile {np.percentile(measures, 90):.2f} deg"
    )
    if default == "int8":
        assert holds, f"int8 is the default but misses the bars: {summary}"
    else:
        assert not holds, f"int8 holds every bar ({summary}): make it the default (README 'int8')"


def test_int8_cost_is_no_worse_than_documented(landmark_errors, measure_errors):
    missed = [photo for photo, error in landmark_errors.items() if error == float("inf")]
    found = {photo: error for photo, error in landmark_errors.items() if error != float("inf")}
    print(f"int8 finds nobody in {missed}; worst median of the others {max(found.values()):.3%}")
    assert len(missed) <= INT8_COST["missed"], missed
    assert max(found.values()) <= INT8_COST["median"], sorted(found.items())
    measures = list(measure_errors.values())
    assert np.median(measures) <= INT8_COST["measure_median_deg"], sorted(measure_errors.items())
    assert np.percentile(measures, 90) <= INT8_COST["measure_p90_deg"], sorted(measure_errors.items())


# ---------------------------------------------------------------------------------------------------------
# Files, settings and the TensorRT calibration cache (quick)


def test_modified_int8_file_is_detected(config, tmp_path):
    source = config.models.dir
    manifest = models.read_manifest(source)
    for name in [models.MANIFEST_NAME, *models.ONNX_FILES.values(), *models.INT8_FILES.values()]:
        (tmp_path / name).symlink_to(source / name)
    copy = tmp_path / models.INT8_FILES["detector"]
    copy.unlink()
    data = bytearray((source / models.INT8_FILES["detector"]).read_bytes())
    data[-1] ^= 0xFF
    copy.write_bytes(bytes(data))
    wanted = {name: quantize.recipe(name) for name in models.MODEL_NAMES}
    problems = models.verify_int8(tmp_path, manifest, wanted)
    assert len(problems) == 1 and "detector int8" in problems[0] and "sha256" in problems[0]
    # A recipe change (say, one more layer in float) makes that model stale, and only that one.
    changed = {**wanted, "heavy": {**wanted["heavy"], "float_nodes": ["op:Add"]}}
    assert any(p.startswith("heavy int8: made with another") for p in models.verify_int8(source, manifest, changed))


def test_precision_setting_picks_the_files(config):
    assert model_precision("onnxruntime", "int8") == "int8"
    assert model_precision("onnxruntime", "fp16") == "fp32"  # no fp16 kernels on a CPU: the fp32 files
    assert model_precision("tensorrt", "int8") == "fp32"  # TensorRT quantizes the fp32 files itself
    paths = models.model_paths(config.models.dir, "heavy", "int8")
    assert paths["landmark"].name == "pose_landmark_heavy.int8.onnx"
    manifest = models.read_manifest(config.models.dir)
    assert models.model_sha256(paths["landmark"]) == manifest[models.INT8_KEY]["heavy"]["sha256"]
    with pytest.raises(ValueError):
        models.model_paths(config.models.dir, "heavy", "int4")


def test_config_accepts_int8_and_refuses_others():
    from daemon.config import ConfigError, load_config

    assert load_config(environ={"SKELETON_ENGINE_PRECISION": "int8"}).engine.precision == "int8"
    with pytest.raises(ConfigError, match="int8"):
        load_config(environ={"SKELETON_ENGINE_PRECISION": "int4"})


def test_tensorrt_calibration_cache_holds_the_int8_ranges(config):
    """The cache TensorRT's int8 build reads: its header, and one scale per tensor the int8 model
    quantizes, named as in the fp32 model, each the int8 model's range / 127."""
    import struct

    import onnx

    int8 = config.models.dir / models.INT8_FILES["detector"]
    text = quantize.tensorrt_calibration_cache(int8, "10.3.0").decode()
    header, *lines = text.strip().splitlines()
    assert header == "TRT-10300-EntropyCalibration2"
    fp32 = onnx.load(str(config.models.dir / models.ONNX_FILES["detector"]))
    fp32_tensors = {"input_1"} | {out for node in fp32.graph.node for out in node.output}
    scales = {}
    for line in lines:
        name, _, hex_scale = line.rpartition(": ")
        scales[name] = struct.unpack(">f", bytes.fromhex(hex_scale))[0]
    assert len(scales) > 50 and all(scale > 0 for scale in scales.values())
    assert sum(name in fp32_tensors for name in scales) >= 0.9 * len(scales)
    # The detector's input lies in [-1, 1]: its range is about 1.
    assert scales["input_1"] * 127 == pytest.approx(1.0, abs=0.02)


def test_answer_version_names_the_int8_models(config):
    """With engine.precision = int8 on ONNX Runtime the daemon opens the int8 files, and the answer's
    version names them (an "_int8" key with the int8 file's sha256)."""
    import copy

    from daemon.pipeline import Analyzer

    int8_config = copy.deepcopy(config)
    int8_config.engine.backend = "onnxruntime"
    int8_config.engine.precision = "int8"
    analyzer = Analyzer(int8_config)
    try:
        entries = models.read_manifest(config.models.dir)[models.INT8_KEY]
        landmark = config.models.landmark
        assert analyzer.model_versions == {
            "detector_int8": entries["detector"]["sha256"],
            f"landmark_{landmark}_int8": entries[landmark]["sha256"],
        }
        assert analyzer.describe()["precision"] == "int8"
    finally:
        analyzer.close()


def test_a_failed_quantization_leaves_the_fp32_models_usable(config, tmp_path, monkeypatch):
    """int8 is an option: when quantizing fails, `models fetch` says so and the fp32 models stay ready."""
    import copy

    from engines import fetch

    for name in [models.MANIFEST_NAME, *models.ONNX_FILES.values()]:
        (tmp_path / name).symlink_to(config.models.dir / name)
    (tmp_path / models.SOURCES_SUBDIR).symlink_to(config.models.dir / models.SOURCES_SUBDIR)

    def broken(*args, **kwargs):
        raise RuntimeError("no int8 kernels here")

    monkeypatch.setattr(quantize, "calibration_inputs", broken)
    quiet = copy.deepcopy(config)
    quiet.models.dir = tmp_path
    lines: list[str] = []
    manifest = fetch.fetch_models(quiet, progress=lines.append, registries=())
    assert "models in place" in lines[0]
    assert any("int8 models NOT made" in line and "no int8 kernels here" in line for line in lines)
    assert models.model_paths(tmp_path, "heavy")["landmark"].name == "pose_landmark_heavy.onnx"
    assert manifest["models"] == models.read_manifest(config.models.dir)["models"]
    with pytest.raises(models.ModelsMissing, match="run `skeletond models fetch`"):
        models.model_paths(tmp_path, "heavy", "int8")
