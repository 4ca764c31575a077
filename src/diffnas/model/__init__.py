"""From an `ArchConfig` to a diffusers `UNet2DModel`, and what one forward pass costs."""

from __future__ import annotations

from diffnas.model.builder import build_unet, unet_kwargs
from diffnas.model.cost import Cost, budget_verdict, measure_cost

__all__ = ["Cost", "budget_verdict", "build_unet", "measure_cost", "unet_kwargs"]
