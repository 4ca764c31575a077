"""Tiny denoisers for tests: two levels, attention at the second, 8x8 images."""

from __future__ import annotations

import torch
from diffusers import UNet2DModel

from diffnas.execute.job import EvalSpec, ScoreSpec
from diffnas.space.arch import parse_arch


def tiny_unet(
    in_channels: int = 1,
    out_channels: int | None = None,
    *,
    size: int = 8,
    dropout: float = 0.0,
    seed: int = 0,
) -> UNet2DModel:
    """A ~50k-parameter UNet2DModel; `out_channels` defaults to `in_channels`."""
    torch.manual_seed(seed)
    return UNet2DModel(
        sample_size=size,
        in_channels=in_channels,
        out_channels=out_channels or in_channels,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
        dropout=dropout,
    )


# The tiny candidate every executor test evaluates (a few steps, a handful of samples).
TINY_JOB_ARCH = parse_arch(
    {"image_size": 16, "in_channels": 1, "base_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
     "attention_resolutions": [], "mid_attention": False, "norm_groups": 8}
)  # fmt: skip
TINY_JOB_SPEC = EvalSpec(
    recipe_overrides={"steps": 4, "batch_size": 4, "log_every": 2},
    score=ScoreSpec(num_samples=8, steps=2, batch_size=8),
    device="cpu",
)
