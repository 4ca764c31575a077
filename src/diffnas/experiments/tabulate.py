"""The table engine of `diffnas tabulate` and `diffnas proxy-check`: architectures x training
runs x seeds, each checkpoint scored several ways, the rows appended to a table.

Both commands evaluate a set of architectures (`tabulate`: every one of a small space within
its budget; `proxy-check`: a sample, or a search's candidates) with the same protocols:

- the proxy recipe once per step count in `proxy_steps`; that checkpoint is scored every way
  asked - RFID and KID at each N and S, and the final training loss (the mean of the run's
  last tenth) - by the worker itself (`EvalJob.extra_scores`), so one training serves every
  setting of its length;
- the reference recipe, longer, scored by the reference protocol;

each with `seeds` seeds. Every (step count, score) pair is a proxy *setting*; the reference is
one more. The unit of work is one training run of one architecture with one seed; it goes
through any executor (inline, subprocess, pool, ray, queue) as an ordinary `EvalJob`, and its
rows (one per setting it scores) are written to the table (`diffnas.execute.table`) as it
finishes. A kill at any moment loses no row: a resumed build skips the runs whose rows are
there and continues an interrupted run from its checkpoint.

Each step count is a run of its own, not an intermediate checkpoint of the longest: the proxy
recipe's cosine learning rate and warm-up are fitted to the run's length.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from diffnas import __version__
from diffnas.data.datasets import DataSpec, parse_data
from diffnas.errors import UserError
from diffnas.evaluate.score import score_label
from diffnas.execute.executors import EXECUTORS, Executor, make_executor
from diffnas.execute.job import EvalJob, EvalResult, EvalSpec, ScoreSpec
from diffnas.execute.table import (
    REFERENCE,
    Table,
    TableArch,
    TableMeta,
    TableRow,
    TableSetting,
    read_meta,
    read_rows,
    write_meta,
    write_rows,
)
from diffnas.experiments.compute import sampling_flops, training_flops
from diffnas.experiments.inputs import config_error, int_list, word_list
from diffnas.model.cost import budget_verdict, measure_cost
from diffnas.space.search_space import SearchSpace
from diffnas.train.checkpoint import CHECKPOINT
from diffnas.train.diffusion import DiffusionConfig

ProxyMetric = Literal["rfid", "kid", "loss"]
SAMPLED = ("rfid", "kid")  # the metrics that sample the checkpoint
MAX_ARCHS = 1000  # choice combinations tabulate walks through at most, by default


def _default_proxy() -> EvalSpec:
    return EvalSpec(recipe="proxy", recipe_overrides={"batch_size": 32})


def _default_reference() -> EvalSpec:
    # The full recipe made meaningful for a CPU-sized run: its EMA decay of 0.9999 would still
    # hold most of the random initialisation after a few thousand steps, so it warms up.
    return EvalSpec(
        recipe="full",
        recipe_overrides={
            "steps": 1500,
            "batch_size": 32,
            "ema_warmup": True,
            "checkpoint_every": 500,  # a kill loses at most a third of a run
        },  # fmt: skip
        score=ScoreSpec(metric="fid", num_samples=1000, steps=50),
    )


class ProxySetting(BaseModel):
    """One cheap way to rank: a proxy run of `steps`, scored by `metric` at N samples, S steps."""

    model_config = ConfigDict(frozen=True)

    steps: int
    metric: ProxyMetric
    num_samples: int | None = None  # rfid/kid only
    sampler_steps: int | None = None

    @property
    def key(self) -> str:
        if self.metric == "loss":
            return f"s{self.steps}-loss"
        return f"s{self.steps}-{self.metric}-n{self.num_samples}-s{self.sampler_steps}"

    def score_name(self, extractor: str) -> str:
        """The score without the run length, e.g. "RFID[classifier] N=250 S=20"."""
        if self.metric == "loss":
            return "final training loss"
        name = score_label(self.metric, extractor)
        return f"{name} N={self.num_samples} S={self.sampler_steps}"

    def label(self, extractor: str) -> str:
        return f"{self.steps} steps, {self.score_name(extractor)}"

    def score_spec(self, base: ScoreSpec) -> ScoreSpec:
        return base.model_copy(
            update={
                "metric": self.metric,
                "num_samples": self.num_samples or base.num_samples,
                "steps": self.sampler_steps,
            }
        )


class StudyConfig(BaseModel):
    """What a table measures: architectures x proxy settings and the reference x seeds, and
    where the evaluations run. Shared by tabulate and proxy-check."""

    model_config = ConfigDict(extra="forbid")

    space: str = Field("tiny", description="space preset or YAML file")
    data: str = Field("digits", description="--data spelling")
    data_subset: int | None = Field(None, ge=1, description="train on a subset of N images")
    data_image_size: int | None = Field(
        None, ge=4, description="resize the data to this size (None: the space's image size)"
    )
    seed: int = Field(0, description="the first seed; the runs use seed, seed + 1, ...")
    seeds: int = Field(
        2, ge=1, le=100, description="seeds per architecture and setting (training + sampling)"
    )
    proxy_steps: list[int] = Field([100, 400], min_length=1, description="proxy run lengths")
    metrics: list[ProxyMetric] = Field(
        ["rfid", "kid", "loss"], min_length=1, description="proxy scores"
    )
    score_samples: list[int] = Field([250, 1000], min_length=1, description="proxy N")
    score_steps: list[int] = Field([20], min_length=1, description="proxy sampler steps S")
    proxy: EvalSpec = Field(
        default_factory=_default_proxy,
        description="proxy recipe and scoring protocol; steps, metric, N and S come from the lists",
    )
    reference: EvalSpec = Field(
        default_factory=_default_reference, description="reference recipe and score"
    )
    executor: str = Field("inline", description="inline | subprocess | pool | ray | queue")
    workers: int | None = Field(None, ge=1, description="pool: concurrent CPU workers")
    trials_per_gpu: int = Field(1, ge=1, le=64, description="pool/ray: runs packed on one GPU")
    max_retries: int = Field(2, ge=0, le=10, description="a killed worker is tried again")
    ray_address: str | None = Field(None, description="ray: an existing cluster's address")
    storage: str | None = Field(None, description="queue: the database of the job queue")

    @field_validator("proxy_steps", "score_samples", "score_steps")
    @classmethod
    def _positive_distinct(cls, values: list[int]) -> list[int]:
        if any(v < 1 for v in values) or len(set(values)) != len(values):
            raise ValueError(f"needs distinct whole numbers >= 1, got {values}")
        return values

    @field_validator("executor")
    @classmethod
    def _known_executor(cls, name: str) -> str:
        if name not in EXECUTORS:
            raise ValueError(f"unknown executor {name!r}; allowed: {', '.join(EXECUTORS)}")
        return name

    @model_validator(mode="after")
    def _check(self) -> StudyConfig:
        if not set(self.metrics) & set(SAMPLED):
            raise ValueError(
                "metrics need rfid or kid besides loss: every proxy run is scored by sampling"
            )
        if min(self.score_samples) < 2:
            raise ValueError("score_samples: each N must be >= 2")
        return self

    def seed_list(self) -> list[int]:
        return [self.seed + k for k in range(self.seeds)]

    def settings(self) -> list[ProxySetting]:
        """Every proxy setting, grouped by run length; in each, sampled scores first."""
        sampled = [m for m in self.metrics if m in SAMPLED]
        out = []
        for steps in self.proxy_steps:
            out += [
                ProxySetting(steps=steps, metric=metric, num_samples=n, sampler_steps=s)
                for metric in sampled
                for n in self.score_samples
                for s in self.score_steps
            ]
            if "loss" in self.metrics:
                out.append(ProxySetting(steps=steps, metric="loss"))
        return out

    def proxy_spec(self, steps: int, setting: ProxySetting) -> EvalSpec:
        """The proxy EvalSpec of one run length, scored by `setting` (a sampled one).

        The loss is logged every tenth of the run, so its final value averages the last tenth
        (`log_every` does not change the numbers: a run may even resume with another).
        """
        overrides = {
            **self.proxy.recipe_overrides,
            "steps": steps,
            "log_every": max(1, steps // 10),
        }
        return self.proxy.model_copy(
            update={"recipe_overrides": overrides, "score": setting.score_spec(self.proxy.score)}
        )

    def data_spec(self, space: SearchSpace) -> DataSpec:
        data = parse_data(self.data)
        update: dict[str, Any] = {"image_size": self.data_image_size or space.image_size}
        if self.data_subset:
            update["subset"] = self.data_subset
        return data.model_copy(update=update)

    def make_executor(self) -> Executor:
        return make_executor(
            self.executor, workers=self.workers, trials_per_gpu=self.trials_per_gpu,
            max_retries=self.max_retries, ray_address=self.ray_address, storage=self.storage,
        )  # fmt: skip


class TabulateConfig(StudyConfig):
    """Every option of `diffnas tabulate` (saved as `options.json`; `--resume` reloads it)."""

    name: str | None = Field(None, description="the table's name (default SPACE-DATA)")
    max_archs: int = Field(
        MAX_ARCHS, ge=1, description="refuse a space with more choice combinations than this"
    )

    def table_name(self, space: SearchSpace) -> str:
        return self.name or f"{Path(self.space).stem}-{parse_data(self.data).kind}"


def study_fields(given: dict[str, Any]) -> dict[str, Any]:
    """The StudyConfig fields of the command line's flat options (None values left out by
    the caller): lists parsed, the proxy and reference specs assembled from their flags."""
    plain = (
        "space", "data", "data_subset", "data_image_size", "seed", "seeds", "executor",
        "workers", "trials_per_gpu", "max_retries", "ray_address", "storage",
    )  # fmt: skip
    fields: dict[str, Any] = {k: given[k] for k in plain if k in given}
    for name in ("proxy_steps", "score_samples", "score_steps"):
        if name in given:
            fields[name] = int_list(given[name], "--" + name.replace("_", "-"))
    if "metrics" in given:
        fields["metrics"] = word_list(given["metrics"])

    def spec(base: EvalSpec, prefix: str, score: dict[str, str]) -> dict[str, Any]:
        """The EvalSpec's fields; validated with the config, so errors name e.g. reference.score."""
        overrides = dict(base.recipe_overrides)
        # the proxy's run lengths are the list `proxy_steps`, set per run (`proxy_spec`)
        for key in ("batch_size",) if prefix == "proxy" else ("steps", "batch_size"):
            if f"{prefix}_{key}" in given:
                overrides[key] = given[f"{prefix}_{key}"]
        shared = {k: given[k] for k in ("sampler", "extractor", "inception_weights") if k in given}
        own = {field: given[option] for field, option in score.items() if option in given}
        return {
            "recipe": given.get(f"{prefix}_recipe", base.recipe),
            "recipe_overrides": overrides,
            "score": {**base.score.model_dump(), **shared, **own},
            "device": given.get("device", base.device),
        }

    fields["proxy"] = spec(_default_proxy(), "proxy", {})
    fields["reference"] = spec(
        _default_reference(),
        "reference",
        {
            "metric": "reference_metric",
            "num_samples": "reference_samples",
            "steps": "reference_score_steps",
        },
    )
    return fields


