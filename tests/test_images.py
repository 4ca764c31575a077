"""Generated samples are quantised exactly like saved PNGs, so PNG and memory score the same."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torchvision.utils import save_image

from diffnas.evaluate.classifier import ClassifierExtractor, SmallCNN
from diffnas.images import to_uint8


def test_to_uint8_maps_the_unit_interval_to_pixels() -> None:
    x = torch.tensor([-1.5, -1.0, -0.999, 0.0, 1.0, 2.0])
    # 0.0 → 127.5 + 0.5 → 128; out-of-range values clamp
    assert to_uint8(x).tolist() == [0, 0, 0, 128, 255, 255]


def _float_samples() -> torch.Tensor:
    """Floats in [-1, 1] and beyond, hitting every pixel value and the midpoints between them
    (where rounding half to even and saving a PNG disagree)."""
    k = torch.arange(255, dtype=torch.float64)
    midpoints = ((2 * k + 1) / 255 - 1).float()  # (x + 1) / 2 · 255 = k + 0.5
    spread = torch.linspace(-1.1, 1.1, 3 * 32 * 32 - len(midpoints))
    values = torch.cat([midpoints, spread])
    shuffled = values[torch.randperm(len(values), generator=torch.Generator().manual_seed(0))]
    return shuffled.view(1, 3, 32, 32)


def test_saved_png_and_memory_give_identical_pixels_and_features(tmp_path) -> None:
    x = _float_samples()
    path = tmp_path / "sample.png"
    save_image((x[0] + 1) / 2, path)  # how a float sample in [-1, 1] is written as PNG
    from_png = torch.from_numpy(np.array(Image.open(path))).permute(2, 0, 1).unsqueeze(0)
    in_memory = to_uint8(x)
    assert in_memory.dtype == torch.uint8
    assert torch.equal(from_png, in_memory)
    # a round-half-to-even quantisation would disagree with the PNG somewhere on this grid
    half_even = ((x + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    assert not torch.equal(half_even, from_png)

    torch.manual_seed(0)
    model = SmallCNN(in_channels=3, num_classes=10, widths=(8, 16), feature_dim=16)
    extractor = ClassifierExtractor(
        model, {"arch": "test", "channels": 3, "resolution": 32}, weights_sha256="none"
    )
    np.testing.assert_array_equal(extractor(from_png), extractor(in_memory))
