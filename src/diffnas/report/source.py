"""A search run folder read into plain rows for reports, the status table and exports.

This is the one module of `diffnas.report` that knows the search's files and modules, so a
move of theirs is fixed here only. It reads, and never writes:
options.json (`SearchConfig`), the study (every trial, through `search.study`),
rounds/round-RRR.json (how each proposal was made), trials/NNNNN/ and final/NNNNN/
(result.json, samples.png, train/ema.pt), summary.json and llm/calls.jsonl.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from diffnas.errors import UserError
from diffnas.evaluate.score import score_label
from diffnas.execute.job import EvalResult
from diffnas.gate.entry import RoundFile
from diffnas.gate.memory import TrialRecord, non_dominated
from diffnas.layout import (
    RESULT_FILE,
    ROUND_FILES,
    ROUNDS_DIR,
    SAMPLES_FILE,
    SUMMARY_FILE,
    trial_dir,
)
from diffnas.propose.llm.record import CALLS_FILE, read_calls
from diffnas.runs import OPTIONS_FILE, load_options, read_file
from diffnas.search import study as study_mod
from diffnas.search.config import SearchConfig
from diffnas.search.screening import screening_summary
from diffnas.search.summary import SearchSummary
from diffnas.space.search_space import SearchSpace, load_space
from diffnas.train.trainer import EMA_CHECKPOINT


@dataclass
class ScoreRow:
    """A score value with the name of its protocol ("RFID[classifier]") and its details."""

    value: float
    label: str
    protocol: dict[str, Any] = field(default_factory=dict)

    @property
    def protocol_text(self) -> str:
        """N generated, sampler and steps, reference: what makes two scores comparable."""
        p = self.protocol
        parts = [f"N={p['num_generated']}"] if p.get("num_generated") else []
        if p.get("sampler"):
            parts.append(str(p["sampler"]))
        if p.get("reference"):
            parts.append(f"ref {p['reference']}")
        return ", ".join(parts)


@dataclass
class TrialRow(TrialRecord):
    """One candidate of a search as a report shows it: its record in the study (`reason`
    spelled out for pruned, screened-out and imported candidates) with its proxy and final
    scores as rows and its files."""

    proxy: ScoreRow | None = None  # None when pruned: a lower fidelity's score, in `reason`
    final: ScoreRow | None = None
    final_device_s: float | None = None  # seconds of its final training and scoring
    samples: Path | None = None
    final_samples: Path | None = None

    @property
    def short_arch(self) -> str:
        """The architecture in a score of characters, e.g. `32x(1,2,2) b1 @8+m ss res d0.1`:
        base channels x multipliers, residual blocks per level, attention resolutions (+m: the
        middle block), then only what is on: scale-shift norm, residual up/down-sampling,
        dropout. Head width and norm groups are left to the full form (`ArchConfig.summary`)."""
        a = self.arch
        if a is None:
            return "-"
        attn = ",".join(str(r) for r in sorted(a.attention_resolutions, reverse=True))
        if a.mid_attention:
            attn = f"{attn}+m" if attn else "m"
        mult = ",".join(map(str, a.channel_mult))
        flags = [
            *(["ss"] if a.scale_shift_norm else []),
            *(["res"] if a.resblock_updown else []),
            *([f"d{a.dropout:g}"] if a.dropout else []),
        ]
        return " ".join([f"{a.base_channels}x({mult}) b{a.num_res_blocks} @{attn or '-'}", *flags])

    @property
    def by(self) -> str:
        """Proposer and, when recorded, how it made the proposal: `diffnas/llm-edit`."""
        return f"{self.proposer}/{self.origin}" if self.origin else self.proposer


@dataclass
class LLMCall:
    time: float | None
    ok: bool
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    cost_usd: float
    attempts: int
    replayed: bool
    error: str | None


@dataclass
class Ledger:
    """What the LLM cost a search: one row per call, and the totals."""

    calls: list[LLMCall]
    # summary.json's totals when the per-call record is missing (an older run, a moved file)
    totals: dict[str, Any] | None = None

    @property
    def num_calls(self) -> int:
        return len(self.calls) if self.calls else int((self.totals or {}).get("calls", 0))

    @property
    def failed(self) -> int:
        return sum(not c.ok for c in self.calls)

    @property
    def prompt_tokens(self) -> int:
        if not self.calls:
            return int((self.totals or {}).get("prompt_tokens", 0))
        return sum(c.prompt_tokens for c in self.calls)

    @property
    def completion_tokens(self) -> int:
        if not self.calls:
            return int((self.totals or {}).get("completion_tokens", 0))
        return sum(c.completion_tokens for c in self.calls)

    @property
    def cost_usd(self) -> float:
        if not self.calls:
            return float((self.totals or {}).get("cost_usd", 0.0))
        return sum(c.cost_usd for c in self.calls)

    @property
    def latencies(self) -> list[float]:
        return [c.latency_s for c in self.calls if c.ok]


@dataclass
class SearchRecord:
    """Everything a report shows of one search run folder."""

    run_dir: Path
    config: SearchConfig
    space: SearchSpace | None  # None when its YAML file is not where the search read it
    trials: list[TrialRow]
    summary: dict[str, Any]
    ledger: Ledger | None
    # --screen: per screener, Kendall tau of predicted vs measured (`search.screening`)
    screening: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return self.run_dir.name

    @property
    def proposer(self) -> str:
        return self.config.proposer

    @property
    def proxy_label(self) -> str:
        return self.config.proxy.score.label

    @property
    def final_label(self) -> str:
        return self.config.final.score.label

    @property
    def cost_objective(self) -> str | None:
        """The second objective of a multi-objective search ("latency", "macs"), else None."""
        return self.config.cost_objective

    def front(self) -> list[TrialRow]:
        """A multi-objective search's Pareto front (the proxy score against its cost), best
        score first; empty for a single-objective search."""
        objective = self.cost_objective
        if objective is None:
            return []
        rows = sorted(
            (t for t in self.trials if t.proxy is not None and t.cost(objective) is not None),
            key=lambda t: (t.proxy.value, t.number),  # type: ignore[union-attr]
        )
        points = [(t.proxy.value, float(t.cost(objective))) for t in rows]  # type: ignore[union-attr, arg-type]
        return [t for t, on in zip(rows, non_dominated(points)) if on]

    def trial(self, number: int) -> TrialRow:
        for t in self.trials:
            if t.number == number:
                return t
        known = ", ".join(str(t.number) for t in self.trials) or "none"
        raise UserError(
            f"--trial {number}: search {self.name} has no such trial (trials: {known})",
            field="trial",
        )


def load_config(run_dir: Path) -> SearchConfig:
    """The saved options of a search run folder, or a `UserError` saying why there are none."""
    try:
        return load_options(run_dir, SearchConfig, kind="search", option="")
    except UserError:
        if _train_options(run_dir / OPTIONS_FILE):
            raise UserError(
                f"{str(run_dir)!r} is a train run folder, not a search's", field="run_dir"
            ) from None
        raise


def _train_options(path: Path) -> bool:
    try:
        saved = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(saved, dict) and {"arch", "recipe"} <= saved.keys()


def load_summary(run_dir: Path) -> dict[str, Any]:
    """summary.json as the loop wrote it, checked; {} while the search has not ended."""
    path = run_dir / SUMMARY_FILE
    if not path.is_file():
        return {}
    fix = f"delete it and run diffnas search --resume {run_dir} to write it again"
    return read_file(path, SearchSummary, "search summary", fix=fix).model_dump(mode="json")


def open_run_study(run_dir: Path, config: SearchConfig) -> optuna.Study:
    """The run's study, opened read-only; refused (never created) when it is not there."""
    return study_mod.open_study(
        run_dir, config.storage, read_only=True, study_name=config.study_name
    )


