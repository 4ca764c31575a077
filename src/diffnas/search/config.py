"""`SearchConfig`: every option of a search, as plain data (saved as `options.json`).

One field per CLI flag; `diffnas search --resume RUN_DIR` reloads this file, so a resumed
search runs with exactly the options it started with.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from diffnas.data.datasets import DataSpec, parse_data
from diffnas.execute.factory import EXECUTORS, TABLE_EXECUTOR
from diffnas.execute.job import EvalSpec
from diffnas.gate.memory import OBJECTIVES, Objective
from diffnas.limits import (
    FINITE,
    MAX_BACKOFF_S,
    MAX_DURATION_S,
    MAX_IMAGE_SIZE,
    MAX_IMAGES,
    MAX_LLM_TIMEOUT_S,
    MAX_LLM_TOKENS,
    MAX_LLM_USD,
    MAX_OUTPUT_TOKENS,
    MAX_PROMOTE,
    MAX_ROUNDS,
    MAX_SEED,
    MAX_WORKERS,
)
from diffnas.search.defaults import SEARCH_DEFAULTS as D
from diffnas.train.latency import LatencyOptions


class SearchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", **FINITE)

    space: str = Field(D["space"], description="space preset or YAML file")
    data: str = Field(
        D["data"], description="--data spelling: digits, cifar10[:ROOT], npz:PATH, imagefolder:DIR"
    )
    data_image_size: int | None = Field(
        None, ge=4, le=MAX_IMAGE_SIZE, description="resize the data to this size"
    )
    data_subset: int | None = Field(
        None, ge=1, le=MAX_IMAGES, description="train on a deterministic subset of N images"
    )
    llm: str = Field(D["llm"], description="local | openai:MODEL | anthropic:MODEL")
    base_url: str | None = Field(None, description="OpenAI/Anthropic-compatible endpoint")
    api_key_env: str | None = Field(None, description="environment variable holding the API key")
    structured: str | None = Field(
        None,
        description="openai: auto (default: json_schema, stepping down to what the server takes) | json_schema | schema_object (llama.cpp) | guided_json (vLLM) | json_object | text",
    )
    llm_timeout_s: float = Field(
        D["llm_timeout_s"],
        gt=0,
        le=MAX_LLM_TIMEOUT_S,
        description="seconds before one LLM request times out",
    )
    llm_attempts: int = Field(
        D["llm_attempts"], ge=1, le=20, description="tries per LLM request (timeouts, 429, 5xx)"
    )
    llm_backoff_s: float = Field(
        1.0, ge=0, le=MAX_BACKOFF_S, description="backoff before the second try; doubles after"
    )
    llm_max_output_tokens: int = Field(
        1024, ge=16, le=MAX_OUTPUT_TOKENS, description="max tokens of one LLM answer"
    )
    replay: str | None = Field(None, description="answer LLM requests from this earlier run folder")
    proposer: str = Field(
        D["proposer"], description="diffnas | llm-no-memory | random | tpe | nsga2 | evolution"
    )
    rounds: int = Field(D["rounds"], ge=1, le=MAX_ROUNDS, description="proposal rounds")
    per_round: int = Field(
        D["per_round"], ge=1, le=32, description="candidates asked per round (K)"
    )
    schedule: Literal["rounds", "async"] = Field(
        D["schedule"],
        description="rounds: ask for K, evaluate them together, then ask again; async: keep "
        "every executor slot busy, asking for the next candidate(s) as soon as one frees, with "
        "the memory as it stands (rounds x K candidates in all)",
    )
    max_repairs: int = Field(
        D["max_repairs"], ge=0, le=10, description="repair turns per round for invalid proposals"
    )
    temperature: float = Field(D["temperature"], ge=0, le=2, description="LLM sampling temperature")
    llm_mode: Literal["auto", "full", "edit"] = Field(
        D["llm_mode"],
        description="full: the LLM writes whole architectures; edit: it edits one field of a "
        "remembered one (slots it leaves open are filled by random draws, marked 'fallback'); "
        "auto: edit for llm=local, full otherwise",
    )
    llm_max_tokens: int | None = Field(
        None, ge=1, le=MAX_LLM_TOKENS, description="hard budget: total LLM tokens"
    )
    llm_max_usd: float | None = Field(
        None, gt=0, le=MAX_LLM_USD, description="hard budget: estimated LLM cost, USD"
    )
    time_budget_s: float | None = Field(
        None, gt=0, le=MAX_DURATION_S, description="stop proposing after this much wall time"
    )
    prompt_dir: str | None = Field(None, description="folder of prompt templates overriding ours")
    promote: int = Field(
        D["promote"],
        ge=0,
        le=MAX_PROMOTE,
        description="top-k candidates trained with the final recipe and scored by FID",
    )
    seed: int = Field(
        D["seed"], ge=0, le=MAX_SEED, description="seeds proposals, training and sampling"
    )
    executor: str = Field(
        D["executor"],
        description="inline: this process; subprocess: a child process per candidate; pool: "
        "concurrent worker processes on this machine's GPUs or CPU cores; ray: Ray tasks; "
        "queue: `diffnas worker` processes on any machine pulling from --storage's queue; "
        "table:NAME|PATH: every evaluation looked up in a table (`diffnas tabulate`)",
    )
    workers: int | None = Field(
        None,
        ge=1,
        le=MAX_WORKERS,
        description="pool without GPU: concurrent CPU workers (cores split between them); "
        "queue: candidates kept queued at once by --schedule async",
    )
    trials_per_gpu: int = Field(
        D["trials_per_gpu"],
        ge=1,
        le=64,
        description="pool/ray: small candidates packed on one GPU at once",
    )
    max_retries: int = Field(
        D["max_retries"],
        ge=0,
        le=10,
        description="a worker killed mid-candidate: tries again up to this often",
    )
    ray_address: str | None = Field(
        None, description="ray: address of an existing cluster (default: a local Ray instance)"
    )
    storage: str | None = Field(
        None, description="Optuna storage URL (default: SQLite in the run folder)"
    )
    study_name: str | None = Field(
        None,
        description="the search's study in --storage, one per run folder (chosen when the "
        "search starts); None: 'diffnas' (a run folder's own study.db, older searches)",
    )
    proxy: EvalSpec = Field(
        default_factory=EvalSpec.proxy_default, description="proxy evaluation: recipe + RFID"
    )
    halving_rungs: int = Field(
        D["halving_rungs"],
        ge=1,
        le=6,
        description="successive halving: scored fidelity levels per candidate, the last being the "
        "whole proxy run (1: off, every candidate trains the whole proxy run)",
    )
    halving_eta: int = Field(
        D["halving_eta"],
        ge=2,
        le=8,
        description="successive halving: about 1 in eta candidates goes on per rung",
    )
    final: EvalSpec = Field(
        default_factory=EvalSpec.final_default, description="promotion: recipe + FID"
    )
    screen: int | None = Field(
        None,
        ge=2,
        description="screening before training: each request obtains this many candidates (M) "
        "for its K slots, a screener ranks those that pass the gate and only the top K are "
        "trained; the rest are recorded as screened-out with their prediction (None: off)",
    )
    screener: Literal["llm", "gp", "llm+gp"] = Field(
        D["screener"],
        description="with screen: llm (the LLM predicts each candidate's score), gp (a Gaussian "
        "process on the measured trials, by expected improvement), llm+gp (the LLM ranks, the "
        "GP vetoes what it is confident is worse; trust shifts to the GP with observations)",
    )
    warm_start: list[str] = Field(
        default_factory=list,
        description="run folders of earlier searches of the same space whose measured trials "
        "enter this search's memory and study without training",
    )
    objectives: list[Objective] = Field(
        default_factory=lambda: ["score"],
        description="what the search minimises: score (the proxy score alone), or score,latency "
        "/ score,macs (an Optuna multi-objective study; the front is promoted)",
    )
    latency_budget_ms: float | None = Field(
        None,
        gt=0,
        le=3_600_000,
        description="bound on the measured latency of one forward pass, ms, checked at the gate "
        "instead of the space's GMACs band",
    )
    latency: LatencyOptions = Field(
        default_factory=LatencyOptions,
        description="how latency is measured (for a latency objective or budget)",
    )

    @field_validator("objectives", mode="before")
    @classmethod
    def _objectives_list(cls, value: Any) -> Any:
        return [v.strip() for v in value.split(",")] if isinstance(value, str) else value

    @field_validator("objectives")
    @classmethod
    def _objectives_shape(cls, value: list[str]) -> list[str]:
        if value not in (["score"], ["score", "latency"], ["score", "macs"]):
            raise ValueError(
                "give score, score,latency or score,macs (the score first, at most one cost; "
                f"objectives are {', '.join(OBJECTIVES)})"
            )
        return value

    @field_validator("executor")
    @classmethod
    def _known_executor(cls, name: str) -> str:
        if name not in EXECUTORS and not name.startswith("table:"):
            raise ValueError(
                f"unknown executor {name!r}; allowed: {', '.join(EXECUTORS)}, {TABLE_EXECUTOR}"
            )
        return name

    @model_validator(mode="before")
    @classmethod
    def _not_a_train_run(cls, data: Any) -> Any:
        # `--resume`/`status` on a train run folder: say so rather than list its 9 unknown keys
        if isinstance(data, dict) and {"arch", "recipe"} <= data.keys():
            raise ValueError(
                "these are the options of a train run folder, not a search's; "
                "continue it with diffnas train --resume"
            )
        return data

    @model_validator(mode="after")
    def _halving_is_single_objective(self) -> SearchConfig:
        if self.halving_rungs > 1 and self.multi_objective:
            raise ValueError(
                f"halving_rungs={self.halving_rungs} with objectives={','.join(self.objectives)}: "
                "successive halving prunes on one score (Optuna's pruners are single-objective); "
                "use --halving-rungs 1 with two objectives"
            )
        return self

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def cost_objective(self) -> str | None:
        """The second objective ("latency" or "macs"), None for a single-objective search."""
        return self.objectives[1] if self.multi_objective else None

    @property
    def measures_latency(self) -> bool:
        """Whether the gate measures every candidate's latency (objective or budget)."""
        return self.cost_objective == "latency" or self.latency_budget_ms is not None

    def data_spec(self) -> DataSpec:
        """The training images of every candidate: `data` with the subset and size options."""
        data = parse_data(self.data)
        if self.data_subset:
            data = data.model_copy(update={"subset": self.data_subset})
        if self.data_image_size:
            data = data.model_copy(update={"image_size": self.data_image_size})
        return data
