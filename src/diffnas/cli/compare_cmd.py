"""`diffnas compare`: proposers x seeds on one task; best so far, and what each search hands back."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from diffnas import limits as L
from diffnas.console import output_console
from diffnas.runs import next_run_dir, refuse_on_resume

console = output_console()


def compare(
    ctx: typer.Context,
    proposers: str | None = typer.Option(
        None,
        help="Comma-separated: diffnas, llm-no-memory, random, tpe, evolution "
        "(default random,tpe,evolution).",
    ),
    seeds: int | None = typer.Option(
        None, min=1, max=L.MAX_SEEDS, help="Seeds per proposer: 0 .. N-1 (default 3)."
    ),
    space: str | None = typer.Option(None, help="Space preset or YAML file (default tiny)."),
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
    rounds: int | None = typer.Option(
        None, min=1, max=L.MAX_ROUNDS, help="Proposal rounds R of every search (default 3)."
    ),
    per_round: int | None = typer.Option(
        None, min=1, max=32, help="Candidates per round K (default 2)."
    ),
    proxy_steps: int | None = typer.Option(
        None, min=1, max=L.MAX_TRAIN_STEPS, help="Proxy recipe steps (default 20k)."
    ),
    proxy_batch_size: int | None = typer.Option(
        None, min=1, max=L.MAX_BATCH_SIZE, help="Proxy batch size (default 128)."
    ),
    metric: str | None = typer.Option(None, help="Proxy score: rfid (default) | kid | loss."),
    halving_rungs: int | None = typer.Option(
        None, help="Successive halving in every search: fidelity levels (default 1 = off)."
    ),
    halving_eta: int | None = typer.Option(
        None, help="Successive halving: about 1 in eta goes on per rung (default 3)."
    ),
    score_samples: int | None = typer.Option(
        None, min=2, max=L.MAX_SAMPLES, help="Proxy score: generated images N."
    ),
    score_steps: int | None = typer.Option(
        None, min=1, max=L.MAX_SAMPLER_STEPS, help="Proxy score: sampler steps S."
    ),
    extractor: str | None = typer.Option(None, help="classifier (default) | inception"),
    inception_weights: str | None = typer.Option(None, help="FID Inception weights file."),
    llm: str | None = typer.Option(
        None, help="For the LLM proposers: local | openai:MODEL | anthropic:MODEL"
    ),
    base_url: str | None = typer.Option(None, help="OpenAI- or Anthropic-compatible endpoint."),
    api_key_env: str | None = typer.Option(
        None, help="Environment variable with the API key (never stored)."
    ),
    structured: str | None = typer.Option(
        None,
        help="openai: auto (default: json_schema, stepping down to what the server takes) | json_schema | schema_object (llama.cpp) | guided_json (vLLM) | json_object | text",
    ),
    llm_max_usd: float | None = typer.Option(
        None, min=0.0, max=L.MAX_LLM_USD, help="Hard LLM budget of each search in USD (estimated)."
    ),
    time_budget: float | None = typer.Option(
        None,
        min=0.0,
        max=L.MAX_DURATION_S,
        help="Each search stops proposing after this many seconds.",
    ),
    executor: str | None = typer.Option(
        None,
        help="inline (default) | subprocess | pool | table:NAME|PATH (every evaluation looked "
        "up in a table of `diffnas tabulate`: each search judged by its regret to the optimum).",
    ),
    promote: int | None = typer.Option(
        None,
        min=0,
        max=L.MAX_PROMOTE,
        help="Top-k of each search trained with the final recipe (default 0); without a table "
        "the reference score of what a search hands back is its final score.",
    ),
    final_steps: int | None = typer.Option(
        None, min=1, max=L.MAX_TRAIN_STEPS, help="Final recipe: steps (with --promote)."
    ),
    fid_samples: int | None = typer.Option(
        None, min=2, max=L.MAX_SAMPLES, help="Final FID: generated images (with --promote)."
    ),
    fid_steps: int | None = typer.Option(
        None, min=1, max=L.MAX_SAMPLER_STEPS, help="Final FID: sampler steps (with --promote)."
    ),
    device: str | None = typer.Option(None, help="auto (default) | cpu | cuda[:N]"),
    runs: Path = typer.Option(Path("runs"), help="Folder of numbered run folders."),
    resume: Path | None = typer.Option(
        None, help="Continue the comparison in this run folder with its saved options."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print the options and the searches; run nothing."
    ),
) -> None:
    """Run one search per proposer and seed with the same budget; judge what each hands back."""
    from diffnas.experiments import compare as cmp  # torch and up: cli/__init__.py

    if resume is not None:
        refuse_on_resume(ctx, allowed=("dry_run",))
        config = cmp.load_config(resume)
    else:
        options = {k: v for k, v in ctx.params.items() if k not in ("runs", "resume", "dry_run")}
        config = cmp.build_config(options)
    # devices, data and scoring are checked there, by the plan every search runs
    config, _ = cmp.prepare(config, dry_run=dry_run)
    if dry_run:
        console.print_json(config.model_dump_json())
        console.print("searches: " + ", ".join(name for _, _, name in config.runs()))
        return
    run_dir = resume or next_run_dir(runs, "compare", Path(config.search.space).stem)
    console.print(f"run folder: [bold]{escape(str(run_dir))}[/bold]")
    summary = cmp.run_compare(config, run_dir, console)
    wide = output_console()
    title = escape(f"Best {summary['score_label']} found, over seeds")  # "[classifier]" is text
    table = Table(*cmp.TABLE_HEADER, title=title)
    for row in cmp.table_rows(summary):
        table.add_row(*map(escape, row))
    wide.print(table)
    print_judged(summary)
    console.print(
        f"Files: {escape(str(run_dir))} ({cmp.COMPARE_MD}, {cmp.COMPARE_PNG}, one folder per search)"
    )


def print_judged(summary: dict) -> None:
    """What the searches hand back: per proposer, and who beats whom."""
    from diffnas.experiments import regret

    judged = summary["judged"]
    wide = output_console()
    where = f"table {judged['table']!r}" if judged["table"] else "final training"
    title = escape(f"What each search hands back, by {judged['reference_label']} ({where})")
    table = Table(*regret.JUDGED_HEADER, title=title)
    for row in regret.judged_rows(summary):
        table.add_row(*map(escape, row))
    wide.print(table)
    notes = {s["note"] for s in judged["searches"].values() if s["note"]}
    for note in sorted(notes):
        console.print(escape(f"no reference score: {note}"))
    if judged["beats_on"] is not None:
        header, rows = regret.beats_rows(summary)
        beats = Table(*header, title=escape(f"P(row beats column), by final {judged['beats_on']}"))
        for row in rows:
            beats.add_row(*map(escape, row))
        wide.print(beats)
