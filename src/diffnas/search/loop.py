"""The DiffNAS loop: set up a search in its run folder, run its schedule, promote the best.

- set-up (`SearchRun._set_up`): the study (`diffnas.search.study`), options.json and env.json,
  the latency meter, a warm start's trials, the LLM backend, screener and proposer;
- the schedule (`diffnas.search.schedules`): requests to the proposer (`diffnas.search.requests`:
  each answer checked at the gate and saved as `rounds/round-RRR.json` before any trial exists)
  and the evaluation of their accepted candidates as Optuna trials in `trials/NNNNN/`
  (`diffnas.search.trials`; rung by rung under successive halving, `diffnas.search.halving`),
  round by round (`rounds`) or one free slot at a time (`async`);
- promotion (`SearchRun._promote`): after the last round (or the time/LLM budget), the top-k
  by proxy score (the Pareto front with two objectives) are trained with the final recipe and
  scored in `final/NNNNN/`; `summary.json` (`diffnas.search.summary`) closes the search.

Resume: a kill at any moment leaves the study, the round files, the trainer's checkpoints and
the recorded LLM calls. Re-running the same loop on the run folder skips finished rounds and
trials, finishes an interrupted trial from its checkpoint (same trial number), and answers
LLM requests it has already paid for from the record.
"""

from __future__ import annotations

import fcntl
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from diffnas import storage
from diffnas.console import output_console
from diffnas.data.datasets import DataSpec
from diffnas.errors import UserError
from diffnas.execute.base import Executor
from diffnas.execute.factory import make_executor
from diffnas.gate.check import LatencyCheck
from diffnas.gate.entry import ORIGINS
from diffnas.layout import EVENTS_FILE, LOCK_FILE, trial_dir
from diffnas.progress import task as progress_task
from diffnas.propose.base import Proposer
from diffnas.propose.llm import LLMBackend, RetryPolicy, make_backend
from diffnas.propose.llm.ledger import LLMBudget
from diffnas.propose.llm.record import calls_path, read_calls
from diffnas.propose.registry import LLM_PROPOSERS, make_proposer, resolve_llm_mode
from diffnas.propose.screen import LLM_SCREENERS, Screener, make_screener
from diffnas.runs import OPTIONS_FILE, append_jsonl, load_options, write_json
from diffnas.search import halving, objectives, warm_start
from diffnas.search import study as study_mod
from diffnas.search import summary as summary_mod
from diffnas.search.config import SearchConfig
from diffnas.search.requests import Requests, check_round_files
from diffnas.search.schedules import SCHEDULES, Schedule, TimeBudget
from diffnas.search.summary import SUMMARY_FILE as SUMMARY_FILE  # importers read it from here
from diffnas.search.trials import CandidateTrials, proxy_rungs
from diffnas.space.search_space import SearchSpace, load_space
from diffnas.train.latency import LatencyMeter, Measure