def ema_checkpoint(run_dir: Path, number: int, stage: str) -> Path:
    return trial_dir(run_dir, number, stage) / "train" / EMA_CHECKPOINT


def _score_row(
    scores: dict[str, Any] | None, value: float | None, fallback: str
) -> ScoreRow | None:
    """The one score of a result's `scores` ({metric: Score}) with its label."""
    if value is None:
        return None
    score = next(iter((scores or {}).values()), {})
    protocol = score.get("protocol") or {}
    label = score.get("label") or (
        score_label(protocol["metric"], protocol["extractor"])
        if {"metric", "extractor"} <= protocol.keys()
        else fallback
    )
    return ScoreRow(value=float(value), label=label, protocol=protocol)


def _origins(run_dir: Path) -> dict[tuple[int, int], str]:
    """(round, slot) -> how the proposal was made, from the round files: for the trials of
    searches from before the study recorded it."""
    out: dict[tuple[int, int], str] = {}
    for path in sorted((run_dir / ROUNDS_DIR).glob(ROUND_FILES)):
        saved = RoundFile.read(path)
        for entry in saved.entries if saved else []:
            if entry.origin:
                out[(saved.round, entry.slot)] = entry.origin  # type: ignore[union-attr]
    return out


def read_result(path: Path) -> EvalResult | None:
    """A trial's `result.json` (None when there is none: not evaluated, or still running)."""
    return read_file(path, EvalResult, "trial result") if path.is_file() else None


