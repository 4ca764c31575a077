"""`diffnas search` (run, resume, replay, dry-run) and `diffnas status RUN_DIR`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from pydantic import ValidationError
from rich.markup import escape
from rich.table import Table

from diffnas import limits as L
from diffnas.console import output_console
from diffnas.errors import UserError, first_field, pydantic_message
from diffnas.runs import given_options, next_run_dir, refuse_on_resume
from diffnas.search.defaults import SEARCH_DEFAULTS as D

if TYPE_CHECKING:  # torch and the layers on it load in the command (cli/__init__.py)
    from diffnas.execute.job import EvalSpec
    from diffnas.search.config import SearchConfig
    from diffnas.search.plan import SearchPlan

console = output_console()


def _config_error(err: ValidationError) -> UserError:
    return UserError(pydantic_message(err, "search option"), field=first_field(err, "search"))


def search(
    ctx: typer.Context,
    space: str = typer.Option(
        D["space"], help="Space preset (tiny, cifar10-ddpm, cifar10-iddpm) or YAML file."
    ),
    data: str = typer.Option(
        D["data"], help="digits | cifar10[:ROOT] | npz:PATH | PATH.npz | imagefolder:DIR"
    ),
    data_subset: int | None = typer.Option(
        None, min=1, max=L.MAX_IMAGES, help="Train on a deterministic subset of N images."
    ),
    data_image_size: int | None = typer.Option(
        None,
        min=4,
        max=L.MAX_IMAGE_SIZE,
        help="Resize the images to this size (e.g. fashion-mnist's 28 to the tiny space's 16).",
    ),
    llm: str = typer.Option(D["llm"], help="local | openai:MODEL | anthropic:MODEL"),
    base_url: str | None = typer.Option(
        None, help="OpenAI- or Anthropic-compatible endpoint (vLLM, Ollama, ...)."
    ),
    api_key_env: str | None = typer.Option(
        None, help="Environment variable with the API key (never stored)."
    ),
    structured: str | None = typer.Option(
        None,
        help="openai: auto (default: json_schema, stepping down to what the server takes) | json_schema | schema_object (llama.cpp) | guided_json (vLLM) | json_object | text",
    ),
    llm_timeout: float = typer.Option(
        D["llm_timeout_s"],
        min=0.001,
        max=L.MAX_LLM_TIMEOUT_S,
        help="Seconds before one LLM request times out.",
    ),
    llm_attempts: int = typer.Option(
        D["llm_attempts"],
        min=1,
        max=20,
        help="Tries per LLM request (timeouts, 429, 5xx) before the round fails.",
    ),
    proposer: str = typer.Option(
        D["proposer"], help="diffnas | llm-no-memory | random | tpe | nsga2 | evolution"
    ),
    rounds: int = typer.Option(D["rounds"], min=1, max=L.MAX_ROUNDS, help="Proposal rounds R."),
    per_round: int = typer.Option(D["per_round"], min=1, max=32, help="Candidates per round K."),
    schedule: str = typer.Option(
        D["schedule"],
        help="rounds: ask for K, evaluate them together, ask again | async: keep every executor "
        "slot busy, asking as soon as one frees (rounds x K candidates in all).",
    ),
    max_repairs: int = typer.Option(
        D["max_repairs"], min=0, max=10, help="Repair turns per round for invalid proposals."
    ),
    temperature: float = typer.Option(
        D["temperature"], min=0.0, max=2.0, help="LLM sampling temperature."
    ),
    llm_mode: str = typer.Option(
        D["llm_mode"],
        help="full: the LLM writes whole architectures | edit: it edits one field of a "
        "remembered one, random fallbacks fill what it leaves open | auto: edit for local, full otherwise.",
    ),
    seed: int = typer.Option(
        D["seed"], min=0, max=L.MAX_SEED, help="Seeds proposals, training and sampling."
    ),
    proxy_steps: int | None = typer.Option(
        None, min=1, max=L.MAX_TRAIN_STEPS, help="Proxy recipe: optimizer steps (default 20k)."
    ),
    proxy_batch_size: int | None = typer.Option(
        None, min=1, max=L.MAX_BATCH_SIZE, help="Proxy recipe: batch size (default 128)."
    ),
    metric: str = typer.Option(
        "rfid", help="Proxy score: rfid | kid | loss (final training loss, no sampling)."
    ),
    score_samples: int = typer.Option(
        1000, min=2, max=L.MAX_SAMPLES, help="Proxy score: generated images N."
    ),
    score_steps: int = typer.Option(
        50, min=1, max=L.MAX_SAMPLER_STEPS, help="Proxy score: DDIM steps S (at most T)."
    ),
    halving_rungs: int = typer.Option(
        D["halving_rungs"],
        min=1,
        max=6,
        help="Successive halving (Optuna's pruner): score each candidate at this many fidelity "
        "levels, the last the whole proxy run; 1 = off.",
    ),
    halving_eta: int = typer.Option(
        D["halving_eta"],
        min=2,
        max=8,
        help="Successive halving: about 1 in eta candidates goes on at each rung.",
    ),
    extractor: str = typer.Option(
        "classifier", help="Features: classifier (offline, labelled data) | inception."
    ),
    inception_weights: str | None = typer.Option(
        None, help="FID Inception weights file (offline use)."
    ),
    promote: int = typer.Option(
        D["promote"],
        min=0,
        max=L.MAX_PROMOTE,
        help="Top-k candidates trained with the final recipe and scored by FID (two objectives: "
        "up to k members of the Pareto front).",
    ),
    objectives: str = typer.Option(
        "score",
        help="score | score,latency | score,macs: two objectives make an Optuna multi-objective "
        "study (both minimised) whose Pareto front is promoted.",
    ),
    budget_latency_ms: float | None = typer.Option(
        None,
        help="Bound the measured latency of one forward pass (ms) at the gate, instead of the "
        "space's GMACs band.",
    ),
    latency_device: str = typer.Option(
        "auto", help="Latency measured on: auto (the proxy's --device) | cpu | cuda | cuda:N."
    ),
    latency_batch: int = typer.Option(1, help="Latency: images per forward pass."),
    latency_dtype: str = typer.Option(
        "auto",
        help="Latency: auto (as the sampler: bf16 on CUDA, fp32 on CPU) | fp32 | bf16 | fp16.",
    ),
    # bounds checked by SearchConfig (latency_budget_ms, latency.*): the message names the field
    latency_runs: int = typer.Option(10, help="Latency: timed passes (the median is kept)."),
    latency_warmup: int = typer.Option(3, help="Latency: untimed passes first."),
    latency_threads: int | None = typer.Option(
        None, help="Latency on CPU: torch threads (default: those of the search's evaluations)."
    ),
    latency_channels_last: bool | None = typer.Option(
        None,
        "--latency-channels-last/--no-latency-channels-last",
        help="Latency: channels-last weights (default: as the proxy recipe on that device).",
    ),
    latency_compile: bool = typer.Option(
        False, "--latency-compile", help="Latency: torch.compile the model (the sampler does not)."
    ),
    final_recipe: str = typer.Option("full", help="Final recipe: full | proxy."),
    final_steps: int | None = typer.Option(
        None, min=1, max=L.MAX_TRAIN_STEPS, help="Final recipe: steps (default: the paper's)."
    ),
    final_batch_size: int | None = typer.Option(
        None, min=1, max=L.MAX_BATCH_SIZE, help="Final recipe: batch size."
    ),
    recipe_set: list[str] = typer.Option(
        [], "--set", help="Recipe field for proxy and final runs, key=value (e.g. bf16_cpu=true)."
    ),
    bf16_cpu: bool | None = typer.Option(
        None,
        "--bf16-cpu/--no-bf16-cpu",
        help="bf16 autocast on CPU (default: on where the CPU has native bf16).",
    ),
    fid_samples: int = typer.Option(
        10_000, min=2, max=L.MAX_SAMPLES, help="Final FID: generated images."
    ),
    fid_steps: int = typer.Option(
        100, min=1, max=L.MAX_SAMPLER_STEPS, help="Final FID: DDIM steps (at most T)."
    ),
    llm_max_tokens: int | None = typer.Option(
        None, min=1, max=L.MAX_LLM_TOKENS, help="Hard LLM budget in tokens."
    ),
    llm_max_usd: float | None = typer.Option(
        None, min=0.0, max=L.MAX_LLM_USD, help="Hard LLM budget in USD (estimated)."
    ),
    time_budget: float | None = typer.Option(
        None, min=0.0, max=L.MAX_DURATION_S, help="Stop proposing after this many seconds."
    ),
    prompt_dir: str | None = typer.Option(
        None, help="Folder of prompt templates overriding the bundled ones."
    ),
    executor: str = typer.Option(
        D["executor"],
        help="inline | subprocess | pool (concurrent worker processes on this machine's GPUs or "
        "CPU cores) | ray (Ray tasks, local or --ray-address) | queue (`diffnas worker` "
        "processes on any machine, pulling from --storage) | table:NAME|PATH (every evaluation "
        "looked up in a table of `diffnas tabulate`: a search in seconds, the optimum known).",
    ),
    workers: int | None = typer.Option(
        None,
        min=1,
        max=L.MAX_WORKERS,
        help="pool without GPU: concurrent CPU workers (cores split between them).",
    ),
    trials_per_gpu: int = typer.Option(
        D["trials_per_gpu"],
        min=1,
        max=64,
        help="pool/ray: small candidates packed on one GPU at once (by measured cost).",
    ),
    max_retries: int = typer.Option(
        D["max_retries"],
        min=0,
        max=10,
        help="A worker killed mid-candidate is tried again up to this often, then failed.",
    ),
    ray_address: str | None = typer.Option(
        None, help="ray: address of an existing Ray cluster (default: a local instance)."
    ),
    storage: str | None = typer.Option(
        None, help="Optuna storage URL (default SQLite in the run folder)."
    ),
    screen: int | None = typer.Option(
        None,
        help="Screening before training: each round obtains M candidates for its K slots, "
        "--screener ranks those that pass the gate, only the top K are trained (off by default).",
    ),
    screener: str = typer.Option(
        D["screener"],
        help="With --screen: gp (a Gaussian process on the measured trials, by expected "
        "improvement) | llm (the LLM predicts each candidate's score) | llm+gp (the LLM ranks, "
        "the GP vetoes; trust shifts to the GP as trials accumulate).",
    ),
    warm_start: list[Path] = typer.Option(
        [],
        "--warm-start",
        help="Run folder of an earlier search of the same space (repeat for several): its "
        "measured trials enter this search's memory and study without training.",
    ),
    device: str = typer.Option("auto", help="auto | cpu | cuda[:N]"),
    runs: Path = typer.Option(Path("runs"), help="Folder of numbered run folders."),
    resume: Path | None = typer.Option(
        None, help="Resume the search in this run folder with its saved options."
    ),
    replay: Path | None = typer.Option(
        None, help="Answer LLM requests from this earlier run's record (offline)."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print the plan and its estimated compute; run nothing."
    ),
) -> None:
    """Run the DiffNAS search: an LLM proposes UNets, each is proxy-trained and scored, the best are promoted."""
    from diffnas.execute.job import EvalSpec, ScoreSpec
    from diffnas.execute.table_executor import is_table
    from diffnas.search.config import SearchConfig
    from diffnas.search.loop import SearchRun
    from diffnas.search.plan import SearchPlan, resumed_config, stored_llm_mode
    from diffnas.train.options import parse_sets

    if resume is not None:
        refuse_on_resume(ctx, allowed=("dry_run",))
        config = resumed_config(resume)
        run_dir = resume
    else:
        if replay is not None and not (replay / "llm" / "calls.jsonl").is_file():
            raise UserError(
                f"--replay {str(replay)!r}: no recorded LLM calls (llm/calls.jsonl) there."
            )

        extra, diffusion_sets = parse_sets(recipe_set)
        if bf16_cpu is not None:
            extra = {"bf16_cpu": bf16_cpu, **extra}  # an explicit --set wins, as in `diffnas train`
        if diffusion_sets:
            raise UserError(
                "--set: diffusion.* keys are fixed by the space's objective in a search."
            )

        llm_mode = stored_llm_mode(llm_mode, llm, replay)

        def recipe(steps: int | None, batch: int | None) -> dict:
            sized = {k: v for k, v in (("steps", steps), ("batch_size", batch)) if v is not None}
            return {**extra, **sized}

        try:
            config = SearchConfig(
                space=space, data=data, data_subset=data_subset, data_image_size=data_image_size, llm=llm, base_url=base_url,
                api_key_env=api_key_env, structured=structured, llm_timeout_s=llm_timeout, llm_attempts=llm_attempts, proposer=proposer, rounds=rounds,
                per_round=per_round, max_repairs=max_repairs, temperature=temperature, llm_mode=llm_mode, seed=seed,
                promote=promote, llm_max_tokens=llm_max_tokens, llm_max_usd=llm_max_usd,
                time_budget_s=time_budget, prompt_dir=prompt_dir, executor=executor, storage=storage,
                workers=workers, trials_per_gpu=trials_per_gpu, max_retries=max_retries, ray_address=ray_address,
                replay=str(replay) if replay else None, halving_rungs=halving_rungs, halving_eta=halving_eta, schedule=schedule,
                objectives=objectives, latency_budget_ms=budget_latency_ms,
                latency=dict(  # a dict: an error names latency.FIELD
                    device=latency_device, batch=latency_batch, dtype=latency_dtype, runs=latency_runs,
                    warmup=latency_warmup, threads=latency_threads, channels_last=latency_channels_last,
                    compile=latency_compile,
                ),
                screen=screen, screener=screener, warm_start=[str(p) for p in warm_start],
                proxy=EvalSpec(
                    recipe="proxy", recipe_overrides=recipe(proxy_steps, proxy_batch_size), device=device,
                    score=ScoreSpec(metric=metric, extractor=extractor, num_samples=score_samples,
                                    steps=score_steps, inception_weights=inception_weights),
                ),
                final=EvalSpec(
                    recipe=final_recipe, recipe_overrides=recipe(final_steps, final_batch_size), device=device,
                    score=ScoreSpec(metric="fid", extractor=extractor, num_samples=fid_samples,
                                    steps=fid_steps, inception_weights=inception_weights),
                ),
            )  # fmt: skip
        except ValidationError as err:
            raise _config_error(err) from None
        if is_table(config.executor):
            config = config.model_copy(update={"final": table_final(ctx, config, device)})
        run_dir = None
    plan = SearchPlan(config)
    if dry_run:
        print_plan(plan)
        return
    plan.validate()
    print_notes(plan)
    if run_dir is None:
        run_dir = next_run_dir(runs, "search", f"{Path(config.space).stem}-{config.proposer}")
    console.print(f"run folder: [bold]{escape(str(run_dir))}[/bold]")
    search_run = SearchRun(config, run_dir, console=console)
    summary = search_run.run()
    show_status(run_dir)
    console.print(
        f"stopped: {escape(summary['stop_reason'])}. Files: {escape(str(run_dir))} (study.db, rounds/, trials/, llm/calls.jsonl)"
    )
    if search_run.llm_never_answered:  # not a result: say so in the exit code
        print(
            f"error: the search got no answer from the LLM ({config.llm}"
            + (f" at {config.base_url}" if config.base_url else "")
            + f"); check the endpoint, then diffnas search --resume {run_dir}",
            file=sys.stderr,
        )
        raise typer.Exit(1)


FINAL_OPTIONS = ("final_recipe", "final_steps", "final_batch_size", "fid_samples", "fid_steps")


def table_final(ctx: typer.Context, config: SearchConfig, device: str) -> EvalSpec:
    """A search against a table promotes to the table's reference: its recipe and score."""
    from diffnas.execute.table_executor import load_executor_table

    given = given_options(ctx, ignore=set(ctx.params) - set(FINAL_OPTIONS))
    table = load_executor_table(config.executor)
    if given:
        raise UserError(
            f"--executor {config.executor}: the final training is the table's reference "
            f"({table.meta.reference.label}); drop {', '.join(given)}.",
            field="final",
        )
    return table.meta.reference.spec.model_copy(update={"device": device})


