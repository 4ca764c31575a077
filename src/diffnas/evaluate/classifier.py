"""The `classifier` feature extractor: a small CNN trained on the dataset's own labels.

One dataset must have one feature space wherever it is scored (inline, in a pool worker, in
proxy-check, on another machine), or scores of two runs of the same settings do not compare.
So the classifier is never trained "however this process happens to be configured":

- for the bundled digits (`--data digits`, 16×16) the package ships its weights
  (`bundled/classifier-digits.safetensors`, SHA-256 pinned in `DIGITS_CLASSIFIER_SHA256` and
  checked on every load), found by the content of the images and labels, not by their spec;
- every other dataset trains it on first use under `deterministic_training` (one torch
  thread, deterministic kernels, seeded generators; the caller's settings come back after),
  so every thread count and executor on one machine gets the same weights bit for bit. CPUs
  with other vector units may still round differently: the weights hash recorded with every
  score tells.

The weights and their metadata (recipe version, held-out accuracy, the dataset's content hash)
are one safetensors file, so a cache entry is never half of one training and half of another,
and the same training writes the same bytes whatever the data's spelling. Cache entries are keyed by the dataset fingerprint and the recipe (including
`CLASSIFIER_RECIPE`, bumped whenever training would give other weights); everything derived from
the classifier (reference statistics) is keyed by its weights' SHA-256.

The classifier trains on one half of the dataset (a seeded split) and the other half is the
reference (`ClassifierExtractor.unseen_indices`, used by `reference.reference_stats`): features
of images the classifier was fitted to are tighter than those of any image it has not seen,
which would make generated images look further from the reference than they are.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from diffnas.errors import UserError, pydantic_message
from diffnas.evaluate.extractor import FeatureExtractor, as_uint8_images, file_sha256
from diffnas.progress import task as progress_task
from diffnas.runs import temp_beside

# Version of the training recipe (architecture, data order, optimiser, thread scope). Bump it
# whenever a change would train other weights: cache entries of the old recipe are then never
# looked up again. 1 was the untracked recipe that trained with the caller's thread count.
CLASSIFIER_RECIPE = 2
DEFAULT_EPOCHS = 5
METADATA_KEY = "diffnas_classifier"  # the safetensors header entry holding the metadata JSON

BUNDLED_DIR = Path(__file__).with_name("bundled")
DIGITS_CLASSIFIER = BUNDLED_DIR / "classifier-digits.safetensors"
DIGITS_SHAPE = (1437, 1, 16, 16)  # `--data digits`: the train split at 16×16
# Rebuild with `python tools/build_digits_classifier.py` (it prints the new hash) whenever
# CLASSIFIER_RECIPE changes; the loader refuses any other file.
DIGITS_CLASSIFIER_SHA256 = "bc32207e18feee951418494e72fb3df7a4b7685a0e928591ba070d8128382cba"


def _conv_bn_relu(cin: int, cout: int) -> list[torch.nn.Module]:
    conv = torch.nn.Conv2d(cin, cout, 3, padding=1, bias=False)
    return [conv, torch.nn.BatchNorm2d(cout), torch.nn.ReLU()]  # BN: trains in a few epochs


class SmallCNN(torch.nn.Module):
    """Three conv stages → `feature_dim` penultimate features → class logits. ~0.2M parameters."""

    def __init__(
        self, in_channels: int, num_classes: int, widths=(32, 64, 128), feature_dim: int = 128
    ) -> None:
        super().__init__()
        layers: list[torch.nn.Module] = []
        channels = in_channels
        for i, width in enumerate(widths):
            layers += _conv_bn_relu(channels, width)
            if i < len(widths) - 1:
                layers += [*_conv_bn_relu(width, width), torch.nn.MaxPool2d(2)]
            channels = width
        layers += [torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()]
        layers += [torch.nn.Linear(channels, feature_dim), torch.nn.ReLU()]
        self.features = torch.nn.Sequential(*layers)
        self.head = torch.nn.Linear(feature_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def classifier_arch(epochs: int) -> str:
    """The architecture and training length, part of the extractor's name."""
    return f"smallcnn32-64-128-bn-f128-e{epochs}"


