"""`diffnas train`: train one architecture with a recipe into a numbered run folder.

The folder (`RUNS/00003-train-<arch>`) holds `options.json` (the resolved architecture,
objective, TrainRecipe, DiffusionConfig, data, seed: everything needed to redo the run) and
the trainer's files (`checkpoint.pt`, `ema.pt`, `metrics.jsonl`, `status.json`). `ema.pt`
carries the architecture and objective in its metadata, so `diffnas sample` and
`diffnas score` rebuild the model from it alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from diffnas import limits as L
from diffnas.console import output_console
from diffnas.errors import UserError
from diffnas.runs import OPTIONS_FILE, load_options, next_run_dir, refuse_on_resume, write_json
from diffnas.space.references import resolve_arch
from diffnas.space.search_space import load_space

if TYPE_CHECKING:  # torch and the layers on it load in the command (cli/__init__.py)
    from diffnas.data.datasets import ImageData
    from diffnas.train.checkpoint import TrainStatus
    from diffnas.train.diffusion import Objective
    from diffnas.train.options import TrainOptions

console = output_console(soft_wrap=True, highlight=False)
err_console = output_console(stderr=True, soft_wrap=True, highlight=False)


def print_plan(opts: TrainOptions, data: ImageData) -> None:
    """The resolved options and what the run will do: steps, images, training compute."""
    from diffnas.model.cost import measure_cost, training_flops
    from diffnas.train.device import resolve_device

    console.print_json(opts.model_dump_json())
    recipe = opts.recipe
    images = recipe.steps * recipe.batch_size
    fwd_flops = measure_cost(opts.arch).flops
    total = training_flops(fwd_flops, recipe.steps, recipe.batch_size)
    console.print(
        f"plan: {recipe.steps:,} steps x batch {recipe.batch_size} = {images:,} images "
        f"({images / len(data):.1f} epochs of {len(data):,} {data.name} images) on "
        f"{resolve_device(opts.device)}\n"
        f"compute: 3 x {fwd_flops / 1e9:.3g} GFLOPs/forward x {images:,} images = "
        f"{total / 1e12:.3g} TFLOPs"
    )


def summarize(status: TrainStatus, run_dir: Path) -> None:
    ips, loss = status.images_per_sec, status.last_loss
    console.print(
        f"status: {status.status}  steps: {status.step}/{status.steps or '?'}  "
        f"last loss: {'-' if loss is None else f'{loss:.4f}'}  "
        f"img/s: {'-' if ips is None else f'{ips:.0f}'}"
    )
    console.print(f"run folder: {run_dir}", markup=False)
    console.print(f"checkpoint: {status.ema_checkpoint or '-'}", markup=False)


def train(
    ctx: typer.Context,
    arch: str | None = typer.Argument(
        None, help="Reference preset (tiny-digits, ddpm-cifar10, ...) or JSON/YAML file."
    ),
    space: str | None = typer.Option(None, "--space", help="Space that fills fixed fields."),
    objective: str | None = typer.Option(
        None, "--objective", help="ddpm | iddpm (default: iddpm if learn_sigma else ddpm)"
    ),
    recipe: str | None = typer.Option(None, "--recipe", help="proxy | full (default: proxy)"),
    steps: int | None = typer.Option(
        None, "--steps", min=1, max=L.MAX_TRAIN_STEPS, help="Optimizer steps."
    ),
    batch_size: int | None = typer.Option(
        None, "--batch-size", min=1, max=L.MAX_BATCH_SIZE, help="Images per step."
    ),
    lr: float | None = typer.Option(
        None, "--lr", min=0.0, max=1.0, help="Peak learning rate (in (0, 1])."
    ),
    warmup: int | None = typer.Option(
        None, "--warmup", min=0, max=L.MAX_TRAIN_STEPS, help="Warm-up steps."
    ),
    ema: float | None = typer.Option(
        None, "--ema", min=0.0, max=1.0, help="EMA decay (cap), in [0, 1)."
    ),
    bf16_cpu: bool | None = typer.Option(
        None,
        "--bf16-cpu/--no-bf16-cpu",
        help="bf16 autocast on CPU (default: on where the CPU has native bf16).",
    ),
    compile_: bool = typer.Option(False, "--compile", help="torch.compile the model."),
    no_flip: bool = typer.Option(False, "--no-flip", help="No random horizontal flips."),
    checkpoint_every: int | None = typer.Option(
        None, "--checkpoint-every", min=1, max=L.MAX_TRAIN_STEPS, help="Steps."
    ),
    log_every: int | None = typer.Option(
        None, "--log-every", min=1, max=L.MAX_TRAIN_STEPS, help="Steps."
    ),
    sets: list[str] = typer.Option(
        [], "--set", help="Recipe field override key=value (JSON value); diffusion.KEY too."
    ),
    data: str | None = typer.Option(
        None, "--data", help="digits | cifar10[:ROOT] | npz:PATH | DIR (default: digits)"
    ),
    seed: int | None = typer.Option(
        None, "--seed", min=0, max=L.MAX_SEED, help="Seed (default: 0)."
    ),
    device: str | None = typer.Option(None, "--device", help="auto | cpu | cuda (default: auto)"),
    runs: Path = typer.Option(Path("runs"), "--runs", help="Root of the numbered run folders."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print options and plan; create nothing."
    ),
    resume: Path | None = typer.Option(
        None, "--resume", help="Continue this run folder with its saved options."
    ),
) -> None:
    """Train ARCH on --data with a recipe; writes options, checkpoints and metrics to a run folder."""
    from diffnas.data.datasets import check_data_fits, load_images, parse_data
    from diffnas.train.device import check_device, resolve_device
    from diffnas.train.diffusion import DiffusionConfig
    from diffnas.train.options import TrainOptions, parse_sets
    from diffnas.train.recipe import resolve_recipe

    flags = {
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "warmup_steps": warmup,
        "ema_decay": ema,
        "checkpoint_every": checkpoint_every,
        "log_every": log_every,
        "bf16_cpu": bf16_cpu,
        "compile": True if compile_ else None,
        "random_hflip": False if no_flip else None,
    }
    if resume is not None:
        refuse_on_resume(ctx, allowed=("device", "dry_run"))
        return _resume(resume, device, dry_run)
    if arch is None:
        raise UserError("give an architecture (preset or file) or --resume RUN_DIR", field="arch")
    device = check_device(device or "auto")
    label, arch_cfg = resolve_arch(arch, load_space(space) if space else None)
    if objective not in (None, "ddpm", "iddpm"):
        raise UserError(
            f"--objective {objective!r} is unknown; use ddpm or iddpm", field="objective"
        )
    obj: Objective = objective or ("iddpm" if arch_cfg.learn_sigma else "ddpm")  # type: ignore[assignment]
    data_spec = parse_data(data or "digits")
    recipe_sets, diffusion_sets = parse_sets(sets)
    overrides = {k: v for k, v in flags.items() if v is not None} | recipe_sets
    train_recipe, notes = resolve_recipe(
        recipe or "proxy",
        obj,
        overrides,
        data_kind=data_spec.kind,
        device_type=resolve_device(device).type,
    )
    opts = TrainOptions(
        arch_name=label,
        arch=arch_cfg,
        objective=obj,
        recipe_preset=recipe or "proxy",  # type: ignore[arg-type]
        recipe=train_recipe,
        diffusion=DiffusionConfig.resolve(obj, arch_cfg.learn_sigma, diffusion_sets),
        data=data_spec,
        seed=0 if seed is None else seed,
        device=device,
    )
    images = load_images(data_spec)
    check_data_fits(
        images, (arch_cfg.in_channels, arch_cfg.image_size), f"the architecture {label}"
    )
    for note in notes:
        console.print(f"note: {note}", markup=False)
    if dry_run:
        print_plan(opts, images)
        console.print(
            f"dry run: nothing written (a run would create a folder under {runs}/)", markup=False
        )
        return
    run_dir = next_run_dir(runs, "train", label.removesuffix(Path(label).suffix))
    write_json(run_dir / OPTIONS_FILE, opts.model_dump(mode="json"))
    console.print(f"run folder: {run_dir}", markup=False)
    _run(opts, images, run_dir, device)


def _resume(run_dir: Path, device: str | None, dry_run: bool) -> None:
    from diffnas.data.datasets import check_data_fits, load_images
    from diffnas.train.checkpoint import read_status
    from diffnas.train.device import check_device
    from diffnas.train.options import TrainOptions
    from diffnas.train.trainer import STATUS

    opts = load_options(run_dir, TrainOptions, kind="train")
    device = check_device(device or opts.device)
    status_path = run_dir / STATUS
    status = read_status(status_path) if status_path.is_file() else None
    if status and status.status == "complete" and status.step >= opts.recipe.steps:
        console.print(f"already complete: {run_dir} (nothing to do)", markup=False)
        summarize(status, run_dir)
        return
    images = load_images(opts.data)
    check_data_fits(
        images, (opts.arch.in_channels, opts.arch.image_size), f"the architecture {opts.arch_name}"
    )
    if dry_run:
        print_plan(opts, images)
        step = status.step if status else 0
        console.print(f"dry run: would resume {run_dir} from step {step}", markup=False)
        return
    _run(opts, images, run_dir, device)


def _run(opts: TrainOptions, images: ImageData, run_dir: Path, device: str) -> None:
    import torch

    from diffnas.model.builder import build_unet
    from diffnas.train import trainer
    from diffnas.train.checkpoint import read_status
    from diffnas.train.device import resolve_device

    torch.manual_seed(opts.seed)
    model = build_unet(opts.arch)
    result = trainer.train(
        model,
        images.x,
        recipe=opts.recipe,
        diffusion=opts.diffusion,
        run_dir=run_dir,
        seed=opts.seed,
        device=resolve_device(device),
        resume=True,
        metadata=opts.metadata(),
        progress=True,
    )
    summarize(read_status(run_dir / trainer.STATUS), run_dir)
    if result.status in ("diverged", "oom"):
        what = "diverged" if result.status == "diverged" else "ran out of GPU memory"
        err_console.print(
            f"error: training {what} ({result.error}); the run folder {run_dir} is kept "
            "(change the recipe, e.g. a lower --lr or --batch-size, and train again)"
        )
        raise typer.Exit(1)
