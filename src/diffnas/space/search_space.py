"""`SearchSpace`: the allowed values of every architecture dimension, and the compute budget.

Loaded from YAML (presets in `presets/`, or a user file). It answers: is this architecture
in the space (and if not, which field and what is allowed)? It samples uniformly, mutates
one dimension (for evolution baselines), describes itself in words for an LLM prompt and
exports the JSON schema that constrains an LLM's structured output.
"""

from __future__ import annotations

import itertools
import json
import math
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from diffnas.errors import ArchitectureError, UserError, pydantic_message
from diffnas.space.arch import (
    MAX_BASE_CHANNELS,
    MAX_HEAD_CHANNELS,
    MAX_IMAGE_SIZE,
    MAX_IN_CHANNELS,
    MAX_LEVELS,
    MAX_NORM_GROUPS,
    MAX_RES_BLOCKS,
    ArchConfig,
    Multiplier,
    Resolution,
    parse_arch,
)

PRESET_DIR = Path(__file__).parent / "presets"

# The dimensions an LLM (or any proposer) chooses; the rest are fixed by the space.
SEARCHED_FIELDS = (
    "base_channels",
    "channel_mult",
    "num_res_blocks",
    "attention_resolutions",
    "mid_attention",
    "head_channels",
    "dropout",
    "scale_shift_norm",
    "resblock_updown",
    "norm_groups",
)
FIXED_FIELDS = ("image_size", "in_channels", "learn_sigma")

# One choice of a dimension, inside `ArchConfig`'s bounds for that field.
BaseChannels = Annotated[int, Field(ge=1, le=MAX_BASE_CHANNELS)]
Levels = Annotated[int, Field(ge=1, le=MAX_LEVELS)]
ResBlocks = Annotated[int, Field(ge=1, le=MAX_RES_BLOCKS)]
HeadChannels = Annotated[int, Field(ge=1, le=MAX_HEAD_CHANNELS)]
NormGroups = Annotated[int, Field(ge=1, le=MAX_NORM_GROUPS)]
Dropout = Annotated[float, Field(ge=0.0, lt=1.0)]


class Budget(BaseModel):
    """Compute budget per image and forward pass at the space's resolution (MACs; FLOPs = 2 x MACs)."""

    model_config = ConfigDict(extra="forbid")

    max_gmacs: float = Field(..., gt=0, description="upper bound, GMACs (1e9 multiply-accumulates)")
    min_gmacs: float = Field(
        0.0, ge=0, description="lower bound, GMACs; keeps the search off trivially small nets"
    )
    max_params_m: float | None = Field(
        None, gt=0, description="optional bound on parameters, millions"
    )

    @model_validator(mode="after")
    def _ordered(self) -> Budget:
        if self.min_gmacs >= self.max_gmacs:
            raise ValueError(f"min_gmacs {self.min_gmacs} must be below max_gmacs {self.max_gmacs}")
        return self