def build_tabulate_config(options: dict[str, Any]) -> TabulateConfig:
    given = {k: v for k, v in options.items() if v is not None}
    fields = study_fields(given)
    fields.update({k: given[k] for k in ("name", "max_archs") if k in given})
    try:
        return TabulateConfig(**fields)
    except ValidationError as err:
        raise config_error(err, "tabulate option") from None


# ----- the architectures -----


def enumerate_archs(space: SearchSpace, max_archs: int = MAX_ARCHS) -> dict[str, TableArch]:
    """Every architecture of `space` within its budget, by arch_id; a space with more than
    `max_archs` choice combinations is refused, naming its count."""
    count = space.combinations()
    if count > max_archs:
        raise UserError(
            f"space {space.name!r} has {count:,} combinations of choices, more than the "
            f"{max_archs:,} tabulate enumerates (--max-archs): tabulate a smaller space (fewer "
            "choices per dimension, a tighter budget), such as the bundled 'micro'.",
            field="space",
        )
    found = {}
    for arch in space.enumerate():
        cost = measure_cost(arch)
        if budget_verdict(cost, space.budget)[0]:
            found[arch.arch_hash()] = TableArch(arch=arch, macs=cost.macs, params=cost.params)
    if not found:
        raise UserError(f"space {space.name!r} has no architecture within its budget", "space")
    return found


