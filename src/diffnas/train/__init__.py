"""Training and sampling: diffusion objectives (DDPM, IDDPM), samplers, recipes, the trainer."""

from __future__ import annotations

from diffnas.train.checkpoint import load_checkpoint, restore_ema
from diffnas.train.diffusion import DiffusionConfig, GaussianDiffusion
from diffnas.train.recipe import TrainRecipe
from diffnas.train.sampling import sample_images, save_grid, save_pngs
from diffnas.train.trainer import TrainResult, train

__all__ = [
    "DiffusionConfig",
    "GaussianDiffusion",
    "TrainRecipe",
    "TrainResult",
    "load_checkpoint",
    "restore_ema",
    "sample_images",
    "save_grid",
    "save_pngs",
    "train",
]
