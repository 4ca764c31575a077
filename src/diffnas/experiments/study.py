"""What a study of architectures measures - proxy settings, the reference, seeds - and where
it runs: the options `diffnas tabulate` and `diffnas proxy-check` share (`StudyConfig`), and
their assembly from the command line's flat options (`study_fields`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from diffnas import limits as L
from diffnas.data.datasets import DataSpec, ImageData, parse_data
from diffnas.evaluate.score import check_scoring, score_label
from diffnas.execute.base import Executor
from diffnas.execute.factory import EXECUTORS, check_executor, make_executor
from diffnas.execute.job import EvalSpec, ScoreSpec
from diffnas.experiments.inputs import int_list, load_space_data, word_list
from diffnas.space.search_space import SearchSpace, load_space
from diffnas.train.device import check_device

ProxyMetric = Literal["rfid", "kid", "loss"]
SAMPLED = ("rfid", "kid")  # the metrics that sample the checkpoint


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
    data_subset: int | None = Field(
        None, ge=1, le=L.MAX_IMAGES, description="train on a subset of N images"
    )
    data_image_size: int | None = Field(
        None,
        ge=4,
        le=L.MAX_IMAGE_SIZE,
        description="resize the data to this size (None: the space's image size)",
    )
    seed: int = Field(
        0, ge=0, le=L.MAX_SEED, description="the first seed; the runs use seed, seed + 1, ..."
    )
    seeds: int = Field(
        2, ge=1, le=100, description="seeds per architecture and setting (training + sampling)"
    )
    reference_seeds: int | None = Field(
        None,
        ge=1,
        le=100,
        description="seeds of the reference alone (None: `seeds`); more than the proxies' make "
        "the mean reference and its ceiling firmer at the reference's cost only",
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
    executor: str = Field("inline", description="inline | subprocess | pool | ray | queue")
    workers: int | None = Field(
        None, ge=1, le=L.MAX_WORKERS, description="pool: concurrent CPU workers"
    )
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

    def reference_seed_list(self) -> list[int]:
        return [self.seed + k for k in range(self.reference_seeds or self.seeds)]

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

    def check(self, *, allow_download: bool = True) -> tuple[SearchSpace, ImageData]:
        """Everything tabulate and proxy-check check before a run folder exists, in one place:
        the devices, the executor, both recipes resolved for the data they train on, the data
        (read now) and its scoring by each extractor. Returns the space and the images."""
        for spec in (self.proxy, self.reference):
            check_device(spec.device)
        check_executor(self.executor, self.storage, self.ray_address)
        space = load_space(self.space)
        data = self.data_spec(space)
        for spec in (self.proxy, self.reference):
            spec.train_recipe(space.objective, data.kind)  # UserError for a bad override
        images = load_space_data(space, data)
        for spec in (self.proxy, self.reference):
            check_scoring(
                images, spec.score.extractor, spec.score.inception_weights,
                allow_download=allow_download,
            )  # fmt: skip
        return space, images

    def make_executor(self) -> Executor:
        return make_executor(
            self.executor, workers=self.workers, trials_per_gpu=self.trials_per_gpu,
            max_retries=self.max_retries, ray_address=self.ray_address, storage=self.storage,
        )  # fmt: skip


def study_fields(given: dict[str, Any]) -> dict[str, Any]:
    """The StudyConfig fields of the command line's flat options (None values left out by
    the caller): lists parsed, the proxy and reference specs assembled from their flags."""
    plain = (
        "space", "data", "data_subset", "data_image_size", "seed", "seeds", "reference_seeds",
        "executor", "workers", "trials_per_gpu", "max_retries", "ray_address", "storage",
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
