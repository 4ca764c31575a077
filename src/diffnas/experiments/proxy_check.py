"""`diffnas proxy-check`: does the proxy rank architectures the way a longer run does?

N distinct in-budget architectures (uniform draws from the space, or the trained candidates
of a search's run folder) are each trained

- with the proxy recipe once per step count in `proxy_steps`, and that checkpoint is scored
  several ways: RFID and KID at each number of samples N and sampler steps S, and the final
  training loss (mean of the last tenth of the run's steps, no sampling at all);
- with the reference recipe, longer, scored by the reference protocol.

Every (step count, score) pair is a *proxy setting*. Per setting the study gives Kendall's
tau and Spearman's rho against the reference with bootstrap intervals over the
architectures, the top-k overlap, and the compute of each side, so a user can pick the
cheapest setting that still ranks well. Training and the first score of each run go
through `evaluate_candidate`, the search's own evaluation, so the study measures what the
search uses; the further scores of that checkpoint sample it again exactly as that
evaluation does (a test checks they agree).

Each step count is a run of its own, not an intermediate checkpoint of the longest: the
proxy recipe's cosine learning rate and warm-up are fitted to the run's length
(`train/recipe.py`), so step 200 of a 1,000-step run is still at a high learning rate, not
what a 200-step proxy trains.

Run folder (`--resume RUN_DIR` skips the architectures already in `results.jsonl` and
continues an interrupted one from its training checkpoints):

    options.json    every resolved option (ProxyCheckConfig)
    archs.json      the architectures with their cost
    results.jsonl   one record per finished architecture: every proxy value, the reference
    archs/003-<hash>/proxy-000200/   train/ (checkpoints, metrics), samples.png
    archs/003-<hash>/reference/
    summary.json, summary.md, scatter.png
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from diffnas import limits as L
from diffnas.data.datasets import DataSpec, ImageData, load_images, parse_data
from diffnas.errors import UserError
from diffnas.evaluate.score import score_label
from diffnas.execute.job import (
    EvalJob,
    EvalSpec,
    ScoreSpec,
    evaluate_candidate,
    resolve_device,
    score_samples,
)
from diffnas.experiments.compute import training_flops
from diffnas.experiments.inputs import (
    config_error,
    int_list,
    load_space_data,
    word_list,
)
from diffnas.experiments.proxy_summary import (
    SAMPLED,
    reference_flops,
    summarise,
    write_summary,
)
from diffnas.model.builder import build_unet
from diffnas.model.cost import budget_verdict, measure_cost
from diffnas.runs import (
    OPTIONS_FILE,
    append_jsonl,
    load_options,
    read_json,
    read_jsonl,
    write_json,
)
from diffnas.search import study as study_mod
from diffnas.search.config import SearchConfig
from diffnas.space.arch import ArchConfig
from diffnas.space.search_space import SearchSpace, load_space
from diffnas.train.diffusion import DiffusionConfig
from diffnas.train.sampling import sample_images
from diffnas.train.trainer import EMA_CHECKPOINT, restore_ema

ARCHS_FILE = "archs.json"
RESULTS_FILE = "results.jsonl"

ProxyMetric = Literal["rfid", "kid", "loss"]


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
                "num_samples": self.num_samples,
                "steps": self.sampler_steps,
            }
        )


class ProxyCheckConfig(BaseModel):
    """Every option of a proxy-check study (saved as `options.json`; `--resume` reloads it)."""

    model_config = ConfigDict(extra="forbid")

    space: str = Field("tiny", description="space preset or YAML file")
    data: str = Field("digits", description="--data spelling")
    data_subset: int | None = Field(
        None, ge=1, le=L.MAX_IMAGES, description="train on a subset of N images"
    )
    data_image_size: int | None = Field(
        None,
        ge=4,
        le=L.MAX_IMAGE_SIZE,
        description="resize the data to this size (None: the space's image size)",
    )
    num_archs: int = Field(8, ge=3, le=1000, description="architectures compared")
    arch_seed: int = Field(
        0, ge=0, le=L.MAX_SEED, description="seed of the uniform architecture draws"
    )
    archs_from: str | None = Field(
        None, description="take the architectures from this search run folder instead"
    )
    seed: int = Field(
        0,
        ge=0,
        le=L.MAX_SEED,
        description="seeds training and sampling (one seed for all, as in a search)",
    )
    proxy_steps: list[Annotated[int, Field(le=L.MAX_TRAIN_STEPS)]] = Field(
        [100, 400], min_length=1, max_length=16, description="proxy run lengths"
    )
    metrics: list[ProxyMetric] = Field(
        ["rfid", "kid", "loss"], min_length=1, description="proxy scores"
    )
    score_samples: list[Annotated[int, Field(le=L.MAX_SAMPLES)]] = Field(
        [250, 1000], min_length=1, max_length=16, description="proxy N"
    )
    score_steps: list[Annotated[int, Field(le=L.MAX_SAMPLER_STEPS)]] = Field(
        [20], min_length=1, max_length=16, description="proxy sampler steps S"
    )
    proxy: EvalSpec = Field(
        default_factory=_default_proxy,
        description="proxy recipe and scoring protocol; steps, metric, N and S come from the lists",
    )
    reference: EvalSpec = Field(
        default_factory=_default_reference, description="reference recipe and score"
    )
    top_k: int = Field(3, ge=1, le=1000, description="k of the top-k overlap")
    bootstrap: int = Field(
        2000, ge=100, le=1_000_000, description="bootstrap resamples of the architectures"
    )

    @field_validator("proxy_steps", "score_samples", "score_steps")
    @classmethod
    def _positive_distinct(cls, values: list[int]) -> list[int]:
        if any(v < 1 for v in values) or len(set(values)) != len(values):
            raise ValueError(f"needs distinct whole numbers >= 1, got {values}")
        return values

    @model_validator(mode="after")
    def _check(self) -> ProxyCheckConfig:
        if not set(self.metrics) & set(SAMPLED):
            raise ValueError(
                "metrics need rfid or kid besides loss: every proxy run is scored by sampling"
            )
        if min(self.score_samples) < 2:
            raise ValueError("score_samples: each N must be >= 2")
        return self

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


class ArchEntry(BaseModel):
    index: int
    arch: ArchConfig
    arch_hash: str
    macs: int
    params_m: float
    source: str  # "sample" or "trial N of RUN_DIR"


def build_config(options: dict[str, Any]) -> ProxyCheckConfig:
    """The config of the command line's flat options, where None means the default; with
    `archs_from`, the space and data default to that search's."""
    given = {k: v for k, v in options.items() if v is not None}
    if "archs_from" in given:
        for key, value in search_defaults(Path(given["archs_from"])).items():
            if value is not None:
                given.setdefault(key, value)
    plain = ("space", "data", "data_subset", "data_image_size", "arch_seed", "archs_from", "seed")
    fields: dict[str, Any] = {k: given[k] for k in (*plain, "top_k", "bootstrap") if k in given}
    if "archs" in given:
        fields["num_archs"] = given["archs"]
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

    try:
        return ProxyCheckConfig(
            **fields,
            proxy=spec(_default_proxy(), "proxy", {}),
            reference=spec(
                _default_reference(),
                "reference",
                {
                    "metric": "reference_metric",
                    "num_samples": "reference_samples",
                    "steps": "reference_score_steps",
                },
            ),
        )
    except ValidationError as err:
        raise config_error(err, "proxy-check option") from None


