"""Diffusion objectives: DDPM's L_simple and IDDPM's L_hybrid with a learned-range variance.

The noise schedules come from `diffusers.DDPMScheduler` ("linear" = DDPM, "squaredcos_cap_v2" =
IDDPM's cosine schedule). The linear schedule is IDDPM's `get_named_beta_schedule("linear", T)`:
Ho et al.'s 1e-4 → 0.02 at T = 1000, both ends scaled by 1000/T at other T so that ᾱ_T ≈ 4e-5
whatever T (unscaled, T = 100 would end at ᾱ_T = 0.36: the forward process would never reach the
N(0, I) the samplers start from). diffusers has no learned-variance *training* loss, so the
variational bound terms (normal KL, discretized Gaussian log-likelihood at t = 0, in bits/dim)
follow openai/improved-diffusion (`gaussian_diffusion.py`, `losses.py`); its timestep
samplers (`resample.py`) are in `timestep_sampler.py`.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from diffusers import DDPMScheduler
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from diffnas.errors import UserError, pydantic_message

_SCHEDULE_NAMES = {"linear": "linear", "cosine": "squaredcos_cap_v2"}
# Ho et al.'s linear schedule at T = 1000; IDDPM scales both ends by 1000/T.
_LINEAR_BETA_START, _LINEAR_BETA_END, _LINEAR_REFERENCE_T = 1e-4, 0.02, 1000
# β_T = 0.02·1000/T must stay below 1 (β_T = 1 makes ᾱ_T = 0 and x0 = x_t/√ᾱ_t undefined).
MIN_LINEAR_TIMESTEPS = 21
Objective = Literal["ddpm", "iddpm"]
DDPMVariance = Literal["fixed_large", "fixed_small"]


class DiffusionConfig(BaseModel):
    """What the denoiser is trained to predict and how timesteps are drawn."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    objective: Objective = Field(
        "ddpm",
        description="Objective family: 'ddpm' (Ho et al. 2020) or 'iddpm' (Nichol & Dhariwal 2021).",
    )
    schedule: Literal["linear", "cosine"] = Field(
        "linear",
        description="β schedule: 'linear' (DDPM's 1e-4 → 0.02 at T = 1000, both scaled by 1000/T "
        "as in IDDPM) or 'cosine' (IDDPM, s = 0.008).",
    )
    timesteps: int = Field(
        1000,
        ge=2,
        le=100_000,
        description=f"Number of diffusion steps T (linear schedule: at least {MIN_LINEAR_TIMESTEPS}).",
    )
    learn_sigma: bool = Field(
        False,
        description="Predict the variance too (learned range between β̃_t and β_t): the model has 2×C "
        "output channels and the VLB term is added to the loss.",
    )
    vlb_weight: float = Field(
        0.001,
        ge=0.0,
        le=1000.0,
        description="λ in L_hybrid = L_simple + λ·L_vlb (IDDPM uses 0.001).",
    )
    timestep_sampler: Literal["uniform", "importance"] = Field(
        "uniform",
        description="How training timesteps are drawn: 'uniform' or 'importance' (IDDPM's "
        "loss-second-moment resampler; costs one host sync per step to record losses).",
    )
    ddpm_variance: DDPMVariance = Field(
        "fixed_large",
        description="Variance of the ancestral samplers (ddpm, respaced) when σ is not learned: "
        "'fixed_large' σ²_t = β_t (Ho et al.'s CIFAR-10 runs, IDDPM's default) or 'fixed_small' "
        "σ²_t = β̃_t (the posterior variance, IDDPM's sigma_small). DDIM (η = 0) adds no noise.",
    )

    @model_validator(mode="after")
    def _check(self) -> DiffusionConfig:
        if self.objective == "ddpm" and self.learn_sigma:
            raise ValueError(
                "objective 'ddpm' has a fixed variance: set learn_sigma=False or use 'iddpm'"
            )
        if self.schedule == "linear" and self.timesteps < MIN_LINEAR_TIMESTEPS:
            raise ValueError(
                f"timesteps={self.timesteps} is too few for the linear schedule: its last β is "
                f"0.02·1000/T, which reaches 1 at T = 20; use timesteps ≥ {MIN_LINEAR_TIMESTEPS} "
                "or the cosine schedule"
            )
        return self

    @classmethod
    def ddpm(cls) -> DiffusionConfig:
        """DDPM: linear schedule, T = 1000, ε-prediction, L_simple, fixed-large variance."""
        return cls(objective="ddpm", schedule="linear", timesteps=1000, learn_sigma=False)

    @classmethod
    def iddpm(cls) -> DiffusionConfig:
        """IDDPM: cosine schedule, T = 1000, learned-range variance, L_hybrid with λ = 0.001."""
        return cls(objective="iddpm", schedule="cosine", timesteps=1000, learn_sigma=True)

    @classmethod
    def resolve(
        cls, objective: Objective, learn_sigma: bool, overrides: dict | None = None
    ) -> DiffusionConfig:
        """The objective's preset for a net with (or without) a learned variance, plus overrides.

        IDDPM without a learned variance is its cosine schedule with L_simple (a paper
        ablation); DDPM with one is refused. Bad values raise `UserError` naming the field.
        """
        if objective == "ddpm" and learn_sigma:
            raise UserError(
                "objective ddpm has a fixed variance but the architecture has learn_sigma=true; "
                "use objective iddpm or learn_sigma=false",
                field="objective",
            )
        base = cls.iddpm() if objective == "iddpm" else cls.ddpm()
        try:
            return cls.model_validate(
                {**base.model_dump(), "learn_sigma": learn_sigma, **(overrides or {})}
            )
        except ValidationError as err:
            raise UserError(pydantic_message(err, "diffusion setting"), field="diffusion") from None

    def out_channels(self, in_channels: int) -> int:
        """Channels the denoiser must output for images with `in_channels` channels."""
        return 2 * in_channels if self.learn_sigma else in_channels

    def scheduler_kwargs(self) -> dict:
        """Keyword arguments for diffusers schedulers with this noise schedule."""
        kwargs = {
            "num_train_timesteps": self.timesteps,
            "beta_schedule": _SCHEDULE_NAMES[self.schedule],
        }
        if self.schedule == "linear":
            scale = _LINEAR_REFERENCE_T / self.timesteps  # IDDPM's get_named_beta_schedule
            kwargs.update(beta_start=scale * _LINEAR_BETA_START, beta_end=scale * _LINEAR_BETA_END)
        return kwargs

    def betas(self) -> np.ndarray:
        """β_1..β_T as float64, taken from `diffusers.DDPMScheduler`."""
        return DDPMScheduler(**self.scheduler_kwargs()).betas.double().numpy()


