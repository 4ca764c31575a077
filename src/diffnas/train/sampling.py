"""Image samplers for a trained denoiser: ancestral DDPM, DDIM and IDDPM's respaced sampling.

All three run diffusers schedulers and follow openai/improved-diffusion step for step (checked
against numbers produced by its own code in tests/test_train_sampling.py):

- "ddpm" and "respaced" use `DDPMScheduler`; "respaced" keeps IDDPM's evenly spaced timesteps
  (`space_timesteps(T, "k")`, both t = T−1 and t = 0 visited) and the scheduler re-derives β
  from ᾱ at the kept steps, as IDDPM's `SpacedDiffusion` does. The variance is the learned
  range between the respaced β̃ and β when σ is learned, else `DiffusionConfig.ddpm_variance`
  (fixed-large β_t by default, as in Ho et al. and IDDPM). No noise is added at t = 0, so
  IDDPM's special t = 0 fixed-large value (β̃_1, which only enters its likelihood) never matters.
- "ddim" uses `DDIMScheduler` (η = 0) on the timesteps 0, k, 2k, … with k = ⌊T/S⌋: IDDPM's
  "ddimS" when S divides T (otherwise IDDPM picks the stride whose range has S elements).
  x0 is clipped to [-1, 1] and ε re-derived from the clipped x0 (`use_clipped_model_output`),
  as IDDPM's `ddim_sample` does; keeping the raw ε instead moves an undertrained model's
  samples by whole units.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Literal

import torch
from diffusers import DDIMScheduler, DDPMScheduler
from torchvision.utils import make_grid, save_image

from diffnas.errors import UserError
from diffnas.images import to_uint8
from diffnas.progress import task as progress_task
from diffnas.train.diffusion import DiffusionConfig

Sampler = Literal["ddpm", "ddim", "respaced"]
SAMPLERS: tuple[str, ...] = ("ddpm", "ddim", "respaced")


def respaced_timesteps(num_timesteps: int, steps: int) -> list[int]:
    """IDDPM's evenly spaced timesteps (descending), always including T−1 and 0.

    The index is accumulated in floats and rounded as in IDDPM's `space_timesteps`, so the
    same steps are kept even where i·stride would round the other way. One step keeps T−1
    (IDDPM would keep 0, which samples nothing).
    """
    if steps == 1:
        return [num_timesteps - 1]
    stride, index, kept = (num_timesteps - 1) / (steps - 1), 0.0, set()
    for _ in range(steps):
        kept.add(round(index))
        index += stride
    return sorted(kept, reverse=True)


def make_scheduler(
    diffusion: DiffusionConfig, sampler: Sampler, steps: int | None
) -> DDPMScheduler | DDIMScheduler:
    """A diffusers scheduler for `sampler` with its timesteps set."""
    if sampler not in SAMPLERS:
        raise UserError(
            f"sampler={sampler!r} is not allowed; use one of {SAMPLERS}", field="sampler"
        )
    T = diffusion.timesteps
    if sampler == "ddpm":
        if steps not in (None, T):
            raise UserError(
                f"steps={steps} is not allowed for the 'ddpm' sampler: it runs all {T} steps "
                "(use 'respaced' or 'ddim' for fewer)",
                field="steps",
            )
        steps = T
    elif steps is None or not 1 <= steps <= T:
        raise UserError(
            f"steps={steps} is not allowed for the {sampler!r} sampler: give 1 ≤ steps ≤ {T}",
            field="steps",
        )
    variance = "learned_range" if diffusion.learn_sigma else diffusion.ddpm_variance
    if sampler == "ddim":
        scheduler = DDIMScheduler(**diffusion.scheduler_kwargs(), clip_sample=True)
        scheduler.set_timesteps(steps)
        return scheduler
    scheduler = DDPMScheduler(
        **diffusion.scheduler_kwargs(), variance_type=variance, clip_sample=True
    )
    if steps < T:  # at steps == T the scheduler's own t = T−1 … 0 with prev_t = t − 1 is right
        scheduler.set_timesteps(timesteps=respaced_timesteps(T, steps))
    return scheduler


def denoise_step(
    scheduler: DDPMScheduler | DDIMScheduler,
    model_output: torch.Tensor,
    t: torch.Tensor | int,
    x: torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One reverse step x_t → x_{t−1} from the model's output (ε, plus v when σ is learned).

    DDIM re-derives ε from the clipped x0 (IDDPM's `ddim_sample`); DDPM steps need nothing extra:
    diffusers already takes their posterior mean from the clipped x0, as IDDPM does.
    """
    if isinstance(scheduler, DDIMScheduler):
        channels = x.shape[1]
        return scheduler.step(
            model_output[:, :channels], t, x, use_clipped_model_output=True, generator=generator
        ).prev_sample  # DDIM uses ε only; a learned variance's channels are dropped
    return scheduler.step(model_output, t, x, generator=generator).prev_sample


