"""Training throughput: our trainer's step against a plain diffusers training loop.

The plain loop is the one in diffusers' `examples/unconditional_image_generation/
train_unconditional.py`: eager fp32, `torch.optim.AdamW` with default settings, `DDPMScheduler.add_noise`,
MSE on ε, gradient clipping, an `EMAModel` step and `loss.item()` for logging every step.
Ours is `diffnas.train.trainer.TrainStep` with the proxy recipe's settings that apply on the
device. Both train the same UNet on the same batch size and data; variants run interleaved in
rounds so that load on a shared machine hits all of them alike.

    python benchmarks/bench_train.py                 # CPU, ~2 minutes
    python benchmarks/bench_train.py --device cuda   # adds fp32/TF32/bf16+CL/compile and DDIM-50
    python benchmarks/bench_train.py --device cuda --arch ddpm-cifar10 --batch 128   # the anchors' setting
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.training_utils import EMAModel

from diffnas.model.builder import build_unet
from diffnas.space.references import get_reference
from diffnas.train.diffusion import DiffusionConfig
from diffnas.train.recipe import TrainRecipe
from diffnas.train.sampling import sample_images
from diffnas.train.trainer import TrainStep

ARCH: str | None = None  # --arch: a reference preset instead of the small default UNet


def make_unet(size: int, seed: int = 0) -> UNet2DModel:
    """A ~2.6M-parameter UNet: 3 levels (32, 64, 128), attention at 16×16 (for size 32);
    with --arch, a reference preset (e.g. ddpm-cifar10, the GPU anchors' model)."""
    torch.manual_seed(seed)
    if ARCH is not None:
        return build_unet(get_reference(ARCH))
    return UNet2DModel(
        sample_size=size,
        in_channels=3,
        out_channels=3,
        block_out_channels=(32, 64, 128),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
    )


def plain_loop(images: torch.Tensor, batch: int, device: torch.device) -> Callable[[int], None]:
    """One step of diffusers' train_unconditional.py (no accelerate, fp32, eager)."""
    model = make_unet(images.shape[-1]).to(device)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=1e-4, betas=(0.95, 0.999), weight_decay=1e-6
    )
    lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 500))
    ema = EMAModel(model.parameters(), decay=0.9999, use_ema_warmup=True)
    data = images.to(device)

    def step(i: int) -> None:
        clean = data[torch.randint(0, len(data), (batch,), device=device)]
        noise = torch.randn_like(clean)
        t = torch.randint(0, 1000, (batch,), device=device)
        noisy = scheduler.add_noise(clean, noise, t)
        loss = F.mse_loss(model(noisy, t).sample, noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad()
        ema.step(model.parameters())
        loss.detach().item()  # the example logs the loss every step

    return step


def our_loop(
    images: torch.Tensor, recipe: TrainRecipe, device: torch.device
) -> Callable[[int], None]:
    model = make_unet(images.shape[-1])
    trainer = TrainStep(
        model, images, recipe=recipe, diffusion=DiffusionConfig.ddpm(), seed=0, device=device
    )
    sums = []

    def step(i: int) -> None:
        loss, _ = trainer(i)
        sums.append(loss)  # read back only every log_every steps, as `train` does
        if len(sums) == recipe.log_every:
            float(torch.stack(sums).mean())
            sums.clear()

    return step


def with_tf32(step: Callable[[int], None], enabled: bool) -> Callable[[int], None]:
    def wrapped(i: int) -> None:
        torch.backends.cuda.matmul.allow_tf32 = enabled
        torch.backends.cudnn.allow_tf32 = enabled
        step(i)

    return wrapped


def measure(
    variants: dict[str, Callable[[int], None]],
    *,
    batch: int,
    warmup: int,
    steps: int,
    rounds: int,
    device: torch.device,
) -> dict[str, float]:
    """Images/s of each variant: warm-up steps, then `rounds` interleaved timed chunks."""
    counters = dict.fromkeys(variants, 0)
    for name, step in variants.items():
        for _ in range(warmup):
            step(counters[name])
            counters[name] += 1
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, step in variants.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(steps):
                step(counters[name])
                counters[name] += 1
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
    return {name: steps * batch / statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per variant per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument(
        "--compile", action="store_true", help="also time torch.compile on CPU (~2 min to compile)"
    )
    parser.add_argument(
        "--arch", default=None, help="reference preset, e.g. ddpm-cifar10 (GPU anchors)"
    )
    args = parser.parse_args()
    global ARCH
    ARCH = args.arch
    if ARCH is not None:
        args.size = get_reference(ARCH).image_size
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    channels = get_reference(ARCH).in_channels if ARCH else 3
    images = torch.rand(512, channels, args.size, args.size) * 2 - 1
    params = sum(p.numel() for p in make_unet(args.size).parameters())
    print(f"UNet {params / 1e6:.2f}M params, {args.size}×{args.size}, batch {args.batch}, device {device}, "
          f"threads {torch.get_num_threads()}")  # fmt: skip

    base = TrainRecipe.proxy(batch_size=args.batch, log_every=25, random_hflip=False)
    variants: dict[str, Callable[[int], None]] = {
        "plain diffusers loop": plain_loop(images, args.batch, device)
    }
    if device.type == "cpu":
        cpu = base.model_copy(update={"channels_last": False, "bf16_cpu": True})
        variants["ours (CPU: bf16 autocast)"] = our_loop(images, cpu, device)
        variants["ours fp32"] = our_loop(images, cpu.model_copy(update={"bf16_cpu": False}), device)
        variants["ours bf16 + channels-last"] = our_loop(
            images, cpu.model_copy(update={"channels_last": True}), device
        )
        if args.compile:
            variants["ours bf16 + torch.compile"] = our_loop(
                images, cpu.model_copy(update={"compile": True}), device
            )
    else:
        fp32 = base.model_copy(update={"bf16": False, "channels_last": False})
        variants = {  # TrainStep turns TF32 on globally, so every variant sets its own flags
            "plain diffusers loop": with_tf32(variants["plain diffusers loop"], False),
            "ours fp32": with_tf32(our_loop(images, fp32, device), False),
            "ours fp32+TF32": with_tf32(our_loop(images, fp32, device), True),
            "ours bf16+channels-last": with_tf32(our_loop(images, base, device), True),
            "ours bf16+CL+compile": with_tf32(
                our_loop(images, base.model_copy(update={"compile": True}), device), True
            ),
        }
    results = measure(variants, batch=args.batch, warmup=args.warmup, steps=args.steps, rounds=args.rounds,
                      device=device)  # fmt: skip
    reference = results["plain diffusers loop"]
    for name, ips in results.items():
        print(f"{name:32s} {ips:9.1f} img/s   {ips / reference:5.2f}×")
    if device.type == "cuda":
        model = make_unet(args.size).to(device)
        n = 256
        sample_images(
            model, DiffusionConfig.ddpm(), 8, sampler="ddim", steps=5, batch_size=8, device=device
        )
        torch.cuda.synchronize()
        start = time.perf_counter()
        sample_images(
            model, DiffusionConfig.ddpm(), n, sampler="ddim", steps=50, batch_size=n, device=device
        )
        torch.cuda.synchronize()
        print(f"DDIM-50 sampling (bf16)          {n / (time.perf_counter() - start):9.1f} img/s")


if __name__ == "__main__":
    main()
