"""A feature extractor by name: "inception" (the standard FID features, `inception.py`) or
"classifier" (offline, trained on the dataset's labels, `classifier.py`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from diffnas.errors import UserError
from diffnas.evaluate.classifier import DEFAULT_EPOCHS, classifier_extractor
from diffnas.evaluate.extractor import FeatureExtractor
from diffnas.evaluate.inception import (
    INCEPTION_SHA256,
    InceptionExtractor,
    resolve_inception_weights,
)


def get_extractor(
    name: str,
    *,
    weights_path: str | Path | None = None,
    expected_sha256: str | None = INCEPTION_SHA256,
    allow_download: bool = True,
    train_images: torch.Tensor | np.ndarray | None = None,
    train_labels: torch.Tensor | np.ndarray | None = None,
    cache_dir: str | Path | None = None,
    dataset_fingerprint: str | None = None,
    seed: int = 0,
    epochs: int | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 64,
) -> FeatureExtractor:
    """Build a feature extractor by name: "inception" (standard FID) or "classifier" (offline)."""
    if name == "inception":
        path, sha = resolve_inception_weights(
            weights_path, expected_sha256=expected_sha256, allow_download=allow_download
        )
        return InceptionExtractor(path, sha, device=device, batch_size=batch_size)
    if name == "classifier":
        if cache_dir is None or not dataset_fingerprint:
            raise UserError(
                "the classifier extractor needs cache_dir and dataset_fingerprint",
                field="cache_dir",
            )
        return classifier_extractor(
            cache_dir=cache_dir,
            dataset_fingerprint=dataset_fingerprint,
            train_images=train_images,
            train_labels=train_labels,
            seed=seed,
            epochs=DEFAULT_EPOCHS if epochs is None else epochs,
            device=device,
            batch_size=batch_size,
        )
    raise UserError(
        f"extractor {name!r} is unknown; choose 'inception' or 'classifier'", field="extractor"
    )
