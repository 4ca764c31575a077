"""The space of denoiser architectures: one candidate (`ArchConfig`) and the set to search (`SearchSpace`)."""

from __future__ import annotations

from diffnas.space.arch import ArchConfig, load_arch
from diffnas.space.references import REFERENCE_ARCHS, get_reference
from diffnas.space.search_space import Budget, SearchSpace, load_space

__all__ = [
    "REFERENCE_ARCHS",
    "ArchConfig",
    "Budget",
    "SearchSpace",
    "get_reference",
    "load_arch",
    "load_space",
]
