"""score_images: protocol recording, checks, and end-to-end agreement with torch-fidelity."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch_fidelity

from diffnas.errors import UserError
from diffnas.evaluate import get_extractor, reference_stats, score_images
from diffnas.evaluate.score import Score, score_label
from random_inception import save_random_inception_weights
from test_evaluate_reference import CountingExtractor, images


def _reference(extractor, cache_dir, n=40):
    return reference_stats(
        extractor,
        images(n),
        dataset="toy",
        dataset_fingerprint="fp",
        split="train",
        resolution=8,
        cache_dir=cache_dir,
    )


def _noisy(x: torch.Tensor, sigma: float, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    noise = sigma * torch.randn(x.shape, generator=gen)
    return (x.float() + noise).round().clamp(0, 255).to(torch.uint8)


def test_score_records_its_protocol(tmp_path):
    extractor = CountingExtractor()
    ref = _reference(extractor, tmp_path)
    score = score_images(
        images(30, seed=5), ref, extractor, metric="rfid", sampler="ddim", steps=25
    )
    assert score.value > 0 and score.std is None
    p = score.protocol
    assert (p.metric, p.extractor, p.weights_sha256) == ("rfid", "counting", "0" * 64)
    assert (p.num_generated, p.num_reference, p.resolution) == (30, 40, 8)
    assert (p.sampler, p.steps, p.reference) == ("ddim", 25, "toy/train/fp")
    assert type(score).model_validate_json(score.model_dump_json()) == score


def test_every_score_is_labelled_with_its_extractor(tmp_path):
    # Plain FID/KID only for Inception features, the protocol published numbers use.
    assert score_label("fid", "inception-v3-2048") == "FID"
    assert score_label("kid", "inception") == "KID"
    assert score_label("rfid", "inception-v3-2048") == "RFID[inception]"
    assert score_label("fid", "classifier-smallcnn32-64-128-bn-f128-e5") == "FID[classifier]"
    assert score_label("rfid", "classifier") == "RFID[classifier]"
    score = score_images(images(30, seed=5), _reference(CountingExtractor(), tmp_path),
                         CountingExtractor(), metric="fid")  # fmt: skip
    stored = score.model_dump(mode="json")
    assert stored["label"] == "FID[counting]" and "value" in stored  # stored next to the value
    assert Score.model_validate(stored) == score


def test_fid_is_zero_for_the_reference_itself_and_grows_with_noise(tmp_path):
    extractor = CountingExtractor()
    ref = _reference(extractor, tmp_path)
    same = score_images(images(40), ref, extractor, metric="fid").value
    assert abs(same) < 1e-6 * ref.sigma.trace()
    fids = [score_images(_noisy(images(40), s), ref, extractor).value for s in (16, 64, 128)]
    assert fids[0] < fids[1] < fids[2]


def test_kid_score_has_std_and_grows_with_noise(tmp_path):
    extractor = CountingExtractor()
    ref = _reference(extractor, tmp_path)
    fresh = images(40, seed=7)  # same distribution as the reference, other draws
    kids = [
        score_images(_noisy(fresh, s), ref, extractor, metric="kid", kid_subsets=20)
        for s in (0, 64, 128)
    ]
    assert kids[0].protocol.kid_subset_size == 20 and kids[0].std > 0  # proper subsets of 40
    assert kids[0].protocol.metric == "kid" and kids[0].protocol.kid_subsets == 20
    assert abs(kids[0].value) < 0.2 * kids[1].value
    assert kids[0].value < kids[1].value < kids[2].value


def test_score_refuses_mismatched_inputs(tmp_path):
    extractor = CountingExtractor()
    ref = _reference(extractor, tmp_path)
    with pytest.raises(UserError, match="metric"):
        score_images(images(10), ref, extractor, metric="is")
    with pytest.raises(UserError, match="resolution 8"):
        score_images(torch.zeros(4, 3, 16, 16, dtype=torch.uint8), ref, extractor)
    other = CountingExtractor()
    other.weights_sha256 = "1" * 64
    with pytest.raises(UserError, match="same extractor"):
        score_images(images(10), ref, other)


class _Images(torch.utils.data.Dataset):
    def __init__(self, x: torch.Tensor) -> None:
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.x[i]


# ~20 s on one core: 68 Inception forwards + torch-fidelity's sqrtm of a 2048² matrix (~10 s,
# whatever N). Two implementations agree to ~3e-7 at N=16 as at N=32; half the forwards.
@pytest.mark.slow
def test_fid_equals_torch_fidelity_for_the_same_inception_weights(tmp_path):
    weights = tmp_path / "random-inception.pth"
    sha = save_random_inception_weights(weights, seed=0)
    extractor = get_extractor("inception", weights_path=weights, expected_sha256=sha)
    gen = torch.Generator().manual_seed(0)
    n = 16
    # reference: smooth colour blobs; generated: the blobs plus pixel noise, one-third noise only
    blobs = torch.rand(2 * n, 3, 4, 4, generator=gen)
    blobs = torch.nn.functional.interpolate(blobs, size=24, mode="bilinear") * 255
    reference = blobs[:n].to(torch.uint8)
    generated = _noisy(blobs[n:], 30.0)
    generated[: n // 3] = torch.randint(0, 256, (n // 3, 3, 24, 24), generator=gen).to(torch.uint8)

    ref = reference_stats(
        extractor,
        reference,
        dataset_fingerprint="blobs",
        split="train",
        resolution=24,
        cache_dir=None,
    )
    ours = score_images(generated, ref, extractor, metric="fid").value
    theirs = torch_fidelity.calculate_metrics(
        input1=_Images(generated),
        input2=_Images(reference),
        fid=True,
        feature_extractor="inception-v3-compat",
        feature_extractor_weights_path=str(weights),
        cuda=False,
        cache=False,
        save_cpu_ram=True,
        verbose=False,
    )["frechet_inception_distance"]
    assert ours > 0
    assert ours == pytest.approx(theirs, rel=1e-3)

    gray = reference[:2, :1]  # 1-channel images are repeated to RGB before the network
    np.testing.assert_array_equal(extractor(gray), extractor(gray.repeat(1, 3, 1, 1)))
