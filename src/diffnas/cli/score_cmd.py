"""`diffnas sample CKPT` and `diffnas score CKPT`: images and FID/RFID/KID from a trained model.

Both rebuild the model from `ema.pt` alone (its metadata holds the architecture, objective
and training data) and write into a new numbered run folder. Scores are printed with their
protocol, because a number without N, sampler steps and extractor compares to nothing.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from pydantic import ValidationError
from rich.markup import escape
from rich.table import Table

from diffnas import limits as L
from diffnas.console import output_console
from diffnas.errors import UserError, pydantic_message
from diffnas.runs import (
    OPTIONS_FILE,
    load_options,
    next_run_dir,
    read_file,
    refuse_on_resume,
    write_json,
)

if TYPE_CHECKING:  # torch and the layers on it load in the command (cli/__init__.py)
    from diffnas.train.checkpoint import Trained

console = output_console(soft_wrap=True, highlight=False)


def print_sampling_plan(trained: Trained, n: int, steps: int | None) -> None:
    from diffnas.model.cost import sampling_flops

    nfe_per_image = steps or trained.diffusion.timesteps
    line = (
        f"plan: {n:,} images x {nfe_per_image} sampler steps = {n * nfe_per_image:,} forward passes"
    )
    flops = trained.forward_flops()
    if flops is not None:
        line += f", {sampling_flops(flops, n, nfe_per_image) / 1e12:.3g} TFLOPs"
    console.print(line)


def _default_steps(sampler: str, steps: int | None) -> int | None:
    return steps if steps is not None or sampler == "ddpm" else 50


# ----------------------------------------------------------------------------------- sample


def sample(
    ctx: typer.Context,
    ckpt: str | None = typer.Argument(None, help="A train run folder or its ema.pt."),
    num: int = typer.Option(64, "-n", "--num", min=1, max=L.MAX_SAMPLES, help="Images to draw."),
    sampler: str = typer.Option("ddim", "--sampler", help="ddim | ddpm | respaced"),
    steps: int | None = typer.Option(
        None,
        "--steps",
        min=1,
        max=L.MAX_SAMPLER_STEPS,
        help="Sampler steps (default: 50; ddpm: all).",
    ),
    seed: int = typer.Option(0, "--seed", min=0, max=L.MAX_SEED, help="Seed of the initial noise."),
    batch_size: int = typer.Option(
        64, "--batch-size", min=1, max=L.MAX_BATCH_SIZE, help="Images per batch."
    ),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
    runs: Path = typer.Option(Path("runs"), "--runs", help="Root of the numbered run folders."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print options and plan; create nothing."
    ),
    resume: Path | None = typer.Option(None, "--resume", help="Finish this sample run folder."),
) -> None:
    """Draw images from a trained model; writes PNGs and a grid into a new run folder."""
    from diffnas.execute.score_run import SampleOptions
    from diffnas.train.checkpoint import load_trained
    from diffnas.train.device import check_device, resolve_device
    from diffnas.train.sampling import make_scheduler, sample_images, save_grid, save_pngs

    if resume is not None:
        refuse_on_resume(ctx, allowed=("dry_run",))
        opts = load_options(resume, SampleOptions, kind="sample")
        run_dir = resume
        if (resume / "sample.json").is_file():
            console.print(f"already complete: {resume / 'images'} ({opts.num} PNGs)", markup=False)
            return
    elif ckpt is None:
        raise UserError("give a checkpoint (train run folder or ema.pt) or --resume", field="ckpt")
    else:
        try:
            opts = SampleOptions(
                checkpoint="", num=num, sampler=sampler, steps=_default_steps(sampler, steps),
                seed=seed, batch_size=batch_size, device=check_device(device),
            )  # fmt: skip
        except ValidationError as err:
            raise UserError(pydantic_message(err, "sample option"), field="sample") from None
    trained = load_trained(opts.checkpoint or ckpt)
    opts = opts.model_copy(update={"checkpoint": str(trained.path)})
    make_scheduler(trained.diffusion, opts.sampler, opts.steps)  # checks sampler and steps
    if dry_run:
        console.print_json(opts.model_dump_json())
        print_sampling_plan(trained, opts.num, opts.steps)
        console.print("dry run: nothing written")
        return
    if resume is None:
        run_dir = next_run_dir(runs, "sample", trained.label)
        write_json(run_dir / OPTIONS_FILE, opts.model_dump(mode="json"))
    start = time.perf_counter()
    images = sample_images(
        trained.model, trained.diffusion, opts.num, sampler=opts.sampler, steps=opts.steps,
        seed=opts.seed, batch_size=opts.batch_size, device=resolve_device(opts.device),
    )  # fmt: skip
    pngs = save_pngs(images, run_dir / "images")
    grid = save_grid(images[:64], run_dir / "grid.png")
    seconds = time.perf_counter() - start
    write_json(run_dir / "sample.json", {"images": len(pngs), "grid": str(grid), "wall_s": seconds})
    console.print(
        f"wrote {len(pngs)} PNGs to {run_dir / 'images'} and a grid {grid} ({seconds:.1f} s)"
    )


# ------------------------------------------------------------------------------------ score


def score(
    ctx: typer.Context,
    ckpt: str | None = typer.Argument(None, help="A train run folder or its ema.pt."),
    metric: str = typer.Option("rfid", "--metric", help="rfid | fid | kid"),
    num: int = typer.Option(
        1000, "-n", "--num", min=2, max=L.MAX_SAMPLES, help="Generated images N."
    ),
    sampler: str = typer.Option("ddim", "--sampler", help="ddim | ddpm | respaced"),
    steps: int | None = typer.Option(
        None,
        "--steps",
        min=1,
        max=L.MAX_SAMPLER_STEPS,
        help="Sampler steps (default: 50; ddpm: all).",
    ),
    data: str | None = typer.Option(
        None, "--data", help="Reference images (default: the checkpoint's training data)."
    ),
    extractor: str = typer.Option("classifier", "--extractor", help="classifier | inception"),
    inception_weights: str | None = typer.Option(
        None, "--inception-weights", help="FID Inception weights file (offline)."
    ),
    seed: int = typer.Option(0, "--seed", min=0, max=L.MAX_SEED, help="Seed of the initial noise."),
    batch_size: int = typer.Option(
        256, "--batch-size", min=1, max=L.MAX_BATCH_SIZE, help="Sampling batch."
    ),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
    runs: Path = typer.Option(Path("runs"), "--runs", help="Root of the numbered run folders."),
    cache_dir: Path | None = typer.Option(
        None, "--cache-dir", help="Reference statistics cache (default: RUNS/cache)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print options and plan; create nothing."
    ),
    resume: Path | None = typer.Option(None, "--resume", help="Finish this score run folder."),
) -> None:
    """Score a trained model: sample N images and compare them with the reference data."""
    from diffnas.data.datasets import DataSpec, check_data_fits, load_images, parse_data
    from diffnas.evaluate.score import check_scoring
    from diffnas.execute.job import ScoreSpec
    from diffnas.execute.score_run import (
        SCORE_FILE,
        ScoreOptions,
        ScoreRecord,
        sample_and_score,
    )
    from diffnas.train.checkpoint import load_trained
    from diffnas.train.device import check_device
    from diffnas.train.sampling import make_scheduler

    if resume is not None:
        refuse_on_resume(ctx, allowed=("dry_run", "as_json"))
        opts = load_options(resume, ScoreOptions, kind="score")
        run_dir = resume
        if (resume / SCORE_FILE).is_file():
            fix = "delete it to score again"
            saved = read_file(resume / SCORE_FILE, ScoreRecord, "score record", fix=fix)
            _report(saved.model_dump(mode="json"), as_json)
            return
        trained = load_trained(opts.checkpoint)
    elif ckpt is None:
        raise UserError("give a checkpoint (train run folder or ema.pt) or --resume", field="ckpt")
    else:
        trained = load_trained(ckpt)
        if data is not None:
            data_spec = parse_data(data)
        elif "data" in trained.metadata:
            data_spec = DataSpec.model_validate(trained.metadata["data"])
        else:
            raise UserError(f"{trained.path} does not record its training data; give --data")
        try:
            spec = ScoreSpec(
                metric=metric, extractor=extractor, num_samples=num, sampler=sampler,
                steps=_default_steps(sampler, steps), batch_size=batch_size,
                inception_weights=inception_weights,
            )  # fmt: skip
        except ValidationError as err:
            raise UserError(pydantic_message(err, "score option"), field="score") from None
        opts = ScoreOptions(
            checkpoint=str(trained.path), data=data_spec, score=spec, seed=seed,
            device=check_device(device), cache_dir=str(cache_dir or runs / "cache"),
        )  # fmt: skip
    spec = opts.score
    make_scheduler(trained.diffusion, spec.sampler, spec.steps)  # checks sampler and steps
    images = load_images(opts.data)
    config = trained.model.config
    check_data_fits(
        images,
        (config.in_channels, config.sample_size),
        f"the model {trained.label}",
        "give --data of that shape",
    )
    check_scoring(images, spec.extractor, spec.inception_weights, allow_download=not dry_run)
    if dry_run:
        console.print_json(opts.model_dump_json())
        print_sampling_plan(trained, spec.num_samples, spec.steps)
        console.print(
            f"reference: {len(images):,} {images.name} images; dry run: nothing written",
            markup=False,
        )
        return
    if resume is None:
        run_dir = next_run_dir(runs, "score", f"{trained.label}-{spec.metric}")
        write_json(run_dir / OPTIONS_FILE, opts.model_dump(mode="json"))
    result = sample_and_score(trained, images, opts, run_dir)
    write_json(run_dir / SCORE_FILE, result)
    _report(result, as_json)


def _report(result: dict[str, Any], as_json: bool) -> None:
    from diffnas.evaluate.score import Score
    from diffnas.execute.score_run import SCORE_FILE

    if as_json:
        print(json.dumps(result, indent=2))
        return
    s = Score.model_validate(result["score"])
    p = s.protocol
    value = f"{s.value:.4g}" + (f" ± {s.std:.2g}" if s.std is not None else "")
    label = escape(s.label)  # "RFID[classifier]": rich would read the brackets as markup
    table = Table("", "", title=f"{label} (lower is better)", show_header=False)
    table.add_row(label, value)
    table.add_row("extractor", p.extractor)
    table.add_row("weights sha256", p.weights_sha256[:16])
    table.add_row("generated N", str(p.num_generated))
    table.add_row("reference N", str(p.num_reference))
    table.add_row("sampler, steps", f"{p.sampler}, {p.steps if p.steps else 'all'}")
    table.add_row("reference", p.reference)
    table.add_row("resolution", f"{p.resolution}x{p.resolution}")
    console.print(table)
    console.print(
        f"{SCORE_FILE}: {Path(result['run_dir']) / SCORE_FILE} ({result['wall_s']:.1f} s)"
    )
