"""The options of a training run (its options.json) and `--set key=value` recipe overrides."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from diffnas.data.datasets import DataSpec
from diffnas.errors import UserError
from diffnas.space.arch import ArchConfig
from diffnas.train.checkpoint import checkpoint_metadata
from diffnas.train.diffusion import DiffusionConfig, Objective
from diffnas.train.recipe import TrainRecipe


class TrainOptions(BaseModel):
    """Everything a training run depends on; written as the run folder's options.json."""

    model_config = ConfigDict(extra="forbid")

    arch_name: str = Field(description="preset name or architecture file name (for labels)")
    arch: ArchConfig = Field(description="the resolved architecture")
    objective: Objective = Field(description="ddpm (L_simple) or iddpm (cosine schedule, L_hybrid)")
    recipe_preset: Literal["proxy", "full"] = Field(description="recipe the overrides apply to")
    recipe: TrainRecipe = Field(description="the resolved training recipe")
    diffusion: DiffusionConfig = Field(description="the resolved diffusion config")
    data: DataSpec = Field(description="the training images")
    seed: int = Field(description="seed of initialisation, data order and noise")
    device: str = Field(description="auto | cpu | cuda[:N] as asked")

    def metadata(self) -> dict[str, Any]:
        """What ema.pt must carry for sample/score to rebuild the model and find the data."""
        return checkpoint_metadata(
            self.arch, self.objective, self.data,
            arch_name=self.arch_name, recipe_preset=self.recipe_preset,
        )  # fmt: skip


def parse_sets(items: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """`--set key=value` items → (recipe overrides, diffusion overrides); values parsed as JSON."""
    recipe_keys, diffusion_keys = set(TrainRecipe.model_fields), set(DiffusionConfig.model_fields)
    allowed = ", ".join(sorted(recipe_keys) + [f"diffusion.{k}" for k in sorted(diffusion_keys)])
    recipe, diffusion = {}, {}
    for item in items:
        key, eq, text = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise UserError(f"--set {item!r}: expected key=value (keys: {allowed})", field="set")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text  # a bare word such as a name or "cosine"
        if key in recipe_keys:
            recipe[key] = value
        elif key.startswith("diffusion.") and key.removeprefix("diffusion.") in diffusion_keys:
            diffusion[key.removeprefix("diffusion.")] = value
        else:
            raise UserError(f"--set: unknown key {key!r}; allowed keys: {allowed}", field=key)
    return recipe, diffusion
