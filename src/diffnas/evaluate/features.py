"""Feature extractors for Fréchet distance / KID: the standard FID Inception and a small classifier.

Every extractor takes uint8 images N×C×H×W (0..255, the standard FID protocol: generated
samples are quantised exactly like saved PNGs before they are scored) and returns float64
features N×D, computed in batches. `name` + `weights_sha256` identify the features: scores
and reference statistics are only comparable when both match.

The classifier extractor (trained on the dataset's labels, shipped for the bundled digits)
lives in `classifier.py`.
"""

from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np
import torch
from torch_fidelity.feature_extractor_inceptionv3 import (
    URL_INCEPTION_V3,
    FeatureExtractorInceptionV3,
)

from diffnas.errors import UserError
from diffnas.progress import task as progress_task

INCEPTION_ENV = "DIFFNAS_INCEPTION_WEIGHTS"
# pytorch-fid's release name; torch-fidelity hosts the same converted TF weights as
# `weights-inception-2015-12-05-6726825d.pth` (the hub-style suffix is the SHA-256 prefix).
INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"
INCEPTION_TF_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URLS = (
    URL_INCEPTION_V3,
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + INCEPTION_FILE,
)
INCEPTION_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"


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


class InceptionExtractor(FeatureExtractor):
    """torch-fidelity's FID InceptionV3, 2048-d pool features.

    torch-fidelity resizes to 299×299 itself (its TF1-compatible bilinear) and scales
    (x - 128) / 128, so images go in as uint8 at their own resolution. 1-channel images are
    repeated to 3 channels (the usual convention for MNIST-like data).
    """

    dim = 2048

    def __init__(self, weights_path: str | Path, weights_sha256: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.name = "inception-v3-2048"
        self.weights_sha256 = weights_sha256
        self.model = FeatureExtractorInceptionV3(
            "inception-v3-compat", ["2048"], feature_extractor_weights_path=str(weights_path)
        ).to(self.device)

    def _features(self, batch: torch.Tensor) -> torch.Tensor:
        if batch.shape[1] == 1:
            batch = batch.repeat(1, 3, 1, 1)
        if batch.shape[1] != 3:
            raise UserError(
                f"images have {batch.shape[1]} channels; the inception extractor takes 1 or 3",
                field="images",
            )
        return self.model(batch)[0]


def resolve_inception_weights(
    weights_path: str | Path | None = None,
    *,
    expected_sha256: str | None = INCEPTION_SHA256,
    allow_download: bool = True,
) -> tuple[Path, str]:
    """Find the FID Inception weights; return (path, sha256).

    Order: `weights_path`, then $DIFFNAS_INCEPTION_WEIGHTS, then torch hub's cache (where
    torch-fidelity puts its download), then a download when `allow_download`. A configured
    file must exist and match `expected_sha256` (None skips the check, e.g. for test weights).
    """
    configured = weights_path or os.environ.get(INCEPTION_ENV) or None
    if configured:
        path = Path(configured).expanduser()
        if not path.is_file():
            raise UserError(
                f"inception weights_path {str(path)!r} (from the option or ${INCEPTION_ENV}) is not "
                f"a file; get {INCEPTION_FILE} from {INCEPTION_URLS[1]}",
                field="weights_path",
            )
    else:
        path = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_TF_FILE
        if not path.is_file():
            try:
                if not allow_download:
                    raise RuntimeError("downloads are disabled")
                path.parent.mkdir(parents=True, exist_ok=True)
                torch.hub.download_url_to_file(URL_INCEPTION_V3, str(path), progress=False)
            except Exception as err:  # offline: any network/IO failure means "get it by hand"
                raise UserError(
                    f"FID Inception weights are missing and could not be downloaded ({err}). "
                    f"Get {INCEPTION_FILE} (from {INCEPTION_URLS[1]}, or torch-fidelity's identical "
                    f"{INCEPTION_TF_FILE}) and pass its path as weights_path "
                    f"(--inception-weights) or set {INCEPTION_ENV}=PATH, or put it at {path}",
                    field="weights_path",
                ) from err
    try:
        sha = file_sha256(path)
    except OSError as err:  # no permission, an I/O error
        raise UserError(
            f"inception weights {str(path)!r} cannot be read: {err.strerror or err}",
            field="weights_path",
        ) from None
    if expected_sha256 is not None and sha != expected_sha256.lower():
        raise UserError(
            f"inception weights {str(path)!r} have SHA-256 {sha}, expected {expected_sha256} "
            f"({INCEPTION_FILE}); re-download the file",
            field="weights_path",
        )
    return path, sha


def save_random_inception_weights(path: str | Path, *, seed: int = 0, calibrate: int = 8) -> str:
    """Write a randomly initialised FID-Inception state dict (for tests and benchmarks).

    BatchNorm statistics are set from `calibrate` random images so activations stay O(1)
    through all 90-odd layers (raw random weights explode or vanish). Returns its SHA-256.
    """
    import torchvision

    torch.manual_seed(seed)
    # PyTorch's default init (init_weights=False) is fast; the BN calibration below fixes the scale.
    net = torchvision.models.inception_v3(
        weights=None, aux_logits=False, init_weights=False, num_classes=1008
    )
    path = Path(path)
    torch.save(net.state_dict(), path)  # same module names as torch-fidelity's copy
    model = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], str(path))
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average: one pass gives the batch statistics
    model.train()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model(torch.randint(0, 256, (calibrate, 3, 32, 32), generator=gen, dtype=torch.uint8))
    torch.save(model.state_dict(), path)
    return file_sha256(path)


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
        # imported here: classifier.py builds on this module's FeatureExtractor
        from diffnas.evaluate.classifier import DEFAULT_EPOCHS, classifier_extractor

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
