"""Reference statistics (mu, sigma and the features for KID), cached on disk.

A cache entry is keyed by everything that changes the numbers: the dataset fingerprint, the
split, the part of it that is the reference, the extractor name + weights hash and the
resolution. Computing Inception features of a 50k reference set takes minutes, so every run
after the first reuses them.

The reference is every image the extractor never trained on: all of them for Inception, the
half the classifier did not see when the classifier was trained on this same dataset (its
`unseen_indices`), so reference features are never "seen" features.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from diffnas.errors import UserError
from diffnas.evaluate.extractor import FeatureExtractor, as_uint8_images
from diffnas.evaluate.frechet import feature_statistics
from diffnas.runs import temp_beside, write_json

Images = torch.Tensor | np.ndarray


@dataclass(frozen=True)
class RefStats:
    """Statistics of one reference set under one extractor."""

    mu: np.ndarray  # D, float64
    sigma: np.ndarray  # D×D, float64
    features: np.ndarray  # N×D, float64 (KID needs the samples, not just moments)
    dataset: str  # dataset name, for display
    split: str
    dataset_fingerprint: str
    extractor: str
    weights_sha256: str
    resolution: int
    part: str  # "all", or "classifier-heldout": the half the classifier never trained on
    key: str

    @property
    def num_images(self) -> int:
        return len(self.features)

    @property
    def description(self) -> str:
        part = "" if self.part == ALL else f"/{self.part}"
        return f"{self.dataset}/{self.split}/{self.dataset_fingerprint}{part}"


ALL, CLASSIFIER_HELDOUT = "all", "classifier-heldout"


def reference_key(
    *,
    dataset_fingerprint: str,
    split: str,
    extractor: str,
    weights_sha256: str,
    resolution: int,
    part: str = ALL,
) -> str:
    """Cache key: a hash of every part that changes the statistics."""
    parts = [dataset_fingerprint, split, extractor, weights_sha256, int(resolution)]
    if part != ALL:
        parts.append(part)
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:24]


def reference_stats(
    extractor: FeatureExtractor,
    images: Images | Callable[[], Images],
    *,
    dataset_fingerprint: str,
    split: str,
    resolution: int,
    cache_dir: str | Path | None,
    dataset: str = "dataset",
) -> RefStats:
    """Reference statistics from the cache, or computed from `images` (uint8 N×C×H×W) and cached.

    `images` may be a zero-argument callable so a cache hit never loads the dataset. When the
    extractor was trained on part of these images, only the rest is kept (see the module doc).
    """
    part = CLASSIFIER_HELDOUT if extractor.trained_on(dataset_fingerprint) else ALL
    key = reference_key(
        dataset_fingerprint=dataset_fingerprint,
        split=split,
        extractor=extractor.name,
        weights_sha256=extractor.weights_sha256,
        resolution=resolution,
        part=part,
    )
    meta = {
        "dataset": dataset,
        "split": split,
        "dataset_fingerprint": dataset_fingerprint,
        "extractor": extractor.name,
        "weights_sha256": extractor.weights_sha256,
        "resolution": int(resolution),
        "part": part,
        "key": key,
    }
    arrays_path = meta_path = None
    if cache_dir is not None:
        arrays_path = Path(cache_dir) / f"ref-{key}.npz"
        meta_path = Path(cache_dir) / f"ref-{key}.json"
        if arrays_path.is_file() and meta_path.is_file():
            try:
                with np.load(arrays_path) as arrays:  # the key already pins every field of meta
                    return RefStats(arrays["mu"], arrays["sigma"], arrays["features"], **meta)
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
                raise UserError(
                    f"cached reference statistics {str(arrays_path)!r} are damaged "
                    f"({type(err).__name__}); delete them and their .json to compute them again",
                    field="cache_dir",
                ) from None

    images = as_uint8_images(images() if callable(images) else images, "reference images")
    if tuple(images.shape[-2:]) != (resolution, resolution):
        raise UserError(
            f"reference images are {tuple(images.shape[-2:])} but resolution is {resolution}",
            field="resolution",
        )
    if part != ALL:
        images = images[extractor.unseen_indices(len(images))]
    features = extractor(images)
    mu, sigma = feature_statistics(features)
    if arrays_path is not None and meta_path is not None:
        arrays_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_beside(arrays_path)
        with open(tmp, "wb") as f:
            np.savez(f, mu=mu, sigma=sigma, features=features)
        os.replace(tmp, arrays_path)
        write_json(meta_path, {**meta, "num_images": len(features)})  # written last: marks done
    return RefStats(mu, sigma, features, **meta)