class SearchRun:
    """One search in one run folder; `run()` is idempotent and resumes where a previous call stopped."""

    def __init__(
        self,
        config: SearchConfig,
        run_dir: Path,
        *,
        console: Console | None = None,
        llm_backend: LLMBackend | None = None,
        executor: Executor | None = None,
        screener: Screener | None = None,
        sleep: Callable[[float], None] = time.sleep,
        measure_latency: Measure | None = None,
    ) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.console = console or output_console()
        self.space: SearchSpace = load_space(config.space)
        self.data: DataSpec = config.data_spec()
        self.executor = executor or make_executor(
            config.executor,
            workers=config.workers,
            trials_per_gpu=config.trials_per_gpu,
            max_retries=config.max_retries,
            ray_address=config.ray_address,
            storage=config.storage,
        )
        self._llm_backend = llm_backend  # a test's stand-in; else made from --llm
        self._screener = screener  # a test's stand-in; else made from --screener
        self._sleep = sleep
        self._measure_latency = measure_latency  # None: the real timing (tests inject a fake)
        self.backend: LLMBackend | None = None  # set by `run` when the search asks an LLM
        self.requests: Requests | None = None  # the requests to the proposer, set by `run`
        self.latency: LatencyCheck | None = None  # set by `run` when latency is measured
        self.meter: LatencyMeter | None = None  # its cache of measurements

    @property
    def llm_never_answered(self) -> bool:
        """Every request of this run failed because the LLM was unavailable (a wrong
        --base-url, a server down): the search trained nothing it was asked for."""
        return self.requests is not None and self.requests.never_answered

    def run(self) -> dict[str, Any]:
        """Set up, run the schedule, promote; summary.json's content."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / LOCK_FILE, "a") as lock, study_mod.quiet_optuna():
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UserError(
                    f"run folder {str(self.run_dir)!r} is in use by another diffnas search."
                ) from None
            try:
                return self._run_locked()
            finally:
                self.executor.close()  # a pool's threads, a Ray connection

    def _run_locked(self) -> dict[str, Any]:
        requests = self._set_up()
        cfg = self.config
        schedule = Schedule(
            requests, self.trials, self.executor, cfg.rounds, cfg.per_round,
            TimeBudget(cfg.time_budget_s, start=time.monotonic()),
            replay=Path(cfg.replay) if cfg.replay else None,
        )  # fmt: skip
        self._event(
            "start",
            rounds=cfg.rounds,
            per_round=cfg.per_round,
            schedule=cfg.schedule,
            **({"latency": objectives.latency_record(cfg, self.meter)} if self.meter else {}),
        )
        stop_reason = SCHEDULES[cfg.schedule](schedule)
        if requests.never_answered:
            failed = requests.failed
            stop_reason = (
                f"every LLM request failed ({len(failed)} of {len(failed)}), nothing was "
                f"proposed; last error: {failed[-1]}"
            )
        self._event("rounds_end", reason=stop_reason)
        finals = self._promote()
        ledger = getattr(self.backend, "ledger", None)
        summary = summary_mod.search_summary(
            cfg,
            study_mod.load_memory(self.study),
            finals,
            stop_reason=stop_reason,
            llm_totals=ledger.summary() if ledger is not None else None,
            llm_origins=ORIGINS if cfg.proposer in LLM_PROPOSERS else (),
            rounds_failed=len(requests.failed),
            meter=self.meter,
        )
        write_json(self.run_dir / SUMMARY_FILE, summary)
        self._event("end")
        return summary

    def _set_up(self) -> Requests:
        """Open (or reopen) everything the search runs on; its requests to the proposer."""
        self.config = cfg = own_study(self.config, self.run_dir)
        history = check_saved(self.run_dir)
        rungs = proxy_rungs(cfg, self.space, self.data)
        pruner = halving.make_pruner(rungs, cfg.halving_eta)
        self.study = study_mod.open_study(
            self.run_dir, cfg.storage, pruner, study_name=cfg.study_name,
            objectives=len(cfg.objectives),
        )  # fmt: skip
        study_mod.load_memory(self.study)  # every trial's attributes checked
        write_json(self.run_dir / OPTIONS_FILE, cfg.model_dump(mode="json"))
        summary_mod.write_env(self.run_dir, history, cfg.seed)  # an entry per start or resume
        self.meter = objectives.latency_meter(
            cfg, self.space, self.data, self.run_dir,
            threads=getattr(self.executor, "threads_per_worker", None),
            measure=self._measure_latency,
        )  # fmt: skip
        self.latency = objectives.latency_check(cfg, self.meter)
        self.trials = CandidateTrials(
            cfg, self.space, self.data, self.study, self.executor, self.run_dir, self.console, rungs
        )
        sources = warm_start.check_sources(cfg, self.space, self.data)
        added = warm_start.import_trials(self.study, self.space, sources, cfg.cost_objective)
        if added:
            runs = ", ".join(cfg.warm_start)
            self.console.print(f"warm start: {added} measured trial(s) from {escape(runs)}")
            self._event("warm_start", trials=added, runs=cfg.warm_start)
        self.backend = self._llm_backend
        if not needs_llm(cfg):
            self.backend = None
        elif self.backend is None:
            self.backend = llm_backend(cfg, self.run_dir, self._sleep)
        screener = self._screener
        if cfg.screen is None:
            screener = None
        elif screener is None:
            screener = search_screener(cfg, self.backend)
        self.requests = Requests(
            cfg, self.space, self.data, self.run_dir, self.study,
            search_proposer(cfg, self.backend),
            screener=screener, admits=self.executor.admits, latency=self.latency,
            console=self.console, event=self._event,
        )  # fmt: skip
        return self.requests

    def _promote(self) -> list[dict[str, Any]]:
        """Train the promoted candidates with the final recipe; each one's result."""
        cfg = self.config
        best = objectives.promoted(cfg, study_mod.load_memory(self.study))
        finals = []
        for record in best:
            assert record.arch is not None
            self.console.print(
                f"[bold]final[/bold]: trial {record.number} with the {cfg.final.recipe} recipe "
                f"and {escape(cfg.final.score.label)}"
            )
            workdir = trial_dir(self.run_dir, record.number, "final")
            with progress_task(f"trial {record.number}: final training and scoring"):
                result = self.executor.run(self.trials.job(record.arch, cfg.final, workdir))
            finals.append(
                {
                    "trial": record.number,
                    "proxy_score": record.score,
                    **result.model_dump(mode="json"),
                }
            )
            if result.status == "complete":
                self.console.print(
                    f"  trial {record.number}: {escape(cfg.final.score.label)} {result.score:.4g}"
                )
        return finals

    def _event(self, kind: str, **fields: Any) -> None:
        append_jsonl(self.run_dir / EVENTS_FILE, {"event": kind, "time": time.time(), **fields})