def load_config(run_dir: Path) -> ProxyCheckConfig:
    return load_options(run_dir, ProxyCheckConfig, kind="proxy-check")


# ----- choosing the architectures -----


def choose_archs(config: ProxyCheckConfig, space: SearchSpace) -> list[ArchEntry]:
    """N distinct in-budget architectures: uniform draws with `arch_seed`, or a search's trials."""
    if config.archs_from:
        candidates = _search_trials(Path(config.archs_from))
    else:
        rng = random.Random(config.arch_seed)
        candidates = ((space.sample(rng), "sample") for _ in range(200 * config.num_archs))
    chosen: list[ArchEntry] = []
    seen: set[str] = set()
    for arch, source in candidates:
        if arch.key() in seen or not space.contains(arch):
            continue
        seen.add(arch.key())
        cost = measure_cost(arch)
        if not budget_verdict(cost, space.budget)[0]:
            continue
        chosen.append(
            ArchEntry(
                index=len(chosen), arch=arch, arch_hash=arch.arch_hash(), macs=cost.macs,
                params_m=round(cost.params_m, 5), source=source,
            )
        )  # fmt: skip
        if len(chosen) == config.num_archs:
            break
    if len(chosen) < config.num_archs:
        where = (
            f"search {config.archs_from!r} has"
            if config.archs_from
            else f"space {space.name!r} gave"
        )
        raise UserError(
            f"{where} only {len(chosen)} distinct architectures within the budget but "
            f"{config.num_archs} were asked; ask for at most {len(chosen)} with --archs "
            "(a ranking needs at least 3)",
            field="num_archs",
        )
    return chosen


