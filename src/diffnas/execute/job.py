"""One candidate's evaluation: train with a recipe, sample, score - a pure function of its job.

`evaluate_candidate(EvalJob) -> EvalResult` depends only on the job (architecture, resolved
training recipe, data, scoring protocol, seed) and the files in its work folder, so any
executor - this process, a child process, a GPU pool, a Ray worker - can run it. An
interrupted job resumes from the trainer's checkpoint in `workdir/train`. It lives next to the
executors (not in `evaluate/`, which holds the metrics only) because it composes training,
sampling and scoring.

A job may ask for further scores of the same checkpoint (`extra_scores`: `diffnas tabulate`
and `proxy-check` rank by several protocols at the cost of one training): the worker samples
once per (sampler, N, S, batch) exactly as the main score samples, and records what each
phase cost, so a table can say what ranking by one protocol alone costs.
"""

from __future__ import annotations

import os
import time
import traceback
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from diffnas.data.datasets import DataSpec, ImageData, load_images
from diffnas.errors import UserError
from diffnas.evaluate.features import get_extractor
from diffnas.evaluate.reference import reference_stats
from diffnas.evaluate.score import Score, score_images, score_label
from diffnas.layout import SAMPLES_FILE
from diffnas.limits import FINITE, MAX_BATCH_SIZE, MAX_SAMPLER_STEPS, MAX_SAMPLES, MAX_SEED
from diffnas.model.builder import build_unet
from diffnas.space.arch import ArchConfig
from diffnas.train.checkpoint import checkpoint_metadata, restore_ema
from diffnas.train.device import fast_cuda_math, resolve_device
from diffnas.train.diffusion import DiffusionConfig, Objective
from diffnas.train.recipe import TrainRecipe, resolve_recipe
from diffnas.train.sampling import sample_images, save_grid
from diffnas.train.trainer import train

LOSS_LABEL = "training loss"
PHASES = ("train", "score")  # `EvalResult.phase_device_s` keys besides the extra scores' names


class ScoreSpec(BaseModel):
    """The scoring protocol: which metric, features, how many samples, which sampler."""

    model_config = ConfigDict(extra="forbid", **FINITE)

    metric: Literal["rfid", "fid", "kid", "loss"] = Field(
        "rfid",
        description="rfid: FID at reduced N and S; loss: the final training loss (mean of the "
        "run's last tenth), no sampling - the cheapest proxy `diffnas proxy-check` measures",
    )
    extractor: Literal["classifier", "inception"] = Field(
        "classifier",
        description="classifier: offline CNN on the data's labels; inception: standard FID",
    )
    num_samples: int = Field(1000, ge=2, le=MAX_SAMPLES, description="generated images N")
    sampler: Literal["ddim", "ddpm", "respaced"] = Field("ddim", description="sampler")
    steps: int | None = Field(
        50, ge=1, le=MAX_SAMPLER_STEPS, description="sampler steps S (ddpm: all T)"
    )
    batch_size: int = Field(256, ge=1, le=MAX_BATCH_SIZE, description="sampling batch")
    inception_weights: str | None = Field(None, description="FID Inception weights file (offline)")

    @property
    def label(self) -> str:
        """The score's printed and stored name, e.g. "RFID[classifier]" (see `score_label`)."""
        return LOSS_LABEL if self.metric == "loss" else score_label(self.metric, self.extractor)