def sampler_dtype(device: torch.device | str) -> Literal["bf16", "fp32"]:
    """The precision of the sampler's forward passes on `device` (what `diffnas cost --latency`
    measures by default): bf16 autocast on CUDA only; CPU bf16 is slower on most hosts and
    changes the numbers."""
    return "bf16" if torch.device(device).type == "cuda" else "fp32"


def _autocast(device: torch.device) -> contextlib.AbstractContextManager:
    if sampler_dtype(device) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.inference_mode()
def sample_images(
    model: torch.nn.Module,
    diffusion: DiffusionConfig,
    n: int,
    *,
    sampler: Sampler = "ddim",
    steps: int | None = 50,
    seed: int = 0,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Draw `n` images from `model` (a diffusers `UNet2DModel`); returns uint8 N×C×H×W.

    Deterministic for a seed (given the same device, batch size and model). The model is put in
    eval mode for sampling and restored afterwards.
    """
    if n < 0:
        raise UserError(f"n={n} is not allowed: give n ≥ 0", field="n")
    if batch_size < 1:
        raise UserError(f"batch_size={batch_size} is not allowed: give ≥ 1", field="batch_size")
    device = torch.device(device)
    scheduler = make_scheduler(diffusion, sampler, steps)
    channels, size = model.config.in_channels, model.config.sample_size
    size = (size, size) if isinstance(size, int) else tuple(size)
    expected = diffusion.out_channels(channels)
    if model.config.out_channels != expected:
        raise UserError(
            f"model out_channels={model.config.out_channels} does not fit the diffusion config "
            f"(learn_sigma={diffusion.learn_sigma} needs {expected})",
            field="out_channels",
        )
    generator = torch.Generator(device=device).manual_seed(seed)
    was_training = model.training
    model.eval()
    out = []
    batches = math.ceil(n / batch_size)
    try:
        with progress_task(f"sampling {n} images", total=batches * len(scheduler.timesteps)) as bar:
            for start in range(0, n, batch_size):
                b = min(batch_size, n - start)
                x = torch.randn((b, channels, *size), generator=generator, device=device)
                for t in scheduler.timesteps:
                    t_batch = torch.full((b,), int(t), device=device, dtype=torch.long)
                    with _autocast(device):
                        output = model(x, t_batch).sample
                    x = denoise_step(scheduler, output.float(), t, x, generator)
                    bar.update(advance=1)
                out.append(to_uint8(x).cpu())
    finally:
        model.train(was_training)
    if not out:
        return torch.empty((0, channels, *size), dtype=torch.uint8)
    return torch.cat(out)


def save_pngs(images: torch.Tensor, folder: str | Path, prefix: str = "") -> list[Path]:
    """Write each uint8 C×H×W image as `folder/{prefix}{i:06d}.png`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(images):
        path = folder / f"{prefix}{i:06d}.png"
        save_image(image.float() / 255.0, path)
        paths.append(path)
    return paths


def save_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None) -> Path:
    """Write uint8 images as one PNG grid (square by default)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nrow = nrow or max(1, math.ceil(math.sqrt(len(images))))
    grid = make_grid(images.float() / 255.0, nrow=nrow, padding=2)
    save_image(grid, path)
    return path