def _search_config(run_dir: Path) -> SearchConfig:
    return load_options(run_dir, SearchConfig, kind="search", option="--archs-from")


def _search_trials(run_dir: Path) -> list[tuple[ArchConfig, str]]:
    """The trained candidates of a search run folder, in trial order."""
    config = _search_config(run_dir)
    memory = study_mod.load_memory(study_mod.open_study(run_dir, config.storage))
    return [
        (t.arch, f"trial {t.number} of {run_dir.name}")
        for t in memory
        if t.arch is not None and t.status != "rejected"
    ]


def search_defaults(run_dir: Path) -> dict[str, Any]:
    """The space and data of a search run folder: a study of its candidates uses the same."""
    config = _search_config(run_dir)
    return {
        "space": config.space,
        "data": config.data,
        "data_subset": config.data_subset,
        "data_image_size": config.data_image_size,
    }


# ----- the study -----


def prepare(config: ProxyCheckConfig) -> tuple[SearchSpace, ImageData, list[ArchEntry]]:
    """Everything checked before a run folder exists: space, recipes, data, architectures."""
    space = load_space(config.space)
    for spec in (config.proxy, config.reference):
        spec.train_recipe(space.objective)  # UserError for a bad override or device
    images = load_space_data(space, config.data_spec(space))
    return space, images, choose_archs(config, space)


class ProxyCheck:
    """One study in one run folder; `run()` resumes where an earlier call stopped."""

    def __init__(
        self,
        config: ProxyCheckConfig,
        run_dir: Path,
        *,
        log: Callable[[str], None] = print,
    ) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.space = load_space(config.space)
        self.data = config.data_spec(self.space)
        self.log = log

    def run(self, archs: list[ArchEntry] | None = None) -> dict[str, Any]:
        """Evaluate every architecture not yet in `results.jsonl`, then write the summary."""
        write_json(self.run_dir / OPTIONS_FILE, self.config.model_dump(mode="json"))
        archs_file = self.run_dir / ARCHS_FILE
        if archs_file.exists():  # resume: the architectures chosen at the start
            archs = [ArchEntry.model_validate(a) for a in read_json(archs_file)]
        else:
            archs = archs if archs is not None else choose_archs(self.config, self.space)
            write_json(archs_file, [a.model_dump(mode="json") for a in archs])
        done = {r["index"] for r in read_jsonl(self.run_dir / RESULTS_FILE)}
        for entry in archs:
            if entry.index in done:
                continue
            self.log(
                f"architecture {entry.index + 1}/{len(archs)}: {entry.arch.summary()} "
                f"({entry.macs / 1e9:.3g} GMACs)"
            )
            append_jsonl(self.run_dir / RESULTS_FILE, self._evaluate(entry))
        summary = summarise(self.config, self.space, archs, self.results())
        write_summary(self.run_dir, summary)
        return summary

    def results(self) -> list[dict[str, Any]]:
        return list(read_jsonl(self.run_dir / RESULTS_FILE))

    def job(self, entry: ArchEntry, spec: EvalSpec, name: str) -> EvalJob:
        workdir = self.run_dir / "archs" / f"{entry.index:03d}-{entry.arch_hash}" / name
        return EvalJob(
            arch=entry.arch, objective=self.space.objective, data=self.data, spec=spec,
            recipe=spec.train_recipe(self.space.objective, self.data.kind),
            seed=self.config.seed, workdir=str(workdir),
            cache_dir=str(self.run_dir.parent / "cache"),  # shared with searches under --runs
        )  # fmt: skip

    def _evaluate(self, entry: ArchEntry) -> dict[str, Any]:
        cfg = self.config
        values: dict[str, float | None] = {}
        scores: dict[str, Any] = {}
        runs: dict[str, Any] = {}
        for steps in cfg.proxy_steps:
            settings = [s for s in cfg.settings() if s.steps == steps]
            first, *more = [s for s in settings if s.metric in SAMPLED]
            job = self.job(entry, cfg.proxy_spec(steps, first), f"proxy-{steps:06d}")
            result = evaluate_candidate(job)
            runs[str(steps)] = {
                "status": result.status, "wall_s": result.wall_s, "train": result.train,
                "error": result.error,
            }  # fmt: skip
            for s in settings:
                values[s.key] = None
            if result.status != "complete":
                self.log(f"  proxy {steps} steps: {result.status} {result.error or ''}")
                continue
            values[first.key] = result.score
            scores[first.key] = result.scores[first.metric]
            if "loss" in cfg.metrics:
                values[ProxySetting(steps=steps, metric="loss").key] = result.train["last_loss"]
            start = time.perf_counter()
            more_specs = {s.key: s.score_spec(cfg.proxy.score) for s in more}
            for key, score in rescore(job, more_specs).items():
                values[key], scores[key] = score["value"], score
            runs[str(steps)]["rescore_wall_s"] = round(time.perf_counter() - start, 3)
            extractor = cfg.proxy.score.extractor
            shown = ", ".join(f"{s.score_name(extractor)} {values[s.key]:.4g}" for s in settings)
            self.log(f"  proxy {steps} steps ({result.wall_s:.0f} s): {shown}")
        ref = evaluate_candidate(self.job(entry, cfg.reference, "reference"))
        label = cfg.reference.score.label
        if ref.status == "complete":
            self.log(f"  reference ({ref.wall_s:.0f} s): {label} {ref.score:.4g}")
        else:
            self.log(f"  reference: {ref.status} {ref.error or ''}")
        return {
            "index": entry.index,
            "arch_hash": entry.arch_hash,
            "values": values,
            "scores": scores,
            "proxy_runs": runs,
            "reference": {
                "status": ref.status, "value": ref.score, "label": label,
                "score": ref.scores.get(cfg.reference.score.metric), "train": ref.train,
                "wall_s": ref.wall_s, "error": ref.error,
            },
        }  # fmt: skip


