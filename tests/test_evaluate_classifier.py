"""The classifier extractor is one feature space per dataset: the same weights at any thread
count, the shipped digits weights pinned by SHA-256, and no cache entry of another recipe."""

from __future__ import annotations

import hashlib
import shutil

import pytest
import torch

import diffnas.evaluate.classifier as classifier
from diffnas.data.datasets import DataSpec, load_images
from diffnas.errors import UserError
from diffnas.evaluate import get_extractor


def sha256_of(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def no_training(*args, **kwargs):
    raise AssertionError("the classifier was trained")


@pytest.fixture(scope="module")
def small_digits() -> tuple[torch.Tensor, torch.Tensor, str]:
    data = load_images(DataSpec(kind="digits", subset=240))
    return data.as_uint8(), data.y, data.fingerprint


def test_one_and_two_torch_threads_train_identical_weights(tmp_path, small_digits) -> None:
    images, labels, fingerprint = small_digits
    kwargs = dict(dataset_fingerprint=fingerprint, train_images=images, train_labels=labels)
    hashes = []
    for threads in (2, 1):
        torch.set_num_threads(threads)  # the conftest fixture restores the suite's setting
        rng_before = torch.get_rng_state()
        extractor = get_extractor("classifier", cache_dir=tmp_path / f"t{threads}", **kwargs)
        # the caller's settings come back: its thread count and its random stream
        assert torch.get_num_threads() == threads
        assert torch.equal(torch.get_rng_state(), rng_before)
        (weights,) = (tmp_path / f"t{threads}").glob("classifier-*.safetensors")
        assert extractor.weights_sha256 == sha256_of(weights)  # what is recorded is the file
        assert extractor.metadata["weights_sha256"] == extractor.weights_sha256
        hashes.append(extractor.weights_sha256)
    assert hashes[0] == hashes[1]


def test_shipped_digits_classifier_is_pinned_and_used_for_every_spelling(tmp_path, monkeypatch):
    assert sha256_of(classifier.DIGITS_CLASSIFIER) == classifier.DIGITS_CLASSIFIER_SHA256
    monkeypatch.setattr(classifier, "train_classifier", no_training)
    # `--data digits` in a search, and proxy-check's spelling with the space's image size:
    # two fingerprints, the same images, the same shipped weights
    for spec in (DataSpec(kind="digits"), DataSpec(kind="digits", image_size=16)):
        data = load_images(spec)
        extractor = get_extractor(
            "classifier", train_images=data.as_uint8(), train_labels=data.y,
            cache_dir=tmp_path, dataset_fingerprint=data.fingerprint,
        )  # fmt: skip
        assert extractor.weights_sha256 == classifier.DIGITS_CLASSIFIER_SHA256
        assert extractor.metadata["source"] == "bundled"
        assert extractor.metadata["recipe"] == classifier.CLASSIFIER_RECIPE  # rebuilt if bumped
        assert extractor.trained_on(data.fingerprint)  # so its reference is the unseen half
    assert not list(tmp_path.iterdir())  # nothing trained, nothing cached
    # digits' test split was never trained on: the shipped classifier reads it well
    test = load_images(DataSpec(kind="digits", split="test"))
    with torch.no_grad():
        logits = extractor.model(test.as_uint8().float() / 127.5 - 1)
    accuracy = (logits.argmax(1) == test.y).float().mean().item()
    assert accuracy > 0.9 and extractor.metadata["heldout_accuracy"] > 0.9


def test_tampered_shipped_weights_are_refused(tmp_path, monkeypatch) -> None:
    tampered = tmp_path / "classifier-digits.safetensors"
    shutil.copy(classifier.DIGITS_CLASSIFIER, tampered)
    raw = bytearray(tampered.read_bytes())
    raw[-1] ^= 1  # one bit of the last weight
    tampered.write_bytes(bytes(raw))
    monkeypatch.setattr(classifier, "DIGITS_CLASSIFIER", tampered)
    monkeypatch.setattr(classifier, "train_classifier", no_training)
    data = load_images(DataSpec(kind="digits"))
    with pytest.raises(UserError) as err:
        get_extractor(
            "classifier", train_images=data.as_uint8(), train_labels=data.y,
            cache_dir=tmp_path / "cache", dataset_fingerprint=data.fingerprint,
        )  # fmt: skip
    message = str(err.value)
    assert "SHA-256" in message and str(tampered) in message
    assert classifier.DIGITS_CLASSIFIER_SHA256 in message


def test_a_cache_entry_of_another_recipe_is_never_loaded(tmp_path, monkeypatch, small_digits):
    images, labels, fingerprint = small_digits
    kwargs = dict(cache_dir=tmp_path, dataset_fingerprint=fingerprint, epochs=1)
    first = get_extractor("classifier", train_images=images, train_labels=labels, **kwargs)
    assert first.metadata["source"] == "trained"
    assert get_extractor("classifier", **kwargs).weights_sha256 == first.weights_sha256
    # the next recipe version: the entry above is not its classifier, so it trains its own
    monkeypatch.setattr(classifier, "CLASSIFIER_RECIPE", classifier.CLASSIFIER_RECIPE + 1)
    with pytest.raises(UserError, match="no cached classifier"):
        get_extractor("classifier", **kwargs)
    trained = []
    train = classifier.train_classifier
    monkeypatch.setattr(
        classifier, "train_classifier", lambda *a, **k: trained.append(1) or train(*a, **k)
    )
    again = get_extractor("classifier", train_images=images, train_labels=labels, **kwargs)
    assert trained == [1] and again.metadata["recipe"] == classifier.CLASSIFIER_RECIPE
    assert len(list(tmp_path.glob("classifier-*.safetensors"))) == 2


def test_the_recipe_before_versioning_is_not_a_cache_hit(tmp_path, small_digits) -> None:
    """Entries written before the recipe had a version (trained with the caller's threads) sit
    under the old key; they must not be taken for the current classifier."""
    images, labels, fingerprint = small_digits
    arch = classifier.classifier_arch(1)
    old_key = hashlib.sha256(f"{fingerprint}|{arch}|0|half".encode()).hexdigest()[:16]
    torch.manual_seed(1)
    old = classifier.SmallCNN(1, 10)
    from safetensors.torch import save_file

    save_file(old.state_dict(), str(tmp_path / f"classifier-{old_key}.safetensors"))
    extractor = get_extractor(
        "classifier", train_images=images, train_labels=labels, cache_dir=tmp_path,
        dataset_fingerprint=fingerprint, epochs=1,
    )  # fmt: skip
    assert extractor.metadata["source"] == "trained"
    old_sha = sha256_of(tmp_path / f"classifier-{old_key}.safetensors")
    assert extractor.weights_sha256 != old_sha
