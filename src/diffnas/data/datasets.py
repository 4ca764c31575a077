"""Datasets: `digits` (bundled, offline), `npz`, `imagefolder`, `cifar10`, `fashion-mnist`.

Every loader returns an `ImageData`: float32 images N x C x H x W in [-1, 1], optional
integer labels, a name and a fingerprint (a hash of the pixels, labels and options) that
keys every cache built on the data (reference statistics, classifier features).
Subsets are deterministic: a seeded permutation, then the first N.
"""

from __future__ import annotations

import gzip
import hashlib
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from diffnas.errors import UserError
from diffnas.limits import FINITE, MAX_CLASSES, MAX_IMAGE_SIZE, MAX_IMAGES, MAX_SEED

DataKind = Literal["digits", "npz", "imagefolder", "cifar10", "fashion-mnist"]
DATA_KINDS: tuple[str, ...] = get_args(DataKind)


class DataSpec(BaseModel):
    """Which images to load and how; round-trips through JSON so a run folder records it."""

    model_config = ConfigDict(extra="forbid", **FINITE)

    kind: DataKind = Field(
        "digits", description="digits | npz | imagefolder | cifar10 | fashion-mnist"
    )
    path: str | None = Field(
        None, description="file or folder (npz, imagefolder; cifar10, fashion-mnist: their root)"
    )
    split: Literal["train", "test", "all"] = Field(
        "train", description="digits/cifar10/fashion-mnist split; npz/imagefolder: all"
    )
    image_size: int | None = Field(
        None,
        ge=4,
        le=MAX_IMAGE_SIZE,
        description="resize to this many pixels square (None: as stored; digits: 16)",
    )
    subset: int | None = Field(
        None, ge=1, le=MAX_IMAGES, description="keep N images, chosen by a seeded permutation"
    )
    subset_seed: int = Field(0, ge=0, le=MAX_SEED, description="seed of the subset permutation")
    hflip: bool = Field(
        False, description="append mirrored copies (doubles the set; not for digits)"
    )


