"""`ArchConfig` -> diffusers `UNet2DModel`.

The mapping (IDDPM term -> diffusers argument):
- level i of `channel_mult` -> `block_out_channels[i] = base_channels * channel_mult[i]`
- a level whose resolution is in `attention_resolutions` -> `AttnDownBlock2D` / `AttnUpBlock2D`,
  otherwise `DownBlock2D` / `UpBlock2D` (`ResnetDownsampleBlock2D` / `ResnetUpsampleBlock2D`
  when `resblock_updown`, so every level resamples the same way)
- `num_res_blocks` -> `layers_per_block` (diffusers' up path has one more, as IDDPM's)
- `scale_shift_norm` -> `resnet_time_scale_shift="scale_shift"`
- head width -> `attention_head_dim` (one width for every attention block, diffusers' rule)
- `learn_sigma` -> `out_channels = 2 * in_channels`
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import UNet2DModel

from diffnas.space.arch import ArchConfig


def unet_kwargs(arch: ArchConfig) -> dict[str, Any]:
    """The `UNet2DModel` constructor arguments for an architecture (what its config.json holds)."""
    down, up = [], []
    for attn in arch.attention_levels:
        if attn:
            down.append("AttnDownBlock2D")
            up.append("AttnUpBlock2D")
        elif arch.resblock_updown:
            down.append("ResnetDownsampleBlock2D")
            up.append("ResnetUpsampleBlock2D")
        else:
            down.append("DownBlock2D")
            up.append("UpBlock2D")
    resample = "resnet" if arch.resblock_updown else "conv"
    return {
        "sample_size": arch.image_size,
        "in_channels": arch.in_channels,
        "out_channels": arch.out_channels,
        "block_out_channels": tuple(arch.level_channels),
        "layers_per_block": arch.num_res_blocks,
        "down_block_types": tuple(down),
        "up_block_types": tuple(reversed(up)),
        "downsample_type": resample,
        "upsample_type": resample,
        "add_attention": arch.mid_attention,
        # diffusers falls back to one head of full width when attention_head_dim is None
        "attention_head_dim": arch.head_width,
        "dropout": arch.dropout,
        "norm_num_groups": arch.norm_groups,
        "resnet_time_scale_shift": "scale_shift" if arch.scale_shift_norm else "default",
        # DDPM/IDDPM timestep embedding: sin first, shift 1 (as google/ddpm-cifar10-32)
        "flip_sin_to_cos": False,
        "freq_shift": 1,
    }


def build_unet(arch: ArchConfig, device: str | torch.device = "cpu") -> UNet2DModel:
    """Build the denoiser. On `device="meta"` it allocates nothing (for counting)."""
    with torch.device(device):
        return UNet2DModel(**unet_kwargs(arch))
