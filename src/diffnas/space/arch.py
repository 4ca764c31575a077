"""`ArchConfig`: one UNet denoiser, as plain data.

The fields follow openai/improved-diffusion's flags (`num_channels`, `channel_mult`,
`attention_resolutions`, ...) so published configurations read naturally; those flag
names are accepted as aliases. An `ArchConfig` is always structurally valid: channels
divisible by the norm groups and the head width, no more levels than the resolution
allows, attention only at resolutions the network reaches. Whether it is *inside a
search space* and *within a budget* is asked of `SearchSpace` and `diffnas.model.cost`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path
from typing import Annotated, Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, model_validator

from diffnas import limits
from diffnas.errors import ArchitectureError

MIN_RESOLUTION = (
    2  # the deepest level keeps at least 2x2 pixels so its 3x3 convs see a neighbourhood
)

# Upper bounds of every field. Generous for any real pixel-space UNet (DDPM/IDDPM use 128
# channels, mult <= 4, 2-3 blocks, 4 levels; ADM at 512 px: 256 channels, 7 levels; Stable
# Diffusion's latent UNet: 320 channels, 4 levels, 64-channel heads; Imagen's Efficient
# U-Net: up to 8 blocks per level), yet they bound the blocks a net can have, so counting
# any architecture on the meta device takes seconds (the largest one allowed: about 10 s
# on a shared 2-core CPU): without them `num_res_blocks: 1000000` built a million blocks
# (8 minutes, 14 GB) before counting, and a 10**30-channel conv overflowed inside torch.
MAX_IMAGE_SIZE = limits.MAX_IMAGE_SIZE  # 1024
MAX_IN_CHANNELS = 64
MAX_BASE_CHANNELS = 4096
MAX_CHANNEL_MULT = 16
MAX_LEVELS = 8
MAX_RES_BLOCKS = 16
MAX_NUM_HEADS = 256
MAX_HEAD_CHANNELS = 1024
MAX_NORM_GROUPS = 1024

Multiplier = Annotated[int, Field(ge=1, le=MAX_CHANNEL_MULT)]
Resolution = Annotated[int, Field(ge=1, le=MAX_IMAGE_SIZE)]


class ArchConfig(BaseModel):
    """A UNet denoiser (DDPM/IDDPM family) that `diffnas.model.build_unet` turns into a diffusers `UNet2DModel`."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, populate_by_name=True, allow_inf_nan=False
    )

    # --- fixed by the data and the objective (a search space sets them, the LLM does not) ---
    image_size: int = Field(
        32, ge=4, le=MAX_IMAGE_SIZE, description="height = width of the images, in pixels"
    )
    in_channels: int = Field(
        3, ge=1, le=MAX_IN_CHANNELS, description="image channels (3 RGB, 1 grey)"
    )
    learn_sigma: bool = Field(
        False,
        validation_alias=AliasChoices("learn_sigma", "learned_variance"),
        description="IDDPM learned-range variance: the net outputs 2x the image channels",
    )
    # --- searched ---
    base_channels: int = Field(
        ...,
        ge=1,
        le=MAX_BASE_CHANNELS,
        validation_alias=AliasChoices("base_channels", "num_channels", "model_channels", "ch"),
        description="channels of the first level; level i has base_channels * channel_mult[i]",
    )
    channel_mult: list[Multiplier] = Field(
        ...,
        min_length=1,
        max_length=MAX_LEVELS,
        description="channel multiplier per level; its length is the number of levels",
    )
    num_res_blocks: int = Field(
        ...,
        ge=1,
        le=MAX_RES_BLOCKS,
        description="residual blocks per level on the way down (the way up has one more)",
    )
    attention_resolutions: list[Resolution] = Field(
        default_factory=list,
        max_length=MAX_LEVELS,
        description="resolutions (pixels) whose levels carry self-attention, e.g. [16, 8]",
    )
    mid_attention: bool = Field(True, description="self-attention in the middle block")
    num_heads: int | None = Field(
        None, ge=1, le=MAX_NUM_HEADS, description="attention heads (exclusive with head_channels)"
    )
    head_channels: int | None = Field(
        None,
        ge=1,
        le=MAX_HEAD_CHANNELS,
        validation_alias=AliasChoices("head_channels", "num_head_channels"),
        description="channels per attention head (exclusive with num_heads); neither set = one head",
    )
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout inside the residual blocks")
    scale_shift_norm: bool = Field(
        False,
        validation_alias=AliasChoices("scale_shift_norm", "use_scale_shift_norm"),
        description="adaptive group norm: the timestep embedding scales and shifts (IDDPM)",
    )
    resblock_updown: bool = Field(
        False, description="resample with residual blocks instead of strided conv / nearest+conv"
    )
    norm_groups: int = Field(32, ge=1, le=MAX_NORM_GROUPS, description="GroupNorm groups")

    @model_validator(mode="before")
    @classmethod
    def _accept_spellings(cls, data: Any) -> Any:
        """Accept IDDPM's comma strings ("1,2,2,2", "16,8") for the list fields."""
        if isinstance(data, dict):
            data = dict(data)
            for key in ("channel_mult", "attention_resolutions"):
                value = data.get(key)
                if isinstance(value, str):
                    # a string that is not a comma list stays a string: the type check names the field
                    with contextlib.suppress(ValueError):
                        data[key] = [int(v) for v in value.replace(" ", "").split(",") if v]
                elif isinstance(value, tuple):
                    data[key] = list(value)
        return data

    @model_validator(mode="after")
    def _check_structure(self) -> ArchConfig:
        levels = len(self.channel_mult)
        deepest = self.image_size // 2 ** (levels - 1)
        if self.image_size % 2 ** (levels - 1) or deepest < MIN_RESOLUTION:
            allowed = max_levels(self.image_size)
            raise ValueError(
                f"channel_mult: {levels} levels need image_size divisible by {2 ** (levels - 1)} "
                f"with at least {MIN_RESOLUTION}x{MIN_RESOLUTION} pixels at the deepest level; "
                f"at image_size {self.image_size} at most {allowed} levels are allowed"
            )
        reached = self.level_resolutions
        for res in self.attention_resolutions:
            if res not in reached:
                raise ValueError(
                    f"attention_resolutions: the net never reaches resolution {res}; "
                    f"its levels are at {reached}"
                )
        if len(set(self.attention_resolutions)) != len(self.attention_resolutions):
            raise ValueError(
                f"attention_resolutions: repeated value in {self.attention_resolutions}"
            )
        for i, ch in enumerate(self.level_channels):
            if ch % self.norm_groups:
                raise ValueError(
                    f"norm_groups: level {i} has {ch} channels (base_channels {self.base_channels} "
                    f"x channel_mult {self.channel_mult[i]}), not divisible by norm_groups {self.norm_groups}"
                )
        if self.num_heads is not None and self.head_channels is not None:
            raise ValueError(
                "num_heads: set num_heads or head_channels, not both "
                f"(got num_heads {self.num_heads}, head_channels {self.head_channels})"
            )
        attn = self.attention_channels
        if self.head_channels is not None:
            for ch in attn:
                if ch % self.head_channels:
                    raise ValueError(
                        f"head_channels: an attention level has {ch} channels, "
                        f"not divisible by head_channels {self.head_channels}"
                    )
        if self.num_heads is not None and attn:
            for ch in attn:
                if ch % self.num_heads:
                    raise ValueError(
                        f"num_heads: an attention level has {ch} channels, "
                        f"not divisible by num_heads {self.num_heads}"
                    )
            if len(set(attn)) > 1:
                # diffusers' UNet2DModel has one head width for every attention block
                raise ValueError(
                    f"num_heads: attention levels have different widths {sorted(set(attn))}; "
                    "a fixed head count needs one width, so give head_channels instead"
                )
        return self

    # --- derived quantities ---
    @property
    def num_levels(self) -> int:
        return len(self.channel_mult)

    @property
    def level_resolutions(self) -> list[int]:
        return [self.image_size // 2**i for i in range(self.num_levels)]

    @property
    def level_channels(self) -> list[int]:
        return [self.base_channels * m for m in self.channel_mult]

    @property
    def attention_levels(self) -> list[bool]:
        return [res in self.attention_resolutions for res in self.level_resolutions]

    @property
    def attention_channels(self) -> list[int]:
        """Channel widths of every attention block, the middle block included."""
        chans = [ch for ch, a in zip(self.level_channels, self.attention_levels) if a]
        if self.mid_attention:
            chans.append(self.level_channels[-1])
        return chans

    @property
    def out_channels(self) -> int:
        return self.in_channels * (2 if self.learn_sigma else 1)

    @property
    def head_width(self) -> int | None:
        """Channels per head for every attention block (None when the net has no attention)."""
        attn = self.attention_channels
        if not attn:
            return None
        if self.head_channels is not None:
            return self.head_channels
        return attn[0] // (self.num_heads or 1) if len(set(attn)) == 1 or self.num_heads else None

    # --- identity ---
    def canonical(self) -> dict[str, Any]:
        """The same architecture gives the same dict, whatever order or spelling it came in.

        Attention resolutions are sorted high to low; a head count becomes the head width it
        implies; head settings vanish when there is no attention; `num_heads=None,
        head_channels=None` (one head) is written as the head width it means.
        """
        data = self.model_dump()
        data["attention_resolutions"] = sorted(self.attention_resolutions, reverse=True)
        attn = self.attention_channels
        data["num_heads"] = None
        if not attn:
            data["head_channels"] = None
        elif self.head_channels is None and len(set(attn)) == 1:
            data["head_channels"] = attn[0] // (self.num_heads or 1)
        elif self.head_channels is None:
            # one head over several widths: no single width, keep "one head"
            data["num_heads"] = self.num_heads or 1
        data["dropout"] = round(float(self.dropout), 6)
        return data

    def key(self) -> str:
        """Canonical JSON: equal keys <=> same architecture."""
        return json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))

    def arch_hash(self) -> str:
        """A short stable hash of the canonical form (12 hex digits)."""
        return hashlib.sha256(self.key().encode()).hexdigest()[:12]

    def to_json(self) -> str:
        return json.dumps(self.model_dump(), indent=2)

    def summary(self) -> str:
        """One line for tables and prompts."""
        attn = ",".join(str(r) for r in sorted(self.attention_resolutions, reverse=True)) or "-"
        return (
            f"ch={self.base_channels} mult=({','.join(map(str, self.channel_mult))}) "
            f"blocks={self.num_res_blocks} attn={attn}{'+mid' if self.mid_attention else ''} "
            f"head={self.head_width or '-'} drop={self.dropout:g} "
            f"ss={'y' if self.scale_shift_norm else 'n'} updown={'res' if self.resblock_updown else 'conv'}"
        )


