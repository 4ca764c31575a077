"""The DiffNAS loop: rounds of propose -> gate -> proxy-train and score -> record, then promote.

Round r:
1. the proposer fills K slots, seeing the search memory (every earlier trial);
2. each proposal passes the gate (`check_candidate`): invalid, duplicate or over-budget ones
   are recorded as rejected with their reason and cost no training;
3. the round's proposals are written to `rounds/round-RRR.json` (atomically) before any trial
   exists, so a resumed search never asks for them again;
4. each accepted candidate becomes an Optuna trial (enqueue + ask), is evaluated by the
   executor in `trials/NNNNN/` (`diffnas.search.trials`; rung by rung under successive
   halving, `diffnas.search.halving`), and is told its score.
That is the `rounds` schedule; the `async` one (`diffnas.search.asynchronous`) makes the same
requests one free slot at a time. After the last round (or the time/LLM budget), the top-k by
proxy score are trained with the final recipe and scored by FID in `final/NNNNN/`.

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
from diffnas.execute.executors import Executor, make_executor
from diffnas.gate.check import LatencyCheck
from diffnas.gate.entry import RoundEntry
from diffnas.progress import task as progress_task
from diffnas.propose.llm import (
    LLMBackend,
    RetryPolicy,
    make_backend,
)
from diffnas.propose.llm.ledger import LLMBudget
from diffnas.propose.llm.record import calls_path, read_calls
from diffnas.propose.llm_proposer import ORIGINS
from diffnas.propose.registry import LLM_PROPOSERS, make_proposer, resolve_llm_mode
from diffnas.propose.screen import LLM_SCREENERS, Screener, make_screener
from diffnas.runs import OPTIONS_FILE, append_jsonl, load_options, write_json
from diffnas.search import asynchronous, halving, objectives, warm_start
from diffnas.search import study as study_mod
from diffnas.search import summary as summary_mod
from diffnas.search.config import SearchConfig
from diffnas.search.requests import Requests, check_round_files
from diffnas.search.summary import SUMMARY_FILE
from diffnas.search.trials import CandidateTrials, proxy_rungs
from diffnas.space.search_space import SearchSpace, load_space
from diffnas.train.latency import LatencyMeter, Measure

EVENTS_FILE = "events.jsonl"


def needs_llm(config: SearchConfig) -> bool:
    """An LLM proposer, or an LLM screener under --screen: the search asks a language model."""
    return config.proposer in LLM_PROPOSERS or (
        config.screen is not None and config.screener in LLM_SCREENERS
    )


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
        self._llm_backend = llm_backend
        self._screener = screener  # a test's stand-in; else made from --screener
        self._sleep = sleep
        self.requests: Requests | None = None  # the requests to the proposer, set by `run`
        self._measure_latency = measure_latency  # None: the real timing (tests inject a fake)
        self.latency: LatencyCheck | None = None  # set by `run` when latency is measured
        self.meter: LatencyMeter | None = None  # its cache of measurements

    @property
    def llm_never_answered(self) -> bool:
        """Every request of this run failed because the LLM was unavailable (a wrong
        --base-url, a server down): the search trained nothing it was asked for."""
        return self.requests is not None and self.requests.never_answered

    # ----- set-up -----
    def _own_study(self, cfg: SearchConfig) -> SearchConfig:
        """The config with the search's own study in `--storage`: kept from options.json when
        the run folder has one (a resume; "diffnas" for searches from before), else a new name
        for this run folder, so two searches on one database never share a study. A new name
        already taken in the storage is refused rather than mixed with another search."""
        if cfg.storage is None or cfg.study_name is not None:
            return cfg
        saved = self.run_dir / OPTIONS_FILE
        if saved.is_file():
            kept = load_options(self.run_dir, SearchConfig, kind="search").study_name
            return cfg.model_copy(update={"study_name": kept or study_mod.STUDY_NAME})
        name = f"diffnas-{self.run_dir.name}-{secrets.token_hex(4)}"
        if name in (storage.study_names(storage.resolve_url(cfg.storage)) or []):
            raise UserError(
                f"--storage {storage.shown(cfg.storage)!r} already holds a study {name!r}; "
                "a new search takes a study of its own",
                field="storage",
            )
        return cfg.model_copy(update={"study_name": name})

    def _make_backend(self) -> LLMBackend | None:
        if not needs_llm(self.config):
            return None
        if self._llm_backend is not None:
            return self._llm_backend
        cfg = self.config
        budget = LLMBudget(max_tokens=cfg.llm_max_tokens, max_usd=cfg.llm_max_usd)
        return make_backend(
            cfg.llm,
            base_url=cfg.base_url,
            api_key_env=cfg.api_key_env,
            structured=cfg.structured,
            replay_dir=cfg.replay,
            record_dir=self.run_dir,
            timeout_s=cfg.llm_timeout_s,
            retry=RetryPolicy(max_attempts=cfg.llm_attempts, base_delay_s=cfg.llm_backoff_s),
            budget=budget,
            sleep=self._sleep,
        )

    def _check_saved(self) -> list[dict[str, Any]]:
        """What a resumed search reads back, read and checked before it writes anything: a
        damaged file is refused by name, not met half-way through a round. The study's trials
        are checked as it opens (`load_memory`). Returns env.json's entries."""
        history = summary_mod.env_history(self.run_dir)
        check_round_files(self.run_dir)
        read_calls(calls_path(self.run_dir))
        return history

    def _write_provenance(self, history: list[dict[str, Any]]) -> None:
        write_json(self.run_dir / OPTIONS_FILE, self.config.model_dump(mode="json"))
        summary_mod.write_env(self.run_dir, history, self.config.seed)  # an entry per start

    def _event(self, kind: str, **fields: Any) -> None:
        append_jsonl(self.run_dir / EVENTS_FILE, {"event": kind, "time": time.time(), **fields})

    # ----- the loop -----
    def run(self) -> dict[str, Any]:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / ".lock", "a") as lock, study_mod.quiet_optuna():
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
        self.config = cfg = self._own_study(self.config)
        history = self._check_saved()
        rungs = proxy_rungs(cfg, self.space, self.data)
        pruner = halving.make_pruner(rungs, cfg.halving_eta)
        self.study = study_mod.open_study(
            self.run_dir, cfg.storage, pruner, study_name=cfg.study_name,
            objectives=len(cfg.objectives),
        )  # fmt: skip
        study_mod.load_memory(self.study)  # every trial's attributes checked
        self._write_provenance(history)
        self.meter = objectives.latency_meter(
            cfg,
            self.space,
            self.data,
            self.run_dir,
            threads=getattr(self.executor, "threads_per_worker", None),
            measure=self._measure_latency,
        )
        self.latency = objectives.latency_check(cfg, self.meter)
        self.trials = CandidateTrials(
            cfg, self.space, self.data, self.study, self.executor, self.run_dir, self.console, rungs
        )
        added = warm_start.import_trials(
            self.study,
            self.space,
            warm_start.check_sources(cfg, self.space, self.data),
            cfg.cost_objective,
        )
        if added:
            runs = ", ".join(cfg.warm_start)
            self.console.print(f"warm start: {added} measured trial(s) from {escape(runs)}")
            self._event("warm_start", trials=added, runs=cfg.warm_start)
        backend = self._make_backend()
        self.screener = self._make_screener(backend)
        proposer = make_proposer(
            cfg.proposer,
            llm_backend=backend,
            prompt_dir=cfg.prompt_dir,
            max_repairs=cfg.max_repairs,
            temperature=cfg.temperature,
            **(
                {
                    "max_tokens": cfg.llm_max_output_tokens,
                    "mode": resolve_llm_mode(cfg.llm_mode, cfg.llm),
                }
                if cfg.proposer in LLM_PROPOSERS
                else {}
            ),
        )
        self.requests = requests = Requests(
            cfg, self.space, self.data, self.run_dir, self.study, proposer,
            screener=self.screener, admits=self.executor.admits, latency=self.latency,
            console=self.console, event=self._event,
        )  # fmt: skip
        start = time.monotonic()
        self._event(
            "start",
            rounds=cfg.rounds,
            per_round=cfg.per_round,
            schedule=cfg.schedule,
            **({"latency": objectives.latency_record(cfg, self.meter)} if self.meter else {}),
        )
        if cfg.schedule == "async":
            stop_reason = asynchronous.run_async(self, start)
        else:
            stop_reason = self._run_rounds(start)
        if requests.never_answered:
            stop_reason = (
                f"every LLM request failed ({len(requests.failed)} of "
                f"{len(requests.failed)}), nothing was proposed; last error: "
                f"{requests.failed[-1]}"
            )
        self._event("rounds_end", reason=stop_reason)
        finals = self._promote()
        ledger = getattr(backend, "ledger", None)
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

    def _run_rounds(self, start: float) -> str:
        """Round by round: ask for K, evaluate the round's candidates together, then the next."""
        cfg = self.config
        for r in range(cfg.rounds):
            if self.time_spent(start):
                return self.time_spent(start)  # type: ignore[return-value]
            entries, stop = self.requests.make(r)  # type: ignore[union-attr]
            if stop:
                return stop
            if entries is not None:
                self._evaluate_round(r, entries)
        return "all rounds done"

    def time_spent(self, start: float) -> str | None:
        """The stop reason once the time budget is spent."""
        budget = self.config.time_budget_s
        if budget is not None and time.monotonic() - start > budget:
            return f"time budget of {budget:g} s spent"
        return None

    def _make_screener(self, backend: LLMBackend | None) -> Screener | None:
        cfg = self.config
        if cfg.screen is None:
            return None
        if self._screener is not None:
            return self._screener
        return make_screener(
            cfg.screener,
            llm_backend=backend,
            prompt_dir=cfg.prompt_dir,
            max_repairs=cfg.max_repairs,
            max_tokens=cfg.llm_max_output_tokens,
        )

    def _evaluate_round(self, r: int, entries: list[RoundEntry]) -> None:
        """Evaluate a round's accepted candidates together (a concurrent executor runs them at
        once), rung by rung under successive halving, telling each as it finishes."""
        pending = self.trials.open_trials(r, entries)
        while pending:
            pending = self.trials.evaluate_together(r, pending)

    # ----- promotion and summary -----
    def _promote(self) -> list[dict[str, Any]]:
        cfg = self.config
        best = objectives.promoted(cfg, study_mod.load_memory(self.study))
        finals = []
        for record in best:
            assert record.arch is not None
            self.console.print(
                f"[bold]final[/bold]: trial {record.number} with the {cfg.final.recipe} recipe "
                f"and {escape(cfg.final.score.label)}"
            )
            workdir = self.run_dir / "final" / f"{record.number:05d}"
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