def normal_kl(
    mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor
) -> torch.Tensor:
    """KL(N(mean1, e^logvar1) ‖ N(mean2, e^logvar2)) elementwise, in nats."""
    return 0.5 * (
        -1.0
        + logvar2
        - logvar1
        + torch.exp(logvar1 - logvar2)
        + (mean1 - mean2) ** 2 * torch.exp(-logvar2)
    )


def approx_standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    """The tanh approximation of Φ(x) used by improved-diffusion (kept for equal numbers)."""
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def discretized_gaussian_log_likelihood(
    x: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor
) -> torch.Tensor:
    """log p(x) for x in [-1, 1] quantised to 256 bins of a Gaussian; edge bins take the tails."""
    centered = x - means
    inv_stdv = torch.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_stdv * (centered + 1.0 / 255.0))
    cdf_min = approx_standard_normal_cdf(inv_stdv * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_cdf_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(
        x < -0.999,
        log_cdf_plus,
        torch.where(x > 0.999, log_one_minus_cdf_min, log_cdf_delta),
    )


def mean_flat(x: torch.Tensor) -> torch.Tensor:
    """Mean over all but the batch dimension."""
    return x.mean(dim=tuple(range(1, x.ndim)))


def _gather(values: torch.Tensor, t: torch.Tensor, ndim: int) -> torch.Tensor:
    """values[t] shaped (B, 1, 1, ...) to broadcast against an image batch."""
    return values[t].view(-1, *([1] * (ndim - 1)))


class GaussianDiffusion:
    """The forward process q and the training losses for one `DiffusionConfig`.

    Coefficients are computed in float64 and stored as float32 tensors on `device`; losses are
    computed in float32 whatever dtype the model produced.
    """

    def __init__(self, config: DiffusionConfig, device: torch.device | str = "cpu") -> None:
        self.config = config
        self.num_timesteps = config.timesteps
        betas = config.betas()
        alphas_cumprod = np.cumprod(1.0 - betas)
        alphas_cumprod_prev = np.append(1.0, alphas_cumprod[:-1])
        posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
        # β̃_0 = 0, so improved-diffusion clips the log at t = 0 to β̃_1.
        posterior_log_variance_clipped = np.log(
            np.append(posterior_variance[1], posterior_variance[1:])
        )
        arrays = {
            "betas": betas,
            "log_betas": np.log(betas),
            "alphas_cumprod": alphas_cumprod,
            "sqrt_alphas_cumprod": np.sqrt(alphas_cumprod),
            "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - alphas_cumprod),
            "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / alphas_cumprod),
            "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / alphas_cumprod - 1.0),
            "posterior_variance": posterior_variance,
            "posterior_log_variance_clipped": posterior_log_variance_clipped,
            "posterior_mean_coef1": betas * np.sqrt(alphas_cumprod_prev) / (1.0 - alphas_cumprod),
            "posterior_mean_coef2": (1.0 - alphas_cumprod_prev)
            * np.sqrt(1.0 - betas)
            / (1.0 - alphas_cumprod),
        }
        for name, value in arrays.items():
            setattr(self, name, torch.tensor(value, dtype=torch.float32, device=device))

    def q_sample(self, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Sample x_t ~ q(x_t | x_0)."""
        return (
            _gather(self.sqrt_alphas_cumprod, t, x_start.ndim) * x_start
            + _gather(self.sqrt_one_minus_alphas_cumprod, t, x_start.ndim) * noise
        )

    def q_posterior(
        self, x_start: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and clipped log-variance of q(x_{t-1} | x_t, x_0)."""
        mean = (
            _gather(self.posterior_mean_coef1, t, x_t.ndim) * x_start
            + _gather(self.posterior_mean_coef2, t, x_t.ndim) * x_t
        )
        return mean, _gather(self.posterior_log_variance_clipped, t, x_t.ndim)

    def p_mean_log_variance(
        self, eps: torch.Tensor, var_values: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of p(x_{t-1} | x_t) from predicted ε and the learned-range value v.

        log σ² = frac·log β_t + (1 − frac)·log β̃_t with frac = (v + 1) / 2.
        """
        min_log = _gather(self.posterior_log_variance_clipped, t, x_t.ndim)
        max_log = _gather(self.log_betas, t, x_t.ndim)
        frac = (var_values + 1.0) / 2.0
        log_variance = frac * max_log + (1.0 - frac) * min_log
        pred_x_start = (
            _gather(self.sqrt_recip_alphas_cumprod, t, x_t.ndim) * x_t
            - _gather(self.sqrt_recipm1_alphas_cumprod, t, x_t.ndim) * eps
        )
        mean, _ = self.q_posterior(pred_x_start, x_t, t)
        return mean, log_variance

    def vb_terms_bpd(
        self,
        eps: torch.Tensor,
        var_values: torch.Tensor,
        x_start: torch.Tensor,
        x_t: torch.Tensor,
        t: torch.Tensor,
    ) -> torch.Tensor:
        """Per-sample VLB term L_t in bits/dim: KL to the true posterior for t > 0, −log p(x_0|x_1) at t = 0."""
        true_mean, true_log_variance = self.q_posterior(x_start, x_t, t)
        mean, log_variance = self.p_mean_log_variance(eps, var_values, x_t, t)
        kl = mean_flat(normal_kl(true_mean, true_log_variance, mean, log_variance)) / math.log(2.0)
        nll = -discretized_gaussian_log_likelihood(x_start, mean, 0.5 * log_variance)
        nll = mean_flat(nll) / math.log(2.0)
        return torch.where(t == 0, nll, kl)

    def loss_terms(
        self,
        model_output: torch.Tensor,
        x_start: torch.Tensor,
        x_t: torch.Tensor,
        t: torch.Tensor,
        noise: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Per-sample losses: 'mse' (L_simple), 'vb' (λ·T·L_t, when learning σ) and their sum 'loss'.

        As in improved-diffusion, the VLB term sees the mean with a stop-gradient so it only trains
        the variance; T·L_t is an unbiased estimate of L_vlb = Σ_t L_t, so λ·T·L_t realises λ·L_vlb.
        """
        model_output = model_output.float()
        channels = x_start.shape[1]
        if self.config.learn_sigma:
            if model_output.shape[1] != 2 * channels:
                raise ValueError(
                    f"learn_sigma needs {2 * channels} output channels, got {model_output.shape[1]}"
                )
            eps, var_values = model_output.split(channels, dim=1)
        else:
            if model_output.shape[1] != channels:
                raise ValueError(
                    f"expected {channels} output channels, got {model_output.shape[1]}"
                )
            eps, var_values = model_output, None
        terms = {"mse": mean_flat((noise - eps) ** 2)}
        if var_values is not None:
            vb = self.vb_terms_bpd(eps.detach(), var_values, x_start, x_t, t)
            terms["vb"] = vb * (self.config.vlb_weight * self.num_timesteps)
            terms["loss"] = terms["mse"] + terms["vb"]
        else:
            terms["loss"] = terms["mse"]
        return terms