def max_levels(image_size: int) -> int:
    """The most levels an image of this size allows (each level halves the resolution)."""
    levels = 1
    while image_size % 2**levels == 0 and image_size // 2**levels >= MIN_RESOLUTION:
        levels += 1
    return levels


def validation_message(err: ValidationError, source: str = "architecture") -> str:
    """Turn pydantic's error list into one paragraph that names field, value and rule."""
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(whole config)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            allowed = ", ".join(sorted(ArchConfig.model_fields))
            parts.append(f"unknown field '{loc}' (allowed fields: {allowed})")
        elif e["type"] == "missing":
            parts.append(f"missing field '{loc}'")
        elif loc == "(whole config)":
            parts.append(msg)
        else:
            parts.append(f"field '{loc}' = {e.get('input')!r}: {msg}")
    return f"Invalid {source}: " + "; ".join(parts) + "."


def parse_arch(data: Any, source: str = "architecture") -> ArchConfig:
    """Validate a dict into an `ArchConfig`, raising `ArchitectureError` with one readable paragraph."""
    if not isinstance(data, dict):
        raise ArchitectureError(
            f"Invalid {source}: expected a JSON object of architecture fields, got {type(data).__name__}."
        )
    try:
        return ArchConfig.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]["loc"]
        raise ArchitectureError(
            validation_message(err, source), field=str(first[0]) if first else None
        ) from None