# ----- the table's settings and units of work -----


def table_settings(config: StudyConfig, space: SearchSpace, data: DataSpec) -> list[TableSetting]:
    """The proxy settings and the reference as the table records them."""
    extractor = config.proxy.score.extractor
    out = []
    for setting in config.settings():
        spec = config.proxy_spec(setting.steps, setting)
        out.append(
            TableSetting(
                name=setting.key, role="proxy", label=setting.label(extractor), spec=spec,
                recipe=spec.train_recipe(space.objective, data.kind),
            )
        )  # fmt: skip
    ref = config.reference
    recipe = ref.train_recipe(space.objective, data.kind)
    label = f"{recipe.steps} steps ({ref.recipe}), {ref.score.label}"
    if ref.score.metric != "loss":
        label += f" N={ref.score.num_samples} S={ref.score.steps}"
    out.append(TableSetting(name=REFERENCE, role="reference", label=label, spec=ref, recipe=recipe))
    return out


@dataclass(frozen=True)
class Unit:
    """One training run of one architecture with one seed, and the settings its checkpoint
    scores: `scores` maps each setting's name to its name in the job ("" for the job's own)."""

    arch_id: str
    seed: int
    job: EvalJob
    scores: dict[str, str]


def plan_units(
    settings: list[TableSetting],
    archs: dict[str, TableArch],
    seeds: list[int],
    objective: str,
    data: DataSpec,
    work_dir: Path,
    cache_dir: Path,
) -> list[Unit]:
    """Every run, seed by seed (a partial table holds whole seeds first), then architecture,
    then run: the proxy runs by length, then the reference."""
    runs: dict[str, list[TableSetting]] = {}
    for s in settings:
        runs.setdefault(REFERENCE if s.role == "reference" else f"proxy-{s.steps:06d}", []).append(
            s
        )
    units = []
    for seed in seeds:
        for arch_id, entry in archs.items():
            for run, group in runs.items():
                main, *more = group
                job = EvalJob(
                    arch=entry.arch, objective=objective, data=data, spec=main.spec,  # type: ignore[arg-type]
                    recipe=main.recipe, seed=seed,
                    workdir=str(work_dir / arch_id / f"{run}-seed{seed}"),
                    cache_dir=str(cache_dir), extra_scores={s.name: s.score for s in more},
                )  # fmt: skip
                names = {main.name: "", **{s.name: s.name for s in more}}
                units.append(Unit(arch_id, seed, job, names))
    return units