def _scale(images_uint8: torch.Tensor) -> torch.Tensor:
    return images_uint8.float() / 127.5 - 1


def classifier_partition(num_images: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(the classifier's training images, the reference images) of one dataset: two disjoint
    halves of a seeded permutation, each in dataset order."""
    order = torch.randperm(num_images, generator=torch.Generator().manual_seed(seed))
    cut = num_images // 2
    return order[:cut].sort().values, order[cut:].sort().values


def dataset_sha256(images: torch.Tensor, labels: torch.Tensor) -> str:
    """SHA-256 of uint8 images and int64 labels (shape and bytes): the same images in the same
    order, whatever options spelled them (the data fingerprint also hashes the options)."""
    digest = hashlib.sha256(json.dumps(list(images.shape)).encode())
    digest.update(images.contiguous().numpy().tobytes())
    digest.update(labels.to(torch.int64).contiguous().numpy().tobytes())
    return digest.hexdigest()


class ClassifierExtractor(FeatureExtractor):
    """Penultimate-layer features of a SmallCNN trained on half of the dataset's labelled images."""

    def __init__(self, model: SmallCNN, metadata: dict, weights_sha256: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.model = model.to(self.device).eval()
        self.metadata = metadata  # includes heldout_accuracy, arch, seed, dataset_fingerprint
        self.weights_sha256 = weights_sha256
        self.name = f"classifier-{metadata['arch']}"
        self.dim = self.model.head.in_features

    def _features(self, batch: torch.Tensor) -> torch.Tensor:
        want = (self.metadata["channels"], self.metadata["resolution"])
        if (batch.shape[1], batch.shape[-1]) != want or batch.shape[-2] != want[1]:
            raise UserError(
                f"images are {tuple(batch.shape[1:])} but this classifier was trained on "
                f"{want[0]}×{want[1]}×{want[1]} images",
                field="images",
            )
        return self.model.features(_scale(batch))

    def trained_on(self, dataset_fingerprint: str) -> bool:
        return self.metadata.get("dataset_fingerprint") == dataset_fingerprint

    def unseen_indices(self, num_images: int) -> torch.Tensor:
        expected = self.metadata["dataset_num_images"]
        if num_images != expected:
            raise UserError(
                f"the reference has {num_images} images but the classifier's dataset had "
                f"{expected}; the same fingerprint must mean the same images",
                field="reference",
            )
        return classifier_partition(num_images, self.metadata["seed"])[1]


@contextmanager
def deterministic_training() -> Iterator[None]:
    """One torch thread, deterministic algorithms, and the caller's random state untouched.

    Reductions split over more threads add floats in another order, and over ~50 optimiser
    steps that changes the weights (under the first recipe, digits' held-out accuracy was 0.95
    with one thread and 0.98 with two). Inside
    this block the numbers are the same in every process on this machine; after it, the
    caller's thread count, determinism flag and global RNG are as they were. torch's thread
    count is process-wide: another thread training at the same moment runs single-threaded
    for that while.
    """
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.set_num_threads(threads)


def train_classifier(
    images: torch.Tensor,
    labels: torch.Tensor,
    heldout_images: torch.Tensor,
    heldout_labels: torch.Tensor,
    *,
    seed: int,
    epochs: int,
    batch_size: int = 64,
) -> tuple[SmallCNN, float]:
    """Train a SmallCNN on `images` on the CPU, reproducibly (`deterministic_training`); return
    it and its accuracy on the held-out images."""
    with deterministic_training():
        torch.manual_seed(seed)  # the initial weights; the caller's RNG is restored after
        order_rng = torch.Generator().manual_seed(seed)
        x, y = _scale(images.cpu()), labels.cpu().long()
        num_classes = int(max(labels.max(), heldout_labels.max())) + 1
        model = SmallCNN(images.shape[1], num_classes)
        opt = torch.optim.Adam(model.parameters(), lr=2e-3)
        with progress_task("training the feature classifier", total=epochs) as bar:
            for _ in range(epochs):
                order = torch.randperm(len(x), generator=order_rng)
                for i in range(0, len(order), batch_size):
                    idx = order[i : i + batch_size]
                    loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                bar.update(advance=1, info=f"loss {loss.item():.3f}")
        model.eval()
        with torch.no_grad():
            predicted = model(_scale(heldout_images.cpu())).argmax(1)
            accuracy = (predicted == heldout_labels.cpu().long()).float().mean().item()
    return model, accuracy


def fit_classifier(
    images: torch.Tensor, labels: torch.Tensor, *, seed: int, epochs: int
) -> tuple[SmallCNN, dict[str, Any]]:
    """Train the classifier of one dataset on its seeded half; return it and the metadata its
    file keeps. Only what the images, labels and recipe determine goes in (not the data's
    fingerprint, which also hashes how the options spelled it, nor the torch version), so the
    same training writes the same bytes and the file's SHA-256 names the weights."""
    train_part, reference_part = classifier_partition(len(images), seed)
    model, accuracy = train_classifier(
        images[train_part], labels[train_part], images[reference_part], labels[reference_part],
        seed=seed, epochs=epochs,
    )  # fmt: skip
    meta = {
        "recipe": CLASSIFIER_RECIPE,
        "arch": classifier_arch(epochs),
        "seed": seed,
        "epochs": epochs,
        "dataset_sha256": dataset_sha256(images, labels),
        "num_classes": model.head.out_features,
        "channels": images.shape[1],
        "resolution": images.shape[-1],
        "dataset_num_images": len(images),
        "num_train_images": len(train_part),  # the rest is the reference: never trained on
        "heldout_accuracy": accuracy,
        "torch_threads": 1,  # `deterministic_training`
    }
    return model, meta


def save_classifier(path: str | Path, model: SmallCNN, meta: dict[str, Any]) -> str:
    """Write the weights with `meta` in the safetensors header, atomically; return its SHA-256."""
    from safetensors.torch import save_file

    path = Path(path)
    tmp = temp_beside(path)
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(meta, sort_keys=True)})
    sha = file_sha256(tmp)
    os.replace(tmp, path)
    return sha


def load_classifier(
    path: str | Path, expected_sha256: str | None = None
) -> tuple[SmallCNN, dict[str, Any]]:
    """Read a file `save_classifier` wrote; return the model and its metadata, with the file's
    SHA-256 as `weights_sha256`. A file whose hash is not `expected_sha256` is refused."""
    from safetensors import safe_open

    path = Path(path)
    sha = file_sha256(path)
    if expected_sha256 is not None and sha != expected_sha256:
        raise UserError(
            f"classifier weights {str(path)!r} have SHA-256 {sha}, expected {expected_sha256}: "
            "the file was changed or damaged; reinstall diffnas (or, for a cache entry, delete "
            "it to retrain)",
            field="extractor",
        )

    def damaged(why: str) -> UserError:
        return UserError(
            f"classifier weights {str(path)!r} are damaged ({why}); delete the file to train "
            "the classifier again (a bundled one: reinstall diffnas)",
            field="extractor",
        )

    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (not a dict)
    except Exception as err:  # safetensors' errors on a damaged file vary by version
        raise damaged(type(err).__name__) from None
    if METADATA_KEY not in header:
        raise damaged(f"no {METADATA_KEY} metadata: not a diffnas classifier file")
    try:
        meta = ClassifierMeta.model_validate_json(header[METADATA_KEY])
    except ValidationError as err:
        raise damaged(pydantic_message(err, "its metadata")) from None
    model = SmallCNN(meta.channels, meta.num_classes)
    try:
        model.load_state_dict(tensors)
    except RuntimeError as err:
        raise damaged(f"tensors do not fit the metadata: {str(err).splitlines()[0]}") from None
    return model, {**meta.model_dump(mode="json"), "weights_sha256": sha}


class ClassifierMeta(BaseModel):
    """The metadata a classifier file carries in its header (what rebuilds and names it)."""

    model_config = ConfigDict(extra="allow")

    arch: str
    channels: int = Field(ge=1, le=4)
    num_classes: int = Field(ge=2, le=100_000)
    resolution: int = Field(ge=1, le=4096)


def bundled_classifier(
    images: torch.Tensor, labels: torch.Tensor, *, seed: int, epochs: int
) -> tuple[SmallCNN, dict[str, Any]] | None:
    """The shipped classifier when these are exactly the images and labels it was trained for
    (by content) under the same recipe, checked against its pinned SHA-256; else None."""
    if tuple(images.shape) != DIGITS_SHAPE or (seed, epochs) != (0, DEFAULT_EPOCHS):
        return None  # not those images (hashing would say so, slower) or another recipe
    model, meta = load_classifier(DIGITS_CLASSIFIER, DIGITS_CLASSIFIER_SHA256)
    if meta["dataset_sha256"] != dataset_sha256(images, labels):
        return None
    return model, meta


def classifier_extractor(
    *,
    cache_dir: str | Path,
    dataset_fingerprint: str,
    train_images: torch.Tensor | np.ndarray | None = None,
    train_labels: torch.Tensor | np.ndarray | None = None,
    seed: int = 0,
    epochs: int = DEFAULT_EPOCHS,
    **kwargs,
) -> ClassifierExtractor:
    """The classifier of this dataset: the shipped one for the bundled digits, else from
    `cache_dir`, training (and caching) it on a miss.

    `train_images` are the whole dataset: the classifier trains on one seeded half
    (`classifier_partition`) and its held-out accuracy is measured on the other half, the one
    `reference_stats` keeps as the reference. The cache key covers the dataset fingerprint,
    the architecture, the recipe version and the seed.
    """
    from diffnas.runs import write_json

    images = labels = None
    if train_images is not None and train_labels is not None:
        images = as_uint8_images(train_images, "train_images")
        labels = torch.as_tensor(np.asarray(train_labels)).long()
        if labels.shape != (len(images),) or int(labels.min()) < 0:
            raise UserError(
                f"train_labels must be {len(images)} class indices >= 0, got shape "
                f"{tuple(labels.shape)}",
                field="train_labels",
            )
        shipped = bundled_classifier(images, labels, seed=seed, epochs=epochs)
        if shipped is not None:
            model, meta = shipped
            # the same images under this fingerprint: its reference is the unseen half
            meta.update(dataset_fingerprint=dataset_fingerprint, source="bundled")
            return ClassifierExtractor(model, meta, meta["weights_sha256"], **kwargs)

    arch = classifier_arch(epochs)
    recipe = f"{dataset_fingerprint}|{arch}|{seed}|half|recipe{CLASSIFIER_RECIPE}"
    key = hashlib.sha256(recipe.encode()).hexdigest()[:16]
    cache_dir = Path(cache_dir)
    weights = cache_dir / f"classifier-{key}.safetensors"
    if weights.is_file():
        model, meta = load_classifier(weights)
        meta.update(dataset_fingerprint=dataset_fingerprint, source="cache")  # keyed by it
        return ClassifierExtractor(model, meta, meta["weights_sha256"], **kwargs)
    if images is None or labels is None:
        raise UserError(
            f"no cached classifier for dataset {dataset_fingerprint!r} in {str(cache_dir)!r}: "
            "train_images and train_labels are needed to train one (the dataset must have labels)",
            field="train_labels",
        )
    if len(images) < 4:
        raise UserError(
            f"train_images has {len(images)} images; the classifier needs at least 4 (half to "
            "train on, half kept unseen as the reference)",
            field="train_images",
        )
    model, meta = fit_classifier(images, labels, seed=seed, epochs=epochs)
    cache_dir.mkdir(parents=True, exist_ok=True)
    sha = save_classifier(weights, model, meta)
    meta.update(weights_sha256=sha, dataset_fingerprint=dataset_fingerprint, source="trained")
    # a readable copy with provenance; loading reads only the weights file
    write_json(weights.with_suffix(".json"), {**meta, "torch": torch.__version__})
    return ClassifierExtractor(model, meta, sha, **kwargs)
