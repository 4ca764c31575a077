"""Training throughput: `diffnas train` with default options against a plain diffusers loop.

The plain loop is the step of diffusers' `examples/unconditional_image_generation/
train_unconditional.py`: eager fp32, `torch.optim.AdamW`, `DDPMScheduler.add_noise`, MSE on ε,
gradient clipping, an `EMAModel` step and `loss.item()` for logging every step.

On CPU (the acceptance comparison) "ours" is exactly what `diffnas train ARCH --data DATA
--steps N` runs: the recipe `diffnas train` resolves with no other option (so bf16 autocast is
on where this CPU has native bf16) and the trainer's whole `train` call — its logging and
final checkpoint included. A second variant forces bf16 off (`--no-bf16-cpu`): what a CPU
without native bf16 runs by default. Both train the same UNet on the same images and batch
size; the variants run interleaved, many short whole runs in rotating order, so that load on
a shared machine hits all of them alike, and the figure is the ratio of median run times.

    python benchmarks/bench_train.py                          # CPU, tiny-digits on digits, ~3 min
    python benchmarks/bench_train.py --arch small32 --data random --batch 32
    python benchmarks/bench_train.py --device cuda            # per-step: fp32/TF32/bf16+CL/compile
    python benchmarks/bench_train.py --device cuda --arch ddpm-cifar10 --batch 128   # the anchors
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.training_utils import EMAModel

from diffnas.data.datasets import DataSpec, load_images, parse_data
from diffnas.model.builder import build_unet
from diffnas.space.references import get_reference
from diffnas.train.device import fast_cuda_math
from diffnas.train.diffusion import DiffusionConfig
from diffnas.train.precision import cpu_bf16_support
from diffnas.train.recipe import TrainRecipe, resolve_recipe
from diffnas.train.sampling import sample_images
from diffnas.train.trainer import TrainStep, train

# The acceptance bars of issue 7: `diffnas train` defaults against the plain loop.
BAR_NATIVE_BF16 = 1.2
BAR_NO_NATIVE_BF16 = 1.0


def make_unet(arch: str, seed: int = 0) -> UNet2DModel:
    """A reference preset (`tiny-digits`, `ddpm-cifar10`, ...), or `small32`: a ~2.6M-parameter
    UNet with 3 levels (32, 64, 128) and attention at 16×16 (the earlier rows of RESULTS.md)."""
    torch.manual_seed(seed)
    if arch != "small32":
        return build_unet(get_reference(arch))
    return UNet2DModel(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        block_out_channels=(32, 64, 128),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
    )


def load_data(data: str, model: UNet2DModel) -> torch.Tensor:
    """`random`: 512 uniform images of the model's shape; else a `--data` spec of `diffnas train`."""
    channels, size = model.config.in_channels, model.config.sample_size
    if data == "random":
        torch.manual_seed(0)
        return torch.rand(512, channels, size, size) * 2 - 1
    return load_images(parse_data(data)).x


def plain_loop(
    arch: str, images: torch.Tensor, batch: int, device: torch.device
) -> Callable[[int], None]:
    """One step of diffusers' train_unconditional.py (no accelerate, fp32, eager)."""
    model = make_unet(arch).to(device)
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


# --- CPU: whole runs of `diffnas train` against whole runs of the plain loop -------------------

Run = Callable[[int], float]  # steps -> wall seconds of one run from a fresh model


def plain_run(arch: str, images: torch.Tensor, batch: int) -> Run:
    def run(steps: int) -> float:
        step = plain_loop(arch, images, batch, torch.device("cpu"))  # set-up not timed
        start = time.perf_counter()
        for i in range(steps):
            step(i)
        return time.perf_counter() - start

    return run


def diffnas_train_run(arch: str, images: torch.Tensor, recipe: TrainRecipe, scratch: Path) -> Run:
    """`diffnas train`'s call of the trainer: fresh run folder, progress bar off."""
    runs = iter(range(1_000_000))

    def run(steps: int) -> float:
        model = make_unet(arch)
        start = time.perf_counter()
        result = train(model, images, recipe=recipe.model_copy(update={"steps": steps}),
                       diffusion=DiffusionConfig.ddpm(), run_dir=scratch / f"run-{next(runs)}",
                       seed=0, device="cpu", resume=False, progress=False)  # fmt: skip
        elapsed = time.perf_counter() - start
        assert result.status == "complete", result
        return elapsed

    return run


