"""`diffnas proxy-check`: how well proxy settings rank architectures against a longer run."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from diffnas import limits as L
from diffnas.console import output_console
from diffnas.runs import next_run_dir, refuse_on_resume

console = output_console()


def proxy_check(
    ctx: typer.Context,
    space: str | None = typer.Option(
        None, help="Space preset or YAML file (default tiny, or the --archs-from search's)."
    ),
    data: str | None = typer.Option(
        None, help="digits | fashion-mnist[:ROOT] | cifar10[:ROOT] | npz:PATH | imagefolder:DIR"
    ),
    data_subset: int | None = typer.Option(
        None, min=1, max=L.MAX_IMAGES, help="Train on a subset of N images."
    ),
    data_image_size: int | None = typer.Option(
        None,
        min=4,
        max=L.MAX_IMAGE_SIZE,
        help="Resize the images (default: the space's image size).",
    ),
    archs: int | None = typer.Option(
        None, min=3, max=1000, help="Architectures compared (default 8, at least 3)."
    ),
    arch_seed: int | None = typer.Option(
        None, min=0, max=L.MAX_SEED, help="Seed of the uniform draws (default 0)."
    ),
    archs_from: str | None = typer.Option(
        None, help="Take the architectures from this search run folder's trials instead."
    ),
    proxy_steps: str | None = typer.Option(
        None, help="Proxy run lengths, comma-separated (default 100,400)."
    ),
    proxy_batch_size: int | None = typer.Option(
        None, min=1, max=L.MAX_BATCH_SIZE, help="Proxy batch size (default 32)."
    ),
    metrics: str | None = typer.Option(
        None, help="Proxy scores among rfid,kid,loss (default all three)."
    ),
    score_samples: str | None = typer.Option(
        None, help="Proxy scores' generated images N, comma-separated (default 250,1000)."
    ),
    score_steps: str | None = typer.Option(
        None, help="Proxy scores' sampler steps S, comma-separated (default 20)."
    ),
    sampler: str | None = typer.Option(None, help="ddim (default) | ddpm | respaced"),
    extractor: str | None = typer.Option(None, help="classifier (default) | inception"),
    inception_weights: str | None = typer.Option(None, help="FID Inception weights file."),
    reference_recipe: str | None = typer.Option(None, help="full (default) | proxy"),
    reference_steps: int | None = typer.Option(
        None, min=1, max=L.MAX_TRAIN_STEPS, help="Reference run length (default 1500)."
    ),
    reference_batch_size: int | None = typer.Option(
        None, min=1, max=L.MAX_BATCH_SIZE, help="Reference batch size (default 32)."
    ),
    reference_metric: str | None = typer.Option(None, help="fid (default) | rfid | kid"),
    reference_samples: int | None = typer.Option(
        None, min=2, max=L.MAX_SAMPLES, help="Reference score's generated images (default 1000)."
    ),
    reference_score_steps: int | None = typer.Option(
        None, min=1, max=L.MAX_SAMPLER_STEPS, help="Reference score's sampler steps (default 50)."
    ),
    top_k: int | None = typer.Option(
        None, min=1, max=1000, help="k of the top-k overlap (default 3)."
    ),
    bootstrap: int | None = typer.Option(
        None, min=100, max=1_000_000, help="Bootstrap resamples (default 2000)."
    ),
    seed: int | None = typer.Option(
        None,
        min=0,
        max=L.MAX_SEED,
        help="First seed of training and sampling (default 0; then seed + 1, ...).",
    ),
    seeds: int | None = typer.Option(
        None,
        min=1,
        max=100,
        help="Seeds per architecture for every proxy setting and the reference (default 2): "
        "the reference's seed-to-seed agreement is the ceiling a proxy is read against.",
    ),
    executor: str | None = typer.Option(
        None, help="Where the runs go: inline (default) | subprocess | pool | ray | queue."
    ),
    workers: int | None = typer.Option(
        None, min=1, max=L.MAX_WORKERS, help="pool: concurrent CPU workers."
    ),
    trials_per_gpu: int | None = typer.Option(
        None, min=1, max=64, help="pool/ray: runs packed on one GPU."
    ),
    max_retries: int | None = typer.Option(
        None, min=0, max=10, help="A killed worker is tried again (2)."
    ),
    ray_address: str | None = typer.Option(None, help="ray: an existing cluster's address."),
    storage: str | None = typer.Option(None, help="queue: the database of the job queue."),
    device: str = typer.Option("auto", help="auto | cpu | cuda[:N]"),
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
        refuse_on_resume(ctx, allowed=("dry_run",))
        config = pc.load_config(resume)
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
    show_summary(summary)
    console.print(
        f"Files: {run_dir} ({summary_mod.SUMMARY_MD}, {summary_mod.SCATTER_FILE}, "
        f"{pc.TABLE_NAME}.csv, {pc.TABLE_NAME}.json)"
    )


def command_line() -> str:
    """This process's command line as typed (recorded with the table it builds)."""
    return shlex.join(["diffnas", *sys.argv[1:]])


def show_summary(summary: dict) -> None:
    from diffnas.experiments import proxy_summary as summary_mod

    wide = output_console()
    table = Table(
        *summary_mod.TABLE_HEADER,
        title=escape(  # "FID[classifier]" is text, not markup
            f"Proxy settings against {summary['reference_label']} "
            f"({summary['finished']} of {summary['archs']} architectures, "
            f"{len(summary['seeds'])} seed(s))"
        ),
    )
    for row in summary_mod.table_rows(summary):
        table.add_row(*map(escape, row))
    wide.print(table)
    labels = {r["setting"]: r["label"] for r in summary["settings"]}
    if summary["best"]:
        wide.print(f"* best Kendall tau: {labels[summary['best']]}")
        wide.print(
            f"$ cheapest within {summary_mod.CLOSE_TO_BEST} of it: {labels[summary['cheapest_close_to_best']]}"
        )
