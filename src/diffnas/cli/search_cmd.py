"""`diffnas search` (run, resume, replay, dry-run) and `diffnas status RUN_DIR`."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from diffnas.cli.checks import check_device, check_scoring, refuse_on_resume
from diffnas.cli.train_cmd import check_data_fits, parse_sets
from diffnas.data.datasets import DataSpec, load_images, parse_data
from diffnas.errors import UserError, first_field, pydantic_message
from diffnas.execute.executors import check_executor
from diffnas.execute.job import EvalSpec, ScoreSpec
from diffnas.model.cost import measure_cost
from diffnas.propose.base import DEFAULT_MAX_REPAIRS
from diffnas.propose.llm import parse_spec
from diffnas.propose.llm.factory import check_structured
from diffnas.propose.registry import LLM_PROPOSERS, PROPOSERS, resolve_llm_mode
from diffnas.report.terminal import print_status
from diffnas.runs import OPTIONS_FILE, next_run_dir, read_json, read_run_json
from diffnas.search.config import SearchConfig
from diffnas.search.loop import SearchRun
from diffnas.space.references import get_reference
from diffnas.space.search_space import load_space

console = Console()


def _config_error(err: ValidationError) -> UserError:
    return UserError(pydantic_message(err, "search option"), field=first_field(err, "search"))


def _resolved_llm_mode(llm_mode: str, llm: str, replay: Path | None) -> str:
    """The LLM mode to store in options.json: resolved, so --resume asks in the same mode; under
    --replay, `auto` means the mode of the recorded run, so the requests match its record."""
    if llm_mode == "auto" and replay is not None:
        try:
            recorded = read_json(replay / OPTIONS_FILE)
        except (OSError, ValueError):
            recorded = None
        if isinstance(recorded, dict):  # a run from before llm_mode existed asked in full
            return resolve_llm_mode(
                str(recorded.get("llm_mode", "full")), str(recorded.get("llm", llm))
            )
    return resolve_llm_mode(llm_mode, llm)


def search(
    ctx: typer.Context,
    space: str = typer.Option(
        "tiny", help="Space preset (tiny, cifar10-ddpm, cifar10-iddpm) or YAML file."
    ),
    data: str = typer.Option(
        "digits", help="digits | cifar10[:ROOT] | npz:PATH | PATH.npz | imagefolder:DIR"
    ),
    data_subset: int | None = typer.Option(
        None, help="Train on a deterministic subset of N images."
    ),
    llm: str = typer.Option("local", help="local | openai:MODEL | anthropic:MODEL"),
    base_url: str | None = typer.Option(
        None, help="OpenAI- or Anthropic-compatible endpoint (vLLM, Ollama, ...)."
    ),
    api_key_env: str | None = typer.Option(
        None, help="Environment variable with the API key (never stored)."
    ),
    structured: str | None = typer.Option(None, help="openai: json_schema | json_object | text"),
    llm_timeout: float = typer.Option(120.0, help="Seconds before one LLM request times out."),
    llm_attempts: int = typer.Option(
        5, help="Tries per LLM request (timeouts, 429, 5xx) before the round fails."
    ),
    proposer: str = typer.Option(
        "diffnas", help="diffnas | llm-no-memory | random | tpe | evolution"
    ),
    rounds: int = typer.Option(3, help="Proposal rounds R."),
    per_round: int = typer.Option(2, help="Candidates per round K."),
    max_repairs: int = typer.Option(
        DEFAULT_MAX_REPAIRS, help="Repair turns per round for invalid proposals."
    ),
    temperature: float = typer.Option(0.7, help="LLM sampling temperature."),
    llm_mode: str = typer.Option(
        "auto",
        help="full: the LLM writes whole architectures | edit: it edits one field of a "
        "remembered one, random fallbacks fill what it leaves open | auto: edit for local, full otherwise.",
    ),
    seed: int = typer.Option(0, help="Seeds proposals, training and sampling."),
    proxy_steps: int | None = typer.Option(
        None, help="Proxy recipe: optimizer steps (default 20k)."
    ),
    proxy_batch_size: int | None = typer.Option(
        None, help="Proxy recipe: batch size (default 128)."
    ),
    metric: str = typer.Option("rfid", help="Proxy score: rfid | kid."),
    score_samples: int = typer.Option(1000, help="Proxy score: generated images N."),
    score_steps: int = typer.Option(50, help="Proxy score: DDIM steps S."),
    extractor: str = typer.Option(
        "classifier", help="Features: classifier (offline, labelled data) | inception."
    ),
    inception_weights: str | None = typer.Option(
        None, help="FID Inception weights file (offline use)."
    ),
    promote: int = typer.Option(
        1, help="Top-k candidates trained with the final recipe and scored by FID."
    ),
    final_recipe: str = typer.Option("full", help="Final recipe: full | proxy."),
    final_steps: int | None = typer.Option(
        None, help="Final recipe: steps (default: the paper's)."
    ),
    final_batch_size: int | None = typer.Option(None, help="Final recipe: batch size."),
    recipe_set: list[str] = typer.Option(
        [], "--set", help="Recipe field for proxy and final runs, key=value (e.g. bf16_cpu=true)."
    ),
    bf16_cpu: bool | None = typer.Option(
        None,
        "--bf16-cpu/--no-bf16-cpu",
        help="bf16 autocast on CPU (default: on where the CPU has native bf16).",
    ),
    fid_samples: int = typer.Option(10_000, help="Final FID: generated images."),
    fid_steps: int = typer.Option(100, help="Final FID: DDIM steps."),
    llm_max_tokens: int | None = typer.Option(None, help="Hard LLM budget in tokens."),
    llm_max_usd: float | None = typer.Option(None, help="Hard LLM budget in USD (estimated)."),
    time_budget: float | None = typer.Option(None, help="Stop proposing after this many seconds."),
    prompt_dir: str | None = typer.Option(
        None, help="Folder of prompt templates overriding the bundled ones."
    ),
    executor: str = typer.Option(
        "inline",
        help="inline | subprocess | pool (concurrent worker processes on this machine's GPUs or "
        "CPU cores) | ray (Ray tasks, local or --ray-address).",
    ),
    workers: int | None = typer.Option(
        None, help="pool without GPU: concurrent CPU workers (cores split between them)."
    ),
    trials_per_gpu: int = typer.Option(
        1, help="pool/ray: small candidates packed on one GPU at once (by measured cost)."
    ),
    max_retries: int = typer.Option(
        2, help="A worker killed mid-candidate is tried again up to this often, then failed."
    ),
    ray_address: str | None = typer.Option(
        None, help="ray: address of an existing Ray cluster (default: a local instance)."
    ),
    storage: str | None = typer.Option(
        None, help="Optuna storage URL (default SQLite in the run folder)."
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
    if resume is not None:
        refuse_on_resume(ctx, allowed=("dry_run",))
        config = load_search_config(resume, "--resume")
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

        llm_mode = _resolved_llm_mode(llm_mode, llm, replay)

        def recipe(steps: int | None, batch: int | None) -> dict:
            sized = {k: v for k, v in (("steps", steps), ("batch_size", batch)) if v is not None}
            return {**extra, **sized}

        try:
            config = SearchConfig(
                space=space, data=data, data_subset=data_subset, llm=llm, base_url=base_url,
                api_key_env=api_key_env, structured=structured, llm_timeout_s=llm_timeout, llm_attempts=llm_attempts, proposer=proposer, rounds=rounds,
                per_round=per_round, max_repairs=max_repairs, temperature=temperature, llm_mode=llm_mode, seed=seed,
                promote=promote, llm_max_tokens=llm_max_tokens, llm_max_usd=llm_max_usd,
                time_budget_s=time_budget, prompt_dir=prompt_dir, executor=executor, storage=storage,
                workers=workers, trials_per_gpu=trials_per_gpu, max_retries=max_retries, ray_address=ray_address,
                replay=str(replay) if replay else None,
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
        run_dir = None
    plan = SearchPlan(config)
    if dry_run:
        plan.print()
        return
    plan.validate()
    if run_dir is None:
        run_dir = next_run_dir(runs, "search", f"{Path(config.space).stem}-{config.proposer}")
    console.print(f"run folder: [bold]{run_dir}[/bold]")
    summary = SearchRun(config, run_dir, console=console).run()
    show_status(run_dir)
    console.print(
        f"stopped: {escape(summary['stop_reason'])}. Files: {run_dir} (study.db, rounds/, trials/, llm/calls.jsonl)"
    )


def load_search_config(run_dir: Path, option: str = "") -> SearchConfig:
    """The saved options of a search run folder, or a `UserError` saying why there are none."""
    options = run_dir / OPTIONS_FILE
    named = f"{option} {str(run_dir)!r}".strip()
    if not options.is_file():
        raise UserError(
            f"{named}: no {OPTIONS_FILE} there; is it a search run folder?", field="run_dir"
        )
    raw = read_run_json(options, "search options")
    try:
        return SearchConfig.model_validate(raw)
    except ValidationError as err:
        if isinstance(raw, dict) and {"arch", "recipe"} <= raw.keys():
            raise UserError(
                f"{named} is a train run folder, not a search's; "
                "continue it with diffnas train --resume",
                field="run_dir",
            ) from None
        raise UserError(
            pydantic_message(err, f"search options in {str(options)!r}"),
            field=first_field(err, "search"),
        ) from None


class SearchPlan:
    """What a search will do and roughly what it costs, before anything runs."""

    def __init__(self, config: SearchConfig) -> None:
        self.config = config
        self.space = load_space(config.space)

    def validate(self) -> None:
        """Every option checked before anything runs, each error naming its option."""
        cfg = self.config
        if cfg.proposer not in PROPOSERS:
            raise UserError(
                f"--proposer {cfg.proposer!r} is unknown; allowed: {', '.join(PROPOSERS)}.",
                field="proposer",
            )
        if cfg.proposer in LLM_PROPOSERS and not cfg.replay:
            provider, _ = parse_spec(cfg.llm)
            check_structured(provider, cfg.structured)
        for spec in (cfg.proxy, cfg.final):
            check_device(spec.device)
            spec.train_recipe(self.space.objective)  # raises UserError for bad overrides
        check_executor(cfg.executor)
        # The images are read now, so an unreadable file or a size the space cannot take is
        # refused before a run folder exists rather than by the first candidate's training.
        images = load_images(self.data_spec())
        check_data_fits(
            images,
            (self.space.in_channels, self.space.image_size),
            f"space {self.space.name!r}",
            "use a --space made for this data",
        )
        for spec in (cfg.proxy, cfg.final):
            check_scoring(images, spec.score.extractor, spec.score.inception_weights)

    def data_spec(self) -> DataSpec:
        """The training images as the search reads them (`SearchRun` applies the same options)."""
        cfg = self.config
        data = parse_data(cfg.data)
        if cfg.data_subset:
            data = data.model_copy(update={"subset": cfg.data_subset})
        if cfg.data_image_size:
            data = data.model_copy(update={"image_size": cfg.data_image_size})
        return data

    def print(self) -> None:
        cfg, space = self.config, self.space
        self.validate()
        ref = get_reference(space.reference) if space.reference else None
        macs = measure_cost(ref).macs if ref else int(space.budget.max_gmacs * 1e9)
        proxy = cfg.proxy.train_recipe(space.objective)
        final = cfg.final.train_recipe(space.objective)
        n_candidates = cfg.rounds * cfg.per_round
        # training ~ 3 forward passes (forward + backward) per image; sampling: one per image per step
        proxy_flops = (
            2
            * macs
            * (
                3 * proxy.steps * proxy.batch_size
                + cfg.proxy.score.num_samples * (cfg.proxy.score.steps or 1000)
            )
        )
        final_flops = (
            2
            * macs
            * (
                3 * final.steps * final.batch_size
                + cfg.final.score.num_samples * (cfg.final.score.steps or 1000)
            )
        )
        console.print_json(json.dumps(cfg.model_dump(mode="json")))
        table = Table(
            "stage",
            "count",
            "per candidate",
            "PFLOPs (est.)",
            title="Plan (FLOPs = 2 x MACs; at the reference's cost)",
        )
        table.add_row(
            "LLM rounds", f"{cfg.rounds} x {cfg.per_round}", f"{cfg.proposer} via {cfg.llm}", "-"
        )
        table.add_row(
            "proxy train + score", f"<= {n_candidates}",
            f"{proxy.steps} steps x {proxy.batch_size}; {cfg.proxy.score.label} N={cfg.proxy.score.num_samples} S={cfg.proxy.score.steps}",
            f"{n_candidates * proxy_flops / 1e15:.3g}",
        )  # fmt: skip
        table.add_row(
            "final train + FID", str(cfg.promote),
            f"{final.steps} steps x {final.batch_size}; FID N={cfg.final.score.num_samples} S={cfg.final.score.steps}",
            f"{cfg.promote * final_flops / 1e15:.3g}",
        )  # fmt: skip
        console.print(table)


def show_status(run_dir: Path) -> None:
    """The table of trials of a search run folder (80 columns in an 80-column terminal)."""
    print_status(run_dir)


def _compute_cell(extra: dict) -> str:
    """A trial's device and device-seconds, e.g. "cuda:0 812 s"."""
    if not extra.get("device_s"):
        return "-"
    return f"{extra.get('device') or '?'} {extra['device_s']:.3g} s"


def status(run_dir: Path = typer.Argument(..., help="A search run folder.")) -> None:
    """Show the trials of a search (running or finished)."""
    show_status(run_dir)
