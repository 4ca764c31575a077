"""Feature extractors: inception weight resolution (offline errors, SHA-256) and the classifier."""

from __future__ import annotations

import urllib.error

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

import diffnas.evaluate.classifier as classifier
import diffnas.evaluate.inception as inception
from diffnas.errors import UserError
from diffnas.evaluate import INCEPTION_ENV, INCEPTION_FILE, get_extractor, reference_stats
from diffnas.evaluate.extractor import as_uint8_images, file_sha256


def digits16() -> tuple[torch.Tensor, torch.Tensor]:
    """sklearn's 8×8 digits (0..16) as uint8 1×16×16 images and their labels."""
    data = load_digits()
    x = torch.from_numpy(data.images).float().unsqueeze(1) / 16
    x = torch.nn.functional.interpolate(x, size=16, mode="bilinear", align_corners=False)
    return (x * 255).round().clamp(0, 255).to(torch.uint8), torch.from_numpy(data.target)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No configured weights, an empty torch hub and a failing download."""
    monkeypatch.delenv(INCEPTION_ENV, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)


def test_missing_inception_weights_offline_names_the_file_and_the_env_var(offline):
    with pytest.raises(UserError) as err:
        get_extractor("inception")
    assert INCEPTION_FILE in str(err.value) and INCEPTION_ENV in str(err.value)
    assert err.value.field == "weights_path"


def test_configured_inception_weights_path_that_does_not_exist(offline, tmp_path):
    with pytest.raises(UserError, match="not a file"):
        get_extractor("inception", weights_path=tmp_path / "nope.pth")


def test_inception_weights_with_the_wrong_sha256_are_refused(offline, tmp_path, monkeypatch):
    fake = tmp_path / INCEPTION_FILE
    fake.write_bytes(b"not the inception weights")
    monkeypatch.setenv(INCEPTION_ENV, str(fake))  # the env var is honoured like the option
    with pytest.raises(UserError, match="SHA-256"):
        get_extractor("inception")


def test_weights_in_the_torch_hub_cache_are_found_offline(offline, tmp_path):
    hub_file = tmp_path / "torch" / "hub" / "checkpoints" / inception.INCEPTION_TF_FILE
    hub_file.parent.mkdir(parents=True)
    hub_file.write_bytes(b"weights")
    path, sha = inception.resolve_inception_weights(expected_sha256=None)
    assert path == hub_file and sha == file_sha256(hub_file)


def test_unknown_extractor_name_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="'clip'"):
        get_extractor("clip", cache_dir=tmp_path, dataset_fingerprint="x")


def test_classifier_trains_above_chance_and_is_reused_from_cache(tmp_path, monkeypatch):
    images, labels = digits16()
    calls = []
    train = classifier.train_classifier
    monkeypatch.setattr(
        classifier, "train_classifier", lambda *a, **k: calls.append(1) or train(*a, **k)
    )
    kwargs = dict(cache_dir=tmp_path, dataset_fingerprint="digits-abc", epochs=3)
    first = get_extractor("classifier", train_images=images, train_labels=labels, **kwargs)
    # measured on the half it never trained on (~0.9 here; 10 classes: chance is 0.1)
    assert first.metadata["heldout_accuracy"] > 0.6
    assert first.metadata["num_train_images"] == len(images) // 2
    feats = first(images[:100])
    assert feats.shape == (100, 128) and feats.dtype == np.float64

    second = get_extractor("classifier", **kwargs)  # no data needed on a cache hit
    assert len(calls) == 1
    assert second.weights_sha256 == first.weights_sha256 and second.name == first.name
    np.testing.assert_allclose(second(images[:100]), feats, rtol=1e-6, atol=1e-6)

    with pytest.raises(UserError, match="trained on 1×16×16"):
        second(torch.zeros(2, 3, 16, 16, dtype=torch.uint8))
    other = get_extractor(
        "classifier",
        **{**kwargs, "dataset_fingerprint": "digits-other"},
        train_images=images[:200],
        train_labels=labels[:200],
    )
    assert len(calls) == 2 and other.weights_sha256 != first.weights_sha256


def test_classifier_never_trains_on_the_images_that_serve_as_its_reference(tmp_path, monkeypatch):
    # 60 distinct random images (each has its own first pixel), so images are told apart by bytes.
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (60, 1, 8, 8), generator=gen, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.arange(60, dtype=torch.uint8)
    labels = torch.arange(60) % 3
    trained_on: list[bytes] = []
    train = classifier.train_classifier

    def spy(x, *args, **kwargs):
        trained_on.extend(image.numpy().tobytes() for image in x)
        return train(x, *args, **kwargs)

    monkeypatch.setattr(classifier, "train_classifier", spy)
    kwargs = dict(cache_dir=tmp_path, dataset_fingerprint="toy", epochs=1)
    extractor = get_extractor("classifier", train_images=images, train_labels=labels, **kwargs)
    featurised: list[bytes] = []
    call = type(extractor).__call__
    monkeypatch.setattr(
        type(extractor),
        "__call__",
        lambda self, x: featurised.extend(i.numpy().tobytes() for i in x) or call(self, x),
    )
    ref = reference_stats(extractor, images, dataset="toy", dataset_fingerprint="toy",
                          split="train", resolution=8, cache_dir=tmp_path)  # fmt: skip
    assert len(trained_on) == 30 and ref.num_images == 30
    assert set(featurised).isdisjoint(trained_on)  # no reference image was trained on
    assert set(featurised) | set(trained_on) == {i.numpy().tobytes() for i in images}
    assert ref.description == "toy/train/toy/classifier-heldout"
    # Another dataset (a different fingerprint) was never seen: all of it is the reference.
    other = reference_stats(extractor, images[:10], dataset="other", dataset_fingerprint="other",
                            split="test", resolution=8, cache_dir=tmp_path)  # fmt: skip
    assert other.num_images == 10 and other.description == "other/test/other"


def test_classifier_without_cache_or_labels_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="train_labels"):
        get_extractor("classifier", cache_dir=tmp_path, dataset_fingerprint="unlabelled")


def test_extractors_take_only_uint8_image_batches():
    with pytest.raises(UserError, match="uint8"):
        as_uint8_images(torch.rand(2, 1, 16, 16))
    with pytest.raises(UserError, match="uint8"):
        as_uint8_images(np.zeros((16, 16), np.uint8))
    assert as_uint8_images(np.zeros((1, 1, 4, 4), np.uint8)).dtype == torch.uint8


def test_inception_url_is_torch_fidelitys_and_scoring_alone_does_not_import_it() -> None:
    import subprocess
    import sys

    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    from diffnas.evaluate import inception

    assert inception.URL_INCEPTION_V3 == URL_INCEPTION_V3 == inception.INCEPTION_URLS[0]
    # a worker that scores with the classifier never needs torch-fidelity
    code = (
        "import sys, diffnas.evaluate, diffnas.execute.job; print('torch_fidelity' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