class EvalSpec(BaseModel):
    """How candidates are trained and scored at one fidelity (proxy or final)."""

    model_config = ConfigDict(extra="forbid", **FINITE)

    recipe: Literal["proxy", "full"] = Field("proxy", description="training recipe preset")
    recipe_overrides: dict[str, Any] = Field(
        default_factory=dict, description="TrainRecipe fields to change"
    )
    score: ScoreSpec = Field(default_factory=ScoreSpec)
    device: str = Field("auto", description="auto (cuda if available) | cpu | cuda[:N]")

    @classmethod
    def proxy_default(cls) -> EvalSpec:
        return cls(recipe="proxy", score=ScoreSpec(metric="rfid", num_samples=1000, steps=50))

    @classmethod
    def final_default(cls) -> EvalSpec:
        return cls(recipe="full", score=ScoreSpec(metric="fid", num_samples=10_000, steps=100))

    def train_recipe(
        self, objective: Objective, data_kind: str, device_type: str | None = None
    ) -> TrainRecipe:
        """The resolved recipe (`diffnas.train.recipe.resolve_recipe`: same rules as `diffnas train`)
        for the data it trains on (digits are not flipped) and the device the evaluation runs
        on: by default this spec's `device` on this machine. A job carries its result, so the
        evaluation trains with exactly what was resolved here; plans and checks pass the same
        data kind, so they describe the recipe that runs."""
        return self.resolve(objective, data_kind, device_type)[0]

    def resolve(
        self, objective: Objective, data_kind: str, device_type: str | None = None
    ) -> tuple[TrainRecipe, list[str]]:
        """`train_recipe` and the notes of what was adapted (a shortened warm-up, the EMA
        warmed up for a short run, ...), for the plan to print."""
        if device_type is None:
            try:
                device_type = resolve_device(self.device).type
            except RuntimeError:
                raise UserError(
                    f"device {self.device!r} is unknown; use auto, cpu or cuda[:N]", field="device"
                ) from None
        recipe, notes = resolve_recipe(
            self.recipe,
            objective,
            self.recipe_overrides,
            data_kind=data_kind,
            device_type=device_type,
        )
        if self.score.metric == "loss" and "log_every" not in self.recipe_overrides:
            # the last logged loss is the score: the mean of the run's last tenth, as
            # `diffnas proxy-check` measures it (log_every changes no weights)
            recipe = recipe.model_copy(update={"log_every": max(1, recipe.steps // 10)})
        return recipe, notes


class EvalJob(BaseModel):
    """Everything an evaluation depends on; JSON-serialisable (written as job.json)."""

    model_config = ConfigDict(extra="forbid")

    arch: ArchConfig
    objective: Objective
    data: DataSpec
    spec: EvalSpec  # scoring protocol and device; its recipe fields are resolved into `recipe`
    recipe: TrainRecipe  # fully resolved (`EvalSpec.train_recipe`), recorded in job.json
    seed: int = Field(ge=0, le=MAX_SEED)
    workdir: str
    cache_dir: str  # reference statistics and classifier weights, shared by all candidates
    # train only to this step of `recipe` and score there (a successive-halving rung); the LR
    # schedule still spans the whole recipe, so a later job with a higher bound continues the
    # same training run (`train_dir`, shared by a candidate's rungs) from its checkpoint
    max_steps: int | None = Field(None, ge=1)
    train_dir: str | None = None  # the training run's folder; default `workdir/train`
    # more protocols to score the same checkpoint by, each under its own name (the same
    # samples serve every protocol that samples alike); results in `EvalResult.extra_scores`
    extra_scores: dict[str, ScoreSpec] = Field(default_factory=dict)

    @field_validator("extra_scores")
    @classmethod
    def _named(cls, specs: dict[str, ScoreSpec]) -> dict[str, ScoreSpec]:
        taken = [name for name in specs if name in PHASES or not name]
        if taken:
            raise ValueError(f"extra score names must be non-empty and not {PHASES}: {taken}")
        return specs


class EvalResult(BaseModel):
    status: Literal["complete", "diverged", "oom", "failed"]
    score: float | None = None  # the spec's metric, lower is better
    scores: dict[str, Any] = Field(default_factory=dict)  # metric -> Score (value + protocol)
    train: dict[str, Any] = Field(default_factory=dict)  # steps, last_loss, images_per_sec
    wall_s: float = 0.0
    error: str | None = None
    # cost accounting: where it ran ("cpu", "cuda:3") and its device-seconds (a GPU's wall
    # time times the share of the card it was given; on CPU the process's CPU time)
    device: str | None = None
    device_s: float = 0.0
    # each of the job's `extra_scores` by name: value, label and protocol (as `scores`)
    extra_scores: dict[str, Any] = Field(default_factory=dict)
    # device-seconds per phase: "train", then per score ("score" and each extra name) its
    # sampling (each score is charged the whole sampling it used, as if scored alone) and
    # scoring; the cost of ranking by one protocol is train + that score's share
    phase_device_s: dict[str, float] = Field(default_factory=dict)


def evaluate_candidate(job: EvalJob) -> EvalResult:
    """Train, sample and score one candidate. Faults become a status; bad configuration raises."""
    start, cpu_start = time.perf_counter(), time.process_time()
    workdir = Path(job.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        # training, sampling and feature extraction alike get cuDNN autotuning and TF32 on CUDA
        with fast_cuda_math(resolve_device(job.spec.device)):
            result = _evaluate(job, workdir)
    except UserError:
        raise  # a configuration problem would fail every candidate: stop and say so
    except torch.cuda.OutOfMemoryError as err:
        result = EvalResult(status="oom", error=str(err).splitlines()[0])
    except Exception as err:  # a fault in one candidate must not end the search
        (workdir / "error.txt").write_text(traceback.format_exc())
        result = EvalResult(status="failed", error=f"{type(err).__name__}: {err}")
    result.wall_s = round(time.perf_counter() - start, 3)
    result.device, result.device_s = device_seconds(
        job.spec.device, result.wall_s, time.process_time() - cpu_start
    )
    return result


class PhaseClock:
    """Device-seconds since `start()`, measured as `device_seconds` measures a whole job."""

    def __init__(self, device_name: str) -> None:
        self.device_name = device_name
        self.start()

    def start(self) -> None:
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def elapsed(self) -> float:
        return device_seconds(
            self.device_name,
            time.perf_counter() - self._wall,
            time.process_time() - self._cpu,
        )[1]


def device_seconds(device_name: str, wall_s: float, cpu_s: float) -> tuple[str, float]:
    """(device label, device-seconds) of one evaluation. An executor that pins the job names
    the device and the share of it the job got (`DIFFNAS_DEVICE_LABEL`, `DIFFNAS_DEVICE_SHARE`)."""
    try:
        label = os.environ.get("DIFFNAS_DEVICE_LABEL") or str(resolve_device(device_name))
    except RuntimeError:
        label = device_name
    if label.startswith("cuda"):
        share = float(os.environ.get("DIFFNAS_DEVICE_SHARE", "1"))
        return label, round(wall_s * share, 3)
    return label, round(cpu_s, 3)


def score_samples(
    images: torch.Tensor,
    data: ImageData,
    split: str,
    spec: ScoreSpec,
    cache_dir: Path,
    device: torch.device,
) -> Score:
    """Score generated uint8 images against `data` by the protocol `spec` (features, reference
    statistics from the cache, metric). The one scoring path of the search and `diffnas score`."""
    extractor = get_extractor(
        spec.extractor,
        weights_path=spec.inception_weights,
        train_images=data.as_uint8(),
        train_labels=data.y,
        cache_dir=cache_dir,
        dataset_fingerprint=data.fingerprint,
        seed=0,
        device=device,
    )
    reference = reference_stats(
        extractor,
        data.as_uint8,
        dataset_fingerprint=data.fingerprint,
        split=split,
        resolution=data.image_size,
        cache_dir=cache_dir,
        dataset=data.name,
    )
    sampler_name = spec.sampler + (f"-{spec.steps}" if spec.steps else "")
    return score_images(
        images, reference, extractor, metric=spec.metric, sampler=sampler_name, steps=spec.steps
    )


def _evaluate(job: EvalJob, workdir: Path) -> EvalResult:
    device = resolve_device(job.spec.device)
    clock = PhaseClock(job.spec.device)
    data = load_images(job.data)
    if data.image_size != job.arch.image_size or data.channels != job.arch.in_channels:
        raise UserError(
            f"data {data.name} has {data.channels}x{data.image_size}x{data.image_size} images but the "
            f"architecture expects {job.arch.in_channels}x{job.arch.image_size}x{job.arch.image_size}; "
            "pick a space that matches the data (or set the data's image_size).",
            field="data",
        )
    diffusion = DiffusionConfig.resolve(job.objective, job.arch.learn_sigma)
    torch.manual_seed(job.seed)
    model = build_unet(job.arch)
    trained = train(
        model,
        data.x,
        recipe=job.recipe,
        diffusion=diffusion,
        run_dir=Path(job.train_dir) if job.train_dir else workdir / "train",
        seed=job.seed,
        device=device,
        resume=True,
        max_steps=job.max_steps,
        metadata=checkpoint_metadata(job.arch, job.objective, job.data),
    )
    train_info = {
        "steps": trained.steps,
        "last_loss": trained.last_loss,
        "images_per_sec": trained.images_per_sec,
    }
    phases = {"train": round(clock.elapsed(), 3)}
    reached_bound = trained.status == "paused" and trained.steps == job.max_steps
    if trained.status != "complete" and not reached_bound:
        return EvalResult(
            status=trained.status, train=train_info, error=trained.error, phase_device_s=phases
        )
    specs = {MAIN_SCORE: job.spec.score, **job.extra_scores}
    loss = {"value": trained.last_loss, "label": LOSS_LABEL, "protocol": {"metric": "loss"}}
    scored = {name: loss for name, spec in specs.items() if spec.metric == "loss"}
    phases.update(dict.fromkeys(scored, 0.0))  # the run's own loss: nothing to sample
    sampled = {name: spec for name, spec in specs.items() if spec.metric != "loss"}
    if sampled:
        restore_ema(model, trained.ema_checkpoint)
        results, grid = _score_sampled(job, model, diffusion, data, sampled)
        for name, (score, cost) in results.items():
            scored[name], phases[name] = score, cost
        save_grid(grid, workdir / SAMPLES_FILE)  # the main score's samples, or the first drawn
    main = scored[MAIN_SCORE]
    spec = job.spec.score
    return EvalResult(
        status="complete",
        score=main["value"],
        scores={spec.metric: main},
        train=train_info,
        extra_scores={name: scored[name] for name in job.extra_scores},
        phase_device_s={k or "score": v for k, v in phases.items()},
    )


MAIN_SCORE = ""  # the job's own score among `extra_scores`' names (which are never empty)


def _score_sampled(
    job: EvalJob,
    model: torch.nn.Module,
    diffusion: DiffusionConfig,
    data: ImageData,
    specs: dict[str, ScoreSpec],
) -> tuple[dict[str, tuple[dict[str, Any], float]], torch.Tensor]:
    """Score the trained `model` by every sampled protocol of `specs`: one set of samples per
    (sampler, N, S, batch), drawn with the job's seed. Returns name -> (score as JSON, the
    device-seconds of its sampling and scoring), and up to 64 samples to show (the main
    score's when it samples)."""
    device = resolve_device(job.spec.device)
    groups: dict[tuple[Any, ...], dict[str, ScoreSpec]] = {}
    for name, spec in specs.items():
        groups.setdefault((spec.sampler, spec.num_samples, spec.steps, spec.batch_size), {})[
            name
        ] = spec
    clock = PhaseClock(job.spec.device)
    out, grid = {}, None
    for (sampler, n, steps, batch), group in groups.items():
        clock.start()
        images = sample_images(
            model, diffusion, n, sampler=sampler, steps=steps, seed=job.seed,
            batch_size=batch, device=device,
        )  # fmt: skip
        sampling_s = clock.elapsed()
        if grid is None or MAIN_SCORE in group:
            grid = images[:64]
        for name, spec in group.items():
            clock.start()
            score = score_samples(images, data, job.data.split, spec, Path(job.cache_dir), device)
            out[name] = (score.model_dump(mode="json"), round(sampling_s + clock.elapsed(), 3))
    assert grid is not None  # `specs` is not empty
    return out, grid
