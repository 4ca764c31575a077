"""Published reference denoisers as named presets.

Counts are of the diffusers `UNet2DModel` they build to (see README, "How FLOPs are counted"):
- `ddpm-cifar10`: Ho et al. 2020, CIFAR-10. 35.75 M parameters (published 35.7 M), 6.22 GMACs at 32x32.
- `iddpm-cifar10`: Nichol & Dhariwal 2021, CIFAR-10 L_hybrid model. 52.55 M parameters (published 52.5 M),
  8.39 GMACs at 32x32.
- `tiny-digits`: a small net for 16x16 grey digits, the reference of the `tiny` space.
"""

from __future__ import annotations

from diffnas.errors import UserError
from diffnas.space.arch import ArchConfig

REFERENCE_ARCHS: dict[str, ArchConfig] = {
    "ddpm-cifar10": ArchConfig(
        image_size=32,
        base_channels=128,
        channel_mult=[1, 2, 2, 2],
        num_res_blocks=2,
        attention_resolutions=[16],
        num_heads=1,
        dropout=0.1,
    ),
    "iddpm-cifar10": ArchConfig(
        image_size=32,
        learn_sigma=True,
        base_channels=128,
        channel_mult=[1, 2, 2, 2],
        num_res_blocks=3,
        attention_resolutions=[16, 8],
        num_heads=4,
        dropout=0.3,
        scale_shift_norm=True,
    ),
    "tiny-digits": ArchConfig(
        image_size=16,
        in_channels=1,
        base_channels=32,
        channel_mult=[1, 2, 2],
        num_res_blocks=1,
        attention_resolutions=[8],
        head_channels=32,
        norm_groups=8,
    ),
}


def get_reference(name: str) -> ArchConfig:
    try:
        return REFERENCE_ARCHS[name]
    except KeyError:
        raise UserError(
            f"Unknown reference architecture {name!r}; known: {', '.join(sorted(REFERENCE_ARCHS))}.",
            field="arch",
        ) from None