@dataclass
class ImageData:
    x: torch.Tensor  # float32 N x C x H x W in [-1, 1]
    y: torch.Tensor | None  # int64 N, or None
    name: str
    fingerprint: str

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def image_size(self) -> int:
        return self.x.shape[-1]

    @property
    def channels(self) -> int:
        return self.x.shape[1]

    def as_uint8(self) -> torch.Tensor:
        """The images as uint8 N x C x H x W, the form scores take."""
        return ((self.x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


def check_data_fits(
    data: ImageData,
    shape: tuple[int, int],
    needed_by: str,
    advice: str = "use an architecture (or --space) made for this data",
) -> None:
    """Images must have the (channels, size) that `needed_by` (an architecture, a space) takes."""
    channels, size = shape
    if (data.channels, data.image_size) != (channels, size) or data.x.shape[-2] != size:
        got = "x".join(str(d) for d in data.x.shape[1:])
        raise UserError(
            f"data {data.name} has {got} images but {needed_by} expects "
            f"{channels}x{size}x{size}; {advice}",
            field="data",
        )


def parse_data(text: str) -> DataSpec:
    """CLI spelling: `digits`, `cifar10[:ROOT]`, `fashion-mnist[:ROOT]`, `npz:PATH` or `PATH.npz`,
    `imagefolder:DIR` or `DIR`."""
    kind, _, rest = text.partition(":")
    if kind in DATA_KINDS:
        return DataSpec(kind=kind, path=rest or None)
    path = Path(text)
    if path.suffix == ".npz":
        return DataSpec(kind="npz", path=text, split="all")
    if path.is_dir():
        return DataSpec(kind="imagefolder", path=text, split="all")
    raise UserError(
        f"--data {text!r}: expected digits, cifar10[:ROOT], fashion-mnist[:ROOT], npz:PATH (or a .npz file) "
        "or imagefolder:DIR (or a folder).",
        field="data",
    )


@dataclass(frozen=True)
class DataShape:
    """How many images a `DataSpec` gives and their size, known without decoding a pixel."""

    count: int
    channels: int
    stored_size: int  # pixels per side as stored (imagefolder: of its first image)
    size: int  # after the resize to `image_size`

    def load_bytes(self) -> int:
        """Peak memory of `load_images`, roughly: the stored float32 images, the resized ones,
        and the uint8 copy the fingerprint (and later the scorer) takes."""
        stored = self.count * self.channels * self.stored_size**2
        resized = self.count * self.channels * self.size**2
        return 4 * stored + 4 * resized + resized


def data_shape(spec: DataSpec) -> DataShape | None:
    """The shape `load_images(spec)` will have, read from headers only (an .npz member's
    header, an idx header, the first image's header; fixed for digits and CIFAR-10), so a
    plan can refuse a dataset that cannot fit in memory before reading it. None where the
    files are missing or unreadable: `load_images` then says what is wrong with them."""
    try:
        count, channels, size = _stored_shape(spec)
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error):
        return None
    if spec.subset is not None:
        count = min(count, spec.subset)
    if spec.hflip:
        count *= 2
    return DataShape(count, channels, size, spec.image_size or size)


def _stored_shape(spec: DataSpec) -> tuple[int, int, int]:
    if spec.kind == "digits":
        count = {"train": 1437, "test": 360, "all": 1797}[spec.split]  # the fixed 80/20 split
        return count, 1, 16
    if spec.kind == "cifar10":
        return (10_000 if spec.split == "test" else 50_000), 3, 32
    if spec.kind == "fashion-mnist":
        return {"train": 60_000, "test": 10_000, "all": 70_000}[spec.split], 1, 28
    if spec.kind == "npz":
        with zipfile.ZipFile(str(spec.path)) as archive, archive.open("x.npy") as member:
            version = np.lib.format.read_magic(member)
            read_header = {
                (1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0,
            }[version]
            shape, _, _ = read_header(member)
        if len(shape) not in (3, 4):
            raise ValueError("not N x H x W (x C)")
        return int(shape[0]), int(shape[3]) if len(shape) == 4 else 1, int(shape[2])
    files = _image_files(Path(str(spec.path)))
    if not files:
        raise ValueError("no images")
    from PIL import Image

    with Image.open(files[0]) as first:  # reads the header only
        return len(files), 3, int(first.width)


def load_images(spec: DataSpec) -> ImageData:
    loaders = {
        "digits": _digits,
        "npz": _npz,
        "imagefolder": _imagefolder,
        "cifar10": _cifar10,
        "fashion-mnist": _fashion_mnist,
    }
    x, y, name = loaders[spec.kind](spec)
    if spec.image_size is not None and x.shape[-1] != spec.image_size:
        x = F.interpolate(
            x,
            size=(spec.image_size, spec.image_size),
            mode="bilinear",
            antialias=True,
            align_corners=False,
        )
        x = x.clamp(-1, 1)
    if spec.subset is not None and spec.subset < x.shape[0]:
        order = torch.randperm(
            x.shape[0], generator=torch.Generator().manual_seed(spec.subset_seed)
        )[: spec.subset]
        x, y = x[order], (y[order] if y is not None else None)
    if spec.hflip:
        x = torch.cat([x, x.flip(-1)])
        y = torch.cat([y, y]) if y is not None else None
    x = x.contiguous().float()
    digest = hashlib.sha256()
    digest.update(spec.model_dump_json().encode())
    digest.update(((x + 1) * 127.5).round().to(torch.uint8).numpy().tobytes())
    if y is not None:
        digest.update(y.numpy().tobytes())
    return ImageData(x=x, y=y, name=name, fingerprint=digest.hexdigest()[:16])


def _from_uint8(arr: np.ndarray) -> torch.Tensor:
    """N x H x W x C uint8 -> float N x C x H x W in [-1, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).float()
    return t / 127.5 - 1


def _digits(spec: DataSpec) -> tuple[torch.Tensor, torch.Tensor | None, str]:
    """scikit-learn's 1,797 8x8 handwritten digits (0..16 grey levels), resized to 16x16."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(bunch.images).float().unsqueeze(1) / 16.0 * 2 - 1
    y = torch.from_numpy(bunch.target).long()
    size = spec.image_size or 16
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp(-1, 1)
    # A fixed 80/20 split so train and test never share an image.
    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(1234))
    cut = int(0.8 * x.shape[0])
    idx = {"train": order[:cut], "test": order[cut:], "all": order}[spec.split]
    return x[idx], y[idx], f"digits-{spec.split}"


def _npz(spec: DataSpec) -> tuple[torch.Tensor, torch.Tensor | None, str]:
    if not spec.path:
        raise UserError("--data npz needs a path: npz:PATH.npz", field="data")
    path = Path(spec.path)
    if not path.is_file():
        raise UserError(f"--data: npz file {str(path)!r} does not exist.", field="data")
    x, y = _read_npz(path)
    if x.dtype != np.uint8 or x.ndim not in (3, 4) or len(x) == 0:
        raise UserError(
            f"--data: {str(path)!r} array 'x' must be uint8 N x H x W x C (or N x H x W) with N >= 1, got {x.dtype} {x.shape}.",
            field="data",
        )
    if x.ndim == 3:
        x = x[..., None]
    if y is not None and (
        y.ndim != 1
        or len(y) != len(x)
        or not np.issubdtype(y.dtype, np.integer)
        or (y < 0).any()
        or (y >= MAX_CLASSES).any()  # compared in y's own dtype: no int64 cast to wrap first
    ):
        shown = f"{y.dtype} {y.shape}"
        if y.ndim == 1 and len(y) and np.issubdtype(y.dtype, np.integer):
            shown += f" with values {y.min()} .. {y.max()}"
        raise UserError(
            f"--data: {str(path)!r} array 'y' must hold one integer class label per image, "
            f"each in 0 .. {MAX_CLASSES - 1} (shape ({len(x)},)), got {shown}.",
            field="data",
        )
    labels = torch.from_numpy(y.astype(np.int64)) if y is not None else None
    return _from_uint8(x), labels, path.stem


# What numpy raises on a file that is not a (whole) .npz archive: a truncated zip, a damaged
# member, a pickle or a text file (allow_pickle=False refuses pickled data with ValueError).
_NPZ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Arrays `x` and `y` (or None) of an .npz file, or a `UserError` saying what is wrong with it."""
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"PK\x03\x04":  # an .npz is a zip archive
                raise ValueError("no zip signature at its start")
        with np.load(path, allow_pickle=False) as f:
            names = sorted(f.files)
            x = f["x"] if "x" in names else None
            y = f["y"] if "y" in names else None
    except _NPZ_ERRORS as err:
        raise UserError(
            f"--data: {str(path)!r} is not a readable .npz archive ({type(err).__name__}: {err}); "
            "expected np.savez(PATH, x=uint8 N x H x W x C images, y=optional int labels).",
            field="data",
        ) from None
    if x is None:
        raise UserError(f"--data: {str(path)!r} has no array 'x' (found {names}).", field="data")
    return x, y


def _imagefolder(spec: DataSpec) -> tuple[torch.Tensor, torch.Tensor | None, str]:
    from PIL import Image

    if not spec.path or not Path(spec.path).is_dir():
        raise UserError(f"--data: image folder {spec.path!r} does not exist.", field="data")
    root = Path(spec.path)
    files = _image_files(root)
    if not files:
        raise UserError(
            f"--data: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {str(root)!r}.",
            field="data",
        )
    # Every file is checked (header and data, nothing kept) before any is decoded into the
    # set: a damaged image is refused in seconds, not after the others took gigabytes.
    for p in files:
        try:
            with Image.open(p) as opened:
                opened.verify()
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
            raise _unreadable_image(p, err) from None
    classes = sorted({p.parent.name for p in files})
    size = spec.image_size
    arrays = []
    for p in files:
        try:
            with Image.open(p) as opened:
                img = opened.convert("RGB")
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
            # OSError covers PIL's UnidentifiedImageError and data truncated past verify()
            raise _unreadable_image(p, err) from None
        size = size or img.width
        if img.size != (size, size):
            img = img.resize((size, size), Image.BICUBIC)
        arrays.append(np.asarray(img))
    labels = (
        torch.tensor([classes.index(p.parent.name) for p in files]) if len(classes) > 1 else None
    )
    return _from_uint8(np.stack(arrays)), labels, root.name


IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp"})


def _image_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def _unreadable_image(path: Path, err: BaseException) -> UserError:
    return UserError(
        f"--data: image {str(path)!r} cannot be read ({type(err).__name__}: {err}); "
        "remove it or replace it with a valid image.",
        field="data",
    )


def _cifar10(spec: DataSpec) -> tuple[torch.Tensor, torch.Tensor | None, str]:
    from torchvision.datasets import CIFAR10

    root = Path(spec.path or Path.home() / ".cache" / "diffnas" / "cifar10")
    train = spec.split != "test"
    try:
        ds = CIFAR10(str(root), train=train, download=False)
    except RuntimeError:
        try:
            ds = CIFAR10(str(root), train=train, download=True)
        except Exception as err:  # offline: say where the files go
            raise UserError(
                f"--data cifar10: the dataset is not under {str(root)!r} and could not be downloaded ({type(err).__name__}). "
                f"Place the extracted folder 'cifar-10-batches-py' (from cifar-10-python.tar.gz) in {str(root)!r}, "
                "or give another root with --data cifar10:ROOT.",
                field="data",
            ) from None
    x = _from_uint8(ds.data)
    y = torch.tensor(ds.targets, dtype=torch.long)
    return x, y, f"cifar10-{'train' if train else 'test'}"


# Where Debian's `dataset-fashion-mnist` package puts the idx files, then our cache folder.
FASHION_MNIST_ROOTS = (
    Path("/usr/share/datasets/fashion-mnist"),
    Path.home() / ".cache" / "diffnas" / "fashion-mnist",
)
_FASHION_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _fashion_mnist(spec: DataSpec) -> tuple[torch.Tensor, torch.Tensor | None, str]:
    """Zalando's Fashion-MNIST: 60,000 + 10,000 grey 28x28 clothing images in 10 classes.

    Offline only: the four idx files (gzipped or not) directly in ROOT, as Debian's
    `dataset-fashion-mnist` installs them, or in torchvision's `ROOT/FashionMNIST/raw/`.
    """
    roots = [Path(spec.path)] if spec.path else list(FASHION_MNIST_ROOTS)
    folder = next((f for r in roots for f in _fashion_folders(r) if _has_idx(f)), None)
    if folder is None:
        where = " or ".join(repr(str(r)) for r in roots)
        raise UserError(
            f"--data fashion-mnist: the idx files (train-images-idx3-ubyte, train-labels-idx1-ubyte, "
            f"t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, gzipped or not) are not in {where} "
            "(nor in its FashionMNIST/raw/). Install Debian's package with "
            "'apt-get install dataset-fashion-mnist' (it puts them in /usr/share/datasets/fashion-mnist), "
            "or place the files from the Fashion-MNIST release there, or give another root with "
            "--data fashion-mnist:ROOT.",
            field="data",
        )
    splits = ["train", "test"] if spec.split == "all" else [spec.split]
    xs, ys = [], []
    for split in splits:
        images_name, labels_name = _FASHION_FILES[split]
        images = _read_idx(_idx_file(folder, images_name), ndim=3)
        labels = _read_idx(_idx_file(folder, labels_name), ndim=1)
        if len(images) != len(labels):
            raise UserError(
                f"--data fashion-mnist: {images_name} holds {len(images)} images but {labels_name} "
                f"{len(labels)} labels in {str(folder)!r}; the files do not belong together.",
                field="data",
            )
        xs.append(images)
        ys.append(labels)
    x = _from_uint8(np.concatenate(xs)[..., None])
    y = torch.from_numpy(np.concatenate(ys).astype(np.int64))
    return x, y, f"fashion-mnist-{spec.split}"


def _fashion_folders(root: Path) -> list[Path]:
    return [root, root / "FashionMNIST" / "raw"]


def _idx_file(folder: Path, name: str) -> Path | None:
    """The file `name` or `name.gz` in `folder` (the plain one first), or None."""
    return next((p for p in (folder / name, folder / f"{name}.gz") if p.is_file()), None)


def _has_idx(folder: Path) -> bool:
    return all(_idx_file(folder, name) for pair in _FASHION_FILES.values() for name in pair)


_IDX_UINT8 = 0x08  # the idx type code of unsigned bytes, the only one (Fashion-)MNIST uses


def _read_idx(path: Path | None, ndim: int) -> np.ndarray:
    """An idx file (LeCun's MNIST format: 2 zero bytes, a type code, the number of dimensions,
    each dimension as a big-endian uint32, then the data) of uint8 with `ndim` dimensions."""
    assert path is not None  # _has_idx found it
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:  # BadGzipFile is an OSError
        raise UserError(
            f"--data fashion-mnist: {str(path)!r} cannot be read ({type(err).__name__}: {err}); "
            "replace it with an intact copy.",
            field="data",
        ) from None
    header = 4 + 4 * ndim
    dims = (
        [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
        if len(raw) >= header
        else []
    )
    expected = header + int(np.prod(dims)) if dims else -1
    if raw[:4] != bytes([0, 0, _IDX_UINT8, ndim]) or len(raw) != expected or 0 in dims:
        raise UserError(
            f"--data fashion-mnist: {str(path)!r} is not an idx file of uint8 with {ndim} "
            f"dimension(s) (header {raw[:4].hex() or 'missing'}, {len(raw)} bytes for "
            f"dimensions {dims}); the file is damaged or is another file: replace it.",
            field="data",
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)
