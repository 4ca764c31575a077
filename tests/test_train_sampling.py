"""Samplers: shapes, determinism, model-call counts and the respaced learned variance."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from diffnas.errors import UserError
from diffnas.train.diffusion import DiffusionConfig
from diffnas.train.sampling import (
    make_scheduler,
    respaced_timesteps,
    sample_images,
    save_grid,
    save_pngs,
    to_uint8,
)
from tiny_models import tiny_unet

SHORT_DDPM = DiffusionConfig(objective="ddpm", schedule="linear", timesteps=10)
SHORT_IDDPM = DiffusionConfig(objective="iddpm", schedule="cosine", timesteps=10, learn_sigma=True)


def count_calls(model: torch.nn.Module) -> list[int]:
    calls = [0]
    model.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


@pytest.mark.parametrize(
    ("diffusion", "sampler", "steps"),
    [
        (SHORT_DDPM, "ddpm", None),
        (SHORT_DDPM, "ddim", 5),
        (SHORT_DDPM, "respaced", 5),
        (SHORT_IDDPM, "respaced", 5),
        (SHORT_IDDPM, "ddim", 4),
    ],
)
def test_samplers_return_deterministic_uint8_images(diffusion, sampler, steps):
    model = tiny_unet(3, diffusion.out_channels(3))
    kwargs = dict(sampler=sampler, steps=steps, batch_size=2)
    images = sample_images(model, diffusion, 3, seed=7, **kwargs)
    assert images.shape == (3, 3, 8, 8) and images.dtype == torch.uint8
    assert torch.equal(images, sample_images(model, diffusion, 3, seed=7, **kwargs))
    assert not torch.equal(images, sample_images(model, diffusion, 3, seed=8, **kwargs))
    assert model.training  # mode restored


@pytest.mark.parametrize(
    ("sampler", "steps", "calls"), [("ddim", 4, 4), ("respaced", 6, 6), ("ddpm", None, 10)]
)
def test_sampler_calls_the_model_once_per_step_per_batch(sampler, steps, calls):
    model = tiny_unet(1, 2)
    counter = count_calls(model)
    sample_images(model, SHORT_IDDPM, 3, sampler=sampler, steps=steps, seed=0, batch_size=2)
    assert counter[0] == 2 * calls  # two batches (2 + 1 images)


def test_respaced_timesteps_follow_iddpm_space_timesteps():
    kept = respaced_timesteps(1000, 50)
    assert len(kept) == 50 and kept[0] == 999 and kept[-1] == 0
    assert kept == sorted(kept, reverse=True)
    assert respaced_timesteps(1000, 1000) == list(range(999, -1, -1))
    assert respaced_timesteps(10, 1) == [9]


def iddpm_spaced_betas(diffusion: DiffusionConfig, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """β and β̃ of IDDPM's SpacedDiffusion at the kept steps (ascending t)."""
    alphas_cumprod = np.cumprod(1.0 - diffusion.betas())
    betas, last = [], 1.0
    for t in sorted(respaced_timesteps(diffusion.timesteps, steps)):
        betas.append(1.0 - alphas_cumprod[t] / last)
        last = alphas_cumprod[t]
    betas = np.array(betas)
    ac = np.cumprod(1.0 - betas)
    ac_prev = np.append(1.0, ac[:-1])
    return betas, betas * (1.0 - ac_prev) / (1.0 - ac)


def test_respaced_learned_range_matches_iddpm_spaced_diffusion():
    diffusion = DiffusionConfig.iddpm()
    scheduler = make_scheduler(diffusion, "respaced", 25)
    betas, posterior = iddpm_spaced_betas(diffusion, 25)
    timesteps = scheduler.timesteps.tolist()
    assert timesteps == respaced_timesteps(1000, 25)
    # Skip the last step (t = 0): no noise is added there, and IDDPM clips that log-variance.
    for i, t in enumerate(timesteps[:-1]):
        j = len(timesteps) - 1 - i
        for v, expected in [
            (-1.0, posterior[j]),
            (1.0, betas[j]),
            (0.0, np.sqrt(posterior[j] * betas[j])),
        ]:
            log_var = scheduler._get_variance(
                t, predicted_variance=torch.tensor(v, dtype=torch.float64)
            )
            assert float(log_var) == pytest.approx(np.log(expected), rel=1e-4, abs=1e-4)


def test_bad_arguments_raise_user_errors():
    model = tiny_unet(3, 3)
    with pytest.raises(UserError, match="sampler"):
        sample_images(model, SHORT_DDPM, 1, sampler="euler", steps=5)
    with pytest.raises(UserError, match="steps"):
        sample_images(model, SHORT_DDPM, 1, sampler="ddim", steps=None)
    with pytest.raises(UserError, match="steps"):
        sample_images(model, SHORT_DDPM, 1, sampler="ddpm", steps=5)
    with pytest.raises(UserError, match="out_channels"):
        sample_images(model, SHORT_IDDPM, 1, sampler="ddim", steps=2)


def test_to_uint8_and_png_helpers(tmp_path):
    x = torch.tensor([-1.0, -0.999, 0.0, 1.0, 2.0]).view(1, 1, 1, 5)
    assert to_uint8(x).flatten().tolist() == [0, 0, 128, 255, 255]
    images = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8)
    paths = save_pngs(images, tmp_path / "pngs")
    assert len(paths) == 5
    np.testing.assert_array_equal(
        np.array(Image.open(paths[2])), images[2].permute(1, 2, 0).numpy()
    )
    grid = save_grid(images, tmp_path / "grid.png")
    assert Image.open(grid).size == (3 * 8 + 4 * 2, 2 * 8 + 3 * 2)
