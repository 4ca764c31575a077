"""Training recipes as data: the papers' full recipes and the rapid-convergence proxy.

`full_ddpm()` / `full_iddpm()` reproduce the published settings (DDPM: Ho et al. 2020, App. B;
IDDPM: Nichol & Dhariwal 2021, CIFAR-10). `proxy()` is what DiffNAS ranks candidates with: about
2.5 % of DDPM's step budget (4 % of IDDPM's), made to converge fast enough that the ranking of
architectures after it predicts the ranking after full training:

- a short linear warm-up, then a *higher* peak learning rate (2× DDPM's) with cosine decay to
  10 % — the decay is what lets a short run end in a low-loss basin instead of mid-oscillation;
- an EMA whose decay warms up as (1 + step) / (10 + step), capped at 0.9995 (diffusers'
  `EMAModel` warm-up), so the averaged weights are meaningful after a few thousand steps rather
  than the ~10k steps 0.9999 needs to forget the random initialisation;
- bf16 autocast, channels-last memory and fused AdamW on CUDA, for throughput; `torch.compile`
  optional because each candidate architecture pays its compile time again;
- on CPU, bf16 autocast where the CPU computes bf16 natively (`bf16_cpu="auto"`, decided by
  `diffnas.train.precision.cpu_bf16_support`) and no channels-last.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from diffnas.errors import UserError, first_field, pydantic_message
from diffnas.limits import FINITE, MAX_BATCH_SIZE, MAX_TRAIN_STEPS
from diffnas.train.diffusion import Objective
from diffnas.train.precision import cpu_bf16_support

# An Adam moment decay: AdamW itself refuses values outside [0, 1), but only when the
# optimizer is built, after a run folder exists.
Beta = Annotated[float, Field(ge=0.0, lt=1.0)]


class TrainRecipe(BaseModel):
    """Every knob of a training run. Defaults are the proxy recipe."""

    model_config = ConfigDict(extra="forbid", frozen=True, **FINITE)

    name: str = Field("proxy", description="Label stored with checkpoints and metrics.")
    steps: int = Field(
        20_000, ge=1, le=MAX_TRAIN_STEPS, description="Optimizer steps in the whole run."
    )
    batch_size: int = Field(
        128, ge=1, le=MAX_BATCH_SIZE, description="Images per optimizer step (128 in both papers)."
    )
    lr: float = Field(
        4e-4, gt=0, le=1.0, description="Peak learning rate (DDPM 2e-4, IDDPM 1e-4, proxy 2× DDPM)."
    )
    warmup_steps: int = Field(
        500, ge=0, description="Linear warm-up from 0 to `lr` over this many steps (DDPM 5000)."
    )
    lr_schedule: Literal["constant", "cosine"] = Field(
        "cosine",
        description="After warm-up: 'constant' (both papers) or 'cosine' decay to "
        "`min_lr_ratio`·lr at the last step (proxy: ends the short run settled).",
    )
    min_lr_ratio: float = Field(
        0.1, ge=0, le=1, description="Floor of the cosine decay as a fraction of `lr`."
    )
    adam_betas: tuple[Beta, Beta] = Field((0.9, 0.999), description="AdamW β1, β2, each in [0, 1).")
    weight_decay: float = Field(
        0.0, ge=0, le=10.0, description="AdamW weight decay (0 in both papers)."
    )
    grad_clip: float | None = Field(
        1.0,
        gt=0,
        le=1e6,
        description="Clip the global gradient norm to this (DDPM 1.0); None = off.",
    )
    ema_decay: float = Field(
        0.9995,
        ge=0,
        lt=1,
        description="EMA decay (papers 0.9999); with `ema_warmup` this is the cap.",
    )
    ema_warmup: bool = Field(
        True,
        description="Decay = min(ema_decay, (1+step)/(10+step)) (diffusers EMAModel), so a short "
        "run's EMA is not dominated by the initial weights.",
    )
    random_hflip: bool = Field(
        True,
        description="Random horizontal flips (both papers on CIFAR-10); turn off for data whose "
        "mirror images are out of distribution (digits, text).",
    )
    dropout: float | None = Field(
        None,
        ge=0.0,
        lt=1.0,
        description="Dropout the recipe expects (IDDPM 0.3, DDPM 0.1 on CIFAR-10). Informational: "
        "dropout lives in the architecture, the trainer does not change the model.",
    )
    bf16: bool = Field(
        True, description="bf16 autocast for the forward pass on CUDA (ignored on CPU)."
    )
    bf16_cpu: bool | Literal["auto"] = Field(
        "auto",
        description="bf16 autocast on CPU (attention kept in fp32): 1.3× faster than fp32 on an "
        "AVX512-BF16 host (benchmarks/bench_train.py) with the same loss curve, but slower on "
        "CPUs without native bf16. 'auto' = on exactly where the CPU has native bf16 "
        "(avx512_bf16 or amx_bf16 on x86, bf16 on arm64); `resolve_recipe` records the verdict.",
    )
    channels_last: bool = Field(
        True,
        description="Channels-last memory format for model and batches (faster convs on CUDA; "
        "on CPU it measured ~10 % slower, so set it False there).",
    )
    compile: bool = Field(
        False, description="torch.compile the model (pays compile time once per architecture)."
    )
    fused_adamw: bool = Field(
        True,
        description="Fused AdamW kernel on CUDA; elsewhere the foreach implementation is used.",
    )
    tensorboard: bool = Field(
        False,
        description="Also write the logged metrics as TensorBoard scalars to RUN_DIR/tb "
        "(needs the `tensorboard` package: pip install -e '.[tensorboard]').",
    )
    log_every: int = Field(
        100,
        ge=1,
        le=MAX_TRAIN_STEPS,
        description="Steps between metric records (the only host syncs in the loop).",
    )
    checkpoint_every: int = Field(
        5_000,
        ge=1,
        le=MAX_TRAIN_STEPS,
        description="Steps between checkpoints (one is always written at the end).",
    )

    @model_validator(mode="after")
    def _check(self) -> TrainRecipe:
        if self.warmup_steps > self.steps:
            raise ValueError(
                f"warmup_steps={self.warmup_steps} exceeds steps={self.steps}: "
                "warm-up must fit in the run"
            )
        return self

    def autocast_bf16(self, device_type: str) -> bool:
        """Whether training on `device_type` runs its forward pass under bf16 autocast."""
        if device_type != "cpu":
            return self.bf16
        if self.bf16_cpu == "auto":  # a recipe built directly, not through resolve_recipe
            return cpu_bf16_support().native_bf16
        return self.bf16_cpu

    def lr_at(self, step: int) -> float:
        """Learning rate for the optimizer step with 0-based index `step`."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        if self.lr_schedule == "constant":
            return self.lr
        span = max(1, self.steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.lr * (self.min_lr_ratio + (1.0 - self.min_lr_ratio) * cosine)

    @classmethod
    def proxy(cls, **overrides) -> TrainRecipe:
        """The rapid-convergence proxy recipe (the defaults), with optional overrides."""
        return cls(**overrides)

    @classmethod
    def full_ddpm(cls, **overrides) -> TrainRecipe:
        """DDPM CIFAR-10: Adam lr 2e-4, batch 128, 800k steps, warm-up 5000, clip 1.0, EMA 0.9999."""
        settings = dict(
            name="full-ddpm",
            steps=800_000,
            batch_size=128,
            lr=2e-4,
            warmup_steps=5000,
            lr_schedule="constant",
            grad_clip=1.0,
            ema_decay=0.9999,
            ema_warmup=False,
            dropout=0.1,
            checkpoint_every=10_000,
        )
        return cls(**{**settings, **overrides})

    @classmethod
    def full_iddpm(cls, **overrides) -> TrainRecipe:
        """IDDPM CIFAR-10: Adam lr 1e-4, batch 128, 500k steps, EMA 0.9999, dropout 0.3, no warm-up or clip."""
        settings = dict(
            name="full-iddpm",
            steps=500_000,
            batch_size=128,
            lr=1e-4,
            warmup_steps=0,
            lr_schedule="constant",
            grad_clip=None,
            ema_decay=0.9999,
            ema_warmup=False,
            dropout=0.3,
            checkpoint_every=10_000,
        )
        return cls(**{**settings, **overrides})

    @classmethod
    def full(cls, objective: Objective, **overrides) -> TrainRecipe:
        """The full recipe of `objective`."""
        return cls.full_iddpm(**overrides) if objective == "iddpm" else cls.full_ddpm(**overrides)


#: A fixed EMA decay is warmed up (see `resolve_recipe`) when the initial weights would still
#: weigh more than this in the EMA at the end of the run.
EMA_INITIAL_SHARE = 0.01


def ema_initial_share(decay: float, steps: int) -> float:
    """The weight of the initial weights in an EMA of fixed `decay` after `steps` updates."""
    return decay**steps


def resolve_recipe(
    preset: str,
    objective: Objective,
    overrides: dict[str, Any],
    *,
    data_kind: str,
    device_type: str,
) -> tuple[TrainRecipe, list[str]]:
    """A preset with the user's overrides, adapted where the user said nothing; plus a note per adaptation.

    - a short `steps` shortens the default warm-up to a tenth of the run;
    - a short `steps` turns on the EMA warm-up of a preset without one (the full recipes'
      fixed 0.9999) when the initial weights would still weigh more than `EMA_INITIAL_SHARE`
      in the EMA at the end (0.9999**1000 = 90 % after 1,000 steps: the sampled model would
      be mostly noise), as the proxy recipe does; set `ema_warmup` or `ema_decay` to keep
      yours (a note then says what the EMA holds);
    - digits get no horizontal flips (a mirrored digit is not a digit);
    - channels-last is off on CPU (measured ~10 % slower there);
    - `bf16_cpu="auto"` becomes true or false by this machine's CPU (native bf16 or not), so the
      recorded recipe says what the run used and a resume elsewhere does the same.
    Bad presets or values raise `UserError` naming the key and listing the recipe's keys.
    """
    if preset not in ("proxy", "full"):
        raise UserError(f"recipe {preset!r} is unknown; use proxy or full", field="recipe")
    base = TrainRecipe.proxy() if preset == "proxy" else TrainRecipe.full(objective)
    overrides, notes = dict(overrides), []
    steps = overrides.get("steps")
    if (
        isinstance(steps, int)
        and "warmup_steps" not in overrides
        and base.warmup_steps > steps // 10
    ):
        overrides["warmup_steps"] = steps // 10
        notes.append(f"warm-up capped at 10% of the {steps}-step run: {steps // 10} steps")
    if isinstance(steps, int) and steps > 0:
        decay = overrides.get("ema_decay", base.ema_decay)
        warmup = overrides.get("ema_warmup", base.ema_warmup)
        share = ema_initial_share(decay, steps) if isinstance(decay, float) else 0.0
        if not warmup and share > EMA_INITIAL_SHARE:
            if "ema_warmup" in overrides or "ema_decay" in overrides:
                notes.append(
                    f"warning: EMA decay {decay:g} without warm-up over {steps} steps: the "
                    f"initial weights still make up {share:.0%} of the EMA model that is "
                    "sampled and scored (ema_warmup=true warms it up)"
                )
            else:
                overrides["ema_warmup"] = True
                notes.append(
                    f"EMA warm-up on for the {steps}-step run: with decay {decay:g} and no "
                    f"warm-up its EMA would still be {share:.0%} the initial weights "
                    "(set ema_warmup=false to keep the preset's)"
                )
    if data_kind == "digits" and "random_hflip" not in overrides:
        overrides["random_hflip"] = False
        notes.append("no horizontal flips on digits (a mirrored digit is not a digit)")
    if device_type == "cpu" and "channels_last" not in overrides:
        overrides["channels_last"] = False
    if overrides.get("bf16_cpu", base.bf16_cpu) == "auto":
        cpu = cpu_bf16_support()
        overrides["bf16_cpu"] = cpu.native_bf16
        if device_type == "cpu":
            notes.append(
                f"bf16 autocast {'on' if cpu.native_bf16 else 'off'}: CPU {cpu.model} "
                f"{'has' if cpu.native_bf16 else 'lacks'} native bf16 ({cpu.evidence}); "
                f"--{'no-' if cpu.native_bf16 else ''}bf16-cpu to change"
            )
    try:
        return TrainRecipe.model_validate({**base.model_dump(), **overrides}), notes
    except ValidationError as err:
        raise UserError(
            f"{pydantic_message(err, 'recipe override')}. Recipe keys: {', '.join(TrainRecipe.model_fields)}",
            field=first_field(err, "recipe"),
        ) from None
