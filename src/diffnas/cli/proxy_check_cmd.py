"""`diffnas proxy-check`: how well proxy settings rank architectures against a longer run."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import typer
from rich.markup import escape

from diffnas import limits as L
from diffnas.cli import options as opt
from diffnas.console import output_console
from diffnas.runs import next_run_dir, refuse_on_resume, was_given

console = output_console()


def proxy_check(
    ctx: typer.Context,
    space: str | None = typer.Option(
        None, help="Space preset or YAML file (default tiny, or the --archs-from search's)."
    ),
    data: opt.Data = None,
    data_subset: opt.DataSubset = None,
    data_image_size: opt.DataImageSize = None,
    archs: int | None = typer.Option(
        None, min=3, max=1000, help="Architectures compared (default 8, at least 3)."
    ),
    arch_seed: int | None = typer.Option(
        None, min=0, max=L.MAX_SEED, help="Seed of the uniform draws (default 0)."
    ),
    archs_from: str | None = typer.Option(
        None, help="Take the architectures from this search run folder's trials instead."
    ),
    proxy_steps: opt.ProxySteps = None,
    proxy_batch_size: opt.ProxyBatchSize = None,
    metrics: opt.Metrics = None,
    score_samples: opt.ScoreSamples = None,
    score_steps: opt.ScoreSteps = None,
    sampler: opt.Sampler = None,
    extractor: opt.Extractor = None,
    inception_weights: opt.InceptionWeights = None,
    reference_recipe: opt.ReferenceRecipe = None,
    reference_steps: opt.ReferenceSteps = None,
    reference_batch_size: opt.ReferenceBatchSize = None,
    reference_metric: opt.ReferenceMetric = None,
    reference_samples: opt.ReferenceSamples = None,
    reference_score_steps: opt.ReferenceScoreSteps = None,
    top_k: int | None = typer.Option(
        None, min=1, max=1000, help="k of the top-k overlap (default 3)."
    ),
    bootstrap: int | None = typer.Option(
        None, min=100, max=1_000_000, help="Bootstrap resamples (default 2000)."
    ),
    seed: opt.Seed = None,
    seeds: opt.Seeds = None,
    reference_seeds: opt.ReferenceSeeds = None,
    executor: opt.Executor = None,
    workers: opt.Workers = None,
    trials_per_gpu: opt.TrialsPerGpu = None,
    max_retries: opt.MaxRetries = None,
    ray_address: opt.RayAddress = None,
    storage: opt.Storage = None,
    device: opt.Device = "auto",
    runs: Path = typer.Option(Path("runs"), help="Folder of numbered run folders."),
    resume: Path | None = typer.Option(
        None, help="Continue the study in this run folder with its saved options."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print the options, architectures and compute; run nothing."
    ),
) -> None:
    """Train N architectures with proxy settings and a longer reference; rank agreement and cost."""
    from diffnas.experiments import proxy_check as pc
    from diffnas.experiments import proxy_summary as summary_mod

    if resume is not None:
        refuse_on_resume(ctx, allowed=("dry_run", "reference_seeds"))
        config = pc.load_config(resume)
        if was_given(ctx, "reference_seeds"):  # more seeds add runs; fewer are refused
            config = config.model_validate(
                {**config.model_dump(), "reference_seeds": ctx.params["reference_seeds"]}
            )
    else:
        options = {k: v for k, v in ctx.params.items() if k not in ("runs", "resume", "dry_run")}
        config = pc.build_config(options)
    space, images, chosen = pc.prepare(config, allow_download=not dry_run)
    if dry_run:
        console.print_json(config.model_dump_json())
        console.print_json(data=pc.plan(config, space, chosen))
        return
    run_dir = resume or next_run_dir(runs, "proxy-check", Path(config.space).stem)
    console.print(f"run folder: [bold]{escape(str(run_dir))}[/bold]")
    study = pc.ProxyCheck(
        config, run_dir, log=lambda text: console.print(escape(text)), command=command_line()
    )
    summary = study.run(chosen)
    summary_mod.print_summary(summary, output_console())
    console.print(
        f"Files: {run_dir} ({summary_mod.SUMMARY_MD}, {summary_mod.SCATTER_FILE}, "
        f"{pc.TABLE_NAME}.csv, {pc.TABLE_NAME}.json)"
    )


def command_line() -> str:
    """This process's command line as typed (recorded with the table it builds)."""
    return shlex.join(["diffnas", *sys.argv[1:]])
