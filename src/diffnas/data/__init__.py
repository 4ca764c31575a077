"""Image datasets as tensors in [-1, 1]."""

from __future__ import annotations

from diffnas.data.datasets import DataSpec, ImageData, load_images, parse_data

__all__ = ["DataSpec", "ImageData", "load_images", "parse_data"]