def compare_cpu(args: argparse.Namespace) -> None:
    cpu = cpu_bf16_support()
    model = make_unet(args.arch)
    images = load_data(args.data, model)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"CPU: {cpu.model} · native bf16: {'yes' if cpu.native_bf16 else 'no'} ({cpu.evidence}) "
          f"· torch threads {torch.get_num_threads()}")  # fmt: skip
    print(f"UNet {args.arch} {params:.2f}M params, data {args.data} ({tuple(images.shape)}), "
          f"batch {args.batch}, {args.steps} steps per run, {args.repeats} interleaved repeats")  # fmt: skip

    data_spec = DataSpec(kind="npz") if args.data == "random" else parse_data(args.data)
    overrides = {"steps": args.steps, "batch_size": args.batch}  # --steps, --batch-size

    def resolved(**more: object) -> TrainRecipe:
        return resolve_recipe(
            "proxy", "ddpm", overrides | more, data_kind=data_spec.kind, device_type="cpu"
        )[0]

    defaults = resolved()
    print(f"diffnas train defaults here: bf16_cpu={defaults.bf16_cpu}, "
          f"channels_last={defaults.channels_last}, random_hflip={defaults.random_hflip}")  # fmt: skip
    with tempfile.TemporaryDirectory() as scratch:
        runs: dict[str, Run] = {
            "plain diffusers loop": plain_run(args.arch, images, args.batch),
            "diffnas train (defaults)": diffnas_train_run(
                args.arch, images, defaults, Path(scratch)
            ),
            "diffnas train --no-bf16-cpu": diffnas_train_run(
                args.arch, images, resolved(bf16_cpu=False), Path(scratch)
            ),
        }
        if args.extra:
            runs["defaults + channels-last"] = diffnas_train_run(
                args.arch, images, resolved(channels_last=True), Path(scratch)
            )
        for run in runs.values():  # warm-up: allocator, oneDNN kernel caches
            run(args.warmup)
        times: dict[str, list[float]] = {name: [] for name in runs}
        names = list(runs)
        load_before = os.getloadavg()[0]
        for repeat in range(args.repeats):
            for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
                times[name].append(runs[name](args.steps))
    print(f"load average (1 min) {load_before:.1f} before, {os.getloadavg()[0]:.1f} after, "
          f"on {os.cpu_count()} CPUs")  # fmt: skip
    median = {name: statistics.median(t) for name, t in times.items()}
    plain = median["plain diffusers loop"]
    print("\n| variant | median s per run | img/s | × plain loop | runs (s) |\n| --- | --- | --- | --- | --- |")  # fmt: skip
    for name, seconds in median.items():
        each = ", ".join(f"{t:.1f}" for t in times[name])
        print(f"| {name} | {seconds:.2f} | {args.steps * args.batch / seconds:.1f} | "
              f"{plain / seconds:.2f}× | {each} |")  # fmt: skip
    default_ratio = plain / median["diffnas train (defaults)"]
    fp32_ratio = plain / median["diffnas train --no-bf16-cpu"]
    bar = BAR_NATIVE_BF16 if cpu.native_bf16 else BAR_NO_NATIVE_BF16
    print(f"\nthis CPU ({cpu.model}, native bf16 {'yes' if cpu.native_bf16 else 'no'}): "
          f"defaults {default_ratio:.2f}× the plain loop, bar ≥ {bar}× — "
          f"{'PASS' if default_ratio >= bar else 'FAIL'}")  # fmt: skip
    if cpu.native_bf16:
        print(f"no native bf16 (emulated here by forcing bf16 off, what such a CPU runs by default): "
              f"{fp32_ratio:.2f}× the plain loop, bar ≥ {BAR_NO_NATIVE_BF16}× — "
              f"{'PASS' if fp32_ratio >= BAR_NO_NATIVE_BF16 else 'FAIL'}")  # fmt: skip


# --- CUDA: per-step comparison of the recipe's levers ------------------------------------------