@lru_cache(maxsize=2)
def _images(data_json: str) -> ImageData:
    return load_images(DataSpec.model_validate_json(data_json))


def rescore(job: EvalJob, specs: dict[str, ScoreSpec]) -> dict[str, dict[str, Any]]:
    """Score the trained checkpoint of a finished `evaluate_candidate(job)` by more protocols.

    The samples are drawn exactly as that evaluation draws them (same EMA weights, seed and
    sampling batch), once per (sampler, N, S), and scored by every metric asked of them.
    Returns each key of `specs` with its score (value and protocol) as JSON.
    """
    if not specs:
        return {}
    device = resolve_device(job.spec.device)
    data = _images(job.data.model_dump_json())
    diffusion = DiffusionConfig.resolve(job.objective, job.arch.learn_sigma)
    model = build_unet(job.arch)
    restore_ema(model, Path(job.workdir) / "train" / EMA_CHECKPOINT)
    model.to(device)
    groups: dict[tuple, dict[str, ScoreSpec]] = {}
    for key, spec in specs.items():
        protocol = (spec.sampler, spec.num_samples, spec.steps, spec.batch_size)
        groups.setdefault(protocol, {})[key] = spec
    out = {}
    for (sampler, n, steps, batch), group in groups.items():
        images = sample_images(
            model, diffusion, n, sampler=sampler, steps=steps, seed=job.seed,
            batch_size=batch, device=device,
        )  # fmt: skip
        for key, spec in group.items():
            score = score_samples(images, data, job.data.split, spec, Path(job.cache_dir), device)
            out[key] = score.model_dump(mode="json")
    return out


def plan(config: ProxyCheckConfig, space: SearchSpace, archs: list[ArchEntry]) -> dict[str, Any]:
    """What the study will run and its compute, before anything runs (`--dry-run`)."""
    settings = config.settings()
    return {
        "archs": [
            {"index": a.index, "arch": a.arch.summary(), "gmacs": a.macs / 1e9, "source": a.source}
            for a in archs
        ],
        "proxy_runs_per_arch": len(config.proxy_steps),
        "settings": [s.label(config.proxy.score.extractor) for s in settings],
        "proxy_training_tflops": sum(
            training_flops(a.macs, steps, config.proxy.train_recipe(space.objective).batch_size)
            for a in archs
            for steps in config.proxy_steps
        )
        / 1e12,
        "reference_tflops": sum(reference_flops(config, space, a.macs) for a in archs) / 1e12,
    }