def print_plan(plan: SearchPlan) -> None:
    """The resolved options and a table of the stages with their estimated compute and memory."""
    stages = plan.stages()
    console.print_json(json.dumps(plan.config.model_dump(mode="json")))
    table = Table(
        "stage",
        "count",
        "per candidate",
        "PFLOPs (est.)",
        "memory (est.)",
        title="Plan (FLOPs = 2 x MACs; at the reference's cost)",
    )
    for stage in stages:
        pflops = "-" if stage.pflops is None else f"{stage.pflops:.3g}"
        memory = "-" if stage.memory is None else f"{stage.memory / 2**30:.2f} GiB"
        table.add_row(
            escape(stage.stage), escape(stage.count), escape(stage.per_candidate), pflops, memory
        )
    console.print(table)
    print_notes(plan)


def print_notes(plan: SearchPlan) -> None:
    """The recipes' adaptations as notes, and their warnings in yellow."""
    for note in plan.notes():
        colour = "yellow" if note.startswith("warning:") else "dim"
        console.print(f"[{colour}]{escape(note)}[/{colour}]")


def show_status(run_dir: Path) -> None:
    """The table of trials of a search run folder (80 columns in an 80-column terminal)."""
    from diffnas.report.terminal import print_status

    print_status(run_dir)


def status(run_dir: Path = typer.Argument(..., help="A search run folder.")) -> None:
    """Show the trials of a search (running or finished)."""
    show_status(run_dir)