class SearchSpace(BaseModel):
    """Allowed values per dimension; every list is a set of choices.

    Every list needs at least one choice (an empty one leaves nothing to sample or propose),
    and every choice lies inside `ArchConfig`'s bounds for its field.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., description="preset or file name, shown in prompts and reports")
    description: str = Field("", description="one line on what the space is for")
    image_size: int = Field(..., ge=4, le=MAX_IMAGE_SIZE, description="training resolution, pixels")
    in_channels: int = Field(3, ge=1, le=MAX_IN_CHANNELS, description="image channels")
    objective: Literal["ddpm", "iddpm"] = Field(
        "ddpm", description="ddpm: eps-prediction, 1x channels out; iddpm: learned variance, 2x out"
    )
    reference: str | None = Field(
        None, description="reference architecture preset shown to the LLM"
    )
    base_channels: list[BaseChannels] = Field(..., min_length=1)
    num_levels: list[Levels] = Field(
        ..., min_length=1, description="allowed lengths of channel_mult"
    )
    channel_mult_values: list[Multiplier] = Field(
        ..., min_length=1, description="allowed per-level multipliers"
    )
    mult_non_decreasing: bool = Field(True, description="multipliers may not shrink with depth")
    num_res_blocks: list[ResBlocks] = Field(..., min_length=1)
    attention_resolutions: list[Resolution] = Field(
        default_factory=list, description="resolutions where attention MAY be placed (any subset)"
    )
    mid_attention: list[bool] = Field(default_factory=lambda: [True], min_length=1)
    head_channels: list[HeadChannels] = Field(
        ..., min_length=1, description="allowed channels per head"
    )
    dropout: list[Dropout] = Field(default_factory=lambda: [0.0], min_length=1)
    scale_shift_norm: list[bool] = Field(default_factory=lambda: [False], min_length=1)
    resblock_updown: list[bool] = Field(default_factory=lambda: [False], min_length=1)
    norm_groups: list[NormGroups] = Field(default_factory=lambda: [32], min_length=1)
    budget: Budget

    @property
    def learn_sigma(self) -> bool:
        return self.objective == "iddpm"

    # --- membership ---
    def complete(self, proposal: dict[str, Any], source: str = "architecture") -> ArchConfig:
        """Fill in the fixed fields of a proposal, validate it, and check it is in the space."""
        if not isinstance(proposal, dict):
            raise ArchitectureError(
                f"Invalid {source}: expected a JSON object, got {type(proposal).__name__}."
            )
        data = dict(proposal)
        for name in FIXED_FIELDS:
            fixed = getattr(self, name)
            if name in data and data[name] != fixed:
                raise ArchitectureError(
                    f"Invalid {source}: field '{name}' = {data[name]!r} is fixed to {fixed!r} by space {self.name!r}.",
                    field=name,
                )
            data[name] = fixed
        arch = parse_arch(data, source)
        self.check(arch, source)
        return arch

    def check(self, arch: ArchConfig, source: str = "architecture") -> None:
        """Raise `ArchitectureError` naming the first field outside the space and what is allowed."""
        problem = self.violation(arch)
        if problem:
            field, message = problem
            raise ArchitectureError(
                f"{source[0].upper()}{source[1:]} is outside space {self.name!r}: {message}.",
                field=field,
            )

    def contains(self, arch: ArchConfig) -> bool:
        return self.violation(arch) is None

    def violation(self, arch: ArchConfig) -> tuple[str, str] | None:
        """(field, sentence) for the first dimension outside the space, or None."""

        def outside(field: str, value: Any, allowed: Any) -> tuple[str, str]:
            return field, f"field '{field}' = {value!r}, allowed: {allowed}"

        for name in FIXED_FIELDS:
            if getattr(arch, name) != getattr(self, name):
                return outside(name, getattr(arch, name), getattr(self, name))
        if arch.base_channels not in self.base_channels:
            return outside("base_channels", arch.base_channels, self.base_channels)
        if arch.num_levels not in self.num_levels:
            return outside("channel_mult", arch.channel_mult, f"{self.num_levels} levels")
        bad = [m for m in arch.channel_mult if m not in self.channel_mult_values]
        if bad:
            return outside(
                "channel_mult",
                arch.channel_mult,
                f"multipliers from {_j(self.channel_mult_values)}",
            )
        if self.mult_non_decreasing and arch.channel_mult != sorted(arch.channel_mult):
            return outside("channel_mult", arch.channel_mult, "non-decreasing multipliers")
        if arch.num_res_blocks not in self.num_res_blocks:
            return outside("num_res_blocks", arch.num_res_blocks, self.num_res_blocks)
        bad = [r for r in arch.attention_resolutions if r not in self.attention_resolutions]
        if bad:
            return outside(
                "attention_resolutions",
                arch.attention_resolutions,
                f"any subset of {_j(self.attention_resolutions)}",
            )
        if arch.mid_attention not in self.mid_attention:
            return outside("mid_attention", arch.mid_attention, self.mid_attention)
        if arch.head_width is not None and arch.head_width not in self.head_channels:
            return outside("head_channels", arch.head_width, self.head_channels)
        if arch.attention_channels and arch.head_width is None:
            return outside("head_channels", None, self.head_channels)
        if not any(abs(arch.dropout - d) < 1e-9 for d in self.dropout):
            return outside("dropout", arch.dropout, self.dropout)
        if arch.scale_shift_norm not in self.scale_shift_norm:
            return outside("scale_shift_norm", arch.scale_shift_norm, self.scale_shift_norm)
        if arch.resblock_updown not in self.resblock_updown:
            return outside("resblock_updown", arch.resblock_updown, self.resblock_updown)
        if arch.norm_groups not in self.norm_groups:
            return outside("norm_groups", arch.norm_groups, self.norm_groups)
        return None

    # --- enumeration ---
    def _mults(self, levels: int) -> list[tuple[int, ...]]:
        """Every allowed channel_mult of `levels` levels, in a fixed order."""
        values = sorted(set(self.channel_mult_values))
        if self.mult_non_decreasing:
            return list(itertools.combinations_with_replacement(values, levels))
        return list(itertools.product(values, repeat=levels))

    def _attention_subsets(self, levels: int) -> list[list[int]]:
        """Every attention placement a net of `levels` levels can take (the empty one first)."""
        reachable = sorted(
            {r for r in self.attention_resolutions if r in _resolutions(self.image_size, levels)},
            reverse=True,
        )
        return [
            list(chosen)
            for size in range(len(reachable) + 1)
            for chosen in itertools.combinations(reachable, size)
        ]

    _OTHER_DIMENSIONS = (
        "base_channels", "num_res_blocks", "mid_attention", "head_channels", "dropout",
        "scale_shift_norm", "resblock_updown", "norm_groups",
    )  # fmt: skip

    def combinations(self) -> int:
        """How many choice combinations `enumerate` walks through (before structural checks and
        before duplicates, e.g. head widths of a net without attention, are removed): the
        closed form, so a space too large to enumerate is refused without walking it."""
        others = math.prod(len(set(getattr(self, f))) for f in self._OTHER_DIMENSIONS)
        shapes = sum(
            len(self._mults(levels)) * 2 ** len(self._attention_subsets(levels)[-1])
            for levels in sorted(set(self.num_levels))
        )
        return shapes * others

    def enumerate(self) -> Iterator[ArchConfig]:
        """Every distinct valid architecture of the space, in a fixed order (the budget is not
        checked here: that needs the model's cost)."""
        seen: set[str] = set()
        for levels in sorted(set(self.num_levels)):
            for mult, attention in itertools.product(
                self._mults(levels), self._attention_subsets(levels)
            ):
                for values in itertools.product(
                    *(_unique(getattr(self, f)) for f in self._OTHER_DIMENSIONS)
                ):
                    proposal = dict(zip(self._OTHER_DIMENSIONS, values))
                    proposal.update(channel_mult=list(mult), attention_resolutions=attention)
                    try:
                        arch = self.complete(proposal)
                    except ArchitectureError:
                        continue  # e.g. channels that do not divide by the head width
                    if arch.key() not in seen:
                        seen.add(arch.key())
                        yield arch

    # --- sampling and mutation ---
    def sample(self, rng: random.Random, max_tries: int = 10_000) -> ArchConfig:
        """Draw each dimension uniformly from its choices; redraw structurally invalid combinations."""
        for _ in range(max_tries):
            levels = rng.choice(self.num_levels)
            mult = [rng.choice(self.channel_mult_values) for _ in range(levels)]
            if self.mult_non_decreasing:
                mult.sort()
            reachable = [
                r for r in self.attention_resolutions if r in _resolutions(self.image_size, levels)
            ]
            proposal = {
                "base_channels": rng.choice(self.base_channels),
                "channel_mult": mult,
                "num_res_blocks": rng.choice(self.num_res_blocks),
                "attention_resolutions": [r for r in reachable if rng.random() < 0.5],
                "mid_attention": rng.choice(self.mid_attention),
                "head_channels": rng.choice(self.head_channels),
                "dropout": rng.choice(self.dropout),
                "scale_shift_norm": rng.choice(self.scale_shift_norm),
                "resblock_updown": rng.choice(self.resblock_updown),
                "norm_groups": rng.choice(self.norm_groups),
            }
            try:
                return self.complete(proposal)
            except ArchitectureError:
                continue
        raise UserError(
            f"Space {self.name!r}: found no valid architecture in {max_tries} draws; check its choices."
        )

    def mutate(self, arch: ArchConfig, rng: random.Random, max_tries: int = 1_000) -> ArchConfig:
        """Change one dimension to another allowed value; the result is valid, in the space and different."""
        base = self.proposal_of(arch)
        for _ in range(max_tries):
            proposal = dict(base)
            field = rng.choice(SEARCHED_FIELDS)
            if field == "channel_mult":
                proposal["channel_mult"] = self._mutate_mult(list(arch.channel_mult), rng)
            elif field == "attention_resolutions":
                if not self.attention_resolutions:
                    continue
                toggled = rng.choice(self.attention_resolutions)
                current = set(arch.attention_resolutions)
                current ^= {toggled}
                proposal["attention_resolutions"] = sorted(current, reverse=True)
            else:
                choices = [c for c in getattr(self, field) if c != base[field]]
                if not choices:
                    continue
                proposal[field] = rng.choice(choices)
            try:
                child = self.complete(proposal)
            except ArchitectureError:
                continue
            if child.key() != arch.key():
                return child
        raise UserError(
            f"Space {self.name!r}: could not mutate {arch.summary()} in {max_tries} tries."
        )

    def _mutate_mult(self, mult: list[int], rng: random.Random) -> list[int]:
        move = rng.choice(["change", "add", "remove"])
        if move == "add" and len(mult) + 1 in self.num_levels:
            mult.append(rng.choice(self.channel_mult_values))
        elif move == "remove" and len(mult) - 1 in self.num_levels:
            mult.pop(rng.randrange(len(mult)))
        else:
            mult[rng.randrange(len(mult))] = rng.choice(self.channel_mult_values)
        return sorted(mult) if self.mult_non_decreasing else mult

    def proposal_of(self, arch: ArchConfig) -> dict[str, Any]:
        """The searched fields of an architecture, in the form a proposer writes them."""
        canon = arch.canonical()
        proposal = {name: canon[name] for name in SEARCHED_FIELDS}
        if proposal["head_channels"] is None:
            proposal["head_channels"] = self.head_channels[0]  # no attention: the width is moot
        return proposal

    # --- describing ---
    def describe(self) -> str:
        """The space in words, for a prompt or `diffnas space show`."""
        b = self.budget
        lines = [
            f"Search space {self.name!r}: {self.description}".rstrip(": "),
            f"- images: {self.image_size}x{self.image_size}, {self.in_channels} channel(s); objective {self.objective}"
            + (
                " (learned variance: the net outputs twice the image channels)"
                if self.learn_sigma
                else " (epsilon prediction)"
            ),
            f"- base_channels: one of {_j(self.base_channels)}",
            f"- channel_mult: a list of {_or(self.num_levels)} multipliers (one per level, each level halves the "
            f"resolution), each one of {_j(self.channel_mult_values)}"
            + (", non-decreasing" if self.mult_non_decreasing else ""),
            f"- num_res_blocks: residual blocks per level, one of {_j(self.num_res_blocks)}",
            f"- attention_resolutions: any subset of {_j(self.attention_resolutions)} (only resolutions the net reaches: "
            f"level i is at {self.image_size}/2^i pixels)",
            f"- mid_attention: one of {_j(self.mid_attention)}",
            f"- head_channels: channels per attention head, one of {_j(self.head_channels)}; every attention width must divide by it",
            f"- dropout: one of {_j(self.dropout)}",
            f"- scale_shift_norm: one of {_j(self.scale_shift_norm)} (adaptive group norm)",
            f"- resblock_updown: one of {_j(self.resblock_updown)} (resample with residual blocks)",
            f"- norm_groups: one of {_j(self.norm_groups)}; every level's channels must divide by it",
            f"- budget: {b.min_gmacs:g} to {b.max_gmacs:g} GMACs per image per forward pass at "
            f"{self.image_size}x{self.image_size}"
            + (f", at most {b.max_params_m:g} M parameters" if b.max_params_m else ""),
        ]
        return "\n".join(lines)

    def arch_json_schema(self) -> dict[str, Any]:
        """JSON schema of one proposal (the searched fields), for structured LLM output."""

        def enum(values: list[Any], kind: str) -> dict[str, Any]:
            return {"type": kind, "enum": list(values)}

        return {
            "type": "object",
            "properties": {
                "base_channels": enum(self.base_channels, "integer"),
                "channel_mult": {
                    "type": "array",
                    "items": enum(self.channel_mult_values, "integer"),
                    "minItems": min(self.num_levels),
                    "maxItems": max(self.num_levels),
                },
                "num_res_blocks": enum(self.num_res_blocks, "integer"),
                "attention_resolutions": {
                    "type": "array",
                    "items": enum(self.attention_resolutions, "integer")
                    if self.attention_resolutions
                    else {"type": "integer"},
                    "maxItems": len(self.attention_resolutions),
                    "uniqueItems": True,
                },
                "mid_attention": enum(self.mid_attention, "boolean"),
                "head_channels": enum(self.head_channels, "integer"),
                "dropout": enum(self.dropout, "number"),
                "scale_shift_norm": enum(self.scale_shift_norm, "boolean"),
                "resblock_updown": enum(self.resblock_updown, "boolean"),
                "norm_groups": enum(self.norm_groups, "integer"),
            },
            "required": list(SEARCHED_FIELDS),
            "additionalProperties": False,
        }


def _resolutions(image_size: int, levels: int) -> list[int]:
    return [image_size // 2**i for i in range(levels)]


def _unique(values: list[Any]) -> list[Any]:
    """The choices without repeats, in their given order."""
    return list(dict.fromkeys(values))


def _j(values: list[Any]) -> str:
    """JSON spelling (true/false, not True/False): the form the LLM must answer in."""
    return json.dumps(values)


def _or(values: list[int]) -> str:
    values = sorted(values)
    return " or ".join(str(v) for v in values)


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_space(name_or_path: str | Path) -> SearchSpace:
    """A preset name (`tiny`, `cifar10-iddpm`, ...) or a YAML file."""
    path = Path(name_or_path)
    if not path.suffix and (PRESET_DIR / f"{name_or_path}.yaml").is_file():
        path = PRESET_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise UserError(
            f"Search space {str(name_or_path)!r} is neither a preset ({', '.join(list_presets())}) nor a YAML file.",
            field="space",
        )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError(
            f"Search space file {str(path)!r} is not a text file (YAML expected).", field="space"
        ) from None
    except (yaml.YAMLError, RecursionError) as err:
        raise UserError(
            f"Search space file {str(path)!r} is not valid YAML: {err}.", field="space"
        ) from None
    if not isinstance(data, dict):
        raise UserError(
            f"Search space file {str(path)!r} must hold a mapping of fields.", field="space"
        )
    data.setdefault("name", path.stem)
    try:
        return SearchSpace.model_validate(data)
    except ValidationError as err:
        raise UserError(
            pydantic_message(err, f"search space {str(path)!r}"), field="space"
        ) from None
