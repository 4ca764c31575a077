"""Published reference denoisers as named presets.

Counts are of the diffusers `UNet2DModel` they build to (see README, "How FLOPs are counted"):
- `ddpm-cifar10`: Ho et al. 2020, CIFAR-10. 35.75 M parameters (published 35.7 M), 6.22 GMACs at 32x32.
- `iddpm-cifar10`: Nichol & Dhariwal 2021, CIFAR-10 L_hybrid model. 52.55 M parameters (published 52.5 M),
  8.39 GMACs at 32x32.
- `tiny-digits`: a small net for 16x16 grey digits, the reference of the `tiny` space.
- `micro-digits`: a smaller one inside the `micro` space (its reference; 0.017 GMACs).
"""

from __future__ import annotations

from pathlib import Path

from diffnas.errors import UserError
from diffnas.space.arch import ArchConfig, parse_arch, read_arch_file
from diffnas.space.search_space import SearchSpace

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
    "micro-digits": ArchConfig(
        image_size=16,
        in_channels=1,
        base_channels=16,
        channel_mult=[1, 2, 2],
        num_res_blocks=1,
        attention_resolutions=[8],
        head_channels=16,
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


def resolve_arch(text: str, space: SearchSpace | None = None) -> tuple[str, ArchConfig]:
    """A reference preset name or a JSON/YAML architecture file → (label, architecture).

    With a space, a file may leave out the fields the space fixes (image size, channels,
    learned variance), and the architecture must lie inside the space.
    """
    if text in REFERENCE_ARCHS:
        arch = REFERENCE_ARCHS[text]
        if space is not None:
            space.check(arch, source=f"architecture {text}")
        return text, arch
    path = Path(text)
    if path.suffix in (".json", ".yaml", ".yml") or path.exists():
        source = f"architecture in {path.name}"
        raw = read_arch_file(path)
        return path.name, (space.complete(raw, source) if space else parse_arch(raw, source))
    get_reference(text)  # raises with the list of known presets
    raise UserError(f"Unknown architecture {text!r}.")  # pragma: no cover
