"""Randomly initialised FID-Inception weights, for tests and benchmarks that need the real
network's shape and speed but not its values (the published weights are a download)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

from diffnas.evaluate.extractor import file_sha256


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
