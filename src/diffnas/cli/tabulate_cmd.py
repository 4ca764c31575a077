"""`diffnas tabulate`: every architecture of a small space x proxy settings and the reference x
seeds, recorded as a table (NAME.csv + NAME.json) that searches can answer from."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import typer
from rich.markup import escape

from diffnas import limits as L
from diffnas.cli import options as opt
from diffnas.console import output_console
from diffnas.runs import (
    OPTIONS_FILE,
    load_options,
    next_run_dir,
    refuse_on_resume,
    was_given,
    write_json,
)

console = output_console()
# the options that say where the runs go, not what they measure: --resume may change them
WHERE_IT_RUNS = ("executor", "workers", "trials_per_gpu", "max_retries", "ray_address", "storage")
# and more reference seeds, which add runs and change no finished one (fewer are refused when
# the table opens)
RESUME_MAY_CHANGE = ("reference_seeds", *WHERE_IT_RUNS)


def tabulate(
    ctx: typer.Context,
    space: str | None = typer.Option(
        None, help="Space preset or YAML file, small enough to enumerate (default micro)."
    ),
    data: opt.Data = None,
    data_subset: opt.DataSubset = None,
    data_image_size: opt.DataImageSize = None,
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
    out: str | None = typer.Option(
        None, "--out", help="The table's name: RUN_DIR/NAME.csv and NAME.json (default SPACE-DATA)."
    ),
    max_archs: int | None = typer.Option(
        None,
        min=1,
        max=100_000,
        help=f"Refuse a space with more choice combinations (default {L.MAX_TABLE_ARCHS}).",
    ),
    runs: Path = typer.Option(Path("runs"), help="Folder of numbered run folders."),
    resume: Path | None = typer.Option(
        None, help="Continue the table in this run folder with its saved options."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print the options, the plan and its compute; run nothing."
    ),
) -> None:
    """Evaluate every architecture of a small space at proxy settings and a reference, N seeds each."""
    from diffnas.execute.table import table_files
    from diffnas.experiments import proxy_summary as summary_mod
    from diffnas.experiments import tabulate as tab

    if resume is not None:
        refuse_on_resume(ctx, allowed=("dry_run", *RESUME_MAY_CHANGE))
        config = load_options(resume, tab.TabulateConfig, kind="tabulate")
        # where the runs go never changes a score (one feature space, deterministic training):
        # a table started on one worker may continue on two, or on a cluster
        moved = {k: ctx.params[k] for k in RESUME_MAY_CHANGE if was_given(ctx, k)}
        if moved:
            config = tab.TabulateConfig.model_validate({**config.model_dump(), **moved})
    else:
        options = {
            k: v for k, v in ctx.params.items() if k not in ("runs", "resume", "dry_run", "out")
        }
        config = tab.build_tabulate_config({**options, "name": out})
    search_space, images = config.check(allow_download=not dry_run)
    archs = tab.enumerate_archs(search_space, config.max_archs)
    if dry_run:
        console.print_json(config.model_dump_json())
        plan = tab.plan(config, search_space, archs)
        if resume is not None:  # what is left of it
            plan |= tab.runs_to_go(
                config, search_space, archs, resume / config.table_name(search_space)
            )
        console.print_json(data=plan)
        return
    run_dir = resume or next_run_dir(runs, "tabulate", Path(config.space).stem)
    console.print(f"run folder: [bold]{escape(str(run_dir))}[/bold]")
    stem = run_dir / config.table_name(search_space)
    tabulation = tab.Tabulation(
        config, search_space, stem, work_dir=run_dir / "archs",
        cache_dir=run_dir.parent / "cache",  # shared with searches under --runs
        log=lambda text: console.print(escape(text)),
    )  # fmt: skip
    meta = tabulation.start(archs, images.fingerprint, shlex.join(["diffnas", *sys.argv[1:]]))
    # saved once the table accepted them (a refused --reference-seeds leaves them as they were)
    write_json(run_dir / OPTIONS_FILE, config.model_dump(mode="json"))
    table = tabulation.run(meta)
    # what proxy-check concludes, for the whole space: every setting's tau next to the ceiling
    summary = summary_mod.summarise(table)
    summary_mod.write_summary(run_dir, summary)
    summary_mod.print_summary(summary, output_console())
    csv_path, json_path = table_files(stem)
    finished = sum(r.status == "complete" for r in table.rows)
    console.print(
        f"{len(table.rows)} rows ({finished} complete) of {len(table.archs())} architectures x "
        f"{len(table.settings())} settings x {len(table.seeds)} seeds. Files: {csv_path}, "
        f"{json_path}, {run_dir / summary_mod.SUMMARY_MD}, {run_dir / summary_mod.SCATTER_FILE}"
    )
