"""Compute of training and sampling a candidate, in FLOPs, from its MACs per forward pass.

FLOPs = 2 x MACs (as everywhere in diffnas). Training costs a forward and a backward pass,
about 3 forward passes, per image: 3 x 2 x MACs x steps x batch. Sampling costs one forward
pass per image per sampler step: 2 x MACs x N x S. Feature extraction and the Fréchet
distance are left out: they cost the same for every candidate.
"""

from __future__ import annotations

FORWARD_PASSES_PER_TRAINING_IMAGE = 3  # forward + backward (the backward is ~2 forwards)


def training_flops(macs: float, steps: int, batch_size: int) -> float:
    """FLOPs of `steps` optimizer steps of `batch_size` images."""
    return FORWARD_PASSES_PER_TRAINING_IMAGE * 2.0 * macs * steps * batch_size


def sampling_flops(macs: float, num_samples: int, sampler_steps: int) -> float:
    """FLOPs of drawing `num_samples` images with `sampler_steps` denoiser calls each."""
    return 2.0 * macs * num_samples * sampler_steps
