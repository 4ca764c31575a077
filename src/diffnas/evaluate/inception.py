"""The standard FID features: torch-fidelity's InceptionV3 (2048-d pool features) and where
its weights come from (the option, $DIFFNAS_INCEPTION_WEIGHTS, torch hub's cache, a download),
each file checked against the SHA-256 of the published weights."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from diffnas.errors import UserError
from diffnas.evaluate.extractor import FeatureExtractor, file_sha256

INCEPTION_ENV = "DIFFNAS_INCEPTION_WEIGHTS"
# pytorch-fid's release name; torch-fidelity hosts the same converted TF weights as
# `weights-inception-2015-12-05-6726825d.pth` (the hub-style suffix is the SHA-256 prefix).
INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"
INCEPTION_TF_FILE = "weights-inception-2015-12-05-6726825d.pth"
# torch-fidelity's own URL (its URL_INCEPTION_V3; tests/test_evaluate_features.py keeps them
# equal): written out so that importing diffnas.evaluate does not import torch-fidelity, which
# only scoring with Inception needs (every worker process paid ~1 s for it)
URL_INCEPTION_V3 = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
    "weights-inception-2015-12-05-6726825d.pth"
)
INCEPTION_URLS = (
    URL_INCEPTION_V3,
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + INCEPTION_FILE,
)
INCEPTION_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"


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
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

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
