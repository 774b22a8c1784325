"""Measures on the real photo pairs: mirroring and halving the photos must not change what they say.

Targets (issue 3): mirroring both photos flips every left/right measure, swaps the legs, keeps the side
measures and flips side_part, within 1.5 degrees; halving changes no measure by more than 1.5 degrees.
"""

from __future__ import annotations

import pytest
from photo_poses import LEFT_RIGHT, LEG_SWAP, PAIRS, estimate, read, variants

from daemon.measures import front_measures, side_measures, side_part

TARGET_DEG = 1.5


@pytest.fixture(scope="module")
def pair_measures(backend):
    """pair -> {"orig"|"mirror"|"half": (front measures, side measures, side_part)}"""
    results = {}
    for pair in PAIRS:
        results[pair] = {}
        front, side = read("front", f"{pair}_front.jpg"), read("side", f"{pair}_side.jpg")
        for name, (f_img, s_img) in variants(front, side).items():
            f_view, s_view = estimate(backend, f_img).main, estimate(backend, s_img).main
            results[pair][name] = (front_measures(f_view), side_measures(s_view), side_part(s_view))
    return results


def _differences(results, variant: str) -> dict[tuple[str, str], float]:
    """(pair, measure) -> disagreement in degrees between the photo and its variant, after mirroring's
    expected sign flips and leg swap."""
    out = {}
    for pair, by_variant in results.items():
        front, side, _ = by_variant["orig"]
        other_front, other_side, _ = by_variant[variant]
        for name, measure in {**front, **side}.items():
            other_name = LEG_SWAP.get(name, name) if variant == "mirror" else name
            other = {**other_front, **other_side}[other_name]
            if measure.value is None or other.value is None:
                continue
            expected = -measure.value if (variant == "mirror" and name in LEFT_RIGHT) else measure.value
            out[(pair, name)] = abs(other.value - expected)
    return out


@pytest.mark.parametrize("variant", ["mirror", "half"])
def test_all_measures_within_target(pair_measures, variant):
    """Guards the pose stage's mirror- and scale-equivariance (symmetric detection, flip-averaged
    landmarks, continuous pixel coordinates) as much as the measures' definitions."""
    differences = _differences(pair_measures, variant)
    assert len(differences) >= 8 * 9
    over = {key: round(d, 2) for key, d in differences.items() if d > TARGET_DEG}
    assert not over, over


def test_mirroring_flips_side_part(pair_measures):
    for pair, by_variant in pair_measures.items():
        original, mirrored = by_variant["orig"][2], by_variant["mirror"][2]
        assert original * mirrored < 0, pair
        assert abs(original + mirrored) <= TARGET_DEG, pair
        assert abs(by_variant["half"][2] - original) <= TARGET_DEG, pair


def test_side_part_sign_matches_the_manifest(pair_measures):
    """Only fitlens_p3's side photo faces image right (photos/MANIFEST.md)."""
    for pair, by_variant in pair_measures.items():
        assert (by_variant["orig"][2] > 0) == (pair == "fitlens_p3"), pair