def unit_rows(
    unit: Unit, result: EvalResult, settings: dict[str, TableSetting], entry: TableArch
) -> list[TableRow]:
    """The table rows of a finished run: one per setting it scores."""
    rows = []
    train_s = result.phase_device_s.get("train", result.device_s)
    for name, key in unit.scores.items():
        score = None
        if result.status == "complete":
            score = next(iter(result.scores.values())) if key == "" else result.extra_scores[key]
        protocol = (score or {}).get("protocol") or {}
        own_s = result.phase_device_s.get(key or "score", 0.0)
        rows.append(
            TableRow(
                arch_id=unit.arch_id, setting=name, seed=unit.seed, status=result.status,
                score=None if score is None else float(score["value"]),
                score_label=settings[name].score.label, final_loss=result.train.get("last_loss"),
                device_seconds=round(train_s + own_s, 3), train_device_seconds=train_s,
                wall_seconds=result.wall_s, device=result.device or "", macs=entry.macs,
                params=entry.params, weights_sha256=protocol.get("weights_sha256", ""),
                error=(result.error or "")[:500],
            )
        )  # fmt: skip
    return rows


class Tabulation:
    """One table being built in `stem` (NAME.csv, NAME.json); `run()` resumes where it stopped."""

    def __init__(
        self,
        config: StudyConfig,
        space: SearchSpace,
        stem: Path,
        *,
        work_dir: Path,
        cache_dir: Path,
        log: Callable[[str], None] = print,
    ) -> None:
        self.config, self.space, self.stem = config, space, Path(stem)
        self.data = config.data_spec(space)
        self.work_dir, self.cache_dir, self.log = work_dir, cache_dir, log

    def start(self, archs: dict[str, TableArch], fingerprint: str, command: str) -> TableMeta:
        """The table's metadata: written now for a new table, read back for a resumed one."""
        if self.stem.with_suffix(".json").is_file():
            return read_meta(self.stem)
        import diffusers
        import torch

        meta = TableMeta(
            name=self.stem.name, space=self.space, objective=self.space.objective,
            data=self.data, data_fingerprint=fingerprint,
            settings=table_settings(self.config, self.space, self.data),
            seeds=self.config.seed_list(), archs=archs, command=command,
            versions={
                "diffnas": __version__, "torch": torch.__version__,
                "diffusers": diffusers.__version__, "python": platform.python_version(),
                "platform": platform.platform(),
            },
        )  # fmt: skip
        write_meta(self.stem, meta)
        return meta

    def run(self, meta: TableMeta, executor: Executor | None = None) -> Table:
        """Evaluate every run whose rows are not in the table yet, writing them as each ends."""
        rows = read_rows(self.stem)
        have = {(r.arch_id, r.setting, r.seed) for r in rows}
        settings = {s.name: s for s in meta.settings}
        units = plan_units(
            meta.settings, meta.archs, meta.seeds, meta.objective, meta.data,
            self.work_dir, self.cache_dir,
        )  # fmt: skip
        todo = [u for u in units if any((u.arch_id, s, u.seed) not in have for s in u.scores)]
        sitting = {"start": time.time(), "end": time.time(), "runs": 0, "rows_before": len(rows)}
        meta.notes.setdefault("sittings", []).append(sitting)
        self.log(f"{len(units) - len(todo)} of {len(units)} runs in the table; {len(todo)} to go")
        owned = executor is None
        executor = executor or self.config.make_executor()
        try:
            for index, result in executor.run_many([u.job for u in todo]):
                unit = todo[index]
                new = unit_rows(unit, result, settings, meta.archs[unit.arch_id])
                rows += [r for r in new if (r.arch_id, r.setting, r.seed) not in have]
                write_rows(self.stem, rows)
                have.update((r.arch_id, r.setting, r.seed) for r in new)
                self._record_protocols(meta, unit, result)
                sitting.update(end=time.time(), runs=sitting["runs"] + 1)
                write_meta(self.stem, meta)
                (Path(unit.job.workdir) / "train" / CHECKPOINT).unlink(missing_ok=True)
                self._log_unit(
                    unit, result, new, len(units) - len(todo) + sitting["runs"], len(units)
                )
        finally:
            if owned:
                executor.close()
        return Table(meta, rows, self.stem)

    def _record_protocols(self, meta: TableMeta, unit: Unit, result: EvalResult) -> None:
        """Each setting's score protocol, from its first finished row; a later row scored with
        other extractor weights is called out (its rows carry their own hash)."""
        if result.status != "complete":
            return
        for name, key in unit.scores.items():
            score = next(iter(result.scores.values())) if key == "" else result.extra_scores[key]
            protocol = score.get("protocol") or {}
            setting = meta.setting(name)
            if setting.protocol is None:
                setting.protocol = protocol
            elif protocol.get("weights_sha256") != setting.protocol.get("weights_sha256"):
                self.log(
                    f"  warning: {name} of {unit.arch_id} was scored with extractor weights "
                    f"{protocol.get('weights_sha256')!s:.12} but the table's first row with "
                    f"{setting.protocol.get('weights_sha256')!s:.12}; their scores do not compare"
                )

    def _log_unit(
        self, unit: Unit, result: EvalResult, rows: list[TableRow], done: int, total: int
    ) -> None:
        run = Path(unit.job.workdir).name
        if result.status != "complete":
            self.log(f"[{done}/{total}] {unit.arch_id} {run}: {result.status} {result.error or ''}")
            return
        shown = ", ".join(f"{r.setting} {r.score:.4g}" for r in rows if r.score is not None)
        self.log(f"[{done}/{total}] {unit.arch_id} {run} ({result.wall_s:.0f} s): {shown}")