def our_loop(
    arch: str, images: torch.Tensor, recipe: TrainRecipe, device: torch.device
) -> Callable[[int], None]:
    trainer = TrainStep(make_unet(arch), images, recipe=recipe, diffusion=DiffusionConfig.ddpm(),
                        seed=0, device=device)  # fmt: skip
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


def measure_steps(
    variants: dict[str, Callable[[int], None]], *, batch: int, warmup: int, steps: int, rounds: int
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
            torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(steps):
                step(counters[name])
                counters[name] += 1
            torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
    return {name: steps * batch / statistics.median(t) for name, t in times.items()}


def compare_cuda(args: argparse.Namespace) -> None:
    """The variants and sampling under the CUDA flags `train` runs with (cuDNN autotuning)."""
    with fast_cuda_math(args.device):
        _compare_cuda(args)


def _compare_cuda(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    model = make_unet(args.arch)
    images = load_data(args.data, model)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"UNet {args.arch} {params:.2f}M params, batch {args.batch}, device {device}")
    base = TrainRecipe.proxy(batch_size=args.batch, log_every=25, random_hflip=False)
    fp32 = base.model_copy(update={"bf16": False, "channels_last": False})
    variants = {  # TF32 set per variant; cuDNN autotuning on for all (see compare_cuda)
        "plain diffusers loop": with_tf32(plain_loop(args.arch, images, args.batch, device), False),
        "ours fp32": with_tf32(our_loop(args.arch, images, fp32, device), False),
        "ours fp32+TF32": with_tf32(our_loop(args.arch, images, fp32, device), True),
        "ours bf16+channels-last": with_tf32(our_loop(args.arch, images, base, device), True),
        "ours bf16+CL+compile": with_tf32(
            our_loop(args.arch, images, base.model_copy(update={"compile": True}), device), True
        ),
    }
    results = measure_steps(variants, batch=args.batch, warmup=args.warmup, steps=args.steps,
                            rounds=args.repeats)  # fmt: skip
    reference = results["plain diffusers loop"]
    for name, ips in results.items():
        print(f"{name:32s} {ips:9.1f} img/s   {ips / reference:5.2f}×")
    n = 256
    sample_images(model.to(device), DiffusionConfig.ddpm(), 8, sampler="ddim", steps=5, batch_size=8,
                  device=device)  # fmt: skip
    torch.cuda.synchronize()
    start = time.perf_counter()
    sample_images(model, DiffusionConfig.ddpm(), n, sampler="ddim", steps=50, batch_size=n,
                  device=device)  # fmt: skip
    torch.cuda.synchronize()
    print(f"DDIM-50 sampling (bf16)          {n / (time.perf_counter() - start):9.1f} img/s")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--arch", default=None, help="reference preset or small32 "
                        "(default: tiny-digits on CPU, small32 on CUDA)")  # fmt: skip
    parser.add_argument("--data", default=None, help="a diffnas --data spec or random "
                        "(default: digits for tiny-digits, else random)")  # fmt: skip
    parser.add_argument("--batch", type=int, default=None,
                        help="images per step (default: the recipe's 128 on CPU, 32 on CUDA)")  # fmt: skip
    parser.add_argument("--steps", type=int, default=None,
                        help="steps per run (CPU, default 10) or per timed chunk (CUDA, default 4)")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=None,
                        help="interleaved repeats per variant (default: 15 on CPU, 5 on CUDA)")  # fmt: skip
    parser.add_argument("--warmup", type=int, default=2, help="untimed warm-up steps per variant")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--extra", action="store_true", help="CPU: also defaults + channels-last")
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    args.arch = args.arch or ("small32" if cuda else "tiny-digits")
    args.data = args.data or ("digits" if args.arch == "tiny-digits" else "random")
    args.batch = args.batch or (32 if cuda else TrainRecipe().batch_size)
    args.steps = args.steps or (4 if cuda else 10)
    args.repeats = args.repeats or (5 if cuda else 15)
    if args.threads:
        torch.set_num_threads(args.threads)
    if cuda:
        compare_cuda(args)
    else:
        compare_cpu(args)


if __name__ == "__main__":
    main()
