"""Pixel quantisation shared by sampling (`train/`) and scoring (`evaluate/`).

Generated images are scored exactly as they would be saved: `to_uint8` is torchvision's
`save_image` quantisation (`mul(255).add_(0.5).clamp_(0, 255)` then uint8, i.e.
floor(255·v + 0.5) of v in [0, 1]) applied to [-1, 1] floats, so the features of in-memory
samples and of the same samples written as PNG and read back are identical.
"""

from __future__ import annotations

import torch


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats → uint8 in [0, 255], as `torchvision.utils.save_image` of (x + 1) / 2."""
    unit = (images.detach().float() + 1.0) / 2.0  # exact: halving loses no bits
    return unit.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)
