"""What every feature extractor for Fréchet distance / KID is: uint8 images in, features out.

Every extractor takes uint8 images N×C×H×W (0..255, the standard FID protocol: generated
samples are quantised exactly like saved PNGs before they are scored) and returns float64
features N×D, computed in batches. `name` + `weights_sha256` identify the features: scores
and reference statistics are only comparable when both match.

The extractors: torch-fidelity's FID Inception (`inception.py`) and a small classifier trained
on the dataset's labels (`classifier.py`); `features.get_extractor` picks one by name.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np
import torch

from diffnas.errors import UserError
from diffnas.progress import task as progress_task


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def as_uint8_images(images: torch.Tensor | np.ndarray, field: str = "images") -> torch.Tensor:
    """Check and return images as a uint8 torch tensor N×C×H×W."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
        got = f"{type(images).__name__} {getattr(images, 'dtype', '')} {tuple(getattr(images, 'shape', ()))}"
        raise UserError(
            f"{field} must be uint8 images N×C×H×W (use diffnas.images.to_uint8 on [-1, 1] floats), got {got}",
            field=field,
        )
    if len(images) == 0:
        raise UserError(f"{field} is empty: at least one image is needed", field=field)
    return images


class FeatureExtractor(ABC):
    """uint8 N×C×H×W → float64 features N×D, in batches on `device`."""

    name: str
    weights_sha256: str
    dim: int

    def __init__(self, device: str | torch.device = "cpu", batch_size: int = 64) -> None:
        self.device = torch.device(device)
        self.batch_size = batch_size

    @abstractmethod
    def _features(self, batch: torch.Tensor) -> torch.Tensor:
        """Features of one uint8 batch already on `self.device`."""

    def trained_on(self, dataset_fingerprint: str) -> bool:
        """Whether part of this dataset trained the extractor (then only the rest is a fair
        reference). Inception never saw it; the classifier saw half of its own dataset."""
        return False

    def unseen_indices(self, num_images: int) -> torch.Tensor:
        """Indices of the images of its training dataset that the extractor never trained on."""
        return torch.arange(num_images)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor | np.ndarray) -> np.ndarray:
        images = as_uint8_images(images)
        out = []
        with progress_task(f"features ({self.name.split('-')[0]})", total=len(images)) as bar:
            for i in range(0, len(images), self.batch_size):
                batch = images[i : i + self.batch_size]
                out.append(self._features(batch.to(self.device)).double().cpu())
                bar.update(advance=len(batch))
        return torch.cat(out).numpy()