# ----- the set-up's parts, each from the config alone -----
def needs_llm(config: SearchConfig) -> bool:
    """An LLM proposer, or an LLM screener under --screen: the search asks a language model."""
    return config.proposer in LLM_PROPOSERS or (
        config.screen is not None and config.screener in LLM_SCREENERS
    )


def own_study(cfg: SearchConfig, run_dir: Path) -> SearchConfig:
    """The config with the search's own study in `--storage`: kept from options.json when
    the run folder has one (a resume; "diffnas" for searches from before), else a new name
    for this run folder, so two searches on one database never share a study. A new name
    already taken in the storage is refused rather than mixed with another search."""
    if cfg.storage is None or cfg.study_name is not None:
        return cfg
    if (run_dir / OPTIONS_FILE).is_file():
        kept = load_options(run_dir, SearchConfig, kind="search").study_name
        return cfg.model_copy(update={"study_name": kept or study_mod.STUDY_NAME})
    name = f"diffnas-{run_dir.name}-{secrets.token_hex(4)}"
    if name in (storage.study_names(storage.resolve_url(cfg.storage)) or []):
        raise UserError(
            f"--storage {storage.shown(cfg.storage)!r} already holds a study {name!r}; "
            "a new search takes a study of its own",
            field="storage",
        )
    return cfg.model_copy(update={"study_name": name})


def check_saved(run_dir: Path) -> list[dict[str, Any]]:
    """What a resumed search reads back, read and checked before it writes anything: a
    damaged file is refused by name, not met half-way through a round. The study's trials
    are checked as it opens (`load_memory`). Returns env.json's entries."""
    history = summary_mod.env_history(run_dir)
    check_round_files(run_dir)
    read_calls(calls_path(run_dir))
    return history


def llm_backend(cfg: SearchConfig, run_dir: Path, sleep: Callable[[float], None]) -> LLMBackend:
    """The `--llm` backend, recording its calls in the run folder, with its retries and budget."""
    return make_backend(
        cfg.llm,
        base_url=cfg.base_url,
        api_key_env=cfg.api_key_env,
        structured=cfg.structured,
        replay_dir=cfg.replay,
        record_dir=run_dir,
        timeout_s=cfg.llm_timeout_s,
        retry=RetryPolicy(max_attempts=cfg.llm_attempts, base_delay_s=cfg.llm_backoff_s),
        budget=LLMBudget(max_tokens=cfg.llm_max_tokens, max_usd=cfg.llm_max_usd),
        sleep=sleep,
    )


def search_screener(cfg: SearchConfig, backend: LLMBackend | None) -> Screener:
    """The `--screener` of a search with --screen."""
    return make_screener(
        cfg.screener,
        llm_backend=backend,
        prompt_dir=cfg.prompt_dir,
        max_repairs=cfg.max_repairs,
        max_tokens=cfg.llm_max_output_tokens,
    )


def search_proposer(cfg: SearchConfig, backend: LLMBackend | None) -> Proposer:
    """The `--proposer`, with the LLM options when it is an LLM proposer."""
    llm_options: dict[str, Any] = {}
    if cfg.proposer in LLM_PROPOSERS:
        llm_options = {
            "max_tokens": cfg.llm_max_output_tokens,
            "mode": resolve_llm_mode(cfg.llm_mode, cfg.llm),
        }
    return make_proposer(
        cfg.proposer,
        llm_backend=backend,
        prompt_dir=cfg.prompt_dir,
        max_repairs=cfg.max_repairs,
        temperature=cfg.temperature,
        **llm_options,
    )