def _final_result(run_dir: Path, number: int) -> EvalResult | None:
    return read_result(trial_dir(run_dir, number, "final") / RESULT_FILE)


def _file(path: Path) -> Path | None:
    return path if path.is_file() else None


def load_ledger(run_dir: Path, summary: dict[str, Any]) -> Ledger | None:
    """Per-call costs from llm/calls.jsonl, or summary.json's totals; None for no LLM."""
    calls = []
    for record in read_calls(run_dir / CALLS_FILE):
        response = record.response
        calls.append(
            LLMCall(
                time=record.time,
                ok=record.ok,
                prompt_tokens=response.prompt_tokens if response else 0,
                completion_tokens=response.completion_tokens if response else 0,
                latency_s=response.latency_s if response else 0.0,
                cost_usd=response.cost_usd if response else 0.0,
                attempts=record.attempts or 1,
                replayed=response.replayed if response else False,
                error=record.error,
            )
        )
    if not calls and not summary.get("llm"):
        return None
    return Ledger(calls=calls, totals=summary.get("llm"))


def _pruned_reason(record: TrialRecord) -> str | None:
    """ "stopped at 44 of 400 steps: RFID 52.1" for a candidate successive halving pruned."""
    fidelity = record.fidelity
    if record.status != "pruned" or fidelity is None or record.score is None:
        return None
    return (
        f"stopped at {fidelity[0]} of {fidelity[1]} steps: {record.score_name} {record.score:.4g}"
    )


def _screened_reason(record: TrialRecord) -> str | None:
    """ "screened out by gp: predicted 41.2, rank 3; never trained" for a screened-out
    candidate; "warm start: trial 4 of RUN (measured on DATA)" for an imported one."""
    mark = record.screen or {}
    if record.status == "screened-out":
        guess = f"predicted {record.predicted:.4g}, " if record.predicted is not None else ""
        return (
            f"screened out by {mark.get('screener', '?')}: {guess}rank {mark.get('rank', '?')}; "
            "never trained"
        )
    origin = record.warm_start
    if isinstance(origin, dict):
        where = f" (measured on {record.measured_on})" if record.measured_on else ""
        return (
            f"warm start: trial {origin.get('trial')} of {Path(str(origin.get('run'))).name}{where}"
        )
    return None


def load_search(run_dir: str | Path) -> SearchRecord:
    """Read a search run folder (finished or still running) into a `SearchRecord`."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(
            f"{str(run_dir)!r} is not a folder; give a search run folder", field="run_dir"
        )
    config = load_config(run_dir)
    try:
        space: SearchSpace | None = load_space(config.space)
    except UserError:
        space = None
    study = open_run_study(run_dir, config)
    summary = load_summary(run_dir)
    origins = _origins(run_dir)
    rows, records = [], []
    for record in study_mod.load_memory(study):
        records.append(record)
        final = _final_result(run_dir, record.number)
        complete = final is not None and final.status == "complete"
        rows.append(
            TrialRow(
                **{
                    **vars(record),
                    "origin": record.origin or origins.get((record.round, record.slot)),
                    "reason": _pruned_reason(record)
                    or _screened_reason(record)
                    or record.reason
                    or "",
                },
                proxy=_score_row(
                    record.scores, record.score, record.score_name or config.proxy.score.label
                )
                if record.status != "pruned"
                else None,
                final=_score_row(final.scores, final.score, config.final.score.label)
                if complete
                else None,
                final_device_s=final.wall_s if final and final.wall_s else None,
                samples=_file(trial_dir(run_dir, record.number) / SAMPLES_FILE),
                final_samples=_file(trial_dir(run_dir, record.number, "final") / SAMPLES_FILE),
            )
        )
    return SearchRecord(
        run_dir=run_dir,
        config=config,
        space=space,
        trials=rows,
        summary=summary,
        ledger=load_ledger(run_dir, summary),
        screening=screening_summary(records),
    )
