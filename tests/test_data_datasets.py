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


def write_idx(path, array: np.ndarray, gz: bool) -> None:
    """An idx file as LeCun's MNIST page specifies it, written here independently of the loader:
    bytes 0, 0, type 0x08 (uint8), the number of dimensions, each dimension big-endian."""
    import gzip
    import struct

    raw = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw += array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)


def fashion_files(folder, gz: bool, n_train: int = 6, n_test: int = 4) -> dict[str, np.ndarray]:
    """Tiny Fashion-MNIST-shaped files: 28x28 images whose pixels encode (image, row, col)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) + 3) % 10,
    }
    for name, array in arrays.items():
        write_idx(folder / (name + (".gz" if gz else "")), array, gz)
    return arrays


@pytest.mark.parametrize(
    ("layout", "gz"), [("debian", True), ("debian", False), ("torchvision", False)]
)
def test_fashion_mnist_reads_idx_files_in_both_layouts(tmp_path, layout: str, gz: bool) -> None:
    folder = tmp_path if layout == "debian" else tmp_path / "FashionMNIST" / "raw"
    arrays = fashion_files(folder, gz)
    train = load_images(parse_data(f"fashion-mnist:{tmp_path}"))
    assert train.name == "fashion-mnist-train" and train.x.shape == (6, 1, 28, 28)
    assert torch.equal(train.as_uint8()[:, 0], torch.from_numpy(arrays["train-images-idx3-ubyte"]))
    assert train.y.tolist() == [0, 1, 2, 3, 4, 5]
    test = load_images(DataSpec(kind="fashion-mnist", path=str(tmp_path), split="test"))
    assert test.y.tolist() == [3, 4, 5, 6]
    both = load_images(DataSpec(kind="fashion-mnist", path=str(tmp_path), split="all"))
    assert len(both) == 10 and both.y.tolist() == [0, 1, 2, 3, 4, 5, 3, 4, 5, 6]
    small = load_images(DataSpec(kind="fashion-mnist", path=str(tmp_path), image_size=16))
    assert small.x.shape == (6, 1, 16, 16)


def test_fashion_mnist_absent_names_the_folder_and_the_package(tmp_path) -> None:
    with pytest.raises(UserError) as err:
        load_images(parse_data(f"fashion-mnist:{tmp_path}"))
    message = str(err.value)
    assert str(tmp_path) in message and "apt-get install dataset-fashion-mnist" in message


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        (lambda raw: raw[:-5], "not an idx file of uint8 with 3 dimension"),  # truncated
        (lambda raw: b"\x00\x00\x0d\x03" + raw[4:], "header 00000d03"),  # float32 type code
        (lambda raw: b"GIF89a", "not an idx file"),
    ],
    ids=["truncated", "float-type", "other-file"],
)
def test_fashion_mnist_damaged_file_is_named(tmp_path, damage, fragment: str) -> None:
    fashion_files(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(UserError) as err:
        load_images(parse_data(f"fashion-mnist:{tmp_path}"))
    assert fragment in str(err.value) and str(path) in str(err.value)


def test_fashion_mnist_corrupt_gzip_and_mismatched_counts(tmp_path) -> None:
    fashion_files(tmp_path, gz=True)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(UserError, match="t10k-labels-idx1-ubyte.gz' cannot be read"):
        load_images(DataSpec(kind="fashion-mnist", path=str(tmp_path), split="test"))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(3), gz=True)
    with pytest.raises(UserError, match="holds 4 images but t10k-labels-idx1-ubyte 3 labels"):
        load_images(DataSpec(kind="fashion-mnist", path=str(tmp_path), split="test"))


def test_a_damaged_image_is_refused_before_any_image_is_decoded(tmp_path, monkeypatch) -> None:
    (tmp_path / "a").mkdir()
    good = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    for i in range(3):
        Image.fromarray(good).save(tmp_path / "a" / f"{i}.png")
    (tmp_path / "a" / "z.png").write_bytes((tmp_path / "a" / "0.png").read_bytes()[:300])
    decoded: list[str] = []
    convert = Image.Image.convert

    def counting(self, *args, **kwargs):
        decoded.append(getattr(self, "filename", ""))
        return convert(self, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "convert", counting)
    with pytest.raises(UserError, match="z.png"):
        load_images(DataSpec(kind="imagefolder", path=str(tmp_path), split="all"))
    assert decoded == []  # the three good images were never decoded into the set


def test_the_shape_is_read_from_headers_without_the_pixels(tmp_path) -> None:
    from diffnas.data.datasets import data_shape

    np.savez(tmp_path / "d.npz", x=np.zeros((7, 12, 12, 3), np.uint8))
    shape = data_shape(DataSpec(kind="npz", path=str(tmp_path / "d.npz"), image_size=24))
    assert (shape.count, shape.channels, shape.stored_size, shape.size) == (7, 3, 12, 24)
    # float32 stored and resized images plus the uint8 copy of the resized ones
    assert shape.load_bytes() == 4 * 7 * 3 * 12**2 + 4 * 7 * 3 * 24**2 + 7 * 3 * 24**2
    digits = data_shape(DataSpec(kind="digits", subset=100, hflip=True))
    assert (digits.count, digits.channels, digits.size) == (200, 1, 16)
    assert len(load_images(DataSpec(kind="digits"))) == data_shape(DataSpec()).count
    assert data_shape(DataSpec(kind="npz", path=str(tmp_path / "missing.npz"))) is None


@pytest.mark.parametrize(
    "labels", [np.array([0, 1, 2, 100_000]), np.array([0, 1, 2, 2**63], np.uint64)]
)
def test_labels_past_the_class_bound_are_refused_before_any_cast(tmp_path, labels) -> None:
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 8, 8, 1), np.uint8), y=labels)
    with pytest.raises(UserError, match=r"each in 0 \.\. 99999") as err:
        load_images(DataSpec(kind="npz", path=str(tmp_path / "d.npz"), split="all"))
    assert str(int(labels.max())) in str(err.value)  # the value as stored, not wrapped
