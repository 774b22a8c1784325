"""The pose stage against MediaPipe's own runtime (mediapipe 0.10.21, full model, static image mode)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from conftest import TESTDATA, testdata_path

from daemon import pose
from daemon.views import BLAZEPOSE_MIRROR

REFERENCE = TESTDATA / "reference" / "full"
# photo path (relative to photos/) -> its reference file; the reference names the photo it was made from.
REFERENCES = {
    json.loads(path.read_text())["image"]: path for path in sorted(REFERENCE.rglob("*.json"))
} if REFERENCE.exists() else {}
PHOTOS = sorted(REFERENCES)
CROWDED = {"other/openpose_COCO_val2014_000000000241.jpg", "other/ultralytics_bus.jpg"}


def _reference(relative: str) -> dict:
    return json.loads(REFERENCES[relative].read_text())


def _median_error_fraction(ours: np.ndarray, theirs: np.ndarray) -> float:
    """Median landmark distance as a fraction of the person's height (nose-to-heel extent of theirs)."""
    height = theirs[:, 1].max() - theirs[:, 1].min()
    return float(np.median(np.linalg.norm(ours - theirs, axis=1)) / height)


def _closest_person(people, theirs: np.ndarray):
    """Photos with several people: compare the person MediaPipe chose (its first detection)."""
    return min(people, key=lambda person: np.median(np.linalg.norm(person.keypoints_px - theirs, axis=1)))


def test_reference_photos_are_there():
    assert len(PHOTOS) >= 25, f"expected the reference outputs under {REFERENCE}"


def test_anchor_count_and_layout():
    anchors = pose.ssd_anchor_centers()
    assert anchors.shape == (2254, 2)
    assert np.allclose(anchors[0], [0.5 / 28, 0.5 / 28]) and np.allclose(anchors[1], anchors[0])
    assert np.allclose(anchors[-1], [6.5 / 7, 6.5 / 7])


def test_weighted_nms_merges_overlaps_by_score():
    scores = np.array([0.9, 0.6, 0.8])
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], float)
    keypoints = np.zeros((3, 4, 2))
    kept = pose.weighted_nms(scores, boxes, keypoints)
    assert [round(score, 2) for score, _, _ in kept] == [0.9, 0.8]
    assert kept[0][1][0] == pytest.approx(0.6 / 1.5)  # (0 * 0.9 + 1 * 0.6) / 1.5


def test_heatmap_refinement_moves_to_the_peak():
    heat = np.full((64, 64, 39), -20.0, np.float32)
    heat[30, 20, 0] = 5.0  # a confident peak at column 20, row 30
    xy = np.full((39, 2), 0.5)
    xy[0] = [21.5 / 64, 31.2 / 64]
    refined = pose.refine_from_heatmap(xy, heat)
    assert refined[0] == pytest.approx([20 / 64, 30 / 64], abs=1e-4)
    assert np.allclose(refined[1:], 0.5)  # nothing confident there: untouched


@pytest.mark.parametrize("relative", PHOTOS)
def test_landmarks_agree_with_mediapipe(relative, full_backend):
    """Median distance to MediaPipe's own landmarks at most 1% of the person's height, with MediaPipe's
    steps alone and with flip testing (the production default).

    Our crops are sampled in continuous pixel coordinates, MediaPipe's half a pixel off (daemon/pose.py,
    _rect_to_crop): that shifts every landmark by about 0.4% of the height, well inside the bar. The two
    crowded photos are compared on MediaPipe's chosen person, a bystander: a seated man cut off by the
    photo's edge and a pedestrian among several; their poses are ambiguous enough that the half-pixel
    shift and the mirrored pass move them further, so their bar is 2%.
    """
    reference = _reference(relative)
    image = cv2.imread(str(testdata_path("photos", relative)), cv2.IMREAD_COLOR)
    assert (image.shape[1], image.shape[0]) == (reference["width"], reference["height"])
    bar = 0.02 if relative in CROWDED else 0.01
    found = pose.estimate(full_backend, image, flip_test=False)
    if not reference["found"]:
        pytest.skip(f"MediaPipe found nobody in {relative}; we found {len(found.people)}")
    theirs = np.array(reference["landmarks_px"])[:, :2]
    assert found.people, f"no person found in {relative}"
    plain = _median_error_fraction(_closest_person(found.people, theirs).keypoints_px, theirs)
    assert plain <= bar, f"{relative}: median {plain:.2%} of height"
    flipped = pose.estimate(full_backend, image, flip_test=True)
    averaged = _median_error_fraction(_closest_person(flipped.people, theirs).keypoints_px, theirs)
    assert averaged <= bar, f"{relative} with flip testing: median {averaged:.2%} of height"


