"""Reference statistics cache: the key covers every part; a hit returns the same stats."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffnas.errors import UserError
from diffnas.evaluate.extractor import FeatureExtractor
from diffnas.evaluate.reference import reference_key, reference_stats


class CountingExtractor(FeatureExtractor):
    """Mean contrast |x| per channel and row (nonlinear, like a ReLU net); counts forward calls."""

    name = "counting"
    weights_sha256 = "0" * 64
    dim = 3 * 8

    def __init__(self) -> None:
        super().__init__(batch_size=16)
        self.calls = 0

    def _features(self, batch: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return (batch.float() / 127.5 - 1).abs().mean(dim=-1).flatten(1)


def images(n: int = 40, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 8, 8), generator=gen, dtype=torch.uint8)


KEY_PARTS = dict(
    dataset_fingerprint="fp1",
    split="train",
    extractor="inception",
    weights_sha256="ab",
    resolution=32,
)


@pytest.mark.parametrize(
    "part,value",
    [
        ("dataset_fingerprint", "fp2"),
        ("split", "test"),
        ("extractor", "classifier"),
        ("weights_sha256", "cd"),
        ("resolution", 16),
        ("part", "classifier-heldout"),
    ],
)
def test_reference_key_changes_with_each_part(part, value):
    assert reference_key(**KEY_PARTS) == reference_key(**KEY_PARTS)
    assert reference_key(**{**KEY_PARTS, part: value}) != reference_key(**KEY_PARTS)


def test_cache_hit_returns_identical_stats_without_recomputing(tmp_path):
    extractor = CountingExtractor()
    parts = dict(dataset_fingerprint="fp", split="train", resolution=8, cache_dir=tmp_path)
    first = reference_stats(extractor, images(), dataset="toy", **parts)
    assert extractor.calls == 3  # 40 images in batches of 16
    assert first.mu.shape == (24,) and first.sigma.shape == (24, 24) and first.num_images == 40
    assert first.mu.dtype == np.float64

    def must_not_load():
        raise AssertionError("a cache hit must not load the images")

    second = reference_stats(extractor, must_not_load, dataset="toy", **parts)
    assert extractor.calls == 3
    for name in ("mu", "sigma", "features"):
        np.testing.assert_array_equal(getattr(second, name), getattr(first, name))
    assert second.key == first.key and second.description == "toy/train/fp"

    third = reference_stats(extractor, images(), **{**parts, "split": "test"})
    assert extractor.calls == 6 and third.key != first.key


def test_without_cache_dir_stats_are_computed_each_time():
    extractor = CountingExtractor()
    parts = dict(dataset_fingerprint="fp", split="train", resolution=8, cache_dir=None)
    reference_stats(extractor, images(), **parts)
    reference_stats(extractor, images(), **parts)
    assert extractor.calls == 6


def test_reference_images_at_the_wrong_resolution_are_refused(tmp_path):
    with pytest.raises(UserError, match="resolution"):
        reference_stats(
            CountingExtractor(),
            images(),
            dataset_fingerprint="fp",
            split="train",
            resolution=16,
            cache_dir=tmp_path,
        )