# ----- what a table costs -----


def sampler_steps(score: ScoreSpec, space: SearchSpace) -> int:
    """Denoiser calls per image: S, or every step of the schedule for ancestral DDPM."""
    if score.sampler == "ddpm" or score.steps is None:
        return DiffusionConfig.resolve(space.objective, space.learn_sigma).timesteps
    return score.steps


def setting_flops(setting: TableSetting, space: SearchSpace, macs: int) -> float:
    """What ranking one architecture by `setting` costs: its training run and its sampling."""
    flops = training_flops(macs, setting.steps, setting.batch_size)
    if setting.score.metric != "loss":
        flops += sampling_flops(
            macs, setting.score.num_samples, sampler_steps(setting.score, space)
        )
    return flops


def run_flops(settings: list[TableSetting], space: SearchSpace, macs: int) -> float:
    """What the table's runs of one architecture with one seed cost: each run trained once,
    sampled once per distinct (sampler, N, S)."""
    flops, runs, draws = 0.0, set(), set()
    for s in settings:
        run = (s.role, s.steps)
        if run not in runs:
            runs.add(run)
            flops += training_flops(macs, s.steps, s.batch_size)
        draw = (*run, s.score.sampler, s.score.num_samples, s.score.steps)
        if s.score.metric != "loss" and draw not in draws:
            draws.add(draw)
            flops += sampling_flops(macs, s.score.num_samples, sampler_steps(s.score, space))
    return flops


def plan(config: StudyConfig, space: SearchSpace, archs: dict[str, TableArch]) -> dict[str, Any]:
    """What a table build runs and its compute, before anything runs (`--dry-run`)."""
    settings = table_settings(config, space, config.data_spec(space))
    runs = len(config.proxy_steps) + 1
    per_seed = sum(run_flops(settings, space, a.macs) for a in archs.values())
    return {
        "archs": len(archs),
        "gmacs": [
            min(a.macs for a in archs.values()) / 1e9,
            max(a.macs for a in archs.values()) / 1e9,
        ],
        "seeds": config.seed_list(),
        "settings": [f"{s.name}: {s.label}" for s in settings],
        "runs": len(archs) * runs * config.seeds,
        "rows": len(archs) * len(settings) * config.seeds,
        "training_and_sampling_tflops": per_seed * config.seeds / 1e12,
    }