def test_world_landmarks_agree_with_mediapipe(full_backend):
    relative = "front/fitlens_p1_front.jpg"
    reference = _reference(relative)
    image = cv2.imread(str(testdata_path("photos", relative)))
    person = pose.estimate(full_backend, image, flip_test=False).main
    error = np.linalg.norm(person.world_m - np.array(reference["world_m"]), axis=1)
    assert np.median(error) < 0.02, f"median world error {np.median(error) * 1000:.1f} mm"


def test_mirrored_photo_swaps_left_and_right(full_backend):
    image = cv2.imread(str(testdata_path("photos", "front", "fitlens_p3_front.jpg")))
    width = image.shape[1]
    person = pose.estimate(full_backend, image).main
    mirrored = pose.estimate(full_backend, np.ascontiguousarray(image[:, ::-1])).main
    back = mirrored.keypoints_px[BLAZEPOSE_MIRROR].copy()
    back[:, 0] = width - back[:, 0]
    height = person.box[3]
    assert np.median(np.linalg.norm(back - person.keypoints_px, axis=1)) < 0.01 * height
    # The person's left shoulder is on the image's right in a front photo, and swaps sides in the mirror.
    assert person.keypoints_px[11, 0] > person.keypoints_px[12, 0]
    assert mirrored.keypoints_px[11, 0] > mirrored.keypoints_px[12, 0]


@pytest.mark.parametrize("relative", ["front/fiton_p1a_front.jpg", "side/fiton_p1a_side.jpg", "front/fiton_p1b_front.jpg"])
@pytest.mark.parametrize("min_side", [1024, 1600])
def test_reduced_scale_decode_keeps_agreement(relative, min_side, full_backend):
    """Big phone photos decode at 1/2 or 1/4 scale (DCT scaling); landmarks stay in full-photo pixels and
    agree with MediaPipe's run on the full-size photo."""
    from daemon.imageio import decode_upright

    reference = _reference(relative)
    decoded = decode_upright(testdata_path("photos", relative).read_bytes(), "front", 60_000_000, min_side)
    assert decoded.photo_size == (reference["width"], reference["height"])
    assert decoded.scale <= 0.5 and max(decoded.pixels.shape[:2]) >= min_side
    found = pose.estimate(full_backend, decoded.pixels, flip_test=False, photo_size=decoded.photo_size)
    theirs = np.array(reference["landmarks_px"])[:, :2]
    error = _median_error_fraction(found.main.keypoints_px, theirs)
    assert error <= 0.01, f"{relative} decoded at {decoded.scale:.3f}: median {error:.2%} of height"
    assert found.image_size == decoded.photo_size


def _refine_one_by_one(xy_norm, heat):
    """The calculator's loop, written out plainly (the oracle for the vectorised version)."""
    out = xy_norm.copy()
    rows, cols, _ = heat.shape
    for index in range(xy_norm.shape[0]):
        col, row = int(xy_norm[index, 0] * cols), int(xy_norm[index, 1] * rows)
        if col < 0 or col >= cols or row < 0 or col >= rows:
            continue
        conf = 1 / (1 + np.exp(-heat[max(0, row - 3):min(rows, row + 4), max(0, col - 3):min(cols, col + 4), index]))
        if conf.size and conf.max() >= 0.5 and conf.sum() > 0:
            grid_r, grid_c = np.mgrid[max(0, row - 3):min(rows, row + 4), max(0, col - 3):min(cols, col + 4)]
            out[index] = [(grid_c * conf).sum() / cols / conf.sum(), (grid_r * conf).sum() / rows / conf.sum()]
    return out


def test_vectorised_refinement_matches_the_calculator_loop():
    rng = np.random.default_rng(3)
    heat = rng.normal(-1.0, 2.0, (64, 64, 39)).astype(np.float32)
    # Points inside, on the edges, past the bottom (rows are not range-checked) and outside.
    xy = rng.uniform(-0.1, 1.1, (39, 2))
    xy[:4] = [[0.0, 0.0], [0.999, 0.999], [0.5, 1.03], [0.02, 0.5]]
    assert np.allclose(pose.refine_from_heatmap(xy, heat), _refine_one_by_one(xy, heat), atol=1e-9)