def load_arch(path: str | Path) -> ArchConfig:
    """Read an architecture from a JSON or YAML file."""
    return parse_arch(read_arch_file(path), source=f"architecture in {Path(path).name}")


def read_arch_file(path: str | Path) -> Any:
    """The raw data of a JSON or YAML architecture file (validated by the caller): bounded in
    size and aliases, a repeated key refused (`diffnas.config_text`)."""
    import yaml

    from diffnas.config_text import (
        DocumentTooLarge,
        DuplicateKey,
        load_json,
        load_yaml,
        read_text,
    )

    path = Path(path)
    if not path.is_file():
        raise ArchitectureError(f"Architecture file {str(path)!r} does not exist.")
    try:
        text = read_text(path)
        data = load_json(text) if path.suffix == ".json" else load_yaml(text)
    except (DocumentTooLarge, DuplicateKey) as err:
        raise ArchitectureError(f"Architecture file {str(path)!r} is refused: {err}.") from None
    except UnicodeDecodeError:
        raise ArchitectureError(
            f"Architecture file {str(path)!r} is not a text file (JSON or YAML expected)."
        ) from None
    except OSError as err:
        raise ArchitectureError(
            f"Architecture file {str(path)!r} cannot be read: {err.strerror}."
        ) from None
    except (json.JSONDecodeError, yaml.YAMLError, RecursionError) as err:
        # RecursionError: a document nested deeper than the parser's stack
        raise ArchitectureError(
            f"Architecture file {str(path)!r} is not valid JSON/YAML: {err}."
        ) from None
    return data
