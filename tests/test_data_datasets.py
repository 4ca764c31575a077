"""Datasets: digits offline, npz, imagefolder, cifar10's offline message, subsets and flips."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from diffnas.data import DataSpec, load_images, parse_data
from diffnas.errors import UserError


def test_digits_train_test_are_disjoint_and_in_range() -> None:
    train = load_images(DataSpec(kind="digits", split="train"))
    test = load_images(DataSpec(kind="digits", split="test"))
    assert train.x.shape[1:] == (1, 16, 16) and len(train) + len(test) == 1797
    assert train.x.min() >= -1 and train.x.max() <= 1 and train.y is not None
    assert train.fingerprint != test.fingerprint


def test_subset_is_deterministic_and_flips_double() -> None:
    a = load_images(DataSpec(kind="digits", subset=50, subset_seed=1))
    b = load_images(DataSpec(kind="digits", subset=50, subset_seed=1))
    c = load_images(DataSpec(kind="digits", subset=50, subset_seed=2))
    assert torch.equal(a.x, b.x) and a.fingerprint == b.fingerprint
    assert a.fingerprint != c.fingerprint
    flipped = load_images(DataSpec(kind="digits", subset=50, subset_seed=1, hflip=True))
    assert len(flipped) == 100 and torch.equal(flipped.x[50:], a.x.flip(-1))


def test_npz_roundtrip_and_errors(tmp_path) -> None:
    x = np.random.default_rng(0).integers(0, 256, size=(10, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(10))
    data = load_images(parse_data(str(tmp_path / "d.npz")))
    assert data.x.shape == (10, 3, 8, 8)
    assert torch.equal(data.as_uint8(), torch.from_numpy(x).permute(0, 3, 1, 2))
    np.savez(tmp_path / "bad.npz", x=x.astype(np.float32))
    with pytest.raises(UserError, match="must be uint8"):
        load_images(parse_data(str(tmp_path / "bad.npz")))
    with pytest.raises(UserError, match="does not exist"):
        load_images(parse_data("npz:/nonexistent.npz"))


def _npz_bytes(tmp_path) -> bytes:
    np.savez(tmp_path / "whole.npz", x=np.zeros((4, 8, 8, 1), np.uint8), y=np.arange(4))
    return (tmp_path / "whole.npz").read_bytes()


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (lambda tmp: _npz_bytes(tmp)[:300], "not a readable .npz archive (BadZipFile"),
        (lambda tmp: b"x,y\n1,2\n", "not a readable .npz archive"),
        (lambda tmp: b"", "not a readable .npz archive"),
    ],
    ids=["truncated", "text", "empty"],
)
def test_damaged_npz_is_a_user_error_naming_the_file(tmp_path, content, fragment: str) -> None:
    path = tmp_path / "d.npz"
    path.write_bytes(content(tmp_path))
    with pytest.raises(UserError) as err:
        load_images(parse_data(str(path)))
    assert fragment in str(err.value) and "d.npz" in str(err.value)


@pytest.mark.parametrize(
    "labels",
    [np.array(list("abcd")), np.array([0.5, 1, 2, 3]), np.array([0, -1, 2, 3]), np.arange(3)],
    ids=["strings", "floats", "negative", "too-few"],
)
def test_labels_must_be_one_nonnegative_int_per_image(tmp_path, labels) -> None:
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 8, 8, 1), np.uint8), y=labels)
    with pytest.raises(UserError, match="array 'y' must hold one integer class label"):
        load_images(parse_data(str(tmp_path / "d.npz")))


def test_unreadable_image_is_named(tmp_path) -> None:
    (tmp_path / "a").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a" / "0.png")
    (tmp_path / "a" / "1.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match="image .*1.png.* cannot be read"):
        load_images(parse_data(str(tmp_path)))


def test_imagefolder_with_classes(tmp_path) -> None:
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.fromarray(np.full((12, 12, 3), 40 * i, dtype=np.uint8)).save(
                tmp_path / cls / f"{i}.png"
            )
    data = load_images(DataSpec(kind="imagefolder", path=str(tmp_path), split="all", image_size=8))
    assert data.x.shape == (6, 3, 8, 8) and data.y.tolist() == [0, 0, 0, 1, 1, 1]


def test_cifar10_offline_says_where_to_put_files(tmp_path, monkeypatch) -> None:
    import torchvision.datasets.utils as tv_utils

    def no_network(*args, **kwargs):
        raise OSError("offline")

    monkeypatch.setattr(tv_utils, "download_url", no_network)
    with pytest.raises(UserError, match="cifar-10-batches-py"):
        load_images(parse_data(f"cifar10:{tmp_path}"))


def test_unknown_data_spelling() -> None:
    with pytest.raises(UserError, match="expected digits"):
        parse_data("mnist")
